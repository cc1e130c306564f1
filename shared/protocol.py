# PROTOCOL.md's numbers, each in one place: the limits and defaults both ends and every
# shell (firmware, realm, host tools) read from here instead of writing them again.
from shared.compat import const

VERSION = const(1)  # Hello.version (section 5)
DEFAULT_PORT = const(7711)  # TCP (section 2)
DEFAULT_MAX_PACKET = const(4096)  # both directions until Welcome (section 2)
MIN_MAX_PACKET = const(256)  # Welcome.max_packet range (section 2)
MAX_MAX_PACKET = const(65535)
HANDSHAKE_TIMEOUT_MS = const(30000)  # the whole handshake (section 5, rule 1)
DEFAULT_HEARTBEAT_S = const(30)  # Welcome.heartbeat_s range and default (section 7)
MIN_HEARTBEAT_S = const(1)
MAX_HEARTBEAT_S = const(65535)
SILENCE_FACTOR = const(3)  # close after this many heartbeat periods without a packet
MIN_TOKEN_BYTES = const(16)  # DeviceLogin TOKEN details (section 7)
MAX_TOKEN_BYTES = const(64)
# Not the wire's, but both device shells' (firmware and host-side): how many peers a
# device keeps pinned (and their end-to-end keys derived); the oldest pin goes first.
MAX_PEERS = const(16)
