# The update slots' small JSON files (slots/boot.json, update.json, image.json, a slot's
# release.json) and what the board's OTA partitions say of an image on trial, for the
# update service and firmware/trial.py, which load this only while they work. (The first
# stage, firmware/main.py, reads the files with its own few lines: it is never updated and
# imports nothing of the runtime.)
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


def ota_partitions(board):
    """esp32.Partition (or the unix board's stand-in) when the board was built with two
    OTA partitions, else None: it takes no firmware image."""
    return board.ota() if hasattr(board, "ota") else None


def image_runs(trial, board):
    """True when the bootloader runs the image on trial (slots/image.json's "trial"), else
    it went back to the previous image."""
    ota = ota_partitions(board)
    return ota is not None and ota(ota.RUNNING).info()[4] == trial["label"]

