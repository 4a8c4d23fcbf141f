# SPDX-License-Identifier: BSD-2-Clause
"""Receive buffer cache: device-writable chains fetched ahead from the receive queues.

Receive queues are *pulled*: the device asks the virtqueue engine for a chain of a given queue
(``fetch``) and gets the chain or an ``empty`` answer. Asking only when a frame is waiting would
put the engine's descriptor-fetch latency (several DMA round trips) in front of every frame, so
this cache keeps chains of each enabled pair's receive queue ready: it fetches ahead while it
has room, with several fetches in flight per queue, and stops fetching a queue once it answered
empty (until a frame for that queue asks again). A frame's own request answered empty holds
off the next one for up to ``HOLD_OFF_CYCLES``: a flood of frames to a queue without buffers
costs the host at most one fetch (a DMA read of the available ring) per period.

A chain stays in the cache until a frame uses it, so a frame that cannot be delivered (a
mergeable frame that needs more buffers than the queue has) leaves its buffers for the next
frame: nothing the driver posted is lost. A chain the cache cannot use is *returned* at once,
completed with length 0 (Linux counts it as a length error and reposts the buffer): one with
device-readable buffers (virtio 1.2 §5.1.6.4: receive buffers are device-writable), or with more
buffers than fit in the queue's share of the cache.

Storage: per receive queue a ring of ``segments`` buffer entries (address, length, head id, last
of chain) and, at each chain's first entry, the chain's total capacity and entry count.
"""

from amaranth import Array, Cat, Module, Mux, ResetInserter, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..dma.interface import DMA_LEN_WIDTH
from ..virtio.interface import EPOCH_BITS, VirtqSegment, VirtqUsed, queue_index_width
from .net_checksum import named

__all__ = ["NetRxCache", "RxCacheAccessSignature", "RxCacheGeometry", "HOLD_OFF_CYCLES"]

_CAP_BITS = DMA_LEN_WIDTH + 1           # a chain's capacity, saturating (frames are < 64 KiB)

#: After an empty answer, no new fetch of that queue for up to this long (a power of two).
HOLD_OFF_CYCLES = 128


class RxCacheGeometry:
    """Sizes shared by the cache and its user."""

    def __init__(self, queue_pairs, segments, fetch_depth):
        if not isinstance(queue_pairs, int) or not 1 <= queue_pairs <= 16:
            raise ValueError(f"queue_pairs must be an integer from 1 to 16, not {queue_pairs!r}")
        if not isinstance(segments, int) or segments & (segments - 1) or not 2 <= segments <= 64:
            raise ValueError(f"rx_cache_segments must be a power of two from 2 to 64, "
                             f"not {segments!r}")
        if not isinstance(fetch_depth, int) or not 1 <= fetch_depth <= 32:
            raise ValueError(f"rx_fetch_depth must be an integer from 1 to 32, "
                             f"not {fetch_depth!r}")
        self.pairs        = queue_pairs
        self.pair_bits    = max(1, (queue_pairs - 1).bit_length())
        self.segments     = segments
        self.seg_bits     = segments.bit_length() - 1
        self.ptr_bits     = self.seg_bits + 1
        self.fetch_depth  = fetch_depth
        self.pending_bits = fetch_depth.bit_length()
        self.bytes_bits   = _CAP_BITS + self.ptr_bits

    @property
    def SegRec(self):
        return data.StructLayout({
            "addr": 64,
            "len":  DMA_LEN_WIDTH,          # saturated: more than a frame is never needed
            "head": 16,
            "epoch": EPOCH_BITS,            # the chain's queue epoch (for its used entry)
            "last": 1,
        })

    @property
    def ChainRec(self):
        return data.StructLayout({
            "cap":  _CAP_BITS,
            "segs": self.ptr_bits,
        })

    @property
    def Status(self):
        return data.StructLayout({
            "chains":  self.ptr_bits,       # complete chains cached
            "bytes":   self.bytes_bits,     # their total capacity
            "first":   self.ptr_bits,       # entry of the oldest chain
            "pending": self.pending_bits,   # fetches asked and not answered
            "dry":     1,                   # the last answer was empty
            "fresh":   1,                   # ... and came less than a hold-off period ago
            "can_grow": 1,                  # room for another chain of the usual size
        })

    @property
    def Consume(self):
        return data.StructLayout({
            "pair":   self.pair_bits,
            "chains": self.ptr_bits,
            "segs":   self.ptr_bits,
            "bytes":  self.bytes_bits,
        })


class RxCacheAccessSignature(wiring.Signature):
    """How the receive egress uses the cache (``Out`` = egress side).

    Members
    -------
    pair : Out(pair_bits)
        The receive queue pair looked at; ``status``, ``chain`` and ``seg`` are for it.
    status : In(Status)
    chain_ptr : Out(ptr_bits)
        ``chain`` is the record of the chain starting at this entry, one cycle later.
    chain : In(ChainRec)
    seg_ptr : Out(ptr_bits)
        ``seg`` is this entry, one cycle later.
    seg : In(SegRec)
    demand : Out(stream.Signature(pair_bits))
        Fetch one more chain for this pair now (accepted when scheduled; clears ``dry``).
    consume : Out(stream.Signature(Consume, always_ready=True))
        The oldest chains of a pair were used: drop them.
    """

    def __init__(self, geometry):
        self._geom = geometry
        g = geometry
        super().__init__({
            "pair":      Out(g.pair_bits),
            "status":    In(g.Status),
            "chain_ptr": Out(g.ptr_bits),
            "chain":     In(g.ChainRec),
            "seg_ptr":   Out(g.ptr_bits),
            "seg":       In(g.SegRec),
            "demand":    Out(stream.Signature(g.pair_bits)),
            "consume":   Out(stream.Signature(g.Consume, always_ready=True)),
        })

    def __eq__(self, other):
        return type(other) is type(self) and vars(other._geom) == vars(self._geom)

    def __repr__(self):
        return "RxCacheAccessSignature(...)"


class NetRxCache(wiring.Component):
    """Fetches and holds receive chains.

    Parameters
    ----------
    queue_count : int
    queue_pairs : int
    segments : int
        Buffer entries per receive queue (a power of two).
    fetch_depth : int
        Fetches in flight per receive queue.

    Members
    -------
    segment : In(stream.Signature(VirtqSegment(queue_count)))
        Answers to ``fetch`` (receive queue ``2 * pair``).
    fetch : Out(stream.Signature(queue_index_width(queue_count)))
        Fetches: ``extra_fetch`` first, then the egress's demands, then fetches ahead.
    extra_fetch : In(stream.Signature(queue_index_width(queue_count)))
        Fetches of other queues (the control queue's polls), passed on first; their answers are
        not this block's.
    returned : Out(stream.Signature(VirtqUsed(queue_count)))
        Chains returned unused (length 0).
    access : In(RxCacheAccessSignature(...))
    curr_pairs : In(range(queue_pairs + 1))
        Pairs in use (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; 1 after reset): only their receive
        queues are fetched ahead.
    enable : In(1)
        DRIVER_OK: fetch ahead only then.
    reset : In(1)
        Device reset: forget every chain (the driver is reinitialising its rings), answers are
        dropped.
    bad_chain : Out(1)
        Strobe: a chain was returned.
    """

    def __init__(self, *, queue_count, queue_pairs, segments=32, fetch_depth=8):
        geom = RxCacheGeometry(queue_pairs, segments, fetch_depth)
        if 2 * queue_pairs > queue_count:
            raise ValueError(f"queue_count {queue_count} is too small for {queue_pairs} pairs")
        self._geom = geom
        self._queue_count = queue_count
        super().__init__({
            "segment":    In(stream.Signature(VirtqSegment(queue_count))),
            "fetch":      Out(stream.Signature(queue_index_width(queue_count))),
            "extra_fetch": In(stream.Signature(queue_index_width(queue_count))),
            "returned":   Out(stream.Signature(VirtqUsed(queue_count))),
            "access":     In(RxCacheAccessSignature(geom)),
            "curr_pairs": In(range(queue_pairs + 1)),
            "enable":     In(1),
            "reset":      In(1),
            "bad_chain":  Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geom
        P, S = g.pairs, g.segments
        acc = self.access
        seg = self.segment.payload

        # Storage ----------------------------------------------------------------------------------
        m.submodules.seg_mem = seg_mem = Memory(shape=g.SegRec, depth=P * S, init=[])
        m.submodules.chain_mem = chain_mem = Memory(shape=g.ChainRec, depth=P * S, init=[])
        # Reads see a write of the same cycle: a chain committed in the cycle the egress looks
        # at it is seen with its own record, not the one its entry held before.
        seg_w = seg_mem.write_port()
        seg_r = seg_mem.read_port(transparent_for=(seg_w,))
        chain_w = chain_mem.write_port()
        chain_r = chain_mem.read_port(transparent_for=(chain_w,))

        def entry(pair, ptr):
            return Cat(ptr[:g.seg_bits], pair) if P > 1 else ptr[:g.seg_bits]

        wr_ptr  = Array(Signal(g.ptr_bits, name=f"wr_ptr{q}") for q in range(P))
        rd_ptr  = Array(Signal(g.ptr_bits, name=f"rd_ptr{q}") for q in range(P))
        chains  = Array(Signal(g.ptr_bits, name=f"chains{q}") for q in range(P))
        nbytes  = Array(Signal(g.bytes_bits, name=f"bytes{q}") for q in range(P))
        pending = Array(Signal(g.pending_bits, name=f"pending{q}") for q in range(P))
        dry     = Array(Signal(name=f"dry{q}") for q in range(P))
        fresh   = Array(Signal(name=f"fresh{q}") for q in range(P))
        asked   = Array(Signal(name=f"asked{q}") for q in range(P))   # a demand is unanswered
        hold_off = Signal(range(HOLD_OFF_CYCLES))       # wraps: a tick every period
        m.d.sync += hold_off.eq(hold_off + 1)
        usual   = Signal(g.ptr_bits, init=1)      # most entries a chain has taken so far
        learned = Signal()                        # a chain has been seen since reset

        def used(q):
            return (wr_ptr[q] - rd_ptr[q])[:g.ptr_bits]

        # Egress access ----------------------------------------------------------------------------
        m.d.comb += [
            seg_r.addr.eq(entry(acc.pair, acc.seg_ptr)),
            acc.seg.eq(seg_r.data),
            chain_r.addr.eq(entry(acc.pair, acc.chain_ptr)),
            acc.chain.eq(chain_r.data),
            acc.status.chains.eq(chains[acc.pair]),
            acc.status.bytes.eq(nbytes[acc.pair]),
            acc.status.first.eq(rd_ptr[acc.pair]),
            acc.status.pending.eq(pending[acc.pair]),
            acc.status.dry.eq(dry[acc.pair]),
            acc.status.fresh.eq(fresh[acc.pair]),
            acc.status.can_grow.eq(used(acc.pair) + usual <= S),
        ]

        # Answers from the engine ------------------------------------------------------------------
        in_active = Signal()
        in_first  = Signal(g.ptr_bits)
        in_ptr    = Signal(g.ptr_bits)
        in_cap    = Signal(_CAP_BITS)
        in_segs   = Signal(g.ptr_bits)
        in_bad    = Signal()

        pair = (seg.queue >> 1)[:g.pair_bits]
        is_rx = named(m, ~seg.queue[0] & ((seg.queue >> 1) < P), "is_rx")
        idx = named(m, Mux(is_rx, pair, 0), "idx")
        starting = named(m, seg.first | ~in_active, "starting")
        ptr = named(m, Mux(starting, wr_ptr[idx], in_ptr), "ptr")
        first = named(m, Mux(starting, wr_ptr[idx], in_first), "first")
        room = named(m, (ptr - rd_ptr[idx])[:g.ptr_bits] < S, "room")
        seg_len = named(m, Mux(seg.len >= (1 << DMA_LEN_WIDTH), (1 << DMA_LEN_WIDTH) - 1,
                               seg.len)[:DMA_LEN_WIDTH], "seg_len")
        cap_sum = Mux(starting, 0, in_cap) + seg_len
        cap = named(m, Mux(cap_sum >= (1 << _CAP_BITS), (1 << _CAP_BITS) - 1, cap_sum)
                    [:_CAP_BITS], "cap")
        store = named(m, seg.write & is_rx & ~(~starting & in_bad) & room, "store")
        segs = named(m, (Mux(starting, 0, in_segs) + store)[:g.ptr_bits], "segs")
        bad = named(m, (~starting & in_bad) | ~store, "bad")
        beat = self.segment.valid & ~self.reset
        chain_end = beat & ~seg.empty & seg.last
        give_back = chain_end & (bad | (segs == 0))
        commit = chain_end & ~give_back
        answered = beat & (seg.empty | seg.last) & is_rx

        m.submodules.returns = returns = ResetInserter(self.reset)(
            SyncFIFOBuffered(width=Shape.cast(VirtqUsed(self._queue_count)).width, depth=4))
        give = Signal(VirtqUsed(self._queue_count))
        m.d.comb += [
            give.queue.eq(seg.queue),
            give.head.eq(seg.head),
            give.epoch.eq(seg.epoch),
            give.len.eq(0),
            give.batch_end.eq(1),
        ]
        m.d.comb += [
            self.segment.ready.eq(self.reset | ~give_back | returns.w_rdy),
            returns.w_en.eq(give_back),
            returns.w_data.eq(give),
            self.returned.valid.eq(returns.r_rdy),
            self.returned.payload.eq(returns.r_data),
            returns.r_en.eq(self.returned.ready),
            self.bad_chain.eq(give_back & returns.w_rdy),
        ]
        took = beat & self.segment.ready
        m.d.comb += [
            seg_w.addr.eq(entry(idx, ptr)),
            seg_w.en.eq(took & ~seg.empty & store),
            seg_w.data.addr.eq(seg.addr),
            seg_w.data.len.eq(seg_len),
            seg_w.data.head.eq(seg.head),
            seg_w.data.epoch.eq(seg.epoch),
            seg_w.data.last.eq(seg.last),
            chain_w.addr.eq(entry(idx, first)),
            chain_w.en.eq(took & commit),
            chain_w.data.cap.eq(cap),
            chain_w.data.segs.eq(segs),
        ]
        with m.If(took & ~seg.empty):
            m.d.sync += [
                in_active.eq(~seg.last),
                in_first.eq(first),
                in_ptr.eq(ptr + store),
                in_cap.eq(cap),
                in_segs.eq(segs),
                in_bad.eq(bad),
            ]
        with m.If(took & commit):
            m.d.sync += learned.eq(1)
            with m.If(segs > usual):
                m.d.sync += usual.eq(segs)

        # Fetch scheduling: the egress's demand first, else one queue per cycle in turn ------------
        fetch_valid = Signal()
        fetch_queue = Signal.like(self.fetch.payload)
        turn = Signal(g.pair_bits)
        free = ~fetch_valid | self.fetch.ready
        # Fetch ahead only while the answers in flight, each as long as the longest chain seen,
        # plus one more such chain, fit; one at a time until a chain has shown the size. (A
        # chain that still does not fit, because chains grew, is returned.)
        room_for = used(turn) + (pending[turn] + 2) * usual
        known = learned | (pending[turn] == 0)
        ahead = (self.enable & (turn < self.curr_pairs) & ~dry[turn] & known
                 & (pending[turn] < g.fetch_depth) & (room_for <= S))
        extra = self.extra_fetch
        m.d.comb += [
            self.fetch.valid.eq(fetch_valid),
            self.fetch.payload.eq(fetch_queue),
            extra.ready.eq(free & ~self.reset),
            acc.demand.ready.eq(free & ~self.reset & ~extra.valid),
        ]
        demanded = acc.demand.valid & acc.demand.ready
        prefetch = free & ~extra.valid & ~acc.demand.valid & ahead & ~self.reset
        with m.If(free):
            m.d.sync += fetch_valid.eq((extra.valid & extra.ready) | demanded | prefetch)
            with m.If(extra.valid):
                m.d.sync += fetch_queue.eq(extra.payload)
            with m.Elif(acc.demand.valid):
                m.d.sync += fetch_queue.eq(acc.demand.payload << 1)
            with m.Else():
                m.d.sync += fetch_queue.eq(turn << 1)
        m.d.sync += turn.eq(Mux(turn == P - 1, 0, turn + 1))
        scheduled = demanded | prefetch
        sched_pair = Mux(demanded, acc.demand.payload, turn)

        # Per-queue bookkeeping --------------------------------------------------------------------
        con = acc.consume.payload
        for q in range(P):
            commit_q = took & commit & (idx == q)
            consume_q = acc.consume.valid & (con.pair == q)
            sched_q = scheduled & (sched_pair == q)
            answer_q = took & answered & (idx == q) & (pending[q] != 0)
            m.d.sync += [
                chains[q].eq(chains[q] + commit_q - Mux(consume_q, con.chains, 0)),
                nbytes[q].eq(nbytes[q] + Mux(commit_q, cap, 0) - Mux(consume_q, con.bytes, 0)),
                pending[q].eq(pending[q] + sched_q - answer_q),
            ]
            with m.If(commit_q):
                m.d.sync += wr_ptr[q].eq(ptr + store)
            with m.If(consume_q):
                m.d.sync += rd_ptr[q].eq(rd_ptr[q] + con.segs)
            empty_q = took & seg.empty & (idx == q) & is_rx
            demand_q = demanded & (acc.demand.payload == q)
            with m.If(empty_q):
                m.d.sync += dry[q].eq(1)
            with m.Elif(commit_q | demand_q):
                m.d.sync += dry[q].eq(0)
            # Only a demand answered empty holds off the next one (an empty answer to a fetch
            # ahead says nothing about the buffers posted since).
            with m.If(empty_q & (asked[q] | demand_q)):
                m.d.sync += fresh[q].eq(1)
            with m.Elif(hold_off == 0):
                m.d.sync += fresh[q].eq(0)
            with m.If(demand_q):
                m.d.sync += asked[q].eq(1)
            with m.Elif(answer_q & (pending[q] == 1)):
                m.d.sync += asked[q].eq(0)

        # Device reset: forget everything (placed last: it overrides the updates above).
        with m.If(self.reset):
            m.d.sync += [in_active.eq(0), fetch_valid.eq(0), usual.eq(1), learned.eq(0)]
            for q in range(P):
                m.d.sync += [wr_ptr[q].eq(0), rd_ptr[q].eq(0), chains[q].eq(0),
                             nbytes[q].eq(0), pending[q].eq(0), dry[q].eq(0),
                             fresh[q].eq(0), asked[q].eq(0)]
        return m
