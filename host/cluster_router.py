"""Routing across the nodes of a cluster: the router of `realm serve --cluster`.

It answers the calls of host/router.py. A packet whose target has a session on this node
is handed over at once, as on one node; one whose target is held by another node is
published to that node (`P.node.NAME`) and answered when that node answers; one for an
offline target is stored in JetStream (host/cluster.py). What crosses nodes is (sender,
target, msg_id, inner): the realm never opens `inner`.

Order. A target's stored packets are handed over before any live packet: while they are
read, live ones wait (as on one node). A node that stored packets for a target tells each
packet it forwards later the stream sequence of the last one it stored (`after`): the
holding node first reads the queue up to there. A node that stored a packet says so on
`P.stored.ID`, so the node holding the target reads its queue at once.

Fencing. A login claims the session in KV; a node whose session has an older revision
than the device's current claim closes it (SESSION_REPLACED), so a stale node never wins.
"""
import asyncio
import functools
import struct
import time
import uuid

from nats.errors import Error as NatsError

from shared import codec
from shared.errors import DENIED, SESSION_REPLACED
from host import logs
from host.registry import id_text
from host.router import LocalRouter
from host.store import Unavailable

log = logs.get()

FORWARD_TIMEOUT_S = 3.0  # no answer from the holding node: UNAVAILABLE
_FORWARD = struct.Struct(">16s16sIQ")  # sender, target, msg_id, after; then inner


class _Remote:
    """The origin of a packet another node forwarded: the answer goes back there."""
    __slots__ = ("router", "reply")

    def __init__(self, router, reply):
        self.router = router
        self.reply = reply

    def delivered(self, msg_id, status):
        self.router._publish(self.reply, bytes((status,)))


class ClusterRouter(LocalRouter):
    def __init__(self, realm, cluster):
        LocalRouter.__init__(self, realm, cluster)
        self.cluster = cluster
        self.claims = {}     # raw id -> the revision of this node's claim on its session
        self._drained = {}   # raw id -> last queue sequence handed to its session here
        self._again = set()  # raw ids whose queue must be read once more after this read
        self._waiting = {}   # device -> packets waiting for this node's store to it to end
        self._pending = {}   # token -> (origin, msg_id, sender, target, inner, deadline)
        self._token = 0
        self._outbox = []    # (subject, payload, reply), published in this order
        self._publishing = False
        self._subs = []
        cluster.on_device_removed = self._device_removed
        cluster.on_session_claimed = self._session_claimed
        cluster.on_reconnected = self._reconnected

    async def start(self):
        nc, prefix, node = self.cluster.nc, self.cluster.prefix, self.cluster.node
        self._subs = [await nc.subscribe("%s.node.%s" % (prefix, node), cb=self._forwarded),
                      await nc.subscribe("%s.reply.%s.*" % (prefix, node), cb=self._answered),
                      await nc.subscribe("%s.stored.*" % prefix, cb=self._stored_elsewhere)]
        self.realm.spawn(self._expire_forwards())

    async def stop(self):
        """Take no more packets from other nodes: they store them from now on."""
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except NatsError:
                pass
        for origin, msg_id, *_ in self._pending.values():
            origin.delivered(msg_id, codec.UNAVAILABLE)
        self._pending.clear()

    # -- sessions ----------------------------------------------------------------------
    async def open_session(self, link, welcome):
        revision = await self.cluster.claim(link.device)
        if link.ended or link.conn.closed:  # it left while the claim was made
            self.cluster.release_soon(link.device, revision, self.realm.wall_clock())
            return
        device_id = link.conn.device_id
        self._replace(link)
        self.claims[device_id] = revision
        welcome()
        self._start_hand_over(device_id, link.device)

    def close_session(self, link):
        device_id = link.conn.device_id
        if self.sessions.get(device_id) is link:
            del self.sessions[device_id]
            self._drained.pop(device_id, None)
            self.cluster.release_soon(link.device, self.claims.pop(device_id),
                                      self.realm.wall_clock())

    def _session_claimed(self, device, node, revision):
        """The devices' sessions in KV changed: a newer claim elsewhere ends ours."""
        device_id = uuid.UUID(device).bytes
        link = self.sessions.get(device_id)
        if link is not None and node != self.cluster.node and \
                revision > self.claims.get(device_id, 0):
            link.conn.close(SESSION_REPLACED, "the device logged in on another realm node")
            link.flush()

    def _device_removed(self, device):
        link = self.sessions.get(uuid.UUID(device).bytes)
        if link is not None:
            link.conn.close(DENIED, "device removed from the realm")
            link.flush()

    async def _reconnected(self):
        """NATS is back: claim again the sessions nobody else took meanwhile."""
        for device_id, link in list(self.sessions.items()):
            if self.cluster.owner(link.device) is not None:
                continue  # still ours, or closed by _session_claimed as replaced
            try:
                self.claims[device_id] = await self.cluster.claim(link.device, only_new=True)
            except Unavailable:
                link.conn.close(SESSION_REPLACED, "the device logged in on another realm node")
                link.flush()
                continue
            self._start_hand_over(device_id, link.device)

    # -- the stored packets --------------------------------------------------------------
    def _start_hand_over(self, device_id, device):
        if device_id in self._held:
            self._again.add(device_id)
            return
        self._held[device_id] = []
        self.realm.spawn(self._hand_over_stored(device_id, device))

    async def _hand_over_stored(self, device_id, device):
        try:
            while True:
                self._again.discard(device_id)
                await self._read_stored(device_id, device)
                if device_id not in self._again:
                    break
        except Unavailable:
            pass  # said once when NATS went away; read again when it is back
        except (NatsError, asyncio.TimeoutError) as e:
            log.warning("cluster: cannot read the stored packets of %s: %s", device, e)
        self._again.discard(device_id)
        held = self._held.pop(device_id)
        for sender, msg_id, inner, origin in held:
            self._route(sender, device_id, msg_id, inner, origin, isinstance(origin, _Remote))

    async def _read_stored(self, device_id, device):
        seq = self._drained.get(device_id, 0)
        while device_id in self.sessions:
            item = await self.cluster.read_queue(device, seq)
            link = self.sessions.get(device_id)
            if item is None or link is None:
                break
            if len(item.inner) <= link.conn.max_inner:
                link.conn.send_proxy(item.sender, item.msg_id, item.inner)
                self.realm.stats.flushed += 1
                link.flush()
            else:
                log.warning("dropped a stored packet for %s: larger than its max_packet", device)
            seq = self._drained[device_id] = item.seq
            # kept in JetStream until the target has it: a link cut loses none
            link.when_received(functools.partial(self.cluster.drop_queue_soon, device, seq))

    async def _stored_elsewhere(self, msg):
        device = msg.subject.rsplit(".", 1)[1]
        try:
            device_id = uuid.UUID(device).bytes
        except ValueError:
            return
        if device_id in self.sessions:
            self._start_hand_over(device_id, device)

    # -- routing -----------------------------------------------------------------------
    def relay(self, origin, peer, msg_id, inner):
        self._route(origin.conn.device_id, peer, msg_id, inner, origin, False)

    def _route(self, sender, target, msg_id, inner, origin, forwarded):
        held = self._held.get(target)
        if held is not None:
            held.append((sender, msg_id, inner, origin))
            return
        link = self.sessions.get(target)
        if link is not None:
            origin.delivered(msg_id, self._send(link, sender, msg_id, inner))
            self.realm.flush_soon(link)
            return
        device = id_text(target)
        node = None if forwarded else self.cluster.owner(device)  # never forwarded twice
        if node is None or node == self.cluster.node:
            self._store(device, sender, msg_id, inner, origin, look=not forwarded)
        elif device in self._waiting or self.cluster.storing(device) is not None:
            self._wait_for_store(device, (sender, target, msg_id, inner, origin))
        else:
            self._forward(node, device, sender, target, msg_id, inner, origin)

    def _store(self, device, sender, msg_id, inner, origin, look=True):
        """Store for a target whose session this node does not know; with `look`, one
        claimed elsewhere a moment ago (not yet in the mirror) gets the packet instead."""
        stored = self.cluster.enqueue(device, sender, msg_id, inner, self.realm.wall_clock(), look)
        self.realm.spawn(self._answer_stored(
            self._unless_held(stored, device, sender, msg_id, inner, origin), device, msg_id,
            origin))

    async def _unless_held(self, stored, device, sender, msg_id, inner, origin):
        result = await stored
        if isinstance(result, str):  # the node holding it: forwarded at once, in order
            self._forward(result, device, sender, uuid.UUID(device).bytes, msg_id, inner,
                          origin)
            return None
        return result

    def _wait_for_store(self, device, packet):
        """This node is storing a packet for `device`: the ones after it wait their turn."""
        waiting = self._waiting.get(device)
        if waiting is None:
            waiting = self._waiting[device] = []
            self.realm.spawn(self._after_store(device))
        waiting.append(packet)

    async def _after_store(self, device):
        while True:
            storing = self.cluster.storing(device)
            if storing is None:
                break
            await asyncio.shield(storing)
        for sender, target, msg_id, inner, origin in self._waiting.pop(device):
            self._route(sender, target, msg_id, inner, origin, False)

    def _forward(self, node, device, sender, target, msg_id, inner, origin):
        if not self.cluster.connected:
            origin.delivered(msg_id, codec.UNAVAILABLE)
            return
        last = self.cluster.last_stored.get(device)
        self._token += 1
        self._pending[self._token] = (origin, msg_id, sender, target, inner,
                                      time.monotonic() + FORWARD_TIMEOUT_S)
        prefix = self.cluster.prefix
        self._publish("%s.node.%s" % (prefix, node),
                      _FORWARD.pack(sender, target, msg_id, last[0] if last else 0) + inner,
                      "%s.reply.%s.%d" % (prefix, self.cluster.node, self._token))

    async def _forwarded(self, msg):
        """A packet another node forwarded to a session of this node."""
        data = msg.data
        if len(data) < _FORWARD.size or not msg.reply:
            return
        sender, target, msg_id, after = _FORWARD.unpack_from(data)
        link = self.sessions.get(target)
        if link is not None and after > self._drained.get(target, 0):
            self._start_hand_over(target, link.device)  # its earlier stored ones first
        self._route(sender, target, msg_id, data[_FORWARD.size:], _Remote(self, msg.reply), True)

    async def _answered(self, msg):
        entry = self._pending.pop(int(msg.subject.rsplit(".", 1)[1]), None)
        if entry is None:
            return  # answered UNAVAILABLE already
        origin, msg_id, sender, target, inner, _deadline = entry
        if msg.headers and msg.headers.get("Status") == "503":
            # The holding node is gone (stopped, killed): store it for the device's return.
            self._store(id_text(target), sender, msg_id, inner, origin, look=False)
        elif msg.data:
            origin.delivered(msg_id, msg.data[0])

    async def _expire_forwards(self):
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            for token, entry in list(self._pending.items()):
                if entry[5] < now:
                    del self._pending[token]
                    entry[0].delivered(entry[1], codec.UNAVAILABLE)

    def _publish(self, subject, payload, reply=""):
        self._outbox.append((subject, payload, reply))
        if not self._publishing:
            self._publishing = True
            self.realm.spawn(self._publish_all())

    async def _publish_all(self):
        """One task publishes, so packets leave in the order they were routed."""
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                for subject, payload, reply in batch:
                    await self.cluster.nc.publish(subject, payload, reply=reply)
        except NatsError as e:
            log.warning("cluster: cannot publish: %s", e)
            self._outbox.clear()
        finally:
            self._publishing = False
