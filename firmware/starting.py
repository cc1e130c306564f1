# What starting a device does once (firmware/launch.py's start): the runtime's modules
# loaded, the update's header checked, the config read, the state loaded (the code that
# reads either is unloaded again), the runtime and the app made ready. Unloaded before
# the device runs: a running device never calls it.
import gc
import os
import sys

from firmware import launch
from firmware.launch import Updates, log, unload
from firmware.updating import KEPT_OFFER

# Loaded one at a time, deepest first, with a collection before each: the loader's
# scratch buffers then leave no holes between the modules, and the heap keeps large free
# runs (at 128 KB: a 21 KB run instead of 2 KB when everything loads at once).
# shared.protocol is not among them: the build folds its constants into its importers.
_MODULES = ("asyncio", "shared.errors", "shared.codec", "shared.x25519", "shared.crypto",
            "shared.framing", "shared.events", "shared.connection", "shared.device",
            "shared.report", "shared.e2e", "shared.endpoint",
            "board", "firmware.store", "firmware.runtime", "firmware.api")


def prepare(config_path, state_dir, app, repin, boot):
    """(runtime, device, app) ready to run, as launch.start's arguments say; None if the
    config or state is unusable (said in the log)."""
    updating = boot is not None and boot["updating"]
    if updating and boot["phase"] == "header":
        _check_header(config_path, boot)
        # Once more from the start: what the check interned (about 460 names, for good)
        # and the holes it left stay out of the transfer's heap.
        import board
        board.restart()
    # Without the app: fetching an update, or answering an offer that came while the app
    # left the update service no room (firmware/launch.py's Updates kept it on flash).
    alone = updating
    if boot is not None and not updating:
        kept = boot["slots"] + KEPT_OFFER
        try:
            os.stat(kept)
            if boot["state"].get("trial") == boot["slot"]:
                # A trial's start is no time to answer it without the app (the next start
                # would count as a failed one): firmware/trial.py answers the next offer.
                os.remove(kept)
            else:
                alone = True
        except OSError:
            pass
    if boot is not None:
        boot["alone"] = boot["waiting"] = alone
        from firmware.store import makedirs
        makedirs(boot["slots"])  # where an offer may have to be kept when no room is left
    for name in _MODULES:
        gc.collect()
        if name == "firmware.api" and alone:  # the update service's half in the app's place
            name = "firmware.update_fetch" if updating else "firmware.update_agent"
        elif name == "firmware.api" and boot is not None and (
                boot["state"].get("trial") == boot["slot"] or boot["state"].get("failed")):
            # A version on trial to confirm, a rollback to report (firmware/trial.py,
            # which launch.start runs beside the app): loaded now, while the heap is empty.
            __import__("firmware.trial")
            gc.collect()
        __import__(name)
    import board
    from firmware.runtime import Runtime
    from firmware.store import Store, StoreError
    if not alone:
        app = _load_app(app, boot, board)  # compiled now, before the long-lived objects
    gc.collect()
    board.show_status("booting")
    try:
        config = _read_config(config_path, board.HAS_WIFI)
        launch.speaker = config["name"]
        store = _load_store(Store(state_dir or board.STATE_DIR), config["private_key"])
    except (ValueError, StoreError) as e:
        log("cannot start: %s" % e)
        board.show_status("error")
        return None
    if repin or (config["realm_key"] is not None and config["realm_key"] != store.realm_public):
        # A realm_key in the config that differs from the pin is the user re-pinning.
        store.repin(config["realm_key"])
    runtime = Runtime(config, store, board, log, boot=boot)
    if boot is not None:  # started by the first stage: updates possible
        from shared.codec import SERVICE_UPDATE
        updates = Updates(runtime)
        runtime.add_service(SERVICE_UPDATE, updates)
    if alone:
        log("fetching an update: the app starts again once it is installed or refused"
            if updating else "answering an update offer: the app starts again after it")
        if updating:  # loaded above, in the app's place
            from firmware.update_fetch import fetcher as Half
        else:
            from firmware.update_agent import Agent as Half
        updates.working = Half(updates)
        app = device = None
    else:
        if runtime.app_version is None:  # no installed release: the app's own word
            runtime.app_version = getattr(app, "__version__", None)
        from firmware.api import Device
        device = Device(runtime)
    log("device %s (%s), boot %d, key fingerprint %s" % (
        config["device_id_str"], config["name"], store.boot, _hex(_fingerprint(store.public))))
    gc.collect()
    return runtime, device, app


def _check_header(config_path, boot):
    """The update's header, checked first, with the heap to itself."""
    import board
    before = list(sys.modules)
    try:
        from firmware.update_check import check
        check(boot, _read_config(config_path, board.HAS_WIFI), board)
    except ValueError:
        pass  # a bad config: start() says so
    for name in list(sys.modules):
        if name not in before:
            unload(name)


def _read_config(path, has_wifi):
    """The checked config; the checking code is unloaded afterwards (5 KB of heap)."""
    from firmware import config
    try:
        return config.load(path, has_wifi)
    except config.ConfigError as e:
        raise ValueError(str(e))
    finally:
        unload("firmware.config")


def _load_store(store, private):
    """store, loaded; the reading code is unloaded afterwards (0.9 KB of heap)."""
    try:
        return store.load(private)
    finally:
        unload("firmware.store_load")


def _load_app(path, boot, board):
    """The app module; the default app if the app fails to load (the device stays
    reachable, and can be updated)."""
    try:
        return _import_app(path)
    except Exception as e:  # a SyntaxError, a missing module, the app's own error
        log("the app failed to load:")
        sys.print_exception(e)
        launch.failed_start(boot, board)
    from firmware import default_app
    return default_app


def _import_app(path):
    if path is not None:
        folder, _, name = path.rpartition("/")
        sys.path.insert(0, folder or ".")
        return __import__(name[:-3] if name.endswith(".py") else name)
    try:
        import app
        return app
    except ImportError as e:
        if "'app'" not in str(e):
            raise  # app.py exists but imports something missing: show that
    from firmware import default_app
    return default_app


def _fingerprint(key):
    from shared.crypto import fingerprint
    return fingerprint(key)


def _hex(data):
    from binascii import hexlify
    return hexlify(data).decode()[:16]
