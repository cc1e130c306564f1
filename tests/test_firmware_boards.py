"""The ESP32-family board profiles, run under MicroPython against stand-ins for the
`machine`, `network`, `neopixel` and `esp32` modules: what each one asks of the hardware to
join Wi-Fi, open the realm's UART, show the status, restart and find its OTA partitions."""
import ast
import os
import subprocess

import pytest

from tools.harness import ROOT, micropython

FAKES = {
    "machine.py": '''
calls = []
class Pin:
    OUT = 1
    def __init__(self, n, mode=None):
        self.n = n
        calls.append(("Pin", n))
    def value(self, v):
        calls.append(("led", v))
class UART:
    def __init__(self, uart, baudrate, tx, rx, timeout, rxbuf):
        calls.append(("UART", uart, baudrate, tx, rx))
def reset():
    calls.append(("reset",))
''',
    "network.py": '''
STA_IF = 0
calls = []
class WLAN:
    polls = 0
    def __init__(self, interface):
        pass
    def active(self, on):
        calls.append(("active", on))
    def isconnected(self):
        WLAN.polls += 1
        return WLAN.polls > 3
    def connect(self, ssid, password):
        calls.append(("connect", ssid, password))
    def ifconfig(self):
        return ("10.0.0.7", "255.255.255.0", "10.0.0.1", "10.0.0.1")
    def status(self, what):
        return {"rssi": -61}[what]
''',
    "neopixel.py": '''
import machine
class NeoPixel:
    def __init__(self, pin, n):
        self.px = [None] * n
    def __setitem__(self, i, value):
        self.px[i] = value
    def write(self):
        machine.calls.append(("pixel", self.px[0]))
''',
    "esp32.py": '''
ota = True  # built with two OTA partitions
class Partition:
    RUNNING = 1
    def __init__(self, which):
        pass
    def get_next_update(self):
        if not ota:
            raise OSError(2)  # ENOENT, as MicroPython's esp32 module says
        return Partition(0)
''',
    "check.py": '''
import sys
sys.path[:0] = sys.argv[1:]
import asyncio
import board, machine, network
logs = []
asyncio.run(board.join_network({"ssid": "home", "password": "pw"}, logs.append))
print(repr(network.calls))
print(repr(logs))
print(repr(board.rssi()))
board.open_serial({"baud": 9600})
board.open_serial(True)
board.show_status("online")
board.show_status("refused")
board.restart()
print(repr(machine.calls))
import esp32
print(repr([board.ota() is esp32.Partition, setattr(esp32, "ota", False), board.ota()]))
''',
}


@pytest.mark.parametrize("board, uart, led", [
    ("esp32", ("UART", 2, 9600, 17, 16), [("Pin", 2), ("led", 1), ("led", 0)]),
    ("esp32s3", ("UART", 1, 9600, 17, 18), [("Pin", 48), ("pixel", (0, 16, 0)),
                                            ("pixel", (16, 0, 16))]),
    ("esp32c3", ("UART", 1, 9600, 4, 5), [("Pin", 8), ("pixel", (0, 16, 0)),
                                          ("pixel", (16, 0, 16))]),
])
def test_esp32_profiles_drive_the_hardware(tmp_path, board, uart, led):
    for name, source in FAKES.items():
        (tmp_path / name).write_text(source)
    boards = os.path.join(ROOT, "boards")
    proc = subprocess.run([micropython(), str(tmp_path / "check.py"), str(tmp_path),
                           os.path.join(boards, board), os.path.join(boards, "common")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wifi, logs, rssi, machine, ota = [ast.literal_eval(line)
                                      for line in proc.stdout.splitlines()]
    assert wifi == [("active", True), ("connect", "home", "pw")]
    assert logs == ["joining Wi-Fi 'home'", "Wi-Fi up, address 10.0.0.7"]
    assert rssi == -61  # for the DeviceReport
    default_uart = (uart[0], uart[1], 115200) + uart[3:]
    assert machine == [uart, default_uart] + led + [("reset",)]
    # Firmware images: the OTA partitions when the build has two, else None (refused).
    assert ota == [True, None, None]
