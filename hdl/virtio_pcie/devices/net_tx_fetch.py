# SPDX-License-Identifier: BSD-2-Clause
"""Transmit fetch: descriptor chains of the transmit queues -> DMA reads into the transmit buffer.

Each transmit chain (virtio 1.2 §5.1.6.2: a ``virtio_net_hdr`` then the frame, in any number of
device-readable buffers) gets a *frame slot* and a place in the transmit buffer (see
:class:`~.net_interface.FrameBufferGeometry`): every readable buffer becomes one DMA read that
lands right after the previous one, so the header and the frame end up contiguous whatever the
buffer boundaries are (framing independence, virtio 1.2 §2.6.4). Reads of several frames are
in flight together; their statuses may come back in any order. Frames leave this stage in chain
order, each once all its reads have landed.
"""

from amaranth import Array, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..dma.interface import DMA_LEN_WIDTH, DMA_TAG_WIDTH, DmaError, DmaReadRequest, DmaStatus
from ..spec.ethernet import ETH_HLEN
from ..virtio.interface import VirtqSegment
from .net_checksum import named
from .net_interface import GENERATION_BITS, NET_HDR_BYTES, FrameBufferGeometry, TxFrame

__all__ = ["NetTxFetch"]

_PENDING_BITS = 6       # reads in flight per frame (a longer chain waits for statuses)


class NetTxFetch(wiring.Component):
    """Turns transmit chains into DMA reads and hands on frames whose data has landed.

    Parameters
    ----------
    data_width : int
        Data path width in bits (64, 128 or 256).
    queue_count : int
        Number of virtqueues (sets the queue index width).
    buffer_bytes : int
        Transmit buffer size.
    max_frame_bytes : int
        Largest frame accepted; longer chains are completed unsent.
    frames_in_flight : int
        Frame slots (a power of two, at most 256): chains fetched but not yet handed on.

    Members
    -------
    segment : In(stream.Signature(VirtqSegment(queue_count)))
        Chains of the transmit queues (pushed by the virtqueue engine). A chain with writable
        buffers, a total shorter than a header plus an Ethernet header, or longer than the
        largest frame, is marked bad: it is completed (length 0) and not sent.
    rd_req : Out(stream.Signature(DmaReadRequest))
    rd_status : In(stream.Signature(DmaStatus, always_ready=True))
        The read half of the transmit DMA client; the tag is the frame slot.
    frame : Out(stream.Signature(TxFrame(...)))
        Frames in chain order, once all their data is in the buffer; ``bad`` also reports a DMA
        read error.
    release_row : In(ptr_bits)
        The output stage's free pointer: rows before it (modulo the ring) are free again.
    reset : In(1)
        Device reset: chains arriving are dropped, a chain being fetched is closed as bad.
    generation : In(GENERATION_BITS)
        Stamped on each frame; the output stage completes only frames of the current one.
    idle : Out(1)
        No frame anywhere in the transmit path and no read in flight.
    """

    def __init__(self, *, data_width, queue_count, buffer_bytes, max_frame_bytes,
                 frames_in_flight=32):
        if (not isinstance(frames_in_flight, int) or frames_in_flight & (frames_in_flight - 1)
                or not 2 <= frames_in_flight <= (1 << DMA_TAG_WIDTH)):
            raise ValueError(f"frames_in_flight must be a power of two from 2 to 256, "
                             f"not {frames_in_flight!r}")
        geom = FrameBufferGeometry(data_width, buffer_bytes)
        if geom.frame_rows(max_frame_bytes) * 2 > geom.rows:
            raise ValueError(f"buffer_bytes {buffer_bytes} holds fewer than two frames of "
                             f"{max_frame_bytes} bytes")
        self._geom = geom
        self._queue_count = queue_count
        self._max_frame = max_frame_bytes
        self._slots = frames_in_flight
        super().__init__({
            "segment":     In(stream.Signature(VirtqSegment(queue_count))),
            "rd_req":      Out(stream.Signature(DmaReadRequest)),
            "rd_status":   In(stream.Signature(DmaStatus, always_ready=True)),
            "frame":       Out(stream.Signature(TxFrame(queue_count, geom))),
            "release_row": In(geom.ptr_bits),
            "reset":       In(1),
            "generation":  In(GENERATION_BITS),
            "idle":        Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geom
        slots = self._slots
        slot_bits = slots.bit_length() - 1
        max_chain = NET_HDR_BYTES + self._max_frame
        seg = self.segment.payload

        # Frame slots ------------------------------------------------------------------------------
        pending = Array(Signal(_PENDING_BITS, name=f"pending{i}") for i in range(slots))
        closed = Signal(slots)          # the chain's last segment was seen
        error = Signal(slots)           # a read of the frame failed
        m.submodules.records = records = Memory(shape=TxFrame(self._queue_count, g),
                                                depth=slots, init=[])
        rec_w = records.write_port()
        rec_r = records.read_port()
        alloc = Signal(slot_bits + 1)   # next slot to allocate
        emit = Signal(slot_bits + 1)    # next slot to hand on

        # The chain being fetched ------------------------------------------------------------------
        active   = Signal()
        slot     = Signal(slot_bits)
        pos      = Signal(g.byte_bits)  # buffer byte pointer of the chain's next byte
        total    = Signal(17)           # chain bytes so far (meaningless once bad)
        bad      = Signal()
        base_row = Signal(g.ptr_bits)
        queue    = Signal.like(seg.queue)
        head     = Signal(16)
        epoch    = Signal.like(seg.epoch)
        gen      = Signal(GENERATION_BITS)
        write_row = Signal(g.ptr_bits)  # first free row after the last frame

        def ceil_row(byte_pos):
            return ((byte_pos + g.beat_bytes - 1) >> g.beat_shift)[:g.ptr_bits]

        start     = ~active
        cur_slot  = named(m, Mux(active, slot, alloc[:slot_bits]), "cur_slot")
        cur_pos   = named(m, Mux(active, pos, (write_row << g.beat_shift) + g.header_offset)
                          [:g.byte_bits], "cur_pos")
        cur_total = Mux(active, total, 0)
        cur_bad   = active & bad
        new_total = named(m, cur_total + seg.len, "new_total")
        too_long  = named(m, new_total > max_chain, "too_long")
        is_read   = named(m, ~seg.write & ~too_long & (seg.len != 0) & ~cur_bad, "is_read")
        end_pos   = named(m, (cur_pos + seg.len[:DMA_LEN_WIDTH])[:g.byte_bits], "end_pos")
        end_row   = ceil_row(end_pos)
        space_ok  = named(m, (end_row - self.release_row)[:g.ptr_bits] <= g.rows, "space_ok")
        slot_free = (alloc - emit)[:slot_bits + 1] != slots
        pend_ok   = named(m, pending[cur_slot] != (1 << _PENDING_BITS) - 1, "pend_ok")
        # A chain that starts while another is open (the engine abandoned one) closes it first.
        blocked   = self.reset | (active & seg.first)
        can_go    = (~start | slot_free) & (~is_read | (space_ok & pend_ok))

        m.d.comb += [
            self.rd_req.valid.eq(self.segment.valid & ~blocked & can_go & is_read),
            self.rd_req.payload.host_addr.eq(seg.addr),
            self.rd_req.payload.ram_addr.eq(cur_pos[:g.byte_bits - 1]),
            self.rd_req.payload.len.eq(seg.len[:DMA_LEN_WIDTH]),
            self.rd_req.payload.tag.eq(cur_slot),
        ]
        accept = Signal()
        m.d.comb += [
            accept.eq(self.segment.valid & ~blocked & can_go & (~is_read | self.rd_req.ready)),
            self.segment.ready.eq(self.reset | accept),
        ]

        # Closing a frame: on its last segment, or forced (reset, abandoned chain).
        close      = Signal()
        close_bad  = Signal()
        close_pos  = Signal(g.byte_bits)
        close_len  = Signal(16)
        with m.If(accept):
            with m.If(start):
                m.d.sync += [
                    slot.eq(alloc[:slot_bits]),
                    base_row.eq(write_row),
                    queue.eq(seg.queue),
                    head.eq(seg.head),
                    epoch.eq(seg.epoch),
                    gen.eq(self.generation),
                ]
            m.d.sync += [
                active.eq(~seg.last),
                total.eq(new_total),
                pos.eq(Mux(is_read, end_pos, cur_pos)),
                bad.eq(cur_bad | seg.write | too_long),
            ]
            m.d.comb += [
                close.eq(seg.last),
                close_bad.eq(cur_bad | seg.write | too_long
                             | (new_total < NET_HDR_BYTES + ETH_HLEN)),
                close_pos.eq(Mux(is_read, end_pos, cur_pos)),
                close_len.eq(new_total - NET_HDR_BYTES),
            ]
        with m.Elif(active & (self.reset | (self.segment.valid & seg.first))):
            m.d.sync += active.eq(0)
            m.d.comb += [
                close.eq(1),
                close_bad.eq(1),
                close_pos.eq(pos),
                close_len.eq(0),
            ]

        close_row = ceil_row(close_pos)
        m.d.comb += [
            rec_w.addr.eq(cur_slot),
            rec_w.en.eq(close),
            rec_w.data.queue.eq(Mux(start, seg.queue, queue)),
            rec_w.data.head.eq(Mux(start, seg.head, head)),
            rec_w.data.epoch.eq(Mux(start, seg.epoch, epoch)),
            rec_w.data.base_row.eq(Mux(start, write_row, base_row)),
            rec_w.data.end_row.eq(close_row),
            rec_w.data.len.eq(close_len),
            rec_w.data.bad.eq(close_bad),
            rec_w.data.gen.eq(Mux(start, self.generation, gen)),
        ]
        with m.If(close):
            m.d.sync += [
                alloc.eq(alloc + 1),
                write_row.eq(close_row),
            ]

        # Read accounting: one count per read in flight, per slot ----------------------------------
        status = self.rd_status.payload
        for i in range(slots):
            inc = accept & is_read & (cur_slot == i)
            dec = self.rd_status.valid & (status.tag == i)
            m.d.sync += pending[i].eq(pending[i] + inc - dec)
            with m.If(accept & start & (cur_slot == i)):
                m.d.sync += error[i].eq(0)
            with m.Elif(dec & (status.error != DmaError.OK)):
                m.d.sync += error[i].eq(1)

        # Hand frames on in order (the record RAM read feeds the output register directly) ---------
        emit_slot = emit[:slot_bits]
        out_valid = Signal()
        out_error = Signal()
        can_emit = (emit != alloc) & closed.bit_select(emit_slot, 1) & (pending[emit_slot] == 0)
        m.d.comb += [
            rec_r.addr.eq(emit_slot),
            rec_r.en.eq(~out_valid | self.frame.ready),
            self.frame.valid.eq(out_valid),
            self.frame.payload.eq(rec_r.data),
            self.frame.payload.bad.eq(rec_r.data.bad | out_error),
        ]
        emitting = rec_r.en & can_emit
        with m.If(rec_r.en):
            m.d.sync += out_valid.eq(can_emit)
        with m.If(emitting):
            m.d.sync += [
                emit.eq(emit + 1),
                out_error.eq(error.bit_select(emit_slot, 1)),
            ]

        for i in range(slots):
            with m.If(close & (cur_slot == i)):
                m.d.sync += closed[i].eq(1)
            with m.Elif(emitting & (emit_slot == i)):
                m.d.sync += closed[i].eq(0)

        # Every frame holds buffer rows until the output stage frees them, so when all rows are
        # free no frame is anywhere in the transmit path (and no read is in flight).
        m.d.comb += self.idle.eq(~active & (write_row == self.release_row))
        return m
