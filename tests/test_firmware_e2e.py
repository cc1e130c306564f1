"""The firmware end to end: a real realm process and simulated devices (the firmware,
compiled as for a board, under the MicroPython unix port with a small heap), over TCP
and over a serial link. Issue 4's "what must hold", one test each."""
import contextlib
import json
import os
import re
import shutil

import pytest

from tests.fw_helpers import (Fleet, PtyPair, online, realm, received, send,  # noqa: F401
                              start_realm, tcp_connections, unix_build)  # (fixtures)
from tests.realm_helpers import run_cli
from host.keyfile import REALM_KEY_FILE
from tools.simproc import ROOT
from shared.framing import RECEIVE_BUFFER


@pytest.fixture
def fleet(tmp_path, realm, unix_build):
    devices = Fleet(tmp_path, realm)
    yield devices
    devices.stop()


def test_two_devices_exchange_messages_over_tcp_one_connection_each(fleet, realm):
    alice, bob = fleet.add("alice"), fleet.add("bob")
    assert online(alice) == "first-contact"
    assert online(bob) == "first-contact"
    # Its console lines say which device speaks, in words a user knows.
    alice.wait(r"^alice: online: realm 'realm' at 127\.0\.0\.1:%d in \d+ ms \(first contact\)$"
               % fleet.realm.port)
    assert send(alice, bob, "hello bob") == "DELIVERED"
    received(bob, alice, "hello bob")
    assert send(bob, alice, "hello alice") == "DELIVERED"
    received(alice, bob, "hello alice")
    alice.command("ping %s" % bob.id)
    alice.wait(r"^pong %s \d+$" % bob.id)
    for device in (alice, bob):
        assert tcp_connections(device.pid, realm.port) == 1


def test_an_idle_device_stays_online_on_heartbeats_with_its_next_key_made(fleet, realm):
    alice, bob = fleet.add("alice"), fleet.add("bob")
    online(alice)
    online(bob)
    # The realm's heartbeat is 1 s: 3.5 s without traffic would close a silent link.
    mark = alice.mark()
    alice.assert_quiet(r": (offline|connecting)", 3.5, since=mark)
    alice.command("stats")
    stats = alice.wait(r"^stats (.*)$", since=mark).group(1)
    assert "connects=1 " in stats and "next_key_ready=True" in stats, stats
    assert send(alice, bob, "still here") == "DELIVERED"


def test_a_refused_login_is_reported_and_retried_only_after_the_long_wait(fleet, realm):
    intruder = fleet.add("intruder", token="not-the-right-token")
    m = intruder.wait(r": error: the realm said BAD_LOGIN.*; retrying in (\d+) ms")
    # auth_ms is 2.5 s here, against at most 0.8 s for a lost connection.
    assert int(m.group(1)) >= 1250
    intruder.assert_quiet(r": connecting", 1.2, since=intruder.mark())


@pytest.fixture
def on_serial(tmp_path, unix_build):
    """A realm serving a pty pair, a device "wire" on its other end and one "tcp" on TCP,
    both online: (realm, pty, wire, tcp). wire keeps a receive buffer for the largest
    packet (config "receive_buffer"); tcp has the default one."""
    pty = PtyPair(tmp_path)
    realm = start_realm(tmp_path, "--serial", pty.realm_end)
    fleet = Fleet(tmp_path, realm)
    try:
        realm.wait_log("serial %s open" % pty.realm_end)
        wire = fleet.add("wire", serial=pty.device_end, receive_buffer=RECEIVE_BUFFER)
        tcp = fleet.add("tcp")
        online(wire)
        online(tcp)
        yield realm, pty, wire, tcp
    finally:
        fleet.stop()
        realm.stop()
        pty.stop()
    realm.assert_clean_log()


def test_serial_device_talks_to_tcp_device(on_serial):
    realm, _pty, wire, tcp = on_serial
    assert send(wire, tcp, "over the wire") == "DELIVERED"
    received(tcp, wire, "over the wire")
    assert send(tcp, wire, "x" * 600) == "DELIVERED"  # several COBS blocks
    received(wire, tcp, "x" * 600)
    realm.wait_log("login %s (%s) from serial:" % (wire.id, wire.name))
    assert tcp_connections(wire.pid, realm.port) == 0  # its one link is the serial one
    assert tcp_connections(tcp.pid, realm.port) == 1


# The largest message a packet carries: max_packet 4096 less the hop's 46 and the
# end-to-end 26 bytes.
_LARGEST = 4024
_APP_COPY = pytest.mark.xfail(reason="the test app takes each message as a copy (bytes), "
                              "a block of 4 KB a fragmented 128k heap may not have: "
                              "docs/FIRMWARE.md, 'Message size at 128k'", strict=False)


@pytest.mark.parametrize("size", [600, 2048, pytest.param(_LARGEST, marks=_APP_COPY)])
def test_a_serial_device_takes_several_large_messages_in_a_row(on_serial, tmp_path, size):
    # Each large packet is a peak on the device's receive path at SIM_HEAP: a copy too
    # many once asked its fragmented heap for a block it did not have (a MemoryError
    # dropped the session 1 run in 20 at 600 bytes; the realm had answered DELIVERED, so
    # the message was lost; 2 KB and 4 KB failed every time). Now read and opened in the
    # receive buffer (config "receive_buffer"), then copied once for the app.
    realm, _pty, wire, _tcp = on_serial
    sender = json.loads(run_cli("device", "add", "--name", "sender", "--data",
                                realm.data_dir, "--json")[1])
    mark = wire.mark()
    # A first message, small, so that the device has the sender's key: the first one from
    # a peer it has no key for waits in a copy (docs/FIRMWARE.md, "Message size at 128k").
    for text in ["-"] + [letter * size for letter in "abcde"]:
        code, out, err = run_cli("send", "--as", "sender", "--token", sender["token"],
                                 "--to", wire.id, "--data", realm.data_dir, "--realm",
                                 "127.0.0.1:%d" % realm.port, "--state",
                                 str(tmp_path / "sender.json"), "--json", "-",
                                 input_text=text)
        assert code == 0 and json.loads(out)["status"] == "DELIVERED", (out, err)
        wire.wait(r"^message %s %s$" % (sender["id"], text), 15, mark)
    assert "out of memory" not in wire.output(), wire.output()[-2000:]


LARGE_SEND_APP = os.path.join(ROOT, "tests", "large_send_app.py")


@contextlib.contextmanager
def large_sender(tmp_path, link, **config):
    """(sender, taker): the sender at SIM_HEAP on a TCP or serial link (config: its
    config's extra fields) with an app that sends from a buffer of its own
    (tests/large_send_app.py); the taker on TCP, with the heap to take and print 4 KB
    messages (taking them at SIM_HEAP is the serial tests' above)."""
    pty = PtyPair(tmp_path) if link == "serial" else None
    realm = start_realm(tmp_path, *(("--serial", pty.realm_end) if pty else ()))
    fleet = Fleet(tmp_path, realm)
    try:
        if pty:
            realm.wait_log("serial %s open" % pty.realm_end)
        sender = fleet.add("sender", serial=pty and pty.device_end, app=LARGE_SEND_APP,
                           **config)
        taker = fleet.add("taker", heap="256k", receive_buffer=RECEIVE_BUFFER)
        online(sender)
        online(taker)
        yield sender, taker
    finally:
        fleet.stop()
        realm.stop()
        if pty:
            pty.stop()
    realm.assert_clean_log()


def sends(sender, taker, sizes):
    """The sender sends two messages of each size, each DELIVERED and printed by the taker
    (a small one first: the keys, both ways)."""
    for size, letter in [(10, "-")] + [(size, letter) for size in sizes for letter in "ab"]:
        mark = sender.mark()
        sender.command("send %s %d %s" % (taker.id, size, letter))
        msg_id = sender.wait(r"^sent (\d+) |^error send .*", 15, mark).group(1)
        assert msg_id, sender.output()[-2000:]
        assert sender.wait(r"^delivery %s (\w+)" % msg_id, 15, mark).group(1) == "DELIVERED"
        received(taker, sender, letter * size)
    assert "out of memory" not in sender.output(), sender.output()[-2000:]


_NO_2_KB_BLOCK = pytest.mark.xfail(reason="at 128k a device online for a while has at "
                                   "times no 2 KB block free for the frame, most of all on "
                                   "a serial link (the serial framer's code takes room "
                                   "too): config \"send_buffer\", docs/FIRMWARE.md "
                                   "'Message size at 128k'", strict=False)


@pytest.mark.parametrize("link,size", [("tcp", 1000), ("serial", 1000),
                                       pytest.param("tcp", 2048, marks=_NO_2_KB_BLOCK),
                                       pytest.param("serial", 2048, marks=_NO_2_KB_BLOCK)])
def test_a_device_sends_large_messages_with_the_default_config(tmp_path, unix_build, link,
                                                                size):
    # The sending path at SIM_HEAP: sealed end to end and for the hop in one block the
    # frame's size, the message copied once, into it. Before, each layer made a copy of
    # the message's size: 2,048 bytes failed every time on both links, 1,000 on a serial
    # link 1 run in 2.
    with large_sender(tmp_path, link) as (sender, taker):
        sends(sender, taker, (size,))


@pytest.mark.parametrize("link", ["tcp", "serial"])
def test_a_device_with_a_send_buffer_sends_the_largest_message(tmp_path, unix_build, link):
    # 4,024 bytes, the largest message: with the default config its frame needs a block
    # of 4 KB once online, which a fragmented 128k heap may not have (a serial device
    # failed so). A send buffer made before the first connection is that block.
    with large_sender(tmp_path, link, send_buffer=RECEIVE_BUFFER) as (sender, taker):
        sends(sender, taker, (1000, 2048, _LARGEST))


def test_a_serial_device_that_restarts_logs_in_again_with_its_first_hello(on_serial):
    # A serial link has no hang-up: the new boot's Hello arrives in the realm's session of
    # the old boot, which must hand it on rather than swallow it (the device would wait
    # out its 30 s handshake timeout before trying again).
    realm, pty, wire, tcp = on_serial
    for boot in (2, 3):
        wire.kill()
        wire.start()
        online(wire, timeout=10)
        # Its first handshake got through: one attempt, no timeout.
        assert len(re.findall(r": connecting\b", wire.output())) == 1, wire.output()
        realm.wait_log("disconnect serial:%s device %s (wire): the device restarted"
                       % (pty.realm_end, wire.id), count=boot - 1)
        realm.wait_log("login %s (wire) from serial:" % wire.id, count=boot)
        assert send(tcp, wire, "boot %d" % boot) == "DELIVERED"
        received(wire, tcp, "boot %d" % boot)


def test_realm_restart_devices_reconnect_and_get_what_was_queued(fleet, realm):
    alice, bob = fleet.add("alice"), fleet.add("bob")
    online(alice)
    online(bob)
    assert send(alice, bob, "before") == "DELIVERED"

    # The realm goes away: a send is kept in the device's own queue meanwhile.
    mark_a, mark_b = alice.mark(), bob.mark()
    realm.stop()
    alice.wait(r": offline: ", since=mark_a)
    alice.command("send %s while-the-realm-was-down" % bob.id)
    alice.wait(r"^sent \d+ ", since=mark_a)
    realm.start()
    assert online(alice, mark_a) == "pinned"
    assert online(bob, mark_b) == "pinned"
    alice.wait(r"^delivery \d+ (DELIVERED|QUEUED)$", since=mark_a)
    received(bob, alice, "while-the-realm-was-down", mark_b)

    # Bob is away: the realm queues for him, durably, across its own restart too.
    ended = "device %s (bob): " % bob.id  # the realm's line for a session that ended
    before = realm.log().count(ended)
    bob.kill()
    realm.wait_log(ended, count=before + 1)
    assert send(alice, bob, "while-bob-was-away") == "QUEUED"
    mark_a = alice.mark()
    realm.restart()
    online(alice, mark_a)
    bob.start()
    assert online(bob) == "pinned"
    received(bob, alice, "while-bob-was-away")
    for device in (alice, bob):
        assert tcp_connections(device.pid, realm.port) == 1


def test_restarted_device_keeps_its_identity_and_takes_the_pinned_path(fleet, realm):
    alice = fleet.add("alice")
    assert online(alice) == "first-contact"
    first = alice.wait(r"device \S+ \(alice\), boot (\d+), key fingerprint (\w+)")
    alice.stop()
    alice.start()
    assert online(alice) == "pinned"  # the realm sent KeyCheck at once: no SendKey
    again = alice.wait(r"device \S+ \(alice\), boot (\d+), key fingerprint (\w+)")
    assert again.group(2) == first.group(2)
    assert int(again.group(1)) == int(first.group(1)) + 1  # counted before any e2e packet
    realm.wait_log("login %s (alice) from" % alice.id, count=2)


def test_realm_with_another_key_is_refused_until_the_user_repins(fleet, realm):
    alice = fleet.add("alice")
    online(alice)
    # The same address and registry, but a realm that holds another key.
    realm.stop()
    os.remove(os.path.join(realm.data_dir, REALM_KEY_FILE))
    mark = alice.mark()
    realm.start()
    alice.wait(r": refused: .*KEY_MISMATCH.*realm key changed", since=mark)
    # Not retried, for longer than the longest backoff (auth_ms, 2.5 s here)...
    quiet_since = alice.mark()
    alice.assert_quiet(r": connecting", 3, since=quiet_since)
    # ...nor after a reboot: the refusal is kept on flash.
    alice.stop()
    alice.start()
    alice.wait(r": refused: .*realm key changed.*re-pin")
    alice.assert_quiet(r": connecting", 3)
    assert realm.log().count("login %s" % alice.id) == 1  # the first realm's login only

    mark = alice.mark()
    alice.command("repin")
    assert online(alice, mark) == "first-contact"


def _peer_key_change(tmp_path, fleet, realm, alice_reboots):
    alice, bob = fleet.add("alice"), fleet.add("bob")
    online(alice)
    online(bob)
    assert send(bob, alice, "first") == "DELIVERED"
    received(alice, bob, "first")  # alice has pinned bob's key
    if alice_reboots:
        alice.stop()
        alice.start()
        online(alice)

    # Bob comes back with a new key pair, which the realm's operator lets it bind.
    bob.kill()
    shutil.rmtree(str(tmp_path / "bob.state"))
    code, _out, err = run_cli("device", "reset-key", bob.id, "--data", realm.data_dir)
    assert code == 0, err
    bob.start()
    assert online(bob) == "first-contact"
    mark = alice.mark()
    assert send(bob, alice, "from-a-new-key") == "DELIVERED"
    alice.wait(r"peer %s offered another key than the pinned one: refused" % bob.id, since=mark)
    assert not alice.matches(r"^message %s from-a-new-key" % bob.id)

    # Until alice's user accepts the new key.
    alice.command("repin-peer %s" % bob.id)
    alice.wait(r"^repinned %s" % bob.id)
    mark = alice.mark()
    assert send(bob, alice, "accepted") == "DELIVERED"
    received(alice, bob, "accepted", mark)


def test_peer_whose_key_changed_is_refused(tmp_path, fleet, realm):
    """Alice knows bob's key from flash (she rebooted since she pinned it)."""
    _peer_key_change(tmp_path, fleet, realm, alice_reboots=True)


def test_peer_whose_key_changed_is_refused_on_the_same_connection(tmp_path, fleet, realm):
    _peer_key_change(tmp_path, fleet, realm, alice_reboots=False)


def test_the_documented_app_example_runs(tmp_path, fleet):
    with open(os.path.join(ROOT, "docs", "FIRMWARE.md")) as f:
        doc = f.read()
    example = re.search(r"```python\n(# app\.py.*?)```", doc, re.S).group(1)
    assert len(example.strip().splitlines()) <= 12
    bob = fleet.add("bob")
    online(bob)
    app = tmp_path / "greeter.py"
    app.write_text(example)  # it names its friend "kitchen": the config's peers say who
    alice = fleet.add("alice", start=False, peers={"kitchen": bob.id})
    alice.app = str(app)
    alice.start()
    alice.wait(r"^greeting 1 DELIVERED$")
    received(bob, alice, "hello from alice")
    bob.command("send %s hi" % alice.id)
    alice.wait(r"^from %s hi$" % bob.id)
