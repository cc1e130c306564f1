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

from shared.compat import const
from shared.errors import MALFORMED, UNSUPPORTED, ProtocolError
from shared.protocol import VERSION

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
DEVICE_REPORT = const(12)
MAX_REPORT = const(512)  # DeviceReport: a JSON object of at most this many bytes (section 7)

# Device-to-device packet ids (section 8).
DATA = const(0)
PING = const(1)
PONG = const(2)
SERVICE = const(3)
SERVICE_UPDATE = const(1)  # Service.service: firmware and application updates
MAX_PING = const(32)

# Delivery.status (section 7).
DELIVERED = const(0)
QUEUED = const(1)
UNKNOWN_TARGET = const(2)
STATUS_DENIED = const(3)
QUEUE_FULL = const(4)
STATUS_TOO_LARGE = const(5)
UNAVAILABLE = const(6)
_STATUS_NAMES = const(("DELIVERED", "QUEUED", "UNKNOWN_TARGET", "DENIED", "QUEUE_FULL",
                       "TOO_LARGE", "UNAVAILABLE"))


def status_name(status):
    """A Delivery status as people read it: "DELIVERED", ..., "STATUS_n" if unknown."""
    return _STATUS_NAMES[status] if 0 <= status < len(_STATUS_NAMES) else "STATUS_%d" % status


# DeviceLogin.method (section 7).
LOGIN_NONE = const(0)
LOGIN_TOKEN = const(1)

# The layouts as the spec writes them, one packet a line, in packet id order. KeyCheck is
# its plaintext view: the connection seals the challenge. Pong carries "the Ping's bytes",
# so it has Ping's limit too: a Pong over MAX_PING bytes answers no Ping we could have
# sent, and is MALFORMED.
_REALM = const("""
Heartbeat
Error code:u16 ref:u32 message:str16
Hello version:u8 device_id:uuid pin:opt<hash> eph:key
SendKey static:key
KeyCheck eph:key challenge:bytes32
KeyCheckResponse challenge:bytes32
DeviceLogin method:u8 details:bytes16
ProxyPass peer:uuid msg_id:u32 inner:rest
Welcome heartbeat_s:u16 max_packet:u16 realm_name:str16
Delivery msg_id:u32 status:u8
PeerKeyRequest peer:uuid
PeerKey peer:uuid static:opt<key>
DeviceReport report:str16
""")
_DEVICE = const("""
Data data:rest
Ping data:rest<=32
Pong data:rest<=32
Service service:u8 data:rest
""")
_TEXT = {PROTO_DEVICE: _DEVICE, PROTO_REALM: _REALM}

# Field kinds, one small int each: a fixed-size field is its size in bytes (u8..u64 are
# 1, 2, 4 and 8 and decode to ints; uuid, key, hash and bytes32 are 16 or 32 and decode to
# bytes), and opt<T> is T's kind plus _OPT. Decoders keep a tuple of kinds per packet:
# a table of objects per field would cost a device several KB of heap.
_OPT = const(0x40)
_BYTES16 = const(0x80)
_STR16 = const(0x81)
_REST = const(0x82)
_REST_PING = const(0x83)  # rest<=MAX_PING
_NO_LIMIT = const(0x3FFFFFFF)  # over any packet, and a small int on 32-bit ports


def _packets(protocol):
    """-> [(name, ["field:type", ...]) per packet id] from the text above."""
    packets = []
    for word in _TEXT[protocol].split():
        if ":" in word:
            packets[-1][1].append(word)
        else:
            packets.append((word, []))
    return packets


def _kinds(protocol):
    kinds = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "uuid": 16, "key": 32, "hash": 32,
             "bytes32": 32, "bytes16": _BYTES16, "str16": _STR16, "rest": _REST,
             "rest<=32": _REST_PING}
    layouts = []
    for _, fields in _packets(protocol):
        layout = []
        for field in fields:
            type_name = field[field.find(":") + 1:]
            if type_name.startswith("opt<"):
                layout.append(_OPT + kinds[type_name[4:-1]])
            else:
                layout.append(kinds[type_name])
        layouts.append(tuple(layout))
    return tuple(layouts)


_LAYOUTS = {PROTO_DEVICE: _kinds(PROTO_DEVICE), PROTO_REALM: _kinds(PROTO_REALM)}
del _kinds  # only needed to build _LAYOUTS


class _Column:
    """FIELDS and NAMES: [protocol][packet_id], read from the text above when asked. Only
    tests and error messages ask; kept as tables they would cost a device more heap than
    this code does."""

    def __init__(self, fields):
        self._fields = fields

    def __getitem__(self, protocol):
        if self._fields:
            return tuple(tuple(f[:f.find(":")] for f in fields)
                         for _, fields in _packets(protocol))
        return tuple(name for name, _ in _packets(protocol))


FIELDS = _Column(True)  # FIELDS[protocol][packet_id] -> the field names, in order
NAMES = _Column(False)  # NAMES[protocol][packet_id] -> the packet's name
_FLAG = const((b"\x00", b"\x01"))


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
    """-> (packet_id, fields): fields in the spec's order, fixed-size and bytes16 byte
    strings as bytes; a rest field (ProxyPass.inner, Data.data...) is a slice of packet,
    so a view when packet is a view (a device's receive buffer: no copy of the message)."""
    end = len(packet)
    if end < 2:
        raise _malformed("packet under 2 bytes")
    layouts = _LAYOUTS.get(packet[0]) if packet[0] == protocol else None
    if layouts is None:
        raise ProtocolError(UNSUPPORTED, "protocol %d" % packet[0])
    packet_id = packet[1]
    if packet_id >= len(layouts):
        raise _malformed("unknown packet id %d" % packet_id)
    if packet_id == HELLO and protocol == PROTO_REALM and end > 2 and packet[2] != VERSION:
        # Checked before the layout: another version may lay its Hello out otherwise.
        raise ProtocolError(UNSUPPORTED, "Hello version %d" % packet[2])
    fields = []
    pos = 2
    for kind in layouts[packet_id]:
        if kind >= _REST:
            limit = MAX_PING if kind == _REST_PING else _NO_LIMIT
            if end - pos > limit:
                raise _malformed("body over %d bytes" % limit)
            fields.append(packet[pos:])
            pos = end
            continue
        if kind & _OPT:
            if pos >= end:
                raise _malformed("short body")
            flag = packet[pos]
            pos += 1
            if flag == 0:
                fields.append(None)
                continue
            if flag != 1:
                raise _malformed("opt flag %d" % flag)
            kind -= _OPT
        if kind < _BYTES16:  # fixed size
            stop = pos + kind
            if stop > end:
                raise _malformed("short body")
            value = packet[pos:stop]
            fields.append(int.from_bytes(value, "big") if kind <= 8 else bytes(value))
        else:  # a u16 length, then that many bytes
            if pos + 2 > end:
                raise _malformed("short body")
            start = pos + 2
            stop = start + ((packet[pos] << 8) | packet[pos + 1])
            if stop > end:
                raise _malformed("length past the end")
            if kind == _STR16:  # decoded from a view: no intermediate copy
                fields.append(_utf8(memoryview(packet)[start:stop]))
            else:
                fields.append(bytes(packet[start:stop]))
        pos = stop
    if pos != end:
        raise _malformed("trailing bytes")
    return packet_id, tuple(fields)


def _put(out, kind, value):
    """Append a field's bytes to `out`, or raise ProtocolError(MALFORMED) for a value the
    field cannot carry (whatever decode() would refuse)."""
    if kind >= _REST or kind == _BYTES16:
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        elif not isinstance(value, bytes):
            raise _malformed("bytes needed, not %s" % (type(value).__name__,))
    if kind >= _REST:
        limit = MAX_PING if kind == _REST_PING else _NO_LIMIT
        if len(value) > limit:
            raise _malformed("%d bytes over the limit of %d" % (len(value), limit))
        out += value
        return
    if kind >= _BYTES16:
        if kind == _STR16:
            if not isinstance(value, str):
                raise _malformed("str16 needs a str, not %s" % (type(value).__name__,))
            try:
                value = value.encode()
            except UnicodeError:
                raise _malformed("str16 not encodable as UTF-8") from None
        if len(value) > 0xFFFF:
            raise _malformed("%d bytes over the limit of 65535" % len(value))
        out += len(value).to_bytes(2, "big")
        out += value
        return
    if kind & _OPT:
        out += _FLAG[value is not None]
        if value is None:
            return
        kind -= _OPT
    if kind <= 8:
        if not isinstance(value, int) or not 0 <= value < (1 << (8 * kind)):
            raise _malformed("u%d out of range: %r" % (8 * kind, value))
        out += value.to_bytes(kind, "big")
        return
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise _malformed("bytes needed, not %s" % (type(value).__name__,))
    if len(value) != kind:
        raise _malformed("%d bytes needed, not %d" % (kind, len(value)))
    out += value


def encode(protocol, packet_id, *fields):
    """-> the plaintext packet: header and body."""
    layouts = _LAYOUTS.get(protocol)
    if layouts is None:
        raise ProtocolError(UNSUPPORTED, "cannot encode protocol %r" % (protocol,))
    if not isinstance(packet_id, int) or not 0 <= packet_id < len(layouts):
        raise _malformed("cannot encode packet id %r" % (packet_id,))
    kinds = layouts[packet_id]
    if len(fields) != len(kinds):
        raise _malformed("%s takes %d fields, not %d"
                         % (NAMES[protocol][packet_id], len(kinds), len(fields)))
    out = bytearray((protocol, packet_id))
    for i in range(len(kinds)):
        _put(out, kinds[i], fields[i])
    return bytes(out)


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
