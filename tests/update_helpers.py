"""Helpers for the update tests: release keys, bundles, devices that accept updates (the
firmware under the MicroPython unix port, started again after each reset, as power
would), and `realm update push` run as the updater device."""
import json
import os
import subprocess
import uuid

from host import update as bundles
from tests.fw_helpers import Fleet
from tests.realm_helpers import realm_command, run_cli
from tools.simproc import HEAP, ROOT

CONFIRM_MS = 1500  # the new version is confirmed after this long online


def keygen(folder, name="release.key"):
    """(path of the private key file, public key hex) of a new release key."""
    path = os.path.join(str(folder), name)
    return path, bundles.keygen(path).hex()


def build(folder, version, key_path, app=None, name=None):
    """A signed app bundle for the unix board; its path."""
    out = os.path.join(str(folder), name or "unix-%s.bundle" % version)
    bundles.build_app_bundle(out, "unix", version, key_path,
                             app or os.path.join(ROOT, "tools", "remote_app.py"))
    return out


def write_app(folder, name, text):
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Updatable(Fleet):
    """Devices registered in one realm that take updates from one updater device;
    `options` go to each `realm update` command (e.g. --cluster URL)."""

    def __init__(self, folder, realm, release_key, *options):
        Fleet.__init__(self, folder, realm)
        self.release_key = release_key
        self.options = list(options)
        updater_id, self.updater_token = realm.add_device("updater")
        self.updater_id = str(uuid.UUID(bytes=updater_id))

    def add(self, name, start=True, heap=HEAP, **config):
        config.setdefault("updaters", [self.updater_id])
        config.setdefault("release_keys", [self.release_key])
        config.setdefault("update", {"confirm_ms": CONFIRM_MS, "trial_ms": 60000})
        return Fleet.add(self, name, start=start, power=True, heap=heap, **config)

    def command(self, action, targets, as_id=None, token=None):
        """The arguments of `realm update ACTION` as the updater device (or as_id), to
        targets, in JSON."""
        args = [
            "update", action, "--as", as_id or self.updater_id,
            "--token", token or self.updater_token,
            "--realm", "127.0.0.1:%d" % self.realm.port, "--data", self.realm.data_dir,
            "--state", os.path.join(self.folder, "updater-%s.json" % (as_id or "main")),
            "--json"] + self.options
        for t in targets:
            args += ["--to", t]
        return args

    def push(self, bundle, *targets, wait=90, as_id=None, token=None, extra=()):
        """Start `realm update push` (JSON table); returns the Popen."""
        args = realm_command() + self.command("push", targets, as_id, token) + [
            bundle, "--wait", str(wait)] + list(extra)
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def status(self, *targets):
        """{device name: what it answered} of `realm update status`."""
        code, out, err = run_cli(*self.command("status", targets), timeout=60)
        assert code == 0, err
        return {r["name"]: r for r in json.loads(out)}

    def run_push(self, bundle, *targets, **kw):
        """(exit code, {device name: its row}, stderr) of a whole push."""
        proc = self.push(bundle, *targets, **kw)
        out, err = proc.communicate(timeout=kw.get("wait", 90) + 30)
        rows = json.loads(out) if out.strip() else []
        return proc.returncode, {r["name"]: r for r in rows}, err


def boot_state(device):
    with open(device.config_path[:-5] + ".slots/boot.json") as f:
        return json.load(f)


def refused(fleet, device, path, reason, detail, **kw):
    """Push path to device: refused for `reason`, `detail` said on both sides, and the
    running app untouched (0.1.0 runs again, nothing on trial). -> the push's row."""
    mark = device.mark()
    code, rows, err = fleet.run_push(path, device.name, **kw)
    assert code == 1, (rows, err)
    row = rows[device.name]
    assert (row["state"], row["reason"]) == ("refused", reason), row
    assert detail in row["detail"], row
    device.wait(r"update .* refused: .*%s" % detail, since=mark)
    device.wait(r"^app 0\.1\.0$", since=mark)  # the running app, untouched
    state_file = device.config_path[:-5] + ".slots/boot.json"
    assert not os.path.exists(state_file) or boot_state(device)["trial"] is None
    return row
