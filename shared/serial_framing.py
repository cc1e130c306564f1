# The serial transport's framing (PROTOCOL.md section 2): `COBS(packet | crc) | 0x00`.
# Imported only where a serial link is opened, so a device on TCP never loads it.
from array import array

from shared import compat
from shared.errors import MALFORMED, ProtocolError
from shared.framing import check_packet
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
    if not isinstance(data, bytes):
        data = bytes(data)
    view = memoryview(data)
    end = len(data)
    out = bytearray()
    pos = 0
    while True:
        zero = data.find(b"\x00", pos)
        stop = end if zero < 0 else zero
        start = pos
        while stop - pos >= 254:  # full blocks carry no implied zero
            out.append(0xFF)
            out += view[pos:pos + 254]
            pos += 254
        if zero < 0:
            # The last block; skipped only when full blocks ended the data exactly.
            if pos < stop or pos == start:
                out.append(stop - pos + 1)
                out += view[pos:stop]
            return bytes(out)
        out.append(stop - pos + 1)
        out += view[pos:stop]
        pos = zero + 1


def cobs_decode(data):
    """Either COBS form (a final 254-byte block followed by an empty one or not) -> the
    data; ProtocolError(MALFORMED) for an empty input, a zero byte, or a block running
    past the end."""
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    end = len(data)
    if end == 0 or data.find(b"\x00") >= 0:
        raise ProtocolError(MALFORMED, "bad COBS")
    view = memoryview(data)
    out = bytearray()
    pos = 0
    while True:
        code = data[pos]
        stop = pos + code
        if stop > end:
            raise ProtocolError(MALFORMED, "COBS block past the end")
        out += view[pos + 1:stop]
        if stop == end:
            return bytes(out)
        if code != 0xFF:
            out.append(0)
        pos = stop


class SerialFramer:
    """`COBS(packet | crc) | 0x00`, for UART/USB/pty. Never raises on input: a bad frame is
    dropped, counted in .dropped, and the receiver resynchronises at the next 0x00."""

    preamble = b"\x00"
    # One byte stream for the link's whole life: a device that restarts begins its next
    # connection on it with a clear Hello (the realm's RealmConnection.trailing_data).
    continuous = True
    error = None  # a bad frame is dropped and counted, never fatal

    def __init__(self, max_packet=DEFAULT_MAX_PACKET):
        self.max_packet = max_packet
        self.dropped = 0
        self._buf = bytearray()  # the encoded frame in progress
        self._skipping = True  # out of sync: discard up to the next 0x00

    def frame(self, packet):
        check_packet(packet, self.max_packet)
        crc = crc16_ccitt_false(packet).to_bytes(2, "big")
        return cobs_encode(bytes(packet) + crc) + b"\x00"

    def feed(self, data):
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        packets = []
        buf = self._buf
        view = memoryview(data)
        # Packet and CRC may decode from at most this many encoded bytes (either form).
        limit = self.max_packet + 2
        encoded_limit = limit + limit // 254 + 2
        pos = 0
        end = len(data)
        while pos < end:
            zero = data.find(b"\x00", pos)
            stop = end if zero < 0 else zero
            if not self._skipping:
                if len(buf) + stop - pos > encoded_limit:
                    # Cannot fit any more: drop it now rather than buffer it whole.
                    self.dropped += 1
                    self._skipping = True
                    buf[:] = b""
                elif zero >= 0 and not buf:  # a whole frame in this chunk
                    if stop > pos:
                        self._accept(view[pos:stop], limit, packets)
                else:
                    buf += view[pos:stop]
                    if zero >= 0:
                        self._accept(buf, limit, packets)
                        buf[:] = b""
            if zero < 0:
                break
            self._skipping = False
            pos = zero + 1
        return packets

    def _accept(self, encoded, limit, packets):
        try:
            decoded = cobs_decode(encoded)
        except ProtocolError:
            self.dropped += 1
            return
        # A CRC over data followed by its own big-endian CRC leaves 0.
        if not 4 <= len(decoded) <= limit or crc16_ccitt_false(decoded):
            self.dropped += 1
            return
        packets.append(decoded[:-2])
