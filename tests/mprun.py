# Runs core test modules under MicroPython: every test_* function of each module.
# usage: micropython tests/mprun.py VECTORS_DIR|-|skip MODULE [MODULE...]
# ("-": the vectors are absent, their tests fail; "skip": absent, their tests skip)
# Prints one line per test and a final "N passed, N failed, N skipped".
import sys
import gc

_parts = __file__.rsplit("/", 2)  # ROOT/tests/mprun.py
sys.path.insert(0, _parts[0] if len(_parts) == 3 else ".")

from tests.core import support


def main(argv):
    support.VECTORS_DIR = None if argv[0] in ("-", "skip") else argv[0]
    support.SKIP_MISSING_VECTORS = argv[0] == "skip"
    passed = failed = skipped = 0
    for modname in argv[1:]:
        mod = __import__("tests.core." + modname, None, None, ["x"])
        names = sorted(n for n in dir(mod) if n.startswith("test_"))
        for name in names:
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            gc.collect()
            try:
                fn()
                passed += 1
                print("PASS", modname, name)
            except support.Skip as e:
                skipped += 1
                print("SKIP", modname, name, e)
            except Exception as e:
                failed += 1
                print("FAIL", modname, name, type(e).__name__, e)
                sys.print_exception(e)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return failed


sys.exit(1 if main(sys.argv[1:]) else 0)
