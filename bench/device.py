"""`make bench-device`: the firmware's figures, measured in the MicroPython unix port.

Simulated devices (the firmware compiled as for a board, tools/sim.py) against a real
`realm serve` on loopback. Every time is taken inside the device, by its own clock:
  - connect-to-Welcome: TCP connect + handshake + login, first-contact and pinned paths
  - round trip: an end-to-end Ping from one device answered by another, through the realm
  - messages per second one device pushes through the realm (a Delivery back for each)
  - heap: steady state after a collection, and the smallest -X heapsize the run fits in
usage: python bench/device.py [--quick]
"""
import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.build import build  # noqa: E402
from tools.harness import RealmProcess  # noqa: E402
from tools.simproc import HANDSHAKE, HEAP, ONLINE, REMOTE_APP, SimDevice, write_config  # noqa: E402

HEAP_APP = os.path.join(ROOT, "bench", "heap_app.py")

FAILED = r"MemoryError.*|Traceback.*|out of memory.*|^error .*"


class Bench:
    def __init__(self, folder, heap):
        self.folder = folder
        self.heap = heap
        self.realm = RealmProcess(os.path.join(folder, "realm-data"))
        self.running = []
        self.made = 0

    def device(self, name, heap=None, app=REMOTE_APP):
        """A new device; names are unique in a realm, so a name used before gets a number."""
        self.made += 1
        name = "%s-%d" % (name, self.made)
        added = self.realm.admin("device", "add", "--name", name)
        path = write_config(os.path.join(self.folder, name + ".json"), added["id"],
                            added["token"], name, port=self.realm.port)
        sim = SimDevice(path, heap=heap or self.heap, app=app)
        sim.id = added["id"]
        return sim

    def boot(self, sim, timeout=30, extra=()):
        """Start sim; (welcome ms, path)."""
        sim.start(*extra)
        self.running.append(sim)
        m = sim.wait("%s|%s" % (ONLINE, FAILED), timeout)
        if m.group(1) is None:
            raise AssertionError("%s: %s" % (sim.config_path, m.group(0)))
        return int(m.group(1)), HANDSHAKE[m.group(2)]

    def stop_devices(self):
        for sim in self.running:
            sim.kill()
        self.running = []

    def stop(self):
        self.stop_devices()
        self.realm.stop()


def ask(sim, command, answer, timeout=60):
    """Send a command to the remote app; the match of its answer (AssertionError if the
    app reports an error instead)."""
    mark = sim.mark()
    sim.command(command)
    m = sim.wait("(?:%s)|%s" % (answer, FAILED), timeout, mark)
    if not re.match(answer, m.group(0)):
        raise AssertionError("%s answered %s" % (command, m.group(0)))
    return m


def connect_times(bench, devices, reboots):
    """Welcome times: a device's very first login (the realm checks its token, binds its
    key), then reboots without the pin (--repin: the first-contact path, with
    SendKey) and with it (the pinned path)."""
    first_login, first, pinned = [], [], []
    for i in range(devices):
        sim = bench.device("connect-%d" % i)
        ms, path = bench.boot(sim)
        assert path == "first-contact", path
        first_login.append(ms)
        for extra, times, want in ((("--repin",), first, "first-contact"), ((), pinned, "pinned")):
            for _ in range(reboots):
                sim.stop()
                ms, path = bench.boot(sim, extra=extra)
                assert path == want, path
                times.append(ms)
        sim.stop()
    return first_login, first, pinned


def idle_heap(bench, heap):
    """(used, free) bytes of a device running the default app, online and idle; None if
    it does not fit in this heap."""
    sim = bench.device("idle-" + heap, heap, HEAP_APP)
    try:
        sim.start()
        m = sim.wait(r"^heap (\d+) (\d+)$|%s" % FAILED, 15)
        return (int(m.group(1)), int(m.group(2))) if m.group(1) else None
    except AssertionError:
        return None
    finally:
        sim.kill()


def fits_idle(bench, heap):
    return idle_heap(bench, heap) is not None


def fits_traffic(bench, heap, count=300):
    """Does a pair of devices with this heap connect, flood and ping without trouble?"""
    a, b = bench.device("fit-a-" + heap, heap), bench.device("fit-b-" + heap, heap)
    try:
        bench.boot(a, 10)
        bench.boot(b, 10)
        ask(a, "flood %s %d 64" % (b.id, count), r"^flood %d \d+$" % count, 15)
        ask(a, "ping %s" % b.id, r"^pong \S+ \d+$", 10)
        return not (a.matches(FAILED) or b.matches(FAILED))
    except AssertionError:
        return False
    finally:
        a.kill()
        b.kill()


def smallest_heap(bench, fits, low=64, high=192, step=8):
    """Bisect the -X heapsize (KB) fits(bench, heap) needs; None if `high` is too small."""
    if not fits(bench, "%dk" % high):
        return None
    while high - low > step:
        mid = (low + high) // 2 // step * step
        if fits(bench, "%dk" % mid):
            high = mid
        else:
            low = mid
    return high


def kb(fit):
    return "%d KB (-X heapsize, to 8 KB)" % fit if fit else "over 192 KB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = p.parse_args(argv)
    reps = 1 if args.quick else 3
    pings = 10 if args.quick else 50
    flood = 200 if args.quick else 1000
    build("unix")
    folder = tempfile.mkdtemp(prefix="realm-bench-device-")
    bench = Bench(folder, HEAP)
    try:
        first_login, first, pinned = connect_times(bench, reps, reps)
        a, b = bench.device("a"), bench.device("b")
        bench.boot(a)
        bench.boot(b)
        rtts = [int(ask(a, "ping %s" % b.id, r"^pong \S+ (\d+)$").group(1)) for _ in range(pings)]
        rates = {}
        for size in (16, 256):
            ms = int(ask(a, "flood %s %d %d" % (b.id, flood, size),
                         r"^flood %d (\d+)$" % flood, 120).group(1))
            rates[size] = flood * 1000.0 / max(ms, 1)
        bench.stop_devices()
        used, free = idle_heap(bench, HEAP)
        idle_fit = smallest_heap(bench, fits_idle)
        traffic_fit = smallest_heap(bench, fits_traffic)
    finally:
        bench.stop()
        shutil.rmtree(folder, ignore_errors=True)

    print("Device runtime, MicroPython unix port (%s), simulated devices at -X heapsize=%s,"
          % (sys.platform, HEAP))
    print("realm on loopback; times measured by the device's own clock.\n")
    rows = [
        ("connect-to-Welcome, a device's first login", "%d ms median (%d runs; the realm "
         "checks its token and binds its key)" % (statistics.median(first_login),
                                                  len(first_login))),
        ("connect-to-Welcome, first-contact path", "%d ms median (%d runs)" % (
            statistics.median(first), len(first))),
        ("connect-to-Welcome, pinned path", "%d ms median (%d runs)" % (
            statistics.median(pinned), len(pinned))),
        ("end-to-end round trip (Ping -> Pong)", "%.1f ms median, %d ms max (%d pings)" % (
            statistics.median(rtts), max(rtts), len(rtts))),
        ("messages/s pushed, 16-byte payload", "%.0f (%d messages, 8 in flight)" % (
            rates[16], flood)),
        ("messages/s pushed, 256-byte payload", "%.0f" % rates[256]),
        ("heap in use, online and idle, default app", "%.1f KB of %.0f KB (after gc)" % (
            used / 1024.0, (used + free) / 1024.0)),
        ("smallest heap: online and idle", kb(idle_fit)),
        ("smallest heap (peak): 300-message flood + ping", kb(traffic_fit)),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print("  %-*s  %s" % (width, name, value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
