# The update service's half that answers offers and queries (firmware/updating.py):
# beside the app, or, when the app left it no room there, after a restart without the
# app. (A version on trial is confirmed, and a rollback reported, by firmware/trial.py.)
import asyncio
from binascii import hexlify

from shared import update
from shared.codec import uuid_to_str
from firmware.slotfiles import read_json
from firmware.updating import UpdateService, IMAGE_STATE, KEPT_OFFER, _remove


class Agent(UpdateService):
    def __init__(self, listener):
        UpdateService.__init__(self, listener)
        self.image = read_json(self.slots + IMAGE_STATE) or {}
        if self.rt.boot["alone"]:  # made at boot: the task starts with the event loop
            asyncio.create_task(self._unanswered())

    async def _unanswered(self):
        """Without the app for an offer kept on flash: if the realm is not reached in
        update.offer_ms (60 s), drop it and start the app again (the updater offers again
        when it can)."""
        await asyncio.sleep_ms(self.rt.config["update"]["offer_ms"])
        _remove(self.slots + KEPT_OFFER)
        self.rt.log("the realm is out of reach: the offer is dropped, the app starts again")
        self.rt.board.restart()

    def welcomed(self):
        """After the Welcome of a start without the app: answer the offer kept on flash."""
        self._recorded_offer()
        self._start_task()

    def _offer(self, peer, uid, size, header_size, version):
        who = uuid_to_str(peer)  # an updater: firmware/launch.py turned strangers away
        hexid = hexlify(uid).decode()
        mine = _release(self.slot)
        p = self.pending or {}
        # (Never on trial: then firmware/trial.py answers offers, firmware/launch.py.)
        if hexid in (mine.get("id"), self.image.get("id"),
                     (self.image.get("trial") or {}).get("id")):
            self._result(peer, uid, update.CURRENT, 0, version, "%s runs already" % version)
        elif p.get("id") == hexid and p.get("phase") == "failed":
            self._result(peer, uid, update.ROLLED_BACK, update.START_FAILED, version,
                         "%s did not start; %s runs" % (version, self.rt.firmware
                                                        if p.get("kind") == "image"
                                                        else mine.get("version")))
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


def _release(slot):
    """{"version", "id"} of what a slot holds (its release.json), or {}."""
    return read_json(slot + "/release.json") or {}
