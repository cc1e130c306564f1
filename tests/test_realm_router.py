"""The router in one process, with a store whose answers the test holds back: the live
packets that arrive while a target's stored ones are fetched follow them, in order, once;
a target that leaves meanwhile gets them stored again; a store that fails is UNAVAILABLE."""
import asyncio

from shared import codec, crypto
from shared.device import DeviceConnection
from shared.events import DeliveryPacket, ProxyPassPacket, LoginRequest
from shared.framing import StreamFramer
from host.login import Decision
from host.registry import Queued, id_text
from host.server import Config, RealmServer
from tests.realm_helpers import run

A, B = bytes([1]) * 16, bytes([2]) * 16


class GatedStore:
    """take_queue for B waits for `gate`; enqueue records, or fails when `broken`."""

    def __init__(self, stored):
        self.gate = asyncio.Event()
        self.stored = list(stored)
        self.enqueued = []
        self.broken = False

    def bound_key(self, device_id):
        return None

    def set_online(self, device, online, now):
        pass

    async def take_queue(self, device, now):
        if device != id_text(B):
            return []
        await self.gate.wait()
        items, self.stored = self.stored, []
        return items

    async def enqueue(self, target, sender, msg_id, inner, now):
        await asyncio.sleep(0)
        if self.broken:
            raise OSError("disk gone")
        self.enqueued.append((target, msg_id, inner))
        return codec.QUEUED


class Transport:
    def __init__(self):
        self.data = bytearray()
        self.closed = False

    def write(self, data):
        self.data += data

    def get_write_buffer_size(self):
        return 0

    def close(self):
        self.closed = True

    abort = close


class Device:
    """A DeviceConnection on an in-memory link; `events` collects what it received."""

    def __init__(self, realm, device_id):
        private, public = crypto.generate_keypair()
        self.realm = realm
        self.conn = DeviceConnection(device_id, private, public, None, StreamFramer(),
                                     realm.now_ms())
        self.transport = Transport()
        self.link = realm.open_link(self.transport, "test-%d" % device_id[0], StreamFramer())
        self.events = []
        self.login = None

    def pump(self):
        """Move bytes both ways until neither side has more."""
        while True:
            data = self.conn.data_to_send()
            if data:
                for event in self.link.conn.receive_data(data, self.realm.now_ms()):
                    if isinstance(event, LoginRequest):
                        self.login = event
                    else:
                        self.link._handle([event])
                self.link.flush()
            back, self.transport.data = bytes(self.transport.data), bytearray()
            if back:
                self.events += self.conn.receive_data(back, self.realm.now_ms())
            if not data and not back:
                return

    def received(self):
        return [(e.msg_id, e.inner) for e in self.events if isinstance(e, ProxyPassPacket)]

    def deliveries(self):
        return [(e.msg_id, e.status) for e in self.events if isinstance(e, DeliveryPacket)]


async def logged_in(realm, device_id, wait=True):
    device = Device(realm, device_id)
    device.pump()
    task = asyncio.ensure_future(realm.start_session(device.link, Decision()))
    if wait:
        await task
    else:
        await settle()  # logged in, its stored packets being fetched
    device.pump()
    return device, task


async def settle(*devices):
    for _ in range(5):
        await asyncio.sleep(0)
    for device in devices:
        device.pump()


async def a_and_b_logging_in(store):
    """A realm with A logged in and B logging in: B's stored packets not yet read."""
    realm = RealmServer(Config(), store, crypto.generate_keypair())
    a, _ = await logged_in(realm, A)
    b, login = await logged_in(realm, B, wait=False)
    return realm, a, b, login


def stored(*msg_ids):
    return [Queued(A, i, b"stored %d" % i) for i in msg_ids]


def test_live_packets_wait_for_the_stored_ones_and_follow_them_in_order():
    async def body():
        store = GatedStore(stored(1, 2))
        realm, a, b, login = await a_and_b_logging_in(store)
        for i in (3, 4):
            a.conn.send_proxy(B, i, b"live %d" % i)
            a.pump()
        await settle(a, b)
        assert b.received() == [] and a.deliveries() == []
        store.gate.set()
        await login
        await settle(a, b)
        assert b.received() == [(1, b"stored 1"), (2, b"stored 2"), (3, b"live 3"),
                                (4, b"live 4")]
        assert a.deliveries() == [(3, codec.DELIVERED), (4, codec.DELIVERED)]
        a.conn.send_proxy(B, 5, b"live 5")
        a.pump()
        await settle(a, b)
        assert b.received()[-1] == (5, b"live 5") and len(b.received()) == 5
        realm.decider.close()
    run(body())


def test_a_target_that_leaves_while_its_packets_are_fetched_gets_them_stored_again():
    async def body():
        store = GatedStore(stored(1, 2))
        realm, a, b, login = await a_and_b_logging_in(store)
        a.conn.send_proxy(B, 3, b"live 3")
        a.pump()
        b.link.transport_lost(None)
        store.gate.set()
        await login
        await settle(a)
        assert [(m, inner) for _, m, inner in store.enqueued] == [
            (1, b"stored 1"), (2, b"stored 2"), (3, b"live 3")]
        assert a.deliveries() == [(3, codec.QUEUED)]
        realm.decider.close()
    run(body())


def test_a_packet_the_store_cannot_keep_is_unavailable_never_queued():
    async def body():
        store = GatedStore([])
        store.broken = True
        realm = RealmServer(Config(), store, crypto.generate_keypair())
        a, _ = await logged_in(realm, A)
        a.conn.send_proxy(B, 7, b"for an offline target")
        a.pump()
        await settle(a)
        assert a.deliveries() == [(7, codec.UNAVAILABLE)]
        assert not a.link.ended  # the sender's session goes on
        realm.decider.close()
    run(body())
