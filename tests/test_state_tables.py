"""The allowed-packets tables of shared/device.py and shared/realm.py, tested directly: each
side is walked, one packet at a time, into each of its states, and there gets every realm
packet id once (sealed when the state is). What the spec allows in that state goes to its
handler; anything else is UNEXPECTED, and Error is heard in every state. CPython only:
~150 handshakes would take minutes of pure-Python X25519 under MicroPython."""
import pytest

from shared import codec
from shared import device as device_module
from shared import realm as realm_module
from shared.errors import UNEXPECTED, DENIED
from shared.events import Closed
from shared.framing import StreamFramer
from shared.realm import LoginRequest
from tests.core.linked import Link, device_id

D, R = device_module, realm_module
# What PROTOCOL.md sections 5 to 7 let the other side send, per state (Error aside).
DEVICE_MAY_GET = {
    D._SENT_HELLO: {codec.SEND_KEY},
    D._SENT_HELLO_PINNED: {codec.SEND_KEY, codec.KEY_CHECK},
    D._SENT_KEY: {codec.KEY_CHECK},
    D._LOGGING_IN: {codec.WELCOME},
    D._ESTABLISHED: {codec.HEARTBEAT, codec.PROXY_PASS, codec.DELIVERY, codec.PEER_KEY},
}
REALM_MAY_GET = {
    R._AWAIT_HELLO: {codec.HELLO},
    R._AWAIT_SEND_KEY: {codec.SEND_KEY},
    R._AWAIT_RESPONSE: {codec.KEY_CHECK_RESPONSE},
    R._AWAIT_LOGIN: {codec.DEVICE_LOGIN},
    R._AWAIT_DECISION: set(),
    R._ESTABLISHED: {codec.HEARTBEAT, codec.PROXY_PASS, codec.PEER_KEY_REQUEST,
                     codec.DEVICE_REPORT},
}
KEY = bytes(range(32))
# One well-formed packet per realm packet id. A packet added to the codec needs a line
# here, and its place in the tables above.
SAMPLES = {
    codec.HEARTBEAT: (), codec.ERROR: (DENIED, 0, "no"),
    codec.HELLO: (1, device_id(1), None, KEY), codec.SEND_KEY: (KEY,),
    codec.KEY_CHECK: (KEY, KEY), codec.KEY_CHECK_RESPONSE: (KEY,),
    codec.DEVICE_LOGIN: (codec.LOGIN_TOKEN, b"t" * 24), codec.PROXY_PASS: (device_id(2), 1, b"x"),
    codec.WELCOME: (30, 4096, "r"), codec.DELIVERY: (1, codec.DELIVERED),
    codec.PEER_KEY_REQUEST: (device_id(2),), codec.PEER_KEY: (device_id(2), None),
    codec.DEVICE_REPORT: ("{}",),
}
PACKET_IDS = range(len(codec.NAMES[codec.PROTO_REALM]))


def _frames(data):
    return [StreamFramer().frame(p) for p in StreamFramer(65535).feed(data)]


def _walk(side, state, pinned, decide):
    """A fresh Link whose `side` ("device" or "realm") has just reached `state`, moving
    one packet at a time; the frames still on their way are dropped."""
    first = Link().pump() if pinned else None
    link = Link(bound=first.bound, pinned=first.realm_public) if pinned else Link()
    queue = []
    conn = getattr(link, side)
    while conn._state != state:
        for source, target in ((link.device, link.realm), (link.realm, link.device)):
            queue += [(target, frame) for frame in _frames(source.data_to_send())]
        assert queue, "%s never reached state %d" % (side, state)
        target, frame = queue.pop(0)
        for event in target.receive_data(frame, 0):
            if isinstance(event, LoginRequest) and decide:
                target.accept_login("tables", 30, 4096)
    return link, conn


def _send(link, conn, packet_id):
    """The events of `conn` on getting one packet_id from its peer, sealed if it must be."""
    peer = link.realm if conn is link.device else link.device
    packet = codec.encode(codec.PROTO_REALM, packet_id, *SAMPLES[packet_id])
    if conn._sealed:
        packet = packet[:2] + peer._sealer.seal(packet[:2], packet[2:])
    return conn.receive_data(StreamFramer().frame(packet), 0)


def _cases(side, table):
    return [(side, state, packet_id) for state in table for packet_id in PACKET_IDS]


def test_every_packet_id_has_a_sample():
    assert sorted(SAMPLES) == list(PACKET_IDS)


def test_the_tables_are_the_specs():
    assert [set(row) for row in D._ALLOWED] == [DEVICE_MAY_GET[s] for s in sorted(DEVICE_MAY_GET)]
    assert [set(row) for row in R._ALLOWED] == [REALM_MAY_GET[s] for s in sorted(REALM_MAY_GET)]


@pytest.mark.parametrize("side, state, packet_id", _cases("device", DEVICE_MAY_GET)
                         + _cases("realm", REALM_MAY_GET))
def test_a_packet_is_refused_unexpected_unless_its_state_allows_it(side, state, packet_id):
    may_get = (DEVICE_MAY_GET if side == "device" else REALM_MAY_GET)[state]
    link, conn = _walk(side, state, pinned=state == D._SENT_HELLO_PINNED and side == "device",
                       decide=not (side == "realm" and state == R._AWAIT_DECISION))
    closed = [e.error for e in _send(link, conn, packet_id) if isinstance(e, Closed)]
    if packet_id == codec.ERROR:
        assert closed and closed[0].remote and closed[0].code == DENIED
    elif packet_id in may_get:
        # Handled: it may still fail its own checks (a sample KeyCheck does not open).
        assert not closed or closed[0].code != UNEXPECTED, closed[0]
    else:
        assert closed and closed[0].code == UNEXPECTED and not closed[0].remote, closed
