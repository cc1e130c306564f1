"""The realm's side of a pinned reconnect in one process, without sockets: realm CPU per
reconnect, the kernel's part left out.

Devices (the core's DeviceConnection, tokens made by the realm, keys bound) log in once to
an in-process realm (host/inprocess.py: the real RealmServer, its links writing into
memory, a memory registry), then reconnect on the pinned path over and over, each
closing its link after the Welcome, as `bench/realm.py --only handshakes` does over TCP.
Timed: only the realm's calls (the link's opening, its reads, the login task, the link's
end); the devices' work is done between them, untimed. Log lines go to /dev/null through
the realm's own log setup.

usage: python bench/login_profile.py [--reconnects N] [--rounds N] [--profile]
"""
import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared import crypto  # noqa: E402
from shared.device import DeviceConnection  # noqa: E402
from shared.events import Welcomed  # noqa: E402
from shared.framing import StreamFramer  # noqa: E402
from host import logs  # noqa: E402
from host.inprocess import InProcessRealm, MemoryTransport  # noqa: E402

DEVICES = 40  # as bench/realm.py's handshake phase


class Device:
    def __init__(self, index, store):
        self.device_id = bytes([index]) * 16
        self.private, self.public = crypto.generate_keypair()
        self.token = b"t%031d" % index
        store.add_device(self.device_id, self.token)
        self.realm_public = self.dh2 = None


class Meter:
    """The realm's CPU seconds, spent only in the calls made through it (and profiled
    there, if a profiler is given)."""

    def __init__(self, profiler=None):
        self.seconds = 0.0
        self.profiler = profiler

    def call(self, func, *args):
        if self.profiler:
            self.profiler.enable()
        start = time.process_time()
        try:
            return func(*args)
        finally:
            self.seconds += time.process_time() - start
            if self.profiler:
                self.profiler.disable()

    async def loop_turn(self):
        """Let the loop run once (the realm's login tasks), timed."""
        if self.profiler:
            self.profiler.enable()
        start = time.process_time()
        await asyncio.sleep(0)
        self.seconds += time.process_time() - start
        if self.profiler:
            self.profiler.disable()


async def run(reconnects, rounds, profiler, sort="tottime"):
    async with InProcessRealm(max_handshakes_per_address=10 ** 6) as realm:
        server = realm.server
        devices = [Device(i + 1, realm.store) for i in range(DEVICES)]
        for device in devices:  # first logins: keys bound, the realm's key pinned
            await reconnect(server, device, Meter())
        spent = []
        for _ in range(rounds):
            meter = Meter(profiler)
            for i in range(reconnects):
                await reconnect(server, devices[i % DEVICES], meter)
            if server.stats.logins["pinned"] < reconnects:
                raise SystemExit("not the pinned path: %s" % server.stats.logins)
            spent.append(meter.seconds / reconnects)
    best = min(spent)
    print("%d rounds of %d pinned reconnects: best %.0f us realm CPU each (no kernel), "
          "median %.0f us" % (rounds, reconnects, 1e6 * best,
                              1e6 * sorted(spent)[rounds // 2]))
    if profiler:
        pstats.Stats(profiler).sort_stats(sort).print_stats(40)


async def reconnect(server, device, meter):
    """One connection of `device` to its Welcome and its close, the loop run whenever
    the realm's login task is due."""
    conn = DeviceConnection(device.device_id, device.private, device.public, device.token,
                            StreamFramer(), server.now_ms(), realm_public=device.realm_public,
                            dh2=device.dh2)
    transport = MemoryTransport()
    link = meter.call(server.open_link, transport, "127.0.0.1:40000", StreamFramer(),
                      "127.0.0.1")
    while True:
        data = conn.data_to_send()
        if data:
            meter.call(link.data_received, data)
        back, transport.data = bytes(transport.data), bytearray()
        for event in conn.receive_data(back, server.now_ms()) if back else ():
            if isinstance(event, Welcomed):
                device.realm_public, device.dh2 = event.realm_public, event.dh2
                meter.call(link.transport_lost, None)
                return
        if not data and not back:
            await meter.loop_turn()  # the login task runs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reconnects", type=int, default=4000, help="per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="cProfile the whole run")
    args = p.parse_args()
    logs.setup(stream=open(os.devnull, "w"))
    logs.gather_only_what_is_shown()
    asyncio.run(run(args.reconnects, args.rounds,
                    cProfile.Profile() if args.profile else None))


if __name__ == "__main__":
    main()
