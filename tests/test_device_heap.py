"""The device's heap, kept from growing back (issues 12 and 9): the firmware compiled as
for a board, online and idle under the MicroPython unix port with bench/heap_app.py (the
default app, then one report of the heap and of the interpreter's name table). Each
figure is deterministic: names and bytes in use, never timing.

Why names: every name in a loaded module is interned for good, in pools of 20, 40, ...,
320 entries on the unix port (620 in five). The 621st name costs a sixth pool of 640
entries, 7.5 KB at once: that step was most of the 8 KB the idle device lost last session.
"""
import os
import uuid

from tests.fw_helpers import realm, unix_build  # noqa: F401  (fixtures)
from tools.simproc import ROOT, SimDevice, write_config

HEAP_APP = os.path.join(ROOT, "bench", "heap_app.py")
IDLE_HEAP_IN_USE = 96 * 1024  # measured 92,576 B at 256k (make bench-device: "heap in use")
# A -X heapsize in which a device comes online at its first attempt and idles: boot, the
# handshake's peak (two X25519 on first contact, the session keys, the first report) and
# the heap's fragmentation all have to fit. 1 KB over issue 12's target, 96k, which passed
# 48 runs of 48 (95k 10 of 16; this 16 of 16, and 7 of 10 before the cuts of devheap).
IDLE_FITS_IN = "97k"
UPDATE_SUPPORT = 2 * 1024  # issue 9: what update support may add to an idle device


def idle(tmp_path, realm, name, heap="256k", extra=(), output=None):
    """(heap bytes in use, interned names, name pools) of a device online and idle;
    what it printed is appended to `output`, a list."""
    device_id, token = realm.add_device(name)
    path = write_config(str(tmp_path / (name + ".json")), str(uuid.UUID(bytes=device_id)),
                        token, name, port=realm.port)
    device = SimDevice(path, heap=heap, app=HEAP_APP)
    device.start(*extra)
    try:
        heap_line = device.wait(r"^heap (\d+) \d+$|MemoryError|Traceback", 30)
        assert heap_line.group(1), device.output()
        names = device.wait(r"^qstr pool: n_pool=(\d+), n_qstr=(\d+)", 10)
    finally:
        device.kill()
        if output is not None:
            output.append(device.output())
    return int(heap_line.group(1)), int(names.group(2)), int(names.group(1))


def test_an_idle_device_keeps_its_names_in_five_pools_and_its_heap_in_use(
        tmp_path, realm, unix_build):
    used, names, pools = idle(tmp_path, realm, "idle")
    assert pools == 5, ("%d names need a 6th pool (7.5 KB): private module constants as "
                        "const(), no CPython-only code in device modules" % names)
    assert used <= IDLE_HEAP_IN_USE, "%d bytes in use, idle" % used


def test_a_device_at_its_smallest_heap_comes_online_at_once_and_idles(
        tmp_path, realm, unix_build):
    output = []
    idle(tmp_path, realm, "small", heap=IDLE_FITS_IN, output=output)
    assert output[0].count(": connecting: ") == 1, output[0]  # no attempt failed first
    assert "out of memory" not in output[0], output[0]


# Prints every name the interpreter interned (micropython.qstr_info(1): "Q(name)" lines).
NAMES_APP = """
import micropython


async def main(device):
    await device.wait_online()
    micropython.qstr_info(1)
    print("names end")
"""


def test_a_simulated_device_loads_its_firmware_by_short_paths_as_a_board(
        tmp_path, realm, unix_build):
    # Every loaded module's path is interned for good: loaded from the checkout's absolute
    # path, the heap above (and the smallest heap of `make bench-device`) would depend on
    # where the checkout is. Only the simulator's own script may carry that path.
    app = tmp_path / "names_app.py"
    app.write_text(NAMES_APP)
    device_id, token = realm.add_device("names")
    path = write_config(str(tmp_path / "names.json"), str(uuid.UUID(bytes=device_id)),
                        token, "names", port=realm.port)
    device = SimDevice(path, app=str(app)).start()
    try:
        device.wait(r"^names end$", 30)
    finally:
        device.kill()
    names = [line[2:-1] for line in device.output().splitlines()
             if line.startswith("Q(") and line.endswith(")")]
    paths = [name for name in names if "/" in name]
    assert "/flash/lib/firmware/runtime.mpy" in paths, paths  # a board: ./lib/...
    tools = tuple(os.path.join(root, "tools") for root in (ROOT, os.path.realpath(ROOT)))
    with_root = [name for name in paths if ROOT in name or tools[1] in name]
    assert with_root and all(name.startswith(tools) for name in with_root), with_root


def test_update_support_adds_at_most_2_kb_to_an_idle_device(tmp_path, realm, unix_build):
    # The smallest of five runs each: the collector scans the C stack conservatively, so a
    # stale pointer there can keep some garbage alive (up to ~0.5 KB); it only ever adds.
    # With three, all three runs with updates once came out 0.3 KB high (a clean clone's
    # suite: 2,080 B, where single runs give 1.5 to 1.8 KB).
    with_updates = min(idle(tmp_path, realm, "first-stage-%d" % i)[0] for i in range(5))
    without = min(idle(tmp_path, realm, "no-updates-%d" % i, extra=("--without-updates",))[0]
                  for i in range(5))
    assert with_updates - without <= UPDATE_SUPPORT, (with_updates, without)
