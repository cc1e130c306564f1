# The event loop as the runtime sees it: milliseconds since boot, sleep_ms, wait_for_ms,
# a TCP connection, a stream over a serial port, and the free heap. These are
# MicroPython's asyncio, time and gc extras; the runtime takes them as one object, so a
# test can run it under CPython with a fake clock and fake links
# (tests/test_firmware_runtime.py).
import asyncio
import gc
import time


class Loop:
    def __init__(self):
        self._last = time.ticks_ms()
        self._ms = 0

    def now(self):
        """Milliseconds since boot that never wrap (time.ticks_ms wraps after 2**30 ms)."""
        t = time.ticks_ms()
        self._ms += time.ticks_diff(t, self._last)
        self._last = t
        return self._ms

    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(ms)

    async def wait_for_ms(self, awaitable, ms):
        """awaitable's result; asyncio.TimeoutError after ms."""
        return await asyncio.wait_for_ms(awaitable, ms)

    async def open_tcp(self, host, port):
        """A stream (readinto, write, drain, close, wait_closed) to host:port."""
        _reader, writer = await asyncio.open_connection(host, port)
        return writer

    def open_stream(self, port):
        """A stream over a port the board opened (a UART, a tty file)."""
        return asyncio.StreamReader(port)

    def free_heap(self):
        return gc.mem_free()
