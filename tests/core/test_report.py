# DeviceReport (PROTOCOL.md sections 4 and 7): the device sends one right after Welcome
# (at the first tick after it) and then once a minute; the realm takes a JSON object of at most 512 bytes after
# Welcome, its known keys only, and closes anything else. Runs on CPython and MicroPython.
from shared import codec
from shared.errors import MALFORMED, UNEXPECTED
from shared.events import Closed
from shared.realm import DeviceReportPacket, parse_report
from tests.core.linked import Link
from tests.core.support import eq, check, expect_error

MP_HEAP = "160k"


def _reports(events):
    return [e.report for e in events if isinstance(e, DeviceReportPacket)]


def _send_raw_report(link, text):
    """A DeviceReport as a device that ignores the rules could send it."""
    link.device._send(codec.encode(codec.PROTO_REALM, codec.DEVICE_REPORT, text))
    link.pump()


def _closed_with(link, code):
    closed = [e for e in link.device_events if isinstance(e, Closed)]
    eq([(e.error.code, e.error.remote) for e in closed], [(code, True)], "device told")
    eq(link.realm.error.code, code, "realm closed")


def test_reporter_sends_right_after_welcome_then_once_a_minute():
    calls = []

    def reporter():
        calls.append(1)
        return {"fw": "1.2.0", "up": len(calls)}
    link = Link(reporter=reporter).pump()
    eq(calls, [], "not inside the Welcome's handling")
    eq(link.device.next_deadline(), 0, "due at once")
    link.device.tick(0)
    link.pump()
    eq(_reports(link.realm_events), [{"fw": "1.2.0", "up": 1}], "one report after Welcome")
    eq(link.device.next_deadline(), 30000, "the heartbeat comes first")
    link.device.tick(30000)
    link.pump(30000)
    eq(len(calls), 1, "not again within the minute")
    eq(link.device.next_deadline(), 60000, "next report due a minute after the first")
    link.device.tick(60000)
    link.pump(60000)
    eq(_reports(link.realm_events)[-1], {"fw": "1.2.0", "up": 2}, "the second report")
    eq(link.device.next_deadline(), 90000, "then the heartbeat again")


def test_no_reporter_sends_no_report():
    link = Link().pump()
    eq(_reports(link.realm_events), [], "none")
    eq(codec.DEVICE_REPORT in [p[1] for p in link.to_realm], False, "nothing on the wire")


def _empty():
    return {}


def test_realm_keeps_known_keys_and_drops_unknown_ones():
    link = Link(reporter=_empty).pump()
    link.device.tick(0)  # the report due at Welcome
    link.device.send_report({"fw": "1.0", "app": "2.1", "board": "esp32", "up": 5, "boot": 3,
                             "heap": 41000, "rssi": -61, "link": "wifi", "colour": "blue",
                             "nested": {"a": [1, 2]}})
    link.pump()
    eq(_reports(link.realm_events), [{}, {"fw": "1.0", "app": "2.1", "board": "esp32", "up": 5,
                                          "boot": 3, "heap": 41000, "rssi": -61,
                                          "link": "wifi"}], "known keys only")
    check(not link.realm.closed, "session goes on")


def test_empty_object_and_null_values_are_an_empty_report():
    link = Link().pump()
    _send_raw_report(link, "{}")
    _send_raw_report(link, '{"rssi": null, "fw": null}')
    eq(_reports(link.realm_events), [{}, {}], "nothing known, nothing kept")


def test_report_of_512_bytes_passes_and_513_is_malformed():
    link = Link().pump()
    text = '{"fw": "%s"}' % ("x" * (512 - 10))
    eq(len(text), 512, "the limit")
    _send_raw_report(link, text)
    eq(len(_reports(link.realm_events)), 1, "512 bytes pass")
    _send_raw_report(link, '{"fw": "%s"}' % ("x" * (513 - 10)))
    _closed_with(link, MALFORMED)


def test_the_limit_counts_utf8_bytes_not_characters():
    expect_error(MALFORMED, parse_report, '{"fw": "%s"}' % ("\u00e9" * 300))


def test_anything_but_a_json_object_is_malformed():
    for text in ("[]", '"text"', "42", "null", "not json", '{"fw": 1', "", "{} {}",
                 "[" * 300 + "]" * 300):
        expect_error(MALFORMED, parse_report, text)


def test_known_keys_of_the_wrong_type_are_malformed():
    for text in ('{"fw": 1}', '{"up": "5"}', '{"heap": -1}', '{"up": true}', '{"rssi": 1.5}',
                 '{"link": ["wifi"]}', '{"boot": 9007199254740992}'):
        expect_error(MALFORMED, parse_report, text)
    eq(parse_report('{"rssi": -9007199254740991}'), {"rssi": -9007199254740991}, "in range")


def test_a_malformed_report_closes_the_session_malformed():
    link = Link().pump()
    _send_raw_report(link, "[1, 2]")
    _closed_with(link, MALFORMED)


def test_report_before_welcome_is_unexpected():
    link = Link()
    link._decide = lambda event: None  # the realm has not answered the login yet
    link.pump()
    check(not link.realm.established, "waiting for the login decision")
    _send_raw_report(link, "{}")
    _closed_with(link, UNEXPECTED)
    eq(_reports(link.realm_events), [], "not taken")


def test_device_refuses_to_send_a_report_over_512_bytes():
    link = Link(reporter=_empty).pump()
    try:
        link.device.send_report({"fw": "x" * 600})
        check(False, "no error")
    except ValueError:
        pass
    eq(link.device.data_to_send(), b"", "nothing sent")
