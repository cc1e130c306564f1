"""Flash the firmware onto a board that already runs MicroPython.

Compiles shared/ and firmware/ to .mpy for the board's architecture (tools/build.py),
copies them with the board profile, main.py, the config (as config.json) and the
optional app (as app.py), then resets the board so it boots into the firmware.
mpremote skips files that are already up to date on the board.

usage: python tools/flash.py --port PORT --board BOARD --config CONFIG [--app APP.py]
                             [--tool mpremote|ampy]
"""
import argparse
import json
import os
import subprocess
import sys
import uuid
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.build import BuildError, build, profile  # noqa: E402
from tools.harness import ToolMissing, venv_tool  # noqa: E402
from firmware.config import ConfigError, validate  # noqa: E402

TOOLS = ("mpremote", "ampy")
USAGE = "make flash PORT=/dev/ttyUSB0 BOARD=esp32 CONFIG=path/device.json [APP=app.py] " \
        "[TOOL=ampy]"


class FlashError(Exception):
    pass


def find_tool(name):
    """The tool installed beside this Python (the venv), else on PATH."""
    try:
        return venv_tool(name, "adafruit-ampy" if name == "ampy" else name)
    except ToolMissing as e:
        raise FlashError(str(e))


def serial_ports():
    try:
        from serial.tools import list_ports
        return sorted(p.device for p in list_ports.comports())
    except ImportError:
        return []


def check_port(port):
    if not port:
        found = serial_ports()
        raise FlashError("PORT is missing (serial ports here: %s)" % (", ".join(found) or "none"))
    if port.startswith("/") and not os.path.exists(port):
        raise FlashError("no such port %s (is the board plugged in? serial ports here: %s)" % (
            port, ", ".join(serial_ports()) or "none"))


def check_config(path, prof):
    """The config must pass the same checks the device makes at boot, before we flash."""
    if not path:
        raise FlashError("CONFIG is missing: the device's JSON config "
                         "(`make provision` writes one)")
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise FlashError("cannot read CONFIG %s: %s" % (path, e.strerror))
    except ValueError as e:
        raise FlashError("CONFIG %s is not valid JSON: %s" % (path, e))
    try:
        validate(raw, prof.get("HAS_WIFI", False))
    except ConfigError as e:
        raise FlashError("CONFIG %s: %s" % (path, e))


SLOT = "slots/a"  # where make flash installs the firmware and the app (docs/UPDATES.md)
BOOT_STATE = "slots/boot.json"
AT_ROOT = ("main.py", "board.py")  # the first stage (never updated) and the profile


def files_to_copy(build_dir, config, app, boot_state):
    """(local path, path on the board) for every file, folders first in their order: the
    first stage and the profile at the root, the firmware and the app in slot a, and
    boot_state (a local file saying slot a is the one to run) as slots/boot.json."""
    files = []
    for folder, dirs, names in os.walk(build_dir):
        dirs.sort()
        for name in sorted(names):
            local = os.path.join(folder, name)
            remote = os.path.relpath(local, build_dir).replace(os.sep, "/")
            files.append((local, remote if remote in AT_ROOT else SLOT + "/" + remote))
    files.append((config, "config.json"))
    if app:
        files.append((app, SLOT + "/app.py"))
    files.append((boot_state, BOOT_STATE))
    return files


def set_update_keys(path, updater=None, release_key=None, data=None):
    """Write the updater's id and a release key into the config at path (docs/UPDATES.md);
    updater: a device id, or a name in the realm's data folder (data, else REALM_DATA)."""
    if not updater and not release_key:
        return
    with open(path) as f:
        config = json.load(f)
    if updater:
        config["updaters"] = [_device_id(updater, data)]
    if release_key:
        key = release_key.strip().lower()
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise FlashError("RELEASE_KEY: 64 hex digits, the public key `realm update keygen` "
                             "printed")
        keys = [k for k in config.get("release_keys", []) if k != key]
        config["release_keys"] = (keys + [key])[-2:]  # the newest two: rotation
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=1)
    print("%s: updaters %s, release_keys %s" % (path, ", ".join(config.get("updaters", [])),
                                                 ", ".join(k[:16] for k in
                                                           config.get("release_keys", []))))


def _device_id(text, data=None):
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    command = [find_tool("realm"), "device", "list", "--json"]
    if data:
        command += ["--data", data]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FlashError("UPDATER=%s: not a device id, and the realm's device list failed: %s"
                         % (text, proc.stderr.strip()))
    for device in json.loads(proc.stdout):
        if device.get("name") == text:
            return device["id"]
    raise FlashError("UPDATER=%s: no such device in the realm (realm device add --name %s)"
                     % (text, text))


def board_folders(files):
    folders = []
    for _, remote in files:
        parts = remote.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = "/".join(parts[:i])
            if folder not in folders:
                folders.append(folder)
    return folders


def mpremote_commands(exe, port, prof, files):
    """One mpremote run: make the folders, copy every file (it prints each one), reset."""
    cmd = [exe, "connect", port]
    if prof.get("MPREMOTE_RESUME"):
        cmd.append("resume")
    # An update in progress is dropped: the firmware flashed now is the one to run.
    mkdirs = ("import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass\n"
              "try:\n os.remove('slots/update.json')\nexcept OSError:\n pass" % (
                  board_folders(files),))
    cmd += ["exec", mkdirs]
    for local, remote in files:
        cmd += ["+", "fs", "cp", local, ":" + remote]
    if prof.get("RESET_AFTER_FLASH"):
        cmd += ["+", "reset"]
    return [cmd]


def ampy_commands(exe, port, prof, files):
    """ampy does one thing per run: a run per folder and per file, then the reset."""
    base = [exe, "--port", port]
    cmds = [base + ["mkdir", "--exists-okay", folder] for folder in board_folders(files)]
    cmds += [base + ["put", local, remote] for local, remote in files]
    if prof.get("RESET_AFTER_FLASH"):
        cmds.append(base + ["reset", "--hard"])
    return cmds


def run_tool(cmd, tool):
    """Run mpremote or ampy: one line per file as it goes; on failure, its last line of
    error (the cause) instead of its traceback."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
        print_progress(proc.stdout)
        if proc.wait() == 0:
            return
        errors.seek(0)
        lines = [line.strip() for line in errors if line.strip()]
    cause = lines[-1] if lines else "exit code %d" % proc.returncode
    cause = cause.split(": ", 1)[1] if cause.startswith(("mpremote.", "serial.")) else cause
    raise FlashError("%s failed: %s (is MicroPython on the board, and the port free: no "
                     "console still open?)" % (tool, cause))


def print_progress(lines):
    """mpremote says `cp LOCAL :REMOTE` before each copy and `Up to date: REMOTE` after a
    skipped one: one line per file, said once its copy is done or skipped."""
    pending = None
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("Up to date: "):
            print("  unchanged %s" % line[len("Up to date: "):], flush=True)
            pending = None
            continue
        if pending is not None:
            print("  copied    %s" % pending, flush=True)
            pending = None
        if line.startswith("cp ") and " :" in line:
            pending = line.rsplit(" :", 1)[1]
        else:
            print(line, flush=True)
    if pending is not None:
        print("  copied    %s" % pending, flush=True)


def flash(port, board, config, app=None, tool="mpremote", updater=None, release_key=None):
    if tool not in TOOLS:
        raise FlashError("TOOL=%s: use mpremote (default) or ampy" % tool)
    if config and os.path.isfile(config):
        set_update_keys(config, updater, release_key)
    try:
        prof = profile(board)
    except BuildError as e:
        raise FlashError(str(e))
    check_config(config, prof)  # the config first: it can be fixed without the board
    check_port(port)
    if app and not os.path.isfile(app):
        raise FlashError("APP %s: no such file" % app)
    exe = find_tool(tool)
    try:
        build_dir = build(board)
    except BuildError as e:
        raise FlashError(str(e))
    boot_state = os.path.join(build_dir, "..", "%s-boot.json" % board)
    with open(boot_state, "w") as f:
        json.dump({"active": SLOT, "trial": None, "tries": 0}, f)
    files = files_to_copy(build_dir, config, app, boot_state)
    size = sum(os.path.getsize(local) for local, _ in files)
    print("flashing %s on %s with %s: %d files, %.1f KB (mpy-cross -march=%s)" % (
        board, port, tool, len(files), size / 1024.0, prof["MPY_MARCH"]), flush=True)
    commands = (mpremote_commands if tool == "mpremote" else ampy_commands)(
        exe, port, prof, files)
    for i, cmd in enumerate(commands):
        if tool == "ampy":
            print("[%d/%d] %s" % (i + 1, len(commands), " ".join(cmd[3:])), flush=True)
        run_tool(cmd, tool)
    if prof.get("RESET_AFTER_FLASH"):
        print("done: the board was reset and runs the firmware (see it: make console PORT=%s)"
              % port)
    else:
        print("done: the firmware is on the board; it starts at the next boot (main.py)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage=USAGE)
    p.add_argument("--port", default="")
    p.add_argument("--board", default="")
    p.add_argument("--config", default="")
    p.add_argument("--app", default="")
    p.add_argument("--tool", default="mpremote")
    p.add_argument("--updater", default="", help="the updater device's id or name")
    p.add_argument("--release-key", default="", help="a release public key (hex)")
    args = p.parse_args(argv)
    try:
        flash(args.port, args.board, args.config, args.app or None, args.tool or "mpremote",
              args.updater or None, args.release_key or None)
    except FlashError as e:
        print("flash: %s\nusage: %s" % (e, USAGE), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
