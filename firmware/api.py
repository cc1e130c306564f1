# The application API: what the user's app.py gets as `device`.
#
#   msg_id = device.send(peer, b"bytes")      # end to end encrypted; queued while offline
#   device.on_message(lambda peer, data: ...)  # peer is the sender's UUID text, data bytes
#   status = await device.delivery(msg_id)     # "DELIVERED", "QUEUED", "UNKNOWN_TARGET"...
#
# Peers are UUIDs, as text ("8-4-4-4-12") or 16 bytes, or names from the config's "peers".
import asyncio

from shared import codec
from shared.compat import const
from shared.endpoint import SendQueueFull  # noqa: F401 (raised by send, for apps to catch)
from shared.events import Message, Pong, Delivery

_KEPT = const(16)  # Delivery results remembered for delivery()/delivery_status()


class Device:
    def __init__(self, runtime):
        self._runtime = runtime
        runtime.add_listener(self)
        self.config = runtime.config  # the checked config.json, as a dict
        self.device_id = runtime.config["device_id_str"]
        self.name = runtime.config["name"]
        self._on_message = None
        self._copy = True
        self._on_delivery = None
        self._on_status = None
        self._statuses = []  # [msg_id, status name], oldest first
        self._pongs = []  # [peer, data] not yet claimed by ping()
        self._changed = asyncio.Event()

    def peer_id(self, peer):
        """The 16-byte id of a peer given as a name in the config's "peers", UUID text or
        bytes. ValueError for a name the config does not list."""
        if not isinstance(peer, str):
            return bytes(peer)
        known = self.config["peers"].get(peer)
        if known is not None:
            return known
        try:
            return codec.uuid_from_str(peer)
        except ValueError:
            raise ValueError("peer %r: not a device id, nor a name in the config's peers (%s)"
                             % (peer, ", ".join(self.config["peers"]) or "none"))

    def peer_name(self, peer):
        """The config's name for a peer (UUID text or bytes), else its UUID text."""
        peer = self.peer_id(peer)
        for name in self.config["peers"]:
            if self.config["peers"][name] == peer:
                return name
        return codec.uuid_to_str(peer)

    # -- sending ----------------------------------------------------------------
    def send(self, peer, data):
        """Send bytes to a peer; returns the msg_id that delivery() reports on.
        Raises SendQueueFull when too many sends wait (offline, or a key being fetched),
        ValueError when data is over the realm's size limit. data is sealed from where it
        lies when it can go at once, and copied only if it must wait: a buffer the app
        reuses for large messages costs no block of their size per send."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
        return self._runtime.send(self.peer_id(peer), data)

    def delivery_status(self, msg_id):
        """The Delivery status name of msg_id, or None while it is not known yet."""
        for item in self._statuses:
            if item[0] == msg_id:
                return item[1]
        return None

    async def delivery(self, msg_id, timeout_ms=None):
        """Wait for msg_id's Delivery status; None if timeout_ms passed first."""
        return await self._until(lambda: self.delivery_status(msg_id), timeout_ms)

    async def ping(self, peer, data=b"", timeout_ms=10000):
        """Round trip to a peer's device (end-to-end Ping/Pong); its time in ms, or None."""
        peer = self.peer_id(peer)
        started = self._runtime.now_ms()
        self._runtime.ping(peer, data)

        def answered():
            for item in self._pongs:
                if item[0] == peer and item[1] == data:
                    self._pongs.remove(item)
                    return True
            return None

        if await self._until(answered, timeout_ms) is None:
            return None
        return self._runtime.now_ms() - started

    # -- receiving and status ---------------------------------------------------
    def on_message(self, callback, copy=True):
        """callback(peer, data) for every message received; peer is UUID text, data bytes.
        copy=False: data is a memoryview of the device's receive buffer instead, valid
        until the callback returns (bytes(data) keeps it): a message of some KB then asks
        the heap for no block of its size, which a small board's may not have."""
        self._on_message = callback
        self._copy = copy

    def on_delivery(self, callback):
        """callback(msg_id, status_name) for every Delivery report."""
        self._on_delivery = callback

    def on_status(self, callback):
        """callback(status, detail): "connecting", "online", "offline", "error" (a
        refusal: longer wait before the next try) or "refused" (the realm key changed)."""
        self._on_status = callback

    def now_ms(self):
        """Milliseconds since boot (never wraps)."""
        return self._runtime.now_ms()

    @property
    def app_version(self):
        """The version of the app that runs: the installed update's, or None."""
        return self._runtime.app_version

    @property
    def online(self):
        return self._runtime.status == "online"

    @property
    def status(self):
        return self._runtime.status

    @property
    def stats(self):
        return self._runtime.stats()

    async def wait_online(self, timeout_ms=None):
        return await self._until(lambda: self.online or None, timeout_ms)

    def repin(self, realm_key=None):
        """Trust a new realm key (32 bytes), or the next realm that answers (None)."""
        self._runtime.repin(realm_key)

    def repin_peer(self, peer):
        """Forget a peer's pinned key: its next key is trusted on first use."""
        self._runtime.forget_peer(self.peer_id(peer))

    # -- from the runtime -------------------------------------------------------
    def event(self, event):
        if isinstance(event, Message):
            if self._on_message is not None:
                data = event.data
                self._on_message(codec.uuid_to_str(event.peer), bytes(data) if self._copy
                                 else data)
        elif isinstance(event, Delivery):
            name = codec.status_name(event.status)
            if len(self._statuses) >= _KEPT:
                self._statuses.pop(0)
            self._statuses.append([event.msg_id, name])
            if self._on_delivery is not None:
                self._on_delivery(event.msg_id, name)
        elif isinstance(event, Pong):
            if len(self._pongs) >= _KEPT:
                self._pongs.pop(0)
            self._pongs.append([event.peer, event.data])
        self._changed.set()

    def status_changed(self, status, detail):
        if self._on_status is not None:
            self._on_status(status, detail)
        self._changed.set()

    # -- internals --------------------------------------------------------------
    async def _until(self, check, timeout_ms):
        """Wait until check() returns something other than None, or timeout_ms passes."""
        runtime = self._runtime
        end = None if timeout_ms is None else runtime.now_ms() + timeout_ms
        while True:
            result = check()
            if result is not None:
                return result
            if end is None:
                await self._changed.wait()
            else:
                left = end - runtime.now_ms()
                if left <= 0:
                    return None
                timer = runtime.timer(left, self._changed.set)
                await self._changed.wait()
                timer.cancel()
            self._changed.clear()
