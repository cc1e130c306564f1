# Protocol-core figures, the same script on CPython and on MicroPython.
# Prints one line per figure: "name<TAB>value<TAB>unit". Run by bench/core.py.
# usage: python|micropython bench/core_figures.py ROOT
import gc
import sys
from binascii import unhexlify

sys.path.insert(0, sys.argv[1])
# One module at a time with a collection before each, as the firmware loads them: compiled
# from source at 128 KB all at once, the compiler's garbage left no room for the last one.
for _name in ("shared.codec", "shared.crypto", "shared.ed25519", "shared.device",
              "shared.events", "shared.framing", "shared.realm"):
    gc.collect()
    __import__(_name)

from shared import codec, crypto, ed25519, protocol  # noqa: E402
from shared.device import DeviceConnection  # noqa: E402
from shared.framing import StreamFramer  # noqa: E402
from shared.realm import LoginRequest, RealmConnection  # noqa: E402

try:
    from time import ticks_us, ticks_diff

    def now_us():
        return ticks_us()

    def since_us(start):
        return ticks_diff(ticks_us(), start)
except ImportError:  # CPython
    from time import perf_counter_ns

    def now_us():
        return perf_counter_ns() // 1000

    def since_us(start):
        return now_us() - start


def timed(fn, repeat):
    """Mean µs per call, over `repeat` calls after one warm-up."""
    fn()
    gc.collect()
    start = now_us()
    for _ in range(repeat):
        fn()
    return since_us(start) / repeat


def report(name, value, unit):
    print("%s\t%.1f\t%s" % (name, value, unit))


SLOW = sys.implementation.name == "micropython"
REALM_KEYS = (bytes([7]) * 32, crypto.public_key(bytes([7]) * 32))
DEVICE_KEYS = (bytes([8]) * 32, crypto.public_key(bytes([8]) * 32))
DEVICE_ID = bytes(range(16))


def handshake(pinned, dh2, bound):
    """One handshake; returns the µs spent in the device's machine only."""
    eph = crypto.generate_keypair()  # made ahead of time by the firmware, so not timed
    realm = RealmConnection(REALM_KEYS[0], REALM_KEYS[1], StreamFramer(), 0, bound.get)
    start = now_us()
    device = DeviceConnection(DEVICE_ID, DEVICE_KEYS[0], DEVICE_KEYS[1], "bench-token-0123",
                              StreamFramer(), 0, realm_public=pinned, dh2=dh2, ephemeral=eph)
    out = device.data_to_send()
    spent = since_us(start)
    welcomed = None
    while out:
        for ev in realm.receive_data(out, 0):
            if isinstance(ev, LoginRequest):
                bound[ev.device_id] = ev.device_public
                realm.accept_login("bench", protocol.DEFAULT_HEARTBEAT_S,
                                   protocol.DEFAULT_MAX_PACKET)
        back = realm.data_to_send()
        start = now_us()
        events = device.receive_data(back, 0)
        out = device.data_to_send()
        spent += since_us(start)
        welcomed = welcomed or [e for e in events if hasattr(e, "dh2")]
    return spent, welcomed[0]


def main():
    scalar, point = bytes([5]) * 32, REALM_KEYS[1]
    report("x25519", timed(lambda: crypto.x25519(scalar, point), 3 if SLOW else 50) / 1000, "ms")
    bound = {}
    first, welcomed = handshake(None, None, bound)
    report("handshake_first_contact", first / 1000, "ms")
    runs = 3
    total = 0
    for _ in range(runs):
        total += handshake(welcomed.realm_public, welcomed.dh2, bound)[0]
    report("handshake_pinned", total / runs / 1000, "ms")
    enc, mac = bytes([1]) * 32, bytes([2]) * 32
    for size in (64, 1024):
        payload = bytes(size)
        sealer, opener = crypto.Sealer(enc, mac), crypto.Opener(enc, mac)
        report("seal_open_%d" % size,
               timed(lambda: opener.open(b"\x02\x07", sealer.seal(b"\x02\x07", payload)), 200),
               "us")
    inner = bytes(64)

    def proxy():
        codec.decode(codec.encode(codec.PROTO_REALM, codec.PROXY_PASS, DEVICE_ID, 7, inner))
    report("proxy_encode_decode", timed(proxy, 500), "us")
    # RFC 8032 TEST SHA(abc): a 64-byte message; a manifest of 1 KiB adds its SHA-512.
    key, message, signature = (unhexlify(
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf"), unhexlify(
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"), unhexlify(
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"))
    report("ed25519_verify", timed(lambda: ed25519.verify(key, message, signature),
                                   5 if SLOW else 50) / 1000, "ms")
    report("sha512_pure_1k", timed(lambda: ed25519.sha512_pure(bytes(1024)), 5 if SLOW else 50)
           / 1000, "ms")


main()
