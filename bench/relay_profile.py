"""The realm's relay path in one process, without sockets: CPU per relayed packet.

Two devices (the core's DeviceConnection) log in to an in-process realm (host/inprocess.py:
the real RealmServer, its links writing into memory); the sender's ProxyPass packets
(64-byte inner, msg_id 0, as in bench/realm.py) are sealed ahead of time and handed to
the realm in batches, the way a socket read brings them. Timed: the sender link's data_received and the flush that
writes to the target link: open, decode, route, encode, seal, frame.

usage: python bench/relay_profile.py [--packets N] [--rounds N] [--batch N] [--profile]
"""
import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.codec import DELIVERED  # noqa: E402
from host.inprocess import InProcessRealm  # noqa: E402

PAYLOAD = 64


async def run(packets, batch, rounds, profile):
    # The target never reads: a send limit it never reaches; its bytes are dropped per round.
    async with InProcessRealm(send_limit=2 ** 40) as realm:
        sender = await realm.log_in(bytes([1]) * 16)
        target = await realm.log_in(bytes([2]) * 16)
        spent = relay_rounds(realm.server, sender, target, packets, batch, rounds, profile)
        spent = [await round_ for round_ in spent]
    per_round = packets // batch * batch
    # The best round: the machine is shared, and other work only ever adds time.
    best = min(spent) / per_round
    print("%d rounds of %d packets (%d B inner, %d per read): best %.1f us realm CPU per "
          "packet (%.0f packets/s), median %.1f us"
          % (rounds, per_round, PAYLOAD, batch, 1e6 * best, 1 / best,
             1e6 * sorted(spent)[rounds // 2] / per_round))
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


def relay_rounds(server, sender, target, packets, batch, rounds, profiler):
    """One coroutine per round, each giving the CPU seconds the realm spent on it."""
    inner = bytes(PAYLOAD)
    per_round = packets // batch * batch

    async def one_round():
        reads = []
        for _ in range(per_round // batch):
            for _ in range(batch):
                sender.conn.send_proxy(target.device_id, 0, inner)
            reads.append(sender.conn.data_to_send())
        relayed = server.stats.relayed[DELIVERED]
        if profiler:
            profiler.enable()
        start = time.process_time()
        for data in reads:
            sender.link.data_received(data)
            await asyncio.sleep(0)  # the loop runs the batched flush to the target
        spent = time.process_time() - start
        if profiler:
            profiler.disable()
        done = server.stats.relayed[DELIVERED] - relayed
        if done != per_round:
            raise SystemExit("relayed %d of %d" % (done, per_round))
        del target.transport.data[:]
        return spent
    return [one_round() for _ in range(rounds)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--packets", type=int, default=20000, help="per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=16, help="packets per socket read")
    p.add_argument("--profile", action="store_true", help="cProfile the timed part")
    args = p.parse_args()
    asyncio.run(run(args.packets, args.batch, args.rounds,
                    cProfile.Profile() if args.profile else None))


if __name__ == "__main__":
    main()
