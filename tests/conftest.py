import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.core import support  # noqa: E402

_vectors = os.environ.get("REALM_VECTORS", os.path.join(ROOT, "..", "shared", "vectors"))
support.VECTORS_DIR = _vectors if os.path.isdir(_vectors) else None
