# Transports' framing (PROTOCOL.md section 2): packets in, frames out, and back.
#
# Both framers take bytes in any chunking and keep only what a frame in progress needs,
# bounded by max_packet. frame() refuses a packet the peer would refuse, with a local
# ProtocolError (remote=False): TOO_LARGE over max_packet, MALFORMED under 2 bytes.
#
# in_place (a device's link): the framer keeps one receive buffer, which the link's
# bytes land in (space(), then filled(n); or feed(data), which copies data there), and
# its packets are views of that buffer, valid until the next space() or feed(): the
# connection opens them where they lie and only the message an application gets is
# copied (docs/CORE_API.md, "Received packets are views"). A device allocates the
# buffer once, before its first connection while its heap is least fragmented, and gives
# it to the framer of each session (in_place=buffer); RECEIVE_BUFFER bytes take a packet
# of DEFAULT_MAX_PACKET without asking the heap for a block its size. A smaller one (or
# in_place=True) is grown, doubling, when a packet needs more. Without in_place (the
# realm, host tools), feed() returns each packet as its own bytes.
#
# The serial framer and its COBS and CRC helpers are in shared/serial_framing.py, which
# only the code opening a serial link imports: a device on a TCP link never loads it,
# which saves it ~2 KB of heap.
from shared.compat import const
from shared.errors import MALFORMED, TOO_LARGE, ProtocolError
from shared.protocol import DEFAULT_MAX_PACKET

# A receive buffer for a frame of DEFAULT_MAX_PACKET bytes: 4098 on TCP, at most 4117 as
# COBS with its 0x00. A read takes what is free past the frame in progress.
RECEIVE_BUFFER = const(4096 + 24)
_FIRST_SIZE = const(512)  # the receive buffer until a larger packet: the handshake's fit


def check_packet(packet, max_packet):
    if len(packet) > max_packet:
        raise ProtocolError(TOO_LARGE, "%d-byte packet over %d" % (len(packet), max_packet))
    if len(packet) < 2:
        raise ProtocolError(MALFORMED, "packet under 2 bytes")


class InPlace:
    """Both framers' receive buffer, `_buf`: the packets completed since the last space()
    lie in it one after the other, then the frame in progress, _buf[start:end], which
    space() moves to its start."""

    __slots__ = ("in_place", "_buf", "start", "end")

    def __init__(self, in_place):
        self.in_place = in_place  # False, True, or the receive buffer to use (a bytearray)
        self._buf = in_place if isinstance(in_place, bytearray) else bytearray(
            _FIRST_SIZE if in_place else 0)
        self.start = self.end = 0

    def space(self, size=1):
        """A view of the buffer past the frame in progress, at least `size` bytes, where
        the link's next bytes go; then filled(n). Ends the views of the packets handed
        out before."""
        buf = self._buf
        start = self.start
        kept = self.end - start
        if len(buf) - kept < size:  # grown: a device's heap may have no room by then
            buf = bytearray(max(kept + size, 2 * len(buf)))
            buf[:kept] = memoryview(self._buf)[start:self.end]  # the old buffer lives
            self._buf = buf  # while views of it do
        elif start:  # the frame in progress to the start, in pieces that do not overlap
            view = memoryview(buf)  # (a copy within one buffer may not be memmove on MicroPython)
            to = 0
            while to < kept:
                n = min(start - to, kept - to)
                view[to:to + n] = view[start:start + n]
                to += n
                start += n
        self.start, self.end = 0, kept
        return memoryview(buf)[kept:]

    def feed(self, data):
        """The packets completed by data: with in_place, views of the buffer (as filled())."""
        size = len(data)
        self.space(size)[:size] = data
        return self.filled(size)


class StreamFramer(InPlace):
    """`length:u16 | packet`, for TCP. A bad length is fatal, found before any byte of
    the body is taken. feed() still returns the packets completed before it in that
    call (a stream parser hands over what precedes a fault, as h11 does); the fault is
    then kept in `error` and raised by the next call, and by every later one."""

    preamble = b""
    continuous = False  # a connection's own stream: see SerialFramer.continuous
    __slots__ = ("max_packet", "error")  # one per realm link

    def __init__(self, max_packet=DEFAULT_MAX_PACKET, in_place=False):
        InPlace.__init__(self, in_place)
        self.max_packet = max_packet
        self.error = None  # the fatal fault, once found

    def frame(self, packet):
        check_packet(packet, self.max_packet)
        return len(packet).to_bytes(2, "big") + packet

    def filled(self, n):
        """The packets completed by the n bytes put in space(): views of the buffer."""
        if self.error is not None:
            raise self.error
        self.end += n
        packets, self.start = self._receive(self._buf, self.start, self.end, False)
        return packets

    def feed(self, data):
        if self.error is not None:
            raise self.error
        if self.in_place:
            return InPlace.feed(self, data)
        # Straight from data, but for a frame begun in an earlier call (then in _buf).
        pending = self._buf
        if pending:
            pending += data
            data = pending
        packets, start = self._receive(data, 0, len(data), True)
        if data is pending:
            pending[:start] = b""
        elif start < len(data):
            pending += memoryview(data)[start:]
        return packets

    def _receive(self, buf, start, end, copy):
        """(the packets in buf[start:end], as bytes if copy else views; where the frame
        in progress begins). Raises the fault of a bad length unless packets precede it."""
        view = memoryview(buf)
        packets = []
        while end - start >= 2:
            length = (buf[start] << 8) | buf[start + 1]
            if length > self.max_packet:
                self.error = ProtocolError(TOO_LARGE, "%d-byte frame over %d" % (
                    length, self.max_packet))
            elif length < 2:
                self.error = ProtocolError(MALFORMED, "%d-byte frame" % length)
            if self.error is not None:
                if packets:
                    break
                raise self.error
            if end - start < 2 + length:
                break
            packet = view[start + 2:start + 2 + length]
            packets.append(bytes(packet) if copy else packet)
            start += 2 + length
        return packets, start
