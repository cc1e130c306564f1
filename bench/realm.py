"""Realm benchmark: many CPython devices on loopback through one `realm serve` process,
and the same payload through mosquitto (QoS 0, one publisher to one subscriber, TLS off
and on). Run by `make bench-realm`; `--quick` for a short smoke run.

CPU figures are the server process's own user+system time from /proc/PID/stat, taken
the same way for the realm and for the broker; the clients run in other processes.
"""
import argparse
import asyncio
import multiprocessing
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.realm_clients import BenchDevice, Fleet, Identity, Pair, connect_many  # noqa: E402
from host.registry import Registry  # noqa: E402
from host.server import Config  # noqa: E402
from tools.harness import RealmProcess, cpu_seconds, free_port, realm_command  # noqa: E402
from shared.errors import ProtocolError  # noqa: E402

PAYLOAD = 64  # bytes of inner / MQTT payload
WINDOW = 32  # packets in flight per streaming pair: enough to keep the realm busy


# -- processes ------------------------------------------------------------------------
def wait_port(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server not listening on %d" % port)


DEFAULTS = Config()  # `realm serve`'s
# The realm's own handshake limits, as `realm serve` runs by default.
DEFAULT_LIMITS = ("--handshake-timeout", DEFAULTS.handshake_timeout_s,
                  "--max-handshakes", DEFAULTS.max_handshakes,
                  "--max-handshakes-per-address", DEFAULTS.max_handshakes_per_address)

# Long timers, many handshakes at once: the benchmark's load is not an attack.
BENCH_SETTINGS = ("--heartbeat", "3600", "--handshake-timeout", "120", "--max-handshakes",
                  "1000", "--max-handshakes-per-address", "1000", "--summary", "3600")


def bench_realm(workdir, *extra):
    """A `realm serve` with the benchmark's settings and a fresh data folder in workdir."""
    data = tempfile.mkdtemp(prefix="realm-", dir=workdir)
    return RealmProcess(data, *(BENCH_SETTINGS + extra), start=False).start(timeout=30)


# -- realm phases --------------------------------------------------------------------------
async def measure(realm, work):
    """(result of `work`, wall seconds, realm CPU seconds) around one awaitable."""
    cpu0, t0 = realm.cpu(), time.perf_counter()
    result = await work
    return result, time.perf_counter() - t0, realm.cpu() - cpu0


async def handshakes(realm, devices, rounds):
    """First logins (token check, key bound) and reconnects (pinned path): rows of (name,
    handshakes/s, realm CPU us each, this process's CPU us each: the clients share the
    machine's cores with the realm). Before each phase every bench device makes the
    ephemeral key pairs of its connections in it (Identity.prepare), as a real device does
    on its own CPU; the rest of the devices' side (its X25519 exchange, key schedule,
    sockets) runs timed, on the cores the realm uses too. The realm's side is all timed."""
    identities = [Identity(*d) for d in devices]
    rows = []
    for name, per_device, concurrency in (
            ("handshakes/s, first login (token check, key bound)", 1, 8),
            ("handshakes/s, reconnect (pinned path)", rounds, 16)):
        batch = identities * per_device
        for identity in identities:
            identity.prepare(per_device)
        client0 = time.process_time()
        _, wall, cpu = await measure(realm, connect_many(realm.port, batch, concurrency, False))
        client = time.process_time() - client0
        rows.append((name, len(batch) / wall, 1e6 * cpu / len(batch),
                     1e6 * client / len(batch)))
        await asyncio.sleep(0.2)
    return rows


async def handshakes_only(workdir, token_devices, rounds):
    realm = bench_realm(workdir)
    try:
        registry = Registry(realm.data_dir)
        devices = [registry.add_device(time.time()) for _ in range(token_devices)]
        registry.close()
        return await handshakes(realm, [(uuid.UUID(i).bytes, t) for i, t in devices], rounds)
    finally:
        realm.stop(timeout=60)


IDLE_S = 2.5  # past host/server.py's KEYS_IDLE_MS and its next sweep: the sessions are idle


async def sessions_memory(realm, steps):
    """Realm RSS per idle authenticated session (measured IDLE_S after the last login),
    with the handshake rate of first contact."""
    warm = await connect_many(realm.port, [Identity()], 1)
    await asyncio.sleep(0.3)
    base = realm.rss()
    held, rows = warm, []
    for total in steps:
        fresh = [Identity() for _ in range(total - len(held))]
        new, wall, cpu = await measure(realm, connect_many(realm.port, fresh, 64))
        held += new
        await asyncio.sleep(IDLE_S)
        rows.append((total, (realm.rss() - base) / total, len(fresh) / wall,
                     1e6 * cpu / len(fresh)))
    for device in held:
        device.close()
    return rows


async def relay(realm, pairs, count, window):
    """`pairs` senders each stream `count` packets to their own receiver."""
    latencies = []
    flows = []
    for _ in range(pairs):
        a, b = Identity(), Identity()
        receiver = await BenchDevice.connect(realm.port, b)
        sender = await BenchDevice.connect(realm.port, a)
        flow = Pair(sender, b, count, window, PAYLOAD, latencies)
        receiver.on_proxy = flow.on_proxy
        flows.append((flow, sender, receiver))

    async def run():
        for flow, _, _ in flows:
            flow.pump()
        await asyncio.gather(*(flow.done for flow, _, _ in flows))
    _, wall, cpu = await measure(realm, run())
    for _, sender, receiver in flows:
        sender.close()
        receiver.close()
    total = pairs * count
    return total / wall, 1e6 * cpu / total, latencies


async def latency(realm, count, receiver=None, settle=0):
    """One packet at a time, 1 to 1: the relay latency without queueing. The receiver is
    on `receiver` (another server, a cluster node) if given; `settle` seconds between the
    logins and the first packet."""
    latencies = []
    a, b = Identity(), Identity()
    receiver = await BenchDevice.connect((receiver or realm).port, b)
    sender = await BenchDevice.connect(realm.port, a)
    await asyncio.sleep(settle)
    for _ in range(count):
        flow = Pair(sender, b, 1, 1, PAYLOAD, latencies)
        receiver.on_proxy = flow.on_proxy
        flow.pump()
        await flow.done
    sender.close()
    receiver.close()
    return latencies


async def fleet_restart(workdir, count):
    """`count` devices logged in (tokens made by the realm, keys bound at provisioning);
    the realm stopped with SIGTERM and started again; every device reconnects at once.
    The realm has its default handshake limits (the fleet comes from many addresses).
    Before the restart each bench device makes the ephemeral key pair of its next
    connection (Identity.prepare: a real device does that on its own CPU); the rest of
    each device's handshake (its X25519 exchange, key schedule, sockets) runs timed, on
    the cores the realm uses too. The realm's side is all timed and its CPU reported.
    Returns a dict: first (s to all logged in), listening (s from start), again (s from
    start to all logged in again), realm_cpu and client_cpu (s, over the reconnect),
    retries (a Counter of why connections were retried, both rounds)."""
    realm = bench_realm(workdir, *DEFAULT_LIMITS)
    registry = Registry(realm.data_dir)
    identities = []
    for _ in range(count):
        identity = Identity()
        device_id, identity.token = registry.add_device(time.time(),
                                                        bound_key=identity.public)
        identity.device_id = uuid.UUID(device_id).bytes
        identities.append(identity)
    registry.close()
    fleet = Fleet(identities)
    try:
        t0 = time.perf_counter()
        await fleet.connect_all(realm.port)
        first = time.perf_counter() - t0
        realm.stop(timeout=60)
        await fleet.all_lost()
        for identity in identities:  # each device's own CPU would do it (Identity.prepare)
            identity.prepare()
        t0 = time.perf_counter()
        realm.start(timeout=60)
        listening = time.perf_counter() - t0
        client0 = time.process_time()
        await fleet.connect_all(realm.port)
        again = time.perf_counter() - t0
        figures = {"first": first, "listening": listening, "again": again,
                   "realm_cpu": realm.cpu(), "client_cpu": time.process_time() - client0,
                   "retries": fleet.refusals, "addresses": len(set(fleet.sources))}
    finally:
        fleet.close()
        realm.stop(timeout=60)
    return figures


class Watcher:
    """A person with the status page open (its live feed read as it comes) and Prometheus
    scraping /metrics every second, while the relay runs."""

    def __init__(self, port):
        self.port = port
        self.scrapes = 0
        self.feed_bytes = 0
        self._tasks = []

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._feed()), loop.create_task(self._scrape())]
        return self

    async def __aexit__(self, *exc):
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _get(self, path):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path)
        return reader, writer

    async def _feed(self):
        reader, writer = await self._get(b"/api/events")
        try:
            while True:
                self.feed_bytes += len(await reader.read(65536))
        finally:
            writer.close()

    async def _scrape(self):
        while True:
            reader, writer = await self._get(b"/metrics")
            body = await reader.read()
            writer.close()
            if b"realm_relayed_packets_total" not in body:
                raise RuntimeError("no metrics in the scrape")
            self.scrapes += 1
            await asyncio.sleep(1.0)


async def relay_watched(realm, pairs, count, window, rounds, idle_s):
    """Realm CPU per relayed packet without and with a watcher, alternating rounds: the
    medians of each (the machine is shared, so one run of each would mostly show noise);
    and what the watcher alone costs the realm, in CPU ms per second, with the relay idle
    (a figure the noise does not drown)."""
    plain, watched, scrapes = [], [], 0
    for _ in range(rounds):
        plain.append((await relay(realm, pairs, count, window))[1])
        async with Watcher(realm.http_port) as watcher:
            watched.append((await relay(realm, pairs, count, window))[1])
        scrapes += watcher.scrapes
    idle = []
    for watching in (False, True):
        cpu0 = realm.cpu()
        if watching:
            async with Watcher(realm.http_port):
                await asyncio.sleep(idle_s)
        else:
            await asyncio.sleep(idle_s)
        idle.append(1000 * (realm.cpu() - cpu0) / idle_s)
    return sorted(plain)[rounds // 2], sorted(watched)[rounds // 2], scrapes, idle


async def latency_under_admin(realm, count, seconds):
    """The one-at-a-time relay latency, quiet and then with two admin loops on the same
    registry from other processes: `realm device add` every 100 ms, and `realm device
    list` back to back, for at least `seconds`. Returns (quiet latencies, loaded
    latencies, adds, lists)."""
    quiet = await latency(realm, count)
    stop = threading.Event()
    done = {"add": 0, "list": 0}

    def loop(args, pause, key):
        while not stop.is_set():
            subprocess.run(realm_command() + args + ["--data", realm.data_dir],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            done[key] += 1
            stop.wait(pause)
    threads = [threading.Thread(target=loop, args=(["device", "add"], 0.1, "add")),
               threading.Thread(target=loop, args=(["device", "list"], 0, "list"))]
    for thread in threads:
        thread.start()
    try:
        await asyncio.sleep(1)  # both loops running
        loaded, until = [], time.monotonic() + seconds
        while time.monotonic() < until:
            loaded += await latency(realm, count)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return quiet, loaded, done["add"], done["list"]


def idle_flood(port, idle, ready):
    """In a process of its own (its loop must not slow the logins measured): hold `idle`
    connections that send nothing, from twenty addresses 127.0.1.x, each reopened 50 ms
    after the realm closes it, until killed. Sets `ready` once all were opened once."""
    async def hold(source, opened):
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                               local_addr=(source, 0))
            except OSError:
                await asyncio.sleep(0.05)
                continue
            opened.set_result(None) if not opened.done() else None
            try:
                await reader.read()
            except OSError:
                pass
            writer.close()
            await asyncio.sleep(0.05)

    async def main():
        loop = asyncio.get_running_loop()
        opened = [loop.create_future() for _ in range(idle)]
        holders = [loop.create_task(hold("127.0.1.%d" % (1 + i % 20), opened[i]))
                   for i in range(idle)]  # referenced: a task nobody holds may be collected
        await asyncio.gather(*opened)
        ready.set()
        await asyncio.gather(*holders)  # until killed
    asyncio.run(main())


async def login_under_flood(realm, idle, logins):
    """Logins of one device (reconnects: pinned path) from 127.0.0.2 while `idle_flood`
    runs: (login seconds, refused logins)."""
    device = Identity()
    (await BenchDevice.connect(realm.port, device, source="127.0.0.2")).close()  # enrolled
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, no copied loop
    ready = spawn.Event()
    flood = spawn.Process(target=idle_flood, args=(realm.port, idle, ready), daemon=True)
    flood.start()
    try:
        if not await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60):
            raise RuntimeError("the idle connections did not open within 60 s")
        await asyncio.sleep(1)
        times, refused = [], 0
        for _ in range(logins):
            started = time.perf_counter()
            try:
                (await BenchDevice.connect(realm.port, device, source="127.0.0.2")).close()
                times.append(time.perf_counter() - started)
            except (ConnectionError, ProtocolError):
                refused += 1
            await asyncio.sleep(0.02)
    finally:
        flood.kill()
        flood.join()
    return times, refused


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# -- mosquitto -------------------------------------------------------------------------------
def ensure_mosquitto():
    if shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto"):
        if shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub"):
            return True
    print("mosquitto not found: installing mosquitto and mosquitto-clients (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    ok = subprocess.call(["apt-get", "install", "-y", "-q", "mosquitto", "mosquitto-clients"],
                         env=env, stdout=subprocess.DEVNULL) == 0
    if not ok:
        ok = subprocess.call(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL) == 0 and \
            subprocess.call(["apt-get", "install", "-y", "-q", "mosquitto",
                             "mosquitto-clients"], env=env, stdout=subprocess.DEVNULL) == 0
    return ok


def mosquitto(workdir, count, tls):
    """Broker msgs/s and CPU us/msg for `count` QoS 0 messages, one publisher, one subscriber."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = os.path.join(workdir, "mosquitto-%d.conf" % port)
    lines = ["listener %d 127.0.0.1" % port, "allow_anonymous true",
             "max_queued_messages 0", "max_queued_bytes 0", "persistence false",
             "user %s" % pwd.getpwuid(os.getuid()).pw_name]
    client_tls = []
    if tls:
        key, cert = os.path.join(workdir, "key.pem"), os.path.join(workdir, "cert.pem")
        if not os.path.exists(cert):
            subprocess.check_call(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                 "-days", "1", "-subj", "/CN=localhost"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines += ["certfile %s" % cert, "keyfile %s" % key]
        client_tls = ["--cafile", cert, "--insecure"]
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    broker = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port, broker)
        address = ["-h", "127.0.0.1", "-p", str(port), "-t", "bench", "-q", "0"] + client_tls
        sub = subprocess.Popen(["mosquitto_sub", "-C", str(count)] + address,
                               stdout=subprocess.DEVNULL)
        time.sleep(0.5)  # subscribed
        message = b"m" * PAYLOAD + b"\n"
        cpu0, t0 = cpu_seconds(broker.pid), time.perf_counter()
        pub = subprocess.Popen(["mosquitto_pub", "-l"] + address, stdin=subprocess.PIPE)
        pub.communicate(message * count, timeout=300)
        sub.wait(300)
        wall, cpu = time.perf_counter() - t0, cpu_seconds(broker.pid) - cpu0
    finally:
        broker.terminate()
        broker.wait(10)
    return count / wall, 1e6 * cpu / count


# -- the run ------------------------------------------------------------------------------
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    p.add_argument("--no-mosquitto", action="store_true")
    p.add_argument("--fleet", type=int, help="devices in the restart phase (default 10000, "
                   "--quick 200)")
    p.add_argument("--only", choices=("fleet", "watched", "relay", "sessions", "handshakes"),
                   help="run only this phase (watched: the relay with and without the status "
                   "page open and /metrics scraped; relay: 1 publisher -> 1 subscriber beside "
                   "mosquitto with TLS off and on; sessions: RSS per idle session; "
                   "handshakes: first logins and pinned reconnects)")
    args = p.parse_args()
    q = args.quick
    sessions = (100, 300) if q else (1000, 5000, 10000)
    token_devices, rounds = (4, 2) if q else (40, 50)
    pairs, per_pair = (4, 500) if q else (16, 5000)
    one_to_one = 2000 if q else 50000
    pings = 200 if q else 2000
    fleet = args.fleet or (200 if q else 10000)
    flood, flood_logins = (200, 20) if q else (1000, 200)
    # The watcher's cost: relay rounds, then seconds idle (unwatched, then watched).
    quick_watch = (1, 0.5)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket per bench device
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = tempfile.mkdtemp(prefix="realm-bench-")
    print("realm bench: %s, CPython %s, %d cores" % (
        "quick" if q else "full", sys.version.split()[0], os.cpu_count()))
    try:
        if args.only == "fleet":
            report_fleet(asyncio.run(fleet_restart(workdir, fleet)), fleet)
            return
        if args.only == "relay":
            realm = asyncio.run(one_to_one_only(workdir, one_to_one))
            report_one_to_one(realm, broker_phase(workdir, one_to_one, args.no_mosquitto),
                              one_to_one)
            return
        if args.only == "sessions":
            report_sessions(asyncio.run(sessions_only(workdir, sessions)))
            return
        if args.only == "handshakes":
            report_handshakes(asyncio.run(handshakes_only(workdir, token_devices, rounds)))
            return
        if args.only == "watched":
            report_watched(asyncio.run(watched_only(workdir, pairs, per_pair,
                                                    quick_watch if q else (7, 16.0))), pairs)
            return
        figures = asyncio.run(realm_phases(workdir, sessions, token_devices, rounds, pairs,
                                           per_pair, one_to_one, pings,
                                           quick_watch if q else (5, 12.0),
                                           1 if q else 10, flood, flood_logins))
        figures["fleet"] = asyncio.run(fleet_restart(workdir, fleet))
        report(figures, broker_phase(workdir, one_to_one, args.no_mosquitto), one_to_one)
        report_fleet(figures["fleet"], fleet)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def realm_phases(workdir, sessions, token_devices, rounds, pairs, per_pair, one_to_one,
                       pings, watch, admin_s, flood, flood_logins):
    figures = {}
    figures["handshakes"] = await handshakes_only(workdir, token_devices, rounds)
    realm = bench_realm(workdir, "--open-enrolment")
    try:
        figures["sessions"] = await sessions_memory(realm, sessions)
    finally:
        realm.stop(timeout=60)
    realm = bench_realm(workdir, "--open-enrolment", *DEFAULT_LIMITS)
    try:
        figures["flood"] = await login_under_flood(realm, flood, flood_logins)
    finally:
        realm.stop(timeout=60)
    realm = bench_realm(workdir, "--open-enrolment")
    try:
        figures["relay"] = await relay(realm, pairs, per_pair, WINDOW)
        figures["one_to_one"] = await relay(realm, 1, one_to_one, 1024)
        figures["latency"] = await latency(realm, pings)
        figures["watched"] = await relay_watched(realm, pairs, per_pair, WINDOW, *watch)
        figures["admin"] = await latency_under_admin(realm, pings, admin_s)
    finally:
        realm.stop(timeout=60)
    figures["pairs"] = pairs
    figures["flood_idle"] = flood
    return figures


def broker_phase(workdir, count, skip):
    """[(name, msgs/s, broker CPU us per message)] for mosquitto with TLS off and on."""
    broker = []
    if not skip and ensure_mosquitto():
        for tls in (False, True):
            broker.append(("mosquitto QoS 0, TLS %s" % ("on" if tls else "off"),)
                          + mosquitto(workdir, count, tls))
    elif not skip:
        print("mosquitto unavailable: broker comparison skipped")
    return broker


async def one_to_one_only(workdir, count):
    realm = bench_realm(workdir, "--open-enrolment")
    try:
        return await relay(realm, 1, count, 1024)
    finally:
        realm.stop(timeout=60)


async def sessions_only(workdir, steps):
    realm = bench_realm(workdir, "--open-enrolment")
    try:
        return await sessions_memory(realm, steps)
    finally:
        realm.stop(timeout=60)


async def watched_only(workdir, pairs, per_pair, watch):
    realm = RealmProcess(workdir, "--open-enrolment")
    try:
        return await relay_watched(realm, pairs, per_pair, WINDOW, *watch)
    finally:
        realm.stop()


def report_watched(figures, pairs):
    plain, watched, scrapes, idle = figures
    print("%-50s %12s %14.1f" % ("%d pairs, nobody watching (median)" % pairs, "-", plain))
    print("%-50s %12s %14.1f %+7.1f %%" % (
        "%d pairs, page open + /metrics every 1 s" % pairs, "-", watched,
        100.0 * (watched - plain) / plain))
    print("(realm CPU us per relayed packet; %d scrapes.) Relay idle: %.1f ms of realm CPU "
          "per second, %.1f with the page open and /metrics every 1 s" % (scrapes, idle[0],
                                                                          idle[1]))


def report(f, broker, one_to_one):
    print()
    report_handshakes(f["handshakes"])
    report_sessions(f["sessions"])
    times, refused = f["flood"]
    print()
    print("%-50s %12s %14s %8s %8s" % ("login under a connection flood", "logins", "refused",
                                       "p50 ms", "p99 ms"))
    print("%-50s %12d %14d %8s %8s" % (
        "%d idle connections held, reopened" % f["flood_idle"],
        len(times) + refused, refused,
        "%.2f" % (percentile(times, 50) * 1e3) if times else "-",
        "%.2f" % (percentile(times, 99) * 1e3) if times else "-"))
    rate, cpu, lat = f["relay"]
    print()
    print("%-50s %12s %14s %8s %8s" % ("relay (%d-byte inner, msg_id 0)" % PAYLOAD,
                                       "packets/s", "realm CPU us", "p50 ms", "p99 ms"))
    print("%-50s %12.0f %14.1f %8.2f %8.2f" % (
        "%d pairs streaming, window %d" % (f["pairs"], WINDOW), rate, cpu,
        percentile(lat, 50) / 1e6, percentile(lat, 99) / 1e6))
    lat = f["latency"]
    print("%-50s %12s %14s %8.2f %8.2f" % ("1 pair, one packet at a time", "-", "-",
                                           percentile(lat, 50) / 1e6,
                                           percentile(lat, 99) / 1e6))
    report_watched(f["watched"], f["pairs"])
    quiet, loaded, adds, lists = f["admin"]
    print("%-50s %12s %14s %8.2f %8.2f" % ("1 pair, one at a time, again", "-", "-", percentile(quiet, 50) / 1e6,
                                           percentile(quiet, 99) / 1e6))
    print("%-50s %12s %14s %8.2f %8.2f" % ("same, with admin loops (%d adds, %d lists)" % (
        adds, lists), "-", "-", percentile(loaded, 50) / 1e6, percentile(loaded, 99) / 1e6))
    print("%-50s %12s %14s %8s %8.2f" % ("p99 with admin loops / p99 quiet", "", "", "",
                                         percentile(loaded, 99) / percentile(quiet, 99)))
    report_one_to_one(f["one_to_one"], broker, one_to_one)


def report_sessions(rows):
    print()
    print("%-50s %12s %14s %14s" % ("idle authenticated sessions", "RSS/session",
                                    "handshakes/s", "realm CPU us"))
    for total, per_session, rate, cpu in rows:
        print("%-50s %10.1f KiB %14.0f %14.0f" % ("%d sessions (first contact, open enrolment)"
                                                 % total, per_session / 1024, rate, cpu))


def report_one_to_one(realm, broker, count):
    rate, cpu, _ = realm
    print()
    print("%-50s %12s %14s %10s" % ("1 publisher -> 1 subscriber, %d messages of %d B"
                                    % (count, PAYLOAD), "msgs/s", "server CPU us",
                                    "CPU ratio"))
    print("%-50s %12.0f %14.1f %10s" % ("realm (hops sealed, e2e inner opaque)", rate, cpu,
                                        "1.00"))
    for name, b_rate, b_cpu in broker:
        print("%-50s %12.0f %14.1f %10.2f" % (name, b_rate, b_cpu, cpu / b_cpu))
    print("\nCPU ratio = realm CPU per message / broker CPU per message.")


def report_handshakes(rows):
    print("%-50s %12s %14s %14s" % ("handshakes", "per second", "realm CPU us",
                                    "client CPU us"))
    for name, rate, cpu, client in rows:
        print("%-50s %12.0f %14.0f %14.0f" % (name, rate, cpu, client))


def report_fleet(f, count):
    print()
    print("fleet restart, %d devices from %d addresses (realm-made tokens, keys bound; "
          "realm on its default handshake limits):" % (count, f["addresses"]))
    print("  first logins, all at once:            %6.1f s" % f["first"])
    print("  SIGTERM, start: listening after       %6.1f s" % f["listening"])
    print("  start to all %d logged in again:   %6.1f s" % (count, f["again"]))
    print("  CPU over the restart: realm %.1f s (%.0f us a login), bench clients %.1f s "
          "(%.0f us)" % (f["realm_cpu"], 1e6 * f["realm_cpu"] / count, f["client_cpu"],
                         1e6 * f["client_cpu"] / count))
    retries = f["retries"]
    print("  connections retried: %s" % (", ".join(
        "%d %s" % (n, why) for why, n in retries.most_common()) if retries else "none"))


if __name__ == "__main__":
    main()
