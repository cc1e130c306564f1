# The one protocol error type, carrying the spec's error code (PROTOCOL.md section 4).
from shared.compat import const

MALFORMED = const(1)
UNSUPPORTED = const(2)
UNEXPECTED = const(3)
KEY_MISMATCH = const(4)
KEY_CHECK_FAILED = const(5)
BAD_LOGIN = const(6)
RATE_LIMITED = const(7)
TOO_LARGE = const(8)
TIMEOUT = const(9)
SESSION_REPLACED = const(10)
INTERNAL = const(11)
DENIED = const(12)
# Not a wire code (the spec's start at 1, and no Error packet carries this one): the
# transport ended without an Error from the peer (EOF, reset, unplugged). Only
# Connection.connection_lost() makes it.
LINK_LOST = const(0)

NAMES = {
    0: "LINK_LOST", 1: "MALFORMED", 2: "UNSUPPORTED", 3: "UNEXPECTED", 4: "KEY_MISMATCH",
    5: "KEY_CHECK_FAILED", 6: "BAD_LOGIN", 7: "RATE_LIMITED", 8: "TOO_LARGE",
    9: "TIMEOUT", 10: "SESSION_REPLACED", 11: "INTERNAL", 12: "DENIED",
}


def code_name(code):
    return NAMES.get(code, "ERROR_%d" % code)


class ProtocolError(Exception):
    """A protocol failure with its spec code.

    `remote` is True when the peer told us (it sent an Error packet) and False
    when we detected the fault ourselves (and so should tell the peer); `sealed` is True
    when the peer's Error came sealed, so only the peer holding the session keys can have
    sent it.
    """

    def __init__(self, code, message="", remote=False, sealed=False):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.remote = remote
        self.sealed = sealed

    @property
    def name(self):
        return code_name(self.code)

    def __str__(self):
        who = "peer: " if self.remote else ""
        if self.message:
            return "%s%s: %s" % (who, self.name, self.message)
        return who + self.name
