# SPDX-License-Identifier: BSD-2-Clause
"""A block device's medium for simulation: disk images, a shadow disk, and an AXI4 RAM on them.

* :class:`DiskImage` holds a disk's bytes, in memory or in a raw image file mapped into memory,
  so a simulation can start from a user's image and leave its writes in it for the next one.
  Ranges can be made to fail (the medium then answers SLVERR).
* :class:`ShadowDisk` is what the disk must contain: the testbench applies every request that
  completed OK, then compares byte for byte. Sectors whose fate is unknown (a write cut short
  by a reset) are skipped.
* :func:`attach_axi_ram` serves a DUT's AXI4 medium port from a :class:`DiskImage` with
  cocotbext-axi's ``AxiRam``.

Sector ``n`` is at byte ``n * 512`` of the image and of the medium's address space.
"""

import logging
import mmap
import os

from virtio_pcie.spec.virtio import VIRTIO_BLK_SECTOR_SIZE

__all__ = ["SECTOR", "DiskImage", "ShadowDisk", "MediumError", "attach_axi_ram"]

SECTOR = VIRTIO_BLK_SECTOR_SIZE


class MediumError(OSError):
    """An access touched a range made to fail with :meth:`DiskImage.fail`."""


class _MediumView:
    """The buffer protocol cocotbext-axi's ``Memory`` uses (``len`` and slices), with faults."""

    def __init__(self, image):
        self._image = image

    def __len__(self):
        return self._image.size

    def _check(self, key):
        start, stop, _ = key.indices(self._image.size)
        for lo, hi in self._image.faults:
            if start < hi and lo < stop:
                raise MediumError(f"medium fault at {max(lo, start):#x}")

    def __getitem__(self, key):
        self._check(key)
        return self._image.buffer[key]

    def __setitem__(self, key, value):
        self._check(key)
        self._image.buffer[key] = value


class DiskImage:
    """A disk's contents.

    ``DiskImage(sectors=n)`` is an empty in-memory disk of ``n`` sectors. ``DiskImage(path)``
    maps an existing raw image (its size, a multiple of 512 bytes, is the capacity);
    ``DiskImage(path, sectors=n)`` also creates the file, or grows it, to ``n`` sectors.
    Writes through :attr:`mem` land in the file; :meth:`close` (or leaving a ``with`` block)
    flushes them.
    """

    def __init__(self, path=None, *, sectors=None, fill=0):
        self.path = None if path is None else os.fspath(path)
        self.faults = []
        self._file = None
        if self.path is None:
            if sectors is None or sectors <= 0:
                raise ValueError(f"an in-memory disk needs a positive sector count, "
                                 f"not {sectors!r}")
            self.buffer = bytearray([fill]) * (sectors * SECTOR)
        else:
            exists = os.path.exists(self.path)
            if not exists and sectors is None:
                raise FileNotFoundError(f"disk image {self.path} does not exist "
                                        f"(give sectors= to create it)")
            self._file = open(self.path, "r+b" if exists else "w+b")
            size = os.fstat(self._file.fileno()).st_size
            if sectors is not None and size < sectors * SECTOR:
                self._file.truncate(sectors * SECTOR)
                size = sectors * SECTOR
            if size == 0 or size % SECTOR:
                self._file.close()
                raise ValueError(f"disk image {self.path} is {size} bytes, not a positive "
                                 f"multiple of {SECTOR}")
            self.buffer = mmap.mmap(self._file.fileno(), size)
        self.mem = _MediumView(self)

    @property
    def size(self):
        return len(self.buffer)

    @property
    def sectors(self):
        return self.size // SECTOR

    def read(self, offset, length):
        return bytes(self.buffer[offset:offset + length])

    def write(self, offset, data):
        self.buffer[offset:offset + len(data)] = data

    def fail(self, offset, length):
        """Make accesses to ``[offset, offset + length)`` fail until :meth:`heal`."""
        self.faults.append((offset, offset + length))

    def heal(self):
        self.faults.clear()

    def flush(self):
        if isinstance(self.buffer, mmap.mmap):
            self.buffer.flush()

    def close(self):
        if self._file is not None:
            self.buffer.flush()
            self.buffer.close()
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShadowDisk:
    """The contents a disk must have, given the requests that completed.

    Parameters
    ----------
    initial : bytes-like or DiskImage
        The disk before the first request.
    discard_zeroes : bool or None
        What a completed DISCARD does: zero its sectors (True), leave them (False), or either
        (None: the sectors become unknown).
    """

    def __init__(self, initial, *, discard_zeroes=False):
        if isinstance(initial, DiskImage):
            initial = initial.read(0, initial.size)
        self.data = bytearray(initial)
        if len(self.data) % SECTOR:
            raise ValueError("a disk is a whole number of sectors")
        self.unknown = set()
        self.discard_zeroes = discard_zeroes

    @property
    def sectors(self):
        return len(self.data) // SECTOR

    def _span(self, sector, count):
        if sector < 0 or count < 0 or sector + count > self.sectors:
            raise ValueError(f"sectors {sector}..{sector + count} are outside the disk "
                             f"({self.sectors} sectors)")
        return slice(sector * SECTOR, (sector + count) * SECTOR)

    def write(self, sector, data):
        if len(data) % SECTOR:
            raise ValueError("writes are whole sectors")
        self.data[self._span(sector, len(data) // SECTOR)] = data
        self.unknown.difference_update(range(sector, sector + len(data) // SECTOR))

    def zero(self, sector, count):
        self.write(sector, bytes(count * SECTOR))

    def discard(self, sector, count):
        if self.discard_zeroes is None:
            self.forget(sector, count)
        elif self.discard_zeroes:
            self.zero(sector, count)

    def forget(self, sector, count):
        """The sectors may now hold anything (a write that was cut short)."""
        self._span(sector, count)
        self.unknown.update(range(sector, sector + count))

    def known(self, sector, count):
        return not any(s in self.unknown for s in range(sector, sector + count))

    def read(self, sector, count):
        if not self.known(sector, count):
            raise ValueError(f"sectors {sector}..{sector + count} are not known")
        return bytes(self.data[self._span(sector, count)])

    def mismatches(self, actual, limit=8):
        """Sectors (up to ``limit``) where ``actual`` differs from the known contents."""
        if len(actual) != len(self.data):
            raise ValueError(f"disk sizes differ: {len(actual)} != {len(self.data)}")
        bad = []
        view, mine = memoryview(actual), memoryview(self.data)
        step = 64 * SECTOR
        for base in range(0, len(self.data), step):
            if view[base:base + step] == mine[base:base + step]:
                continue
            for off in range(base, min(base + step, len(self.data)), SECTOR):
                sector = off // SECTOR
                if sector not in self.unknown and \
                        view[off:off + SECTOR] != mine[off:off + SECTOR]:
                    bad.append(sector)
                    if len(bad) >= limit:
                        return bad
        return bad


def attach_axi_ram(dut, prefix, clock, reset, image, *, quiet=True):
    """Serve the DUT's AXI4 port ``<prefix>__awaddr`` ... from ``image`` (cocotbext-axi AxiRam).

    Returns the ``AxiRam``; accesses to failing ranges of the image answer SLVERR.
    """
    from cocotbext.axi import AxiBus, AxiRam
    ram = AxiRam(AxiBus.from_prefix(dut, f"{prefix}_"), clock, reset, mem=image.mem)
    if quiet:
        for part in (ram.write_if, ram.read_if):
            part.log.setLevel(logging.WARNING)
    return ram
