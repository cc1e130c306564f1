"""tools/build.py folds the public constants of shared/protocol.py, shared/codec.py and
shared/errors.py into the modules a board runs: the numbers keep their one home in the
source, and a device neither loads shared/protocol.py nor keeps a name per constant in
each importer or in codec and errors (issue 12: the device's heap)."""
import glob
import os

import pytest

from tests.fw_helpers import unix_build  # noqa: F401 (fixture)
from tools.build import BuildError, fold_constants, folded_constants

SOURCE = '''from shared.protocol import (DEFAULT_PORT,
                             VERSION)
import x
def f(port=DEFAULT_PORT):
    return x.VERSION, VERSION, "VERSION", port or DEFAULT_PORT  # é VERSION
'''


def test_imported_names_become_their_values_and_the_lines_stay():
    constants = folded_constants()["shared.protocol"]
    folded = fold_constants(SOURCE, folded_constants())
    assert folded.splitlines() == [
        "", "", "import x", "def f(port=%d):" % constants["DEFAULT_PORT"],
        '    return x.VERSION, %d, "VERSION", port or %d  # é VERSION'
        % (constants["VERSION"], constants["DEFAULT_PORT"])]


def test_constants_read_through_their_module_are_folded_and_other_imports_kept():
    source = '''from shared import codec, crypto
from shared.errors import (ProtocolError,
                           MALFORMED)
def f(packet):
    if packet[1] == codec.HELLO:
        raise ProtocolError(MALFORMED, codec.uuid_to_str(packet))
    return codec.MAX_PING.bit_length(), crypto.HELLO
'''
    codec = folded_constants()["shared.codec"]
    assert fold_constants(source, folded_constants()).splitlines() == [
        "from shared import codec, crypto", "from shared.errors import ProtocolError", "",
        "def f(packet):", "    if packet[1] == %d:" % codec["HELLO"],
        "        raise ProtocolError(1, codec.uuid_to_str(packet))",
        "    return (%d).bit_length(), crypto.HELLO" % codec["MAX_PING"]]


def test_a_folded_import_inside_a_block_becomes_pass():
    source = "if x:\n    from shared.codec import SERVICE_UPDATE\n    y(SERVICE_UPDATE)\n"
    assert fold_constants(source, folded_constants()) == "if x:\n    pass\n    y(1)\n"


def test_a_folded_module_keeps_no_name_for_its_own_constants():
    source = "HELLO = const(2)\n_TABLE = {HELLO: 'Hello'}\ndef encode(x): return x\n"
    assert fold_constants(source, folded_constants(), module="shared.codec") == \
        "_HELLO = const(2)\n_TABLE = {_HELLO: 'Hello'}\ndef encode(x): return x\n"


def test_a_source_without_the_import_is_left_as_it_is():
    source = "VERSION = 3\nprint(VERSION)\n"
    assert fold_constants(source, folded_constants()) == source


@pytest.mark.parametrize("source", [
    "from shared.protocol import VERSION as V\n",
    "from shared.protocol import VERSION\nVERSION = 2\n",
    "from shared.protocol import VERSION\ndef f(VERSION):\n    pass\n",
    "from shared import codec\ncodec.HELLO = 3\n",
    "from shared import codec\nx = (codec.\n     HELLO)\n",
    "import os; from shared.codec import HELLO\n",
])
def test_a_name_it_cannot_fold_stops_the_build(source):
    with pytest.raises(BuildError):
        fold_constants(source, folded_constants())


def test_a_folded_module_whose_private_name_clashes_stops_the_build():
    with pytest.raises(BuildError):
        fold_constants("HELLO = const(2)\n_HELLO = 5\n", folded_constants(),
                       module="shared.codec")


def test_no_built_module_imports_shared_protocol_or_names_a_folded_constant(unix_build):
    compiled = glob.glob(os.path.join(unix_build, "lib", "**", "*.mpy"), recursive=True)
    assert len(compiled) > 10
    for path in compiled:
        with open(path, "rb") as f:
            code = f.read()
        if not path.endswith(os.path.join("shared", "protocol.mpy")):
            assert b"shared.protocol" not in code, path
        names = [b"PROTO_REALM", b"KEY_CHECK_RESPONSE", b"SERVICE_UPDATE",
                 b"DEFAULT_MAX_PACKET"]
        if not path.endswith(os.path.join("shared", "errors.mpy")):  # its names as text
            names += [b"KEY_CHECK_FAILED", b"SESSION_REPLACED"]
        for name in names:
            assert name not in code, (path, name)


def _compiled_bytes(folder):
    return sum(os.path.getsize(path) for path in
               glob.glob(os.path.join(folder, "lib", "**", "*.mpy"), recursive=True))


def test_a_board_build_has_no_source_lines_unless_asked(tmp_path):
    from tools.build import build
    out = str(tmp_path / "unix")
    without = _compiled_bytes(build("unix", out))
    # Other options than the tree was built with: every module is compiled again.
    with_lines = _compiled_bytes(build("unix", out, source_lines=True))
    assert with_lines > without + 1000, (with_lines, without)
    assert _compiled_bytes(build("unix", out)) == without
