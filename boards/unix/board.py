# Board profile: the MicroPython unix port, for simulated devices and the virtual board
# of the flashing tests. No Wi-Fi (the host's network is already up), no LED; the
# serial link is a tty or pty path, e.g. one end of a `socat` pair.
import sys
import termios

NAME = "unix"
MPY_MARCH = "host"
LIBS = ()
HAS_WIFI = False
STATE_DIR = "state"  # relative to the working folder; tools/sim.py puts it beside the config
SERIAL = {"path": None, "baud": 115200}
# The unix REPL ends on a soft or hard reset: mpremote must `resume`, and nothing resets.
RESET_AFTER_FLASH = False
MPREMOTE_RESUME = True

# termios c_cc indexes on Linux: with VMIN = VTIME = 0 a read returns what is there at
# once instead of blocking until it has all the bytes asked for.
_VTIME = 5
_VMIN = 6
_BAUDS = {9600: termios.B9600, 57600: termios.B57600, 115200: termios.B115200,
          230400: termios.B230400, 460800: termios.B460800, 921600: termios.B921600}


async def join_network(wifi, log):
    pass


def rssi():
    return None  # no radio: the host's network carries the link


def open_serial(serial):
    """The tty at the config's "serial" (a path, or {"path", "baud"}), raw and
    non-blocking for reads: a stream asyncio can poll."""
    opts = dict(SERIAL)
    if isinstance(serial, dict):
        opts.update(serial)
    else:
        opts["path"] = serial
    port = open(opts["path"], "rb+")
    fd = port.fileno()
    termios.setraw(fd)
    attrs = termios.tcgetattr(fd)
    if opts["baud"] not in _BAUDS:
        port.close()
        raise ValueError("serial baud %r: this port knows %s" % (opts["baud"], sorted(_BAUDS)))
    attrs[4] = attrs[5] = _BAUDS[opts["baud"]]
    attrs[6][_VMIN] = 0
    attrs[6][_VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return port


def show_status(status):
    pass


def restart():
    """What a reset is to a simulated device: the process ends (its runner may start it
    again, as power would come back)."""
    sys.exit(1)
