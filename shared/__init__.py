# The Realm protocol core: sans-IO, runs unchanged on MicroPython and CPython.
PROTOCOL_VERSION = 1
RELEASE = "0.1.0"  # the release: firmware, realm and package (pyproject reads it here)
