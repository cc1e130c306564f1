# Loaded only after an update was installed: while the new version is on trial (until it
# is confirmed), or once to report that it rolled back. It works beside the app, so it
# loads nothing of the update service (whose code and names need more heap than a small
# board has beside the app, docs/UPDATES.md "Memory"): a confirmation or a rollback
# writes small files and sends one Result, an updater's Offer meanwhile gets BUSY.
import asyncio
import os

from binascii import hexlify, unhexlify

from shared import RELEASE, update
from shared.codec import SERVICE_UPDATE, uuid_from_str
from shared.compat import const
from shared.update import UpdateError
from firmware.slotfiles import image_runs, read_json, write_json
from firmware.updating import IMAGE_STATE, UPDATE_STATE  # folded by the build: nothing is loaded

_WATCHDOG_MS = const(30000)
_TICK_MS = const(500)
# Loaded by firmware/starting.py before the app, while the heap is empty; unloaded when
# done (with a watchdog, it goes on feeding it until the next restart)
_MODULES = ("firmware.trial", "firmware.slotfiles", "shared.update")


async def guard(runtime):
    """Confirm the version on trial once it has been online for confirm_ms, or restart it
    when it is not confirmed in trial_ms: the first stage counts the failed start. Report
    a rollback. On boards the hardware watchdog also resets a trial whose event loop hangs;
    once started, a watchdog cannot be stopped, so it is fed for as long as the device runs."""
    board = runtime.board
    boot = runtime.boot
    state = boot["state"]
    dog = board.watchdog(_WATCHDOG_MS) if state.get("trial") == boot["slot"] and hasattr(
        board, "watchdog") else None
    times = runtime.config["update"]
    image = read_json(boot["slots"] + IMAGE_STATE) or {}
    trial = image.get("trial")
    what = _trying(image, runtime.app_version)
    if trial and not image_runs(trial, board):
        await _online(runtime)  # the bootloader went back to the previous image
        _image_rolled_back(runtime, image, trial)
    elif state.get("failed"):  # the first stage went back to the previous slot
        await _online(runtime)
        _rolled_back(runtime, state)
    confirm_in = None  # ms online left before the confirmation, once online
    while dog is not None or boot["state"].get("trial") == boot["slot"]:
        if boot["state"].get("trial") == boot["slot"]:
            if not runtime.endpoint.online:
                confirm_in = None  # the confirmation needs confirm_ms online in one go
            elif confirm_in is None:
                confirm_in = times["confirm_ms"]
                runtime.log("%s on trial: confirmed after %d s online" % (
                    what, confirm_in // 1000))
            else:
                confirm_in -= _TICK_MS
                if confirm_in <= 0:
                    _confirm(runtime, trial, what)
            if runtime.now_ms() > times["trial_ms"] and boot["state"].get("trial") == \
                    boot["slot"]:
                runtime.log("this version was not confirmed in %d s: restarting"
                            % (times["trial_ms"] // 1000))
                board.restart()
        if dog is not None:
            dog.feed()
        await asyncio.sleep_ms(_TICK_MS)
    from firmware.launch import unload
    for name in _MODULES:
        unload(name)


def answer(runtime, peer, data):
    """An updater's Offer while a version is on trial (firmware/launch.py's Updates hands
    it here, with nothing to load): BUSY, beside the app. Answered without the app, it
    would cost a restart, which the first stage counts as a failed start of the trial and
    after which the bootloader rolls an image on trial back. The version on trial, or
    what runs, offered again gets no answer: the confirmation answers it."""
    try:
        uid, _size, _header_size, version = update.decode(data)[1]
    except UpdateError:
        return  # malformed: dropped, as the update service drops it
    slots = runtime.boot["slots"]
    image = read_json(slots + IMAGE_STATE) or {}
    running = read_json(runtime.boot["slot"] + "/release.json") or {}
    if hexlify(uid).decode() in (running.get("id"), image.get("id"),
                                 (image.get("trial") or {}).get("id")):
        return
    detail = "%s is on trial: it must be confirmed before the next update" % _trying(
        image, runtime.app_version)
    runtime.log("update %s refused: %s" % (version, detail))
    runtime.endpoint.send_service(peer, SERVICE_UPDATE, update.result(
        uid, update.REFUSED, update.BUSY, version, detail))
    runtime.kick()


def _trying(image, app_version):
    """What is on trial, in the log's and the updater's words: the image on trial (image:
    slots/image.json's value), else the app's update."""
    trial = image.get("trial")
    return "image " + trial["version"] if trial else "update %s" % app_version


async def _online(runtime):
    while not runtime.endpoint.online:
        await asyncio.sleep_ms(_TICK_MS)


def _confirm(runtime, trial, what):
    """The version on trial reached the realm and ran: keep it (for an image, tell the
    bootloader too), and tell the updater."""
    if trial:  # the bootloader keeps this image from now on
        runtime.board.ota().mark_app_valid_cancel_rollback()
        write_json(runtime.boot["slots"] + IMAGE_STATE,
                   {"version": trial["version"], "id": trial["id"]})
        version = what
    else:
        version = runtime.app_version
    _boot_state(runtime, runtime.boot["state"].get("fw"))
    runtime.log("%s confirmed: it reached the realm and ran %d s" % (
        what, runtime.config["update"]["confirm_ms"] // 1000))
    _report(runtime, update.UPDATED, 0, "%s runs and is confirmed" % version, None)


def _rolled_back(runtime, state):
    p = read_json(runtime.boot["slots"] + UPDATE_STATE) or {}
    version = p.get("version")
    if state["failed"] == p.get("slot"):
        runtime.log("update %s did not start; back to %s" % (version, runtime.app_version))
        _report(runtime, update.ROLLED_BACK, update.START_FAILED,
                "%s did not start well in 3 tries; %s runs again" % (version, runtime.app_version),
                {"id": p["id"], "version": version, "phase": "failed"})
    state = dict(state)
    state.pop("failed")
    write_json(runtime.boot["slots"] + "/boot.json", state)
    runtime.boot["state"] = state


def _image_rolled_back(runtime, image, trial):
    """The image on trial was reset before its confirmation: the bootloader went back to
    the previous one. Forget the trial, report it, never try it again."""
    image.pop("trial")
    write_json(runtime.boot["slots"] + IMAGE_STATE, image)
    fw = "image " + image["version"] if "version" in image else None
    _boot_state(runtime, fw)
    runtime.firmware = RELEASE + " " + fw if fw else RELEASE
    detail = "image %s was not confirmed: the bootloader went back to the previous image" \
        % trial["version"]
    runtime.log(detail)
    _report(runtime, update.ROLLED_BACK, update.START_FAILED, detail,
            {"id": trial["id"], "version": trial["version"], "phase": "failed", "kind": "image"})


def _boot_state(runtime, fw):
    """The running slot, confirmed (no trial); fw: the image's words for the report."""
    state = {"active": runtime.boot["slot"], "trial": None, "tries": 0, "fw": fw}
    write_json(runtime.boot["slots"] + "/boot.json", state)
    runtime.boot["state"] = state


def _report(runtime, outcome, reason, detail, keep):
    """Send the update's Result to its updater; keep: what
    slots/update.json holds afterwards (None: nothing)."""
    pending = runtime.boot["slots"] + UPDATE_STATE
    p = read_json(pending) or {}
    if "updater" in p:
        runtime.endpoint.send_service(
            uuid_from_str(p["updater"]), SERVICE_UPDATE,
            update.result(unhexlify(p["id"]), outcome, reason, p["version"], detail))
        runtime.kick()
    if keep is None:
        try:
            os.remove(pending)
        except OSError:
            pass
    else:
        write_json(pending, keep)

