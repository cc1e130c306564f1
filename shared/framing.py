# Transports' framing (PROTOCOL.md section 2): packets in, frames out, and back.
#
# Both framers take bytes in any chunking and keep only what a frame in progress needs:
# a bytearray that grows by appending (never re-copied per byte) and is bounded by
# max_packet. frame() refuses a packet the peer would refuse, with a local
# ProtocolError (remote=False): TOO_LARGE over max_packet, MALFORMED under 2 bytes.
#
# The serial framer and its COBS and CRC helpers are in shared/serial_framing.py, which
# only the code opening a serial link imports: a device on a TCP link never loads it,
# which saves it ~2 KB of heap.
from shared.errors import MALFORMED, TOO_LARGE, ProtocolError
from shared.protocol import DEFAULT_MAX_PACKET


def check_packet(packet, max_packet):
    if len(packet) > max_packet:
        raise ProtocolError(TOO_LARGE, "%d-byte packet over %d" % (len(packet), max_packet))
    if len(packet) < 2:
        raise ProtocolError(MALFORMED, "packet under 2 bytes")


class StreamFramer:
    """`length:u16 | packet`, for TCP. A bad length is fatal, found before any byte of
    the body is taken. feed() still returns the packets completed before it in that
    call (a stream parser hands over what precedes a fault, as h11 does); the fault is
    then kept in `error` and raised by the next call, and by every later one."""

    preamble = b""
    continuous = False  # a connection's own stream: see SerialFramer.continuous
    __slots__ = ("max_packet", "error", "_buf", "_need")  # one per realm link

    def __init__(self, max_packet=DEFAULT_MAX_PACKET):
        self.max_packet = max_packet
        self.error = None  # the fatal fault, once found
        self._buf = bytearray()  # the length bytes, then the body, of the frame in progress
        self._need = 0  # body length once the length is read; 0 while reading it

    def frame(self, packet):
        check_packet(packet, self.max_packet)
        return len(packet).to_bytes(2, "big") + packet

    def feed(self, data):
        if self.error is not None:
            raise self.error
        packets = []
        buf = self._buf
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            if not self._need:
                take = min(2 - len(buf), end - pos)
                buf += view[pos:pos + take]
                pos += take
                if len(buf) < 2:
                    break
                length = (buf[0] << 8) | buf[1]
                buf[:] = b""
                if length > self.max_packet:
                    self.error = ProtocolError(
                        TOO_LARGE, "%d-byte frame over %d" % (length, self.max_packet))
                elif length < 2:
                    self.error = ProtocolError(MALFORMED, "%d-byte frame" % length)
                if self.error is not None:
                    if packets:
                        return packets
                    raise self.error
                self._need = length
                continue
            take = min(self._need - len(buf), end - pos)
            if take == self._need:  # the whole body is here: no buffering
                packets.append(bytes(view[pos:pos + take]))
            else:
                buf += view[pos:pos + take]
                if len(buf) < self._need:
                    break
                packets.append(bytes(buf))
                buf[:] = b""
            pos += take
            self._need = 0
        return packets
