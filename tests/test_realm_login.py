"""The login decision and its rate limits, with the clock passed in and the scrypt check
replaced by a counting stand-in (issue 13 items 6 and 7: what an attacker can make the
realm spend)."""
import asyncio
import threading
import time
import uuid

import pytest

from shared import codec, crypto
from shared.errors import BAD_LOGIN, KEY_MISMATCH, RATE_LIMITED
from shared.realm import LoginRequest
from host import login, ratelimit, tokens
from host.login import LoginDecider
from host.ratelimit import LoginLimiter
from host.registry import Registry
from host.store import ONLINE_WRITE_S, LocalStore

T0 = 1_700_000_000.0


# -- the limiter alone --------------------------------------------------------------------
def fail(limiter, device, address, now):
    attempt = limiter.start(device, address, True, False, now)
    if attempt is not None:
        limiter.finish(attempt, True, now)
    return attempt


def refused(limiter, device, address, now):
    attempt = limiter.start(device, address, True, False, now)
    if attempt is None:
        return True
    limiter.finish(attempt, False, now)
    return False


def test_rate_limit_per_device():
    limiter = LoginLimiter()
    for t in range(4):
        fail(limiter, "dev", "10.0.0.%d" % t, t)
    assert not refused(limiter, "dev", "10.0.0.9", 4)
    fail(limiter, "dev", "10.0.0.4", 5)
    assert refused(limiter, "dev", "10.0.0.9", 6)
    assert refused(limiter, "dev", "10.0.0.9", 64.9)
    assert not refused(limiter, "dev", "10.0.0.9", 65.1)
    assert not refused(limiter, "other", "10.0.0.4", 6)


def test_rate_limit_counts_only_failures_within_a_minute():
    limiter = LoginLimiter()
    for t in (0, 20, 40, 59):
        fail(limiter, "dev", "a", t)
    fail(limiter, "dev", "a", 61)  # the one at 0 has left the window
    assert not refused(limiter, "dev", "a", 62)
    fail(limiter, "dev", "a", 62)
    assert refused(limiter, "dev", "a", 63)


def test_rate_limit_per_address():
    limiter = LoginLimiter()
    for i in range(19):
        fail(limiter, "dev%d" % i, "10.1.1.1", i)
    assert not refused(limiter, "fresh", "10.1.1.1", 19)
    fail(limiter, "dev19", "10.1.1.1", 19)
    assert refused(limiter, "fresh", "10.1.1.1", 20)
    assert not refused(limiter, "fresh", "10.1.1.2", 20)
    limiter.prune(200)
    assert not refused(limiter, "fresh", "10.1.1.1", 200)
    limiter.prune(400)
    assert not limiter.devices.attempts and not limiter.addresses.blocked


def test_attempts_count_when_they_start_and_successes_give_theirs_back():
    limiter = LoginLimiter()
    started = [limiter.start("dev", "a", True, False, 0) for _ in range(5)]
    assert all(started) and limiter.start("dev", "a", True, False, 0) is None  # five in flight
    for attempt in started:
        limiter.finish(attempt, False, 1)
    assert not refused(limiter, "dev", "a", 1)
    # Cheap attempts (open enrolment) are counted only when they fail.
    cheap = [limiter.start("dev", "a", False, False, 2) for _ in range(50)]
    assert all(cheap)
    for attempt in cheap[:4]:
        limiter.finish(attempt, True, 3)
    assert not refused(limiter, "dev", "a", 3)
    limiter.finish(cheap[4], True, 3)
    assert refused(limiter, "dev", "a", 3)


def test_a_success_that_was_not_counted_gives_nothing_back():
    """A cheap attempt (a realm-made token, open enrolment) that succeeds leaves the
    counted ones alone, even one that started at the same instant."""
    limiter = LoginLimiter()
    counted = [limiter.start("dev", "a", True, False, 0) for _ in range(4)]
    cheap = limiter.start("dev", "a", False, False, 0)
    counted.append(limiter.start("dev", "a", True, False, 0))
    assert all(counted) and cheap is not None
    limiter.finish(cheap, False, 0)
    assert limiter.start("dev", "a", True, False, 0) is None  # still five in flight


def test_every_rate_limit_table_is_bounded():
    limiter = LoginLimiter(device_limit=1, address_limit=1, max_keys=100)
    for i in range(1000):
        fail(limiter, "dev%d" % i, "10.0.%d.%d" % (i // 256, i % 256), 0)
    for counter in (limiter.devices, limiter.addresses):
        assert len(counter.attempts) <= 100 and len(counter.blocked) == 100


def test_the_budget_refills_at_its_rate():
    limiter = LoginLimiter(budget_per_s=10, budget_burst=30)
    passed = [limiter.start(None, "10.2.0.%d" % i, True, True, 0) for i in range(50)]
    assert sum(a is not None for a in passed) == 30
    assert limiter.start(None, "10.3.0.1", True, True, 0.5) is not None  # 5 refilled
    assert limiter.start(None, "10.3.0.1", True, False, 0.5) is not None  # not budgeted


# -- the decider ----------------------------------------------------------------------------
class Checks:
    """Stands in for the scrypt check: counts calls and how many ran at once."""

    def __init__(self, verify, seconds=0.01):
        self.verify = verify
        self.seconds = seconds
        self.calls = 0
        self.running = 0
        self.most = 0
        self.on_call = None  # run at each check, in its thread
        self._lock = threading.Lock()

    def __call__(self, token, token_hash):
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        if self.on_call is not None:
            self.on_call()
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return self.verify(token, token_hash)


@pytest.fixture
def checks(monkeypatch):
    stand_in = Checks(tokens.verify_token)
    monkeypatch.setattr(tokens, "verify_token", stand_in)
    return stand_in


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def realm(tmp_path):
    """A LoginDecider on the server's store, and `admin`: the registry as an admin
    command in another process sees it."""
    store = LocalStore(str(tmp_path))
    clock = Clock()
    decider = LoginDecider(store, LoginLimiter(), clock=clock, wall_clock=lambda: T0,
                           workers=8)
    decider.test_clock = clock
    decider.admin = Registry(str(tmp_path))
    yield decider
    decider.close()
    decider.admin.close()
    asyncio.run(store.stop())


def add(decider, bound=True, slow=True):
    """A registered device: (raw id, token, its public key), its key bound if `bound`;
    its token stored with the slow hash if `slow` (as a registry made before the fast
    form holds it), else in the fast form `device add` gives it."""
    device_id, token = decider.admin.add_device(T0)
    if slow:
        store_slow_hash(decider.admin, device_id, token)
    public = crypto.generate_keypair()[1]
    if bound:
        decider.admin.bind_key(device_id, public)
    return uuid.UUID(device_id).bytes, token, public


def store_slow_hash(registry, device_id, token):
    registry.db.execute("UPDATE devices SET token_hash = ? WHERE id = ?",
                        (tokens.slow_hash_token(token), device_id))


def stored_hash(decider, device_id):
    return decider.admin.device(str(uuid.UUID(bytes=device_id))).token_hash


def request(device_id, token, public):
    return LoginRequest(device_id, codec.LOGIN_TOKEN, token.encode(), public)


def decide_all(decider, requests):
    async def body():
        return await asyncio.gather(*(decider.decide(r, a) for r, a in requests))
    return [d.code for d in asyncio.run(body())]


def test_simultaneous_wrong_tokens_cost_no_more_checks_than_the_limit(realm, checks):
    device_id, token, public = add(realm)
    codes = decide_all(realm, [(request(device_id, "w" * 43, public), "10.9.9.9")] * 250)
    assert checks.calls <= ratelimit.DEVICE_LIMIT, checks.calls
    assert checks.most == login.CHECKS_PER_DEVICE
    assert codes.count(BAD_LOGIN) == checks.calls and set(codes) == {BAD_LOGIN, RATE_LIMITED}
    # The device is blocked, its right token included, as section 7 says.
    assert decide_all(realm, [(request(device_id, token, public), "10.8.8.8")]) == [RATE_LIMITED]


def test_slow_checks_in_flight_per_address_are_capped(realm, checks):
    devices = [add(realm, bound=False) for _ in range(8)]
    codes = decide_all(realm, [(request(d, "w" * 43, p), "10.9.9.9") for d, _, p in devices])
    assert codes == [BAD_LOGIN] * 8
    assert checks.most == login.CHECKS_PER_ADDRESS


def test_a_device_proving_its_bound_key_is_not_refused_for_its_address(realm, checks):
    for _ in range(ratelimit.ADDRESS_LIMIT):  # others' failures from a shared address
        unknown = request(uuid.uuid4().bytes, "w" * 43, crypto.generate_keypair()[1])
        assert decide_all(realm, [(unknown, "nat")]) == [BAD_LOGIN]
    bound_id, bound_token, bound_public = add(realm)
    fresh_id, fresh_token, fresh_public = add(realm, bound=False)
    assert decide_all(realm, [(request(bound_id, bound_token, bound_public), "nat")]) == [None]
    # A device proving no bound key is still under the address limit.
    assert decide_all(realm, [(request(fresh_id, fresh_token, fresh_public), "nat")]) == \
        [RATE_LIMITED]


def test_unknown_ids_cost_no_memory_per_id(realm, checks):
    realm.limiter = LoginLimiter(max_keys=100)
    for i in range(2000):
        realm.test_clock.now += 0.1  # within the realm-wide budget
        unknown = request(uuid.uuid4().bytes, "w" * 43, bytes(32))
        assert decide_all(realm, [(unknown, "10.%d.%d.1" % (i // 256, i % 256))]) == [BAD_LOGIN]
    assert not realm.limiter.devices.attempts and not realm.limiter.devices.blocked
    assert len(realm.limiter.addresses.attempts) == 100
    assert checks.calls == 0


def test_a_realm_wide_budget_bounds_unproven_token_logins(realm, checks):
    bound_id, bound_token, bound_public = add(realm)
    codes = decide_all(realm, [(request(uuid.uuid4().bytes, "w" * 43, bytes(32)),
                                "10.5.%d.%d" % (i // 256, i % 256)) for i in range(500)])
    assert codes.count(BAD_LOGIN) == ratelimit.BUDGET_BURST
    assert codes.count(RATE_LIMITED) == 500 - ratelimit.BUDGET_BURST
    # A device proving its bound key does not draw on the budget.
    assert decide_all(realm, [(request(bound_id, bound_token, bound_public), "10.6.0.1")]) == \
        [None]
    realm.test_clock.now += 1
    codes = decide_all(realm, [(request(uuid.uuid4().bytes, "w" * 43, bytes(32)),
                                "10.7.0.%d" % i) for i in range(100)])
    assert codes.count(BAD_LOGIN) == int(ratelimit.BUDGET_PER_S)


def test_a_fleet_may_enrol_at_once_from_one_address(realm, checks):
    realm.open_enrolment = True
    codes = decide_all(realm, [(LoginRequest(uuid.uuid4().bytes, codec.LOGIN_NONE, b"",
                                             crypto.generate_keypair()[1]), "10.4.0.1")
                               for _ in range(64)])
    assert codes == [None] * 64


# -- the token's stored form ----------------------------------------------------------------
def test_wrong_fast_tokens_are_counted_one_by_one_without_the_pool(realm, checks):
    device_id, token, public = add(realm, slow=False)
    codes = decide_all(realm, [(request(device_id, "w" * 43, public), "10.9.9.9")] * 250)
    assert codes.count(BAD_LOGIN) == checks.calls == ratelimit.DEVICE_LIMIT
    assert codes.count(RATE_LIMITED) == 250 - ratelimit.DEVICE_LIMIT
    assert checks.most == 1  # inline, one at a time
    assert decide_all(realm, [(request(device_id, token, public), "10.8.8.8")]) == [RATE_LIMITED]


def test_a_fleet_with_fast_tokens_logs_in_at_once_from_one_address(realm, checks):
    """Neither the address limit nor the realm-wide budget (both there for the slow
    check) holds back a fleet whose tokens the realm made, first logins included."""
    devices = [add(realm, bound=i % 2 == 0, slow=False) for i in range(200)]
    codes = decide_all(realm, [(request(d, t, p), "10.4.0.1") for d, t, p in devices])
    assert codes == [None] * 200


def test_an_old_registry_logs_in_and_migrates_to_the_fast_form(realm, checks, tmp_path):
    device_id, token, public = add(realm, bound=False)
    assert stored_hash(realm, device_id).startswith("scrypt$")
    assert decide_all(realm, [(request(device_id, token, public), "10.1.0.1")]) == [None]
    assert checks.calls == 1
    assert stored_hash(realm, device_id) == tokens.hash_token(token)
    assert tokens.verify_token(token, stored_hash(realm, device_id))
    # A restarted realm (no memory of the check) checks the fast form on the loop.
    restarted = LoginDecider(realm.store, LoginLimiter(), clock=realm.test_clock)
    try:
        assert decide_all(restarted, [(request(device_id, token, public), "10.1.0.1")]) == \
            [None]
        assert decide_all(restarted, [(request(device_id, "w" * 43, public), "10.1.0.1")]) == \
            [BAD_LOGIN]
    finally:
        restarted.close()
    assert checks.most == 1


def test_a_chosen_token_keeps_its_slow_hash(realm, checks):
    device_id, _, public = add(realm)
    chosen = "correct horse battery staple"
    store_slow_hash(realm.admin, str(uuid.UUID(bytes=device_id)), chosen)
    before = stored_hash(realm, device_id)
    for _ in range(2):
        assert decide_all(realm, [(request(device_id, chosen, public), "10.1.0.2")]) == [None]
    assert stored_hash(realm, device_id) == before
    assert checks.calls == 1  # the second login: the in-memory mark of the first check


def test_a_token_changed_during_its_slow_check_is_not_overwritten(realm, checks):
    device_id, token, public = add(realm)
    text_id = str(uuid.UUID(bytes=device_id))

    def admin_gives_a_new_token():  # `realm device token`, another process, meanwhile
        admin = Registry(realm.admin.path.rsplit("/", 1)[0])
        admin.new_token(text_id)
        admin.close()
    checks.on_call = admin_gives_a_new_token
    assert decide_all(realm, [(request(device_id, token, public), "10.1.0.3")]) == [None]
    assert not tokens.verify_token(token, stored_hash(realm, device_id))


# -- registry round trips per login -----------------------------------------------------------
def test_a_reconnect_with_the_record_read_at_its_hello_costs_no_registry_round_trip(
        realm, checks, monkeypatch):
    device_id, token, public = add(realm, slow=False)
    record = realm.store.device_now(str(uuid.UUID(bytes=device_id)))
    trips = []
    for name in ("device", "bind_key", "bound_key"):
        call = getattr(realm.store, name)
        monkeypatch.setattr(realm.store, name,
                            lambda *a, call=call, name=name: trips.append(name) or call(*a))

    async def body(device, token, public):
        return (await realm.decide(request(device_id, token, public), "10.1.0.1",
                                   device)).code
    assert asyncio.run(body(record, token, public)) is None
    assert trips == []
    # The record decides as the registry would: a wrong token, another key.
    assert asyncio.run(body(record, "w" * 43, public)) == BAD_LOGIN
    assert asyncio.run(body(record, token, crypto.generate_keypair()[1])) == KEY_MISMATCH
    assert trips == []
    # Without it (a store that keeps no records), the registry is asked.
    assert asyncio.run(body(None, token, public)) is None
    assert trips == ["device"]


def test_online_flags_made_meanwhile_are_written_in_one_transaction(tmp_path, monkeypatch):
    async def body():
        store = LocalStore(str(tmp_path))
        await store.start()
        admin = Registry(str(tmp_path))
        ids = [admin.add_device(T0)[0] for _ in range(50)]
        writes = []
        set_online = store._db.set_online
        monkeypatch.setattr(store._db, "set_online",
                            lambda changes: writes.append(len(changes)) or set_online(changes))
        for device in ids:
            store.set_online(device, True, T0)
        for device in ids[:10]:
            store.set_online(device, False, T0 + 1)  # after, in call order
        assert writes == []
        await asyncio.sleep(ONLINE_WRITE_S)
        await store.queue_totals()  # a call after them: they are written by then
        assert writes == [60]
        online = {d.id: d.online for d in admin.list_devices()}
        assert [online[d] for d in ids] == [False] * 10 + [True] * 40
        store.set_online(ids[0], False, T0 + 2)
        await store.stop()  # what is pending is written first (its last_seen)
        assert writes == [60, 1] and admin.device(ids[0]).last_seen == T0 + 2
        admin.close()
    asyncio.run(body())


def test_only_devices_that_may_have_stored_packets_read_the_queue(tmp_path, monkeypatch):
    # A fleet coming back after a restart: each login asks for its stored packets, and
    # the registry is read only for the devices that may have some.
    async def body():
        admin = Registry(str(tmp_path))
        target, other, kept = (admin.add_device(T0)[0] for _ in range(3))
        admin.enqueue(kept, bytes(16), 1, b"stored by an earlier run", T0)
        store = LocalStore(str(tmp_path))
        await store.start()
        reads = []
        stored = store._db.stored
        monkeypatch.setattr(store._db, "stored",
                            lambda device, now: reads.append(device) or stored(device, now))
        assert await store.stored(other, T0) == [] and reads == []
        assert [q.inner for q in await store.stored(kept, T0)] == [b"stored by an earlier run"]
        queued = store.enqueue(target, bytes(16), 7, b"for you", T0)
        got = await store.stored(target, T0)  # asked at once: read after the write
        assert await queued == codec.QUEUED and [q.inner for q in got] == [b"for you"]
        store.forget_stored(target, got[-1].seq)
        assert await store.stored(target, T0) == []  # read: none left
        assert await store.stored(target, T0) == []  # known now: no read
        assert reads == [kept, target, target]
        admin.close()
        await store.stop()
    asyncio.run(body())
