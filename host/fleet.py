"""What the status page, /api/status and `realm status` show: the realm, then one row per
registered device, from the registry and this node's own sessions and DeviceReports.

The registry is read through the store (on its worker thread, never on the loop), and
only when something the rows show changed (a login, a logout, a report, a queued packet)
and at most once a second, or every few seconds for what admin commands change, however
many people look: the relay never waits for a viewer.

In a cluster each node shows every registered device from the shared registry, online
wherever its session is, and the addresses, links and reports of its own sessions.
"""
import time

from shared import RELEASE, crypto

REBUILD_S = 1.0  # the device rows are at most this old when the realm changed them
MAX_AGE_S = 5.0  # and this old anyway (admin commands, queue expiry, other cluster nodes)
RATE_WINDOW_S = 5.0  # rates are averaged over this many seconds


def fingerprint_hex(key):
    return crypto.fingerprint(key).hex() if key is not None else None


def device_rows(devices, sessions=None, reports=None):
    """The rows for `devices` (the registry's DeviceInfo list), names first, A to Z.

    sessions: device id text -> this node's Link; reports: device id text -> (time, report).
    Without sessions (the realm is not running) `online` is what the registry last held."""
    rows = []
    for d in devices:
        link = sessions.get(d.id) if sessions is not None else None
        reported = reports.get(d.id) if reports else None
        rows.append({
            "id": d.id, "name": d.name or None,
            "online": bool(d.online or link is not None),
            "here": link is not None,  # the session is on this node
            "since": link.since if link is not None else None,
            "address": link.address if link is not None else None,
            "link": _link_kind(link.address) if link is not None else None,
            "last_seen": d.last_seen, "queued": d.queued,
            "fingerprint": fingerprint_hex(d.bound_key),
            "report": reported[1] if reported else None,
            "report_at": reported[0] if reported else None,
        })
    rows.sort(key=lambda r: (r["name"] is None, (r["name"] or "").lower(), r["id"]))
    return rows


def _link_kind(address):
    return "serial" if address.startswith("serial:") else "tcp"


class Rates:
    """Per-second rates of the node's counters, from samples taken once a second."""

    def __init__(self):
        self._samples = []  # (monotonic time, relayed, connects, logins), oldest first

    def sample(self, stats, now=None):
        now = time.monotonic() if now is None else now
        self._samples.append((now, sum(stats.relayed) + stats.flushed, stats.connects,
                              sum(stats.logins.values())))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.pop(0)

    def current(self):
        if len(self._samples) < 2:
            return {"packets_per_s": 0.0, "connects_per_s": 0.0, "logins_per_s": 0.0}
        first, last = self._samples[0], self._samples[-1]
        span = last[0] - first[0]
        return {name: round((last[i] - first[i]) / span, 1) for i, name in
                ((1, "packets_per_s"), (2, "connects_per_s"), (3, "logins_per_s"))}


class StatusView:
    """The running realm's status, as the HTTP API serves it. refresh() reads the
    registry when the rows may be stale; the rest only reads memory."""

    def __init__(self, realm):
        self.realm = realm
        self.rates = Rates()
        self.fingerprint = fingerprint_hex(realm.public)
        self.rows = None  # built by refresh(): None until then, and while nobody watches
        self.queue = (0, 0)  # (packets, bytes) in the offline queue
        self._built = (None, -MAX_AGE_S)  # (realm.changes the rows show, when built)

    async def refresh(self, rows=True):
        """Read the registry again if the figures may be stale; True if they were read.
        rows=False: the queue's totals only (what /metrics shows), not the device rows."""
        realm = self.realm
        now = time.monotonic()
        changes, built_at = self._built
        if (self.rows is not None or not rows) and (now - built_at < REBUILD_S or (
                changes == realm.changes and now - built_at < MAX_AGE_S)):
            return False
        self._built = (realm.changes, now)
        self.queue = await realm.store.queue_totals()
        if not rows:
            return True
        devices = await realm.store.list_devices()
        sessions = {link.device: link for link in realm.router.links()}
        known = {d.id for d in devices}
        for device in [d for d in realm.reports if d not in known]:
            del realm.reports[device]  # removed from the registry
        self.rows = device_rows(devices, sessions, realm.reports)
        return True

    def forget_rows(self):
        """Drop the device rows while nobody has the page open: at 10,000 devices they
        held 18 MB that nothing read. The next refresh() builds them again."""
        self.rows = None

    def realm_status(self):
        realm, s, devices = self.realm, self.realm.stats, self.rows
        packets, size = self.queue
        return {
            "name": realm.config.name, "version": RELEASE, "fingerprint": self.fingerprint,
            "started": s.started, "now": time.time(), "source": "realm",
            "sessions": len(realm.router), "handshakes": len(realm.handshaking),
            "devices": len(devices), "online": sum(1 for d in devices if d["online"]),
            "queue": {"packets": packets, "bytes": size},
            "totals": {"connects": s.connects, "logins": sum(s.logins.values()),
                       "relayed": sum(s.relayed) + s.flushed, "reports": s.reports,
                       "refusals": sum(s.refusals.values())},
            "rates": self.rates.current(),
        }

    async def status(self):
        await self.refresh()
        return {"realm": self.realm_status(), "devices": self.rows}


def registry_status(registry, realm_public, name=None):
    """The same summary from the registry alone, for `realm status` when no realm answers:
    no sessions, no rates, no reports (those live in the running realm)."""
    devices = device_rows(registry.list_devices())
    packets, size = registry.queue_totals()
    return {"realm": {"name": name, "version": RELEASE,
                      "fingerprint": fingerprint_hex(realm_public), "source": "registry",
                      "now": time.time(), "devices": len(devices),
                      "online": sum(1 for d in devices if d["online"]),
                      "queue": {"packets": packets, "bytes": size}},
            "devices": devices}
