"""The router in one process, with a store whose answers the test holds back: the live
packets that arrive while a target's stored ones are fetched follow them, in order, once;
a target that leaves meanwhile gets them stored again; a store that fails is UNAVAILABLE."""
import asyncio

from shared import codec
from host.inprocess import MemoryStore, run_in_realm
from host.registry import Queued, id_text

A, B = bytes([1]) * 16, bytes([2]) * 16


class GatedStore(MemoryStore):
    """B's stored packets wait for `gate`; enqueue records, or fails when `broken`."""

    def __init__(self, stored):
        MemoryStore.__init__(self)
        self.gate = asyncio.Event()
        self.queues[id_text(B)] = list(stored)
        self.enqueued = []
        self.broken = False

    async def stored(self, device, now):
        if device == id_text(B):
            await self.gate.wait()
        return await MemoryStore.stored(self, device, now)

    async def enqueue(self, target, sender, msg_id, inner, now):
        await asyncio.sleep(0)
        if self.broken:
            raise OSError("disk gone")
        self.enqueued.append((target, msg_id, inner))
        return await MemoryStore.enqueue(self, target, sender, msg_id, inner, now)


async def a_and_b_logging_in(realm):
    """A logged in and B logging in: B's stored packets not yet read."""
    a = await realm.log_in(A)
    b = await realm.log_in(B, wait=False)
    return a, b


def stored(*msg_ids):
    return [Queued(i, A, i, b"stored %d" % i) for i in msg_ids]


def test_live_packets_wait_for_the_stored_ones_and_follow_them_in_order():
    store = GatedStore(stored(1, 2))

    async def test(realm):
        a, b = await a_and_b_logging_in(realm)
        for i in (3, 4):
            a.conn.send_proxy(B, i, b"live %d" % i)
            a.pump()
        await realm.settle(a, b)
        assert b.received() == [] and a.deliveries() == []
        store.gate.set()
        await b.session
        await realm.settle(a, b)
        assert b.received() == [(1, b"stored 1"), (2, b"stored 2"), (3, b"live 3"),
                                (4, b"live 4")]
        assert a.deliveries() == [(3, codec.DELIVERED), (4, codec.DELIVERED)]
        a.conn.send_proxy(B, 5, b"live 5")
        a.pump()
        await realm.settle(a, b)
        assert b.received()[-1] == (5, b"live 5") and len(b.received()) == 5
    run_in_realm(test, store)


def test_a_target_that_leaves_while_its_packets_are_fetched_keeps_them_stored():
    store = GatedStore(stored(1, 2))

    async def test(realm):
        a, b = await a_and_b_logging_in(realm)
        a.conn.send_proxy(B, 3, b"live 3")
        a.pump()
        b.link.transport_lost(None)
        store.gate.set()
        await b.session
        await realm.settle(a)
        # The stored ones were never taken out; the live one is stored after them.
        assert [item.msg_id for item in store.queues[id_text(B)]] == [1, 2, 3]
        assert [(m, inner) for _, m, inner in store.enqueued] == [(3, b"live 3")]
        assert a.deliveries() == [(3, codec.QUEUED)]
    run_in_realm(test, store)


def test_a_packet_the_store_cannot_keep_is_unavailable_never_queued():
    store = GatedStore([])
    store.broken = True

    async def test(realm):
        a = await realm.log_in(A)
        a.conn.send_proxy(B, 7, b"for an offline target")
        a.pump()
        await realm.settle(a)
        assert a.deliveries() == [(7, codec.UNAVAILABLE)]
        assert not a.link.ended  # the sender's session goes on
    run_in_realm(test, store)
