# Helpers for the core tests, which run on both CPython (pytest) and the
# MicroPython unix port (tests/mprun.py). Only MicroPython-safe Python here.
import gc
import json
import sys
from binascii import hexlify, unhexlify

from shared.errors import ProtocolError, code_name

VECTORS_DIR = None  # set by conftest.py / mprun.py; None means "absent"
# Absent vectors fail the tests that read them, unless the developer asked to skip them
# (REALM_SKIP_VECTORS=1; conftest.py sets this). CI has them: a skip there would hide
# that the core was never checked against the spec's bytes.
SKIP_MISSING_VECTORS = False
MISSING_VECTORS = "../shared/vectors"  # where they were looked for, for the message


try:  # under pytest a skip is pytest's own, so it is reported as a skip
    import pytest
    Skip = pytest.skip.Exception
except ImportError:
    class Skip(Exception):
        pass


def unhex(s):
    return unhexlify(s)


def tohex(b):
    return hexlify(b).decode()


def vectors(name):
    """Load ../shared/vectors/NAME.json. An absent folder fails the test, or skips it if
    the developer asked (REALM_SKIP_VECTORS=1)."""
    if VECTORS_DIR is None:
        if SKIP_MISSING_VECTORS:
            raise Skip("vectors folder %s not found (REALM_SKIP_VECTORS=1)" % MISSING_VECTORS)
        raise AssertionError("vectors folder %s not found: put the reference folder "
                             "beside the repository, point REALM_VECTORS at it, or set "
                             "REALM_SKIP_VECTORS=1 to skip the tests that read it"
                             % MISSING_VECTORS)
    with open(VECTORS_DIR + "/" + name + ".json") as f:
        return json.load(f)


def expect_error(code, fn, *args):
    """Call fn(*args) and check that it raises ProtocolError with `code` (name or int)."""
    try:
        fn(*args)
    except ProtocolError as e:
        got = e.code if isinstance(code, int) else code_name(e.code)
        if got != code:
            raise AssertionError("expected %s, got %s (%s)" % (code, got, e))
        return e
    raise AssertionError("expected ProtocolError %s, nothing raised" % (code,))


def check(cond, what=""):
    # Not `assert`: the suite must also hold under micropython -O.
    if not cond:
        raise AssertionError(what)


def eq(a, b, what=""):
    if a != b:
        raise AssertionError("%s: %r != %r" % (what, a, b))


def chunkings(data):
    """The chunkings every decoder must accept: whole, byte at a time, and uneven splits.
    Each but the whole is a Chunks, made chunk by chunk as it is read: as a list, an
    8 KB frame byte at a time would take MicroPython ~0.5 MB."""
    yield [data]
    for size in (1, 2, 3, 7, 64):
        yield Chunks(data, size)


class Chunks:
    """data in size-byte chunks (the last may be shorter): iterable, len(), and indexable
    like a list (chunks[-1], chunks[:-1]), each chunk cut when it is asked for."""

    def __init__(self, data, size):
        self._data = data
        self._size = size

    def __len__(self):
        return (len(self._data) + self._size - 1) // self._size

    def __iter__(self):
        for start in range(0, len(self._data), self._size):
            yield self._data[start:start + self._size]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("chunk index out of range")
        return self._data[index * self._size:(index + 1) * self._size]


IS_MICROPYTHON = sys.implementation.name == "micropython"


def squeezed(call, holes, hole, room=0):
    """call() on MicroPython with its heap full but for `holes` free blocks of `hole`
    bytes (and one of `room` bytes if given): a device's heap after a while, fragmented,
    and what a path must fit in. A MemoryError says it asked for more blocks of that size
    at once. CPython has no heap to squeeze: there call() just runs, and the caller still
    checks what it returns."""
    if not IS_MICROPYTHON:
        return call()
    gc.collect()
    spare = bytearray(room) if room else None  # first, so that no block splits it later
    blocks = []
    crumbs = None
    try:
        while True:
            blocks.append(bytearray(hole))
    except MemoryError:
        pass
    try:
        while True:  # the space between the blocks too: a chain, no list to grow
            crumbs = (bytearray(16), crumbs)
    except MemoryError:
        pass
    for i in range(holes):
        blocks[2 * i + 1] = None  # not side by side: each a hole of its own
    spare = None
    gc.collect()
    try:
        return call()
    finally:
        blocks = crumbs = None
        gc.collect()
