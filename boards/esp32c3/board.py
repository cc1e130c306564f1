# Board profile: ESP32-C3-DevKitM-1 (RISC-V, one RGB LED).
from espressif import (join_wifi as join_network, wifi_rssi as rssi, restart, watchdog, ota,
                       uart_opener, status_led, PixelLed)

NAME = "esp32c3"
MPY_MARCH = "rv32imc"
LIBS = ("espressif",)
HAS_WIFI = True
STATE_DIR = "/state"
# UART0 (GPIO21/20) is the console; UART1 can use any free pins.
SERIAL = {"uart": 1, "tx": 4, "rx": 5, "baud": 115200}
RESET_AFTER_FLASH = True

open_serial = uart_opener(SERIAL)
show_status = status_led(lambda: PixelLed(8))  # WS2812 of DevKitM-1
