# Board profile: generic ESP32 DevKit (ESP32-WROOM-32, no PSRAM).
# Everything the runtime needs to know about this board, and nothing else.
from espressif import (join_wifi as join_network, wifi_rssi as rssi, restart, watchdog, ota,
                       uart_opener, status_led, PinLed)

NAME = "esp32"
MPY_MARCH = "xtensawin"  # mpy-cross -march for this chip
LIBS = ("espressif",)  # modules from boards/common/ this profile imports
HAS_WIFI = True
STATE_DIR = "/state"  # on the internal flash filesystem (LittleFS)
# UART2 on its usual DevKit pins; UART1's default pins clash with the SPI flash.
SERIAL = {"uart": 2, "tx": 17, "rx": 16, "baud": 115200}
RESET_AFTER_FLASH = True

open_serial = uart_opener(SERIAL)
show_status = status_led(lambda: PinLed(2))  # the blue LED of most DevKit boards
