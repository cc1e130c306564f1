# The device's one JSON config file, checked at boot: a bad field stops the device
# with a message that names it, before anything touches the network or the flash.
import json
from binascii import unhexlify

from shared.codec import uuid_from_str
from shared.compat import const

DEFAULT_PORT = const(7711)
# Reconnect delays (ms): capped exponential backoff with jitter; authentication and key
# errors wait auth_ms. Tests shorten them through the config's "reconnect" object.
DEFAULT_RECONNECT = {"min_ms": 1000, "max_ms": 60000, "auth_ms": 300000}
DEFAULT_HANDSHAKE_MS = const(30000)
_KNOWN = ("device_id", "token", "name", "realm", "realm_key", "wifi", "reconnect",
          "handshake_ms", "app")


class ConfigError(Exception):
    pass


class Config:
    """The validated config. device_id and realm_key are raw bytes; `app` is the
    free-form object the user's app.py may read."""

    def __init__(self, raw, has_wifi):
        _check_object(raw, "the config")
        for key in raw:
            if key not in _KNOWN:
                raise ConfigError("%s: unknown field (known: %s)" % (key, ", ".join(_KNOWN)))
        self.device_id_str = _text(raw, "device_id", "device_id")
        try:
            self.device_id = uuid_from_str(self.device_id_str)
        except ValueError:
            raise ConfigError("device_id: not a UUID (8-4-4-4-12 hex): %r" % self.device_id_str)
        self.token = _text(raw, "token", "token")
        if not 16 <= len(self.token.encode()) <= 64:
            raise ConfigError("token: must be 16 to 64 bytes of UTF-8, got %d"
                              % len(self.token.encode()))
        self.name = _text(raw, "name", "name")
        self._realm(raw.get("realm"))
        self.realm_key = None
        if raw.get("realm_key") is not None:
            self.realm_key = _hex_key(raw["realm_key"], "realm_key")
        self.wifi = None
        if has_wifi and self.serial is None:
            wifi = raw.get("wifi")
            _check_object(wifi, "wifi")
            self.wifi = {"ssid": _text(wifi, "ssid", "wifi.ssid"),
                         "password": _text(wifi, "password", "wifi.password", empty=True)}
        self.reconnect = dict(DEFAULT_RECONNECT)
        if "reconnect" in raw:
            self._reconnect(raw["reconnect"])
        self.handshake_ms = _int(raw.get("handshake_ms", DEFAULT_HANDSHAKE_MS),
                                 "handshake_ms", 100, 600000)
        self.app = raw.get("app") or {}

    def _realm(self, realm):
        _check_object(realm, "realm")
        self.host = self.port = self.serial = None
        if "serial" in realm:
            if "host" in realm or "port" in realm:
                raise ConfigError("realm: give either host and port, or serial, not both")
            self.serial = realm["serial"]
            if isinstance(self.serial, dict):
                for key in self.serial:
                    if key not in ("uart", "tx", "rx", "baud", "path"):
                        raise ConfigError("realm.serial.%s: unknown field" % key)
                    if key == "path":
                        _text(self.serial, "path", "realm.serial.path")
                    else:
                        _int(self.serial[key], "realm.serial." + key, 0, 4000000)
            elif not isinstance(self.serial, str) or not self.serial:
                raise ConfigError("realm.serial: a tty path, or an object with uart, tx, rx, "
                                  "baud")
        else:
            self.host = _text(realm, "host", "realm.host")
            self.port = _int(realm.get("port", DEFAULT_PORT), "realm.port", 1, 65535)

    def _reconnect(self, reconnect):
        _check_object(reconnect, "reconnect")
        for key in reconnect:
            if key not in DEFAULT_RECONNECT:
                raise ConfigError("reconnect.%s: unknown field (known: min_ms, max_ms, "
                                  "auth_ms)" % key)
            self.reconnect[key] = _int(reconnect[key], "reconnect." + key, 10, 86400000)
        if self.reconnect["max_ms"] < self.reconnect["min_ms"]:
            raise ConfigError("reconnect.max_ms: must not be under reconnect.min_ms")

    def link_name(self):
        if self.serial is not None:
            return "serial %s" % (self.serial,)
        return "%s:%d" % (self.host, self.port)


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
        return Config(raw, has_wifi)
    except ConfigError as e:
        raise ConfigError("%s: %s" % (path, e))


def _check_object(value, what):
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


def _hex_key(value, what):
    if not isinstance(value, str) or len(value) != 64:
        raise ConfigError("%s: must be 64 hex digits (a 32-byte public key)" % what)
    try:
        return unhexlify(value)
    except Exception:  # binascii.Error on CPython, ValueError on MicroPython
        raise ConfigError("%s: must be 64 hex digits (a 32-byte public key)" % what)
