"""What an attacker can make the realm spend or lose, against a real `realm serve`
(issue 13): packets before a fault, rate limits, logs, descriptors, connection floods."""
import asyncio
import gc
import io
import logging
import random
import resource
import select
import socket
import struct
import sys
import time
import weakref

import pytest

from shared import codec
from shared.errors import DENIED, MALFORMED, SESSION_REPLACED, TIMEOUT, TOO_LARGE
from shared.events import DeliveryPacket, ProxyPassPacket, Welcomed
from shared.framing import StreamFramer
from host import logs
from host.inprocess import InProcessRealm
from host.listener import Listener, address_group
from host.registry import Registry
from host.store import LocalStore
from tests.realm_helpers import RawDevice, RealmProcess, checked_realm, hello_bytes, run_cli
from tools.harness import free_port


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    yield from checked_realm(tmp_path_factory.mktemp("harden"), "--handshake-timeout", "3")


def pair(realm):
    devices = []
    for _ in range(2):
        device_id, token = realm.add_device()
        devices.append(RawDevice(realm.port, device_id, token))
        devices[-1].handshake()
    return devices


@pytest.mark.parametrize("fault, code", [
    (b"\x00\x03\x02\x0f\x00", MALFORMED),     # a frame that does not open
    (b"\xff\xff", TOO_LARGE),                 # an oversize length prefix
    (None, SESSION_REPLACED),                 # the device's own Error
])
def test_a_packet_before_a_fault_in_the_same_read_is_relayed_and_answered(realm, fault, code):
    sender, target = pair(realm)
    sender.conn.send_proxy(target.device_id, 5, b"\x01\x00before the fault")
    if fault is None:
        sender.conn.close(code, "bye")
        sender.send_raw(sender.conn.data_to_send())
    else:
        sender.send_raw(sender.conn.data_to_send() + fault)
    got = target.pump(lambda e: isinstance(e, ProxyPassPacket))
    assert isinstance(got, ProxyPassPacket) and got.inner == b"\x01\x00before the fault"
    if fault is not None:
        report = sender.pump(lambda e: isinstance(e, DeliveryPacket))
        assert (report.msg_id, report.status) == (5, codec.DELIVERED)
        assert sender.expect_closed().code == code
    target.close()
    sender.close()


# -- logs (item 3) ----------------------------------------------------------------------------
FORGED = "bye\n2026-12-03 08:00:00,000 ERROR Traceback (most recent call last):\r\n  File " \
    "\"x.py\"\x1b[31m, line 1\u2028" + "A" * 3000


def log_growth(realm, send):
    """Bytes the realm logs for one unauthenticated connection that sends `send`."""
    before = realm.log()
    ends = before.count("disconnect ") + before.count("refused ")
    with socket.create_connection(("127.0.0.1", realm.port)) as sock:
        sock.sendall(send)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = realm.log()
        if after.count("disconnect ") + after.count("refused ") > ends:
            return after[len(before):]
        time.sleep(0.02)
    raise AssertionError("the connection's end was not logged")


def test_a_peers_error_text_is_quoted_and_cut_and_forges_no_line(tmp_path):
    realm = RealmProcess(tmp_path / "data")  # its log holds the forged text, quoted
    try:
        error = StreamFramer().frame(codec.encode(codec.PROTO_REALM, codec.ERROR, 6, 0, FORGED))
        hello = hello_bytes()
        for send in (error, hello + error, hello + b"\x00\x05junk" * 200):
            added = log_growth(realm, send)
            assert len(added.encode()) < 1024, (len(added.encode()), added)
            for line in added.splitlines():
                assert line.startswith("20") and " INFO " in line, line
    finally:
        assert realm.stop() == 0
    for line in realm.log().splitlines():
        assert " ERROR " not in line.split('"')[0], line  # outside the peer's quoted text


def test_log_text_is_escaped_and_a_link_has_a_line_budget():
    assert logs.quote('a"b\\c\nd\x1b') == '"a\\"b\\\\c\\nd\\x1b"'
    assert logs.quote("x" * 200, 10) == '"xxxxxxxxxx"... (190 more characters)'
    stream = io.StringIO()
    logger = logs.setup(stream=stream)
    try:
        logger.info("one %s", "line\nforged\u2028")
        link = logs.LinkLog(logger, limit=3)
        for i in range(10):
            link.line(logging.INFO, "line %d", i)
        link.last("end")
    finally:
        logs.setup()
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("one line\\nforged\\u2028")
    assert [line.split(" INFO ")[1] for line in lines[1:]] == [
        "line 0", "line 1", "line 2", "end (7 more lines of this link suppressed)"]


def test_a_links_lines_written_directly_are_the_lines_logging_writes(monkeypatch):
    """A link's lines reach the realm's own stream handler without a LogRecord: byte for
    byte what logging writes for them, escaped alike. With another handler on the
    logger they go through logging, so that one sees them too."""
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.5)
    monkeypatch.setattr(time, "time_ns", lambda: 1_800_000_000_500_000_000)
    stream = io.StringIO()
    logger = logs.setup(stream=stream)
    seen = []
    try:
        link = logs.LinkLog(logger)
        for message, args in (("login %s from %s", ("a (b)", "[::1]:5")), ("x\x1b %%", ())):
            link.line(logging.INFO, message, *args)
            logger.info(message, *args)
        link.last("end %s", "line\nforged")
        logger.info("end %s", "line\nforged")
        extra = logging.Handler()
        extra.emit = seen.append
        logger.addHandler(extra)
        link.line(logging.WARNING, "warned %d", 1)
    finally:
        logs.setup()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 7 and lines[0:6:2] == lines[1:6:2], lines
    assert lines[1].endswith(" INFO login a (b) from [::1]:5") and "\x1b" not in lines[3]
    assert lines[6].endswith(" WARNING warned 1") and [r.getMessage() for r in seen] == [
        "warned 1"]


def test_log_lines_are_stamped_as_logging_does_and_escaped():
    """The realm's formatter makes a stamp's seconds once a second and skips the escape of
    printable text: its lines are still exactly logging's own, escaped."""
    ours = logs.setup(stream=io.StringIO()).handlers[0].formatter
    plain = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    start = 1_800_000_000.0
    for created in (start, start + 0.999, start + 1.0, start + 1.5, start + 3600.25, start):
        for message in ("login %s", "line\nforged\u2028 %s"):
            fields = {"created": created, "msecs": int((created - int(created)) * 1000) + 0.0,
                      "levelname": "INFO", "msg": message, "args": ("x\x1b",)}
            line = ours.format(logging.makeLogRecord(fields))
            assert line == logs.escape(plain.format(logging.makeLogRecord(fields)))
            assert "\n" not in line and "\x1b" not in line
    try:
        raise ValueError("boom")
    except ValueError:
        fields = {"created": start, "msecs": 0.0, "levelname": "ERROR", "msg": "failed %s",
                  "args": ("x",), "exc_info": sys.exc_info()}
    line = ours.format(logging.makeLogRecord(fields))  # a traceback: logging's own way
    assert line == plain.format(logging.makeLogRecord(fields)) and "ValueError: boom" in line
    logs.setup()


def test_a_log_file_is_rotated_and_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "FILE_BYTES", 4096)
    path = tmp_path / "realm.log"
    logger = logs.setup(log_file=str(path))
    try:
        for i in range(2000):
            logger.info("line %d %s", i, "x" * 60)
    finally:
        logs.setup()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["realm.log"] + ["realm.log.%d" % i for i in range(1, logs.FILE_KEEP + 1)]
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 4096 * (logs.FILE_KEEP + 1)


def test_an_unwritable_log_file_is_a_one_line_error(tmp_path):
    code, _, err = run_cli("serve", "--data", tmp_path / "data", "--listen", "127.0.0.1:0",
                           "--log-file", tmp_path / "no" / "such" / "dir" / "realm.log")
    assert code == 1 and err.startswith("realm: cannot write the log file") and \
        len(err.splitlines()) == 1, err


# -- file descriptors (item 2) -----------------------------------------------------------------
def open_files_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        line = [line for line in f if line.startswith("Max open files")][0]
    return int(line.split()[3])


def denied(socks, expected, timeout=10):
    """The sockets of `socks` the realm answered Error DENIED and closed (waits until
    `expected` of them are, or `timeout`); the others are left open, unread."""
    found = []
    pending = {sock: StreamFramer() for sock in socks}
    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending), [], [], 0.1)
        for sock in readable:
            data = sock.recv(4096)
            packets = pending[sock].feed(data)
            if packets:
                assert [codec.decode(p)[1][0] for p in packets] == [DENIED]
                found.append(sock)
                del pending[sock]
    return found


def test_at_the_open_file_limit_connections_are_refused_cleanly_and_logged_once(tmp_path):
    realm = RealmProcess(tmp_path / "data", "--max-handshakes-per-address", "1000",
                         "--hello-timeout", "60", fd_limit=(64, 100))
    held = []
    try:
        assert open_files_limit(realm.proc.pid) == 100  # the soft limit raised to the hard
        capacity = int(realm.log().split("at most ")[1].split()[0])
        assert 20 < capacity < 100
        for _ in range(capacity + 100):
            held.append(socket.create_connection(("127.0.0.1", realm.port)))
        realm.wait_log("at the connection limit")
        refused = denied(held, len(held) - capacity)
        assert len(refused) >= len(held) - capacity - 5  # a few may still be being set up
        for sock in held:
            sock.close()
        held = []
        # Every link the realm took has ended (under load it may have taken fewer than
        # `capacity` before the sockets closed: those still queued are refused or ended).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            log = realm.log()
            if log.count("disconnect ") >= log.count("connect ") - log.count("disconnect "):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("links not ended:\n" + realm.log())
        device_id, token = realm.add_device()
        device = RawDevice(realm.port, device_id, token)  # served again
        device.handshake()
        device.close()
        log = realm.log()
        # Logged when the state changes, not per connection.
        assert 1 <= log.count("at the connection limit") <= 3
        assert log.count("below the connection limit again: ") == \
            log.count("at the connection limit")
        assert "connections were refused" in log
    finally:
        for sock in held:
            sock.close()
        assert realm.stop() == 0
    realm.assert_clean_log()
    assert len(realm.log().encode()) < 300 * (capacity + 10), "about two lines per link"


# -- connection floods (item 1) ----------------------------------------------------------------
def idle_flood(port, count, sources, first_bytes=(b"", b"\x00", b"\x00\x47\x02")):
    """`count` connections from `sources` (in turn) that send a few bytes at most, then
    nothing: none, half a length, or the start of a Hello."""
    socks = []
    for i in range(count):
        sock = socket.socket()
        sock.bind((sources[i % len(sources)], 0))
        sock.connect(("127.0.0.1", port))
        if first_bytes[i % len(first_bytes)]:
            sock.sendall(first_bytes[i % len(first_bytes)])
        socks.append(sock)
    return socks


def flood_size(wanted):
    """As many connections as this process may open, up to `wanted`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return min(wanted, soft - 100)


@pytest.mark.parametrize("sources", [["127.0.0.1"], ["127.0.3.%d" % i for i in range(1, 11)]])
def test_a_device_logs_in_during_a_flood_of_idle_connections(tmp_path, sources):
    """1,000 idle connections from one address (past its share, they are refused at
    once), or 300 from ten addresses (more than the 256 handshake slots: idle connections
    take none, a slot is taken with the Hello)."""
    # The default limits but 256 slots, fewer than the flood; --verbose: "connect" lines.
    realm = RealmProcess(tmp_path / "data", "--max-handshakes", "256", "--verbose")
    device_id, token = realm.add_device()
    flood = idle_flood(realm.port, flood_size(1000 if len(sources) == 1 else 300), sources)
    try:
        realm.wait_log("connect 127.0.", count=min(len(flood), 32 * len(sources)))
        started = time.monotonic()
        device = RawDevice(realm.port, device_id, token, source="127.0.0.2")
        device.handshake()
        took = time.monotonic() - started
        device.close()
    finally:
        for sock in flood:
            sock.close()
        assert realm.stop() == 0
    realm.assert_clean_log()
    print("first login during the flood: %.3f s" % took)


def test_a_connection_gets_a_short_deadline_for_its_hello(tmp_path):
    realm = RealmProcess(tmp_path / "data", "--hello-timeout", "0.5")  # handshake: 30 s
    try:
        hello = hello_bytes()
        with socket.create_connection(("127.0.0.1", realm.port)) as sock:
            started = time.monotonic()
            sock.settimeout(0.1)
            answer = b""
            for byte in hello:  # a Hello at ten bytes per second
                try:
                    sock.sendall(bytes([byte]))
                    answer += sock.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if answer:
                    break
            took = time.monotonic() - started
        assert [codec.decode(p)[1][:1] for p in StreamFramer().feed(answer)] == [(TIMEOUT,)]
        assert took < 3
        realm.wait_log("TIMEOUT no Hello in time")
        device_id, token = realm.add_device()  # a device that sends its Hello at once
        RawDevice(realm.port, device_id, token).handshake()
    finally:
        assert realm.stop() == 0
    realm.assert_clean_log()


# -- IPv6 addresses counted by /64 --------------------------------------------------------------
@pytest.mark.parametrize("ip, group", [
    ("127.0.0.1", "127.0.0.1"),                                  # IPv4: the address
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),                    # IPv6: its /64
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:10.1.2.3", "10.1.2.3"),                             # IPv4-mapped: as IPv4
    ("::1", "::/64"),
    ("fe80::1%eth0", "fe80::/64"),                               # a scope: dropped
    ("/dev/ttyUSB0", "/dev/ttyUSB0"),                            # not an IP: as it is
])
def test_per_address_limits_count_an_ipv6_address_by_its_64(ip, group):
    assert address_group(ip) == group


def test_the_handshake_share_and_login_limits_of_an_ipv6_peer_are_its_64s():
    """Connections from 40 addresses of one /64 share one address's share (32); one from
    the next /64 and an IPv4-mapped one are let in; what the login limits count each
    link under (its `source`) is the /64. Accepted sockets are handed over as the
    listener would, with the peer addresses an attacker's /64 would show."""
    async def body():
        async with InProcessRealm() as realm:
            server = realm.server
            peers, refused = [], 0
            addresses = ["2001:db8:1:2::%x" % i for i in range(1, 41)] + \
                        ["2001:db8:1:3::1", "::ffff:127.0.0.9"]
            for ip in addresses:
                ours, theirs = socket.socketpair()
                ours.setblocking(False)
                server.adopt_tcp(ours, (ip, 4000, 0, 0))
                peers.append(theirs)
            while server.stats.connects < 34:
                await asyncio.sleep(0.01)
            for sock in peers[:40]:
                sock.setblocking(False)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                assert [codec.decode(p)[1][0] for p in StreamFramer().feed(data)] == [DENIED]
                refused += 1
            sources = sorted({link.source for link in server.links})
            for sock in peers:
                sock.close()
            return refused, len(server.links), sources

    refused, links, sources = asyncio.run(body())
    assert refused == 40 - 32
    assert links == 32 + 2
    assert sources == ["127.0.0.9", "2001:db8:1:2::/64", "2001:db8:1:3::/64"]


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_a_realm_on_ipv6_counts_its_peers_by_64(tmp_path):
    """`realm serve` on [::1]: 40 idle connections from ::1 fill the share of ::/64 and
    the rest are refused, as one IPv4 address's would be."""
    port = free_port()
    realm = RealmProcess(tmp_path / "data", "--listen", "[::1]:%d" % port, "--verbose")
    try:
        flood = [socket.create_connection(("::1", port)) for _ in range(40)]
        refused = denied(flood, 40 - 32)
        realm.wait_log("::/64 has 32 connections in the handshake, its share")
        realm.wait_log("connect [::1]:")  # the log names an IPv6 peer as [address]:port
        for sock in flood:
            sock.close()
        assert len(refused) == 40 - 32
    finally:
        assert realm.stop() == 0
    realm.assert_clean_log()


# -- stored packets kept until received (item 4) -------------------------------------------
def test_stored_packets_survive_a_link_cut_right_after_welcome(tmp_path):
    realm = RealmProcess(tmp_path / "data")
    sender_id, sender_token = realm.add_device()
    target_id, target_token = realm.add_device()
    try:
        first = RawDevice(realm.port, target_id, target_token)  # binds the target's key
        welcome = first.handshake()
        first.close()
        sender = RawDevice(realm.port, sender_id, sender_token)
        sender.handshake()
        for i in range(64):
            sender.conn.send_proxy(target_id, i + 1, b"\x01\x00%03d" % i + bytes(200))
        sender.flush()
        reports = []
        sender.pump(lambda e: isinstance(e, DeliveryPacket) and reports.append(e.status)
                    is None and len(reports) == 64)
        assert reports == [codec.QUEUED] * 64

        # The target logs in on a link that takes little and then is cut (a reset): the
        # stored packets its kernel never acknowledged must stay stored.
        cut = RawDevice(realm.port, target_id, target_token, private=first.private,
                        realm_public=welcome.realm_public, dh2=welcome.dh2, rcvbuf=2048)
        got_before = packets_until_welcome(cut)
        time.sleep(0.5)
        waiting = cut.sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        got_before |= {e.inner[2:5] for e in cut.conn.receive_data(waiting, cut.now())
                       if isinstance(e, ProxyPassPacket)}  # in its kernel: acknowledged
        cut.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cut.close()
        assert len(got_before) < 64, "the link took every packet: the test shows nothing"
        realm.wait_log("disconnect ", count=2)

        again = RawDevice(realm.port, target_id, target_token, private=first.private,
                          realm_public=welcome.realm_public, dh2=welcome.dh2)
        got_after = set()
        again.pump(lambda e: isinstance(e, ProxyPassPacket) and got_after.add(e.inner[2:5])
                   is None and len(got_before | got_after) == 64)
        again.close()
        sender.close()
    finally:
        assert realm.stop() == 0
    assert got_before | got_after == {b"%03d" % i for i in range(64)}
    print("cut after %d of 64 packets; %d delivered again after the reconnect"
          % (len(got_before), len(got_before & got_after)))


def packets_until_welcome(device):
    """Read the handshake in small steps, up to the read holding Welcome: the stored
    packets that came with it (by their numbers)."""
    got = set()
    welcomed = False
    while not welcomed:
        for event in device.conn.receive_data(device.sock.recv(512), device.now()):
            welcomed = welcomed or isinstance(event, Welcomed)
            if isinstance(event, ProxyPassPacket):
                got.add(event.inner[2:5])
        device.flush()
    return got


# -- QUEUE_FULL without the disk (item 8) ---------------------------------------------------
def test_a_full_queue_is_refused_without_a_registry_call(tmp_path, monkeypatch):
    async def body():
        store = LocalStore(str(tmp_path))
        await store.start()
        admin = Registry(str(tmp_path))
        target, _ = admin.add_device(time.time())
        calls = []
        enqueue = store._db.enqueue
        monkeypatch.setattr(store._db, "enqueue", lambda *a: calls.append(1) or enqueue(*a))
        now = time.time()
        results = [await store.enqueue(target, bytes(16), i, b"x" * 10, now) for i in range(200)]
        assert results == [codec.QUEUED] * 64 + [codec.QUEUE_FULL] * 136
        assert len(calls) == 65  # the first refusal counted the queue; none after it
        stored = await store.stored(target, now)
        store.forget_stored(target, stored[9].seq)  # the target received ten
        results = [await store.enqueue(target, bytes(16), i, b"x" * 10, now) for i in range(12)]
        assert results == [codec.QUEUED] * 10 + [codec.QUEUE_FULL] * 2
        admin.close()
        await store.stop()
    asyncio.run(body())


# -- memory after a storm (item 9) -------------------------------------------------------------
def test_an_ended_link_is_freed_at_once_without_the_cycle_collector():
    """A link that ends (junk, a Hello then junk, a Hello then silence past its deadline,
    a peer that goes away) leaves no reference cycle: reference counting frees it, its
    connection and its transport as it ends. Before, each held the next (the core's
    callback, the error's traceback, asyncio's transport) and a storm's dead links piled
    up until the cycle collector ran, spreading over fresh allocator arenas that a few
    survivors then kept (RSS stayed up)."""
    async def body():
        async with InProcessRealm(hello_timeout_s=0.2, handshake_timeout_s=0.5) as realm:
            server = realm.server
            listener = Listener(asyncio.get_running_loop(), "127.0.0.1", 0, server.adopt_tcp,
                                lambda: len(server.links))
            port = listener.sockets[0].getsockname()[1]
            ended = []
            open_link = server.open_link

            def recorded(*args, **kwargs):  # every link, its connection and transport
                link = open_link(*args, **kwargs)
                ended.extend(weakref.ref(obj) for obj in (link, link.conn, link.transport))
                return link
            server.open_link = recorded
            first_bytes = [b"\x00\x03\x02\x0f\x00", hello_bytes() + b"\x00\x03\x02\x0f\x00",
                           hello_bytes(), b"\x00"]
            clients = []
            for data in first_bytes:
                clients.append((await asyncio.open_connection("127.0.0.1", port))[1])
                clients[-1].write(data)
            while server.stats.connects < len(first_bytes):
                await asyncio.sleep(0.01)
            clients[-1].close()  # the peer goes away; the Hello alone is late for its handshake
            while server.links:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # connection_lost callbacks, the end's log line
            alive = [ref() for ref in ended if ref() is not None]
            for writer in clients:
                writer.close()
            listener.close()
            return len(ended), alive

    gc.collect()
    gc.disable()
    try:
        count, alive = asyncio.run(body())
    finally:
        gc.enable()
    assert count == 4 * 3
    assert alive == []


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        return [int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:")][0]


def test_memory_comes_back_after_storms_of_hostile_connections(tmp_path):
    """Three storms of 1,500 connections sending junk, each followed by 3 s of rest: RSS
    comes back to within 4 MB of the fresh realm's (10 % of its 40 MB) after each, and the
    storms do not add up. What stays is pymalloc's: an arena (1 MiB) is given back only
    when empty, and the realm's own steady allocations (timers, the status page's samples)
    land in the storm's freed pools; the next storm reuses them. Before, the storm's dead
    links waited for the cycle collector (reference cycles), the storm took twice the
    memory, and RSS stayed +4 to +6 MB up, more after each storm."""
    # --backlog 128, the kernel's pace these figures were measured at: with the default
    # 4096 a storm is accepted all at once, a higher peak, and +2.5 to +4 MB stay.
    realm = RealmProcess(tmp_path / "data", "--max-handshakes-per-address", "100000",
                         "--backlog", "128", "--verbose")  # "connect" lines: accepted
    rng = random.Random(13)
    rested = []
    try:
        time.sleep(0.5)
        start = rss_mb(realm.proc.pid)
        for n in range(1, 4):
            storm = idle_flood(realm.port, flood_size(1500),
                               ["127.0.4.%d" % i for i in range(1, 9)],
                               first_bytes=[hello_bytes() + rng.randbytes(2000),
                                            b"\x0f\xa0" + rng.randbytes(3000), rng.randbytes(200)])
            realm.wait_log(" connect 127.0.4.", count=len(storm) * n, timeout=30)
            for sock in storm:
                sock.close()
            time.sleep(3)  # the realm sees the storm is over within a second or two
            rested.append(rss_mb(realm.proc.pid))
    finally:
        assert realm.stop() == 0
    print("RSS %.1f MB at start, %s MB above it after each storm" % (
        start, ", ".join("%+.1f" % (r - start) for r in rested)))
    assert max(rested) - start <= 4.0
    assert rested[2] - rested[0] <= 1.0
