import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.core import support  # noqa: E402

_vectors = os.environ.get("REALM_VECTORS", os.path.join(ROOT, "..", "shared", "vectors"))
support.VECTORS_DIR = _vectors if os.path.isdir(_vectors) else None
support.MISSING_VECTORS = os.path.normpath(_vectors)
support.SKIP_MISSING_VECTORS = os.environ.get("REALM_SKIP_VECTORS") == "1"


def venv_tool(name, package):
    """The path of a command installed beside this interpreter (.venv/bin), or a clear failure."""
    import pytest
    from tools import harness
    try:
        return harness.venv_tool(name, package)
    except harness.ToolMissing as e:
        pytest.fail(str(e))
