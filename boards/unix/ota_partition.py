# A file-backed stand-in for the OTA partitions of an ESP32 built with two of them
# (esp32.Partition's calls as the update service makes them: the extended block protocol,
# with flash's rule that a write only clears bits, so a block not erased first comes out
# garbled), and for the bootloader's part: `tools/sim_ota.py` runs boot() before the
# firmware, as the ESP-IDF bootloader runs before MicroPython, then forgets it, and makes
# ota() the board's hook. On a board all this is C, outside the heap, so it is kept small:
# the simulated device's heap holds it during an image update. The board's flash is a
# folder:
#   ota_0.bin, ota_1.bin   the two app partitions, BLOCKS blocks of BLOCK bytes each
#   otadata.json           {"boot": label, "state": "new" | "pending" | "valid",
#                           "previous": label, "running": label}: which partition boots,
#                           its state, and the one that runs
# The states follow ESP-IDF's app rollback: set_boot() makes the other partition "new";
# the next boot runs it as "pending"; mark_app_valid_cancel_rollback() makes it "valid";
# a boot that finds it still "pending" (it was reset before being marked valid) goes back
# to the previous partition.
import json
import os

BLOCK = 4096
BLOCKS = 384  # 1.5 MB, the size of each app partition in MicroPython's 4 MB OTA layout
LABELS = ("ota_0", "ota_1")

FOLDER = None  # set by boot()


def data(new=None):
    """otadata.json's value (a new board: the first partition runs, as flashed); with
    `new`, that is written instead."""
    path = FOLDER + "/otadata.json"
    if new is None:
        try:
            with open(path) as f:
                return json.load(f)
        except OSError:
            return {"boot": LABELS[0], "state": "valid", "previous": None}
    with open(path + ".tmp", "w") as f:
        json.dump(new, f)
    os.rename(path + ".tmp", path)


def boot(folder):
    """The bootloader: choose the partition to run (rolling back one that was reset
    before being marked valid); its label."""
    global FOLDER
    FOLDER = folder
    try:
        os.mkdir(folder)
    except OSError:
        pass  # there already
    state = data()
    if state["state"] == "pending":
        print("bootloader: %s was not marked valid: rolling back to %s" % (
            state["boot"], state["previous"]))
        state = {"boot": state["previous"], "state": "valid", "previous": None}
    elif state["state"] == "new":
        state["state"] = "pending"
    state["running"] = state["boot"]
    data(state)
    return state["boot"]


def ota():
    """The board profile's hook (boards/common/espressif.py has the real one)."""
    return Partition


class Partition:
    RUNNING = 1

    def __init__(self, label):
        if label == Partition.RUNNING:
            label = data().get("running", LABELS[0])
        if label not in LABELS:
            raise OSError(2)  # ENOENT, as esp32.Partition says for an unknown label
        self.label = label

    def info(self):
        """(type, subtype, address, size, label, encrypted), as esp32.Partition.info()."""
        n = LABELS.index(self.label)
        return (0, 0x10 + n, 0x10000 + n * BLOCKS * BLOCK, BLOCKS * BLOCK, self.label, False)

    def get_next_update(self):
        return Partition(LABELS[1 - LABELS.index(self.label)])

    def ioctl(self, op, arg):
        if op == 6:  # erase block arg: its bytes become 0xFF
            for at in range(arg * BLOCK, (arg + 1) * BLOCK, 256):
                self.writeblocks(0, b"\xff" * 256, at, True)
        return {4: BLOCKS, 5: BLOCK}.get(op, 0)  # block count, block size; else done

    def readblocks(self, block, buf, offset=0):
        """Bytes never written read as erased flash (0xFF)."""
        n = 0
        try:
            with open(self._path(block, offset, buf), "rb") as f:
                f.seek(block * BLOCK + offset)
                n = f.readinto(buf) or 0
        except OSError:
            pass
        for i in range(n, len(buf)):
            buf[i] = 0xFF

    def writeblocks(self, block, buf, offset, erase=False):
        """The extended protocol's write (no erase): each byte becomes old & new."""
        path = self._path(block, offset, buf)
        if not erase:
            old = bytearray(len(buf))
            self.readblocks(block, old, offset)
            for i in range(len(buf)):
                old[i] &= buf[i]
            buf = old
        try:
            f = open(path, "r+b")
        except OSError:
            f = open(path, "wb")
        with f:
            f.seek(block * BLOCK + offset)
            f.write(buf)

    def _path(self, block, offset, buf):
        if block < 0 or offset < 0 or block * BLOCK + offset + len(buf) > BLOCKS * BLOCK:
            raise OSError(22)  # EINVAL: outside the partition
        return "%s/%s.bin" % (FOLDER, self.label)

    def set_boot(self):
        """Boot this partition next, as "new" (ESP-IDF checks the image header first:
        an ESP32 app image starts with 0xE9)."""
        head = bytearray(1)
        self.readblocks(0, head)
        if head[0] != 0xE9:
            raise OSError(22)  # esp_ota_set_boot_partition: ESP_ERR_OTA_VALIDATE_FAILED
        running = data().get("running")
        data({"boot": self.label, "state": "new", "previous": running, "running": running})

    @staticmethod
    def mark_app_valid_cancel_rollback():
        state = data()
        if state["state"] == "pending" and state.get("running") == state["boot"]:
            state["state"] = "valid"
            data(state)
