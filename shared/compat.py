# Everything that differs between MicroPython and CPython, and nothing else.
# Each fallback is local and explicit (try/except ImportError), never scattered.
try:
    from micropython import const
except ImportError:  # CPython
    def const(value):
        return value

try:
    from os import urandom
except ImportError:  # some MicroPython ports keep it elsewhere
    from uos import urandom

import hashlib

IS_MICROPYTHON = False
try:
    import sys
    IS_MICROPYTHON = sys.implementation.name == "micropython"
except AttributeError:
    pass


def sha256(data=b""):
    return hashlib.sha256(data).digest()
