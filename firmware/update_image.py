# Full firmware images (kind "image", docs/UPDATES.md) on boards built with two OTA
# partitions (board.ota(): esp32.Partition, or its file-backed stand-in on the unix
# board). The transfer is the app's (firmware/update_fetch.py), but the bundle's one file
# goes into the partition the bootloader does not run, through one small preallocated
# buffer: each block is erased when the image reaches it, then written a piece at a time
# (esp32.Partition's extended block protocol: ioctl 6, writeblocks with an offset). A
# block-sized buffer would be 4 KB more in the heap of the transfer, which has the least
# to spare. Then its SHA-256 is read back from flash, the bootloader is told to boot it
# (set_boot), and after the restart the new image is on trial: it is marked valid
# (mark_app_valid_cancel_rollback) after the same confirmation as an app
# (firmware/trial.py); a reset before that makes the bootloader go back to the previous
# image, and the device reports the rollback.
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
# Bytes written (and read back) at once: a multiple of 16, as writes to an encrypted
# flash must be, and a divisor of BLOCK, so a write never crosses a block.
_WRITE = const(256)
_ERASE = const(6)  # ioctl: erase one block


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
        self.buf = bytearray(_WRITE)  # the one buffer every byte of the image goes through
        self.view = memoryview(self.buf)
        have = min(self._held(), size)  # the last piece recorded may end in padding
        self.at, self.fill = have, 0  # bytes in the partition; bytes in buf
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
            for at in range(k * _PIECE * BLOCK, (k + 1) * _PIECE * BLOCK, _WRITE):
                self.part.readblocks(at // BLOCK, self.buf, at % BLOCK)
                h.update(self.buf)
            link = h.digest()
        return link

    def _write(self, data):
        i, n = 0, len(data)
        while i < n:
            k = min(_WRITE - self.fill, n - i)
            self.view[self.fill:self.fill + k] = data[i:i + k]
            self.fill += k
            i += k
            if self.fill == _WRITE:
                self._flush()

    def _flush(self):
        for i in range(self.fill, _WRITE):
            self.buf[i] = 0xFF  # past the image's end: as erased flash
        block, offset = self.at // BLOCK, self.at % BLOCK
        if offset == 0:  # flash is written only where it was erased
            self.part.ioctl(_ERASE, block)
        self.part.writeblocks(block, self.buf, offset)
        self.piece.update(self.buf)
        self.at += _WRITE
        self.fill = 0
        if self.at % (_PIECE * BLOCK) == 0:  # a progress record: resume from here after a cut
            link = self.piece.digest()
            p = self.pending
            p["written"] = self.at
            p["chain"] = hexlify(link).decode()
            self._set_pending(p)
            self.piece = hashlib.sha256(link)

    def _file_done(self):
        if self.fill:
            self._flush()

    def _install(self):
        """Read the image back from flash and check its SHA-256; then boot it next."""
        h = hashlib.sha256()
        for at in range(0, self.image_size, _WRITE):
            self.part.readblocks(at // BLOCK, self.buf, at % BLOCK)
            h.update(self.view[:min(_WRITE, self.image_size - at)])
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

