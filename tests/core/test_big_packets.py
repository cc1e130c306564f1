# A packet of max_packet (4096) bytes on a device's heap: received into the one receive
# buffer and opened there, hop and end to end, with no other block of its size asked
# for. On MicroPython the heap is squeezed (tests/core/support.squeezed): full but for a
# few holes smaller than the packet, as a device's fragmented heap is once online.
import hashlib

from shared import codec
from shared.e2e import E2E
from shared.endpoint import Endpoint
from shared.events import Message
from shared.framing import RECEIVE_BUFFER
from tests.core.linked import Link, device_id, keypair
from tests.core.support import check, eq, squeezed

MP_HEAP = "256k"  # compiling both sides from source (linked.py), and 4 KB packets

_PEER = device_id(9)
_HOLES = 16  # free blocks of _HOLE bytes each: room for the small objects, none for a packet
_HOLE = 512
_READ = 512  # bytes a read takes, as the runtime's


def _online():
    """A device (in place, its buffer made) with its Endpoint, online, and the peer whose
    messages it takes (keys derived: the X25519 is not what is measured)."""
    link = Link(in_place=bytearray(RECEIVE_BUFFER)).pump()
    device_private = keypair(2)[0]
    endpoint = Endpoint(device_id(1), device_private, 1, pins=[(_PEER, keypair(9)[1])])
    endpoint.attach(link.device)
    for event in link.device_events:
        endpoint.handle(event)
    check(endpoint.online, "online")
    peer = E2E(_PEER, keypair(9)[0], 1)
    peer.add_peer(device_id(1), keypair(2)[1])
    return link, endpoint, peer


def _deliver(link, endpoint, peer, data):
    """The realm's frame of a ProxyPass carrying data from the peer, read by the device as
    a board reads it (into receive_buffer(), _READ bytes at a time): the sha256 of each
    Message's data, taken while it is valid."""
    link.realm.send_proxy(_PEER, 7, peer.seal(device_id(1), codec.DATA, data))
    frame = link.realm.data_to_send()
    view = memoryview(frame)
    got = []

    def read_all():
        for start in range(0, len(frame), _READ):
            piece = view[start:start + _READ]
            link.device.receive_buffer()[:len(piece)] = piece
            for event in link.device.receive_data(len(piece), 0):
                for app_event in endpoint.handle(event):
                    if isinstance(app_event, Message):
                        got.append(hashlib.sha256(app_event.data).digest())
        return got
    return frame, read_all


def test_a_device_opens_a_max_size_packet_in_its_receive_buffer():
    link, endpoint, peer = _online()
    _deliver(link, endpoint, peer, b"warm")[1]()  # the per-packet objects' first use
    for size in (600, 4096 - 46 - 26):  # the largest Data: max_packet less hop and e2e
        data = bytes([size % 251]) * size
        frame, read_all = _deliver(link, endpoint, peer, data)
        eq(len(frame), 2 + 46 + 26 + size, "a frame of max_packet")
        eq(squeezed(read_all, _HOLES, _HOLE), [hashlib.sha256(data).digest()], "%d bytes" % size)
    eq(endpoint.dropped, 0)


def test_received_views_are_valid_until_the_next_read():
    link, endpoint, peer = _online()
    frame, _read = _deliver(link, endpoint, peer, b"first")
    link.realm.send_proxy(_PEER, 8, peer.seal(device_id(1), codec.DATA, b"second"))
    both = frame + link.realm.data_to_send()
    link.device.receive_buffer()[:len(both)] = both
    messages = [e for event in link.device.receive_data(len(both), 0)
                for e in endpoint.handle(event) if isinstance(e, Message)]
    eq([bytes(m.data) for m in messages], [b"first", b"second"], "two packets in one read")
    check(type(messages[0].data) is memoryview, "a view, not a copy")
