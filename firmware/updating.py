# The update service, device side (docs/UPDATES.md). The runtime loads this module only
# when an update message arrives or the last boot left it work (a version on trial to
# confirm, a rollback to report, a transfer to go on with), and it unloads itself when
# idle again: an idle device pays nothing for updates.
#
# An update goes into the other of two slots, never the running one. The device pulls
# the bundle by ranges (Get), two in flight, writing as it goes: after a cut link or a
# reboot it goes on from where it stopped, checking what it has (whole files by their
# SHA-256; a file the running slot has already is copied, not fetched).
import asyncio
import gc
import hashlib
import json
import os
import sys
from binascii import hexlify, unhexlify

from shared import codec, update
from shared.codec import uuid_from_str, uuid_to_str
from shared.compat import const
from shared.update import UpdateError
from firmware.launch import unload
from firmware.store import makedirs

_IN_FLIGHT = const(2)  # Gets outstanding at once
_MAX_CHUNK = const(256)  # bytes asked for at once: each one passes through a few buffers
_OVERHEAD = const(36)  # e2e 26, service byte 1, Chunk header 9
_TICK_MS = const(500)
_STALL_MS = const(8000)  # no Chunk for this long: ask again
_STALLS = const(8)  # then back to the app, until the updater's next Offer
_BUF = const(1024)
HEADER_FIXED = const(102)  # shared/bundle.py: the header before the manifest


class UpdateService:
    def __init__(self, runtime):
        self.rt = runtime
        boot = runtime.boot
        self.slots = boot["slots"]
        self.slot = boot["slot"]  # the running slot
        self.pending_path = self.slots + "/update.json"
        self.pending = read_json(self.pending_path)  # the update in progress, or to report
        self.id = None  # the update being fetched
        self.confirm_in = None  # ms online left before the version on trial is confirmed
        self.restarting = False
        self.task = None
        p = self.pending
        if boot["updating"] and p["phase"] == "transfer":
            # Before the connection's objects: the manifest's garbage then leaves no holes.
            self._resume(p)

    def _resume(self, p):
        """Start (or go on with) the fetch this boot is for (a pending update)."""
        peer, uid = uuid_from_str(p["updater"]), unhexlify(p["id"])
        try:
            self._begin(peer, uid, p["size"], p["header_size"], p["version"],
                        p["phase"] == "transfer")
        except Exception as e:
            self._refuse(peer, uid, p["version"], e)

    # -- from the runtime -----------------------------------------------------------
    def handle(self, peer, data):
        try:
            kind, fields = update.decode(data)
        except UpdateError:
            return  # dropped, like any inner packet that makes no sense
        try:
            if kind == update.OFFER:
                self._offer(peer, *fields)
            elif kind == update.CHUNK:
                self._chunk(*fields)
            elif kind == update.QUERY:
                self._send(peer, update.info(json.dumps(self._info())))
        except Exception as e:  # a refusal, a flash error, no memory: the app runs on
            if kind == update.OFFER:
                self._refuse(peer, fields[0], fields[3], e)
            elif self.id is not None:
                self._refuse(self.peer, self.id, self.version, e)
        self._start_task()

    def welcomed(self):
        """After each Welcome: report a rollback, count down to confirming a version on
        trial, start or go on with the transfer this boot is for."""
        state = self.rt.boot["state"]
        p = self.pending
        if p is not None and state.get("failed") and state["failed"] == p.get("slot"):
            self._rolled_back(p, state)
        elif state.get("trial") == self.slot and self.confirm_in is None:
            self.confirm_in = self.rt.config["update"]["confirm_ms"]
        if self.id is None and self.rt.boot["updating"] and p is not None:
            if p["phase"] == "refused":  # by firmware/update_check.py, at this boot
                uid = unhexlify(p["id"])
                self.id, self.new = uid, p["slot"]
                self._refuse(uuid_from_str(p["updater"]), uid, p["version"],
                             UpdateError(p["reason"], p["detail"]))
                return
            self._resume(p)
        elif self.id is not None:
            self.asked = self.pos  # what was in flight went with the old link
            self._ask()
        self._start_task()

    # -- an offer -----------------------------------------------------------------
    def _offer(self, peer, uid, size, header_size, version):
        who = uuid_to_str(peer)
        if who not in self.rt.config["updaters"]:
            raise UpdateError(update.NOT_UPDATER, "%s is not an updater of this device "
                              "(config: updaters)" % who)
        hexid = hexlify(uid).decode()
        mine = _release(self.slot)
        on_trial = self.rt.boot["state"].get("trial") == self.slot
        p = self.pending or {}
        if mine.get("id") == hexid:
            if not on_trial:  # on trial, the confirmation answers
                self._result(peer, uid, update.CURRENT, 0, version, "%s runs already" % version)
        elif p.get("id") == hexid and p.get("phase") == "failed":
            self._result(peer, uid, update.ROLLED_BACK, update.START_FAILED, version,
                         "%s did not start; %s runs" % (version, mine.get("version")))
        elif on_trial:
            raise UpdateError(update.BUSY, "%s is on trial: it must be confirmed before the "
                              "next update" % mine.get("version"))
        elif self.id == uid:  # offered again: go on from here
            self.peer = peer
            self.asked = self.pos
            self._ask()
        elif self.rt.boot["updating"]:
            self._begin(peer, uid, size, header_size, version, p.get("id") == hexid)
        else:
            # Fetched after a restart without the app, so the transfer has the whole heap;
            # a bundle fetched in part before goes on from there.
            if p.get("id") == hexid and "slot" in p:
                p["phase"] = "transfer"
                p["updater"] = who
            else:
                p = {"updater": who, "id": hexid, "size": size, "header_size": header_size,
                     "version": version, "phase": "offered"}
            self._set_pending(p)
            self.rt.log("update %s offered by %s: restarting to fetch it" % (version, who))
            self.restarting = True

    def _begin(self, peer, uid, size, header_size, version, resume):
        self._close()
        self.pos = self.asked = self.end = 0
        self.peer, self.id, self.tag = peer, uid, update.tag_of(uid)
        self.size, self.hsize, self.version = size, header_size, version
        a = self.slots + "/a"
        self.new = self.slots + "/b" if self.slot == a else a
        self.files = None
        self.index = -1
        self.quiet = self.stalls = 0
        self.rt.boot["waiting"] = False
        if resume and self._load_header():
            self.rt.log("update %s: going on with what is on flash" % version)
            self._next()
            return
        self.rt.log("update %s offered by %s: fetching it into %s" % (
            version, uuid_to_str(peer), self.new))
        _rmtree(self.new)
        makedirs(self.new)
        self._set_pending(None)
        # The header goes to flash as it comes, hashed twice: whole (the update's id) and
        # from the manifest on (what the release key signed).
        self.file = open(self.new + "/header", "wb")
        self.hash = hashlib.sha256()
        self.manifest_hash = hashlib.sha256()
        self.end = header_size
        self._ask()

    def _load_header(self):
        """The manifest of the header on flash, fetched and checked before a restart."""
        path = self.new + "/header"
        try:
            if _size(path) != self.hsize or _digest(path) != self.id:
                return False
            with open(path, "rb") as f:
                f.seek(HEADER_FIXED)
                manifest = json.load(f)
        except (OSError, ValueError):
            return False
        from shared import bundle
        try:
            # Tuples with raw digests: half the heap of the JSON's lists of text.
            self.files = [(e[0], e[1], unhexlify(e[2]), e[3])
                          for e in bundle.parse_manifest(manifest)["files"]]
        except UpdateError:
            pass
        manifest = None
        unload("shared.bundle")
        return self.files is not None

    # -- the transfer ----------------------------------------------------------------
    def _ask(self):
        if self.id is None or not self.rt.endpoint.online:
            return
        size = min(self.rt.endpoint.max_inner - _OVERHEAD, _MAX_CHUNK)
        while self.asked < self.end and self.asked - self.pos < _IN_FLIGHT * size:
            n = min(size, self.end - self.asked)
            self._send(self.peer, update.get(self.tag, self.asked, n))
            self.asked += n

    def _chunk(self, tag, offset, data):
        if self.id is None or tag != self.tag:
            return
        if offset != self.pos:
            if offset > self.pos:  # something was lost: ask again from where we are
                self.asked = self.pos
                self._ask()
            return  # else a duplicate of what we have
        self.quiet = 0
        data = data[:self.end - self.pos]
        self.file.write(data)
        self.hash.update(data)
        if self.files is None and self.pos + len(data) > HEADER_FIXED:
            self.manifest_hash.update(data[max(HEADER_FIXED - self.pos, 0):])
        self.pos += len(data)
        if self.pos < self.end:
            self._ask()
            return
        if self.files is None:
            self._header_done()
        else:
            self._file_done()
            self._next()

    def _header_done(self):
        """The header is on flash: restart to check it with the heap to itself."""
        self._close()
        if self.hash.digest() != self.id:
            raise UpdateError(update.BAD_BUNDLE, "the header is not the one offered")
        self._set_pending({"updater": uuid_to_str(self.peer), "id": hexlify(self.id).decode(),
                           "version": self.version, "slot": self.new, "size": self.size,
                           "header_size": self.hsize, "phase": "header",
                           "manifest_hash": hexlify(self.manifest_hash.digest()).decode()})
        self.id = None
        self.restarting = True

    def _next(self):
        """Go on with the next file that needs bytes; install when none is left."""
        while self.id is not None:
            self.index += 1
            if self.index >= len(self.files):
                return self._install()
            path, size, digest, offset = self.files[self.index]
            target = self.new + "/" + path
            have = _size(target)
            if have == size and _digest(target) == digest:
                continue  # fetched before a reboot or a cut link
            if have is None or have >= size:
                _remove(target)
                makedirs(target.rpartition("/")[0])
                if self.rt.config["update"]["reuse"] and _copy_if_same(
                        self.slot + "/" + path, target, size, digest):
                    continue  # the running version has it
                have = 0
            self.hash = hashlib.sha256()
            if have:
                _digest(target, self.hash)
            self.resumed = have > 0
            gc.collect()  # between files: what one left is gone before the next
            self.file = open(target, "ab")
            self.pos = self.asked = self.hsize + offset + have
            self.end = self.hsize + offset + size
            if self.pos < self.end:
                return self._ask()
            self._file_done()  # an empty file

    def _file_done(self):
        path, size, digest, offset = self.files[self.index]
        self._close()
        if self.hash.digest() == digest:
            return
        _remove(self.new + "/" + path)
        if self.resumed:  # what was on flash may be torn: fetch the whole file once more
            self.index -= 1
            return
        raise UpdateError(update.BAD_HASH, "%s: its SHA-256 is not the signed manifest's (the "
                          "bundle is damaged or forged)" % path)

    def _install(self):
        write_json(self.new + "/release.json", {"version": self.version,
                                                 "id": hexlify(self.id).decode()})
        write_json(self.slots + "/boot.json", {"active": self.slot, "trial": self.new,
                                                "tries": 0})
        p = dict(self.pending)
        p["phase"] = "installed"
        self._set_pending(p)
        self.rt.log("update %s installed in %s: restarting into it" % (self.version, self.new))
        self._result(self.peer, self.id, update.INSTALLED, 0, self.version,
                     "restarting into %s to try it" % self.version)
        self.id = None
        self.restarting = True

    # -- confirmation and rollback -------------------------------------------------------
    def _confirm(self):
        state = {"active": self.slot, "trial": None, "tries": 0}
        write_json(self.slots + "/boot.json", state)
        self.rt.boot["state"] = state
        self.confirm_in = None
        version = self.rt.app_version
        self.rt.log("update %s confirmed: it reached the realm and ran %d s" % (
            version, self.rt.config["update"]["confirm_ms"] // 1000))
        self._report(update.UPDATED, 0, "%s runs and is confirmed" % version)
        self._set_pending(None)

    def _rolled_back(self, p, state):
        self.rt.log("update %s did not start; back to %s" % (p["version"], self.rt.app_version))
        self._report(update.ROLLED_BACK, update.START_FAILED, "%s did not start well in 3 "
                     "tries; %s runs again" % (p["version"], self.rt.app_version))
        state = dict(state)
        state.pop("failed")
        write_json(self.slots + "/boot.json", state)
        self.rt.boot["state"] = state
        self._set_pending({"id": p["id"], "version": p["version"], "phase": "failed"})

    def _report(self, outcome, reason, detail):
        p = self.pending
        if p is not None and "updater" in p:
            self._result(uuid_from_str(p["updater"]), unhexlify(p["id"]), outcome, reason,
                         p["version"], detail)

    # -- the timer -------------------------------------------------------------------
    def _start_task(self):
        if self.task is None:
            self.task = asyncio.create_task(self._tick())

    async def _tick(self):
        """Stalled transfers, the countdown to confirming, the restart after an install;
        unloads the service once none of them is left."""
        while self.id is not None or self.confirm_in is not None or self.restarting:
            await asyncio.sleep_ms(_TICK_MS)
            online = self.rt.endpoint.online
            if self.restarting:
                await asyncio.sleep_ms(_TICK_MS)  # the INSTALLED result on its way out
                self.rt.board.restart()
            if self.confirm_in is not None:
                self.confirm_in = self.confirm_in - _TICK_MS if online else \
                    self.rt.config["update"]["confirm_ms"]
                if self.confirm_in <= 0:
                    self._confirm()
            if self.id is not None:
                self.quiet += _TICK_MS
                if self.quiet >= _STALL_MS:  # no Chunk for a while, or no link
                    self.quiet = 0
                    self.stalls += 1
                    self.asked = self.pos
                    self._ask()
                    if self.stalls > _STALLS:
                        self._pause()
        self.task = None
        self.rt.updates = None
        unload("firmware.updating")

    def _pause(self):
        """The updater stopped answering: back to the app; the next offer of this bundle
        goes on from what is on flash."""
        self.rt.log("update %s: no answer from the updater; the app starts again, and the "
                    "next offer goes on from here" % self.version)
        self._close()
        self.id = None
        if self.pending is not None and "slot" in self.pending:
            self.pending["phase"] = "paused"
            self._set_pending(self.pending)
        else:
            self._set_pending(None)
        self.restarting = True

    # -- answers ----------------------------------------------------------------------
    def _info(self):
        p = self.pending or {}
        return {"app": self.rt.app_version, "slot": self.slot, "board": self.rt.board.NAME,
                "trial": self.rt.boot["state"].get("trial") == self.slot,
                "failed": p.get("version") if p.get("phase") == "failed" else None}

    def _refuse(self, peer, uid, version, error):
        error = refusal(error)
        self.rt.log("update %s refused: %s" % (version, error))
        self._result(peer, uid, update.REFUSED, error.reason, version, str(error))
        if self.id == uid:
            self._close()
            self.id = None
            self._set_pending(None)
            _rmtree(self.new)
            self.restarting = self.rt.boot["updating"]  # back to the app

    def _result(self, peer, uid, outcome, reason, version, detail):
        self._send(peer, update.result(uid, outcome, reason, version, detail))

    def _send(self, peer, data):
        self.rt.endpoint.send_service(peer, codec.SERVICE_UPDATE, data)
        self.rt.kick()

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


def mpy_version():
    mpy = getattr(sys.implementation, "_mpy", 0)
    return "%d.%d" % (mpy & 0xFF, (mpy >> 8) & 3)


def refusal(error):
    if isinstance(error, UpdateError):
        return error
    return UpdateError(update.FAILED, "%s on this device: %r" % (
        "out of memory" if isinstance(error, MemoryError) else "failed", error))


# -- files ----------------------------------------------------------------------------
def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _release(slot):
    """{"version", "id"} of what a slot holds (its release.json), or {}."""
    return read_json(slot + "/release.json") or {}


def write_json(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(path + ".tmp", path)


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
