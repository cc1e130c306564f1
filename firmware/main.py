# The first stage: `make flash` copies this file to the board as /main.py, which
# MicroPython runs after every boot. Updates never replace it (they write the other of
# two slots, docs/UPDATES.md), so it must stay small and never need changing.
#
# It picks the slot to run from slots/boot.json: the confirmed one ("active"), or a
# newly installed one on trial ("trial"), whose starts it counts. A trial that has not
# been confirmed after 3 starts (a crash, a hang the watchdog reset, a power cut)
# is dropped: the active slot runs again and "failed" tells the runtime to report it.
import json
import os
import sys

SLOTS = "slots"  # beside main.py: / on a board, the board folder of a virtual one


def run(slots=SLOTS, factory=".", **start):
    boot = choose(slots, factory, start)
    # This stage is done: its code and names are forgotten before the runtime starts, so
    # the heap of a device that runs is the runtime's (as the board's main.py only the
    # code of the script itself stays; tools/sim.py imports it and keeps nothing).
    import gc
    sys.modules.pop(__name__, None)
    globals().clear()
    gc.collect()
    from firmware import launch
    return launch.start(boot=boot, **start)


def choose(slots, factory, start):
    """What the runtime needs to know about the slots (firmware/launch.py): the slot to
    run, its boot state, its version, the update in progress. factory: the slot to run
    while nothing was installed (a board flashed before slots existed keeps lib/ at its
    root). start: the launcher's arguments (an installed version runs its own app)."""
    path = slots + "/boot.json"
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):  # never installed, or a torn file: the factory slot
        state = {"active": factory}
    trial = state.get("trial")
    if trial:
        tries = state.get("tries", 0)
        if tries >= 3:
            print("boot: %s did not start well %d times: back to %s" % (
                trial, tries, state["active"]))
            state["failed"] = trial
            state["trial"] = None
        else:
            state["tries"] = tries + 1
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.rename(path + ".tmp", path)
    slot = state.get("trial") or state["active"]
    if slot != factory:
        start.pop("app", None)
    sys.path[:0] = [slot + "/lib", slot]
    # An update to fetch, go on with or report (firmware/updating.py). While one is
    # fetched the app is not started: the whole heap is the transfer's.
    phase = _read(slots + "/update.json").get("phase")
    return {"slots": slots, "slot": slot, "state": state, "phase": phase,
            "version": _read(slot + "/release.json").get("version"),
            "updating": phase in ("offered", "header", "transfer", "refused"),
            "waiting": bool(phase) or state.get("trial") == slot or bool(state.get("failed"))}


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    run()
