"""Provision a device: register it in the local realm's registry, write its config with
the realm's key pre-pinned, and flash it.

usage: WIFI_SSID=... WIFI_PASSWORD=... python tools/provision.py --port PORT --board BOARD
           --name NAME --realm HOST:PORT [--data DIR] [--out FILE] [--app APP.py]
           [--peers NAME,NAME]
(make provision PORT=... BOARD=... NAME=... WIFI_SSID=... WIFI_PASSWORD=... REALM=HOST:PORT
 [PEERS=kitchen,hall] [REALM_DATA=DIR])

The realm is found as by every `realm` command: --data, else $REALM_DATA, else
./realm-data. The config (`realm device add --config`) is written to
DATA/provisioned/NAME.json (mode 0600: it holds the token and the device's private key)
unless --out says otherwise. The realm's key in it means the device never trusts another
realm, not even at its first connection; its key pair, made here and bound at once, means
peers can send to it before it first boots. --peers lists devices the app may send to by
name (the config's "peers").
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.protocol import DEFAULT_PORT  # noqa: E402
from tools.build import BuildError, profile  # noqa: E402
from tools.flash import FlashError, check_port, find_tool, flash, set_update_keys  # noqa: E402
from host import realmdir  # noqa: E402

USAGE = "make provision PORT=/dev/ttyUSB0 BOARD=esp32 NAME=kitchen WIFI_SSID=... " \
        "WIFI_PASSWORD=... REALM=192.168.1.10:%d" % DEFAULT_PORT


def realm_address(text):
    if not text:
        raise FlashError("REALM is missing: the realm's address as the device reaches it, "
                         "HOST:PORT (e.g. your computer's LAN address and %d)" % DEFAULT_PORT)
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, DEFAULT_PORT
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise FlashError("REALM=%s is not HOST:PORT" % text)
    return host, int(port)


def realm_cli(*args, env=None):
    """Run the `realm` admin command; its --json output, parsed."""
    proc = subprocess.run([find_tool("realm")] + list(args) + ["--json"], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise FlashError("realm %s failed: %s" % (" ".join(args[:2]), proc.stderr.strip()))
    return json.loads(proc.stdout)


def provision(args):
    if not args.name:
        raise FlashError("NAME is missing: a name for the device, e.g. NAME=kitchen")
    if not args.board:
        raise FlashError("BOARD is missing")
    try:
        prof = profile(args.board)
    except BuildError as e:
        raise FlashError(str(e))
    host, port = realm_address(args.realm)
    ssid = args.wifi_ssid or os.environ.get("WIFI_SSID", "")
    password = args.wifi_password or os.environ.get("WIFI_PASSWORD", "")
    if prof.get("HAS_WIFI") and not ssid:
        raise FlashError("WIFI_SSID is missing: the %s joins the realm over Wi-Fi" % args.board)
    check_port(args.port)
    find_tool(args.tool or "mpremote")
    data = realmdir.resolve(args.data)
    out = args.out or os.path.join(data, "provisioned", args.name + ".json")
    if os.path.exists(out):
        raise FlashError("%s exists: %s is provisioned already; flash it again with "
                         "make flash PORT=%s BOARD=%s CONFIG=%s" % (
                             out, args.name, args.port, args.board, out))

    # The realm makes the device's key pair and binds it now, so that peers reach the
    # device (QUEUED) before its first boot; the private key goes only into the config.
    command = ["device", "add", "--data", data, "--name", args.name, "--config", out,
               "--realm", "%s:%d" % (host, port)]
    if prof.get("HAS_WIFI"):
        command += ["--wifi-ssid", ssid]
    if args.peers:
        command += ["--peers", args.peers.replace(" ", ",")]
    os.makedirs(os.path.dirname(os.path.abspath(out)), mode=0o700, exist_ok=True)
    device = realm_cli(*command, env=dict(os.environ, WIFI_PASSWORD=password))
    print("registered %s as %s in %s; config written to %s" % (
        args.name, device["id"], data, out), flush=True)
    if host in ("127.0.0.1", "localhost") and args.board != "unix":
        print("note: REALM=%s is this computer's loopback address: a board cannot reach it; "
              "use the computer's LAN address" % host)
    try:
        set_update_keys(out, args.updater or None, args.release_key or None, data)
        flash(args.port, args.board, out, args.app or None, args.tool or "mpremote")
    except FlashError as e:
        raise FlashError("%s\n(the device is registered and its config kept: once the board is "
                         "ready, make flash PORT=... BOARD=%s CONFIG=%s)" % (e, args.board, out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage=USAGE)
    for name in ("port", "board", "name", "realm", "app", "tool", "out", "wifi-ssid",
                 "wifi-password", "peers", "data", "updater", "release-key"):
        p.add_argument("--" + name, default="")
    args = p.parse_args(argv)
    try:
        provision(args)
    except FlashError as e:
        print("provision: %s\nusage: %s" % (e, USAGE), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
