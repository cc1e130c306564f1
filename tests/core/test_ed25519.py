# shared/ed25519.py on both interpreters: RFC 8032 section 7.1's vectors, the pure
# SHA-512 against FIPS 180-4's examples, and every kind of bad input giving False.
from binascii import unhexlify

from shared import ed25519
from tests.core.support import check, eq

# RFC 8032 section 7.1, TEST 1, 2, 3 and SHA(abc): (public key, message, signature).
RFC8032 = (
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
     "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
     "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
)
L = 2**252 + 27742317777372353535851937790883648493


def vector(i):
    return tuple(unhexlify(x) for x in RFC8032[i])


def test_rfc8032_vectors_verify():
    for i in range(len(RFC8032)):
        eq(ed25519.verify(*vector(i)), True, "RFC 8032 vector %d" % i)


def test_any_changed_bit_fails():
    key, message, signature = vector(3)
    for where in (0, 31, 32, 63):
        bad = bytearray(signature)
        bad[where] ^= 0x01
        eq(ed25519.verify(key, message, bytes(bad)), False, "signature byte %d" % where)
    bad = bytearray(message)
    bad[10] ^= 0x80
    eq(ed25519.verify(key, bytes(bad), signature), False, "message")
    eq(ed25519.verify(key, message + b"\x00", signature), False, "longer message")
    eq(ed25519.verify(vector(0)[0], message, signature), False, "another key")


def test_bad_inputs_give_false_never_an_exception():
    key, message, signature = vector(1)
    for args in ((key[:31], message, signature), (key + b"\x00", message, signature),
                 (key, message, signature[:63]), (key, message, b""), (None, message, signature),
                 (key, None, signature), (key, message, 64), ("x" * 32, message, signature)):
        eq(ed25519.verify(*args), False, repr(args)[:40])
    # A key whose y has no x on the curve, and y = p (not canonical).
    eq(ed25519.verify(b"\x02" + bytes(31), message, signature), False, "not a point")
    p = 2**255 - 19
    eq(ed25519.verify(p.to_bytes(32, "little"), message, signature), False, "y = p")
    # x = 0 with the sign bit set is refused (RFC 8032 5.1.3 step 4).
    eq(ed25519.verify(b"\x01" + bytes(30) + b"\x80", message, signature), False, "-0")


def test_s_at_or_over_the_group_order_fails():
    key, message, signature = vector(1)
    s = int.from_bytes(signature[32:], "little")
    # S + L is the same point multiple: refused, or signatures would be malleable.
    eq(ed25519.verify(key, message, signature[:32] + (s + L).to_bytes(32, "little")), False)
    eq(ed25519.verify(key, message, signature[:32] + b"\xff" * 32), False)


def test_memoryview_and_bytearray_are_taken():
    key, message, signature = vector(2)
    eq(ed25519.verify(bytearray(key), memoryview(message), memoryview(signature)), True)


def test_pure_sha512_fips180_examples():
    eq(ed25519.sha512_pure(b"abc"), unhexlify(
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"), "abc")
    eq(ed25519.sha512_pure(b""), unhexlify(
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"), "empty")
    two_blocks = (b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                  b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu")
    eq(ed25519.sha512_pure(two_blocks), unhexlify(
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
        "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"), "896 bits")


def test_pure_sha512_padding_edges():
    # Lengths around the 112-byte padding boundary give 1 or 2 blocks: the hash of
    # each must match the platform's where it has one, and differ from each other.
    seen = []
    for n in (111, 112, 113, 127, 128, 129, 239, 240):
        digest = ed25519.sha512_pure(bytes(range(n)))
        check(len(digest) == 64 and digest not in seen, "length %d" % n)
        seen.append(digest)
        if ed25519.sha512 is not None:
            eq(digest, ed25519.sha512(bytes(range(n))).digest(), "length %d" % n)
