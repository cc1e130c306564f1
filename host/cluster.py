"""Cluster mode: the registry and the offline queue of a realm whose nodes share one NATS
(JetStream and its key-value buckets). docs/CLUSTER.md explains the whole design.

Everything of one realm is named after its key (several realms may share one NATS), with
P = "realm-" + the first 16 hex digits of the realm key's fingerprint:

    KV P-devices     device id -> {"name", "token_hash", "key" (hex or null), "created"}
    KV P-sessions    device id -> {"node"}: who holds its session; the revision fences it
    KV P-nodes       node name -> {"since"}: live nodes, refreshed, expiring when not
    KV P-seen        device id -> last seen (wall-clock seconds)
    KV P-names       device name, lower case -> device id: names unique fleet-wide (CAS)
    stream P-queue   subjects P.q.<device id>: the offline queue, in order
    P.node.<name>    packets forwarded to the node that holds their target
    P.reply.<name>.* the answers to them
    P.stored.<id>    "a packet was stored for this device", for the node that holds it

`Cluster` is both the admin commands' registry (`realm device ... --cluster`) and, for
`realm serve --cluster`, the server's store (the calls listed in host/store.py). The
routing between nodes is host/cluster_router.py.

nats-py is imported here only: the single-node realm never loads it.
"""
import asyncio
import json
import time
import uuid
from collections import namedtuple

import nats
from nats.errors import Error as NatsError
from nats.js.errors import (BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError,
                            NotFoundError)

from shared import codec, crypto
from host import logs, tokens
from host.registry import (Device, DeviceInfo, QUEUE_MAX_BYTES, QUEUE_MAX_PACKETS, QUEUE_TTL_S,
                           RegistryError, canonical_id, check_name)
from host.store import Unavailable

log = logs.get()

CONNECT_TIMEOUT_S = 5.0   # to reach NATS at start: then a one-line error
REQUEST_TIMEOUT_S = 2.0   # one JetStream or KV call
NODE_TTL_S = 10           # a node not refreshed for this long is gone (killed)
NODE_REFRESH_S = 3
HISTORY = 1
REPLICAS = 3              # JetStream copies of every bucket and the queue, where possible
WRONG_LAST_SEQUENCE = 10071
HEADER_COUNT = "Realm-Count"  # running totals over the target's queue: see enqueue()
HEADER_BYTES = "Realm-Bytes"
HEADER_LAST = "Nats-Expected-Last-Subject-Sequence"
ENQUEUE_TRIES = 10


class ClusterError(RegistryError):
    """The cluster cannot be used (unreachable, misconfigured): one line for the operator."""


Stored = namedtuple("Stored", "seq sender msg_id inner")


def prefix_for(realm_public):
    return "realm-" + crypto.fingerprint(realm_public).hex()[:16]


def check_url(url):
    """`nats://HOST:PORT` (or tls://); a ClusterError that says what is wrong otherwise."""
    scheme, sep, rest = url.partition("://")
    host, colon, port = rest.rpartition(":")
    if sep != "://" or scheme not in ("nats", "tls") or not colon or not host or \
            not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise ClusterError("not a NATS URL: %r (expected nats://HOST:PORT)" % url)
    return url


class Cluster:
    """One node's (or one admin command's) connection to the realm's NATS."""

    def __init__(self, url, realm_public, node=None):
        self.url = check_url(url)
        self.prefix = prefix_for(realm_public)
        self.node = node
        self.nc = None
        self.js = None
        self.devices = {}   # mirror of P-devices (nodes only): id -> record dict
        # id -> revision of the latest change to its P-devices entry this node knows
        # (a removal's too): what this node wrote itself goes into the mirror at once,
        # unless the watch has brought a newer change already.
        self._device_revisions = {}
        self.sessions = {}  # mirror of P-sessions (nodes only): id -> (node, revision)
        self.on_device_removed = None    # callbacks the router sets (nodes only)
        self.on_session_claimed = None
        self.on_reconnected = None
        self.last_stored = {}  # target -> (stream seq of the last packet this node stored, when)
        self._storing = {}     # target -> the future of the store in progress for it
        self._watchers = []
        self._tasks = set()
        self._releases = set()  # session ends being recorded: awaited before leaving
        self._cut_off = False
        self._last_error = None

    # -- connection ----------------------------------------------------------------
    async def connect(self):
        refused = asyncio.get_running_loop().create_future()

        async def error(e):
            self._last_error = e
            if isinstance(e, ConnectionRefusedError) and not refused.done():
                refused.set_result(e)

        async def disconnected():
            if not self._cut_off and self.node is not None:
                self._cut_off = True
                log.warning("cluster: lost NATS at %s; serving the local sessions, "
                            "reconnecting", self.url)

        async def reconnected():
            if self._cut_off:
                self._cut_off = False
                log.info("cluster: NATS at %s reached again", self.url)
                if self.node is not None:
                    self._spawn(self._resync())

        connecting = asyncio.ensure_future(nats.connect(
            self.url, name="realm-%s" % (self.node or "admin"), error_cb=error,
            disconnected_cb=disconnected, reconnected_cb=reconnected,
            max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2))
        try:
            # Nothing listening there: said at once, as NATS's own clients do; a server
            # that does not answer yet gets CONNECT_TIMEOUT_S.
            await asyncio.wait((connecting, refused), timeout=CONNECT_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
            if not connecting.done():
                connecting.cancel()
                raise asyncio.TimeoutError()
            self.nc = connecting.result()
        except (asyncio.TimeoutError, OSError, NatsError) as e:
            cause = self._last_error or e
            raise ClusterError("cannot reach NATS at %s: %s" % (
                self.url, getattr(cause, "strerror", None) or cause or "no answer"))
        self.js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        try:
            self.kv_devices = await self._bucket("devices", history=HISTORY)
            self.kv_sessions = await self._bucket("sessions", history=HISTORY)
            self.kv_nodes = await self._bucket("nodes", history=HISTORY, ttl=NODE_TTL_S)
            self.kv_seen = await self._bucket("seen", history=HISTORY)
            self.kv_names = await self._bucket("names", history=HISTORY)
            self.stream = self.prefix + "-queue"
            try:
                await self.js.stream_info(self.stream)
            except NotFoundError:
                await self._replicated(self.js.add_stream, "num_replicas", name=self.stream,
                                       subjects=[self.prefix + ".q.*"], max_age=QUEUE_TTL_S,
                                       allow_direct=True)
        except NatsError as e:
            await self.nc.close()
            raise ClusterError("NATS at %s has no usable JetStream (run nats-server -js): %s"
                               % (self.url, e))

    async def _bucket(self, name, **config):
        bucket = "%s-%s" % (self.prefix, name)
        try:
            return await self.js.key_value(bucket)
        except NotFoundError:
            return await self._replicated(self.js.create_key_value, "replicas", bucket=bucket,
                                          **config)

    @staticmethod
    async def _replicated(create, replicas_field, **config):
        """Create with REPLICAS copies where NATS is a cluster of 3 or more, else one:
        a NATS without clustering refuses replicas."""
        try:
            return await create(**dict(config, **{replicas_field: REPLICAS}))
        except NatsError:
            return await create(**config)

    @property
    def connected(self):
        return self.nc is not None and self.nc.is_connected

    def _require(self):
        if not self.connected:
            raise Unavailable("NATS at %s is unreachable" % self.url)

    def _spawn(self, coro):
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self):
        for task in self._tasks - self._releases:
            task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), 3)
            except (asyncio.TimeoutError, NatsError):
                await self.nc.close()

    # -- the node: mirrors, liveness -------------------------------------------------------
    async def join(self):
        """Start the mirrors and announce this node; returns once the mirrors are filled."""
        await self._start_watchers()
        await self.kv_nodes.put(self.node, json.dumps({"since": time.time()}).encode())
        self._spawn(self._refresh_node())

    async def _start_watchers(self):
        for watcher in self._watchers:
            watcher.cancel()
        ready = [asyncio.get_running_loop().create_future() for _ in range(2)]
        self._watchers = [
            self._spawn(self._watch(self.kv_devices, self._device_changed, self.devices,
                                    ready[0])),
            self._spawn(self._watch(self.kv_sessions, self._session_changed, self.sessions,
                                    ready[1]))]
        await asyncio.wait_for(asyncio.gather(*ready), REQUEST_TIMEOUT_S * 3)

    async def _watch(self, bucket, apply, mirror, ready):
        watcher = await bucket.watchall()
        fresh = {}
        try:
            async for entry in watcher:
                if entry is None:  # the current values are all in: swap them in at once
                    if not ready.done():
                        mirror.clear()
                        mirror.update(fresh)
                        fresh = mirror
                        ready.set_result(True)
                    continue
                apply(entry, fresh if not ready.done() else mirror)
        finally:
            try:
                await watcher.stop()
            except NatsError:
                pass

    def _device_changed(self, entry, mirror):
        if entry.revision < self._device_revisions.get(entry.key, 0):
            return  # this node wrote a newer one itself (_wrote_device)
        self._device_revisions[entry.key] = entry.revision
        if entry.operation in ("DEL", "PURGE"):
            if mirror.pop(entry.key, None) is not None and mirror is self.devices \
                    and self.on_device_removed:
                self.on_device_removed(entry.key)
        else:
            mirror[entry.key] = json.loads(entry.value)

    def _wrote_device(self, device_id, record, revision):
        """This node wrote `record` at `revision`: its own answers (a PeerKey for a key
        just bound at a login here) see it now, not once the watch brings it back."""
        if revision > self._device_revisions.get(device_id, 0):
            self._device_revisions[device_id] = revision
            self.devices[device_id] = record

    def _session_changed(self, entry, mirror):
        if entry.operation in ("DEL", "PURGE"):
            mirror.pop(entry.key, None)
            return
        node = json.loads(entry.value)["node"]
        mirror[entry.key] = (node, entry.revision)
        if mirror is self.sessions and self.on_session_claimed:
            self.on_session_claimed(entry.key, node, entry.revision)

    async def _refresh_node(self):
        while True:
            await asyncio.sleep(NODE_REFRESH_S)
            if self.connected:
                try:
                    await self.kv_nodes.put(self.node, json.dumps({"since": time.time()})
                                            .encode())
                    await self._forget_dead_nodes()
                except (NatsError, asyncio.TimeoutError) as e:
                    log.warning("cluster: node refresh failed: %s", e)

    async def _forget_dead_nodes(self):
        """Sessions held by a node that stopped refreshing (killed) are over."""
        alive = set(await self._keys(self.kv_nodes))
        for device, (node, revision) in list(self.sessions.items()):
            if node not in alive:
                await self._delete(self.kv_sessions, device, revision)

    async def _resync(self):
        """After NATS came back: fresh mirrors (what changed meanwhile), this node again."""
        try:
            await self._start_watchers()
            await self.kv_nodes.put(self.node, json.dumps({"since": time.time()}).encode())
            if self.on_reconnected:
                await self.on_reconnected()
        except (NatsError, asyncio.TimeoutError) as e:
            log.warning("cluster: resynchronising after the reconnect failed: %s", e)

    async def leave(self):
        try:
            await self.kv_nodes.delete(self.node)
        except (NatsError, asyncio.TimeoutError):
            pass

    # -- sessions ----------------------------------------------------------------------
    async def claim(self, device, only_new=False):
        """Make this node the holder of `device`'s session; returns the fencing revision.
        `only_new`: only if no node holds it (Unavailable otherwise)."""
        self._require()
        value = json.dumps({"node": self.node}).encode()
        try:
            if only_new:
                return await self.kv_sessions.create(device, value)
            return await self.kv_sessions.put(device, value)
        except KeyWrongLastSequenceError:
            raise Unavailable("another node holds the session of %s" % device)
        except (NatsError, asyncio.TimeoutError) as e:
            raise Unavailable("cannot record the session in NATS: %s" % (e or type(e).__name__))

    def release_soon(self, device, revision, now):
        """The session of `revision` ended: remove it unless a newer one replaced it."""
        task = self._spawn(self._release(device, revision, now))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, device, revision, now):
        try:
            await self._delete(self.kv_sessions, device, revision)
            await self.kv_seen.put(device, repr(now).encode())
        except (NatsError, asyncio.TimeoutError) as e:
            log.warning("cluster: cannot record the end of %s's session: %s", device, e)

    def owner(self, device):
        """The node that holds `device`'s session as this node knows it, or None."""
        held = self.sessions.get(device)
        return held[0] if held else None

    @staticmethod
    async def _delete(bucket, key, revision):
        try:
            await bucket.delete(key, last=revision)
        except BadRequestError as e:
            if e.err_code != WRONG_LAST_SEQUENCE:
                raise

    @staticmethod
    async def _keys(bucket):
        try:
            return await bucket.keys()
        except NatsError as e:  # nats-py: "no keys found" for an empty bucket
            if "no keys" in str(e):
                return []
            raise

    # -- the store calls (host/store.py) ----------------------------------------------
    async def start(self):
        await self.join()

    async def stop(self):
        """Every session end recorded, this node gone from the live ones, disconnected."""
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=3)
        await self.leave()
        await self.close()

    def bound_key(self, device_id):
        record = self.devices.get(device_id)
        return bytes.fromhex(record["key"]) if record and record.get("key") else None

    def device_now(self, device_id):
        """From the mirror; None if not there yet (the login then reads the bucket)."""
        record = self.devices.get(device_id)
        return None if record is None else _device(device_id, record)

    async def device(self, device_id):
        self._require()
        entry = await self._get(self.kv_devices, device_id)
        return None if entry is None else _device(device_id, json.loads(entry.value))

    async def _get(self, bucket, key):
        try:
            return await bucket.get(key)
        except KeyNotFoundError:
            return None

    async def enrol_device(self, device_id, key, now):
        self._require()
        record = {"name": "", "token_hash": None, "key": bytes(key).hex(), "created": now}
        try:
            revision = await self.kv_devices.create(device_id, json.dumps(record).encode())
        except KeyWrongLastSequenceError:
            return False
        self._wrote_device(device_id, record, revision)
        return True

    async def bind_key(self, device_id, key):
        self._require()

        def bind(record):  # compare-and-set: a key bound meanwhile on another node wins
            if record.get("key"):
                return False
            record["key"] = bytes(key).hex()
        record = await self._change(device_id, bind)
        return bytes.fromhex(record["key"]) if record is not None else None

    async def replace_token_hash(self, device_id, old, new):
        self._require()

        def replace(record):
            if record["token_hash"] != old:  # `device token` ran meanwhile
                return False
            record["token_hash"] = new
        record = await self._change(device_id, replace)
        return record is not None and record["token_hash"] == new

    def set_online(self, device_id, online, now):
        pass  # the session's own entry says it (claim and release)

    async def removed_devices(self, ids):
        return None  # the devices mirror calls on_device_removed as it happens

    async def housekeeping(self, now):
        return 0  # JetStream expires the queue itself (max_age)

    # -- the offline queue -------------------------------------------------------------
    def _subject(self, device):
        return "%s.q.%s" % (self.prefix, device)

    async def enqueue(self, target, sender, msg_id, inner, now, look=False):
        """Store for an offline target; the Delivery status. One store per target at a
        time from this node, so its packets keep their order. With `look`, the target's
        session entry is read first: if another node holds it (claimed a moment ago,
        not yet in this node's mirror), nothing is stored and that node's name returned."""
        previous = self._storing.get(target)
        done = self._storing[target] = asyncio.get_running_loop().create_future()
        try:
            if previous is not None:
                await asyncio.shield(previous)
            return await self._enqueue(target, sender, msg_id, inner, look)
        finally:
            done.set_result(None)
            if self._storing.get(target) is done:
                del self._storing[target]

    def storing(self, target):
        """The future of this node's store in progress for `target`, or None."""
        return self._storing.get(target)

    async def _enqueue(self, target, sender, msg_id, inner, look):
        self._require()
        if target not in self.devices and await self._get(self.kv_devices, target) is None:
            return codec.UNKNOWN_TARGET
        if look:
            entry = await self._get(self.kv_sessions, target)
            holder = json.loads(entry.value)["node"] if entry is not None else None
            if holder is not None and holder != self.node:
                return holder
        subject = self._subject(target)
        for _ in range(ENQUEUE_TRIES):
            # The queue is always a run of the subject's messages (delivered ones are
            # purged from the front, JetStream expires from the front), and each message
            # carries the running count and bytes: the first and last ones give the size.
            last = await self._message(subject, last=True)
            first = await self._message(subject) if last is not None else None
            count = bytes_ = 0
            if last is not None:
                count = int(last.headers[HEADER_COUNT]) - int(first.headers[HEADER_COUNT]) + 1
                bytes_ = int(last.headers[HEADER_BYTES]) - int(first.headers[HEADER_BYTES]) + \
                    len(first.data) - 20
            if count + 1 > QUEUE_MAX_PACKETS or bytes_ + len(inner) > QUEUE_MAX_BYTES:
                return codec.QUEUE_FULL
            headers = {
                HEADER_LAST: str(last.seq if last is not None else 0),
                HEADER_COUNT: str((int(last.headers[HEADER_COUNT]) if last else 0) + 1),
                HEADER_BYTES: str((int(last.headers[HEADER_BYTES]) if last else 0) + len(inner))}
            try:
                ack = await self.js.publish(subject, bytes(sender) + msg_id.to_bytes(4, "big") +
                                            bytes(inner), headers=headers)
            except BadRequestError as e:
                if e.err_code == WRONG_LAST_SEQUENCE:
                    continue  # another node stored one meanwhile: count again
                raise
            self.last_stored[target] = (ack.seq, time.monotonic())
            await self.nc.publish("%s.stored.%s" % (self.prefix, target))
            return codec.QUEUED
        raise Unavailable("the queue of %s is too busy" % target)

    async def _message(self, subject, last=False, after=0):
        try:
            if last:
                return await self.js.get_msg(self.stream, subject=subject, direct=True)
            return await self.js.get_msg(self.stream, seq=after + 1, subject=subject,
                                         next=True, direct=True)
        except NotFoundError:
            return None

    async def read_queue(self, target, after):
        """The next stored packet for `target` after stream sequence `after`, or None."""
        self._require()
        message = await self._message(self._subject(target), after=after)
        if message is None:
            return None
        data = message.data
        return Stored(message.seq, data[:16], int.from_bytes(data[16:20], "big"), data[20:])

    def drop_queue_soon(self, target, upto):
        """Remove `target`'s stored packets up to sequence `upto` (it received them)."""
        self._spawn(self._drop_queue(target, upto))

    async def _drop_queue(self, target, upto):
        try:
            await self.js.purge_stream(self.stream, subject=self._subject(target), seq=upto + 1)
        except (NatsError, asyncio.TimeoutError) as e:  # handed over again next time
            log.warning("cluster: cannot drop the delivered packets of %s: %s", target, e)

    async def queue_totals(self):
        """(packets, bytes) in the queue, all targets together; the bytes are JetStream's,
        headers and subjects included."""
        state = (await self.js.stream_info(self.stream)).state
        return state.messages, state.bytes

    async def queue_counts(self):
        info = await self.js.stream_info(self.stream, subjects_filter=self.prefix + ".q.*")
        skip = len(self.prefix) + 3
        return {subject[skip:]: count for subject, count in (info.state.subjects or {}).items()}

    # -- admin commands (async; ClusterRegistry runs them) -------------------------------
    async def add_device(self, now, device_id=None, name="", bound_key=None):
        device_id = canonical_id(device_id) if device_id else str(uuid.uuid4())
        if name:
            check_name(name)
            try:  # the name first: taken by one device fleet-wide, whoever asks at once
                await self.kv_names.create(name.lower(), device_id.encode())
            except KeyWrongLastSequenceError:
                raise RegistryError("the name %s is taken by device %s" % (
                    name, (await self.kv_names.get(name.lower())).value.decode()))
        token = tokens.new_token()
        record = {"name": name, "token_hash": tokens.hash_token(token),
                  "key": bytes(bound_key).hex() if bound_key else None, "created": now}
        try:
            await self.kv_devices.create(device_id, json.dumps(record).encode())
        except KeyWrongLastSequenceError:
            if name:
                await self.kv_names.delete(name.lower())
            raise RegistryError("device %s already exists" % device_id)
        return device_id, token

    async def resolve(self, device):
        """The id of a device named by its id or its name (RegistryError if neither)."""
        try:
            device_id = str(uuid.UUID(device))
        except (ValueError, TypeError, AttributeError):
            entry = await self._get(self.kv_names, device.lower()) if device else None
            if entry is None:
                raise RegistryError("no device named %r (nor is it a device id)" % (device,))
            return entry.value.decode()
        if await self._get(self.kv_devices, device_id) is None:
            raise RegistryError("no device %s" % device_id)
        return device_id

    async def name(self, device_id):
        entry = await self._get(self.kv_devices, device_id)
        return json.loads(entry.value)["name"] if entry is not None else ""

    async def remove_device(self, device_id):
        device_id = canonical_id(device_id)
        entry = await self._get(self.kv_devices, device_id)
        if entry is None:
            raise RegistryError("no device %s" % device_id)
        await self.kv_devices.delete(device_id)
        name = json.loads(entry.value)["name"]
        if name:
            await self.kv_names.delete(name.lower())
        await self.js.purge_stream(self.stream, subject=self._subject(device_id))

    async def new_token(self, device_id):
        token = tokens.new_token()
        token_hash = tokens.hash_token(token)
        await self._admin_change(device_id, lambda record: record.update(token_hash=token_hash))
        return token

    async def reset_key(self, device_id):
        await self._admin_change(device_id, lambda record: record.update(key=None))

    async def _admin_change(self, device_id, change):
        device_id = canonical_id(device_id)
        if await self._change(device_id, change) is None:
            raise RegistryError("no device %s" % device_id)

    async def _change(self, device_id, change):
        """Apply `change(record)` to the device's record by compare-and-set (again if
        another writer came first; `change` returns False to leave it as it is). The
        record after, or None if there is no such device."""
        while True:
            entry = await self._get(self.kv_devices, device_id)
            if entry is None:
                return None
            record = json.loads(entry.value)
            if change(record) is False:
                return record
            try:
                revision = await self.kv_devices.update(device_id, json.dumps(record).encode(),
                                                        last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            if self.node is not None:
                self._wrote_device(device_id, record, revision)
            return record

    async def list_devices(self):
        """Every device, online where a live node holds its session. A node answers from
        its mirrors (the status page asks often); an admin command reads every entry."""
        alive = set(await self._keys(self.kv_nodes))
        queued = await self.queue_counts()
        if self.node is not None:
            records, sessions = dict(self.devices), dict(self.sessions)
        else:
            records, sessions = {}, {}
            for key in await self._keys(self.kv_devices):
                entry = await self._get(self.kv_devices, key)
                session = await self._get(self.kv_sessions, key)
                if entry is not None:
                    records[key] = json.loads(entry.value)
                if session is not None:
                    sessions[key] = (json.loads(session.value)["node"], session.revision)
        devices = []
        for key, record in records.items():
            seen = None if self.node is not None else await self._get(self.kv_seen, key)
            devices.append(DeviceInfo(
                key, record["name"], bytes.fromhex(record["key"]) if record["key"] else None,
                sessions.get(key, (None,))[0] in alive, queued.get(key, 0),
                float(seen.value) if seen else None, record["created"]))
        devices.sort(key=lambda d: (d.created, d.id))
        return devices


def _device(device_id, record):
    key = bytes.fromhex(record["key"]) if record.get("key") else None
    return Device(device_id, record["name"], record["token_hash"], key, record["created"],
                  None, False)


class ClusterRegistry:
    """The admin commands' view: Registry's calls, answered by the cluster."""

    def __init__(self, url, realm_public):
        self._loop = asyncio.new_event_loop()
        self._cluster = Cluster(url, realm_public)
        try:
            self._run(self._cluster.connect())
        except BaseException:
            self._loop.close()
            raise

    def _run(self, coro):
        return self._loop.run_until_complete(_asked(self._cluster.url, coro))

    def close(self):
        try:
            self._run(self._cluster.close())
        finally:
            self._loop.close()

    def add_device(self, now, device_id=None, name="", bound_key=None):
        return self._run(self._cluster.add_device(now, device_id, name, bound_key))

    def resolve(self, device):
        return self._run(self._cluster.resolve(device))

    def name(self, device_id):
        return self._run(self._cluster.name(device_id))

    def new_token(self, device_id):
        return self._run(self._cluster.new_token(device_id))

    def remove_device(self, device_id):
        return self._run(self._cluster.remove_device(device_id))

    def reset_key(self, device_id):
        return self._run(self._cluster.reset_key(device_id))

    def list_devices(self):
        return self._run(self._cluster.list_devices())


class ClusterNames:
    """Device names in the cluster's registry for a command on an event loop of its own
    (`realm send`, `realm listen`, `realm update`): what host/cli.py's named_device gives
    from a local one."""

    def __init__(self, url, realm_public):
        self._cluster = Cluster(url, realm_public)

    async def connect(self):
        await _asked(self._cluster.url, self._cluster.connect())

    async def named(self, text):
        """`(id, name)` of a device given by its id or its name. An id is not looked up
        (as named_device: the device may be unknown here and still be reached)."""
        try:
            device_id = str(uuid.UUID(text))
        except ValueError:
            device_id = await _asked(self._cluster.url, self._cluster.resolve(text))
        return device_id, await _asked(self._cluster.url, self._cluster.name(device_id))

    async def every(self):
        """`(id, name)` of every device of the cluster, oldest first."""
        return [(d.id, d.name) for d in await _asked(self._cluster.url,
                                                      self._cluster.list_devices())]

    async def close(self):
        await self._cluster.close()


async def _asked(url, coro):
    """`await coro` (calls to NATS), bounded; a failure is one ClusterError line."""
    try:
        return await asyncio.wait_for(coro, 30)
    except (asyncio.TimeoutError, NatsError) as e:
        raise ClusterError("NATS at %s: %s" % (url, e or type(e).__name__))
