# A simulated device: the firmware under the MicroPython unix port, as on a board.
# usage: micropython -X heapsize=128k tools/sim.py CONFIG [--app APP.py] [--repin]
#        [--without-updates]
# It boots like a board, through the first stage (firmware/main.py), whose factory slot
# is build/unix/ (`python tools/build.py unix`, which `make sim` does first): the same
# compiled modules a board gets, seen at /flash (tools/sim_args.py). The device's state
# and its update slots live beside its config: path/alice.json -> path/alice.state/ and
# path/alice.slots/
# --without-updates: started as before updates existed (no first stage, no update
# service), for tests/test_device_heap.py to weigh what update support costs.
#
# This script stays in the heap while the device runs, as a board's main.py does, so it
# is only this: the arguments are read by tools/sim_args.py, which is forgotten before
# the device starts (kept, it cost a simulated device 1.3 KB that a board does not spend).
import sys

_tools = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path.insert(0, _tools)
from sim_args import parse  # noqa: E402

_start = parse(sys.argv[1:])
del parse
sys.modules.pop("sim_args")
sys.path.remove(_tools)
if type(_start) is int:
    sys.exit(_start)
try:
    sys.exit(_start[0](**_start[1]) or 0)
except KeyboardInterrupt:  # Ctrl-C: the user's way to stop it, not a failure
    print("stopped")
