# An in-memory device<->realm link for tests: both state machines, bytes pumped between
# them, the registry a dict. MicroPython-safe.
from shared import crypto
from shared.device import DeviceConnection
from shared.errors import BAD_LOGIN
from shared.framing import StreamFramer
from shared.realm import LoginRequest, RealmConnection

_KEYS = {}


def keypair(seed):
    """A fixed key pair per seed byte (cached: a multiplication is slow on MicroPython)."""
    if seed not in _KEYS:
        private = bytes([seed]) * 32
        _KEYS[seed] = (private, crypto.public_key(private))
    return _KEYS[seed]


def device_id(n):
    return bytes([n]) * 16


TOKEN = "a-good-token-of-24-bytes"


class Link:
    """One connection attempt. `bound` is the realm's registry: device id -> key."""

    def __init__(self, realm_seed=1, device_seed=2, dev=1, bound=None, pinned=None,
                 token=TOKEN, accept=True, now=0, dh2=None, heartbeat_s=30, max_packet=4096,
                 reporter=None, dh2_cache=None, framer=StreamFramer, in_place=False):
        self.realm_private, self.realm_public = keypair(realm_seed)
        private, public = keypair(device_seed)
        self.bound = {} if bound is None else bound
        self.accept = accept
        self.heartbeat_s = heartbeat_s
        self.max_packet = max_packet
        self.framer = framer  # the link's framing: StreamFramer (TCP) or SerialFramer
        # in_place: the device's framer opens packets in its receive buffer, as on a board
        device_args = (device_id(dev), private, public, token, framer(in_place=in_place), now)
        device_settings = {"realm_public": pinned, "dh2": dh2,
                           "ephemeral": keypair(device_seed + 100)}
        if reporter is None:
            self.device = DeviceConnection(*device_args, **device_settings)
        else:  # loaded only here: most tests run in a small MicroPython heap
            from shared.report import ReportingConnection
            self.device = ReportingConnection(reporter, *device_args, **device_settings)
        self.realm = RealmConnection(self.realm_private, self.realm_public, framer(), now,
                                     self.bound.get, ephemeral=keypair(realm_seed + 100),
                                     dh2_cache=dh2_cache)
        self.device_events = []
        self.realm_events = []
        self.to_realm = []  # every packet the device sent, unframed
        self.to_device = []

    def pump(self, now=0):
        """Move bytes both ways until both sides are quiet."""
        spy_r, spy_d = self.framer(65535), self.framer(65535)
        while True:
            d_out = self.device.data_to_send()
            r_out = self.realm.data_to_send()
            if not d_out and not r_out:
                return self
            if d_out:
                self.to_realm += spy_r.feed(d_out)
                for ev in self.realm.receive_data(d_out, now):
                    self.realm_events.append(ev)
                    if isinstance(ev, LoginRequest):
                        self._decide(ev)
            if r_out:
                self.to_device += spy_d.feed(r_out)
                self.device_events += self.device.receive_data(r_out, now)

    def _decide(self, ev):
        if self.accept and ev.details == TOKEN.encode():
            if ev.device_id not in self.bound:
                self.bound[ev.device_id] = ev.device_public
            self.realm.accept_login("test-realm", self.heartbeat_s, self.max_packet)
        else:
            self.realm.refuse_login(BAD_LOGIN, "login refused")

def sent_ids(packets):
    return [p[1] for p in packets]
