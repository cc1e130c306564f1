# The Realm protocol core: sans-IO, runs unchanged on MicroPython and CPython.
PROTOCOL_VERSION = 1
