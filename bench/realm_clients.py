"""Bench clients for bench/realm.py: many devices in one asyncio process, each the core's
DeviceConnection over a TCP socket, with no end-to-end layer (the realm relays `inner`
without looking at it, so the bench spends its own CPU on the hop only). The sockets are
driven by the realm's own lean transport (host/tcp_transport.py), not asyncio's: the
clients share the machine's cores with the realm they measure."""
import asyncio
import collections
import errno
import functools
import os
import random
import socket
import time
import uuid

from shared import crypto
from shared.device import DeviceConnection
from shared.events import Closed, ProxyPassPacket, Welcomed
from shared.framing import StreamFramer
from host.tcp_transport import TcpTransport


def now_ms():
    return int(time.monotonic() * 1000)


class Identity:
    def __init__(self, device_id=None, token=None):
        self.device_id = device_id or uuid.uuid4().bytes
        self.private, self.public = crypto.generate_keypair()
        self.token = token  # None: method NONE (open enrolment)
        self.realm_public = None  # pinned after the first Welcome
        self.dh2 = None
        self.ephemerals = []  # key pairs made ahead for the next connections (prepare)

    def prepare(self, connections=1):
        """Make the ephemeral key pairs of the next `connections` connections now, one
        each. The timed phases that connect many devices (the pinned reconnects, the fleet
        restart) do so before they start: one host simulates devices that would each make
        their own on their own CPU, and here the bench's key generation (~45 us a
        connection) would take CPU from the realm on a shared core. Each pair serves one
        connection; once they are used up, a connection makes its own again."""
        self.ephemerals.extend(crypto.generate_keypair() for _ in range(connections))


class BenchDevice:
    """One device connection; `on_proxy(event)` gets each relayed packet."""

    def __init__(self, identity, on_proxy=None):
        self.identity = identity
        self.on_proxy = on_proxy
        self.welcomed = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.transport = None
        self.conn = None

    @classmethod
    def open(cls, port, identity, on_proxy=None, source=None):
        """A device connecting now, its Hello written as soon as the connection is up;
        `welcomed` says how it went (the connection's own failure is an OSError).
        `source`: the loopback address to connect from (another machine, as it were)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if source:
                sock.bind((source, 0))
            error = sock.connect_ex(("127.0.0.1", port))
            if error not in (0, errno.EINPROGRESS):
                raise OSError(error, os.strerror(error))
        except BaseException:
            sock.close()
            raise
        device = cls(identity, on_proxy)
        device.start(TcpTransport(asyncio.get_running_loop(), sock))
        return device

    @classmethod
    async def connect(cls, port, identity, on_proxy=None, source=None):
        """The device once welcomed (see open)."""
        device = cls.open(port, identity, on_proxy, source)
        await device.welcomed
        return device

    def start(self, transport):
        """Begin the handshake on a connected transport (TcpTransport's interface)."""
        self.transport = transport
        i = self.identity
        ephemeral = i.ephemerals.pop() if i.ephemerals else None
        self.conn = DeviceConnection(i.device_id, i.private, i.public, i.token, StreamFramer(),
                                     now_ms(), realm_public=i.realm_public, dh2=i.dh2,
                                     ephemeral=ephemeral)
        self.flush()
        transport.start(self)

    def data_received(self, data):
        self._handle(self.conn.receive_data(data, now_ms()))
        self.flush()

    def transport_lost(self, why):
        if why is not None and not self.welcomed.done():  # refused, reset...
            self.welcomed.set_exception(why)
        self._handle(self.conn.connection_lost("realm closed the connection"))
        self.lost.set_result(None)

    def _handle(self, events):
        for event in events:
            if isinstance(event, ProxyPassPacket):
                self.on_proxy(event)
            elif isinstance(event, Welcomed):
                self.identity.realm_public, self.identity.dh2 = event.realm_public, event.dh2
                self.welcomed.set_result(event)
            elif isinstance(event, Closed) and not self.welcomed.done():
                self.welcomed.set_exception(event.error)

    def send(self, peer, inner):
        self.conn.send_proxy(peer, 0, inner)

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def close(self):
        self.transport.close()


async def connect_many(port, identities, concurrency, keep=True):
    """Connect every identity (at most `concurrency` handshakes at once); returns the
    devices (closed again at once unless `keep`). Each Welcome starts the next connection
    from its callback: no task per device (the clients share the cores with the realm)."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    waiting = iter(identities)
    devices = []
    left = len(identities)

    def start_next():
        identity = next(waiting, None)
        if identity is not None:
            device = BenchDevice.open(port, identity)
            device.welcomed.add_done_callback(functools.partial(welcomed, device))

    def welcomed(device, welcome):
        nonlocal left
        if finished.done():
            return
        if welcome.exception() is not None:
            finished.set_exception(welcome.exception())
            return
        if keep:
            devices.append(device)
        else:
            device.close()
        left -= 1
        if left:
            start_next()
        else:
            finished.set_result(devices)

    if not identities:
        return devices
    for _ in range(concurrency):
        start_next()
    return await finished


STARTS_PER_TURN = 100  # Fleet's connections started between two turns of the bench's loop


class Fleet:
    """Devices that all connect at once, each retrying a refused or failed connection
    after 0.1 to 0.5 s (a device's backoff, shortened: the realm is known to be up).
    They come from `per_address` devices per loopback address (127.1.x.y), as a fleet on
    many networks does, within the realm's default share per address."""

    def __init__(self, identities, per_address=20):
        self.identities = identities
        self.sources = ["127.1.%d.%d" % divmod(1 + i // per_address, 250)
                        for i in range(len(identities))]
        self.devices = []
        self.retries = 0
        self.refusals = collections.Counter()  # why connections were retried

    async def connect_all(self, port):
        """Every device connects at once, the connections started STARTS_PER_TURN at a time
        with a loop turn between: in one gather, the bench's one event loop made all
        10,000 connections before it read the first KeyCheck (the realm then waited for
        the bench, its handshake slots full, nobody logged in for 3 s), where real
        devices, each on its own CPU, answer theirs at once."""
        started = []
        for identity, source in zip(self.identities, self.sources):
            started.append(asyncio.ensure_future(self._connect(port, identity, source)))
            if len(started) % STARTS_PER_TURN == 0:
                await asyncio.sleep(0)
        self.devices = await asyncio.gather(*started)

    async def _connect(self, port, identity, source):
        while True:
            try:
                return await BenchDevice.connect(port, identity, source=source)
            except Exception as e:  # refused by the kernel (OSError) or the realm: try again
                self.retries += 1
                self.refusals[getattr(e, "name", type(e).__name__)] += 1
                await asyncio.sleep(random.uniform(0.1, 0.5))

    async def all_lost(self):
        await asyncio.gather(*(device.lost for device in self.devices))

    def close(self):
        for device in self.devices:
            device.close()


class Pair:
    """A sender streaming `count` packets to a receiver, at most `window` in flight, each
    carrying its send time so the receiver can measure the relay latency."""

    def __init__(self, sender, receiver_identity, count, window, payload_size, latencies):
        self.sender = sender
        self.target = receiver_identity.device_id
        self.count = count
        self.window = window
        self.pad = bytes(max(0, payload_size - 8))
        self.sent = 0
        self.received = 0
        self.latencies = latencies
        self.done = asyncio.get_running_loop().create_future()

    def on_proxy(self, event):
        sent_at = int.from_bytes(event.inner[:8], "big")
        self.latencies.append(time.perf_counter_ns() - sent_at)
        self.received += 1
        if self.received == self.count:
            self.done.set_result(None)
        elif self.sent - self.received <= self.window // 2:
            self.pump()  # refill in batches: fewer, larger writes

    def pump(self):
        while self.sent < self.count and self.sent - self.received < self.window:
            self.sender.send(self.target, time.perf_counter_ns().to_bytes(8, "big") + self.pad)
            self.sent += 1
        self.sender.flush()
