"""Helpers for the realm tests: the `realm` command, and a raw device that drives the
core's DeviceConnection over a blocking socket (for the attack cases). The `realm serve`
process is tools/harness.py's, shared with bench/ and tools/."""
import asyncio
import http.client
import os
import socket
import sqlite3
import subprocess
import time
import uuid

from prometheus_client.parser import text_string_to_metric_families

from shared import codec, crypto
from shared.device import DeviceConnection
from shared.events import Closed, Welcomed
from shared.framing import StreamFramer
from tools.harness import RealmProcess, free_port, realm_command  # noqa: F401 (for the tests)


def check_registry(data_dir, running=False):
    """The registry is intact; once the realm has stopped (not `running`), no device is
    left marked online."""
    db = sqlite3.connect(os.path.join(data_dir, "realm.db"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not running:
            assert db.execute("SELECT count(*) FROM devices WHERE online != 0").fetchone()[0] == 0
    finally:
        db.close()


def checked_realm(folder, *args):
    """A module fixture's body: a realm serving `folder`/data, stopped at the end, its log
    free of tracebacks and its registry intact."""
    process = RealmProcess(folder / "data", *args)
    yield process
    assert process.stop() == 0
    process.assert_clean_log()
    check_registry(process.data_dir)


def run_cli(*args, env=None, timeout=30, input_text=None):
    """`realm ARGS...` as a subprocess: (exit code, stdout, stderr)."""
    p = subprocess.run(realm_command() + [str(a) for a in args], capture_output=True,
                       text=True, timeout=timeout, env=env, input=input_text)
    return p.returncode, p.stdout, p.stderr


def scrape(http_port):
    """The realm's /metrics, parsed: {(sample name, sorted label pairs): value}."""
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def metric(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def hello_bytes():
    """A Hello from a new device (framed for TCP), as the first bytes of a connection."""
    private, public = crypto.generate_keypair()
    conn = DeviceConnection(uuid.uuid4().bytes, private, public, "t" * 20, StreamFramer(), 0)
    return conn.data_to_send()


def read_frames(sock, timeout=5):
    """Every packet the realm sends until it closes the socket (clear packets only)."""
    sock.settimeout(timeout)
    framer = StreamFramer(65535)
    packets = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        packets.extend(framer.feed(data))
    return [codec.decode(p) for p in packets]


class RawDevice:
    """A device on a blocking socket, driving the core's DeviceConnection by hand, so a
    test can also send bytes the core would never send."""

    def __init__(self, port, device_id, token, private=None, realm_public=None, dh2=None,
                 rcvbuf=None, source=None):
        self.device_id = device_id
        self.private = private or crypto.generate_keypair()[0]
        self.public = crypto.public_key(self.private)
        self.sock = socket.socket()
        if rcvbuf:  # a small window, for a reader that lags
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:  # another loopback address than 127.0.0.1, as another machine would be
            self.sock.bind((source, 0))
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.conn = DeviceConnection(device_id, self.private, self.public, token,
                                     StreamFramer(), self.now(), realm_public=realm_public,
                                     dh2=dh2)
        self.sent = []  # every chunk written, in order
        self.backlog = []  # events read but not yet handed out by pump()
        self.flush()

    @staticmethod
    def now():
        return int(time.monotonic() * 1000)

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sent.append(data)
            self.sock.sendall(data)
        return data

    def send_raw(self, data):
        self.sock.sendall(data)

    def pump(self, until, timeout=5, tick=True):
        """Read until `until(event)` holds for an event (returned) or the socket ends (the
        Closed event, or None). With `tick`, timers run: heartbeats are sent."""
        deadline = time.monotonic() + timeout
        while self.backlog:  # events that came with an earlier awaited one
            event = self.backlog.pop(0)
            if until(event) or isinstance(event, Closed):
                return event
        while time.monotonic() < deadline:
            self.sock.settimeout(0.05)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                data = None
            except ConnectionResetError:
                data = b""
            events = self.conn.tick(self.now()) if tick else []
            if data:
                events += self.conn.receive_data(data, self.now())
            self.flush()
            for i, event in enumerate(events):
                if until(event) or isinstance(event, Closed):
                    self.backlog.extend(events[i + 1:])
                    return event
            if data == b"":
                return None
        raise AssertionError("nothing awaited came in %s s" % timeout)

    def handshake(self):
        event = self.pump(lambda e: isinstance(e, Welcomed))
        if not isinstance(event, Welcomed):
            raise event.error if event is not None else AssertionError("realm closed")
        return event

    def expect_closed(self, timeout=5, tick=True):
        """The error the realm closed the connection with (a ProtocolError, remote=True)."""
        event = self.pump(lambda e: False, timeout, tick)
        assert isinstance(event, Closed), event
        return event.error

    def close(self):
        self.sock.close()


def run(coro, timeout=30):
    """Run an asyncio test body with an overall limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))

