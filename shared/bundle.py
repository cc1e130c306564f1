# An update bundle's header and manifest (docs/UPDATES.md), for the updater and the
# device. A device loads this module (and shared/ed25519.py) only to check a header.
#
#   bundle    = header | the files' bytes, back to back, in the manifest's order
#   header    = "RUB1" | key:32 | signature:64 | manifest_len:u16 | manifest (UTF-8 JSON)
#   signature = Ed25519(key, "RUB1" | SHA-256(manifest)); 64 zero bytes: unsigned
# Signing the manifest's digest lets a device hash the manifest as it arrives, write it
# to flash and parse it from there, never holding it whole in its heap.
import json
import struct
from binascii import hexlify

from shared.compat import const, sha256
from shared.update import (UpdateError, BAD_BUNDLE, NO_RELEASE_KEYS, UNSIGNED, UNKNOWN_KEY,
                           BAD_SIGNATURE, NOT_NEWER, WRONG_TARGET)

MAGIC = b"RUB1"
HEADER_FIXED = const(102)  # magic 4, key 32, signature 64, manifest_len 2
MAX_HEADER = const(16384)
NO_SIGNATURE = bytes(64)


def header_size(prefix):
    """The header's size from its first HEADER_FIXED bytes."""
    if len(prefix) < HEADER_FIXED or bytes(prefix[:4]) != MAGIC:
        raise UpdateError(BAD_BUNDLE, "not an update bundle (no RUB1 header)")
    size = HEADER_FIXED + struct.unpack_from(">H", prefix, 100)[0]
    if size > MAX_HEADER:
        raise UpdateError(BAD_BUNDLE, "manifest over %d bytes" % MAX_HEADER)
    return size


def split_header(header):
    """(key, signature, manifest bytes) of a whole header."""
    if header_size(header) != len(header):
        raise UpdateError(BAD_BUNDLE, "a header of %d bytes, its length says %d"
                          % (len(header), header_size(header)))
    return bytes(header[4:36]), bytes(header[36:100]), bytes(header[HEADER_FIXED:])


def signed_message(manifest_digest):
    return MAGIC + manifest_digest


def update_id(header):
    """An update's id: the SHA-256 of its header (manifest and signature)."""
    return sha256(header)


def fingerprint_text(key):
    return hexlify(sha256(key)).decode()[:16]


def check(prefix, manifest_digest, manifest, release_keys, verify, board, march, mpy,
          installed, images=False, installed_image=None):
    """The checked manifest of a header this device may install, else UpdateError:
    signed by one of release_keys (raw keys; verify is shared.ed25519.verify), for this
    board, and above the installed version; an app for this .mpy version and
    architecture, or a firmware image (kind "image", one file named "image") if the board
    takes images (images: it has two OTA partitions; installed_image: the version of the
    image an update installed, None if none did). prefix: the header's first
    HEADER_FIXED bytes; manifest: the manifest, bytes or parsed JSON."""
    key, signature = bytes(prefix[4:36]), bytes(prefix[36:100])
    if not release_keys:
        raise UpdateError(NO_RELEASE_KEYS, "no release key in this device's config "
                          "(release_keys): it takes no update")
    if signature == NO_SIGNATURE:
        raise UpdateError(UNSIGNED, "the manifest is not signed")
    if key not in release_keys:
        raise UpdateError(UNKNOWN_KEY, "signed by release key %s, not one this device trusts"
                          % fingerprint_text(key))
    if not verify(key, signed_message(manifest_digest), signature):
        raise UpdateError(BAD_SIGNATURE, "the signature does not match the manifest "
                          "(release key %s)" % fingerprint_text(key))
    m = parse_manifest(manifest)
    image = m["kind"] == "image"
    if m["board"] != board:
        raise UpdateError(WRONG_TARGET, "a %s bundle for board %s; this is an %s" % (
            m["kind"], m["board"], board))
    if image and not images:
        raise UpdateError(WRONG_TARGET, "a firmware image; this %s's MicroPython was built "
                          "without two OTA partitions: it takes app bundles only" % board)
    if image and [f[0] for f in m["files"]] != ["image"]:
        raise UpdateError(BAD_BUNDLE, "a firmware image bundle holds one file, \"image\"")
    if image:
        installed = installed_image
    if not newer(m["version"], installed):
        raise UpdateError(NOT_NEWER, "version %s is not above the installed %s"
                          % (m["version"], installed))
    if not image and (m["mpy"] != mpy or m["arch"] != march):
        raise UpdateError(WRONG_TARGET, "compiled for mpy %s %s; this device runs mpy %s %s"
                          % (m["mpy"], m["arch"], mpy, march))
    return m


def parse_manifest(raw):
    """The manifest (bytes, or its parsed JSON) as a dict, its fields checked; each file
    entry gets its offset in the files' bytes, and "files_size" their sum.
    UpdateError(BAD_BUNDLE) otherwise."""
    try:
        m = json.loads(str(raw, "utf-8")) if isinstance(raw, (bytes, bytearray)) else raw
        if not isinstance(m, dict) or m.get("format") != 1 or m.get("kind") not in ("app",
                                                                                    "image"):
            raise ValueError("format 1, kind app or image")
        parse_version(m["version"])
        if not isinstance(m["board"], str):
            raise ValueError("board")
        offset = 0
        for entry in m["files"]:
            path, size, digest = entry
            if not isinstance(path, str) or not path or path[0] == "/" or ".." in path \
                    or not isinstance(size, int) or size < 0 or len(digest) != 64:
                raise ValueError("file entry %r" % (entry,))
            entry.append(offset)
            offset += size
        m["files_size"] = offset
        return m
    except (ValueError, KeyError, TypeError, UnicodeError) as e:
        raise UpdateError(BAD_BUNDLE, "bad manifest: %s" % (e,))


def parse_version(text):
    """"1.2.10" -> [1, 2, 10]: dotted numbers, compared number by number."""
    parts = text.split(".") if isinstance(text, str) else ()
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() and len(p) <= 9 for p in parts):
        raise ValueError("version %r: use dotted numbers such as 1.2.0" % (text,))
    return [int(p) for p in parts]


def newer(version, installed):
    """True when version is above installed (None: nothing installed)."""
    if installed is None:
        return True
    a, b = parse_version(version), parse_version(installed)
    while len(a) < len(b):
        a.append(0)
    while len(b) < len(a):
        b.append(0)
    return a > b
