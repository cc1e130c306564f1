# tools/sim.py's arguments, read once and forgotten before the device starts (see there).
# parse(argv) -> (start, options): the call that runs the device; or an exit status.
import os
import sys

USAGE = "usage: tools/sim.py CONFIG [--app APP.py] [--repin] [--without-updates]"


# Where the device sees its factory slot, as a board sees its own filesystem: every loaded
# module's path is interned for good, so from the checkout's absolute path the heap would
# depend on where the checkout is (2.3 KB more at a 78-character path than at a short one).
FLASH = "/flash"


def parse(argv):
    root = __file__.rsplit("/", 2)[0] if __file__.count("/") >= 2 else "."
    build = root + "/build/unix"
    try:
        os.stat(build + "/lib")
        factory, board = build, ""
    except OSError:  # not built: run the sources (compiling them needs a larger heap)
        factory, board = root, "/boards/unix"
    try:
        os.stat(FLASH)  # a real folder of this host: not hidden behind the factory
    except OSError:
        os.mount(os.VfsPosix(factory), FLASH)
        factory = FLASH
    if not argv or argv[0].startswith("-"):
        print(USAGE)
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
            print(USAGE)
            return 2
        i += 1
    sys.path[:0] = [factory + board]  # board.py: on a board it sits beside main.py
    base = config[:-5] if config.endswith(".json") else config
    options = {"config_path": config, "state_dir": base + ".state", "app": app,
               "repin": repin}
    if not updates:
        sys.path[:0] = [factory + "/lib", factory]
        from firmware.launch import start
        return start, options
    sys.path.insert(0, factory + "/firmware")  # the sources' main.py if not built
    from main import run  # the board's main.py (it forgets itself once it has chosen)
    sys.path.pop(0)
    options["slots"] = base + ".slots"
    options["factory"] = factory
    return run, options
