"""The realm server: every link (TCP or serial) drives one RealmConnection from the core.

The core decides the protocol; this module only moves bytes, keeps time and hands the
registry questions to the store (`host/store.py`) and the packets to the router
(`host/router.py`). One event loop; the registry's blocking calls run on the store's
worker thread and the token checks in their pool, never on the loop.
"""
import asyncio
import bisect
import collections
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
import time
import types
import weakref

from shared import codec, protocol
from shared.errors import (DENIED, INTERNAL, KEY_CHECK_FAILED, KEY_MISMATCH, LINK_LOST,
                           SESSION_REPLACED, TIMEOUT, code_name)
from shared.framing import StreamFramer
from shared.realm import (RESTARTED, DeviceReportPacket, LoginRequest, PeerKeyRequestPacket,
                          RealmConnection)
from shared.events import Closed, ProxyPassPacket
from host import logs, realmdir
from host.listener import (BACKLOG, NODELAY_INHERITED, Listener, address_group, error_frame,
                           refuse)
from host.login import Decision, LoginDecider
from host.ratelimit import LoginLimiter
from host.registry import id_text, label
from host.router import LocalRouter
from host.store import Unavailable
from host.tcp_transport import TcpTransport

log = logs.get()

STORM_LINKS = 100  # links gone since the peak that make the realm give memory back
KEYS_IDLE_MS = 1000  # a link quiet this long drops its prepared keys until its next packet
DH2_KEPT = 16384  # bound device keys whose dh2 is kept (~0.2 KiB each)
RECEIPT_CHECK_S = 0.05  # how often a link asks whether stored packets were received
_OVER_SHARE = "too many connections in the handshake from your address; try again later"
_OVER_SHARE_FRAME = error_frame(DENIED, _OVER_SHARE)


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator returns memory itself
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory():
    """Free what ended links left and give it back to the system. A link and its
    connection hold each other (the core calls back into the link), so only the cyclic
    collector frees them, and it runs on allocations, which stop when the storm does;
    glibc then keeps the freed heap unless asked (RSS stayed 14 MB up after a storm)."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Dh2Cache:
    """dh2 = X25519(R, D_pub) per bound device key, for the core (shared/realm.py): one
    multiplication less per login. Secret: kept in this process's memory only, never
    written; past `size` keys the least recently used goes first."""

    def __init__(self, size=DH2_KEPT):
        self.size = size
        self._items = collections.OrderedDict()

    def __len__(self):
        return len(self._items)

    def get(self, key):
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def __setitem__(self, key, value):
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self):
        self._items.clear()


class Config:
    """`realm serve` settings. The defaults are the documented ones, kept only here (the
    protocol's from shared/protocol.py): `realm serve --help` shows these."""

    def __init__(self, **settings):
        self.host = "0.0.0.0"
        self.port = protocol.DEFAULT_PORT
        self.data_dir = realmdir.DEFAULT
        self.name = "realm"
        self.serial = []
        self.baud = 115200
        self.open_enrolment = False
        self.heartbeat_s = protocol.DEFAULT_HEARTBEAT_S
        self.handshake_timeout_s = protocol.HANDSHAKE_TIMEOUT_MS / 1000
        self.max_packet = protocol.DEFAULT_MAX_PACKET
        # Links past Hello, not logged in yet; more wait. A slot is held for a round trip
        # to the device (KeyCheck to its answer), so slots / RTT bounds the logins a
        # second: 256 let a fleet's restart overflow the kernel's backlog (SYNs dropped,
        # devices retrying 1 s later); 1,024 hold ~5 MiB at most (~5 KiB each).
        self.max_handshakes = 1024
        self.max_handshakes_per_address = 32  # links not logged in yet from one address
        self.backlog = BACKLOG         # TCP connections the kernel holds until accepted
        self.hello_timeout_s = 5.0     # a new link must send its Hello within this
        self.send_limit = 256 * 1024   # bytes waiting to be written; past it a link is dropped
        self.summary_s = 60.0
        self.http = ("127.0.0.1", 7780)  # the status page and /metrics; None: off
        self.http_token = None  # the bearer token they ask for (needed beyond loopback)
        for key, value in settings.items():
            if not hasattr(self, key):
                raise TypeError("unknown setting %s" % key)
            setattr(self, key, value)


# Seconds: a realm-made token is one SHA-256 (microseconds), a chosen one scrypt (~80 ms).
TOKEN_CHECK_BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Stats:
    """The node's counters, all in one place: plain integers bumped where things happen,
    read by the summary line and by /metrics when scraped (on the relay path: one index
    and one add per packet, nothing else)."""

    def __init__(self):
        self.started = time.time()
        self.connects = 0
        self.logins = {"pinned": 0, "first_contact": 0}  # by handshake path
        self.relayed = [0] * (codec.UNAVAILABLE + 1)  # ProxyPass by the Delivery status it got
        self.flushed = 0  # stored packets handed over after their target's Welcome
        self.refusals = {}  # error code name -> links refused before their login completed
        self.slow_readers = 0
        self.replaced = 0  # sessions closed by a newer login of the same device
        self.reports = 0  # DeviceReports received
        self.serial_drops = 0  # serial frames dropped (bad CRC, too long) on ended links
        # The token checks' durations, as a histogram: counts per bucket, not cumulative.
        self.token_check_buckets = [0] * (len(TOKEN_CHECK_BUCKETS) + 1)  # the last: +Inf
        self.token_check_seconds = 0.0

    def token_checked(self, seconds):
        self.token_check_buckets[bisect.bisect_left(TOKEN_CHECK_BUCKETS, seconds)] += 1
        self.token_check_seconds += seconds


class RealmServer:
    """What all links share: keys, store, router, limits, counters.

    `make_router(realm)` gives the router (default: this process's own sessions).
    Time: every timer and deadline runs on the loop's clock (loop.time(), call_at), and
    what the registry keeps (queue ages, last seen) on `wall_clock`; a test loop with a
    clock of its own moves both (host/inprocess.py)."""

    def __init__(self, config, store, keypair, make_router=None, wall_clock=time.time):
        self.config = config
        self.store = store
        self.private, self.public = keypair
        self.dh2_cache = Dh2Cache()
        self.loop = asyncio.get_running_loop()
        self.wall_clock = wall_clock
        self.stats = Stats()
        self.decider = LoginDecider(store, LoginLimiter(), config.open_enrolment,
                                    clock=self.loop.time, wall_clock=wall_clock,
                                    on_token_check=self.stats.token_checked)
        self.router = (make_router or (lambda realm: LocalRouter(realm, store)))(self)
        self.handshaking = set()
        # Links whose first bytes came while every handshake slot was taken: their bytes
        # wait unread, in arrival order, until a slot is free.
        self._waiting = {}
        self._waited = None  # while logged as full: accepted links that waited for a slot
        self.listener = None  # the TCP Listener, paused while links wait for a slot
        self._unlogged_from = {}  # source address -> its links not logged in (yet)
        self._refused_from = {}   # source address over its share -> connections refused
        self.links = set()
        self.serial_ports = []
        self.reports = {}  # device id text -> (wall time, report): the latest, for display only
        self.changes = 0  # bumped whenever what the status page lists may have changed
        self._tasks = set()
        self._unflushed = set()  # links given packets since the loop last wrote them

    def now_ms(self):
        return int(self.loop.time() * 1000)

    def spawn(self, coro):
        """Run a coroutine as a task that is kept referenced until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def run_now(self, coro):
        """Run a coroutine at once, up to its first wait; the rest, if it waits, as a task
        (spawn). Python 3.12's eager tasks: a reconnect's login waits for nothing, and a
        task for it cost a loop turn and its bookkeeping."""
        try:
            waiting = coro.send(None)
        except StopIteration:
            return None
        return self.spawn(_resumed(coro, waiting))

    def open_link(self, transport, address, framer, source=None, admitted=False):
        """`address` names the link in the logs; `source` is what the rate limit counts
        per address (the IP address for TCP), `address` itself if None. `admitted`: the
        caller has counted it in its address's share already (`admit`)."""
        source = source or address
        over = not admitted and not self.admit(source)
        link = Link(self, transport, address, framer, source, counted=not over)
        if over:
            link.conn.close(DENIED, _OVER_SHARE)
        link.flush()
        return link

    # Idle connections must not lock the others out. A link that has sent nothing yet
    # holds no handshake slot: it only counts in its address's share of the links not
    # logged in, and must send its Hello within --hello-timeout. A slot is taken with
    # the Hello, by work that progresses.
    def admit(self, source):
        """Count a new connection in its address's share: False (not counted) if full."""
        count = self._unlogged_from.get(source, 0)
        if count >= self.config.max_handshakes_per_address:
            refused = self._refused_from.get(source)
            if refused is None:
                log.warning("%s has %d connections in the handshake, its share: more are "
                            "refused", source, count)
                refused = 0
            self._refused_from[source] = refused + 1
            name = code_name(DENIED)
            self.stats.refusals[name] = self.stats.refusals.get(name, 0) + 1
            return False
        self._unlogged_from[source] = count + 1
        return True

    # A fleet that comes back together must not be refused: past --max-handshakes a new
    # connection waits in the kernel's backlog (the listener stops accepting) and one
    # already accepted waits here with its Hello unread; both are served, oldest first, as
    # slots free up, each within its handshake timeout.
    def has_free_slot(self):
        return len(self.handshaking) < self.config.max_handshakes

    def hello_received(self, link):
        """Give `link` a handshake slot (Link only feeds the core a Hello when one is free)."""
        self.handshaking.add(link)
        self._update_accepting()

    def wait_for_slot(self, link):
        self._waiting[link] = None
        if self._waited is not None:
            self._waited += 1
        self._update_accepting()

    def stop_waiting(self, link):
        if link in self._waiting:
            del self._waiting[link]
            self._update_accepting()

    def handshake_ended(self, link):
        """`link` logged in or ended: it leaves its address's share and its slot."""
        if link.unlogged:
            link.unlogged = False
            self.handshaking.discard(link)
            self._leave_share(link.source)
            if self._waiting:
                self.loop.call_soon(self._serve_waiting)  # not from within this link's call
            else:
                self._update_accepting()

    def _serve_waiting(self):
        while self._waiting and self.has_free_slot():
            link = next(iter(self._waiting))
            del self._waiting[link]
            link.slot_free()
        self._update_accepting()

    def _update_accepting(self):
        """Accept new connections only while a slot is free and nobody waits for one."""
        full = bool(self._waiting) or not self.has_free_slot()
        if self.listener is not None:
            if full:
                self.listener.pause()
            else:
                self.listener.resume()
        # Logged once as it fills, once with some room back: not two lines per login.
        if full and self._waited is None:
            log.warning("all %d handshake slots taken: new connections wait for one (more "
                        "with --max-handshakes, if the realm has the CPU)",
                        self.config.max_handshakes)
            self._waited = 0
        elif not full and self._waited is not None and \
                len(self.handshaking) < self.config.max_handshakes * 3 // 4:
            log.info("handshake slots free again: %d accepted connections had waited for one",
                     self._waited)
            self._waited = None

    def _leave_share(self, source):
        left = self._unlogged_from.pop(source) - 1
        if left:
            self._unlogged_from[source] = left
        refused = self._refused_from.get(source)
        if refused is not None and left < self.config.max_handshakes_per_address * 3 // 4:
            del self._refused_from[source]
            log.info("%s is below its share of connections in the handshake again: %d were "
                     "refused", source, refused)

    def adopt_tcp(self, sock, address):
        """A TCP connection the listener accepted: give it a transport and a Link, unless
        its address (an IPv6 one: its /64) has its share of connections in the handshake
        already."""
        # Interned: the devices behind one address (a NAT, a test) share the string.
        source = sys.intern(address_group(address[0]))
        if not self.admit(source):
            refuse(sock, _OVER_SHARE_FRAME)
            return
        transport = TcpTransport(self.loop, sock, nodelay=not NODELAY_INHERITED)
        named = ("[%s]:%d" if ":" in address[0] else "%s:%d") % (address[0], address[1])
        transport.start(self.open_link(transport, named, StreamFramer(), source=source,
                                       admitted=True))

    def flush_soon(self, link):
        """Write to `link` once this loop iteration is done: a burst of packets from
        many senders becomes one write, not one per packet."""
        if not self._unflushed:
            self.loop.call_soon(self._flush_all)
        self._unflushed.add(link)

    def _flush_all(self):
        links, self._unflushed = self._unflushed, set()
        for link in links:
            link.flush()

    async def start_session(self, link, decision):
        link.device = link.claimed
        link.since = self.wall_clock()
        self.handshake_ended(link)
        self.stats.logins["pinned" if link.conn.pinned_path else "first_contact"] += 1
        self.changes += 1
        how = " (enrolled)" if decision.enrolled else " (key bound)" if decision.bound_now else ""
        link.log.line(logging.INFO, "login %s from %s%s", link.label, link.address, how)
        await self.router.open_session(link, lambda: link.conn.accept_login(
            self.config.name, self.config.heartbeat_s, self.config.max_packet))

    def link_ended(self, link):
        self.links.discard(link)
        self.stop_waiting(link)
        self.handshake_ended(link)
        self.stats.serial_drops += getattr(link.framer, "dropped", 0)
        if link.device is not None:
            self.changes += 1
            self.router.close_session(link)

    def device_reported(self, link, report):
        """Keep a device's latest DeviceReport in memory: it is only shown, and every
        device sends a new one right after its next Welcome."""
        self.reports[link.device] = (self.wall_clock(), report)
        self.stats.reports += 1
        self.changes += 1

    # -- housekeeping -----------------------------------------------------------
    async def housekeeping(self):
        last_summary = last_prune = self.loop.time()
        peak = 0  # most links since memory was last given back
        while True:
            await asyncio.sleep(min(1.0, self.config.summary_s))
            now = self.loop.time()
            self.release_idle_keys()
            peak = max(peak, len(self.links))
            if peak - len(self.links) >= STORM_LINKS:  # a storm of connections is over
                peak = len(self.links)
                release_memory()
            try:
                self.drop_removed_devices(await self.store.removed_devices(
                    {link.device for link in self.router.links()}))
                if now - last_prune >= 60:
                    last_prune = now
                    self.decider.limiter.prune(now)
                    await self.store.housekeeping(self.wall_clock())
            except Exception as e:  # e.g. locked by an admin for too long: next time
                log.warning("registry housekeeping postponed: %s", e)
            if now - last_summary >= self.config.summary_s:
                last_summary = now
                self.log_summary()

    def release_idle_keys(self):
        """Links quiet for KEYS_IDLE_MS drop their prepared keys: about 4 KiB of an idle
        session's memory, made again (tens of microseconds) by its next packet."""
        quiet = self.now_ms() - KEYS_IDLE_MS
        for link in self.links:
            if link.conn.quiet_since() <= quiet:
                link.conn.release_keys()

    def drop_removed_devices(self, removed):
        """Close the sessions of the devices an admin removed (None: nothing changed)."""
        if not removed:
            return
        self.changes += 1
        for link in self.router.links():
            if link.device in removed:
                link.conn.close(DENIED, "device removed from the realm")
                link.flush()

    def log_summary(self):
        s = self.stats
        log.info("summary: %d sessions, %d in handshake, %d connects, %d logins, "
                 "%d packets relayed, %d queued, %d refusals",
                 len(self.router), len(self.handshaking), s.connects, sum(s.logins.values()),
                 s.relayed[codec.DELIVERED] + s.flushed, s.relayed[codec.QUEUED],
                 sum(s.refusals.values()))

    async def shutdown(self):
        for link in list(self.links):
            link.conn.close(INTERNAL, "realm shutting down")
            link.flush()
        await asyncio.sleep(0.1)  # let the Error packets reach the sockets
        self.decider.close()
        self.dh2_cache.clear()
        for task in list(self._tasks):
            task.cancel()


@types.coroutine
def _wait_for(waiting):
    """Hand what a coroutine yielded (a future, or None: one loop turn) to the running
    task, as that coroutine's own await would have; what the task sends or throws back
    is returned or raised."""
    return (yield waiting)


async def _resumed(coro, waiting):
    """The rest of `coro`, which yielded `waiting` when it was run until it waited
    (RealmServer.run_now). A cancellation of the task is passed into `coro`."""
    while True:
        try:
            await _wait_for(waiting)
        except BaseException as error:  # CancelledError too: `coro` meets it where it waits
            try:
                waiting = coro.throw(error)
            except StopIteration:
                return
            continue
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


class Link:
    """One transport link and the RealmConnection on it.

    `transport` has asyncio's write/get_write_buffer_size/close/abort.
    """

    # Slots: a link per session, and a dict per link cost 0.3 KiB more.
    __slots__ = ("realm", "transport", "address", "source", "framer", "claimed", "device",
                 "name", "since", "ended", "_timer", "_timer_at", "conn", "unlogged", "written",
                 "_left_host", "_heard_after", "_receipts", "_receipt_timer", "log",
                 "record", "held", "_opened", "__weakref__")

    def __init__(self, realm, transport, address, framer, source, counted=True):
        self.realm = realm
        self.transport = transport
        self.address = address
        self.source = source
        self.framer = framer
        self.claimed = None  # the device id text its Hello gave (proven at its login)
        self.device = None  # its id text once logged in
        self.name = None  # its name in the registry ("" for none), for the logs, once known
        self.record = None  # its registry record, read once at its Hello
        self.since = None  # wall time of its login
        self.ended = False
        self.held = None  # its first bytes, unread while it waits for a handshake slot
        self._opened = realm.loop.time()
        self._timer = None
        self._timer_at = None
        # The core calls back into the link, through a weak reference: with a strong one
        # the link and its connection would hold each other, and an ended link would
        # wait for the cycle collector (a storm's dead links piled up until it ran).
        # (weakref.ref, not WeakMethod: a C call, where WeakMethod's are Python's.)
        link = weakref.ref(self)
        self.conn = RealmConnection(
            realm.private, realm.public, framer, realm.now_ms(),
            lambda device_id: link()._bound_key(device_id),
            handshake_timeout_ms=int(realm.config.handshake_timeout_s * 1000),
            hello_timeout_ms=int(realm.config.hello_timeout_s * 1000),
            dh2_cache=realm.dh2_cache)
        self.unlogged = counted  # in its address's share of links not logged in yet
        self.written = 0  # bytes handed to the transport
        self._left_host = 0  # of those, gone from the transport's buffer at the last look
        self._heard_after = 0  # bytes gone before the device last sent something
        self._receipts = []  # (bytes written by then, callback), oldest first
        self._receipt_timer = None
        realm.links.add(self)
        realm.stats.connects += 1
        self.log = logs.LinkLog(log)
        # DEBUG: the line that ends the link names its address too, and an operator reads
        # a session as its login and its end (one line each at INFO).
        self.log.line(logging.DEBUG, "connect %s", address)

    def _bound_key(self, device_id):
        """The core asks first when the Hello arrives, before any work for it; the record
        read then also serves the login decision and the log lines."""
        if self.unlogged and self not in self.realm.handshaking:
            self.realm.hello_received(self)
            self.claimed = id_text(device_id)
            self.record = self.realm.store.device_now(self.claimed)
            if self.record is not None:
                self.name = self.record.name
        if self.record is not None:
            return self.record.bound_key
        return self.realm.store.bound_key(self.claimed)  # a store without records

    def data_received(self, data):
        if self.ended:
            return
        if self.held is not None:  # read before the transport paused
            self.held += data
            return
        self._heard_after = self._left_host  # what left before this came
        if self.device is None:
            if self.unlogged and self not in self.realm.handshaking and \
                    not self.realm.has_free_slot():
                self._wait_for_slot(data)
                return
            self._handle(self.conn.receive_data(data, self.realm.now_ms()))
        else:  # a session: its ProxyPass packets come opened, for the router (_handle)
            self._handle(self.conn.receive_relay(data, self.realm.now_ms()))
        self.flush()

    def _wait_for_slot(self, data):
        self.held = bytearray(data)
        pause = getattr(self.transport, "pause_reading", None)
        if pause is not None:
            pause()
        self.realm.wait_for_slot(self)

    def slot_free(self):
        """The realm has a handshake slot for this link: read what it sent meanwhile."""
        data, self.held = self.held, None
        resume = getattr(self.transport, "resume_reading", None)
        if resume is not None:
            resume()
        self.data_received(bytes(data))

    def transport_lost(self, why):
        if not self.ended:
            self._handle(self.conn.connection_lost(
                "connection lost: %s" % why if why else "connection closed by the peer"))
            self._end()

    def _on_timer(self):
        self._timer = None
        if self.ended:
            return
        if self.held is not None:  # waiting for a slot: the realm's delay, not the device's
            give_up = self._opened + self.realm.config.handshake_timeout_s
            if self.realm.loop.time() < give_up:
                self._arm(give_up)
                return
            self.realm.stop_waiting(self)
            self.held = None
            # TIMEOUT, not a refusal: the device tries again on its usual backoff.
            self.conn.close(TIMEOUT, "the realm had no handshake slot free in time")
        else:
            self._handle(self.conn.tick(self.realm.now_ms()))
        self.flush()

    def _handle(self, events):
        relay_body = self.realm.router.relay_body
        for event in events:
            if self.conn.closed and not isinstance(event, Closed):
                continue
            try:
                if type(event) is bytes:  # a ProxyPass the core opened (receive_relay)
                    relay_body(self, event)
                else:
                    self._dispatch(event)
            except Exception:  # a realm bug or a registry failure, never the peer's doing
                self.log.line(logging.ERROR, "internal error on the link from %s",
                              self.address, exc_info=True)
                self.conn.close(INTERNAL, "internal error")

    def _dispatch(self, event):
        conn = self.conn
        if isinstance(event, ProxyPassPacket):
            self.realm.router.relay(self, event.peer, event.msg_id, event.inner)
        elif isinstance(event, PeerKeyRequestPacket):
            conn.send_peer_key(event.peer, self.realm.store.bound_key(id_text(event.peer)))
        elif isinstance(event, LoginRequest):
            self.realm.run_now(self._login(event))
        elif isinstance(event, DeviceReportPacket):
            self.realm.device_reported(self, event.report)
        # Closed: flush() sees conn.closed and ends the link.

    def delivered(self, msg_id, status):
        """The router's answer to a ProxyPass from this link."""
        self.realm.stats.relayed[status] += 1
        if status == codec.QUEUED:
            self.realm.changes += 1  # a device's queued count on the status page
        if msg_id and not (self.ended or self.conn.closed):
            self.conn.send_delivery(msg_id, status)
            self.realm.flush_soon(self)

    async def _login(self, request):
        try:
            decision = await self.realm.decider.decide(request, self.source, self.record)
        except Unavailable:  # said once where it went; the device tries again later
            decision = Decision(INTERNAL, "the realm cannot reach its registry now; try again")
        except Exception:
            self.log.line(logging.ERROR, "login check failed for %s", self.address,
                          exc_info=True)
            decision = Decision(INTERNAL, "login check failed")
        self.record = None  # the decision was its last reader: a session need not keep it
        if self.ended or self.conn.closed:
            return
        await self._fetch_name()
        if self.ended or self.conn.closed:
            return
        try:
            if decision.code is None:
                await self.realm.start_session(self, decision)
            else:
                self.conn.refuse_login(decision.code, decision.message)
        except Unavailable:
            self.conn.close(INTERNAL, "the realm cannot record the session now; try again")
        except Exception:
            self.log.line(logging.ERROR, "internal error at login from %s", self.address,
                          exc_info=True)
            self.conn.close(INTERNAL, "internal error")
        self.flush()

    def flush(self):
        """Write what the connection has queued; end the link if it closed or lags."""
        if self.ended:
            return
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)
            self.written += len(data)
            if self.transport.get_write_buffer_size() > self.realm.config.send_limit:
                self.realm.stats.slow_readers += 1
                self._end("slow reader: over %d bytes unsent" % self.realm.config.send_limit,
                          abort=True)
                return
        if self.conn.closed:
            self._end()
            return
        when = (self.conn.next_deadline() + 1) / 1000.0  # an open connection has one
        if self._timer is None or when < self._timer_at:  # else it fires earlier, re-arms then
            self._arm(when)

    def _arm(self, when):
        if self._timer is not None:
            if self._timer_at <= when:
                return  # fires earlier; it re-arms then
            self._timer.cancel()
        self._timer = self.realm.loop.call_at(when, self._on_timer)
        self._timer_at = when

    def when_received(self, callback):
        """Call `callback` once the peer has received every byte written so far: on TCP
        once its kernel acknowledged them, otherwise (serial) once the device sent
        something after they left. Never if the link ends first."""
        self._receipts.append((self.written, callback))
        self._check_receipts()

    def _check_receipts(self):
        self._receipt_timer = None
        self._left_host = self.written - self.transport.get_write_buffer_size()
        received = None
        acked = getattr(self.transport, "acked", None)  # TCP's kernel knows
        if acked is not None:
            try:
                received = acked()
            except OSError:  # the socket is gone
                pass
        if received is None:
            received = self._heard_after
        while self._receipts and self._receipts[0][0] <= received:
            self._receipts.pop(0)[1]()
        if self._receipts and not self.ended:
            self._receipt_timer = self.realm.loop.call_later(RECEIPT_CHECK_S,
                                                             self._check_receipts)

    def _end(self, why=None, abort=False):
        self.ended = True
        if self._receipts:  # a last look, while the socket is still open
            if self._receipt_timer is not None:
                self._receipt_timer.cancel()
            self._check_receipts()
            self._receipts = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = self.conn.error
        if error is not None:  # its frames hold the connection: a cycle, as above
            error.__traceback__ = None
        # The realm ended a link that never logged in: a refusal (bad login, key, limit...).
        refused = why is None and error is not None and not error.remote and self.device is None
        if refused:
            refusals = self.realm.stats.refusals
            refusals[error.name] = refusals.get(error.name, 0) + 1
        elif error is not None and error.code == SESSION_REPLACED and not error.remote:
            self.realm.stats.replaced += 1
        self.realm.link_ended(self)
        if self.name is None and self.conn.device_id is not None:
            self.realm.spawn(self._log_end_named(why, refused))  # the name is in the store
        else:
            self._log_end(why, refused)
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    @property
    def label(self):
        """How the logs name the device: its id, and its name beside it once known."""
        if self.conn.device_id is None:
            return "-"
        return label(self.claimed, self.name)

    async def _fetch_name(self):
        if self.name is not None:
            return
        try:
            record = await self.realm.store.device(self.claimed)
        except Exception as e:  # only the log lines lose the name
            log.warning("registry read failed: %s", e)
            record = None
        self.name = record.name if record is not None else ""

    async def _log_end_named(self, why, refused):
        await self._fetch_name()
        self._log_end(why, refused)

    def _log_end(self, why, refused):
        error = self.conn.error
        who = self.label
        if why is not None or error is None or error.code in (LINK_LOST, RESTARTED):
            self.log.last("disconnect %s device %s: %s", self.address, who,
                          why or (error.message if error is not None else "closed"))
        elif error.remote:
            hint = ""
            if error.code == KEY_CHECK_FAILED and self.device is None:
                hint = ": it holds another key than the one bound to it, or it pinned another " \
                       "realm's key"
            # Its message is the peer's text: quoted and cut.
            self.log.last("disconnect %s device %s: the device sent %s%s%s", self.address, who,
                          error.name, (" " + logs.quote(error.message)) if error.message else "",
                          hint)
        else:
            hint = ""
            if refused and error.code == KEY_MISMATCH:
                # The realm holds another key for the device: the operator's fix.
                hint = " (its key pair is new: flash erased, or its config moved or copied; " \
                       "if so: realm device reset-key %s)" % (
                           self.name or self.claimed)
            self.log.last("%s %s device %s: %s %s%s", "refused" if refused else "disconnect",
                          self.address, who, error.name, error.message, hint)


async def serve(config, store, keypair, ready=None, make_router=None):
    """Run until SIGINT or SIGTERM. `ready(realm)` is called once listening."""
    from host.serial_link import SerialPort
    await store.start()
    realm = RealmServer(config, store, keypair, make_router)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        realm.loop.add_signal_handler(sig, stop.set)
    try:
        await realm.router.start()
        server = realm.listener = Listener(realm.loop, config.host, config.port,
                                           realm.adopt_tcp, lambda: len(realm.links),
                                           config.backlog)
    except BaseException:
        await store.stop()
        raise
    ports = realm.serial_ports = [SerialPort(realm, path, config.baud) for path in config.serial]
    for port in ports:
        realm.spawn(port.run())
    realm.spawn(realm.housekeeping())
    api = await _start_http(realm) if config.http is not None else None
    bound = server.sockets[0].getsockname()
    log.info("realm %s listening on %s:%d, data in %s, heartbeat %d s%s, at most %d "
             "connections (open-file limit %d)", config.name, bound[0], bound[1],
             config.data_dir, config.heartbeat_s,
             ", open enrolment" if config.open_enrolment else "", server.capacity,
             server.fd_limit)
    if ready is not None:
        ready(realm)
    await stop.wait()
    log.info("shutting down: telling %d links", len(realm.links))
    server.close()
    if api is not None:
        await api.close()
        _forget_http(config.data_dir)
    for port in ports:
        port.stop()
    await realm.router.stop()
    await realm.shutdown()
    await store.stop()
    realm.log_summary()
    log.info("stopped")


HTTP_FILE = "realm.http"  # in the data folder while the HTTP API runs: where `realm status` asks


async def _start_http(realm):
    from host.web import HttpApi, is_loopback, status_url
    host, port = realm.config.http
    token = realm.config.http_token
    if not token and not is_loopback(host):
        raise ValueError("the HTTP API on %s is reachable beyond this machine: give it a "
                         "token (--http-token or REALM_HTTP_TOKEN), or bind it to 127.0.0.1"
                         % host)
    api = HttpApi(realm, host, port, token)
    try:
        bound = await api.start()
    except OSError as e:
        raise ValueError("cannot serve the HTTP API on %s:%d: %s" % (host, port,
                                                                     e.strerror or e))
    log.info("status page and /metrics on http://%s:%d/ (%s)", bound[0], bound[1],
             "bearer token required" if token else "loopback only, no token")
    path = os.path.join(realm.config.data_dir, HTTP_FILE)
    with open(path + ".tmp", "w") as f:
        f.write(status_url(bound[0], bound[1]) + "\n")
    os.replace(path + ".tmp", path)
    return api


def _forget_http(data_dir):
    try:
        os.remove(os.path.join(data_dir, HTTP_FILE))
    except FileNotFoundError:
        pass
