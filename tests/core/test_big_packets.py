# A packet of max_packet (4096) bytes on a device's heap: received into the one receive
# buffer and opened there, hop and end to end, with no other block of its size asked
# for; sent from one buffer the frame's size, sealed there end to end and for the hop.
# On MicroPython the heap is squeezed (tests/core/support.squeezed): full but for a few
# holes smaller than the packet (and, to send, one the frame's size), as a device's
# fragmented heap is once online.
import hashlib

from shared import codec, sending  # loaded before any squeeze, as after a first large send
from shared.e2e import E2E
from shared.endpoint import Endpoint
from shared.events import Message, ProxyPassPacket
from shared.framing import RECEIVE_BUFFER, StreamFramer
from shared.serial_framing import SerialFramer
from tests.core.linked import Link, device_id, keypair
from tests.core.support import check, eq, squeezed

MP_HEAP = "320k"  # compiling both sides and both framers from source (linked.py), 4 KB packets

_PEER = device_id(9)
_HOLES = 16  # free blocks of _HOLE bytes each: room for the small objects, none for a packet
_HOLE = 512
_READ = 512  # bytes a read takes, as the runtime's
_LARGEST = 4096 - 46 - 26  # the largest Data: max_packet less hop and e2e


def _online(framer=StreamFramer):
    """A device (in place, its buffer made) with its Endpoint, online, and the peer whose
    messages it takes (keys derived: the X25519 is not what is measured)."""
    link = Link(in_place=bytearray(RECEIVE_BUFFER), framer=framer).pump()
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
    for size in (600, _LARGEST):
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


def _sent(link, peer, frame, data):
    """Checks that `frame` (what the device queued) carries one ProxyPass of `data`."""
    events = [e for e in link.realm.receive_data(frame, 0) if isinstance(e, ProxyPassPacket)]
    eq(len(events), 1, "one ProxyPass")
    eq(peer.open(device_id(1), events[0].inner), (codec.DATA, (data,)), "%d bytes" % len(data))


def test_a_device_sends_a_max_size_packet_from_one_buffer():
    link, endpoint, peer = _online()
    endpoint.send(_PEER, b"warm")
    link.device.data_to_send()
    for size in (2048, _LARGEST):
        data = bytes([size % 251]) * size  # the app's own, made before the squeeze

        def send():
            endpoint.send(_PEER, data)
            return link.device.data_to_send()  # the frame's buffer itself, not a copy
        # Room for the frame and for small objects (the first free blocks are taken first),
        # not for a second block of the packet's size.
        frame = squeezed(send, _HOLES, _HOLE, room=size + 46 + 26 + 2 + 1024)
        eq(len(frame), 2 + 46 + 26 + size, "a frame of max_packet")
        _sent(link, peer, frame, data)


def test_with_a_send_buffer_a_device_sends_a_max_size_packet_in_a_squeezed_heap():
    # The send buffer (config "send_buffer") made while the heap was whole: the frame is
    # built there, so sending asks for no block over _HOLE bytes at all, on either link.
    sending.buffer = bytearray(RECEIVE_BUFFER)
    try:
        for framer in (StreamFramer, SerialFramer):
            link, endpoint, peer = _online(framer)
            endpoint.send(_PEER, b"warm")
            link.realm.receive_data(link.device.data_to_send(), 0)
            data = bytes([7]) * _LARGEST  # with a block of zeros: COBS's work is not trivial
            data = data[:100] + bytes(300) + data[400:]

            def send():
                endpoint.send(_PEER, data)
                return link.device.data_to_send()
            _sent(link, peer, squeezed(send, _HOLES, _HOLE), data)
    finally:
        sending.buffer = None


def test_frames_queued_before_the_shell_takes_them_are_kept_whole():
    # The send buffer holds the first frame until the shell takes it: the next one is
    # built in a block of its own and both are queued, in order, with a small one between
    # them; once taken, the buffer is used again.
    sending.buffer = bytearray(RECEIVE_BUFFER)
    try:
        link, endpoint, peer = _online()
        first, second, third = b"1" * 1000, b"2" * 2000, b"3" * 3000
        for data in (first, b"small", second):
            endpoint.send(_PEER, data)
        events = [e for e in link.realm.receive_data(link.device.data_to_send(), 0)
                  if isinstance(e, ProxyPassPacket)]
        eq([peer.open(device_id(1), e.inner)[1][0] for e in events], [first, b"small", second])
        endpoint.send(_PEER, third)
        _sent(link, peer, link.device.data_to_send(), third)
    finally:
        sending.buffer = None


def test_a_frame_that_fills_the_send_buffer_is_copied_out_not_grown_into():
    # A frame the send buffer's exact size is queued as a view of it all the same: the
    # frame queued behind it copies it out, where adding to the buffer itself would grow
    # it for good by that frame (a device's heap pays every byte of it).
    data = b"4" * 1000
    size = 2 + 46 + 26 + len(data)
    sending.buffer = bytearray(size)
    try:
        link, endpoint, peer = _online()
        endpoint.send(_PEER, data)
        endpoint.send(_PEER, data[:500])
        events = [e for e in link.realm.receive_data(link.device.data_to_send(), 0)
                  if isinstance(e, ProxyPassPacket)]
        eq([peer.open(device_id(1), e.inner)[1][0] for e in events], [data, data[:500]],
           "both whole, in order")
        eq(len(sending.buffer), size, "the send buffer's size")
    finally:
        sending.buffer = None
