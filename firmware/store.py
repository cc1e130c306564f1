# The device's identity and what it has learnt, on flash, in one folder of small
# binary files. Every write goes to a temporary file first and is then renamed over the
# old one, so a power cut leaves the old file or the new one, never half of each.
#
#   identity   private(32) | public(32): made on first boot (or given by the config),
#              kept for good
#   realm      R_pub(32) | dh2(32): the pinned realm key (PROTOCOL.md section 5)
#   refused    why the pinned realm refused us: set on a realm key change, cleared on re-pin
#   boot       the boot count (section 8), decimal text
#   peers      records of peer id(16) | key(32), oldest first: the Endpoint's pins
#              (trust on first use; the Endpoint bounds how many)
#
# Reading and checking the files (Store.load) is done once, at boot, by
# firmware/store_load.py, which the start-up unloads afterwards (0.9 KB of heap).
import os

from shared.compat import const

_KEY = const(32)


class StoreError(Exception):
    pass


class Store:
    def __init__(self, folder):
        self.folder = folder
        self.private = self.public = None
        self.realm_public = self.dh2 = None
        self.refused = None
        self.boot = 0
        self.peers = []  # (peer id, key) pairs, oldest first

    def load(self, private=None):
        """Read everything (the folder is made if missing); make the device key pair on
        first boot. `private`: the key the config gives (made at provisioning and bound by
        the realm); it replaces another. StoreError if a file is damaged. -> self."""
        from firmware.store_load import load
        load(self, private)
        return self

    # -- the boot count ---------------------------------------------------------
    def next_boot(self):
        """Count this boot and write it before any end-to-end packet uses it."""
        self.set_boot(self.boot + 1)
        return self.boot

    def set_boot(self, boot):
        self._write("boot", b"%d" % boot)
        self.boot = boot

    # -- the realm pin ----------------------------------------------------------
    def pin_realm(self, realm_public, dh2=None):
        """Keep the realm's key (after a Welcome, or given by the user) and dh2 for it."""
        if realm_public == self.realm_public and dh2 == self.dh2:
            return
        self.realm_public, self.dh2 = realm_public, dh2
        self._write("realm", realm_public + (dh2 or bytes(_KEY)))

    def unconfirm_realm(self):
        """Forget dh2: the next handshake takes the first-contact path (see launch.py)."""
        if self.realm_public is not None and self.dh2 is not None:
            self.pin_realm(self.realm_public)

    def refuse_realm(self, why):
        """The pinned realm offered another key: stay away until the user re-pins."""
        self.refused = why
        self._write("refused", why.encode())

    def repin(self, realm_public=None):
        """The user's explicit re-pin: trust realm_public, or the next realm (None)."""
        if realm_public is None:
            self._remove("realm")
            self.realm_public = self.dh2 = None
        else:
            self.pin_realm(realm_public)
        self._remove("refused")
        self.refused = None

    # -- peer keys --------------------------------------------------------------
    def save_peers(self, pins):
        """Write the pinned peer keys: (peer id, key) pairs, oldest first."""
        self.peers = pins
        self._write("peers", b"".join(peer + key for peer, key in pins))

    # -- files ------------------------------------------------------------------
    def _path(self, name):
        return self.folder + "/" + name

    def _write(self, name, data):
        path = self._path(name)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.rename(path + ".tmp", path)

    def _remove(self, name):
        try:
            os.remove(self._path(name))
        except OSError:
            pass


def makedirs(folder):
    path = "/" if folder.startswith("/") else ""
    for part in folder.split("/"):
        if part:
            path += part
            try:
                os.mkdir(path)
            except OSError:
                pass  # exists already
            path += "/"
