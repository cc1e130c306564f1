# Both framers and their helpers against framing.json (PROTOCOL.md section 2), every
# input fed in every chunking. Runs on CPython (pytest) and MicroPython (tests/mprun.py).
from shared.framing import StreamFramer
from shared.serial_framing import SerialFramer, cobs_decode, cobs_encode, crc16_ccitt_false
from tests.core.support import (chunkings, check, eq, expect_error, squeezed, tohex, unhex,
                                vectors)

MP_HEAP = "512k"  # the 64 KB frames of max_packet 65535 (support.chunkings no longer lists chunks)


def feed_all(framer, chunks):
    packets = []
    for chunk in chunks:
        packets.extend(framer.feed(chunk))
    return packets


def pattern(n, seed=1):
    """n bytes with no long runs, zero bytes included."""
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_crc_vectors():
    for entry in vectors("framing")["crc16_ccitt_false"]:
        eq(crc16_ccitt_false(unhex(entry["data_hex"])), int(entry["crc"], 16), entry["data_hex"])


def test_cobs_vectors_both_ways():
    for entry in vectors("framing")["cobs"]:
        data, encoded = unhex(entry["data_hex"]), unhex(entry["encoded_hex"])
        eq(cobs_encode(data), encoded, "encode " + entry["data_hex"][:16])
        eq(cobs_decode(encoded), data, "decode " + entry["data_hex"][:16])


def test_cobs_boundaries_round_trip():
    for n in (0, 1, 2, 252, 253, 254, 255, 256, 507, 508, 509, 510, 762, 4098):
        for data in (b"\x11" * n, pattern(n), b"\x00" * n, b"\x11" * n + b"\x00",
                     b"\x00" + b"\x11" * n):
            encoded = cobs_encode(data)
            check(encoded.find(b"\x00") < 0, "no zero in COBS output")
            check(len(encoded) <= len(data) + len(data) // 254 + 1, "COBS overhead")
            eq(cobs_decode(encoded), data, "COBS round trip of %d bytes" % len(data))
            eq(cobs_decode(bytearray(encoded)), data, "from a bytearray")
            eq(cobs_decode(memoryview(encoded)), data, "from a memoryview")


def test_cobs_minimal_form_and_the_other_one():
    block = b"\x11" * 254
    eq(cobs_encode(block), b"\xff" + block)
    eq(cobs_encode(block * 2), b"\xff" + block + b"\xff" + block)
    eq(cobs_encode(block + b"\x00"), b"\xff" + block + b"\x01\x01")
    # A decoder accepts the non-minimal form too: a full block and an empty one.
    eq(cobs_decode(b"\xff" + block + b"\x01"), block)
    eq(cobs_decode(b"\xff" + block + b"\xff" + block + b"\x01"), block * 2)


def test_cobs_decode_refuses_bad_input():
    for bad in (b"", b"\x00", b"\x05\x11\x22", b"\x02", b"\x03\x11\x00", b"\x01\x00\x01",
                b"\xff" + b"\x11" * 253):
        expect_error("MALFORMED", cobs_decode, bad)


def test_stream_frames():
    table = vectors("framing")["stream"]
    for entry in table["frames"]:
        packet, frame = unhex(entry["packet_hex"]), unhex(entry["frame_hex"])
        eq(StreamFramer(table["max_packet"]).frame(packet), frame, entry["case"])
        for chunks in chunkings(frame):
            eq(feed_all(StreamFramer(table["max_packet"]), chunks), [packet], entry["case"])


def test_stream_sequence():
    table = vectors("framing")["stream"]
    sequence = table["sequence"]
    packets = [unhex(p) for p in sequence["packets"]]
    for chunks in chunkings(unhex(sequence["bytes_hex"])):
        eq(feed_all(StreamFramer(table["max_packet"]), chunks), packets, sequence["case"])


def test_stream_bad_lengths_are_fatal_before_the_body():
    table = vectors("framing")["stream"]
    for entry in table["bad_lengths"]:
        head = unhex(entry["bytes_hex"])
        for chunks in chunkings(head):
            framer = StreamFramer(table["max_packet"])
            for chunk in chunks[:-1]:
                eq(framer.feed(chunk), [], entry["case"])
            expect_error(entry["error"], framer.feed, chunks[-1])
            # It stays failed: the same error again, whatever comes next.
            expect_error(entry["error"], framer.feed, b"\x00\x02\x02\x00")
            expect_error(entry["error"], framer.feed, b"")


def test_stream_max_packet_boundaries():
    for max_packet in (256, 4096, 65535):
        framer = StreamFramer(max_packet)
        packet = b"\x02\x07" + pattern(max_packet - 2)
        frame = framer.frame(packet)
        eq(frame[:2], max_packet.to_bytes(2, "big"))
        eq(feed_all(StreamFramer(max_packet), [frame[:1], frame[1:]]), [packet])
        expect_error("TOO_LARGE", framer.frame, packet + b"!")
        too_big = (max_packet + 1).to_bytes(2, "big") if max_packet < 65535 else None
        if too_big:
            expect_error("TOO_LARGE", StreamFramer(max_packet).feed, too_big + packet)
    expect_error("MALFORMED", StreamFramer().frame, b"\x02")


def test_stream_max_packet_is_settable():
    framer = StreamFramer()
    packet = b"\x02\x07" + pattern(1000)
    eq(framer.feed(framer.frame(packet)), [packet])
    framer.max_packet = 512
    expect_error("TOO_LARGE", framer.frame, packet)
    expect_error("TOO_LARGE", framer.feed, framer.frame(packet[:512])[:1] + b"\x02\x01")


def test_stream_takes_bytearray_and_memoryview():
    frame = b"\x00\x03\x02\x07\x01" * 3
    eq(StreamFramer().feed(bytearray(frame)), [b"\x02\x07\x01"] * 3)
    eq(StreamFramer().feed(memoryview(frame)), [b"\x02\x07\x01"] * 3)
    check(type(StreamFramer().feed(memoryview(frame))[0]) is bytes, "packets are bytes")


def test_serial_frames():
    table = vectors("framing")["serial"]
    for entry in table["frames"]:
        packet, frame = unhex(entry["packet_hex"]), unhex(entry["frame_hex"])
        eq(crc16_ccitt_false(packet), int(entry["crc"], 16), entry["case"])
        framer = SerialFramer(table["max_packet"])
        eq(framer.frame(packet), frame, entry["case"])
        for chunks in chunkings(framer.preamble + frame):
            receiver = SerialFramer(table["max_packet"])
            eq(feed_all(receiver, chunks), [packet], entry["case"])
            eq(receiver.dropped, 0, entry["case"])


def test_serial_streams():
    for entry in vectors("framing")["serial"]["streams"]:
        packets = [unhex(p) for p in entry["packets"]]
        for chunks in chunkings(unhex(entry["bytes_hex"])):
            framer = SerialFramer(entry["max_packet"])
            eq(feed_all(framer, chunks), packets, entry["case"])
            eq(framer.dropped, entry["dropped"], entry["case"])


def test_serial_starts_out_of_sync_and_ignores_empty_frames():
    sender = SerialFramer()
    frame = sender.frame(b"\x02\x00")
    eq(sender.preamble, b"\x00")
    eq(StreamFramer().preamble, b"")
    receiver = SerialFramer()
    eq(receiver.feed(frame), [])  # before the first 0x00: discarded, not counted
    eq(receiver.feed(b"\x00\x00\x00" + frame + b"\x00" + frame), [b"\x02\x00"] * 2)
    eq(receiver.dropped, 0)


def test_serial_max_packet_boundaries():
    for max_packet in (16, 252, 253, 254, 256, 508, 4096):
        sender = SerialFramer(max_packet)
        for size in (max_packet - 1, max_packet):
            for packet in (b"\x02\x07" + b"\x11" * (size - 2), b"\x02\x07" + pattern(size - 2)):
                frame = sender.frame(packet)
                for chunks in chunkings(b"\x00" + frame):
                    receiver = SerialFramer(max_packet)
                    eq(feed_all(receiver, chunks), [packet], "%d/%d" % (size, max_packet))
                    eq(receiver.dropped, 0)
        packet = b"\x02\x07" + b"\x11" * (max_packet - 1)
        expect_error("TOO_LARGE", sender.frame, packet)
        big = SerialFramer(max_packet + 1).frame(packet)
        for chunks in chunkings(b"\x00" + big + SerialFramer().frame(b"\x02\x00")):
            receiver = SerialFramer(max_packet)
            eq(feed_all(receiver, chunks), [b"\x02\x00"], "max_packet + 1")
            eq(receiver.dropped, 1, "max_packet + 1")
    expect_error("MALFORMED", SerialFramer().frame, b"\x02")


def test_serial_bounds_a_frame_that_never_ends():
    receiver = SerialFramer(256)
    eq(receiver.feed(b"\x00"), [])
    for _ in range(100):
        eq(receiver.feed(b"\x11" * 100), [])
    check(receiver.end - receiver.start <= 256 + 2 + 4, "kept bytes bounded by max_packet")
    check(len(receiver._buf) <= 2 * (256 + 2 + 4 + 100), "buffer bounded: a frame and a chunk")
    eq(receiver.dropped, 1)
    eq(receiver.feed(b"\x00" + SerialFramer().frame(b"\x02\x00")), [b"\x02\x00"])
    eq(receiver.dropped, 1)


def test_serial_drops_and_resyncs():
    good = SerialFramer().frame(b"\x02\x00\x05")
    bad_crc = bytearray(good)
    bad_crc[3] ^= 0x01  # the 0x05 byte of the packet
    stream = b"\x00" + bytes(bad_crc) + good + b"\x03\x11\x00" + b"\x01\x00" + good
    for chunks in chunkings(stream):
        receiver = SerialFramer()
        eq(feed_all(receiver, chunks), [b"\x02\x00\x05"] * 2)
        eq(receiver.dropped, 3)  # bad CRC, bad COBS, nothing decoded (under 2 + 2 bytes)


def test_frame_takes_any_byte_string():
    for framer in (StreamFramer(), SerialFramer()):
        frame = framer.frame(b"\x02\x07\x00")
        eq(framer.frame(bytearray(b"\x02\x07\x00")), frame)
        eq(framer.frame(memoryview(b"\x02\x07\x00")), frame)
        check(type(frame) is bytes, "frames are bytes")


def test_serial_takes_bytearray_and_memoryview():
    stream = b"\x00" + SerialFramer().frame(b"\x02\x00") * 2
    eq(SerialFramer().feed(bytearray(stream)), [b"\x02\x00"] * 2)
    eq(SerialFramer().feed(memoryview(stream)), [b"\x02\x00"] * 2)


def test_stream_packets_before_a_bad_length_are_returned_first():
    packet = b"\x02\x07\x01"
    for bad in (b"\xff\xff", b"\x00\x01"):
        framer = StreamFramer()
        eq(framer.feed(framer.frame(packet) * 2 + bad + b"\x02\x07"), [packet, packet], "before")
        check(framer.error is not None, "the fault is kept")
        e = expect_error(framer.error.code, framer.feed, b"")
        expect_error(e.code, framer.feed, framer.frame(packet))  # and stays


def test_a_serial_frame_is_taken_in_few_blocks_its_size():
    # The frame's buffer (kept from the previous frame) and the packet's own copy, with
    # one block to spare: no grown decode buffer, no copy of it, no slice off the CRC,
    # which a device's fragmented heap once could not give.
    for size, steps in ((600, (606, 512, 1)), (4096, (4115, 512))):
        packet = bytes(range(1, 201)) * (size // 200) + bytes(size % 200)
        frame = SerialFramer().frame(packet)
        for step in steps:
            framer = SerialFramer()
            framer.feed(b"\x00" + frame)  # its buffer as a first frame left it
            chunks = [frame[i:i + step] for i in range(0, len(frame), step)]  # as read

            def feed():
                out = []
                for chunk in chunks:
                    out += framer.feed(chunk)
                return out
            eq(squeezed(feed, 3, size + 424), [packet], "%d bytes, %d at a time" % (size, step))
