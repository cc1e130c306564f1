"""Session ownership and routing: which link holds each device's session, and where a
ProxyPass goes.

The server asks a router these things; `LocalRouter` (below: one process, a dict) and the
cluster's router on NATS (`host/cluster_router.py`) answer them the same way:

    await start() / await stop()       before listening / once no longer listening
    await open_session(link, welcome)  make `link` the device's one session: close an
                                       older one with SESSION_REPLACED, call `welcome()`
                                       (it sends Welcome), then hand over the stored
                                       packets before any live one
    close_session(link)                the link ended
    relay(origin, peer, msg_id, inner) deliver or store a ProxyPass from the link `origin`;
                                       `origin.delivered(msg_id, status)` is called once
                                       with its Delivery status, possibly later
    relay_body(origin, body)           the same for a ProxyPass body as the core opened it
                                       (LocalRouter's serves both routers)
    links()                            the local session links
    len(router)                        how many local sessions

Routing never waits on the loop: a packet for an offline target is stored by the store's
worker and answered when the store says it is durable.
"""
import functools
import logging

from shared import codec
from shared.errors import SESSION_REPLACED
from host import logs
from host.registry import id_text
from host.store import Unavailable

log = logs.get()

_NO_REPORT = bytes(4)  # msg_id 0


class LocalRouter:
    def __init__(self, realm, store):
        self.realm = realm
        self.store = store
        self.sessions = {}  # raw 16-byte device id -> Link: the relay routes without id_text
        # Devices whose stored packets are being fetched: the live packets that arrive
        # meanwhile wait here, (sender, msg_id, inner, origin) in arrival order.
        self._held = {}
        self._received = {}  # device -> last seq of its stored packets known received

    def __len__(self):
        return len(self.sessions)

    def links(self):
        return list(self.sessions.values())

    async def start(self):
        pass

    async def stop(self):
        pass

    async def open_session(self, link, welcome):
        device_id = link.conn.device_id
        self._replace(link)
        welcome()
        self.store.set_online(link.device, True, self.realm.wall_clock())
        if device_id not in self._held:  # else the running hand-over reaches this link
            await self._hand_over_stored(device_id, link.device)

    async def _hand_over_stored(self, device_id, device):
        held = self._held[device_id] = []
        try:
            items = await self.store.stored(device, self.realm.wall_clock())
        except Exception:
            log.exception("cannot read the stored packets of %s", device)
            items = []
        del self._held[device_id]
        link = self.sessions.get(device_id)
        if link is None:  # it left meanwhile: the stored stay, the held are stored after
            for sender, msg_id, inner, origin in held:
                self._store(device, sender, msg_id, inner, origin)
            return
        for item in items:  # each kept until the target has it: a link cut loses none
            if len(item.inner) <= link.conn.max_inner:
                link.conn.send_proxy(item.sender, item.msg_id, item.inner)
                self.realm.stats.flushed += 1
                link.flush()
            else:
                link.log.line(logging.WARNING, "dropped a stored packet for %s: larger than "
                              "its max_packet", device)
            link.when_received(functools.partial(self._received_stored, device, item.seq))
        for sender, msg_id, inner, origin in held:
            origin.delivered(msg_id, self._send(link, sender, msg_id, inner))
        link.flush()

    def _received_stored(self, device, seq):
        """The target has its stored packets up to `seq`: forget them, in one registry
        call for all those found received at one look."""
        pending = self._received.get(device)
        self._received[device] = seq if pending is None else max(pending, seq)
        if pending is None:
            self.realm.loop.call_soon(self._forget_received, device)

    def _forget_received(self, device):
        self.store.forget_stored(device, self._received.pop(device))

    def _replace(self, link):
        """`link` holds its device's session from now on; an older one here is closed."""
        old = self.sessions.get(link.conn.device_id)
        if old is not None:
            old.conn.close(SESSION_REPLACED, "the device logged in on a newer connection")
            old.flush()
        self.sessions[link.conn.device_id] = link

    def close_session(self, link):
        if self.sessions.get(link.conn.device_id) is link:
            del self.sessions[link.conn.device_id]
            self.store.set_online(link.device, False, self.realm.wall_clock())

    def relay(self, origin, peer, msg_id, inner):
        sender = origin.conn.device_id
        held = self._held.get(peer)
        if held is not None:
            held.append((sender, msg_id, inner, origin))
            return
        link = self.sessions.get(peer)
        if link is None:
            self._store(id_text(peer), sender, msg_id, inner, origin)
        else:
            origin.delivered(msg_id, self._send(link, sender, msg_id, inner))
            self.realm.flush_soon(link)

    def relay_body(self, origin, body):
        """relay() of a ProxyPass as RealmConnection.receive_relay() opened it (peer:16 |
        msg_id:u32 | inner): the relay's hot path. A target with a session here gets it
        sealed at once; anything else goes the way of relay()."""
        link = None if self._held else self.sessions.get(body[:16])
        if link is None:
            self.relay(origin, body[:16], int.from_bytes(body[16:20], "big"), body[20:])
            return
        status = link.conn.relay_body(origin.conn.device_id, body)
        if body[16:20] == _NO_REPORT:  # msg_id 0: counted, no Delivery asked for
            self.realm.stats.relayed[status] += 1
        else:
            origin.delivered(int.from_bytes(body[16:20], "big"), status)
        self.realm.flush_soon(link)

    def _send(self, link, sender, msg_id, inner):
        if len(inner) > link.conn.max_inner:
            return codec.STATUS_TOO_LARGE
        link.conn.send_proxy(sender, msg_id, inner)
        return codec.DELIVERED

    def _store(self, target, sender, msg_id, inner, origin):
        """Store for an offline target; `origin` (None: nobody waits) hears the status."""
        future = self.store.enqueue(target, sender, msg_id, inner, self.realm.wall_clock())
        self.realm.spawn(self._answer_stored(future, target, msg_id, origin))

    async def _answer_stored(self, future, target, msg_id, origin):
        try:
            status = await future
        except Exception as e:  # not stored: never answered QUEUED
            if not isinstance(e, Unavailable):
                log.warning("cannot store a packet for %s: %s", target, e)
            status = codec.UNAVAILABLE
        if origin is not None and status is not None:  # None: sent on, answered from there
            origin.delivered(msg_id, status)
