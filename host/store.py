"""The registry as the running server sees it: nothing here blocks the event loop.

Two implementations answer the same calls: `LocalStore` (below: the SQLite registry on one
worker thread) and the cluster's store on NATS KV and JetStream (`host/cluster.py`).

    bound_key(id) -> key or None         synchronous: the core asks it inside a handshake
    device_now(id) -> Device or None     synchronous: the record a login needs (name, token
                                         hash, key), read once at the Hello
    await device(id) -> Device or None
    await enrol_device(id, key, now) -> True if registered now
    await bind_key(id, key) -> the key bound after (binds `key` if none was)
    await replace_token_hash(id, old, new) -> True if the token hash was `old` and is now
                                         `new` (a token migrating to its fast stored form)
    set_online(id, online, now)          fire and forget; kept in call order (LocalStore
                                         writes them ONLINE_WRITE_S later, those made
                                         meanwhile in one transaction)
    await enqueue(target, sender, msg_id, inner, now) -> codec QUEUED | QUEUE_FULL | UNKNOWN_TARGET
                                         QUEUED only once the packet is durably stored
    await stored(target, now) -> [Queued], oldest first; they stay stored until
    forget_stored(target, last_seq)      the target received them up to last_seq: fire
                                         and forget, kept in call order
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

from shared.codec import QUEUE_FULL
from host.registry import Registry

log = logging.getLogger("realm")

# Online flags are written this long after they change: a fleet logging in together is
# one transaction per interval, not two commits per device. They are shown, never
# relied on (a start clears them), so a crash loses at most this much of them.
ONLINE_WRITE_S = 0.1


class Unavailable(Exception):
    """The store cannot be reached right now (said once, where it went): the caller answers
    UNAVAILABLE or refuses the login, and logs nothing more per packet."""


class LocalStore:
    """The SQLite registry behind one worker thread.

    One thread, so the calls run in the order they were made: a packet stored before a
    target logs in is in the `stored` that follows, and online flags never swap.
    A target whose queue is full is remembered (count, bytes, oldest): the packets a
    sender floods it with are refused QUEUE_FULL on the loop, with no registry call.
    Only `bound_key` and `device_now` read on the loop's thread (their own connection; a
    WAL read is short and never waits for a writer).
    """

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry")
        self._db = self._worker.submit(Registry, data_dir).result()  # used on the worker only
        self._reader = Registry(data_dir)
        self._version = None
        self._full = {}  # target -> _Usage of its full queue, while known to be full
        self._online = []  # (id, online, now) not written yet, in call order
        self._online_timer = None
        # Targets that may have packets stored (this process is the queue's one writer):
        # read at start, one added when a packet for it goes to the worker, dropped when a
        # read finds none and none was added since. Any other device's login reads nothing
        # (most of a fleet coming back after a restart). target -> packets added.
        self._may_hold = {}
        self.loop = None

    def _run(self, func, *args):
        return asyncio.get_running_loop().run_in_executor(self._worker, func, *args)

    async def start(self):
        self.loop = asyncio.get_running_loop()
        await self._run(self._db.clear_online)
        self._may_hold = dict.fromkeys(await self._run(self._db.queue_targets), 0)

    async def stop(self):
        if self._online:
            self._write_online()  # their last_seen; then all are cleared
        await self._run(self._db.clear_online)
        await self._run(self._db.close)
        self._worker.shutdown(wait=True)
        self._reader.close()

    def bound_key(self, device_id):
        return self._reader.bound_key(device_id)

    def device_now(self, device_id):
        return self._reader.device(device_id)

    def device(self, device_id):
        return self._run(self._db.device, device_id)

    def enrol_device(self, device_id, key, now):
        return self._run(self._db.enrol_device, device_id, key, now)

    def bind_key(self, device_id, key):
        return self._run(self._db.bind_key, device_id, key)

    def replace_token_hash(self, device_id, old, new):
        return self._run(self._db.replace_token_hash, device_id, old, new)

    def set_online(self, device_id, online, now):
        if not self._online:
            self._online_timer = self.loop.call_later(ONLINE_WRITE_S, self._write_online)
        self._online.append((device_id, online, now))

    def _write_online(self):
        self._online_timer.cancel()
        changes, self._online = self._online, []
        self._worker.submit(self._db.set_online, changes).add_done_callback(_log_failure)

    def enqueue(self, target, sender, msg_id, inner, now):
        full = self._full.get(target)
        if full is not None and full.refuses(len(inner), now):
            refused = self.loop.create_future()
            refused.set_result(QUEUE_FULL)
            return refused
        self._may_hold[target] = self._may_hold.get(target, 0) + 1
        # Submitted now, so stores and reads keep their call order on the worker.
        return asyncio.ensure_future(self._remember_full(
            target, self._run(self._enqueue, target, sender, msg_id, inner, now)))

    def _enqueue(self, target, sender, msg_id, inner, now):
        result = self._db.enqueue(target, sender, msg_id, inner, now)
        return result, self._db.queue_usage(target) if result == QUEUE_FULL else None

    async def _remember_full(self, target, future):
        result, usage = await future
        if usage is not None:
            self._full[target] = _Usage(self._db, *usage)
        else:
            self._full.pop(target, None)
        return result

    def stored(self, target, now):
        added = self._may_hold.get(target)
        if added is None:
            nothing = self.loop.create_future()
            nothing.set_result([])
            return nothing
        return asyncio.ensure_future(self._forget_if_none(
            target, added, self._run(self._db.stored, target, now)))

    async def _forget_if_none(self, target, added, future):
        items = await future
        if not items and self._may_hold.get(target) == added:
            del self._may_hold[target]
        return items

    def forget_stored(self, target, last_seq):
        self._full.pop(target, None)
        future = self._worker.submit(self._db.forget_stored, target, last_seq)
        future.add_done_callback(_log_failure)

    def removed_devices(self, ids):
        return self._run(self._removed_devices, ids)

    def _removed_devices(self, ids):
        version = self._db.data_version()  # changes when another process (an admin) commits
        if version == self._version:
            return None
        self._version = version
        self._full.clear()  # removed devices, reset queues: ask the registry again
        known = self._db.device_ids()
        return [i for i in ids if i not in known]

    def housekeeping(self, now):
        self._full.clear()  # expired packets make room
        return self._run(self._db.expire, now)

    def list_devices(self):
        return self._run(self._db.list_devices)

    def queue_totals(self):
        return self._run(self._db.queue_totals)


class _Usage:
    """A full queue as the registry counted it: what would still fit, and until when."""

    def __init__(self, registry, count, size, oldest):
        self.room = registry.queue_max_packets - count
        self.room_bytes = registry.queue_max_bytes - size
        self.until = None if oldest is None else oldest + registry.queue_ttl_s

    def refuses(self, inner_size, now):
        if self.until is not None and now >= self.until:
            return False  # its oldest packet expires: the registry makes room
        return self.room < 1 or inner_size > self.room_bytes


def _log_failure(future):
    if not future.cancelled() and future.exception() is not None:
        log.warning("registry update failed: %s", future.exception())
