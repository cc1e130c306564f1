# A device app driven through stdin, one command a line, for `make demo`, the tests and
# `make bench-device`. It prints one line per thing that happens:
#   send PEER TEXT        -> "sent MSG_ID PEER TEXT", later "delivery MSG_ID STATUS"
#   ping PEER             -> "pong PEER RTT_MS" or "pong PEER timeout"
#   flood PEER N [SIZE]   -> sends N messages (of SIZE bytes), 8 in flight at most, then
#                            "flood N MS" once every one has its Delivery
#   heap                  -> "heap USED FREE" after a collection
#   stats                 -> "stats KEY=VALUE ..."
#   repin                 -> trust whatever realm answers next
#   repin-peer PEER       -> forget PEER's pinned key: its next key is trusted
#   quit                  -> ends the process
# and "message PEER TEXT" for each message received; "app VERSION" first.
import asyncio
import gc
import sys

from firmware.default_app import text

_WINDOW = 8  # messages in flight during a flood


def out(*words):
    print(*words)


def _print_delivery(msg_id, status):
    out("delivery", msg_id, status)


async def main(device):
    out("app", device.app_version)
    device.on_message(lambda peer, data: out("message", peer, text(data)))
    device.on_delivery(_print_delivery)
    stdin = asyncio.StreamReader(sys.stdin)
    while True:
        line = await stdin.readline()
        if not line:
            return
        words = line.decode().strip().split(" ", 2)
        try:
            await _command(device, words)
        except Exception as e:  # a bad command must not end the device
            out("error", words[0], repr(e))


async def _command(device, words):
    cmd = words[0]
    if cmd == "send":
        msg_id = device.send(words[1], words[2].encode())
        out("sent", msg_id, words[1], words[2])
    elif cmd == "ping":
        rtt = await device.ping(words[1], b"ping")
        out("pong", words[1], "timeout" if rtt is None else rtt)
    elif cmd == "flood":
        count, _, size = words[2].partition(" ")
        await _flood(device, words[1], int(count), int(size or 8))
    elif cmd == "heap":
        gc.collect()
        out("heap", gc.mem_alloc(), gc.mem_free())
    elif cmd == "stats":
        stats = device.stats
        out("stats", " ".join("%s=%s" % (k, stats[k]) for k in sorted(stats)))
    elif cmd == "repin":
        device.repin()
        out("repinned")
    elif cmd == "repin-peer":
        device.repin_peer(words[1])
        out("repinned", words[1])
    elif cmd == "quit":
        sys.exit(0)
    elif cmd:
        out("error", cmd, "unknown command")


async def _flood(device, peer, count, size):
    """Batches of _WINDOW sends, each batch waiting for its last Delivery: the realm
    answers in order, so the batch is through."""
    device.on_delivery(None)  # a line per message would be the bottleneck
    payload = b"f" * size
    started = device.now_ms()
    sent = 0
    try:
        while sent < count:
            for _ in range(min(_WINDOW, count - sent)):
                last = device.send(peer, payload)
                sent += 1
            if await device.delivery(last, 10000) is None:
                out("flood", "timeout", sent)
                return
        out("flood", count, device.now_ms() - started)
    finally:
        device.on_delivery(_print_delivery)
