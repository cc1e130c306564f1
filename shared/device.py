# The device side of a realm connection (PROTOCOL.md sections 5 to 7), sans-IO.
import hashlib
from binascii import hexlify

from shared import codec, crypto
from shared.compat import const
from shared.connection import Connection, session_keys
from shared.errors import ProtocolError, MALFORMED, KEY_MISMATCH, KEY_CHECK_FAILED
from shared.events import (Welcomed, ProxyPassPacket, DeliveryPacket, PeerKeyPacket)
from shared.protocol import HANDSHAKE_TIMEOUT_MS, MIN_HEARTBEAT_S, MIN_MAX_PACKET, VERSION

# States, in order: an index into _ALLOWED.
_SENT_HELLO = const(0)  # no pin: waiting for SendKey
_SENT_HELLO_PINNED = const(1)  # sent a pin: SendKey, or KeyCheck if the realm knows our key
_SENT_KEY = const(2)  # sent our SendKey, waiting for KeyCheck
_LOGGING_IN = const(3)  # sent KeyCheckResponse and DeviceLogin, waiting for Welcome
_ESTABLISHED = const(4)

# What the realm may send in each state (PROTOCOL.md sections 5 to 7); Error is allowed in
# every state. Connection checks it once, where packets arrive: the handlers below never
# see another packet.
_ALLOWED = (
    (codec.SEND_KEY,),  # _SENT_HELLO
    (codec.SEND_KEY, codec.KEY_CHECK),  # _SENT_HELLO_PINNED
    (codec.KEY_CHECK,),  # _SENT_KEY
    (codec.WELCOME,),  # _LOGGING_IN
    (codec.HEARTBEAT, codec.PROXY_PASS, codec.DELIVERY, codec.PEER_KEY),  # _ESTABLISHED
)

_KEY_CHECK_LEN = const(90)  # header 2 + e_R 32 + sealed challenge (8 + 32 + 16)


class DeviceConnection(Connection):
    """One connection attempt from a device to its realm.

    realm_public: the pinned realm key, or None for first contact (trust on first use).
    dh2: the cached X25519(private, realm_public), saving a multiplication.
    ephemeral: a (private, public) pair made ahead of time, used for this attempt only.
    token: the login token (str or bytes), or None to log in with method NONE.
    announce_pin: False leaves the pin out of Hello, so the realm answers SendKey (the
    first-contact path) while the device still checks its key against realm_public. For a
    pin no Welcome confirmed with this key pair (provisioned, or kept across a new key
    pair): if the realm has another key bound for the device, the pinned path would fail
    at KeyCheck without saying why; this path makes the realm name it (KEY_MISMATCH).
    """

    _allowed = _ALLOWED

    def __init__(self, device_id, private, public, token, framer, now, realm_public=None,
                 dh2=None, ephemeral=None, handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS,
                 announce_pin=True):
        Connection.__init__(self, framer, now, handshake_timeout_ms)
        self.device_id = device_id
        self._private = private
        self._public = public
        if isinstance(token, str):
            token = token.encode()
        self._token = token
        self._pinned = realm_public
        self._dh2 = dh2 if realm_public is not None else None
        self.realm_public = realm_public  # the key this attempt authenticates
        self.realm_key_changed = False
        self._pinned_path = False
        self._state = _SENT_HELLO if realm_public is None else _SENT_HELLO_PINNED
        if ephemeral is None:
            ephemeral = crypto.generate_keypair()
        self._eph_private, eph_public = ephemeral
        pin = crypto.fingerprint(realm_public) if realm_public is not None and announce_pin \
            else None
        hello = codec.encode(codec.PROTO_REALM, codec.HELLO, VERSION, device_id, pin, eph_public)
        self._th = hashlib.sha256(hello)
        self._send(hello)

    # -- application ------------------------------------------------------------
    def send_proxy(self, peer, msg_id, inner):
        self._require_established()
        self._send(codec.encode(codec.PROTO_REALM, codec.PROXY_PASS, peer, msg_id, inner))

    def request_peer_key(self, peer):
        self._require_established()
        self._send(codec.encode(codec.PROTO_REALM, codec.PEER_KEY_REQUEST, peer))

    # -- handshake --------------------------------------------------------------
    def _on_clear(self, packet_id, fields, packet, events):
        realm_public = fields[0]  # SendKey: the only clear packet _ALLOWED
        if self._pinned is not None and realm_public != self._pinned:
            self.realm_key_changed = True
            raise ProtocolError(KEY_MISMATCH, "realm key changed: it offered fingerprint %s" %
                                hexlify(crypto.fingerprint(realm_public)).decode())
        self.realm_public = realm_public
        self._th.update(packet)
        reply = codec.encode(codec.PROTO_REALM, codec.SEND_KEY, self._public)
        self._th.update(reply)
        self._send(reply)
        self._state = _SENT_KEY

    def _on_handshake_sealed(self, packet_id, packet, events):
        # KeyCheck; straight after Hello, the realm knows our key and took the pinned path.
        self._pinned_path = self._state == _SENT_HELLO_PINNED
        if len(packet) != _KEY_CHECK_LEN:
            raise ProtocolError(MALFORMED, "KeyCheck of %d bytes" % len(packet))
        clear = bytes(packet[:34])
        self._th.update(clear)
        th = self._th.digest()
        self._th = None
        realm_eph = clear[2:]
        dh1 = crypto.x25519(self._eph_private, realm_eph)
        self._eph_private = None  # an ephemeral key is used once
        if self._dh2 is None or self.realm_public != self._pinned:
            self._dh2 = crypto.x25519(self._private, self.realm_public)
        d2r_enc, d2r_mac, r2d_enc, r2d_mac = session_keys(th, dh1, self._dh2)
        self._sealer = crypto.Sealer(d2r_enc, d2r_mac)
        self._opener = crypto.Opener(r2d_enc, r2d_mac)
        # The key material is let go before the ciphers' first use, the handshake's peak
        # of heap on a device: there, with a few KB free, each block freed counts.
        del th, realm_eph, dh1, d2r_enc, d2r_mac, r2d_enc, r2d_mac
        try:
            challenge = self._opener.open(clear, packet[34:])
        except ProtocolError:
            raise ProtocolError(KEY_CHECK_FAILED, "the realm did not prove it holds the key "
                                                  "it claims")
        self._sealed = True
        self._send(codec.encode(codec.PROTO_REALM, codec.KEY_CHECK_RESPONSE, challenge))
        if self._token is None:
            login = codec.encode(codec.PROTO_REALM, codec.DEVICE_LOGIN, codec.LOGIN_NONE, b"")
        else:
            login = codec.encode(codec.PROTO_REALM, codec.DEVICE_LOGIN, codec.LOGIN_TOKEN,
                                 self._token)
        self._send(login)
        self._token = None  # sent once: not kept for the session
        self._state = _LOGGING_IN

    # -- session ----------------------------------------------------------------
    def _on_sealed(self, packet_id, fields, events):
        if packet_id == codec.WELCOME:
            heartbeat_s, max_packet, realm_name = fields
            if heartbeat_s < MIN_HEARTBEAT_S or max_packet < MIN_MAX_PACKET:
                raise ProtocolError(MALFORMED, "Welcome out of range: heartbeat %d s, "
                                               "max_packet %d" % (heartbeat_s, max_packet))
            self._state = _ESTABLISHED
            self._start_session(heartbeat_s, max_packet)
            events.append(Welcomed(realm_name, heartbeat_s, max_packet, self.realm_public,
                                   self._dh2, self._pinned_path))
        elif packet_id == codec.PROXY_PASS:
            events.append(ProxyPassPacket(fields[0], fields[1], fields[2]))
        elif packet_id == codec.DELIVERY:
            events.append(DeliveryPacket(fields[0], fields[1]))
        else:  # PEER_KEY
            events.append(PeerKeyPacket(fields[0], fields[1]))
