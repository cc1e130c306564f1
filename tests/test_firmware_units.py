"""The firmware's parts that need no realm: the config check (a bad field is named),
the on-flash store (atomic, what survives a reboot), and the commands the flash tool
runs. Run under CPython: these modules are interpreter-neutral
(the end-to-end tests run them under MicroPython)."""
import ast
import json
import os
import sys
import time

import pytest

from firmware import store as store_module
from firmware.config import ConfigError, load, validate
from firmware.store import Store, StoreError
from tools.build import build, profile
from tools.flash import ampy_commands, files_to_copy, mpremote_commands
from tools.simproc import ROOT, SimDevice

DEVICE_ID = "12345678-1234-5678-9abc-def012345678"


def config(**changes):
    raw = {"device_id": DEVICE_ID, "token": "t" * 24, "name": "kitchen",
           "realm": {"host": "192.168.1.10"}}
    raw.update(changes)
    return raw


# -- config ---------------------------------------------------------------------------
def test_a_minimal_config_gets_the_defaults():
    c = validate(config(), has_wifi=False)
    assert c["device_id"] == bytes.fromhex(DEVICE_ID.replace("-", ""))
    assert (c["host"], c["port"], c["serial"]) == ("192.168.1.10", 7711, None)
    assert c["reconnect"] == {"min_ms": 1000, "max_ms": 60000, "auth_ms": 300000}
    assert c["realm_key"] is None and c["wifi"] is None and c["app"] == {}


def test_wifi_is_needed_only_where_the_board_joins_the_realm_over_it():
    with pytest.raises(ConfigError, match="^wifi: must be a JSON object"):
        validate(config(), has_wifi=True)
    c = validate(config(wifi={"ssid": "home", "password": ""}), has_wifi=True)
    assert c["wifi"] == {"ssid": "home", "password": ""}
    c = validate(config(realm={"serial": {"uart": 1, "baud": 115200}}), has_wifi=True)
    assert c["wifi"] is None and c["serial"] == {"uart": 1, "baud": 115200}


@pytest.mark.parametrize("changes, message", [
    ({"device_id": "kitchen"}, "device_id: not a UUID"),
    ({"device_id": 7}, "device_id: must be a non-empty string"),
    ({"token": "short"}, "token: must be 16 to 64 bytes of UTF-8, got 5"),
    ({"token": "é" * 33}, "token: must be 16 to 64 bytes of UTF-8, got 66"),
    ({"name": ""}, "name: must be a non-empty string"),
    ({"realm": None}, "realm: must be a JSON object"),
    ({"realm": {}}, "realm.host: missing"),
    ({"realm": {"host": "h", "port": 0}}, "realm.port: must be an integer from 1 to 65535"),
    ({"realm": {"host": "h", "port": "7711"}}, "realm.port: must be an integer"),
    ({"realm": {"host": "h", "port": True}}, "realm.port: must be an integer"),
    ({"realm": {"host": "h", "serial": "/dev/ttyUSB0"}}, "realm: give either host and port"),
    ({"realm": {"serial": ""}}, "realm.serial: a tty path, or an object"),
    ({"realm": {"serial": {"pins": 3}}}, "realm.serial.pins: unknown field"),
    ({"realm": {"serial": {"baud": "fast"}}}, "realm.serial.baud: must be an integer"),
    ({"realm_key": "ab" * 31}, "realm_key: must be 64 hex digits"),
    ({"realm_key": "zz" * 32}, "realm_key: must be 64 hex digits"),
    ({"private_key": "ab" * 31}, "private_key: must be 64 hex digits (a 32-byte private"),
    ({"peers": ["kitchen"]}, "peers: must be a JSON object"),
    ({"peers": {"kitchen": "not-a-uuid"}}, "peers.kitchen: not a UUID"),
    ({"peers": {"kitchen": 7}}, "peers.kitchen: must be a device id"),
    ({"reconnect": {"min_ms": 5}}, "reconnect.min_ms: must be an integer from 10"),
    ({"reconnect": {"min_ms": 5000, "max_ms": 1000}}, "reconnect.max_ms: must not be under"),
    ({"reconnect": {"every": 1}}, "reconnect.every: unknown field"),
    ({"handshake_ms": 0}, "handshake_ms: must be an integer from 100"),
    ({"realm_kye": "x"}, "realm_kye: unknown field"),
])
def test_a_bad_field_is_named(changes, message):
    with pytest.raises(ConfigError) as e:
        validate(config(**changes), has_wifi=False)
    assert str(e.value).startswith(message), str(e.value)


def test_load_names_the_file(tmp_path):
    path = str(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="config.json: cannot read the config file"):
        load(path, False)
    with open(path, "w") as f:
        f.write("{device_id: 1}")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        load(path, False)
    with open(path, "w") as f:
        json.dump(config(token="x"), f)
    with pytest.raises(ConfigError, match="config.json: token: "):
        load(path, False)


# -- store ----------------------------------------------------------------------------
def test_identity_is_made_once_and_kept(tmp_path):
    first = Store(str(tmp_path / "state")).load()
    again = Store(str(tmp_path / "state")).load()
    assert len(first.private) == len(first.public) == 32
    assert (again.private, again.public) == (first.private, first.public)


def test_the_boot_count_grows_at_every_boot_and_is_never_guessed(tmp_path):
    folder = str(tmp_path / "state")
    assert Store(folder).load().next_boot() == 1
    assert Store(folder).load().next_boot() == 2
    s = Store(folder).load()
    s.set_boot(41)  # the e2e counter ran out: the core asks for the next boot count
    assert Store(folder).load().next_boot() == 42
    with open(os.path.join(folder, "boot"), "w") as f:
        f.write("4x")
    with pytest.raises(StoreError, match="state file .*boot is damaged"):
        Store(folder).load()


def test_realm_pin_refusal_and_repin(tmp_path):
    folder = str(tmp_path / "state")
    s = Store(folder).load()
    s.pin_realm(b"R" * 32, b"D" * 32)
    s = Store(folder).load()
    assert (s.realm_public, s.dh2) == (b"R" * 32, b"D" * 32)
    s.refuse_realm("realm key changed")
    assert Store(folder).load().refused == "realm key changed"  # held across reboots
    s.repin(b"N" * 32)  # the user gives the new key: pinned, dh2 made at the next Welcome
    s = Store(folder).load()
    assert (s.realm_public, s.dh2, s.refused) == (b"N" * 32, None, None)
    s.repin()  # or trusts the next realm that answers
    assert Store(folder).load().realm_public is None


def test_a_new_key_pair_forgets_the_realm_pin(tmp_path):
    folder = str(tmp_path / "state")
    s = Store(folder).load()
    s.pin_realm(b"R" * 32, b"D" * 32)
    os.remove(os.path.join(folder, "identity"))
    s = Store(folder).load()
    assert s.realm_public is None  # the old pin would take the pinned path with the old key


def test_peer_pins_survive_a_reboot_in_their_order(tmp_path):
    # The Endpoint bounds the pins (tests/core/test_e2e.py); the store keeps what it gives.
    folder = str(tmp_path / "state")
    s = Store(folder).load()
    pins = [(bytes([i]) * 16, bytes([i]) * 32) for i in (3, 1, 2)]
    s.save_peers(pins)
    assert Store(folder).load().peers == pins
    s.save_peers(pins[1:])
    assert Store(folder).load().peers == pins[1:]


def test_a_write_is_all_or_nothing(tmp_path, monkeypatch):
    folder = str(tmp_path / "state")
    s = Store(folder).load()
    s.pin_realm(b"R" * 32, b"D" * 32)

    def power_cut(src, dst):
        raise OSError("power cut")
    monkeypatch.setattr(store_module.os, "rename", power_cut)
    with pytest.raises(OSError):
        s.pin_realm(b"X" * 32, b"Y" * 32)
    monkeypatch.undo()
    s = Store(folder).load()
    assert s.realm_public == b"R" * 32  # the old file, whole; the .tmp is ignored


def test_a_damaged_identity_is_reported_not_replaced(tmp_path):
    folder = str(tmp_path / "state")
    Store(folder).load()
    with open(os.path.join(folder, "identity"), "wb") as f:
        f.write(b"short")
    with pytest.raises(StoreError, match="identity is damaged \\(5 bytes\\)"):
        Store(folder).load()


# -- the flash tool's commands -----------------------------------------------------------
def test_flash_copies_the_build_the_config_and_the_app(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("def main(device): pass\n")
    files = files_to_copy(build("esp32", str(tmp_path / "esp32")), "dev.json", str(app),
                          "boot.json")
    remote = [r for _, r in files]
    assert {"main.py", "board.py", "config.json", "slots/a/app.py",
            "slots/a/lib/espressif.mpy", "slots/a/lib/shared/device.mpy",
            "slots/a/lib/firmware/runtime.mpy", "slots/boot.json"} <= set(remote)
    assert not [r for r in remote if r.endswith(".py") and "/lib/" in r]

    esp32 = mpremote_commands("mpremote", "/dev/ttyUSB0", profile("esp32"), files)
    assert len(esp32) == 1 and esp32[0][-2:] == ["+", "reset"]
    assert "resume" not in esp32[0]
    unix = mpremote_commands("mpremote", "/tmp/ttyV", profile("unix"), files)
    assert unix[0][:4] == ["mpremote", "connect", "/tmp/ttyV", "resume"]
    assert "reset" not in unix[0]

    ampy = ampy_commands("ampy", "/dev/ttyUSB0", profile("esp32"), files)
    assert ampy[0] == ["ampy", "--port", "/dev/ttyUSB0", "mkdir", "--exists-okay", "slots"]
    assert ["ampy", "--port", "/dev/ttyUSB0", "put", "dev.json", "config.json"] in ampy
    assert ampy[-1] == ["ampy", "--port", "/dev/ttyUSB0", "reset", "--hard"]


def test_each_board_profile_names_what_differs():
    for board, march, wifi in (("esp32", "xtensawin", True), ("esp32s3", "xtensawin", True),
                               ("esp32c3", "rv32imc", True), ("unix", "host", False)):
        p = profile(board)
        assert (p["MPY_MARCH"], p["HAS_WIFI"]) == (march, wifi)
        assert p["STATE_DIR"] and set(p["SERIAL"]) >= {"baud"}


HARDWARE = {"machine", "network", "neopixel"}


def imported_modules(source):
    """Every module a source imports, in any form (import x, from x import y, from x.y
    import z, import x as y, inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_import_check_sees_every_form():
    for line in ("import machine", "from machine import Pin", "import machine as m",
                 "def f():\n    from network import WLAN", "import os, neopixel"):
        assert imported_modules(line) & HARDWARE, line


def test_only_board_profiles_touch_the_hardware():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("firmware", "shared"):
        for name in os.listdir(os.path.join(root, package)):
            if name.endswith(".py"):
                with open(os.path.join(root, package, name)) as f:
                    used = imported_modules(f.read()) & HARDWARE
                assert not used, (package, name, used)


# -- the simulated-device driver -------------------------------------------------------
def test_assert_quiet_fails_when_the_device_died_instead(tmp_path):
    class Dead(SimDevice):
        def command_line(self, extra):
            return [sys.executable, "-c", "print('realm: booting')"], str(tmp_path)

    device = Dead(tmp_path / "config.json").start()
    with pytest.raises(AssertionError, match=r"(?s)exited \(0\).*realm: booting"):
        device.assert_quiet(r": connecting", 1)
    with pytest.raises(AssertionError, match="unexpected line 'realm: booting'"):
        device.assert_quiet(r"booting", 1)


def test_a_device_killed_and_started_again_is_waited_for(tmp_path):
    # The killed process's reader ends (here held up by its last line, as on a loaded
    # machine) while the new process starts (slowly): it must not mark the new run as
    # ended, or every wait on the new run fails at once with nothing printed.
    class Slow(SimDevice):
        def command_line(self, extra):
            if self.starts:
                time.sleep(1.0)  # the old reader ends meanwhile
            return [sys.executable, "-c", "import time; print('run %d'); print('last'); "
                    "time.sleep(30)" % self.starts], str(tmp_path)

    def held_up(device, line):
        if line == "last" and device.starts == 1:
            time.sleep(0.5)

    device = Slow(tmp_path / "config.json", power=True, on_line=held_up).start()
    device.wait(r"^run 0$")
    device.kill()
    device.start()
    try:
        device.wait(r"^run 1$", 10)
    finally:
        device.kill()


def test_a_simulated_device_writes_relative_paths_beside_its_config(tmp_path):
    # A device's relative path once put an update's state into the repository (app.mpy).
    app = tmp_path / "stray_app.py"
    app.write_text("open('stray.txt', 'w').write('x')\n\ndef main(device):\n    pass\n")
    device = SimDevice(tmp_path / "config.json", app=str(app)).start()
    device.wait(r"cannot start")  # no config: the app was loaded, then the device stops
    in_repository = os.path.join(ROOT, "stray.txt")
    if os.path.exists(in_repository):
        os.remove(in_repository)
        pytest.fail("the device wrote into the repository, its working folder")
    assert (tmp_path / "stray.txt").exists()


# -- the event loop's timeouts (MicroPython) ------------------------------------------
LOOP_SCRIPT = r"""
import sys
sys.path[:0] = [%(root)r, %(root)r + "/boards/unix"]
import asyncio
import time
from firmware.runtime import Loop

async def main():
    loop = Loop()
    rung = []
    t = time.ticks_ms()
    timer = loop.timer(100, lambda: rung.append(time.ticks_diff(time.ticks_ms(), t)))
    early = loop.timer(100, lambda: rung.append("cancelled timer rang"))
    await asyncio.sleep_ms(50)
    print("cancelled before it rang", early.cancel())
    await asyncio.sleep_ms(100)
    print("rang", rung, timer.cancel())
    import gc
    loop.collect_every(2048)
    print("collecting every", gc.threshold())
    loop.collect_every(None)
    print("collecting when full", gc.threshold())
    first = await loop.open_tcp("127.0.0.1", %(port)d, 2000)  # the listener's one slot
    print("connected", first is not None)
    t = time.ticks_ms()
    try:
        await loop.open_tcp("127.0.0.1", %(port)d, 300)
    except asyncio.TimeoutError:
        print("timeout", time.ticks_diff(time.ticks_ms(), t))
    # Cancelled by its owner, the connection is cancelled: no timeout is claimed.
    task = asyncio.create_task(loop.open_tcp("127.0.0.1", %(port)d, 300))
    await asyncio.sleep_ms(50)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print("cancelled")
    except asyncio.TimeoutError:
        print("wrongly timed out")
    await asyncio.sleep_ms(400)  # its timer must not cancel this task later

asyncio.run(main())
print("asyncio.funcs loaded:", "asyncio.funcs" in sys.modules)
"""


def test_the_device_loop_has_timers_a_connect_timeout_and_a_collection_pace(tmp_path):
    # asyncio.wait_for_ms cost a device 1.2 KB at its handshake's peak (its module, and its
    # wrapping of the pump's wait): the loop's timers do the same job, and never load it.
    import re
    import socket
    import subprocess
    from tools.harness import micropython
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # one connection waits to be accepted; later ones get no answer
    script = tmp_path / "loop.py"
    script.write_text(LOOP_SCRIPT % {"root": ROOT, "port": listener.getsockname()[1]})
    try:
        proc = subprocess.run([micropython(), str(script)], capture_output=True, text=True,
                              timeout=60)
    finally:
        listener.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "cancelled before it rang True" in out, out
    rang = re.search(r"^rang \[(\d+)\] False$", out, re.M)  # once; too late to cancel
    assert rang and 100 <= int(rang.group(1)) < 1000, out
    timeout = re.search(r"^timeout (\d+)$", out, re.M)
    assert timeout and 300 <= int(timeout.group(1)) < 1500, out
    assert "connected True" in out and "\ncancelled\n" in out, out
    assert "collecting every 2048\ncollecting when full -1\n" in out, out
    assert "asyncio.funcs loaded: False" in out, out
