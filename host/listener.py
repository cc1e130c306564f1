"""The realm's TCP listener: accepts within the process's file-descriptor budget.

asyncio's own server writes a traceback for every failed accept() once the process is
out of descriptors, and schedules one retry per failure, so a flood at the limit wrote
tens of thousands of them. Here instead:
- at start the soft RLIMIT_NOFILE is raised to the hard one;
- `capacity` links at most (the limit less the descriptors already open and a reserve
  kept for the registry, the log file and serial ports); past it a new connection is
  answered `Error DENIED` and closed at once, so the realm never runs out by its links;
- if accept() still fails for want of descriptors or memory, accepting stops and
  resumes after a pause (0.1 s, doubling up to 2 s);
- each of these states is logged once when it starts and once when it ends, with counts.
The realm also pauses accepting (`pause`/`resume`) while all its handshake slots are
taken: the connections that keep coming wait in the kernel's backlog, a long one, rather
than being refused.
"""
import errno
import ipaddress
import os
import resource
import socket
import struct
import sys

from shared import codec
from shared.errors import DENIED
from shared.framing import StreamFramer
from host import logs

log = logs.get()

RESERVE_FDS = 32         # kept free below the limit for everything but links
# Connections the kernel holds until accepted (net.core.somaxconn caps it; 4096 since
# Linux 5.4): a fleet reconnecting at once waits there while the handshake slots are taken.
BACKLOG = 4096
ACCEPTS_PER_WAKE = 128  # then the loop serves the links already open before more
_OUT_OF = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_PAUSE_S = (0.1, 2.0)    # first and longest pause of accepting after such a failure


def error_frame(code, message):
    """A clear Error packet, framed for TCP: what a refused connection is told."""
    return StreamFramer().frame(codec.encode(codec.PROTO_REALM, codec.ERROR, code, 0, message))


def refuse(sock, frame):
    """Answer an accepted socket with `frame` and close it, at no other cost."""
    try:
        sock.setblocking(False)
        sock.send(frame)
    except OSError:
        pass
    sock.close()


_FULL = error_frame(DENIED, "realm at its connection limit; try again later")

# Linux gives an accepted socket its listener's TCP_NODELAY: set on the listening sockets,
# it costs no system call per connection. Elsewhere each connection sets it.
NODELAY_INHERITED = sys.platform.startswith("linux")


def set_nodelay(sock):
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def tcp_acked(sock):
    """Bytes the peer's kernel acknowledged on this TCP socket (Linux's TCP_INFO
    tcpi_bytes_acked: it stays right after a reset, unlike SIOCOUTQ), or None where the
    kernel does not say."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    return struct.unpack_from("=Q", info, _BYTES_ACKED)[0] if len(info) >= _TCP_INFO_LEN \
        else None


_BYTES_ACKED = 120  # offset of tcpi_bytes_acked in struct tcp_info (Linux 4.1 and later)
_TCP_INFO_LEN = _BYTES_ACKED + 8


def address_group(ip):
    """What the per-address limits (the handshake share, the login rate limits and
    checks in flight) count a TCP peer under: an IPv4 address itself, an IPv6 address
    its /64 (the smallest block a site or a subscriber gets: an attacker holds all of
    it), an IPv4-mapped IPv6 address as the IPv4 one. Anything else as it is."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.partition("%")[0])  # no scope: fe80::1%eth0
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def raise_fd_limit():
    """Raise the soft open-file limit to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, e)
    return soft


def open_fds():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return RESERVE_FDS  # no /proc: a guess that errs on the safe side


class Listener:
    """Listening sockets for (host, port); `accepted(sock, address)` gets each connection
    taken; `count()` says how many links are open now."""

    def __init__(self, loop, host, port, accepted, count, backlog=BACKLOG):
        self.loop = loop
        self.accepted = accepted
        self.count = count
        self.fd_limit = raise_fd_limit()
        self.sockets = _listen(host, port, backlog)
        self.capacity = max(1, self.fd_limit - open_fds() - RESERVE_FDS)
        self.refused = 0        # connections refused since the cap was reached
        self.failed = 0         # accept() failures since accepting was paused
        self.paused = False     # by the realm: no handshake slot free
        self._pause_s = _PAUSE_S[0]
        self._retry = None
        self._start_reading()

    def close(self):
        if self._retry is not None:
            self._retry.cancel()
        self._stop_reading()
        for sock in self.sockets:
            sock.close()

    def pause(self):
        """Accept nothing until resume(): new connections wait in the backlog."""
        if not self.paused:
            self.paused = True
            self._stop_reading()

    def resume(self):
        if self.paused:
            self.paused = False
            if self._retry is None:  # else accepting resumes after its pause
                self._start_reading()

    def _start_reading(self):
        # socket.accept() without its Python steps (_accept, then the socket object):
        # accept() made the listener's family and type enums anew for each connection.
        for sock in self.sockets:
            self.loop.add_reader(sock.fileno(), self._accept, sock, sock.family.value,
                                 sock.type.value, sock.proto)

    def _stop_reading(self):
        for sock in self.sockets:
            self.loop.remove_reader(sock.fileno())

    def _accept(self, sock, family, kind, proto):
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                fd, address = sock._accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:
                if e.errno not in _OUT_OF:
                    raise
                self._out_of_resources(e)
                return
            try:
                conn = socket.socket(family, kind, proto, fd)
            except OSError:  # not a socket any more: nothing to serve
                os.close(fd)
                continue
            if self.failed:
                log.info("accepting again: %d accepts had failed", self.failed)
                self.failed = 0
            self._pause_s = _PAUSE_S[0]
            links = self.count()
            if links >= self.capacity:
                self._refuse(conn)
                continue
            if self.refused and links < self.capacity - max(1, self.capacity // 10):
                # Logged with some room back, so a realm at its limit is not two lines
                # per connection that ends.
                log.info("below the connection limit again: %d connections were refused",
                         self.refused)
                self.refused = 0
            conn.setblocking(False)
            self.accepted(conn, address)

    def _refuse(self, conn):
        if not self.refused:
            log.warning("at the connection limit (%d links; open-file limit %d): new "
                        "connections are refused", self.capacity, self.fd_limit)
        self.refused += 1
        refuse(conn, _FULL)

    def _out_of_resources(self, error):
        if not self.failed:
            log.warning("cannot accept connections: %s; retrying in %.1f s (open-file limit "
                        "%d, %d links)", os.strerror(error.errno), self._pause_s,
                        self.fd_limit, self.count())
        self.failed += 1
        self._stop_reading()
        self._retry = self.loop.call_later(self._pause_s, self._resume)
        self._pause_s = min(_PAUSE_S[1], self._pause_s * 2)

    def _resume(self):
        self._retry = None
        if not self.paused:
            self._start_reading()


def _listen(host, port, backlog):
    """Bound, listening, non-blocking sockets for every address `host` resolves to."""
    sockets = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            set_nodelay(sock)  # for the connections it accepts (NODELAY_INHERITED)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
