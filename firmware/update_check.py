# Loaded at boot, before anything else takes the heap, when an update's header was
# fetched before the restart (firmware/updating.py): is it one this device may install?
import json
import os
import struct
import sys
from binascii import unhexlify

from shared import update
from shared.update import UpdateError
from firmware.slotfiles import ota_partitions, read_json, write_json
from firmware.updating import HEADER_FIXED, IMAGE_STATE, INDEX_PATH, UPDATE_STATE, refusal


def check(boot, config, board):
    """At boot, before anything else takes the heap: check the header fetched before the
    restart (signature, target, version, size, space). The pending update's phase becomes
    "transfer", or "refused" with the reason, which the service reports after Welcome."""
    pending = boot["slots"] + UPDATE_STATE
    p = read_json(pending)
    header = p["slot"] + "/header"
    try:
        with open(header, "rb") as f:
            prefix = f.read(HEADER_FIXED)
            try:
                manifest = json.load(f)
            except ValueError:
                manifest = None  # the check says it is malformed
        from shared import bundle, ed25519
        if bundle.header_size(prefix) != p["header_size"]:
            raise UpdateError(update.BAD_BUNDLE, "the header's size is not the offer's")
        ota = ota_partitions(board)
        image = read_json(boot["slots"] + IMAGE_STATE) or {}
        m = bundle.check(prefix, unhexlify(p["manifest_hash"]), manifest,
                         config["release_keys"], ed25519.verify, board.NAME, board.MPY_MARCH,
                         mpy_version(), boot["version"], ota is not None, image.get("version"))
        if p["header_size"] + m["files_size"] != p["size"]:
            raise UpdateError(update.BAD_BUNDLE, "the offer's size is not the manifest's")
        try:
            st = os.statvfs(p["slot"])
            free = st[0] * st[4]
        except (OSError, AttributeError):
            free = None
        # An image goes into its OTA partition (firmware/update_image.py checks its size).
        if m["kind"] == "app" and free is not None and free < m["files_size"] + 4096:
            raise UpdateError(update.NO_SPACE, "%d bytes needed, %d free on flash"
                              % (m["files_size"], free))
        with open(p["slot"] + "/index", "wb") as f:
            for path, size, digest, offset in m["files"]:
                raw = path.encode()
                if len(raw) > INDEX_PATH:
                    raise UpdateError(update.BAD_BUNDLE, "path over %d bytes: %s"
                                      % (INDEX_PATH, path))
                f.write(raw + bytes(INDEX_PATH - len(raw)) + struct.pack(">II", size, offset)
                        + unhexlify(digest))
        p["phase"] = "transfer"
        p["version"] = m["version"]
        p["kind"] = m["kind"]
    except Exception as e:  # a refusal, or anything this header makes go wrong
        e = refusal(e)
        p["phase"] = "refused"
        p["reason"] = e.reason
        p["detail"] = str(e)
    write_json(pending, p)


def mpy_version():
    mpy = getattr(sys.implementation, "_mpy", 0)
    return "%d.%d" % (mpy & 0xFF, (mpy >> 8) & 3)
