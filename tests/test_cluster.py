"""Cluster mode with real processes: one nats-server -js, two or three `realm serve
--cluster` nodes, devices on real sockets (issue 7, section 3)."""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from shared import codec
from shared.errors import DENIED, KEY_MISMATCH, SESSION_REPLACED
from shared.events import Delivery, DeliveryPacket, Message, Pong, ProxyPassPacket
from host.client import DeviceState, HostDevice
from tests.cluster_helpers import Balancer, ClusterRealm, start_nats
from tests.fw_helpers import FAST_RECONNECT, online, received, send, unix_build  # noqa: F401
from tests.realm_helpers import RawDevice, free_port, realm_command, run, run_cli
from tests.update_helpers import Updatable, build, keygen
from tools.simproc import SimDevice, write_config


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    """One nats-server for the module: each test's realm has its own key, so its own
    buckets and subjects."""
    server = start_nats(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path, nats):
    realm = ClusterRealm(tmp_path, nats, "--heartbeat", "2", "--summary", "0.5")
    yield realm
    realm.stop()


MIRROR_LAG_S = 1.0  # a registry change reaches every node's mirror within this


def text(raw):
    return str(uuid.UUID(bytes=raw))


async def connect(node, device_id, token, state=None):
    device = HostDevice(state or DeviceState(device_id), token)
    await device.connect_tcp("127.0.0.1", node.port)
    return device


def bind(node, device_id, token, state):
    """Log in once (binds the key), then leave: the device is known and offline."""
    async def body():
        (await connect(node, device_id, token, state)).close()
    run(body())


def session(node, device_id, token, private=None):
    """A RawDevice logged in on `node`."""
    raw = RawDevice(node.port, device_id, token, private=private)
    raw.handshake()
    return raw


def send_raw(raw, target, msg_ids, inner=b"\x01\x00" + bytes(30)):
    """ProxyPass msg_ids from a RawDevice; their Delivery statuses, in msg_id order."""
    for msg_id in msg_ids:
        raw.conn.send_proxy(target, msg_id, inner)
    raw.flush()
    statuses = {}
    while len(statuses) < len(msg_ids):
        report = raw.pump(lambda e: isinstance(e, DeliveryPacket), timeout=10)
        assert isinstance(report, DeliveryPacket), report
        statuses[report.msg_id] = report.status
    return [statuses[m] for m in msg_ids]


def received_ids(raw, count, timeout=10):
    ids = []
    while len(ids) < count:
        event = raw.pump(lambda e: isinstance(e, ProxyPassPacket), timeout=timeout)
        assert isinstance(event, ProxyPassPacket), (event, ids)
        ids.append(event.msg_id)
    return ids


async def sent_once_known(sender, peer, data):
    """Send `data` to `peer` (a HostDevice's send: PeerKey, then ProxyPass); again while
    the sender's node answers that it knows no key for the peer (UNKNOWN_TARGET): a node
    answers PeerKey from its mirror of the registry, which has a key bound on another node
    within the promised second (docs/CLUSTER.md), not at once. The Delivery status."""
    deadline = time.monotonic() + MIRROR_LAG_S
    while True:
        msg_id = sender.send(peer, data)
        report = await sender.wait_for(Delivery, 5, lambda e: e.msg_id == msg_id)
        if report.status != codec.UNKNOWN_TARGET or time.monotonic() > deadline:
            return report.status
        await asyncio.sleep(0.02)


# -- across nodes ------------------------------------------------------------------------
def test_devices_on_two_nodes_talk_end_to_end(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    a_id, a_token = cluster.add_device("a")
    b_id, b_token = cluster.add_device("b")

    async def body():
        a = await connect(n1, a_id, a_token)
        b = await connect(n2, b_id, b_token)
        for sender, receiver, peer in ((a, b, b_id), (b, a, a_id)):
            # PeerKey across the fleet, then ProxyPass and its Delivery, then e2e Ping/Pong
            assert await sent_once_known(sender, peer, b"hello") == codec.DELIVERED
            assert (await receiver.wait_for(Message, 5)).data == b"hello"
            sender.ping(peer, b"are you there")
            pong = await sender.wait_for(Pong, 5)
            assert (pong.peer, pong.data) == (peer, b"are you there")
        for device in (a, b):
            device.close()
    run(body())
    devices = cluster.devices()
    assert devices[text(a_id)]["fingerprint"] and devices[text(b_id)]["fingerprint"]


def test_a_login_on_another_node_replaces_the_session(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    device_id, token = cluster.add_device()
    old = session(n1, device_id, token)
    new = session(n2, device_id, token, private=old.private)
    assert old.expect_closed().code == SESSION_REPLACED
    # The newer session is the one that stays, and it is the one packets reach.
    sender_id, sender_token = cluster.add_device()
    sender = session(n1, sender_id, sender_token)
    assert send_raw(sender, device_id, [1]) == [codec.DELIVERED]
    assert received_ids(new, 1) == [1]
    n1.wait_log("SESSION_REPLACED")
    for raw in (new, sender):
        raw.close()


def test_key_binding_is_fleet_wide(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    device_id, token = cluster.add_device()
    first = session(n1, device_id, token)
    first.close()
    other = RawDevice(n2.port, device_id, token)  # another key pair for the same device
    assert other.expect_closed().code == KEY_MISMATCH


def test_queue_in_order_survives_kill_of_the_node_that_stored_it(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    target_id, target_token = cluster.add_device("target")
    state = DeviceState(target_id)
    bind(n2, target_id, target_token, state)
    sender_id, sender_token = cluster.add_device("sender")
    sender = session(n1, sender_id, sender_token)
    assert send_raw(sender, target_id, list(range(1, 11))) == [codec.QUEUED] * 10
    assert cluster.devices()[text(target_id)]["queued"] == 10
    n1.kill()  # kill -9 of the node that answered QUEUED
    sender.close()
    target = session(n2, target_id, target_token, private=state.private)
    assert received_ids(target, 10) == list(range(1, 11))
    with pytest.raises(AssertionError, match="nothing awaited"):  # none twice
        target.pump(lambda e: isinstance(e, ProxyPassPacket), timeout=1.5)
    target.close()
    assert cluster.devices()[text(target_id)]["queued"] == 0
    cluster.nodes.remove(n1)


def test_queue_limits_are_64_packets_and_64_kib_per_target(cluster):
    node = cluster.node("n1")
    full_id, full_token = cluster.add_device()
    big_id, big_token = cluster.add_device()
    for device_id, token in ((full_id, full_token), (big_id, big_token)):
        bind(node, device_id, token, DeviceState(device_id))
    sender_id, sender_token = cluster.add_device()
    sender = session(node, sender_id, sender_token)
    statuses = send_raw(sender, full_id, list(range(1, 66)))
    assert statuses == [codec.QUEUED] * 64 + [codec.QUEUE_FULL]
    inner = bytes(4000)  # 16 of them fit in 64 KiB, the 17th does not
    statuses = send_raw(sender, big_id, list(range(100, 117)), inner)
    assert statuses == [codec.QUEUED] * 16 + [codec.QUEUE_FULL]
    sender.close()


def test_stored_packets_come_before_live_ones_sent_while_the_target_logs_in(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    target_id, target_token = cluster.add_device()
    state = DeviceState(target_id)
    bind(n2, target_id, target_token, state)
    sender_id, sender_token = cluster.add_device()
    sender = session(n1, sender_id, sender_token)
    inner = b"\x01\x00" + bytes(30)
    target = None
    for msg_id in range(1, 121):  # streams while the target logs in on the other node
        sender.conn.send_proxy(target_id, msg_id, inner)
        sender.flush()
        if msg_id == 20:
            target = RawDevice(n2.port, target_id, target_token, private=state.private)
            target.handshake()
        time.sleep(0.002)
    statuses = {}
    while len(statuses) < 120:
        report = sender.pump(lambda e: isinstance(e, DeliveryPacket), timeout=10)
        statuses[report.msg_id] = report.status
    got = received_ids(target, 120)
    assert got == list(range(1, 121)), got  # in order, none twice, none lost
    assert set(statuses.values()) <= {codec.QUEUED, codec.DELIVERED}
    assert statuses[1] == codec.QUEUED and statuses[120] == codec.DELIVERED
    sender.close()
    target.close()


# -- admin commands while the nodes run ------------------------------------------------------
def test_registry_changes_reach_every_node_and_remove_closes_the_session(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    device_id, token = cluster.add_device()
    raw = RawDevice(n2.port, device_id, token)  # added a moment ago, through n1's cluster
    raw.handshake()
    assert cluster.devices()[text(device_id)]["online"] is True
    start = time.monotonic()
    cluster.admin("device", "remove", text(device_id))
    assert raw.expect_closed(timeout=5).code == DENIED
    assert time.monotonic() - start < 5
    assert text(device_id) not in cluster.devices()


def test_reset_key_lets_a_new_key_bind_on_any_node(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    device_id, token = cluster.add_device()
    RawDevice(n1.port, device_id, token).handshake()
    cluster.admin("device", "reset-key", text(device_id))
    time.sleep(0.5)  # the nodes' mirrors take the change
    new = session(n2, device_id, token)
    new.close()


# -- nodes that stop or die -----------------------------------------------------------------
def test_sigterm_ends_the_node_in_time_and_its_devices_are_offline_then_queued(cluster):
    n1, n2, n3 = cluster.node("n1"), cluster.node("n2"), cluster.node("n3")
    target_id, target_token = cluster.add_device()
    target = session(n1, target_id, target_token)
    sender_id, sender_token = cluster.add_device()
    sender = session(n3, sender_id, sender_token)
    start = time.monotonic()
    assert n1.stop() == 0
    assert time.monotonic() - start < 10
    assert cluster.devices()[text(target_id)]["online"] is False
    assert send_raw(sender, target_id, [1, 2]) == [codec.QUEUED] * 2
    again = session(n2, target_id, target_token, private=target.private)
    assert received_ids(again, 2) == [1, 2]
    assert send_raw(sender, target_id, [3]) == [codec.DELIVERED]
    assert received_ids(again, 1) == [3]
    for raw in (target, sender, again):
        raw.close()


def test_packets_for_devices_of_a_killed_node_are_queued(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    target_id, target_token = cluster.add_device()
    target = session(n1, target_id, target_token)
    sender_id, sender_token = cluster.add_device()
    sender = session(n2, sender_id, sender_token)
    assert send_raw(sender, target_id, [1]) == [codec.DELIVERED]
    n1.kill()
    cluster.nodes.remove(n1)
    assert send_raw(sender, target_id, [2, 3]) == [codec.QUEUED] * 2
    target.close()
    again = session(n2, target_id, target_token, private=target.private)
    assert received_ids(again, 2) == [2, 3]
    sender.close()
    again.close()


def test_a_simulated_board_reconnects_to_the_other_node(cluster, tmp_path, unix_build):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    balancer = Balancer([n1.port, n2.port])
    boards = []
    try:
        for name in ("board", "peer"):
            device_id, token = cluster.add_device(name)
            path = write_config(str(tmp_path / (name + ".json")), text(device_id), token, name,
                                port=balancer.port if name == "board" else n2.port,
                                reconnect=FAST_RECONNECT)
            board = SimDevice(path).start()
            board.id, board.name = text(device_id), name
            boards.append(board)
        board, peer = boards
        online(board)
        online(peer)
        # Its session is in NATS before its Welcome: n2 forwards to n1, which hands it over.
        status = send(peer, board, "before")
        assert status == "DELIVERED", (status, n1.log(), n2.log())  # seen QUEUED once
        received(board, peer, "before")
        mark = board.mark()
        n1.kill()  # the board was on n1: the balancer sends it to n2 now
        cluster.nodes.remove(n1)
        online(board, since=mark, timeout=30)
        status = send(peer, board, "after")  # both on n2 now
        assert status == "DELIVERED", (status, n2.log(), board.output())
        received(board, peer, "after", since=mark)
    finally:
        for board in boards:
            board.kill()
        balancer.stop()


# -- NATS itself gone ----------------------------------------------------------------------
def test_a_node_cut_off_from_nats_keeps_its_sessions_and_says_unavailable(tmp_path):
    nats = start_nats(tmp_path)
    realm = ClusterRealm(tmp_path, nats, "--heartbeat", "5")
    try:
        n1, n2 = realm.node("n1"), realm.node("n2")
        a_id, a_token = realm.add_device()
        b_id, b_token = realm.add_device()
        c_id, c_token = realm.add_device()
        off_id, off_token = realm.add_device()
        bind(n1, off_id, off_token, DeviceState(off_id))
        a = session(n1, a_id, a_token)
        b = session(n1, b_id, b_token)
        c = session(n2, c_id, c_token)
        nats.stop()
        n1.wait_log("lost NATS")
        assert send_raw(a, b_id, [1]) == [codec.DELIVERED]  # same node: still served
        assert received_ids(b, 1) == [1]
        assert send_raw(a, c_id, [2]) == [codec.UNAVAILABLE]  # on the other node
        assert send_raw(a, off_id, [3]) == [codec.UNAVAILABLE]  # never QUEUED unstored
        assert n1.log().count("lost NATS") == 1
        nats.start()
        n1.wait_log("reached again", timeout=15)
        n2.wait_log("reached again", timeout=15)
        deadline = time.monotonic() + 10
        while send_raw(a, c_id, [4]) != [codec.DELIVERED]:
            assert time.monotonic() < deadline, "the nodes did not find each other again"
            time.sleep(0.3)
        assert send_raw(a, off_id, [5]) == [codec.QUEUED]
        for raw in (a, b, c):
            raw.close()
        realm.stop()
    finally:
        nats.stop()


def test_starting_without_nats_or_with_a_bad_url_is_a_one_line_error(tmp_path):
    data = str(tmp_path / "realm")
    assert run_cli("init", "--data", data)[0] == 0
    dead = "nats://127.0.0.1:%d" % free_port()
    for url in (dead, "http://example", "nats://host"):
        start = time.monotonic()
        proc = subprocess.run(realm_command() + [
            "serve", "--listen", "127.0.0.1:%d" % free_port(), "--data", data,
            "--cluster", url, "--node", "n1"], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1, proc
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("realm: "), proc.stderr
        assert time.monotonic() - start < 15
    code, _out, err = run_cli("device", "list", "--cluster", dead, "--data", data)
    assert code == 1 and err.count("\n") == 1 and "cannot reach NATS" in err


def test_cluster_commands_need_the_realm_key_made_once(tmp_path, nats):
    code, _out, err = run_cli("device", "add", "--cluster", nats.url, "--data",
                              str(tmp_path / "none"))
    assert code == 1 and "no realm in" in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "none" / "realm.key")


def test_bad_bytes_to_a_cluster_node_close_only_that_link(cluster):
    node = cluster.node("n1")
    device_id, token = cluster.add_device()
    witness = session(node, device_id, token)
    for junk in (b"\x00\x05hello", os.urandom(300), b"\xff\xff" + bytes(10)):
        with socket.create_connection(("127.0.0.1", node.port)) as s:
            s.sendall(junk)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    witness.conn.send_proxy(device_id, 9, b"\x01\x00" + bytes(30))  # to itself
    witness.flush()
    report = witness.pump(lambda e: isinstance(e, DeliveryPacket))
    assert (report.msg_id, report.status) == (9, codec.DELIVERED)
    witness.close()
    assert node.proc.poll() is None


def test_the_single_node_realm_never_imports_nats():
    code = ("import sys; from host import cli, server, store, router; cli.parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nats'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0 and out.stdout.strip() == "[]", out


def test_names_are_unique_fleet_wide_and_usable_in_the_commands(tmp_path, nats):
    realm = ClusterRealm(tmp_path, nats)
    added = realm.admin("device", "add", "--name", "Kitchen")
    code, _out, err = run_cli("device", "add", "--name", "kitchen", "--data", realm.data_dir,
                              "--cluster", realm.url)
    assert code == 1 and "taken" in err and err.count("\n") == 1
    token = realm.admin("device", "token", "kitchen")
    assert token["id"] == added["id"] and token["token"] != added["token"]
    realm.admin("device", "reset-key", "KITCHEN")
    assert realm.admin("device", "remove", "kitchen")["removed"] == added["id"]
    assert realm.devices() == {}
    realm.add_device("kitchen")  # the name is free again


def test_send_and_listen_take_device_names_from_the_cluster(tmp_path, cluster):
    # The realm folder holds the key only: the names are in NATS (P-names), looked up there.
    node = cluster.node("n1")
    porch, kitchen = cluster.admin("device", "add", "--name", "Porch"), \
        cluster.admin("device", "add", "--name", "kitchen")
    address = "127.0.0.1:%d" % node.port
    in_cluster = ("--data", cluster.data_dir, "--cluster", cluster.url, "--realm", address)
    listener = subprocess.Popen(
        realm_command() + ["listen", "--as", "KITCHEN", "--count", "1", "--json", "--state",
                           str(tmp_path / "kitchen.json"), *in_cluster],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, REALM_TOKEN=kitchen["token"]))
    try:
        node.wait_log("login %s (kitchen) from" % kitchen["id"])
        code, out, err = run_cli("send", "--as", "porch", "--token", porch["token"], "--to",
                                 "Kitchen", "--state", str(tmp_path / "porch.json"),
                                 *in_cluster, "by name")
        assert code == 0 and out.strip() == "delivered to %s (kitchen)" % kitchen["id"], err
        out, err = listener.communicate(timeout=20)
    finally:
        listener.kill()
    message = json.loads(out.splitlines()[-1])
    assert (message["from"], message["from_name"], message["text"]) == \
        (porch["id"], "Porch", "by name"), err
    code, _, err = run_cli("send", "--as", "porch", "--token", porch["token"], "--to",
                           "nobody", *in_cluster, "x")
    assert code == 1 and err == "realm: no device named 'nobody' (nor is it a device id)\n"
    code, _, err = run_cli("send", "--as", "nobody", "--token", porch["token"], "--to",
                           kitchen["id"], *in_cluster, "x")
    assert code == 1 and err == "realm: no device named 'nobody' (nor is it a device id)\n"
    dead = "nats://127.0.0.1:%d" % free_port()
    code, _, err = run_cli("send", "--as", "porch", "--token", porch["token"], "--to",
                           "kitchen", "--data", cluster.data_dir, "--cluster", dead,
                           "--realm", address, "x")
    assert code == 1 and err.count("\n") == 1 and "cannot reach NATS at %s" % dead in err


def test_update_push_and_status_take_names_and_all_from_the_cluster(tmp_path, cluster,
                                                                     unix_build):
    # The names of --as, --to and the devices of --all are in NATS (P-names, P-devices).
    key_path, release_key = keygen(tmp_path)
    fleet = Updatable(tmp_path, cluster.node("n1"), release_key, "--cluster", cluster.url)
    try:
        hall = fleet.add("hall")
        fleet.add("attic", start=False)  # registered, never online
        online(hall)
        hall.wait(r"^app 0\.1\.0$")
        code, rows, err = fleet.run_push(build(tmp_path, "2.0.0", key_path), "HALL",
                                         as_id="Updater", wait=30)
        assert code == 0 and rows["hall"]["state"] == "updated", (rows, err, hall.output())
        hall.wait(r"^app 2\.0\.0$")
        status = fleet.command("status", [], as_id="Updater") + ["--timeout", "3"]
        code, out, err = run_cli(*status, "--all")
        assert code == 0, err
        answers = {r["name"]: r for r in json.loads(out)}
        assert sorted(answers) == ["attic", "hall"], answers  # every device but the updater
        assert answers["hall"]["app"] == "2.0.0" and not answers["attic"]["answered"], answers
        code, _, err = run_cli(*status, "--to", "nobody")
        assert code == 1 and err == "realm: no device named 'nobody' (nor is it a device id)\n"
        dead = "nats://127.0.0.1:%d" % free_port()
        code, _, err = run_cli(*status, "--all", "--cluster", dead)
        assert code == 1 and err.count("\n") == 1 and "cannot reach NATS at %s" % dead in err
    finally:
        fleet.stop()


def test_a_key_bound_at_a_login_on_a_node_is_in_that_nodes_answers_at_once(nats):
    """A node answers PeerKey from its mirror of the devices bucket. The key a login on
    this node has just bound is in it at once, not only once the bucket's watch brings
    the change back (a peer asking right after the Welcome was told UNKNOWN_TARGET). The
    watch's later changes still win, and none older than what the node wrote."""
    from host.cluster import Cluster
    from shared import crypto

    async def main():
        node = Cluster(nats.url, crypto.generate_keypair()[1], node="n1")
        await node.connect()
        apply, late = node._device_changed, []

        def held_back(entry, mirror):  # the watch, once started, is slow
            if mirror is node.devices:
                late.append(entry)
            else:
                apply(entry, mirror)
        node._device_changed = held_back
        try:
            await node.join()
            device, key = str(uuid.uuid4()), b"\x02" * 32
            unbound = {"name": "", "token_hash": "h", "key": None, "created": 0.0}
            await node.kv_devices.put(device, json.dumps(unbound).encode())  # an admin
            assert await node.bind_key(device, key) == key  # a first login here
            assert node.bound_key(device) == key  # before the watch said anything
            reset = await node.kv_devices.put(device, json.dumps(unbound).encode())
            while not late or late[-1].revision < reset:
                await asyncio.sleep(0.01)
            for entry in late:  # the admin's add, the binding, then the reset
                apply(entry, node.devices)
                assert node.bound_key(device) == (key if entry.revision < reset else None)
            node._wrote_device(device, dict(unbound, key=key.hex()), reset - 1)  # too late
            assert node.bound_key(device) is None
        finally:
            await node.leave()
            await node.close()
    asyncio.run(main())
