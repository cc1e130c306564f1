# A large message sent where it lies (docs/CORE_API.md, "Large messages are built where
# they are sent from"): its ProxyPass frame is built in one buffer, the message copied
# once into it and sealed there end to end, then for the hop, and framed around it; the
# connection queues that buffer as it is. Before, each layer made a copy the message's
# size, which a small board's fragmented heap may not have (a 128k device sent under
# 1 KB on a serial link, under 2 KB on TCP).
# Loaded by the Endpoint for the first message over 256 bytes, or at boot by a
# firmware whose config asks for a send buffer, not before: the code stays out of the
# heap of a device that sends only small messages (its smallest heap is its handshake's
# peak, which every resident byte raises). So this is the Connection's own code for such
# a packet, kept apart: it reads the hop's parts (the framer's kind, the sealer, whether
# anything is queued) as the class does, and queues the frame with conn.queue_frame(), as
# every send does.
from shared import codec, crypto
from shared.compat import const

buffer = None  # the send buffer (config "send_buffer"), made before the first connection
_HEADER = const(b"\x02\x07")  # the hop's header: PROTO_REALM, PROXY_PASS
_HOP = const(46)  # the hop's bytes around the inner packet: header, n, peer, msg_id, tag


def send(conn, e2e, peer, msg_id, dpacket_id, fields):
    """A ProxyPass from conn to peer of the inner packet (dpacket_id, fields: the last one
    the message, any before it u8s), sealed end to end: built in the send buffer if it is
    large enough and nothing of it is still queued, else in a block of its own."""
    conn._require_established()
    keys, n = e2e.take_nonce(peer)
    head = codec.encode(codec.PROTO_DEVICE, dpacket_id, *(fields[:-1] + (b"",)))
    data = fields[-1]
    inner = len(head) + len(data) + 24  # header 2, n 8, fields, data, tag 16
    size = _HOP + inner
    if conn._framer.preamble:  # serial: room for COBS's code bytes before, CRC and 0x00 after
        from shared.serial_framing import cobs_room, end_frame
        start = cobs_room(size)
        end = start + size + 3
    else:
        start = 2
        end = 2 + size
    frame = buffer
    if frame is None or len(frame) < end or conn._out:
        frame = bytearray(end)
    packet = memoryview(frame)[start:start + size]  # header 2 | n 8 | peer | msg_id | inner | tag
    packet[10:26] = peer
    packet[26:30] = msg_id.to_bytes(4, "big")
    _seal(crypto.Sealer(keys[0], keys[1]), n, packet[30:30 + inner], head, data)
    sealer = conn._sealer
    _seal(sealer, sealer.n, packet, _HEADER, None)
    if start == 2:
        frame[0] = size >> 8
        frame[1] = size & 0xFF
    else:
        end = end_frame(frame, start, start + size)
    if frame is buffer or end < len(frame):  # the send buffer is queued as a view: a frame
        frame = memoryview(frame)[:end]  # queued behind copies it out, never grows it
    conn.queue_frame(frame)


def _seal(sealer, n, packet, head, data):
    """Seal packet (header 2 | n 8 | plaintext | tag 16) where it lies, with nonce n: the
    header and the plaintext's first bytes from head, then data (None: in place already)."""
    header = head[:2]
    packet[:2] = header
    if data is not None:
        end = 8 + len(head)
        packet[10:end] = head[2:]
        packet[end:len(packet) - 16] = data
    sealer.n = n
    sealer.seal_in_place(header, packet[2:])
