# SPDX-License-Identifier: BSD-2-Clause
"""The virtio-blk workload of the fuzzer: requests of every shape, checked against a shadow disk.

Requests are built byte by byte (a 16-byte header, the data, a status byte; virtio 1.2 §5.2.6)
and cut into buffers at random places, so header, data and status share or split descriptors
in any way the spec allows, with zero-length buffers in between; some are invalid on purpose
(unknown types, data that is not whole sectors, past the end of the disk, no status byte, a
header cut short, writable lengths of gigabytes). Each completed request is judged:

* the status byte must be OK, IOERR or UNSUPP; a request that cannot be valid must not be OK;
* an IN reported OK must return what the shadow disk says (for sectors whose content is known);
* an OUT / WRITE_ZEROES reported OK updates the shadow; one that failed, or was abandoned by a
  reset, makes its sectors unknown (it may have been cut short).

At the end of every run the whole medium is compared with the shadow (known sectors): a write
that landed although it was reported failed, or landed somewhere else, is a corruption.
"""

import dataclasses
import time

from virtio_pcie.spec.virtio import (VirtioBlkDiscardWriteZeroes, VirtioBlkF, VirtioBlkOutHdr,
                                     VirtioBlkReqType, VirtioBlkStatus, VirtioF,
                                     VIRTIO_BLK_ID_BYTES)

from ..codec import codec
from ..host import BlkRequest, IrqMode, VirtioBlkDriver
from ..host.errors import LinuxBug, LinuxError
from ..models.disk_image import ShadowDisk
from .driver import RunFailure
from .rings import Segment
from .workload import Workload

__all__ = ["BlkWorkload"]

SECTOR = 512
_HDR = codec(VirtioBlkOutHdr)
_RANGE = codec(VirtioBlkDiscardWriteZeroes)
_T = VirtioBlkReqType
_OK, _IOERR, _UNSUPP = (s.value for s in (VirtioBlkStatus.OK, VirtioBlkStatus.IOERR,
                                          VirtioBlkStatus.UNSUPP))


@dataclasses.dataclass
class _Req:
    type: int
    sector: int
    count: int                  # sectors the request covers (0: none)
    payload: bytes              # device-readable data after the header
    in_len: int                 # device-writable data bytes before the status byte
    status_addr: int | None     # where the status byte goes (None: no writable byte)
    data_segs: list             # writable Segments holding the data
    expect: str                 # "ok", "error" or "any"
    writes: bool                # may change the medium
    expected_done: bool = True  # the device must complete it (set False when unsure)
    kind: str = ""


class BlkWorkload(Workload):
    def __init__(self, ctx):
        self.ctx = ctx
        self.serial = b"virtio-pcie-blk"
        self.errors_reported = 0

    async def start(self):
        self.capacity = self.ctx.params["capacity"]
        self.image = self.ctx.tb.image

    # -- per run --------------------------------------------------------------------------------
    def begin_run(self, rng, result):
        self.rng = rng
        self.result = result
        self.image.buffer[:] = bytes(self.image.size)
        self.shadow = ShadowDisk(bytes(self.image.size))
        self.busy = {}              # sector -> count of requests in flight on it
        self.limbo = []             # requests of deactivated queues: may still complete
        self.errors_reported = 0
        self.stats = {"requests": 0, "ok": 0, "ioerr": 0, "unsupp": 0, "verified_reads": 0}

    def end_run(self, result):
        result.errors_reported += self.errors_reported
        bad = self.shadow.mismatches(self.image.read(0, self.image.size))
        for sector in bad:
            result.corruptions.append(f"medium sector {sector} differs from the shadow disk")
        result.stats.update(self.stats)

    def usable_features(self, offered):
        return offered

    def required_features(self, offered):
        return 0

    def queues_wanted(self, driver):
        return list(range(self.ctx.queue_count))

    def live(self, driver):
        pass

    # -- requests -----------------------------------------------------------------------------
    def _free_range(self, count):
        for _ in range(8):
            sector = self.rng.randrange(0, self.capacity - count + 1)
            if not any(s in self.busy for s in range(sector, sector + count)):
                return sector
        return None

    def _hold(self, req):
        if req.count and req.sector + req.count <= self.capacity:
            for s in range(req.sector, req.sector + req.count):
                self.busy[s] = self.busy.get(s, 0) + 1

    def _release(self, req):
        if req.count and req.sector + req.count <= self.capacity:
            for s in range(req.sector, req.sector + req.count):
                n = self.busy.get(s, 0) - 1
                if n > 0:
                    self.busy[s] = n
                else:
                    self.busy.pop(s, None)

    def _make(self, indirect_ok):
        """(readable bytes, writable byte count, _Req fields) of a random request."""
        rng = self.rng
        kind = rng.choices(
            ["in", "out", "flush", "get_id", "discard", "wz", "unknown", "short_hdr", "no_status",
             "odd_len", "past_end", "huge"],
            [30, 30, 4, 4, 3, 4, 2, 2, 2, 3, 3, 2])[0]
        count = rng.choice([1, 1, 2, 4, 8, 8, 16, 32])
        sector = self._free_range(count)
        if sector is None:
            return None
        typ, payload, in_len, expect, writes = _T.IN.value, b"", 0, "ok", False
        if kind == "in":
            in_len = count * SECTOR
        elif kind == "out":
            typ, payload, writes = _T.OUT.value, rng.randbytes(count * SECTOR), True
        elif kind == "flush":
            typ, count = _T.FLUSH.value, 0
        elif kind == "get_id":
            typ, count, in_len = _T.GET_ID.value, 0, rng.choice([VIRTIO_BLK_ID_BYTES, 8, 1])
        elif kind in ("discard", "wz"):
            typ = _T.DISCARD.value if kind == "discard" else _T.WRITE_ZEROES.value
            flags = rng.choice([0, 0, 1, 2])
            payload = _RANGE.pack(sector=sector, num_sectors=count, flags=flags)
            feature = VirtioBlkF.DISCARD if kind == "discard" else VirtioBlkF.WRITE_ZEROES
            if not self.driver.has(feature) or (kind == "discard" and flags) or flags & ~1:
                expect = "error"
            writes = kind == "wz" and expect != "error"
        elif kind == "unknown":
            typ, count, expect = rng.choice([2, 3, 5, 10, 14, 0xFFFF, rng.getrandbits(32)]), 0, \
                "error"
            if typ in (_T.IN.value, _T.OUT.value):
                typ = 3
        elif kind == "short_hdr":
            in_len, expect = count * SECTOR, "error"
        elif kind == "no_status":
            typ, payload, writes, expect = _T.OUT.value, rng.randbytes(count * SECTOR), True, \
                "any"
        elif kind == "odd_len":
            in_len, expect = count * SECTOR + rng.choice([-1, 1, 100, -511]), "error"
            in_len = max(in_len, 1)
        elif kind == "past_end":
            sector, expect = self.capacity - rng.randint(0, count - 1 if count > 1 else 0), \
                "error"
            in_len = count * SECTOR
            if rng.random() < 0.5:
                typ, payload, in_len = _T.OUT.value, rng.randbytes(count * SECTOR), 0
            if sector + count <= self.capacity:
                sector = self.capacity
        elif kind == "huge":
            in_len, expect = rng.choice([1 << 31, 0xFFFF_FF00, 1 << 25]), "any"
        hdr = _HDR.pack(type=typ, reserved=rng.getrandbits(32) if rng.random() < 0.2 else 0,
                        sector=sector)
        if kind == "short_hdr":
            hdr = hdr[:rng.randrange(0, 16)]
        readable = hdr + payload
        writable = 0 if kind == "no_status" else in_len + 1
        req = _Req(typ, sector, count, payload, in_len, None, [], expect, writes, kind=kind)
        return kind, readable, writable, req

    def _segments(self, data_or_len, writable):
        """Cut a readable byte string, or a writable length, into buffers (some empty)."""
        rng, mem = self.rng, self.ctx.memory
        total = len(data_or_len) if not writable else data_or_len
        if total == 0:
            return []
        n = min(total, rng.choice([1, 1, 1, 2, 3, 4, 6, 9]))
        cuts = sorted(rng.sample(range(1, total), n - 1)) if n > 1 and total > 1 else []
        bounds = [0] + cuts + [total]
        segs = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            length = b - a
            if rng.random() < 0.08:
                segs.append(Segment(mem.alloc_addr(1, 8), 0, writable))
            if length > 1 << 20:
                # A huge writable buffer: only its start is backed (the rest is outside memory).
                addr = mem.alloc_addr(4096, 4096)
            else:
                addr = mem.alloc_addr(length, rng.choice([1, 2, 4, 8, 64, 4096]))
            if not writable:
                mem.write(addr, data_or_len[a:b])
            else:
                mem.write(addr, bytes([0xA5]) * min(length, 4096))
            segs.append(Segment(addr, length, writable))
        return segs

    async def submit(self, driver, n):
        self.driver = driver
        queues = [q for q in driver.queues.values() if not q.broken]
        if not queues:
            return
        indirect_ok = driver.has(VirtioF.INDIRECT_DESC)
        touched = {}                # queues in first-use order (a set would follow id())
        for _ in range(n):
            q = self.rng.choice(queues)
            made = self._make(indirect_ok)
            if made is None:
                break
            kind, readable, writable, req = made
            rsegs = self._segments(readable, False)
            wsegs = self._segments(writable, True)
            segs = rsegs + wsegs
            if not segs:
                continue
            if len(segs) > q.size and not indirect_ok:
                continue
            if wsegs:
                last = next(s for s in reversed(wsegs) if s.len)
                req.status_addr = last.addr + last.len - 1
                data, left = [], req.in_len
                for s in wsegs:
                    take = min(s.len, left)
                    if take:
                        data.append(Segment(s.addr, take, True))
                    left -= take
                req.data_segs = data
            chain = q.add(segs, req, indirect_ok=indirect_ok,
                          shape="indirect" if len(segs) > q.size else None)
            if chain is None:
                break
            self._hold(req)
            self.stats["requests"] += 1
            self.ctx.log.info("  q%d head %d: %s sector %d count %d, %d descs %s: %s", q.index,
                              chain.head, kind, req.sector, req.count, len(chain.descs),
                              chain.descs, [(hex(s.addr), s.len, int(s.write)) for s in segs])
            touched[q.index] = q
        for q in touched.values():
            q.publish()
            if self.rng.random() < 0.9:
                await driver.kick(q)

    async def reap(self, driver):
        for q in list(driver.queues.values()):
            for chain, length, problem in q.reap():
                if problem:
                    self.result.corruptions.append(problem)
                    continue
                if chain is not None:       # (None: a raw head's chain, nothing to check)
                    self._complete(chain.token, length)
        for q in list(self.limbo):
            for chain, length, problem in q.reap():
                if problem:
                    self.result.corruptions.append(f"deactivated {problem}")
                    continue
                if chain is not None:
                    self._complete(chain.token, length)

    def _read_status(self, req):
        mem = self.ctx.memory
        if req.status_addr is None or not mem.contains(req.status_addr):
            return None
        return mem.read(req.status_addr, 1)[0]

    def _complete(self, req, length):
        self._release(req)
        status = self._read_status(req)
        self.ctx.log.info("  done: %s sector %d len %d status %s", req.kind, req.sector, length,
                          status)
        if status is None:
            if req.writes:
                self._forget(req)
            return
        if status not in (_OK, _IOERR, _UNSUPP):
            self.result.corruptions.append(f"request type {req.type} at sector {req.sector}: "
                                           f"status byte {status:#x}")
            self._forget(req)
            return
        if status != _OK:
            self.stats["ioerr" if status == _IOERR else "unsupp"] += 1
            self.errors_reported += 1
            if req.writes:
                self._forget(req)
            return
        self.stats["ok"] += 1
        if req.expect == "error":
            self.result.protocol.append(f"request type {req.type} at sector {req.sector} "
                                        f"(count {req.count}, in {req.in_len}) must fail but "
                                        f"was reported OK")
            if req.writes:
                self._forget(req)
            return
        mem = self.ctx.memory
        if req.type == _T.IN.value and req.in_len:
            got = b"".join(mem.read(s.addr, s.len) for s in req.data_segs
                           if mem.contains(s.addr, s.len))
            if len(got) != req.in_len or req.in_len % SECTOR:
                return
            if self.shadow.known(req.sector, req.count):
                self.stats["verified_reads"] += 1
                expect = self.shadow.read(req.sector, req.count)
                if got != expect:
                    bad = next(i for i in range(len(got)) if got[i] != expect[i])
                    self.result.corruptions.append(
                        f"IN of {req.count} sectors at {req.sector} reported OK returned wrong "
                        f"data (first difference at byte {bad})")
        elif req.type == _T.OUT.value and req.writes:
            self.shadow.write(req.sector, req.payload)
        elif req.type == _T.WRITE_ZEROES.value and req.writes:
            self.shadow.zero(req.sector, req.count)
        elif req.type == _T.GET_ID.value and req.in_len:
            got = b"".join(mem.read(s.addr, s.len) for s in req.data_segs)
            want = (self.serial + bytes(VIRTIO_BLK_ID_BYTES))[:len(got)]
            if got != want:
                self.result.corruptions.append(f"GET_ID returned {got!r}")

    def _forget(self, req):
        if req.count and req.sector + req.count <= self.capacity:
            self.shadow.forget(req.sector, req.count)

    def abandoned(self, q, chains):
        """A device reset took these chains: their writes may or may not have landed."""
        for chain in chains:
            req = chain.token
            self._release(req)
            if req.writes:
                self._forget(req)
        if q in self.limbo:
            self.limbo.remove(q)

    def disabled(self, q):
        """A legacy driver deactivated queue ``q`` with requests in it: they may complete
        (in its used ring), or not."""
        for chain in q.outstanding.values():
            chain.token.expected_done = False
            if chain.token.writes:
                self._forget(chain.token)
        self.limbo.append(q)

    owed_name = "valid requests"

    def owed(self, driver):
        return [c for q in driver.queues.values() if not q.broken
                for c in q.outstanding.values() if c.token.expected_done]

    async def hang_detail(self, driver, waiting):
        kinds = sorted({(c.token.kind, len(c.segments)) for c in waiting})[:6]
        c = self.ctx.tb.counters()
        return (f"features {driver.features:#x}; kinds {kinds}; "
                f"{await driver.describe_queues()}; engine { {k: v for k, v in c.items() if v} }")

    # -- recovery ---------------------------------------------------------------------------------
    async def recover(self, rng, result):
        """A clean driver binds (Linux's probe path) and does verified I/O."""
        ctx = self.ctx
        try:
            # (the device was reset just before, by FuzzContext._recover: no second reset)
            drv = VirtioBlkDriver(scan=False, irq_mode=rng.choice([None, None, IrqMode.INTX]))
            vdev = ctx.new_vdev()
            await vdev.register()
            await vdev.probe_driver(drv)
            result.stats["bound_s"] = time.perf_counter()
            for _ in range(2):
                # Small: the hostile part moves the large requests; this shows the device works
                # (every data TLP costs the Python models about a millisecond).
                count = rng.choice([1, 2, 8])
                sector = rng.randrange(0, self.capacity - count + 1)
                data = rng.randbytes(count * SECTOR)
                await drv.write(sector, data)
                self.shadow.write(sector, data)
                got = await drv.read(sector, count)
                if got != data:
                    result.corruptions.append(f"recovery: read of {count} sectors at {sector} "
                                              f"differs from what was written")
            req = await drv.submit(BlkRequest(_T.IN.value, rng.randrange(self.capacity),
                                              in_length=SECTOR))
            await req.wait()
            result.stats["io_done_s"] = time.perf_counter()
            await drv.remove(vdev)
        except (LinuxBug, LinuxError) as e:
            raise RunFailure("reset" if "device_status" in str(e) else "recovery",
                             f"clean driver: {e}") from None
