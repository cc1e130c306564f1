"""package.json lets `mpremote mip install` put the device's modules on a board, as
micropython-lib packages do: it must list exactly what tools/build.py compiles, and it
must install onto a (virtual) board."""
import os
import subprocess

from tests.conftest import ROOT, venv_tool
from tests.fw_helpers import board  # noqa: F401 (fixture)
from tools.build import device_sources, package_json


def test_package_json_is_current():
    with open(os.path.join(ROOT, "package.json")) as f:
        assert f.read() == package_json(), \
            "package.json is stale: python tools/build.py --package-json > package.json"


def test_mip_install_from_a_clone_puts_every_module_on_the_board(board):
    proc = subprocess.run(
        [venv_tool("mpremote", "mpremote"), "connect", board.port, "resume",
         "mip", "install", "--target", "lib", os.path.join(ROOT, "package.json")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for package, name in device_sources():
        installed = os.path.join(board.files, "lib", package, name)
        with open(installed, "rb") as got, open(os.path.join(ROOT, package, name), "rb") as src:
            assert got.read() == src.read(), installed
