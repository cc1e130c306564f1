# Packets of PROTOCOL.md sections 3, 4 and 8: one layout table, one encoder, one decoder.
#
# decode() is strict and raises only ProtocolError: MALFORMED for anything the layout
# refuses, UNSUPPORTED for another protocol byte or Hello.version != 1.
# encode() refuses, with ProtocolError(MALFORMED) (a local error, remote=False), whatever
# decode() would call MALFORMED: a wrong field count, an integer out of range, a key that
# is not 32 bytes, a str16 over 65535 bytes, a Ping over MAX_PING bytes... (and an unknown
# protocol with UNSUPPORTED). It accepts a Hello of another version: that is well formed,
# only unsupported.
from binascii import hexlify, unhexlify
from struct import calcsize, pack, unpack_from

from shared.compat import const
from shared.errors import MALFORMED, UNSUPPORTED, ProtocolError

PROTO_DEVICE = const(1)
PROTO_REALM = const(2)

# Realm packet ids (section 4).
HEARTBEAT = const(0)
ERROR = const(1)
HELLO = const(2)
SEND_KEY = const(3)
KEY_CHECK = const(4)
KEY_CHECK_RESPONSE = const(5)
DEVICE_LOGIN = const(6)
PROXY_PASS = const(7)
WELCOME = const(8)
DELIVERY = const(9)
PEER_KEY_REQUEST = const(10)
PEER_KEY = const(11)

# Device-to-device packet ids (section 8).
DATA = const(0)
PING = const(1)
PONG = const(2)
MAX_PING = const(32)

# Delivery.status (section 7).
DELIVERED = const(0)
QUEUED = const(1)
UNKNOWN_TARGET = const(2)
STATUS_DENIED = const(3)
QUEUE_FULL = const(4)
STATUS_TOO_LARGE = const(5)

# DeviceLogin.method (section 7).
LOGIN_NONE = const(0)
LOGIN_TOKEN = const(1)

HELLO_VERSION = const(1)

# The layouts, as the spec writes them. KeyCheck is its plaintext view: the connection
# seals the challenge. Pong carries "the Ping's bytes", so it has Ping's limit too: a
# Pong over MAX_PING bytes answers no Ping we could have sent, and is MALFORMED.
_REALM = (
    ("Heartbeat", ()),
    ("Error", (("code", "u16"), ("ref", "u32"), ("message", "str16"))),
    ("Hello", (("version", "u8"), ("device_id", "uuid"), ("pin", "opt<hash>"),
               ("eph", "key"))),
    ("SendKey", (("static", "key"),)),
    ("KeyCheck", (("eph", "key"), ("challenge", "bytes32"))),
    ("KeyCheckResponse", (("challenge", "bytes32"),)),
    ("DeviceLogin", (("method", "u8"), ("details", "bytes16"))),
    ("ProxyPass", (("peer", "uuid"), ("msg_id", "u32"), ("inner", "rest"))),
    ("Welcome", (("heartbeat_s", "u16"), ("max_packet", "u16"), ("realm_name", "str16"))),
    ("Delivery", (("msg_id", "u32"), ("status", "u8"))),
    ("PeerKeyRequest", (("peer", "uuid"),)),
    ("PeerKey", (("peer", "uuid"), ("static", "opt<key>"))),
)
_DEVICE = (
    ("Data", (("data", "rest"),)),
    ("Ping", (("data", "rest<=32"),)),
    ("Pong", (("data", "rest<=32"),)),
)

# Field kinds: a struct format of fixed size, or one of the variable-size kinds.
_FIXED = const(0)
_BYTES16 = const(1)
_STR16 = const(2)
_OPT = const(3)
_REST = const(4)
_FORMATS = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "uuid": "16s",
            "key": "32s", "hash": "32s", "bytes32": "32s"}
_NO_LIMIT = const(0x3FFFFFFF)  # over any packet, and a small int on 32-bit ports


def _kind(type_name):
    """-> (kind, struct format or None, size or length limit)."""
    if type_name in _FORMATS:
        fmt = ">" + _FORMATS[type_name]
        return _FIXED, fmt, calcsize(fmt)
    if type_name.startswith("opt<"):
        _, fmt, size = _kind(type_name[4:-1])
        return _OPT, fmt, size
    if type_name == "bytes16":
        return _BYTES16, None, 0xFFFF
    if type_name == "str16":
        return _STR16, None, 0xFFFF
    if type_name == "rest":
        return _REST, None, _NO_LIMIT
    return _REST, None, int(type_name[6:])  # "rest<=N"


def _compile(packets):
    """Split each layout into a fixed-size prefix, read or written with one struct call,
    and the tail (the fields from the first variable-size one on), taken one by one.
    -> per packet id (prefix format, prefix size, tail kinds, all kinds, header and
    prefix format for encoding)."""
    compiled = []
    for _, fields in packets:
        kinds = tuple(_kind(t) for _, t in fields)
        prefix = 0
        while prefix < len(kinds) and kinds[prefix][0] == _FIXED:
            prefix += 1
        fmt = "".join(k[1][1:] for k in kinds[:prefix])
        compiled.append((">" + fmt, calcsize(">" + fmt), kinds[prefix:], kinds, ">BB" + fmt))
    return tuple(compiled)


FIELDS = {PROTO_DEVICE: tuple(tuple(n for n, _ in f) for _, f in _DEVICE),
          PROTO_REALM: tuple(tuple(n for n, _ in f) for _, f in _REALM)}
NAMES = {PROTO_DEVICE: tuple(name for name, _ in _DEVICE),
         PROTO_REALM: tuple(name for name, _ in _REALM)}
_LAYOUTS = {PROTO_DEVICE: _compile(_DEVICE), PROTO_REALM: _compile(_REALM)}
_FLAG = (b"\x00", b"\x01")


def _malformed(why):
    return ProtocolError(MALFORMED, why)


def _utf8(raw):
    try:
        text = str(raw, "utf-8")
    except UnicodeError:
        raise _malformed("bad UTF-8") from None
    if len(text) != len(raw):
        _check_utf8_ranges(raw)
    return text


def _check_utf8_ranges(raw):
    # MicroPython's decoder checks only the byte structure: refuse here, on both
    # interpreters alike, the overlong forms, surrogates and code points past U+10FFFF
    # (RFC 3629 section 4) that CPython's decoder refuses.
    for i in range(len(raw) - 1):
        c = raw[i]
        if c < 0xC2:
            if c >= 0xC0:
                raise _malformed("bad UTF-8")
            continue
        lo, hi = 0x80, 0xBF
        if c == 0xE0:
            lo = 0xA0
        elif c == 0xED:
            hi = 0x9F
        elif c == 0xF0:
            lo = 0x90
        elif c == 0xF4:
            hi = 0x8F
        elif c > 0xF4:
            raise _malformed("bad UTF-8")
        if not lo <= raw[i + 1] <= hi:
            raise _malformed("bad UTF-8")


def decode(packet, protocol=PROTO_REALM):
    """-> (packet_id, fields): fields in the spec's order, byte strings as bytes."""
    if not isinstance(packet, bytes):
        packet = bytes(packet)
    end = len(packet)
    if end < 2:
        raise _malformed("packet under 2 bytes")
    if packet[0] != protocol:
        raise ProtocolError(UNSUPPORTED, "protocol %d" % packet[0])
    layouts = _LAYOUTS[protocol]
    packet_id = packet[1]
    if packet_id >= len(layouts):
        raise _malformed("unknown packet id %d" % packet_id)
    if packet_id == HELLO and protocol == PROTO_REALM and end > 2 and packet[2] != HELLO_VERSION:
        # Checked before the layout: another version may lay its Hello out otherwise.
        raise ProtocolError(UNSUPPORTED, "Hello version %d" % packet[2])
    fmt, pos, tail, _, _ = layouts[packet_id]
    pos += 2
    if pos > end:
        raise _malformed("short body")
    fields = unpack_from(fmt, packet, 2)
    if tail:
        fields = list(fields)
        for kind, fmt, size in tail:
            if kind == _REST:
                if end - pos > size:
                    raise _malformed("body over %d bytes" % size)
                fields.append(packet[pos:])
                pos = end
                continue
            if kind == _OPT:
                if pos >= end:
                    raise _malformed("short body")
                flag = packet[pos]
                pos += 1
                if flag == 0:
                    fields.append(None)
                    continue
                if flag != 1:
                    raise _malformed("opt flag %d" % flag)
            if kind == _FIXED or kind == _OPT:
                if pos + size > end:
                    raise _malformed("short body")
                fields.append(unpack_from(fmt, packet, pos)[0])
                pos += size
                continue
            if pos + 2 > end:
                raise _malformed("short body")
            stop = pos + 2 + ((packet[pos] << 8) | packet[pos + 1])
            if stop > end:
                raise _malformed("length past the end")
            if kind == _STR16:  # decoded from a view: no intermediate copy
                fields.append(_utf8(memoryview(packet)[pos + 2:stop]))
            else:
                fields.append(packet[pos + 2:stop])
            pos = stop
        fields = tuple(fields)
    if pos != end:
        raise _malformed("trailing bytes")
    return packet_id, fields


def _prepare(field, value):
    """-> the value as it is packed (byte strings as bytes, a str16 as its UTF-8), or
    ProtocolError(MALFORMED) for a value the field cannot carry: struct.pack on
    MicroPython would truncate an integer or pad a short byte string without a word."""
    kind, fmt, size = field
    if kind == _OPT:
        if value is None:
            return None
        kind = _FIXED
    if kind == _FIXED and fmt[-1] != "s":
        if not isinstance(value, int) or not 0 <= value < (1 << (8 * size)):
            raise _malformed("u%d out of range: %r" % (8 * size, value))
        return value
    if kind == _STR16:
        if not isinstance(value, str):
            raise _malformed("str16 needs a str, not %s" % (type(value).__name__,))
        try:
            value = value.encode()
        except UnicodeError:
            raise _malformed("str16 not encodable as UTF-8") from None
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise _malformed("bytes needed, not %s" % (type(value).__name__,))
    if kind == _FIXED and len(value) != size:
        raise _malformed("%d bytes needed, not %d" % (size, len(value)))
    if len(value) > size:
        raise _malformed("%d bytes over the limit of %d" % (len(value), size))
    return value


def encode(protocol, packet_id, *fields):
    """-> the plaintext packet: header and body."""
    layouts = _LAYOUTS.get(protocol)
    if layouts is None:
        raise ProtocolError(UNSUPPORTED, "cannot encode protocol %r" % (protocol,))
    if not isinstance(packet_id, int) or not 0 <= packet_id < len(layouts):
        raise _malformed("cannot encode packet id %r" % (packet_id,))
    _, _, tail, kinds, fmt = layouts[packet_id]
    if len(fields) != len(kinds):
        raise _malformed("%s takes %d fields, not %d"
                         % (NAMES[protocol][packet_id], len(kinds), len(fields)))
    values = [_prepare(kinds[i], fields[i]) for i in range(len(kinds))]
    prefix = len(kinds) - len(tail)
    parts = [pack(fmt, protocol, packet_id, *values[:prefix])]
    for i in range(prefix, len(kinds)):
        kind = kinds[i][0]
        value = values[i]
        if kind == _OPT:
            parts.append(_FLAG[value is not None])
            if value is None:
                continue
        elif kind == _BYTES16 or kind == _STR16:
            parts.append(pack(">H", len(value)))
        parts.append(value)
    return b"".join(parts)


def uuid_to_str(raw):
    """16 bytes -> the canonical lowercase 8-4-4-4-12 text."""
    if len(raw) != 16:
        raise ValueError("a uuid is 16 bytes")
    h = hexlify(raw).decode()
    return "%s-%s-%s-%s-%s" % (h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])


def uuid_from_str(text):
    """The 8-4-4-4-12 text (either case) -> 16 bytes; ValueError for anything else."""
    if len(text) != 36 or text[8] != "-" or text[13] != "-" or text[18] != "-" \
            or text[23] != "-":
        raise ValueError("not an 8-4-4-4-12 uuid: %r" % (text,))
    hexdigits = text[0:8] + text[9:13] + text[14:18] + text[19:23] + text[24:36]
    try:
        return unhexlify(hexdigits)
    except Exception:  # binascii.Error on CPython, ValueError on MicroPython
        raise ValueError("not an 8-4-4-4-12 uuid: %r" % (text,)) from None
