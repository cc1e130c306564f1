"""The `realm` command: the server, its admin commands, and a host-side device.

Human output by default, `--json` for scripts; on failure one line on stderr
(`realm: <cause>`) and a non-zero exit code.

This module parses the command line and holds what the command groups share; each
group lives in its own module: serve_cli (serve, init, key), status_cli, device_cli,
update_cli, message_cli (send, listen).
"""
import argparse
import json
import os
import sqlite3
import sys
import uuid

from shared import protocol
from shared.errors import ProtocolError
from host import keyfile, realmdir
from host.registry import Registry, RegistryError
from host.server import Config

DEFAULTS = Config()  # `realm serve`'s defaults


class CliError(Exception):
    """A failure to report as one line."""


def host_port(text, default_host, default_port=protocol.DEFAULT_PORT):
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    try:
        port = int(port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError("not HOST:PORT: %r" % text)
    return (host.strip("[]") or default_host), port


def positive(kind, low, high):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError("%r is not a number from %s to %s"
                                             % (text, low, high))
        return value
    return parse


# -- what the command groups share --------------------------------------------------
def emit(args, value, human):
    print(json.dumps(value) if args.json else human)


REGISTRY_IN_CLUSTER = "the realm's registry is in the cluster on the NATS at URL"


def cluster_module():
    """host.cluster, or a one-line error when nats-py (the `cluster` extra) is missing."""
    try:
        from host import cluster
    except ImportError as e:
        raise CliError("cluster mode needs nats-py (%s): pip install 'realm[cluster]'" % e)
    return cluster


def cluster_key(args):
    """The realm key every node of a cluster shares: made once by the operator (realm
    init) and copied to every node's folder."""
    return keyfile.load_or_create_realm_key(realmdir.require(args.data))


def realm_public(data):
    return keyfile.load_or_create_realm_key(realmdir.require(data))[1]


class open_registry:
    """The registry of the realm in args.data, which must hold one."""

    def __init__(self, args):
        self.args = args

    def __enter__(self):
        if getattr(self.args, "cluster", None):  # `realm status` reads only a local one
            cluster = cluster_module()
            cluster.check_url(self.args.cluster)
            self.registry = cluster.ClusterRegistry(self.args.cluster,
                                                    cluster_key(self.args)[1])
        else:
            self.registry = Registry(realmdir.require(self.args.data))
        return self.registry

    def __exit__(self, *exc):
        self.registry.close()
        return False


def named_device(data, text):
    """`(id, name)` of a device given by its id or its name. Names are looked up in the
    registry of the realm in `data`; an id needs no realm here (it may be far away)."""
    try:
        device_id = str(uuid.UUID(text))
    except ValueError:
        device_id = None
    if not realmdir.holds_realm(data):
        if device_id is None:
            raise CliError("%r is not a device id, and there is no realm in %s to look the "
                           "name up in: give the id, or the realm's folder with --data or "
                           "REALM_DATA" % (text, os.path.abspath(data)))
        return device_id, ""
    registry = Registry(data)
    try:
        if device_id is None:
            device_id = registry.resolve(text)
        return device_id, registry.name(device_id)
    finally:
        registry.close()


NAMES_IN_CLUSTER = ("look device names up in the cluster's registry on the NATS at URL "
                    "(its realm key in --data)")


class DeviceNames:
    """`(id, name)` of devices for a command that runs one (send, listen, update), on its
    event loop: looked up in the cluster's registry with --cluster URL, else as
    named_device does (the realm in --data)."""

    def __init__(self, args):
        self.args = args
        self.data = args.data
        self.cluster = None
        if args.cluster:
            self.cluster = cluster_module().ClusterNames(args.cluster, cluster_key(args)[1])

    async def __aenter__(self):
        if self.cluster is not None:
            await self.cluster.connect()
        return self

    async def __aexit__(self, *exc):
        if self.cluster is not None:
            await self.cluster.close()
        return False

    async def named(self, text):
        """`(id, name)` of the device given by its id or its name."""
        if self.cluster is None:
            return named_device(self.data, text)
        return await self.cluster.named(text)

    async def every(self):
        """`(id, name)` of every device of the realm, oldest first."""
        if self.cluster is not None:
            return await self.cluster.every()
        with open_registry(self.args) as registry:
            return [(d.id, d.name) for d in registry.list_devices()]


def device_options(c, what="the device"):
    """The options of a command that runs a host-side device (send, listen, update)."""
    c.add_argument("--as", dest="as_id", required=True, metavar="DEVICE",
                   help="%s to be: its id, or its name in the realm in --data (in its "
                   "cluster's registry with --cluster)" % what)
    c.add_argument("--token", default=os.environ.get("REALM_TOKEN"),
                   help="%s's token (default: $REALM_TOKEN)" % what)
    c.add_argument("--realm", type=lambda t: host_port(t, "127.0.0.1"),
                   default=("127.0.0.1", protocol.DEFAULT_PORT), metavar="HOST:PORT",
                   help="the realm's address (default 127.0.0.1:%d)" % protocol.DEFAULT_PORT)
    c.add_argument("--serial", metavar="PORT", help="reach the realm over a serial port")
    c.add_argument("--baud", type=positive(int, 1, 10 ** 8), default=DEFAULTS.baud)
    c.add_argument("--state", metavar="FILE",
                   help="%s's keys and pins (default ~/.realm/devices/ID.json)" % what)
    c.add_argument("--repin", action="store_true",
                   help="trust the realm's key even if it differs from the pinned one")
    from host.client import WAIT_S
    c.add_argument("--timeout", type=positive(float, 0.01, 86400), default=WAIT_S,
                   metavar="SECONDS", help="for the connection and the delivery")


# -- parsing ---------------------------------------------------------------------
def add(parent, name, func, help):
    cmd = parent.add_parser(name, help=help, description=help)
    cmd.set_defaults(func=func)
    return cmd


def data_and_json(cmd, json_flag=True):
    cmd.add_argument("--data", metavar="DIR", help="the realm's data folder (default: "
                     "$%s, else %s)" % (realmdir.ENV, realmdir.DEFAULT))
    if json_flag:
        cmd.add_argument("--json", action="store_true", help="print JSON")


def cluster_flag(cmd, help):
    cmd.add_argument("--cluster", metavar="URL", help=help + " (docs/CLUSTER.md)")


def parser():
    from host import device_cli, message_cli, serve_cli, status_cli, update_cli
    p = argparse.ArgumentParser(prog="realm", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (serve_cli, status_cli, device_cli, update_cli, message_cli):
        group.add_parser(sub, add)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if hasattr(args, "data"):  # not every command has a realm folder (update build)
        args.data = realmdir.resolve(args.data)
    try:
        args.func(args)
    except KeyboardInterrupt:
        return 130
    except (CliError, RegistryError, realmdir.NoRealm) as e:
        return fail(e)
    except ProtocolError as e:
        from host.client import describe
        return fail(describe(e))
    except (OSError, ValueError, sqlite3.Error) as e:
        return fail(e.strerror if isinstance(e, OSError) and e.strerror and not e.filename
                    else e)
    return 0


def fail(cause):
    """One line on stderr (none when the output said it already, e.g. in JSON)."""
    if str(cause) != "None":
        print("realm: %s" % cause, file=sys.stderr)
    return 1


if __name__ == "__main__":
    # `python -m host.cli`: run this module as the groups import it (host.cli), not as a
    # second copy named __main__ whose CliError the groups' errors would not be.
    from host import cli
    sys.exit(cli.main())
