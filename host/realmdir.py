"""The realm's data folder: which one a command means, whether it holds a realm, and
whether a realm is serving it right now.

Every command and make target finds the folder the same way: `--data DIR`, else the
REALM_DATA environment variable, else ./realm-data. Only `realm serve` and `realm init`
make a realm there; every other command refuses a folder without one, so an admin
command run from the wrong directory cannot silently start a second, empty realm.
"""
import fcntl
import os

from host import keyfile

DEFAULT = "./realm-data"
ENV = "REALM_DATA"
# Held (a shared POSIX lock) by every `realm serve` of the folder for as long as it runs:
# the OS drops it when the process dies, however it dies. Admin commands only look.
SERVING_FILE = "realm.serving"


class NoRealm(Exception):
    """The folder holds no realm."""


def resolve(given=None):
    """The data folder a command means: `given` (--data), else $REALM_DATA, else ./realm-data."""
    return given or os.environ.get(ENV) or DEFAULT


def holds_realm(data_dir):
    return os.path.isfile(os.path.join(data_dir, keyfile.REALM_KEY_FILE))


def require(data_dir):
    """Refuse a folder that holds no realm, naming it and the way out."""
    if not holds_realm(data_dir):
        raise NoRealm("no realm in %s (no %s there): give the realm's folder with --data DIR "
                      "or REALM_DATA, or make a realm there with `realm init --data %s`"
                      % (os.path.abspath(data_dir), keyfile.REALM_KEY_FILE, data_dir))
    return data_dir


def create(data_dir):
    """Make the folder (mode 0700) and the realm's key pair if missing; True if it was new."""
    new = not holds_realm(data_dir)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    keyfile.load_or_create_realm_key(data_dir)
    return new


def hold_serving(data_dir):
    """Mark the folder as served until the returned file is closed or the process ends.

    A shared lock: several cluster nodes may serve one folder, and the lock never stands
    in the way of the registry, which admin commands use while realms run."""
    marker = open(os.path.join(data_dir, SERVING_FILE), "a+")  # a read lock needs reading
    fcntl.lockf(marker, fcntl.LOCK_SH)  # waits out an is_served() probe (microseconds)
    return marker


def is_served(data_dir):
    """Whether a live `realm serve` holds the folder (False once it died, even by SIGKILL)."""
    try:  # opened for writing (an exclusive lock needs it), never created
        probe = os.fdopen(os.open(os.path.join(data_dir, SERVING_FILE), os.O_WRONLY), "w")
    except FileNotFoundError:
        return False  # never served
    with probe:
        try:
            fcntl.lockf(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(probe, fcntl.LOCK_UN)
        return False
