"""Logging for the realm: one line per event, to stderr, with a time stamp."""
import logging
import sys

LOGGER = "realm"


def setup(verbose=False, stream=None):
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger(LOGGER)
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    return root


def get(name=None):
    return logging.getLogger(LOGGER if name is None else LOGGER + "." + name)
