"""Login tokens: made here, stored only as a hash (PROTOCOL.md section 7).

The stored form names its scheme, so both kinds coexist in one registry:

- ``sha256$hash_hex`` for the tokens `new_token` makes (`realm device add`, `device
  token`): 256 random bits. Guessing one is hopeless whatever the hash costs, so a slow
  hash would buy nothing and cost every login after a restart 80 ms; one SHA-256 is
  a microsecond, and a fleet of 10,000 devices is back within seconds.
- ``scrypt$N$r$p$salt_hex$hash_hex`` for a token a person chose (guessable, so the
  hash must be slow and salted) and for every token stored before the SHA-256 form
  existed. N=2**14, r=8, p=1 is the scrypt paper's interactive setting: about 16 MiB
  and 80 ms per check on one core; the cost travels with the hash.

Migration: a scrypt-stored token that passes its check and has the shape of one
`new_token` made is stored again in the SHA-256 form (`needs_rehash`), so an existing
registry converts itself as its devices log in, each paying the slow check once.
"""
import base64
import binascii
import hashlib
import hmac
import os
import secrets

from shared.protocol import MAX_TOKEN_BYTES, MIN_TOKEN_BYTES

TOKEN_BYTES = 32
SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
_MAXMEM = 64 * 1024 * 1024
_GENERATED_CHARS = len(secrets.token_urlsafe(TOKEN_BYTES))  # 43


def new_token():
    """A fresh token: 32 random bytes as 43 URL-safe characters, never starting with "-":
    `realm send --token -x...` would be taken for an option (1 token in 64 was)."""
    while True:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if token[0] != "-":
            return token


def _bytes(token):
    return token.encode() if isinstance(token, str) else bytes(token)


def _scrypt(token, salt, n, r, p):
    return hashlib.scrypt(token, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=HASH_BYTES)


def hash_token(token):
    """The stored form of a token `new_token` made (fast: its randomness protects it)."""
    return "sha256$" + hashlib.sha256(_bytes(token)).hexdigest()


def slow_hash_token(token):
    """The stored form of a token a person chose: salted scrypt."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(_bytes(token), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "scrypt$%d$%d$%d$%s$%s" % (SCRYPT_N, SCRYPT_R, SCRYPT_P, salt.hex(), digest.hex())


def is_slow(stored):
    """True if checking against `stored` takes the slow hash (run it off the event loop)."""
    return not stored.startswith("sha256$")


def is_generated(token):
    """True if `token` has the shape of one `new_token` made: 43 URL-safe base64
    characters that decode to 32 bytes."""
    token = _bytes(token)
    if len(token) != _GENERATED_CHARS:
        return False
    try:
        raw = base64.urlsafe_b64decode(token + b"=")
    except (binascii.Error, ValueError):
        return False
    return len(raw) == TOKEN_BYTES and base64.urlsafe_b64encode(raw).rstrip(b"=") == token


def needs_rehash(token, stored):
    """True if `token`, just checked against `stored`, should be stored as SHA-256 now."""
    return is_slow(stored) and is_generated(token)


def verify_token(token, stored):
    """True if `token` (bytes or str) matches the stored hash; constant-time compare.

    A malformed or unknown stored form, or a token of a length the protocol refuses, is
    simply False: the caller answers BAD_LOGIN either way.
    """
    token = _bytes(token)
    if not (MIN_TOKEN_BYTES <= len(token) <= MAX_TOKEN_BYTES) or not stored:
        return False
    scheme, _, rest = stored.partition("$")
    try:
        if scheme == "sha256":
            expected = bytes.fromhex(rest)
            actual = hashlib.sha256(token).digest()
        elif scheme == "scrypt":
            n, r, p, salt, digest = rest.split("$")
            expected = bytes.fromhex(digest)
            actual = _scrypt(token, bytes.fromhex(salt), int(n), int(r), int(p))
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
