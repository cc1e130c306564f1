"""Updates over the air with real processes: a realm, the updater (`realm update push`,
a host-side device), and simulated devices (the firmware under the MicroPython unix port
at SIM_HEAP, started again after each reset). Issue 9's "what must hold"."""
import os

import pytest

from tests.fw_helpers import online, realm, send, unix_build  # noqa: F401 (fixtures)
from tests.update_helpers import Updatable, build, keygen, slot_file, write_app


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return keygen(folder)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, keys, unix_build):
    folder = tmp_path_factory.mktemp("bundles")
    crash = write_app(folder, "crash.py", "def main(device):\n"
                                          "    raise RuntimeError('v3 crashes at start')\n")
    return {"2.0.0": build(folder, "2.0.0", keys[0]),
            "1.5.0": build(folder, "1.5.0", keys[0]),
            "3.0.0": build(folder, "3.0.0", keys[0], app=crash),
            "folder": str(folder)}


@pytest.fixture
def fleet(tmp_path, realm, keys):
    devices = Updatable(tmp_path, realm, keys[1])
    yield devices
    devices.stop()


def test_v2_on_three_devices_at_once_then_the_app_reports_v2(fleet, bundles):
    devices = [fleet.add(name) for name in ("hall", "porch", "attic")]
    for d in devices:
        online(d)
        d.wait(r"^app 0\.1\.0$")
    code, rows, err = fleet.run_push(bundles["2.0.0"], *[d.name for d in devices])
    assert code == 0, (rows, err)
    for d in devices:
        assert rows[d.name]["state"] == "updated", rows
        assert rows[d.name]["version"] == "2.0.0"
        d.wait(r"^app 2\.0\.0$")
        d.wait(r"update 2\.0\.0 confirmed")
        assert os.path.exists(slot_file(d, "a", "app.mpy"))
