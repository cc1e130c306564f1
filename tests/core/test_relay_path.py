# The realm's relay path (RealmConnection.receive_relay) against the general path
# (receive_data): the same bytes into two realm connections in the same state give the
# same packets, the same errors and the same bytes back. Runs on CPython and MicroPython.
from shared import codec
from shared.errors import MALFORMED, TOO_LARGE
from shared.events import Closed, ProxyPassPacket
from tests.core.linked import Link, device_id
from tests.core.support import eq, check

MP_HEAP = "160k"
PEER = device_id(9)


def _pair():
    """Two realm connections in the same session state, and a device to write for both
    (same seeds: the same keys, the same nonces)."""
    a, b = Link().pump(), Link().pump()
    check(a.realm.established and b.realm.established, "established")
    return a.device, a.realm, b.realm


def _outcome(events, forwarded):
    """What a shell sees: the ProxyPass packets as (peer, msg_id, inner) in order, the
    other events by type, and the error that closed the link."""
    seen, error = [], None
    for event in events:
        if isinstance(event, ProxyPassPacket):
            seen.append(("proxy", bytes(event.peer), event.msg_id, bytes(event.inner)))
        elif isinstance(event, Closed):
            error = (event.error.code, event.error.message)
        else:
            seen.append((type(event).__name__,))
    return [("proxy", bytes(p), m, bytes(i)) for p, m, i in forwarded] + seen, error


def _both(data):
    """`data` into the general path and the relay path; then a tick, which reports a
    fault kept back behind earlier events. Returns both outcomes and the bytes sent."""
    device, general, relay = _pair()
    raw = data(device)
    forwarded = []
    events_g = general.receive_data(raw, 0) + general.tick(0)
    events_r = relay.receive_relay(raw, 0, lambda *f: forwarded.append(f)) + relay.tick(0)
    g = _outcome(events_g, [])
    r = _outcome(events_r, forwarded)
    eq(r, g, "the relay path's packets and error")
    eq(relay.data_to_send(), general.data_to_send(), "the bytes the realm sends back")
    return g, forwarded


def _proxies(count):
    def make(device):
        for i in range(count):
            device.send_proxy(PEER, i, b"inner %d" % i)
        return device.data_to_send()
    return make


def test_proxy_packets_are_forwarded_with_their_fields():
    (seen, error), forwarded = _both(_proxies(3))
    eq(error, None, "no error")
    eq(len(forwarded), 3, "forwarded, not events")
    eq(seen[2], ("proxy", PEER, 2, b"inner 2"), "fields")


def test_a_packet_after_an_event_keeps_its_place():
    def make(device):
        device.request_peer_key(PEER)
        return _proxies(2)(device)
    (seen, _), forwarded = _both(make)
    eq(forwarded, [], "after an event, the rest are events too")
    eq([s[0] for s in seen], ["PeerKeyRequestPacket", "proxy", "proxy"], "order")


def _flipped(device):
    raw = bytearray(_proxies(2)(device))
    raw[-1] ^= 1  # the second packet's tag
    return bytes(raw)


def test_a_bit_flipped_packet_closes_as_malformed_after_the_good_one():
    (seen, error), _ = _both(_flipped)
    eq(error[0], MALFORMED, "tag check")
    eq(len(seen), 1, "the packet before it was relayed")


def test_a_replayed_packet_closes_as_malformed():
    def make(device):
        raw = _proxies(1)(device)
        return raw + raw
    (_, error), _ = _both(make)
    eq(error[0], MALFORMED, "replay")


def test_a_short_proxy_body_closes_as_malformed():
    def make(device):
        device._send_sealed(bytes((codec.PROTO_REALM, codec.PROXY_PASS)), PEER[:10])
        return device.data_to_send()
    (_, error), _ = _both(make)
    eq(error, (MALFORMED, "short body"), "short body")


def test_a_sealed_body_under_its_minimum_closes_as_malformed():
    def make(device):
        return b"\x00\x05" + bytes((codec.PROTO_REALM, codec.PROXY_PASS)) + b"abc"
    (_, error), _ = _both(make)
    eq(error[0], MALFORMED, "under 24 bytes")


def test_an_oversized_frame_is_refused_before_its_body():
    def make(device):
        return _proxies(1)(device) + b"\xff\xff" + bytes(10)
    (seen, error), _ = _both(make)
    eq(error[0], TOO_LARGE, "length over max_packet")
    eq(len(seen), 1, "the packet before it was relayed")


def test_send_proxy_sends_what_the_codec_encodes():
    device, general, relay = _pair()
    general._send(codec.encode(codec.PROTO_REALM, codec.PROXY_PASS, PEER, 7, b"inner"))
    relay.send_proxy(PEER, 7, b"inner")
    raw = relay.data_to_send()
    eq(raw, general.data_to_send(), "same bytes")
    events = device.receive_data(raw, 0)
    eq([(bytes(e.peer), e.msg_id, bytes(e.inner)) for e in events], [(PEER, 7, b"inner")],
       "the device reads it")


def test_released_keys_give_the_same_packets_and_bytes():
    """A session whose prepared keys the realm dropped (release_keys, for quiet sessions)
    opens, relays and seals exactly as one that kept them."""
    device, kept, released = _pair()
    raws = []
    for i in range(3):
        device.send_proxy(PEER, i, b"inner %d" % i)
        raws.append(device.data_to_send())
    for raw in raws:
        released.release_keys()
        got, want = [], []
        eq(_outcome(released.receive_relay(raw, 0, lambda *f: got.append(f)), got),
           _outcome(kept.receive_relay(raw, 0, lambda *f: want.append(f)), want), "opened")
        released.release_keys()
        released.send_proxy(PEER, 5, b"back")
        kept.send_proxy(PEER, 5, b"back")
        eq(released.data_to_send(), kept.data_to_send(), "sealed")
    released.release_keys()
    events = released.receive_relay(raws[0], 0, lambda *f: None)
    eq(events[0].error.code, MALFORMED, "a replay is still refused")
