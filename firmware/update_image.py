# Full firmware images (kind "image", docs/UPDATES.md) on boards built with two OTA
# partitions (board.ota(): esp32.Partition, or its file-backed stand-in on the unix
# board). The transfer is the app's (firmware/update_fetch.py), but the bundle's one file
# goes into the partition the bootloader does not run, block by block through one
# preallocated buffer. Then its SHA-256 is read back from flash, the bootloader is told to
# boot it (set_boot), and after the restart the new image is on trial: it is marked valid
# (mark_app_valid_cancel_rollback) after the same confirmation as an app
# (firmware/update_agent.py); a reset before that makes the bootloader go back to the
# previous image, and the device reports the rollback.
#
# slots/image.json: {"version", "id"} of the image an update installed (absent: the
# flashed one), and "trial": {"version", "id", "label"} while a new one awaits
# confirmation. Meanwhile slots/boot.json has the running slot on trial, so the first
# stage, the launcher and the runtime treat it as any version on trial (nothing of this
# module is loaded by an idle device); its "fw" is the image's words for the DeviceReport.
import hashlib
from binascii import hexlify

from shared import update
from shared.compat import const
from shared.update import UpdateError
from firmware.update_fetch import Fetcher
from firmware.slotfiles import ota_partitions, read_json, write_json
from firmware.updating import IMAGE_STATE

BLOCK = const(4096)  # the partitions' block size (esp32.Partition: ioctl 5)
_PIECE = const(8)  # blocks (32 KB) between two progress records on flash


def partition(board):
    """The OTA partition an image is written to: the one the bootloader does not run."""
    ota = ota_partitions(board)
    if ota is None:
        raise UpdateError(update.WRONG_TARGET, "this board's MicroPython was built without two "
                          "OTA partitions: it takes app bundles only")
    target = ota(ota.RUNNING).get_next_update()
    if target.ioctl(5, 0) != BLOCK:
        raise UpdateError(update.FAILED, "OTA partition %s: blocks of %d bytes, not %d" % (
            target.info()[4], target.ioctl(5, 0), BLOCK))
    return target


class ImageFetcher(Fetcher):
    def _next(self):
        """The image (the manifest's one file) into the partition, from what it holds of
        it already; once written, check it and install it."""
        if self.index >= 0:
            return self._install()
        self.index = 0
        _path, size, self.digest, offset = self._entry(0)
        self.part = partition(self.rt.board)
        if size > self.part.ioctl(4, 0) * BLOCK:
            raise UpdateError(update.NO_SPACE, "an image of %d bytes; OTA partition %s holds %d"
                              % (size, self.part.info()[4], self.part.ioctl(4, 0) * BLOCK))
        self.image_size = size
        self.buf = bytearray(BLOCK)  # the one buffer every block goes through
        self.view = memoryview(self.buf)
        have = min(self._held(), size)  # the last piece recorded may end in padding
        self.block, self.fill = have // BLOCK, 0
        self.pos = self.asked = self.hsize + offset + have
        self.end = self.hsize + offset + size
        if self.pos < self.end:
            return self._ask()
        self._install()  # all of it was written before the cut

    def _held(self):
        """How much of the image the partition holds already: what the progress record
        says, if the partition's blocks read back still hash to the record's chain."""
        p = self.pending
        written = p.get("written", 0)
        link = self._chain(written // (BLOCK * _PIECE))
        if written and hexlify(link).decode() != p.get("chain"):
            self.rt.log("update %s: the partition does not hold what was recorded: "
                        "writing the image from the start" % self.version)
            written, link = 0, self._chain(0)
        elif written:
            self.rt.log("update %s: partition %s holds %d bytes of the image" % (
                self.version, self.part.info()[4], written))
        self.piece = hashlib.sha256(link)
        return written

    def _chain(self, pieces):
        """The progress chain over the first `pieces` pieces read back from the partition:
        link(k) = SHA-256(link(k-1) | piece k), link(0) empty."""
        link = b""
        for k in range(pieces):
            h = hashlib.sha256(link)
            for block in range(k * _PIECE, (k + 1) * _PIECE):
                self.part.readblocks(block, self.buf)
                h.update(self.buf)
            link = h.digest()
        return link

    def _write(self, data):
        i, n = 0, len(data)
        while i < n:
            k = min(BLOCK - self.fill, n - i)
            self.view[self.fill:self.fill + k] = data[i:i + k]
            self.fill += k
            i += k
            if self.fill == BLOCK:
                self._flush()

    def _flush(self):
        for i in range(self.fill, BLOCK):
            self.buf[i] = 0xFF  # the end of the last block: as erased flash
        self.part.writeblocks(self.block, self.buf)
        self.piece.update(self.buf)
        self.block += 1
        self.fill = 0
        if self.block % _PIECE == 0:  # a progress record: resume from here after a cut
            link = self.piece.digest()
            p = self.pending
            p["written"] = self.block * BLOCK
            p["chain"] = hexlify(link).decode()
            self._set_pending(p)
            self.piece = hashlib.sha256(link)

    def _file_done(self):
        if self.fill:
            self._flush()

    def _install(self):
        """Read the image back from flash and check its SHA-256; then boot it next."""
        h = hashlib.sha256()
        left = self.image_size
        block = 0
        while left > 0:
            self.part.readblocks(block, self.buf)
            n = min(left, BLOCK)
            h.update(self.view[:n])
            left -= n
            block += 1
        label = self.part.info()[4]
        if h.digest() != self.digest:
            raise UpdateError(update.BAD_HASH, "image: its SHA-256 read back from partition %s "
                              "is not the signed manifest's (the bundle is damaged or forged, "
                              "or the flash failed); the running image stays" % label)
        try:
            self.part.set_boot()
        except OSError as e:
            raise UpdateError(update.BAD_BUNDLE, "image: the bootloader does not take it "
                              "(set_boot: %r); the running image stays" % (e,))
        image = read_json(self.slots + IMAGE_STATE) or {}
        image["trial"] = {"version": self.version, "id": hexlify(self.id).decode(),
                          "label": label}
        write_json(self.slots + IMAGE_STATE, image)
        # The first stage sees the running slot on trial: the runtime then waits for the
        # confirmation (and its guard restarts a version that never gets it).
        write_json(self.slots + "/boot.json", {"active": self.slot, "trial": self.slot,
                                                "tries": 0, "fw": "image " + self.version})
        self._installed("partition %s" % label)

