"""`realm status`: the realm's health and its devices, from its HTTP API or its registry."""
import json
import os
import urllib.error

from host import cli, realmdir
from host.fleet import registry_status


def add_parser(sub, add):
    st = add(sub, "status", cmd_status, "the realm's health and one line per device: from the "
             "running realm's HTTP API, or from the registry when it does not answer")
    cli.data_and_json(st)
    st.add_argument("--url", metavar="URL", help="the realm's HTTP API (default: the one the "
                    "realm serving --data wrote to DATA/realm.http)")
    st.add_argument("--token", default=os.environ.get("REALM_HTTP_TOKEN"),
                    help="the HTTP API's token (default: $REALM_HTTP_TOKEN)")


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
                raise cli.CliError("the realm at %s wants its HTTP token: --token or "
                               "REALM_HTTP_TOKEN" % url)
            raise cli.CliError("the realm at %s answered %d %s" % (url, e.code, e.reason))
        except (OSError, ValueError) as e:
            if args.url:
                raise cli.CliError("no answer from %s: %s" % (url, getattr(e, "reason", e)))
            why = "the realm at %s does not answer" % url
    if status is None:
        with cli.open_registry(args) as registry:
            status = registry_status(registry, cli.realm_public(args.data))
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
