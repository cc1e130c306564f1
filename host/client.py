"""The host-side device: the shared core's DeviceConnection and Endpoint over asyncio.

This is a thin shell, like the firmware's: bytes in and out, a timer, and the device's
memory in one JSON file (mode 0600, written atomically): its key pair, the pinned realm
key with its cached dh2, the boot count of the end-to-end nonce, and the pinned peer keys.
"""
import asyncio
import os
import uuid

import serial

from shared import crypto
from shared.device import DeviceConnection
from shared.endpoint import Endpoint
from shared.events import Closed, Welcomed, PeerPinned
from shared.framing import StreamFramer
from shared.protocol import HANDSHAKE_TIMEOUT_MS
from shared.serial_framing import SerialFramer
from host import keyfile
from host.fdstream import FdStream


class DeviceState:
    """What a device keeps between runs. `path` None: kept in memory only."""

    def __init__(self, device_id, private=None, realm_public=None, dh2=None, boot=0,
                 peers=None, path=None):
        self.device_id = device_id  # 16 bytes
        self.private = private or crypto.generate_keypair()[0]
        self.public = crypto.public_key(self.private)
        self.realm_public = realm_public
        self.dh2 = dh2
        self.boot = boot
        self.peers = dict(peers or {})  # peer id (16 bytes) -> key
        self.path = path

    @classmethod
    def load(cls, path, device_id):
        """The state in `path`, or a fresh one (new key pair) if the file does not exist."""
        try:
            data = keyfile.read_json(path)
        except FileNotFoundError:
            state = cls(device_id, path=path)
            state.save()
            return state
        hexed = lambda value: bytes.fromhex(value) if value else None  # noqa: E731
        if data.get("id") != str(uuid.UUID(bytes=device_id)):
            raise ValueError("%s holds the state of device %s" % (path, data.get("id")))
        return cls(device_id, hexed(data["private"]), hexed(data.get("realm_public")),
                   hexed(data.get("dh2")), int(data.get("boot", 0)),
                   {uuid.UUID(k).bytes: bytes.fromhex(v) for k, v in data.get("peers", {}).items()},
                   path)

    def save(self):
        if self.path is None:
            return
        keyfile.write_json(self.path, {
            "id": str(uuid.UUID(bytes=self.device_id)),
            "private": self.private.hex(),
            "realm_public": self.realm_public.hex() if self.realm_public else None,
            "dh2": self.dh2.hex() if self.dh2 else None,
            "boot": self.boot,
            "peers": {str(uuid.UUID(bytes=k)): v.hex() for k, v in self.peers.items()},
        })

    def new_boot(self, boot=None):
        """Record a boot count above every one used before, before any packet uses it."""
        self.boot = self.boot + 1 if boot is None else boot
        self.save()
        return self.boot


class HostDevice:
    """One device connection at a time; application events come out of `events()`.

    Events: the Endpoint's (Message, Pong, Delivery, PeerPinned, PeerKeyChanged), plus
    Welcomed and Closed from the connection.
    """

    def __init__(self, state, token, handshake_timeout_s=HANDSHAKE_TIMEOUT_MS / 1000,
                 repin=False):
        self.state = state
        self.token = token
        self.handshake_timeout_ms = int(handshake_timeout_s * 1000)
        self.repin = repin  # the user allows a changed realm key
        state.new_boot()
        self.endpoint = Endpoint(state.device_id, state.private, state.boot,
                                 state.peers.items(), state.new_boot)
        self.loop = asyncio.get_running_loop()
        self.conn = None
        self.welcome = None
        self._queue = asyncio.Queue()
        self._write = None
        self._close_transport = None
        self._timer = None

    # -- connecting -------------------------------------------------------------
    async def connect_tcp(self, host, port):
        transport, _protocol = await self.loop.create_connection(
            lambda: _StreamProtocol(self), host, port)
        self._write = transport.write
        self._close_transport = transport.close
        return await self._handshake(StreamFramer())

    async def connect_serial(self, path, baud=115200):
        port = serial.Serial(path, baud, timeout=0)
        stream = FdStream(self.loop, port.fileno(), self._received,
                          lambda why: self._lost(why, port.close))
        self._write = stream.write
        self._close_transport = lambda: (stream.close(), port.close())
        return await self._handshake(SerialFramer())

    async def connect_fd(self, fd):
        """Over an open descriptor the caller owns (a pty in tests)."""
        stream = FdStream(self.loop, fd, self._received, self._lost)
        self._write = stream.write
        self._close_transport = stream.close
        return await self._handshake(SerialFramer())

    async def _handshake(self, framer):
        pinned = None if self.repin else self.state.realm_public
        dh2 = self.state.dh2 if pinned else None
        self.conn = DeviceConnection(self.state.device_id, self.state.private, self.state.public,
                                     self.token, framer, self._now(), realm_public=pinned,
                                     dh2=dh2, handshake_timeout_ms=self.handshake_timeout_ms,
                                     announce_pin=dh2 is not None)
        self._queue = asyncio.Queue()  # nothing of an earlier connection is left to read
        self.endpoint.attach(self.conn)
        self._flush()
        while True:
            event = await self._queue.get()
            if isinstance(event, Welcomed):
                self.welcome = event
                return event
            if isinstance(event, Closed):
                raise event.error

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._close_transport is not None:
            self._close_transport()
            self._close_transport = None

    # -- the application --------------------------------------------------------
    def send(self, peer, data):
        """Queue Data for `peer` (16 bytes); returns the msg_id its Delivery will carry."""
        msg_id = self.endpoint.send(peer, data)
        self._deliver(self.endpoint.take_events())
        self._flush()
        return msg_id

    def ping(self, peer, data=b""):
        msg_id = self.endpoint.ping(peer, data)
        self._deliver(self.endpoint.take_events())
        self._flush()
        return msg_id

    async def next_event(self, timeout=None):
        """The next event; asyncio.TimeoutError after `timeout` seconds without one."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def wait_for(self, kind, timeout=None, match=lambda event: True):
        """The next event of class `kind` that `match`es; others are dropped; a Closed raises."""
        deadline = None if timeout is None else self.loop.time() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - self.loop.time())
            event = await self.next_event(left)
            if isinstance(event, kind) and match(event):
                return event
            if isinstance(event, Closed):
                raise event.error

    # -- the shell --------------------------------------------------------------
    def _now(self):
        return int(self.loop.time() * 1000)

    def _received(self, data):
        if self.conn is not None:
            self._after(self.conn.receive_data(data, self._now()))

    def _on_timer(self):
        self._timer = None
        if self.conn is not None:
            self._after(self.conn.tick(self._now()))

    def _lost(self, why, then=None):
        if then is not None:
            then()
        if self.conn is not None:
            self._after(self.conn.connection_lost(
                "connection lost: %s" % (why or "closed by the realm")))

    def _after(self, events):
        for event in events:
            if isinstance(event, Welcomed):
                self._pin(event)
            self._deliver(self.endpoint.handle(event))
            if isinstance(event, (Welcomed, Closed)):
                self._queue.put_nowait(event)
        self._flush()

    def _deliver(self, app_events):
        for event in app_events:
            if isinstance(event, PeerPinned):
                self.state.peers = dict(self.endpoint.pins())
                self.state.save()
            self._queue.put_nowait(event)

    def _pin(self, welcome):
        if welcome.realm_public != self.state.realm_public or welcome.dh2 != self.state.dh2:
            self.state.realm_public = welcome.realm_public
            self.state.dh2 = welcome.dh2
            self.state.save()

    def _flush(self):
        conn = self.conn
        if conn is None:
            return  # not connected yet: the Endpoint keeps what was sent
        data = conn.data_to_send()
        if data and self._write is not None:
            self._write(data)
        if conn.closed:
            self.close()
            return
        deadline = conn.next_deadline()
        if deadline is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at((deadline + 1) / 1000.0, self._on_timer)


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, device):
        self.device = device

    def data_received(self, data):
        self.device._received(data)

    def connection_lost(self, exc):
        self.device._lost(exc)


def default_state_path(device_id_text):
    return os.path.join(os.path.expanduser("~"), ".realm", "devices", device_id_text + ".json")
