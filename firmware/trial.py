# Loaded only when the running version is on trial (a new update, not confirmed yet).
import asyncio

_WATCHDOG_MS = 30000


async def guard(runtime):
    """Restart a trial version that is not confirmed in time: the first stage counts the
    failed start. On boards the hardware watchdog also resets one whose event loop hangs;
    once started, a watchdog cannot be stopped, so it is fed for as long as the device runs."""
    board = runtime.board
    boot = runtime.boot
    dog = board.watchdog(_WATCHDOG_MS) if hasattr(board, "watchdog") else None
    trial_ms = runtime.config["update"]["trial_ms"]
    while dog is not None or boot["state"].get("trial") == boot["slot"]:
        if boot["state"].get("trial") == boot["slot"] and runtime.now_ms() > trial_ms:
            runtime.log("this version was not confirmed in %d s: restarting" % (trial_ms // 1000))
            board.restart()
        if dog is not None:
            dog.feed()
        await asyncio.sleep_ms(1000)
