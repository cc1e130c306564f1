# What the update service's stand-in (firmware/launch.py's Updates) does with an Offer
# before it loads a half: a stranger's is refused at once, so that no device but an
# updater makes this one load the update service or restart; an updater's that finds no
# room for the half beside the app is kept on flash and answered after a restart without
# the app (firmware/updating.py; docs/UPDATES.md, "An offer with no room beside the app").
from shared import update
from shared.codec import SERVICE_UPDATE, uuid_to_str
from shared.update import UpdateError
from firmware.launch import log
from firmware.store import makedirs
from firmware.updating import KEPT_OFFER


def screen(listener, peer, data):
    """An updater's Offer: `keep`, for the stand-in (listener) to call if no half fits
    beside the app. Anyone else's: refused (Result REFUSED, NOT_UPDATER, with the Offer's
    id and version; a malformed one is dropped), and None."""
    who = uuid_to_str(peer)
    if who in listener.runtime.config["updaters"]:
        return keep
    try:
        uid, _size, _header_size, version = update.decode(data)[1]
    except UpdateError:
        uid = None  # malformed: dropped, as the update service drops it
    if uid is not None:
        detail = "%s is not an updater of this device (config: updaters)" % who
        log("update %s refused: %s" % (version, detail))
        listener.runtime.endpoint.send_service(peer, SERVICE_UPDATE, update.result(
            uid, update.REFUSED, update.NOT_UPDATER, version, detail))
        listener.runtime.kick()
    if listener.working is None:
        listener.done()  # unloads this module and what it loaded
    return None


def keep(runtime, peer, data):
    """Keep an updater's Offer on flash and restart without the app to answer it (after
    the half failed to load beside the app: this needs nothing loaded)."""
    slots = runtime.boot["slots"]
    makedirs(slots)
    with open(slots + KEPT_OFFER, "wb") as f:
        f.write(peer)
        f.write(data)
    log("an update offer: restarting without the app to answer it")
    runtime.board.restart()
