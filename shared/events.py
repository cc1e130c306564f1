# Events a connection or an endpoint hands to its shell, in two families: a connection's
# (the realm link: a packet that arrived is a ...Packet event) and an Endpoint's (what a
# device application sees: Message, Delivery, PeerPinned...); the events only the realm's
# connection makes are in shared/realm.py, which no device loads. Plain classes: MicroPython
# has no dataclasses, and a tuple would make every caller remember field order.
# Each class names its attributes in `_fields`, in the order its constructor takes
# them; one shared __init__ sets them (an __init__ per class costs a device's heap
# ~100 bytes each).


class Event:
    _fields = ""

    def __init__(self, *values):
        names = self._fields.split()
        if len(values) != len(names):
            raise TypeError("%s takes %d values" % (type(self).__name__, len(names)))
        for i in range(len(names)):
            setattr(self, names[i], values[i])

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (k, v) for k, v in sorted(self.__dict__.items())))

    def __eq__(self, other):
        return type(self) is type(other) and self.__dict__ == other.__dict__


# -- Connection events: the realm link -----------------------------------------
class Welcomed(Event):
    """Device side: the realm accepted the login. Keep realm_public and dh2 (the pin)."""
    _fields = "realm_name heartbeat_s max_packet realm_public dh2 pinned_path"


class ProxyPassPacket(Event):
    """A ProxyPass. At the realm `peer` is the target; at a device it is the sender."""
    _fields = "peer msg_id inner"


class DeliveryPacket(Event):
    """Device side: the realm's Delivery report on one of our ProxyPass packets."""
    _fields = "msg_id status"


class PeerKeyPacket(Event):
    """Device side: the realm's answer to a PeerKeyRequest; `key` None if it has none."""
    _fields = "peer key"


class Closed(Event):
    """The connection is over; `error` (a ProtocolError) says why and, by .remote, who ended it."""
    _fields = "error"


# -- Endpoint events: what a device application sees ---------------------------
class Message(Event):
    """End-to-end Data from a peer. data is bytes, or from a framer made in_place (a
    device's) a view of its receive buffer, valid until the connection's next
    receive_buffer() or receive_data(): bytes(data) keeps it."""
    _fields = "peer data"


class Pong(Event):
    _fields = "peer data"


class Delivery(Event):
    """What became of a send: a codec status (DELIVERED, QUEUED, UNKNOWN_TARGET...)."""
    _fields = "msg_id status"


class PeerPinned(Event):
    """A peer's key was learnt for the first time: keep it (trust on first use)."""
    _fields = "peer key"


class PeerKeyChanged(Event):
    """The realm offered another key for a pinned peer: refused until the user allows it."""
    _fields = "peer pinned offered"
