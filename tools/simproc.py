"""Drive simulated devices from CPython: for `make demo`, `make bench-device` and the
tests. A SimDevice is the firmware under the MicroPython unix port (tools/sim.py) running
tools/remote_app.py, which takes commands on stdin and prints one line per event."""
import json
import os
import re
import subprocess
import threading
import time

from tools.harness import ROOT, micropython

REMOTE_APP = os.path.join(ROOT, "tools", "remote_app.py")
# A device's line when it comes online (it starts with the device's name): group 1 the
# connect time, group 2 how it connected, which HANDSHAKE names as the protocol does.
ONLINE = r": online: .* in (\d+) ms \((first contact|known realm)\)"
HANDSHAKE = {"first contact": "first-contact", "known realm": "pinned"}
# The heap the simulated devices get: the whole runtime, compiled, with room to work.
HEAP = os.environ.get("SIM_HEAP", "128k")


def write_config(path, device_id, token, name, port=None, serial=None, realm_key=None,
                 reconnect=None, **extra):
    config = {"device_id": device_id, "token": token, "name": name}
    config["realm"] = {"serial": serial} if serial else {"host": "127.0.0.1", "port": port}
    if realm_key:
        config["realm_key"] = realm_key
    if reconnect:
        config["reconnect"] = reconnect
    config.update(extra)
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    return path


class SimDevice:
    """One simulated device process; its output lines are collected as they come."""

    def __init__(self, config_path, heap=HEAP, app=REMOTE_APP, on_line=None, power=False,
                 ota=False):
        self.config_path = os.path.abspath(str(config_path))
        self.heap = heap
        self.app = app
        self.ota = ota  # a board with two OTA partitions (tools/sim_ota.py): takes images
        self.on_line = on_line  # on_line(device, line), from the reading thread
        # power: start the process again when it ends by itself, as a board comes back
        # after a reset (the unix board's restart() ends the process).
        self.power = power
        self.starts = 0
        self.proc = None
        self.lines = []
        self._ended = False
        self._stopping = False
        self._extra = ()
        self._cond = threading.Condition()

    def command_line(self, extra):
        """The process to start, and its working folder: the config's, so that whatever
        the device writes by a relative path stays beside its own files (never in the
        repository)."""
        script = os.path.join(ROOT, "tools", "sim_ota.py" if self.ota else "sim.py")
        return ([micropython(), "-X", "heapsize=" + self.heap, script, self.config_path,
                 "--app", self.app] + list(extra)), \
            os.path.dirname(self.config_path)

    def start(self, *extra):
        self._extra = extra
        self._spawn(fresh=True)
        return self

    def _spawn(self, fresh=False):
        """Start the process. fresh: a new run (start()), else power coming back after a
        reset. The new process and its run's state replace the old ones in one step: the
        reader of a process killed just before may still be ending, and must see either
        its own process (and leave no mark on the new run) or the new one (and step aside)."""
        argv, cwd = self.command_line(self._extra)
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, umask=0o077,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        with self._cond:
            if fresh:
                self.lines = []
                self._ended = False
                self._stopping = False
            elif self._stopping:  # killed while the power came back
                proc.kill()
                proc.communicate()
                self._ended = True
                self._cond.notify_all()
                return
            self.proc = proc
            self.starts += 1
        threading.Thread(target=self._collect, args=(proc,), daemon=True).start()

    def _collect(self, proc):
        # A process killed and started again: its reader may still be draining the old
        # one's last lines, which belong to neither run.
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if self.on_line is not None and proc is self.proc:
                self.on_line(self, line)
            with self._cond:
                if proc is self.proc:
                    self.lines.append(line)
                    self._cond.notify_all()
        proc.wait()
        with self._cond:
            if proc is not self.proc:
                return
            if not (self.power and not self._stopping and proc.returncode > 0):
                self._ended = True
                self._cond.notify_all()
                return
            self.lines.append("[sim: the device reset; powering it up again]")
        self._spawn()

    @property
    def pid(self):
        return self.proc.pid

    def command(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def mark(self):
        """The number of lines so far: wait(..., since=mark) looks only at later lines."""
        with self._cond:
            return len(self.lines)

    def wait(self, pattern, timeout=15, since=0):
        """The first match of regex pattern in a line after `since`; AssertionError on
        timeout or if the process ends first."""
        m = self._first(pattern, timeout, since)
        if m is None:
            raise AssertionError("no line matching %r from %s within %s s; output:\n%s"
                                 % (pattern, self.config_path, timeout, self.output()))
        return m

    def assert_quiet(self, pattern, seconds, since=0):
        """For `seconds`, no line matching pattern after `since`, and the device still
        running at the end: AssertionError otherwise, with what it printed."""
        m = self._first(pattern, seconds, since)
        if m is not None:
            raise AssertionError("unexpected line %r from %s; output:\n%s"
                                 % (m.string, self.config_path, self.output()))
        if self.proc.poll() is not None or self._ended:  # its output ended: it is exiting
            raise AssertionError("%s exited (%s) instead of staying quiet; output:\n%s"
                                 % (self.config_path, self.proc.wait(5), self.output()))

    def _first(self, pattern, timeout, since):
        """The first match after `since` within timeout; None at the timeout or once the
        process has ended."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[since:]:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self._ended:
                    return None
                self._cond.wait(min(left, 0.2))

    def matches(self, pattern, since=0):
        regex = re.compile(pattern)
        with self._cond:
            return [line for line in self.lines[since:] if regex.search(line)]

    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def stop(self):
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.proc.stdin.close()
        return self.proc.returncode if self.proc is not None else None

    def kill(self):
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.proc.stdin.close()
