# SPDX-License-Identifier: BSD-2-Clause
"""The virtio-blk device back-end: a disk on an AXI4 medium (virtio 1.2 §5.2).

::

                    ┌─────────────────────── VirtioBlkDevice ───────────────────────┐
  requests.segment ►│ BlkIntake ─► segment RAMs                                     │
                    │    │ start        ┌► BlkDecoder ◄─ header RAM ◄─ snoop ◄─┐    │
                    │    ▼              ├► SgDmaReader ─► dma.rd_req           │    │
                    │ BlkSlot × slots ──┤   dma.rd_ram ─► read buffer ─────────┘    │
                    │ (one request      ├► MediumWriter ◄─ read buffer ─► AW/W/B ───┼─► medium
                    │  each)            ├► MediumReader ◄─ AR/R ─► write buffer     │   (AXI4)
                    │                   └► SgDmaWriter ─► dma.wr_req ◄─ dma.wr_ram  │
  completions.used ◄│ ◄── used (round robin) ◄── slots                              │
  config.bus ──────►│ BlkConfigSpace (struct virtio_blk_config)                     │
                    └───────────────────────────────────────────────────────────────┘

Each request occupies a *slot* from its first segment to its used entry; ``slots`` requests, from
any queues, are in flight at once, each moving its data in ``chunk_bytes`` pieces through its
own ``slot_bytes`` of buffer, so the medium, the link and the next request's header read overlap
(:class:`~.blk_slot.BlkSlot` tells the whole story). Data goes between host memory and the medium
in full-width words: the DMA engine realigns host bytes into the buffers, and the medium side
moves whole beats in INCR bursts.

The medium holds the disk from byte 0: sector ``n`` is at ``n * 512``. Writes are on the medium
(AXI write response received) before their request completes, so the device has no volatile
cache: FLUSH completes at once and ``writeback`` starts at 0 (write-through).
DISCARD leaves the data as it was, unless built with ``discard_zeroes``; WRITE_ZEROES always
writes zeros (with or without UNMAP). Request headers are read little-endian, as in virtio 1.x
and in legacy drivers on little-endian hosts.
"""

from amaranth import Array, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect, flipped

from ..dma.interface import DMA_RAM_ADDR_WIDTH, DMA_TAG_WIDTH, DmaClientSignature, DmaError
from ..spec.virtio import (VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_SECTOR_SIZE, VirtioBlkConfig,
                           VirtioBlkF, VirtioF, byte_size, feature_mask)
from ..tlp.signature import DATA_WIDTHS
from ..virtio.interface import (DeviceConfigSignature, VirtqCompletionSignature,
                                VirtqRequestSignature)
from .axi import AXI_READ_CHANNELS, AXI_WRITE_CHANNELS, AxiSignature
from .blk_config import BlkConfigSpace, check_config_fields
from .blk_decoder import HEADER_ENTRY_BITS, BlkDecoder
from .blk_intake import BlkIntake
from .blk_interface import (DecodeRequest, DmaReadJob, DmaWriteJob, MediumJob, ReadTag, SegEntry,
                            WriteTag)
from .blk_slot import BlkSlot
from .medium_reader import MediumReader
from .medium_writer import MediumWriter
from .sg_dma_reader import SgDmaReader
from .sg_dma_writer import SgDmaWriter
from .stream_arbiter import StreamArbiter

__all__ = ["VirtioBlkDevice", "blk_features"]

_SECTOR = VIRTIO_BLK_SECTOR_SIZE
_HEADER_STRIDE = 32     # bytes of read-buffer address space per slot header (one 256-bit beat)
_SERIAL_AREA = 32       # bytes of write buffer holding the serial number


def blk_features(*, queue_count=1, read_only=False):
    """The feature bits a :class:`VirtioBlkDevice` with these parameters offers.

    Transport and ring features (VERSION_1, ACCESS_PLATFORM, ORDER_PLATFORM, INDIRECT_DESC,
    EVENT_IDX) are implemented by the transport and the virtqueue engine in front of the
    device; the rest by the device (virtio 1.2 §5.2.3). MQ only with more than one queue; RO
    as built; DISCARD and WRITE_ZEROES only on a writable disk.
    """
    bits = [VirtioF.VERSION_1, VirtioF.ACCESS_PLATFORM, VirtioF.ORDER_PLATFORM,
            VirtioF.INDIRECT_DESC, VirtioF.EVENT_IDX,
            VirtioBlkF.SIZE_MAX, VirtioBlkF.SEG_MAX, VirtioBlkF.BLK_SIZE, VirtioBlkF.FLUSH,
            VirtioBlkF.TOPOLOGY, VirtioBlkF.CONFIG_WCE]
    if queue_count > 1:
        bits.append(VirtioBlkF.MQ)
    if read_only:
        bits.append(VirtioBlkF.RO)
    else:
        bits += [VirtioBlkF.DISCARD, VirtioBlkF.WRITE_ZEROES]
    return feature_mask(*bits)


def _pow2(value):
    return isinstance(value, int) and value > 0 and not value & (value - 1)


class VirtioBlkDevice(wiring.Component):
    """A virtio block device (device ID 2) behind the virtqueue engine, on an AXI4 medium.

    Parameters
    ----------
    data_width : int
        DMA data path width in bits (64, 128 or 256); also the medium's data width.
    queue_count : int
        Request queues (``num_queues``); more than one offers VIRTIO_BLK_F_MQ.
    capacity : int or None
        Disk size in 512-byte sectors. ``None`` adds a ``capacity`` input instead, so the size
        can come from outside (a disk image, a memory probe) and change at run time.
    medium_addr_width : int or None
        Width of the medium's byte address; by default just enough for ``capacity`` (32 with
        a ``capacity`` input). A larger ``capacity`` input is clamped to what it can address.
    serial : str or bytes
        The GET_ID answer, at most 20 bytes (NUL-padded, virtio 1.2 §5.2.6).
    read_only : bool
        Offer VIRTIO_BLK_F_RO: writes, discards and write-zeroes fail with IOERR (§5.2.6.2).
    slots : int
        Requests in flight at once.
    slot_bytes : int
        Buffer bytes per slot and direction; ``slot_bytes // chunk_bytes`` chunk buffers.
    chunk_bytes : int
        Unit of data movement (power of two, 512 to 32768).
    max_segments : int
        Readable and writable buffers a request may have, each; ``seg_max`` is two less
        (header and status).
    blk_size, physical_block_exp, opt_io_size, size_max : int
        ``virtio_blk_config`` fields (logical block size; physical block = logical << exp).
    max_discard_sectors, max_write_zeroes_sectors : int
        Limits per DISCARD / WRITE_ZEROES request (one segment each).
    discard_zeroes : bool
        DISCARD writes zeros (otherwise it leaves the data unchanged).
    medium_id_width : int
        Width of the AXI IDs (the device always uses ID 0).

    Members
    -------
    requests : In(VirtqRequestSignature(queue_count))
        Descriptor chains, one segment per beat (the device never uses ``fetch``).
    completions : Out(VirtqCompletionSignature(queue_count))
        One used entry per chain, ``batch_end`` always set, after the chain's DMA writes.
    dma : Out(DmaClientSignature(data_width))
        Tags are :func:`~.blk_interface.ReadTag` / :func:`~.blk_interface.WriteTag`.
    config : In(DeviceConfigSignature())
        ``struct virtio_blk_config`` on ``bus``; ``changed`` when the capacity input moves;
        ``idle`` when no request is in flight (and, during ``reset``, all are dropped).
    medium : Out(AxiSignature(addr_width=medium_addr_width, data_width=data_width))
        The disk: INCR bursts of full beats, never across 4 KiB, ID 0.
    capacity : In(64)
        Only with ``capacity=None``: the disk size in sectors.
    """

    def __init__(self, *, data_width, queue_count=1, capacity=None, medium_addr_width=None,
                 serial="virtio-pcie-blk", read_only=False, slots=8, slot_bytes=4096,
                 chunk_bytes=1024, max_segments=128, blk_size=512, physical_block_exp=3,
                 opt_io_size=0, size_max=1 << 20, max_discard_sectors=1 << 16,
                 max_write_zeroes_sectors=1 << 16, discard_zeroes=False, medium_id_width=1):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
        if not isinstance(queue_count, int) or not 1 <= queue_count <= 0xFFFF:
            raise ValueError(f"queue_count must be an integer from 1 to 65535, "
                             f"not {queue_count!r}")
        if capacity is not None and (not isinstance(capacity, int) or capacity < 0):
            raise ValueError(f"capacity must be a number of sectors or None, not {capacity!r}")
        if medium_addr_width is None:
            medium_addr_width = 32 if capacity is None else \
                max(12, (capacity * _SECTOR - 1).bit_length())
        if not isinstance(medium_addr_width, int) or not 12 <= medium_addr_width <= 64:
            raise ValueError(f"medium_addr_width must be an integer from 12 to 64, "
                             f"not {medium_addr_width!r}")
        if capacity is not None and capacity * _SECTOR > 1 << medium_addr_width:
            raise ValueError(f"capacity {capacity} sectors does not fit a "
                             f"{medium_addr_width}-bit medium address")
        if isinstance(serial, str):
            serial = serial.encode("ascii")
        if not isinstance(serial, bytes) or len(serial) > VIRTIO_BLK_ID_BYTES:
            raise ValueError(f"serial must be at most {VIRTIO_BLK_ID_BYTES} ASCII bytes, "
                             f"not {serial!r}")
        if not isinstance(slots, int) or not 1 <= slots <= 64:
            raise ValueError(f"slots must be an integer from 1 to 64, not {slots!r}")
        if not _pow2(chunk_bytes) or not 512 <= chunk_bytes <= 32768:
            raise ValueError(f"chunk_bytes must be a power of two from 512 to 32768, "
                             f"not {chunk_bytes!r}")
        if not _pow2(slot_bytes) or slot_bytes < 2 * chunk_bytes:
            raise ValueError(f"slot_bytes must be a power of two of at least twice "
                             f"chunk_bytes ({chunk_bytes}), not {slot_bytes!r}")
        if slots * (slot_bytes + _HEADER_STRIDE) > 1 << DMA_RAM_ADDR_WIDTH:
            raise ValueError(f"{slots} slots of {slot_bytes} bytes do not fit the "
                             f"{1 << DMA_RAM_ADDR_WIDTH}-byte DMA buffer address space")
        if not _pow2(max_segments) or max_segments < 4:
            raise ValueError(f"max_segments must be a power of two of at least 4, "
                             f"not {max_segments!r}")
        if not _pow2(blk_size) or not 512 <= blk_size <= 65536:
            raise ValueError(f"blk_size must be a power of two from 512 to 65536, "
                             f"not {blk_size!r}")
        if not isinstance(physical_block_exp, int) or not 0 <= physical_block_exp <= 15:
            raise ValueError(f"physical_block_exp must be an integer from 0 to 15, "
                             f"not {physical_block_exp!r}")
        if not isinstance(size_max, int) or size_max < 4096 or size_max >= 1 << 32:
            raise ValueError(f"size_max must be an integer from 4096 to 2**32 - 1, "
                             f"not {size_max!r}")
        for name, value in (("max_discard_sectors", max_discard_sectors),
                            ("max_write_zeroes_sectors", max_write_zeroes_sectors)):
            # The bytes of one request must fit a 32-bit length.
            if not isinstance(value, int) or not 1 <= value < 1 << (32 - 9):
                raise ValueError(f"{name} must be an integer from 1 to {(1 << 23) - 1}, "
                                 f"not {value!r}")
        regions = slot_bytes // chunk_bytes
        if ReadTag(slots, regions).size > DMA_TAG_WIDTH:
            raise ValueError(f"{slots} slots of {regions} chunks need more than "
                             f"{DMA_TAG_WIDTH} DMA tag bits")

        self._data_width   = data_width
        self._queue_count  = queue_count
        self._capacity     = capacity
        self._maw          = medium_addr_width
        self._serial       = serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")
        self._read_only    = bool(read_only)
        self._slots        = slots
        self._slot_bytes   = slot_bytes
        self._chunk_bytes  = chunk_bytes
        self._regions      = regions
        self._max_segments = max_segments
        self._discard_zeroes = bool(discard_zeroes)
        self._max_discard  = max_discard_sectors
        self._max_wz       = max_write_zeroes_sectors
        self._id_width     = medium_id_width
        physical = blk_size << physical_block_exp
        self._config_fields = {
            "size_max":   size_max,
            "seg_max":    max_segments - 2,
            "blk_size":   blk_size,
            "topology":   {"physical_block_exp": physical_block_exp, "alignment_offset": 0,
                           "min_io_size": 1 << physical_block_exp, "opt_io_size": opt_io_size},
            "num_queues": queue_count,
        }
        if not read_only:
            self._config_fields.update({
                "max_discard_sectors":      max_discard_sectors,
                "max_discard_seg":          1,
                "discard_sector_alignment": max(1, physical // _SECTOR),
                "max_write_zeroes_sectors": max_write_zeroes_sectors,
                "max_write_zeroes_seg":     1,
                "write_zeroes_may_unmap":   0,
            })
        check_config_fields(self._config_fields)     # a bad value is reported here

        members = {
            "requests":    In(VirtqRequestSignature(queue_count)),
            "completions": Out(VirtqCompletionSignature(queue_count)),
            "dma":         Out(DmaClientSignature(data_width)),
            "config":      In(DeviceConfigSignature()),
            "medium":      Out(AxiSignature(addr_width=medium_addr_width, data_width=data_width,
                                            id_width=medium_id_width)),
        }
        if capacity is None:
            members["capacity"] = In(64)
        super().__init__(members)

    @property
    def features(self):
        """The feature bits offered (see :func:`blk_features`)."""
        return blk_features(queue_count=self._queue_count, read_only=self._read_only)

    @property
    def config_size(self):
        """Bytes of the device configuration structure (for the DEVICE_CFG capability)."""
        return byte_size(VirtioBlkConfig)

    @property
    def max_chain(self):
        """The longest descriptor chain a driver may make for a request: the header, ``seg_max``
        data segments and the status byte (virtio 1.2 §5.2.4, §5.2.6). The virtqueue engine in
        front of the device must accept it (plus the descriptor of an indirect table)."""
        return self._config_fields["seg_max"] + 2

    def elaborate(self, platform):
        m = Module()
        dw, slots, regions = self._data_width, self._slots, self._regions
        bpb        = dw // 8
        beat_shift = bpb.bit_length() - 1
        data_bytes = slots * self._slot_bytes           # per buffer
        hdr_base   = data_bytes                         # read-buffer address of the headers
        serial_at  = data_bytes                         # write-buffer address of the serial
        rbuf_depth = data_bytes // bpb
        ram_bits   = (rbuf_depth - 1).bit_length()
        idx_bits   = (self._max_segments - 1).bit_length()
        OK = DmaError.OK

        # -- Buffers and lists ------------------------------------------------------------------
        m.submodules.rbuf = rbuf = Memory(shape=dw, depth=rbuf_depth, init=[])
        m.submodules.wbuf = wbuf = Memory(shape=dw, depth=rbuf_depth, init=[])
        m.submodules.hdr_ram = hdr_ram = Memory(shape=HEADER_ENTRY_BITS, depth=slots, init=[])
        seg_depth = slots << idx_bits
        m.submodules.seg_r = seg_r = Memory(shape=SegEntry, depth=seg_depth, init=[])
        m.submodules.seg_w = seg_w = Memory(shape=SegEntry, depth=seg_depth, init=[])
        m.submodules.seg_last = seg_last = Memory(shape=SegEntry, depth=slots, init=[])

        # -- Blocks -----------------------------------------------------------------------------
        m.submodules.cfg = cfg = BlkConfigSpace(fields=self._config_fields,
                                                writeback_writable=True)
        m.submodules.intake = intake = BlkIntake(queue_count=self._queue_count, slots=slots,
                                                 max_segments=self._max_segments)
        m.submodules.decoder = decoder = BlkDecoder(
            slots=slots, medium_addr_width=self._maw, read_only=self._read_only,
            discard_zeroes=self._discard_zeroes, max_discard_sectors=self._max_discard,
            max_write_zeroes_sectors=self._max_wz)
        m.submodules.sg_reader = sg_reader = SgDmaReader(slots=slots, regions=regions,
                                                         max_segments=self._max_segments)
        m.submodules.sg_writer = sg_writer = SgDmaWriter(slots=slots,
                                                         max_segments=self._max_segments)
        m.submodules.medium_reader = mreader = MediumReader(
            slots=slots, medium_addr_width=self._maw, data_width=dw, ram_beat_width=ram_bits,
            id_width=self._id_width)
        m.submodules.medium_writer = mwriter = MediumWriter(
            slots=slots, medium_addr_width=self._maw, data_width=dw, ram_beat_width=ram_bits,
            id_width=self._id_width)
        max_pieces = self._max_segments + 16
        slot_blocks = []
        for i in range(slots):
            slot = BlkSlot(index=i, slots=slots, queue_count=self._queue_count,
                           regions=regions, chunk_bytes=self._chunk_bytes,
                           medium_addr_width=self._maw, bytes_per_beat=bpb,
                           ram_beat_width=ram_bits, header_addr=hdr_base + _HEADER_STRIDE * i,
                           serial_addr=serial_at, max_pieces=max_pieces)
            m.submodules[f"slot{i}"] = slot
            slot_blocks.append(slot)

        def arbiter(name, shape, pick):
            arb = StreamArbiter(shape=shape, count=slots)
            m.submodules[f"{name}_arbiter"] = arb
            for i, slot in enumerate(slot_blocks):
                connect(m, **{f"slot{i}": pick(slot), "arbiter": arb.i[i]})
            return arb

        # -- Configuration ----------------------------------------------------------------------
        capacity = Signal(64)
        max_sectors = (1 << self._maw) // _SECTOR
        if self._capacity is not None:
            m.d.comb += capacity.eq(self._capacity)
        else:
            # A size the medium cannot address is cut to what it can.
            m.d.comb += capacity.eq(self.capacity)
            with m.If(self.capacity > max_sectors):
                m.d.comb += capacity.eq(max_sectors)
            seen  = Signal(64)
            known = Signal()
            m.d.sync += [seen.eq(capacity), known.eq(1)]
            # virtio 1.2 §5.2.6.2 (B5): a capacity change is announced.
            m.d.comb += self.config.changed.eq(known & (seen != capacity))
        connect(m, flipped(self.config.bus), cfg.bus)
        m.d.comb += [
            cfg.capacity.eq(capacity),
            cfg.reset.eq(self.config.reset),
            decoder.capacity.eq(capacity),
            decoder.features.eq(self.config.features),
        ]

        # -- Chains in ---------------------------------------------------------------------------
        connect(m, flipped(self.requests.segment), intake.segment)
        for name, port in (("r", seg_r), ("w", seg_w), ("l", seg_last)):
            wp = port.write_port()
            m.d.comb += [
                wp.addr.eq(getattr(intake, f"{name}_addr")),
                wp.data.eq(getattr(intake, f"{name}_data")),
                wp.en.eq(getattr(intake, f"{name}_en")),
            ]
        m.d.comb += intake.reset.eq(self.config.reset)
        free = Signal(slots)
        m.d.comb += [free[i].eq(slot.free) for i, slot in enumerate(slot_blocks)]
        m.d.comb += intake.free.eq(free)

        for slot in slot_blocks:
            m.d.comb += [
                slot.reset.eq(self.config.reset),
                slot.start.valid.eq(intake.start.valid),
                slot.start.payload.eq(intake.start.payload),
            ]

        # -- Header decoding ---------------------------------------------------------------------
        dec_arb = arbiter("dec", DecodeRequest(slots), lambda s: s.dec_req)
        connect(m, dec_arb=dec_arb.o, decoder=decoder.req)
        hdr_rd = hdr_ram.read_port()
        m.d.comb += [
            hdr_rd.addr.eq(decoder.hdr_addr),
            hdr_rd.en.eq(decoder.hdr_en),
            decoder.hdr_data.eq(hdr_rd.data),
        ]
        for slot in slot_blocks:
            m.d.comb += [
                slot.dec_rsp.valid.eq(decoder.rsp.valid),
                slot.dec_rsp.payload.eq(decoder.rsp.payload),
            ]

        # -- Host → buffer: DMA reads -----------------------------------------------------------
        rd_arb = arbiter("rd", DmaReadJob(slots, regions), lambda s: s.rd_job)
        connect(m, rd_arb=rd_arb.o, sg_reader=sg_reader.job)
        seg_r_rd = seg_r.read_port()
        m.d.comb += [
            seg_r_rd.addr.eq(sg_reader.seg_addr),
            seg_r_rd.en.eq(sg_reader.seg_en),
            sg_reader.seg_data.eq(seg_r_rd.data),
        ]
        connect(m, sg_reader=sg_reader.req, dma=flipped(self.dma.rd_req))
        rd_tag = ReadTag(slots, regions)
        rd_issue_tag = data.View(rd_tag, self.dma.rd_req.payload.tag[:rd_tag.size])
        rd_done_tag  = data.View(rd_tag, self.dma.rd_status.payload.tag[:rd_tag.size])
        for slot in slot_blocks:
            m.d.comb += [
                slot.rd_issued.valid.eq(self.dma.rd_req.valid & self.dma.rd_req.ready),
                slot.rd_issued.payload.slot.eq(rd_issue_tag.slot),
                slot.rd_issued.payload.region.eq(rd_issue_tag.region),
                slot.rd_issued.payload.last.eq(rd_issue_tag.last),
                slot.rd_done.valid.eq(self.dma.rd_status.valid),
                slot.rd_done.payload.slot.eq(rd_done_tag.slot),
                slot.rd_done.payload.region.eq(rd_done_tag.region),
                slot.rd_done.payload.error.eq(self.dma.rd_status.payload.error != OK),
            ]
        self._read_buffer_port(m, rbuf, hdr_ram, hdr_base, bpb, beat_shift)

        # -- Buffer → medium ---------------------------------------------------------------------
        mw_arb = arbiter("mw", MediumJob(slots, self._maw, ram_bits), lambda s: s.mw_job)
        connect(m, mw_arb=mw_arb.o, medium_writer=mwriter.job)
        rbuf_rd = rbuf.read_port()
        m.d.comb += [
            rbuf_rd.addr.eq(mwriter.ram_addr),
            rbuf_rd.en.eq(mwriter.ram_en),
            mwriter.ram_data.eq(rbuf_rd.data),
        ]
        for slot in slot_blocks:
            m.d.comb += [
                slot.mw_done.valid.eq(mwriter.done.valid),
                slot.mw_done.payload.eq(mwriter.done.payload),
            ]

        # -- Medium → buffer ---------------------------------------------------------------------
        mr_arb = arbiter("mr", MediumJob(slots, self._maw, ram_bits), lambda s: s.mr_job)
        connect(m, mr_arb=mr_arb.o, medium_reader=mreader.job)
        wbuf_wr = wbuf.write_port()
        m.d.comb += [
            wbuf_wr.addr.eq(mreader.ram_addr),
            wbuf_wr.data.eq(mreader.ram_data),
            wbuf_wr.en.eq(mreader.ram_en),
        ]
        for slot in slot_blocks:
            m.d.comb += [
                slot.mr_done.valid.eq(mreader.done.valid),
                slot.mr_done.payload.eq(mreader.done.payload),
            ]
        # One AXI port: the reader drives AR/R, the writer AW/W/B.
        for path, member in self.medium.signature.members.items():
            name = path
            channel = name[:2] if name[:2] in ("aw", "ar") else name[0]
            source = mwriter.bus if channel in AXI_WRITE_CHANNELS else mreader.bus
            assert channel in AXI_WRITE_CHANNELS + AXI_READ_CHANNELS
            if member.flow == Out:
                m.d.comb += getattr(self.medium, name).eq(getattr(source, name))
            else:
                m.d.comb += getattr(source, name).eq(getattr(self.medium, name))

        # -- Buffer → host: DMA writes -----------------------------------------------------------
        wr_arb = arbiter("wr", DmaWriteJob(slots), lambda s: s.wr_job)
        connect(m, wr_arb=wr_arb.o, sg_writer=sg_writer.job)
        seg_w_rd = seg_w.read_port()
        last_rd  = seg_last.read_port()
        m.d.comb += [
            seg_w_rd.addr.eq(sg_writer.seg_addr),
            seg_w_rd.en.eq(sg_writer.seg_en),
            sg_writer.seg_data.eq(seg_w_rd.data),
            last_rd.addr.eq(sg_writer.last_addr),
            last_rd.en.eq(sg_writer.last_en),
            sg_writer.last_data.eq(last_rd.data),
        ]
        connect(m, sg_writer=sg_writer.req, dma=flipped(self.dma.wr_req))
        # The DMA engine reads the write buffer, or the serial number just above it (GET_ID).
        wbuf_rd = wbuf.read_port()
        serial = int.from_bytes(self._serial, "little")
        serial_words = Array(Const((serial >> (8 * bpb * i)) & ((1 << dw) - 1), dw)
                             for i in range(_SERIAL_AREA // bpb))
        serial_hit  = Signal()
        serial_word = Signal(dw)
        in_serial = self.dma.wr_ram.addr >= rbuf_depth
        with m.If(self.dma.wr_ram.en):
            m.d.sync += [
                serial_hit.eq(in_serial),
                serial_word.eq(serial_words[(self.dma.wr_ram.addr - rbuf_depth)
                                            [:max(1, (_SERIAL_AREA // bpb - 1).bit_length())]]),
            ]
        m.d.comb += [
            wbuf_rd.addr.eq(self.dma.wr_ram.addr),
            wbuf_rd.en.eq(self.dma.wr_ram.en & ~in_serial),
            self.dma.wr_ram.data.eq(Mux(serial_hit, serial_word, wbuf_rd.data)),
        ]
        wr_tag = WriteTag(slots)
        wr_done_tag = data.View(wr_tag, self.dma.wr_status.payload.tag[:wr_tag.size])
        for slot in slot_blocks:
            m.d.comb += [
                slot.wr_done.valid.eq(self.dma.wr_status.valid),
                slot.wr_done.payload.slot.eq(wr_done_tag.slot),
                slot.wr_done.payload.last.eq(wr_done_tag.last),
                slot.wr_done.payload.error.eq(self.dma.wr_status.payload.error != OK),
                slot.wr_done.payload.dropped.eq(self.dma.wr_status.payload.error ==
                                                DmaError.BUS_MASTER_DISABLED),
            ]

        # -- Completions -------------------------------------------------------------------------
        # A slot hands its used entry to a queue and is free at once: the virtqueue engine
        # takes entries only between its used-ring writes and used_event reads (a host round
        # trip each), and a slot waiting there is a slot not moving data. On device reset the
        # queued entries are dropped, as a slot in COMPLETE drops its own.
        used_shape = self.completions.used.payload.shape()
        used_arb = arbiter("used", used_shape, lambda s: s.used)
        m.submodules.used_fifo = used_fifo = ResetInserter(self.config.reset)(
            SyncFIFO(width=used_shape.size, depth=slots))
        m.d.comb += [
            used_fifo.w_data.eq(used_arb.o.payload),
            used_fifo.w_en.eq(used_arb.o.valid),
            used_arb.o.ready.eq(used_fifo.w_rdy),
            self.completions.used.payload.eq(used_fifo.r_data),
            self.completions.used.valid.eq(used_fifo.r_rdy),
            used_fifo.r_en.eq(self.completions.used.ready),
        ]

        # -- Idle --------------------------------------------------------------------------------
        # A free slot has nothing in flight (it frees itself only once every DMA and medium job
        # it started has answered), so all slots free means no DMA in flight.
        m.d.comb += self.config.idle.eq((free == (1 << slots) - 1) & ~intake.busy &
                                        ~used_fifo.r_rdy)
        return m

    def _read_buffer_port(self, m, rbuf, hdr_ram, hdr_base, bpb, beat_shift):
        """The DMA engine's writes into the read buffer, and the header snoop.

        Data-region writes go to the read buffer. Writes to the header region (one 32-byte
        area per slot above the data) exist only to be copied into the header RAM, as are the
        first 16 bytes of each slot's first chunk buffer (the discard / write-zeroes segment).
        """
        port   = self.dma.rd_ram
        wr     = rbuf.write_port(granularity=8)
        hdr_wr = hdr_ram.write_port(granularity=8)
        beat   = port.addr
        in_data = Signal()
        m.d.comb += [
            in_data.eq(beat < (hdr_base >> beat_shift)),
            wr.addr.eq(beat),
            wr.data.eq(port.data),
            wr.en.eq(port.be & (port.en & in_data).replicate(bpb)),
        ]

        entry_bytes = HEADER_ENTRY_BITS // 8
        half = entry_bytes // 2
        slot_shift = (self._slot_bytes - 1).bit_length()
        # Where in a 16-byte window a beat can start (a 256-bit beat covers it whole).
        positions = list(range(0, half, bpb)) if bpb < half else [0]
        hdr_rel = Signal(DMA_RAM_ADDR_WIDTH)
        byte_addr = Signal(DMA_RAM_ADDR_WIDTH)
        m.d.comb += [
            byte_addr.eq(beat << beat_shift),
            hdr_rel.eq(byte_addr - hdr_base),
        ]
        hdr_area_shift = (_HEADER_STRIDE - 1).bit_length()
        in_header = ~in_data & (hdr_rel < self._slots * _HEADER_STRIDE)
        for pos in positions:
            width = min(bpb, half - pos)
            mask = (1 << width) - 1
            for region_is_header, offset in ((True, pos), (False, half + pos)):
                if region_is_header:
                    hit = in_header & (hdr_rel[:hdr_area_shift] == pos)
                    slot = hdr_rel[hdr_area_shift:]
                else:
                    hit = in_data & (byte_addr[:slot_shift] == pos)
                    slot = byte_addr[slot_shift:]
                with m.If(port.en & hit):
                    m.d.comb += [
                        hdr_wr.addr.eq(slot),
                        hdr_wr.data.eq(port.data << (8 * offset)),
                        hdr_wr.en.eq((port.be & mask) << offset),
                    ]
