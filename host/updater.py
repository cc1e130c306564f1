"""The updater: a host-side device that pushes a bundle to devices end to end
(`realm update push`) and asks them what they run (`realm update status`).

The devices pull: the updater offers the bundle, then answers each Get with the Chunk
asked for, so a device paces its own transfer and resumes by asking from where it is.
The realm only relays; it can neither read nor forge what goes through.
"""
import asyncio
import json
import struct
import sys
import time
import uuid

from shared import bundle as bundle_layout, codec, update
from shared.connection import Reconnect, is_refusal
from shared.events import Closed, Delivery
from shared.update import UpdateError

REASONS = ("", "NOT_UPDATER", "NO_RELEASE_KEYS", "UNSIGNED", "UNKNOWN_KEY", "BAD_SIGNATURE",
           "NOT_NEWER", "WRONG_TARGET", "BAD_HASH", "BAD_BUNDLE", "NO_SPACE", "FAILED",
           "START_FAILED", "BUSY")  # Result.reason, by code (shared/update.py)

# Target states; the first five are final.
UPDATED, CURRENT, REFUSED, ROLLED_BACK, UNREACHABLE = (
    "updated", "already current", "refused", "rolled back", "unreachable")
WAITING, OFFERED, OFFLINE, SENDING, RESTARTING = (
    "waiting", "offered", "offline, queued", "sending", "restarting")
FINAL = (UPDATED, CURRENT, REFUSED, ROLLED_BACK, UNREACHABLE)
_RESULTS = {update.UPDATED: UPDATED, update.CURRENT: CURRENT, update.REFUSED: REFUSED,
            update.ROLLED_BACK: ROLLED_BACK}
RETRY_S = 20.0  # a device in transfer silent this long is offered the bundle again


# -- the updater's side of the messages (the device's is shared/update.py) -----------
def offer(update_id, size, header_size, version):
    return (bytes((update.OFFER,)) + update_id + struct.pack(">II", size, header_size)
            + update.str16(version))


def chunk(tag, offset, data):
    return struct.pack(">BII", update.CHUNK, tag, offset) + data


def query():
    return bytes((update.QUERY,))


def decode(data):
    """(type, fields) of a message from a device: Get, Result or Info."""
    try:
        kind = data[0]
        if kind == update.GET and len(data) == 11:
            return kind, struct.unpack_from(">IIH", data, 1)
        if kind == update.RESULT and len(data) >= 37:
            version = update.text(data, 35, False)
            return kind, (bytes(data[1:33]), data[33], data[34], version,
                          update.text(data, 37 + len(version.encode()), True))
        if kind == update.INFO:
            return kind, (update.text(data, 1, True),)
    except (IndexError, ValueError, UnicodeError, struct.error):
        pass
    raise UpdateError(update.BAD_BUNDLE, "malformed update message")


class Target:
    def __init__(self, device_id, name=None):
        self.id = device_id  # 16 bytes
        self.text = str(uuid.UUID(bytes=device_id))
        self.name = name or self.text[:8]
        self.state = WAITING
        self.detail = ""
        self.reason = None
        self.version = None
        self.sent = 0  # Chunk data bytes sent, resends included
        self.started = None
        self.last = 0.0
        self.offer_id = None

    @property
    def final(self):
        return self.state in FINAL

    def row(self, bundle_size):
        return {"id": self.text, "name": self.name, "state": self.state,
                "reason": self.reason, "detail": self.detail, "version": self.version,
                "sent": self.sent, "bundle_size": bundle_size}


class Progress:
    """One line per device: a bar redrawn in place on a terminal; elsewhere (a log, a
    pipe) a line whenever a device's state changes or it passes another quarter."""

    def __init__(self, targets, size, out=sys.stdout):
        self.targets = targets
        self.size = size
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self._said = {}

    def line(self, t):
        done = min(t.sent, self.size)
        if t.state == SENDING or (t.state == OFFERED and t.sent):
            took = max(time.monotonic() - (t.started or time.monotonic()), 0.001)
            width = 24
            fill = width * done // self.size if self.size else width
            return "%-14s [%s%s] %3d%% %7.1f KB %6.1f KB/s" % (
                t.name[:14], "#" * fill, "." * (width - fill), 100 * done // max(self.size, 1),
                done / 1024.0, done / 1024.0 / took)
        return "%-14s %s%s" % (t.name[:14], t.state, ": " + t.detail if t.detail else "")

    def show(self):
        if self.tty:
            if self._drawn:
                self.out.write("\x1b[%dA" % self._drawn)
            for t in self.targets:
                self.out.write("\x1b[2K" + self.line(t) + "\n")
            self._drawn = len(self.targets)
        else:
            for t in self.targets:
                quarter = 4 * min(t.sent, self.size) // max(self.size, 1)
                key = (t.state, quarter if t.state == SENDING else 0, t.detail)
                if self._said.get(t.text) != key:
                    self._said[t.text] = key
                    self.out.write(self.line(t) + "\n")
        self.out.flush()


class ServiceMessage:
    """A Service packet for the update service, from a device."""

    def __init__(self, peer, data):
        self.peer, self.service, self.data = peer, codec.SERVICE_UPDATE, data


class Updater:
    """Drives one HostDevice made with services={codec.SERVICE_UPDATE: updater.received}
    (see host/update_cli.py)."""

    def __init__(self, device, connect, log=None):
        self.device = device
        self.connect = connect  # coroutine function: connects, returns the Welcome
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.bundle = None
        self._reconnect = Reconnect()

    async def _online(self):
        """Connect if offline: True once connected again. The reconnect policy is the
        devices' (shared/connection.py); a refusal ends the command, as in RealmClient."""
        if self.device.endpoint.online:
            return False
        try:
            await self.connect()
        except Exception as e:  # the link, a timeout, the realm's answer: keep trying
            if is_refusal(e):
                raise
            delay_s = self._reconnect.next_delay_ms(e) / 1000
            self.log("realm: %s; connecting again in %.0f s" % (e, delay_s))
            await asyncio.sleep(delay_s)
            return False
        self._reconnect.connected()
        return True

    def received(self, peer, data):
        """The endpoint's handler for update Service packets: queued with the device's
        own events, so that the loop waiting for the next one wakes at once (a Get is
        answered in the same turn, not at the wait's timeout)."""
        self.device._queue.put_nowait(ServiceMessage(peer, data))

    async def _events(self, timeout):
        """The events that came within `timeout` seconds (at least one wait)."""
        events = []
        try:
            events.append(await self.device.next_event(timeout))
            while True:
                events.append(self.device._queue.get_nowait())
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
            pass
        return events

    # -- push ----------------------------------------------------------------------
    async def push(self, data, header_size, targets, parallel=4, wait_s=600.0,
                   progress=None):
        """Offer the bundle `data` to every target, `parallel` at a time, until each one
        is final or wait_s passed. -> targets (their state says what became of each)."""
        self.bundle = data
        self.header_size = header_size
        self.update_id = bundle_layout.update_id(data[:header_size])
        self.tag = update.tag_of(self.update_id)
        manifest = bundle_layout.parse_manifest(bundle_layout.split_header(data[:header_size])[2])
        self.version = manifest["version"]
        by_id = {t.id: t for t in targets}
        deadline = time.monotonic() + wait_s
        while not all(t.final for t in targets) and time.monotonic() < deadline:
            reconnected = await self._online()
            if not self.device.endpoint.online:
                continue
            now = time.monotonic()
            if reconnected:  # what was offered over the old connection may be lost
                for t in targets:
                    if t.state in (OFFERED, SENDING):
                        t.state = WAITING
            active = [t for t in targets if t.state in (OFFERED, SENDING, RESTARTING)]
            for t in targets:
                if t.state == WAITING and len(active) < parallel:
                    self._offer(t)
                    active.append(t)
                elif t.state in (OFFERED, SENDING) and now - t.last > RETRY_S:
                    self._offer(t)  # silent: offer again, the device goes on from its flash
            for event in await self._events(0.5):
                self._handle(event, by_id)
            if progress is not None:
                progress.show()
        return targets

    def _offer(self, t):
        t.state = OFFERED
        t.last = time.monotonic()
        t.offer_id = self.device.send_service(t.id, codec.SERVICE_UPDATE, offer(
            self.update_id, len(self.bundle), self.header_size, self.version))

    def _handle(self, event, by_id):
        if isinstance(event, ServiceMessage):
            t = by_id.get(event.peer)
            if t is None or event.service != codec.SERVICE_UPDATE:
                return
            try:
                kind, fields = decode(event.data)
            except UpdateError:
                return
            t.last = time.monotonic()
            if kind == update.GET and not t.final:  # (a late one, after its answer: no more)
                self._chunk(t, *fields)
            elif kind == update.RESULT:
                self._result(t, *fields)
        elif isinstance(event, Delivery):
            for t in by_id.values():
                if t.offer_id == event.msg_id and not t.final:
                    self._offer_delivery(t, event.status)
        elif isinstance(event, Closed):
            self.log("realm: connection lost (%s)" % event.error)

    def _chunk(self, t, tag, offset, length):
        if tag != self.tag or offset + length > len(self.bundle):
            return  # another bundle's, or past the end: nothing to send
        if t.state in (WAITING, OFFERED, OFFLINE):
            t.state = SENDING
            t.detail = ""
        if t.started is None:
            t.started = time.monotonic()
        try:
            self.device.send_service(t.id, codec.SERVICE_UPDATE,
                                     chunk(tag, offset, self.bundle[offset:offset + length]))
        except ValueError:
            return  # over this realm's limit: the device asked for too much
        t.sent += length

    def _result(self, t, update_id, outcome, reason, version, detail):
        t.detail = detail
        t.version = version or t.version
        if outcome == update.INSTALLED:
            t.state = RESTARTING
        elif outcome in _RESULTS:
            t.state = _RESULTS[outcome]
            t.reason = (REASONS[reason] if reason < len(REASONS) else "#%d" % reason) \
                if reason else None

    def _offer_delivery(self, t, status):
        if status == codec.QUEUED:
            t.state = OFFLINE
            t.detail = "the realm delivers the offer when it comes back"
        elif status in (codec.UNKNOWN_TARGET, codec.STATUS_DENIED, codec.STATUS_TOO_LARGE):
            t.state = UNREACHABLE
            t.reason = codec.status_name(status)
            t.detail = {codec.UNKNOWN_TARGET: "no such device, or it never logged in",
                        codec.STATUS_DENIED: "the realm refuses to relay to it",
                        codec.STATUS_TOO_LARGE: "the offer is over its max_packet"}[status]
        elif status != codec.DELIVERED:  # QUEUE_FULL, UNAVAILABLE...: offer again later
            t.state = WAITING
            t.detail = "realm: %s, trying again" % codec.status_name(status)

    # -- status --------------------------------------------------------------------
    async def query(self, targets, wait_s=10.0):
        """Ask each target what it runs. -> {id: info dict} of those that answered."""
        answers = {}
        deadline = time.monotonic() + wait_s
        asked = False
        while len(answers) < len(targets) and time.monotonic() < deadline:
            reconnected = await self._online()
            if not self.device.endpoint.online:
                continue
            if reconnected or not asked:
                for t in targets:
                    self.device.send_service(t.id, codec.SERVICE_UPDATE, query())
                asked = True
            for event in await self._events(0.5):
                if isinstance(event, ServiceMessage) and event.service == codec.SERVICE_UPDATE:
                    try:
                        kind, fields = decode(event.data)
                    except UpdateError:
                        continue
                    if kind == update.INFO:
                        try:
                            answers[event.peer] = json.loads(fields[0])
                        except ValueError:
                            pass
        return answers
