# The device runtime: one connection to the realm at a time, over TCP or a serial link,
# kept up for good. The protocol is the shared core's (sans-IO); this module only moves
# bytes, keeps time, reconnects, and writes what must survive a reboot.
#
# Per connection two tasks share the work: a reader that feeds received bytes to the
# connection, and a pump that sends what the connection queued, waits for the link to
# take it (drain) and calls tick() at its deadlines. Anything that queues bytes wakes the
# pump; the application's sends are also written at once (a stream write never blocks).
import asyncio
import gc
import time

from shared import RELEASE, crypto
from shared.framing import StreamFramer
from shared.compat import const
from shared.connection import Reconnect, is_refusal
from shared.report import ReportingConnection
from shared.endpoint import Endpoint
from shared.errors import KEY_CHECK_FAILED, KEY_MISMATCH, LINK_LOST
from shared.codec import uuid_to_str
from shared.events import Welcomed, PeerPinned, PeerKeyChanged

_CONNECT_TIMEOUT_MS = const(10000)
_IDLE_MS = const(200)  # quiet this long after Welcome: time to make the next ephemeral key
# Until Welcome the heap is collected after every _CHURN_BYTES allocated (see run()), or
# after more when the free heap is large: after all of it but _WHOLE_BYTES.
_CHURN_BYTES = const(2048)
_WHOLE_BYTES = const(8192)
_REPORT_TEXT = const(64)  # characters kept of a text in the DeviceReport: it must fit 512 bytes


def _why(error):
    if error.code == LINK_LOST:
        return error.message
    if error.remote:
        return "the realm said %s%s" % (error.name, ": " + error.message if error.message else "")
    return str(error)


async def _after(ms, call):
    await asyncio.sleep_ms(ms)
    call()


# The event loop as the runtime sees it: milliseconds since boot, sleep_ms, timers, a TCP
# connection, a stream over a serial port, and the free heap. These are MicroPython's
# asyncio, time and gc extras; the runtime takes them as one object, so a test can run it
# under CPython with a fake clock and fake links (tests/test_firmware_runtime.py).
# A wait with a timeout is a timer beside a plain wait, not asyncio.wait_for_ms: its
# module (asyncio.funcs, 0.9 KB for good) and its wrapping cost a device 1.2 KB at its
# handshake's peak, where the pump waits, which its smallest heap needs.
class Loop:
    def __init__(self):
        self._last = time.ticks_ms()
        self._ms = 0

    def now(self):
        """Milliseconds since boot that never wrap (time.ticks_ms wraps after 2**30 ms)."""
        t = time.ticks_ms()
        self._ms += time.ticks_diff(t, self._last)
        self._last = t
        return self._ms

    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(ms)

    def timer(self, ms, call):
        """call() once ms have passed, unless the timer is cancelled first: a task, whose
        cancel() is True if it had not rung yet."""
        return asyncio.create_task(_after(ms, call))

    def collect_every(self, allocated):
        """A garbage collection after every `allocated` bytes allocated from now on, not only
        when the heap is full (None: only then again)."""
        gc.threshold(-1 if allocated is None else allocated)

    async def open_tcp(self, host, port, timeout_ms):
        """A stream (readinto, write, drain, close, wait_closed) to host:port;
        asyncio.TimeoutError if it is not connected within timeout_ms."""
        timer = self.timer(timeout_ms, asyncio.current_task().cancel)
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except asyncio.CancelledError:
            if timer.done():  # cancelled by the timer, not by the task's owner
                raise asyncio.TimeoutError
            raise
        finally:
            timer.cancel()
        return writer

    def open_stream(self, port):
        """A stream over a port the board opened (a UART, a tty file)."""
        return asyncio.StreamReader(port)

    def free_heap(self):
        return gc.mem_free()


class Runtime:
    """The device's realm link. Its listeners (system services first, then the
    application API) get the endpoint's events through listener.event(e) and status
    changes through listener.status_changed(status, detail).

    loop: the event loop's clock and links (a Loop; a fake one in tests).
    boot: what the first stage chose (firmware/main.py): {"slots", "slot", "state",
    "version", "phase", "waiting", "updating", "alone"}; None when started without it (no
    updates)."""

    def __init__(self, config, store, board, log=print, loop=None, boot=None):
        self.config = config
        self.store = store
        self.board = board
        self.log = log
        if loop is None:
            loop = Loop()
        self.loop = loop
        self.endpoint = Endpoint(config["device_id"], store.private, store.next_boot(),
                                 store.peers, on_new_boot=store.set_boot)
        self.boot = boot
        # For the DeviceReport: the installed release (docs/UPDATES.md), else the app's
        # __version__ (set by the launcher).
        self.app_version = boot and boot["version"]
        # The DeviceReport's fw: this release, and the firmware image's version when an
        # image update installed one (slots/boot.json "fw", firmware/update_image.py).
        fw = boot and boot["state"].get("fw")
        self.firmware = RELEASE + " " + fw if fw else RELEASE
        self.reconnect = Reconnect(**config["reconnect"])
        self._listeners = []
        self._services = 0  # how many of _listeners, at the front, are system services
        self.status = "booting"
        self.detail = ""
        self._stats = {"connects": 0, "welcome_ms": None, "pinned_path": None}
        self._ephemeral = None
        self._conn = None
        self._stream = None
        self._serial = None
        self._lost = None
        self._started = 0
        self._announced_pin = False
        self._wake = asyncio.Event()
        self._repinned = asyncio.Event()
        self._buf = None  # the receive buffer, made before the first connection

    # -- for the application API and the system services ---------------------------
    def add_listener(self, listener, service=False):
        """Give `listener` the events from now on: system services (service=True) before
        the application, each group in the order added."""
        if service:
            self._listeners.insert(self._services, listener)
            self._services += 1
        else:
            self._listeners.append(listener)

    def add_service(self, number, listener):
        """A system service (a listener before the app) that also takes the Service packets
        numbered `number` (codec.SERVICE_UPDATE...): listener.service_packet(peer, data)."""
        services = dict(self.endpoint.services)
        services[number] = listener.service_packet
        self.endpoint.services = services
        self.add_listener(listener, service=True)

    def send(self, peer, data):
        """Data to a peer (16 bytes), end to end encrypted; its msg_id. SendQueueFull or
        ValueError as Endpoint.send says."""
        msg_id = self.endpoint.send(peer, data)
        self._after_call()
        return msg_id

    def ping(self, peer, data=b""):
        msg_id = self.endpoint.ping(peer, data)
        self._after_call()
        return msg_id

    def now_ms(self):
        """Milliseconds since boot (never wraps)."""
        return self.loop.now()

    def timer(self, ms, call):
        """call() after ms unless cancelled first (Loop.timer)."""
        return self.loop.timer(ms, call)

    def stats(self):
        stats = dict(self._stats)
        stats["dropped"] = self.endpoint.dropped
        stats["queued"] = self.endpoint.queued()
        stats["next_key_ready"] = self._ephemeral is not None
        return stats

    def _after_call(self):
        for event in self.endpoint.take_events():
            self._app_event(event)
        self.kick()

    def kick(self):
        """Bytes were queued on the connection (or may be): write them now, so a burst of
        sends never piles up in one large buffer, and let the pump drain the rest."""
        conn, stream = self._conn, self._stream
        if conn is not None and stream is not None:
            data = conn.data_to_send()
            if data:
                stream.write(data)  # never blocks: what the link won't take now is buffered
        self._wake.set()

    def forget_peer(self, peer):
        """The user re-pins a peer: its next key is trusted on first use."""
        self.endpoint.forget_peer(peer)
        self.store.save_peers(self.endpoint.pins())

    def repin(self, realm_public=None):
        """The user re-pins: trust realm_public, or whatever realm answers next (None)."""
        self.store.repin(realm_public)
        self._repinned.set()

    # -- the connection loop ------------------------------------------------------
    async def run(self):
        while True:
            if self.store.refused is not None:
                self._set_status("refused", self.store.refused + "; waiting for the user "
                                 "to re-pin the realm key")
                await self._repinned.wait()
                self._repinned.clear()
                self.reconnect.connected()  # the user acted: start the backoff over
                continue
            if self._ephemeral is None:
                self._ephemeral = crypto.generate_keypair()
            # X25519 leaves much garbage: collect it before the connection's long-lived
            # objects are made, so they pack together instead of scattering the free heap.
            gc.collect()
            # The handshake makes ~300 KB of garbage (the X25519 ladders). Collected only
            # once the heap is full, it spreads over the whole free heap, and the objects
            # made meanwhile land anywhere in it and cut it up: a 96 KB heap then had 2 KB
            # free in no piece big enough for a 320-byte AES context. A collection after
            # every few KB keeps the churn at the bottom of the free heap, the rest whole.
            self.loop.collect_every(max(_CHURN_BYTES, self.loop.free_heap() - _WHOLE_BYTES))
            self._set_status("connecting", self._link_name())
            error = None
            try:
                conn = await self._session()
            except OSError as e:
                why = "cannot reach the realm: %s" % (e,)
            except MemoryError:
                why = "out of memory"
            else:
                error = conn.error
                if conn.realm_key_changed:
                    self.store.refuse_realm(str(error))
                    continue
                if error.code == KEY_CHECK_FAILED and not error.remote and self._announced_pin:
                    # The realm's proof failed with the dh2 of this key pair: either the
                    # realm holds another key for this device, or it is not the pinned
                    # realm. The first-contact path, at once, tells the two apart.
                    self.log("the realm did not prove its key with this device's key pair; "
                             "connecting again the long way to learn why")
                    self.store.unconfirm_realm()
                    continue
                why = _why(error)
                if error.code == KEY_MISMATCH and error.remote:
                    # Fixed by the realm's operator, not by waiting: try at the normal pace.
                    why, error = self._device_key_refused(), None
                if conn.established:
                    self.reconnect.connected()
            finally:
                self.loop.collect_every(None)  # (if no Welcome came)
            delay = self.reconnect.next_delay_ms(error)
            self._set_status("error" if is_refusal(error) else "offline",
                             "%s; retrying in %d ms" % (why, delay))
            await self.loop.sleep_ms(delay)

    def _device_key_refused(self):
        return ("the realm holds another key for this device: its key pair is new (flash "
                "erased, or its config moved or copied to another board); if so, on the "
                "realm: realm device reset-key %s" % self.config["name"])

    async def _session(self):
        started = self.loop.now()
        stream, framer = await self._open_link()
        ephemeral, self._ephemeral = self._ephemeral, None
        store = self.store
        c = self.config
        # The pinned path only once a Welcome confirmed this key pair (dh2 kept beside it).
        self._announced_pin = store.dh2 is not None
        conn = ReportingConnection(self.report, c["device_id"], store.private, store.public,
                                   c["token"], framer, self.loop.now(),
                                   realm_public=store.realm_public, dh2=store.dh2,
                                   ephemeral=ephemeral, handshake_timeout_ms=c["handshake_ms"],
                                   announce_pin=self._announced_pin)
        self._stats["connects"] += 1
        self._conn, self._stream = conn, stream
        self._started = started
        self._lost = None
        self.endpoint.attach(conn)
        reader = asyncio.create_task(self._read(conn, stream))
        try:
            await self._pump(conn, stream)
        finally:
            reader.cancel()
            self._conn = self._stream = None
            self._handle(conn.connection_lost(self._lost or "link closed"))
            if self.config["serial"] is None or self._lost is not None:
                await self._close_link(stream)
        return conn

    def report(self):
        """The DeviceReport (PROTOCOL.md section 7): the connection sends it right after
        Welcome and then once a minute."""
        c = self.config
        report = {"fw": self.firmware, "board": self.board.NAME, "up": self.loop.now() // 1000,
                  "boot": self.store.boot, "heap": self.loop.free_heap(),
                  "link": "serial" if c["serial"] is not None else
                  "wifi" if c["wifi"] is not None else "tcp"}
        if self.app_version is not None:
            report["app"] = str(self.app_version)[:_REPORT_TEXT]
        if c["wifi"] is not None:
            rssi = self.board.rssi()
            if rssi is not None:
                report["rssi"] = rssi
        return report

    def _link_name(self):
        c = self.config
        return "serial %s" % (c["serial"],) if c["serial"] is not None else "%s:%d" % (
            c["host"], c["port"])

    async def _open_link(self):
        c = self.config
        if self._buf is None:
            # The link's bytes land here and its packets are opened where they lie, session
            # after session: made once, just after a collection, while the heap is least
            # fragmented (config "receive_buffer": 4120 takes the largest packet; the
            # default grows when a packet needs it, if the heap has the room then). The
            # send buffer likewise, if the config asks for one ("send_buffer").
            self._buf = bytearray(c["receive_buffer"])
            if c["send_buffer"]:  # large messages are built in it (shared/sending.py)
                from shared import sending
                sending.buffer = bytearray(c["send_buffer"])
        if c["serial"] is not None:
            if self._serial is None:
                try:
                    port = self.board.open_serial(c["serial"])
                except ValueError as e:  # a setting this board cannot do, e.g. the baud
                    raise OSError("serial link %s: %s" % (c["serial"], e))
                self._serial = self.loop.open_stream(port)
            # The link stays open between sessions: closing a pty can end its far side.
            from shared.serial_framing import SerialFramer  # a TCP device never loads it
            return self._serial, SerialFramer(in_place=self._buf)
        if c["wifi"] is not None:
            await self.board.join_network(c["wifi"], self.log)
        try:
            stream = await self.loop.open_tcp(c["host"], c["port"], _CONNECT_TIMEOUT_MS)
        except asyncio.TimeoutError:
            raise OSError("no TCP connection in %d s" % (_CONNECT_TIMEOUT_MS // 1000))
        return stream, StreamFramer(in_place=self._buf)

    async def _close_link(self, stream):
        if stream is self._serial:
            self._serial = None
        try:
            stream.close()
            await stream.wait_closed()
        except (OSError, AttributeError):
            pass  # already gone, or a UART with nothing to close

    async def _read(self, conn, stream):
        try:
            while not conn.closed:
                # Straight into the receive buffer, where the packets are opened.
                n = await stream.readinto(conn.receive_buffer())
                if not n:
                    self._lost = "connection closed by the realm"
                    break
                self._handle(conn.receive_data(n, self.loop.now()))
                self._wake.set()
        except OSError as e:
            self._lost = "link error: %s" % (e,)
        except MemoryError:
            self._lost = "out of memory"  # the connection's state is unknown: start over
        self._wake.set()

    async def _pump(self, conn, stream):
        while True:
            data = conn.data_to_send()
            if data:
                stream.write(data)
                await stream.drain()
            if conn.closed or self._lost is not None:
                return
            wait = conn.next_deadline() - self.loop.now()
            if self._ephemeral is None and conn.established:
                wait = min(wait, _IDLE_MS)
            if wait > 0:
                timer = self.loop.timer(wait, self._wake.set)
                await self._wake.wait()
                if not timer.cancel() and self._ephemeral is None and conn.established:
                    # Idle: make the next attempt's key now, off its critical path.
                    self._ephemeral = crypto.generate_keypair()
                    gc.collect()
                self._wake.clear()
            self._handle(conn.tick(self.loop.now()))

    # -- events -------------------------------------------------------------------
    def _handle(self, events):
        for event in events:
            welcomed = isinstance(event, Welcomed)
            if welcomed:
                self.store.pin_realm(event.realm_public, event.dh2)
                took = self.loop.now() - self._started
                self._stats["welcome_ms"] = took
                self._stats["pinned_path"] = event.pinned_path
            for app_event in self.endpoint.handle(event):
                self._app_event(app_event)
            if welcomed:
                # Once the endpoint has the session (its packet limit, its queue sent), so
                # that a listener may send at once.
                self._set_status("online", "realm %r at %s in %d ms (%s)" % (
                    event.realm_name, self._link_name(), took,
                    "known realm" if event.pinned_path else "first contact"))
                self.loop.collect_every(None)  # only when the heap is full again
                gc.collect()  # the handshake's garbage, before the session's traffic

    def _app_event(self, event):
        if isinstance(event, PeerPinned):
            self.store.save_peers(self.endpoint.pins())
        elif isinstance(event, PeerKeyChanged):
            self.log("peer %s offered another key than the pinned one: refused until the "
                     "user re-pins it" % uuid_to_str(event.peer))
        for listener in self._listeners:
            listener.event(event)

    def _set_status(self, status, detail=""):
        self.status, self.detail = status, detail
        self.log("%s: %s" % (status, detail) if detail else status)
        self.board.show_status(status)
        for listener in self._listeners:
            listener.status_changed(status, detail)
