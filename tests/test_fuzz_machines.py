"""Hypothesis against the state machines: random and mutated bytes, in any chunking, to
the device side and the realm side. Nothing escapes receive_data; a fatal error is one
Closed event carrying a ProtocolError, and the machine stays closed after it."""
from hypothesis import given, settings, strategies as st, HealthCheck

from shared.e2e import E2E
from shared.errors import ProtocolError
from shared.events import Closed
from shared.framing import StreamFramer
from shared.realm import LoginRequest, RealmConnection
from shared.serial_framing import SerialFramer
from tests.core.linked import Link, keypair

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _transcripts():
    """(packets the device sent, packets the realm sent) of a whole session."""
    link = Link().pump()
    link.device.send_proxy(bytes(16), 5, b"\x01\x00abc")
    link.device.request_peer_key(bytes(16))
    link.pump()
    link.realm.send_delivery(5, 0)
    link.realm.send_proxy(bytes(16), 0, b"inner")
    link.pump()
    return link.to_realm, link.to_device


TO_REALM, TO_DEVICE = _transcripts()


def _chunks(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


def _feed(conn, chunks):
    closed_seen = False
    for chunk in chunks:
        events = conn.receive_data(chunk, 0)
        for i, ev in enumerate(events):
            assert not closed_seen, "events after Closed"
            if isinstance(ev, Closed):
                assert isinstance(ev.error, ProtocolError)
                assert i == len(events) - 1, "Closed is the last event"
                closed_seen = True
            elif isinstance(ev, LoginRequest):
                conn.accept_login("fuzz", 30, 4096)
        assert conn.closed == closed_seen
        conn.data_to_send()
    if closed_seen:
        assert conn.receive_data(b"\x00\x05\x02\x00\x00\x00\x00", 0) == []
        assert conn.tick(10 ** 9) == []
        assert conn.data_to_send() == b""


def _mutate(packets, data):
    packets = list(packets)
    i = data.draw(st.integers(0, len(packets) - 1))
    p = bytearray(packets[i])
    how = data.draw(st.sampled_from(["flip", "truncate", "insert", "drop", "dup"]))
    if how == "flip":
        j = data.draw(st.integers(0, len(p) - 1))
        p[j] ^= 1 << data.draw(st.integers(0, 7))
        packets[i] = bytes(p)
    elif how == "truncate":
        packets[i] = bytes(p[:data.draw(st.integers(2, max(2, len(p) - 1)))])
    elif how == "insert":
        packets.insert(i, data.draw(st.binary(min_size=2, max_size=80)))
    elif how == "drop":
        del packets[i]
    else:
        packets.insert(i, packets[i])
    return packets


def _fresh(side):
    link = Link()
    if side == "realm":
        link.device.data_to_send()
        return link.realm
    return link.device


@SETTINGS
@given(st.sampled_from(["realm", "device"]), st.binary(max_size=600), st.lists(st.integers(0, 600)))
def test_random_bytes(side, data, cuts):
    _feed(_fresh(side), _chunks(data, cuts))


@SETTINGS
@given(st.sampled_from(["realm", "device"]), st.data(), st.lists(st.integers(0, 4000)))
def test_mutated_transcript(side, data, cuts):
    packets = _mutate(TO_REALM if side == "realm" else TO_DEVICE, data)
    framer = StreamFramer(65535)
    stream = b"".join(framer.frame(p) for p in packets if len(p) >= 2)
    _feed(_fresh(side), _chunks(stream, cuts))


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(0, 400)))
def test_serial_link_garbage_never_escapes(data, cuts):
    private, public = keypair(1)
    realm = RealmConnection(private, public, SerialFramer(), 0, {}.get)
    _feed(realm, _chunks(data, cuts))


@SETTINGS
@given(st.binary(max_size=120), st.integers(0, 200), st.integers(0, 7))
def test_e2e_open_refuses_random_and_flipped_inners(garbage, position, bit):
    """The device-to-device layer: only ProtocolError, and nothing accepted that was forged."""
    a = E2E(bytes([1]) * 16, keypair(2)[0], 1)
    b = E2E(bytes([2]) * 16, keypair(3)[0], 1)
    a.add_peer(bytes([2]) * 16, keypair(3)[1])
    b.add_peer(bytes([1]) * 16, keypair(2)[1])
    good = bytearray(a.seal(bytes([2]) * 16, 0, b"payload"))
    good[position % len(good)] ^= 1 << bit
    for inner in (garbage, bytes(good)):
        try:
            b.open(bytes([1]) * 16, inner)
        except ProtocolError:
            continue
        raise AssertionError("forged inner accepted: %r" % inner)
