# The update slots' small JSON files (slots/boot.json, update.json, image.json, a slot's
# release.json), for the update service and firmware/trial.py, which load this only while
# they work. (The first stage, firmware/main.py, reads them with its own few lines: it is
# never updated and imports nothing of the runtime.)
import json
import os


def read_json(path):
    """A small JSON file's value; None if it is missing or torn."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, value):
    """Written to a temporary file first, then renamed over: never torn."""
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.rename(path + ".tmp", path)
