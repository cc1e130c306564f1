"""tools/build.py folds shared/protocol.py's constants into the modules a board runs: the
numbers keep their one home in the source, and a device neither loads that module nor
keeps a name per constant in each importer (issue 12: the device's heap)."""
import glob
import os

import pytest

from tests.fw_helpers import unix_build  # noqa: F401 (fixture)
from tools.build import BuildError, fold_protocol, protocol_constants

SOURCE = '''from shared.protocol import (DEFAULT_PORT,
                             VERSION)
import x
def f(port=DEFAULT_PORT):
    return x.VERSION, VERSION, "VERSION", port or DEFAULT_PORT  # é VERSION
'''


def test_imported_names_become_their_values_and_the_lines_stay():
    constants = protocol_constants()
    folded = fold_protocol(SOURCE, constants)
    assert folded.splitlines() == [
        "", "", "import x", "def f(port=%d):" % constants["DEFAULT_PORT"],
        '    return x.VERSION, %d, "VERSION", port or %d  # é VERSION'
        % (constants["VERSION"], constants["DEFAULT_PORT"])]


def test_a_source_without_the_import_is_left_as_it_is():
    source = "VERSION = 3\nprint(VERSION)\n"
    assert fold_protocol(source, protocol_constants()) == source


@pytest.mark.parametrize("source", [
    "from shared.protocol import NOT_THERE\n",
    "from shared.protocol import VERSION as V\n",
    "from shared.protocol import VERSION\nVERSION = 2\n",
    "from shared.protocol import VERSION\ndef f(VERSION):\n    pass\n",
])
def test_a_name_it_cannot_fold_stops_the_build(source):
    with pytest.raises(BuildError):
        fold_protocol(source, protocol_constants())


def test_no_built_module_imports_shared_protocol(unix_build):
    compiled = glob.glob(os.path.join(unix_build, "lib", "**", "*.mpy"), recursive=True)
    assert len(compiled) > 10
    for path in compiled:
        if not path.endswith(os.path.join("shared", "protocol.mpy")):
            with open(path, "rb") as f:
                assert b"shared.protocol" not in f.read(), path
