# SPDX-License-Identifier: BSD-2-Clause
"""A RAM disk behind the Python virtio-pci function (virtio 1.2 §5.2, "Block Device").

Each request queue has a worker that pops a chain, reads the 16-byte header (which may be split
over several descriptors: framing independence), carries the request out on a ``bytearray`` and
completes it: data, then the status byte as the last byte of the last writable buffer, then the
used entry with the number of bytes written. Rules followed (virtio-checklist §2.1): IN/OUT must
be whole sectors inside the capacity (else IOERR), writes to a read-only disk fail with IOERR and
change nothing, DISCARD/WRITE_ZEROES check their flags (UNSUPP), GET_ID returns the 20-byte
serial, unknown types get UNSUPP; a chain without a 16-byte readable header or a writable status
byte is a ring error ("virtio-blk missing headers").
"""

import cocotb
from cocotb.triggers import Timer

from virtio_pcie.spec.virtio import (
    VirtioBlkConfig, VirtioBlkDiscardWriteZeroes, VirtioBlkF, VirtioBlkOutHdr, VirtioBlkReqType,
    VirtioBlkStatus, VirtioDeviceId, VirtioF, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_SECTOR_SIZE,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, feature_mask,
)

from ...codec import codec

__all__ = ["RamDisk"]

_HDR = codec(VirtioBlkOutHdr)
_CFG = codec(VirtioBlkConfig)
_RANGE = codec(VirtioBlkDiscardWriteZeroes)
_OK, _IOERR, _UNSUPP = (VirtioBlkStatus.OK.value, VirtioBlkStatus.IOERR.value,
                        VirtioBlkStatus.UNSUPP.value)


class RamDisk:
    """A virtio-blk back-end on a ``bytearray``.

    Parameters
    ----------
    sectors : int
        Capacity in 512-byte sectors.
    num_queues : int
        Request queues (VIRTIO_BLK_F_MQ is offered when more than one).
    queue_size : int
    seg_max, size_max, blk_size : int or None
        Offered with their feature bits when not None.
    read_only, flush, discard, write_zeroes, event_idx, indirect : bool
    serial : str
    latency_ns : int
        Time each request takes before it completes.
    """

    name = "blk"
    device_type = VirtioDeviceId.BLOCK

    def __init__(self, *, sectors=2048, num_queues=1, queue_size=128, seg_max=126,
                 size_max=None, blk_size=None, read_only=False, flush=True, discard=True,
                 write_zeroes=True, event_idx=True, indirect=True, serial="py-virtio-blk",
                 latency_ns=0, extra_features=0):
        self.sectors = sectors
        self.data = bytearray(sectors * VIRTIO_BLK_SECTOR_SIZE)
        self.num_queues = num_queues
        self.queue_sizes = [queue_size] * num_queues
        self.seg_max = seg_max
        self.size_max = size_max
        self.blk_size = blk_size
        self.read_only = read_only
        self.flush = flush
        self.discard = discard
        self.write_zeroes = write_zeroes
        self.event_idx = event_idx
        self.indirect = indirect
        self.serial = serial.encode()[:VIRTIO_BLK_ID_BYTES]
        self.latency_ns = latency_ns
        self.extra_features = extra_features
        self.writeback = 1
        self.requests = []            # (queue, type, sector, status) of every request
        self.fn = None
        self._workers = []

    def offered_features(self):
        f = feature_mask(VirtioF.VERSION_1, VirtioF.ACCESS_PLATFORM, VirtioF.ORDER_PLATFORM,
                         VirtioF.ANY_LAYOUT)
        if self.event_idx:
            f |= feature_mask(VirtioF.EVENT_IDX)
        if self.indirect:
            f |= feature_mask(VirtioF.INDIRECT_DESC)
        for cond, bit in ((self.seg_max is not None, VirtioBlkF.SEG_MAX),
                          (self.size_max is not None, VirtioBlkF.SIZE_MAX),
                          (self.blk_size is not None, VirtioBlkF.BLK_SIZE),
                          (self.read_only, VirtioBlkF.RO), (self.flush, VirtioBlkF.FLUSH),
                          (self.num_queues > 1, VirtioBlkF.MQ),
                          (self.discard, VirtioBlkF.DISCARD),
                          (self.write_zeroes, VirtioBlkF.WRITE_ZEROES)):
            if cond:
                f |= feature_mask(bit)
        return f | self.extra_features

    def config_bytes(self):
        limit = min(self.sectors, 0xFFFFFFFF)      # 32-bit sector-count limits
        values = {"capacity": self.sectors, "size_max": self.size_max or 0,
                  "seg_max": self.seg_max or 0, "blk_size": self.blk_size or 0,
                  "writeback": self.writeback, "num_queues": self.num_queues,
                  "max_discard_sectors": limit, "max_discard_seg": 1,
                  "discard_sector_alignment": 1, "max_write_zeroes_sectors": limit,
                  "max_write_zeroes_seg": 1, "write_zeroes_may_unmap": 1}
        return _CFG.pack(**values)

    def config_write(self, offset, data):
        # only `writeback` is writable (with CONFIG_WCE, which is not offered here)
        if offset == _CFG.offset("writeback") and data:
            self.writeback = data[0] & 1

    def resize(self, sectors):
        """Change the capacity and raise a configuration interrupt (virtio-checklist B5)."""
        self.sectors = sectors
        self.data = self.data[:sectors * VIRTIO_BLK_SECTOR_SIZE].ljust(
            sectors * VIRTIO_BLK_SECTOR_SIZE, b"\0")
        self.fn.config_changed()

    # -- life cycle -------------------------------------------------------------------------------
    def attach(self, fn):
        self.fn = fn
        self._workers = [cocotb.start_soon(self._worker(q)) for q in fn.queues]

    def reset(self):
        pass      # the queues' generation changes; workers drop what was in flight

    def driver_ok(self):
        pass

    # -- requests ---------------------------------------------------------------------------------
    async def _worker(self, q):
        while True:
            chain = await q.pop()
            if chain is None:
                continue
            gen = q.generation
            used = await self._handle(q, chain)
            if self.latency_ns:
                await Timer(self.latency_ns, "ns")
            if used is not None and gen == q.generation:
                await q.push_used([(chain.head, used)])

    async def _handle(self, q, chain):
        if chain.readable_len < _HDR.size or chain.writable_len < 1:
            self.fn.device_error("virtio-blk missing headers")
            return None
        readable = await chain.read()
        hdr = _HDR.unpack(readable[:_HDR.size])
        payload = readable[_HDR.size:]
        data_in_len = chain.writable_len - 1
        typ, sector = hdr["type"], hdr["sector"]
        status, reply = self._execute(typ, sector, payload, data_in_len)
        written = 0
        if reply:
            written = await chain.write(reply)
        await chain.write(bytes([status]), offset=chain.writable_len - 1)
        self.requests.append((q.index, typ, sector, status))
        return written + 1

    def _execute(self, typ, sector, payload, data_in_len):
        T = VirtioBlkReqType
        sz = VIRTIO_BLK_SECTOR_SIZE
        if typ == T.IN.value:
            if data_in_len % sz or sector + data_in_len // sz > self.sectors:
                return _IOERR, b""
            return _OK, bytes(self.data[sector * sz:sector * sz + data_in_len])
        if typ == T.OUT.value:
            if self.read_only:
                return _IOERR, b""
            if len(payload) % sz or sector + len(payload) // sz > self.sectors:
                return _IOERR, b""
            self.data[sector * sz:sector * sz + len(payload)] = payload
            return _OK, b""
        if typ == T.FLUSH.value:
            return (_OK if self.flush else _UNSUPP), b""
        if typ == T.GET_ID.value:
            if data_in_len < VIRTIO_BLK_ID_BYTES:
                return _IOERR, b""
            return _OK, self.serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")
        if typ in (T.DISCARD.value, T.WRITE_ZEROES.value):
            enabled = self.discard if typ == T.DISCARD.value else self.write_zeroes
            if not enabled or self.read_only:
                return (_UNSUPP if not enabled else _IOERR), b""
            if len(payload) % _RANGE.size or not payload:
                return _IOERR, b""
            for i in range(0, len(payload), _RANGE.size):
                r = _RANGE.unpack(payload[i:i + _RANGE.size])
                unmap = r["flags"] & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
                if r["flags"] & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP:
                    return _UNSUPP, b""
                if typ == T.DISCARD.value and unmap:
                    return _UNSUPP, b""
                if r["sector"] + r["num_sectors"] > self.sectors:
                    return _IOERR, b""
                start = r["sector"] * sz
                self.data[start:start + r["num_sectors"] * sz] = bytes(r["num_sectors"] * sz)
            return _OK, b""
        return _UNSUPP, b""
