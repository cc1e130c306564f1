# A device's application layer over its realm connections, sans-IO: send bytes to a peer
# by id, end to end encrypted (PROTOCOL.md section 8). It learns peer keys with
# PeerKeyRequest (trust on first use), keeps a small bounded queue while offline or while
# a key is on its way, answers Ping with Pong, and turns the connection's events into the
# application's: Message, Pong, Delivery, PeerPinned, PeerKeyChanged; a Service packet goes
# to the handler of the system service the device offers (one it does not offer is dropped and
# counted).
# Shared by the firmware and the host-side device, so both behave the same.
from shared import codec
from shared.compat import const
from shared.connection import PROXY_OVERHEAD
from shared.e2e import E2E
from shared.errors import ProtocolError
from shared.events import (Welcomed, Closed, ProxyPassPacket, DeliveryPacket, PeerKeyPacket,
                           Message, Pong, Delivery, PeerPinned, PeerKeyChanged)
from shared.protocol import DEFAULT_MAX_PACKET, MAX_PEERS

_DEFAULT_MAX_QUEUE = const(16)
_MAX_MSG_ID = const(0xFFFFFFFF)
_E2E_OVERHEAD = const(26)  # inner header 2 + n 8 + tag 16
_IN_PLACE = const(256)  # larger messages are sent by shared/sending.py (loaded for them)


class SendQueueFull(Exception):
    """The bounded send queue is full: the application should retry later."""


class Endpoint:
    services = ()  # no system service offered, until __init__ is given some
    services_dropped = 0  # Service packets for a service this device does not offer
    """One device's end of its conversations with other devices.

    pins: the pinned peer keys kept on flash, (peer id, key) pairs, oldest first. At most
    MAX_PEERS are kept, the oldest dropped first; after a PeerPinned event the shell saves
    pins(). on_new_boot(boot): called when the boot count must grow (see E2E).
    services: {Service number (codec.SERVICE_UPDATE...): handler(peer, data)} for the system
    services this device offers; a Service packet for any other is dropped and counted.
    Call attach(conn) for each new DeviceConnection, handle(event) for each of its events,
    and take_events() after send()/ping() for events those produced.
    """

    def __init__(self, device_id, private, boot, pins=(), on_new_boot=None,
                 max_queue=_DEFAULT_MAX_QUEUE, services=None):
        self.device_id = device_id
        if services:  # else the class's (): no heap for a device that offers none
            self.services = services
        self._e2e = E2E(device_id, private, boot, on_new_boot)
        self._pins = {}  # peer id -> pinned key, at most MAX_PEERS
        self._pin_order = []  # peer ids, oldest pin first: MicroPython's dicts keep no order
        for peer, key in pins:
            self._pin(peer, key)
        self._max_queue = max_queue
        self._conn = None
        self._outbox = []  # [peer, msg_id, dpacket_id, fields] waiting for a link or a key
        self._inbox = []  # [peer, inner] from peers whose key is on its way
        self._asked = []  # peers whose key was requested on this connection
        self._events = []
        self._last_id = 0
        self.max_inner = DEFAULT_MAX_PACKET - PROXY_OVERHEAD  # until a realm's Welcome

    @property
    def dropped(self):
        """Inner packets refused: not opening, replayed, or from an unknown peer."""
        return self._e2e.dropped

    @property
    def online(self):
        return self._conn is not None and self._conn.established and not self._conn.closed

    def queued(self):
        return len(self._outbox)

    # -- application ------------------------------------------------------------
    def send(self, peer, data):
        """Queue Data for a peer; returns its msg_id, reported later by a Delivery event."""
        return self._queue(peer, codec.DATA, (data,))

    def ping(self, peer, data=b""):
        if len(data) > codec.MAX_PING:
            raise ValueError("a Ping carries at most %d bytes" % codec.MAX_PING)
        return self._queue(peer, codec.PING, (data,))

    def send_service(self, peer, service, data):
        """Queue a Service packet (a system service such as codec.SERVICE_UPDATE)."""
        return self._queue(peer, codec.SERVICE, (service, data))

    def forget_peer(self, peer):
        """Unpin a peer, so that its next key is trusted: the user's explicit re-pin."""
        self._unpin(peer)
        if peer in self._asked:
            self._asked.remove(peer)

    def pins(self):
        """The pinned peer keys, (peer id, key) pairs, oldest first: what the shell saves."""
        return [(peer, self._pins[peer]) for peer in self._pin_order]

    def take_events(self):
        events = self._events
        self._events = []
        return events

    # -- the connection ---------------------------------------------------------
    def attach(self, conn):
        self._conn = conn
        self._asked = []

    def handle(self, event):
        """Process one connection event; returns the application events so far."""
        if isinstance(event, ProxyPassPacket):
            self._receive(event.peer, event.inner, may_wait=True)
        elif isinstance(event, DeliveryPacket):
            self._events.append(Delivery(event.msg_id, event.status))
        elif isinstance(event, PeerKeyPacket):
            self._learn_key(event.peer, event.key)
        elif isinstance(event, Welcomed):
            self.max_inner = self._conn.max_inner
            self._flush()
        elif isinstance(event, Closed):
            self._conn = None
        return self.take_events()

    # -- internals --------------------------------------------------------------
    def _queue(self, peer, dpacket_id, fields):
        """fields: the packet's, the last one its data (a rest field), each before it a u8."""
        size = len(fields) - 1 + len(fields[-1])
        if size + _E2E_OVERHEAD > self.max_inner:
            raise ValueError("message of %d bytes is over this realm's limit of %d" % (
                size, self.max_inner - _E2E_OVERHEAD))
        if len(self._outbox) >= self._max_queue:
            raise SendQueueFull("send queue full (%d messages)" % self._max_queue)
        self._last_id = self._last_id % _MAX_MSG_ID + 1
        item = [peer, self._last_id, dpacket_id, fields]
        self._outbox.append(item)
        self._flush()  # sent at once, it was sealed from the caller's data
        if self._outbox and self._outbox[-1] is item:  # waiting: a copy of its own
            try:
                item[3] = fields[:-1] + (bytes(fields[-1]),)
            except MemoryError:  # not queued: the caller may try again later
                self._outbox.pop()
                raise
        return self._last_id

    def _ready(self, peer):
        """True when peer's keys are derived; asks the realm for its key otherwise."""
        if self._e2e.has_peer(peer):
            return True
        key = self._pins.get(peer)
        if key is not None:
            self._e2e.add_peer(peer, key)  # one X25519 multiplication, then cached
            return True
        self._ask(peer)
        return False

    def _ask(self, peer):
        if self.online and peer not in self._asked:
            self._asked.append(peer)
            self._conn.request_peer_key(peer)

    def _flush(self, only=None):
        if not self.online:
            return
        for item in list(self._outbox):
            peer = item[0]
            if (only is None or peer == only) and self._ready(peer):
                # Off the queue before it goes: if sending fails (MemoryError, say), the
                # message is not sent twice at the next flush.
                self._outbox.remove(item)
                fields = item[3]
                if len(fields[-1]) > _IN_PLACE:  # built where it is sent from: no copy per layer
                    from shared import sending
                    sending.send(self._conn, self._e2e, peer, item[1], item[2], fields)
                else:
                    self._conn.send_proxy(peer, item[1], self._e2e.seal(peer, item[2], *fields))

    def _receive(self, peer, inner, may_wait):
        if not self._ready(peer):
            if may_wait:
                if len(self._inbox) >= self._max_queue:
                    self._inbox.pop(0)
                    self._e2e.dropped += 1
                if not isinstance(inner, bytes):
                    try:  # its own copy, opened in place later: a view's buffer is reused
                        inner = bytearray(inner)
                    except MemoryError:  # no room in a device's heap: not the link's fault
                        self._e2e.dropped += 1
                        return
                self._inbox.append([peer, inner])
            else:
                self._e2e.dropped += 1
            return
        try:
            dpacket_id, fields = self._e2e.open(peer, inner)
        except ProtocolError:
            # Dropped and counted, never answered (section 8). Asking the realm once for
            # the peer's key lets a changed key be reported instead of failing silently.
            self._ask(peer)
            return
        # fields[0] is a view of the link's receive buffer if inner was: a Message hands
        # it on as it is, for the shell to copy once if its application keeps it; the
        # rest is copied here (docs/CORE_API.md, "Received packets are views").
        if dpacket_id == codec.DATA:
            self._events.append(Message(peer, fields[0]))
        elif dpacket_id == codec.PING:
            if self.online:
                self._conn.send_proxy(peer, 0, self._e2e.seal(peer, codec.PONG, fields[0]))
        elif dpacket_id == codec.PONG:
            self._events.append(Pong(peer, bytes(fields[0])))
        elif fields[0] in self.services:  # codec.SERVICE: (service, data)
            self.services[fields[0]](peer, bytes(fields[1]))
        else:
            self.services_dropped += 1

    def _learn_key(self, peer, key):
        if peer in self._asked:
            self._asked.remove(peer)  # answered: a later failure to open may ask again
        pinned = self._pins.get(peer)
        if key is None or (pinned is not None and key != pinned):
            status = codec.UNKNOWN_TARGET
            if key is not None:
                self._events.append(PeerKeyChanged(peer, pinned, key))
                self._asked.append(peer)  # reported once per connection, not per packet
                status = codec.STATUS_DENIED
            self._fail_waiting(peer, status)
            return
        if pinned is None:
            self._pin(peer, key)
            self._events.append(PeerPinned(peer, key))
        self._flush(peer)
        held, self._inbox = _split(self._inbox, peer)
        for item in held:
            self._receive(peer, item[1], may_wait=False)

    def _pin(self, peer, key):
        self._unpin(peer)
        if len(self._pin_order) >= MAX_PEERS:
            self._unpin(self._pin_order[0])
        self._pins[peer] = key
        self._pin_order.append(peer)

    def _unpin(self, peer):
        """Forget a pin and the end-to-end keys derived from it (only pinned peers have any)."""
        if peer in self._pins:
            del self._pins[peer]
            self._pin_order.remove(peer)
        self._e2e.forget_peer(peer)

    def _fail_waiting(self, peer, status):
        failed, self._outbox = _split(self._outbox, peer)
        for item in failed:
            self._events.append(Delivery(item[1], status))
        dropped, self._inbox = _split(self._inbox, peer)
        self._e2e.dropped += len(dropped)


def _split(items, peer):
    """-> (the items for peer, the others): [peer, ...] lists, in their order."""
    mine = []
    others = []
    for item in items:
        if item[0] == peer:
            mine.append(item)
        else:
            others.append(item)
    return mine, others
