"""The realm's timers on a virtual clock (host/inprocess.py VirtualTimeLoop): the Hello and
handshake deadlines, the heartbeat and silence limit, the login rate limit's block and
window, the checks that forget stored packets once received, the offline queue's time to
live. Each just under and just over its limit, in milliseconds. The process-level tests keep one timer on real sockets
(tests/test_realm_hardening.py, the Hello deadline) and the firmware's heartbeats."""
import asyncio
import uuid

import pytest

from shared import codec, protocol
from shared.errors import BAD_LOGIN, RATE_LIMITED, TIMEOUT
from shared.events import Welcomed
from host import inprocess
from host.inprocess import MemoryDevice, run_in_realm
from host.registry import QUEUE_MAX_PACKETS, QUEUE_TTL_S, Registry, id_text
from host.ratelimit import BLOCK_S, DEVICE_LIMIT, WINDOW_S
from host.server import RECEIPT_CHECK_S
from host.store import LocalStore

A, B, C = bytes([1]) * 16, bytes([2]) * 16, bytes([3]) * 16
TOKEN, WRONG = "t" * 43, "w" * 43
EPSILON = 0.01  # s: the link's timer fires 1 ms after the core's deadline


def timed_out(device, message):
    """The realm ended the device's link with TIMEOUT and `message`, and said so."""
    device.pump(send=False)
    error = device.closed()
    return device.link.ended and error is not None and error.remote and \
        (error.code, error.message) == (TIMEOUT, message)


def test_a_connection_that_sends_nothing_is_closed_at_the_hello_deadline():
    async def test(realm):
        silent = MemoryDevice(realm.server, A, TOKEN)  # never pumped: it sends no Hello
        await realm.advance(5 - EPSILON)
        assert not silent.link.ended
        await realm.advance(2 * EPSILON)
        assert timed_out(silent, "no Hello in time")
        assert realm.server.stats.refusals == {"TIMEOUT": 1}
    run_in_realm(test, hello_timeout_s=5, handshake_timeout_s=30)


def test_a_handshake_that_stops_after_its_hello_is_closed_at_the_handshake_deadline():
    async def test(realm):
        realm.store.add_device(A, TOKEN)
        stalled = MemoryDevice(realm.server, A, TOKEN)
        stalled.pump(read=False)  # its Hello; it never reads the realm's answer
        await realm.advance(30 - EPSILON)  # long past the Hello deadline, which it met
        assert not stalled.link.ended
        await realm.advance(2 * EPSILON)
        assert timed_out(stalled, "handshake not finished in time")
    run_in_realm(test, hello_timeout_s=5, handshake_timeout_s=30)


def test_a_silent_session_is_closed_at_three_heartbeats_and_a_lively_one_stays():
    async def test(realm):
        silent, lively = await realm.log_in(A), await realm.log_in(B)
        assert [e.heartbeat_s for e in lively.events if isinstance(e, Welcomed)] == [30]
        limit = protocol.SILENCE_FACTOR * 30
        for _ in range(8):  # the lively device sends its heartbeat when due
            await realm.advance(limit / 4, lively)
            lively.tick()
        assert timed_out(silent, "peer silent for %d s" % limit)
        # Two silence limits passed: the realm kept the lively one for its heartbeats, and
        # the device kept the realm (it closes on silence too) for the realm's.
        assert not lively.link.ended and lively.closed() is None
    run_in_realm(test)


def test_the_silence_limit_is_exact():
    async def test(realm):
        silent = await realm.log_in(A)
        limit = protocol.SILENCE_FACTOR * protocol.DEFAULT_HEARTBEAT_S
        await realm.advance(limit - EPSILON)
        assert not silent.link.ended
        await realm.advance(2 * EPSILON)
        assert timed_out(silent, "peer silent for %d s" % limit)
    run_in_realm(test)


def test_five_bad_logins_block_the_device_for_the_block_time_then_it_logs_in():
    async def test(realm):
        realm.store.add_device(A, TOKEN)
        for _ in range(DEVICE_LIMIT):
            assert (await realm.connect(A, WRONG)).closed().code == BAD_LOGIN
        await realm.advance(BLOCK_S - EPSILON)
        assert (await realm.connect(A, TOKEN)).closed().code == RATE_LIMITED
        await realm.advance(2 * EPSILON)
        device = await realm.connect(A, TOKEN)
        assert device.closed() is None and device.link.device is not None
    run_in_realm(test)


def test_bad_logins_older_than_the_window_no_longer_count():
    async def test(realm):
        realm.store.add_device(A, TOKEN)
        for _ in range(DEVICE_LIMIT - 1):
            assert (await realm.connect(A, WRONG)).closed().code == BAD_LOGIN
        await realm.advance(WINDOW_S + EPSILON)
        for _ in range(DEVICE_LIMIT - 1):  # with the old ones still counted, one too many
            assert (await realm.connect(A, WRONG)).closed().code == BAD_LOGIN
        device = await realm.connect(A, TOKEN)
        assert device.closed() is None and device.link.device is not None
    run_in_realm(test)


def test_stored_packets_are_forgotten_once_the_device_is_heard_after_them():
    async def test(realm):
        a = await realm.log_in(A)
        for i in (1, 2):
            a.conn.send_proxy(B, i, b"stored %d" % i)
        a.pump()
        await realm.settle(a)
        assert a.deliveries() == [(1, codec.QUEUED), (2, codec.QUEUED)]
        b = await realm.log_in(B)
        assert b.received() == [(1, b"stored 1"), (2, b"stored 2")]
        await realm.advance(10 * RECEIPT_CHECK_S)  # read, but nothing sent after them:
        assert len(realm.store.queues[id_text(B)]) == 2  # not known to be received
        b.conn.send_proxy(A, 3, b"after them")
        b.pump()
        await realm.advance(RECEIPT_CHECK_S + EPSILON, a, b)
        assert id_text(B) not in realm.store.queues
    run_in_realm(test)


def test_a_hello_waiting_for_a_slot_is_served_when_one_frees_or_timed_out_at_its_deadline():
    # All slots taken: a Hello waits unread (not DENIED), its own Hello deadline does not
    # run (the wait is the realm's doing), and the whole handshake timeout, counted from
    # its accept, bounds the wait; TIMEOUT is retried by a device on its usual backoff.
    async def test(realm):
        for device_id in (A, B, C):
            realm.store.add_device(device_id, TOKEN)
        waiting = MemoryDevice(realm.server, B, TOKEN)  # accepted at 0, idle
        await realm.advance(1)
        holder = MemoryDevice(realm.server, A, TOKEN)  # accepted at 1, takes the one slot
        holder.pump(read=False)
        await realm.advance(0.5)
        served = MemoryDevice(realm.server, C, TOKEN)  # accepted at 1.5
        await realm.advance(0.5)
        waiting.pump(read=False)
        served.pump(read=False)
        assert waiting.link.held and served.link.held  # neither read nor refused
        await realm.advance(30 - 2 - EPSILON)  # far past the Hello deadline (5 s)
        assert not waiting.link.ended and waiting.transport.data == b""
        await realm.advance(2 * EPSILON)
        assert timed_out(waiting, "the realm had no handshake slot free in time")
        # The holder's handshake times out at 31 s: its slot goes to the one still waiting.
        await realm.advance(1)
        assert timed_out(holder, "handshake not finished in time")
        await realm.settle(served)
        assert [e for e in served.events if isinstance(e, Welcomed)]
    run_in_realm(test, hello_timeout_s=5, handshake_timeout_s=30, max_handshakes=1)


def test_the_virtual_clock_moves_only_when_told_and_says_when_a_test_waits_for_nothing(
        monkeypatch):
    monkeypatch.setattr(inprocess, "IDLE_LIMIT_S", 0.2)
    fired = []

    async def test():
        loop = asyncio.get_running_loop()
        loop.call_later(30, fired.append, 30)
        loop.call_later(10, lambda: loop.call_later(10, fired.append, 20))
        await loop.advance(19.9, _settle)
        assert fired == []
        await loop.advance(0.2, _settle)  # the one set at 10 for 10 later
        assert fired == [20]
        await asyncio.sleep(1)  # nobody advances: this never ends
    with pytest.raises(RuntimeError, match="nothing to run"):
        inprocess.run_in_virtual_time(test())
    assert fired == [20]


def test_a_timer_that_rearms_in_the_past_is_a_busy_loop_and_said_so():
    async def test():
        loop = asyncio.get_running_loop()

        def again():
            loop.call_at(loop.time() - 1, again)
        loop.call_later(1, again)
        await loop.advance(2, _settle)
    with pytest.raises(RuntimeError, match="re-arms at a time already past"):
        inprocess.run_in_virtual_time(test())


async def _settle():
    await asyncio.sleep(0)


# -- the offline queue's time to live (PROTOCOL.md: stored packets expire after 24 h) -------
LONG_HEARTBEAT_S = 65535  # the sender's session outlives the day the test moves on


def registered(tmp_path, count):
    """`count` devices in a registry at tmp_path (raw ids) and a LocalStore on it, the
    queue's real expiry (host/registry.py) timed by the realm's virtual wall clock."""
    admin = Registry(str(tmp_path))
    ids = [uuid.UUID(admin.add_device(0)[0]).bytes for _ in range(count)]
    admin.close()
    return ids, LocalStore(str(tmp_path))


async def stored_and_settled(realm, *devices):
    """The store's worker has done what it was given (one thread, in call order), and the
    loop has run what its answers started."""
    await realm.store.queue_totals()
    await realm.settle(*devices)


async def sent(realm, device, target, msg_id, inner):
    device.conn.send_proxy(target, msg_id, inner)
    device.pump()
    await stored_and_settled(realm, device)


@pytest.mark.parametrize("late", [False, True])
def test_a_stored_packet_is_delivered_until_its_time_to_live_and_gone_after(tmp_path, late):
    (a_id, b_id), store = registered(tmp_path, 2)

    async def test(realm):
        a = await realm.log_in(a_id)
        await sent(realm, a, b_id, 1, b"old")
        await realm.advance(3600, a)
        await sent(realm, a, b_id, 2, b"an hour younger")
        await realm.advance(QUEUE_TTL_S - 3600 + (EPSILON if late else -EPSILON), a)
        b = await realm.log_in(b_id)
        await stored_and_settled(realm, a, b)
        assert b.received() == ([] if late else [(1, b"old")]) + [(2, b"an hour younger")]
        # The sender was told QUEUED, once per msg_id; an expiry tells it nothing more.
        assert a.deliveries() == [(1, codec.QUEUED), (2, codec.QUEUED)]
        assert not a.link.ended and not b.link.ended
    run_in_realm(test, store, heartbeat_s=LONG_HEARTBEAT_S)


def test_a_full_queue_takes_packets_again_once_its_oldest_expires(tmp_path):
    # The realm refuses a full queue's packets without asking the registry (store.py
    # _Usage), until the oldest one's time to live is over: then the registry makes room.
    (a_id, b_id), store = registered(tmp_path, 2)

    async def test(realm):
        a = await realm.log_in(a_id)
        for i in range(QUEUE_MAX_PACKETS + 1):
            await sent(realm, a, b_id, i + 1, b"x")
        assert a.deliveries()[-2:] == [(QUEUE_MAX_PACKETS, codec.QUEUED),
                                       (QUEUE_MAX_PACKETS + 1, codec.QUEUE_FULL)]
        await realm.advance(QUEUE_TTL_S - EPSILON, a)
        await sent(realm, a, b_id, 100, b"just before")
        await realm.advance(2 * EPSILON, a)
        await sent(realm, a, b_id, 101, b"just after")
        assert a.deliveries()[-2:] == [(100, codec.QUEUE_FULL), (101, codec.QUEUED)]
        b = await realm.log_in(b_id)
        await stored_and_settled(realm, a, b)
        assert b.received() == [(101, b"just after")]
    run_in_realm(test, store, heartbeat_s=LONG_HEARTBEAT_S)
