"""The login rate limit of PROTOCOL.md section 7.

Five refused logins for one device id, or twenty from one source address, within 60 s:
every login of that device or from that address is refused (RATE_LIMITED) for the next
60 s, correct tokens included. Attempts refused for the rate limit itself are not counted
again, so the block ends 60 s after the failure that started it.

`now` is monotonic seconds passed in by the caller. Memory stays bounded: entries with
nothing left in their window are dropped by `prune`, and past `max_keys` tracked keys the
ones seen least recently are forgotten first.
"""
from collections import OrderedDict, deque

DEVICE_LIMIT = 5
ADDRESS_LIMIT = 20
WINDOW_S = 60.0
BLOCK_S = 60.0


class _Counter:
    """Refusals per key within a sliding window, and blocks that follow."""

    def __init__(self, limit, window_s, block_s, max_keys):
        self.limit = limit
        self.window_s = window_s
        self.block_s = block_s
        self.max_keys = max_keys
        self.failures = OrderedDict()   # key -> deque of failure times, least recent first
        self.blocked = {}               # key -> time the block ends

    def is_blocked(self, key, now):
        until = self.blocked.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self.blocked[key]
        return False

    def failure(self, key, now):
        times = self.failures.pop(key, None) or deque()
        self.failures[key] = times  # most recently seen last
        times.append(now)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) >= self.limit:
            self.blocked[key] = now + self.block_s
            times.clear()
        while len(self.failures) > self.max_keys:
            self.failures.popitem(last=False)

    def prune(self, now):
        for key in [k for k, t in self.failures.items() if not t or t[-1] <= now - self.window_s]:
            del self.failures[key]
        for key in [k for k, until in self.blocked.items() if until <= now]:
            del self.blocked[key]


class LoginLimiter:
    def __init__(self, device_limit=DEVICE_LIMIT, address_limit=ADDRESS_LIMIT,
                 window_s=WINDOW_S, block_s=BLOCK_S, max_keys=100000):
        self.devices = _Counter(device_limit, window_s, block_s, max_keys)
        self.addresses = _Counter(address_limit, window_s, block_s, max_keys)

    def is_blocked(self, device_id, address, now):
        # Both checked (no short cut) so expired blocks are cleared on either side.
        device = self.devices.is_blocked(device_id, now)
        address = self.addresses.is_blocked(address, now)
        return device or address

    def failure(self, device_id, address, now):
        self.devices.failure(device_id, now)
        self.addresses.failure(address, now)

    def prune(self, now):
        self.devices.prune(now)
        self.addresses.prune(now)
