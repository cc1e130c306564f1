"""A realm in one process, for fast tests and profiling: the real RealmServer, router, Links
and core connections, with memory transports and a memory store in place of sockets and
SQLite, and devices that log in without a token check. No port, no subprocess: a test
of routing, queue order or a slow reader runs in milliseconds. The tests that need the
real thing (sockets, signals, the registry on disk) run `realm serve` (tools/harness.py).

    async with InProcessRealm() as realm:
        a, b = await realm.log_in(A), await realm.log_in(B)
        a.conn.send_proxy(B, 1, b"inner")
        await realm.settle(a, b)
        assert b.received() == [(1, b"inner")]
"""
import asyncio

from shared import codec, crypto
from shared.device import DeviceConnection
from shared.events import DeliveryPacket, LoginRequest, ProxyPassPacket
from shared.framing import StreamFramer
from host.login import Decision
from host.registry import QUEUE_MAX_PACKETS, Queued, id_text
from host.server import Config, RealmServer


class MemoryStore:
    """The store's calls (host/store.py) over dicts: bound keys, who is online, and each
    device's queue (QUEUE_MAX_PACKETS at most), kept by id text. Every device is known."""

    def __init__(self):
        self.keys = {}
        self.online = {}
        self.queues = {}
        self._seq = 0

    def bound_key(self, device_id):
        return self.keys.get(device_id)

    async def device(self, device_id):
        return None  # no registry record: the logs name devices by id only

    def set_online(self, device, online, now):
        self.online[device] = online

    async def stored(self, device, now):
        return list(self.queues.get(device, []))

    def forget_stored(self, device, last_seq):
        left = [item for item in self.queues.get(device, []) if item.seq > last_seq]
        if left:
            self.queues[device] = left
        else:
            self.queues.pop(device, None)

    async def enqueue(self, target, sender, msg_id, inner, now):
        queue = self.queues.setdefault(target, [])
        if len(queue) >= QUEUE_MAX_PACKETS:
            return codec.QUEUE_FULL
        self._seq += 1
        queue.append(Queued(self._seq, bytes(sender), msg_id, bytes(inner)))
        return codec.QUEUED


class MemoryTransport:
    """What a Link writes, kept until its device reads it: the unread bytes are the write
    buffer, so a device that never reads is a slow reader."""

    def __init__(self):
        self.data = bytearray()
        self.closed = False
        self.aborted = False

    def write(self, data):
        self.data += data

    def get_write_buffer_size(self):
        return len(self.data)

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = self.aborted = True


class MemoryDevice:
    """A DeviceConnection on a MemoryTransport to the realm; `events`: what it received."""

    def __init__(self, realm, device_id):
        private, public = crypto.generate_keypair()
        self.realm = realm
        self.device_id = device_id
        self.conn = DeviceConnection(device_id, private, public, None, StreamFramer(),
                                     realm.now_ms())
        self.transport = MemoryTransport()
        self.link = realm.open_link(self.transport, "memory-%s" % id_text(device_id)[:8],
                                    StreamFramer())
        self.events = []
        self.login = None  # the LoginRequest, once the handshake got there

    def pump(self, read=True):
        """Move bytes both ways until neither side has more; read=False: the device sends
        but reads nothing (a slow reader)."""
        while True:
            data = self.conn.data_to_send()
            if data:
                for event in self.link.conn.receive_data(data, self.realm.now_ms()):
                    if isinstance(event, LoginRequest):
                        self.login = event
                    else:
                        self.link._handle([event])
                self.link.flush()
            back = b""
            if read:
                back, self.transport.data = bytes(self.transport.data), bytearray()
                if back:
                    self.events += self.conn.receive_data(back, self.realm.now_ms())
            if not data and not back:
                return

    def received(self):
        """(msg_id, inner) of every ProxyPass it got, in order."""
        return [(e.msg_id, e.inner) for e in self.events if isinstance(e, ProxyPassPacket)]

    def deliveries(self):
        """(msg_id, status) of every Delivery report it got, in order."""
        return [(e.msg_id, e.status) for e in self.events if isinstance(e, DeliveryPacket)]


class InProcessRealm:
    """A RealmServer on the running loop, its store a MemoryStore unless given."""

    def __init__(self, store=None, **settings):
        self.store = store or MemoryStore()
        self.config = Config(**settings)
        self.server = None

    async def __aenter__(self):
        self.server = RealmServer(self.config, self.store, crypto.generate_keypair())
        return self

    async def __aexit__(self, *exc):
        for task in list(self.server._tasks):
            task.cancel()
        self.server.decider.close()
        return False

    async def log_in(self, device_id, wait=True):
        """A MemoryDevice for device_id, logged in (no token check). wait=False: returns
        once Welcome is sent, while its stored packets are still being fetched (await
        device.session for the rest)."""
        device = MemoryDevice(self.server, device_id)
        device.pump()
        device.session = asyncio.ensure_future(
            self.server.start_session(device.link, Decision()))
        if wait:
            await device.session
        await self.settle(device)
        return device

    async def settle(self, *devices):
        """Let the loop run what the realm started (stores, flushes), then pump devices."""
        for _ in range(5):
            await asyncio.sleep(0)
        for device in devices:
            device.pump()
