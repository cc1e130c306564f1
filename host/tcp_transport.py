"""The realm's TCP transport: what a Link needs of an accepted socket, and nothing more.

asyncio's socket transport costs about 1.5 KiB per connection (an attribute dict, the
socket's and the peer's names, a write deque, a weak reference, a protocol object), a
quarter of an idle session in the realm; this one holds the socket, its link and, only
while the kernel's send buffer is full, the bytes waiting for it (~0.4 KiB with the
loop's reader). Reads go through one buffer shared by all connections (the loop runs one
callback at a time) and hand the link a copy of what came.

The link calls write, get_write_buffer_size, close, abort, pause_reading,
resume_reading and acked; the transport calls link.data_received(data) and, when the
peer closes or the socket fails, link.transport_lost(why) once. close() and abort()
come from a link that has ended: they call nothing back.
"""
from host.listener import set_nodelay, tcp_acked

READ_SIZE = 256 * 1024  # asyncio's: a burst of small packets is one read
_read_buffer = bytearray(READ_SIZE)
_read_view = memoryview(_read_buffer)
_AGAIN = (BlockingIOError, InterruptedError)


class TcpTransport:
    __slots__ = ("_loop", "_sock", "_fd", "_link", "_pending", "_closing", "_closed",
                 "__weakref__")  # the hardening tests watch transports end

    def __init__(self, loop, sock, nodelay=True):
        """`sock`: connected and non-blocking. Reading starts with start(link).
        `nodelay`: set TCP_NODELAY (as asyncio does: a small packet leaves now, not after
        the last one's ACK); False where the socket has it already (host/listener.py's)."""
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._link = None
        self._pending = None  # bytearray of what the kernel did not take yet, else None
        self._closing = False  # close() called while bytes were pending
        self._closed = False
        if nodelay:
            set_nodelay(sock)

    def start(self, link):
        self._link = link
        if not (self._closed or self._closing):
            self._loop.add_reader(self._fd, self._read_ready)

    # -- reading ------------------------------------------------------------------------
    def _read_ready(self):
        try:
            size = self._sock.recv_into(_read_buffer)
        except _AGAIN:
            return
        except OSError as e:
            self._lost(e)
            return
        if not size:
            self._lost(None)
            return
        self._link.data_received(bytes(_read_view[:size]))

    def pause_reading(self):
        if not self._closed:
            self._loop.remove_reader(self._fd)

    def resume_reading(self):
        if not self._closed and not self._closing:
            self._loop.add_reader(self._fd, self._read_ready)

    # -- writing ------------------------------------------------------------------------
    def write(self, data):
        if self._closed or self._closing:
            return
        if self._pending is not None:  # behind others: in order, when the socket is ready
            self._pending += data
            return
        try:
            sent = self._sock.send(data)
        except _AGAIN:
            sent = 0
        except OSError as e:
            self._loop.call_soon(self._lost, e)  # not from within the link's own call
            return
        if sent < len(data):
            self._pending = bytearray(memoryview(data)[sent:])
            self._loop.add_writer(self._fd, self._write_ready)

    def _write_ready(self):
        try:
            sent = self._sock.send(self._pending)
        except _AGAIN:
            return
        except OSError as e:
            self._lost(e)
            return
        del self._pending[:sent]
        if not self._pending:
            self._pending = None
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._close_socket()

    def get_write_buffer_size(self):
        return 0 if self._pending is None else len(self._pending)

    def acked(self):
        """Bytes the peer's kernel acknowledged (host/listener.tcp_acked)."""
        return tcp_acked(self._sock)

    # -- ending -------------------------------------------------------------------------
    def close(self):
        """Stop reading; close once what is pending has been written."""
        if self._closed or self._closing:
            return
        if self._pending is None:
            self._close_socket()
        else:
            self._closing = True
            self._loop.remove_reader(self._fd)

    def abort(self):
        """Close now; what is pending is dropped."""
        if not self._closed:
            self._close_socket()

    def _close_socket(self):
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._pending is not None:
            self._pending = None
            self._loop.remove_writer(self._fd)
        self._sock.close()
        # The link holds this transport: without its link, an ended one is freed by
        # reference counting at once, not left for the cycle collector.
        link, self._link = self._link, None
        return link

    def _lost(self, error):
        if not self._closed:
            self._close_socket().transport_lost(error)
