"""The realm's registry: devices and the durable offline queue, in SQLite.

One file, `realm.db`, in the data folder. WAL mode lets the admin commands (`realm
device ...`, another process) read and write while the server runs; every change is one
transaction. `synchronous=NORMAL` in WAL mode survives a crash or restart of the
process (what section 7 asks of the queue); a power cut may lose the last commits.

Times are wall-clock seconds passed in by the caller, because they must mean the same
after a restart (queue expiry, last seen).
"""
import os
import re
import sqlite3
import uuid
from collections import namedtuple

from shared.codec import QUEUED, QUEUE_FULL, UNKNOWN_TARGET
from host import tokens

DB_FILE = "realm.db"
SCHEMA_VERSION = 2  # 2: names unique, case-insensitively

# Section 7 defaults for the offline queue.
QUEUE_MAX_PACKETS = 64
QUEUE_MAX_BYTES = 64 * 1024
QUEUE_TTL_S = 24 * 3600


_SCHEMA = ("""
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,            -- canonical UUID text
    name TEXT NOT NULL DEFAULT '',
    token_hash TEXT,                -- NULL: enrolled openly, no token
    bound_key BLOB,                 -- D_pub once bound, else NULL
    created REAL NOT NULL,
    last_seen REAL,
    online INTEGER NOT NULL DEFAULT 0
)""", """
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- delivery order
    target TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    sender BLOB NOT NULL,
    msg_id INTEGER NOT NULL,
    inner BLOB NOT NULL,
    queued_at REAL NOT NULL
)""", """
CREATE INDEX IF NOT EXISTS queue_by_target ON queue(target, seq)
""", """
CREATE UNIQUE INDEX IF NOT EXISTS devices_by_name ON devices(name COLLATE NOCASE)
    WHERE name != ''
""")

# A name is typed on command lines (`realm send --to kitchen`) and in app code.
NAME_MAX = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

Device = namedtuple("Device", "id name token_hash bound_key created last_seen online")
DeviceInfo = namedtuple("DeviceInfo", "id name bound_key online queued last_seen created")
Queued = namedtuple("Queued", "seq sender msg_id inner")  # seq: its place in the queue


class RegistryError(Exception):
    """A registry operation the caller asked for cannot be done (unknown id, ...)."""


def canonical_id(text):
    """The canonical text of a device id given as text; RegistryError if it is not a UUID."""
    try:
        return str(uuid.UUID(text))
    except (ValueError, TypeError, AttributeError):
        raise RegistryError("not a device id (a UUID): %r" % (text,))


def check_name(name):
    """A usable device name, or RegistryError saying what a name may be."""
    if not name or len(name) > NAME_MAX or not _NAME.match(name):
        raise RegistryError("bad device name %r: 1 to %d letters, digits, '-', '_' or '.', "
                            "starting with a letter or digit" % (name, NAME_MAX))
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise RegistryError("bad device name %r: it reads as a device id" % name)


def label(device_id, name):
    """How logs and output name a device: its id, and its name beside it when it has one."""
    return "%s (%s)" % (device_id, name) if name else device_id


def id_text(raw):
    """Canonical text of a 16-byte id (what str(uuid.UUID(bytes=raw)) gives, faster:
    the relay calls it for every packet)."""
    h = bytes(raw).hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


class Registry:
    def __init__(self, data_dir, queue_max_packets=QUEUE_MAX_PACKETS,
                 queue_max_bytes=QUEUE_MAX_BYTES, queue_ttl_s=QUEUE_TTL_S):
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(data_dir, DB_FILE)
        self.queue_max_packets = queue_max_packets
        self.queue_max_bytes = queue_max_bytes
        self.queue_ttl_s = queue_ttl_s
        # isolation_level=None: we open transactions ourselves, explicitly.
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        with self._transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RegistryError("%s has schema %d, newer than this realm's %d"
                                    % (self.path, version, SCHEMA_VERSION))
            if version == 1:
                self._rename_duplicates()
            for statement in _SCHEMA:
                self.db.execute(statement)
            self.db.execute("PRAGMA user_version=%d" % SCHEMA_VERSION)
        # One cursor for the lookups made for every connection: Connection.execute makes
        # a cursor each time, and sqlite3 keeps a weak reference to each of them until
        # it sweeps every 200 cursors; a storm's last 200 then sat in fresh allocator
        # arenas and kept them.
        self._lookup = self.db.cursor()

    def close(self):
        self.db.close()

    def _rename_duplicates(self):
        """Schema 1 allowed two devices one name: the later ones get their id's first
        8 digits appended, so that the unique index can be made."""
        seen = set()
        for device_id, name in self.db.execute(
                "SELECT id, name FROM devices WHERE name != '' ORDER BY created, id").fetchall():
            if name.lower() in seen:
                self.db.execute("UPDATE devices SET name = ? WHERE id = ?",
                                ("%s-%s" % (name, device_id[:8]), device_id))
            seen.add(name.lower())

    def _transaction(self):
        return _Transaction(self.db)

    def data_version(self):
        """Changes whenever another connection (an admin command) commits."""
        return self._lookup.execute("PRAGMA data_version").fetchone()[0]

    # -- devices ---------------------------------------------------------------

    def add_device(self, now, device_id=None, name="", bound_key=None):
        """Register a device; returns `(id, token)`. The token exists only in the return value.

        `bound_key`: its public key, when it was made for the device (provisioning), so
        that peers can reach it before its first login."""
        device_id = canonical_id(device_id) if device_id else str(uuid.uuid4())
        if name:
            check_name(name)
        token = tokens.new_token()
        token_hash = tokens.hash_token(token)
        try:
            with self._transaction():
                self._check_free(device_id, name)
                self.db.execute(
                    "INSERT INTO devices (id, name, token_hash, bound_key, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (device_id, name, token_hash, bytes(bound_key) if bound_key else None, now))
        except sqlite3.IntegrityError:  # another process took the id or name meanwhile
            raise RegistryError("device %s or the name %r exists already" % (device_id, name))
        return device_id, token

    def _check_free(self, device_id, name):
        if self.db.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone():
            raise RegistryError("device %s already exists" % device_id)
        if name:
            row = self.db.execute("SELECT id, name FROM devices WHERE name = ? COLLATE NOCASE",
                                  (name,)).fetchone()
            if row:
                raise RegistryError("the name %s is taken by device %s" % (name, label(*row)))

    def resolve(self, device):
        """The id of a device named by its id or its name (RegistryError if neither)."""
        try:
            device_id = str(uuid.UUID(device))
        except (ValueError, TypeError, AttributeError):
            row = self.db.execute("SELECT id FROM devices WHERE name = ? COLLATE NOCASE",
                                  (device,)).fetchone()
            if row is None:
                raise RegistryError("no device named %r (nor is it a device id)" % (device,))
            return row[0]
        if self.db.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone() is None:
            raise RegistryError("no device %s" % device_id)
        return device_id

    def name(self, device_id):
        """The device's name ('' if it has none or is not registered)."""
        row = self.db.execute("SELECT name FROM devices WHERE id = ?", (device_id,)).fetchone()
        return row[0] if row else ""

    def enrol_device(self, device_id, key, now):
        """Open enrolment: register an unknown device with its key bound and no token.

        Returns False if the id exists already (another login won the race)."""
        with self._transaction():
            cur = self.db.execute(
                "INSERT OR IGNORE INTO devices (id, name, bound_key, created) VALUES (?, '', ?, ?)",
                (device_id, bytes(key), now))
        return cur.rowcount == 1

    def remove_device(self, device_id):
        with self._transaction():
            cur = self.db.execute("DELETE FROM devices WHERE id = ?", (canonical_id(device_id),))
        if cur.rowcount == 0:
            raise RegistryError("no device %s" % device_id)

    def reset_key(self, device_id):
        with self._transaction():
            cur = self.db.execute("UPDATE devices SET bound_key = NULL WHERE id = ?",
                                  (canonical_id(device_id),))
        if cur.rowcount == 0:
            raise RegistryError("no device %s" % device_id)

    def new_token(self, device_id):
        """Give the device a new token (returned, never stored); the old one stops working
        at its next login."""
        token = tokens.new_token()
        token_hash = tokens.hash_token(token)
        with self._transaction():
            cur = self.db.execute("UPDATE devices SET token_hash = ? WHERE id = ?",
                                  (token_hash, canonical_id(device_id)))
        if cur.rowcount == 0:
            raise RegistryError("no device %s" % device_id)
        return token

    def replace_token_hash(self, device_id, old, new):
        """Store the token hash `new` in place of `old` (the token migrating to another
        stored form); nothing if the hash is no longer `old` (`device token` ran meanwhile).
        Returns True if replaced."""
        with self._transaction():
            cur = self.db.execute("UPDATE devices SET token_hash = ? WHERE id = ? AND "
                                  "token_hash = ?", (new, device_id, old))
        return cur.rowcount == 1

    def device(self, device_id):
        row = self._lookup.execute(
            "SELECT id, name, token_hash, bound_key, created, last_seen, online "
            "FROM devices WHERE id = ?", (device_id,)).fetchone()
        return Device(*row) if row else None

    def bound_key(self, device_id):
        row = self._lookup.execute("SELECT bound_key FROM devices WHERE id = ?",
                              (device_id,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def bind_key(self, device_id, key):
        """Bind `key` if no key is bound yet (section 7). Returns the key bound after."""
        with self._transaction():
            self.db.execute("UPDATE devices SET bound_key = ? WHERE id = ? AND bound_key IS NULL",
                            (bytes(key), device_id))
        return self.bound_key(device_id)

    def list_devices(self):
        rows = self.db.execute(
            "SELECT d.id, d.name, d.bound_key, d.online, "
            "  (SELECT count(*) FROM queue q WHERE q.target = d.id), d.last_seen, d.created "
            "FROM devices d ORDER BY d.created, d.id").fetchall()
        return [DeviceInfo(r[0], r[1], bytes(r[2]) if r[2] is not None else None,
                           bool(r[3]), r[4], r[5], r[6]) for r in rows]

    def set_online(self, changes):
        """(device_id, online, now) for each change, in order, in one transaction."""
        with self._transaction():
            self.db.executemany("UPDATE devices SET online = ?, last_seen = ? WHERE id = ?",
                                [(1 if online else 0, now, device_id)
                                 for device_id, online, now in changes])

    def clear_online(self):
        """At start: no session survives a restart, whatever the last run left."""
        with self._transaction():
            self.db.execute("UPDATE devices SET online = 0 WHERE online != 0")

    def device_ids(self):
        return {r[0] for r in self.db.execute("SELECT id FROM devices")}

    # -- offline queue ---------------------------------------------------------

    def enqueue(self, target, sender, msg_id, inner, now):
        """Store a packet for an offline target; returns its Delivery status (the codec's
        QUEUED, QUEUE_FULL or UNKNOWN_TARGET).

        The bound counts packets and `inner` bytes not yet expired; when full, the
        oldest are kept and the new one is refused.
        """
        with self._transaction():
            if self.db.execute("SELECT 1 FROM devices WHERE id = ?", (target,)).fetchone() is None:
                return UNKNOWN_TARGET
            self._expire(now, target)
            count, size = self.db.execute(
                "SELECT count(*), coalesce(sum(length(inner)), 0) FROM queue WHERE target = ?",
                (target,)).fetchone()
            if count + 1 > self.queue_max_packets or size + len(inner) > self.queue_max_bytes:
                return QUEUE_FULL
            self.db.execute(
                "INSERT INTO queue (target, sender, msg_id, inner, queued_at) VALUES (?, ?, ?, ?, ?)",
                (target, bytes(sender), msg_id, bytes(inner), now))
        return QUEUED

    def stored(self, target, now):
        """The target's unexpired packets, oldest first. They stay stored until
        `forget_stored` says the target received them."""
        if not self.queued_count(target):
            return []  # the common case, without a write transaction
        with self._transaction():
            self._expire(now, target)
            rows = self.db.execute(
                "SELECT seq, sender, msg_id, inner FROM queue WHERE target = ? ORDER BY seq",
                (target,)).fetchall()
        return [Queued(q, bytes(s), m, bytes(i)) for q, s, m, i in rows]

    def forget_stored(self, target, last_seq):
        """The target received its stored packets up to `last_seq`: delete them."""
        with self._transaction():
            self.db.execute("DELETE FROM queue WHERE target = ? AND seq <= ?",
                            (target, last_seq))

    def queue_usage(self, target):
        """(packets, bytes of inner, time the oldest was stored or None) for `target`."""
        return self.db.execute(
            "SELECT count(*), coalesce(sum(length(inner)), 0), min(queued_at) FROM queue "
            "WHERE target = ?", (target,)).fetchone()

    def queue_totals(self):
        """(packets, bytes of inner) stored for every target together."""
        count, size = self.db.execute(
            "SELECT count(*), coalesce(sum(length(inner)), 0) FROM queue").fetchone()
        return count, size

    def queue_targets(self):
        """The devices that have packets stored."""
        return {r[0] for r in self.db.execute("SELECT DISTINCT target FROM queue")}

    def queued_count(self, target):
        return self.db.execute("SELECT count(*) FROM queue WHERE target = ?",
                               (target,)).fetchone()[0]

    def expire(self, now):
        """Drop every stored packet older than the time to live; returns how many."""
        with self._transaction():
            return self._expire(now)

    def _expire(self, now, target=None):
        limit = now - self.queue_ttl_s
        if target is None:
            cur = self.db.execute("DELETE FROM queue WHERE queued_at < ?", (limit,))
        else:
            cur = self.db.execute("DELETE FROM queue WHERE target = ? AND queued_at < ?",
                                  (target, limit))
        return cur.rowcount


class _Transaction:
    """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any exception.

    IMMEDIATE takes the write lock at the start, so two processes never both read and
    then fail to upgrade to writing (SQLite's busy deadlock); `timeout` makes them wait.
    """

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("ROLLBACK" if kind else "COMMIT")
        return False
