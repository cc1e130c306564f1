# The device's one JSON config file, checked at boot: a bad field stops the device
# with a message that names it, before anything touches the network or the flash.
# The result is a plain dict, so this module can be unloaded once the device runs.
import json
from binascii import unhexlify

from shared.codec import uuid_from_str
from shared.compat import const
from shared.connection import RECONNECT_DEFAULTS
from shared.protocol import (DEFAULT_PORT, HANDSHAKE_TIMEOUT_MS, MAX_TOKEN_BYTES,
                             MIN_TOKEN_BYTES)

# Updates (docs/UPDATES.md): a new version is confirmed once it has been online this
# long; one that is not confirmed this long after its start is restarted (a failed start).
# reuse: copy the files the running version has already instead of fetching them (false
# only to measure a whole transfer). offer_ms: how long a start without the app for an
# offer kept on flash waits to reach the realm before it drops the offer.
# Private module constants are const(): a device then keeps no name for them.
_DEFAULT_UPDATE = const((("confirm_ms", 30000), ("trial_ms", 300000), ("reuse", True),
                         ("offer_ms", 60000)))
_MAX_RELEASE_KEYS = const(2)  # the current release key and the next one, while it is rotated
_KNOWN = const(("device_id", "token", "name", "realm", "realm_key", "private_key", "peers",
                "wifi", "reconnect", "handshake_ms", "receive_buffer", "send_buffer", "app",
                "updaters", "release_keys", "update"))
_SERIAL_KEYS = const(("uart", "tx", "rx", "baud", "path"))


class ConfigError(Exception):
    pass


def load(path, has_wifi):
    """Read and check the config file; ConfigError names the file and the bad field."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("%s: cannot read the config file" % path)
    except ValueError as e:
        raise ConfigError("%s: not valid JSON (%s)" % (path, e))
    try:
        return validate(raw, has_wifi)
    except ConfigError as e:
        raise ConfigError("%s: %s" % (path, e))


def validate(raw, has_wifi):
    """The checked config: device_id and realm_key as raw bytes, every default filled
    in, "host"/"port" or "serial" for the link, "wifi" only where it is needed, and
    "app": the free-form object the user's app.py may read."""
    _object(raw, "the config")
    for key in raw:
        if key not in _KNOWN:
            raise ConfigError("%s: unknown field (known: %s)" % (key, ", ".join(_KNOWN)))
    c = {"device_id_str": _text(raw, "device_id", "device_id")}
    try:
        c["device_id"] = uuid_from_str(c["device_id_str"])
    except ValueError:
        raise ConfigError("device_id: not a UUID (8-4-4-4-12 hex): %r" % c["device_id_str"])
    c["token"] = _text(raw, "token", "token")
    if not MIN_TOKEN_BYTES <= len(c["token"].encode()) <= MAX_TOKEN_BYTES:
        raise ConfigError("token: must be %d to %d bytes of UTF-8, got %d" % (
            MIN_TOKEN_BYTES, MAX_TOKEN_BYTES, len(c["token"].encode())))
    c["name"] = _text(raw, "name", "name")
    _realm(raw.get("realm"), c)
    c["realm_key"] = None
    if raw.get("realm_key") is not None:
        c["realm_key"] = _hex_key(raw["realm_key"], "realm_key")
    c["private_key"] = None
    if raw.get("private_key") is not None:
        c["private_key"] = _hex_key(raw["private_key"], "private_key", "private")
    c["peers"] = _peers(raw.get("peers", {}))
    c["wifi"] = None
    if has_wifi and c["serial"] is None:
        wifi = raw.get("wifi")
        _object(wifi, "wifi")
        c["wifi"] = {"ssid": _text(wifi, "ssid", "wifi.ssid"),
                     "password": _text(wifi, "password", "wifi.password", empty=True)}
    c["reconnect"] = _reconnect(raw.get("reconnect", {}))
    c["handshake_ms"] = _int(raw.get("handshake_ms", HANDSHAKE_TIMEOUT_MS), "handshake_ms",
                             100, 600000)
    # Bytes the receive buffer starts with (docs/FIRMWARE.md, "Message size at 128k"):
    # 4120 takes a packet of 4096 without asking a fragmented heap for a block its size.
    c["receive_buffer"] = _int(raw.get("receive_buffer", 512), "receive_buffer", 64, 65535 + 24)
    # Bytes of the buffer frames are built in, made at the same moment (0: none, each
    # frame a block of its own): 4120 sends a packet of 4096 without asking for a block.
    c["send_buffer"] = _int(raw.get("send_buffer", 0), "send_buffer", 0, 65535 + 24)
    c["app"] = raw.get("app") or {}
    _updates(raw, c)
    return c


def _updates(raw, c):
    updaters = raw.get("updaters", [])
    if not isinstance(updaters, list):
        raise ConfigError("updaters: must be a list of device ids")
    for i, text in enumerate(updaters):
        try:
            uuid_from_str(text if isinstance(text, str) else "")
        except ValueError:
            raise ConfigError("updaters[%d]: not a device id (8-4-4-4-12 hex): %r" % (i, text))
    c["updaters"] = [text.lower() for text in updaters]
    keys = raw.get("release_keys", [])
    if not isinstance(keys, list) or len(keys) > _MAX_RELEASE_KEYS:
        raise ConfigError("release_keys: must be a list of at most %d keys" % _MAX_RELEASE_KEYS)
    c["release_keys"] = [_hex_key(key, "release_keys[%d]" % i) for i, key in enumerate(keys)]
    given = raw.get("update", {})
    _object(given, "update")
    c["update"] = dict(_DEFAULT_UPDATE)
    for key in given:
        if key not in c["update"]:
            raise ConfigError("update.%s: unknown field (known: confirm_ms, trial_ms, reuse, "
                              "offer_ms)" % key)
        if key == "reuse":
            if not isinstance(given[key], bool):
                raise ConfigError("update.reuse: must be true or false")
            c["update"][key] = given[key]
        else:
            c["update"][key] = _int(given[key], "update." + key, 0, 86400000)


def _realm(realm, c):
    _object(realm, "realm")
    c["host"] = c["port"] = c["serial"] = None
    if "serial" not in realm:
        c["host"] = _text(realm, "host", "realm.host")
        c["port"] = _int(realm.get("port", DEFAULT_PORT), "realm.port", 1, 65535)
        return
    if "host" in realm or "port" in realm:
        raise ConfigError("realm: give either host and port, or serial, not both")
    serial = c["serial"] = realm["serial"]
    if isinstance(serial, dict):
        for key in serial:
            if key not in _SERIAL_KEYS:
                raise ConfigError("realm.serial.%s: unknown field (known: %s)" % (
                    key, ", ".join(_SERIAL_KEYS)))
            if key == "path":
                _text(serial, "path", "realm.serial.path")
            else:
                _int(serial[key], "realm.serial." + key, 0, 4000000)
    elif not isinstance(serial, str) or not serial:
        raise ConfigError("realm.serial: a tty path, or an object with uart, tx, rx, baud")


def _peers(given):
    """{"kitchen": "<uuid>"}: names the app may send to, as {name: 16-byte id}."""
    _object(given, "peers")
    peers = {}
    for name, text in given.items():
        if not isinstance(text, str):
            raise ConfigError("peers.%s: must be a device id (UUID text)" % name)
        try:
            peers[name] = uuid_from_str(text)
        except ValueError:
            raise ConfigError("peers.%s: not a UUID (8-4-4-4-12 hex): %r" % (name, text))
    return peers


def _reconnect(given):
    _object(given, "reconnect")
    # Reconnect delays (ms), shared/connection.py's Reconnect policy: tests shorten them.
    r = dict(RECONNECT_DEFAULTS)
    for key in given:
        if key not in RECONNECT_DEFAULTS:
            raise ConfigError("reconnect.%s: unknown field (known: min_ms, max_ms, auth_ms)"
                              % key)
        r[key] = _int(given[key], "reconnect." + key, 10, 86400000)
    if r["max_ms"] < r["min_ms"]:
        raise ConfigError("reconnect.max_ms: must not be under reconnect.min_ms")
    return r


def _object(value, what):
    if not isinstance(value, dict):
        raise ConfigError("%s: must be a JSON object" % what)


def _text(obj, key, what, empty=False):
    value = obj.get(key)
    if value is None:
        raise ConfigError("%s: missing" % what)
    if not isinstance(value, str) or (not value and not empty):
        raise ConfigError("%s: must be a non-empty string" % what)
    return value


def _int(value, what, low, high):
    # bool is an int subclass on CPython: true would pass as 1.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError("%s: must be an integer from %d to %d, got %r" % (what, low, high,
                                                                          value))
    return value


def _hex_key(value, what, kind="public"):
    if isinstance(value, str) and len(value) == 64:
        try:
            return unhexlify(value)
        except Exception:  # binascii.Error on CPython, ValueError on MicroPython
            pass
    raise ConfigError("%s: must be 64 hex digits (a 32-byte %s key)" % (what, kind))
