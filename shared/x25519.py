# X25519 (RFC 7748) in pure Python, for MicroPython, which has no binding for it.
# A Montgomery ladder on Python ints. Every big-int operation allocates, so each
# step does the fewest (eight reductions, no named temporaries it can do without);
# the reduction, a long division, dominates the time.
# Python ints are not constant time, and the conditional swap below branches on key
# bits: fine for the device's keys (ephemeral, or static with a cached result), not
# for a server, which uses the `cryptography` backend (see shared/compat.py).
_P = 2**255 - 19
_U_MASK = 2**255 - 1  # RFC 7748: ignore the top bit of u


def x25519(scalar, u):
    """scalar * u on Curve25519: 32-byte little-endian scalar (clamped here) and u."""
    p = _P  # a local is faster to load than a global, 2000 times per call
    k = bytearray(scalar)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    x1 = int.from_bytes(u, "little") & _U_MASK
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in range(254, -1, -1):
        bit = (k[t >> 3] >> (t & 7)) & 1
        if swap ^ bit:
            x2, x3 = x3, x2
            z2, z3 = z3, z2
        swap = bit
        # RFC 7748's step, each name reused once its value is spent, so that few big ints
        # are alive at once (the handshake's peak of heap): x2, z2 become AA, BB, then
        # the new x2, z2; a, b become DA, CB.
        a = x2 + z2
        b = x2 - z2
        x2 = a * a % p  # AA
        z2 = b * b % p  # BB
        a = (x3 - z3) * a % p  # DA
        b = (x3 + z3) * b % p  # CB
        x3 = a + b
        x3 = x3 * x3 % p
        z3 = a - b
        z3 = z3 * z3 * x1 % p
        e = x2 - z2  # E = AA - BB
        z2 = e * (x2 + 121665 * e) % p
        x2 = x2 * (x2 - e) % p  # AA * BB
    if swap:
        x2, z2 = x3, z3
    # pow(z, -1, p) returns 0 on MicroPython: invert by Fermat. A low-order u leaves
    # z2 == 0, so the result is 32 zero bytes, as RFC 7748 says.
    return (x2 * pow(z2, p - 2, p) % p).to_bytes(32, "little")
