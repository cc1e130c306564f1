"""Deciding a DeviceLogin (PROTOCOL.md section 7), apart from any socket.

The token check is slow on purpose (scrypt), so it runs in a small thread pool and the
event loop keeps serving everyone else. A token that has passed once is remembered as
an HMAC under a key that lives only in this process, so a device that reconnects costs
a microsecond, not 80 ms; the database still holds only the slow hash.
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
from host import tokens
from host.registry import id_text


class Decision:
    """`code` None: accepted. `enrolled`: registered now by open enrolment."""

    def __init__(self, code=None, message="", enrolled=False, bound_now=False):
        self.code = code
        self.message = message
        self.enrolled = enrolled
        self.bound_now = bound_now


class LoginDecider:
    """`store`: the registry as the server uses it (`host/store.py`)."""

    def __init__(self, store, limiter, open_enrolment=False, workers=2,
                 clock=time.monotonic, wall_clock=time.time):
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock
        self.limiter = limiter
        self.open_enrolment = open_enrolment
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="token-check")
        self._cache_key = os.urandom(32)
        self._verified = {}  # device id text -> (token_hash, HMAC of the token that passed)

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def decide(self, request, address):
        """The answer to a LoginRequest event from `address` (text: who is on the link)."""
        device_id = id_text(request.device_id)
        if self.limiter.is_blocked(device_id, address, self.clock()):
            return Decision(RATE_LIMITED, "too many refused logins; try again later")
        if request.method == codec.LOGIN_TOKEN:
            decision = await self._token_login(device_id, bytes(request.details))
        elif request.method == codec.LOGIN_NONE and self.open_enrolment:
            decision = await self._open_login(device_id, request.device_public)
        else:
            decision = Decision(BAD_LOGIN, "login method %d not accepted" % request.method)
        if decision.code == BAD_LOGIN:
            self.limiter.failure(device_id, address, self.clock())
            return decision
        if decision.code is None and not decision.enrolled:
            return await self._bind(device_id, request.device_public, decision)
        return decision

    async def _token_login(self, device_id, token):
        device = await self.store.device(device_id)
        if device is None or device.token_hash is None:
            return Decision(BAD_LOGIN, "unknown device or wrong token")
        if not (MIN_TOKEN_BYTES <= len(token) <= MAX_TOKEN_BYTES):
            return Decision(BAD_LOGIN, "token of %d bytes" % len(token))
        mark = hmac.new(self._cache_key, token, hashlib.sha256).digest()
        cached = self._verified.get(device_id)
        if cached is not None and cached[0] == device.token_hash and hmac.compare_digest(
                cached[1], mark):
            return Decision()
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self._pool, tokens.verify_token, token, device.token_hash)
        if not ok:
            return Decision(BAD_LOGIN, "unknown device or wrong token")
        self._verified[device_id] = (device.token_hash, mark)
        return Decision()

    async def _open_login(self, device_id, device_public):
        device = await self.store.device(device_id)
        if device is None:
            if await self.store.enrol_device(device_id, device_public, self.wall_clock()):
                return Decision(enrolled=True)
            device = await self.store.device(device_id)  # enrolled meanwhile by another login
        if device is None or device.token_hash is not None:
            # A device given a token must use it: its key may not be bound yet.
            return Decision(BAD_LOGIN, "this device logs in with a token")
        return Decision()

    async def _bind(self, device_id, device_public, decision):
        before = self.store.bound_key(device_id)
        bound = before if before is not None else await self.store.bind_key(device_id,
                                                                            device_public)
        if bound is None:
            return Decision(BAD_LOGIN, "device removed")  # between the check and now
        if bound != bytes(device_public):
            return Decision(KEY_MISMATCH, "device key differs from the bound key")
        decision.bound_now = before is None
        return decision

