# SPDX-License-Identifier: BSD-2-Clause
"""Random virtio-blk traffic through the host model, checked byte for byte.

:class:`BlkWorkload` drives a bound :class:`~.host.VirtioBlkDriver` the way a block layer would:
up to ``qd`` requests in flight, spread over the driver's request queues, of every type the
device offers (IN, OUT, FLUSH, GET_ID, DISCARD, WRITE_ZEROES with and without UNMAP) and, if
asked, requests the device must refuse (past the end of the disk: IOERR; an unknown type:
UNSUPP). Every completed request is checked: its status, the data an IN returned against the
:class:`~.models.disk_image.ShadowDisk`, the serial of a GET_ID. Requests in flight never
overlap (virtio-blk does not order them, so overlapping ones would have no defined result).
:meth:`BlkWorkload.verify_medium` compares the whole medium with the shadow at the end.

Shared by the system tests and ``virtio-pcie demo``.
"""

import random
from dataclasses import dataclass, field

import cocotb
from cocotb.triggers import Event
from cocotb.utils import get_sim_time

from virtio_pcie.spec.virtio import (VirtioBlkF, VirtioBlkReqType, VirtioBlkStatus,
                                     VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_SECTOR_SIZE,
                                     VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP)

from .codec import codec
from .host.blk import BlkRequest

__all__ = ["BlkWorkload", "WorkloadStats", "MIX_ALL", "MIX_RW"]

SECTOR = VIRTIO_BLK_SECTOR_SIZE
_OK = VirtioBlkStatus.OK.value
_IOERR = VirtioBlkStatus.IOERR.value
_UNSUPP = VirtioBlkStatus.UNSUPP.value
_RANGE = None   # codec(VirtioBlkDiscardWriteZeroes), made on first use

#: Request kinds and their weights: everything a Linux host sends, plus a few bad requests.
MIX_ALL = {"read": 30, "write": 30, "flush": 4, "get_id": 2, "discard": 5, "write_zeroes": 5,
           "write_zeroes_unmap": 4, "beyond_end": 2, "unknown_type": 1}
#: Reads and writes only.
MIX_RW = {"read": 1, "write": 1}

#: Request sizes in sectors and their weights (4 KiB the most common, as a page cache makes).
SIZES = {1: 2, 2: 1, 4: 2, 8: 8, 16: 3, 32: 2, 64: 1, 256: 1}

#: A request type no virtio-blk device implements (virtio 1.2 §5.2.6: UNSUPP).
UNKNOWN_TYPE = 0x7F


@dataclass
class WorkloadStats:
    requests:    int = 0
    bytes_read:  int = 0
    bytes_written: int = 0
    by_kind:     dict = field(default_factory=dict)
    by_queue:    dict = field(default_factory=dict)
    first_ns:    float = None
    last_ns:     float = None
    max_inflight: int = 0
    latency_ns_total: float = 0
    latency_ns_max: float = 0

    @property
    def bytes(self):
        return self.bytes_read + self.bytes_written

    @property
    def latency_ns_mean(self):
        return self.latency_ns_total / self.requests if self.requests else 0

    @property
    def elapsed_ns(self):
        if self.first_ns is None or self.last_ns is None:
            return 0
        return self.last_ns - self.first_ns


class BlkWorkload:
    """Random requests, at most ``qd`` in flight, verified against ``shadow``.

    Parameters
    ----------
    blk : VirtioBlkDriver
        A bound driver.
    shadow : ShadowDisk
        What the disk holds now; updated as requests complete.
    rng : random.Random
    region : (first sector, sector count), optional
        Where requests go (default: the whole disk as the driver sees it).
    mix : dict
        Request kind -> weight (see :data:`MIX_ALL`). Kinds whose feature was not negotiated
        (DISCARD, WRITE_ZEROES, FLUSH) are left out.
    sizes : dict
        Sectors -> weight.
    batch : float
        Probability that a request is queued without a doorbell (``bd->last`` false), to be
        kicked with the next ones (``commit_rqs``).
    serial : str or None
        The GET_ID answer to expect.
    """

    def __init__(self, blk, shadow, *, rng=None, region=None, mix=None, sizes=None, batch=0.25,
                 serial=None):
        self.blk = blk
        self.shadow = shadow
        self.rng = rng or random.Random(0)
        first, count = region if region is not None else (0, blk.capacity)
        if first < 0 or count <= 0 or first + count > min(blk.capacity, shadow.sectors):
            raise ValueError(f"region {first}+{count} is outside the disk "
                             f"({blk.capacity} sectors, shadow {shadow.sectors})")
        self.first, self.count = first, count
        mix = dict(MIX_ALL if mix is None else mix)
        vdev = blk.vdev
        for kind, feature in (("discard", VirtioBlkF.DISCARD),
                              ("write_zeroes", VirtioBlkF.WRITE_ZEROES),
                              ("write_zeroes_unmap", VirtioBlkF.WRITE_ZEROES),
                              ("flush", VirtioBlkF.FLUSH)):
            if not vdev.has_feature(feature):
                mix.pop(kind, None)
        if blk.read_only:
            for kind in ("write", "discard", "write_zeroes", "write_zeroes_unmap"):
                mix.pop(kind, None)
        self.kinds = list(mix)
        self.weights = [mix[k] for k in self.kinds]
        sizes = SIZES if sizes is None else sizes
        self.sizes = [s for s in sizes if s <= count]
        self.size_weights = [sizes[s] for s in self.sizes]
        self.batch = batch
        self.serial = serial
        self.stats = WorkloadStats()
        self.failures = []
        self._busy = []             # (first, end) sector ranges in flight
        self._inflight = 0
        self._changed = Event()
        self._uncommitted = set()

    # -- choosing requests ---------------------------------------------------------------------
    def _free_range(self, nsect):
        for _ in range(64):
            start = self.first + self.rng.randrange(0, self.count - nsect + 1)
            end = start + nsect
            if all(end <= lo or start >= hi for lo, hi in self._busy):
                return start
        return None

    def _limit(self, name, default):
        return self.blk.limits.get(name, default)

    def _make(self, kind):
        """(BlkRequest, expected status, range or None, check) for one request of ``kind``."""
        global _RANGE
        if _RANGE is None:
            from virtio_pcie.spec.virtio import VirtioBlkDiscardWriteZeroes
            _RANGE = codec(VirtioBlkDiscardWriteZeroes)
        rng = self.rng
        nsect = rng.choices(self.sizes, self.size_weights)[0]
        if kind in ("flush", "get_id", "unknown_type"):
            if kind == "flush":
                return BlkRequest(VirtioBlkReqType.FLUSH), _OK, None
            if kind == "get_id":
                return BlkRequest(VirtioBlkReqType.GET_ID, in_length=VIRTIO_BLK_ID_BYTES), \
                    _OK, None
            req = BlkRequest(VirtioBlkReqType.IN, 0, in_length=SECTOR)
            req.type = _RawType(UNKNOWN_TYPE)
            return req, _UNSUPP, None
        if kind == "beyond_end":
            # starts inside, ends past the end: the device must refuse it whole
            cap = self.blk.capacity
            start = cap - rng.randint(0, nsect - 1) if nsect > 1 else cap
            if rng.random() < 0.5:
                return BlkRequest(VirtioBlkReqType.IN, start, in_length=nsect * SECTOR), \
                    _IOERR, None
            return BlkRequest(VirtioBlkReqType.OUT, start,
                              payload=rng.randbytes(nsect * SECTOR)), _IOERR, None
        if kind in ("discard", "write_zeroes", "write_zeroes_unmap"):
            limit = self._limit("max_discard_sectors" if kind == "discard"
                                else "max_write_zeroes_sectors", nsect)
            nsect = min(nsect, limit)
        start = self._free_range(nsect)
        if start is None:
            return None
        span = (start, start + nsect)
        if kind == "read":
            return BlkRequest(VirtioBlkReqType.IN, start, in_length=nsect * SECTOR), _OK, span
        if kind == "write":
            return BlkRequest(VirtioBlkReqType.OUT, start,
                              payload=rng.randbytes(nsect * SECTOR)), _OK, span
        flags = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP if kind == "write_zeroes_unmap" else 0
        payload = _RANGE.pack(sector=start, num_sectors=nsect, flags=flags)
        rtype = VirtioBlkReqType.DISCARD if kind == "discard" else VirtioBlkReqType.WRITE_ZEROES
        return BlkRequest(rtype, 0, payload=payload), _OK, span

    # -- running -------------------------------------------------------------------------------
    async def run(self, requests, *, qd=16, queue=None):
        """Issue ``requests`` random requests with at most ``qd`` in flight; wait for all of
        them. ``queue`` pins them to one request queue (default: a random queue each)."""
        if qd < 1:
            raise ValueError(f"qd must be at least 1, not {qd!r}")
        for _ in range(requests):
            while self._inflight >= qd:
                await self._wait_change()
            while True:
                kind = self.rng.choices(self.kinds, self.weights)[0]
                made = self._make(kind)
                if made is not None:
                    break
                # every range we tried is busy: let something finish
                await self._wait_change()
            await self._issue(kind, made, queue)
        await self.drain()

    async def run_list(self, requests, *, qd=16, queue=None):
        """Issue the given requests in order, at most ``qd`` in flight; wait for all of them.
        ``requests`` are ``(kind, sector, count)`` with kind ``"read"`` or ``"write"`` (random
        data); a request waits while it overlaps one in flight."""
        if qd < 1:
            raise ValueError(f"qd must be at least 1, not {qd!r}")
        for kind, sector, count in requests:
            if kind not in ("read", "write"):
                raise ValueError(f"run_list takes reads and writes, not {kind!r}")
            if sector < 0 or count <= 0 or sector + count > self.shadow.sectors:
                raise ValueError(f"sectors {sector}+{count} are outside the disk")
            span = (sector, sector + count)
            while self._inflight >= qd or \
                    any(span[0] < hi and lo < span[1] for lo, hi in self._busy):
                await self._wait_change()
            if kind == "read":
                req = BlkRequest(VirtioBlkReqType.IN, sector, in_length=count * SECTOR)
            else:
                req = BlkRequest(VirtioBlkReqType.OUT, sector,
                                 payload=self.rng.randbytes(count * SECTOR))
            await self._issue(kind, (req, _OK, span), queue)
        await self.drain()

    async def _issue(self, kind, made, queue):
        req, expect, span = made
        q = queue if queue is not None else self.rng.randrange(len(self.blk.queues))
        expect_data = None
        if span is not None:
            self._busy.append(span)
            if kind == "read":
                expect_data = self.shadow.read(span[0], span[1] - span[0])
        last = self.rng.random() >= self.batch
        self._inflight += 1
        self.stats.max_inflight = max(self.stats.max_inflight, self._inflight)
        if self.stats.first_ns is None:
            self.stats.first_ns = get_sim_time("ns")
        await self.blk.submit(req, queue=q, last=last)
        if last:
            self._uncommitted.discard(q)
        else:
            self._uncommitted.add(q)
        cocotb.start_soon(self._complete(req, kind, expect, span, expect_data))

    async def _commit(self):
        for q in sorted(self._uncommitted):
            await self.blk.commit(q)
        self._uncommitted.clear()

    async def _wait_change(self):
        await self._commit()
        self._changed.clear()
        await self._changed.wait()

    async def drain(self):
        """Wait until every request issued has completed."""
        while self._inflight:
            await self._wait_change()
        await self._commit()

    async def _complete(self, req, kind, expect, span, expect_data):
        status = await req.wait()
        self.stats.last_ns = get_sim_time("ns")
        self.stats.requests += 1
        latency = req.completed_ns - req.submitted_ns
        self.stats.latency_ns_total += latency
        self.stats.latency_ns_max = max(self.stats.latency_ns_max, latency)
        self.stats.by_kind[kind] = self.stats.by_kind.get(kind, 0) + 1
        self.stats.by_queue[req.queue] = self.stats.by_queue.get(req.queue, 0) + 1
        what = f"{kind} #{self.stats.requests} (queue {req.queue}, sector {req.sector}" \
               f"{'' if span is None else f', sectors {span[0]}..{span[1] - 1}'})"
        if status != expect:
            self.failures.append(f"{what}: status {_status_name(status)}, expected "
                                 f"{_status_name(expect)}")
        elif status == _OK:
            if kind == "read":
                self.stats.bytes_read += len(req.data)
                if req.data != expect_data:
                    bad = _first_bad_sector(req.data, expect_data)
                    self.failures.append(f"{what}: data differs from the shadow disk from "
                                         f"sector {span[0] + bad}")
            elif kind == "write":
                self.stats.bytes_written += len(req.payload)
                self.shadow.write(span[0], req.payload)
            elif kind == "discard":
                self.shadow.discard(span[0], span[1] - span[0])
            elif kind.startswith("write_zeroes"):
                self.shadow.zero(span[0], span[1] - span[0])
            elif kind == "get_id" and self.serial is not None:
                got = req.data.split(b"\0", 1)[0].decode(errors="replace")
                if got != self.serial:
                    self.failures.append(f"{what}: serial {got!r}, expected {self.serial!r}")
        if span is not None:
            self._busy.remove(span)
        self._inflight -= 1
        self._changed.set()

    def verify_medium(self, medium):
        """Compare the whole medium (bytes-like, e.g. ``DiskImage.buffer``) with the shadow;
        returns a list of failure messages (empty: identical)."""
        bad = self.shadow.mismatches(medium)
        if bad:
            return [f"the medium differs from the shadow disk at sectors {bad}"]
        return []

    def check(self, medium=None):
        """Raise AssertionError listing every failure (and medium mismatch)."""
        failures = list(self.failures)
        if medium is not None:
            failures += self.verify_medium(medium)
        if failures:
            raise AssertionError(f"{len(failures)} failures:\n  " + "\n  ".join(failures[:20]))


class _RawType:
    """A request type that is not a :class:`VirtioBlkReqType` (to send unknown types)."""

    def __init__(self, value):
        self.value = value
        self.name = f"type {value:#x}"

    def __int__(self):
        return self.value


def _status_name(status):
    names = {s.value: s.name for s in VirtioBlkStatus}
    return names.get(status, repr(status))


def _first_bad_sector(got, expect):
    for i in range(0, min(len(got), len(expect)), SECTOR):
        if got[i:i + SECTOR] != expect[i:i + SECTOR]:
            return i // SECTOR
    return min(len(got), len(expect)) // SECTOR
