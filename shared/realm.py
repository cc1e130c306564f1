# The realm side of a device connection (PROTOCOL.md sections 5 to 7), sans-IO.
# Registry answers come from the shell: the bound_key callback during the handshake,
# and accept_login()/refuse_login() in answer to a LoginRequest event.
import hashlib
import json

from shared import codec, compat, crypto
from shared.compat import const, urandom
from shared.connection import SESSION_INFO, ZERO_KEY, Connection, session_keys
from shared.crypto import ct_equal
from shared.errors import NAMES, ProtocolError, KEY_MISMATCH, KEY_CHECK_FAILED, MALFORMED, \
    UNEXPECTED
from shared.events import Closed, Event, ProxyPassPacket
from shared.protocol import DEFAULT_MAX_PACKET, HANDSHAKE_TIMEOUT_MS

# States, in order: an index into _ALLOWED.
_AWAIT_HELLO = const(0)
_AWAIT_SEND_KEY = const(1)
_AWAIT_RESPONSE = const(2)
_AWAIT_LOGIN = const(3)
_AWAIT_DECISION = const(4)  # LoginRequest handed to the shell
_ESTABLISHED = const(5)

# Not a wire code (LINK_LOST's kind, never in an Error packet): a device on a serial link
# sent a new Hello, so it restarted (RealmConnection.trailing_data carries the Hello on).
# Here, not in shared/errors.py, which every device loads: a name costs a device's heap.
RESTARTED = const(-1)
NAMES[RESTARTED] = "RESTARTED"

_PROXY_HEADER = bytes((codec.PROTO_REALM, codec.PROXY_PASS))
_KEY_CHECK_HEADER = bytes((codec.PROTO_REALM, codec.KEY_CHECK))
_PROXY_FIXED = const(20)  # ProxyPass: peer:uuid, msg_id:u32, then inner
_SEALED = const(26)  # a sealed packet beyond its plaintext: header 2, n:u64, tag 16
_TAG_SIZE = const(16)
_ZERO8 = const(b"\x00\x00\x00\x00\x00\x00\x00\x00")

# What a device may send in each state (PROTOCOL.md sections 5 to 7); Error is allowed in
# every state. Connection checks it once, where packets arrive: the handlers below never
# see another packet. A packet that grows the session (a device's report, say) is added
# to the _ESTABLISHED row and handled in _on_sealed.
_ALLOWED = (
    (codec.HELLO,),  # _AWAIT_HELLO
    (codec.SEND_KEY,),  # _AWAIT_SEND_KEY
    (codec.KEY_CHECK_RESPONSE,),  # _AWAIT_RESPONSE
    (codec.DEVICE_LOGIN,),  # _AWAIT_LOGIN
    (),  # _AWAIT_DECISION: nothing until the realm has answered the login
    (codec.HEARTBEAT, codec.PROXY_PASS, codec.PEER_KEY_REQUEST,  # _ESTABLISHED
     codec.DEVICE_REPORT),
)

# DeviceReport's known keys (section 7) by the JSON type they must have. Integers are
# bounded to what JavaScript holds exactly: the realm shows them on a web page.
_REPORT_TEXT = ("fw", "app", "board", "link")
_REPORT_COUNTS = ("up", "boot", "heap")  # never negative
_MAX_SAFE_INT = 9007199254740991  # 2**53 - 1


def parse_report(text):
    """The known fields of a DeviceReport's JSON text, as a dict; ProtocolError(MALFORMED)
    for anything but a JSON object of at most MAX_REPORT bytes whose known keys have their
    types. Unknown keys are dropped; a null value counts as absent."""
    if len(text) > codec.MAX_REPORT or len(text.encode()) > codec.MAX_REPORT:
        raise ProtocolError(MALFORMED, "DeviceReport over %d bytes" % codec.MAX_REPORT)
    try:
        value = json.loads(text)
    except (ValueError, RuntimeError):  # RuntimeError: nesting too deep
        raise ProtocolError(MALFORMED, "DeviceReport is not JSON")
    if not isinstance(value, dict):
        raise ProtocolError(MALFORMED, "DeviceReport is not a JSON object")
    report = {}
    for key in value:
        field = value[key]
        if field is None or not (key in _REPORT_TEXT or key in _REPORT_COUNTS or key == "rssi"):
            continue
        if key in _REPORT_TEXT:
            ok = isinstance(field, str)
        else:
            low = 0 if key in _REPORT_COUNTS else -_MAX_SAFE_INT
            ok = isinstance(field, int) and not isinstance(field, bool) and \
                low <= field <= _MAX_SAFE_INT
        if not ok:
            raise ProtocolError(MALFORMED, "DeviceReport %s: wrong type or range" % key)
        report[key] = field
    return report


# The realm's session keys open and seal whole packets (bytes in, new bytes out): the
# relay's seal_packet() and open_packet(). The implementation is picked here, once:
# on CPython (every realm) they are built by joins, which cost CPython less than the
# memoryview slicing with which a device seals and opens where the bytes lie, and the
# prepared keys are OpenSSL's own objects, each set up once per direction: the AES-CTR
# context (`ctr`, its nonce reset per packet) and the HMAC (`pads`, copied per packet),
# called directly, with no function of ours between (compat's names for them are
# CPython's only). On MicroPython (only the tests run a realm there) they are crypto's
# Sealer and Opener with those two calls. The same bytes and errors as crypto's either
# way (tests/core/test_relay_path.py).
_AES_CTR = getattr(compat, "aes256_ctr_context", None)
_HKDF = getattr(compat, "hkdf_sha256", None)


def _session_keys(th, dh1, dh2):
    """connection.session_keys; on CPython with the HKDF in one call of OpenSSL's (half
    the cost of crypto's, which a device runs: its heap has no room for a second one)."""
    if _HKDF is None or dh1 == ZERO_KEY or dh2 == ZERO_KEY:  # zero: session_keys refuses
        return session_keys(th, dh1, dh2)
    okm = _HKDF(th, dh1 + dh2, SESSION_INFO, 128)
    return okm[0:32], okm[32:64], okm[64:96], okm[96:128]


if _AES_CTR is None:  # MicroPython
    class _RelaySealer(crypto.Sealer):
        __slots__ = ()

        def seal_packet(self, header, plain):
            """header | seal(header, plain)."""
            return header + self.seal(header, plain)

    class _RelayOpener(crypto.Opener):
        __slots__ = ()

        def open_packet(self, packet):
            """The plaintext of a sealed packet (bytes: header | body, the header its
            associated data), as open(header, body)."""
            return self.open(packet[:2], memoryview(packet)[2:])
else:
    _HMAC_KEY = compat.hmac_sha256_key

    def _prepare_keys(keys, enc, mac):
        keys.ctr = _AES_CTR(enc)
        keys.pads = _HMAC_KEY(mac)

    class _RelaySealer(crypto.Sealer):
        __slots__ = ()
        _prepare = _prepare_keys

        def seal(self, ad, plaintext):
            return self.seal_packet(ad, plaintext)[len(ad):]

        def seal_in_place(self, ad, body):
            view = memoryview(body)
            view[:] = self.seal(ad, bytes(view[8:len(view) - _TAG_SIZE]))
            return body

        def seal_packet(self, header, plain):
            """header | seal(header, plain)."""
            if self.ctr is None:
                self._prepare_again()
            nonce = self.n.to_bytes(8, "big")
            self.n += 1
            ctr = self.ctr
            ctr.reset_nonce(nonce + _ZERO8)
            signed = b"".join((header, nonce, ctr.update(plain)))
            mac = self.pads.copy()
            mac.update(signed)
            return signed + mac.finalize()[:_TAG_SIZE]

    class _RelayOpener(crypto.Opener):
        __slots__ = ()
        _prepare = _prepare_keys

        def open(self, ad, body, in_place=False):
            plain = self.open_packet(bytes(ad) + bytes(body))
            if not in_place:
                return plain
            body = memoryview(body)
            body[8:8 + len(plain)] = plain
            return body[8:8 + len(plain)]

        def open_packet(self, packet):
            """The plaintext of a sealed packet (bytes: header | body, the header its
            associated data), as open(header, body)."""
            if len(packet) < _SEALED:
                raise ProtocolError(MALFORMED, "sealed body under 24 bytes")
            nonce = packet[2:10]
            n = int.from_bytes(nonce, "big")
            if self.last is not None and n <= self.last:
                raise ProtocolError(MALFORMED, "nonce %d not above %d" % (n, self.last))
            if self.ctr is None:
                self._prepare_again()
            end = len(packet) - _TAG_SIZE
            mac = self.pads.copy()
            mac.update(packet[:end])
            if not ct_equal(mac.finalize()[:_TAG_SIZE], packet[end:]):
                raise ProtocolError(MALFORMED, "bad tag")
            self.last = n
            ctr = self.ctr
            ctr.reset_nonce(nonce + _ZERO8)
            return ctr.update(packet[10:end])


# What every connection of a realm computes alike, made once: its key's fingerprint (what
# a device that pinned it sends) and its Welcome (per settings).
_pins = {}  # realm public key -> its fingerprint
_welcomes = {}  # (realm_name, heartbeat_s, max_packet) -> the Welcome packet, unsealed


def _kept(table, key, make, *args):
    """table[key], made by make(*args) the first time. A few kept: a realm has one key and
    one Welcome; tests make a few."""
    value = table.get(key)
    if value is None:
        value = make(*args)
        if len(table) >= 4:
            table.clear()
        table[key] = value
    return value


# The realm's own connection events (shared/events.py has those both sides make): here,
# not there, since no device loads them.
class LoginRequest(Event):
    """Answer with conn.accept_login(...) or conn.refuse_login(code, message)."""
    _fields = "device_id method details device_public"

    def __init__(self, device_id, method, details, device_public):
        # Event's, without its loop over _fields: one per login, and no device pays for it
        self.device_id = device_id
        self.method = method
        self.details = details
        self.device_public = device_public


class PeerKeyRequestPacket(Event):
    """Answer with conn.send_peer_key(peer, key_or_None)."""
    _fields = "peer"


class DeviceReportPacket(Event):
    """The device's DeviceReport, its known keys only (the device's word, for display;
    never trusted for anything else)."""
    _fields = "report"


class RealmConnection(Connection):
    """The realm's end of one device link.

    bound_key(device_id) -> the D_pub bound to that device, or None.
    ephemeral, challenge: injectable for test vectors; made fresh otherwise.
    dh2_cache: a dict-like (get, item assignment) the shell keeps across connections:
    dh2 = X25519(R, D_pub) depends on the bound D_pub alone, so it is computed once per
    bound key, not once per login. Only bound keys go in (never one a peer just offered).

    On a link that is one byte stream for its whole life (a serial one: the framer's
    `continuous`), a valid clear Hello after the first one means the device restarted:
    the connection closes at once with RESTARTED (no Error: the new handshake would read
    it; what it had queued is dropped) and `trailing_data` then holds the bytes for the
    shell to feed a new connection on the same link: that Hello, framed, and any packet
    after it. A Hello cannot be mistaken for a sealed packet: a device never seals one.
    On TCP a restart opens a new connection, and such a Hello stays an error.
    """

    _allowed = _ALLOWED
    __slots__ = ("_handshake_deadline", "_private", "_public", "_bound_key", "_ephemeral",
                 "_challenge", "_th", "_device_eph", "device_id", "device_public",
                 "pinned_path", "_relaying", "_dh2_cache", "trailing_data", "__weakref__")

    def __init__(self, private, public, framer, now, bound_key,
                 handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS, ephemeral=None, challenge=None,
                 hello_timeout_ms=None, dh2_cache=None):
        Connection.__init__(self, framer, now, handshake_timeout_ms)
        # The Hello may get less time than the whole handshake: a connection that sends
        # nothing (one of a flood of idle ones) is closed as soon as it is late.
        self._handshake_deadline = self._deadline
        if hello_timeout_ms is not None and hello_timeout_ms < handshake_timeout_ms:
            self._deadline = now + hello_timeout_ms
        self._private = private
        self._public = public
        self._bound_key = bound_key
        self._dh2_cache = dh2_cache
        self._ephemeral = ephemeral
        self._challenge = challenge
        self._state = _AWAIT_HELLO
        self._th = None
        self._device_eph = None
        self.device_id = None
        self.device_public = None
        self.pinned_path = False  # the device's pin matched: no SendKey exchanged
        self._relaying = False  # in receive_relay()
        self.trailing_data = None  # the next connection's bytes, once the device restarted

    # -- the shell's answers ----------------------------------------------------
    def accept_login(self, realm_name, heartbeat_s, max_packet):
        if self._state != _AWAIT_DECISION or self.closed:
            raise ProtocolError(UNEXPECTED, "no login to accept")
        self._send(_kept(_welcomes, (realm_name, heartbeat_s, max_packet), codec.encode,
                         codec.PROTO_REALM, codec.WELCOME, heartbeat_s, max_packet, realm_name))
        self._state = _ESTABLISHED
        self._bound_key = None  # asked only in the handshake; the shell's callback may be big
        self._start_session(heartbeat_s, max_packet)

    def refuse_login(self, code, message=""):
        if self._state != _AWAIT_DECISION:
            raise ProtocolError(UNEXPECTED, "no login to refuse")
        self.close(code, message)

    def send_proxy(self, peer, msg_id, inner):
        """Relay a ProxyPass to this device (a stored packet, one from another node)."""
        self._require_established()
        if len(peer) != 16 or not 0 <= msg_id <= 0xFFFFFFFF:
            raise ProtocolError(MALFORMED, "ProxyPass peer or msg_id out of range")
        self.queue_frame(self._framer.frame(self._sealer.seal_packet(
            _PROXY_HEADER, peer + msg_id.to_bytes(4, "big") + inner)))

    def relay_body(self, sender, body):
        """Relay to this device a ProxyPass body that receive_relay() opened on another
        link (peer:16 | msg_id:u32 | inner), with `sender` in its peer's place. ->
        codec.DELIVERED, or codec.STATUS_TOO_LARGE (nothing sent) if it is over this
        link's max_packet."""
        if self.closed or not self.established:
            self._require_established()
        framer = self._framer
        if len(body) + _SEALED > framer.max_packet:
            return codec.STATUS_TOO_LARGE
        # queue_frame() inlined: the call cost the relay 1.4 % more instructions a packet
        # (callgrind), and a realm's queue is always a bytearray (a device's may be a view).
        self._out += framer.frame(self._sealer.seal_packet(_PROXY_HEADER, sender + body[16:]))
        self._last_sent = self._now
        return codec.DELIVERED

    def receive_relay(self, data, now):
        """receive_data for the realm's relay path: in an established session each
        ProxyPass is opened and comes as its plaintext body (peer:16 | msg_id:u32 | inner,
        at least 20 bytes; bytes on CPython; for relay_body()) in the list of events, in
        its place among them, instead of as a ProxyPassPacket. The same checks and errors."""
        self._relaying = True
        try:
            return self.receive_data(data, now)
        finally:
            self._relaying = False

    def release_keys(self):
        """Drop the session's prepared keys (about 4 KiB on CPython) until its next packet
        either way: the realm does so for sessions that have gone quiet."""
        if self._sealer is not None:
            self._sealer.release()
            self._opener.release()

    def quiet_since(self):
        """The clock (ms) when the last packet was sent or received."""
        return max(self._last_sent, self._last_received)

    def send_delivery(self, msg_id, status):
        self._require_established()
        self._send(codec.encode(codec.PROTO_REALM, codec.DELIVERY, msg_id, status))

    def send_peer_key(self, peer, key):
        self._require_established()
        self._send(codec.encode(codec.PROTO_REALM, codec.PEER_KEY, peer, key))

    def _receive_packet(self, packet, events):
        if packet[1] == codec.PROXY_PASS and self._relaying and packet[0] == codec.PROTO_REALM \
                and self._state == _ESTABLISHED and self.trailing_data is None and \
                not self.closed:  # the relay's: first, and alone (a ProxyPass is no Hello)
            body = self._opener.open_packet(packet)  # MALFORMED unless it opens
            if len(body) < _PROXY_FIXED:
                raise ProtocolError(MALFORMED, "short body")  # what codec.decode says
            events.append(body)
        elif self.trailing_data is not None:  # after a restart: the next connection's
            self.trailing_data += self._framer.frame(packet)
        elif packet[1] == codec.HELLO and self._state != _AWAIT_HELLO and \
                self._framer.continuous and packet[0] == codec.PROTO_REALM:
            self._restarted(packet, events)
        else:
            Connection._receive_packet(self, packet, events)

    def _restarted(self, hello, events):
        codec.decode(hello)  # MALFORMED, as before, unless it is a whole, valid Hello
        self._framer.max_packet = DEFAULT_MAX_PACKET  # a new connection's, for what follows
        self.trailing_data = self._framer.preamble + self._framer.frame(hello)
        self._out = bytearray()
        self.error = ProtocolError(RESTARTED, "the device restarted: a new Hello on the "
                                              "link", True)
        self.closed = True
        events.append(Closed(self.error))

    # -- handshake --------------------------------------------------------------
    def _late(self):
        if self._deadline < self._handshake_deadline:
            return "no Hello in time"
        return Connection._late(self)

    def _on_clear(self, packet_id, fields, packet, events):
        if packet_id == codec.HELLO:
            self._deadline = self._handshake_deadline
            _version, self.device_id, pin, self._device_eph = fields
            self._th = hashlib.sha256(packet)
            bound = self._bound_key(self.device_id)
            if pin is not None and bound is not None and \
                    pin == _kept(_pins, self._public, crypto.fingerprint, self._public):
                self.device_public = bound
                self.pinned_path = True
                self._send_key_check(bound)
            else:
                reply = codec.encode(codec.PROTO_REALM, codec.SEND_KEY, self._public)
                self._th.update(reply)
                self._send(reply)
                self._state = _AWAIT_SEND_KEY
        else:  # SEND_KEY
            device_public = fields[0]
            bound = self._bound_key(self.device_id)
            if bound is not None and bound != device_public:
                raise ProtocolError(KEY_MISMATCH, "device key differs from the bound key")
            self.device_public = device_public
            self._th.update(packet)
            self._send_key_check(bound)

    def _dh2(self, bound):
        """X25519(R, D_pub); from the cache when D_pub is `bound`, the device's bound key
        (None: no key bound, D_pub is only the peer's word)."""
        cache = self._dh2_cache if bound is not None else None
        dh2 = cache.get(bound) if cache is not None else None
        if dh2 is None:
            dh2 = crypto.x25519(self._private, self.device_public)
            if cache is not None:
                cache[bound] = dh2
        return dh2

    def _send_key_check(self, bound):
        if self._ephemeral is None:
            self._ephemeral = crypto.generate_keypair()
        eph_private, eph_public = self._ephemeral
        self._ephemeral = None
        clear = _KEY_CHECK_HEADER + eph_public  # KeyCheck's clear part: header and e_R
        self._th.update(clear)
        th = self._th.digest()
        self._th = None
        dh1 = crypto.x25519(eph_private, self._device_eph)
        self._device_eph = None
        dh2 = self._dh2(bound)
        d2r_enc, d2r_mac, r2d_enc, r2d_mac = _session_keys(th, dh1, dh2)
        self._sealer = _RelaySealer(r2d_enc, r2d_mac, True)  # releasable: release_keys()
        self._opener = _RelayOpener(d2r_enc, d2r_mac, True)
        challenge = self._challenge or urandom(32)
        self._challenge = challenge
        # KeyCheck is sealed after its clear e_R, although the realm is still in clear mode.
        self.queue_frame(self._framer.frame(clear + self._sealer.seal(clear, challenge)))
        self._state = _AWAIT_RESPONSE

    def _on_handshake_sealed(self, packet_id, packet, events):
        header = packet[:2]
        try:
            plain = self._opener.open(header, packet[2:])
        except ProtocolError:
            raise ProtocolError(KEY_CHECK_FAILED, "KeyCheckResponse did not open: the "
                                                  "device does not hold its key")
        self._sealed = True
        _packet_id, fields = codec.decode(header + plain)
        if not ct_equal(fields[0], self._challenge):
            raise ProtocolError(KEY_CHECK_FAILED, "wrong challenge")
        self._challenge = None
        self._state = _AWAIT_LOGIN

    # -- session ----------------------------------------------------------------
    def _on_sealed(self, packet_id, fields, events):
        if packet_id == codec.PROXY_PASS:
            events.append(ProxyPassPacket(fields[0], fields[1], fields[2]))
        elif packet_id == codec.PEER_KEY_REQUEST:
            events.append(PeerKeyRequestPacket(fields[0]))
        elif packet_id == codec.DEVICE_REPORT:
            events.append(DeviceReportPacket(parse_report(fields[0])))
        else:  # DEVICE_LOGIN
            self._state = _AWAIT_DECISION
            events.append(LoginRequest(self.device_id, fields[0], fields[1],
                                       self.device_public))
