"""Fuzzing the decoders that read remote bytes: codec.decode and both framers.

Whatever a peer sends, only ProtocolError may come out (the serial framer: nothing),
and what the decoders accept must be exactly what the encoders produce.
"""
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.codec import PROTO_DEVICE, PROTO_REALM, decode, encode
from shared.errors import ProtocolError
from shared.framing import StreamFramer
from shared.serial_framing import SerialFramer, cobs_encode, crc16_ccitt_false
from tests.core import support

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed_packets():
    if support.VECTORS_DIR is None:
        return [b"\x02\x00", b"\x01\x00"]
    seeds = []
    for name in ("codec.json", "codec-additions.json"):
        with open(os.path.join(support.VECTORS_DIR, name)) as f:
            table = json.load(f)
        seeds += [bytes.fromhex(e["hex"]) for e in table["valid"] + table["malformed"]]
    return seeds


SEEDS = _seed_packets()


@st.composite
def mutated(draw, seeds=SEEDS):
    """A vector packet with bit flips, truncations, insertions and deletions."""
    packet = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(("flip", "cut", "insert", "delete", "byte")))
        at = draw(st.integers(0, len(packet)))
        if action == "flip" and at < len(packet):
            packet[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "byte" and at < len(packet):
            packet[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del packet[at:]
        elif action == "insert":
            packet[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif at < len(packet):
            del packet[at]
    return bytes(packet)


PACKETS = st.one_of(mutated(), st.binary(max_size=80),
                    st.tuples(st.sampled_from((1, 2)), st.integers(0, 15),
                              st.binary(max_size=80)).map(lambda t: bytes(t[:2]) + t[2]))


def chunked(draw, data):
    """data split at random points."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0] + cuts + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@FUZZ
@given(PACKETS)
def test_codec_decode_raises_only_protocol_error_and_accepts_only_canonical_packets(packet):
    for protocol in (PROTO_DEVICE, PROTO_REALM):
        try:
            packet_id, fields = decode(packet, protocol)
        except ProtocolError:
            continue
        # Strict decoding: one packet, one encoding.
        assert encode(protocol, packet_id, *fields) == packet


@FUZZ
@given(st.data(), st.one_of(st.binary(max_size=600), st.lists(PACKETS, max_size=6).map(
    lambda ps: b"".join(len(p).to_bytes(2, "big") + p for p in ps))))
def test_framing_stream_raises_only_protocol_error(data, stream):
    framer = StreamFramer(max_packet=data.draw(st.sampled_from((256, 4096))))
    try:
        for chunk in chunked(data.draw, stream):
            for packet in framer.feed(chunk):
                assert 2 <= len(packet) <= framer.max_packet
    except ProtocolError as e:
        # ...and stays failed.
        try:
            framer.feed(b"\x00\x02\x02\x00")
        except ProtocolError as again:
            assert again.code == e.code
        else:
            raise AssertionError("the framer did not stay failed")


def mutated_frame(draw, frame):
    """frame with a few bytes overwritten."""
    frame = bytearray(frame)
    for _ in range(draw(st.integers(1, 3))):
        if frame:
            frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    return frame


@FUZZ
@given(st.data(), st.binary(max_size=600))
def test_framing_serial_never_raises_and_recovers_after_garbage(data, garbage):
    max_packet = data.draw(st.sampled_from((256, 4096)))
    packets = data.draw(st.lists(PACKETS.filter(lambda p: 2 <= len(p) <= max_packet),
                                 max_size=4))
    sender = SerialFramer()
    receiver = SerialFramer(max_packet=max_packet)
    if data.draw(st.booleans()):
        garbage = bytes(mutated_frame(data.draw, garbage + sender.frame(b"\x02\x00")))
    stream = garbage + b"\x00" + b"".join(sender.frame(p) for p in packets)
    out = []
    for chunk in chunked(data.draw, stream):
        out.extend(receiver.feed(chunk))
    assert out[len(out) - len(packets):] == packets
    assert all(2 <= len(p) <= receiver.max_packet for p in out)


@FUZZ
@given(st.data(), st.lists(st.binary(min_size=2, max_size=700), max_size=6),
       st.sampled_from(("stream", "serial")))
def test_framing_packets_come_back_exactly_in_any_chunking(data, packets, kind):
    framer_type = StreamFramer if kind == "stream" else SerialFramer
    max_packet = data.draw(st.sampled_from((700, 4096)))
    sender, receiver = framer_type(max_packet), framer_type(max_packet)
    stream = sender.preamble + b"".join(sender.frame(p) for p in packets)
    out = []
    for chunk in chunked(data.draw, stream):
        out.extend(receiver.feed(chunk))
    assert out == packets
    if kind == "serial":
        assert receiver.dropped == 0


@FUZZ
@given(st.data(), st.binary(min_size=2, max_size=300))
def test_framing_serial_drops_a_corrupted_packet_and_keeps_the_next(data, packet):
    # One flipped bit in the packet under its original CRC: CRC-16 catches every
    # single-bit error, so this frame is always dropped, and the next one survives.
    damaged = bytearray(packet)
    damaged[data.draw(st.integers(0, len(packet) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    frame = cobs_encode(bytes(damaged) + crc16_ccitt_false(packet).to_bytes(2, "big"))
    sender, receiver = SerialFramer(), SerialFramer()
    stream = b"\x00" + frame + b"\x00" + sender.frame(b"\x02\x00")
    out = []
    for chunk in chunked(data.draw, stream):
        out.extend(receiver.feed(chunk))
    assert out == [b"\x02\x00"]
    assert receiver.dropped == 1
