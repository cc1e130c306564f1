"""Cluster benchmark: one realm node against two nodes side by side, on one nats-server
with JetStream. Run by `make bench-cluster`; `--quick` for a short smoke run.

Measured, with the same client process (bench/realm_clients.py) for every row:
relayed packets/s with 16 streaming pairs (1 node; 2 nodes with each pair on one node;
2 nodes with every pair crossing nodes), reconnect handshakes/s, one-at-a-time relay
latency p50/p99 (same node, across nodes), and realm CPU per relayed packet summed over
the nodes (their own user+system time from /proc). nats-server's CPU is shown apart.
"""
import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.realm import BENCH_SETTINGS, PAYLOAD, WINDOW, percentile  # noqa: E402
from bench.realm import latency as realm_latency  # noqa: E402
from bench.realm_clients import BenchDevice, Identity, Pair, connect_many  # noqa: E402
from tools.harness import NatsServer, RealmProcess, ToolMissing, realm_command  # noqa: E402


def node(workdir, url, name):
    """A cluster node on a free port, sharing the realm folder (the key) with the others."""
    return RealmProcess(os.path.join(workdir, "realm"), "--cluster", url, "--node", name,
                        "--open-enrolment", *BENCH_SETTINGS, start=False).start(timeout=30)


async def measured(processes, work):
    """(result, wall seconds, CPU seconds of each process) around one awaitable."""
    loop = asyncio.get_running_loop()
    before = [p.cpu() for p in processes]
    start = loop.time()
    result = await work
    wall = loop.time() - start
    return result, wall, [p.cpu() - b for p, b in zip(processes, before)]


async def relay(nodes, nats, pairs, count, cross):
    """`pairs` senders stream `count` packets each; pair i's receiver is on node i (mod
    the nodes), its sender there too, or on the next node when `cross`."""
    flows = []
    for i in range(pairs):
        home = nodes[i % len(nodes)]
        away = nodes[(i + 1) % len(nodes)] if cross else home
        a, b = Identity(), Identity()
        receiver = await BenchDevice.connect(home.port, b)
        sender = await BenchDevice.connect(away.port, a)
        flow = Pair(sender, b, count, WINDOW, PAYLOAD, [])
        receiver.on_proxy = flow.on_proxy
        flows.append((flow, sender, receiver))
    await asyncio.sleep(0.5)  # every node has seen every session claim

    async def run():
        for flow, _, _ in flows:
            flow.pump()
        await asyncio.gather(*(flow.done for flow, _, _ in flows))
    _, wall, cpu = await measured(nodes + [nats], run())
    for _, sender, receiver in flows:
        sender.close()
        receiver.close()
    total = pairs * count
    return total / wall, 1e6 * sum(cpu[:-1]) / total, 1e6 * cpu[-1] / total


async def handshakes(nodes, nats, devices, rounds):
    """Reconnects on the pinned path, spread over the nodes."""
    identities = [Identity() for _ in range(devices)]
    for i, identity in enumerate(identities):  # first contact: enrolled, key bound
        await connect_many(nodes[i % len(nodes)].port, [identity], 1, False)

    async def run():
        await asyncio.gather(*(
            connect_many(n.port, identities[i::len(nodes)] * rounds, 16, False)
            for i, n in enumerate(nodes)))
    _, wall, cpu = await measured(nodes + [nats], run())
    total = devices * rounds
    return total / wall, 1e6 * sum(cpu[:-1]) / total


async def latency(sender_node, receiver_node, count):
    """p50 and p99 in ms, once every node has seen both sessions."""
    latencies = await realm_latency(sender_node, count, receiver_node, settle=0.5)
    return percentile(latencies, 50) / 1e6, percentile(latencies, 99) / 1e6


async def phase(nodes, nats, args):
    rows = {}
    rows["relay"] = await relay(nodes, nats, args.pairs, args.packets, False)
    if len(nodes) > 1:
        rows["relay_cross"] = await relay(nodes, nats, args.pairs, args.packets, True)
    rows["handshakes"] = await handshakes(nodes, nats, args.devices, args.rounds)
    rows["latency_same"] = await latency(nodes[0], nodes[0], args.latency)
    if len(nodes) > 1:
        rows["latency_cross"] = await latency(nodes[0], nodes[1], args.latency)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    args = p.parse_args()
    args.pairs = 16
    args.packets = 300 if args.quick else 3000
    args.devices = 20 if args.quick else 100
    args.rounds = 2 if args.quick else 5
    args.latency = 50 if args.quick else 500
    workdir = tempfile.mkdtemp(prefix="realm-bench-cluster-")
    subprocess.run(realm_command() + ["init", "--data", os.path.join(workdir, "realm")],
                   check=True, stdout=subprocess.DEVNULL)
    try:
        nats = NatsServer(workdir)
    except ToolMissing as e:
        raise SystemExit(str(e))
    url = nats.url
    results = {}
    try:
        for count in (1, 2):
            nodes = [node(workdir, url, "n%d" % (i + 1)) for i in range(count)]
            try:
                results[count] = asyncio.run(phase(nodes, nats, args))
            finally:
                for n in nodes:
                    n.stop()
    finally:
        nats.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, args)


def report(results, args):
    one, two = results[1], results[2]
    print("cluster bench: %d pairs x %d packets of %d B (window %d), %d devices x %d "
          "reconnects, %d one-at-a-time packets; nats-server %s"
          % (args.pairs, args.packets, PAYLOAD, WINDOW, args.devices, args.rounds, args.latency,
             subprocess.run(["nats-server", "--version"], capture_output=True,
                            text=True).stdout.strip()))
    print("| | 1 node | 2 nodes | 2 / 1 |")
    print("|---|---|---|---|")
    print("| relayed packets/s, each pair on one node | %.0f | %.0f | %.2f |" % (
        one["relay"][0], two["relay"][0], two["relay"][0] / one["relay"][0]))
    print("| relayed packets/s, every pair across nodes | - | %.0f | %.2f |" % (
        two["relay_cross"][0], two["relay_cross"][0] / one["relay"][0]))
    print("| realm CPU per relayed packet (sum over nodes), same node | %.1f us | %.1f us | |"
          % (one["relay"][1], two["relay"][1]))
    print("| realm CPU per relayed packet (sum over nodes), across nodes | - | %.1f us | |"
          % two["relay_cross"][1])
    print("| nats-server CPU per relayed packet, across nodes | - | %.1f us | |"
          % two["relay_cross"][2])
    print("| reconnect handshakes/s | %.0f | %.0f | %.2f |" % (
        one["handshakes"][0], two["handshakes"][0], two["handshakes"][0] / one["handshakes"][0]))
    print("| realm CPU per handshake (sum over nodes) | %.0f us | %.0f us | |" % (
        one["handshakes"][1], two["handshakes"][1]))
    print("| relay latency p50 / p99, same node | %.2f / %.2f ms | %.2f / %.2f ms | |" % (
        one["latency_same"] + two["latency_same"]))
    print("| relay latency p50 / p99, across nodes | - | %.2f / %.2f ms | |"
          % two["latency_cross"])


if __name__ == "__main__":
    main()
