"""A device state machine in MicroPython (64k heap, code compiled by mpy-cross as on a
board) against the realm state machine in CPython, bytes passed between the processes:
both handshake paths, then a Ping/Pong round trip end to end through the realm."""
import glob
import os
import re
import shutil
import subprocess
import sys
from binascii import hexlify

import pytest

from shared import codec, crypto
from shared.e2e import E2E
from shared.events import LoginRequest, PeerKeyRequested, ProxyReceived
from shared.framing import StreamFramer
from shared.realm import RealmConnection
from tests.conftest import ROOT

BIN = os.path.dirname(sys.executable)
HEAP = "96k"


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory):
    """shared/ and the device script compiled to .mpy, as flashed on a board."""
    out = tmp_path_factory.mktemp("board")
    os.makedirs(out / "shared")
    for src in glob.glob(os.path.join(ROOT, "shared", "*.py")):
        dst = out / "shared" / (os.path.basename(src)[:-3] + ".mpy")
        subprocess.run([os.path.join(BIN, "mpy-cross"), "-o", str(dst), src], check=True)
    shutil.copy(os.path.join(ROOT, "tests", "mp_device.py"), out / "mp_device.py")
    return out


def _h(b):
    return hexlify(b).decode()


def _run(board_dir, realm_keys, device_keys, peer, bound, pinned=None, dh2=None):
    device_id = bytes(range(16))
    token = "cross-interpreter-token"
    args = [_h(device_id), _h(device_keys[0]), _h(device_keys[1]), token, _h(peer[0])]
    if pinned:
        args += [_h(pinned), _h(dh2)]
    proc = subprocess.Popen([os.path.join(BIN, "micropython"), "-X", "heapsize=" + HEAP,
                             "mp_device.py"] + args, cwd=board_dir,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    realm = RealmConnection(realm_keys[0], realm_keys[1], StreamFramer(), 0, bound.get)
    peer_e2e = E2E(peer[0], peer[1], 3)
    peer_e2e.add_peer(device_id, device_keys[1])
    reader = StreamFramer(65535)
    sent_ids = []
    try:
        while proc.poll() is None and not realm.closed:
            header = proc.stdout.read(2)
            if len(header) < 2:
                break
            frame = header + proc.stdout.read(int.from_bytes(header, "big"))
            sent_ids += [p[1] for p in reader.feed(frame)]
            for ev in realm.receive_data(frame, 0):
                if isinstance(ev, LoginRequest):
                    assert ev.details == token.encode()
                    bound.setdefault(ev.device_id, ev.device_public)
                    realm.accept_login("cross", 30, 4096)
                elif isinstance(ev, PeerKeyRequested):
                    realm.send_peer_key(ev.peer, peer[2] if ev.peer == peer[0] else None)
                elif isinstance(ev, ProxyReceived):
                    assert ev.peer == peer[0]
                    dpacket_id, fields = peer_e2e.open(device_id, ev.inner)
                    assert dpacket_id == codec.PING
                    realm.send_delivery(ev.msg_id, codec.DELIVERED)
                    realm.send_proxy(peer[0], 0, peer_e2e.seal(device_id, codec.PONG, fields[0]))
            out = realm.data_to_send()
            if out:
                proc.stdin.write(out)
                proc.stdin.flush()
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = proc.stderr.read().decode()
    assert proc.returncode == 0, report
    return report, sent_ids


def test_micropython_device_against_cpython_realm_both_paths(board_dir):
    realm_keys = crypto.generate_keypair()
    device_keys = crypto.generate_keypair()
    peer_private, peer_public = crypto.generate_keypair()
    peer = (bytes([0xBB]) * 16, peer_private, peer_public)
    bound = {}

    report, sent = _run(board_dir, realm_keys, device_keys, peer, bound)
    m = re.search(r"WELCOME pinned_path=(\d) realm=(\w+) dh2=(\w+)", report)
    assert m and m.group(1) == "0", report
    assert m.group(2) == _h(realm_keys[1])
    assert codec.SEND_KEY in sent, "first contact sends SendKey"
    assert "PONG hi" in report, report

    report, sent = _run(board_dir, realm_keys, device_keys, peer, bound,
                        pinned=realm_keys[1], dh2=bytes.fromhex(m.group(3)))
    assert "WELCOME pinned_path=1" in report, report
    assert codec.SEND_KEY not in sent, "pinned path: no SendKey"
    assert "PONG hi" in report, report
