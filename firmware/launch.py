# Starting a device (firmware/starting.py: the board profile, the config, the state on
# flash, the runtime and the user's app, code a device needs once and then drops) and
# what stays while it runs: the log, the update service's stand-in, the app's task.
import gc
import sys

from firmware.updating import KEPT_OFFER  # folded by the build: nothing is loaded
from shared.codec import SERVICE_UPDATE  # (the same)
from shared.update import NOT_UPDATER, OFFER, QUERY, REFUSED, RESULT  # (the same)

speaker = "device"  # the config's name once it is read: each line says which device speaks


def log(message):
    print("%s: %s" % (speaker, message))


def start(config_path="config.json", state_dir=None, app=None, repin=False, boot=None):
    """Run the device until power-off. Returns 1 if the config or state is unusable.

    app: the path of the app's .py file (default: the module `app` if there is one; an
    app in the running slot comes first).
    repin: the user's explicit re-pin: trust the config's realm_key if it has one, else
    whatever realm answers next.
    boot: what the first stage chose (firmware/main.py). With boot["updating"] the
    device fetches an update with the whole heap: the update service loads in the app's
    place, and the app starts again once the update is installed or refused; with
    boot["alone"] (firmware/starting.py) it does that or answers an offer kept on flash.
    """
    from firmware import starting
    try:
        started = starting.prepare(config_path, state_dir, app, repin, boot)
    finally:
        del starting  # with the unload, its code goes: a running device never calls it
        unload("firmware.starting")
    if started is None:
        return 1
    runtime, device, app = started
    import asyncio
    try:
        asyncio.run(_main(runtime, device, app, boot))
    except Exception as e:  # a bug or no memory left: start afresh rather than sit dead
        log("the runtime failed; restarting the board:")
        sys.print_exception(e)
        runtime.board.restart()


# What the update service's halves load (shared/update.py too), unloaded when they are done.
_UPDATE_MODULES = ("firmware.update_agent", "firmware.update_fetch", "firmware.update_image",
                   "firmware.updating", "firmware.slotfiles", "firmware.update_query",
                   "shared.update")


class Updates:
    """The update service as the runtime's first listener (docs/UPDATES.md): a stand-in
    that loads the half that does the work (firmware/update_agent.py, which answers offers,
    or firmware/update_fetch.py without the app) only when a Service packet for it arrives
    or a start without the app has work for it; the half unloads itself when done. A
    Query needs no half: firmware/update_query.py answers it."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.working = None

    def load(self):
        """The working half; the agent if none (firmware/starting.py sets the half of a
        start without the app)."""
        if self.working is None:
            gc.collect()
            from firmware.update_agent import Agent
            self.working = Agent(self)
        return self.working

    def done(self):
        """The working half has nothing left to do: unload it and what it loaded."""
        self.working = None
        for name in _UPDATE_MODULES:
            unload(name)

    def service_packet(self, peer, data):
        offer = len(data) > 0 and data[0] == OFFER
        if offer:
            from shared.codec import uuid_to_str
            who = uuid_to_str(peer)
            if who not in self.runtime.config["updaters"]:
                try:
                    turn_away(self.runtime, peer, who, data)
                except MemoryError:
                    pass  # not even the answer's few bytes: dropped, the updater tries again
                return
            if _on_trial(self.runtime.boot):  # firmware/trial.py is loaded: it answers
                from firmware.trial import answer  # (a name launch.py has: no new one interned)
                answer(self.runtime, peer, data)
                return
        elif self.working is None and len(data) == 1 and data[0] == QUERY:
            try:  # beside the app, the half may find no room; this does
                from firmware.update_query import answer
                answer(self.runtime, peer)
            except MemoryError:
                pass  # no room even for that: unanswered, the updater says so
            self.done()
            return
        try:
            self.load().handle(peer, data)
            return
        except MemoryError:
            pass  # handled below, once the error and what it holds are let go
        # Beside the app, the half found no room (its code, and its names, which may need
        # a new piece of the interpreter's name table): an updater's Offer is kept on
        # flash and answered after a restart without the app. (Done here: no room may be
        # left to load code; without the app, the half answers a MemoryError itself.)
        self.done()
        if offer:
            slots = self.runtime.boot["slots"]
            with open(slots + KEPT_OFFER, "wb") as f:  # slots/ made at boot (starting.py)
                f.write(peer)
                f.write(data)
            log("an update offer: restarting without the app to answer it")
            self.runtime.board.restart()

    def status_changed(self, status, detail):
        boot = self.runtime.boot
        if status == "online" and (self.working or boot["waiting"]):
            boot["waiting"] = False
            self.load().welcomed()

    def event(self, event):
        if self.working is not None:  # its answer's Delivery: firmware/updating.py
            self.working.event(event)


def turn_away(runtime, peer, who, data):
    """Refuse an Offer from `who`, a device that is not one of the config's updaters:
    Result REFUSED, NOT_UPDATER, with the Offer's id and version (shared/update.py's
    layouts); a malformed one is dropped. Built here from the Offer's bytes, with nothing
    loaded, so that a stranger never makes this device load the update service or restart,
    and the answer always finds room: a module loaded now would intern its path and names
    for good, and an idle device's fifth name pool has about 10 entries left; the sixth is
    7.3 KB in one block, which a fragmented heap often lacks (the answer was then lost)."""
    end = len(data)  # Offer: type, id:32, size:4, header size:4, version (str16, last)
    if end < 43 or data[41] << 8 | data[42] != end - 43:
        return
    try:
        version = data[43:].decode()
    except UnicodeError:
        return
    detail = "%s is not an updater of this device (config: updaters)" % who
    log("update %s refused: %s" % (version, detail))
    detail = detail.encode()
    runtime.endpoint.send_service(peer, SERVICE_UPDATE, bytes((RESULT,)) + data[1:33] + bytes(
        (REFUSED, NOT_UPDATER)) + data[41:] + bytes((len(detail) >> 8, len(detail) & 255))
        + detail)
    runtime.kick()


async def _main(runtime, device, app, boot):
    import asyncio
    task = asyncio.create_task(runtime.run())
    if _on_trial(boot) or boot is not None and boot["state"].get("failed"):
        from firmware.trial import guard  # confirms the version on trial, or reports a rollback
        asyncio.create_task(guard(runtime))
    if app is None:  # the update service's work without the app
        await task
        return
    try:
        started = app.main(device)
        if hasattr(started, "send"):  # an async main: a generator on MicroPython
            await started
    except Exception as e:  # the app's bug must not take the realm link down with it
        log("the app failed:")
        sys.print_exception(e)
        failed_start(boot, runtime.board)
    await task


def _on_trial(boot):
    return boot is not None and boot["state"].get("trial") == boot["slot"]


def failed_start(boot, board):
    """On a version on trial a failure is a failed start: restart, so that the first stage
    counts it (and goes back to the previous version after 3)."""
    if _on_trial(boot):
        log("this version is on trial: restarting")
        board.restart()


def unload(name):
    """Forget a loaded module (its package's attribute too), so its heap can be collected."""
    if sys.modules.pop(name, None) is not None:  # (else: nothing to do, and nothing to
        package, _, attr = name.rpartition(".")  # allocate when the heap is short)
        try:
            delattr(sys.modules[package], attr)
        except (KeyError, AttributeError):
            pass
    gc.collect()
