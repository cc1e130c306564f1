"""The `realm` command: the server, its admin commands, and a host-side device.

Human output by default, `--json` for scripts; on failure one line on stderr
(`realm: <cause>`) and a non-zero exit code.
"""
import argparse
import asyncio
import fcntl
import json
import os
import sqlite3
import sys
import time
import urllib.error
import uuid

from shared import crypto, protocol
from shared.errors import ProtocolError, KEY_MISMATCH
from host import keyfile, logs, realmdir
from host.fleet import fingerprint_hex, registry_status
from host.registry import Registry, RegistryError, label
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
            raise argparse.ArgumentTypeError("%r is not a number from %s to %s" % (text, low, high))
        return value
    return parse


def http_address(text):
    """--http: HOST:PORT, or "off"."""
    if text == "off":
        return None
    return host_port(text, DEFAULTS.http[0], DEFAULTS.http[1])


def emit(args, value, human):
    print(json.dumps(value) if args.json else human)


# -- serve and init --------------------------------------------------------------
def cmd_serve(args):
    from host.server import serve
    from host.web import is_loopback
    try:
        logs.setup(args.verbose, log_file=args.log_file)
    except OSError as e:
        raise CliError("cannot write the log file %s: %s" % (args.log_file, e.strerror or e))
    if args.http is not None and not args.http_token and not is_loopback(args.http[0]):
        raise CliError("--http %s:%d would show the fleet beyond this machine: give a token "
                       "(--http-token or REALM_HTTP_TOKEN), or keep it on 127.0.0.1"
                       % args.http)
    config = Config(host=args.listen[0], port=args.listen[1], data_dir=args.data, name=args.name,
                    serial=args.serial, baud=args.baud, open_enrolment=args.open_enrolment,
                    heartbeat_s=args.heartbeat, handshake_timeout_s=args.handshake_timeout,
                    max_packet=args.max_packet, max_handshakes=args.max_handshakes,
                    max_handshakes_per_address=args.max_handshakes_per_address,
                    hello_timeout_s=args.hello_timeout, send_limit=args.send_limit,
                    summary_s=args.summary, http=args.http, http_token=args.http_token or None)
    if args.cluster:
        # The nodes share the folder's key, not its registry: no lock, nothing created.
        asyncio.run(_serve_cluster(args, config, serve))
        return
    if args.node:
        raise CliError("--node names a node of a cluster: it needs --cluster URL")
    from host.store import LocalStore
    realmdir.create(args.data)
    lock = open(os.path.join(args.data, "realm.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CliError("another realm is already serving %s" % args.data)
    serving = realmdir.hold_serving(args.data)
    keypair = keyfile.load_or_create_realm_key(args.data)
    store = LocalStore(args.data)
    try:
        asyncio.run(serve(config, store, keypair))
    except OSError as e:
        raise _listen_error(args, e)
    finally:
        serving.close()
        lock.close()


def cmd_init(args):
    created = realmdir.create(args.data)
    Registry(args.data).close()
    public = _realm_public(args.data)
    emit(args, {"data": os.path.abspath(args.data), "created": created,
                "public_key": public.hex(), "fingerprint": fingerprint_hex(public)},
         "%s %s\npublic key   %s\nfingerprint  %s" % (
             "made a new realm in" if created else "a realm is there already:",
             os.path.abspath(args.data), public.hex(), fingerprint_hex(public)))


def _listen_error(args, e):
    return CliError("cannot listen on %s:%d: %s" % (args.listen[0], args.listen[1],
                                                      e.strerror or e))


async def _serve_cluster(args, config, serve):
    cluster_module().check_url(args.cluster)
    keypair = _cluster_key(args)
    from host.cluster_router import ClusterRouter
    cluster = cluster_module().Cluster(args.cluster, keypair[1],
                                       node=args.node or _default_node())
    await cluster.connect()
    try:
        await serve(config, cluster, keypair,
                    make_router=lambda realm: ClusterRouter(realm, cluster))
    except OSError as e:
        raise _listen_error(args, e)


def _cluster_key(args):
    """The realm key every node of a cluster shares: made once by the operator (realm
    init) and copied to every node's folder."""
    return keyfile.load_or_create_realm_key(realmdir.require(args.data))


def _default_node():
    import socket
    return socket.gethostname().split(".")[0] or "node"


REGISTRY_IN_CLUSTER = "the realm's registry is in the cluster on the NATS at URL"


def cluster_module():
    """host.cluster, or a one-line error when nats-py (the `cluster` extra) is missing."""
    try:
        from host import cluster
    except ImportError as e:
        raise CliError("cluster mode needs nats-py (%s): pip install 'realm[cluster]'" % e)
    return cluster


def node_name(text):
    if not text or len(text) > 64 or not all(c.isalnum() or c in "-_" for c in text):
        raise argparse.ArgumentTypeError("%r: a node name is 1 to 64 letters, digits, - or _"
                                         % text)
    return text


# -- key and device admin ----------------------------------------------------------
def _realm_public(data):
    return keyfile.load_or_create_realm_key(realmdir.require(data))[1]


def cmd_key(args):
    public = _realm_public(args.data)
    emit(args, {"public_key": public.hex(), "fingerprint": fingerprint_hex(public)},
         "public key   %s\nfingerprint  %s" % (public.hex(), fingerprint_hex(public)))


def cmd_device_add(args):
    if args.config and os.path.exists(args.config):
        raise CliError("%s exists: remove it, or give another --config path" % args.config)
    private = public = None
    if args.config:  # the device's key pair, made here: peers reach it before it boots
        private, public = crypto.generate_keypair()
    with _registry(args) as registry:
        peers = {registry.name(i): i for i in (registry.resolve(p) for p in args.peers)}
        if "" in peers:
            raise CliError("--peers: give devices that have a name")
        device_id, token = registry.add_device(time.time(), args.id, args.name, public)
    shown = {"id": device_id, "name": args.name, "token": token}
    if args.config:
        keyfile.write_json(args.config, device_config(args, device_id, token, private, peers))
        shown["config"] = args.config
    emit(args, shown, "id     %s\nname   %s\ntoken  %s\n%s" % (
        device_id, args.name or "-", token,
        "config written to %s (mode 0600: it holds the token and the device's key)"
        % args.config if args.config else
        "(the token is shown only now: give it to the device)"))


def device_config(args, device_id, token, private, peers):
    """The device's config.json (docs/FIRMWARE.md), the realm's key pre-pinned."""
    config = {"device_id": device_id, "token": token, "name": args.name or device_id[:8],
              "realm": {"host": args.realm[0], "port": args.realm[1]},
              "realm_key": _realm_public(args.data).hex(), "private_key": private.hex()}
    if args.wifi_ssid:
        config["wifi"] = {"ssid": args.wifi_ssid,
                          "password": args.wifi_password or os.environ.get("WIFI_PASSWORD", "")}
    if peers:
        config["peers"] = peers
    return config


def cmd_device_list(args):
    with _registry(args) as registry:
        devices = registry.list_devices()
    running = bool(args.cluster) or realmdir.is_served(args.data)  # the cluster knows
    rows = [{"id": d.id, "name": d.name, "fingerprint": fingerprint_hex(d.bound_key),
             "online": d.online if running else None, "queued": d.queued,
             "last_seen": d.last_seen}
            for d in devices]
    if args.json:
        print(json.dumps(rows))
        return
    if not rows:
        print("no devices")
    else:
        print("%-36s  %-16s  %-16s  %-7s  %6s  %s" % ("id", "name", "key", "online", "queued",
                                                       "last seen"))
    for r in rows:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_seen"])) \
            if r["last_seen"] else "never"
        print("%-36s  %-16s  %-16s  %-7s  %6d  %s" % (
            r["id"], r["name"] or "-", (r["fingerprint"] or "unbound")[:16],
            "?" if r["online"] is None else "yes" if r["online"] else "no", r["queued"], seen))
    if rows and not running:
        print("online: unknown: the realm is not running (realm serve --data %s)" % args.data)


def cmd_device_remove(args):
    with _registry(args) as registry:
        device_id = registry.resolve(args.device)
        name = registry.name(device_id)
        registry.remove_device(device_id)
    emit(args, {"removed": device_id, "name": name}, "removed %s" % label(device_id, name))


def cmd_device_reset_key(args):
    with _registry(args) as registry:
        device_id = registry.resolve(args.device)
        registry.reset_key(device_id)
        name = registry.name(device_id)
    emit(args, {"unbound": device_id, "name": name},
         "%s unbound: its next first contact binds its new key" % label(device_id, name))


def cmd_device_token(args):
    with _registry(args) as registry:
        device_id = registry.resolve(args.device)
        token = registry.new_token(device_id)
        name = registry.name(device_id)
    emit(args, {"id": device_id, "name": name, "token": token},
         "id     %s\nname   %s\ntoken  %s\n(the token is shown only now; the old one no "
         "longer logs in)" % (device_id, name or "-", token))


# -- status -------------------------------------------------------------------------
def cmd_status(args):
    from host.server import HTTP_FILE
    from host.web import fetch_status
    url = args.url
    served = realmdir.is_served(args.data)
    if url is None and served:
        try:
            with open(os.path.join(args.data, HTTP_FILE)) as f:
                url = f.read().strip()
        except FileNotFoundError:
            pass  # the realm serving the folder runs with --http off
    status = None
    if not served and url is None:
        why = "no realm is serving %s" % args.data
    else:
        why = "the realm serving %s has its HTTP API off" % args.data
    if url:
        try:
            status = fetch_status(url, args.token)
        except urllib.error.HTTPError as e:
            if e.code == 401:
                raise CliError("the realm at %s wants its HTTP token: --token or "
                               "REALM_HTTP_TOKEN" % url)
            raise CliError("the realm at %s answered %d %s" % (url, e.code, e.reason))
        except (OSError, ValueError) as e:
            if args.url:
                raise CliError("no answer from %s: %s" % (url, getattr(e, "reason", e)))
            why = "the realm at %s does not answer" % url
    if status is None:
        with _registry(args) as registry:
            status = registry_status(registry, _realm_public(args.data))
        status["realm"]["why"] = why
        status["realm"]["served"] = served
    if args.json:
        print(json.dumps(status))
    else:
        print(format_status(status, url))


def format_status(status, url):
    r, now = status["realm"], status["realm"]["now"]
    if r["source"] == "realm":
        lines = ["realm %s %s, up %s, from its HTTP API at %s" % (
                     r["name"], r["version"], _duration(now - r["started"]), url),
                 "fingerprint %s" % r["fingerprint"],
                 "%d of %d devices online, %d in handshake, %d packets queued; "
                 "%.1f packets/s, %.1f logins/s" % (
                     r["online"], r["devices"], r["handshakes"], r["queue"]["packets"],
                     r["rates"]["packets_per_s"], r["rates"]["logins_per_s"])]
    else:
        lines = ["from the registry (%s)%s" % (r["why"], ": online as the running realm last "
                                               "wrote it" if r["served"] else ""),
                 "fingerprint %s" % r["fingerprint"],
                 "%d devices, %d packets queued" % (r["devices"], r["queue"]["packets"])]
    devices = status["devices"]
    if not devices:
        return "\n".join(lines + ["no devices"])
    lines.append("")
    lines.append("%-16s %-36s %-8s %-16s %6s  %-10s %9s %7s %s" % (
        "name", "id", "state", "since/last seen", "queued", "firmware", "heap", "rssi",
        "report"))
    for d in devices:
        report = d["report"] or {}
        if d["online"]:
            when = _duration(now - d["since"]) if d.get("since") else "elsewhere"
        else:
            when = _duration(now - d["last_seen"]) + " ago" if d["last_seen"] else "never"
        lines.append("%-16s %-36s %-8s %-16s %6d  %-10s %9s %7s %s" % (
            _printable(d["name"] or "-"), d["id"], "online" if d["online"] else "offline", when,
            d["queued"], _printable(report.get("fw", "-")),
            report.get("heap", "-"), report.get("rssi", "-"),
            _duration(now - d["report_at"]) + " old" if d.get("report_at") else "-"))
    return "\n".join(lines)


def _printable(value):
    """A device's own words, safe for a terminal: no control characters."""
    return "".join(c if c.isprintable() else "?" for c in str(value))


def _duration(seconds):
    s = max(0, int(seconds))
    if s < 60:
        return "%d s" % s
    if s < 3600:
        return "%d min" % (s // 60)
    if s < 86400:
        return "%d h %d min" % (s // 3600, s % 3600 // 60)
    return "%d d %d h" % (s // 86400, s % 86400 // 3600)


class _registry:
    """The registry of the realm in args.data, which must hold one."""

    def __init__(self, args):
        self.args = args

    def __enter__(self):
        if getattr(self.args, "cluster", None):  # `realm status` reads only a local one
            cluster = cluster_module()
            cluster.check_url(self.args.cluster)
            self.registry = cluster.ClusterRegistry(self.args.cluster,
                                                    _cluster_key(self.args)[1])
        else:
            self.registry = Registry(realmdir.require(self.args.data))
        return self.registry

    def __exit__(self, *exc):
        self.registry.close()
        return False


# -- the host-side device -----------------------------------------------------------
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


def device_name(data, device_id):
    """The device's name in the realm in `data`, '' if there is none (or no realm here)."""
    return named_device(data, device_id)[1]


def _client(args, on_status=None, reconnect=True):
    from host.client import RealmClient
    device_id, args.as_name = named_device(args.data, args.as_id)
    if not args.token:
        raise CliError("a token is needed: --token or REALM_TOKEN")
    args.as_id = device_id
    return RealmClient(device_id, args.token, realm=args.realm, state=args.state or "default",
                       serial=args.serial, baud=args.baud, repin=args.repin,
                       handshake_timeout_s=args.timeout, on_status=on_status,
                       reconnect=reconnect)


def _refused(error, client, args):
    """The CliError for a failure that ended the client, with the fix when there is one."""
    from host.client import describe
    if isinstance(error, ProtocolError) and error.code == KEY_MISMATCH:
        if client.realm_key_changed:
            return CliError("%s; if the realm's key really changed, run again with --repin"
                            % describe(error))
        if error.remote:
            return CliError("the realm holds another key for %s than the one in %s (a new "
                            "state file?); if so, on the realm: realm device reset-key %s"
                            % (label(args.as_id, args.as_name), client._state.path,
                               args.as_name or args.as_id))
    if isinstance(error, OSError):
        return CliError("%s (is it running there?)" % describe(error, client.where))
    return CliError(describe(error))


async def _send(args):
    from host.client import PeerKeyChangedError
    client = _client(args, reconnect=False)
    to_id, to_name = named_device(args.data, args.to)
    data = sys.stdin.buffer.read() if args.message == "-" else args.message.encode()
    try:
        try:
            await asyncio.wait_for(client.start(), args.timeout)
        except asyncio.TimeoutError:
            raise CliError("no answer from the realm at %s in %s s" % (client.where,
                                                                       args.timeout))
        status = await client.send(to_id, data, args.timeout)
    except asyncio.TimeoutError:
        raise CliError("no Delivery report in %s s" % args.timeout)
    except PeerKeyChangedError as e:
        raise CliError(str(e))
    except (ProtocolError, OSError) as e:
        raise _refused(e, client, args)
    finally:
        await client.close()
    delivered = status in ("DELIVERED", "QUEUED")
    if args.json:
        print(json.dumps({"to": to_id, "to_name": to_name, "status": status}))
    elif delivered:
        print("%s to %s" % (status.lower(), label(to_id, to_name)))
    if not delivered:
        raise CliError(None if args.json else "not delivered to %s: %s"
                       % (label(to_id, to_name), status))


async def _listen(args):
    def status(state, detail):
        if state == "online" and not args.json:
            print("online as %s at %s; waiting for messages" % (
                label(args.as_id, args.as_name), client.where), flush=True)
        elif state == "offline":
            print("realm: offline: %s" % detail, file=sys.stderr, flush=True)

    client = _client(args, status, reconnect=args.reconnect)
    chat = None
    received = 0
    try:
        await client.start()
        if args.chat:
            chat = asyncio.ensure_future(_chat(client, args))
        while args.count is None or received < args.count:
            try:
                message = await client.receive(args.wait)
            except asyncio.TimeoutError:
                raise CliError("no message in %s s" % args.wait)
            received += 1
            name = device_name(args.data, message.peer)
            text = message.data.decode("utf-8", "replace")
            emit(args, {"from": message.peer, "from_name": name, "text": text,
                        "hex": message.data.hex()},
                 "%s: %s" % (label(message.peer, name), text))
            sys.stdout.flush()
            if args.reply:
                await _reply(client, args, message, name)
    except (ProtocolError, OSError) as e:
        raise _refused(e, client, args)
    finally:
        if chat is not None:
            chat.cancel()
        await client.close()


async def _reply(client, args, message, name):
    """Run --reply's command with the message on its stdin; what it prints goes back."""
    env = dict(os.environ, REALM_FROM=message.peer, REALM_FROM_NAME=name)
    proc = await asyncio.create_subprocess_shell(
        args.reply, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
    out, _ = await proc.communicate(message.data)
    if proc.returncode != 0:
        print("realm: --reply command ended with exit code %d: nothing sent back"
              % proc.returncode, file=sys.stderr, flush=True)
        return
    if out:
        await _report_delivery(args, client.send_nowait(message.peer, out.rstrip(b"\n")),
                               client, message.peer, name)


async def _chat(client, args):
    """--chat: each line typed on stdin, `PEER TEXT`, is sent to PEER (a name or an id)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode("utf-8", "replace")
        if not line:
            return  # end of input: listening goes on
        peer, _, text = line.rstrip("\n").partition(" ")
        if not peer:
            continue
        try:
            peer_id, name = named_device(args.data, peer)
        except (CliError, RegistryError) as e:
            print("realm: %s" % e, file=sys.stderr, flush=True)
            continue
        asyncio.ensure_future(_report_delivery(args, client.send_nowait(peer_id, text.encode()),
                                               client, peer_id, name))


async def _report_delivery(args, msg_id, client, peer_id, name):
    """Say what became of a message sent while listening: its status, or why not."""
    from host.client import PeerKeyChangedError, describe
    try:
        status = await client.delivery(msg_id, args.timeout)
    except asyncio.TimeoutError:
        status = "no Delivery report in %s s" % args.timeout
    except (ProtocolError, OSError, PeerKeyChangedError) as e:
        status = "not sent: %s" % describe(e)
    if args.json:
        print(json.dumps({"to": peer_id, "to_name": name, "msg_id": msg_id,
                          "status": status}), flush=True)
    elif status.isupper():
        print("%s to %s" % (status.lower(), label(peer_id, name)), flush=True)
    else:
        print("realm: to %s: %s" % (label(peer_id, name), status), file=sys.stderr, flush=True)


def cmd_send(args):
    asyncio.run(_send(args))


def cmd_listen(args):
    asyncio.run(_listen(args))


# -- parsing ---------------------------------------------------------------------
def device_options(c, what="the device"):
    """The options of a command that runs a host-side device (send, listen, update)."""
    c.add_argument("--as", dest="as_id", required=True, metavar="DEVICE",
                   help="%s to be: its id, or its name in the realm in --data" % what)
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
    c.add_argument("--timeout", type=positive(float, 0.01, 86400), default=10.0,
                   metavar="SECONDS", help="for the connection and the delivery")


def parser():
    p = argparse.ArgumentParser(prog="realm", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

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

    s = add(sub, "serve", cmd_serve, "run the realm server until SIGINT or SIGTERM")
    s.add_argument("--listen", type=lambda t: host_port(t, DEFAULTS.host),
                   default=(DEFAULTS.host, DEFAULTS.port), metavar="HOST:PORT",
                   help="TCP address (default %s:%d)" % (DEFAULTS.host, DEFAULTS.port))
    data_and_json(s, json_flag=False)
    cluster_flag(s, "run as a node of a cluster realm on the NATS at URL "
                 "(nats://HOST:PORT); DIR then holds only the realm key")
    s.add_argument("--node", type=node_name, metavar="NAME",
                   help="this node's name in the cluster, unique (default: the host name)")
    s.add_argument("--name", default=DEFAULTS.name,
                   help="the realm name sent in Welcome (default %s)" % DEFAULTS.name)
    s.add_argument("--serial", action="append", default=[], metavar="PORT",
                   help="also serve one device on this serial port (repeatable)")
    s.add_argument("--baud", type=positive(int, 1, 10 ** 8), default=DEFAULTS.baud,
                   help="of the serial ports (default %d)" % DEFAULTS.baud)
    s.add_argument("--open-enrolment", action="store_true",
                   help="register unknown devices at their first login (method NONE)")
    s.add_argument("--heartbeat", type=positive(int, protocol.MIN_HEARTBEAT_S,
                                                protocol.MAX_HEARTBEAT_S),
                   default=DEFAULTS.heartbeat_s, metavar="SECONDS",
                   help="sent in Welcome; a link silent for %d times this is closed "
                   "(default %d)" % (protocol.SILENCE_FACTOR, DEFAULTS.heartbeat_s))
    s.add_argument("--handshake-timeout", type=positive(float, 0.01, 3600),
                   default=DEFAULTS.handshake_timeout_s, metavar="SECONDS",
                   help="to finish the handshake (default %g)" % DEFAULTS.handshake_timeout_s)
    s.add_argument("--max-packet", type=positive(int, protocol.MIN_MAX_PACKET,
                                                 protocol.MAX_MAX_PACKET),
                   default=DEFAULTS.max_packet, metavar="BYTES",
                   help="sent in Welcome (default %d)" % DEFAULTS.max_packet)
    s.add_argument("--max-handshakes", type=positive(int, 1, 10 ** 6),
                   default=DEFAULTS.max_handshakes,
                   help="connections allowed in the handshake at once; when all are taken, "
                   "the one waiting longest for its Hello makes room (default %d)"
                   % DEFAULTS.max_handshakes)
    s.add_argument("--max-handshakes-per-address", type=positive(int, 1, 10 ** 6),
                   default=DEFAULTS.max_handshakes_per_address, metavar="N",
                   help="of those, from one source address (default %d)"
                   % DEFAULTS.max_handshakes_per_address)
    s.add_argument("--hello-timeout", type=positive(float, 0.01, 3600),
                   default=DEFAULTS.hello_timeout_s, metavar="SECONDS",
                   help="a new connection must send its Hello within this, the whole "
                   "handshake within --handshake-timeout (default %g)"
                   % DEFAULTS.hello_timeout_s)
    s.add_argument("--send-limit", type=positive(int, 1024, 2 ** 31),
                   default=DEFAULTS.send_limit,
                   metavar="BYTES", help="unsent bytes allowed per link; a slower reader is "
                   "disconnected (default %d)" % DEFAULTS.send_limit)
    s.add_argument("--summary", type=positive(float, 0.1, 86400), default=DEFAULTS.summary_s,
                   metavar="SECONDS", help="period of the summary log line (default %g)"
                   % DEFAULTS.summary_s)
    s.add_argument("--log-file", metavar="FILE",
                   help="log to FILE instead of stderr, rotated at %d MiB with %d old files "
                   "kept" % (logs.FILE_BYTES // 2 ** 20, logs.FILE_KEEP))
    s.add_argument("--http", type=http_address, default=DEFAULTS.http, metavar="HOST:PORT|off",
                   help="the status page, /api/status and /metrics (default %s:%d; off to "
                   "disable). Any address but loopback needs --http-token" % DEFAULTS.http)
    s.add_argument("--http-token", default=os.environ.get("REALM_HTTP_TOKEN"), metavar="TOKEN",
                   help="bearer token the HTTP API asks for (default: $REALM_HTTP_TOKEN); a "
                   "browser opens /?token=TOKEN once")
    s.add_argument("-v", "--verbose", action="store_true")

    data_and_json(add(sub, "init", cmd_init, "make a new realm (its key pair and registry) in "
                      "the data folder; says so if one is there already"))
    data_and_json(add(sub, "key", cmd_key, "show the realm's public key and fingerprint"))
    st = add(sub, "status", cmd_status, "the realm's health and one line per device: from the "
             "running realm's HTTP API, or from the registry when it does not answer")
    data_and_json(st)
    st.add_argument("--url", metavar="URL", help="the realm's HTTP API (default: the one the "
                    "realm serving --data wrote to DATA/realm.http)")
    st.add_argument("--token", default=os.environ.get("REALM_HTTP_TOKEN"),
                    help="the HTTP API's token (default: $REALM_HTTP_TOKEN)")

    d = sub.add_parser("device", help="manage the registered devices")
    dsub = d.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    a = add(dsub, "add", cmd_device_add, "register a device and print its one-time token; "
            "with --config, also write its ready config.json (realm pre-pinned, key pair made)")
    a.add_argument("--name", default="", help="a unique name (letters, digits, - _ .), usable "
                   "wherever a device is named")
    a.add_argument("--id", help="the device's UUID (default: a new one)")
    a.add_argument("--config", metavar="FILE", help="write the device's config here (mode "
                   "0600), for make sim CONFIG=... or make flash CONFIG=...")
    a.add_argument("--realm", type=lambda t: host_port(t, "127.0.0.1"),
                   default=("127.0.0.1", protocol.DEFAULT_PORT), metavar="HOST:PORT",
                   help="with --config: the realm's address as the device reaches it "
                   "(default 127.0.0.1:%d; a board needs this computer's LAN address)"
                   % protocol.DEFAULT_PORT)
    a.add_argument("--wifi-ssid", help="with --config: the Wi-Fi network a board joins")
    a.add_argument("--wifi-password", help="with --config (default: $WIFI_PASSWORD)")
    a.add_argument("--peers", type=lambda t: [p for p in t.split(",") if p], default=[],
                   metavar="NAME,...", help="with --config: devices the app may send to by "
                   "name, device.send(\"kitchen\", ...)")
    data_and_json(a)
    cluster_flag(a, REGISTRY_IN_CLUSTER)
    ls = add(dsub, "list", cmd_device_list, "list the devices; online only while the realm "
             "runs")
    data_and_json(ls)
    cluster_flag(ls, REGISTRY_IN_CLUSTER)
    for name, func, help in (("remove", cmd_device_remove, "remove a device and its queue"),
                             ("reset-key", cmd_device_reset_key,
                              "unbind a device's key: its next first contact binds a new one"),
                             ("token", cmd_device_token, "give a device a new token, printed "
                              "once; the old one stops working")):
        r = add(dsub, name, func, help)
        r.add_argument("device", metavar="DEVICE", help="its name or id")
        data_and_json(r)
        cluster_flag(r, REGISTRY_IN_CLUSTER)

    from host import update_cli
    update_cli.add_parser(sub, add)

    for name, func, help in (("send", cmd_send, "send one message as a device"),
                             ("listen", cmd_listen, "print the messages a device receives")):
        c = add(sub, name, func, help)
        device_options(c)
        data_and_json(c)
        if name == "send":
            c.add_argument("--to", required=True, metavar="DEVICE", help="its id or name")
            c.add_argument("message", help="the text to send; - reads it from stdin")
        else:
            c.add_argument("--count", type=positive(int, 1, 10 ** 9), metavar="N",
                           help="exit after N messages")
            c.add_argument("--wait", type=positive(float, 0.01, 10 ** 9), metavar="SECONDS",
                           help="exit with an error after this long without a message")
            c.add_argument("--no-reconnect", dest="reconnect", action="store_false",
                           help="exit when the connection ends instead of connecting again")
            c.add_argument("--reply", metavar="COMMAND", help="run COMMAND (a shell command) "
                           "for each message, the message on its stdin, $REALM_FROM and "
                           "$REALM_FROM_NAME set; what it prints is sent back to the sender")
            c.add_argument("--chat", action="store_true", help="also send what is typed: "
                           "each line `PEER TEXT` on stdin goes to PEER (a name or an id)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
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
    sys.exit(main())
