"""Helpers for the cluster tests: a real `nats-server -js` on a free loopback port with its
store in a temporary folder, cluster realm nodes as `realm serve --cluster` processes, and
a small TCP balancer (what an operator puts in front of the nodes)."""
import json
import os
import socket
import threading
import time
import uuid

import nats
import pytest
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError

from host.cli import realm_public
from host.cluster import prefix_for
from tests.realm_helpers import RealmProcess, run, run_cli
from tools.harness import NatsServer, ToolMissing

# Set by a developer who has no nats-server and asks to skip these tests; `make test`
# installs nats-server (system-deps), so CI always runs them.
SKIP_ENV = "REALM_SKIP_NATS"


def start_nats(folder):
    """A harness NatsServer; without nats-server, a failure that says how to install it,
    or a skip when the developer asked for one."""
    try:
        return NatsServer(folder)
    except ToolMissing as e:
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip("%s; %s=1 skips the cluster tests" % (e, SKIP_ENV))
        pytest.fail("%s, or set %s=1 to skip the cluster tests" % (e, SKIP_ENV))


class ClusterAdmin:
    """The admin commands of a cluster realm (`url`, `data_dir`), while its nodes run."""

    def admin(self, *args):
        """`realm ARGS --data DATA --cluster URL --json`, parsed (as RealmProcess.admin)."""
        code, out, err = run_cli(*(args + ("--data", self.data_dir, "--cluster", self.url,
                                          "--json")))
        assert code == 0, err
        return json.loads(out)

    def add_device(self, name=""):
        """(raw id, token), registered in the cluster."""
        result = self.admin("device", "add", "--name", name)
        return uuid.UUID(result["id"]).bytes, result["token"]

    def devices(self):
        return {d["id"]: d for d in self.admin("device", "list")}


class Node(ClusterAdmin, RealmProcess):
    """`realm serve --cluster URL --node NAME` sharing the realm folder `data_dir`."""

    def __init__(self, data_dir, url, name, *extra):
        self.name = name
        self.url = url
        RealmProcess.__init__(self, data_dir, "--cluster", url, "--node", name, *extra)

    def kill(self):
        """kill -9, then wait until NATS has dropped the node's connection. Until then NATS
        still delivers to the dead node's subscriptions: a packet another node forwards
        to it in that moment is lost there, and its sender hears UNAVAILABLE after 3 s;
        from then on NATS answers "no responders" and the packet is stored (QUEUED).
        docs/CLUSTER.md, "A node stopped or killed"."""
        self.proc.kill()
        self.proc.wait()
        self._log.close()
        subject = "%s.node.%s" % (prefix_for(realm_public(self.data_dir)), self.name)
        run(_no_responders(self.url, subject))


async def _no_responders(url, subject, timeout=10):
    """Once a request to `subject` is answered "no responders" by NATS."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await nc.request(subject, b"", timeout=0.2)  # a node ignores an empty one
            except NoRespondersError:
                return
            except NatsTimeoutError:  # taken by a subscription NATS still holds
                pass
            assert time.monotonic() < deadline, "NATS still delivers %s" % subject
    finally:
        await nc.close()


class ClusterRealm(ClusterAdmin):
    """One realm (its own key, so its own names in NATS) and its nodes."""

    def __init__(self, folder, nats, *extra):
        self.data_dir = os.path.join(str(folder), "realm")
        self.url = nats.url
        self.extra = [str(e) for e in extra]
        code, _out, err = run_cli("init", "--data", self.data_dir)
        assert code == 0, err
        self.nodes = []

    def node(self, name, *extra):
        node = Node(self.data_dir, self.url, name, *(self.extra + [str(e) for e in extra]))
        self.nodes.append(node)
        return node

    def stop(self):
        for node in self.nodes:
            if node.proc.poll() is None:
                assert node.stop() == 0, node.log()
            node.assert_clean_log()


class Balancer:
    """A TCP balancer on a free port: each connection goes to the first backend port that
    accepts it (what DNS round-robin or a TCP load balancer gives a device)."""

    def __init__(self, ports):
        self.ports = list(ports)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            for port in self.ports:
                try:
                    backend = socket.create_connection(("127.0.0.1", port), 1)
                except OSError:
                    continue
                for a, b in ((client, backend), (backend, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
                break
            else:
                client.close()

    @staticmethod
    def _pipe(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self._stopped = True
        self.listener.close()
