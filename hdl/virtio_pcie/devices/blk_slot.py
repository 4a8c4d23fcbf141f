# SPDX-License-Identifier: BSD-2-Clause
"""One virtio-blk request in flight: the sequencer that carries it from header to used entry."""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec.virtio import VirtioBlkOutHdr, VirtioBlkStatus, byte_size
from ..virtio.interface import VirtqUsed
from .blk_interface import (SUM_WIDTH, BlkOp, DecodeRequest, DecodeResult,
                            DmaReadJob, DmaWriteJob, MediumDone, MediumJob, ReadDone,
                            ReadIssued, SlotStart, WriteDone)

__all__ = ["BlkSlot"]

_HDR_BYTES = byte_size(VirtioBlkOutHdr)


class BlkSlot(wiring.Component):
    """Sequences one request at a time through the shared engines of the virtio-blk device.

    ::

        FREE ─start─► HEADER ─► WAIT_HEADER ─► DECODE ─► DECODE_WAIT ─► EXEC ─► STATUS
          ▲   (malformed chain) ───────────────────────────────────────────────►  │
          └──────────── COMPLETE ◄── STATUS_WAIT ◄────────────────────────────────┘
        any state ─reset─► DRAIN ─► FREE (once nothing it started is still in flight)

    *Header.* The first 16 readable bytes go to the header RAM (through the DMA snoop of the
    read buffer) and, at the same time, the readable bytes after them are read into the
    slot's chunk buffers, as many chunks as fit, before the type is known: for an OUT they are
    the data (so the data read overlaps the header read), for a DISCARD / WRITE_ZEROES the
    segment, for anything else there are none (extra readable bytes are read and ignored).
    The decoder is asked once the header and the first chunk have landed.

    *Data* moves in chunks of ``chunk_bytes`` through the slot's ``regions`` chunk buffers
    with a producer and a consumer, so a request keeps the link and the medium busy at the
    same time:

    ========  ==============================  =================================
    op        producer (fills a buffer)       consumer (empties it)
    ========  ==============================  =================================
    WRITE     DMA read of readable bytes      medium write
    READ      medium read                     DMA write into writable bytes
    ZERO      (none: zeros)                   medium write of zeros
    ID        (none: the serial in ROM)       DMA write into writable bytes
    ========  ==============================  =================================

    The producer starts a chunk when a buffer is free; the consumer takes chunks in order as
    they land. DMA read statuses may come back in any order, so each buffer counts its own
    outstanding reads; DMA write statuses, medium answers and decode answers come back in
    order. Any error (DMA or medium) stops new jobs; the request ends with IOERR once the jobs
    in flight are back.

    *Status.* The status byte is written with an immediate DMA write into the last byte of the
    last writable buffer (virtio 1.2 §5.2.6), after every data write has been issued, so it
    reaches host memory after the data (posted writes stay in order). The used entry follows
    once its write status is back; its ``len`` counts the bytes written: the data of an OK READ
    or GET_ID, plus the status byte (virtio 1.2 §2.7.8.2). A chain without writable bytes
    cannot carry a status: it completes with ``len`` 0 and nothing written.

    Parameters
    ----------
    index : int
        This slot's number (in every job and event it sends or takes).
    slots, queue_count : int
    regions : int
        Chunk buffers per slot (a power of two).
    chunk_bytes : int
    medium_addr_width : int
    bytes_per_beat : int
        Width of the buffers' words, in bytes.
    ram_beat_width : int
        Width of a beat address in the buffers.
    header_addr : int
        Read-buffer byte address where this slot's header is read to.
    serial_addr : int
        Write-buffer byte address of the serial number (GET_ID).
    max_pieces : int
        Most DMA requests one chunk can need (segments it may touch).

    Members
    -------
    start : In(stream.Signature(SlotStart(...), always_ready=True))
    free : Out(1)
    dec_req : Out(stream.Signature(DecodeRequest(slots)))
    dec_rsp : In(stream.Signature(DecodeResult(...), always_ready=True))
    rd_job : Out(stream.Signature(DmaReadJob(slots, regions)))
    rd_issued : In(stream.Signature(ReadIssued(...), always_ready=True))
    rd_done : In(stream.Signature(ReadDone(...), always_ready=True))
    wr_job : Out(stream.Signature(DmaWriteJob(slots)))
    wr_done : In(stream.Signature(WriteDone(slots), always_ready=True))
    mr_job, mw_job : Out(stream.Signature(MediumJob(...)))
        Medium read (medium → write buffer) and write (read buffer → medium) jobs.
    mr_done, mw_done : In(stream.Signature(MediumDone(slots), always_ready=True))
    used : Out(stream.Signature(VirtqUsed(queue_count)))
    reset : In(1)
        Device reset: drop the request once nothing of it is in flight.

    Events (``*_done``, ``rd_issued``, ``dec_rsp``, ``start``) are broadcast to every slot;
    each takes those carrying its ``index``. A job offered on a ``*_job`` stream may be
    withdrawn before it is taken (after an error or on reset).
    """

    def __init__(self, *, index, slots, queue_count, regions, chunk_bytes, medium_addr_width,
                 bytes_per_beat, ram_beat_width, header_addr, serial_addr, max_pieces):
        if not isinstance(regions, int) or regions < 2 or regions & (regions - 1):
            raise ValueError(f"regions must be a power of two of at least 2, not {regions!r}")
        if not isinstance(chunk_bytes, int) or chunk_bytes & (chunk_bytes - 1) or \
                not 512 <= chunk_bytes <= 32768:
            raise ValueError(f"chunk_bytes must be a power of two from 512 to 32768, "
                             f"not {chunk_bytes!r}")
        self._index   = index
        self._slots   = slots
        self._regions = regions
        self._chunk   = chunk_bytes
        self._maw     = medium_addr_width
        self._bpb     = bytes_per_beat
        self._header_addr = header_addr
        self._serial_addr = serial_addr
        self._max_pieces  = max_pieces
        self._base = index * regions * chunk_bytes
        super().__init__({
            "start":     In(stream.Signature(SlotStart(queue_count, slots), always_ready=True)),
            "free":      Out(1),
            "dec_req":   Out(stream.Signature(DecodeRequest(slots))),
            "dec_rsp":   In(stream.Signature(DecodeResult(slots, medium_addr_width),
                                             always_ready=True)),
            "rd_job":    Out(stream.Signature(DmaReadJob(slots, regions))),
            "rd_issued": In(stream.Signature(ReadIssued(slots, regions), always_ready=True)),
            "rd_done":   In(stream.Signature(ReadDone(slots, regions), always_ready=True)),
            "wr_job":    Out(stream.Signature(DmaWriteJob(slots))),
            "wr_done":   In(stream.Signature(WriteDone(slots), always_ready=True)),
            "mr_job":    Out(stream.Signature(MediumJob(slots, medium_addr_width,
                                                        ram_beat_width))),
            "mr_done":   In(stream.Signature(MediumDone(slots), always_ready=True)),
            "mw_job":    Out(stream.Signature(MediumJob(slots, medium_addr_width,
                                                        ram_beat_width))),
            "mw_done":   In(stream.Signature(MediumDone(slots), always_ready=True)),
            "used":      Out(stream.Signature(VirtqUsed(queue_count))),
            "reset":     In(1),
        })

    def _mine(self, event):
        return event.valid & (event.payload.slot == self._index)

    def elaborate(self, platform):
        m = Module()
        C       = self._chunk
        cbits   = C.bit_length() - 1
        regions = self._regions
        OK, IOERR = VirtioBlkStatus.OK, VirtioBlkStatus.IOERR
        chunk_bits = SUM_WIDTH - cbits + 1

        # -- Request state ----------------------------------------------------------------------
        queue    = Signal.like(self.used.payload.queue)
        head     = Signal(16)
        epoch    = Signal.like(self.used.payload.epoch)
        readable = Signal(SUM_WIDTH)
        writable = Signal(SUM_WIDTH)
        status   = Signal(VirtioBlkStatus)
        op       = Signal(BlkOp)
        err      = Signal()
        length   = Signal(SUM_WIDTH)     # bytes to move
        last_len = Signal(range(C + 1))  # bytes in the last chunk
        maddr    = Signal(self._maw)     # medium address of the next medium job

        # -- Chunk pipeline ---------------------------------------------------------------------
        p_left      = Signal(chunk_bits)          # chunks still to produce
        q_left      = Signal(chunk_bits)          # chunks still to consume
        inflight_p  = Signal(range(regions + 1))  # produced, not landed yet
        landed      = Signal(range(regions + 1))  # landed, not consumed yet
        inflight_q  = Signal(range(regions + 1))  # being consumed
        p_region    = Signal(regions.bit_length() - 1)
        land_region = Signal.like(p_region)
        q_region    = Signal.like(p_region)
        rd_cnt  = [Signal(range(self._max_pieces + 1), name=f"rd_cnt{r}")
                   for r in range(regions)]
        rd_pend  = Signal(regions)   # a read job for this buffer is still being issued
        hdr_pend = Signal()          # the header read job is still being issued
        dec_pend = Signal()
        st_pend  = Signal()
        wr_first = Signal()

        def chunks(nbytes):
            return (nbytes + C - 1) >> cbits

        def tail(nbytes):
            rem = nbytes[:cbits]
            return Mux(rem == 0, C, rem)

        def chunk_len(left):
            return Mux(left == 1, last_len, C)

        def region_addr(region):
            return self._base + (region << cbits)

        beat_shift = self._bpb.bit_length() - 1

        def region_beat(region):
            return (self._base >> beat_shift) + (region << (cbits - beat_shift))

        # -- Events addressed to this slot ------------------------------------------------------
        ev_start = self._mine(self.start)
        ev_dec   = self._mine(self.dec_rsp)
        ev_rdi   = self._mine(self.rd_issued)
        ev_rdd   = self._mine(self.rd_done)
        ev_wr    = self._mine(self.wr_done)
        ev_mr    = self._mine(self.mr_done)
        ev_mw    = self._mine(self.mw_done)

        for r in range(regions):
            inc = ev_rdi & (self.rd_issued.payload.region == r)
            dec = ev_rdd & (self.rd_done.payload.region == r)
            m.d.sync += rd_cnt[r].eq(rd_cnt[r] + inc - dec)
        with m.If(ev_rdi & self.rd_issued.payload.last):
            # Jobs are issued one at a time, header first: the first "last" is the header's.
            with m.If(hdr_pend):
                m.d.sync += hdr_pend.eq(0)
            with m.Else():
                m.d.sync += rd_pend.bit_select(self.rd_issued.payload.region, 1).eq(0)
        with m.If((ev_rdd & self.rd_done.payload.error) | (ev_wr & self.wr_done.payload.error) |
                  (ev_mr & self.mr_done.payload.error) | (ev_mw & self.mw_done.payload.error)):
            m.d.sync += err.eq(1)
        with m.If(ev_dec):
            m.d.sync += dec_pend.eq(0)

        rd_quiet = Signal()
        m.d.comb += rd_quiet.eq((rd_pend == 0) & ~hdr_pend &
                                (Cat(*(c != 0 for c in rd_cnt)) == 0))

        # -- Producer, landing, consumer --------------------------------------------------------
        p_issue = Signal()
        land    = Signal()
        q_issue = Signal()
        q_fin   = Signal()
        st_done = Signal()

        busy_chunks = inflight_p + landed + inflight_q
        dma_consumer = (op == BlkOp.READ) | (op == BlkOp.ID)
        wr_is_data   = dma_consumer & (inflight_q != 0)
        m.d.comb += [
            q_fin.eq(Mux(dma_consumer, ev_wr & self.wr_done.payload.last & wr_is_data, ev_mw)),
            st_done.eq(ev_wr & self.wr_done.payload.last & ~wr_is_data),
        ]

        rd_cnt_at = Array(rd_cnt)[land_region]
        readable_mode = Signal()
        with m.If(readable_mode):
            m.d.comb += land.eq((inflight_p != 0) & ~rd_pend.bit_select(land_region, 1) &
                                (rd_cnt_at == 0))
        with m.Elif(op == BlkOp.READ):
            m.d.comb += land.eq(ev_mr)

        m.d.sync += [
            inflight_p.eq(inflight_p + p_issue - land),
            landed.eq(landed + land - (q_issue & (op != BlkOp.ZERO))),
            inflight_q.eq(inflight_q + q_issue - q_fin),
        ]
        with m.If(p_issue):
            m.d.sync += [p_left.eq(p_left - 1), p_region.eq(p_region + 1)]
        with m.If(land):
            m.d.sync += land_region.eq(land_region + 1)
        with m.If(q_issue):
            m.d.sync += [q_left.eq(q_left - 1), q_region.eq(q_region + 1)]
        with m.If(st_done):
            m.d.sync += st_pend.eq(0)

        # Readable-data read jobs (before decode, and for a WRITE).
        rd_data = Signal(self.rd_job.payload.shape())
        m.d.comb += [
            rd_data.slot.eq(self._index),
            rd_data.ram_addr.eq(region_addr(p_region)),
            rd_data.len.eq(chunk_len(p_left)),
            rd_data.region.eq(p_region),
        ]
        may_produce = (p_left != 0) & (busy_chunks < regions) & ~err & ~self.reset

        # Medium jobs.
        m.d.comb += [
            self.mr_job.payload.slot.eq(self._index),
            self.mr_job.payload.addr.eq(maddr),
            self.mr_job.payload.len.eq(chunk_len(p_left)),
            self.mr_job.payload.ram.eq(region_beat(p_region)),
            self.mw_job.payload.slot.eq(self._index),
            self.mw_job.payload.addr.eq(maddr),
            self.mw_job.payload.len.eq(chunk_len(q_left)),
            self.mw_job.payload.ram.eq(region_beat(q_region)),
            self.mw_job.payload.zero.eq(op == BlkOp.ZERO),
        ]
        with m.If((self.mr_job.valid & self.mr_job.ready) |
                  (self.mw_job.valid & self.mw_job.ready)):
            m.d.sync += maddr.eq(maddr + C)

        final_status = Mux(err & (status == OK), IOERR, status)

        # DMA write jobs: data chunks or the status byte.
        m.d.comb += [
            self.wr_job.payload.slot.eq(self._index),
            self.wr_job.payload.ram_addr.eq(Mux(op == BlkOp.ID, self._serial_addr,
                                                region_addr(q_region))),
            self.wr_job.payload.len.eq(chunk_len(q_left)),
            self.wr_job.payload.first.eq(wr_first),
            self.wr_job.payload.status_byte.eq(final_status),
        ]
        with m.If(self.wr_job.valid & self.wr_job.ready & ~self.wr_job.payload.status):
            m.d.sync += wr_first.eq(0)

        may_consume = (q_left != 0) & ~err & ~self.reset & \
            Mux(op == BlkOp.ZERO, inflight_q < regions, landed != 0)

        # The used entry.
        wrote = Mux(dma_consumer & (status == OK), length, 0)
        m.d.comb += [
            self.used.payload.queue.eq(queue),
            self.used.payload.head.eq(head),
            self.used.payload.epoch.eq(epoch),
            self.used.payload.len.eq(Mux(writable == 0, 0,
                                         Mux(status == OK, wrote + 1, 1))),
            self.used.payload.batch_end.eq(1),
        ]

        # -- Sequencer --------------------------------------------------------------------------
        def on_reset():
            # Device reset: stop offering jobs, wait for what is in flight.
            with m.If(self.reset):
                m.next = "DRAIN"

        with m.FSM():
            with m.State("FREE"):
                m.d.comb += self.free.eq(1)
                info = self.start.payload
                with m.If(ev_start):
                    data_bytes = Signal(SUM_WIDTH)
                    m.d.comb += data_bytes.eq(Mux(info.readable > _HDR_BYTES,
                                                  info.readable - _HDR_BYTES, 0))
                    m.d.sync += [
                        queue.eq(info.queue),
                        head.eq(info.head),
                        epoch.eq(info.epoch),
                        readable.eq(info.readable),
                        writable.eq(info.writable),
                        status.eq(OK),
                        op.eq(BlkOp.NONE),
                        err.eq(0),
                        length.eq(data_bytes),
                        last_len.eq(tail(data_bytes)),
                        p_left.eq(chunks(data_bytes)),
                        q_left.eq(0),
                        inflight_p.eq(0), landed.eq(0), inflight_q.eq(0),
                        p_region.eq(0), land_region.eq(0), q_region.eq(0),
                        wr_first.eq(1),
                    ]
                    with m.If(info.bad | (info.writable == 0) | (info.readable < _HDR_BYTES)):
                        # virtio 1.2 §5.2.6: no 16-byte header or no status byte.
                        m.d.sync += [status.eq(IOERR), p_left.eq(0)]
                        m.next = "STATUS"
                    with m.Else():
                        m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += [
                    self.rd_job.valid.eq(~self.reset),
                    self.rd_job.payload.slot.eq(self._index),
                    self.rd_job.payload.ram_addr.eq(self._header_addr),
                    self.rd_job.payload.len.eq(_HDR_BYTES),
                    self.rd_job.payload.first.eq(1),
                ]
                with m.If(self.rd_job.ready & self.rd_job.valid):
                    m.d.sync += hdr_pend.eq(1)
                    m.next = "WAIT_HEADER"
                on_reset()

            def produce_readable():
                m.d.comb += [
                    readable_mode.eq(1),
                    self.rd_job.valid.eq(may_produce),
                    self.rd_job.payload.eq(rd_data),
                    p_issue.eq(self.rd_job.valid & self.rd_job.ready),
                ]
                with m.If(p_issue):
                    m.d.sync += rd_pend.bit_select(p_region, 1).eq(1)

            with m.State("WAIT_HEADER"):
                produce_readable()
                # The header and, if there is readable data, its first chunk have landed; or
                # a read failed, after which no chunk is produced (``may_produce``), so the
                # first one may never come: decode goes on to IOERR (STATUS waits for the
                # reads still in flight). Found by the fuzzer: a header in many small buffers,
                # the first unreadable, hung the slot.
                with m.If(~hdr_pend & (rd_cnt[0] == 0) &
                          ((length == 0) | (landed != 0) | err)):
                    m.next = "DECODE"
                on_reset()

            with m.State("DECODE"):
                produce_readable()
                m.d.comb += [
                    self.dec_req.valid.eq(~self.reset),
                    self.dec_req.payload.slot.eq(self._index),
                    self.dec_req.payload.readable.eq(readable),
                    self.dec_req.payload.writable.eq(writable),
                ]
                with m.If(self.dec_req.valid & self.dec_req.ready):
                    m.d.sync += dec_pend.eq(1)
                    m.next = "DECODE_WAIT"
                on_reset()

            with m.State("DECODE_WAIT"):
                produce_readable()
                with m.If(ev_dec):
                    rsp = self.dec_rsp.payload
                    new_op = Mux(err, BlkOp.NONE, rsp.op)
                    # A header (or first chunk) that could not be read is an I/O error,
                    # whatever its bytes seemed to say.
                    m.d.sync += [
                        status.eq(Mux(err, IOERR, rsp.status)),
                        op.eq(new_op),
                        length.eq(rsp.length),
                        maddr.eq(rsp.addr),
                    ]
                    with m.Switch(new_op):
                        with m.Case(BlkOp.WRITE):
                            # The producer keeps going where the speculative reads left it.
                            m.d.sync += q_left.eq(chunks(rsp.length))
                        with m.Case(BlkOp.READ):
                            m.d.sync += [
                                p_left.eq(chunks(rsp.length)),
                                q_left.eq(chunks(rsp.length)),
                                last_len.eq(tail(rsp.length)),
                                inflight_p.eq(0), landed.eq(0),
                                p_region.eq(0), q_region.eq(0),
                            ]
                        with m.Case(BlkOp.ZERO):
                            m.d.sync += [
                                p_left.eq(0),
                                q_left.eq(chunks(rsp.length)),
                                last_len.eq(tail(rsp.length)),
                                inflight_p.eq(0), landed.eq(0),
                            ]
                        with m.Case(BlkOp.ID):
                            m.d.sync += [
                                p_left.eq(0),
                                q_left.eq(rsp.length != 0),
                                last_len.eq(rsp.length),
                                inflight_p.eq(0), landed.eq(rsp.length != 0),
                                q_region.eq(0),
                            ]
                        with m.Default():
                            m.d.sync += [
                                p_left.eq(0), q_left.eq(0),
                                inflight_p.eq(0), landed.eq(0),
                            ]
                    m.next = "EXEC"
                on_reset()

            with m.State("EXEC"):
                with m.Switch(op):
                    with m.Case(BlkOp.WRITE):
                        produce_readable()
                        m.d.comb += [
                            self.mw_job.valid.eq(may_consume),
                            q_issue.eq(self.mw_job.valid & self.mw_job.ready),
                        ]
                    with m.Case(BlkOp.ZERO):
                        m.d.comb += [
                            self.mw_job.valid.eq(may_consume),
                            q_issue.eq(self.mw_job.valid & self.mw_job.ready),
                        ]
                    with m.Case(BlkOp.READ):
                        m.d.comb += [
                            self.mr_job.valid.eq(may_produce),
                            p_issue.eq(self.mr_job.valid & self.mr_job.ready),
                            self.wr_job.valid.eq(may_consume),
                            q_issue.eq(self.wr_job.valid & self.wr_job.ready),
                        ]
                    with m.Case(BlkOp.ID):
                        m.d.comb += [
                            self.wr_job.valid.eq(may_consume),
                            q_issue.eq(self.wr_job.valid & self.wr_job.ready),
                        ]
                finished = (q_left == 0) | err
                quiet = (inflight_q == 0) & ((op != BlkOp.READ) | (inflight_p == 0))
                with m.If(self.reset):
                    m.next = "DRAIN"
                with m.Elif(finished & quiet):
                    m.next = "STATUS"

            with m.State("STATUS"):
                # Every read of this request has finished (so a late read error still counts,
                # and the buffers are free); then the status byte goes out.
                with m.If(rd_quiet):
                    with m.If(writable == 0):
                        m.next = "COMPLETE"
                    with m.Else():
                        m.d.comb += [
                            self.wr_job.valid.eq(~self.reset),
                            self.wr_job.payload.status.eq(1),
                        ]
                        with m.If(self.wr_job.valid & self.wr_job.ready):
                            m.d.sync += [status.eq(final_status), st_pend.eq(1)]
                            m.next = "STATUS_WAIT"
                on_reset()

            with m.State("STATUS_WAIT"):
                with m.If(st_done & self.wr_done.payload.dropped):
                    # The status byte was not sent (Bus Master Enable clear): the used entry
                    # must not publish a byte that never landed (virtio 1.2 §2.7.8: len bytes
                    # are written before used->idx; checklist rule 87), so it is written
                    # again, now IOERR (the error is counted), once bus mastering is back; a
                    # device reset ends the wait.
                    m.next = "STATUS"
                with m.Elif(st_done):
                    m.next = "COMPLETE"
                on_reset()

            with m.State("COMPLETE"):
                m.d.comb += self.used.valid.eq(~self.reset)
                with m.If(self.used.valid & self.used.ready):
                    m.next = "FREE"
                on_reset()

            with m.State("DRAIN"):
                with m.If(~dec_pend & rd_quiet & (inflight_q == 0) & ~st_pend &
                          ((op != BlkOp.READ) | (inflight_p == 0))):
                    m.next = "FREE"


        return m
