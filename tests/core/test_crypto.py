# shared/crypto.py against ../shared/vectors/crypto.json and the RFCs, on both
# interpreters (so on MicroPython: the pure X25519 and AES-CTR built on ECB).
from shared import compat, crypto
from tests.core.support import check, eq, expect_error, squeezed, unhex, vectors

MP_HEAP = "128k"  # to compile this module from source; precompiled (mpy-cross) it passes in 64k

ZERO32 = bytes(32)
BASE_POINT = b"\x09" + bytes(31)
P = 2**255 - 19


def keys(entry):
    return unhex(entry["enc"]), unhex(entry["mac"])


def test_x25519_rfc7748():
    for v in vectors("crypto")["x25519"]:
        eq(crypto.x25519(unhex(v["scalar"]), unhex(v["u"])), unhex(v["output"]), v["case"])


def test_x25519_rfc7748_one_iteration():
    # RFC 7748 section 5.2: k = u = 9, k = X25519(k, u) once.
    eq(crypto.x25519(BASE_POINT, BASE_POINT),
       unhex("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"))


def test_x25519_dh():
    v = vectors("crypto")["x25519_dh"]
    alice, bob = unhex(v["alice_private"]), unhex(v["bob_private"])
    eq(crypto.public_key(alice), unhex(v["alice_public"]), "alice public")
    eq(crypto.public_key(bob), unhex(v["bob_public"]), "bob public")
    eq(crypto.x25519(alice, unhex(v["bob_public"])), unhex(v["shared"]), "alice side")
    eq(crypto.x25519(bob, unhex(v["alice_public"])), unhex(v["shared"]), "bob side")


def test_x25519_low_order_gives_zeros():
    entries = vectors("crypto")["x25519_low_order"]
    for v in entries:
        eq(crypto.x25519(unhex(v["scalar"]), unhex(v["u"])), unhex(v["output"]), v["case"])
    # The other points of order 2, 4 or 8, and the non-canonical encodings p-1, p, p+1:
    # the result is zero whatever the scalar, on both backends (OpenSSL refuses these).
    scalar = unhex(entries[0]["scalar"])
    others = [unhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
              unhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")]
    others += [(P + d).to_bytes(32, "little") for d in (-1, 0, 1)]
    for u in others:
        eq(crypto.x25519(scalar, u), ZERO32, "low-order u")


def test_x25519_ignores_top_bit_of_u():
    v = vectors("crypto")["x25519"][0]
    u = bytearray(unhex(v["u"]))
    u[31] ^= 0x80
    eq(crypto.x25519(unhex(v["scalar"]), bytes(u)), unhex(v["output"]))


def test_x25519_refuses_wrong_lengths():
    for scalar, u in ((bytes(31), BASE_POINT), (BASE_POINT, bytes(33))):
        try:
            crypto.x25519(scalar, u)
        except ValueError:
            continue
        raise AssertionError("accepted %d and %d bytes" % (len(scalar), len(u)))


def test_generate_keypair():
    private, public = crypto.generate_keypair()
    eq(len(private), 32)
    eq(public, crypto.public_key(private))
    check(crypto.generate_keypair()[0] != private, "two keypairs alike")


def test_hkdf_sha256():
    for v in vectors("crypto")["hkdf_sha256"]:
        prk = crypto.hkdf_extract(unhex(v["salt"]), unhex(v["ikm"]))
        eq(prk, unhex(v["prk"]), "prk")
        eq(crypto.hmac_sha256(unhex(v["salt"]), unhex(v["ikm"])), prk, "extract is HMAC")
        eq(crypto.hkdf_expand(prk, unhex(v["info"]), v["length"]), unhex(v["okm"]), "okm")


def test_hkdf_expand_length_limits():
    prk = bytes(32)
    eq(crypto.hkdf_expand(prk, b"", 0), b"")
    eq(len(crypto.hkdf_expand(prk, b"", 255 * 32)), 255 * 32)
    try:
        crypto.hkdf_expand(prk, b"", 255 * 32 + 1)
    except ValueError:
        return
    raise AssertionError("HKDF-Expand past 255 blocks accepted")


def test_hmac_sha256_key_longer_than_block():
    # RFC 4231 test case 6: a 131-byte key is hashed first.
    eq(crypto.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First"),
       unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"))


def test_fingerprint():
    for v in vectors("crypto")["fingerprint"]:
        eq(crypto.fingerprint(unhex(v["key"])), unhex(v["fingerprint"]))


def test_aes256_ctr_nist():
    # NIST SP 800-38A F.5.5, CTR-AES256.Encrypt.
    key = unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    iv = unhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    pt = unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
               "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
    ct = unhex("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
               "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6")
    eq(crypto.aes256_ctr(key, iv, pt), ct, "encrypt")
    eq(crypto.aes256_ctr(key, iv, ct), pt, "decrypt")
    eq(crypto.aes256_ctr(key, iv, pt[:37]), ct[:37], "partial last block")
    eq(crypto.aes256_ctr(key, iv, b""), b"", "empty")


def test_aes256_ctr_counter_is_128_bits():
    # The counter carries from the low 64 bits into the high ones, and wraps at 2^128.
    key = bytes(range(32))
    ecb = compat.aes256_ecb(key)
    cases = (
        ("0000000000000007ffffffffffffffff",
         ("0000000000000007ffffffffffffffff", "00000000000000080000000000000000",
          "00000000000000080000000000000001")),
        ("fffffffffffffffffffffffffffffffe",
         ("fffffffffffffffffffffffffffffffe", "ffffffffffffffffffffffffffffffff",
          "00000000000000000000000000000000")),
    )
    for iv, counters in cases:
        stream = ecb(unhex("".join(counters)))
        eq(crypto.aes256_ctr(key, unhex(iv), bytes(40)), stream[:40], iv)


def test_seal_vectors():
    for v in vectors("crypto")["seal"]:
        enc, mac = keys(v)
        ad, plaintext, body = unhex(v["ad"]), unhex(v["plaintext"]), unhex(v["body"])
        sealer = crypto.Sealer(enc, mac)
        sealer.n = v["n"]
        eq(sealer.seal(ad, plaintext), body, v["case"])
        in_place = bytearray(len(body))  # n | plaintext | tag, sealed where it lies
        in_place[8:len(body) - 16] = plaintext
        sealer.n = v["n"]
        eq(sealer.seal_in_place(ad, memoryview(in_place)), in_place, "in place")
        eq(in_place, body, v["case"] + " in place")
        eq(crypto.open_body(enc, mac, ad, body), (v["n"], plaintext), v["case"])
        eq(crypto.open_body(enc, mac, ad, bytearray(body)), (v["n"], plaintext), "bytearray")
        eq(crypto.open_body(enc, mac, ad, memoryview(body)), (v["n"], plaintext), "memoryview")


def test_sealer_numbers_from_zero():
    entries = vectors("crypto")["seal"][:3]  # n = 0, 1, 2 under the same keys
    sealer = crypto.Sealer(*keys(entries[0]))
    for i, v in enumerate(entries):
        eq(v["n"], i)
        eq(sealer.n, i, "next nonce")
        eq(sealer.seal(unhex(v["ad"]), unhex(v["plaintext"])), unhex(v["body"]), v["case"])
    eq(sealer.n, 3)


def test_open_failures():
    for v in vectors("crypto")["open_failures"]:
        enc, mac = keys(v)
        ad, body = unhex(v["ad"]), unhex(v["body"])
        expect_error("MALFORMED", crypto.open_body, enc, mac, ad, body)
        opener = crypto.Opener(enc, mac)
        expect_error("MALFORMED", opener.open, ad, body)
        eq(opener.last, None, "a failed open accepts no nonce: " + v["case"])


def test_nonce_rule():
    v = vectors("crypto")["nonce_rule"]
    opener = crypto.Opener(*keys(v))
    ad = unhex(v["ad"])
    eq(opener.last, None)
    for step in v["steps"]:
        before = opener.last
        if step["accepted"]:
            opener.open(ad, unhex(step["body"]))
            eq(opener.last, step["n"], "accepted")
        else:
            expect_error("MALFORMED", opener.open, ad, unhex(step["body"]))
            eq(opener.last, before, "a refused nonce changes nothing")


def test_seal_open_round_trip():
    enc, mac = bytes(range(32)), bytes(range(32, 64))
    sealer, opener = crypto.Sealer(enc, mac), crypto.Opener(enc, mac)
    for size in (0, 1, 15, 16, 17, 1024):
        plaintext = bytes(i & 0xFF for i in range(size))
        body = sealer.seal(b"\x02\x07", plaintext)
        eq(len(body), 24 + size, "size")
        eq(opener.open(b"\x02\x07", body), plaintext, "size %d" % size)
        expect_error("MALFORMED", crypto.open_body, enc, mac, b"\x02\x08", body)


def test_ct_equal():
    a = bytes(range(16))
    check(crypto.ct_equal(a, bytes(range(16))), "equal")
    check(crypto.ct_equal(b"", b""), "empty")
    for i in (0, 15):
        b = bytearray(a)
        b[i] ^= 1
        check(not crypto.ct_equal(a, bytes(b)), "byte %d differs" % i)
    check(not crypto.ct_equal(a, a[:15]), "shorter")


def test_e2e_keys():
    v = vectors("crypto")["e2e"]
    a, b = v["a"], v["b"]
    ids = [unhex(d["id"].replace("-", "")) for d in (a, b)]
    lo, hi = min(ids), max(ids)
    eq(lo, unhex(v["lo_id"]), "lo")
    eq(hi, unhex(v["hi_id"]), "hi")
    k = crypto.x25519(unhex(a["private"]), unhex(b["public"]))
    eq(k, unhex(v["k"]), "k from a")
    eq(crypto.x25519(unhex(b["private"]), unhex(a["public"])), k, "k from b")
    prk = crypto.hkdf_extract(lo + hi, k)
    eq(prk, unhex(v["prk"]), "prk")
    okm = crypto.hkdf_expand(prk, b"realm/1 e2e", 128)
    eq(okm, unhex(v["okm"]), "okm")
    eq((okm[0:32], okm[32:64]), keys(v["lo_to_hi"]), "lo_to_hi")
    eq((okm[64:96], okm[96:128]), keys(v["hi_to_lo"]), "hi_to_lo")


def test_open_garbage():
    enc, mac = bytes(32), bytes(32)
    for body in (b"", bytes(23), bytes(24), bytes(100)):
        expect_error("MALFORMED", crypto.open_body, enc, mac, b"\x02\x00", body)


def test_releasable_keys_seal_and_open_the_same_across_releases():
    """The realm's keys (releasable: prepared at their first packet, dropped by release())
    give the same bodies as kept ones, and keep their nonces and nonce rule."""
    enc, mac = bytes(range(32)), bytes(range(32, 64))
    kept = crypto.Sealer(enc, mac)
    sealer = crypto.Sealer(enc, mac, True)
    opener = crypto.Opener(enc, mac, True)
    opener.release()  # before any packet: nothing prepared yet
    bodies = []
    for i in range(4):
        body = sealer.seal(b"\x02\x07", b"packet %d" % i)
        eq(body, kept.seal(b"\x02\x07", b"packet %d" % i), "same body %d" % i)
        eq(opener.open(b"\x02\x07", body), b"packet %d" % i, "opened %d" % i)
        bodies.append(body)
        if i % 2:
            sealer.release()
            opener.release()
    eq(sealer.n, 4, "nonces go on after a release")
    expect_error("MALFORMED", opener.open, b"\x02\x07", bodies[1])  # a replay, after release
    expect_error("MALFORMED", opener.open, b"\x02\x08", sealer.seal(b"\x02\x07", b"x"))


def test_ctr_from_ecb_asks_for_one_block_the_size_of_the_data():
    # A 600-byte message once failed here on a device at 128k: the whole keystream, two
    # big ints, their XOR and its bytes each needed a block of its size. Three such
    # blocks free (and nothing larger) must do.
    key, iv = bytes(range(32)), bytes(16)
    ecb = compat.aes256_ecb(key)
    for size in (600, 4096):
        data = bytes(range(200)) * (size // 200) + bytes(size % 200)
        expected = bytes(crypto.ctr_from_ecb(ecb, iv, data))
        got = squeezed(lambda: crypto.ctr_from_ecb(ecb, iv, data), 3, size + 424)
        eq(bytes(got), expected, "%d bytes in a squeezed heap" % size)
