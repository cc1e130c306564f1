# The packet codec against codec.json and the strictness rules of PROTOCOL.md section 3.
# Runs on CPython (pytest) and MicroPython (tests/mprun.py).
from shared import codec
from shared.codec import (
    DATA, DELIVERY, ERROR, FIELDS, HELLO, KEY_CHECK, NAMES, PEER_KEY, PING, PONG,
    PROTO_DEVICE, PROTO_REALM, PROXY_PASS, SEND_KEY, WELCOME, decode, encode,
    uuid_from_str, uuid_to_str)
from tests.core.support import IS_MICROPYTHON, check, eq, expect_error, tohex, unhex, vectors

MP_HEAP = "512k"  # the vectors and the 65535-byte str16/bytes16 boundaries

# How codec.json writes the fields that are neither numbers nor hex (vectors README).
UUID_FIELDS = ("device_id", "peer")
STR_FIELDS = ("message", "realm_name", "report")
# codec.json, then the packets added within version 1 (PROTOCOL.md's last section).
VECTOR_FILES = ("codec", "codec-additions")
PEER = uuid_from_str("f1e2d3c4-b5a6-4978-8a9b-0c1d2e3f4a5b")
KEY = bytes(range(32))


def vector_fields(entry):
    """The entry's fields as the tuple decode() gives, in the order of FIELDS."""
    names = FIELDS[entry["protocol"]][entry["packet_id"]]
    out = []
    for name in names:
        value = entry["fields"][name]
        if isinstance(value, str) and name in UUID_FIELDS:
            value = uuid_from_str(value)
        elif isinstance(value, str) and name not in STR_FIELDS:
            value = unhex(value)
        out.append(value)
    return tuple(out)


def entries(kind):
    for name in VECTOR_FILES:
        for entry in vectors(name)[kind]:
            yield entry


def test_valid_vectors_encode():
    for entry in entries("valid"):
        packet = encode(entry["protocol"], entry["packet_id"], *vector_fields(entry))
        eq(tohex(packet), entry["hex"], entry["name"] + ": " + entry["case"])


def test_valid_vectors_decode():
    for entry in entries("valid"):
        what = entry["name"] + ": " + entry["case"]
        got = decode(unhex(entry["hex"]), entry["protocol"])
        eq(got, (entry["packet_id"], vector_fields(entry)), what)
        for value in got[1]:
            check(value is None or type(value) in (int, str, bytes), what + ": value type")


def test_vector_names_and_field_names_match_the_tables():
    for entry in entries("valid"):
        eq(NAMES[entry["protocol"]][entry["packet_id"]], entry["name"], entry["case"])
        eq(sorted(FIELDS[entry["protocol"]][entry["packet_id"]]), sorted(entry["fields"]),
           entry["name"])


def test_malformed_vectors():
    for entry in entries("malformed"):
        expect_error(entry["error"], decode, unhex(entry["hex"]), entry["decoder_protocol"])


def test_constants_and_tables():
    eq((codec.PROTO_DEVICE, codec.PROTO_REALM), (1, 2))
    eq([codec.HEARTBEAT, ERROR, HELLO, SEND_KEY, KEY_CHECK, codec.KEY_CHECK_RESPONSE,
        codec.DEVICE_LOGIN, PROXY_PASS, WELCOME, DELIVERY, codec.PEER_KEY_REQUEST, PEER_KEY,
        codec.DEVICE_REPORT], list(range(13)))
    eq([DATA, PING, PONG, codec.SERVICE, codec.MAX_PING], [0, 1, 2, 3, 32])
    eq([codec.DELIVERED, codec.QUEUED, codec.UNKNOWN_TARGET, codec.STATUS_DENIED,
        codec.QUEUE_FULL, codec.STATUS_TOO_LARGE, codec.UNAVAILABLE], list(range(7)))
    eq([codec.status_name(s) for s in (codec.QUEUE_FULL, codec.UNAVAILABLE, 7)],
       ["QUEUE_FULL", "UNAVAILABLE", "STATUS_7"])
    eq((codec.LOGIN_NONE, codec.LOGIN_TOKEN), (0, 1))
    eq(FIELDS[PROTO_REALM][ERROR], ("code", "ref", "message"))
    eq(FIELDS[PROTO_REALM][PROXY_PASS], ("peer", "msg_id", "inner"))
    eq(FIELDS[PROTO_REALM][KEY_CHECK], ("eph", "challenge"))
    eq(NAMES[PROTO_REALM][ERROR], "Error")
    eq(NAMES[PROTO_DEVICE][PONG], "Pong")
    eq(FIELDS[PROTO_DEVICE][codec.SERVICE], ("service", "data"))
    eq((len(NAMES[PROTO_REALM]), len(FIELDS[PROTO_REALM])), (13, 13))
    eq((len(NAMES[PROTO_DEVICE]), len(FIELDS[PROTO_DEVICE])), (4, 4))


def test_decode_takes_any_byte_string_and_hands_a_rest_field_as_a_slice_of_it():
    # A device decodes views of its receive buffer: the message is not copied until the
    # application gets it. Fixed-size fields are bytes whatever the packet (a peer id is a
    # dict key).
    packet = encode(PROTO_REALM, PROXY_PASS, PEER, 9, b"\x01\x00inner")
    for form in (packet, bytearray(packet), memoryview(packet), memoryview(b"xx" + packet)[2:]):
        packet_id, fields = decode(form)
        eq((packet_id, fields[0], fields[1], bytes(fields[2])),
           (PROXY_PASS, PEER, 9, b"\x01\x00inner"))
        check(type(fields[0]) is bytes, "a uuid is bytes")
        check(type(fields[2]) is type(form), "inner is a slice of the packet")
    buf = bytearray(packet)
    inner = decode(memoryview(buf))[1][2]
    buf[-1] = ord("X")
    eq(bytes(inner), b"\x01\x00inneX", "a view of the packet's own bytes")


def test_ping_and_pong_limit():
    for packet_id in (PING, PONG):
        data = bytes(range(32))
        packet = encode(PROTO_DEVICE, packet_id, data)
        eq(decode(packet, PROTO_DEVICE), (packet_id, (data,)))
        # Pong carries the Ping's bytes, so it cannot be longer either.
        expect_error("MALFORMED", decode, packet + b"!", PROTO_DEVICE)
        expect_error("MALFORMED", encode, PROTO_DEVICE, packet_id, data + b"!")
    big = bytes(1000)
    eq(decode(encode(PROTO_DEVICE, DATA, big), PROTO_DEVICE), (DATA, (big,)))


def test_more_malformed_packets():
    hello = encode(PROTO_REALM, HELLO, 1, PEER, KEY, KEY)
    for cut in range(2, len(hello)):
        expect_error("MALFORMED", decode, hello[:cut])
    expect_error("MALFORMED", decode, hello + b"\x00")
    error = encode(PROTO_REALM, ERROR, 1, 0, "abc")
    for cut in range(2, len(error)):
        expect_error("MALFORMED", decode, error[:cut])
    peer_key = encode(PROTO_REALM, PEER_KEY, PEER, KEY)
    for flag in (2, 0x80, 0xFF):
        bad = bytearray(peer_key)
        bad[18] = flag
        expect_error("MALFORMED", decode, bytes(bad))
    expect_error("MALFORMED", decode, b"\x01\x03", PROTO_DEVICE)
    expect_error("UNSUPPORTED", decode, b"\x03\x00\x00", PROTO_DEVICE)


def test_hello_version_is_checked_before_the_layout():
    # Another version may lay its Hello out differently: UNSUPPORTED, not MALFORMED.
    expect_error("UNSUPPORTED", decode, b"\x02\x02\x02")
    expect_error("UNSUPPORTED", decode, encode(PROTO_REALM, HELLO, 2, PEER, None, KEY))
    expect_error("MALFORMED", decode, b"\x02\x02")


def test_utf8_is_strict_on_both_interpreters():
    # MicroPython's own decoder lets these through; the codec must not.
    for raw in ("c328", "ff", "c0", "c080", "c1bf", "e08080", "eda080", "edbfbf", "f0808080",
                "f4908080", "f5808080", "e282", "61e2", "80"):
        body = unhex(raw)
        packet = b"\x02\x08\x00\x1e\x10\x00" + bytes((0, len(body))) + body
        expect_error("MALFORMED", decode, packet)
    for text in ("", "a", "\u00e9", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\uffff",
                 "\U00010000", "\U0010ffff", "K\u00fcche \U0001f3e0"):
        packet = encode(PROTO_REALM, WELCOME, 30, 4096, text)
        eq(decode(packet), (WELCOME, (30, 4096, text)), "valid UTF-8")


def test_encode_refuses_what_decode_would_refuse():
    bad = [
        (PROTO_REALM, SEND_KEY, KEY[:31]),
        (PROTO_REALM, SEND_KEY, KEY + b"!"),
        (PROTO_REALM, SEND_KEY, "not bytes"),
        (PROTO_REALM, SEND_KEY),
        (PROTO_REALM, SEND_KEY, KEY, KEY),
        (PROTO_REALM, HELLO, 1, PEER[:15], None, KEY),
        (PROTO_REALM, HELLO, 256, PEER, None, KEY),
        (PROTO_REALM, HELLO, 1, PEER, KEY[:31], KEY),
        (PROTO_REALM, ERROR, 65536, 0, ""),
        (PROTO_REALM, ERROR, -1, 0, ""),
        (PROTO_REALM, ERROR, 1, 1 << 32, ""),
        (PROTO_REALM, ERROR, 1, 0, b"bytes, not str"),
        (PROTO_REALM, ERROR, 1, 0, None),
        (PROTO_REALM, WELCOME, 30, 4096, "x" * 65536),
        (PROTO_REALM, codec.DEVICE_LOGIN, 1, bytes(65536)),
        (PROTO_REALM, codec.DEVICE_LOGIN, 1, None),
        (PROTO_REALM, DELIVERY, "1", 0),
        (PROTO_REALM, PROXY_PASS, PEER, 1, "inner"),
        (PROTO_REALM, 12),
        (PROTO_REALM, -1),
        (PROTO_DEVICE, 3, b""),
    ]
    if not IS_MICROPYTHON:  # a lone surrogate cannot be built as a MicroPython str
        bad.append((PROTO_REALM, ERROR, 1, 0, "\ud800"))
    for args in bad:
        e = expect_error("MALFORMED", encode, *args)
        check(not e.remote, "a local error")
    expect_error("UNSUPPORTED", encode, 3, 0)


def test_encode_boundaries():
    top = (1 << 32) - 1
    eq(decode(encode(PROTO_REALM, ERROR, 65535, top, "")), (ERROR, (65535, top, "")))
    text = "\u00e9" * 32767 + "x"  # 65535 bytes of UTF-8
    eq(decode(encode(PROTO_REALM, ERROR, 0, 0, text))[1][2] == text, True, "longest str16")
    expect_error("MALFORMED", encode, PROTO_REALM, ERROR, 0, 0, text + "x")
    text = None
    details = bytes(range(256)) * 255 + bytes(range(255))
    eq(decode(encode(PROTO_REALM, codec.DEVICE_LOGIN, 1, details)) == (codec.DEVICE_LOGIN, (1, details)),
       True, "longest bytes16")
    inner = bytearray(4096)
    eq(decode(encode(PROTO_REALM, PROXY_PASS, memoryview(PEER), 0, inner)),
       (PROXY_PASS, (PEER, 0, bytes(inner))))


def test_every_packet_round_trips():
    token = b"secret-token-0123456789abcdefghi"
    samples = {
        PROTO_REALM: [(), (12, 7, "denied"), (1, PEER, None, KEY), (KEY,), (KEY, bytes(range(32, 64))),
                      (KEY,), (1, token), (PEER, 1, b"\x01\x00x"), (30, 4096, "home"),
                      (1, 5), (PEER,), (PEER, None), ('{"fw":"1.0"}',)],
        PROTO_DEVICE: [(b"hello",), (b"p" * 32,), (b"",), (255, b"chunk")],
    }
    for protocol in samples:
        for packet_id in range(len(samples[protocol])):
            fields = samples[protocol][packet_id]
            packet = encode(protocol, packet_id, *fields)
            eq(packet[:2], bytes((protocol, packet_id)), NAMES[protocol][packet_id])
            eq(decode(packet, protocol), (packet_id, fields), NAMES[protocol][packet_id])


def test_uuid_text():
    raw = uuid_from_str("0a4f5c2e-9d8b-4c7a-a1e3-5b6c7d8e9f01")
    eq(tohex(raw), "0a4f5c2e9d8b4c7aa1e35b6c7d8e9f01")
    eq(uuid_to_str(raw), "0a4f5c2e-9d8b-4c7a-a1e3-5b6c7d8e9f01")
    eq(uuid_from_str("0A4F5C2E-9D8B-4C7A-A1E3-5B6C7D8E9F01"), raw)
    eq(uuid_to_str(bytearray(raw)), "0a4f5c2e-9d8b-4c7a-a1e3-5b6c7d8e9f01")
    for text in ("", "0a4f5c2e9d8b4c7aa1e35b6c7d8e9f01", "0a4f5c2e-9d8b-4c7a-a1e3-5b6c7d8e9f0",
                 "0a4f5c2e-9d8b-4c7a-a1e3-5b6c7d8e9f0g", "0a4f5c2e-9d8b-4c7a-a1e35-b6c7d8e9f01",
                 "0a4f5c2e-9d8b-4c7a-a1e3-5b6c7d8e9f-1", "{a4f5c2e-9d8b-4c7a-a1e3-5b6c7d8e9f01"):
        try:
            uuid_from_str(text)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % text)
    try:
        uuid_to_str(raw[:15])
    except ValueError:
        return
    raise AssertionError("uuid_to_str accepted 15 bytes")
