"""The `realm` command as people and scripts use it: output, JSON, exit codes."""
import hashlib
import json
import os
import socket
import stat
import subprocess
import uuid

import pytest

from tests.realm_helpers import RealmProcess, realm_command, run_cli


def add(data, *extra):
    code, out, err = run_cli("device", "add", "--data", data, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_key_is_made_once_with_mode_0600(tmp_path):
    data = str(tmp_path / "data")
    code, out, _ = run_cli("key", "--data", data, "--json")
    assert code == 0
    key = json.loads(out)
    assert key["fingerprint"] == hashlib.sha256(bytes.fromhex(key["public_key"])).hexdigest()
    assert stat.S_IMODE(os.stat(os.path.join(data, "realm.key")).st_mode) == 0o600
    assert json.loads(run_cli("key", "--data", data, "--json")[1]) == key
    code, out, _ = run_cli("key", "--data", data)
    assert key["fingerprint"] in out and key["public_key"] in out


def test_device_add_list_remove_reset(tmp_path):
    data = str(tmp_path / "data")
    fixed = str(uuid.uuid4())
    first = add(data, "--id", fixed, "--name", "kitchen")
    assert first["id"] == fixed and 16 <= len(first["token"]) <= 64
    second = add(data)
    assert uuid.UUID(second["id"])
    listed = json.loads(run_cli("device", "list", "--data", data, "--json")[1])
    assert [(d["id"], d["name"], d["fingerprint"], d["online"], d["queued"], d["last_seen"])
            for d in listed] == [(fixed, "kitchen", None, False, 0, None),
                                 (second["id"], "", None, False, 0, None)]
    code, out, _ = run_cli("device", "list", "--data", data)
    assert "kitchen" in out and "unbound" in out and first["token"] not in out

    code, _, err = run_cli("device", "add", "--data", data, "--id", fixed)
    assert code == 1 and err.strip() == "realm: device %s already exists" % fixed
    assert run_cli("device", "reset-key", fixed, "--data", data)[0] == 0
    assert run_cli("device", "remove", fixed, "--data", data)[0] == 0
    code, _, err = run_cli("device", "remove", fixed, "--data", data)
    assert code == 1 and err.strip() == "realm: no device %s" % fixed
    code, _, err = run_cli("device", "remove", "not-a-uuid", "--data", data)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "not a device id" in err


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

        code, out, err = run_cli("send", "--as", a["id"], "--token", a["token"], "--to",
                                 str(uuid.uuid4()), "--realm", address,
                                 "--state", str(tmp_path / "a.json"), "to nobody")
        assert code == 1 and err.strip() == "realm: not delivered: UNKNOWN_TARGET"

        code, out, err = run_cli("send", "--as", a["id"], "--token", "w" * 43, "--to", b["id"],
                                 "--realm", address, "--state", str(tmp_path / "a.json"), "x")
        assert code == 1 and "BAD_LOGIN" in err and len(err.strip().splitlines()) == 1
    finally:
        assert realm.stop() == 0
    realm.assert_clean_log()


def test_a_changed_realm_key_is_refused_until_repin(tmp_path):
    data1, data2 = tmp_path / "one", tmp_path / "two"
    state = str(tmp_path / "dev.json")
    fixed = str(uuid.uuid4())
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
    assert code == 1 and err.startswith("realm: ") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("serve", "--heartbeat", "0")
    assert code == 2 and "heartbeat" in err


@pytest.mark.parametrize("args", [["device", "list"], ["key"]])
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
