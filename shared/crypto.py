# The protocol's cryptography (PROTOCOL.md sections 5, 6, 8), one API on both
# interpreters; the backends are picked in shared/compat.py.
import struct

from shared import compat
from shared.compat import const, sha256, sha256_after, sha256_prefix, urandom
from shared.errors import MALFORMED, ProtocolError

# Private module constants are const(): a device then keeps no name for them.
_BASE_POINT = const(b"\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
                    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
_BYTES_OF_1 = const((2**512 - 1) // 255)  # 64 bytes of 0x01
_IPAD = const(_BYTES_OF_1 * 0x36)
_OPAD = const(_BYTES_OF_1 * 0x5C)
_KEYSTREAM_STEP = const(256)  # keystream bytes per ECB call: 16 blocks
_ZERO8 = const(b"\x00\x00\x00\x00\x00\x00\x00\x00")
_TAG_SIZE = const(16)
_MIN_BODY = const(24)  # n:u64 and the tag
_2_64 = const(2**64)


def x25519(scalar, u):
    """X25519(scalar, u): 32 bytes, all zero for a low-order u (the caller refuses those)."""
    if len(scalar) != 32 or len(u) != 32:
        raise ValueError("X25519 takes a 32-byte scalar and a 32-byte u")
    return compat.x25519(scalar, u)


def public_key(private):
    return x25519(private, _BASE_POINT)


def generate_keypair():
    if compat.x25519_keypair is not None:
        return compat.x25519_keypair()
    private = urandom(32)
    return private, public_key(private)


def fingerprint(key):
    return sha256(key)


def _hmac_pads(key):
    """HMAC-SHA256's two padded keys, as SHA-256 starts; made once per key by Sealer and
    Opener."""
    if len(key) > 64:
        key = sha256(key)
    k = int.from_bytes(key, "big") << (8 * (64 - len(key)))  # zero-padded to 64 bytes
    return (sha256_prefix((k ^ _IPAD).to_bytes(64, "big")),
            sha256_prefix((k ^ _OPAD).to_bytes(64, "big")))


def _hmac(pads, a, b, c):
    """HMAC-SHA256 of a | b | c, without concatenating them. Three parts, because
    both users (the tag, HKDF-Expand) have three; a varargs loop costs twice as much
    on MicroPython."""
    inner = sha256_after(pads[0])
    inner.update(a)
    inner.update(b)
    inner.update(c)
    outer = sha256_after(pads[1])
    outer.update(inner.digest())
    return outer.digest()


def hmac_sha256(key, data):
    return _hmac(_hmac_pads(key), data, b"", b"")


def hkdf_extract(salt, ikm):
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk, info, length):
    if not 0 <= length <= 255 * 32:
        raise ValueError("HKDF-Expand length out of range")
    pads = _hmac_pads(prk)
    count = (length + 31) // 32
    okm = bytearray(32 * count)  # one buffer first: kept blocks would fragment the heap
    block = b""
    for i in range(count):
        block = _hmac(pads, block, info, bytes((i + 1,)))
        okm[32 * i:32 * i + 32] = block
    return bytes(memoryview(okm)[:length])


def ctr_from_ecb(ecb, iv, data, out=None):
    """AES-CTR from an ECB block function: the counter is the whole 16-byte block,
    big-endian, starting at iv. -> out, a new bytearray if None; out may be data itself
    (decrypted where it lies: a device's receive buffer, its send buffer). The keystream
    is made 16 blocks at a time, in place in one small buffer, and XORed as two big ints
    of that size (a byte loop is about 3x slower on MicroPython): no block the size of
    the data is asked for but out, where a whole keystream and ints as large as the data
    each needed one a device's fragmented heap may not have (a 600-byte message failed so)."""
    size = len(data)
    if out is None:
        out = bytearray(size)
    # No more keystream than the data needs: a small packet encrypts its few blocks only.
    keystream = bytearray(min(_KEYSTREAM_STEP, (size + 15) & ~15))
    stream = memoryview(keystream)
    data = memoryview(data)
    hi, lo = struct.unpack(">QQ", iv)
    for start in range(0, size, _KEYSTREAM_STEP):
        n = min(_KEYSTREAM_STEP, size - start)
        blocks = stream[:(n + 15) & ~15]
        for offset in range(0, len(blocks), 16):
            struct.pack_into(">QQ", keystream, offset, hi, lo)
            lo += 1
            if lo == _2_64:  # carry into the high half: the counter is 128 bits
                lo = 0
                hi = (hi + 1) % _2_64
        ecb(blocks, blocks)
        out[start:start + n] = (int.from_bytes(data[start:start + n], "big") ^ int.from_bytes(
            stream[:n], "big")).to_bytes(n, "big")
    return out


def _ctr(key):
    """The key as _crypt() takes it: the fastest backend's CTR object (compat.aes256_ctr),
    or the key itself (the ECB context is made per call, from the key: kept, it would cost
    a device 0.4 KB of heap per direction of its session for good, and a function keeping
    the key 0.2 KB; its key expansion takes microseconds)."""
    if len(key) != 32:
        raise ValueError("AES-256 takes a 32-byte key")
    return compat.aes256_ctr(key) if compat.aes256_ctr else key


if compat.aes256_ctr:
    def _crypt(ctr, iv, data, out=None):
        """AES-256-CTR(iv, data) with a key _ctr() made: new bytes, or written into out
        (which may be data: in place)."""
        return ctr(iv, data, out)
else:
    def _crypt(key, iv, data, out=None):
        return ctr_from_ecb(compat.aes256_ecb(key), iv, data, out)


def aes256_ctr(key, iv, data):
    return _crypt(_ctr(key), iv, data)


def _ct_equal(a, b):
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):  # indexing is twice as fast as zip on MicroPython
        diff |= a[i] ^ b[i]
    return diff == 0


# Constant time for equal lengths; the length itself is not secret.
ct_equal = compat.compare_digest or _ct_equal


class _Keys:
    """One direction's (enc, mac) keys, prepared for many packets: the AES context and
    HMAC's padded keys. Releasable keys (the realm's sessions) keep the raw keys and
    prepare at their first packet; release() drops what was prepared (about 2 KiB on
    CPython) until the next one, so an idle session holds only its 64 bytes of keys."""

    __slots__ = ("ctr", "pads", "_raw")

    def __init__(self, enc, mac, releasable=False):
        if releasable:
            if len(enc) != 32:
                raise ValueError("AES-256 takes a 32-byte key")
            self._raw = enc + mac  # one object, not three
            self.ctr = self.pads = None
        else:  # no _raw: a device never releases, and each attribute costs it heap
            self._prepare(enc, mac)

    def _prepare(self, enc, mac):
        self.ctr = _ctr(enc)
        self.pads = _hmac_pads(mac)

    def _prepare_again(self):
        raw = self._raw
        self._prepare(raw[:32], raw[32:])

    def release(self):
        """Forget the prepared keys (releasable keys only) until the next packet."""
        self.ctr = self.pads = None


class Sealer(_Keys):
    """One sending direction: seals with nonces 0, 1, 2, ..."""

    __slots__ = ("n",)

    def __init__(self, enc, mac, releasable=False):
        _Keys.__init__(self, enc, mac, releasable)
        self.n = 0

    def seal(self, ad, plaintext):
        """body = n:u64 | AES-256-CTR(enc, n:u64|0:u64, plaintext) | HMAC(mac, ad|n|ct)[:16],
        a new bytearray."""
        body = bytearray(len(plaintext) + _MIN_BODY)
        body[8:8 + len(plaintext)] = plaintext
        return self.seal_in_place(ad, body)

    def seal_in_place(self, ad, body):
        """Seals body (a writable buffer: n:u64 | plaintext | tag, the plaintext in place)
        where it lies: the nonce, the plaintext encrypted over itself, the tag. -> body."""
        if self.ctr is None:
            self._prepare_again()
        view = memoryview(body)
        end = len(view) - _TAG_SIZE
        struct.pack_into(">Q", view, 0, self.n)
        nonce = view[:8]
        ct = view[8:end]
        _crypt(self.ctr, bytes(nonce) + _ZERO8, ct, ct)
        self.n += 1
        view[end:] = _hmac(self.pads, ad, nonce, ct)[:_TAG_SIZE]
        return body


class Opener(_Keys):
    """One receiving direction: accepts only nonces above the last accepted (gaps allowed)."""

    __slots__ = ("last",)

    def __init__(self, enc, mac, releasable=False):
        _Keys.__init__(self, enc, mac, releasable)
        self.last = None

    def open(self, ad, body, in_place=False):
        """The plaintext of body, its nonce above `last` (then `last`); else
        ProtocolError(MALFORMED). in_place: body is writable and decrypted where it
        lies; the plaintext is a view of it."""
        if len(body) < _MIN_BODY:
            raise ProtocolError(MALFORMED, "sealed body under 24 bytes")
        n = struct.unpack_from(">Q", body, 0)[0]
        if self.last is not None and n <= self.last:
            raise ProtocolError(MALFORMED, "nonce %d not above %d" % (n, self.last))
        if self.ctr is None:
            self._prepare_again()
        body = memoryview(body)
        end = len(body) - _TAG_SIZE
        nonce = body[:8]
        ct = body[8:end]
        if not ct_equal(_hmac(self.pads, ad, nonce, ct)[:_TAG_SIZE], body[end:]):
            raise ProtocolError(MALFORMED, "bad tag")
        self.last = n
        return _crypt(self.ctr, bytes(nonce) + _ZERO8, ct, ct if in_place else None)


def open_packet(opener, packet):
    """header | plaintext of a sealed packet (its 2-byte clear header, then the sealed
    body), opened by `opener` (ProtocolError as Opener.open). From bytes: new bytes. A view
    of a writable buffer (a device's receive buffer) is opened where it lies, with no block
    of its size asked for: the result is a view of it, the header moved next to the
    plaintext (over the nonce, read by then)."""
    header = bytes(packet[:2])
    if isinstance(packet, bytes):
        return header + opener.open(header, memoryview(packet)[2:])
    packet = memoryview(packet)  # a bytearray's slices would be copies
    opener.open(header, packet[2:], True)
    packet[8:10] = header
    return packet[8:len(packet) - _TAG_SIZE]


def seal(enc, mac, n, ad, plaintext):
    """A sealed body with nonce n (see Sealer.seal)."""
    sealer = Sealer(enc, mac)
    sealer.n = n
    return sealer.seal(ad, plaintext)


def open_body(enc, mac, ad, body):
    """(n, plaintext) of a sealed body; ProtocolError(MALFORMED) if it does not open.
    No nonce policy: that is Opener's."""
    opener = Opener(enc, mac)
    plaintext = opener.open(ad, body)
    return opener.last, plaintext
