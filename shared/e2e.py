# End-to-end sealing between two devices (PROTOCOL.md section 8), inside ProxyPass.inner.
from shared import codec, crypto
from shared.compat import const
from shared.errors import ProtocolError, MALFORMED, KEY_CHECK_FAILED

E2E_INFO = b"realm/1 e2e"
_MAX_COUNTER = const(0xFFFFFFFF)


def e2e_keys(my_id, my_private, peer_id, peer_public):
    """(send_enc, send_mac, recv_enc, recv_mac) for my_id talking to peer_id."""
    k = crypto.x25519(my_private, peer_public)
    if k == bytes(32):
        raise ProtocolError(KEY_CHECK_FAILED, "peer key is a low-order point")
    i_am_lo = my_id < peer_id
    lo_hi = my_id + peer_id if i_am_lo else peer_id + my_id
    okm = crypto.hkdf_expand(crypto.hkdf_extract(lo_hi, k), E2E_INFO, 128)
    if i_am_lo:
        return okm[0:32], okm[32:64], okm[64:96], okm[96:128]
    return okm[64:96], okm[96:128], okm[0:32], okm[32:64]


class E2E:
    """A device's end-to-end layer: peer keys, the shared send nonce, per-peer replay state.

    The send nonce is boot:u32 | counter:u32. `boot` must already be written to flash
    for this boot; when the counter runs out, on_new_boot(boot) is called to write the
    increased boot count before the packet that uses it is sealed.
    """

    def __init__(self, my_id, my_private, boot, on_new_boot=None):
        self._id = my_id
        self._private = my_private
        self.boot = boot
        self.counter = 0
        self._on_new_boot = on_new_boot
        self._peers = {}  # peer id -> [send_enc, send_mac, recv_enc, recv_mac, last_n]
        self.dropped = 0  # inner packets that failed to open or were replays

    def has_peer(self, peer_id):
        return peer_id in self._peers

    def add_peer(self, peer_id, peer_public):
        """Derive the keys for a peer (one X25519 multiplication). How many peers are kept
        is the caller's bound (the Endpoint's pins)."""
        keys = list(e2e_keys(self._id, self._private, peer_id, peer_public))
        keys.append(-1)
        self._peers[peer_id] = keys

    def forget_peer(self, peer_id):
        self._peers.pop(peer_id, None)

    def seal(self, peer_id, dpacket_id, *fields):
        keys, n = self.take_nonce(peer_id)
        header = codec.encode(codec.PROTO_DEVICE, dpacket_id, *fields)
        return header[:2] + crypto.seal(keys[0], keys[1], n, header[:2], header[2:])

    def take_nonce(self, peer_id):
        """(the peer's keys, the nonce of the next inner packet sent to it): for seal(),
        and for shared/sending.py, which seals a large one where it is sent from."""
        keys = self._peers[peer_id]
        if self.counter > _MAX_COUNTER:
            self.boot += 1
            self.counter = 0
            if self._on_new_boot is not None:
                self._on_new_boot(self.boot)
        self.counter += 1
        return keys, (self.boot << 32) | (self.counter - 1)

    def open(self, peer_id, inner):
        """(dpacket_id, fields) of an inner packet from peer_id; ProtocolError if refused.
        A view is opened where it lies, and a rest field (Data.data...) is a view of it."""
        keys = self._peers.get(peer_id)
        try:
            if keys is None:
                raise ProtocolError(MALFORMED, "no key for this peer")
            if len(inner) < 2:
                raise ProtocolError(MALFORMED, "inner packet too short")
            opener = crypto.Opener(keys[2], keys[3])
            packet = crypto.open_packet(opener, inner)  # in place if inner is a view
            n = opener.last
            if n <= keys[4]:
                raise ProtocolError(MALFORMED, "replayed or old end-to-end packet")
            result = codec.decode(packet, codec.PROTO_DEVICE)
        except ProtocolError:
            self.dropped += 1
            raise
        keys[4] = n
        return result
