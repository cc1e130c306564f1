"""`make bench-device` (second part): the time of a whole update, measured end to end.

A simulated device (the firmware under the MicroPython unix port at SIM_HEAP) is updated
by `realm update push` with a bundle the size of the whole firmware, every file fetched
(config update.reuse false), from the offer to the updater's "updated": the restart into
update mode, the header, the boot-time check, the transfer, the install, the restart
into the new version and its confirmation (update.confirm_ms = 1000 here). Over TCP on
loopback, and over a serial link held to 115200 baud (8N1: 11,520 bytes/s each way) by a
relay between two pty pairs, as a UART would.
usage: python bench/update.py
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from host import update as bundles  # noqa: E402
from tools.build import build  # noqa: E402
from tools.harness import RealmProcess, realm_command  # noqa: E402
from tools.simproc import HEAP, SimDevice, write_config  # noqa: E402

BAUD = 115200
CONFIRM_MS = 1000


class Pty:
    """A socat pty pair: one end for each side."""

    def __init__(self, folder, name):
        self.a = os.path.join(folder, name + "-a")
        self.b = os.path.join(folder, name + "-b")
        self.proc = subprocess.Popen(["socat", "PTY,link=%s,raw,echo=0" % self.a,
                                      "PTY,link=%s,raw,echo=0" % self.b],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not (os.path.exists(self.a) and os.path.exists(self.b)):
            if time.monotonic() > deadline:
                raise SystemExit("socat made no pty pair (apt-get install socat)")
            time.sleep(0.02)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def _raw(path):
    import termios
    import tty
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


class Throttle:
    """Copies bytes both ways between two ptys at most `baud` / 10 bytes per second."""

    def __init__(self, left, right, baud=BAUD):
        self.rate = baud / 10.0
        self.fds = (_raw(left), _raw(right))
        self.stopped = False
        for src, dst in ((0, 1), (1, 0)):
            threading.Thread(target=self._copy, args=(self.fds[src], self.fds[dst]),
                             daemon=True).start()

    def _copy(self, src, dst):
        sent, started = 0, time.monotonic()
        while not self.stopped:
            try:
                data = os.read(src, 256)
            except OSError:
                return
            if sent == 0 or time.monotonic() - started > sent / self.rate + 0.05:
                sent, started = 0, time.monotonic()  # idle: the line does not bank time
            sent += len(data)
            ahead = sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            os.write(dst, data)


def update_time(folder, key, serial=None):
    realm_extra = []
    throttle = pty_device = pty_realm = None
    if serial:
        pty_device, pty_realm = Pty(folder, "dev"), Pty(folder, "realm")
        throttle = Throttle(pty_device.b, pty_realm.a)
        realm_extra = ["--serial", pty_realm.b, "--baud", str(BAUD)]
    realm = RealmProcess(os.path.join(folder, "realm-data"), *realm_extra)
    try:
        updater = realm.admin("device", "add", "--name", "updater")
        added = realm.admin("device", "add", "--name", "target")
        path = write_config(
            os.path.join(folder, "target.json"), added["id"], added["token"], "target",
            port=realm.port, serial={"path": pty_device.a, "baud": BAUD} if serial else None,
            updaters=[updater["id"]], release_keys=[key[1]],
            update={"confirm_ms": CONFIRM_MS, "trial_ms": 120000, "reuse": False})
        seen = []  # (time, line) of the device's lines: the phases of the update

        def stamp(_device, line):
            seen.append((time.monotonic(), line))
        device = SimDevice(path, power=True, heap=HEAP, on_line=stamp).start()
        device.wait(r"online: ", 60)
        bundle = os.path.join(folder, "bench.bundle")
        bundles.build_app_bundle(bundle, "unix", "99.0.0", key[0],
                                 os.path.join(ROOT, "tools", "remote_app.py"))
        started = time.monotonic()
        out = subprocess.run(realm_command() + [
            "update", "push", bundle, "--to", "target", "--as", "updater",
            "--token", updater["token"], "--realm", "127.0.0.1:%d" % realm.port,
            "--data", realm.data_dir, "--state", os.path.join(folder, "updater.json"),
            "--wait", "600", "--json"], capture_output=True, text=True, timeout=700)
        took = time.monotonic() - started
        rows = json.loads(out.stdout or "[]")
        if not rows or rows[0]["state"] != "updated":
            raise SystemExit("the update failed: %s %s\nthe device's last lines:\n%s" % (
                rows, out.stderr[-2000:], "\n".join(device.output().splitlines()[-40:])))
        device.kill()
        return {"took": took, "size": os.path.getsize(bundle), "sent": rows[0]["sent"],
                "transfer": _transfer(seen),
                "reconnects": _reconnects(seen)}
    finally:
        realm.stop()
        if throttle is not None:
            throttle.stopped = True
            pty_device.stop()
            pty_realm.stop()


def _transfer(seen):
    """Seconds of the files' transfer: from the device's Welcome after the header check at
    boot to the files installed."""
    checked = next(t for t, line in seen if "going on with what is on flash" in line)
    start = next(t for t, line in seen if t >= checked and ": online: " in line)
    return next(t for t, line in seen if t >= start and "installed in" in line) - start


_STARTED = re.compile(r": device \S+ \(.*\), boot \d+, ")  # firmware/launch.py, each start


def _reconnects(seen):
    """Seconds from each restart of the device to its next "online" line."""
    waits, down = [], None
    for t, line in seen[1:]:
        if _STARTED.search(line):
            down = t
        elif down is not None and ": online: " in line:
            waits.append(t - down)
            down = None
    return waits


def main():
    build("unix")
    folder = tempfile.mkdtemp(prefix="realm-bench-update-")
    try:
        key_path = os.path.join(folder, "release.key")
        key = (key_path, bundles.keygen(key_path).hex())
        runs = {}
        for name in ("tcp", "serial"):
            os.makedirs(os.path.join(folder, name))
            runs[name] = update_time(os.path.join(folder, name), key, serial=name == "serial")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\nWhole update of a whole-firmware bundle (offer to confirmed, every file fetched, "
          "device at -X heapsize=%s, confirmation after %d ms online):" % (HEAP, CONFIRM_MS))
    for name, run in (("TCP on loopback", runs["tcp"]), ("serial, 115200 baud", runs["serial"])):
        print("  %-20s %6.1f s  (bundle %.1f KB, %.1f KB sent; the files' transfer %.1f s, "
              "%.0f KB/s; %d restarts, online again after %s s)" % (
                  name, run["took"], run["size"] / 1024.0, run["sent"] / 1024.0,
                  run["transfer"], run["size"] / 1024.0 / run["transfer"],
                  len(run["reconnects"]), " / ".join("%.2f" % w for w in run["reconnects"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
