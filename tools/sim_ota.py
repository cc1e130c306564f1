# A simulated device on a board built with two OTA partitions, which takes firmware
# images (docs/UPDATES.md, "Firmware images"): tools/sim.py, after the bootloader's part.
# usage: micropython -X heapsize=128k tools/sim_ota.py CONFIG [--app APP.py] [--repin]
# The partitions are file-backed stand-ins (boards/unix/ota_partition.py) in a folder
# beside the config: path/alice.json -> path/alice.ota/. A plain simulated board has no
# ota() hook at all, so its idle heap holds none of this.
import sys

_root = __file__.rsplit("/", 2)[0] if __file__.count("/") >= 2 else "."
sys.path[:0] = [_root + "/boards/unix", _root + "/tools"]
import board  # noqa: E402
import ota_partition  # noqa: E402

if len(sys.argv) > 1 and sys.argv[1].endswith(".json"):
    ota_partition.boot(sys.argv[1][:-5] + ".ota")
    board.ota = ota_partition.ota
sys.path.remove(_root + "/tools")
import sim  # noqa: E402,F401 (runs the device)
