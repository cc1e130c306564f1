# Ed25519 signature verification (RFC 8032 section 5.1.7) in pure Python, for the
# update service: a device checks that a release key signed an update's manifest.
# MicroPython has neither Ed25519 nor SHA-512, so both are here; CPython's hashlib
# SHA-512 is used where it exists (shared/compat.py), the pure one otherwise.
#
# Only verification: a device never signs, and the release key's holder signs with
# `cryptography` on a computer (host/update.py). Nothing here is secret, so the
# arithmetic need not be constant time.
from binascii import unhexlify

from shared.compat import sha512

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 2 * _D % _P
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_MASK255 = 2**255 - 1


def verify(public_key, message, signature):
    """True if signature (64 bytes) is public_key's (32 bytes) Ed25519 signature of
    message; False for anything else (a wrong length, a key that is not a point, an S
    out of range, a signature that does not match), never an exception."""
    try:
        if len(public_key) != 32 or len(signature) != 64:
            return False
        public_key = bytes(public_key)
        signature = bytes(signature)
        s = int.from_bytes(signature[32:], "little")
        if s >= _L:
            return False  # RFC 8032: S must be below L (no malleable signatures)
        a = _decode_point(public_key)
        if a is None:
            return False
        r = signature[:32]
        k = int.from_bytes(_sha512(r + public_key + bytes(message)), "little") % _L
        # [S]B - [k]A must encode as R: the computed point is canonical, so a
        # non-canonical R never matches.
        neg_a = ((_P - a[0]) % _P, a[1], 1, (_P - a[3]) % _P)
        return _encode_point(_double_mul(s, k, neg_a)) == r
    except (TypeError, ValueError):
        return False


# -- points: extended twisted Edwards coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, T = XY/Z
def _add(p1, p2):
    # add-2008-hwcd-3 (a = -1): 8 multiplications and one by 2d.
    p = _P
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % p
    b = (y1 + x1) * (y2 + x2) % p
    c = t1 * _D2 * t2 % p
    d = 2 * z1 * z2 % p
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return e * f % p, g * h % p, f * g % p, e * h % p


def _double(p1):
    # dbl-2008-hwcd (a = -1): 4 multiplications and 4 squarings.
    p = _P
    x1, y1, z1, _ = p1
    a = x1 * x1 % p
    b = y1 * y1 % p
    c = 2 * z1 * z1 % p
    h = a + b
    e = x1 + y1
    e = h - e * e % p
    g = a - b
    f = c + g
    return e * f % p, g * h % p, f * g % p, e * h % p


def _double_mul(s, k, a):
    """[s]B + [k]a in one pass over the bits (Straus): 253 doublings, and an addition
    of B, a or B + a where either scalar has a bit."""
    base = (_BX, _BY, 1, _BX * _BY % _P)
    table = (None, base, a, _add(base, a))
    q = (0, 1, 1, 0)
    i = 255
    while i >= 0 and not ((s >> i) & 1 or (k >> i) & 1):
        i -= 1
    while i >= 0:
        q = _double(q)
        j = ((s >> i) & 1) | (((k >> i) & 1) << 1)
        if j:
            q = _add(q, table[j])
        i -= 1
    return q


def _decode_point(data):
    """(X, Y, 1, T) of a 32-byte encoding, or None when it is not a curve point."""
    p = _P
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= _MASK255
    if y >= p:
        return None
    u = (y * y - 1) % p
    v = (_D * y * y + 1) % p
    v3 = v * v * v % p
    x = u * v3 * pow(u * v3 * v3 * v % p, (p - 5) // 8, p) % p
    vxx = v * x * x % p
    if vxx != u:
        if vxx != p - u:
            return None
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return x, y, 1, x * y % p


def _encode_point(q):
    p = _P
    zi = pow(q[2], p - 2, p)  # pow(z, -1, p) gives 0 on MicroPython
    x = q[0] * zi % p
    y = q[1] * zi % p
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


# -- SHA-512 (FIPS 180-4), where the platform has none ------------------------------
_K_HEX = (
    "428a2f98d728ae227137449123ef65cdb5c0fbcfec4d3b2fe9b5dba58189dbbc3956c25bf348b53859f111f1b605d019"
    "923f82a4af194f9bab1c5ed5da6d8118d807aa98a303024212835b0145706fbe243185be4ee4b28c550c7dc3d5ffb4e2"
    "72be5d74f27b896f80deb1fe3b1696b19bdc06a725c71235c19bf174cf692694e49b69c19ef14ad2efbe4786384f25e3"
    "0fc19dc68b8cd5b5240ca1cc77ac9c652de92c6f592b02754a7484aa6ea6e4835cb0a9dcbd41fbd476f988da831153b5"
    "983e5152ee66dfaba831c66d2db43210b00327c898fb213fbf597fc7beef0ee4c6e00bf33da88fc2d5a79147930aa725"
    "06ca6351e003826f142929670a0e6e7027b70a8546d22ffc2e1b21385c26c9264d2c6dfc5ac42aed53380d139d95b3df"
    "650a73548baf63de766a0abb3c77b2a881c2c92e47edaee692722c851482353ba2bfe8a14cf10364a81a664bbc423001"
    "c24b8b70d0f89791c76c51a30654be30d192e819d6ef5218d69906245565a910f40e35855771202a106aa07032bbd1b8"
    "19a4c116b8d2d0c81e376c085141ab532748774cdf8eeb9934b0bcb5e19b48a8391c0cb3c5c95a634ed8aa4ae3418acb"
    "5b9cca4f7763e373682e6ff3d6b2b8a3748f82ee5defb2fc78a5636f43172f6084c87814a1f0ab728cc702081a6439ec"
    "90befffa23631e28a4506cebde82bde9bef9a3f7b2c67915c67178f2e372532bca273eceea26619cd186b8c721c0c207"
    "eada7dd6cde0eb1ef57d4f7fee6ed17806f067aa72176fba0a637dc5a2c898a6113f9804bef90dae1b710b35131c471b"
    "28db77f523047d8432caab7b40c724933c9ebe0a15c9bebc431d67c49c100d4c4cc5d4becb3e42b6597f299cfc657e2a"
    "5fcb6fab3ad6faec6c44198c4a475817")
_H_HEX = ("6a09e667f3bcc908bb67ae8584caa73b3c6ef372fe94f82ba54ff53a5f1d36f1"
          "510e527fade682d19b05688c2b3e6c1f1f83d9abfb41bd6b5be0cd19137e2179")
_M64 = 2**64 - 1


def _words(text):
    raw = unhexlify(text)
    return [int.from_bytes(raw[i:i + 8], "big") for i in range(0, len(raw), 8)]


def sha512_pure(data):
    """SHA-512 of data in Python ints: for MicroPython, which has no SHA-512. Slow
    (64-bit words are big ints there), and only ever run on a manifest's few KB."""
    m = _M64
    k = _words(_K_HEX)
    h = _words(_H_HEX)
    size = len(data)
    padded = bytearray(data)
    padded.append(0x80)
    padded.extend(bytes((111 - size) % 128))
    padded.extend((size * 8).to_bytes(16, "big"))
    w = [0] * 80
    for block in range(0, len(padded), 128):
        for t in range(16):
            w[t] = int.from_bytes(padded[block + 8 * t:block + 8 * t + 8], "big")
        for t in range(16, 80):
            x = w[t - 15]
            s0 = ((x >> 1) | (x << 63)) ^ ((x >> 8) | (x << 56)) ^ (x >> 7)
            x = w[t - 2]
            s1 = ((x >> 19) | (x << 45)) ^ ((x >> 61) | (x << 3)) ^ (x >> 6)
            w[t] = (w[t - 16] + (s0 & m) + w[t - 7] + (s1 & m)) & m
        a, b, c, d, e, f, g, hh = h
        for t in range(80):
            s1 = (((e >> 14) | (e << 50)) ^ ((e >> 18) | (e << 46)) ^ ((e >> 41) | (e << 23))) & m
            t1 = hh + s1 + ((e & f) ^ (~e & g & m)) + k[t] + w[t]
            s0 = (((a >> 28) | (a << 36)) ^ ((a >> 34) | (a << 30)) ^ ((a >> 39) | (a << 25))) & m
            t2 = s0 + ((a & b) ^ (a & c) ^ (b & c))
            hh = g
            g = f
            f = e
            e = (d + t1) & m
            d = c
            c = b
            b = a
            a = (t1 + t2) & m
        h = [(h[0] + a) & m, (h[1] + b) & m, (h[2] + c) & m, (h[3] + d) & m,
             (h[4] + e) & m, (h[5] + f) & m, (h[6] + g) & m, (h[7] + hh) & m]
    return b"".join(x.to_bytes(8, "big") for x in h)


def _hashlib_sha512(data):
    return sha512(data).digest()


_sha512 = _hashlib_sha512 if sha512 else sha512_pure
