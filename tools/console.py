"""The board's serial console: what the firmware prints (and its REPL after Ctrl-C).

usage: python tools/console.py PORT        (make console PORT=/dev/ttyUSB0)
Leave with Ctrl-] (or Ctrl-x).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.flash import FlashError, check_port, find_tool  # noqa: E402


def main(argv):
    port = argv[0] if argv else ""
    try:
        check_port(port)
        mpremote = find_tool("mpremote")
        if not sys.stdin.isatty():
            raise FlashError("the console needs a terminal, and stdin is not one: run it in "
                             "a terminal (not from a script or a pipe)")
    except FlashError as e:
        print("console: %s\nusage: make console PORT=/dev/ttyUSB0" % e, file=sys.stderr)
        return 2
    # `resume`: attach without the soft reset mpremote would otherwise do.
    os.execv(mpremote, [mpremote, "connect", port, "resume", "repl"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
