# The realm's relay path (RealmConnection.receive_relay, relay_body) against the general
# path (receive_data, send_proxy, crypto's Sealer and Opener): the same bytes into two realm
# connections in the same state give the same packets, the same errors and the same bytes
# back. Runs on CPython (OpenSSL's HMAC) and MicroPython (crypto's HMAC).
from shared import codec, crypto
from shared.errors import MALFORMED, TOO_LARGE, UNEXPECTED, ProtocolError
from shared.events import Closed, ProxyPassPacket
from shared.realm import _RelayOpener, _RelaySealer
from tests.core.linked import Link, device_id
from tests.core.support import eq, check

MP_HEAP = "208k"  # compiling the realm side too (linked.py), which no device loads
PEER = device_id(9)


def _pair(max_packet=4096):
    """Two realm connections in the same session state, and a device to write for both
    (same seeds: the same keys, the same nonces)."""
    a, b = Link(max_packet=max_packet).pump(), Link(max_packet=max_packet).pump()
    check(a.realm.established and b.realm.established, "established")
    return a.device, a.realm, b.realm


def _outcome(events):
    """What a shell sees: the ProxyPass packets as (peer, msg_id, inner) in order, the
    other events by type, and the error that closed the link. On the relay path a
    ProxyPass comes as its opened body (bytes; a bytearray on MicroPython)."""
    seen, error = [], None
    for event in events:
        if isinstance(event, (bytes, bytearray)):
            seen.append(("proxy", bytes(event[:16]), int.from_bytes(event[16:20], "big"),
                         bytes(event[20:])))
        elif isinstance(event, ProxyPassPacket):
            seen.append(("proxy", bytes(event.peer), event.msg_id, bytes(event.inner)))
        elif isinstance(event, Closed):
            error = (event.error.code, event.error.message)
        else:
            seen.append((type(event).__name__,))
    return seen, error


def _both(data):
    """`data` into the general path and the relay path; then a tick, which reports a
    fault kept back behind earlier events. Returns both outcomes and the relay path's
    events."""
    device, general, relay = _pair()
    raw = data(device)
    events_g = general.receive_data(raw, 0) + general.tick(0)
    events_r = relay.receive_relay(raw, 0) + relay.tick(0)
    g = _outcome(events_g)
    eq(_outcome(events_r), g, "the relay path's packets and error")
    eq(relay.data_to_send(), general.data_to_send(), "the bytes the realm sends back")
    return g, events_r


def _proxies(count):
    def make(device):
        for i in range(count):
            device.send_proxy(PEER, i, b"inner %d" % i)
        return device.data_to_send()
    return make


def test_proxy_packets_come_opened_with_their_fields():
    (seen, error), events = _both(_proxies(3))
    eq(error, None, "no error")
    eq([isinstance(e, ProxyPassPacket) for e in events], [False] * 3,
       "bodies, not ProxyPassPacket events")
    eq(seen[2], ("proxy", PEER, 2, b"inner 2"), "fields")


def test_a_packet_after_an_event_keeps_its_place():
    def make(device):
        device.request_peer_key(PEER)
        raw = _proxies(1)(device)
        device.request_peer_key(PEER)
        return raw + _proxies(2)(device)
    (seen, _), events = _both(make)
    eq([s[0] for s in seen], ["PeerKeyRequestPacket", "proxy", "PeerKeyRequestPacket",
                              "proxy", "proxy"], "order")
    check(not isinstance(events[1], ProxyPassPacket), "opened for the relay after an event too")


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
        device._send(bytes((codec.PROTO_REALM, codec.PROXY_PASS)) + PEER[:10])
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


def test_send_proxy_and_relay_body_send_what_the_codec_encodes():
    device, general, relay = _pair()
    body = device_id(5) + (7).to_bytes(4, "big") + b"inner"  # the peer in it is the target
    for send in (lambda: relay.send_proxy(PEER, 7, b"inner"),
                 lambda: eq(relay.relay_body(PEER, body), codec.DELIVERED, "status")):
        general._send(codec.encode(codec.PROTO_REALM, codec.PROXY_PASS, PEER, 7, b"inner"))
        send()
        raw = relay.data_to_send()
        eq(raw, general.data_to_send(), "same bytes")
        events = device.receive_data(raw, 0)
        eq([(bytes(e.peer), e.msg_id, bytes(e.inner)) for e in events],
           [(PEER, 7, b"inner")], "the device reads it, from the sender")


def test_relay_body_over_max_packet_sends_nothing():
    device, _general, relay = _pair(max_packet=300)
    fits = bytes(20 + relay.max_inner)
    eq(relay.relay_body(PEER, fits + b"x"), codec.STATUS_TOO_LARGE, "one byte over")
    eq(relay.data_to_send(), b"", "nothing sent")
    eq(relay.relay_body(PEER, fits), codec.DELIVERED, "at the limit")
    eq(len(device.receive_data(relay.data_to_send(), 0)), 1, "sent")


def test_relay_body_and_send_proxy_refuse_a_closed_connection():
    for send in (lambda conn: conn.relay_body(PEER, bytes(24)),
                 lambda conn: conn.send_proxy(PEER, 0, b"x")):
        _device, _general, relay = _pair()
        relay.close(MALFORMED)
        relay.data_to_send()
        eq(_refusal(send, relay), (UNEXPECTED, "connection not established"), "refused")
        eq(relay.data_to_send(), b"", "nothing sent")


def _keys():
    return bytes(range(32)), bytes(range(32, 64))


def test_relay_keys_seal_as_the_sealer():
    for releasable in (False, True):
        sealer, relay = crypto.Sealer(*_keys()), _RelaySealer(*_keys(), releasable)
        for plain in (b"", b"x", bytes(range(100))):
            header = bytes((codec.PROTO_REALM, codec.PROXY_PASS))
            eq(relay.seal_packet(header, plain), header + sealer.seal(header, plain),
               "nonce, ciphertext, tag")
            if releasable:
                relay.release()
        eq(bytes(relay.seal(b"ad", b"plain")), bytes(sealer.seal(b"ad", b"plain")), "seal")
        bodies = [bytearray(8) + b"in place" + bytearray(16) for _ in range(2)]
        eq(relay.seal_in_place(b"ad", bodies[0]), sealer.seal_in_place(b"ad", bodies[1]),
           "seal_in_place")


def _refusal(opener, packet):
    try:
        opener(packet)
    except ProtocolError as e:
        return e.code, e.message
    return None


def test_relay_keys_open_as_the_opener():
    enc, mac = _keys()
    sealer = crypto.Sealer(enc, mac)
    header = bytes((codec.PROTO_REALM, codec.PROXY_PASS))
    packets = [header + sealer.seal(header, b"packet %d" % i) for i in range(3)]
    late = header + sealer.seal(header, bytes(300))
    flipped = bytearray(late)
    flipped[12] ^= 1
    opener, relay = crypto.Opener(enc, mac), _RelayOpener(enc, mac, True)

    def general(packet):
        return bytes(opener.open(packet[:2], packet[2:]))
    for packet in (packets[1], packets[0], packets[1], bytes(flipped), late[:25], late[:26],
                   header + late[3:], packets[2], late):  # a replay, a bad tag, short...
        eq(_refusal(relay.open_packet, packet), _refusal(general, packet), "same refusal")
        relay.release()
    eq(relay.open_packet(packets[0][:2] + sealer.seal(header, b"next")), b"next", "opens")
    eq(relay.last, opener.last + 1, "the nonce rule's state")
    opener.last = relay.last
    body = sealer.seal(header, b"in place")
    buffers = [bytearray(body), bytearray(body)]
    views = [o.open(header, memoryview(b), True) for o, b in zip((opener, relay), buffers)]
    eq(bytes(views[1]), bytes(views[0]), "open in place")
    eq(buffers[1], buffers[0], "the buffer it opened in")
    eq(bytes(relay.open(header, sealer.seal(header, b"not"))), b"not", "open")


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
        eq(_outcome(released.receive_relay(raw, 0)), _outcome(kept.receive_relay(raw, 0)),
           "opened")
        released.release_keys()
        released.send_proxy(PEER, 5, b"back")
        kept.send_proxy(PEER, 5, b"back")
        eq(released.data_to_send(), kept.data_to_send(), "sealed")
    released.release_keys()
    events = released.receive_relay(raws[0], 0)
    eq(events[0].error.code, MALFORMED, "a replay is still refused")
