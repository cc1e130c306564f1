"""The host-side device: the shared core's DeviceConnection and Endpoint over asyncio.

This is a thin shell, like the firmware's: bytes in and out, a timer, and the device's
memory in one JSON file (mode 0600, written atomically): its key pair, the pinned realm
key with its cached dh2, the boot count of the end-to-end nonce, and the pinned peer keys.
"""
import asyncio
import os
import platform
import time
import uuid
from collections import namedtuple

import serial

from shared import RELEASE, codec, crypto
from shared.connection import Reconnect, is_refusal
from shared.report import ReportingConnection
from shared.endpoint import Endpoint
from shared.errors import ProtocolError, LINK_LOST
from shared.events import Closed, Delivery, Message, PeerKeyChanged, PeerPinned, Pong, Welcomed
from shared.framing import StreamFramer
from shared.protocol import DEFAULT_PORT, HANDSHAKE_TIMEOUT_MS
from shared.serial_framing import SerialFramer
from host import keyfile
from host.fdstream import FdStream

# A serial link's default speed; realm serve's (host/server.py Config) and the board
# profiles' (boards/*/board.py) are the same, and `realm send --baud` reads Config's.
SERIAL_BAUD = 115200
WAIT_S = 10.0  # how long the host-side device waits for the realm by default (realm send --timeout)


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
                 repin=False, services=()):
        self.state = state
        self.token = token
        self.handshake_timeout_ms = int(handshake_timeout_s * 1000)
        self.repin = repin  # the user allows a changed realm key
        state.new_boot()
        self.endpoint = Endpoint(state.device_id, state.private, state.boot,
                                 state.peers.items(), state.new_boot, services=services)
        self.loop = asyncio.get_running_loop()
        self.conn = None
        self.welcome = None
        self._queue = asyncio.Queue()
        self._write = None
        self._close_transport = None
        self._timer = None
        self._link = None  # "tcp" or "serial", for the DeviceReport
        self._started = time.monotonic()

    # -- connecting -------------------------------------------------------------
    async def connect_tcp(self, host, port):
        transport, _protocol = await self.loop.create_connection(
            lambda: _StreamProtocol(self), host, port)
        self._write = transport.write
        self._close_transport = transport.close
        return await self._handshake(StreamFramer(), "tcp")

    async def connect(self, realm, serial=None, baud=SERIAL_BAUD):
        """Over the serial port `serial` if given, else over TCP to `realm` (host, port)."""
        if serial:
            return await self.connect_serial(serial, baud)
        return await self.connect_tcp(*realm)

    async def connect_serial(self, path, baud=SERIAL_BAUD):
        port = serial.Serial(path, baud, timeout=0)
        stream = FdStream(self.loop, port.fileno(), self._received,
                          lambda why: self._lost(why, port.close))
        self._write = stream.write
        self._close_transport = lambda: (stream.close(), port.close())
        return await self._handshake(SerialFramer(), "serial")

    async def connect_fd(self, fd):
        """Over an open descriptor the caller owns (a pty in tests)."""
        stream = FdStream(self.loop, fd, self._received, self._lost)
        self._write = stream.write
        self._close_transport = stream.close
        return await self._handshake(SerialFramer(), "serial")

    async def _handshake(self, framer, link):
        self._link = link
        pinned = None if self.repin else self.state.realm_public
        dh2 = self.state.dh2 if pinned else None
        self.conn = ReportingConnection(
            self.report, self.state.device_id, self.state.private, self.state.public, self.token,
            framer, self._now(), realm_public=pinned, dh2=dh2,
            handshake_timeout_ms=self.handshake_timeout_ms, announce_pin=dh2 is not None)
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
        return self._sent(self.endpoint.send(peer, data))

    def ping(self, peer, data=b""):
        return self._sent(self.endpoint.ping(peer, data))

    def send_service(self, peer, service, data):
        """A Service packet for `peer` (one of `services`, given at the start)."""
        return self._sent(self.endpoint.send_service(peer, service, data))

    def _sent(self, msg_id):
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

    def report(self):
        """This device's DeviceReport: sent right after Welcome, then once a minute."""
        return {"fw": RELEASE, "board": "host %s" % platform.machine(),
                "up": int(time.monotonic() - self._started), "boot": self.state.boot,
                "link": self._link}

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
        if deadline is not None and deadline <= self._now():
            # Due already (the DeviceReport right after Welcome): now, not a loop turn later.
            self._on_timer()
            return
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


# -- the host API: one device kept online ---------------------------------------------
# The firmware's reconnect policy (Reconnect, shared/connection.py): anything but a
# refusal (the link lost, a timeout, the realm not up yet or restarting) is waited out
# with its backoff and jitter. A refusal, after which connecting again soon would only be
# refused again, ends the client: the firmware waits reconnect.auth_ms instead, but a
# person runs this and minutes of silence would help nobody.

Incoming = namedtuple("Incoming", "peer data")  # peer: the sender's id as UUID text


class DeliveryStatus(str):
    """What the realm said of a message: its status name as people read it ("DELIVERED",
    "QUEUED", ...: codec.status_name), and `.code`, the codec's number, for programs to
    compare (codec.DELIVERED, codec.QUEUED, ...)."""

    def __new__(cls, code):
        status = str.__new__(cls, codec.status_name(code))
        status.code = code
        return status

    @property
    def accepted(self):
        """The realm took it: delivered now, or stored until the peer is back."""
        return self.code in (codec.DELIVERED, codec.QUEUED)


class PeerKeyChangedError(Exception):
    """The realm offers another key for the peer than the pinned one: nothing was sent."""


def describe(error, where=None):
    """A failure in words for people: who said what. `where`: the realm's address."""
    if isinstance(error, ProtocolError):
        if error.code == LINK_LOST:
            return "the link to the realm ended (%s)" % error.message
        text = error.name + (": " + error.message if error.message else "")
        return "the realm said " + text if error.remote else text
    if isinstance(error, asyncio.TimeoutError):
        return "no answer from the realm"
    if isinstance(error, OSError):  # asyncio's text repeats the address: the errno's is plain
        return "cannot reach the realm%s: %s" % (
            " at " + where if where else "",
            os.strerror(error.errno).lower() if error.errno else error.strerror or error)
    return str(error)


def _peer_bytes(peer):
    return uuid.UUID(peer).bytes if isinstance(peer, str) else bytes(peer)


class RealmClient:
    """A host-side device that stays online: it connects, and connects again by itself
    whenever the link ends, until it is closed or the realm refuses it (a refusal is
    raised by start() and by every later call). docs/HOST_API.md.

        async with RealmClient(device_id, token, realm=("192.168.1.20", DEFAULT_PORT)) as device:
            async for message in device.messages():
                await device.send(message.peer, b"got it")

    device_id: UUID text or 16 bytes. state: the file that keeps the device's keys and
    pins (default ~/.realm/devices/ID.json; None keeps them in memory). serial: a serial
    port path to reach the realm over, instead of `realm`. on_status(status, detail):
    "connecting", "online", "offline" (with why and when it tries again). reconnect=False:
    the first attempt or session that ends ends the client (for one-shot tools).
    """

    def __init__(self, device_id, token, realm=("127.0.0.1", DEFAULT_PORT), state="default",
                 serial=None, baud=SERIAL_BAUD, repin=False, handshake_timeout_s=WAIT_S,
                 on_status=None, reconnect=True):
        device_id = _peer_bytes(device_id)
        if state == "default":
            state = default_state_path(str(uuid.UUID(bytes=device_id)))
        self.device_id = str(uuid.UUID(bytes=device_id))
        self._state = DeviceState.load(state, device_id) if state else DeviceState(device_id)
        self._token = token
        self._address = (realm, serial, baud)  # HostDevice.connect's
        self._repin = repin
        self._handshake_timeout_s = handshake_timeout_s
        self._on_status = on_status
        self._reconnect = reconnect
        self._backoff = Reconnect()
        self.device = None  # the HostDevice, once started
        self.error = None  # the refusal that ended the client
        self.last_failure = None  # why the last attempt ended, while it retries
        self._messages = asyncio.Queue()
        self._waiting = {}  # msg_id -> (peer, future of its Delivery status)
        self._pongs = []  # [peer bytes, data, future]
        self._online = asyncio.Event()
        self._ended = asyncio.Event()
        self._task = None

    @property
    def online(self):
        return self._online.is_set()

    @property
    def where(self):
        realm, serial, _baud = self._address
        return "serial %s" % serial if serial else "%s:%d" % realm

    async def start(self):
        """Connect, and keep connected from now on; returns once online (it waits for
        a realm that is not up yet). Raises the realm's refusal."""
        if self._task is None:
            self.device = HostDevice(self._state, self._token, self._handshake_timeout_s,
                                     self._repin)
            self._task = asyncio.get_running_loop().create_task(self._run())
        await self.wait_online()
        return self

    async def wait_online(self):
        online = asyncio.ensure_future(self._online.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        await asyncio.wait((online, ended), return_when=asyncio.FIRST_COMPLETED)
        online.cancel()
        ended.cancel()
        self._check()

    async def close(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.device is not None:
            self.device.close()
        self._end(None)

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()
        return False

    # -- the application --------------------------------------------------------
    def send_nowait(self, peer, data):
        """Send bytes end to end (kept while offline, sent after the next Welcome);
        returns the msg_id. delivery(msg_id) waits for the realm's word on it."""
        self._check()
        peer = _peer_bytes(peer)
        msg_id = self.device.send(peer, bytes(data))
        self._waiting[msg_id] = (peer, asyncio.get_running_loop().create_future())
        self._dispatch_pending()
        return msg_id

    async def delivery(self, msg_id, timeout=None):
        """The Delivery status of msg_id (a DeliveryStatus): "DELIVERED", "QUEUED" (peer
        offline, stored by the realm), "UNKNOWN_TARGET", ...; its .code is the codec's.
        asyncio.TimeoutError after `timeout` s."""
        future = self._waiting[msg_id][1]
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            if future.done():
                self._waiting.pop(msg_id, None)

    async def send(self, peer, data, timeout=None):
        """send_nowait() then delivery(): the status name."""
        return await self.delivery(self.send_nowait(peer, data), timeout)

    async def ping(self, peer, timeout=10.0):
        """An end-to-end round trip to the peer's device: seconds, or None on timeout."""
        self._check()
        peer = _peer_bytes(peer)
        data = os.urandom(8)
        future = asyncio.get_running_loop().create_future()
        self._pongs.append([peer, data, future])
        started = asyncio.get_running_loop().time()
        self.device.ping(peer, data)
        self._dispatch_pending()
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._pongs = [p for p in self._pongs if p[2] is not future]
        return asyncio.get_running_loop().time() - started

    async def receive(self, timeout=None):
        """The next message (Incoming: peer as UUID text, data as bytes)."""
        getter = asyncio.ensure_future(self._messages.get())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            done, _ = await asyncio.wait((getter, ended), timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        self._check()
        raise asyncio.TimeoutError

    async def messages(self):
        """Every message, as it comes, until the client ends."""
        while True:
            yield await self.receive()

    # -- the connection loop ----------------------------------------------------
    async def _run(self):
        while True:
            self._status("connecting", self.where)
            try:
                await asyncio.wait_for(self._connect(), self._handshake_timeout_s)
            except (OSError, asyncio.TimeoutError, ProtocolError) as e:
                error = e
            else:
                self._backoff.connected()
                self.last_failure = None
                self._online.set()
                self._status("online", "as %s at %s" % (self.device_id, self.where))
                error = await self._pump()
                self._online.clear()
            self.device.close()
            self._dispatch_pending()
            if not self._reconnect or is_refusal(error):
                self._end(error)
                return
            self.last_failure = error
            retry_ms = self._backoff.next_delay_ms(error)
            self._status("offline", "%s; connecting again in %.1f s" % (
                describe(error, self.where), retry_ms / 1000))
            await asyncio.sleep(retry_ms / 1000)

    async def _connect(self):
        self._dispatch_pending()
        await self.device.connect(*self._address)

    async def _pump(self):
        """Dispatch the session's events until it closes; its error."""
        while True:
            event = await self.device.next_event()
            if isinstance(event, Closed):
                return event.error
            self._dispatch(event)

    def _dispatch_pending(self):
        queue = self.device._queue
        while not queue.empty():
            event = queue.get_nowait()
            if not isinstance(event, (Closed, Welcomed)):
                self._dispatch(event)

    def _dispatch(self, event):
        if isinstance(event, Message):
            self._messages.put_nowait(Incoming(str(uuid.UUID(bytes=event.peer)), event.data))
        elif isinstance(event, Delivery):
            peer, future = self._waiting.get(event.msg_id, (None, None))
            if future is not None and not future.done():
                future.set_result(DeliveryStatus(event.status))
        elif isinstance(event, Pong):
            for peer, data, future in self._pongs:
                if peer == event.peer and data == event.data and not future.done():
                    future.set_result(True)
        elif isinstance(event, PeerKeyChanged):
            refused = PeerKeyChangedError(
                "the realm offers another key for %s than the one pinned: refused until you "
                "trust it (delete it from the device's state file)"
                % uuid.UUID(bytes=event.peer))
            for peer, future in self._waiting.values():
                if peer == event.peer:
                    _fail(future, refused)

    def _status(self, status, detail):
        if self._on_status is not None:
            self._on_status(status, detail)

    def _end(self, error):
        if self.error is None:
            self.error = error
        self._online.clear()
        self._ended.set()
        for _peer, future in self._waiting.values():
            _fail(future, error or ProtocolError(LINK_LOST, "the client is closed"))

    def _check(self):
        if self._ended.is_set():
            raise self.error or ProtocolError(LINK_LOST, "the client is closed")

    @property
    def realm_key_changed(self):
        """The refusal was ours: the realm offered another key than the pinned one."""
        conn = self.device.conn if self.device is not None else None
        return conn is not None and conn.realm_key_changed


def _fail(future, error):
    if not future.done():
        future.set_exception(error)
        future.exception()  # retrieved: no warning if the caller never asks
