"""A non-blocking byte stream over a file descriptor (a serial port, a pty) on the event
loop, with no thread: the realm's serial links and the host-side device's serial
transport both use it."""
import os


class FdStream:
    """`on_data(bytes)` for what arrives; `on_lost(why)` once, when the fd fails or ends."""

    def __init__(self, loop, fd, on_data, on_lost):
        self.loop = loop
        self.fd = fd
        self._on_data = on_data
        self._on_lost = on_lost
        self._out = bytearray()
        self.closed = False
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def write(self, data):
        if self.closed:
            return
        waiting = bool(self._out)
        self._out += data
        if not waiting:
            self._write_some()

    def buffered(self):
        return len(self._out)

    def discard_output(self):
        self._out = bytearray()
        if not self.closed:
            self.loop.remove_writer(self.fd)

    def close(self):
        """Stop watching the fd (the caller owns it and closes it)."""
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            self.loop.remove_writer(self.fd)

    def _lost(self, why):
        if not self.closed:
            self.close()
            self._on_lost(why)

    def _readable(self):
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            self._lost(e.strerror or str(e))
            return
        if data:
            self._on_data(data)
        else:
            self._lost("end of file")

    def _write_some(self):
        try:
            sent = os.write(self.fd, self._out)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._lost(e.strerror or str(e))
            return
        del self._out[:sent]
        if self._out:
            self.loop.add_writer(self.fd, self._write_some)
        else:
            self.loop.remove_writer(self.fd)
