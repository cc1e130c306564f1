"""A virtual board: MicroPython (the unix port) behind a serial port, for trying
`make flash` and `make provision` without hardware.

usage: python tools/virtual_board.py [--dir DIR] [--heap 128k]      (make board)

It prints the port to give as PORT=. Its folder (default build/virtual-board/) is the
board's filesystem. Like a real board: at power-on it runs main.py if there is one (what
it prints shows here), else it sits at the REPL; Ctrl-C from the port (mpremote sends
one) interrupts it into the REPL; once a flashing session that changed files closes the
port, the board resets and boots what was flashed (as after one that interrupted it).
The port stays the same throughout.
Stop it with Ctrl-C here.
"""
import argparse
import os
import select
import signal
import subprocess
import sys
import time
import tty

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from shared.protocol import DEFAULT_PORT  # noqa: E402
from tools.harness import micropython  # noqa: E402

CTRL_C = 0x03


def files_state(folder):
    """What flashing changes: every file's path, size and modification time."""
    state = set()
    for path, _dirs, names in os.walk(folder):
        for name in names:
            full = os.path.join(path, name)
            try:
                info = os.stat(full)
            except OSError:
                continue
            state.add((full, info.st_size, info.st_mtime_ns))
    return state


class Board:
    def __init__(self, folder, heap, say=print):
        self.folder = folder
        self.heap = heap
        self.say = say
        # The port: a pty whose far end (its name) the tools open. Only this process
        # holds the near end, so the port outlives every reset of the board.
        self.port_fd, port_side = os.openpty()
        tty.setraw(port_side)
        self.port = os.ttyname(port_side)
        os.close(port_side)
        os.set_blocking(self.port_fd, False)
        self.proc = None
        self.board_fd = None
        self.running_main = False
        self.session = False  # a tool has the port open
        self.files_before = set()
        self.interrupted = False  # the session on the port stopped main.py

    def power_on(self, repl=False):
        """Start MicroPython: main.py if there is one (and not `repl`), else the REPL."""
        self.stop()
        main = os.path.exists(os.path.join(self.folder, "main.py")) and not repl
        self.board_fd, board_side = os.openpty()
        tty.setraw(board_side)  # bytes as they come, no echo: a UART, not a terminal
        argv = [micropython(), "-X", "heapsize=" + self.heap] + (["main.py"] if main else [])
        self.proc = subprocess.Popen(argv, cwd=self.folder, stdin=board_side,
                                     stdout=board_side, stderr=board_side,
                                     start_new_session=True)
        os.close(board_side)
        self.running_main = main
        self.files_before = files_state(self.folder)
        self.say("board: %s" % ("running main.py" if main else "at the REPL"))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its group: the venv's launcher too
            self.proc.wait()
        if self.board_fd is not None:
            os.close(self.board_fd)
            self.board_fd = None
        self.proc = None

    def from_port(self, data):
        if self.running_main and CTRL_C in data:
            self.say("board: interrupted (Ctrl-C from the port)")
            self.power_on(repl=True)
            self.interrupted = True
            time.sleep(0.2)  # its prompt first: then the tool's bytes reach the REPL
        os.write(self.board_fd, data)

    def from_board(self, data):
        try:
            os.write(self.port_fd, data)
        except BlockingIOError:
            pass  # nobody reads the port: dropped, as a UART with nothing attached
        if self.running_main:
            sys.stdout.write(data.decode("utf-8", "replace").replace("\r\n", "\n"))
            sys.stdout.flush()

    def session_ended(self):
        """mpremote resets a real board after flashing: this one resets when the tool
        that flashed it, or interrupted it, lets go of the port."""
        flashed = files_state(self.folder) != self.files_before
        if not self.running_main and (flashed or self.interrupted):
            self.say("board: %s; resetting" % ("flashed" if flashed else "port closed"))
            self.interrupted = False
            self.power_on()

    def run(self):
        poller = select.poll()
        poller.register(self.port_fd, select.POLLIN)
        while True:
            poller.register(self.board_fd, select.POLLIN)
            board_fd = self.board_fd
            for fd, event in poller.poll(100):
                if fd == self.port_fd:
                    if event & select.POLLIN:
                        self.session = True
                        self.from_port(os.read(self.port_fd, 4096))
                    elif event & select.POLLHUP:
                        if self.session:
                            self.session = False
                            self.session_ended()
                        time.sleep(0.05)  # nobody on the port: it stays hung up
                elif fd == board_fd and fd == self.board_fd:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        data = b""
                    if data:
                        self.from_board(data)
                    else:  # it exited: a soft reset, or main.py ended (a board: REPL)
                        was_main = self.running_main
                        self.proc.wait()
                        self.power_on(repl=was_main)
            poller.unregister(board_fd)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default=os.path.join(ROOT, "build", "virtual-board"),
                   help="the board's filesystem (default build/virtual-board/)")
    p.add_argument("--heap", default="128k", help="MicroPython's heap (default 128k)")
    args = p.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    board = Board(os.path.abspath(args.dir), args.heap)
    print("virtual board on %s (its files in %s)\n"
          "flash it:  make flash PORT=%s BOARD=unix CONFIG=path/device.json\n"
          "or:        make provision PORT=%s BOARD=unix NAME=... REALM=127.0.0.1:%d\n"
          "stop it with Ctrl-C" % (board.port, args.dir, board.port, board.port, DEFAULT_PORT),
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        board.power_on()
        board.run()
    except KeyboardInterrupt:
        print("\nboard: switched off")
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
