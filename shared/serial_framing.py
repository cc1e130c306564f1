# The serial transport's framing (PROTOCOL.md section 2): `COBS(packet | crc) | 0x00`.
# Imported only where a serial link is opened, so a device on TCP never loads it.
from array import array

from shared import compat
from shared.errors import MALFORMED, ProtocolError
from shared.framing import InPlace, check_packet
from shared.protocol import DEFAULT_MAX_PACKET


def _crc_table():
    table = array("H", bytes(512))
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
        table[i] = crc & 0xFFFF
    return table


_CRC_TABLE = None  # 512 bytes, built by the first CRC: a device on a TCP link needs none


def _crc16_by_table(data):
    global _CRC_TABLE
    if _CRC_TABLE is None:
        _CRC_TABLE = _crc_table()  # byte-wise lookups are ~1.5x faster than table-free steps
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ table[(crc >> 8) ^ byte]
    return crc


# CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0. In C where the
# platform has it (CPython's binascii.crc_hqx), else from the table.
crc16_ccitt_false = compat.crc16_ccitt_false or _crc16_by_table


def cobs_encode(data):
    """COBS in its minimal form: a final 254-byte block is not followed by an empty one."""
    start = len(data) // 254 + 1
    buf = bytearray(start + len(data))
    buf[start:] = data
    return bytes(memoryview(buf)[:_cobs_encode_in_place(buf, start, len(buf))])


def _cobs_encode_in_place(buf, pos, end):
    """COBS of buf[pos:end], written from buf[0] -> its length. pos must be at least the
    code bytes COBS adds, (end - pos) // 254 + 1: the data only moves left, so one buffer
    holds the packet and then its frame (a second, a device's heap may not have)."""
    view = memoryview(buf)
    out = 0
    while True:
        zero = buf.find(b"\x00", pos, end)
        stop = end if zero < 0 else zero
        start = pos
        while stop - pos >= 254:  # full blocks carry no implied zero
            buf[out] = 0xFF
            view[out + 1:out + 255] = view[pos:pos + 254]
            out += 255
            pos += 254
        if zero < 0 and pos == stop and pos != start:
            return out  # full blocks ended the data exactly: no last block
        n = stop - pos
        buf[out] = n + 1
        view[out + 1:out + 1 + n] = view[pos:stop]
        out += n + 1
        if zero < 0:
            return out
        pos = zero + 1


def cobs_room(size):
    """The bytes end_frame() needs free before a packet of `size` bytes: COBS's code
    bytes for it and its CRC."""
    return (size + 2) // 254 + 1


def end_frame(frame, start, end):
    """The frame of the packet frame[start:end], made where it lies (its CRC after it, COBS
    over both, the 0x00), from frame[0]: cobs_room() bytes free before the packet and 3
    after it. -> the frame's length. A large packet is framed in its own buffer so."""
    crc = crc16_ccitt_false(memoryview(frame)[start:end])
    frame[end] = crc >> 8
    frame[end + 1] = crc & 0xFF
    n = _cobs_encode_in_place(frame, start, end + 2)
    frame[n] = 0
    return n + 1


def cobs_decode(data):
    """Either COBS form (a final 254-byte block followed by an empty one or not) -> the
    data; ProtocolError(MALFORMED) for an empty input, a zero byte, or a block running
    past the end."""
    buf = bytearray(data)  # any buffer: bytes, bytearray, memoryview
    if buf.find(b"\x00") >= 0:
        raise ProtocolError(MALFORMED, "bad COBS")
    return bytes(memoryview(buf)[:_cobs_decode_in_place(memoryview(buf), len(buf))])


def _cobs_decode_in_place(view, end):
    """Decodes the COBS in view[:end] (no zero byte) where it lies -> the decoded length.
    Each block shrinks by its code byte, so the data only moves left: no second buffer,
    which a device's fragmented heap may not have for a large frame."""
    if end == 0:
        raise ProtocolError(MALFORMED, "bad COBS")
    pos = out = 0
    while True:
        code = view[pos]
        stop = pos + code
        if stop > end:
            raise ProtocolError(MALFORMED, "COBS block past the end")
        view[out:out + code - 1] = view[pos + 1:stop]
        out += code - 1
        if stop == end:
            return out
        if code != 0xFF:
            view[out] = 0
            out += 1
        pos = stop


def _encoded_limit(size):
    """The most encoded bytes `size` bytes (packet and CRC) decode from, in either form."""
    return size + size // 254 + 2


class SerialFramer(InPlace):
    """`COBS(packet | crc) | 0x00`, for UART/USB/pty. Never raises on input: a bad frame is
    dropped, counted in .dropped, and the receiver resynchronises at the next 0x00.
    Frames are decoded where they lie in the receive buffer (shared/framing.py), with or
    without in_place: a second buffer is what a device's fragmented heap may not have."""

    preamble = b"\x00"
    # One byte stream for the link's whole life: a device that restarts begins its next
    # connection on it with a clear Hello (the realm's RealmConnection.trailing_data).
    continuous = True
    error = None  # a bad frame is dropped and counted, never fatal

    def __init__(self, max_packet=DEFAULT_MAX_PACKET, in_place=False):
        InPlace.__init__(self, in_place)
        self.max_packet = max_packet
        self.dropped = 0
        self._skipping = True  # out of sync: discard up to the next 0x00

    def frame(self, packet):
        check_packet(packet, self.max_packet)
        crc = crc16_ccitt_false(packet).to_bytes(2, "big")
        return cobs_encode(bytes(packet) + crc) + b"\x00"

    def feed(self, data):
        packets = InPlace.feed(self, data)
        return packets if self.in_place else [bytes(packet) for packet in packets]

    def filled(self, n):
        """The packets completed by the n bytes put in space(): views of the buffer."""
        buf = self._buf
        view = memoryview(buf)
        packets = []
        limit = self.max_packet + 2
        pos = self.end  # the bytes before it hold no 0x00
        start = self.start
        end = self.end = pos + n
        while True:
            zero = buf.find(b"\x00", pos, end)
            if zero < 0:
                break
            if not self._skipping and zero > start:  # two 0x00 in a row: no frame, no drop
                self._accept(view[start:zero], limit, packets)
            self._skipping = False
            start = pos = zero + 1
        if self._skipping or end - start > _encoded_limit(limit):
            # Out of sync, or too long to be a frame: dropped now rather than kept whole.
            if not self._skipping and end > start:
                self.dropped += 1
                self._skipping = True
            start = end
        self.start = start
        return packets

    def _accept(self, view, limit, packets):
        try:
            length = _cobs_decode_in_place(view, len(view))
        except ProtocolError:
            self.dropped += 1
            return
        # A CRC over data followed by its own big-endian CRC leaves 0.
        if not 4 <= length <= limit or crc16_ccitt_false(view[:length]):
            self.dropped += 1
            return
        packets.append(view[:length - 2])
