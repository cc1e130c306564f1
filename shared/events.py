# Events a connection or an endpoint hands to its shell. Plain classes: MicroPython
# has no dataclasses, and a tuple would make every caller remember field order.


class Event:
    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (k, v) for k, v in sorted(self.__dict__.items())))

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__


class Welcomed(Event):
    """Device side: the realm accepted the login. Keep realm_public and dh2 (the pin)."""

    def __init__(self, realm_name, heartbeat_s, max_packet, realm_public, dh2, pinned_path):
        self.realm_name = realm_name
        self.heartbeat_s = heartbeat_s
        self.max_packet = max_packet
        self.realm_public = realm_public
        self.dh2 = dh2
        self.pinned_path = pinned_path


class LoginRequest(Event):
    """Realm side: answer with conn.accept_login(...) or conn.refuse_login(code, message)."""

    def __init__(self, device_id, method, details, device_public):
        self.device_id = device_id
        self.method = method
        self.details = details
        self.device_public = device_public


class ProxyReceived(Event):
    """A ProxyPass. At the realm `peer` is the target; at a device it is the sender."""

    def __init__(self, peer, msg_id, inner):
        self.peer = peer
        self.msg_id = msg_id
        self.inner = inner


class DeliveryReport(Event):
    def __init__(self, msg_id, status):
        self.msg_id = msg_id
        self.status = status


class PeerKeyRequested(Event):
    """Realm side: answer with conn.send_peer_key(peer, key_or_None)."""

    def __init__(self, peer):
        self.peer = peer


class PeerKeyReceived(Event):
    def __init__(self, peer, key):
        self.peer = peer
        self.key = key


class Closed(Event):
    """The connection is over; `error` (a ProtocolError) says why and, by .remote, who ended it."""

    def __init__(self, error):
        self.error = error


# -- Endpoint events: what a device application sees ---------------------------
class Message(Event):
    """End-to-end Data from a peer."""

    def __init__(self, peer, data):
        self.peer = peer
        self.data = data


class Pong(Event):
    def __init__(self, peer, data):
        self.peer = peer
        self.data = data


class Delivery(Event):
    """What became of a send: a codec status (DELIVERED, QUEUED, UNKNOWN_TARGET...)."""

    def __init__(self, msg_id, status):
        self.msg_id = msg_id
        self.status = status


class PeerPinned(Event):
    """A peer's key was learnt for the first time: keep it (trust on first use)."""

    def __init__(self, peer, key):
        self.peer = peer
        self.key = key


class PeerKeyChanged(Event):
    """The realm offered another key for a pinned peer: refused until the user allows it."""

    def __init__(self, peer, pinned, offered):
        self.peer = peer
        self.pinned = pinned
        self.offered = offered
