"""Small private files written atomically with mode 0600: the realm key pair and
the host-side device's state.

A crash mid-write leaves either the old file or the new one, never a torn one:
write a temporary file beside the target, fsync it, rename it over, fsync the folder.
"""
import json
import os

from shared import crypto

REALM_KEY_FILE = "realm.key"


def write_private(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dirfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def write_json(path, value):
    write_private(path, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def load_or_create_realm_key(data_dir):
    """The realm's static key pair `(private, public)`, made on first use.

    The file holds the private key as one line of hex.
    """
    path = os.path.join(data_dir, REALM_KEY_FILE)
    try:
        with open(path) as f:
            private = bytes.fromhex(f.read().strip())
    except FileNotFoundError:
        private = crypto.generate_keypair()[0]
        write_private(path, private.hex().encode() + b"\n")
    if len(private) != 32:
        raise ValueError("%s does not hold a 32-byte key" % path)
    return private, crypto.public_key(private)
