# Starting a device: the board profile, the config, the state on flash, the runtime,
# and the user's app (app.py if present, else the default app).
import gc
import sys

# Loaded one at a time, deepest first, with a collection before each: the loader's
# scratch buffers then leave no holes between the modules, and the heap keeps large free
# runs (at 128 KB: a 21 KB run instead of 2 KB when everything loads at once).
_MODULES = ("asyncio", "shared.errors", "shared.protocol", "shared.codec", "shared.x25519",
            "shared.crypto", "shared.framing", "shared.events", "shared.connection",
            "shared.device", "shared.report", "shared.e2e", "shared.endpoint",
            "board", "firmware.store", "firmware.runtime", "firmware.api")


_speaker = "device"  # the config's name once it is read: each line says which device speaks


def log(message):
    print("%s: %s" % (_speaker, message))


def start(config_path="config.json", state_dir=None, app=None, repin=False):
    """Run the device until power-off. Returns 1 if the config or state is unusable.

    app: the path of the app's .py file (default: the module `app` if there is one).
    repin: the user's explicit re-pin: trust the config's realm_key if it has one, else
    whatever realm answers next.
    """
    global _speaker
    for name in _MODULES:
        gc.collect()
        __import__(name)
    import asyncio
    import board
    from firmware.api import Device
    from firmware.runtime import Runtime
    from firmware.store import Store, StoreError
    app = _import_app(app)  # compiled now, before the long-lived objects are made
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
    runtime = Runtime(config, store, board, log)
    runtime.app_version = getattr(app, "__version__", None)
    device = Device(runtime)
    log("device %s (%s), boot %d, key fingerprint %s" % (
        config["device_id_str"], config["name"], store.boot, _hex(_fingerprint(store.public))))
    gc.collect()
    try:
        asyncio.run(_main(runtime, device, app))
    except Exception as e:  # a bug or no memory left: start afresh rather than sit dead
        log("the runtime failed; restarting the board:")
        sys.print_exception(e)
        board.restart()


async def _main(runtime, device, app):
    import asyncio
    task = asyncio.create_task(runtime.run())
    try:
        started = app.main(device)
        if hasattr(started, "send"):  # an async main: a generator on MicroPython
            await started
    except Exception as e:  # the app's bug must not take the realm link down with it
        log("the app failed:")
        sys.print_exception(e)
    await task


def _read_config(path, has_wifi):
    """The checked config; the checking code is unloaded afterwards (5 KB of heap)."""
    import firmware
    from firmware import config
    try:
        return config.load(path, has_wifi)
    except config.ConfigError as e:
        raise ValueError(str(e))
    finally:
        del sys.modules["firmware.config"]
        del firmware.config


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
