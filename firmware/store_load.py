# Reading the device's state at boot (the files of firmware/store.py), checked. Loaded by
# Store.load and unloaded by the start-up (firmware/starting.py) once the device is
# ready: a running device never reads its state again.
from shared import crypto
from shared.compat import const
from firmware.store import StoreError, makedirs

_KEY = const(32)
_PEER = const(48)


def load(store, private):
    """Fill `store` from its folder, as Store.load says."""
    makedirs(store.folder)
    identity = _read(store, "identity", 2 * _KEY)
    if identity is not None and (private is None or identity[:_KEY] == private):
        store.private, store.public = identity[:_KEY], identity[_KEY:]
    else:
        if private is None:
            store.private, store.public = crypto.generate_keypair()
        else:
            store.private, store.public = private, crypto.public_key(private)
        store._write("identity", store.private + store.public)
        # A new key pair makes any old pin useless (section 5, device rule 3).
        store._remove("realm")
    realm = _read(store, "realm", 2 * _KEY)
    if realm is not None:
        store.realm_public = realm[:_KEY]
        store.dh2 = realm[_KEY:] if realm[_KEY:] != bytes(_KEY) else None
    refused = _read(store, "refused")
    store.refused = refused.decode() if refused is not None else None
    boot = _read(store, "boot")
    if boot is not None:
        # Never guess: a boot count that went back would reuse e2e nonces.
        if not boot.isdigit():
            raise _damaged(store, "boot", len(boot))
        store.boot = int(boot)
    peers = _read(store, "peers") or b""
    if len(peers) % _PEER:
        raise _damaged(store, "peers", len(peers))
    store.peers = [(peers[i:i + 16], peers[i + 16:i + _PEER])
                   for i in range(0, len(peers), _PEER)]


def _read(store, name, size=None):
    try:
        with open(store._path(name), "rb") as f:
            data = f.read()
    except OSError:
        return None
    if size is not None and len(data) != size:
        raise _damaged(store, name, len(data))
    return data


def _damaged(store, name, size):
    return StoreError("state file %s is damaged (%d bytes): delete it to start over "
                      "(for identity, the realm's operator must then unbind the device)"
                      % (store._path(name), size))
