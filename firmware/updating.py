# The update service, device side (docs/UPDATES.md): what both of its halves share.
# The runtime loads a half only when there is work for it, and it unloads itself when
# idle again, so an idle device pays nothing for updates:
#   firmware/update_agent.py  answers offers (an accepted one restarts the device to fetch
#                             it): beside the app, or after a restart without it when the
#                             app left it no room (the offer kept on flash);
#   firmware/update_fetch.py  after that restart, without the app, so the transfer has
#                             the heap: pulls the bundle into the other slot, installs it.
# (firmware/trial.py, beside the app, confirms a version on trial or reports a rollback;
# firmware/update_query.py answers a Query, loaded alone by the stand-in when no half is.)
import asyncio
import hashlib
import os
import struct

from shared import codec, update
from shared.compat import const
from shared.events import Delivery
from shared.update import UpdateError
from firmware.slotfiles import read_json, write_json
from firmware.store import makedirs

TICK_MS = const(500)
# Before a restart: the last answer goes out and the realm has it (its Delivery), for this
# long at most. The reset of a board drops what its link had not sent yet.
_SEND_MS = const(3000)
_POLL_MS = const(20)
_BUF = const(1024)
HEADER_FIXED = const(102)  # shared/bundle.py: the header before the manifest
# The manifest's files as fixed records on flash (slot/index), written when the header is
# checked: path (UTF-8, zero-padded) | size:u32 | offset:u32 | sha256:32
INDEX_PATH = const(88)
INDEX_RECORD = const(128)
IMAGE_STATE = const("/image.json")  # in the slots folder: firmware/update_image.py
# in the slots folder: the update in progress, or its outcome to report (the first stage,
# firmware/main.py, names it itself: it imports nothing of the runtime)
UPDATE_STATE = const("/update.json")
# in the slots folder: peer:16 | an Offer's Service data, kept by firmware/launch.py
KEPT_OFFER = const("/offer.service")


class UpdateService:
    def __init__(self, listener):
        self.listener = listener  # firmware/launch.py's Updates, which loaded this half
        self.rt = runtime = listener.runtime
        boot = runtime.boot
        self.slots = boot["slots"]
        self.slot = boot["slot"]  # the running slot
        self.pending_path = self.slots + UPDATE_STATE
        self.pending = read_json(self.pending_path)  # the update in progress, or to report
        self.id = None  # the update being fetched
        self.restarting = False
        self.answer = None  # (msg_id, ms sent) of the last answer until the realm has it
        self.task = None

    def handle(self, peer, data):
        try:
            kind, fields = update.decode(data)
        except UpdateError:
            return  # dropped, like any inner packet that makes no sense
        if kind == update.OFFER and self.restarting:
            # Its result is on its way out (installed: the trial's confirmation or rollback
            # answers next): taken as a new offer, it would unmake the update before the
            # restart. The updater offers again.
            return
        try:
            try:
                if kind == update.OFFER:
                    self._offer(peer, *fields)
                elif kind == update.CHUNK:
                    self._chunk(*fields)
                elif kind == update.QUERY:
                    from firmware.update_query import answer
                    answer(self.rt, peer)
            except Exception as e:  # a refusal, a flash error, no memory: the app runs on
                if isinstance(e, MemoryError) and not self.rt.boot["alone"]:
                    raise  # beside the app: firmware/launch.py has it answered without it
                if kind == update.OFFER:
                    self._refuse(peer, fields[0], fields[3], e)
                elif self.id is not None:
                    self._refuse(self.peer, self.id, self.version, e)
        finally:  # even when the refusal failed too: never stay loaded with nothing to do
            self._start_task()

    def _chunk(self, tag, offset, data):
        pass  # not fetching

    def _recorded_offer(self):
        """The Offer that came while the app left no room for this half (kept on flash by
        firmware/launch.py's Updates before the restart without the app): answered now."""
        path = self.slots + KEPT_OFFER
        try:
            with open(path, "rb") as f:
                kept = f.read()
        except OSError:
            return
        _remove(path)
        self.handle(kept[:16], kept[16:])

    def busy(self):
        return self.restarting

    def step(self, online):
        """Called every TICK_MS while busy()."""

    def event(self, event):
        if isinstance(event, Delivery) and self.answer and event.msg_id == self.answer[0]:
            self.answer = None

    # -- the timer -------------------------------------------------------------------
    def _start_task(self):
        if self.restarting and self.task is not None:
            self.task.cancel()  # restart once the result is out, not at the tick's end
            self.task = None
        if self.task is None:
            self.task = asyncio.create_task(self._tick())

    async def _tick(self):
        while self.busy():
            if not self.restarting:
                await asyncio.sleep_ms(TICK_MS)
            if self.restarting:
                await self._answered()
                self.rt.board.restart()
            self.step(self.rt.endpoint.online)
        self.task = None
        if self.rt.boot["alone"]:  # started without the app for this work: back to it
            await self._answered()
            self.rt.board.restart()
        self.listener.done()

    async def _answered(self):
        """Until the realm has the last answer (its Delivery came), the link is down, or
        _SEND_MS passed since it was sent: a restart ends the link, and what the link had
        not delivered yet with it (a board's reset; a socket closed with bytes unread
        resets the connection). Timed from the answer: a new task for each packet that
        comes meanwhile (_start_task) waits no longer."""
        rt = self.rt
        while self.answer is not None and rt.endpoint.online and \
                rt.now_ms() - self.answer[1] < _SEND_MS:
            await asyncio.sleep_ms(_POLL_MS)

    # -- answers ----------------------------------------------------------------------
    def _refuse(self, peer, uid, version, error):
        error = refusal(error)
        self.rt.log("update %s refused: %s" % (version, error))
        if self.id == uid:  # the transfer ends first: what it held is free for the answer
            self._close()
            self.id = None
            self._set_pending(None)
            _rmtree(self.new)
            self.restarting = self.rt.boot["updating"]  # back to the app
        self._result(peer, uid, update.REFUSED, error.reason, version, str(error))

    def _result(self, peer, uid, outcome, reason, version, detail):
        self.answer = (self._send(peer, update.result(uid, outcome, reason, version, detail)),
                       self.rt.now_ms())

    def _send(self, peer, data):
        msg_id = self.rt.endpoint.send_service(peer, codec.SERVICE_UPDATE, data)
        try:
            self.rt.kick()
        except OSError:  # the link broke: not this update's fault. The runtime's reader
            pass  # ends the session; after the next Welcome the fetcher asks again
        return msg_id

    def _set_pending(self, value):
        self.pending = value
        if value is None:
            _remove(self.pending_path)
        else:
            makedirs(self.slots)
            write_json(self.pending_path, value)

    def _close(self):
        if getattr(self, "file", None) is not None:
            self.file.close()
        self.file = None


def index_entry(record):
    path = bytes(record[:INDEX_PATH])
    size, offset = struct.unpack_from(">II", record, INDEX_PATH)
    return str(path[:path.find(b"\0")] if b"\0" in path else path, "utf-8"), size, \
        bytes(record[INDEX_PATH + 8:]), offset


def refusal(error):
    if isinstance(error, UpdateError):
        return error
    return UpdateError(update.FAILED, "%s on this device: %r" % (
        "out of memory" if isinstance(error, MemoryError) else "failed", error))


# -- files ----------------------------------------------------------------------------
def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return None


def _digest(path, hasher=None, copy_to=None):
    """The SHA-256 of a file (hasher: feed this one instead); copy_to: a file to write
    the bytes to as well."""
    h = hasher or hashlib.sha256()
    buf = bytearray(_BUF)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            if copy_to is not None:
                copy_to.write(view[:n])
    return None if hasher else h.digest()


def _copy_if_same(source, target, size, digest):
    """Copy source to target if it is the manifest's file; True if it was."""
    if _size(source) != size:
        return False
    with open(target, "wb") as out:
        same = _digest(source, copy_to=out) == digest
    if not same:
        _remove(target)
    return same


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for entry in entries:
        if entry[1] == 0x4000:  # a folder
            _rmtree(path + "/" + entry[0])
        else:
            _remove(path + "/" + entry[0])
    try:
        os.rmdir(path)
    except OSError:
        pass
