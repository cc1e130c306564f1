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


# X25519: OpenSSL through `cryptography` where it is installed (CPython: fast and
# constant time), else the pure-Python ladder (MicroPython has no binding).
# `x25519_keypair()` makes a fresh (private, public) pair, None where only the ladder is.
try:
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey, X25519PublicKey)
except ImportError:
    from shared.x25519 import x25519
    x25519_keypair = None
else:
    from shared import x25519 as _pure

    # Loading a private key costs OpenSSL more than an exchange (it derives the public
    # key), and a realm pays three per handshake. So a key pair made here reaches its
    # one exchange loaded, and the keys used again (the realm's own) stay loaded. Both
    # tables are bounded: a pair whose handshake failed is forgotten after a while.
    _FRESH_MAX = 256
    _LOADED_MAX = 16
    _fresh = {}   # private bytes -> key, made by x25519_keypair, until its first exchange
    _loaded = {}  # private bytes -> key, for keys used more than once

    def x25519_keypair():
        key = X25519PrivateKey.generate()
        private = key.private_bytes_raw()
        if len(_fresh) >= _FRESH_MAX:
            del _fresh[next(iter(_fresh))]
        _fresh[private] = key
        return private, key.public_key().public_bytes_raw()

    def _private_key(scalar):
        key = _fresh.pop(scalar, None)
        if key is None:
            key = _loaded.get(scalar)
            if key is None:
                key = X25519PrivateKey.from_private_bytes(scalar)
                if len(_loaded) >= _LOADED_MAX:
                    _loaded.clear()
                _loaded[scalar] = key
        return key

    def x25519(scalar, u):
        try:
            return _private_key(bytes(scalar)).exchange(X25519PublicKey.from_public_bytes(
                bytes(u)))
        except ValueError:
            # OpenSSL refuses a low-order u (all-zero result). The protocol wants those
            # zeros, so that both interpreters refuse the handshake the same way.
            return _pure.x25519(scalar, u)


# AES-256. `aes256_ecb(key)` gives a function encrypting whole 16-byte blocks, on both
# interpreters. `aes256_ctr(key)` gives a function (iv, data) -> bytes where the
# platform has CTR itself, else it is None and shared/crypto.py builds CTR on ECB
# (the ESP32's cryptolib has no CTR).
try:
    from cryptolib import aes as _cryptolib_aes
except ImportError:  # CPython
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def aes256_ecb(key):
        return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update

    def aes256_ctr(key):
        # One context per key (about 1 KiB), its nonce reset per call (cryptography
        # 43 and later): building a context per call cost about 5 us, a quarter of
        # what the realm spends relaying a small packet.
        context = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

        def ctr(iv, data):
            context.reset_nonce(iv)
            return context.update(data)
        return ctr
else:
    def aes256_ecb(key):
        return _cryptolib_aes(key, 1).encrypt  # 1: ECB (the MODE_* names are not exported)

    aes256_ctr = None


# CRC-16/CCITT-FALSE in C where binascii has it (crc_hqx with init 0xFFFF is exactly that
# CRC), else None and shared/serial_framing.py computes it from a table.
try:
    from binascii import crc_hqx
except ImportError:  # MicroPython
    crc16_ccitt_false = None
else:
    def crc16_ccitt_false(data):
        return crc_hqx(data, 0xFFFF)


# Constant-time comparison: the C one where the stdlib has it.
try:
    from hmac import compare_digest
except ImportError:  # MicroPython
    compare_digest = None
