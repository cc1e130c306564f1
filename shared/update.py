# The update service's messages (docs/UPDATES.md), sans-IO, for the updater
# (host/updater.py) and the device (firmware/updating.py). Service.data for service 1 is
# type:u8 | body; integers big-endian, str16 = len:u16 | UTF-8.
#
#   1 Offer   U->D  id:32 | size:u32 | header_size:u32 | version:str16
#   2 Get     D->U  tag:u32 | offset:u32 | length:u16
#   3 Chunk   U->D  tag:u32 | offset:u32 | data (the rest)
#   4 Result  D->U  id:32 | outcome:u8 | reason:u8 | version:str16 | detail:str16
#   5 Query   U->D  (empty)
#   6 Info    D->U  info:str16 (a JSON object)
#
# Kept small: a device loads it only while an update runs, so it holds the device's side
# (decoding Offer, Chunk and Query; encoding Get, Result and Info); the updater's side is
# in host/updater.py. The bundle's header and manifest are shared/bundle.py's.
import struct

from shared.compat import const

OFFER = const(1)
GET = const(2)
CHUNK = const(3)
RESULT = const(4)
QUERY = const(5)
INFO = const(6)

# Result.outcome
UPDATED = const(0)  # the new version runs and was confirmed
CURRENT = const(1)  # this bundle is installed already
INSTALLED = const(2)  # installed in the other slot; restarting into it to try it
REFUSED = const(3)  # refused: see the reason
ROLLED_BACK = const(4)  # the new version did not start; the previous one runs again

# Result.reason (with REFUSED or ROLLED_BACK; 0 otherwise): REASONS in host/updater.py
NOT_UPDATER = const(1)
NO_RELEASE_KEYS = const(2)
UNSIGNED = const(3)
UNKNOWN_KEY = const(4)
BAD_SIGNATURE = const(5)
NOT_NEWER = const(6)
WRONG_TARGET = const(7)
BAD_HASH = const(8)
BAD_BUNDLE = const(9)
NO_SPACE = const(10)
FAILED = const(11)
START_FAILED = const(12)
BUSY = const(13)
CHUNK_HEADER = const(9)  # type, tag and offset before a Chunk's data


class UpdateError(Exception):
    """A refusal: `reason` is a Result reason code, str(e) says why for people."""

    def __init__(self, reason, why):
        super().__init__(why)
        self.reason = reason


def str16(text):
    raw = text.encode()[:1024]
    return struct.pack(">H", len(raw)) + raw


def get(tag, offset, length):
    return struct.pack(">BIIH", GET, tag, offset, length)


def result(update_id, outcome, reason, version, detail):
    return (bytes((RESULT,)) + update_id + bytes((outcome, reason)) + str16(version)
            + str16(detail))


def info(text):
    return bytes((INFO,)) + str16(text)


def decode(data):
    """(type, fields) of a message to a device; UpdateError(BAD_BUNDLE) if it is
    malformed. A Chunk's data is a memoryview of `data`."""
    try:
        kind = data[0]
        if kind == OFFER and len(data) >= 43:
            return kind, (bytes(data[1:33]),) + struct.unpack_from(">II", data, 33) + (
                text(data, 41, True),)
        if kind == CHUNK and len(data) >= CHUNK_HEADER:
            return kind, struct.unpack_from(">II", data, 1) + (memoryview(data)[CHUNK_HEADER:],)
        if kind == QUERY and len(data) == 1:
            return kind, ()
    except (IndexError, ValueError, UnicodeError):
        pass
    raise UpdateError(BAD_BUNDLE, "malformed update message")


def text(data, pos, last):
    """The str16 at data[pos:]; last: it must end the message."""
    # Lengths are checked before each unpack: a short buffer is struct.error on CPython,
    # ValueError on MicroPython.
    if pos + 2 > len(data):
        raise ValueError("short")
    end = pos + 2 + struct.unpack_from(">H", data, pos)[0]
    if end > len(data) or (last and end != len(data)):
        raise ValueError("bad length")
    return str(bytes(data[pos + 2:end]), "utf-8")


def tag_of(update_id):
    """The 32-bit tag of an update (its id's first 4 bytes) that Get and Chunk carry."""
    return struct.unpack_from(">I", update_id, 0)[0]
