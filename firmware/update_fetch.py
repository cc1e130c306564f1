# The update service without the app (firmware/updating.py): after the restart an
# accepted offer asks for, it pulls the bundle into the other slot by ranges (Get), two
# in flight, writing as it goes; after a cut link or a reboot it goes on from where it
# stopped, checking what it has (whole files by their SHA-256; a file the running slot
# has already is copied, not fetched). Then it installs it as the version on trial.
import gc
import hashlib
from binascii import hexlify, unhexlify

from shared import update
from shared.codec import uuid_from_str, uuid_to_str
from shared.compat import const
from shared.update import UpdateError
from firmware.store import makedirs
from firmware.updating import (UpdateService, HEADER_FIXED, INDEX_RECORD, UPDATE_STATE,
                               index_entry, read_json, write_json, TICK_MS, _copy_if_same,
                               _digest, _remove, _rmtree, _size)

_IN_FLIGHT = const(2)  # Gets outstanding at once
_MAX_CHUNK = const(256)  # bytes asked for at once: each passes through a few buffers, and
# on a small heap blocks of this size are still found free once the heap is fragmented
_OVERHEAD = const(36)  # e2e 26, service byte 1, Chunk header 9
_STALL_MS = const(8000)  # no Chunk for this long: ask again
_STALLS = const(8)  # then back to the app, until the updater's next Offer


def fetcher(listener):
    """The update service's half in update mode (listener: firmware/launch.py's Updates):
    a firmware image's (firmware/update_image.py) once the header checked at boot said the
    bundle is one."""
    p = read_json(listener.runtime.boot["slots"] + UPDATE_STATE) or {}
    if p.get("kind") == "image":
        from firmware.update_image import ImageFetcher
        return ImageFetcher(listener)
    return Fetcher(listener)


class Fetcher(UpdateService):
    def __init__(self, listener):
        UpdateService.__init__(self, listener)
        p = self.pending
        if p is not None and p["phase"] == "transfer":
            # Before the connection's objects: the manifest's garbage then leaves no holes.
            self._resume(p)

    def welcomed(self):
        """After each Welcome: report a refusal of this boot's header check, or start or go
        on with the transfer."""
        p = self.pending
        if self.id is None and p is not None:
            if p["phase"] == "refused":  # by firmware/update_check.py, at this boot
                uid = unhexlify(p["id"])
                self.id, self.new = uid, p["slot"]
                self._refuse(uuid_from_str(p["updater"]), uid, p["version"],
                             UpdateError(p["reason"], p["detail"]))
            elif p["phase"] in ("offered", "transfer"):
                self._resume(p)
        elif self.id is not None:
            self.asked = self.pos  # what was in flight went with the old link
            self._ask()
        self._recorded_offer()
        self._start_task()

    def _offer(self, peer, uid, size, header_size, version):
        # from an updater: firmware/launch.py turned strangers away
        if self.id == uid:  # offered again: go on from here
            self.peer = peer
            self.asked = self.pos
            self._ask()
        else:
            p = self.pending or {}
            self._begin(peer, uid, size, header_size, version,
                        p.get("id") == hexlify(uid).decode())

    def busy(self):
        return self.restarting or self.id is not None

    def step(self, online):
        self.quiet += TICK_MS
        if self.quiet >= _STALL_MS:  # no Chunk for a while, or no link
            self.quiet = 0
            self.stalls += 1
            self.asked = self.pos
            self._ask()
            if self.stalls > _STALLS:
                self._pause()

    def _resume(self, p):
        """Start (or go on with) the fetch this boot is for (a pending update)."""
        peer, uid = uuid_from_str(p["updater"]), unhexlify(p["id"])
        try:
            self._begin(peer, uid, p["size"], p["header_size"], p["version"],
                        p["phase"] == "transfer")
        except Exception as e:
            self._refuse(peer, uid, p["version"], e)

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
        """True when the header on flash is this update's and was checked at boot (its
        file index is there: see firmware/update_check.py)."""
        header, index = self.new + "/header", self.new + "/index"
        try:
            if _size(header) != self.hsize or _digest(header) != self.id:
                return False
            self.files = _size(index) // INDEX_RECORD
        except (OSError, TypeError):
            return False
        return True

    def _entry(self, i):
        """(path, size, digest, offset) of file i, read from the index on flash: the
        manifest is never in the heap during the transfer."""
        with open(self.new + "/index", "rb") as f:
            f.seek(i * INDEX_RECORD)
            return index_entry(f.read(INDEX_RECORD))

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
        self._write(data)
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

    def _write(self, data):
        self.file.write(data)
        self.hash.update(data)

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
            if self.index >= self.files:
                return self._install()
            path, size, digest, offset = self._entry(self.index)
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
        path, size, digest, offset = self._entry(self.index)
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
                                                "tries": 0,
                                                "fw": self.rt.boot["state"].get("fw")})
        self._installed(self.new)

    def _installed(self, where):
        """Installed for a trial: say so, and restart into it."""
        p = dict(self.pending)
        p["phase"] = "installed"
        self._set_pending(p)
        self.rt.log("update %s installed in %s: restarting into it" % (self.version, where))
        self._result(self.peer, self.id, update.INSTALLED, 0, self.version,
                     "restarting into %s to try it" % self.version)
        self.id = None
        self.restarting = True

    def _result(self, peer, uid, outcome, reason, version, detail):
        """A final answer, a restart after it: with the transfer's garbage collected first.
        If even then it finds no room to be sealed, a refusal is kept on flash and said
        after the restart, from a fresh heap (welcomed()); an install is said by its trial."""
        gc.collect()
        try:
            UpdateService._result(self, peer, uid, outcome, reason, version, detail)
            return
        except MemoryError:
            pass  # handled below, once the error and what it holds are let go
        self.answer = None
        # (restarting: this fetch's refusal, its transfer ended; none said at this boot yet)
        again = outcome == update.REFUSED and self.restarting and \
            self.rt.boot["phase"] != "refused"
        self.rt.log("update %s: no memory left to answer; %s" % (
            version, "the answer follows the restart" if again else "not answered"))
        if again:
            self._set_pending({"updater": uuid_to_str(peer), "id": hexlify(uid).decode(),
                               "version": version, "slot": self.new, "phase": "refused",
                               "reason": reason, "detail": detail})

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
