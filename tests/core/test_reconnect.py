# The reconnect policy the firmware and the host-side device share (shared/connection.py).
# Runs on CPython and MicroPython.
from shared import codec
from shared.errors import BAD_LOGIN, DENIED, LINK_LOST, SESSION_REPLACED, TIMEOUT, ProtocolError
from shared.connection import Reconnect, is_refusal
from shared.framing import StreamFramer
from tests.core.linked import Link
from tests.core.support import eq, check

MP_HEAP = "200k"  # both machines compiled from source (the realm side too, which no device loads)
LOST = ProtocolError(LINK_LOST, "reset", True)


def _lowest(lo, hi):
    return lo


def _highest(lo, hi):
    return hi


def test_backoff_doubles_to_its_cap_half_of_it_random():
    for pick, share in ((_lowest, 1), (_highest, 2)):
        r = Reconnect(1000, 60000, 300000, randint=pick)
        waits = [r.next_delay_ms(LOST) for _ in range(9)]
        full = [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        eq(waits, [f // 2 * share for f in full], "from half to all of each step")


def test_a_session_starts_the_backoff_over():
    r = Reconnect(100, 800, 5000, randint=_highest)
    eq([r.next_delay_ms(None), r.next_delay_ms(OSError("refused"))], [100, 200], "grows")
    r.connected()
    eq(r.next_delay_ms(ProtocolError(TIMEOUT)), 100, "from the start again")


def test_a_refusal_waits_auth_ms_from_the_first_time():
    r = Reconnect(100, 800, 5000, randint=_lowest)
    eq(r.next_delay_ms(ProtocolError(BAD_LOGIN, "", True)), 2500, "half of auth_ms at least")
    check(is_refusal(ProtocolError(SESSION_REPLACED, "", True)), "a newer session: refused")
    for error in (LOST, ProtocolError(TIMEOUT), OSError("unreachable"), None):
        check(not is_refusal(error), "not a refusal: %r" % (error,))


def test_the_jitter_is_random_by_default():
    r = Reconnect(1000, 60000, 300000)
    waits = set()
    for _ in range(50):
        r.connected()
        waits.add(r.next_delay_ms(LOST))
    check(len(waits) > 1 and min(waits) >= 500 and max(waits) <= 1000, "jitter %r" % (waits,))


def _error_frame(code, message):
    return StreamFramer().frame(codec.encode(codec.PROTO_REALM, codec.ERROR, code, 0, message))


def test_a_busy_realm_turning_a_connection_away_is_tried_again_soon():
    # DENIED in clear, right after the Hello: the realm at its limits, not a refusal of
    # this device (a fleet restarting together must not wait auth_ms).
    link = Link()
    link.device.data_to_send()  # the Hello
    closed = link.device.receive_data(_error_frame(DENIED, "too many connections"), 0)
    error = closed[0].error
    eq((error.code, error.remote, error.sealed), (DENIED, True, False), "a clear DENIED")
    check(not is_refusal(error), "a busy realm is not a refusal")
    r = Reconnect(100, 800, 5000, randint=_highest)
    eq([r.next_delay_ms(error) for _ in range(3)], [100, 200, 400], "the usual backoff")


def test_denied_in_a_sealed_session_is_a_refusal():
    link = Link().pump()
    link.realm.close(DENIED, "device removed from the realm")
    link.pump()
    error = [e for e in link.device_events if hasattr(e, "error")][0].error
    eq((error.code, error.sealed), (DENIED, True), "sealed by the realm")
    check(is_refusal(error), "the realm's policy said no")
    eq(Reconnect(100, 800, 5000, randint=_lowest).next_delay_ms(error), 2500, "auth_ms")
