"""Provision a device: register it in the local realm's registry, write its config with
the realm's key pre-pinned, and flash it.

usage: WIFI_SSID=... WIFI_PASSWORD=... python tools/provision.py --port PORT --board BOARD
           --name NAME --realm HOST:PORT [--data realm-data] [--out FILE] [--app APP.py]
(make provision PORT=... BOARD=... NAME=... WIFI_SSID=... WIFI_PASSWORD=... REALM=HOST:PORT)

The config is written to DATA/provisioned/NAME.json (mode 0600: it holds the token) unless
--out says otherwise. The realm's key in it means the device never trusts another realm,
not even at its first connection.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared.protocol import DEFAULT_PORT  # noqa: E402
from tools.build import BuildError, profile  # noqa: E402
from tools.flash import FlashError, check_port, find_tool, flash  # noqa: E402

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


def realm_cli(*args):
    """Run the `realm` admin command; its --json output, parsed."""
    proc = subprocess.run([find_tool("realm")] + list(args) + ["--json"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise FlashError("realm %s failed: %s" % (args[0], proc.stderr.strip()))
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
    out = args.out or os.path.join(args.data, "provisioned", args.name + ".json")
    if os.path.exists(out):
        raise FlashError("%s exists: %s is provisioned already; flash it again with "
                         "make flash PORT=%s BOARD=%s CONFIG=%s" % (
                             out, args.name, args.port, args.board, out))

    device = realm_cli("device", "add", "--data", args.data, "--name", args.name)
    realm_key = realm_cli("key", "--data", args.data)["public_key"]
    config = {"device_id": device["id"], "token": device["token"], "name": args.name,
              "realm": {"host": host, "port": port}, "realm_key": realm_key}
    if prof.get("HAS_WIFI"):
        config["wifi"] = {"ssid": ssid, "password": password}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=1)
    print("registered %s as %s in %s; config written to %s" % (
        args.name, device["id"], args.data, out), flush=True)
    if host in ("127.0.0.1", "localhost") and args.board != "unix":
        print("note: REALM=%s is this computer's loopback address: a board cannot reach it; "
              "use the computer's LAN address" % host)
    try:
        flash(args.port, args.board, out, args.app or None, args.tool or "mpremote")
    except FlashError as e:
        raise FlashError("%s\n(the device is registered and its config kept: once the board is "
                         "ready, make flash PORT=... BOARD=%s CONFIG=%s)" % (e, args.board, out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], usage=USAGE)
    for name in ("port", "board", "name", "realm", "app", "tool", "out", "wifi-ssid",
                 "wifi-password"):
        p.add_argument("--" + name, default="")
    p.add_argument("--data", default="realm-data")
    args = p.parse_args(argv)
    try:
        provision(args)
    except FlashError as e:
        print("provision: %s\nusage: %s" % (e, USAGE), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
