"""A realm in one process, for fast tests and profiling: the real RealmServer, router, Links
and core connections, with memory transports and a memory store in place of sockets and
SQLite, and devices that log in without a token check (`log_in`) or with one, through
the realm's own login decision and rate limit (`connect`). No port, no subprocess: a test
of routing, queue order or a slow reader runs in milliseconds. The tests that need the
real thing (sockets, signals, the registry on disk) run `realm serve` (tools/harness.py).

    async with InProcessRealm() as realm:
        a, b = await realm.log_in(A), await realm.log_in(B)
        a.conn.send_proxy(B, 1, b"inner")
        await realm.settle(a, b)
        assert b.received() == [(1, b"inner")]

On a VirtualTimeLoop (`run_in_virtual_time`) the realm's clock is the test's: every
timer the realm sets fires when the test advances to it (`await realm.advance(90)`), so
a 90 s silence limit or a 60 s rate-limit block is tested in milliseconds.
"""
import asyncio
import heapq
import itertools
import selectors
import time

from shared import codec, crypto
from shared.device import DeviceConnection
from shared.events import DeliveryPacket, ProxyPassPacket
from shared.framing import StreamFramer
from shared.realm import LoginRequest
from host import tokens
from host.login import Decision
from host.registry import QUEUE_MAX_PACKETS, Device, Queued, id_text
from host.server import Config, RealmServer


MAX_TIMERS_PER_ADVANCE = 10000
IDLE_LIMIT_S = 10.0  # real seconds a VirtualTimeLoop may wait with nothing to run


class _RealIOSelector(selectors.DefaultSelector):
    """A VirtualTimeLoop waits in real time only for real I/O (a worker thread waking
    the loop): a wait for a virtual timer would never end, so a long idle one raises."""

    def select(self, timeout=None):
        if timeout == 0:
            return super().select(0)
        events = super().select(IDLE_LIMIT_S)
        if not events:
            raise RuntimeError("the loop had nothing to run for %g s: the test awaits a timer "
                               "it never advanced to, or something that never comes"
                               % IDLE_LIMIT_S)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when told (`advance`). What the realm times
    runs on it: its links' deadlines (loop.time(), call_at), the receipt checks
    (call_later), housekeeping (asyncio.sleep) and the login rate limit (its clock is
    loop.time); `wall_time` is the epoch clock moved with it, for what the registry
    stamps. Nothing here waits for real time: a test that awaits a timer advances to it."""

    def __init__(self):
        super().__init__(_RealIOSelector())
        self._now = 1000.0
        self._epoch = time.time() - self._now
        self._timers = []  # (when, order, handle) of every call_at, earliest first
        self._order = itertools.count()

    def time(self):
        return self._now

    def wall_time(self):
        return self._epoch + self._now

    def call_at(self, when, callback, *args, context=None):
        handle = super().call_at(when, callback, *args, context=context)
        heapq.heappush(self._timers, (when, next(self._order), handle))
        return handle

    async def advance(self, seconds, settle):
        """Move the clock `seconds` on, stopping at each timer due on the way (then
        `await settle()`), so each fires at its own time and what it sets can fire too."""
        end = self._now + seconds
        fired = 0
        while self._timers and self._timers[0][0] <= end:
            when, _, handle = heapq.heappop(self._timers)
            if not handle.cancelled():
                self._now = max(self._now, when)
                await asyncio.sleep(0)  # the loop moves the timer to its ready callbacks,
                await settle()  # which run after this task's next step, at `when` still
                fired += 1
                if fired > MAX_TIMERS_PER_ADVANCE:  # on a real loop: a busy loop
                    raise RuntimeError("over %d timers fired within %g s: one re-arms at a "
                                       "time already past" % (fired - 1, seconds))
        self._now = end
        await settle()


def run_in_virtual_time(main):
    """Run the coroutine `main` on a VirtualTimeLoop; its result."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


def run_in_realm(test, store=None, **settings):
    """`await test(realm)` in an InProcessRealm (`settings`: its Config) on a
    VirtualTimeLoop: none of the realm's timers fires unless the test advances to it."""
    async def body():
        async with InProcessRealm(store, **settings) as realm:
            await test(realm)
    run_in_virtual_time(body())


class MemoryStore:
    """The store's calls (host/store.py) over dicts: bound keys, who is online, and each
    device's queue (QUEUE_MAX_PACKETS at most), kept by id text. Every device is known to
    routing; the login decision (`connect`) knows those given a token by `add_device`."""

    def __init__(self):
        self.keys = {}
        self.tokens = {}  # id text -> stored token hash
        self.online = {}
        self.queues = {}
        self._seq = 0

    async def start(self):
        pass

    async def stop(self):
        pass

    def add_device(self, device_id, token):
        self.tokens[id_text(device_id)] = tokens.hash_token(token)

    def bound_key(self, device_id):
        return self.keys.get(device_id)

    def device_now(self, device_id):
        token_hash = self.tokens.get(device_id)
        if token_hash is None:
            return None  # no registry record: the logs name devices by id only
        return Device(device_id, "", token_hash, self.keys.get(device_id), 0, None, False)

    async def device(self, device_id):
        return self.device_now(device_id)

    async def bind_key(self, device_id, key):
        return self.keys.setdefault(device_id, bytes(key))

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
    """A DeviceConnection on a MemoryTransport to the realm; `events`: what it received.
    With a token its login goes to the realm's decision; without, the test decides
    (`login` holds the LoginRequest)."""

    def __init__(self, realm, device_id, token=None):
        private, public = crypto.generate_keypair()
        self.realm = realm
        self.device_id = device_id
        self.checked = token is not None
        self.conn = DeviceConnection(device_id, private, public, token, StreamFramer(),
                                     realm.now_ms())
        self.transport = MemoryTransport()
        self.link = realm.open_link(self.transport, "memory-%s" % id_text(device_id)[:8],
                                    StreamFramer())
        self.events = []
        self.login = None  # the LoginRequest, once the handshake got there

    def pump(self, read=True, send=True):
        """Move bytes both ways until neither side has more; read=False: the device sends
        but reads nothing (a slow reader); send=False: it only reads (a silent one)."""
        while True:
            data = self.conn.data_to_send() if send else b""
            if data and (self.checked or self.link.device is not None):  # the real path
                self.link.data_received(data)
            elif data:
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

    def tick(self):
        """The device's own timers (its heartbeat, its deadlines) at the realm's now."""
        self.events += self.conn.tick(self.realm.now_ms())
        self.pump()

    def closed(self):
        """The ProtocolError that ended its connection, or None while it is open."""
        return self.conn.error if self.conn.closed else None

    def received(self):
        """(msg_id, inner) of every ProxyPass it got, in order."""
        return [(e.msg_id, e.inner) for e in self.events if isinstance(e, ProxyPassPacket)]

    def deliveries(self):
        """(msg_id, status) of every Delivery report it got, in order."""
        return [(e.msg_id, e.status) for e in self.events if isinstance(e, DeliveryPacket)]


class InProcessRealm:
    """A RealmServer on the running loop, its store a MemoryStore unless given (started
    and stopped with the realm: a LocalStore on a test's directory works too)."""

    def __init__(self, store=None, **settings):
        self.store = store or MemoryStore()
        self.config = Config(**settings)
        self.server = None

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        await self.store.start()
        self.server = RealmServer(self.config, self.store, crypto.generate_keypair(),
                                  wall_clock=getattr(loop, "wall_time", time.time))
        return self

    async def __aexit__(self, *exc):
        for task in list(self.server._tasks):
            task.cancel()
        self.server.decider.close()
        await self.store.stop()
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

    async def connect(self, device_id, token):
        """A MemoryDevice for device_id that logs in with `token` (MemoryStore.add_device),
        as far as the realm lets it: look at device.closed() and device.link.device."""
        device = MemoryDevice(self.server, device_id, token)
        await self.settle(device)
        return device

    async def settle(self, *devices):
        """Let the loop run what the realm started (logins, stores, flushes), pumping the
        devices between turns."""
        for _ in range(10):
            await asyncio.sleep(0)
            for device in devices:
                device.pump()

    async def advance(self, seconds, *devices):
        """Move the realm's virtual clock (VirtualTimeLoop) `seconds` on, letting each
        timer on the way fire and the devices answer (they read and send what their
        connection has, but tick only when the test says)."""
        await asyncio.get_running_loop().advance(seconds, lambda: self.settle(*devices))
