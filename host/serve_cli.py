"""`realm serve | init | key`: the realm server and its folder."""
import argparse
import asyncio
import fcntl
import os

from host import cli, keyfile, logs, realmdir
from host.fleet import fingerprint_hex
from host.registry import Registry
from host.server import Config
from shared import protocol


def add_parser(sub, add):
    s = add(sub, "serve", cmd_serve, "run the realm server until SIGINT or SIGTERM")
    s.add_argument("--listen", type=lambda t: cli.host_port(t, cli.DEFAULTS.host),
                   default=(cli.DEFAULTS.host, cli.DEFAULTS.port), metavar="HOST:PORT",
                   help="TCP address (default %s:%d)" % (cli.DEFAULTS.host, cli.DEFAULTS.port))
    cli.data_and_json(s, json_flag=False)
    cli.cluster_flag(s, "run as a node of a cluster realm on the NATS at URL "
                     "(nats://HOST:PORT); DIR then holds only the realm key")
    s.add_argument("--node", type=node_name, metavar="NAME",
                   help="this node's name in the cluster, unique (default: the host name)")
    s.add_argument("--name", default=cli.DEFAULTS.name,
                   help="the realm name sent in Welcome (default %s)" % cli.DEFAULTS.name)
    s.add_argument("--serial", action="append", default=[], metavar="PORT",
                   help="also serve one device on this serial port (repeatable)")
    s.add_argument("--baud", type=cli.positive(int, 1, 10 ** 8), default=cli.DEFAULTS.baud,
                   help="of the serial ports (default %d)" % cli.DEFAULTS.baud)
    s.add_argument("--open-enrolment", action="store_true",
                   help="register unknown devices at their first login (method NONE)")
    s.add_argument("--heartbeat", type=cli.positive(int, protocol.MIN_HEARTBEAT_S,
                                                    protocol.MAX_HEARTBEAT_S),
                   default=cli.DEFAULTS.heartbeat_s, metavar="SECONDS",
                   help="sent in Welcome; a link silent for %d times this is closed "
                   "(default %d)" % (protocol.SILENCE_FACTOR, cli.DEFAULTS.heartbeat_s))
    s.add_argument("--handshake-timeout", type=cli.positive(float, 0.01, 3600),
                   default=cli.DEFAULTS.handshake_timeout_s, metavar="SECONDS",
                   help="to finish the handshake (default %g)"
                   % cli.DEFAULTS.handshake_timeout_s)
    s.add_argument("--max-packet", type=cli.positive(int, protocol.MIN_MAX_PACKET,
                                                     protocol.MAX_MAX_PACKET),
                   default=cli.DEFAULTS.max_packet, metavar="BYTES",
                   help="sent in Welcome (default %d)" % cli.DEFAULTS.max_packet)
    s.add_argument("--max-handshakes", type=cli.positive(int, 1, 10 ** 6),
                   default=cli.DEFAULTS.max_handshakes,
                   help="connections past their Hello and not logged in yet; while all are "
                   "taken, new ones wait (in the backlog, or with their Hello unread), none "
                   "is refused (default %d)" % cli.DEFAULTS.max_handshakes)
    s.add_argument("--backlog", type=cli.positive(int, 1, 65535), default=cli.DEFAULTS.backlog,
                   metavar="N", help="connections the kernel holds until the realm accepts "
                   "them, capped by net.core.somaxconn: a fleet reconnecting at once waits "
                   "there (default %d)" % cli.DEFAULTS.backlog)
    s.add_argument("--max-handshakes-per-address", type=cli.positive(int, 1, 10 ** 6),
                   default=cli.DEFAULTS.max_handshakes_per_address, metavar="N",
                   help="of those, from one source address (default %d)"
                   % cli.DEFAULTS.max_handshakes_per_address)
    s.add_argument("--hello-timeout", type=cli.positive(float, 0.01, 3600),
                   default=cli.DEFAULTS.hello_timeout_s, metavar="SECONDS",
                   help="a new connection must send its Hello within this, the whole "
                   "handshake within --handshake-timeout (default %g)"
                   % cli.DEFAULTS.hello_timeout_s)
    s.add_argument("--send-limit", type=cli.positive(int, 1024, 2 ** 31),
                   default=cli.DEFAULTS.send_limit,
                   metavar="BYTES", help="unsent bytes allowed per link; a slower reader is "
                   "disconnected (default %d)" % cli.DEFAULTS.send_limit)
    s.add_argument("--summary", type=cli.positive(float, 0.1, 86400),
                   default=cli.DEFAULTS.summary_s, metavar="SECONDS",
                   help="period of the summary log line (default %g)" % cli.DEFAULTS.summary_s)
    s.add_argument("--log-file", metavar="FILE",
                   help="log to FILE instead of stderr, rotated at %d MiB with %d old files "
                   "kept" % (logs.FILE_BYTES // 2 ** 20, logs.FILE_KEEP))
    s.add_argument("--http", type=http_address, default=cli.DEFAULTS.http,
                   metavar="HOST:PORT|off",
                   help="the status page, /api/status and /metrics (default %s:%d; off to "
                   "disable). Any address but loopback needs --http-token" % cli.DEFAULTS.http)
    s.add_argument("--http-token", default=os.environ.get("REALM_HTTP_TOKEN"), metavar="TOKEN",
                   help="bearer token the HTTP API asks for (default: $REALM_HTTP_TOKEN); a "
                   "browser opens /?token=TOKEN once")
    s.add_argument("-v", "--verbose", action="store_true")

    cli.data_and_json(add(sub, "init", cmd_init, "make a new realm (its key pair and registry) "
                          "in the data folder; says so if one is there already"))
    cli.data_and_json(add(sub, "key", cmd_key, "show the realm's public key and fingerprint"))


def http_address(text):
    """--http: HOST:PORT, or "off"."""
    if text == "off":
        return None
    return cli.host_port(text, cli.DEFAULTS.http[0], cli.DEFAULTS.http[1])


def cmd_serve(args):
    from host.server import serve
    from host.web import is_loopback
    try:
        logs.setup(args.verbose, log_file=args.log_file)
        logs.gather_only_what_is_shown()
    except OSError as e:
        raise cli.CliError("cannot write the log file %s: %s"
                           % (args.log_file, e.strerror or e))
    if args.http is not None and not args.http_token and not is_loopback(args.http[0]):
        raise cli.CliError("--http %s:%d would show the fleet beyond this machine: give a "
                           "token (--http-token or REALM_HTTP_TOKEN), or keep it on 127.0.0.1"
                           % args.http)
    config = Config(host=args.listen[0], port=args.listen[1], data_dir=args.data, name=args.name,
                    serial=args.serial, baud=args.baud, open_enrolment=args.open_enrolment,
                    heartbeat_s=args.heartbeat, handshake_timeout_s=args.handshake_timeout,
                    max_packet=args.max_packet, max_handshakes=args.max_handshakes,
                    max_handshakes_per_address=args.max_handshakes_per_address,
                    backlog=args.backlog, hello_timeout_s=args.hello_timeout, send_limit=args.send_limit,
                    summary_s=args.summary, http=args.http, http_token=args.http_token or None)
    if args.cluster:
        # The nodes share the folder's key, not its registry: no lock, nothing created.
        asyncio.run(_serve_cluster(args, config, serve))
        return
    if args.node:
        raise cli.CliError("--node names a node of a cluster: it needs --cluster URL")
    from host.store import LocalStore
    realmdir.create(args.data)
    lock = open(os.path.join(args.data, "realm.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise cli.CliError("another realm is already serving %s" % args.data)
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
    public = cli.realm_public(args.data)
    cli.emit(args, {"data": os.path.abspath(args.data), "created": created,
                    "public_key": public.hex(), "fingerprint": fingerprint_hex(public)},
             "%s %s\npublic key   %s\nfingerprint  %s" % (
                 "made a new realm in" if created else "a realm is there already:",
                 os.path.abspath(args.data), public.hex(), fingerprint_hex(public)))


def _listen_error(args, e):
    return cli.CliError("cannot listen on %s:%d: %s" % (args.listen[0], args.listen[1],
                                                          e.strerror or e))


async def _serve_cluster(args, config, serve):
    cli.cluster_module().check_url(args.cluster)
    keypair = cli.cluster_key(args)
    from host.cluster_router import ClusterRouter
    cluster = cli.cluster_module().Cluster(args.cluster, keypair[1],
                                           node=args.node or _default_node())
    await cluster.connect()
    try:
        await serve(config, cluster, keypair,
                    make_router=lambda realm: ClusterRouter(realm, cluster))
    except OSError as e:
        raise _listen_error(args, e)


def _default_node():
    import socket
    return socket.gethostname().split(".")[0] or "node"


def node_name(text):
    if not text or len(text) > 64 or not all(c.isalnum() or c in "-_" for c in text):
        raise argparse.ArgumentTypeError("%r: a node name is 1 to 64 letters, digits, - or _"
                                         % text)
    return text


def cmd_key(args):
    public = cli.realm_public(args.data)
    cli.emit(args, {"public_key": public.hex(), "fingerprint": fingerprint_hex(public)},
             "public key   %s\nfingerprint  %s" % (public.hex(), fingerprint_hex(public)))


