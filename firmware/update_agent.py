# The update service beside the app (firmware/updating.py): answers offers, confirms a
# new version on trial, reports a rollback.
from binascii import hexlify, unhexlify

from shared import update
from shared.codec import uuid_from_str
from shared.update import UpdateError
from firmware.updating import UpdateService, write_json, TICK_MS, _release


class Agent(UpdateService):
    MODULE = "firmware.update_agent"

    def __init__(self, listener):
        UpdateService.__init__(self, listener)
        self.confirm_in = None  # ms online left before the version on trial is confirmed

    def welcomed(self):
        """After each Welcome: report a rollback, or count down to confirming a version
        on trial."""
        state = self.rt.boot["state"]
        p = self.pending
        if p is not None and state.get("failed") and state["failed"] == p.get("slot"):
            self._rolled_back(p, state)
        elif state.get("trial") == self.slot and self.confirm_in is None:
            self.confirm_in = self.rt.config["update"]["confirm_ms"]
        self._start_task()

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
        if mine.get("id") == hexid:
            if not on_trial:  # on trial, the confirmation answers
                self._result(peer, uid, update.CURRENT, 0, version, "%s runs already" % version)
        elif p.get("id") == hexid and p.get("phase") == "failed":
            self._result(peer, uid, update.ROLLED_BACK, update.START_FAILED, version,
                         "%s did not start; %s runs" % (version, mine.get("version")))
        elif on_trial:
            raise UpdateError(update.BUSY, "%s is on trial: it must be confirmed before the "
                              "next update" % mine.get("version"))
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
