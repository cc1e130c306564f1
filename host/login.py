"""Deciding a DeviceLogin (PROTOCOL.md section 7), apart from any socket.

How a token is checked depends on its stored form (`host/tokens.py`). A token the realm
made is stored as SHA-256 and checked on the loop in a microsecond, so a whole fleet
logs in again within seconds of a restart. A slow (scrypt) hash, for a token a person
chose or one stored before the fast form existed, is checked in a small thread pool so
the event loop keeps serving everyone else; one that passed is remembered as an HMAC
under a key that lives only in this process, and a realm-made token that passed it is
stored again in the fast form (the registry migrates itself as devices log in).
"""
import asyncio
import hmac
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

from shared import codec
from shared.errors import BAD_LOGIN, KEY_MISMATCH, RATE_LIMITED
from shared.protocol import MAX_TOKEN_BYTES, MIN_TOKEN_BYTES
from host import logs, tokens
from host.registry import id_text

log = logs.get()


class Decision:
    """`code` None: accepted. `enrolled`: registered now by open enrolment."""

    def __init__(self, code=None, message="", enrolled=False, bound_now=False):
        self.code = code
        self.message = message
        self.enrolled = enrolled
        self.bound_now = bound_now


class _Slots:
    """At most `size` holders per key at once; the others wait their turn. Waiters are
    few: each one is an attempt the rate limit has counted already."""

    def __init__(self, size):
        self.size = size
        self._keys = {}  # key -> [semaphore, holders and waiters]

    async def acquire(self, key):
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = [asyncio.Semaphore(self.size), 0]
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._leave(key, entry)
            raise

    def release(self, key):
        entry = self._keys[key]
        entry[0].release()
        self._leave(key, entry)

    def _leave(self, key, entry):
        entry[1] -= 1
        if not entry[1]:
            del self._keys[key]


# Slow token checks in flight at once, per device and per source address: one address
# cannot fill the pool's queue ahead of everyone else.
CHECKS_PER_DEVICE = 1
CHECKS_PER_ADDRESS = 2


class LoginDecider:
    """`store`: the registry as the server uses it (`host/store.py`)."""

    def __init__(self, store, limiter, open_enrolment=False, workers=2,
                 clock=time.monotonic, wall_clock=time.time, on_token_check=None):
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock
        self.limiter = limiter
        self.open_enrolment = open_enrolment
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="token-check")
        self._cache_key = os.urandom(32)
        self._verified = {}  # device id text -> (token_hash, HMAC of the token that passed)
        self._device_checks = _Slots(CHECKS_PER_DEVICE)
        self._address_checks = _Slots(CHECKS_PER_ADDRESS)
        self._on_token_check = on_token_check  # called with the seconds each token check took

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def decide(self, request, address, device=None):
        """The answer to a LoginRequest event from `address` (text: who is on the link).
        `device`: its registry record as read at the Hello, if the caller has it (a
        reconnect then costs no registry round trip); None: read now."""
        if device is None:
            device_id = id_text(request.device_id)
            device = await self.store.device(device_id)
        else:
            device_id = device.id
        # The handshake proved the device holds request.device_public: if that is the
        # key bound to it, the device is who it says, whatever its address did before.
        proven = device is not None and device.bound_key is not None and \
            bytes(device.bound_key) == bytes(request.device_public)
        token = request.method == codec.LOGIN_TOKEN
        # A token stored in the fast form is checked before anything is awaited, so even
        # a burst of wrong ones is counted one by one as each fails: only the slow checks
        # (and unknown ids) are counted as they start and draw on the realm-wide budget.
        slow = token and not (device is not None and device.token_hash is not None and
                              not tokens.is_slow(device.token_hash))
        attempt = self.limiter.start(device_id if device is not None else None,
                                     None if proven else address, slow, slow and not proven,
                                     self.clock())
        if attempt is None:
            return Decision(RATE_LIMITED, "too many logins; try again later")
        decision = None
        try:
            if token:
                decision = await self._token_login(device, bytes(request.details), address)
            elif request.method == codec.LOGIN_NONE and self.open_enrolment:
                decision = await self._open_login(device_id, device, request.device_public)
            else:
                decision = Decision(BAD_LOGIN, "login method %d not accepted" % request.method)
            if decision.code is None and not decision.enrolled:
                decision = await self._bind(device_id, device, request.device_public, decision)
        finally:
            self.limiter.finish(attempt, decision is not None and decision.code == BAD_LOGIN,
                                self.clock())
        return decision

    async def _token_login(self, device, token, address):
        if device is None or device.token_hash is None:
            return Decision(BAD_LOGIN, "unknown device or wrong token")
        if not (MIN_TOKEN_BYTES <= len(token) <= MAX_TOKEN_BYTES):
            return Decision(BAD_LOGIN, "token of %d bytes" % len(token))
        started = time.perf_counter()
        if tokens.is_slow(device.token_hash):
            ok = await self._slow_check(device, token, address)
        else:
            ok = tokens.verify_token(token, device.token_hash)  # one SHA-256: on the loop
        if self._on_token_check is not None:
            self._on_token_check(time.perf_counter() - started)
        if not ok:
            return Decision(BAD_LOGIN, "unknown device or wrong token")
        return Decision()

    async def _slow_check(self, device, token, address):
        mark = hmac.new(self._cache_key, token, hashlib.sha256).digest()
        if self._cached(device, mark):
            return True
        await self._device_checks.acquire(device.id)
        try:
            await self._address_checks.acquire(address)
            try:
                if self._cached(device, mark):  # the check it waited for passed this token
                    return True
                loop = asyncio.get_running_loop()
                ok = await loop.run_in_executor(self._pool, tokens.verify_token, token,
                                                device.token_hash)
            finally:
                self._address_checks.release(address)
        finally:
            self._device_checks.release(device.id)
        if ok:
            self._verified[device.id] = (device.token_hash, mark)
            if tokens.needs_rehash(token, device.token_hash):
                await self._rehash(device, token)
        return ok

    async def _rehash(self, device, token):
        """Store a realm-made token in the fast form: its next check is a microsecond,
        in this process and after a restart."""
        try:
            await self.store.replace_token_hash(device.id, device.token_hash,
                                                tokens.hash_token(token))
        except Exception as e:  # it stays in the slow form; the login goes on
            log.warning("cannot store the token of %s in its fast form: %s", device.id, e)

    def _cached(self, device, mark):
        cached = self._verified.get(device.id)
        return cached is not None and cached[0] == device.token_hash and \
            hmac.compare_digest(cached[1], mark)

    async def _open_login(self, device_id, device, device_public):
        if device is None:
            if await self.store.enrol_device(device_id, device_public, self.wall_clock()):
                return Decision(enrolled=True)
            device = await self.store.device(device_id)  # enrolled meanwhile by another login
        if device is None or device.token_hash is not None:
            # A device given a token must use it: its key may not be bound yet.
            return Decision(BAD_LOGIN, "this device logs in with a token")
        return Decision()

    async def _bind(self, device_id, device, device_public, decision):
        before = device.bound_key if device is not None else self.store.bound_key(device_id)
        before = bytes(before) if before is not None else None
        bound = before if before is not None else await self.store.bind_key(device_id,
                                                                            device_public)
        if bound is None:
            return Decision(BAD_LOGIN, "device removed")  # between the check and now
        if bound != bytes(device_public):
            return Decision(KEY_MISMATCH, "device key differs from the bound key")
        decision.bound_now = before is None
        return decision

