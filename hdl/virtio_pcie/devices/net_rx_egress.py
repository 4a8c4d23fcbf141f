# SPDX-License-Identifier: BSD-2-Clause
"""Receive egress: frames from the receive buffer into the driver's buffers.

For each frame, in arrival order (virtio 1.2 §5.1.6.4, "Processing of Incoming Packets"):

1. **Steer** it to a receive queue pair: :func:`~.net_interface.rx_steer` of its flow hash over
   the pairs in use (one after reset, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET after that).
2. **Find buffers** in the :class:`~.net_rx_cache.NetRxCache`. With VIRTIO_NET_F_MRG_RXBUF the
   frame (with its 12-byte header) is spread over as many chains as it needs, each filled
   completely but the last; ``num_buffers`` says how many. Without it the frame must fit in one
   chain ("big" or "small" buffers). A frame that does not fit what the driver posted is
   dropped and counted, never truncated; a queue with no buffer drops the frame (after asking
   the engine once more) instead of holding up the frames behind it.
3. **Write the header** (``num_buffers``; DATA_VALID when VIRTIO_NET_F_GUEST_CSUM was negotiated
   and the ingress verified the checksum) into the buffer rows in front of the frame, so header
   and frame leave as one contiguous run of bytes.
4. **Scatter** that run over the chains' buffers: one DMA write per buffer touched.
5. **Complete** the chains once the statuses of all the frame's writes are back (so the used
   entries follow the data on the link), all of one frame as one batch (``batch_end`` on the
   last): the engine publishes them with one used-index update (virtio 1.2 §5.1.6.4: the driver
   must see all ``num_buffers`` buffers at once).

The buffer rows of a frame are freed when its last write status returns (the DMA engine has read
them by then), or at once for a dropped frame, in order.
"""

from amaranth import Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaError, DmaStatus, DmaWriteRequest
from ..spec.virtio import VirtioNetHdr, VirtioNetHdrFlags
from ..virtio.interface import VirtqUsed
from .net_checksum import named
from .net_interface import (
    DMA_TAG_FRAME_END, GENERATION_BITS, NET_HDR_BYTES, RX_STEER_MULTIPLIER, FrameBufferGeometry,
    RxFrame,
)
from .net_rx_cache import RxCacheAccessSignature, RxCacheGeometry

__all__ = ["NetRxEgress"]


class NetRxEgress(wiring.Component):
    """Delivers received frames into receive queue buffers.

    Parameters
    ----------
    data_width : int
    queue_count : int
    queue_pairs : int
    buffer_bytes : int
    cache_segments, fetch_depth : int
        As for :class:`~.net_rx_cache.NetRxCache`.
    frames_in_flight : int
        Frames whose writes may be in flight together.

    Members
    -------
    frame : In(stream.Signature(RxFrame(...)))
    ram : In(WritePort.Signature(...))
        The header write port of the receive buffer.
    ram_ready : In(1)
        The header write offered in this cycle is taken (see :class:`~.net_rx_buffer.NetRxBuffer`).
    wr_req : Out(stream.Signature(DmaWriteRequest))
    wr_status : In(stream.Signature(DmaStatus, always_ready=True))
        This block's share of the receive DMA client (its statuses, in issue order).
    used : Out(stream.Signature(VirtqUsed(queue_count)))
    release_row : Out(ptr_bits)
    cache : Out(RxCacheAccessSignature(...))
    mrg_rxbuf, guest_csum : In(1)
        Negotiated features.
    curr_pairs : In(range(queue_pairs + 1))
    enable : In(1)
        DRIVER_OK and no reset; frames are dropped (no buffer) otherwise.
    reset : In(1)
    generation : In(GENERATION_BITS)
        Completions of frames begun in an older generation are not sent.
    delivered, no_buffer, too_big, dma_error : Out(1)
        Event strobes.
    idle : Out(1)
        No frame in progress and no write in flight.
    """

    def __init__(self, *, data_width, queue_count, queue_pairs, buffer_bytes, cache_segments=32,
                 fetch_depth=8, frames_in_flight=32):
        geom = FrameBufferGeometry(data_width, buffer_bytes)
        cgeom = RxCacheGeometry(queue_pairs, cache_segments, fetch_depth)
        if (not isinstance(frames_in_flight, int) or not 2 <= frames_in_flight <= 256
                or 2 * frames_in_flight < cache_segments):
            raise ValueError(f"frames_in_flight must be an integer from 2 to 256 and at least "
                             f"half of cache_segments, not {frames_in_flight!r}")
        self._geom = geom
        self._cgeom = cgeom
        self._queue_count = queue_count
        self._in_flight = frames_in_flight
        super().__init__({
            "frame":       In(stream.Signature(RxFrame(geom))),
            "ram":         In(WritePort.Signature(addr_width=geom.row_bits, shape=data_width,
                                                  granularity=8)),
            "ram_ready":   In(1),
            "wr_req":      Out(stream.Signature(DmaWriteRequest)),
            "wr_status":   In(stream.Signature(DmaStatus, always_ready=True)),
            "used":        Out(stream.Signature(VirtqUsed(queue_count))),
            "release_row": Out(geom.ptr_bits),
            "cache":       Out(RxCacheAccessSignature(cgeom)),
            "mrg_rxbuf":   In(1),
            "guest_csum":  In(1),
            "curr_pairs":  In(range(queue_pairs + 1)),
            "enable":      In(1),
            "reset":       In(1),
            "generation":  In(GENERATION_BITS),
            "delivered":   Out(1),
            "no_buffer":   Out(1),
            "too_big":     Out(1),
            "dma_error":   Out(1),
            "idle":        Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g, cg = self._geom, self._cgeom
        lanes = g.beat_bytes
        cache = self.cache
        st = cache.status

        # Frames in flight: release order, completions, write errors ----------------------------
        Release = data.StructLayout({"end_row": g.ptr_bits, "drop": 1})
        Completion = data.StructLayout({"used": VirtqUsed(self._queue_count),
                                        "gen": GENERATION_BITS})
        # (None of these is cleared by a device reset: frames in flight drain through them.)
        m.submodules.releases = releases = SyncFIFOBuffered(
            width=Shape.cast(Release).width, depth=self._in_flight)
        # A frame's rows are freed as soon as its writes are back, so frames_in_flight bounds
        # only the frames being written: the frames written and waiting for their used entries
        # to be taken (the virtqueue engine may be slow to take them, e.g. behind a long host
        # latency) are bounded by the completions FIFO alone, one entry at least per frame. The
        # write errors (one per frame) and the count of frames due (to_complete) must hold that
        # many: with fewer, the errors FIFO dropped a frame's flag when full and to_complete
        # wrapped to 0 at 64, after which the completions were never sent again (issue 9).
        completion_depth = 2 * self._in_flight
        m.submodules.completions = completions = SyncFIFOBuffered(
            width=Shape.cast(Completion).width, depth=completion_depth)
        m.submodules.errors = errors = SyncFIFOBuffered(width=1, depth=completion_depth)

        # The frame being placed -------------------------------------------------------------------
        fr = Signal(RxFrame(g))
        gen = Signal(GENERATION_BITS)
        pair = Signal(cg.pair_bits)
        need = Signal(17)                       # header + frame bytes
        demands = Signal(range(cg.segments + 2))
        chains_used = Signal(cg.ptr_bits)       # k: chains the frame takes
        segs_used = Signal(cg.ptr_bits)
        bytes_used = Signal(cg.bytes_bits)
        walk_ptr = Signal(cg.ptr_bits)
        seg_ptr = Signal(cg.ptr_bits)
        remaining = Signal(17)
        ram_pos = Signal(g.byte_bits)
        chain_written = Signal(17)
        chains_left = Signal(cg.ptr_bits)
        header_row = Signal(range(g.header_rows + 1))
        release = Signal(Release)
        end_row = (fr.base_row + g.header_rows
                   + ((fr.len + lanes - 1) >> g.beat_shift))[:g.ptr_bits]
        stale = self.reset | (gen != self.generation)

        mixed = (self.frame.payload.hash * RX_STEER_MULTIPLIER)[:16]
        steer = ((mixed * self.curr_pairs) >> 16)[:cg.pair_bits]

        # What the cache shows: in IDLE the pair the waiting frame steers to, so that the first
        # chain's record is there in CHECK; in HEADER the first buffer of the frame's chains,
        # then one buffer per step.
        idle_state = Signal()
        looking = Signal()
        heading = Signal()
        step = Signal()
        m.d.comb += [
            cache.pair.eq(Mux(idle_state, steer, pair)),
            cache.chain_ptr.eq(Mux(idle_state | looking, st.first, walk_ptr)),
            cache.seg_ptr.eq(Mux(heading, st.first, seg_ptr + step)),
            cache.demand.payload.eq(pair),
            releases.w_data.eq(release),
        ]

        # The header, as it sits at the end of the frame's header rows.
        hdr = Signal(VirtioNetHdr)
        m.d.comb += [
            hdr.flags.eq(Mux(self.guest_csum & fr.csum_ok, VirtioNetHdrFlags.DATA_VALID, 0)),
            hdr.num_buffers.eq(chains_used),
        ]
        header_area = Cat(Const(0, 8 * g.header_offset), hdr.as_value())
        header_mask = Cat(Const(0, g.header_offset), Const(-1, NET_HDR_BYTES))

        entry = cache.seg
        take = named(m, Mux(entry.len < remaining, entry.len, remaining)[:17], "take")
        to_cfifo = Signal(Completion)
        m.d.comb += [
            to_cfifo.used.queue.eq(pair << 1),
            to_cfifo.used.head.eq(entry.head),
            to_cfifo.used.epoch.eq(entry.epoch),
            to_cfifo.used.len.eq(chain_written + take),
            to_cfifo.used.batch_end.eq(chains_left == 1),
            to_cfifo.gen.eq(gen),
            completions.w_data.eq(to_cfifo),
            self.wr_req.payload.host_addr.eq(entry.addr),
            self.wr_req.payload.ram_addr.eq(ram_pos[:g.byte_bits - 1]),
            self.wr_req.payload.len.eq(take),
            self.wr_req.payload.tag.eq(Mux(remaining == take, DMA_TAG_FRAME_END, 0)),
            self.wr_req.payload.imm_en.eq(0),
        ]

        def placed(m):
            """The frame is placed: drop its chains from the cache, free its rows once its
            writes are back."""
            m.d.comb += [
                cache.consume.valid.eq(~stale),
                cache.consume.payload.pair.eq(pair),
                cache.consume.payload.chains.eq(chains_used),
                cache.consume.payload.segs.eq(segs_used),
                cache.consume.payload.bytes.eq(bytes_used),
                release.end_row.eq(end_row),
                release.drop.eq(0),
                releases.w_en.eq(1),
                self.delivered.eq(~stale),
            ]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += [
                    idle_state.eq(1),
                    self.frame.ready.eq(releases.w_rdy),
                ]
                with m.If(self.frame.valid & releases.w_rdy):
                    m.d.sync += [
                        fr.eq(self.frame.payload),
                        gen.eq(self.generation),
                        pair.eq(steer),
                        need.eq(self.frame.payload.len + NET_HDR_BYTES),
                        demands.eq(0),
                    ]
                    m.next = "CHECK"

            # (Again after waiting for the engine:) read the first chain's record.
            with m.State("LOOK"):
                m.d.comb += looking.eq(1)
                m.next = "CHECK"

            with m.State("CHECK"):
                first = cache.chain
                out_of_buffers = (st.dry & ((demands != 0) | st.fresh)) | (demands > cg.segments)
                m.d.sync += [
                    chains_used.eq(1),
                    segs_used.eq(first.segs),
                    bytes_used.eq(first.cap),
                    walk_ptr.eq(st.first + first.segs),
                    header_row.eq(0),
                ]
                enough = Mux(self.mrg_rxbuf, st.bytes >= need,
                             (st.chains != 0) & (first.cap >= need))
                too_small = Mux(self.mrg_rxbuf, ~st.can_grow,
                                (st.chains != 0) & (first.cap < need))
                with m.If(stale):
                    m.next = "DROP"
                with m.Elif(~self.enable):
                    m.d.comb += self.no_buffer.eq(1)
                    m.next = "DROP"
                with m.Elif(enough):
                    # Mergeable buffers: one chain is the usual case; else count them.
                    with m.If(first.cap >= need):
                        m.next = "HEADER"
                    with m.Else():
                        m.next = "WALK"
                with m.Elif(too_small):
                    m.d.comb += self.too_big.eq(1)
                    m.next = "DROP"
                with m.Elif(st.pending != 0):
                    m.next = "LOOK"
                with m.Elif(out_of_buffers):
                    m.d.comb += self.no_buffer.eq(1)
                    m.next = "DROP"
                with m.Else():
                    m.next = "DEMAND"

            with m.State("DEMAND"):
                m.d.comb += cache.demand.valid.eq(1)
                with m.If(stale):
                    m.next = "DROP"
                with m.Elif(cache.demand.ready):
                    m.d.sync += demands.eq(demands + 1)
                    m.next = "LOOK"

            # Mergeable buffers: count the chains the frame needs (num_buffers).
            with m.State("WALK"):
                m.next = "WALK_NEXT"           # cache.chain follows walk_ptr next cycle

            with m.State("WALK_NEXT"):
                c = cache.chain
                total = bytes_used + c.cap
                m.d.sync += [
                    chains_used.eq(chains_used + 1),
                    segs_used.eq(segs_used + c.segs),
                    bytes_used.eq(total),
                    walk_ptr.eq(walk_ptr + c.segs),
                ]
                with m.If(stale):
                    m.next = "DROP"
                with m.Elif(total >= need):
                    m.next = "HEADER"
                with m.Else():
                    m.next = "WALK"

            with m.State("HEADER"):
                row_bytes = header_mask.word_select(header_row, lanes)
                m.d.comb += [
                    heading.eq(1),
                    self.ram.addr.eq((fr.base_row + header_row)[:g.row_bits]),
                    self.ram.data.eq(header_area.word_select(header_row, g.data_width)),
                    self.ram.en.eq(Mux(stale, 0, row_bytes)),
                ]
                m.d.sync += [
                    header_row.eq(header_row + self.ram_ready),
                    seg_ptr.eq(st.first),
                    remaining.eq(need),
                    ram_pos.eq((fr.base_row << g.beat_shift) + g.header_offset),
                    chain_written.eq(0),
                    chains_left.eq(chains_used),
                ]
                with m.If(stale):
                    m.next = "DROP"
                with m.Elif(self.ram_ready & (header_row == g.header_rows - 1)):
                    m.next = "SEG"

            # One buffer per cycle: one DMA write of what goes into it (nothing once the frame
            # is all placed), and the chain's completion after its last buffer.
            with m.State("SEG"):
                room = ~entry.last | completions.w_rdy
                writing = take != 0
                m.d.comb += [
                    self.wr_req.valid.eq(writing & room),
                    step.eq(room & (~writing | self.wr_req.ready)),
                ]
                with m.If(step):
                    m.d.sync += [
                        remaining.eq(remaining - take),
                        ram_pos.eq(ram_pos + take),
                        seg_ptr.eq(seg_ptr + 1),
                        chain_written.eq(Mux(entry.last, 0, chain_written + take)),
                    ]
                    with m.If(entry.last):
                        m.d.comb += completions.w_en.eq(1)
                        m.d.sync += chains_left.eq(chains_left - 1)
                    with m.If(entry.last & (chains_left == 1)):
                        placed(m)
                        m.next = "IDLE"

            with m.State("DROP"):
                m.d.comb += [
                    release.end_row.eq(end_row),
                    release.drop.eq(1),
                    releases.w_en.eq(1),
                ]
                m.next = "IDLE"

        # Write statuses (in issue order): a frame is written when its last write is back --------
        status = self.wr_status.payload
        outstanding = Signal(16)
        written = Signal(range(self._in_flight + 1))    # frames written, rows not yet freed
        to_complete = Signal(range(completion_depth + 1))   # frames written, entries not sent
        failed = Signal()                               # a write of the current frame failed
        issued = self.wr_req.valid & self.wr_req.ready
        got = self.wr_status.valid
        bad_status = got & (status.error != DmaError.OK)
        frame_written = got & ((status.tag & DMA_TAG_FRAME_END) != 0)
        m.d.sync += outstanding.eq(outstanding + issued - got)
        with m.If(frame_written):
            m.d.sync += failed.eq(0)
        with m.Elif(bad_status):
            m.d.sync += failed.eq(1)
        m.d.comb += [
            errors.w_en.eq(frame_written),
            errors.w_data.eq(failed | bad_status),
        ]

        # Free rows in order; a written frame's completions become due.
        head = data.View(Release, releases.r_data)
        freeing = releases.r_rdy & (head.drop | (written != 0))
        m.d.comb += releases.r_en.eq(freeing)
        with m.If(freeing):
            m.d.sync += self.release_row.eq(head.end_row)
        m.d.sync += written.eq(written + frame_written - (freeing & ~head.drop))

        # Completions of written frames, a frame's entries back to back.
        out = data.View(Completion, completions.r_data)
        due = (to_complete != 0) & completions.r_rdy
        gone = self.reset | (out.gen != self.generation)
        error = errors.r_data[0]
        m.d.comb += [
            self.used.valid.eq(due & ~gone),
            self.used.payload.eq(out.used),
            self.used.payload.len.eq(Mux(error, 0, out.used.len)),
        ]
        popping = due & (gone | self.used.ready)
        frame_done = popping & out.used.batch_end
        m.d.comb += [
            completions.r_en.eq(popping),
            errors.r_en.eq(frame_done),
            self.dma_error.eq(frame_done & error & ~gone),
        ]
        m.d.sync += to_complete.eq(to_complete + (freeing & ~head.drop) - frame_done)

        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & ~self.frame.valid & ~releases.r_rdy
                                 & ~completions.r_rdy & (outstanding == 0))
        return m
