# shared/compat.py's CPython half: the C versions CPython has (OpenSSL through
# `cryptography`, libsodium through PyNaCl where installed, binascii, hmac). Only
# CPython imports it; boards never get it (tools/build.py), so its names cost a device
# nothing.
from binascii import crc_hqx
from hmac import compare_digest  # constant time, in C
from os import urandom

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from shared import x25519 as _pure

__all__ = ("x25519", "x25519_keypair", "aes256_ecb", "aes256_ctr", "crc16_ccitt_false",
           "compare_digest", "aes256_ctr_context", "hmac_sha256_key")

# X25519: libsodium's (PyNaCl, `pip install realm[fast]`) where installed, else OpenSSL's
# (`cryptography`). Same bytes; libsodium's costs the realm about 40 % less per
# handshake (its key generation uses a fixed-base table, and it takes raw bytes: no key
# objects to load).
try:
    from nacl.bindings import crypto_scalarmult as _sodium_mult
    from nacl.bindings import crypto_scalarmult_base as _sodium_base
except ImportError:
    _sodium_mult = None


def sodium_x25519_keypair():
    private = urandom(32)
    return private, _sodium_base(private)


def sodium_x25519(scalar, u):
    try:
        return _sodium_mult(bytes(scalar), bytes(u))
    except RuntimeError:  # libsodium refuses a low-order u, as OpenSSL does (below)
        return _pure.x25519(scalar, u)


# Loading a private key costs OpenSSL more than an exchange (it derives the public key),
# and a realm pays three per handshake. So a key pair made here reaches its one exchange
# loaded, and the keys used again (the realm's own) stay loaded. Both tables are bounded:
# a pair whose handshake failed is forgotten after a while. Fresh pairs wait for their
# exchange as long as a round trip to the realm: a host driving a whole fleet (the
# bench's 10,000 devices reconnecting at once) makes every pair before the first
# KeyCheck comes back, so the table holds that many (~0.1 KiB each, only while it waits).
_FRESH_MAX = 16384
_LOADED_MAX = 16
_fresh = {}   # private bytes -> key, made by x25519_keypair, until its first exchange
_loaded = {}  # private bytes -> key, for keys used more than once


def openssl_x25519_keypair():
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


def openssl_x25519(scalar, u):
    try:
        return _private_key(bytes(scalar)).exchange(X25519PublicKey.from_public_bytes(bytes(u)))
    except ValueError:
        # OpenSSL refuses a low-order u (all-zero result). The protocol wants those
        # zeros, so that both interpreters refuse the handshake the same way.
        return _pure.x25519(scalar, u)


if _sodium_mult is not None:
    x25519, x25519_keypair = sodium_x25519, sodium_x25519_keypair
else:
    x25519, x25519_keypair = openssl_x25519, openssl_x25519_keypair


def aes256_ecb(key):
    update = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update

    def encrypt(blocks, out=None):  # as MicroPython's cryptolib
        if out is None:
            return update(blocks)
        out[:] = update(blocks)
    return encrypt


def aes256_ctr_context(key):
    """OpenSSL's AES-256-CTR with `key` set up once (about 1 KiB): per message,
    reset_nonce(iv) (cryptography 43 and later), then update(data). A context per
    message cost about 5 us, a quarter of what the realm spent relaying a small packet."""
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()


def aes256_ctr(key):
    context = aes256_ctr_context(key)

    def ctr(iv, data, out=None):  # out as shared/crypto.py's ctr_from_ecb: may be data
        context.reset_nonce(iv)
        if out is None:
            return context.update(data)
        out[:] = context.update(data)  # one copy: cheap on CPython, which has the heap
        return out
    return ctr


_SHA256 = hashes.SHA256()


def hmac_sha256_key(key):
    """OpenSSL's HMAC-SHA256 with `key` set up once: per message, copy() it, update() the
    copy and finalize() it (half the cost of two hashlib copies and digests)."""
    return hmac.HMAC(key, _SHA256)


def crc16_ccitt_false(data):
    # crc_hqx with init 0xFFFF is exactly CRC-16/CCITT-FALSE.
    return crc_hqx(data, 0xFFFF)
