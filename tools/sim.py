# A simulated device: the firmware under the MicroPython unix port, as on a board.
# usage: micropython -X heapsize=128k tools/sim.py CONFIG [--app APP.py] [--repin]
#        [--without-updates]
# It boots like a board, through the first stage (firmware/main.py), whose factory slot
# is build/unix/ (`python tools/build.py unix`, which `make sim` does first): the same
# compiled modules a board gets. The device's state and its update slots live beside its
# config: path/alice.json -> path/alice.state/ and path/alice.slots/
# --without-updates: started as before updates existed (no first stage, no update
# service), for tests/test_device_heap.py to weigh what update support costs.
import os
import sys

_root = __file__.rsplit("/", 2)[0] if __file__.count("/") >= 2 else "."
_build = _root + "/build/unix"
try:
    os.stat(_build + "/lib")
    _factory = _build
except OSError:  # not built: run the sources (compiling them needs a larger heap)
    _factory = _root
sys.path[:0] = [_root + "/boards/unix"]  # board.py: on a board it sits beside main.py


def main(argv):
    if not argv or argv[0].startswith("-"):
        print("usage: tools/sim.py CONFIG [--app APP.py] [--repin]")
        return 2
    config, app, repin, updates = argv[0], None, False, True
    i = 1
    while i < len(argv):
        if argv[i] == "--app" and i + 1 < len(argv):
            app = argv[i + 1]
            i += 1
        elif argv[i] == "--repin":
            repin = True
        elif argv[i] == "--without-updates":
            updates = False
        else:
            print("tools/sim.py: unknown argument %r" % argv[i])
            return 2
        i += 1
    base = config[:-5] if config.endswith(".json") else config
    if updates:
        sys.path.insert(0, _root + "/firmware")
        from main import run  # the board's main.py (it forgets itself once it has chosen)
        sys.path.pop(0)
    else:
        sys.path[:0] = [_factory + "/lib", _factory]
        from firmware.launch import start

        def run(slots, factory, **options):
            return start(**options)
    try:
        return run(base + ".slots", _factory, config_path=config,
                   state_dir=base + ".state", app=app, repin=repin)
    except KeyboardInterrupt:  # Ctrl-C: the user's way to stop it, not a failure
        print("stopped")
        return 0


sys.exit(main(sys.argv[1:]) or 0)
