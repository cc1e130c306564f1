"""The firmware runtime under CPython, with a fake board, a fake clock and an in-memory
realm (the core's RealmConnection): its listeners, its sessions, and its reconnect
policy's waits, in milliseconds of a clock the test owns. The simulated-device tests
(tests/test_firmware_e2e.py) run the same code under MicroPython on real sockets."""
import asyncio

from shared import crypto
from shared.errors import BAD_LOGIN
from shared.events import Message
from shared.framing import StreamFramer
from shared.realm import LoginRequest, RealmConnection
from firmware.api import Device
from firmware.config import validate
from firmware.runtime import Runtime
from firmware.store import Store
from tests.realm_helpers import run

DEVICE_ID = "12345678-1234-5678-9abc-def012345678"
REALM_KEYS = crypto.generate_keypair()


class FakeBoard:
    NAME = "fake"

    def __init__(self):
        self.shown = []

    def rssi(self):
        return None

    async def join_network(self, wifi, log):
        pass

    def show_status(self, status):
        self.shown.append(status)


class FakeRealm:
    """One realm end per TCP connection the runtime opens; `accept` decides the logins."""

    def __init__(self, accept=True):
        self.accept = accept
        self.links = []
        self.reachable = True

    def connect(self):
        if not self.reachable:
            raise OSError("connection refused")
        link = FakeLink(self)
        self.links.append(link)
        return link


class FakeLink:
    """The stream the runtime reads and writes; the realm's RealmConnection behind it."""

    def __init__(self, realm):
        self.realm = realm
        self.conn = RealmConnection(REALM_KEYS[0], REALM_KEYS[1], StreamFramer(), 0,
                                    lambda device_id: None)
        self.inbound = bytearray()
        self.eof = False
        self.ready = asyncio.Event()

    def write(self, data):
        for event in self.conn.receive_data(bytes(data), 0):
            if isinstance(event, LoginRequest):
                if self.realm.accept:
                    self.conn.accept_login("fake", 30, 4096)
                else:
                    self.conn.refuse_login(BAD_LOGIN, "no")
        self.to_device(self.conn.data_to_send())
        if self.conn.closed:
            self.hang_up()

    def to_device(self, data):
        self.inbound += data
        self.ready.set()

    def hang_up(self):
        self.eof = True
        self.ready.set()

    async def drain(self):
        pass

    async def readinto(self, buf):
        while not self.inbound and not self.eof:
            self.ready.clear()
            await self.ready.wait()
        n = min(len(buf), len(self.inbound))
        buf[:n] = self.inbound[:n]
        del self.inbound[:n]
        return n

    def close(self):
        self.eof = True

    async def wait_closed(self):
        pass


class FakeLoop:
    """Virtual milliseconds: a sleep or a timed-out wait moves the clock, at once."""

    def __init__(self, realm):
        self.realm = realm
        self.ms = 0
        self.sleeps = []

    def now(self):
        return self.ms

    async def sleep_ms(self, ms):
        self.sleeps.append(ms)
        self.ms += ms
        await asyncio.sleep(0)

    def timer(self, ms, call):
        """Rings after 10 real ms, as if ms had passed."""
        async def ring():
            await asyncio.sleep(0.01)
            self.ms += ms
            call()
        return asyncio.ensure_future(ring())

    def collect_every(self, allocated):
        pass

    async def open_tcp(self, host, port, timeout_ms):
        return self.realm.connect()

    def open_stream(self, port):
        raise AssertionError("no serial link in these tests")

    def free_heap(self):
        return 50000


class Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def event(self, event):
        self.log.append((self.name, type(event).__name__))

    def status_changed(self, status, detail):
        self.log.append((self.name, status))


def make_runtime(tmp_path, realm, **reconnect):
    config = validate({"device_id": DEVICE_ID, "token": "t" * 24, "name": "unit",
                       "realm": {"host": "realm.test"},
                       "reconnect": reconnect or {"min_ms": 100, "max_ms": 800,
                                                  "auth_ms": 5000}}, has_wifi=False)
    store = Store(str(tmp_path / "state")).load()
    return Runtime(config, store, FakeBoard(), log=lambda line: None, loop=FakeLoop(realm))


async def until(check, timeout=5):
    for _ in range(int(timeout / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached in %s s" % timeout)


def test_listeners_hear_services_first_then_the_app_each_in_order(tmp_path):
    runtime = make_runtime(tmp_path, FakeRealm())
    log = []
    runtime.add_listener(Recorder("app", log))
    runtime.add_listener(Recorder("update", log), service=True)
    runtime.add_listener(Recorder("app2", log))
    runtime.add_listener(Recorder("report", log), service=True)
    runtime._set_status("offline", "test")
    runtime._app_event(Message(b"p" * 16, b"hi"))
    assert log == [("update", "offline"), ("report", "offline"), ("app", "offline"),
                   ("app2", "offline"), ("update", "Message"), ("report", "Message"),
                   ("app", "Message"), ("app2", "Message")]


def test_an_unreachable_realm_is_retried_with_the_backoff(tmp_path):
    realm = FakeRealm()
    realm.reachable = False
    runtime = make_runtime(tmp_path, realm, min_ms=100, max_ms=400, auth_ms=5000)
    log = []
    runtime.add_listener(Recorder("app", log))

    async def body():
        task = asyncio.ensure_future(runtime.run())
        await until(lambda: len(runtime.loop.sleeps) >= 5)
        task.cancel()
    run(body())
    for wait, full in zip(runtime.loop.sleeps, (100, 200, 400, 400, 400)):
        assert full // 2 <= wait <= full
    assert log[:4] == [("app", "connecting"), ("app", "offline")] * 2
    assert runtime.board.shown[:2] == ["connecting", "offline"]


def test_a_session_then_a_lost_link_goes_offline_and_connects_again(tmp_path):
    realm = FakeRealm()
    runtime = make_runtime(tmp_path, realm)
    device = Device(runtime)
    statuses = []
    device.on_status(lambda status, detail: statuses.append((status, detail)))

    async def body():
        realm.reachable = False
        task = asyncio.ensure_future(runtime.run())
        await until(lambda: len(runtime.loop.sleeps) >= 2)  # backing off: 100, then 200 ms
        realm.reachable = True
        await until(lambda: device.online)
        assert runtime.store.realm_public == REALM_KEYS[1]  # pinned at the Welcome
        realm.links[0].hang_up()
        await until(lambda: len(realm.links) == 2 and device.online)
        task.cancel()
    run(body())
    offline = [detail for status, detail in statuses if status == "offline"]
    lost = [i for i, detail in enumerate(offline)
            if detail.startswith("connection closed by the realm; retrying in")]
    assert lost and lost[0] >= 2  # after two refused TCP connections
    assert runtime.loop.sleeps[lost[0]] <= 100  # the session started the backoff over
    assert device.stats["connects"] == 2 and device.stats["pinned_path"] is False


def test_a_refusal_waits_the_long_delay(tmp_path):
    realm = FakeRealm(accept=False)
    runtime = make_runtime(tmp_path, realm, min_ms=100, max_ms=800, auth_ms=5000)
    statuses = []
    Device(runtime).on_status(lambda status, detail: statuses.append((status, detail)))

    async def body():
        task = asyncio.ensure_future(runtime.run())
        await until(lambda: runtime.loop.sleeps)
        task.cancel()
    run(body())
    assert 2500 <= runtime.loop.sleeps[0] <= 5000
    status, detail = statuses[1]
    assert status == "error" and detail.startswith("the realm said BAD_LOGIN: no; retrying in")
