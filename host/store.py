"""The registry as the running server sees it: nothing here blocks the event loop.

Two implementations answer the same calls: `LocalStore` (below: the SQLite registry on one
worker thread) and the cluster's store on NATS KV and JetStream (`host/cluster.py`).

    bound_key(id) -> key or None         synchronous: the core asks it inside a handshake
    await device(id) -> Device or None
    await enrol_device(id, key, now) -> True if registered now
    await bind_key(id, key) -> the key bound after (binds `key` if none was)
    await replace_token_hash(id, old, new) -> True if the token hash was `old` and is now
                                         `new` (a token migrating to its fast stored form)
    set_online(id, online, now)          fire and forget; kept in call order
    await enqueue(target, sender, msg_id, inner, now) -> codec QUEUED | QUEUE_FULL | UNKNOWN_TARGET
                                         QUEUED only once the packet is durably stored
    await take_queue(target, now) -> [Queued], oldest first, removed from the store
    await removed_devices(ids) -> those of `ids` no longer registered, or None when
                                         nothing changed since the last call
    await housekeeping(now)              periodic: expire old packets
    await list_devices() -> [DeviceInfo] every registered device (the status page)
    await queue_totals() -> (packets, bytes) in the offline queue, all targets together
    await start() / await stop()         the online flags cleared, the store closed

Ids are canonical id text (`registry.id_text`).
"""
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from host.registry import Registry

log = logging.getLogger("realm")


class LocalStore:
    """The SQLite registry behind one worker thread.

    One thread, so the calls run in the order they were made: a packet stored before a
    target logs in is in the `take_queue` that follows, and online flags never swap.
    Only `bound_key` reads on the loop's thread (its own connection; a WAL read is short).
    """

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._db = self._worker.submit(Registry, data_dir).result()  # used on the worker only
        self._reader = Registry(data_dir)
        self._version = None
        self.loop = None

    def _run(self, func, *args):
        return asyncio.get_running_loop().run_in_executor(self._worker, func, *args)

    async def start(self):
        self.loop = asyncio.get_running_loop()
        await self._run(self._db.clear_online)

    async def stop(self):
        await self._run(self._db.clear_online)
        await self._run(self._db.close)
        self._worker.shutdown(wait=True)
        self._reader.close()

    def bound_key(self, device_id):
        return self._reader.bound_key(device_id)

    def device(self, device_id):
        return self._run(self._db.device, device_id)

    def enrol_device(self, device_id, key, now):
        return self._run(self._db.enrol_device, device_id, key, now)

    def bind_key(self, device_id, key):
        return self._run(self._db.bind_key, device_id, key)

    def replace_token_hash(self, device_id, old, new):
        return self._run(self._db.replace_token_hash, device_id, old, new)

    def set_online(self, device_id, online, now):
        future = self._worker.submit(self._db.set_online, device_id, online, now)
        future.add_done_callback(_log_failure)

    def enqueue(self, target, sender, msg_id, inner, now):
        return self._run(self._db.enqueue, target, sender, msg_id, inner, now)

    def take_queue(self, target, now):
        return self._run(self._db.take_queue, target, now)

    def removed_devices(self, ids):
        return self._run(self._removed_devices, ids)

    def _removed_devices(self, ids):
        version = self._db.data_version()  # changes when another process (an admin) commits
        if version == self._version:
            return None
        self._version = version
        known = self._db.device_ids()
        return [i for i in ids if i not in known]

    def housekeeping(self, now):
        return self._run(self._db.expire, now)

    def list_devices(self):
        return self._run(self._db.list_devices)

    def queue_totals(self):
        return self._run(self._db.queue_totals)


def _log_failure(future):
    if not future.cancelled() and future.exception() is not None:
        log.warning("registry update failed: %s", future.exception())
