"""`realm update keygen | build | push | status` (docs/UPDATES.md)."""
import asyncio
import json
import sys
import uuid

from shared import bundle, codec
from host import cli
from host.update import BundleError, build_app_bundle, build_image_bundle, keygen, read_bundle
from host import realmdir

PUSH_EXIT_OFFLINE = 3  # nothing failed, but some devices were offline to the end


def add_parser(sub, add):
    u = sub.add_parser("update", help="signed updates pushed to devices through the realm",
                       description="Signed application and firmware-image updates, pushed by "
                       "an updater device through the realm. See docs/UPDATES.md.")
    usub = u.add_subparsers(dest="update_command", metavar="ACTION", required=True)

    k = add(usub, "keygen", cmd_keygen, "make a release key pair (keep the private key file "
            "off the realm machine)")
    k.add_argument("--out", default="release.key", metavar="FILE",
                   help="the private key file, written with mode 0600 (default release.key)")
    k.add_argument("--json", action="store_true", help="print JSON")

    b = add(usub, "build", cmd_build, "compile the firmware and an app for a board into a "
            "bundle signed by a release key")
    b.add_argument("--board", required=True, help="the board profile (boards/NAME)")
    b.add_argument("--version", required=True,
                   help="dotted numbers, above what the devices run (e.g. 1.2.0)")
    b.add_argument("--key", default="release.key", metavar="FILE",
                   help="the release key file (default release.key)")
    b.add_argument("--app", metavar="APP.py", help="the app (installed as app.mpy)")
    b.add_argument("--extra", action="append", default=[], metavar="MODULE.py",
                   help="another module of the app (repeatable)")
    b.add_argument("--image", metavar="FILE",
                   help="a MicroPython firmware image instead: the app binary "
                   "(micropython.bin) of a build with two OTA partitions; devices without "
                   "them refuse it")
    b.add_argument("--out", metavar="FILE", help="default: BOARD-VERSION.bundle")
    b.add_argument("--json", action="store_true", help="print JSON")

    p = add(usub, "push", cmd_push, "push a bundle to devices and wait for each one's answer")
    p.add_argument("bundle", metavar="BUNDLE")
    _targets(p)
    p.add_argument("--parallel", type=cli.positive(int, 1, 1000), default=4, metavar="N",
                   help="devices updated at once (default 4)")
    p.add_argument("--wait", type=cli.positive(float, 1, 10 ** 7), default=600.0,
                   metavar="SECONDS", help="how long to keep trying for devices that are "
                   "offline or busy (default 600)")
    cli.device_options(p, "the updater device")
    p.add_argument("--json", action="store_true", help="print the final table as JSON")

    s = add(usub, "status", cmd_status, "ask devices which version they run")
    _targets(s)
    cli.device_options(s, "the updater device")
    s.add_argument("--json", action="store_true", help="print JSON")


def _targets(cmd):
    cmd.add_argument("--to", action="append", default=[], metavar="NAME|ID",
                     help="a target device (repeatable); names are looked up in --data (in "
                     "the cluster's registry with --cluster)")
    cmd.add_argument("--all", action="store_true", help="every device registered in --data "
                     "(in the cluster's registry with --cluster) but the updater")
    cmd.add_argument("--data", metavar="DIR", help="the realm's data folder, where names are "
                     "looked up (default: $%s, else %s)" % (realmdir.ENV, realmdir.DEFAULT))
    cli.cluster_flag(cmd, cli.NAMES_IN_CLUSTER)


# -- keygen and build ----------------------------------------------------------------
def cmd_keygen(args):
    try:
        public = keygen(args.out)
    except BundleError as e:
        raise cli.CliError(str(e))
    fingerprint = bundle.fingerprint_text(public)
    cli.emit(args, {"private_key_file": args.out, "public_key": public.hex(),
                    "fingerprint": fingerprint},
             "release key written to %s (mode 0600)\npublic key   %s\nfingerprint  %s\n"
             "Give the public key to the devices: make provision ... RELEASE_KEY=%s\n"
             "Keep %s off the realm machine (an offline disk, a password manager): whoever "
             "holds it can make these devices run code." % (
                 args.out, public.hex(), fingerprint, public.hex(), args.out))


def cmd_build(args):
    out = args.out or "%s-%s.bundle" % (args.board, args.version)
    try:
        if args.image:
            size, manifest = build_image_bundle(out, args.board, args.version, args.key,
                                                args.image)
        else:
            size, manifest = build_app_bundle(out, args.board, args.version, args.key, args.app,
                                              args.extra)
    except BundleError as e:
        raise cli.CliError(str(e))
    cli.emit(args, {"bundle": out, "size": size, "version": args.version, "board": args.board,
                    "kind": manifest["kind"], "files": len(manifest["files"])},
             "%s: %s %s for %s, %d files, %.1f KB, signed" % (
                 out, manifest["kind"], args.version, args.board, len(manifest["files"]),
                 size / 1024.0))


# -- push and status ------------------------------------------------------------------
async def resolve_targets(args):
    """Targets from --to (ids or names) and --all (every device of the realm in --data, or
    of the cluster's registry with --cluster, but the updater). args.as_id becomes the
    updater's id."""
    from host.updater import Target
    if not args.to and not args.all:
        raise cli.CliError("no target: give --to NAME|ID (repeatable) or --all")
    async with cli.DeviceNames(args) as names:
        args.as_id = (await names.named(args.as_id))[0]
        chosen = [await names.named(text) for text in args.to]
        if args.all:
            chosen += await names.every()
    targets = []
    for device_id, name in chosen:
        if device_id != args.as_id and device_id not in [t.text for t in targets]:
            targets.append(Target(uuid.UUID(device_id).bytes, name))
    return targets


def _updater(args):
    """The updater device (a HostDevice offering the update service) as args.as_id (an id)
    and its Updater; made inside the event loop."""
    from host.client import DeviceState, HostDevice, default_state_path
    from host.updater import Updater
    if not args.token:
        raise cli.CliError("a token is needed: --token or REALM_TOKEN")
    state = DeviceState.load(args.state or default_state_path(args.as_id),
                             uuid.UUID(args.as_id).bytes)
    handler = []
    device = HostDevice(state, args.token, args.timeout, args.repin,
                        services={codec.SERVICE_UPDATE: lambda peer, data: handler[0](peer, data)})

    async def connect():
        return await asyncio.wait_for(device.connect(args.realm, args.serial, args.baud),
                                      args.timeout)
    updater = Updater(device, connect)
    handler.append(updater.received)
    return device, updater


def cmd_push(args):
    try:
        bundle, header_size, manifest, key = read_bundle(args.bundle)
    except BundleError as e:
        raise cli.CliError(str(e))
    targets = asyncio.run(resolve_targets(args))
    print("pushing %s %s (%.1f KB) to %d device%s, %d at a time; trying for %.0f s"
          % (manifest["kind"], manifest["version"], len(bundle) / 1024.0, len(targets),
             "" if len(targets) == 1 else "s", args.parallel, args.wait),
          file=sys.stderr, flush=True)
    from host.updater import Progress, UPDATED, CURRENT, OFFLINE, WAITING
    progress = None if args.json else Progress(targets, len(bundle), sys.stderr)

    async def run():
        device, updater = _updater(args)
        try:
            return await updater.push(bundle, header_size, targets, args.parallel, args.wait,
                                      progress)
        finally:
            device.close()
    asyncio.run(run())
    rows = [t.row(len(bundle)) for t in targets]
    if args.json:
        print(json.dumps(rows))
    else:
        _table(targets)
    if any(t.final and t.state not in (UPDATED, CURRENT) for t in targets):
        sys.exit(1)
    if any(not t.final for t in targets):
        left = [t for t in targets if t.state in (OFFLINE, WAITING)]
        print("%d device(s) not reached in %.0f s: run the push again later (the realm keeps "
              "offers for offline devices for 24 h)" % (len(left), args.wait), file=sys.stderr)
        sys.exit(PUSH_EXIT_OFFLINE)


def _table(targets):
    print("%-14s  %-36s  %-16s  %-9s  %s" % ("device", "id", "outcome", "version", "why"))
    for t in targets:
        print("%-14s  %-36s  %-16s  %-9s  %s" % (
            t.name[:14], t.text, t.state, t.version or "-",
            ("%s: %s" % (t.reason, t.detail)) if t.reason else t.detail))


def cmd_status(args):
    targets = asyncio.run(resolve_targets(args))

    async def run():
        device, updater = _updater(args)
        try:
            return await updater.query(targets, args.timeout)
        finally:
            device.close()
    answers = asyncio.run(run())
    rows = []
    for t in targets:
        info = answers.get(t.id)
        rows.append({"id": t.text, "name": t.name, "answered": info is not None,
                     **(info or {})})
    if args.json:
        print(json.dumps(rows))
        return
    print("%-14s  %-36s  %-9s  %-9s  %-6s  %s" % ("device", "id", "app", "image", "trial",
                                                  "last failed"))
    for r in rows:
        if not r["answered"]:
            print("%-14s  %-36s  no answer (offline?)" % (r["name"][:14], r["id"]))
        else:
            print("%-14s  %-36s  %-9s  %-9s  %-6s  %s" % (
                r["name"][:14], r["id"], r.get("app") or "-", r.get("image") or "-",
                "yes" if r.get("trial") else "no", r.get("failed") or "-"))
