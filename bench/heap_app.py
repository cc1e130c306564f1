# For `make bench-device` and tests/test_device_heap.py: the default app (print each
# message) plus one report of the heap in use once the device has been online and idle
# for a second, and of the interpreter's name table ("qstr pool: n_pool=..., n_qstr=...").
import asyncio
import gc
import micropython

from firmware import default_app


async def main(device):
    default_app.main(device)
    await device.wait_online()
    await asyncio.sleep_ms(1000)
    gc.collect()
    print("heap", gc.mem_alloc(), gc.mem_free())
    micropython.qstr_info()
