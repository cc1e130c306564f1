# A device for tests/test_cross_interpreter.py and bench/core.py, run by MicroPython: the
# shared core's DeviceConnection and Endpoint with stdin/stdout as its stream link.
# argv: DEVICE_ID PRIVATE PUBLIC TOKEN PEER [REALM_PUBLIC DH2] (hex, token as text).
# It logs in, pings PEER end to end, and reports on stderr:
#   WELCOME pinned_path=<0|1> realm=<hex> dh2=<hex>   then   PONG <data>   or   CLOSED <error>
import sys
import gc
from binascii import hexlify, unhexlify

from shared.device import DeviceConnection
from shared.endpoint import Endpoint
from shared.events import Welcomed, Closed, Pong
from shared.framing import StreamFramer


def report(line):
    sys.stderr.write(line + "\n")


def main(argv):
    device_id, private, public = unhexlify(argv[0]), unhexlify(argv[1]), unhexlify(argv[2])
    token, peer = argv[3], unhexlify(argv[4])
    realm_public = unhexlify(argv[5]) if len(argv) > 5 else None
    dh2 = unhexlify(argv[6]) if len(argv) > 6 else None
    conn = DeviceConnection(device_id, private, public, token, StreamFramer(), 0,
                            realm_public=realm_public, dh2=dh2)
    endpoint = Endpoint(device_id, private, 1)
    endpoint.attach(conn)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        out = conn.data_to_send()
        if out:
            stdout.write(out)
            stdout.flush()
        header = stdin.read(2)
        if len(header) < 2:
            report("CLOSED link ended")
            return 1
        frame = header + stdin.read((header[0] << 8) | header[1])
        gc.collect()  # as the firmware runtime does around the handshake's X25519 garbage
        for event in conn.receive_data(frame, 0):
            if isinstance(event, Welcomed):
                report("WELCOME pinned_path=%d realm=%s dh2=%s" % (
                    event.pinned_path, hexlify(event.realm_public).decode(),
                    hexlify(event.dh2).decode()))
                endpoint.handle(event)
                endpoint.ping(peer, b"hi")
            elif isinstance(event, Closed):
                report("CLOSED %s" % event.error)
                return 1
            else:
                for app_event in endpoint.handle(event):
                    if isinstance(app_event, Pong):
                        report("PONG %s" % app_event.data.decode())
                        report("HEAP used=%d" % gc.mem_alloc())
                        return 0


sys.exit(main(sys.argv[1:]))
