# When a device connects again after its link to the realm ended: one policy for the
# firmware runtime and the host-side device (host/client.py). Capped exponential backoff
# with jitter, so devices that lost the realm together spread out; a refusal (the realm
# said no: bad login, key, rate limit, a newer session...) waits much longer, since
# trying again soon would only be refused again. Like umqtt.robust's and aioesphomeapi's
# reconnect logic, it is apart from the connection: the shells only ask it how long.
import random

from shared.compat import const
from shared.errors import (BAD_LOGIN, KEY_MISMATCH, KEY_CHECK_FAILED, RATE_LIMITED, DENIED,
                           SESSION_REPLACED, UNSUPPORTED)

# The defaults (ms); a device's config.json may set each ("reconnect": {...}).
DEFAULTS = {"min_ms": 1000, "max_ms": 60000, "auth_ms": 300000}
REFUSALS = (BAD_LOGIN, KEY_MISMATCH, KEY_CHECK_FAILED, RATE_LIMITED, DENIED, SESSION_REPLACED,
            UNSUPPORTED)
_MAX_SHIFT = const(16)  # min_ms << 16 is past any sane max_ms: no overflow on a small int


def is_refusal(error):
    """True for the realm's refusals (an error with such a code); False for a lost link,
    a timeout, an OSError..."""
    return getattr(error, "code", None) in REFUSALS


class Reconnect:
    """Ask next_delay_ms(error) after each attempt that ended (error: why, a ProtocolError
    or an OSError); say connected() once a session is established, which starts the
    backoff over."""

    def __init__(self, min_ms=DEFAULTS["min_ms"], max_ms=DEFAULTS["max_ms"],
                 auth_ms=DEFAULTS["auth_ms"], randint=random.randint):
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.auth_ms = auth_ms
        self._randint = randint
        self.failures = 0  # attempts ended in a row since the last session

    def connected(self):
        self.failures = 0

    def next_delay_ms(self, error):
        """The wait before the next attempt: half of it fixed, half random."""
        self.failures += 1
        if is_refusal(error):
            delay = self.auth_ms
        else:
            delay = min(self.min_ms << min(self.failures - 1, _MAX_SHIFT), self.max_ms)
        return delay // 2 + self._randint(0, delay // 2)
