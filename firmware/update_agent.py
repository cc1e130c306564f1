# The update service beside the app (firmware/updating.py): answers offers, confirms a
# new version on trial (an app slot, or a firmware image: firmware/update_image.py),
# reports a rollback.
from binascii import hexlify, unhexlify

from shared import RELEASE, update
from shared.codec import uuid_from_str
from shared.update import UpdateError
from firmware.updating import (UpdateService, read_json, write_json, image_runs, ota_partitions,
                               IMAGE_STATE, TICK_MS, _release)


class Agent(UpdateService):
    def __init__(self, listener):
        UpdateService.__init__(self, listener)
        self.confirm_in = None  # ms online left before the version on trial is confirmed
        self.image = read_json(self.slots + IMAGE_STATE) or {}

    def welcomed(self):
        """After each Welcome: report a rollback, or count down to confirming a version
        on trial (a firmware image on trial runs as the running slot's trial, too)."""
        state = self.rt.boot["state"]
        trial = self.image.get("trial")
        p = self.pending
        if trial and not image_runs(trial, self.rt.board):
            self._image_rolled_back(trial)
        elif p is not None and state.get("failed") and state["failed"] == p.get("slot"):
            self._rolled_back(p, state)
        elif state.get("trial") == self.slot and self.confirm_in is None:
            self.confirm_in = self.rt.config["update"]["confirm_ms"]
            self.rt.log("%s on trial: confirmed after %d s online" % (
                self._trying(), self.confirm_in // 1000))
        self._start_task()

    def _trying(self):
        trial = self.image.get("trial")
        return "image " + trial["version"] if trial else "update %s" % self.rt.app_version

    def busy(self):
        return self.restarting or self.confirm_in is not None

    def step(self, online):
        if self.confirm_in is not None:
            self.confirm_in = self.confirm_in - TICK_MS if online else \
                self.rt.config["update"]["confirm_ms"]
            if self.confirm_in <= 0:
                self._confirm()

    def _offer(self, peer, uid, size, header_size, version):
        who = self._updater(peer)
        hexid = hexlify(uid).decode()
        mine = _release(self.slot)
        on_trial = self.rt.boot["state"].get("trial") == self.slot
        p = self.pending or {}
        if hexid in (mine.get("id"), self.image.get("id"),
                     (self.image.get("trial") or {}).get("id")):
            if not on_trial:  # on trial, the confirmation answers
                self._result(peer, uid, update.CURRENT, 0, version, "%s runs already" % version)
        elif p.get("id") == hexid and p.get("phase") == "failed":
            self._result(peer, uid, update.ROLLED_BACK, update.START_FAILED, version,
                         "%s did not start; %s runs" % (version, self.rt.firmware
                                                        if p.get("kind") == "image"
                                                        else mine.get("version")))
        elif on_trial:
            raise UpdateError(update.BUSY, "%s is on trial: it must be confirmed before the "
                              "next update" % self._trying())
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

    def _confirm(self):
        what = self._trying()
        trial = self.image.get("trial")
        if trial:  # the bootloader keeps this image from now on
            ota_partitions(self.rt.board).mark_app_valid_cancel_rollback()
            self.image = {"version": trial["version"], "id": trial["id"]}
            write_json(self.slots + IMAGE_STATE, self.image)
            version = what
        else:
            version = self.rt.app_version
        self._boot_state(self.rt.boot["state"].get("fw"))
        self.confirm_in = None
        self.rt.log("%s confirmed: it reached the realm and ran %d s" % (
            what, self.rt.config["update"]["confirm_ms"] // 1000))
        self._report(update.UPDATED, 0, "%s runs and is confirmed" % version)
        self._set_pending(None)

    def _boot_state(self, fw):
        """The running slot, confirmed (no trial); fw: the image's words for the report."""
        state = {"active": self.slot, "trial": None, "tries": 0, "fw": fw}
        write_json(self.slots + "/boot.json", state)
        self.rt.boot["state"] = state

    def _rolled_back(self, p, state):
        self.rt.log("update %s did not start; back to %s" % (p["version"], self.rt.app_version))
        self._report(update.ROLLED_BACK, update.START_FAILED, "%s did not start well in 3 "
                     "tries; %s runs again" % (p["version"], self.rt.app_version))
        state = dict(state)
        state.pop("failed")
        write_json(self.slots + "/boot.json", state)
        self.rt.boot["state"] = state
        self._set_pending({"id": p["id"], "version": p["version"], "phase": "failed"})

    def _image_rolled_back(self, trial):
        """The image on trial was reset before its confirmation: the bootloader went back
        to the previous one. Forget the trial, report it, never try it again."""
        self.image.pop("trial")
        write_json(self.slots + IMAGE_STATE, self.image)
        fw = "image " + self.image["version"] if "version" in self.image else None
        self._boot_state(fw)
        self.rt.firmware = RELEASE + " " + fw if fw else RELEASE
        detail = "image %s was not confirmed: the bootloader went back to the previous image" \
            % trial["version"]
        self.rt.log(detail)
        self._report(update.ROLLED_BACK, update.START_FAILED, detail)
        self._set_pending({"id": trial["id"], "version": trial["version"], "phase": "failed",
                           "kind": "image"})

    def _report(self, outcome, reason, detail):
        p = self.pending
        if p is not None and "updater" in p:
            self._result(uuid_from_str(p["updater"]), unhexlify(p["id"]), outcome, reason,
                         p["version"], detail)
