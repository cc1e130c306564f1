"""The realm's routing in one process (host/inprocess.py): the real server, router and core
connections over memory transports, in milliseconds. tests/test_realm_server.py keeps a
few of the same on a real `realm serve` over sockets."""
import asyncio
import io

import pytest

from shared import codec, crypto
from shared.device import DeviceConnection
from shared.errors import SESSION_REPLACED
from shared.events import Closed, Welcomed
from shared.framing import StreamFramer
from host import logs, server
from host.inprocess import MemoryDevice, MemoryTransport, run_in_realm
from host.registry import id_text

A, B, C = bytes([1]) * 16, bytes([2]) * 16, bytes([3]) * 16


def test_a_packet_to_an_online_device_is_relayed_and_delivered():
    async def test(realm):
        a, b = await realm.log_in(A), await realm.log_in(B)
        a.conn.send_proxy(B, 1, b"hello")
        a.conn.send_proxy(B, 0, b"no report wanted")
        a.pump()
        await realm.settle(a, b)
        assert b.received() == [(1, b"hello"), (0, b"no report wanted")]
        assert [e.peer for e in b.events if hasattr(e, "inner")] == [A, A]  # the sender
        assert a.deliveries() == [(1, codec.DELIVERED)]
        assert realm.server.stats.relayed[codec.DELIVERED] == 2  # msg_id 0 counts too
    run_in_realm(test)


def test_packets_for_an_offline_device_wait_and_come_in_order_before_live_ones():
    async def test(realm):
        a = await realm.log_in(A)
        for i in (1, 2, 3):
            a.conn.send_proxy(B, i, b"stored %d" % i)
        a.pump()
        await realm.settle(a)
        assert a.deliveries() == [(i, codec.QUEUED) for i in (1, 2, 3)]
        b = await realm.log_in(B)
        a.conn.send_proxy(B, 4, b"live")
        a.pump()
        await realm.settle(a, b)
        assert b.received() == [(1, b"stored 1"), (2, b"stored 2"), (3, b"stored 3"),
                                (4, b"live")]
    run_in_realm(test)


def test_a_second_login_replaces_the_first_session():
    async def test(realm):
        a, old = await realm.log_in(A), await realm.log_in(B)
        new = await realm.log_in(B)
        old.pump()
        closed = [e.error for e in old.events if isinstance(e, Closed)]
        assert [(e.code, e.remote) for e in closed] == [(SESSION_REPLACED, True)]
        assert old.link.ended and old.transport.closed and not new.link.ended
        a.conn.send_proxy(B, 1, b"to the new one")
        a.pump()
        await realm.settle(a, new)
        assert new.received() == [(1, b"to the new one")]
    run_in_realm(test)


def test_a_slow_reader_is_dropped_and_the_others_go_on():
    async def test(realm):
        a, slow, c = (await realm.log_in(A), await realm.log_in(B),
                      await realm.log_in(C))
        inner = bytes(1000)
        sent = 0
        while not slow.link.ended:
            a.conn.send_proxy(B, 0, inner)
            a.pump()
            await realm.settle(a)  # B reads nothing: its unsent bytes grow
            sent += 1
            assert sent * len(inner) < 3 * realm.config.send_limit, "never dropped"
        assert slow.transport.aborted  # dropped at once, not closed politely
        assert len(slow.transport.data) > realm.config.send_limit
        a.conn.send_proxy(C, 9, b"still served")
        a.pump()
        await realm.settle(a, c)
        assert c.received() == [(9, b"still served")] and not a.link.ended
    run_in_realm(test, send_limit=16 * 1024)


def test_quiet_sessions_drop_their_prepared_keys_and_relay_the_next_packet(monkeypatch):
    async def test(realm):
        a, b = await realm.log_in(A), await realm.log_in(B)
        monkeypatch.setattr(server, "KEYS_IDLE_MS", 0)  # every session counts as quiet
        realm.server.release_idle_keys()
        for link in (a.link, b.link):
            assert link.conn._sealer.ctr is None and link.conn._opener.ctr is None
        a.conn.send_proxy(B, 1, b"after a quiet while")
        a.pump()
        await realm.settle(a, b)
        assert b.received() == [(1, b"after a quiet while")]
        assert a.deliveries() == [(1, codec.DELIVERED)]
        monkeypatch.setattr(server, "KEYS_IDLE_MS", 60000)  # busy: kept
        realm.server.release_idle_keys()
        assert a.link.conn._opener.ctr is not None and b.link.conn._sealer.ctr is not None
    run_in_realm(test)


def session_log_lines(verbose):
    """The realm's log lines (after the level) for one device's token login and its end."""
    stream = io.StringIO()
    logs.setup(verbose, stream=stream)

    async def test(realm):
        realm.store.add_device(A, b"t" * 32)
        device = await realm.connect(A, b"t" * 32)
        assert device.link.device is not None  # logged in
        device.link.transport_lost(None)
    try:
        run_in_realm(test)
    finally:
        logs.setup()
    return [line.split(" ", 3)[2:] for line in stream.getvalue().splitlines()]


def test_a_session_is_two_lines_at_info_that_name_its_device_and_address():
    """An operator reads a session as its login and its end, each with the device and the
    address; the connection's opening is a DEBUG line (--verbose)."""
    device, address = id_text(A), "memory-%s" % id_text(A)[:8]
    login = ["INFO", "login %s from %s (key bound)" % (device, address)]
    end = ["INFO", "disconnect %s device %s: connection closed by the peer" % (address,
                                                                                device)]
    assert session_log_lines(False) == [login, end]
    assert session_log_lines(True) == [["DEBUG", "connect %s" % address], login, end]


def test_a_coroutine_run_now_runs_at_once_and_its_rest_after_a_wait_in_a_task():
    """RealmServer.run_now: what a coroutine does before its first wait is done by the
    call; after it, the task goes on as the coroutine's own task would: the awaited
    result or error comes back in, a loop turn (sleep 0) passes, a cancel reaches it."""
    async def test(realm):
        loop, done = asyncio.get_running_loop(), []

        async def steps(future):
            done.append("before")
            try:
                done.append(await future)
                await asyncio.sleep(0)
                done.append(await loop.create_future())  # cancelled while it waits
            except asyncio.CancelledError:
                done.append("cancelled")
                raise
            except KeyError as e:
                done.append("error %s" % e)

        async def quick():  # awaits only what is done already: never waits
            done.append(await _done(loop, "quick"))

        assert realm.server.run_now(quick()) is None and done == ["quick"]  # no task
        del done[:]
        future = loop.create_future()
        task = realm.server.run_now(steps(future))
        assert done == ["before"] and task in realm.server._tasks
        future.set_result("result")
        for _ in range(3):
            await asyncio.sleep(0)
        assert done == ["before", "result"] and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert done == ["before", "result", "cancelled"]
        del done[:]
        failing = loop.create_future()
        task = realm.server.run_now(steps(failing))
        failing.set_exception(KeyError("k"))
        await task
        assert done == ["before", "error 'k'"]
    run_in_realm(test)


def _done(loop, value):
    future = loop.create_future()
    future.set_result(value)
    return future


def test_a_login_that_waits_for_nothing_is_answered_within_the_read_that_brought_it():
    """A login whose token is in the fast form and whose registry answers at once, no
    packets stored (a reconnect, most of a fleet after a restart): its Welcome is written
    before the loop turns (run_now, not a task)."""
    async def test(realm):
        realm.store.add_device(A, b"t" * 32)
        device = MemoryDevice(realm.server, A, b"t" * 32)
        device.pump()
        assert any(isinstance(e, Welcomed) for e in device.events)
    run_in_realm(test)


def test_every_connection_gets_a_fresh_realm_ephemeral_key():
    """Forward secrecy per connection: the e_R of every KeyCheck differs, reconnects of
    one device on the pinned path included."""
    async def test(realm):
        realm.store.add_device(A, b"t" * 32)
        private, public = crypto.generate_keypair()
        pinned, dh2, seen = None, None, []
        for _ in range(20):
            conn = DeviceConnection(A, private, public, b"t" * 32, StreamFramer(),
                                    realm.server.now_ms(), realm_public=pinned, dh2=dh2)
            transport = MemoryTransport()
            link = realm.server.open_link(transport, "memory", StreamFramer())
            welcomed = []
            while not welcomed:
                link.data_received(conn.data_to_send())
                back, transport.data = bytes(transport.data), bytearray()
                seen += [p[2:34] for p in StreamFramer().feed(back) if p[1] == codec.KEY_CHECK]
                welcomed = [e for e in conn.receive_data(back, realm.server.now_ms())
                            if isinstance(e, Welcomed)]
            pinned, dh2 = welcomed[0].realm_public, welcomed[0].dh2
            link.transport_lost(None)
        assert realm.server.stats.logins == {"pinned": 19, "first_contact": 1}
        assert len(seen) == 20 and len(set(seen)) == 20
    run_in_realm(test)
