"""`realm device add | list | remove | reset-key | token`: the registered devices."""
import json
import os
import time

from host import cli, keyfile, realmdir
from host.fleet import fingerprint_hex
from host.registry import label
from shared import crypto, protocol


def add_parser(sub, add):
    d = sub.add_parser("device", help="manage the registered devices")
    dsub = d.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    a = add(dsub, "add", cmd_device_add, "register a device and print its one-time token; "
            "with --config, also write its ready config.json (realm pre-pinned, key pair made)")
    a.add_argument("--name", default="", help="a unique name (letters, digits, - _ .), usable "
                   "wherever a device is named")
    a.add_argument("--id", help="the device's UUID (default: a new one)")
    a.add_argument("--config", metavar="FILE", help="write the device's config here (mode "
                   "0600), for make sim CONFIG=... or make flash CONFIG=...")
    a.add_argument("--realm", type=lambda t: cli.host_port(t, "127.0.0.1"),
                   default=("127.0.0.1", protocol.DEFAULT_PORT), metavar="HOST:PORT",
                   help="with --config: the realm's address as the device reaches it "
                   "(default 127.0.0.1:%d; a board needs this computer's LAN address)"
                   % protocol.DEFAULT_PORT)
    a.add_argument("--wifi-ssid", help="with --config: the Wi-Fi network a board joins")
    a.add_argument("--wifi-password", help="with --config (default: $WIFI_PASSWORD)")
    a.add_argument("--peers", type=lambda t: [p for p in t.split(",") if p], default=[],
                   metavar="NAME,...", help="with --config: devices the app may send to by "
                   "name, device.send(\"kitchen\", ...)")
    cli.data_and_json(a)
    cli.cluster_flag(a, cli.REGISTRY_IN_CLUSTER)
    ls = add(dsub, "list", cmd_device_list, "list the devices; online only while the realm "
             "runs")
    cli.data_and_json(ls)
    cli.cluster_flag(ls, cli.REGISTRY_IN_CLUSTER)
    for name, func, help in (("remove", cmd_device_remove, "remove a device and its queue"),
                             ("reset-key", cmd_device_reset_key,
                              "unbind a device's key: its next first contact binds a new one"),
                             ("token", cmd_device_token, "give a device a new token, printed "
                              "once; the old one stops working")):
        r = add(dsub, name, func, help)
        r.add_argument("device", metavar="DEVICE", help="its name or id")
        cli.data_and_json(r)
        cli.cluster_flag(r, cli.REGISTRY_IN_CLUSTER)


def cmd_device_add(args):
    if args.config and os.path.exists(args.config):
        raise cli.CliError("%s exists: remove it, or give another --config path" % args.config)
    private = public = None
    if args.config:  # the device's key pair, made here: peers reach it before it boots
        private, public = crypto.generate_keypair()
    with cli.open_registry(args) as registry:
        peers = {registry.name(i): i for i in (registry.resolve(p) for p in args.peers)}
        if "" in peers:
            raise cli.CliError("--peers: give devices that have a name")
        device_id, token = registry.add_device(time.time(), args.id, args.name, public)
    shown = {"id": device_id, "name": args.name, "token": token}
    if args.config:
        keyfile.write_json(args.config, device_config(args, device_id, token, private, peers))
        shown["config"] = args.config
    cli.emit(args, shown, "id     %s\nname   %s\ntoken  %s\n%s" % (
        device_id, args.name or "-", token,
        "config written to %s (mode 0600: it holds the token and the device's key)"
        % args.config if args.config else
        "(the token is shown only now: give it to the device)"))


def device_config(args, device_id, token, private, peers):
    """The device's config.json (docs/FIRMWARE.md), the realm's key pre-pinned."""
    config = {"device_id": device_id, "token": token, "name": args.name or device_id[:8],
              "realm": {"host": args.realm[0], "port": args.realm[1]},
              "realm_key": cli.realm_public(args.data).hex(), "private_key": private.hex()}
    if args.wifi_ssid:
        config["wifi"] = {"ssid": args.wifi_ssid,
                          "password": args.wifi_password or os.environ.get("WIFI_PASSWORD", "")}
    if peers:
        config["peers"] = peers
    return config


def cmd_device_list(args):
    with cli.open_registry(args) as registry:
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
    with cli.open_registry(args) as registry:
        device_id = registry.resolve(args.device)
        name = registry.name(device_id)
        registry.remove_device(device_id)
    cli.emit(args, {"removed": device_id, "name": name}, "removed %s" % label(device_id, name))


def cmd_device_reset_key(args):
    with cli.open_registry(args) as registry:
        device_id = registry.resolve(args.device)
        registry.reset_key(device_id)
        name = registry.name(device_id)
    cli.emit(args, {"unbound": device_id, "name": name},
             "%s unbound: its next first contact binds its new key" % label(device_id, name))


def cmd_device_token(args):
    with cli.open_registry(args) as registry:
        device_id = registry.resolve(args.device)
        token = registry.new_token(device_id)
        name = registry.name(device_id)
    cli.emit(args, {"id": device_id, "name": name, "token": token},
             "id     %s\nname   %s\ntoken  %s\n(the token is shown only now; the old one no "
             "longer logs in)" % (device_id, name or "-", token))


