# The device-to-device layer: vectors of crypto.json "e2e", and the Endpoint between two
# devices through an in-memory realm. Runs on CPython and MicroPython.
from shared import codec, crypto
from shared.e2e import E2E, e2e_keys
from shared.endpoint import Endpoint, SendQueueFull
from shared.events import (ProxyPassPacket, PeerKeyPacket, Message, Pong, Delivery, PeerPinned,
                           PeerKeyChanged)
from shared.protocol import MAX_PEERS
from shared.realm import PeerKeyRequestPacket
from tests.core.linked import Link, keypair, device_id
from tests.core.support import vectors, unhex, eq, check, expect_error

MP_HEAP = "208k"  # compiling the realm side too (linked.py), which no device loads


def _e2e_parties(v):
    a, b = v["a"], v["b"]
    return (codec.uuid_from_str(a["id"]), unhex(a["private"]), unhex(a["public"]),
            codec.uuid_from_str(b["id"]), unhex(b["private"]), unhex(b["public"]))


def test_e2e_keys_vector():
    v = vectors("crypto")["e2e"]
    a_id, a_priv, a_pub, b_id, b_priv, b_pub = _e2e_parties(v)
    lo_hi = (unhex(v["lo_to_hi"]["enc"]), unhex(v["lo_to_hi"]["mac"]))
    hi_lo = (unhex(v["hi_to_lo"]["enc"]), unhex(v["hi_to_lo"]["mac"]))
    a_keys = e2e_keys(a_id, a_priv, b_id, b_pub)
    b_keys = e2e_keys(b_id, b_priv, a_id, a_pub)
    a_is_lo = a_id < b_id
    eq(a_keys[:2], lo_hi if a_is_lo else hi_lo, "a sends")
    eq(a_keys[2:], hi_lo if a_is_lo else lo_hi, "a receives")
    eq(b_keys[:2], a_keys[2:], "b sends what a receives")


def test_e2e_packets_vector():
    v = vectors("crypto")["e2e"]
    a_id, a_priv, a_pub, b_id, b_priv, b_pub = _e2e_parties(v)
    parties = {"a": (E2E(a_id, a_priv, 0), b_id), "b": (E2E(b_id, b_priv, 0), a_id)}
    parties["a"][0].add_peer(b_id, b_pub)
    parties["b"][0].add_peer(a_id, a_pub)
    for p in v["packets"]:
        layer, peer = parties[p["from"]]
        layer.boot, layer.counter = p["boot_id"], p["counter"]
        plain = unhex(p["plaintext_hex"])
        eq(layer.seal(peer, plain[1], plain[2:]), unhex(p["inner_hex"]), p["case"])


def test_e2e_replay_rule_vector():
    v = vectors("crypto")["e2e"]
    a_id, _a_priv, a_pub, b_id, b_priv, _b_pub = _e2e_parties(v)
    b = E2E(b_id, b_priv, 0)
    b.add_peer(a_id, a_pub)
    refused = 0
    for step in v["receiver_b"]:
        try:
            b.open(a_id, unhex(step["inner_hex"]))
            ok = True
        except Exception as e:
            check(hasattr(e, "code"), "only ProtocolError: %r" % e)
            ok = False
            refused += 1
        eq(ok, step["accepted"], step["case"])
    eq(b.dropped, refused, "refusals counted")


def test_counter_wrap_increases_boot():
    seen = []
    a = E2E(device_id(1), keypair(2)[0], 5, on_new_boot=seen.append)
    a.add_peer(device_id(2), keypair(3)[1])
    a.counter = 0xFFFFFFFF
    first = a.seal(device_id(2), codec.DATA, b"x")
    second = a.seal(device_id(2), codec.DATA, b"y")
    eq(first[2:10], b"\x00\x00\x00\x05\xff\xff\xff\xff", "last counter of boot 5")
    eq(second[2:10], b"\x00\x00\x00\x06\x00\x00\x00\x00", "boot 6 starts at 0")
    eq(seen, [6], "new boot written before use")


class _Realm:
    """A few lines of relaying over the realm state machines: enough to test Endpoint."""

    def __init__(self):
        self.bound = {}
        self.links = {}
        self.endpoints = {}
        self.app_events = {}

    def join(self, n, seed):
        link = Link(device_seed=seed, dev=n, bound=self.bound)
        ep = self.endpoints.get(n) or Endpoint(device_id(n), keypair(seed)[0], 1)
        ep.attach(link.device)
        self.links[n] = link
        self.endpoints[n] = ep
        self.app_events.setdefault(n, [])
        self.run()
        return ep

    def run(self):
        busy = True
        while busy:
            busy = False
            for n, link in self.links.items():
                before = (len(link.device_events), len(link.realm_events))
                link.pump()
                for ev in link.device_events[before[0]:]:
                    busy = True
                    self.app_events[n] += self.endpoints[n].handle(ev)
                for ev in link.realm_events[before[1]:]:
                    busy = True
                    self._relay(n, link, ev)
            for n, ep in self.endpoints.items():
                self.app_events[n] += ep.take_events()

    def _relay(self, n, link, ev):
        if isinstance(ev, ProxyPassPacket):
            target = [m for m in self.links if device_id(m) == ev.peer]
            if target:
                self.links[target[0]].realm.send_proxy(device_id(n), ev.msg_id, ev.inner)
            if ev.msg_id:
                link.realm.send_delivery(ev.msg_id, codec.DELIVERED if target
                                         else codec.UNKNOWN_TARGET)
        elif isinstance(ev, PeerKeyRequestPacket):
            link.realm.send_peer_key(ev.peer, self.bound.get(ev.peer))


def _of(events, cls):
    return [e for e in events if isinstance(e, cls)]


def test_endpoint_message_ping_and_delivery():
    realm = _Realm()
    a = realm.join(1, 2)
    realm.join(2, 3)
    msg_id = a.send(device_id(2), b"hello b")
    realm.run()
    got = _of(realm.app_events[2], Message)
    eq([(m.peer, m.data) for m in got], [(device_id(1), b"hello b")], "b got the message")
    eq([(d.msg_id, d.status) for d in _of(realm.app_events[1], Delivery)],
       [(msg_id, codec.DELIVERED)], "a learns the delivery")
    eq(len(_of(realm.app_events[1], PeerPinned)), 1, "a pinned b's key")
    eq(len(_of(realm.app_events[2], PeerPinned)), 1, "b pinned a's key to open it")
    a.ping(device_id(2), b"p1")
    realm.run()
    eq([p.data for p in _of(realm.app_events[1], Pong)], [b"p1"], "pong")


def test_endpoint_queues_while_offline_and_flushes():
    realm = _Realm()
    realm.join(2, 3)
    a = Endpoint(device_id(1), keypair(2)[0], 1)
    a.send(device_id(2), b"one")
    a.send(device_id(2), b"two")
    eq(a.queued(), 2, "queued offline")
    realm.endpoints[1] = a
    realm.join(1, 2)
    eq([m.data for m in _of(realm.app_events[2], Message)], [b"one", b"two"], "in order")
    eq(a.queued(), 0, "flushed")


def test_a_message_that_waits_is_a_copy_of_the_callers_buffer():
    # A message sent at once is sealed from the caller's buffer; one that waits (offline,
    # or for the peer's key) is copied, since the caller may reuse its buffer meanwhile.
    realm = _Realm()
    realm.join(2, 3)
    a = Endpoint(device_id(1), keypair(2)[0], 1)
    small, large = bytearray(b"small"), bytearray(b"L" * 1000)  # large: shared/sending.py's
    a.send(device_id(2), small)
    a.send(device_id(2), memoryview(large)[:600])
    small[0] = large[0] = ord("X")
    realm.endpoints[1] = a
    realm.join(1, 2)
    eq([bytes(m.data) for m in _of(realm.app_events[2], Message)], [b"small", b"L" * 600],
       "as they were when sent")
    a.send(device_id(2), large)  # online, the key known: sent at once, from the buffer
    large[:] = b"Y" * 1000
    realm.run()
    eq(bytes(_of(realm.app_events[2], Message)[-1].data), b"X" + b"L" * 999, "sent at once")


def test_endpoint_unknown_peer_reports_unknown_target():
    realm = _Realm()
    a = realm.join(1, 2)
    msg_id = a.send(device_id(9), b"nobody")
    realm.run()
    eq([(d.msg_id, d.status) for d in _of(realm.app_events[1], Delivery)],
       [(msg_id, codec.UNKNOWN_TARGET)], "no key for a peer that never logged in")


def test_endpoint_refuses_a_changed_peer_key():
    realm = _Realm()
    other = keypair(8)[1]
    a = Endpoint(device_id(1), keypair(2)[0], 1, pins=[(device_id(2), other)])
    realm.endpoints[1] = a
    realm.join(1, 2)
    realm.join(2, 3)
    realm.endpoints[2].send(device_id(1), b"from b")
    realm.run()
    eq(_of(realm.app_events[1], Message), [], "a message under another key is not read")
    changed = _of(realm.app_events[1], PeerKeyChanged)
    eq([(c.pinned, c.offered) for c in changed], [(other, keypair(3)[1])], "reported once")
    eq(a.dropped, 1, "counted")


def test_endpoint_keeps_at_most_max_peers_pins_oldest_dropped_first():
    peers = [bytes([i + 1]) * 16 for i in range(MAX_PEERS + 2)]
    key = keypair(3)[1]
    a = Endpoint(device_id(1), keypair(2)[0], 1, pins=[(p, key) for p in peers[:MAX_PEERS + 1]])
    eq([p for p, _ in a.pins()], peers[1:MAX_PEERS + 1], "the oldest given pin dropped")
    a.handle(PeerKeyPacket(peers[-1], key))  # a new peer's key, trusted on first use
    eq([p for p, _ in a.pins()], peers[2:], "pinning one more drops the oldest")
    a.forget_peer(peers[5])
    eq(len(a.pins()), MAX_PEERS - 1, "forgotten")
    check(peers[5] not in [p for p, _ in a.pins()], "forgotten peer unpinned")


def test_endpoint_queue_is_bounded():
    a = Endpoint(device_id(1), keypair(2)[0], 1, max_queue=2)
    a.send(device_id(2), b"1")
    a.send(device_id(2), b"2")
    try:
        a.send(device_id(2), b"3")
        check(False, "no error")
    except SendQueueFull:
        pass


def test_e2e_open_garbage_is_protocol_error():
    v = vectors("crypto")["e2e"]
    a_id, _a_priv, a_pub, b_id, b_priv, _b_pub = _e2e_parties(v)
    b = E2E(b_id, b_priv, 0)
    b.add_peer(a_id, a_pub)
    for garbage in (b"", b"\x01", b"\x01\x00" + bytes(23), b"\x02\x00" + bytes(40)):
        expect_error("MALFORMED", b.open, a_id, garbage)


def _service_from_a_to(b_services):
    """b's Endpoint (b_services: its handlers) given a Service 1 and a Service 7 from a, sealed
    as section 8 says (n = boot 1, counter 0 and 1)."""
    a_id, b_id = device_id(1), device_id(2)
    send_enc, send_mac, _, _ = e2e_keys(a_id, keypair(2)[0], b_id, keypair(3)[1])
    b = Endpoint(b_id, keypair(3)[0], 1, pins=[(a_id, keypair(2)[1])], services=b_services)
    header = bytes((codec.PROTO_DEVICE, codec.SERVICE))
    events = []
    for counter, service in enumerate((codec.SERVICE_UPDATE, 7)):
        body = bytes((service,)) + b"\x01"
        inner = header + crypto.seal(send_enc, send_mac, (1 << 32) | counter, header, body)
        events += b.handle(ProxyPassPacket(a_id, 0, inner))
    return b, events


def test_endpoint_drops_and_counts_a_service_it_does_not_offer():
    b, events = _service_from_a_to(None)
    eq(events, [], "nothing reaches the application")
    eq(b.services_dropped, 2, "both counted")
    eq(b.dropped, 0, "not counted as packets that failed to open")


def test_endpoint_hands_an_offered_service_to_the_application():
    handled = []
    b, events = _service_from_a_to({codec.SERVICE_UPDATE: lambda *got: handled.append(got)})
    eq(handled, [(device_id(1), b"\x01")], "service 1 offered: its handler has it")
    eq(events, [], "and nothing else does (a Service is no Pong)")
    eq(b.services_dropped, 1, "service 7 dropped")
