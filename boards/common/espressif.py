# What the ESP32-family profiles share: joining Wi-Fi, opening a UART for the realm
# link, and driving a status LED. Imported only by boards/*/board.py, never by the
# runtime, so the runtime stays free of `machine` and `network`.
import asyncio
from micropython import const

WIFI_TIMEOUT_MS = const(20000)

# Status -> (r, g, b) for an addressable LED; a plain LED is simply on when online.
_COLOURS = {"booting": (0, 0, 16), "connecting": (16, 8, 0), "online": (0, 16, 0),
            "offline": (16, 8, 0), "error": (16, 0, 0), "refused": (16, 0, 16)}


async def join_wifi(wifi, log):
    """Bring up the station interface and wait until it has an address.

    Raises OSError when the network is not joined in time, so the runtime backs off and
    tries again like for any other failed connection.
    """
    import network
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if sta.isconnected():
        return
    log("joining Wi-Fi %r" % wifi["ssid"])
    sta.connect(wifi["ssid"], wifi["password"])
    waited = 0
    while not sta.isconnected():
        if waited >= WIFI_TIMEOUT_MS:
            sta.disconnect()
            raise OSError("Wi-Fi %r not joined in %d s" % (wifi["ssid"], WIFI_TIMEOUT_MS // 1000))
        await asyncio.sleep_ms(200)
        waited += 200
    log("Wi-Fi up, address %s" % sta.ifconfig()[0])


def wifi_rssi():
    """The station's signal strength in dBm, or None when it is not connected."""
    import network
    sta = network.WLAN(network.STA_IF)
    if not sta.isconnected():
        return None
    try:
        return sta.status("rssi")
    except (OSError, ValueError):  # a port without the query
        return None


def watchdog(timeout_ms):
    """The hardware watchdog: resets the board unless fed within timeout_ms. The runtime
    starts it while a new version is on trial, so a hang counts as a failed start."""
    from machine import WDT
    return WDT(timeout=timeout_ms)


def ota():
    """esp32.Partition when this MicroPython was built with two OTA partitions (and the
    bootloader's app rollback), else None: firmware images then have nowhere to go."""
    from esp32 import Partition
    try:
        Partition(Partition.RUNNING).get_next_update()
    except OSError:  # one app partition, the default build
        return None
    return Partition


def restart():
    """A hard reset: the runtime's last resort after a failure it cannot recover from."""
    import machine
    machine.reset()


def uart_opener(defaults):
    """The profile's open_serial(serial): a machine.UART with the profile's defaults,
    overridden by the config's "serial" object (uart, tx, rx, baud). A UART is a
    stream asyncio can poll."""

    def open_serial(serial):
        from machine import UART
        opts = dict(defaults)
        if isinstance(serial, dict):
            opts.update(serial)
        if opts["uart"] == 0:
            # The console UART carries the link: a 0x03 byte must not interrupt us.
            import micropython
            micropython.kbd_intr(-1)
        return UART(opts["uart"], baudrate=opts["baud"], tx=opts["tx"], rx=opts["rx"],
                    timeout=0, rxbuf=1024)

    return open_serial


def status_led(make):
    """The profile's show_status(status); the LED is set up by make() on first use."""
    led = []

    def show_status(status):
        if not led:
            led.append(make())
        led[0].show(status)

    return show_status


class PinLed:
    """A plain LED on a GPIO: lit while the device is online."""

    def __init__(self, pin, active_high=True):
        from machine import Pin
        self._pin = Pin(pin, Pin.OUT)
        self._on = 1 if active_high else 0

    def show(self, status):
        self._pin.value(self._on if status == "online" else 1 - self._on)


class PixelLed:
    """One addressable RGB LED (WS2812): a colour per status."""

    def __init__(self, pin):
        from machine import Pin
        from neopixel import NeoPixel
        self._np = NeoPixel(Pin(pin, Pin.OUT), 1)

    def show(self, status):
        self._np[0] = _COLOURS.get(status, (0, 0, 0))
        self._np.write()
