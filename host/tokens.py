"""Login tokens: made here, stored only as a salted slow hash (PROTOCOL.md section 7).

Stored form: ``scrypt$N$r$p$salt_hex$hash_hex``. The cost travels with the hash, so
it can be raised later without breaking stored tokens. N=2**14, r=8, p=1 is the
scrypt paper's interactive setting: about 16 MiB and 80 ms per check on one core.
"""
import hashlib
import hmac
import os
import secrets

from shared.protocol import MAX_TOKEN_BYTES, MIN_TOKEN_BYTES

SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
_MAXMEM = 64 * 1024 * 1024



def new_token():
    """A fresh token: 32 random bytes as 43 URL-safe characters."""
    return secrets.token_urlsafe(32)


def _scrypt(token, salt, n, r, p):
    return hashlib.scrypt(token, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=HASH_BYTES)


def hash_token(token):
    if isinstance(token, str):
        token = token.encode()
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(token, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "scrypt$%d$%d$%d$%s$%s" % (SCRYPT_N, SCRYPT_R, SCRYPT_P, salt.hex(), digest.hex())


def verify_token(token, stored):
    """True if `token` (bytes or str) matches the stored hash; constant-time compare.

    A malformed stored value or a token of a length the protocol refuses is simply
    False: the caller answers BAD_LOGIN either way.
    """
    if isinstance(token, str):
        token = token.encode()
    if not (MIN_TOKEN_BYTES <= len(token) <= MAX_TOKEN_BYTES) or not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        actual = _scrypt(token, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
