# The update service's answer to a Query (its Info: what runs, docs/UPDATES.md). The
# stand-in (firmware/launch.py's Updates) loads only this to answer one beside the app:
# a fraction of the half that answers offers, which a device that has just confirmed a
# version on trial may have no room for. The halves answer with it too.
import json

from shared import update
from shared.codec import SERVICE_UPDATE
from firmware.slotfiles import image_runs, read_json
from firmware.updating import IMAGE_STATE, UPDATE_STATE  # folded by the build: nothing is loaded


def answer(runtime, peer):
    runtime.endpoint.send_service(peer, SERVICE_UPDATE, update.info(info(runtime)))
    runtime.kick()


def info(runtime):
    """The Info's JSON text: the app's version, the image's (None: the flashed one), the
    running slot, the board, whether it is on trial, the version that failed its trial."""
    boot = runtime.boot
    p = read_json(boot["slots"] + UPDATE_STATE) or {}
    return json.dumps({"app": runtime.app_version,
                       "image": image_version(boot["slots"], runtime.board),
                       "slot": boot["slot"], "board": runtime.board.NAME,
                       "trial": boot["state"].get("trial") == boot["slot"],
                       "failed": p.get("version") if p.get("phase") == "failed" else None})


def image_version(slots, board):
    """The version of the firmware image that runs, if an image update installed it
    (slots/image.json, firmware/update_image.py); None: the flashed image."""
    image = read_json(slots + IMAGE_STATE) or {}
    trial = image.get("trial")
    if trial and image_runs(trial, board):
        return trial["version"]
    return image.get("version")
