# A file-backed stand-in for the OTA partitions of an ESP32 built with two of them
# (esp32.Partition's API as the update service uses it), and for the bootloader's part:
# `tools/sim_ota.py` runs boot() before the firmware, as the ESP-IDF bootloader runs
# before MicroPython, and makes ota() the board's hook. The simulated board's flash is a
# folder:
#   ota_0.bin, ota_1.bin   the two app partitions, BLOCKS blocks of BLOCK bytes each
#   otadata.json           {"boot": label, "state": "new" | "pending" | "valid",
#                           "previous": label}: which partition boots, and its state
# The states follow ESP-IDF's app rollback: set_boot() makes the other partition "new";
# the next boot runs it as "pending"; mark_app_valid_cancel_rollback() makes it "valid";
# a boot that finds it still "pending" (it was reset before being marked valid) goes back
# to the previous partition.
import json
import os

BLOCK = 4096
BLOCKS = 384  # 1.5 MB, the size of each app partition in MicroPython's 4 MB OTA layout
LABELS = ("ota_0", "ota_1")
_ESP_IMAGE_MAGIC = 0xE9  # the first byte of an ESP32 app image

FOLDER = None  # set by boot()


def _data_path():
    return FOLDER + "/otadata.json"


def _read_data():
    try:
        with open(_data_path()) as f:
            return json.load(f)
    except OSError:  # a new board: the first partition runs, as flashed
        return {"boot": LABELS[0], "state": "valid", "previous": None}


def _write_data(data):
    with open(_data_path() + ".tmp", "w") as f:
        json.dump(data, f)
    os.rename(_data_path() + ".tmp", _data_path())


def boot(folder):
    """The bootloader: choose the partition to run (rolling back one that was reset
    before being marked valid); its label."""
    global FOLDER
    FOLDER = folder
    try:
        os.mkdir(folder)
    except OSError:
        pass  # there already
    data = _read_data()
    if data["state"] == "pending":
        print("bootloader: %s was not marked valid: rolling back to %s" % (
            data["boot"], data["previous"]))
        data = {"boot": data["previous"], "state": "valid", "previous": None}
    elif data["state"] == "new":
        data["state"] = "pending"
    data["running"] = data["boot"]
    _write_data(data)
    return data["boot"]


def ota():
    """The board profile's hook (boards/common/espressif.py has the real one)."""
    return Partition


class Partition:
    RUNNING = 1
    BOOT = 2

    def __init__(self, which):
        if which == Partition.RUNNING:
            which = _read_data().get("running", LABELS[0])
        elif which == Partition.BOOT:
            which = _read_data()["boot"]
        if which not in LABELS:
            raise OSError(2)  # ENOENT, as esp32.Partition says for an unknown label
        self.label = which
        self.path = "%s/%s.bin" % (FOLDER, which)

    def info(self):
        """(type, subtype, address, size, label, encrypted), as esp32.Partition.info()."""
        n = LABELS.index(self.label)
        return (0, 0x10 + n, 0x10000 + n * BLOCKS * BLOCK, BLOCKS * BLOCK, self.label, False)

    def get_next_update(self):
        return Partition(LABELS[1 - LABELS.index(self.label)])

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return BLOCKS
        if op == 5:  # block size
            return BLOCK
        return 0  # init, deinit, sync, erase: nothing to do for a file

    def readblocks(self, block, buf):
        self._check(block, buf)
        try:
            with open(self.path, "rb") as f:
                f.seek(block * BLOCK)
                n = f.readinto(buf)
        except OSError:
            n = 0
        for i in range(n or 0, len(buf)):
            buf[i] = 0xFF  # never written: erased flash

    def writeblocks(self, block, buf):
        self._check(block, buf)
        try:
            f = open(self.path, "r+b")
        except OSError:
            f = open(self.path, "wb")
        with f:
            f.seek(block * BLOCK)
            f.write(buf)

    def _check(self, block, buf):
        if block < 0 or len(buf) % BLOCK or block * BLOCK + len(buf) > BLOCKS * BLOCK:
            raise OSError(22)  # EINVAL: outside the partition, or not whole blocks

    def set_boot(self):
        """Boot this partition next, as "new" (ESP-IDF checks the image header first)."""
        try:
            with open(self.path, "rb") as f:
                first = f.read(1)
        except OSError:
            first = b""
        if first != bytes((_ESP_IMAGE_MAGIC,)):
            raise OSError(22)  # esp_ota_set_boot_partition: ESP_ERR_OTA_VALIDATE_FAILED
        data = _read_data()
        _write_data({"boot": self.label, "state": "new", "previous": data.get("running"),
                     "running": data.get("running")})

    @staticmethod
    def mark_app_valid_cancel_rollback():
        data = _read_data()
        if data["state"] == "pending" and data.get("running") == data["boot"]:
            data["state"] = "valid"
            _write_data(data)
