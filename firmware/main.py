# The board's entry point: `make flash` copies this file to the board's root as main.py,
# which MicroPython runs after every boot.
import sys

if "/lib" not in sys.path:
    sys.path.append("lib")  # the unix port's virtual board keeps lib/ in its working folder

from firmware.launch import start

start()
