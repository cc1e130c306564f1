"""`make bench`: the protocol core's figures, MicroPython (unix port) beside CPython.

Runs bench/core_figures.py on both interpreters, then finds the smallest MicroPython
heap in which a device (the core compiled to .mpy, as on a board) completes a pinned
handshake and an end-to-end Ping/Pong against a CPython realm.
"""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from shared import crypto  # noqa: E402
from tools.crossrun import make_board_dir, run_device  # noqa: E402
from tools.harness import micropython  # noqa: E402

MP_HEAP = "128k"  # small-board-like; MicroPython runs allocation-heavy code slower at 2 MB
LABELS = {
    "x25519": "X25519, one multiplication",
    "handshake_first_contact": "device handshake, first contact (e_D made ahead)",
    "handshake_pinned": "device handshake, pinned path (dh2 cached)",
    "seal_open_64": "seal + open, 64 B",
    "seal_open_1024": "seal + open, 1 KiB",
    "proxy_encode_decode": "ProxyPass encode + decode (64 B inner)",
    "ed25519_verify": "Ed25519 verify, 64 B message (update manifests)",
    "sha512_pure_1k": "SHA-512 in pure Python, 1 KiB",
}


def figures(cmd):
    out = subprocess.run(cmd + [os.path.join(ROOT, "bench", "core_figures.py"), ROOT],
                         capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        name, value, unit = line.split("\t")
        rows[name] = (float(value), unit)
    return rows


def smallest_heap():
    """Bisect the MicroPython heap (KiB) for a device handshake + e2e ping round trip."""
    realm_keys, device_keys = crypto.generate_keypair(), crypto.generate_keypair()
    peer_private, peer_public = crypto.generate_keypair()
    peer = (bytes([0xBB]) * 16, peer_private, peer_public)
    with tempfile.TemporaryDirectory() as tmp:
        board = make_board_dir(tmp)
        bound = {}
        rc, report, _ = run_device(board, realm_keys, device_keys, peer, bound, heap="256k")
        if rc != 0:
            raise SystemExit("device run failed at 256k: " + report)
        dh2 = bytes.fromhex(report.split("dh2=")[1].split()[0])
        lo, hi = 16, 256
        while hi - lo > 1:
            mid = (lo + hi) // 2
            rc, _, _ = run_device(board, realm_keys, device_keys, peer, bound,
                                  pinned=realm_keys[1], dh2=dh2, heap="%dk" % mid)
            lo, hi = (lo, mid) if rc == 0 else (mid, hi)
            print("  heap %3d KiB: %s" % (mid, "ok" if rc == 0 else "fails"), flush=True)
        return hi


def main():
    print("Protocol core benchmark (MicroPython unix port at -X heapsize=%s, CPython %s)"
          % (MP_HEAP, sys.version.split()[0]))
    mp = figures([micropython(), "-X", "heapsize=" + MP_HEAP])
    cp = figures([sys.executable])
    print("%-50s %14s %14s" % ("figure", "MicroPython", "CPython"))
    for name, label in LABELS.items():
        unit = mp[name][1]
        print("%-50s %11.1f %-2s %11.1f %-2s" % (label, mp[name][0], unit, cp[name][0], unit))
    print("Smallest MicroPython heap for a pinned handshake + e2e ping (bisecting):")
    kib = smallest_heap()
    print("%-50s %11d KiB (%d bytes; free-block layout moves it by ~2 KiB between runs)"
          % ("peak heap, device handshake + proxy round trip", kib, kib * 1024))


if __name__ == "__main__":
    main()
