# Starting a device: the board profile, the config, the state on flash, the runtime,
# and the user's app (app.py if present, else the default app).
import gc
import sys

# Loaded one at a time, deepest first, with a collection before each: the loader's
# scratch buffers then leave no holes between the modules, and the heap keeps large free
# runs (at 128 KB: a 21 KB run instead of 2 KB when everything loads at once).
# shared.protocol is not among them: the build folds its constants into its importers.
_MODULES = ("asyncio", "shared.errors", "shared.codec", "shared.x25519", "shared.crypto",
            "shared.framing", "shared.events", "shared.connection", "shared.device",
            "shared.report", "shared.e2e", "shared.endpoint",
            "board", "firmware.store", "firmware.runtime", "firmware.api")


_speaker = "device"  # the config's name once it is read: each line says which device speaks


def log(message):
    print("%s: %s" % (_speaker, message))


def start(config_path="config.json", state_dir=None, app=None, repin=False, boot=None):
    """Run the device until power-off. Returns 1 if the config or state is unusable.

    app: the path of the app's .py file (default: the module `app` if there is one; an
    app in the running slot comes first).
    repin: the user's explicit re-pin: trust the config's realm_key if it has one, else
    whatever realm answers next.
    boot: what the first stage chose (firmware/main.py). With boot["updating"] the
    device fetches an update with the whole heap: the update service loads in the app's
    place, and the app starts again once the update is installed or refused.
    """
    global _speaker
    updating = boot is not None and boot["updating"]
    if updating and boot["phase"] == "header":
        _check_header(config_path, boot)
    for name in _MODULES:
        gc.collect()
        if name == "firmware.api":
            if updating:
                name = "firmware.update_fetch"
            elif boot is not None and boot["waiting"]:
                # Update work waiting (a version on trial, a rollback to report): the agent
                # loads now, while the heap is empty. Loaded later beside the app, its names
                # may need a new block of the interpreter's name table, in one piece (7.5 KB
                # on the unix port), that a fragmented heap no longer has.
                __import__("firmware.update_agent")
                gc.collect()
        __import__(name)
    import asyncio
    import board
    from firmware.runtime import Runtime
    from firmware.store import Store, StoreError
    if not updating:
        app = _load_app(app, boot, board)  # compiled now, before the long-lived objects
    gc.collect()
    board.show_status("booting")
    try:
        config = _read_config(config_path, board.HAS_WIFI)
        _speaker = config["name"]
        store = Store(state_dir or board.STATE_DIR).load(config["private_key"])
    except (ValueError, StoreError) as e:
        log("cannot start: %s" % e)
        board.show_status("error")
        return 1
    if repin or (config["realm_key"] is not None and config["realm_key"] != store.realm_public):
        # A realm_key in the config that differs from the pin is the user re-pinning.
        store.repin(config["realm_key"])
    runtime = Runtime(config, store, board, log, boot=boot)
    if boot is not None:  # started by the first stage: updates possible
        from shared.codec import SERVICE_UPDATE
        updates = Updates(runtime)
        runtime.add_service(SERVICE_UPDATE, updates)
    if updating:
        log("fetching an update: the app starts again once it is installed or refused")
        updates.load()  # loaded above, in the app's place
        app = device = None
    else:
        if runtime.app_version is None:  # no installed release: the app's own word
            runtime.app_version = getattr(app, "__version__", None)
        from firmware.api import Device
        device = Device(runtime)
    log("device %s (%s), boot %d, key fingerprint %s" % (
        config["device_id_str"], config["name"], store.boot, _hex(_fingerprint(store.public))))
    gc.collect()
    try:
        asyncio.run(_main(runtime, device, app, boot))
    except Exception as e:  # a bug or no memory left: start afresh rather than sit dead
        log("the runtime failed; restarting the board:")
        sys.print_exception(e)
        board.restart()


# What the update service's halves load (shared/update.py too), unloaded when they are done.
_UPDATE_MODULES = ("firmware.update_agent", "firmware.update_fetch", "firmware.update_image",
                   "firmware.updating", "shared.update")


class Updates:
    """The update service as the runtime's first listener (docs/UPDATES.md): a stand-in
    that loads the half that does the work (firmware/update_agent.py beside the app,
    firmware/update_fetch.py in its place) only when a Service packet for it arrives or a
    Welcome finds an update to go on with or report; the half unloads itself when done."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.working = None

    def load(self):
        if self.working is None:
            gc.collect()
            if self.runtime.boot["updating"]:
                from firmware.update_fetch import fetcher as Half
            else:
                from firmware.update_agent import Agent as Half
            self.working = Half(self)
        return self.working

    def done(self):
        """The working half has nothing left to do: unload it and what it loaded."""
        self.working = None
        for name in _UPDATE_MODULES:
            unload(name)

    def service_packet(self, peer, data):
        self.load().handle(peer, data)

    def status_changed(self, status, detail):
        boot = self.runtime.boot
        if status == "online" and (self.working or boot["waiting"]):
            boot["waiting"] = False
            self.load().welcomed()

    def event(self, event):
        pass


async def _main(runtime, device, app, boot):
    import asyncio
    task = asyncio.create_task(runtime.run())
    if _on_trial(boot):
        from firmware.trial import guard
        asyncio.create_task(guard(runtime))
    if app is None:  # fetching an update
        await task
        return
    try:
        started = app.main(device)
        if hasattr(started, "send"):  # an async main: a generator on MicroPython
            await started
    except Exception as e:  # the app's bug must not take the realm link down with it
        log("the app failed:")
        sys.print_exception(e)
        _failed_start(boot, runtime.board)
    await task


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


def _on_trial(boot):
    return boot is not None and boot["state"].get("trial") == boot["slot"]


def _failed_start(boot, board):
    """On a version on trial a failure is a failed start: restart, so that the first stage
    counts it (and goes back to the previous version after 3)."""
    if _on_trial(boot):
        log("this version is on trial: restarting")
        board.restart()


def _read_config(path, has_wifi):
    """The checked config; the checking code is unloaded afterwards (5 KB of heap)."""
    from firmware import config
    try:
        return config.load(path, has_wifi)
    except config.ConfigError as e:
        raise ValueError(str(e))
    finally:
        unload("firmware.config")


def unload(name):
    """Forget a loaded module (its package's attribute too), so its heap can be collected."""
    sys.modules.pop(name, None)
    package, _, attr = name.rpartition(".")
    try:
        delattr(sys.modules[package], attr)
    except (KeyError, AttributeError):
        pass
    gc.collect()


def _load_app(path, boot, board):
    """The app module; the default app if the app fails to load (the device stays
    reachable, and can be updated)."""
    try:
        return _import_app(path)
    except Exception as e:  # a SyntaxError, a missing module, the app's own error
        log("the app failed to load:")
        sys.print_exception(e)
        _failed_start(boot, board)
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
