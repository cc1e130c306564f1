# The app of the large-send tests (tests/test_firmware_e2e.py): it sends as an app on a
# small board should send a large message, from a buffer made when it starts, while the
# heap is still whole, rather than a new block per message, which a fragmented 128k heap
# may not have. One command a line on stdin:
#   send PEER SIZE LETTER -> SIZE bytes of LETTER: "sent MSG_ID PEER", later
#                            "delivery MSG_ID STATUS" (or "error send ...")
import asyncio
import sys

_LARGEST = 4024  # the largest message: max_packet 4096 less the hop's 46 and e2e's 26


async def main(device):
    message = bytearray(_LARGEST)
    device.on_delivery(lambda msg_id, status: print("delivery", msg_id, status))
    print("app", device.app_version)
    stdin = asyncio.StreamReader(sys.stdin)
    while True:
        line = await stdin.readline()
        if not line:
            return
        _cmd, peer, size, letter = line.decode().split()
        data = memoryview(message)[:int(size)]
        for i in range(len(data)):
            data[i] = ord(letter)
        try:
            print("sent", device.send(peer, data), peer)
        except Exception as e:  # MemoryError: what the test looks for
            print("error send", repr(e))
