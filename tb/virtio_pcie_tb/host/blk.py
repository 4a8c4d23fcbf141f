# SPDX-License-Identifier: BSD-2-Clause
"""virtio-blk, driver side, as Linux's ``drivers/block/virtio_blk.c`` runs it.

Probe (``virtblk_probe``): config access required; ``seg_max`` (1 if not offered or 0); the
request queues (``num_queues`` if MQ — "MQ advertised but zero queues reported" fails — limited to
``num_request_queues`` or the CPU count; poll queues get no callback); queue depth = free
descriptors, halved without INDIRECT_DESC; the limits (``size_max``, ``blk_size`` — a block size
the block layer refuses fails the probe —, topology, discard, write-zeroes and secure-erase
limits, the latter refusing zeros); the cache mode (``writeback`` if CONFIG_WCE, else FLUSH);
RO; the capacity (64 bits, generation loop); DRIVER_OK; then, as the block layer and udev do right
after, a partition-table read of the first 4 KiB and a GET_ID.

Requests (``virtio_queue_rq`` / ``virtblk_add_req``): a 16-byte :data:`VirtioBlkOutHdr`
(device-readable), the data scatter-gather list (readable if ``type & VIRTIO_BLK_T_OUT``, else
writable — a quirk that makes Linux send a SECURE_ERASE payload as writable, reproduced here), a
1-byte status (writable). A full ring makes the request wait (``BLK_STS_DEV_RESOURCE``) after a
kick. Completions (``virtblk_done``): ``disable_cb``, ``get_buf`` until empty, repeat while
``enable_cb`` reports more.

The asynchronous API: :meth:`VirtioBlkDriver.submit` returns a :class:`BlkRequest` whose
:meth:`~BlkRequest.wait` gives the status; :meth:`read`, :meth:`write`, :meth:`flush`,
:meth:`get_id`, :meth:`discard`, :meth:`write_zeroes` are the usual one-liners.
"""

from cocotb.triggers import Event, Timer
from cocotb.utils import get_sim_time

from virtio_pcie.spec.virtio import (
    VirtioBlkConfig, VirtioBlkDiscardWriteZeroes, VirtioBlkF, VirtioBlkOutHdr, VirtioBlkReqType,
    VirtioBlkStatus, VirtioDeviceId, VirtioF, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_SECTOR_SIZE,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
)

from ..codec import codec
from .core import VirtioDriver
from .errors import LinuxError, ProbeError
from .transport import VqInfo
from .virtqueue import Sg

__all__ = ["BlkRequest", "VirtioBlkDriver"]

_HDR = codec(VirtioBlkOutHdr)
_RANGE = codec(VirtioBlkDiscardWriteZeroes)
_STATUS_BYTES = 1

#: VIRTIO_BLK_MAX_SG_ELEMS: sg_elems is capped at this minus 2 (header and status)
VIRTIO_BLK_MAX_SG_ELEMS = 32768
#: MAX_DISCARD_SEGMENTS of the block layer
MAX_DISCARD_SEGMENTS = 256


class BlkRequest:
    """One virtio-blk request and, once completed, its outcome.

    Attributes
    ----------
    status : int or None
        The status byte the device wrote (:class:`VirtioBlkStatus` values).
    data : bytes
        For IN and GET_ID: what the device wrote into the data buffers.
    used_len : int
        The ``len`` of the used-ring element.
    """

    def __init__(self, type, sector=0, *, payload=b"", in_length=0):
        self.type = VirtioBlkReqType(type)
        self.sector = sector
        self.payload = bytes(payload)      # device-readable data
        self.in_length = in_length         # bytes of device-writable data
        self.status = None
        self.data = b""
        self.used_len = None
        self.queue = None
        self.submitted_ns = None
        self.completed_ns = None
        self._done = Event()
        self._buffers = []

    @property
    def done(self):
        return self._done.is_set()

    @property
    def ok(self):
        return self.status == VirtioBlkStatus.OK.value

    @property
    def latency_ns(self):
        return self.completed_ns - self.submitted_ns

    async def wait(self):
        """Wait for completion; returns the status byte."""
        await self._done.wait()
        return self.status

    def __repr__(self):
        return (f"BlkRequest({self.type.name}, sector={self.sector}, status={self.status}, "
                f"queue={self.queue})")


class _BlkQueue:
    def __init__(self, vq):
        self.vq = vq
        self.space = Event()
        self.inflight = 0


class VirtioBlkDriver(VirtioDriver):
    """The Linux virtio-blk driver.

    Parameters
    ----------
    irq_mode : IrqMode, optional
        Force one step of the interrupt ladder.
    num_cpus : int
        ``nr_cpu_ids`` / possible CPUs: caps the number of request queues.
    num_request_queues : int
        The ``num_request_queues`` module parameter (0 = no limit).
    poll_queues : int
        The ``poll_queues`` module parameter: queues without interrupts.
    sg_layout : "pages" or "contiguous"
        How request data is split into scatter-gather elements: one per 4 KiB page (page-cache
        I/O) or one contiguous element per ``size_max``.
    scan : bool
        After DRIVER_OK, read the first 4 KiB (partition scan) and the serial (udev), as a
        freshly booted Linux does.
    """

    name = "virtio_blk"
    device_id = VirtioDeviceId.BLOCK
    feature_table = (
        VirtioBlkF.SEG_MAX, VirtioBlkF.SIZE_MAX, VirtioBlkF.GEOMETRY, VirtioBlkF.RO,
        VirtioBlkF.BLK_SIZE, VirtioBlkF.FLUSH, VirtioBlkF.TOPOLOGY, VirtioBlkF.CONFIG_WCE,
        VirtioBlkF.MQ, VirtioBlkF.DISCARD, VirtioBlkF.WRITE_ZEROES, VirtioBlkF.SECURE_ERASE,
    )
    feature_table_legacy = feature_table

    def __init__(self, *, irq_mode=None, num_cpus=4, num_request_queues=0, poll_queues=0,
                 sg_layout="pages", scan=True):
        super().__init__()
        if sg_layout not in ("pages", "contiguous"):
            raise ValueError(f"sg_layout must be 'pages' or 'contiguous', not {sg_layout!r}")
        self.irq_mode = irq_mode
        self.num_cpus = num_cpus
        self.num_request_queues = num_request_queues
        self.poll_queues = poll_queues
        self.sg_layout = sg_layout
        self.scan = scan
        self.queues = []
        self.capacity = 0
        self.sg_elems = 1
        self.queue_depth = 0
        self.limits = {}
        self.writeback = False
        self.read_only = False
        self.serial = None
        self.completed = 0
        self._next_queue = 0

    # -- probe -------------------------------------------------------------------------------------
    async def probe(self, vdev):
        if not vdev.transport.has_config:
            vdev.dmesg("error", "virtblk_probe failure: config access disabled")
            raise ProbeError("EINVAL", "virtblk_probe failure: config access disabled")
        # We need to know how many segments before we allocate.
        sg_elems = await vdev.cread_feature(VirtioBlkF.SEG_MAX, VirtioBlkConfig, "seg_max")
        # We need at least one SG element, whatever they say.
        if not sg_elems:
            sg_elems = 1
        # Prevent integer overflows and honor max vq size
        self.sg_elems = min(sg_elems, VIRTIO_BLK_MAX_SG_ELEMS - 2)
        await self._init_vq(vdev)
        self.queue_depth = self.queues[0].vq.num_free
        # ... but we need to leave room for the rest of the request without indirect.
        if not vdev.has_feature(VirtioF.INDIRECT_DESC):
            self.queue_depth //= 2
        await self._read_limits(vdev)
        writeback = await vdev.cread_feature(VirtioBlkF.CONFIG_WCE, VirtioBlkConfig, "writeback")
        self.writeback = bool(writeback) if writeback is not None else \
            vdev.has_feature(VirtioBlkF.FLUSH)
        self.read_only = vdev.has_feature(VirtioBlkF.RO)
        await self._update_capacity(vdev)
        await vdev.device_ready()
        if self.scan:
            if self.capacity:
                await self.read(0, min(8, self.capacity))
            await self.get_id()

    async def _init_vq(self, vdev):
        num_vqs = await vdev.cread_feature(VirtioBlkF.MQ, VirtioBlkConfig, "num_queues")
        if num_vqs is None:
            num_vqs = 1
        elif not num_vqs:
            vdev.dmesg("error", "MQ advertised but zero queues reported")
            raise ProbeError("EINVAL", "MQ advertised but zero queues reported")
        limit = self.num_request_queues or self.num_cpus
        num_vqs = min(limit, self.num_cpus, num_vqs)
        num_poll_vqs = min(self.poll_queues, num_vqs - 1)
        infos = []
        for i in range(num_vqs - num_poll_vqs):
            infos.append(VqInfo(f"req.{i}", self._virtblk_done))
        for i in range(num_vqs - num_poll_vqs, num_vqs):
            infos.append(VqInfo(f"req_poll.{i}", None))
        vqs = await vdev.find_vqs(infos, irq_mode=self.irq_mode)
        self.queues = [_BlkQueue(vq) for vq in vqs]

    async def _read_limits(self, vdev):
        lim = {"max_segments": self.sg_elems}
        size_max = await vdev.cread_feature(VirtioBlkF.SIZE_MAX, VirtioBlkConfig, "size_max")
        lim["max_segment_size"] = size_max if size_max else 1 << 32
        blk_size = await vdev.cread_feature(VirtioBlkF.BLK_SIZE, VirtioBlkConfig, "blk_size")
        if blk_size is not None:
            page = vdev.profile.page_size
            if blk_size < VIRTIO_BLK_SECTOR_SIZE or blk_size > page or blk_size & (blk_size - 1):
                vdev.dmesg("error", f"virtio_blk: invalid block size: {blk_size:#x}")
                raise ProbeError("EINVAL", f"virtio_blk: invalid block size: {blk_size:#x}")
            lim["logical_block_size"] = blk_size
        else:
            lim["logical_block_size"] = VIRTIO_BLK_SECTOR_SIZE
        if vdev.has_feature(VirtioBlkF.TOPOLOGY):
            for name in ("physical_block_exp", "alignment_offset", "min_io_size", "opt_io_size"):
                lim[name] = await vdev.cread(VirtioBlkConfig, f"topology.{name}")
        if vdev.has_feature(VirtioBlkF.DISCARD):
            lim["discard_sector_alignment"] = await vdev.cread(
                VirtioBlkConfig, "discard_sector_alignment")
            v = await vdev.cread(VirtioBlkConfig, "max_discard_sectors")
            lim["max_discard_sectors"] = v or 0xFFFFFFFF
            v = await vdev.cread(VirtioBlkConfig, "max_discard_seg")
            lim["max_discard_segments"] = min(v, MAX_DISCARD_SEGMENTS) if v else \
                min(self.sg_elems, MAX_DISCARD_SEGMENTS)
        if vdev.has_feature(VirtioBlkF.WRITE_ZEROES):
            v = await vdev.cread(VirtioBlkConfig, "max_write_zeroes_sectors")
            lim["max_write_zeroes_sectors"] = v or 0xFFFFFFFF
        if vdev.has_feature(VirtioBlkF.SECURE_ERASE):
            for name in ("secure_erase_sector_alignment", "max_secure_erase_sectors",
                         "max_secure_erase_seg"):
                v = await vdev.cread(VirtioBlkConfig, name)
                if not v:
                    vdev.dmesg("error", f"virtio_blk: {name} can't be 0")
                    raise ProbeError("EINVAL", f"virtio_blk: {name} can't be 0")
                lim[name] = v
        self.limits = lim

    async def _update_capacity(self, vdev):
        """``virtblk_update_capacity()``: the host must always specify the capacity."""
        self.capacity = await vdev.cread(VirtioBlkConfig, "capacity")

    async def config_changed(self, vdev):
        """``virtblk_config_changed_work``: the capacity may have changed."""
        await self._update_capacity(vdev)

    # -- completions -------------------------------------------------------------------------------
    async def _virtblk_done(self, vq):
        queue = next(q for q in self.queues if q.vq is vq)
        req_done = False
        while True:
            vq.disable_cb()
            while (got := vq.get_buf()) is not None:
                req, length = got
                self._complete(req, length)
                queue.inflight -= 1
                req_done = True
            if vq.enable_cb():
                break
        # In case queue is stopped waiting for more buffers.
        if req_done:
            queue.space.set()

    def _complete(self, req, length):
        status_buf = req._buffers[-1]
        req.status = status_buf.read_int(0, _STATUS_BYTES)
        req.used_len = length
        if req.in_length:
            data_bufs = [b for b, writable in req._sg[1:-1] if writable]
            req.data = b"".join(b.read() for b in data_bufs)[:req.in_length]
        for buf in req._buffers:
            self.vdev.transport.memory.free(buf)
        req._buffers = []
        req.completed_ns = get_sim_time("ns")
        self.completed += 1
        req._done.set()

    # -- submission --------------------------------------------------------------------------------
    def _split(self, nbytes):
        """Sizes of the data scatter-gather elements for ``nbytes`` of data."""
        if nbytes == 0:
            return []
        step = self.limits.get("max_segment_size", 1 << 32)
        if self.sg_layout == "pages":
            step = min(step, self.vdev.profile.page_size)
        sizes = [step] * (nbytes // step)
        if nbytes % step:
            sizes.append(nbytes % step)
        if len(sizes) > self.sg_elems:
            raise ValueError(f"{nbytes} bytes need {len(sizes)} segments; the device allows "
                             f"{self.sg_elems} (split the request)")
        return sizes

    def _pick_queue(self, queue):
        if queue is None:
            interrupt_queues = [i for i, q in enumerate(self.queues) if q.vq.callback]
            queue = interrupt_queues[self._next_queue % len(interrupt_queues)]
            self._next_queue += 1
        if not 0 <= queue < len(self.queues):
            raise ValueError(f"queue {queue} does not exist ({len(self.queues)} queues)")
        return queue

    async def submit(self, req, *, queue=None, last=True):
        """``virtio_queue_rq()``: make ``req`` available (kicking if ``last``); returns it."""
        memory = self.vdev.transport.memory
        qi = self._pick_queue(queue)
        q = self.queues[qi]
        req.queue = qi
        hdr = memory.buffer(_HDR.pack(type=req.type, reserved=0, sector=req.sector))
        data_out = req.type.value & VirtioBlkReqType.OUT.value
        sg = [(hdr, False)]
        if req.payload:
            offset = 0
            for size in self._split(len(req.payload)):
                sg.append((memory.buffer(req.payload[offset:offset + size]), not data_out))
                offset += size
        if req.in_length:
            for size in self._split(req.in_length):
                sg.append((memory.alloc(size), not data_out))
        status = memory.alloc(_STATUS_BYTES)
        sg.append((status, True))
        req._sg = sg
        req._buffers = [b for b, _ in sg]
        out = [Sg.of(b) for b, w in sg if not w]
        inp = [Sg.of(b) for b, w in sg if w]
        sgs = [out[:1]]
        if len(out) > 1:
            sgs.append(out[1:])
        n_out = len(sgs)
        if len(inp) > 1:
            sgs.append(inp[:-1])
        sgs.append(inp[-1:])
        n_in = len(sgs) - n_out
        req.submitted_ns = get_sim_time("ns")
        while True:
            try:
                await q.vq.add_sgs(sgs, n_out, n_in, req)
                break
            except LinuxError as e:
                if e.errno != "ENOSPC":
                    raise
                # BLK_STS_DEV_RESOURCE: kick what is there and wait for completions
                await q.vq.kick()
                if q.vq.callback is None:
                    await self.poll(qi)
                else:
                    q.space.clear()
                    await q.space.wait()
        q.inflight += 1
        if last and q.vq.kick_prepare():
            await q.vq.notify()
        return req

    async def commit(self, queue):
        """``virtio_commit_rqs()``: kick after a batch submitted with ``last=False``."""
        vq = self.queues[queue].vq
        if vq.kick_prepare():
            await vq.notify()

    async def poll(self, queue):
        """``virtblk_poll()``: reap completions of a queue without interrupts; returns how many."""
        vq = self.queues[queue].vq
        found = 0
        while (got := vq.get_buf()) is not None:
            self._complete(*got)
            self.queues[queue].inflight -= 1
            found += 1
        return found

    async def _run(self, req, queue=None):
        await self.submit(req, queue=queue)
        if self.queues[req.queue].vq.callback is None:
            while not req.done:
                await self.poll(req.queue)
                if not req.done:
                    await Timer(100, "ns")
        await req.wait()
        return req

    # -- convenience -------------------------------------------------------------------------------
    def _check_status(self, req, what):
        if req.status != VirtioBlkStatus.OK.value:
            name = {s.value: s.name for s in VirtioBlkStatus}.get(req.status, str(req.status))
            raise LinuxError("EIO" if name != "UNSUPP" else "EOPNOTSUPP",
                             f"{what}: status {name}")
        return req

    async def read(self, sector, count, *, queue=None):
        """Read ``count`` sectors of 512 bytes; raises LinuxError on a non-OK status."""
        req = await self._run(BlkRequest(VirtioBlkReqType.IN, sector,
                                         in_length=count * VIRTIO_BLK_SECTOR_SIZE), queue)
        return self._check_status(req, f"read of {count} sectors at {sector}").data

    async def write(self, sector, data, *, queue=None):
        if len(data) % VIRTIO_BLK_SECTOR_SIZE:
            raise ValueError(f"write of {len(data)} bytes is not a multiple of "
                             f"{VIRTIO_BLK_SECTOR_SIZE}")
        req = await self._run(BlkRequest(VirtioBlkReqType.OUT, sector, payload=data), queue)
        self._check_status(req, f"write of {len(data)} bytes at {sector}")

    async def flush(self, *, queue=None):
        req = await self._run(BlkRequest(VirtioBlkReqType.FLUSH), queue)
        self._check_status(req, "flush")

    async def get_id(self, *, queue=None):
        """``virtblk_get_id()``: the serial, or None (IOERR gives an empty serial as Linux)."""
        req = await self._run(BlkRequest(VirtioBlkReqType.GET_ID,
                                         in_length=VIRTIO_BLK_ID_BYTES), queue)
        if req.status == VirtioBlkStatus.UNSUPP.value:
            raise LinuxError("EOPNOTSUPP", "GET_ID not supported")
        self.serial = req.data.split(b"\0", 1)[0].decode(errors="replace") if req.ok else ""
        return self.serial

    def _ranges(self, ranges, flags):
        return b"".join(_RANGE.pack(sector=s, num_sectors=n, flags=flags) for s, n in ranges)

    async def discard(self, ranges, *, queue=None):
        """``ranges``: [(sector, num_sectors)]."""
        req = await self._run(BlkRequest(VirtioBlkReqType.DISCARD,
                                         payload=self._ranges(ranges, 0)), queue)
        self._check_status(req, "discard")

    async def write_zeroes(self, ranges, *, unmap=True, queue=None):
        flags = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP if unmap else 0
        req = await self._run(BlkRequest(VirtioBlkReqType.WRITE_ZEROES,
                                         payload=self._ranges(ranges, flags)), queue)
        self._check_status(req, "write zeroes")

    async def remove(self, vdev):
        """``virtblk_remove()``: reset, then delete the queues."""
        await vdev.reset_device()
        await vdev.del_vqs()
