# The first stage: `make flash` copies this file to the board as /main.py, which
# MicroPython runs after every boot. Updates never replace it (they write the other of
# two slots, docs/UPDATES.md), so it must stay small and never need changing.
#
# It picks the slot to run from slots/boot.json: the confirmed one ("active"), or a
# newly installed one on trial ("trial"), whose starts it counts. A trial that has not
# been confirmed after _TRIES starts (a crash, a hang the watchdog reset, a power cut)
# is dropped: the active slot runs again and "failed" tells the runtime to report it.
import json
import os
import sys

SLOTS = "slots"  # beside main.py: / on a board, the board folder of a virtual one
BOOT_FILE = "/boot.json"
_TRIES = 3


def choose(slots, factory):
    """-> (the slot folder to run, the boot state). factory: the slot to run while
    nothing was installed (a board flashed before slots existed keeps lib/ at its root)."""
    path = slots + BOOT_FILE
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):  # never installed, or a torn file: the factory slot
        state = {"active": factory}
    trial = state.get("trial")
    if trial:
        tries = state.get("tries", 0)
        if tries >= _TRIES:
            print("boot: %s did not start well %d times: back to %s" % (
                trial, tries, state["active"]))
            state["failed"] = trial
            state["trial"] = None
        else:
            state["tries"] = tries + 1
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.rename(tmp, path)
    return state.get("trial") or state["active"], state


def run(slots=SLOTS, factory=".", **start):
    slot, state = choose(slots, factory)
    if slot != factory:
        start.pop("app", None)  # an installed version runs the app installed with it
    sys.path[:0] = [slot + "/lib", slot]
    version = _read(slot + "/release.json").get("version")
    # An update to fetch, go on with or report (firmware/updating.py). While one is
    # fetched the app is not started: the whole heap is the transfer's.
    phase = _read(slots + "/update.json").get("phase")
    boot = {"slots": slots, "slot": slot, "state": state, "version": version, "phase": phase,
            "updating": phase in ("offered", "header", "transfer", "refused"),
            "waiting": bool(phase) or state.get("trial") == slot or bool(state.get("failed"))}
    from firmware.launch import start as start_firmware
    return start_firmware(boot=boot, **start)


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    run()
