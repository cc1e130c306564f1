# A device that restarts on a serial link: its new Hello arrives in the realm's session of
# its previous boot (docs/REALM.md, "Serial links"). Runs on CPython and MicroPython.
from shared import codec
from shared.errors import MALFORMED, UNEXPECTED
from shared.events import Closed
from shared.framing import StreamFramer
from shared.realm import RESTARTED
from shared.serial_framing import SerialFramer
from tests.core.linked import Link
from tests.core.support import eq, check

MP_HEAP = "160k"


def _established(framer):
    link = Link(framer=framer).pump()
    check(link.device.established and link.realm.established, "established")
    return link


def _rebooted(old):
    """The same device, booted again: a fresh connection that has queued its Hello."""
    return Link(framer=old.framer, bound=old.bound)


def _only_closed(events):
    eq(len(events), 1, "one event: %r" % (events,))
    check(isinstance(events[0], Closed), "Closed: %r" % (events,))
    return events[0].error


def test_serial_hello_in_a_session_ends_it_and_starts_the_next_one():
    old = _established(SerialFramer)
    new = _rebooted(old)
    hello = new.device.data_to_send()  # 0x00, then the Hello's frame
    error = _only_closed(old.realm.receive_data(hello, 0))
    eq(error.code, RESTARTED, "the reason")
    check(error.remote, "the device's doing: no Error for it")
    eq(old.realm.data_to_send(), b"", "nothing for the new handshake to read")
    eq(old.realm.trailing_data, hello, "the Hello, handed back as it came")
    # The shell feeds it to a new connection on the same link: the new login goes through.
    new.realm.receive_data(old.realm.trailing_data, 0)
    new.pump()
    check(new.device.established and new.realm.established, "logged in again")
    eq(new.realm.trailing_data, None, "a first Hello is no restart")


def test_a_hello_split_byte_by_byte_is_found_the_same():
    old = _established(SerialFramer)
    hello = _rebooted(old).device.data_to_send()
    events = []
    for i in range(len(hello)):
        events += old.realm.receive_data(hello[i:i + 1], 0)
    eq(_only_closed(events).code, RESTARTED, "the reason")
    eq(old.realm.trailing_data, hello, "the Hello")


def test_packets_after_the_hello_in_the_same_chunk_go_to_the_next_connection():
    old = _established(SerialFramer)
    hello = _rebooted(old).device.data_to_send()
    after = SerialFramer().frame(codec.encode(codec.PROTO_REALM, codec.SEND_KEY, bytes(32)))
    eq(_only_closed(old.realm.receive_data(hello + after, 0)).code, RESTARTED, "the reason")
    eq(old.realm.trailing_data, hello + after, "the Hello and what followed")


def test_serial_hello_during_the_handshake_is_a_restart_too():
    old = Link(framer=SerialFramer)
    old.realm.receive_data(old.device.data_to_send(), 0)
    check(old.realm.data_to_send(), "the realm answered the first Hello")
    hello = _rebooted(old).device.data_to_send()
    eq(_only_closed(old.realm.receive_data(hello, 0)).code, RESTARTED, "the reason")
    eq(old.realm.trailing_data, hello, "the Hello")


def test_a_bad_hello_on_serial_stays_malformed():
    old = _established(SerialFramer)
    # Version 1, a device id, then a pin flag that is neither 0 nor 1.
    body = bytes((1,)) + bytes(16) + bytes((2,)) + bytes(32)
    bad = SerialFramer().frame(bytes((codec.PROTO_REALM, codec.HELLO)) + body)
    eq(_only_closed(old.realm.receive_data(bad, 0)).code, MALFORMED, "not a Hello")
    check(old.realm.data_to_send(), "an Error for it")
    eq(old.realm.trailing_data, None, "nothing handed back")


def test_on_tcp_a_hello_in_a_session_stays_an_error():
    old = _established(StreamFramer)
    hello = _rebooted(old).device.data_to_send()
    error = _only_closed(old.realm.receive_data(hello, 0))
    eq(error.code, MALFORMED, "a clear packet in a sealed session")
    check(not error.remote, "the realm's finding")
    check(old.realm.data_to_send(), "an Error for it")
    eq(old.realm.trailing_data, None, "nothing handed back")
    # In clear, during the handshake: UNEXPECTED, as before.
    early = Link()
    early.realm.receive_data(early.device.data_to_send(), 0)
    again = _rebooted(early).device.data_to_send()
    eq(_only_closed(early.realm.receive_data(again, 0)).code, UNEXPECTED, "in clear")
    eq(early.realm.trailing_data, None, "nothing handed back")
