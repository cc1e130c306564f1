# Everything that differs between MicroPython and CPython, and nothing else.
# Each fallback is local and explicit (try/except ImportError), never scattered.
try:
    from micropython import const
except ImportError:  # CPython
    def const(value):
        return value

try:
    from os import urandom
except ImportError:  # some MicroPython ports keep it elsewhere
    from uos import urandom

import hashlib


def sha256(data=b""):
    return hashlib.sha256(data).digest()


# SHA-512 (Ed25519's hash): hashlib's where it has one (CPython), else None and
# shared/ed25519.py computes it in Python (MicroPython has none).
sha512 = getattr(hashlib, "sha512", None)


# A SHA-256 to continue many times from the same start (HMAC's padded keys):
# `start = sha256_prefix(data)` once, then `sha256_after(start)` is a new hash object that
# has absorbed data. CPython copies a hash that absorbed it (one compression less per
# use); MicroPython's hashes have no copy(), so it keeps the bytes and hashes them again.
try:
    sha256_after = type(hashlib.sha256()).copy
except AttributeError:  # MicroPython
    sha256_prefix = bytes  # the bytes themselves
    sha256_after = hashlib.sha256
else:
    sha256_prefix = hashlib.sha256


# Where CPython has the C versions (OpenSSL through `cryptography`, libsodium through
# PyNaCl where installed, binascii, hmac),
# shared/compat_cpython.py binds them. MicroPython never loads that module: the names
# of code it would not run still cost a board's heap (every name in a loaded module is
# interned for good, and crossing a qstr pool's size costs 5-7 KB at once).
#   x25519(scalar, u), x25519_keypair() -> (private, public), or None (the pure ladder)
#   aes256_ecb(key) -> encrypt(whole 16-byte blocks[, out]) (out may be the blocks: in
#     place); aes256_ctr(key) -> ctr(iv, data, out=None) (new bytes, or into out, which
#     may be data),
#     or None and shared/crypto.py builds CTR on ECB (the ESP32's cryptolib has no CTR)
#   crc16_ccitt_false(data), or None (shared/serial_framing.py's table)
#   compare_digest(a, b), constant time, or None (shared/crypto.py's loop)
# and on CPython only (the realm's; absent on MicroPython: getattr(compat, NAME, None)):
#   aes256_ctr_context(key) -> OpenSSL's AES-256-CTR with its key set up once:
#     reset_nonce(iv), then update(data), per message (shared/realm.py's session keys)
#   hmac_sha256_key(key) -> OpenSSL's HMAC-SHA256 with its key set up once: copy() it
#     per message, update() the copy and finalize() it (the same)
# Imported by *, which names nothing here: a name a board never uses would still cost
# its heap (about 0.1 KB each, interned when this module loads).
try:
    from cryptolib import aes as _cryptolib_aes
except ImportError:  # CPython
    from shared.compat_cpython import *  # noqa: F401,F403  (its __all__: the names above)
else:
    from shared.x25519 import x25519  # noqa: F401

    def aes256_ecb(key):
        return _cryptolib_aes(key, 1).encrypt  # 1: ECB (the MODE_* names are not exported)

    x25519_keypair = aes256_ctr = crc16_ccitt_false = compare_digest = None
