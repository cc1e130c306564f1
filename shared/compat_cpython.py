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
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared import x25519 as _pure

__all__ = ("x25519", "x25519_keypair", "aes256_ecb", "aes256_ctr", "crc16_ccitt_false",
           "compare_digest", "aes256_ctr_context", "hmac_sha256_key", "hkdf_sha256")

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


# aes256_ctr_context(key): OpenSSL's AES-256-CTR with `key` set up once (about 1 KiB):
# per message, reset_nonce(iv) (cryptography 43 and later), then update(data). A context
# per message cost about 5 us, a quarter of what the realm spent relaying a small packet.
# One CTR mode serves every context: a context takes the mode's nonce when it is made,
# and each message sets its own.
_CTR_MODE = modes.CTR(bytes(16))


# NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt, its first two blocks.
_SP800_38A_KEY = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
_SP800_38A_COUNTER = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
_SP800_38A_PLAIN = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
_SP800_38A_CIPHER = bytes.fromhex("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5")


def _public_ctr_context(key):
    return Cipher(algorithms.AES(key), _CTR_MODE).encryptor()


def _binding_ctr_context():
    """What Cipher(...).encryptor() calls in the end (cryptography's Rust binding, not its
    public API), without Cipher's Python checks: a realm makes two contexts per handshake,
    about 2 us less each. Only if it is there and encrypts NIST SP 800-38A's CTR-AES256
    example right (checked here, once); else None."""
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl
        create = rust_openssl.ciphers.create_encryption_ctx
        made = create(algorithms.AES(_SP800_38A_KEY), _CTR_MODE)
        made.reset_nonce(_SP800_38A_COUNTER)
        if made.update(_SP800_38A_PLAIN) != _SP800_38A_CIPHER:
            return None
    except Exception:  # another version of cryptography: its public API
        return None

    def binding_ctr_context(key):
        return create(algorithms.AES(key), _CTR_MODE)
    return binding_ctr_context


aes256_ctr_context = _binding_ctr_context() or _public_ctr_context


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


def hkdf_sha256(salt, ikm, info, length):
    """HKDF-SHA256 (RFC 5869), extract then expand, in one call of cryptography's (Rust,
    OpenSSL): what shared/crypto.py's hkdf_expand(hkdf_extract(salt, ikm), info, length)
    gives, for half its cost (the realm's key schedule, once per handshake)."""
    return HKDF(_SHA256, length, salt, info).derive(ikm)


def crc16_ccitt_false(data):
    # crc_hqx with init 0xFFFF is exactly CRC-16/CCITT-FALSE.
    return crc_hqx(data, 0xFFFF)
