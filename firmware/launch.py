# Starting a device: the board profile, the config, the state on flash, the runtime,
# and the user's app (app.py if present, else the default app).
import asyncio
import sys

import board
from firmware.api import Device
from firmware.config import load, ConfigError
from firmware.runtime import Runtime
from firmware.store import Store, StoreError


def log(message):
    print("realm:", message)


def start(config_path="config.json", state_dir=None, app=None, repin=False):
    """Run the device until power-off. Returns 1 if the config or state is unusable.

    repin: the user's explicit re-pin: trust the config's realm_key if it has one, else
    whatever realm answers next.
    """
    board.show_status("booting")
    try:
        config = load(config_path, board.HAS_WIFI)
        store = Store(state_dir or board.STATE_DIR).load()
    except (ConfigError, StoreError) as e:
        log("cannot start: %s" % e)
        board.show_status("error")
        return 1
    if repin or (config.realm_key is not None and config.realm_key != store.realm_public):
        # A realm_key in the config that differs from the pin is the user re-pinning.
        store.repin(config.realm_key)
    runtime = Runtime(config, store, board, log)
    device = Device(runtime)
    log("device %s (%s), boot %d, key fingerprint %s" % (
        config.device_id_str, config.name, store.boot, _hex(_fingerprint(store.public))))
    asyncio.run(_main(runtime, device, app or _import_app()))


async def _main(runtime, device, app):
    task = asyncio.create_task(runtime.run())
    try:
        started = app.main(device)
        if hasattr(started, "send"):  # an async main: a generator on MicroPython
            await started
    except Exception as e:  # the app's bug must not take the realm link down with it
        log("the app failed:")
        sys.print_exception(e)
    await task


def _import_app():
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
