"""Flashing with the real tools: `make flash` onto a virtual board (the MicroPython unix
port's REPL on a pty, driven by mpremote), then what was flashed boots and reaches the
realm; `make provision` does the same from a bare name. And each make target's message
when a tool, port or argument is missing."""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.fw_helpers import (Fleet, board, make, online, realm, received,  # noqa: F401
                              send, start_realm, unix_build, wait_for_path)  # (fixtures)
from shared import crypto
from tests.realm_helpers import run_cli
from tools.simproc import ROOT, write_config


def test_make_flash_then_the_board_boots_into_the_firmware_and_reaches_the_realm(
        tmp_path, realm, board, unix_build):
    fleet = Fleet(tmp_path, realm)
    device_id, token = realm.add_device("flashed")
    flashed_id = str(uuid.UUID(bytes=device_id))
    config = write_config(str(tmp_path / "flashed.json"), flashed_id, token, "flashed",
                          port=realm.port, reconnect={"min_ms": 100, "max_ms": 800})
    code, out = make("flash", "PORT=" + board.port, "BOARD=unix", "CONFIG=" + config)
    assert code == 0, out
    assert "flashing unix on %s with mpremote" % board.port in out
    assert "  copied    slots/a/lib/shared/device.mpy\n" in out  # progress, per file
    files = board.files
    # The first stage and the profile at the root, the firmware in slot a (docs/UPDATES.md).
    for path in ("main.py", "board.py", "config.json", "slots/a/lib/shared/device.mpy",
                 "slots/a/lib/firmware/runtime.mpy", "slots/a/release.json"):
        assert os.path.isfile(os.path.join(files, path)), path
    with open(os.path.join(files, "slots", "boot.json")) as f:
        assert json.load(f)["active"] == "slots/a"
    assert not os.path.exists(os.path.join(files, "slots/a/lib/shared/realm.mpy"))  # realm's
    with open(os.path.join(files, "config.json")) as f:
        assert json.load(f)["device_id"] == flashed_id

    # Flashing again copies only what changed, and says so once per file.
    code, out = make("flash", "PORT=" + board.port, "BOARD=unix", "CONFIG=" + config)
    assert code == 0, out
    assert out.count("lib/shared/device.mpy") == 1, out
    assert "  unchanged slots/a/lib/shared/device.mpy\n" in out

    booted = board.boot().start()
    booted.id = flashed_id
    try:
        assert online(booted) == "first-contact"
        realm.wait_log("login %s (flashed) from" % flashed_id)
        peer = fleet.add("peer")
        online(peer)
        # The default app prints each message it receives as a line.
        assert send(peer, booted, "hello board") == "DELIVERED"
        booted.wait(r"^%s: hello board$" % peer.id)
    finally:
        booted.kill()
        fleet.stop()


def test_make_provision_registers_pins_the_realm_and_flashes(realm, board, unix_build):
    updater_id, _token = realm.add_device("updater")
    release_key = "ab" * 32
    code, out = make("provision", "PORT=" + board.port, "BOARD=unix", "NAME=kitchen",
                     "REALM=127.0.0.1:%d" % realm.port, "REALM_DATA=" + realm.data_dir,
                     "UPDATER=updater", "RELEASE_KEY=" + release_key)
    assert code == 0, out
    config_path = os.path.join(realm.data_dir, "provisioned", "kitchen.json")
    with open(config_path) as f:
        config = json.load(f)
    assert config["updaters"] == [str(uuid.UUID(bytes=updater_id))]
    assert config["release_keys"] == [release_key]
    assert oct(os.stat(config_path).st_mode & 0o777) == "0o600"
    _code, key, _err = run_cli("key", "--data", realm.data_dir, "--json")
    assert config["realm_key"] == json.loads(key)["public_key"]
    _code, devices, _err = run_cli("device", "list", "--data", realm.data_dir, "--json")
    listed = {d["id"]: d for d in json.loads(devices)}
    # Its key pair was made here and bound before it ever booted.
    public = crypto.public_key(bytes.fromhex(config["private_key"]))
    assert listed[config["device_id"]]["fingerprint"] == crypto.fingerprint(public).hex()

    booted = board.boot().start()
    try:
        # Pre-pinned: its very first connection already checks the realm's key.
        online(booted)
        realm.wait_log("login %s (kitchen) from" % config["device_id"])
    finally:
        booted.kill()
    # The same name again is refused: its token was shown once and is in that file.
    code, out = make("provision", "PORT=/dev/null", "BOARD=unix", "NAME=kitchen",
                     "REALM=127.0.0.1:%d" % realm.port, "REALM_DATA=" + realm.data_dir)
    assert code != 0 and "is provisioned already" in out, out


@pytest.mark.parametrize("args, message", [
    (["flash", "BOARD=unix", "CONFIG={ok}"], "PORT is missing"),
    (["flash", "PORT=/dev/no-such-tty", "BOARD=unix", "CONFIG={ok}"],
     "no such port /dev/no-such-tty"),
    (["flash", "PORT=/dev/no-such-tty", "BOARD=unix", "CONFIG=/no/such.json"],
     "cannot read CONFIG"),  # the config is checked first: no board needed for that
    (["flash", "PORT=/dev/null", "CONFIG=x.json"], "BOARD is missing: one of esp32, esp32c3, "
                                                    "esp32s3, unix"),
    (["flash", "PORT=/dev/null", "BOARD=esp8266", "CONFIG=x.json"], "unknown board 'esp8266'"),
    (["flash", "PORT=/dev/null", "BOARD=unix"], "CONFIG is missing"),
    (["flash", "PORT=/dev/null", "BOARD=unix", "CONFIG=/no/such.json"], "cannot read CONFIG"),
    (["flash", "PORT=/dev/null", "BOARD=unix", "CONFIG=x.json", "TOOL=picocom"],
     "TOOL=picocom: use mpremote (default) or ampy"),
    (["provision", "PORT=/dev/null", "BOARD=esp32", "NAME=n", "REALM=h:1"],
     "WIFI_SSID is missing"),
    (["provision", "PORT=/dev/null", "BOARD=unix", "NAME=n"], "REALM is missing"),
    (["provision", "PORT=/dev/null", "BOARD=unix", "REALM=h:1"], "NAME is missing"),
    (["sim"], "CONFIG is missing"),
    (["console"], "PORT is missing"),
])
def test_make_targets_say_what_is_missing(tmp_path, args, message):
    ok = write_config(str(tmp_path / "ok.json"), "12345678-1234-1234-1234-123456789abc",
                      "t" * 20, "ok", port=1)
    code, out = make(*[a.replace("{ok}", ok) for a in args])
    assert code != 0
    assert message in out, out


def test_flash_names_the_bad_config_field(tmp_path):
    config = write_config(str(tmp_path / "bad.json"), "not-a-uuid", "t" * 20, "bad", port=1)
    code, out = make("flash", "PORT=/dev/null", "BOARD=unix", "CONFIG=" + config)
    assert code != 0
    assert "device_id: not a UUID" in out, out
    # A Wi-Fi board needs the network to join.
    config = write_config(str(tmp_path / "nowifi.json"), "12345678-1234-1234-1234-123456789abc",
                          "t" * 20, "w", port=1)
    code, out = make("flash", "PORT=/dev/null", "BOARD=esp32", "CONFIG=" + config)
    assert code != 0 and "wifi: must be a JSON object" in out, out


def test_a_missing_tool_is_named(tmp_path):
    """Outside the venv (its Python's own folder, an empty PATH) the tools are missing."""
    python = os.path.realpath(sys.executable)
    if any(os.path.exists(os.path.join(os.path.dirname(python), t)) for t in ("mpremote", "ampy")):
        pytest.skip("the base Python has the flashing tools installed")
    config = write_config(str(tmp_path / "ok.json"), "12345678-1234-1234-1234-123456789abc",
                          "t" * 20, "ok", port=1)
    for tool, name in (("mpremote", "mpremote"), ("ampy", "adafruit-ampy")):
        proc = subprocess.run([python, os.path.join(ROOT, "tools", "flash.py"), "--port",
                               "/dev/null", "--board", "unix", "--config", config, "--tool", tool],
                              capture_output=True, text=True, env={"PATH": ""})
        assert proc.returncode == 2
        assert "%s not found: run `make install` (it installs the pinned %s" % (tool, name) \
            in proc.stderr, proc.stderr


def test_make_sim_runs_a_device_with_its_state_beside_the_config(tmp_path, realm, unix_build):
    device_id, token = realm.add_device("simmed")
    config = write_config(str(tmp_path / "simmed.json"), str(uuid.UUID(bytes=device_id)), token,
                          "simmed", port=realm.port)
    proc = subprocess.Popen(["make", "-s", "-C", ROOT, "sim", "CONFIG=" + config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        for line in proc.stdout:
            if ": online:" in line:
                break
        else:
            pytest.fail("make sim ended before its device was online")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    assert os.path.isfile(str(tmp_path / "simmed.state" / "identity"))


def test_a_failed_flash_says_the_cause_in_one_line_without_a_traceback(tmp_path):
    """A port whose far end is not MicroPython (it echoes): mpremote cannot enter the
    raw REPL."""
    port = str(tmp_path / "ttyEcho")
    echo = subprocess.Popen(["socat", "PTY,link=%s,raw,echo=0" % port,
                             "EXEC:/bin/cat,pty,raw,echo=0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_path(port)
        config = write_config(str(tmp_path / "ok.json"), "12345678-1234-1234-1234-123456789abc",
                              "t" * 20, "ok", port=1)
        code, out = make("flash", "PORT=" + port, "BOARD=unix", "CONFIG=" + config)
    finally:
        echo.terminate()
        echo.wait(5)
    assert code != 0
    assert "Traceback" not in out and "File \"" not in out, out
    assert "flash: mpremote failed: could not enter raw repl (is MicroPython on the board" \
        in out, out


def test_make_help_lists_every_target_and_variable():
    code, out = make("help")
    assert code == 0
    with open(os.path.join(ROOT, "Makefile")) as f:
        makefile = f.read()
    targets = set()
    for line in makefile.splitlines():
        if line.startswith(".PHONY:"):
            targets.update(line.split()[1:])
    targets -= {"help", "venv", "system-deps"}  # venv is install; the others are internal
    for target in sorted(targets):
        assert "make %s" % target in out, target
    for variable in ("REPIN", "SIM_HEAP", "REALM_DATA", "PEERS", "APP", "TOOL"):
        assert variable + "=" in out, variable


def test_make_console_without_a_terminal_says_so_in_one_line(board):
    proc = subprocess.run(["make", "-s", "-C", ROOT, "console", "PORT=" + board.port],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "console: the console needs a terminal" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "termios" not in proc.stderr


def test_ctrl_c_on_make_sim_stops_it_without_a_traceback(tmp_path, realm, unix_build):
    device_id, token = realm.add_device("stopped")
    config = write_config(str(tmp_path / "stopped.json"), str(uuid.UUID(bytes=device_id)),
                          token, "stopped", port=realm.port)
    proc = subprocess.Popen(["make", "-s", "-C", ROOT, "sim", "CONFIG=" + config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if ": online:" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    out, _ = proc.communicate(timeout=20)
    out = "".join(seen) + out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "Interrupt" not in out and "***" not in out, out  # nor make's own complaint
    assert out.rstrip().endswith("stopped"), out
    # Its identity is as private as the host-side device's (0600).
    identity = tmp_path / "stopped.state" / "identity"
    assert stat.S_IMODE(os.stat(str(identity)).st_mode) == 0o600


def test_make_board_is_a_virtual_board_that_boots_what_was_flashed(tmp_path, realm, unix_build):
    # Ctrl-C reaches it as from a terminal even when the suite runs as a background job,
    # whose children start with SIGINT ignored (Python then never raises KeyboardInterrupt).
    proc = subprocess.Popen(["make", "-s", "-C", ROOT, "board", "BOARD_DIR=%s" % (tmp_path / "vb")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()

    def wait(pattern, timeout=30, since=0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in lines[since:]:
                m = re.search(pattern, line)
                if m:
                    return m
            time.sleep(0.05)
        raise AssertionError("no %r from make board:\n%s" % (pattern, "".join(lines)))

    try:
        port = wait(r"^virtual board on (\S+) ").group(1)
        code, out = make("provision", "PORT=" + port, "BOARD=unix", "NAME=vb",
                         "REALM=127.0.0.1:%d" % realm.port, "REALM_DATA=" + realm.data_dir)
        assert code == 0, out
        wait(r"^vb: online: realm 'realm' at ")  # it booted what was flashed, by itself
        mark = len(lines)
        config = os.path.join(realm.data_dir, "provisioned", "vb.json")
        code, out = make("flash", "PORT=" + port, "BOARD=unix", "CONFIG=" + config)
        assert code == 0, out
        wait(r"^board: interrupted", since=mark)
        wait(r"^vb: online: realm 'realm' at .*\(known realm\)", since=mark)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(10)
    out = "".join(lines)
    assert "Traceback" not in out and "***" not in out, out
