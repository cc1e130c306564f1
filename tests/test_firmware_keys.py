"""A device's own key pair as a new user meets it: made at provisioning (so peers reach
the device before it first boots), and a new one after an erase or a moved config named
as such, on the device and in the realm's log, with the fix, and no long wait after it."""
import json
import os
import shutil
import stat
import subprocess

import pytest

from tests.fw_helpers import (Fleet, online, realm, received, send,  # noqa: F401
                              unix_build)  # (fixtures)
from tests.realm_helpers import realm_command, run_cli
from tools.simproc import SimDevice
from firmware.config import validate
from shared import crypto

# A refusal waits auth_ms: far longer than these tests, so a device that is back within
# seconds did not wait for it.
PATIENT = {"min_ms": 100, "max_ms": 800, "auth_ms": 600000}


@pytest.fixture
def fleet(tmp_path, realm, unix_build):
    devices = Fleet(tmp_path, realm)
    yield devices
    devices.stop()


def realm_key(realm):
    return json.loads(run_cli("key", "--data", realm.data_dir, "--json")[1])["public_key"]


def test_a_device_added_with_a_config_is_reachable_before_it_first_boots(tmp_path, realm,
                                                                         unix_build):
    config = str(tmp_path / "board.json")
    code, out, err = run_cli("device", "add", "--name", "board", "--config", config,
                             "--realm", "127.0.0.1:%d" % realm.port, "--peers", "",
                             "--data", realm.data_dir, "--json")
    assert code == 0, err
    added = json.loads(out)
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    with open(config) as f:
        raw = json.load(f)
    assert raw["device_id"] == added["id"] and raw["token"] == added["token"]
    assert raw["realm"] == {"host": "127.0.0.1", "port": realm.port}
    assert raw["realm_key"] == realm_key(realm)
    checked = validate(raw, False)  # what the device checks at boot
    listed = json.loads(run_cli("device", "list", "--data", realm.data_dir, "--json")[1])
    assert listed[0]["fingerprint"] == crypto.fingerprint(
        crypto.public_key(checked["private_key"])).hex()  # bound at registration
    assert raw["private_key"] not in realm.log() + out.replace(raw["private_key"], "")

    # A host-side peer sends before the board ever booted: the realm keeps it.
    sender = json.loads(run_cli("device", "add", "--name", "sender", "--data",
                                realm.data_dir, "--json")[1])
    code, out, err = run_cli("send", "--as", "sender", "--token", sender["token"], "--to",
                             "board", "--data", realm.data_dir, "--realm",
                             "127.0.0.1:%d" % realm.port, "--state", str(tmp_path / "s.json"),
                             "--json", "waiting for you")
    assert code == 0, err
    assert json.loads(out)["status"] == "QUEUED"

    board = SimDevice(config).start()
    board.id = added["id"]
    try:
        online(board)
        board.wait(r"^message %s waiting for you$" % sender["id"])
    finally:
        board.kill()
    # The same path again is refused before anything is registered.
    code, _, err = run_cli("device", "add", "--name", "other", "--config", config,
                           "--data", realm.data_dir)
    assert code == 1 and "exists" in err
    assert len(json.loads(run_cli("device", "list", "--data", realm.data_dir,
                                  "--json")[1])) == 2


def test_names_in_the_config_are_peers_the_app_sends_to(tmp_path, realm, fleet):
    kitchen = fleet.add("kitchen")
    online(kitchen)
    config = str(tmp_path / "porch.json")
    code, out, err = run_cli("device", "add", "--name", "porch", "--config", config,
                             "--realm", "127.0.0.1:%d" % realm.port, "--peers", "kitchen",
                             "--data", realm.data_dir, "--json")
    assert code == 0, err
    with open(config) as f:
        assert json.load(f)["peers"] == {"kitchen": kitchen.id}
    porch = SimDevice(config).start()
    porch.id = json.loads(out)["id"]
    fleet.devices.append(porch)
    online(porch)
    porch.command("send kitchen by name")
    porch.wait(r"^delivery \d+ DELIVERED$")
    received(kitchen, porch, "by name")
    porch.command("send hall nobody")
    porch.wait(r"^error send .*not a device id, nor a name in the config's peers \(kitchen\)")


def _refused_for_its_new_key(device, realm, since=0):
    device.wait(r"the realm holds another key for this device: its key pair is new .*"
                r"realm device reset-key %s" % device.name, since=since)
    realm.wait_log("realm device reset-key %s" % device.name)
    assert not device.matches("KEY_CHECK_FAILED|KeyCheck|pinned path")


def test_an_erased_device_is_told_its_key_is_new_and_is_back_soon_after_the_fix(
        fleet, realm, tmp_path):
    alice = fleet.add("alice", realm_key=realm_key(realm), reconnect=PATIENT)
    online(alice)
    alice.kill()
    shutil.rmtree(str(tmp_path / "alice.state"))  # flash erased, same config flashed again
    alice.start()
    _refused_for_its_new_key(alice, realm)
    mark = alice.mark()
    code, _, err = run_cli("device", "reset-key", "alice", "--data", realm.data_dir)
    assert code == 0, err
    online(alice, mark, timeout=10)  # the next try at the normal pace, not auth_ms


def test_a_config_moved_to_a_board_that_knew_the_realm_is_told_the_same(
        fleet, realm, tmp_path):
    # The pinned path would fail the realm's key check: the device tries without it.
    alice = fleet.add("alice", realm_key=realm_key(realm), reconnect=PATIENT)
    bob = fleet.add("bob", realm_key=realm_key(realm), reconnect=PATIENT)
    online(alice)
    online(bob)
    alice.kill()
    bob.kill()
    shutil.rmtree(str(tmp_path / "bob.state"))
    shutil.copytree(str(tmp_path / "alice.state"), str(tmp_path / "bob.state"))
    bob.start()
    _refused_for_its_new_key(bob, realm)
