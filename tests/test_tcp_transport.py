"""host/tcp_transport.py on a loopback TCP connection: what the link hears, what the peer
reads, and what is left pending when the peer does not read."""
import asyncio
import socket

from host.tcp_transport import TcpTransport


class Recorder:
    """What a Link hears from its transport."""

    def __init__(self):
        self.data = bytearray()
        self.lost = []

    def data_received(self, data):
        self.data += data

    def transport_lost(self, why):
        self.lost.append(why)


def tcp_pair():
    """(ours, peer), with small buffers: a few hundred KiB unread fill them."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.socket()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.connect(server.getsockname())
        ours, _ = server.accept()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return ours, peer


def run(test):
    async def main():
        ours, peer = tcp_pair()
        ours.setblocking(False)
        peer.setblocking(False)
        link = Recorder()
        transport = TcpTransport(asyncio.get_running_loop(), ours)
        transport.start(link)
        try:
            await test(transport, link, peer)
        finally:
            transport.abort()
            peer.close()
    asyncio.run(main())


async def settle():
    for _ in range(5):
        await asyncio.sleep(0.01)


def read_all(sock):
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data) + b"<EOF>"
        data += chunk


def test_bytes_both_ways_and_the_peer_closing():
    async def test(transport, link, peer):
        peer.send(b"hello")
        await settle()
        assert link.data == b"hello"
        transport.write(b"back")
        assert read_all(peer) == b"back" and transport.get_write_buffer_size() == 0
        await settle()
        assert transport.acked() == 4, "the peer's kernel acknowledged the 4 bytes"
        peer.close()
        await settle()
        assert link.lost == [None]  # once: the end of its stream
    run(test)


def test_what_the_kernel_does_not_take_waits_in_order_and_close_sends_it_first():
    async def test(transport, link, peer):
        big = bytes(range(256)) * 8192  # 2 MiB: past any socket buffer
        transport.write(big)
        transport.write(b"after")
        assert transport.get_write_buffer_size() > 0, "a slow reader shows as pending bytes"
        transport.close()
        got = bytearray()
        while not got.endswith(b"<EOF>"):
            got += read_all(peer)
            await asyncio.sleep(0.001)
        assert bytes(got) == big + b"after<EOF>"
        assert link.lost == []  # closed by the link: nothing called back
    run(test)


def test_abort_drops_what_is_pending():
    async def test(transport, link, peer):
        transport.write(bytes(4 << 20))
        transport.abort()
        await settle()
        got = bytearray()
        while not got.endswith(b"<EOF>"):
            try:
                got += read_all(peer)
            except ConnectionResetError:
                break
            await asyncio.sleep(0.001)
        assert len(got) < (4 << 20), "not everything was sent"
        assert link.lost == []
    run(test)


def test_paused_reading_leaves_the_bytes_in_the_kernel():
    async def test(transport, link, peer):
        transport.pause_reading()
        peer.send(b"waiting")
        await settle()
        assert link.data == b""
        transport.resume_reading()
        await settle()
        assert link.data == b"waiting"
    run(test)


def test_a_reset_is_reported_with_its_error():
    async def test(transport, link, peer):
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # SO_LINGER 0: a reset, not an end of stream
        await settle()
        assert len(link.lost) == 1
    run(test)


def test_the_realms_accepted_connections_send_small_packets_at_once():
    """TCP_NODELAY on every link the realm accepts (set once on its listening socket where
    accepted sockets inherit it): a Welcome must not wait for the device's last ACK."""
    from host.inprocess import InProcessRealm
    from host.listener import Listener

    async def main():
        async with InProcessRealm() as realm:
            server = realm.server
            listener = Listener(server.loop, "127.0.0.1", 0, server.adopt_tcp,
                                lambda: len(server.links))
            device = socket.create_connection(listener.sockets[0].getsockname())
            try:
                for _ in range(100):
                    if server.links:
                        break
                    await asyncio.sleep(0.01)
                (link,) = server.links
                sock = link.transport._sock
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                # The listener makes the socket object itself (socket.accept()'s steps):
                # a non-blocking TCP socket of its family, as accept() would give.
                assert (sock.family, sock.type, sock.getblocking()) == \
                    (socket.AF_INET, socket.SOCK_STREAM, False)
                assert sock.getpeername() == device.getsockname()
            finally:
                device.close()
                listener.close()
                for link in list(server.links):
                    link.transport.abort()
    asyncio.run(main())
