# An Offer from a device that is not one of the config's updaters, refused by the update
# service's stand-in (firmware/launch.py's Updates) without loading a half: no device but
# an updater makes this one load the update service (its names would stay interned for
# good) or restart.
from shared import update
from shared.codec import SERVICE_UPDATE, uuid_to_str
from shared.update import UpdateError
from firmware.launch import log


def turn_away(listener, peer, data):
    """Refuse an Offer from a device that is not one of the config's updaters (Result
    REFUSED, NOT_UPDATER, with the Offer's id and version; a malformed one is dropped)."""
    try:
        uid, _size, _header_size, version = update.decode(data)[1]
    except UpdateError:
        uid = None  # malformed: dropped, as the update service drops it
    if uid is not None:
        detail = "%s is not an updater of this device (config: updaters)" % uuid_to_str(peer)
        log("update %s refused: %s" % (version, detail))
        listener.runtime.endpoint.send_service(peer, SERVICE_UPDATE, update.result(
            uid, update.REFUSED, update.NOT_UPDATER, version, detail))
        listener.runtime.kick()
    if listener.working is None:
        listener.done()  # unloads this module and what it loaded
