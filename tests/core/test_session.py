# Handshake paths, error paths and the established session, device and realm state
# machines linked in memory. Runs on CPython and MicroPython.
from shared import codec
from shared.errors import (MALFORMED, UNSUPPORTED, UNEXPECTED, KEY_MISMATCH,
                           KEY_CHECK_FAILED, BAD_LOGIN, TIMEOUT, SESSION_REPLACED, TOO_LARGE,
                           LINK_LOST)
from shared.events import Closed, Welcomed, ProxyPassPacket, DeliveryPacket
from shared.framing import StreamFramer
from shared.realm import PeerKeyRequestPacket, RealmConnection
from tests.core.linked import Link, keypair, device_id, sent_ids
from tests.core.support import eq, check

MP_HEAP = "176k"  # compiling the realm side too (linked.py), which no device loads


def _closed(events):
    closed = [e for e in events if isinstance(e, Closed)]
    check(len(closed) == 1, "one Closed event in %r" % (events,))
    return closed[0].error


def _welcomed(events):
    return [e for e in events if isinstance(e, Welcomed)]


def _established():
    link = Link().pump()
    check(link.device.established and link.realm.established, "established")
    return link


def test_first_contact_then_pinned_reconnect_skips_send_key():
    first = Link().pump()
    w = _welcomed(first.device_events)[0]
    eq(w.pinned_path, False, "first contact")
    eq(w.realm_public, first.realm_public, "realm key learnt")
    eq(sent_ids(first.to_device)[0], codec.SEND_KEY, "SendKey on first contact")
    again = Link(bound=first.bound, pinned=w.realm_public, dh2=w.dh2, now=1000).pump(1000)
    eq(_welcomed(again.device_events)[0].pinned_path, True, "pinned path")
    check(codec.SEND_KEY not in sent_ids(again.to_device), "no SendKey on the pinned path")
    check(codec.SEND_KEY not in sent_ids(again.to_realm), "device sent no SendKey")


def test_each_login_is_welcomed_with_its_realm_settings():
    """The realm encodes a Welcome once per settings (shared/realm.py's _welcome): logins
    under other settings, and then the first ones again, get each their own."""
    for heartbeat_s, max_packet in ((30, 4096), (45, 4096), (30, 1024), (30, 4096)):
        link = Link(heartbeat_s=heartbeat_s, max_packet=max_packet).pump()
        welcome = _welcomed(link.device_events)
        eq(len(welcome), 1, "one Welcome")
        eq((welcome[0].realm_name, welcome[0].heartbeat_s, welcome[0].max_packet),
           ("test-realm", heartbeat_s, max_packet), "the Welcome's settings")


def test_the_realm_keeps_dh2_per_bound_key_and_uses_it():
    cache = {}
    first = Link(dh2_cache=cache).pump()  # no key bound at the Hello: nothing kept
    eq(cache, {}, "a key the peer only offered is not kept")
    w = _welcomed(first.device_events)[0]
    key = first.bound[device_id(1)]
    Link(bound=first.bound, pinned=w.realm_public, dh2=w.dh2, dh2_cache=cache).pump()
    eq(cache, {key: w.dh2}, "dh2 kept under the bound key")
    cache[key] = bytes(31) + b"\x09"  # a wrong value: the next login must fail with it
    wrong = Link(bound=first.bound, pinned=w.realm_public, dh2=w.dh2, dh2_cache=cache).pump()
    eq(wrong.realm.error.code, KEY_CHECK_FAILED, "the kept dh2 is the one used")


def test_a_new_bound_key_never_uses_the_dh2_of_the_old_one():
    # `realm device reset-key`, then the device logs in with a new key pair.
    cache = {}
    first = Link(bound={device_id(1): keypair(2)[1]}, dh2_cache=cache).pump()
    old = first.bound[device_id(1)]
    check(old in cache and first.device.established, "kept for the old key")
    cache[old] = bytes(31) + b"\x09"  # would break any login that used it
    bound = {}  # reset-key: nothing bound; the new key binds at this login
    Link(device_seed=3, bound=bound, dh2_cache=cache).pump()
    new = bound[device_id(1)]
    again = Link(device_seed=3, bound=bound, pinned=keypair(1)[1], dh2_cache=cache).pump()
    check(again.device.established, "the new key logs in")
    eq(sorted(cache), sorted([old, new]), "each key its own dh2")


def test_realm_key_changed_is_refused_by_the_device():
    first = Link().pump()
    _other_private, other_public = keypair(9)
    link = Link(bound=first.bound, pinned=other_public).pump()
    check(link.device.realm_key_changed, "device reports the key change")
    eq(link.device.error.code, KEY_MISMATCH, "device error")
    eq(_closed(link.realm_events).code, KEY_MISMATCH, "realm told")
    check(_closed(link.realm_events).remote, "realm heard it from the device")
    eq(_welcomed(link.device_events), [], "no session")


def test_bound_device_with_another_key_is_refused():
    bound = {device_id(1): keypair(7)[1]}
    link = Link(bound=bound).pump()
    eq(link.realm.error.code, KEY_MISMATCH, "realm refuses")
    eq(_closed(link.device_events).code, KEY_MISMATCH, "device told")


def test_bad_login_is_sealed_and_closes():
    link = Link(accept=False).pump()
    err = _closed(link.device_events)
    eq(err.code, BAD_LOGIN, "refused")
    check(err.remote, "told by the realm")
    eq(len(link.to_device[-1]), 2 + 8 + (8 + len("login refused")) + 16, "Error is sealed")
    eq(link.bound, {}, "nothing bound by a refused login")


def test_impostor_realm_on_pinned_path_fails_key_check():
    real = Link().pump()
    w = _welcomed(real.device_events)[0]
    impostor = Link(realm_seed=5, bound=real.bound, pinned=w.realm_public)
    # The impostor has no way to know R; its KeyCheck is sealed with other keys.
    impostor.realm._public = w.realm_public
    impostor.pump()
    eq(impostor.device.error.code, KEY_CHECK_FAILED, "device refuses the KeyCheck")
    check(not impostor.device.error.remote, "found by the device")
    eq(_closed(impostor.realm_events).code, KEY_CHECK_FAILED, "sent in clear, the realm reads it")


def test_handshake_timeout_closes_with_timeout():
    link = Link()
    link.device.data_to_send()  # the Hello is lost
    eq(link.realm.next_deadline(), 30000, "deadline 30 s after the start")
    eq(link.realm.tick(29999), [], "not yet")
    eq(link.realm.tick(30000)[0].error.code, TIMEOUT, "timeout")
    check(link.realm.closed, "closed")
    out = StreamFramer().feed(link.realm.data_to_send())
    eq(codec.decode(out[0])[1][0], TIMEOUT, "Error TIMEOUT sent in clear")


def test_heartbeat_and_silence():
    link = _established()
    eq(link.device.next_deadline(), 30000, "heartbeat due after 30 s of sending nothing")
    link.device.tick(30000)
    eq(len(StreamFramer().feed(link.device.data_to_send())), 1, "one Heartbeat (lost here)")
    eq(link.realm.tick(89999), [], "the realm still waits, sending its own Heartbeat")
    check(link.realm.data_to_send() != b"", "realm heartbeat")
    err = link.realm.tick(90000)[0].error
    eq(err.code, TIMEOUT, "silent device dropped after 3 heartbeats")


def test_heartbeat_received_keeps_the_session():
    # Heartbeat 30 s: silence is fatal at 90 s. Without the device's heartbeat at 30 s the
    # realm would close at 90 s; with it, the limit runs from 30 s: alive at 119.999 s,
    # closed at 120 s.
    link = _established()
    link.device.tick(30000)
    link.pump(30000)
    eq(link.realm.tick(119999), [], "alive just under 90 s after the heartbeat")
    link.realm.data_to_send()
    check(not link.realm.closed, "alive: a packet came at 30 s")
    eq(_closed(link.realm.tick(120000)).code, TIMEOUT, "closed at 90 s after the heartbeat")


def test_connection_lost_gives_one_closed_with_link_lost():
    for when in ("handshake", "established"):
        link = Link()
        if when == "established":
            link.pump()
        else:
            link.realm.receive_data(link.device.data_to_send(), 0)  # Hello only
        for conn in (link.device, link.realm):
            conn.data_to_send()
            events = conn.connection_lost("reset by peer")
            err = _closed(events)
            eq((err.code, err.name, err.message, err.remote),
               (LINK_LOST, "LINK_LOST", "reset by peer", True), when)
            check(conn.closed and conn.error is err, "closed: " + when)
            eq(conn.data_to_send(), b"", "nothing to send on a lost link: " + when)
            eq(conn.connection_lost("again"), [], "reported once: " + when)
            eq(conn.receive_data(b"\x00\x02\x02\x00", 1), [], "then deaf: " + when)
            eq(conn.next_deadline(), None, "no timer: " + when)


def test_connection_lost_after_a_pending_error_reports_that_error():
    link = _established()
    link.realm.send_delivery(7, codec.DELIVERED)
    link.realm.close(SESSION_REPLACED, "newer")  # Delivery and Error in one write
    events = link.device.receive_data(link.realm.data_to_send(), 0)
    eq([type(e) for e in events], [DeliveryPacket], "the Delivery first, connection open")
    err = _closed(link.device.connection_lost("closed by the realm"))
    eq((err.code, err.remote), (SESSION_REPLACED, True), "the realm's reason, not LINK_LOST")


def test_connection_lost_after_a_close_adds_nothing():
    link = _established()
    link.realm.close(SESSION_REPLACED, "newer")
    eq(link.realm.connection_lost("gone"), [], "already closed")
    eq(link.realm.error.code, SESSION_REPLACED, "the first reason stays")


def test_proxy_relay_events():
    link = _established()
    peer = device_id(3)
    link.device.send_proxy(peer, 7, b"\x01\x00opaque")
    link.pump()
    ev = [e for e in link.realm_events if isinstance(e, ProxyPassPacket)][0]
    eq((ev.peer, ev.msg_id, ev.inner), (peer, 7, b"\x01\x00opaque"), "realm sees the target")
    link.realm.send_delivery(7, codec.DELIVERED)
    link.realm.send_proxy(peer, 0, b"back")
    link.pump()
    kinds = [type(e).__name__ for e in link.device_events]
    check("DeliveryPacket" in kinds and "ProxyPassPacket" in kinds, kinds)
    rep = [e for e in link.device_events if isinstance(e, DeliveryPacket)][0]
    eq((rep.msg_id, rep.status), (7, codec.DELIVERED), "delivery")


def test_peer_key_request_event():
    link = _established()
    link.device.request_peer_key(device_id(4))
    link.pump()
    eq([e for e in link.realm_events if isinstance(e, PeerKeyRequestPacket)][0].peer, device_id(4), "")


def _established_raw():
    link = _established()
    link.device.send_proxy(device_id(3), 1, b"x")
    raw = link.device.data_to_send()
    return link, raw


def test_replayed_sealed_packet_closes():
    link, raw = _established_raw()
    link.realm.receive_data(raw, 0)
    err = _closed(link.realm.receive_data(raw, 0))
    eq(err.code, MALFORMED, "replay refused")
    check(link.realm.closed, "closed")


def test_bit_flipped_sealed_packet_closes():
    link, raw = _established_raw()
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    eq(_closed(link.realm.receive_data(bytes(flipped), 0)).code, MALFORMED, "tag check")


def test_forged_clear_error_after_sealing_is_malformed():
    link = _established()
    forged = StreamFramer().frame(codec.encode(2, codec.ERROR, SESSION_REPLACED, 0, "bye"))
    err = _closed(link.device.receive_data(forged, 0))
    eq(err.code, MALFORMED, "a clear Error cannot end a sealed session")
    check(not err.remote, "")


def test_unauthenticated_proxy_pass_is_unexpected():
    link = Link()
    frame = StreamFramer().frame(codec.encode(2, codec.PROXY_PASS, device_id(3), 1, b"x"))
    eq(_closed(link.realm.receive_data(frame, 0)).code, UNEXPECTED, "")


def test_hello_version_2_is_unsupported():
    link = Link()
    hello = bytearray(StreamFramer(65535).feed(link.device.data_to_send())[0])
    hello[2] = 2
    eq(_closed(link.realm.receive_data(StreamFramer().frame(bytes(hello)), 0)).code,
       UNSUPPORTED, "")


def test_other_protocol_is_unsupported():
    link = Link()
    eq(_closed(link.realm.receive_data(b"\x00\x02\x01\x00", 0)).code, UNSUPPORTED, "")


def test_closed_machine_stays_closed():
    link = Link()
    link.realm.receive_data(b"\x00\x02\x01\x00", 0)
    link.realm.data_to_send()
    eq(link.realm.receive_data(link.device.data_to_send(), 0), [], "ignored")
    eq(link.realm.tick(10 ** 9), [], "no timers")
    eq(link.realm.data_to_send(), b"", "silent")
    eq(link.realm.next_deadline(), None, "no deadline")


def test_session_replaced_reaches_the_device():
    link = _established()
    link.realm.close(SESSION_REPLACED, "replaced by a newer connection")
    link.pump()
    err = _closed(link.device_events)
    eq((err.code, err.remote, err.message), (SESSION_REPLACED, True,
                                             "replaced by a newer connection"), "")


def test_send_before_established_is_a_local_error():
    link = Link()
    try:
        link.device.send_proxy(device_id(3), 1, b"x")
    except Exception as e:
        eq(e.code, UNEXPECTED, "local error")
        check(not e.remote, "local")
        return
    check(False, "no error raised")


def test_max_packet_from_welcome_applies_both_ways():
    link = Link(max_packet=300).pump()
    eq(link.device.max_inner, 300 - 46, "device limit")
    eq(link.realm.max_inner, 300 - 46, "realm limit")
    link.device.send_proxy(device_id(3), 1, bytes(254))
    link.pump()
    check(not link.realm.closed, "a 300-byte packet passes")


def test_low_order_device_ephemeral_fails_key_check():
    link = Link()
    hello = bytearray(StreamFramer(65535).feed(link.device.data_to_send())[0])
    hello[-32:] = bytes(32)  # e_D = 0: dh1 would be zero
    link.realm.receive_data(StreamFramer().frame(bytes(hello)), 0)
    device_public = keypair(2)[1]
    err = _closed(link.realm.receive_data(
        StreamFramer().frame(codec.encode(2, codec.SEND_KEY, device_public)), 0))
    eq(err.code, KEY_CHECK_FAILED, "zero DH refused")



def _proxy_then(fault):
    """An established link, and one read holding a valid ProxyPass followed by `fault`."""
    link = _established()
    link.device.send_proxy(device_id(3), 9, b"\x01\x00first")
    return link, link.device.data_to_send() + fault


def _answered_then_closed(link, data, code, remote):
    events = link.realm.receive_data(data, 5)
    eq([type(e).__name__ for e in events], ["ProxyPassPacket"], "the packet before the fault")
    check(not link.realm.closed, "still open: the shell answers first")
    eq(link.realm.next_deadline(), 5, "the fault is due at once")
    link.realm.send_delivery(9, codec.DELIVERED)
    err = _closed(link.realm.tick(5))
    eq((err.code, err.remote), (code, remote), "then the fault closes the link")
    eq(link.realm.receive_data(b"\x00\x02\x02\x00", 6), [], "nothing read after the fault")
    if remote:  # the device has gone: the Delivery is on the wire, and nothing after it
        eq(len(link.realm.data_to_send()), 2 + 2 + 5 + 24, "one sealed Delivery, no Error")
        return
    link.pump()
    reports = [e for e in link.device_events if isinstance(e, DeliveryPacket)]
    eq([(r.msg_id, r.status) for r in reports], [(9, codec.DELIVERED)], "answered before the end")
    # The realm's Error came in the same read as the Delivery: the device, too, hands
    # over the Delivery first and closes at its next call.
    eq(_closed(link.device.tick(6)).code, code, "then told the fault")


def test_packets_before_a_malformed_frame_are_handled_first():
    link, data = _proxy_then(b"\x00\x03\x02\x0f\x00")  # a ProxyPass id, not sealed
    _answered_then_closed(link, data, MALFORMED, False)


def test_packets_before_an_oversize_length_are_handled_first():
    link, data = _proxy_then(b"\xff\xff")
    _answered_then_closed(link, data, TOO_LARGE,
                          False)


def test_packets_before_the_peers_error_are_handled_first():
    link = _established()
    link.device.send_proxy(device_id(3), 9, b"\x01\x00first")
    link.device.close(SESSION_REPLACED, "going")
    _answered_then_closed(link, link.device.data_to_send(), SESSION_REPLACED, True)


def test_a_pending_fault_also_closes_at_the_next_read():
    link, data = _proxy_then(b"\xff\xff")
    link.realm.receive_data(data, 5)
    eq(_closed(link.realm.receive_data(b"", 6)).code, TOO_LARGE, "closed by the next call")


def test_the_hello_may_get_a_shorter_deadline_than_the_handshake():
    private, public = keypair(1)
    idle = RealmConnection(private, public, StreamFramer(), 0, {}.get, hello_timeout_ms=5000)
    eq(idle.next_deadline(), 5000, "the Hello's deadline")
    eq(idle.tick(4999), [], "not yet")
    err = _closed(idle.tick(5000))
    eq((err.code, err.message), (TIMEOUT, "no Hello in time"), "late Hello")
    link = Link()
    link.realm = RealmConnection(private, public, StreamFramer(), 0, {}.get,
                                 hello_timeout_ms=5000)
    link.realm.receive_data(link.device.data_to_send(), 100)
    eq(link.realm.next_deadline(), 30000, "after the Hello, the whole handshake's deadline")
