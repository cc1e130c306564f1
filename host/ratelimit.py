"""The login rate limit of PROTOCOL.md section 7, and what bounds an attacker's share.

Five refused logins for one device id, or twenty from one source address, within 60 s:
every login of that device or from that address is refused (RATE_LIMITED) for the next
60 s, correct tokens included. Attempts refused for the rate limit itself are not counted
again, so the block ends 60 s after the failure that started it.

A token login is counted when it starts, not when it fails: a burst of simultaneous
logins cannot all pass the slow check before the first of them fails. One that succeeds
gives its count back. (Open enrolment costs no check: it is counted only if it fails.)
Who is counted:
- the device, only if it is registered: an unknown id costs no memory of its own;
- the source address, only for attempts that prove no bound key (a device that proved in
  the handshake that it holds its already-bound key is not refused for what other devices
  did from its address, a NAT for instance);
- a realm-wide budget (a token bucket) for token logins that prove no bound key, so that
  many addresses together cannot buy an unbounded number of checks.

`now` is monotonic seconds passed in by the caller. Memory stays bounded: entries with
nothing left in their window are dropped by `prune`, and past `max_keys` tracked keys per
table the ones seen least recently are forgotten first.
"""
from collections import OrderedDict, deque

DEVICE_LIMIT = 5
ADDRESS_LIMIT = 20
WINDOW_S = 60.0
BLOCK_S = 60.0
MAX_KEYS = 16384        # per table: ~0.3 KiB each, so a few MiB at most
BUDGET_PER_S = 20.0     # unproven token logins, realm-wide: about what two scrypt workers do
BUDGET_BURST = 60


class _Counter:
    """Attempts per key within a sliding window, and the blocks that follow."""

    def __init__(self, limit, window_s, block_s, max_keys):
        self.limit = limit
        self.window_s = window_s
        self.block_s = block_s
        self.max_keys = max_keys
        self.attempts = OrderedDict()   # key -> deque of start times, least recent key first
        self.blocked = OrderedDict()    # key -> time the block ends, oldest block first

    def refused(self, key, now):
        """True if `key` may not start another attempt now (blocked, or at its limit)."""
        until = self.blocked.get(key)
        if until is not None:
            if now < until:
                return True
            del self.blocked[key]
        times = self.attempts.get(key)
        return times is not None and len(self._trim(times, now)) >= self.limit

    def start(self, key, now):
        times = self.attempts.pop(key, None) or deque()
        self.attempts[key] = times  # most recently seen last
        times.append(now)
        while len(self.attempts) > self.max_keys:
            self.attempts.popitem(last=False)

    def succeeded(self, key, started):
        times = self.attempts.get(key)
        if times is not None and started in times:
            times.remove(started)

    def failed(self, key, now):
        times = self.attempts.get(key)
        if times is not None and len(self._trim(times, now)) >= self.limit:
            self.blocked.pop(key, None)
            self.blocked[key] = now + self.block_s
            times.clear()
            while len(self.blocked) > self.max_keys:
                self.blocked.popitem(last=False)

    def _trim(self, times, now):
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def prune(self, now):
        for key in [k for k, t in self.attempts.items() if not self._trim(t, now)]:
            del self.attempts[key]
        for key in [k for k, until in self.blocked.items() if until <= now]:
            del self.blocked[key]


class _Budget:
    """A token bucket: `rate` per second, at most `burst` saved up."""

    def __init__(self, rate, burst):
        self.rate = rate
        self.burst = burst
        self.level = float(burst)
        self.at = None

    def take(self, now):
        if self.at is not None:
            self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level < 1:
            return False
        self.level -= 1
        return True


class Attempt:
    """One login attempt let through: hand it back to `LoginLimiter.finish`."""

    def __init__(self, device, address, started, counted):
        self.device = device
        self.address = address
        self.started = started
        self.counted = counted  # counted as it started, not only if it fails


class LoginLimiter:
    def __init__(self, device_limit=DEVICE_LIMIT, address_limit=ADDRESS_LIMIT,
                 window_s=WINDOW_S, block_s=BLOCK_S, max_keys=MAX_KEYS,
                 budget_per_s=BUDGET_PER_S, budget_burst=BUDGET_BURST):
        self.devices = _Counter(device_limit, window_s, block_s, max_keys)
        self.addresses = _Counter(address_limit, window_s, block_s, max_keys)
        self.budget = _Budget(budget_per_s, budget_burst)

    def start(self, device, address, costly, budgeted, now):
        """Let an attempt start: an Attempt, or None if it must be refused.

        `device`: the id of a registered device, else None. `address`: the source, or
        None when the device proved its bound key. `costly`: a token check, counted now
        (cheap attempts, open enrolment, are counted only if they fail, so a fleet may
        enrol at once). `budgeted`: a token login proving no bound key, which draws on
        the realm-wide budget.
        """
        # Both checked (no short cut) so expired blocks are cleared on either side.
        refused = device is not None and self.devices.refused(device, now)
        refused = (address is not None and self.addresses.refused(address, now)) or refused
        if refused or (budgeted and not self.budget.take(now)):
            return None
        attempt = Attempt(device, address, now, costly)
        if costly:
            self._count(attempt, now)
        return attempt

    def finish(self, attempt, failed, now):
        """The attempt ended: a failure stays counted (and may block), a success does not."""
        if not failed and not attempt.counted:
            return  # nothing of it was counted (a realm-made token's check): nothing to undo
        if failed and not attempt.counted:
            self._count(attempt, now)
        for counter, key in self._keys(attempt):
            if failed:
                counter.failed(key, now)
            else:
                counter.succeeded(key, attempt.started)

    def _count(self, attempt, now):
        attempt.started = now
        for counter, key in self._keys(attempt):
            counter.start(key, now)

    def _keys(self, attempt):
        return [(counter, key) for counter, key in ((self.devices, attempt.device),
                                                    (self.addresses, attempt.address))
                if key is not None]

    def prune(self, now):
        self.devices.prune(now)
        self.addresses.prune(now)
