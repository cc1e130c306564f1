"""Helpers for the firmware tests: a real realm process, simulated devices (the firmware
under the MicroPython unix port, tools/simproc.py), and what the OS says about them."""
import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.realm_helpers import RealmProcess
from tools.build import build
from tools.harness import micropython
from tools.simproc import HANDSHAKE, HEAP, ONLINE, REMOTE_APP, ROOT, SimDevice, write_config

# Short waits so the suite stays fast: the realm's heartbeat is 1 s in these tests.
FAST_RECONNECT = {"min_ms": 100, "max_ms": 800, "auth_ms": 2500}
HEARTBEAT = "1"


@pytest.fixture(scope="session")
def unix_build():
    return build("unix")


def start_realm(folder, *extra, data="data"):
    return RealmProcess(os.path.join(str(folder), data), "--heartbeat", HEARTBEAT, *extra)


@pytest.fixture
def realm(tmp_path):
    """A realm process for one test; its log must hold no traceback at the end."""
    process = start_realm(tmp_path)
    yield process
    process.stop()
    process.assert_clean_log()


class Fleet:
    """The simulated devices of one test, stopped at its end."""

    def __init__(self, folder, realm):
        self.folder = str(folder)
        self.realm = realm
        self.devices = []

    def add(self, name, serial=None, start=True, token=None, power=False, heap=HEAP,
            app=REMOTE_APP, **config):
        """Register a device and write its config (token: a wrong one to use instead;
        power: started again when it resets, see SimDevice; app: its app's source)."""
        device_id, real_token = self.realm.add_device(name)
        token = token or real_token
        text_id = str(uuid.UUID(bytes=device_id))
        config.setdefault("reconnect", FAST_RECONNECT)
        path = write_config(os.path.join(self.folder, name + ".json"), text_id, token, name,
                            port=self.realm.port, serial=serial, **config)
        device = SimDevice(path, power=power, heap=heap, app=app)
        device.id = text_id
        device.name = name
        self.devices.append(device)
        if start:
            device.start()
        return device

    def stop(self):
        for device in self.devices:
            device.kill()


def online(device, since=0, timeout=20):
    """Wait for the device's next Welcome; returns the handshake path it took."""
    return HANDSHAKE[device.wait(ONLINE, timeout, since).group(2)]


def send(sender, receiver, text, timeout=15):
    """sender sends text to receiver; returns the Delivery status once it is known."""
    mark = sender.mark()
    sender.command("send %s %s" % (receiver.id, text))
    msg_id = sender.wait(r"^sent (\d+) ", timeout, mark).group(1)
    return sender.wait(r"^delivery %s (\w+)" % msg_id, timeout, mark).group(1)


def received(receiver, sender, text, since=0, timeout=15):
    return receiver.wait(r"^message %s %s$" % (sender.id, text), timeout, since)


def tcp_connections(pid, port):
    """The established TCP connections process pid holds to 127.0.0.1:port (Linux /proc)."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                count += 1
    return count


class PtyPair:
    """Two linked ptys made by socat: the realm serves one end, a device opens the other."""

    def __init__(self, folder):
        socat = shutil.which("socat")
        if socat is None:
            pytest.fail("socat is missing: apt-get install socat")
        self.realm_end = os.path.join(str(folder), "tty-realm")
        self.device_end = os.path.join(str(folder), "tty-device")
        self.proc = subprocess.Popen(
            [socat, "PTY,link=%s,raw,echo=0" % self.realm_end,
             "PTY,link=%s,raw,echo=0" % self.device_end],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_path(self.realm_end)
        wait_for_path(self.device_end)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def wait_for_path(path, timeout=5):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError("%s did not appear" % path)
        time.sleep(0.02)


class VirtualBoard:
    """A board for flashing tests: the MicroPython unix port's REPL on a pty made by
    socat, its working folder playing the board's filesystem. mpremote drives it with
    `resume` (a soft reset would end the unix process)."""

    def __init__(self, folder, heap=HEAP):
        socat = shutil.which("socat")
        if socat is None:
            pytest.fail("socat is missing: apt-get install socat (make test installs it)")
        self.files = os.path.join(str(folder), "board-fs")
        os.makedirs(self.files)
        self.port = os.path.join(str(folder), "ttyV")
        self.proc = subprocess.Popen(
            [socat, "PTY,link=%s,raw,echo=0" % self.port,
             "EXEC:%s -X heapsize=%s,pty,stderr,setsid,ctty,raw,echo=0" % (micropython(), heap)],
            cwd=self.files, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_path(self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)

    def boot(self):
        """Run what was flashed, as the board does after a reset: its main.py."""
        self.stop()
        return BootedBoard(self.files)


@pytest.fixture
def board(tmp_path):
    """A virtual board for one test."""
    virtual = VirtualBoard(tmp_path)
    yield virtual
    virtual.stop()


class BootedBoard(SimDevice):
    """A virtual board running its main.py; output lines collected like a SimDevice's."""

    def __init__(self, files):
        SimDevice.__init__(self, os.path.join(files, "config.json"))
        self.files = files

    def command_line(self, extra):
        return [micropython(), "-X", "heapsize=" + self.heap, "main.py"], self.files


def make(*args, timeout=120):
    """`make ARGS` in the repository: (exit code, stdout + stderr)."""
    proc = subprocess.run(["make", "-s", "-C", ROOT] + list(args), capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr
