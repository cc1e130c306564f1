# Board profile: ESP32-S3-DevKitC-1 (native USB, one RGB LED).
from espressif import (join_wifi as join_network, wifi_rssi as rssi, restart, watchdog, ota,
                       uart_opener, status_led, PixelLed)

NAME = "esp32s3"
MPY_MARCH = "xtensawin"
LIBS = ("espressif",)
HAS_WIFI = True
STATE_DIR = "/state"
# UART0 (GPIO43/44) is the console; UART1 can use any free pins.
SERIAL = {"uart": 1, "tx": 17, "rx": 18, "baud": 115200}
RESET_AFTER_FLASH = True

open_serial = uart_opener(SERIAL)
show_status = status_led(lambda: PixelLed(48))  # WS2812 of DevKitC-1 v1.0 (v1.1: 38)
