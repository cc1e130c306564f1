"""The MicroPython code paths of shared/crypto.py give the same bytes as OpenSSL.

CPython only: the pure X25519 ladder (shared/x25519.py) and AES-CTR built on an
ECB block function (crypto.ctr_from_ecb) are what a board runs; here they are checked
against the `cryptography` backends on random inputs.
"""
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings, strategies as st

from shared import compat, compat_cpython, connection, crypto, realm
from shared import x25519 as pure
from shared.errors import KEY_CHECK_FAILED, ProtocolError

BASE_POINT = b"\x09" + bytes(31)
# u-coordinates of small order (RFC 7748 section 6.1's check): X25519 gives all zeros.
LOW_ORDER = (bytes(32), b"\x01" + bytes(31),
             bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"))
key32 = st.binary(min_size=32, max_size=32)
# Counter starts near the 2^64 and 2^128 carries as often as anywhere else.
half = st.one_of(st.integers(0, 2**64 - 1), st.integers(2**64 - 70, 2**64 - 1))
ivs = st.builds(lambda hi, lo: struct.pack(">QQ", hi, lo), half, half)


def test_cpython_uses_native_backends():
    """libsodium's X25519 where PyNaCl is installed (requirements.txt has it), OpenSSL's
    AES and HMAC comparison."""
    assert compat.x25519 is compat_cpython.sodium_x25519
    assert compat.x25519_keypair is compat_cpython.sodium_x25519_keypair
    assert compat.aes256_ctr is not None
    assert crypto.ct_equal is hmac.compare_digest


@settings(max_examples=100, deadline=None)
@given(scalar=key32, u=st.one_of(key32, st.sampled_from(LOW_ORDER)))
def test_libsodium_and_openssl_x25519_agree(scalar, u):
    """The two CPython backends give the same bytes, the all-zero result of a low-order u
    too (each library refuses it; the pure ladder answers then)."""
    result = compat_cpython.sodium_x25519(scalar, u)
    assert result == compat_cpython.openssl_x25519(scalar, u)
    assert (result == bytes(32)) == (u in LOW_ORDER)


def test_both_backends_key_pairs_are_fresh_and_consistent():
    for make in (compat_cpython.sodium_x25519_keypair, compat_cpython.openssl_x25519_keypair):
        pairs = [make() for _ in range(3)]
        assert len({private for private, _ in pairs}) == 3
        for private, public in pairs:
            assert pure.x25519(private, BASE_POINT) == public


@settings(max_examples=200, deadline=None)
@given(scalar=key32, u=key32)
def test_pure_x25519_matches_openssl(scalar, u):
    assert pure.x25519(scalar, u) == crypto.x25519(scalar, u)


@settings(max_examples=50, deadline=None)
@given(scalar=key32)
def test_pure_public_key_matches_openssl(scalar):
    expected = X25519PrivateKey.from_private_bytes(scalar).public_key().public_bytes_raw()
    assert pure.x25519(scalar, BASE_POINT) == expected == crypto.public_key(scalar)


def test_x25519_rfc7748_thousand_iterations():
    # RFC 7748 section 5.2, on the OpenSSL backend only: the pure ladder takes 1.5 to
    # 2.2 s for it here, so it gets the one-iteration vector (tests/core/test_crypto.py)
    # and the random cross-checks above instead.
    k = u = BASE_POINT
    for _ in range(1000):
        k, u = crypto.x25519(k, u), k
    assert k.hex() == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"


@settings(max_examples=200, deadline=None)
@given(key=key32, iv=ivs, data=st.binary(max_size=300))
def test_ctr_on_ecb_matches_openssl_ctr(key, iv, data):
    native = compat.aes256_ctr(key)(iv, data)
    assert crypto.ctr_from_ecb(compat.aes256_ecb(key), iv, data) == native
    assert crypto.aes256_ctr(key, iv, data) == native


@settings(max_examples=100, deadline=None)
@given(key=key32, calls=st.lists(st.tuples(ivs, st.binary(max_size=70)), min_size=2, max_size=8))
def test_one_ctr_context_reused_across_packets(key, calls):
    """A Sealer keeps one CTR function per key: each call starts afresh at its own iv,
    whatever length the one before it left the keystream at."""
    ctr, ecb = compat.aes256_ctr(key), compat.aes256_ecb(key)
    for iv, data in calls:
        assert ctr(iv, data) == crypto.ctr_from_ecb(ecb, iv, data)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=150), data=st.binary(max_size=200))
def test_hmac_matches_stdlib(key, data):
    assert crypto.hmac_sha256(key, data) == hmac.digest(key, data, "sha256")


@settings(max_examples=100, deadline=None)
@given(salt=st.binary(max_size=80), ikm=st.binary(max_size=80), info=st.binary(max_size=40),
       length=st.integers(1, 255 * 32))
def test_hkdf_matches_cryptography(salt, ikm, info, length):
    expected = HKDF(hashes.SHA256(), length, salt, info).derive(ikm)
    assert crypto.hkdf_expand(crypto.hkdf_extract(salt, ikm), info, length) == expected


@settings(max_examples=100, deadline=None)
@given(salt=st.binary(max_size=80), ikm=st.binary(max_size=80), info=st.binary(max_size=40),
       length=st.integers(1, 255 * 32))
def test_cpython_hkdf_matches_crypto(salt, ikm, info, length):
    assert compat_cpython.hkdf_sha256(salt, ikm, info, length) == \
        crypto.hkdf_expand(crypto.hkdf_extract(salt, ikm), info, length)


@settings(max_examples=100, deadline=None)
@given(th=key32, dh1=st.one_of(key32, st.just(bytes(32))), dh2=st.one_of(key32, st.just(bytes(32))))
def test_realm_key_schedule_is_the_devices(th, dh1, dh2):
    """The realm's session keys (OpenSSL's HKDF) are those a device derives (crypto's), and
    a zero X25519 result is refused the same way."""
    assert realm._HKDF is compat_cpython.hkdf_sha256
    try:
        expected = connection.session_keys(th, dh1, dh2)
    except ProtocolError as e:
        assert e.code == KEY_CHECK_FAILED
        try:
            realm._session_keys(th, dh1, dh2)
        except ProtocolError as e2:
            assert (e2.code, e2.message) == (e.code, e.message)
        else:
            raise AssertionError("a zero X25519 result was not refused")
    else:
        assert realm._session_keys(th, dh1, dh2) == expected


@settings(max_examples=100, deadline=None)
@given(key=key32, calls=st.lists(st.tuples(ivs, st.binary(max_size=70)), min_size=1, max_size=4))
def test_ctr_context_from_the_binding_is_the_public_apis(key, calls):
    """The realm's AES-CTR contexts come from cryptography's binding (where it gives what
    the public API gives): the same bytes, message after message."""
    assert compat.aes256_ctr_context is not compat_cpython._public_ctr_context
    made, public = compat.aes256_ctr_context(key), compat_cpython._public_ctr_context(key)
    for iv, data in calls:
        made.reset_nonce(iv)
        public.reset_nonce(iv)
        assert made.update(data) == public.update(data)


def test_ctr_context_falls_back_to_the_public_api(monkeypatch):
    """A binding that is missing, or makes other bytes (another cryptography), is not used."""
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl
    create = rust_openssl.ciphers.create_encryption_ctx
    assert compat_cpython._binding_ctr_context() is not None
    monkeypatch.setattr(rust_openssl.ciphers, "create_encryption_ctx",
                        lambda algorithm, mode: create(algorithms.AES(bytes(32)), mode))
    assert compat_cpython._binding_ctr_context() is None  # it ignores the key
    monkeypatch.delattr(rust_openssl.ciphers, "create_encryption_ctx")
    assert compat_cpython._binding_ctr_context() is None


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=20), b=st.binary(max_size=20))
def test_pure_ct_equal_matches_compare_digest(a, b):
    assert crypto._ct_equal(a, b) == hmac.compare_digest(a, b)


@settings(max_examples=200, deadline=None)
@given(enc=key32, mac=key32, n=st.integers(0, 2**64 - 1), ad=st.binary(min_size=2, max_size=34),
       plaintext=st.binary(max_size=300))
def test_seal_matches_section_6(enc, mac, n, ad, plaintext):
    # body = n:u64 | AES-256-CTR(enc, n:u64|0:u64, plaintext) | HMAC-SHA256(mac, ad|n|ct)[:16]
    nonce = struct.pack(">Q", n)
    ct = compat.aes256_ctr(enc)(nonce + bytes(8), plaintext)
    body = nonce + ct + hmac.digest(mac, ad + nonce + ct, hashlib.sha256)[:16]
    assert crypto.seal(enc, mac, n, ad, plaintext) == body
    assert crypto.open_body(enc, mac, ad, body) == (n, plaintext)
