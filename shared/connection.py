# What the device and realm connections share (PROTOCOL.md sections 4 to 7): the
# outbox, the clear/sealed rule, the key schedule, Error handling and the timers; and,
# at the end, when a device connects again (Reconnect).
# Sans-IO: bytes in through receive_data(), bytes out through data_to_send().
import random

from shared import codec, crypto
from shared.compat import const
from shared.errors import (ProtocolError, UNSUPPORTED, UNEXPECTED, KEY_CHECK_FAILED, TIMEOUT,
                           LINK_LOST, BAD_LOGIN, KEY_MISMATCH, RATE_LIMITED, DENIED,
                           SESSION_REPLACED)
from shared.events import Closed
from shared.protocol import SILENCE_FACTOR

PROXY_OVERHEAD = const(46)  # header 2 + peer 16 + msg_id 4 + seal 24
SESSION_INFO = b"realm/1 session"
ZERO_KEY = bytes(32)


def session_keys(th, dh1, dh2):
    """Section 5's key schedule: (d2r_enc, d2r_mac, r2d_enc, r2d_mac)."""
    if dh1 == ZERO_KEY or dh2 == ZERO_KEY:
        raise ProtocolError(KEY_CHECK_FAILED, "X25519 result is zero (low-order key)")
    okm = crypto.hkdf_expand(crypto.hkdf_extract(th, dh1 + dh2), SESSION_INFO, 128)
    return okm[0:32], okm[32:64], okm[64:96], okm[96:128]


class Connection:
    """Base of DeviceConnection and RealmConnection.

    Until it has opened a sealed packet from its peer, a subclass gets clear packets in
    `_on_clear(packet_id, fields, packet)` and the handshake's sealed ones (KeyCheck,
    KeyCheckResponse) undecoded in `_on_handshake_sealed(packet_id, packet)`; from then on
    every packet is opened first and comes to `_on_sealed(packet_id, fields)`.

    A subclass keeps its state in `_state`, an index into its `_allowed` table: per state,
    the packet ids the peer may send then (Error is always allowed). Any other packet is
    UNEXPECTED, checked here once, so the handlers see only packets their state allows.

    shared/sending.py is a device's code of this class for a large ProxyPass, kept in a
    module of its own that only a device sending one loads (docs/CORE_API.md): it seals
    and frames the packet where it lies with this connection's parts, then queue_frame().
    """

    _allowed = ()
    # Slots, not a dict per instance: the realm holds one connection per session (about
    # 0.1 KiB less each). MicroPython ignores them.
    __slots__ = ("_framer", "_out", "_sealer", "_opener", "_sealed", "_now", "_deadline",
                 "_heartbeat_ms", "_last_sent", "_last_received", "established", "closed",
                 "error", "_fault", "_state")

    def __init__(self, framer, now, handshake_timeout_ms):
        self._framer = framer
        self._out = bytearray(framer.preamble)
        self._sealer = None  # our direction's Sealer, once the keys are known
        self._opener = None  # the peer's direction's Opener
        self._sealed = False  # opened a sealed packet from the peer: seal all, accept only sealed
        self._now = now
        self._deadline = now + handshake_timeout_ms
        self._heartbeat_ms = 0
        self._last_sent = now
        self._last_received = now
        self.established = False
        self.closed = False
        self.error = None
        self._fault = None  # a fault found after packets the shell has not yet answered

    # -- the shell's side -------------------------------------------------------
    def receive_buffer(self):
        """Where a shell may read the link's next bytes, then say how many with
        receive_data(n): a view of the framer's receive buffer (framers made with
        in_place=True: a device's), so a packet is never copied on its way in. Events
        of such a framer's packets hold views of that buffer (ProxyPassPacket.inner):
        valid until the next receive_buffer() or receive_data()."""
        return self._framer.space()

    def receive_data(self, data, now):
        """Events for every complete packet in `data` (bytes; or an int: that many bytes
        were read into receive_buffer()). A fault (a bad packet, a bad
        length, the peer's Error) after some of them does not drop them: they are
        returned first, and the fault closes the connection at the next call
        (receive_data or tick; next_deadline() is then `now`), after the shell has
        answered them. Bytes after a fault are never read."""
        if self.closed:
            return []
        self._now = now
        events = []
        if self._fault is not None:
            self._fail(self._fault, events)
            return events
        try:
            framer = self._framer
            for packet in framer.filled(data) if isinstance(data, int) else framer.feed(data):
                self._last_received = now
                self._receive_packet(packet, events)
            if self._framer.error is not None:
                raise self._framer.error
        except ProtocolError as e:
            if events:
                self._fault = e
            else:
                self._fail(e, events)
        return events

    def connection_lost(self, why=""):
        """The transport ended (EOF, reset, unplugged) without an Error from the peer:
        returns the one Closed(ProtocolError(LINK_LOST, why)), remote since the peer's side
        went away; nothing is left to send. A fault already found (the peer's Error, say)
        is the reason instead. [] if the connection was closed already."""
        if self.closed:
            return []
        events = []
        if self._fault is not None:
            self._fail(self._fault, events)
        else:
            self.error = ProtocolError(LINK_LOST, why or "connection closed by the peer", True)
            self.closed = True
            events.append(Closed(self.error))
        self._out = bytearray()
        return events

    def tick(self, now):
        if self.closed:
            return []
        self._now = now
        events = []
        if self._fault is not None:
            self._fail(self._fault, events)
        elif not self.established:
            if now >= self._deadline:
                self._fail(ProtocolError(TIMEOUT, self._late()), events)
        elif now - self._last_received >= SILENCE_FACTOR * self._heartbeat_ms:
            self._fail(ProtocolError(TIMEOUT, "peer silent for %d s" % (
                SILENCE_FACTOR * self._heartbeat_ms // 1000)), events)
        elif now - self._last_sent >= self._heartbeat_ms:
            self._send(codec.encode(codec.PROTO_REALM, codec.HEARTBEAT))
        return events

    def next_deadline(self):
        if self.closed:
            return None
        if self._fault is not None:
            return self._now
        if not self.established:
            return self._deadline
        return min(self._last_sent + self._heartbeat_ms,
                   self._last_received + SILENCE_FACTOR * self._heartbeat_ms)

    def data_to_send(self):
        """The bytes queued, not copied: a bytearray the connection no longer touches, or
        a view of shared/sending.py's send buffer, valid until the connection's next call
        (the shell writes it at once: a stream copies what it cannot send now)."""
        out = self._out
        self._out = bytearray()
        return out

    def close(self, code, message=""):
        """End the connection with an Error the peer can read (e.g. SESSION_REPLACED)."""
        if not self.closed:
            self._fail(ProtocolError(code, message), [])

    @property
    def max_inner(self):
        """The largest ProxyPass.inner that fits this link's max_packet once sealed."""
        return self._framer.max_packet - PROXY_OVERHEAD

    # -- for subclasses ---------------------------------------------------------
    def _receive_packet(self, packet, events):
        if packet[0] != codec.PROTO_REALM:
            raise ProtocolError(UNSUPPORTED, "protocol %d" % packet[0])
        packet_id = packet[1]
        fields = None  # stays None for the handshake's sealed packets, read by their handler
        if self._sealed:  # opened where it lies if it is a view (MALFORMED if it does not open)
            packet_id, fields = codec.decode(crypto.open_packet(self._opener, packet))
        elif packet_id != codec.KEY_CHECK and packet_id != codec.KEY_CHECK_RESPONSE:
            packet_id, fields = codec.decode(packet)
        if packet_id == codec.ERROR:
            self._on_peer_error(fields, events)
        elif packet_id not in self._allowed[self._state]:  # the one check of the state
            raise ProtocolError(UNEXPECTED, packet_name(packet_id) + " not allowed now")
        elif packet_id == codec.HEARTBEAT:
            pass  # it has set _last_received: all a Heartbeat does
        elif fields is None:
            self._on_handshake_sealed(packet_id, packet, events)
        elif self._sealed:
            self._on_sealed(packet_id, fields, events)
        else:
            self._on_clear(packet_id, fields, packet, events)

    def _late(self):
        """Why the handshake deadline passed (a subclass may know better)."""
        return "handshake not finished in time"

    def _on_peer_error(self, fields, events):
        code, _ref, message = fields
        raise ProtocolError(code, message, True, self._sealed)

    def queue_frame(self, frame):
        """Queue a framed packet after what is queued. A frame built where it is sent
        from (shared/sending.py's: a bytearray, or a view of its send buffer) is queued as
        it is when nothing is, not copied; the next frame queued copies it out, which
        frees the send buffer. Other frames (bytes) are copied into the queue, which is
        then a bytearray to add to."""
        out = self._out
        if not out and type(frame) is not bytes:
            self._out = frame
        else:
            if type(out) is not bytearray:  # a frame queued as it is: copied out
                out = self._out = bytearray(out)
            out += frame
        self._last_sent = self._now

    def _send(self, packet):
        """Queue a plaintext packet, sealed when the clear/sealed rule says so."""
        if self._sealed:
            header = packet[:2]
            packet = header + self._sealer.seal(header, packet[2:])
        self.queue_frame(self._framer.frame(packet))

    def _start_session(self, heartbeat_s, max_packet):
        self.established = True
        self._heartbeat_ms = heartbeat_s * 1000
        self._framer.max_packet = max_packet

    def _require_established(self):
        if not self.established or self.closed:
            raise ProtocolError(UNEXPECTED, "connection not established")

    def _fail(self, error, events):
        """Tell the peer (unless it told us), close, and report Closed."""
        self.error = error
        self._fault = None
        if not error.remote:
            try:
                self._send(codec.encode(codec.PROTO_REALM, codec.ERROR, error.code, 0,
                                        error.message[:200]))
            except ProtocolError:
                pass  # an Error that does not fit the frame is not sent; we close anyway
        self.closed = True
        events.append(Closed(error))


def packet_name(packet_id):
    try:
        return codec.NAMES[codec.PROTO_REALM][packet_id]
    except (IndexError, KeyError):
        return "packet %d" % packet_id


# -- when to connect again ------------------------------------------------------
# One policy for the firmware runtime and the host-side device (host/client.py): capped
# exponential backoff with jitter, so devices that lost the realm together spread out; a
# refusal (the realm said no: bad login, key, rate limit, a newer session...) waits much
# longer, since trying again soon would only be refused again. DENIED in clear, before
# the realm has proven its key, is the realm turning a connection away (at its limits,
# or its address's share of handshakes full) and says nothing about the device: it is
# retried on the usual backoff, like a lost link (docs/DESIGN.md, "Busy realms"). Like umqtt.robust's and
# aioesphomeapi's reconnect logic, it is apart from the connection state machine: the
# shells only ask it how long. (Here rather than in a module of its own: on a device
# each module loaded costs heap beyond its code; with this policy and the runtime's clock
# in modules of their own, an idle simulated device used 8 KB more.)
# The defaults (ms); a device's config.json may set each ("reconnect": {...}).
RECONNECT_DEFAULTS = {"min_ms": 1000, "max_ms": 60000, "auth_ms": 300000}
REFUSALS = (BAD_LOGIN, KEY_MISMATCH, KEY_CHECK_FAILED, RATE_LIMITED, DENIED, SESSION_REPLACED,
            UNSUPPORTED)
_MAX_BACKOFF_SHIFT = const(16)  # min_ms << 16 is past any sane max_ms: no overflow on a small int


def is_refusal(error):
    """True for the realm's refusals (an error with such a code); False for a lost link,
    a timeout, an OSError... and a DENIED that came in clear (a busy realm)."""
    code = getattr(error, "code", None)
    if code == DENIED and not getattr(error, "sealed", True):
        return False
    return code in REFUSALS


class Reconnect:
    """Ask next_delay_ms(error) after each attempt that ended (error: why, a ProtocolError
    or an OSError); say connected() once a session is established, which starts the
    backoff over."""

    def __init__(self, min_ms=RECONNECT_DEFAULTS["min_ms"], max_ms=RECONNECT_DEFAULTS["max_ms"],
                 auth_ms=RECONNECT_DEFAULTS["auth_ms"], randint=random.randint):
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.auth_ms = auth_ms
        self._randint = randint
        self.failures = 0  # attempts ended in a row since the last session

    def connected(self):
        self.failures = 0

    def next_delay_ms(self, error):
        """The wait before the next attempt: half of it fixed, half random."""
        self.failures += 1
        if is_refusal(error):
            delay = self.auth_ms
        else:
            delay = min(self.min_ms << min(self.failures - 1, _MAX_BACKOFF_SHIFT), self.max_ms)
        return delay // 2 + self._randint(0, delay // 2)
