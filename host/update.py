"""Release keys and update bundles (docs/UPDATES.md): `realm update keygen` and
`realm update build`. Signing happens here, with `cryptography`; devices only verify.

A release key file holds the Ed25519 private key as one line of hex (mode 0600). Keep it
off the realm machine: whoever holds it can make every device that trusts it run code.
"""
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared import bundle as layout
from host import keyfile
from shared.update import UpdateError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BundleError(Exception):
    """A bundle or key that cannot be made or read; the message says why."""


# -- release keys ------------------------------------------------------------------
def public_bytes(private):
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def keygen(path):
    """Make a release key pair; the private key goes to `path` (mode 0600). -> public key."""
    if os.path.exists(path):
        raise BundleError("%s exists: a release key is never overwritten (devices trust it); "
                          "choose another --out" % path)
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    keyfile.write_private(path, raw.hex().encode() + b"\n")
    return public_bytes(private)


def load_key(path):
    try:
        with open(path) as f:
            raw = bytes.fromhex(f.read().strip())
    except FileNotFoundError:
        raise BundleError("no release key at %s (make one with `realm update keygen --out %s`)"
                          % (path, path))
    except ValueError:
        raise BundleError("%s is not a release key file (one line of hex)" % path)
    if len(raw) != 32:
        raise BundleError("%s does not hold a 32-byte Ed25519 key" % path)
    if os.stat(path).st_mode & 0o077:
        raise BundleError("%s is readable by others: chmod 600 %s" % (path, path))
    return Ed25519PrivateKey.from_private_bytes(raw)


# -- bundles -----------------------------------------------------------------------
def make_bundle(manifest, contents, private=None):
    """The bundle bytes: header (manifest signed by `private`, unsigned if None) + files.
    contents: the files' bytes in the manifest's order."""
    raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    if layout.HEADER_FIXED + len(raw) > layout.MAX_HEADER:
        raise BundleError("the manifest is %d bytes, over the %d a device takes: fewer files"
                          % (len(raw), layout.MAX_HEADER - layout.HEADER_FIXED))
    if private is None:
        key, signature = bytes(32), layout.NO_SIGNATURE
    else:
        key = public_bytes(private)
        signature = private.sign(layout.signed_message(hashlib.sha256(raw).digest()))
    header = layout.MAGIC + key + signature + struct.pack(">H", len(raw)) + raw
    return header + b"".join(contents)


def manifest_for(kind, version, board, files, mpy=None, arch=None):
    """files: [(path on the device, bytes)]."""
    try:
        layout.parse_version(version)
    except ValueError as e:
        raise BundleError(str(e))
    return {"format": 1, "kind": kind, "version": version, "board": board, "mpy": mpy,
            "arch": arch, "files": [[path, len(data), hashlib.sha256(data).hexdigest()]
                                    for path, data in files]}


def read_bundle(path):
    """(bytes, header size, manifest dict, signing key or None) of a bundle file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BundleError("cannot read bundle %s: %s" % (path, e.strerror))
    try:
        size = layout.header_size(data)
        key, signature, raw = layout.split_header(data[:size])
        manifest = layout.parse_manifest(raw)
    except UpdateError as e:
        raise BundleError("%s: %s" % (path, e))
    if manifest["files_size"] + size != len(data):
        raise BundleError("%s: %d bytes, the manifest says %d (a truncated download?)"
                          % (path, len(data), manifest["files_size"] + size))
    return data, size, manifest, None if signature == layout.NO_SIGNATURE else key


def _tools():
    """tools/build.py of this clone: building a bundle needs the firmware's sources."""
    if not os.path.isfile(os.path.join(ROOT, "tools", "build.py")):
        raise BundleError("`realm update build` runs from a clone of the project (it compiles "
                          "firmware/ and shared/); %s has no tools/build.py" % ROOT)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tools import build
    return build


def mpy_version(compiler):
    """"6.3" from `mpy-cross --version` ("... mpy-cross emitting mpy v6.3")."""
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    return out.rsplit("mpy v", 1)[-1].strip() if "mpy v" in out else None


def app_files(board, app=None, extra=()):
    """[(path in the slot, bytes)]: the runtime compiled for board, and the app."""
    build = _tools()
    try:
        prof = build.profile(board)
        folder = build.build(board)
        compiler = build.mpy_cross()
    except build.BuildError as e:
        raise BundleError(str(e))
    files = []
    lib = os.path.join(folder, "lib")
    for dirpath, dirs, names in os.walk(lib):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                files.append((os.path.relpath(path, folder).replace(os.sep, "/"), f.read()))
    for source, target in ([(app, "app.py")] if app else []) + [(e, os.path.basename(e))
                                                                  for e in extra]:
        if not os.path.isfile(source):
            raise BundleError("no such file: %s" % source)
        files.append((target[:-3] + ".mpy", _compile(compiler, prof, source)))
    return files, mpy_version(compiler), prof["MPY_MARCH"]


def _compile(compiler, prof, source):
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "out.mpy")
        proc = subprocess.run([compiler, "-march=" + prof["MPY_MARCH"], "-o", out, source],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BundleError("mpy-cross failed on %s:\n%s" % (source, proc.stderr.strip()))
        with open(out, "rb") as f:
            return f.read()


def build_app_bundle(out, board, version, key_path, app=None, extra=()):
    """Write a signed app bundle (the runtime and the app, for one board's slot)."""
    private = load_key(key_path)
    files, mpy, arch = app_files(board, app, extra)
    manifest = manifest_for("app", version, board, files, mpy, arch)
    return _write(out, make_bundle(manifest, [data for _, data in files], private), manifest)


ESP_IMAGE_MAGIC = 0xE9  # the first byte of an ESP32 app image (what set_boot() checks)


def build_image_bundle(out, board, version, key_path, image):
    """Write a signed firmware-image bundle (a MicroPython image for an OTA partition)."""
    private = load_key(key_path)
    try:
        with open(image, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BundleError("cannot read image %s: %s" % (image, e.strerror))
    if not data or data[0] != ESP_IMAGE_MAGIC:
        raise BundleError("%s is not an ESP32 app image (its first byte is not 0xE9): use the "
                          "app binary of a MicroPython build with OTA partitions (micropython.bin"
                          " in its build folder)" % image)
    manifest = manifest_for("image", version, board, [("image", data)])
    return _write(out, make_bundle(manifest, [data], private), manifest)


def _write(out, bundle, manifest):
    tmp = "%s.%d.tmp" % (out, os.getpid())
    with open(tmp, "wb") as f:
        f.write(bundle)
    os.replace(tmp, out)
    return len(bundle), manifest
