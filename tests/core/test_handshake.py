# The handshake transcripts of vectors/handshake.json, replayed byte for byte against
# the device side and the realm side. Runs on CPython and MicroPython.
from shared import codec
from shared.device import DeviceConnection
from shared.events import Closed, Welcomed
from shared.framing import StreamFramer
from shared.realm import LoginRequest, RealmConnection
from tests.core.support import vectors, unhex, eq, check

MP_HEAP = "192k"  # compiling the realm side too (linked.py), which no device loads


def _packets(conn, reader):
    return reader.feed(conn.data_to_send())


def _fields(p):
    return codec.decode(unhex(p["plaintext_hex"]))[1]


def _uuid(s):
    return codec.uuid_from_str(s)


def _opt(v):
    return None if v is None else unhex(v)


def _session_action_device(conn, p, hb_ms):
    name = p["name"]
    if name == "ProxyPass":
        conn.send_proxy(*_fields(p))
    elif name == "Heartbeat":
        conn.tick(hb_ms)
    elif name == "PeerKeyRequest":
        conn.request_peer_key(*_fields(p))


def _session_action_realm(conn, p, hb_ms):
    name = p["name"]
    if name == "ProxyPass":
        conn.send_proxy(*_fields(p))
    elif name == "Delivery":
        conn.send_delivery(*_fields(p))
    elif name == "Heartbeat":
        conn.tick(hb_ms)
    elif name == "PeerKey":
        conn.send_peer_key(*_fields(p))
    elif name == "Error":
        code, _ref, message = _fields(p)
        conn.close(code, message)


def _replay(t, side):
    """Drive one side through transcript t; compare every packet it sends."""
    realm, device = t["realm"], t["device"]
    hb_ms = realm["heartbeat_s"] * 1000
    reader = StreamFramer(65535)
    if side == "device":
        conn = DeviceConnection(
            _uuid(device["id"]), unhex(device["private"]), unhex(device["public"]),
            device["token"], StreamFramer(), 0, realm_public=_opt(device["pinned_realm_public"]),
            ephemeral=(unhex(t["device_ephemeral"]["private"]),
                       unhex(t["device_ephemeral"]["public"])))
        act = _session_action_device
    else:
        bound = _opt(realm["bound_key"])
        conn = RealmConnection(
            unhex(realm["private"]), unhex(realm["public"]), StreamFramer(), 0,
            lambda device_id: bound,
            ephemeral=(unhex(t["realm_ephemeral"]["private"]),
                       unhex(t["realm_ephemeral"]["public"])),
            challenge=unhex(t["challenge"]))
        act = _session_action_realm
    sent = _packets(conn, reader)
    events = []
    for i, p in enumerate(t["packets"]):
        what = "%s packet %d (%s)" % (side, i, p["name"])
        if p["from"] == side:
            if not sent:
                act(conn, p, hb_ms)
                sent = _packets(conn, reader)
            check(sent, what + ": nothing sent")
            eq(sent.pop(0), unhex(p["hex"]), what)
        else:
            frame = StreamFramer(65535).frame(unhex(p["hex"]))
            new = conn.receive_data(frame, 0)
            events += new
            for ev in new:
                if isinstance(ev, LoginRequest):
                    eq(ev.method, codec.LOGIN_TOKEN, "login method")
                    eq(ev.details, device["token"].encode(), "token")
                    conn.accept_login(realm["name"], realm["heartbeat_s"], realm["max_packet"])
            sent += _packets(conn, reader)
    eq(sent, [], side + ": packets beyond the transcript")
    return conn, events


def _check_device(t):
    conn, events = _replay(t, "device")
    welcomed = [e for e in events if isinstance(e, Welcomed)]
    eq(len(welcomed), 1, "one Welcome")
    eq(welcomed[0].pinned_path, t["pinned_path"], "pinned path")
    eq(welcomed[0].realm_public, unhex(t["realm"]["public"]), "realm key to pin")
    eq(welcomed[0].dh2, unhex(t["dh2"]), "dh2 to cache")
    check(isinstance(events[-1], Closed) and events[-1].error.remote, "ends with the realm's Error")
    eq(events[-1].error.code, 10, "SESSION_REPLACED")
    check(conn.closed, "closed after Error")


def _check_realm(t):
    conn, events = _replay(t, "realm")
    eq(conn.device_public, unhex(t["device"]["public"]), "device key")
    check(conn.closed, "closed after sending Error")


def test_device_first_contact():
    _check_device(vectors("handshake")["first_contact"])


def test_device_pinned():
    _check_device(vectors("handshake")["pinned"])


def test_device_pin_held_unbound():
    _check_device(vectors("handshake")["pin_held_unbound"])


def test_realm_first_contact():
    _check_realm(vectors("handshake")["first_contact"])


def test_realm_pinned():
    _check_realm(vectors("handshake")["pinned"])


def test_realm_pin_held_unbound():
    _check_realm(vectors("handshake")["pin_held_unbound"])


def test_dh2_cache_gives_the_same_bytes():
    t = vectors("handshake")["pinned"]
    device = t["device"]
    conn = DeviceConnection(
        _uuid(device["id"]), unhex(device["private"]), unhex(device["public"]),
        device["token"], StreamFramer(), 0, realm_public=unhex(device["pinned_realm_public"]),
        dh2=unhex(t["dh2"]),
        ephemeral=(unhex(t["device_ephemeral"]["private"]), unhex(t["device_ephemeral"]["public"])))
    conn.data_to_send()
    key_check = [p for p in t["packets"] if p["name"] == "KeyCheck"][0]
    conn.receive_data(StreamFramer().frame(unhex(key_check["hex"])), 0)
    out = StreamFramer(65535).feed(conn.data_to_send())
    eq(out[0], unhex([p for p in t["packets"] if p["name"] == "KeyCheckResponse"][0]["hex"]),
       "KeyCheckResponse with cached dh2")
