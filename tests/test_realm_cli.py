"""The `realm` command as people and scripts use it: output, JSON, exit codes."""
import asyncio
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import uuid

import pytest

from tests.realm_helpers import RealmProcess, realm_command, run_cli
from tools.simproc import ROOT


def add(data, *extra):
    code, out, err = run_cli("device", "add", "--data", data, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def init(data):
    code, out, err = run_cli("init", "--data", data, "--json")
    assert code == 0, err
    return json.loads(out)


def test_init_makes_the_key_once_with_mode_0600(tmp_path):
    data = str(tmp_path / "data")
    made = init(data)
    assert made["created"] is True and made["data"] == data
    code, out, _ = run_cli("key", "--data", data, "--json")
    assert code == 0
    key = json.loads(out)
    assert key == {"public_key": made["public_key"], "fingerprint": made["fingerprint"]}
    again = init(data)
    assert again["created"] is False and again["public_key"] == made["public_key"]
    code, out, _ = run_cli("init", "--data", data)
    assert code == 0 and "a realm is there already" in out
    assert key["fingerprint"] == hashlib.sha256(bytes.fromhex(key["public_key"])).hexdigest()
    assert stat.S_IMODE(os.stat(os.path.join(data, "realm.key")).st_mode) == 0o600
    assert json.loads(run_cli("key", "--data", data, "--json")[1]) == key
    code, out, _ = run_cli("key", "--data", data)
    assert key["fingerprint"] in out and key["public_key"] in out


def test_device_add_list_remove_reset(tmp_path):
    data = str(tmp_path / "data")
    init(data)
    fixed = str(uuid.uuid4())
    first = add(data, "--id", fixed, "--name", "kitchen")
    assert first["id"] == fixed and 16 <= len(first["token"]) <= 64
    second = add(data)
    assert uuid.UUID(second["id"])
    listed = json.loads(run_cli("device", "list", "--data", data, "--json")[1])
    assert [(d["id"], d["name"], d["fingerprint"], d["online"], d["queued"], d["last_seen"])
            for d in listed] == [(fixed, "kitchen", None, None, 0, None),
                                 (second["id"], "", None, None, 0, None)]
    code, out, _ = run_cli("device", "list", "--data", data)
    assert "kitchen" in out and "unbound" in out and first["token"] not in out
    assert "online: unknown: the realm is not running" in out

    code, _, err = run_cli("device", "add", "--data", data, "--id", fixed)
    assert code == 1 and err.strip() == "realm: device %s already exists" % fixed
    assert run_cli("device", "reset-key", fixed, "--data", data)[0] == 0
    assert run_cli("device", "remove", fixed, "--data", data)[0] == 0
    code, _, err = run_cli("device", "remove", fixed, "--data", data)
    assert code == 1 and err.strip() == "realm: no device %s" % fixed
    code, _, err = run_cli("device", "remove", "not-a-uuid", "--data", data)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no device named" in err


def test_send_and_listen_through_a_realm(tmp_path):
    realm = RealmProcess(tmp_path / "data")
    try:
        data = realm.data_dir
        a, b = add(data, "--name", "a"), add(data, "--name", "b")
        address = "127.0.0.1:%d" % realm.port
        listener = subprocess.Popen(
            realm_command() + ["listen", "--as", b["id"], "--realm", address, "--json",
                               "--count", "2", "--state", str(tmp_path / "b.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, REALM_TOKEN=b["token"]))
        realm.wait_log("login %s" % b["id"])
        sent = []
        for text in ("hello", "world"):
            code, out, err = run_cli("send", "--as", a["id"], "--token", a["token"], "--to",
                                     b["id"], "--realm", address, "--json",
                                     "--state", str(tmp_path / "a.json"), text)
            assert code == 0, err
            sent.append(json.loads(out)["status"])
        assert sent == ["DELIVERED", "DELIVERED"]
        out, err = listener.communicate(timeout=20)
        assert listener.returncode == 0, err
        got = [json.loads(line) for line in out.splitlines()]
        assert [(m["from"], m["text"]) for m in got] == [(a["id"], "hello"), (a["id"], "world")]
        assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o600

        nobody = str(uuid.uuid4())
        code, out, err = run_cli("send", "--as", a["id"], "--token", a["token"], "--to",
                                 nobody, "--realm", address,
                                 "--state", str(tmp_path / "a.json"), "to nobody")
        # One line, on stderr only.
        assert code == 1 and out == ""
        assert err == "realm: not delivered to %s: UNKNOWN_TARGET\n" % nobody
        code, out, err = run_cli("send", "--as", a["id"], "--token", a["token"], "--to",
                                 nobody, "--realm", address, "--json",
                                 "--state", str(tmp_path / "a.json"), "to nobody")
        assert code == 1 and err == "" and json.loads(out)["status"] == "UNKNOWN_TARGET"

        code, out, err = run_cli("send", "--as", a["id"], "--token", "w" * 43, "--to", b["id"],
                                 "--realm", address, "--state", str(tmp_path / "a.json"), "x")
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert err.startswith("realm: the realm said BAD_LOGIN: ") and "peer" not in err
    finally:
        assert realm.stop() == 0
    realm.assert_clean_log()


def test_a_changed_realm_key_is_refused_until_repin(tmp_path):
    data1, data2 = tmp_path / "one", tmp_path / "two"
    state = str(tmp_path / "dev.json")
    fixed = str(uuid.uuid4())
    init(str(data1))
    init(str(data2))
    token1 = add(str(data1), "--id", fixed)["token"]
    token2 = add(str(data2), "--id", fixed)["token"]
    for data, token, extra, expect in ((data1, token1, [], 1), (data2, token2, [], None),
                                       (data2, token2, ["--repin"], 1)):
        realm = RealmProcess(data)
        try:
            code, out, err = run_cli("send", "--as", fixed, "--token", token, "--to", fixed,
                                     "--realm", "127.0.0.1:%d" % realm.port, "--state", state,
                                     "--json", *extra, "to myself")
        finally:
            realm.stop()
        if expect is None:
            assert code == 1 and "realm key changed" in err and "--repin" in err
        else:
            assert code == 0 and json.loads(out)["status"] == "DELIVERED", err


def test_failures_are_one_line_with_a_non_zero_exit(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_cli("serve", "--listen", "127.0.0.1:%d" % port,
                                 "--data", str(tmp_path / "d"))
    assert code == 1 and err.strip().splitlines()[-1].startswith("realm: cannot listen on")
    assert "Traceback" not in err

    realm = RealmProcess(tmp_path / "d")
    try:
        code, _, err = run_cli("serve", "--listen", "127.0.0.1:0", "--data", realm.data_dir)
        assert code == 1 and err.strip() == "realm: another realm is already serving %s" \
            % realm.data_dir
    finally:
        realm.stop()

    code, _, err = run_cli("send", "--as", str(uuid.uuid4()), "--token", "t" * 20,
                           "--to", str(uuid.uuid4()), "--realm", "127.0.0.1:%d" % port,
                           "--state", str(tmp_path / "s.json"), "x")
    assert code == 1 and err == "realm: cannot reach the realm at 127.0.0.1:%d: connection " \
        "refused (is it running there?)\n" % port
    code, _, err = run_cli("serve", "--heartbeat", "0")
    assert code == 2 and "heartbeat" in err


@pytest.mark.parametrize("group", [["send", "x"], ["update", "status"], ["device", "list"],
                                   ["status"]])
def test_every_command_group_fails_in_one_line_also_as_python_m_host_cli(tmp_path, group):
    # Without an installed `realm` script the tools run `python -m host.cli`: a group's
    # error must still be the one-line kind there, not a traceback.
    none = str(tmp_path / "none")
    args = group + (["--as", "nobody", "--to", "nobody"] if group[0] in ("send", "update")
                    else [])
    p = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-m", "host.cli"] + args
                       + ["--data", none], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert p.returncode == 1 and p.stderr.startswith("realm: ") and "Traceback" not in p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr


@pytest.mark.parametrize("args", [["device", "list"], ["key"], ["device", "add"]])
def test_admin_commands_on_a_corrupt_data_folder_fail_cleanly(tmp_path, args):
    data = tmp_path / "data"
    data.mkdir()
    (data / "realm.db").write_bytes(b"this is not a database" * 100)
    (data / "realm.key").write_text("zz\n")
    code, _, err = run_cli(*args, "--data", str(data))
    assert code == 1 and err.startswith("realm: ") and "Traceback" not in err


def test_listen_connects_again_after_a_realm_restart(tmp_path):
    realm = RealmProcess(tmp_path / "data")
    try:
        a, b = add(realm.data_dir), add(realm.data_dir)
        address = "127.0.0.1:%d" % realm.port
        listener = subprocess.Popen(
            realm_command() + ["listen", "--as", b["id"], "--token", b["token"], "--realm",
                               address, "--json", "--count", "1",
                               "--state", str(tmp_path / "b.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        realm.wait_log("login %s" % b["id"])
        realm.restart()
        realm.wait_log("login %s" % b["id"], count=2)
        code, _, err = run_cli("send", "--as", a["id"], "--token", a["token"], "--to", b["id"],
                               "--realm", address, "--state", str(tmp_path / "a.json"), "back")
        assert code == 0, err
        out, err = listener.communicate(timeout=20)
        assert listener.returncode == 0, err
        assert json.loads(out)["text"] == "back"
        assert "realm shutting down; connecting again" in err
    finally:
        realm.stop()
    realm.assert_clean_log()


@pytest.mark.parametrize("args", [["key"], ["device", "add", "--name", "x"], ["device", "list"],
                                  ["device", "remove", "x"], ["device", "reset-key", "x"],
                                  ["device", "token", "x"]])
def test_admin_commands_refuse_a_folder_without_a_realm_and_create_nothing(tmp_path, args):
    missing = tmp_path / "nonexistent"
    code, out, err = run_cli(*args, "--data", str(missing))
    assert code == 1 and out == ""
    assert err.startswith("realm: no realm in %s" % missing) and "realm init" in err
    assert len(err.strip().splitlines()) == 1
    assert not missing.exists()


def test_the_data_folder_is_data_then_REALM_DATA_then_the_default(tmp_path):
    env_realm, flag_realm, cwd = tmp_path / "env", tmp_path / "flag", tmp_path / "cwd"
    cwd.mkdir()
    init(str(env_realm))
    init(str(flag_realm))
    env = dict(os.environ, REALM_DATA=str(env_realm))
    assert run_cli("device", "add", "--name", "in-env", env=env)[0] == 0
    assert run_cli("device", "add", "--name", "in-flag", "--data", flag_realm, env=env)[0] == 0
    names = lambda data: [d["name"] for d in json.loads(  # noqa: E731
        run_cli("device", "list", "--data", data, "--json")[1])]
    assert names(env_realm) == ["in-env"] and names(flag_realm) == ["in-flag"]
    # Without either: ./realm-data of the working folder, which holds none here.
    bare = dict(os.environ)
    bare.pop("REALM_DATA", None)
    p = subprocess.run(realm_command() + ["device", "list"], cwd=str(cwd), env=bare,
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no realm in %s" % (cwd / "realm-data") in p.stderr
    assert os.listdir(str(cwd)) == []
    # make realm takes REALM_DATA too (dry run: the command it would run).
    make = subprocess.run(["make", "-n", "realm", "REALM_DATA=%s" % env_realm], cwd=ROOT,
                          capture_output=True, text=True)
    assert "serve --data \"%s\"" % env_realm in make.stdout, make.stdout + make.stderr


def test_names_are_unique_and_name_a_device_everywhere(tmp_path):
    realm = RealmProcess(tmp_path / "data")
    try:
        data = realm.data_dir
        a, b = add(data, "--name", "Porch"), add(data, "--name", "kitchen")
        code, _, err = run_cli("device", "add", "--name", "KITCHEN", "--data", data)
        assert code == 1 and err.strip() == \
            "realm: the name KITCHEN is taken by device %s (kitchen)" % b["id"]
        for bad in ("_x", "a b", "x" * 33, str(uuid.uuid4())):
            code, _, err = run_cli("device", "add", "--name=" + bad, "--data", data)
            assert code == 1 and "bad device name" in err, err
        address = "127.0.0.1:%d" % realm.port
        listener = subprocess.Popen(
            realm_command() + ["listen", "--as", "kitchen", "--data", data, "--realm", address,
                               "--count", "1", "--state", str(tmp_path / "b.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, REALM_TOKEN=b["token"]))
        realm.wait_log("login %s (kitchen) from" % b["id"])
        code, out, err = run_cli("send", "--as", "porch", "--token", a["token"], "--to",
                                 "Kitchen", "--data", data, "--realm", address,
                                 "--state", str(tmp_path / "a.json"), "by name")
        assert code == 0 and out.strip() == "delivered to %s (kitchen)" % b["id"], err
        out, err = listener.communicate(timeout=20)
        assert "online as %s (kitchen) at %s; waiting for messages" % (b["id"], address) in out
        assert "%s (Porch): by name" % a["id"] in out
        code, _, err = run_cli("send", "--as", "porch", "--token", a["token"], "--to",
                               "nobody", "--data", data, "--realm", address, "x")
        assert code == 1 and err.strip() == \
            "realm: no device named 'nobody' (nor is it a device id)"
        code, out, _ = run_cli("device", "reset-key", "kitchen", "--data", data)
        assert code == 0 and out.startswith("%s (kitchen) unbound" % b["id"])
        code, out, _ = run_cli("device", "remove", "PORCH", "--data", data)
        assert code == 0 and out.strip() == "removed %s (Porch)" % a["id"]
    finally:
        realm.stop()
    realm.assert_clean_log()


def test_online_only_while_the_realm_runs(tmp_path):
    realm = RealmProcess(tmp_path / "data")
    data = realm.data_dir
    b = add(data, "--name", "b")
    listener = subprocess.Popen(
        realm_command() + ["listen", "--as", b["id"], "--token", b["token"], "--realm",
                           "127.0.0.1:%d" % realm.port, "--no-reconnect",
                           "--state", str(tmp_path / "b.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        realm.wait_log("login %s" % b["id"])
        listed = json.loads(run_cli("device", "list", "--data", data, "--json")[1])
        assert listed[0]["online"] is True
        code, out, _ = run_cli("device", "list", "--data", data)
        assert " yes " in out and "unknown" not in out
        realm.stop(signal.SIGKILL)  # no shutdown: the registry still says online
        listed = json.loads(run_cli("device", "list", "--data", data, "--json")[1])
        assert listed[0]["online"] is None
        code, out, _ = run_cli("device", "list", "--data", data)
        assert " yes " not in out
        assert "online: unknown: the realm is not running" in out
    finally:
        listener.kill()
        listener.wait()
        realm.stop()


def test_a_new_token_replaces_the_old_one(tmp_path):
    realm = RealmProcess(tmp_path / "data")
    try:
        data = realm.data_dir
        a = add(data, "--name", "a")
        state = str(tmp_path / "a.json")
        send = lambda token: run_cli(  # noqa: E731
            "send", "--as", "a", "--token", token, "--to", "a", "--data", data,
            "--realm", "127.0.0.1:%d" % realm.port, "--state", state, "to myself")
        assert send(a["token"])[0] == 0
        code, out, err = run_cli("device", "token", "a", "--data", data, "--json")
        assert code == 0, err
        new = json.loads(out)
        assert new["id"] == a["id"] and new["token"] != a["token"]
        code, _, err = send(a["token"])
        assert code == 1 and "BAD_LOGIN" in err
        assert send(new["token"])[0] == 0
        code, out, _ = run_cli("device", "token", "a", "--data", data)
        assert "shown only now" in out and "old one no longer logs in" in out
    finally:
        realm.stop()


def test_listen_shows_a_message_by_id_when_the_sender_name_cannot_be_looked_up(capsys):
    # e.g. `--cluster` and NATS gone for a moment: the message is shown, not lost.
    from host import message_cli
    from host.cluster import ClusterError

    class Unreachable:
        async def named(self, text):
            raise ClusterError("NATS at nats://127.0.0.1:4222: no answer")

    sender = str(uuid.uuid4())
    assert asyncio.run(message_cli._sender_name(Unreachable(), sender)) == ""
    assert capsys.readouterr().err == \
        "realm: the name of %s: NATS at nats://127.0.0.1:4222: no answer\n" % sender
