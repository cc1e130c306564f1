"""Full firmware images with real processes: a realm, the updater (`realm update push`) and
simulated devices at SIM_HEAP whose board has two OTA partitions (`tools/sim_ota.py`:
file-backed stand-ins of esp32.Partition, and the bootloader's rollback at each start; see
boards/unix/ota_partition.py). docs/UPDATES.md, "Firmware images"."""
import json
import os
import time

import pytest

from host import update as bundles
from tests.fw_helpers import online, realm, unix_build  # noqa: F401 (fixtures)
from tests.realm_helpers import run_cli
from tests.update_helpers import Updatable, keygen, refused

# Small images: the simulated transfer moves a few KB/s on a loaded machine. Both end in a
# partial block; the larger one passes a progress record (every 32 KB) for the resume.
IMAGE_SIZE = 20000
RESUME_SIZE = 45000


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def images(tmp_path_factory, keys):
    """images(version, tamper=False) -> (bundle path, image bytes): a signed image bundle
    (an ESP32 app image's first byte, then random bytes), made once per version."""
    folder = tmp_path_factory.mktemp("images")
    made = {}

    def make(version, tamper=False, size=IMAGE_SIZE):
        if version not in made:
            image = bytes([bundles.ESP_IMAGE_MAGIC]) + os.urandom(size - 1)
            source = folder / ("image-%s.bin" % version)
            source.write_bytes(image)
            path = str(folder / ("image-%s.bundle" % version))
            bundles.build_image_bundle(path, "unix", version, keys[0], str(source))
            made[version] = path, image
        path, image = made[version]
        if tamper:  # a flipped bit in the image, past the signed header
            with open(path, "rb") as f:
                data = bytearray(f.read())
            data[-1000] ^= 0x10
            path = str(folder / ("tampered-%s.bundle" % version))
            with open(path, "wb") as f:
                f.write(data)
        return path, image
    return make


@pytest.fixture
def fleet(tmp_path, realm, keys, unix_build):
    """Devices on the firmware as built now (build/unix, the factory slot)."""
    devices = Updatable(tmp_path, realm, keys[1])
    yield devices
    devices.stop()


def board(fleet, name, ota=True, **update):
    """A device on a simulated board with two OTA partitions (ota) or without."""
    if update:
        dev = fleet.add(name, start=False, update=update)
    else:
        dev = fleet.add(name, start=False)
    dev.ota = ota
    dev.start()
    online(dev)
    dev.wait(r"^app 0\.1\.0$")
    return dev


def files(dev):
    return dev.config_path[:-5]


def otadata(dev):
    with open(files(dev) + ".ota/otadata.json") as f:
        return json.load(f)


def image_state(dev):
    try:
        with open(files(dev) + ".slots/image.json") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def partition_bytes(dev, label, size):
    with open(files(dev) + ".ota/%s.bin" % label, "rb") as f:
        return f.read(size)


def reported_fw(realm, name, timeout=20):
    """The fw of the device's last DeviceReport, as `realm status` shows it."""
    deadline = time.monotonic() + timeout
    while True:
        code, out, err = run_cli("status", "--data", realm.data_dir, "--json")
        assert code == 0, err
        device = [d for d in json.loads(out)["devices"] if d["name"] == name][0]
        fw = (device["report"] or {}).get("fw")
        if fw is not None or time.monotonic() > deadline:
            return fw
        time.sleep(0.5)


def test_an_image_goes_into_the_other_partition_and_is_marked_valid_once_confirmed(
        fleet, images, realm):
    dev = board(fleet, "boiler")
    assert otadata(dev)["running"] == "ota_0"
    with open(files(dev) + ".ota/ota_1.bin", "wb") as f:  # what an earlier image left there
        f.write(os.urandom(IMAGE_SIZE + 5000))
    path, image = images("2.0.0")
    code, rows, err = fleet.run_push(path, "boiler")
    assert code == 0, (rows, err, dev.output())
    assert rows["boiler"]["state"] == "updated" and rows["boiler"]["version"] == "2.0.0", rows
    dev.wait(r"update 2\.0\.0 installed in partition ota_1: restarting into it")
    dev.wait(r"image 2\.0\.0 confirmed")
    assert partition_bytes(dev, "ota_1", IMAGE_SIZE) == image  # written whole, in place
    data = otadata(dev)
    assert (data["boot"], data["running"], data["state"]) == ("ota_1", "ota_1", "valid"), data
    assert image_state(dev)["version"] == "2.0.0" and "trial" not in image_state(dev)
    dev.wait(r"^app 0\.1\.0$")  # the app slots are untouched: the same app runs on it
    assert reported_fw(realm, "boiler").endswith(" image 2.0.0")

    # Asked what it runs; offered the same image again: already current, nothing sent.
    assert fleet.status("boiler")["boiler"]["image"] == "2.0.0"
    code, rows, _err = fleet.run_push(path, "boiler")
    assert code == 0 and rows["boiler"]["state"] == "already current", rows
    assert rows["boiler"]["sent"] == 0


# Under load the device once lost this answer: sealing it found no room in the fetcher's
# heap (MemoryError), and it neither answered nor restarted; the updater offered again and
# the image was fetched five times. The answer is now sealed after the transfer's garbage
# is collected, else kept on flash and said after a restart (firmware/update_fetch.py).
def test_a_tampered_image_is_refused_and_nothing_is_marked_bootable(fleet, images):
    dev = board(fleet, "kiln")
    path, _image = images("2.0.0", tamper=True)
    refused(fleet, dev, path, "BAD_HASH",
            "image: its SHA-256 read back from partition ota_1 is not the signed")
    data = otadata(dev)
    assert (data["boot"], data["state"]) == ("ota_0", "valid"), data
    assert image_state(dev) is None


def test_a_device_reset_before_confirmation_comes_back_on_the_old_image(fleet, images):
    dev = board(fleet, "pump", confirm_ms=120000, trial_ms=300000)
    path, _image = images("2.0.0")
    push = fleet.push(path, "pump", wait=120)
    dev.wait(r"update 2\.0\.0 installed in partition ota_1", 60)
    dev.wait(r"image 2\.0\.0 on trial: confirmed after 120 s online", 30)
    assert otadata(dev)["running"] == "ota_1"
    before = dev.output()
    dev.kill()  # reset before the confirmation
    dev.start()
    dev.wait(r"bootloader: ota_1 was not marked valid: rolling back to ota_0")
    dev.wait(r"image 2\.0\.0 was not confirmed: the bootloader went back to the previous image")
    out, err = push.communicate(timeout=60)
    row = {r["name"]: r for r in json.loads(out)}["pump"]
    assert push.returncode == 1 and (row["state"], row["reason"]) == (
        "rolled back", "START_FAILED"), (row, err, before, dev.output())
    data = otadata(dev)
    assert (data["boot"], data["running"], data["state"]) == ("ota_0", "ota_0", "valid"), data
    assert image_state(dev) == {}
    dev.wait(r"^app 0\.1\.0$")
    # Offered again, it is not tried again.
    code, rows, _err = fleet.run_push(path, "pump")
    assert rows["pump"]["state"] == "rolled back", rows


def _written(dev):
    try:
        with open(files(dev) + ".slots/update.json") as f:
            return json.load(f).get("written", 0)
    except (OSError, ValueError):
        return 0


def test_an_image_transfer_resumes_after_a_power_cut(fleet, images):
    dev = board(fleet, "well", confirm_ms=1000, trial_ms=60000)
    path, image = images("3.0.0", size=RESUME_SIZE)
    size = os.path.getsize(path)
    push = fleet.push(path, "well", wait=120)
    deadline = time.monotonic() + 90
    while _written(dev) < 32768:
        assert time.monotonic() < deadline, "no progress record in 90 s:\n" + dev.output()
        time.sleep(0.02)
    dev.kill()  # power cut mid-transfer, after a progress record
    dev.start()
    dev.wait(r"update 3\.0\.0: partition ota_1 holds 32768 bytes of the image", 60)
    out, err = push.communicate(timeout=150)
    row = {r["name"]: r for r in json.loads(out)}["well"]
    assert push.returncode == 0 and row["state"] == "updated", (row, err, dev.output())
    assert size <= row["sent"] < 1.3 * size, row
    assert partition_bytes(dev, "ota_1", RESUME_SIZE) == image
    assert otadata(dev)["state"] == "valid"


def test_a_board_without_two_ota_partitions_refuses_an_image(fleet, images):
    dev = board(fleet, "shed", ota=False)
    path, _image = images("2.0.0")
    refused(fleet, dev, path, "WRONG_TARGET",
            "built without two OTA partitions: it takes app bundles only")


def test_build_refuses_a_file_that_is_not_an_esp32_app_image(tmp_path, keys):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF" + bytes(100))
    code, out, err = run_cli("update", "build", "--board", "esp32", "--version", "2.0.0",
                             "--key", keys[0], "--image", str(elf),
                             "--out", str(tmp_path / "x.bundle"))
    assert code != 0 and "is not an ESP32 app image (its first byte is not 0xE9)" in err, err
    assert not (tmp_path / "x.bundle").exists()
