# SPDX-License-Identifier: BSD-2-Clause
"""The avail side of split virtqueues: doorbells, avail ring, descriptor chains, validation.

References: virtio 1.2 §2.7 "Split Virtqueues" (§2.7.5 descriptor table, §2.7.5.3 indirect
descriptors, §2.7.6 available ring, §2.7.10 available buffer notification suppression) and the
project's virtio checklist §1.L-1.N (rules 76-99).
"""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DMA_LEN_WIDTH, DMA_RAM_ADDR_WIDTH, DmaError, DmaRamWriteSignature
from ..spec.virtio import (VirtqAvailHeader, VirtqDesc, VirtqDescFlags,
                           VIRTQ_IDX_BYTES, byte_offset, byte_size, virtq_avail_event_offset,
                           virtq_avail_ring_offset)
from .desc_prefetcher import DescPrefetcher, SlotState
from .engine_signatures import (EPOCH_BITS, AvailSeen, ChainWriteSignature,
                                DmaRequesterSignature, QueueConfigWord, QueueOp, QueueOpKind,
                                VirtqErrorCode, VirtqErrorReport)
from .interface import Doorbell, VirtqSegment, queue_index_width

__all__ = ["RingWalker", "WalkerCounts", "WALKER_AVAIL_HDR_ADDR", "WALKER_AHEAD_HDR_ADDR"]

#: Bytes of one avail ring entry (a head index).
_ENTRY_BYTES = virtq_avail_ring_offset(1) - virtq_avail_ring_offset(0)

#: Byte address in the DMA read buffer where avail->flags/idx land. It is past the walker's RAM
#: and captured straight into a register (the engine's other block, the used writer, snoops a
#: different address).
WALKER_AVAIL_HDR_ADDR = 0xFF00
#: Where the look-ahead refresh's avail->flags/idx land (a beat of its own at every width).
WALKER_AHEAD_HDR_ADDR = 0xFF40

_DESC_BYTES = byte_size(VirtqDesc)

#: One-cycle increments of the engine's counters.
WalkerCounts = data.StructLayout({
    "doorbell":    1,
    "avail_read":  1,
    "desc_read":   1,
    "event_write": 1,
    "chain":       1,
    "chain_pulled": 1,     # the chain was for a pulled port
    "ahead_read":  1,      # an avail read of the look-ahead refresh
})


class RingWalker(wiring.Component):
    """Turns doorbells (pushed queues) and fetches (pulled queues) into validated chains.

    Work is done one *job* at a time, for one request port, in a *session*: each pushed port
    has one (serving one queue at a time), each queue of a pulled port its own, so that a device
    pulling from several queues of a port in turn (the receive queues of a multiqueue NIC) costs
    no re-read of any of them. A *refresh* reads ``avail->idx`` and then, only after that read
    completed, the new ring entries (up to ``avail_batch``, never beyond the index seen; virtio
    checklist rule 85) into the session's entry cache; a *walk* follows one chain from the cache
    through the descriptor table and indirect table, checks it and writes its segments to the
    port's chain FIFO, committed only if the chain is valid. Descriptors are read
    ``walk_window`` at a time into the session's window, aligned to its size; a window stays
    usable for every chain of the refresh that preceded its read (descriptors of published,
    unfinished chains do not change) and is dropped at the session's next refresh. An indirect
    table is read whole. With ``prefetch_slots``, a :class:`~.desc_prefetcher.DescPrefetcher`
    reads the head windows and indirect tables of a pushed port's cached batch ahead, several
    chains at a time; the walk uses what it finds complete there and reads the rest itself.
    Ports with a job are served in turn; consecutive walks of one queue skip reloading its
    configuration and ``last_avail_idx``.

    Look-ahead refresh: a pushed session's refresh *arms* a second reader (one for the whole
    walker, on ``ahead_dma``) that, while the walks use the cached entries, reads the next
    batch into the session's second entry cache: the ring entries right away when the index
    seen already covers more, else ``avail->idx`` first (once per batch; the same rules as a
    refresh). When the cache runs out and that batch is complete, the session swaps caches and
    walks on instead of giving the queue back, unless another queue of the port is pending. The
    prefetcher has run on into that batch since it landed (it extends the prefetcher's batch),
    and the session's window is kept if its read went out after every entry of the new batch
    had been seen (dropped otherwise, as at a refresh). The
    look-ahead writes no ``avail_event``: a queue that runs dry is refreshed by the walker
    itself, with the EVENT_IDX write and re-read below. A queue operation, reset, stop or the
    end of the session drops it; a failed look-ahead read is dropped (the walker's own
    refresh reads again and reports what it finds).

    Pushed queues: a doorbell sets the queue's pending bit (merged, never lost); a scanner gives
    a pending queue to its port's idle session, clearing the bit; the session walks the cached
    chains, then gives the queue back as pending so that other queues get their turn and the
    ring is polled again. A refresh that finds nothing new ends the session; with
    VIRTIO_F_EVENT_IDX it first writes ``avail_event = last_avail_idx`` and reads ``avail->idx``
    once more after that write was sent (virtio 1.2 §2.7.10; checklist rule 95), so a driver
    that published just before the write is seen. On DRIVER_OK and on queue enable every
    enabled pushed queue is scanned once (checklist rule 98).

    Pulled queues: a fetch names a queue; the answer is one chain or one ``empty`` beat. No
    ``avail_event`` is written for them (their doorbells are not needed).

    Fast refill (``fast_refill``, pushed queues): a refresh's batch is read across the ring's
    end in two reads after one ``avail->idx`` read, and the session's descriptor window goes
    out with the ring entries (the *early window*, where the last heads were: Linux hands out
    the descriptors it freed last first), so that the prefetcher finds a refill's heads there.
    With VIRTIO_F_NOTIFICATION_DATA, a doorbell's avail index (``notify.payload.idx``) is kept
    per queue until the queue's next refresh, which then sends the ring read (and the early
    window) right behind its ``avail->idx`` read instead of one round trip later: the driver
    wrote every entry before that index before it rang, so any read issued after the doorbell
    sees them (virtio 1.2 §2.9; Linux writes ``avail_idx_shadow``). The batch is taken only
    when ``avail->idx`` has come back at or beyond that index; a doorbell whose index the
    driver had not published (a broken driver) costs the ring's read again as a plain refresh
    from the index read, and nothing read early is used. A hint is used once: a queue
    operation, a device reset and the refresh that takes it drop it.

    Any validation failure, or a DMA error, stops the queue: nothing of the bad chain is
    committed, the queue is skipped from then on, and ``error`` reports the code (a pulled
    fetch gets ``empty``).

    Parameters
    ----------
    data_width : int
    queue_count : int
    max_queue_size : int
    port_of_queue : tuple of int
        Request port of each queue.
    pulled_ports : tuple of int
        Ports whose queues the device pulls with ``fetch``.
    max_chain : int
        Longest chain accepted, in descriptors (direct ones, the indirect one and table ones).
    max_indirect : int
        Most entries in an indirect table.
    avail_batch : int
        Avail ring entries read per refresh.
    desc_window : int
        Descriptors the prefetcher reads per head window.
    avail_lookahead : bool
        Read a pushed queue's next avail batch while walking the one in hand (see above).
    walk_window : int, optional
        Descriptors a walk reads when the descriptor it needs is in no window it has
        (default ``desc_window``); the window is aligned to its size when that is a power of two.
    prefetch_slots : int
        Chains whose head window and indirect table are read ahead (0: none, a power of two).
    prefetch_table : int
        Largest indirect table read ahead, in descriptors (larger ones are read when walked).
    fast_refill : bool
        See above (needs ``prefetch_slots``).

    Members
    -------
    dma : Out(DmaRequesterSignature())
        The walker's own reads and writes; tags are 0 (one request in flight at a time).
    prefetch_dma : Out(DmaRequesterSignature())
        The descriptor prefetcher's reads (several in flight; see :mod:`.desc_prefetcher`).
    ahead_dma : Out(DmaRequesterSignature())
        The look-ahead refresh's reads (one in flight, tag 0; no writes).
    rd_ram : In(DmaRamWriteSignature(data_width))
        The DMA engine's writes into the engine's read buffer (all of them; the walker keeps
        those for its own addresses).
    op : In(stream.Signature(QueueOp(queue_count), always_ready=True))
        Queue configuration changes, applied while ``hold`` is high and ``idle``.
    hold : In(1)
        Do not start another job.
    idle : Out(1)
        No job and no DMA in flight (the prefetcher's and the look-ahead's included).
    reset : In(1)
        Device reset: jobs end after their DMA in flight; all state is cleared.
    driver_ok, event_idx, indirect_desc : In(1)
    notify : In(stream.Signature(Doorbell(queue_count), always_ready=True))
        Doorbells; with ``has_idx`` (VIRTIO_F_NOTIFICATION_DATA) the avail index the driver had
        published when it rang (used with ``fast_refill``, see there).
    enabled : In(queue_count)
    epoch : In(queue_count * EPOCH_BITS)
    stop : In(stream.Signature(queue_index_width(queue_count), always_ready=True))
        Another block stopped a queue (a used-ring DMA error).
    chain : Out(ChainWriteSignature(queue_count)).array(ports)
    fetch : In(stream.Signature(queue_index_width(queue_count))).array(ports)
        Used on pulled ports only (never ready on pushed ports).
    error : Out(stream.Signature(VirtqErrorReport(queue_count), always_ready=True))
    seen : Out(stream.Signature(AvailSeen(queue_count), always_ready=True))
        A pushed queue's avail entries up to ``idx`` are in a session's cache (its ring read
        completed, or a look-ahead batch was taken over): the used writer's count of chains in
        hand. Strobes; one may be lost when two sessions take batches in one cycle (the next
        batch of that queue restores the count, which is absolute).
    counts : Out(WalkerCounts)
    """

    def __init__(self, *, data_width, queue_count, max_queue_size, port_of_queue, pulled_ports,
                 max_chain, max_indirect, avail_batch, desc_window, prefetch_slots=16,
                 prefetch_table=16, walk_window=None, avail_lookahead=True, fast_refill=False):
        self._dw            = data_width
        self._qc            = queue_count
        self._max_size      = max_queue_size
        self._port_of_queue = tuple(port_of_queue)
        self._ports         = max(self._port_of_queue) + 1
        self._pulled        = frozenset(pulled_ports)
        self._max_chain     = max_chain
        self._max_indirect  = max_indirect
        self._batch         = avail_batch
        self._window        = desc_window
        self._walk_window   = desc_window if walk_window is None else walk_window
        self._lookahead     = bool(avail_lookahead)
        self._fast_refill   = bool(fast_refill) and bool(prefetch_slots)
        self._beat_bytes    = data_width // 8
        qw = queue_index_width(queue_count)

        # Sessions: one per pushed port (the queue it serves changes), one per queue of a pulled
        # port (a device pulling from several queues of a port, e.g. the receive queues of a
        # multiqueue NIC, alternates between them: a shared session would re-read avail->idx
        # and the ring, and a shared window the descriptors, at every switch).
        self._sessions = tuple(
            s for p in range(self._ports)
            for s in ([(p, q) for q, pq in enumerate(self._port_of_queue) if pq == p]
                      if p in self._pulled else [(p, None)]))

        beat = self._beat_bytes
        align = lambda n: (n + beat - 1) // beat * beat
        # Read buffer: the indirect table scratch, then each session's descriptor window, then
        # each session's avail entry cache (then the prefetcher's slots).
        self._table_bytes = align(_DESC_BYTES * max_indirect)
        self._win_bytes   = align(_DESC_BYTES * self._walk_window)
        self._desc_bytes  = self._table_bytes + len(self._sessions) * self._win_bytes
        self._cache_bytes = align(_ENTRY_BYTES * avail_batch)
        # A pushed port's session has a second entry cache: the look-ahead refresh fills one
        # while the walks use the other.
        self._pushed_sess = tuple(i for i, (_p, q) in enumerate(self._sessions) if q is None)
        self._ram_bytes   = self._desc_bytes + \
            (len(self._sessions) + len(self._pushed_sess)) * self._cache_bytes
        # Prefetch slots: a head window and an indirect table each, 16-byte aligned.
        self._pf_slots    = prefetch_slots
        self._pf_table    = min(prefetch_table, max_indirect)
        self._pf_base     = (self._ram_bytes + max(16, beat) - 1) // max(16, beat) * max(16, beat)
        if prefetch_slots:
            self._ram_bytes = self._pf_base + align(
                prefetch_slots * (desc_window + self._pf_table) * _DESC_BYTES)
        if self._ram_bytes > WALKER_AVAIL_HDR_ADDR:
            raise ValueError(f"max_indirect {max_indirect}, desc_window {desc_window} and "
                             f"avail_batch {avail_batch} need {self._ram_bytes} bytes of read "
                             f"buffer, more than {WALKER_AVAIL_HDR_ADDR}")
        ports = self._ports
        super().__init__({
            "dma":           Out(DmaRequesterSignature()),
            "prefetch_dma":  Out(DmaRequesterSignature()),
            "ahead_dma":     Out(DmaRequesterSignature()),
            "rd_ram":        In(DmaRamWriteSignature(data_width)),
            "op":            In(stream.Signature(QueueOp(queue_count), always_ready=True)),
            "hold":          In(1),
            "idle":          Out(1),
            "reset":         In(1),
            "driver_ok":     In(1),
            "event_idx":     In(1),
            "indirect_desc": In(1),
            "notify":        In(stream.Signature(Doorbell(queue_count), always_ready=True)),
            "enabled":       In(queue_count),
            "epoch":         In(queue_count * EPOCH_BITS),
            "stop":          In(stream.Signature(qw, always_ready=True)),
            "chain":         Out(ChainWriteSignature(queue_count)).array(ports),
            "fetch":         In(stream.Signature(qw)).array(ports),
            "error":         Out(stream.Signature(VirtqErrorReport(queue_count),
                                                  always_ready=True)),
            "seen":          Out(stream.Signature(AvailSeen(queue_count), always_ready=True)),
            "counts":        Out(WalkerCounts),
        })

    def elaborate(self, platform):
        m = Module()
        qc, ports, dw = self._qc, self._ports, self._dw
        beat = self._beat_bytes
        beat_shift = beat.bit_length() - 1
        batch, window, pf_window = self._batch, self._walk_window, self._window
        # Window placement: aligned to its size when that is a power of two.
        walk_align = window if window & (window - 1) == 0 else 1
        max_chain, max_indirect = self._max_chain, self._max_indirect

        pushed_ports = [p for p in range(ports) if p not in self._pulled]
        port_mask = [Const(sum(1 << q for q, pq in enumerate(self._port_of_queue) if pq == p),
                           qc) for p in range(ports)]
        pushed_mask = Const(sum(1 << q for q, pq in enumerate(self._port_of_queue)
                                if pq not in self._pulled), qc)

        # --- per-queue state -----------------------------------------------------------------
        # Ring configuration and last_avail_idx in RAM; the bits the scanner needs every cycle
        # (pending doorbell, stopped by an error, avail_event up to date) in flip-flops.
        m.submodules.cfg_mem = cfg_mem = memory.Memory(shape=QueueConfigWord, depth=qc, init=[])
        m.submodules.la_mem  = la_mem  = memory.Memory(shape=16, depth=qc, init=[])
        cfg_wp, cfg_rp = cfg_mem.write_port(), cfg_mem.read_port()
        la_wp,  la_rp  = la_mem.write_port(),  la_mem.read_port()
        pending   = Signal(qc)
        stopped   = Signal(qc)
        event_cur = Signal(qc)      # avail_event == last_avail_idx in host memory
        # VIRTIO_F_NOTIFICATION_DATA: the last doorbell's avail index per queue, until used.
        hint_ok   = Signal(qc)
        if self._fast_refill:
            m.submodules.hint_mem = hint_mem = memory.Memory(shape=16, depth=qc, init=[])
            hint_wp = hint_mem.write_port()
            hint_rp = hint_mem.read_port(transparent_for=(hint_wp,))

        # --- read buffer: indirect table, per-session descriptor windows and avail caches ------
        ram_depth = self._ram_bytes // beat
        m.submodules.rd_mem = rd_mem = memory.Memory(shape=dw, depth=ram_depth, init=[])
        rd_wp = rd_mem.write_port(granularity=8)
        rd_rp = rd_mem.read_port()
        rd_ram = self.rd_ram
        m.d.comb += [
            rd_wp.addr.eq(rd_ram.addr),
            rd_wp.data.eq(rd_ram.data),
            rd_wp.en.eq(Mux(rd_ram.en & (rd_ram.addr < ram_depth), rd_ram.be, 0)),
        ]
        avail_hdr = Signal(VirtqAvailHeader)
        hdr_bytes = byte_size(VirtqAvailHeader)
        with m.If(rd_ram.en & (rd_ram.addr == WALKER_AVAIL_HDR_ADDR >> beat_shift)):
            for i in range(hdr_bytes):
                with m.If(rd_ram.be[i]):
                    m.d.sync += avail_hdr.as_value().word_select(i, 8).eq(
                        rd_ram.data.word_select(i, 8))
        ah_hdr = Signal(VirtqAvailHeader)
        with m.If(rd_ram.en & (rd_ram.addr == WALKER_AHEAD_HDR_ADDR >> beat_shift)):
            for i in range(hdr_bytes):
                with m.If(rd_ram.be[i]):
                    m.d.sync += ah_hdr.as_value().word_select(i, 8).eq(
                        rd_ram.data.word_select(i, 8))
        cache_base_beat = self._desc_bytes // beat
        cache_stride    = self._cache_bytes // beat

        # --- descriptor prefetcher (a second read port of the read buffer) --------------------
        use_pf = bool(self._pf_slots)
        if use_pf:
            m.submodules.prefetch = pf = DescPrefetcher(
                data_width=dw, queue_count=qc, ports=ports, batch=batch,
                slots=self._pf_slots, window=pf_window, table=self._pf_table,
                max_indirect=max_indirect, slot_beat=self._pf_base // beat,
                session_window=self._walk_window if self._fast_refill else 0)
            pf_rp = rd_mem.read_port()
            wiring.connect(m, pf=pf.dma, walker=wiring.flipped(self.prefetch_dma))
            m.d.comb += [pf_rp.addr.eq(pf.ram_addr), pf.ram_data.eq(pf_rp.data),
                         pf.indirect_desc.eq(self.indirect_desc)]
            pf_live = Signal()     # the prefetched batch is the owner session's current cache
            # The prefetcher has the look-ahead's batch too (as an extension of the current
            # one): a swap to it keeps the prefetcher running instead of restarting it.
            pf_ext = Signal()
            m.d.comb += pf.stop.eq(~pf_live | self.hold | self.reset)

        # --- sessions (one per pushed port, one per queue of a pulled port) --------------------
        # A session holds a queue's cached avail entries and a descriptor window read since
        # those entries were (the window is dropped whenever the session's cache is refilled).
        qw = queue_index_width(qc)
        sessions = self._sessions
        n_sess = len(sessions)
        sess_of_port = {p: i for i, (p, q) in enumerate(sessions) if q is None}
        sess_valid = [Signal(name=f"sess_valid_{s}") for s in range(n_sess)]
        sess_q     = [Signal(qw, name=f"sess_q_{s}") for s in range(n_sess)]
        cache_n    = [Signal(range(batch + 1), name=f"cache_n_{s}") for s in range(n_sess)]
        cache_pos  = [Signal(range(batch + 1), name=f"cache_pos_{s}") for s in range(n_sess)]
        win_valid  = [Signal(name=f"win_valid_{s}") for s in range(n_sess)]
        win_base   = [Signal(16, name=f"win_base_{s}") for s in range(n_sess)]
        win_n      = [Signal(range(window + 1), name=f"win_n_{s}") for s in range(n_sess)]
        # An avail index seen (its avail->idx read completed) before the window's read went
        # out: the window holds the current descriptors of every chain before it.
        win_obs    = [Signal(16, name=f"win_obs_{s}") for s in range(n_sess)]
        fetch_valid = [Signal(name=f"fetch_valid_{p}") for p in range(ports)]
        fetch_q     = [Signal(qw, name=f"fetch_q_{p}") for p in range(ports)]
        pf_sess = Signal(range(n_sess))     # the session whose batch the prefetcher reads
        # Per pulled port: the session of the queue its pending fetch names (the port's first
        # session for a queue not on the port, which the job refuses before touching it).
        fetch_sess = {}
        for p in self._pulled:
            mine = [i for i, (sp, _q) in enumerate(sessions) if sp == p]
            if not mine:
                continue
            fetch_sess[p] = fs = Signal(range(n_sess), name=f"fetch_sess_{p}")
            m.d.comb += fs.eq(mine[0])
            with m.Switch(fetch_q[p]):
                for i in mine:
                    with m.Case(sessions[i][1]):
                        m.d.comb += fs.eq(i)

        # --- the job ---------------------------------------------------------------------------
        job_port   = Signal(range(ports))
        job_sess   = Signal(range(n_sess))
        job_q      = Signal(qw)
        job_pulled = Signal()
        job_walk   = Signal()
        job_epoch  = Signal(EPOCH_BITS)
        cfg        = Signal(QueueConfigWord)
        last_avail = Signal(16)
        recheck    = Signal()
        # cfg, last_avail and job_epoch hold queue `loaded_q`'s (of port `loaded_port`) since
        # its last LOAD1: a walk of the same queue skips the two cycles of reloading them.
        loaded      = Signal()
        loaded_q    = Signal(qw)
        loaded_port = Signal(range(ports))
        pos        = Signal(range(batch + 1))      # the job's session's cache_pos / cache_n
        count_n    = Signal(range(batch + 1))
        n_new      = Signal(16)
        fetch_n    = Signal(range(batch + 1))
        ring_ok    = Signal()
        # reads of the batch in flight (fast_refill): its ring reads, and its avail->idx read
        # when they went out on a doorbell's index
        ring_left  = Signal(range(4))
        early      = Signal()       # this refresh's ring reads went out on a doorbell's index
        hint       = Signal(16)     # ... that index (the job's queue's, loaded in LOAD1)
        hint_n     = Signal(16)
        hint_use   = Signal()
        m.d.comb += hint_n.eq(hint - last_avail)
        ring_add   = Signal(range(3))    # ... issued this cycle
        fetch_a    = Signal(range(batch + 1))   # entries of the batch up to the ring's end
        fetch_from = Signal(range(batch + 1))   # ... the first of them still to read
        ewin_busy  = Signal()       # the early window's read is in flight
        ewin_ok    = Signal()       # ... it landed without error (for the batch being read)
        # Batches taken into a session's cache (`seen`): by the walker itself (a ring read, or
        # a swap while walking) or by a session that waited for the look-ahead; the first wins
        # a cycle in which both happen (the count is absolute: the queue's next batch mends it).
        seen_f = Signal(data.StructLayout({"valid": 1, "queue": qw, "idx": 16}))
        seen_w = Signal.like(seen_f)
        m.d.comb += [self.seen.valid.eq(seen_f.valid | seen_w.valid),
                     self.seen.payload.queue.eq(Mux(seen_f.valid, seen_f.queue, seen_w.queue)),
                     self.seen.payload.idx.eq(Mux(seen_f.valid, seen_f.idx, seen_w.idx))]

        # The job's session's window (descriptor slots from `win_slot` of the read buffer).
        j_win_valid = Signal()
        j_win_base  = Signal(16)
        j_win_n     = Signal(range(window + 1))
        win_slot    = Signal(16)
        # A pushed session's two entry caches: `cache_sel` names the one its walks use (the
        # look-ahead refresh fills the other). `j_cache_beat`: the job's session's current one.
        cache_sel   = [Signal(name=f"cache_sel_{s}") for s in range(n_sess)]
        alt_index   = {i: n_sess + k for k, i in enumerate(self._pushed_sess)}
        j_cache_beat = Signal(16)
        with m.Switch(job_sess):
            for i in range(n_sess):
                with m.Case(i):
                    m.d.comb += [j_win_valid.eq(win_valid[i]), j_win_base.eq(win_base[i]),
                                 j_win_n.eq(win_n[i]),
                                 win_slot.eq((self._table_bytes + i * self._win_bytes)
                                             // _DESC_BYTES)]
                    if i in alt_index:
                        m.d.comb += j_cache_beat.eq(
                            cache_base_beat + Mux(cache_sel[i], alt_index[i], i) * cache_stride)
                    else:
                        m.d.comb += j_cache_beat.eq(cache_base_beat + i * cache_stride)
        if self._fast_refill:
            # The prefetcher takes the heads its session's window holds from there (the early
            # window, RD_EWIN) instead of reading a window of its own for each.
            with m.Switch(pf_sess):
                for i in range(n_sess):
                    with m.Case(i):
                        m.d.comb += [pf.win.valid.eq(win_valid[i]), pf.win.base.eq(win_base[i]),
                                     pf.win.n.eq(win_n[i]), pf.win.obs.eq(win_obs[i]),
                                     pf.win.desc.eq((self._table_bytes + i * self._win_bytes)
                                                    // _DESC_BYTES)]

        # --- look-ahead refresh (pushed sessions, one at a time) ------------------------------
        # While a pushed session walks its cached entries, the next batch's avail->idx read (only
        # if the index seen last does not already cover more entries) and ring read go out for
        # it into its other cache, so that a streaming queue goes on walking when the cache runs
        # out instead of waiting two round trips. The slot is *armed* by the session's refresh
        # (and again by each swap) with what the walker knows then: queue, ring address, the
        # index after the cached entries (`ah_from`) and the index seen (`ah_seen`).
        ah_arm      = Signal()          # strobe from the walker: the fields below are new
        ah_inflight = Signal()          # a look-ahead read is in flight (or being issued)
        ah_ready    = Signal()          # `ah_n` entries from `ah_from` are in the other cache
        ah_armed    = Signal()          # armed, no read in flight yet
        ah_none     = Signal()          # looked, found nothing (IDLE or NONE)
        ah_desc     = Signal(64)
        # A pushed session whose cache ran out while the look-ahead was still reading for it
        # waits for it (no job for the walker meanwhile) instead of refreshing itself.
        sess_wait   = [Signal(name=f"sess_wait_{s}") for s in range(n_sess)]
        pf_starting = Signal()          # the walker starts the prefetcher this cycle
        ah_kill     = Signal()          # a queue operation, reset or stop since the arming
        ah_sess     = Signal(range(n_sess))
        ah_q        = Signal(qw)
        ah_drv      = Signal(64)
        ah_size     = Signal(16)
        ah_from     = Signal(16)
        ah_seen     = Signal(16)
        ah_n        = Signal(range(batch + 1))
        ah_dead     = Signal()
        ah_left     = Signal()          # the armed session still has entries to walk
        ah_cache_beat = Signal(16)
        with m.Switch(ah_sess):
            for i in range(n_sess):
                with m.Case(i):
                    m.d.comb += ah_left.eq(cache_pos[i] != cache_n[i])
                    m.d.comb += ah_dead.eq(ah_kill | ~sess_valid[i] | (sess_q[i] != ah_q) |
                                           stopped.bit_select(ah_q, 1) |
                                           ~self.enabled.bit_select(ah_q, 1))
                    if i in alt_index:
                        m.d.comb += ah_cache_beat.eq(
                            cache_base_beat + Mux(cache_sel[i], i, alt_index[i]) * cache_stride)
        ah_for_job = Signal()         # the look-ahead serves the job's session and queue
        m.d.comb += ah_for_job.eq((ah_sess == job_sess) & ~ah_dead & (ah_q == job_q))
        # At a swap to the look-ahead's batch (a new look at the ring), a session's window stays
        # valid if its read went out after every entry of that batch had been seen: the driver
        # wrote those chains' descriptors before publishing them, and may not change them
        # until the device returns them. Otherwise it is dropped, as at a refresh.
        win_keep = []
        for i in range(n_sess):
            d = (win_obs[i] - (ah_from + ah_n)[:16])[:16]
            win_keep.append(Signal(name=f"win_keep_{i}"))
            m.d.comb += win_keep[i].eq(win_valid[i] & ~d[15])
        job_pf    = Signal()          # this chain has a prefetch slot (to release when done)
        sw_valid  = Signal()          # this chain's prefetched head window
        sw_n      = Signal(range(pf_window + 1))
        sw_ram    = Signal(16)        # its first descriptor slot in the read buffer
        st_valid  = Signal()          # this chain's prefetched indirect table
        st_ram    = Signal(16)
        tbl_ram   = Signal(16)        # slot of the table being walked
        desc_idx  = Signal(16)        # slot of the descriptor being read

        head       = Signal(16)
        cur        = Signal(16)
        in_table   = Signal()
        table_n    = Signal(range(max_indirect + 1))
        dcount     = Signal(17)
        tcount     = Signal(range(max_indirect + 2))
        total      = Signal(range(max_chain + 2))
        seen_write = Signal()
        held       = Signal(VirtqSegment(qc))
        held_valid = Signal()
        desc_bits  = Signal(8 * _DESC_BYTES)
        desc       = VirtqDesc(desc_bits)
        part       = Signal(range(max(2, 8 * _DESC_BYTES // dw + 1)))
        err_code   = Signal(VirtqErrorCode)
        tbl_addr   = Signal(64)
        tbl_len    = Signal(32)

        size      = cfg.size
        size_mask = Signal(16)
        m.d.comb += size_mask.eq(size - 1)

        # Chain FIFO write side, shared by all ports; `en`/`commit`/`discard` go to job_port's.
        ch_data    = Signal.like(self.chain[0].data)
        ch_en      = Signal()
        ch_commit  = Signal()
        ch_discard = Signal()
        for p in range(ports):
            sel = job_port == p
            m.d.comb += [
                self.chain[p].data.eq(ch_data),
                self.chain[p].en.eq(ch_en & sel),
                self.chain[p].commit.eq(ch_commit & sel),
                self.chain[p].discard.eq(ch_discard & sel),
            ]
        space = Signal()
        with m.Switch(job_port):
            for p in range(ports):
                with m.Case(p):
                    m.d.comb += space.eq(self.chain[p].space)

        # DMA requests (one at a time, tag 0; and the early window's read, tag 1, see RD_EWIN).
        rd_req, wr_req = self.dma.rd_req, self.dma.wr_req
        rd_done = self.dma.rd_status.valid & ~self.dma.rd_status.payload.tag[0]
        wr_done = self.dma.wr_status.valid
        rd_ok   = self.dma.rd_status.payload.error == DmaError.OK
        wr_ok   = self.dma.wr_status.payload.error == DmaError.OK
        if self._fast_refill:
            with m.If(self.dma.rd_status.valid & self.dma.rd_status.payload.tag[0]):
                m.d.sync += [ewin_busy.eq(0), ewin_ok.eq(rd_ok)]
            # A batch's ring reads (one, or two when it wraps the ring; and its avail->idx read
            # when they went out on a doorbell's index): only they are in flight (tag 0) from
            # RD_RING (RD_IDX) until WAIT_RING is done with them. `ring_add`: issued now.
            ring_sub = Signal()
            m.d.comb += ring_sub.eq(rd_done & (ring_left != 0))
            m.d.sync += ring_left.eq(ring_left + ring_add - ring_sub)
            with m.If(ring_sub):
                m.d.sync += ring_ok.eq(ring_ok & rd_ok)

        m.d.comb += [cfg_rp.addr.eq(job_q), la_rp.addr.eq(job_q)]
        if self._fast_refill:
            m.d.comb += hint_rp.addr.eq(job_q)

        def read_window(around, tag=0):
            """Request the job's session window: ``window`` descriptors aligned to its size
            around descriptor ``around``, cut at the table's end, into the session's window
            slot. Returns the window's first descriptor and its length."""
            base = Signal(16)
            n = Signal(range(window + 1))
            m.d.comb += [base.eq(around & ~(walk_align - 1)), n.eq(window)]
            with m.If(size - base < window):
                m.d.comb += n.eq(size - base)
            m.d.comb += [
                rd_req.valid.eq(1),
                rd_req.payload.host_addr.eq(cfg.desc + base * _DESC_BYTES),
                rd_req.payload.ram_addr.eq(win_slot * _DESC_BYTES),
                rd_req.payload.len.eq(n * _DESC_BYTES),
                rd_req.payload.tag.eq(tag),
            ]
            return base, n

        def release(set_pending=False):
            """End the job's session."""
            with m.Switch(job_sess):
                for i in range(n_sess):
                    with m.Case(i):
                        m.d.sync += sess_valid[i].eq(0)
            if set_pending:
                m.d.sync += pending.bit_select(job_q, 1).eq(1)

        answering = [Signal(name=f"answering_{p}") for p in range(ports)]

        def answer_fetch():
            with m.Switch(job_port):
                for p in range(ports):
                    if p in self._pulled:
                        with m.Case(p):
                            m.d.sync += fetch_valid[p].eq(0)
                            m.d.comb += answering[p].eq(1)

        def fail(code):
            m.d.sync += err_code.eq(code)
            m.next = "FAIL"

        def start_prefetch(count):
            """Hand the job's session's first ``count`` cached entries to the prefetcher."""
            m.d.comb += [
                pf.start.valid.eq(1), pf_starting.eq(1),
                pf.start.payload.port.eq(job_port),
                pf.start.payload.queue.eq(job_q),
                pf.start.payload.first.eq(last_avail),
                pf.start.payload.count.eq(count),
                pf.start.payload.desc.eq(cfg.desc),
                pf.start.payload.size.eq(size),
                pf.start.payload.cache_beat.eq(j_cache_beat),
            ]
            m.d.sync += [pf_live.eq(1), pf_sess.eq(job_sess), pf_ext.eq(0)]

        # Rolling counters of the chain under validation.
        is_ind   = (desc.flags & VirtqDescFlags.INDIRECT).as_value().any()
        has_next = (desc.flags & VirtqDescFlags.NEXT).as_value().any()
        is_wr    = (desc.flags & VirtqDescFlags.WRITE).as_value().any()
        end      = Signal(65)
        overflow = Signal()
        m.d.comb += [end.eq(desc.addr + desc.len),
                     overflow.eq(end[64] & (end[:64] != 0))]

        slot = Signal(16)
        room = Signal(17)
        m.d.comb += [slot.eq(last_avail & size_mask), room.eq(size - slot)]

        avail_hdr_idx = avail_hdr.idx

        def batch_from(n):
            """The batch of a refresh that found ``n`` new entries: ``fetch_n`` entries, the
            first ``fetch_a`` of them up to the ring's end."""
            # As few reads as possible: up to avail_batch entries, up to the ring's end.
            k = Signal(range(batch + 1))
            m.d.comb += k.eq(batch)
            with m.If((n <= batch) & (n <= room)):
                m.d.comb += k.eq(n)
            with m.Elif(room < batch):
                m.d.comb += k.eq(room)
            m.d.sync += [fetch_n.eq(k), fetch_a.eq(k), fetch_from.eq(0)]
            if self._fast_refill:
                # Past the ring's end too (a second read from its start), rather than a second
                # refresh (two more round trips) for the rest.
                with m.If(n <= batch):
                    m.d.sync += fetch_n.eq(n)
                with m.Else():
                    m.d.sync += fetch_n.eq(batch)

        pf_busy = pf.busy if use_pf else 0
        if use_pf:
            # Prefetch reads are descriptor reads too.
            m.d.comb += self.counts.desc_read.eq(pf.dma.rd_req.valid & pf.dma.rd_req.ready)
        if use_pf:
            # The prefetched batch dies with its session (released, re-read, stopped, dropped);
            # written before the state machine so that starting a batch wins.
            # (A pulled queue's session stays valid with its cache used up: the batch ends then.)
            owner_ok = Signal()
            with m.Switch(pf_sess):
                for i in range(n_sess):
                    with m.Case(i):
                        m.d.comb += owner_ok.eq(sess_valid[i] & (sess_q[i] == pf.owner_queue) &
                                                (cache_pos[i] != cache_n[i]))
            with m.If(~owner_ok | stopped.bit_select(pf.owner_queue, 1)):
                m.d.sync += pf_live.eq(0)

        def is_loaded(p, q):
            """Queue ``q`` of port ``p`` is the one loaded, unchanged since."""
            return (loaded & (loaded_port == p) & (loaded_q == q) &
                    self.enabled.bit_select(q, 1) & ~stopped.bit_select(q, 1) &
                    (self.epoch.bit_select(q * EPOCH_BITS, EPOCH_BITS) == job_epoch))

        with m.FSM(name="walker"):
            with m.State("REST"):
                m.d.comb += self.idle.eq(~pf_busy & ~ah_inflight)
                # Round robin over the ports that have a job, starting after the port served
                # last: a port with work is never kept waiting for the turn of idle ones.
                rr = Signal(range(ports))
                has_job = []
                for p in range(ports):
                    if p in self._pulled:
                        has_job.append(fetch_valid[p] & self.chain[p].space)
                    else:
                        i = sess_of_port[p]
                        cached = sess_valid[i] & (cache_pos[i] != cache_n[i])
                        has_job.append((cached & self.chain[p].space) |
                                       (sess_valid[i] & ~sess_wait[i] &
                                        (cache_pos[i] == cache_n[i])))
                with m.If(~self.hold & ~self.reset & self.driver_ok):
                    with m.Switch(rr):
                        for r in range(ports):
                            with m.Case(r):
                                for i in range(ports):
                                    p = (r + i) % ports
                                    with (m.If if i == 0 else m.Elif)(has_job[p]):
                                        m.d.sync += rr.eq((p + 1) % ports)
                                        self._pick(
                                            m, p, p in self._pulled, sessions,
                                            sess_of_port.get(p), fetch_sess.get(p),
                                            sess_valid, sess_q, cache_n, cache_pos,
                                            fetch_valid[p], fetch_q[p], job_port, job_sess,
                                            job_q, job_pulled, job_walk, pos, count_n,
                                            self.chain[p].space,
                                            lambda q, p=p: is_loaded(p, q))
            with m.State("LOAD0"):
                m.next = "LOAD1"
            with m.State("LOAD1"):
                m.d.sync += [cfg.eq(cfg_rp.data), last_avail.eq(la_rp.data), recheck.eq(0),
                             job_epoch.eq(self.epoch.bit_select(job_q * EPOCH_BITS,
                                                                EPOCH_BITS)),
                             loaded.eq(0), loaded_q.eq(job_q), loaded_port.eq(job_port)]
                usable = (job_q < qc) & self.enabled.bit_select(job_q, 1) & \
                    ~stopped.bit_select(job_q, 1)
                if self._pulled:
                    in_port = Signal()
                    with m.Switch(job_port):
                        for p in range(ports):
                            with m.Case(p):
                                m.d.comb += in_port.eq(port_mask[p].bit_select(job_q, 1))
                    usable = usable & in_port
                with m.If(self.reset):
                    m.next = "REST"
                with m.Elif(~usable):
                    with m.If(job_pulled):
                        m.next = "EMPTY"
                    with m.Else():
                        release()
                        m.next = "REST"
                with m.Elif(job_walk):
                    m.d.sync += loaded.eq(1)
                    m.next = "HEAD0"
                with m.Else():
                    if use_pf:
                        with m.If(job_sess == pf_sess):
                            m.d.sync += pf_live.eq(0)     # its cache is about to be replaced
                    if self._fast_refill:
                        # the doorbell's index, taken by this refresh (a pulled queue's is
                        # not used: the device asks for its buffers one at a time)
                        m.d.sync += [hint.eq(hint_rp.data),
                                     hint_use.eq(hint_ok.bit_select(job_q, 1) & ~job_pulled),
                                     hint_ok.bit_select(job_q, 1).eq(0)]
                    m.next = "RD_IDX"

            # --- refresh: avail->idx, then the new entries -------------------------------------
            with m.State("RD_IDX"):
                m.d.comb += [
                    rd_req.valid.eq(1),
                    rd_req.payload.host_addr.eq(cfg.driver + byte_offset(VirtqAvailHeader,
                                                                         "flags")),
                    rd_req.payload.ram_addr.eq(WALKER_AVAIL_HDR_ADDR),
                    rd_req.payload.len.eq(hdr_bytes),
                ]
                early_go = Signal()
                if self._fast_refill:
                    # A doorbell's index ahead of last_avail_idx (by at most the ring): its
                    # entries are in host memory, read them now (not on a re-read after an
                    # avail_event write: the hint is older than that write).
                    m.d.comb += early_go.eq(hint_use & ~recheck & (hint_n != 0) &
                                            (hint_n <= size))
                with m.If(rd_req.ready):
                    m.d.comb += self.counts.avail_read.eq(1)
                    m.d.sync += [early.eq(0), hint_use.eq(0)]
                    with m.If(early_go):
                        m.d.comb += ring_add.eq(1)
                        m.d.sync += [early.eq(1), ring_ok.eq(1)]
                        batch_from(hint_n)
                        m.next = "RD_RING"
                    with m.Else():
                        m.next = "WAIT_IDX"
            with m.State("WAIT_IDX"):
                with m.If(rd_done):
                    with m.If(self.reset):
                        m.next = "REST"
                    with m.Elif(~rd_ok):
                        fail(VirtqErrorCode.DMA)
                    with m.Else():
                        m.next = "CHECK_IDX"
            with m.State("CHECK_IDX"):
                m.d.comb += n_new.eq(avail_hdr_idx - last_avail)
                with m.If(n_new > size):
                    fail(VirtqErrorCode.AVAIL_IDX)
                with m.Elif(n_new == 0):
                    with m.If(job_pulled):
                        m.next = "EMPTY"
                    with m.Elif(self.event_idx & ~recheck & ~event_cur.bit_select(job_q, 1) &
                                (self.hold | self.reset)):
                        # A queue operation (a disable, a queue reset, a new ring) or a device
                        # reset is waiting for this job: the driver may have taken the ring
                        # back already, so write nothing into it; look again afterwards.
                        release(set_pending=True)
                        m.next = "REST"
                    with m.Elif(self.event_idx & ~recheck & ~event_cur.bit_select(job_q, 1)):
                        m.next = "WR_EVENT"
                    with m.Else():
                        release()
                        m.next = "REST"
                with m.Else():
                    batch_from(n_new)
                    m.next = "RD_RING"
            with m.State("WR_EVENT"):
                m.d.comb += [
                    wr_req.valid.eq(1),
                    wr_req.payload.host_addr.eq(cfg.device + virtq_avail_event_offset(size)),
                    wr_req.payload.len.eq(VIRTQ_IDX_BYTES),
                    wr_req.payload.imm_en.eq(1),
                    wr_req.payload.imm_data.eq(last_avail),
                ]
                with m.If(wr_req.ready):
                    m.d.comb += self.counts.event_write.eq(1)
                    m.next = "WAIT_EVENT"
            with m.State("WAIT_EVENT"):
                with m.If(wr_done):
                    with m.If(self.reset):
                        m.next = "REST"
                    with m.Elif(~wr_ok):
                        fail(VirtqErrorCode.DMA)
                    with m.Else():
                        # Re-read avail->idx only now: the read cannot pass the write.
                        m.d.sync += [event_cur.bit_select(job_q, 1).eq(1), recheck.eq(1)]
                        m.next = "RD_IDX"
            with m.State("RD_RING"):
                # the batch's entries from `fetch_from` (0, but for the rest of a batch begun
                # on a doorbell's index) up to the ring's end (`fetch_a`)
                m.d.comb += [
                    rd_req.valid.eq(fetch_from < fetch_a),
                    rd_req.payload.host_addr.eq(
                        cfg.driver + virtq_avail_ring_offset((slot + fetch_from)[:16])),
                    rd_req.payload.ram_addr.eq(
                        (j_cache_beat << beat_shift) + fetch_from * _ENTRY_BYTES),
                    rd_req.payload.len.eq((fetch_a - fetch_from) * _ENTRY_BYTES),
                ]
                if self._fast_refill:
                    # (nothing to read here when the rest of a batch begun on a doorbell's
                    # index starts past the ring's end: `ready` alone is no request then)
                    issued = rd_req.valid & rd_req.ready
                    with m.If(issued | (fetch_from >= fetch_a)):
                        with m.If(issued):
                            m.d.comb += [self.counts.avail_read.eq(1), ring_add.eq(1)]
                        with m.If(~early & (fetch_from == 0)):
                            m.d.sync += ring_ok.eq(1)
                        with m.If(fetch_n != fetch_a):
                            m.next = "RD_RING2"
                        with m.Elif(~job_pulled):
                            m.next = "RD_EWIN"
                        with m.Else():
                            m.next = "WAIT_RING"
                else:
                    with m.If(rd_req.ready):
                        m.d.comb += self.counts.avail_read.eq(1)
                        m.next = "WAIT_RING"
            if self._fast_refill:
                with m.State("RD_RING2"):
                    # the entries from the ring's start, after the first read's in the cache
                    b2 = Signal.like(fetch_a)
                    m.d.comb += [
                        b2.eq(Mux(fetch_from > fetch_a, fetch_from, fetch_a)),
                        rd_req.valid.eq(1),
                        rd_req.payload.host_addr.eq(
                            cfg.driver + virtq_avail_ring_offset(b2 - fetch_a)),
                        rd_req.payload.ram_addr.eq(
                            (j_cache_beat << beat_shift) + b2 * _ENTRY_BYTES),
                        rd_req.payload.len.eq((fetch_n - b2) * _ENTRY_BYTES),
                    ]
                    with m.If(rd_req.ready):
                        m.d.comb += [self.counts.avail_read.eq(1), ring_add.eq(1)]
                        with m.If(~job_pulled):
                            m.next = "RD_EWIN"
                        with m.Else():
                            m.next = "WAIT_RING"
                # The early window: the session's descriptor window (where the last chains'
                # heads were), read together with the ring entries instead of after them.
                # Linux hands out the descriptors it freed last first, so a refill's heads are
                # mostly those of the chains just completed: the prefetcher then reads their
                # indirect tables as soon as the entries land, one host round trip earlier.
                # It goes out after the avail->idx read showing the whole batch, so it holds
                # the current descriptors of every chain of the batch (`win_obs`).
                with m.State("RD_EWIN"):
                    ebase, en = read_window(j_win_base & size_mask, tag=1)
                    with m.If(rd_req.ready):
                        m.d.comb += self.counts.desc_read.eq(1)
                        m.d.sync += [ewin_busy.eq(1), ewin_ok.eq(0)]
                        with m.Switch(job_sess):
                            for i in range(n_sess):
                                with m.Case(i):
                                    # (on a doorbell's index: the entries before it were
                                    # published before the doorbell, the window read after it)
                                    m.d.sync += [win_valid[i].eq(0), win_base[i].eq(ebase),
                                                 win_n[i].eq(en),
                                                 win_obs[i].eq(Mux(early, hint,
                                                                   avail_hdr_idx))]
                        m.next = "WAIT_RING"

            def ring_landed(ok):
                """The batch's ring entries are in the cache (``ok``: without error)."""
                with m.If(self.reset):
                    m.next = "REST"
                with m.Elif(~ok):
                    fail(VirtqErrorCode.DMA)
                with m.Else():
                    with m.If(~job_pulled):
                        m.d.comb += [seen_f.valid.eq(1), seen_f.queue.eq(job_q),
                                     seen_f.idx.eq(last_avail + fetch_n)]
                    # A new look at the ring: descriptors read before it may be stale (the
                    # early window went out after the avail->idx read that showed the batch).
                    with m.Switch(job_sess):
                        for i in range(n_sess):
                            with m.Case(i):
                                m.d.sync += [sess_valid[i].eq(1), sess_q[i].eq(job_q),
                                             cache_n[i].eq(fetch_n), cache_pos[i].eq(0),
                                             win_valid[i].eq(ewin_ok & ~job_pulled)]
                    with m.If(Const(int(self._lookahead), 1) & ~job_pulled & ~ah_inflight &
                              (~ah_ready | ah_dead | (ah_sess == job_sess))):
                        m.d.comb += ah_arm.eq(1)
                        m.d.sync += [ah_sess.eq(job_sess), ah_q.eq(job_q),
                                     ah_drv.eq(cfg.driver), ah_size.eq(size),
                                     ah_desc.eq(cfg.desc),
                                     ah_from.eq(last_avail + fetch_n),
                                     ah_seen.eq(avail_hdr_idx), ah_kill.eq(0)]
                    if use_pf:
                        with m.If(~pf.busy):
                            start_prefetch(fetch_n)
                    m.next = "REST"

            with m.State("WAIT_RING"):
                if self._fast_refill:
                    # Every ring read of the batch back (their statuses are counted above: one
                    # may come before this state), and the early window too: nothing else may
                    # write the session's window while its read is in flight.
                    with m.If((ring_left == 0) & ~ewin_busy):
                        with m.If(early & ~self.reset & ring_ok):
                            # The avail->idx read came back with the ring's: the batch stands
                            # only if the driver had published the doorbell's index.
                            m.d.comb += n_new.eq(avail_hdr_idx - last_avail)
                            with m.If(n_new > size):
                                fail(VirtqErrorCode.AVAIL_IDX)
                            with m.Elif(n_new < hint_n):
                                # A doorbell ahead of the driver's own index: what was read
                                # early may be stale. Read the ring again from the index.
                                m.d.sync += early.eq(0)
                                m.next = "CHECK_IDX"
                            with m.Elif((n_new != hint_n) & (fetch_n < batch)):
                                # The driver published more after it rang (Linux rings at
                                # its first request after avail_event and goes on adding):
                                # read those now too, as a refresh from the index would have,
                                # and the early window again: the first one holds current
                                # descriptors for the doorbell's entries only (`win_obs`).
                                batch_from(n_new)
                                m.d.sync += [early.eq(0), fetch_from.eq(fetch_n)]
                                m.next = "RD_RING"
                            with m.Else():
                                ring_landed(ring_ok)
                        with m.Else():
                            ring_landed(ring_ok)
                else:
                    with m.If(rd_done):
                        ring_landed(rd_ok)

            # --- walk: one chain from the cache ------------------------------------------------
            with m.State("HEAD0"):
                entry_byte = Signal(DMA_RAM_ADDR_WIDTH)
                m.d.comb += [
                    entry_byte.eq((j_cache_beat << beat_shift) + pos * _ENTRY_BYTES),
                    rd_rp.addr.eq(entry_byte >> beat_shift),
                ]
                m.next = "HEAD1"
            with m.State("HEAD1"):
                entry_byte = Signal(DMA_RAM_ADDR_WIDTH)
                m.d.comb += entry_byte.eq(pos * _ENTRY_BYTES)
                h = Signal(16)
                m.d.comb += h.eq(rd_rp.data.word_select(entry_byte[1:beat_shift], 16)
                                 if beat_shift > 1 else rd_rp.data[:16])
                m.d.sync += [head.eq(h), cur.eq(h), in_table.eq(0), dcount.eq(0),
                             tcount.eq(0), total.eq(0), seen_write.eq(0), held_valid.eq(0),
                             sw_valid.eq(0), st_valid.eq(0), job_pf.eq(0)]
                with m.If(h >= size):
                    fail(VirtqErrorCode.HEAD)
                with m.Else():
                    if use_pf:
                        with m.If(pf.active & pf_live & (pf_sess == job_sess) &
                                  (pf.owner_queue == job_q)):
                            m.d.sync += job_pf.eq(1)
                            m.next = "PF_WAIT"
                        with m.Else():
                            m.next = "FETCH_DESC"
                    else:
                        m.next = "FETCH_DESC"
            if use_pf:
                with m.State("PF_WAIT"):
                    # Slots are named by avail index (they continue across the two caches).
                    m.d.comb += pf.query_pos.eq(last_avail)
                    info = pf.query
                    slot_desc = pf.slot_desc(0) + \
                        (last_avail[:max(1, (self._pf_slots - 1).bit_length())]
                         if self._pf_slots > 1 else 0) * (pf_window + self._pf_table)
                    with m.If(self.reset):
                        m.next = "REST"
                    with m.Elif(info.state == SlotState.READY):
                        m.d.sync += [sw_valid.eq(1), sw_n.eq(info.wn), sw_ram.eq(slot_desc),
                                     st_valid.eq(info.table), st_ram.eq(slot_desc + pf_window)]
                        m.next = "FETCH_DESC"
                    with m.Elif((info.state == SlotState.MISS) |
                                (info.state == SlotState.FREE)):
                        m.next = "FETCH_DESC"
            with m.State("FETCH_DESC"):
                in_win = j_win_valid & (cur >= j_win_base) & (cur < j_win_base + j_win_n)
                in_sw = sw_valid & (cur >= head) & (cur < head + sw_n)
                with m.If(total >= max_chain):
                    fail(VirtqErrorCode.TOO_LONG)
                with m.Else():
                    m.d.sync += total.eq(total + 1)
                    with m.If(in_table):
                        m.d.sync += tcount.eq(tcount + 1)
                    with m.Else():
                        m.d.sync += dcount.eq(dcount + 1)
                    with m.If(in_table):
                        m.d.sync += desc_idx.eq(tbl_ram + cur)
                        m.next = "RD_DESC"
                    with m.Elif(in_sw):
                        m.d.sync += desc_idx.eq(sw_ram + (cur - head))
                        m.next = "RD_DESC"
                    with m.Elif(in_win):
                        m.d.sync += desc_idx.eq(win_slot + (cur - j_win_base))
                        m.next = "RD_DESC"
                    with m.Else():
                        m.next = "RD_WIN"
            with m.State("RD_WIN"):
                # The furthest index seen for this queue: the end of the cached entries, or the
                # look-ahead's index when it serves this session (it holds only indices whose
                # avail->idx read completed).
                seen_now = Signal(16)
                m.d.comb += seen_now.eq(Mux(ah_for_job, ah_seen, last_avail + (count_n - pos)))
                # The aligned window around `cur` (ring sizes are powers of two, so it never
                # runs past the table's end unless the table is smaller than the window):
                # Linux reuses descriptors last freed first (virtio_ring.c's free list), so the
                # heads of a refill run down as often as up; an aligned window serves both.
                wbase, wn = read_window(cur)
                with m.If(rd_req.ready):
                    m.d.comb += self.counts.desc_read.eq(1)
                    with m.Switch(job_sess):
                        for i in range(n_sess):
                            with m.Case(i):
                                m.d.sync += [win_valid[i].eq(0), win_base[i].eq(wbase),
                                             win_n[i].eq(wn), win_obs[i].eq(seen_now)]
                    m.next = "WAIT_WIN"
            with m.State("WAIT_WIN"):
                with m.If(rd_done):
                    with m.If(self.reset):
                        m.next = "REST"
                    with m.Elif(~rd_ok):
                        fail(VirtqErrorCode.DMA)
                    with m.Else():
                        with m.Switch(job_sess):
                            for i in range(n_sess):
                                with m.Case(i):
                                    m.d.sync += win_valid[i].eq(1)
                        m.d.sync += desc_idx.eq(win_slot + (cur - j_win_base))
                        m.next = "RD_DESC"

            # Descriptor slot `s` of the read buffer: bytes 16*s .. 16*s+15.
            desc_slot = desc_idx
            beats_per_desc = max(1, _DESC_BYTES // beat)
            desc_per_beat  = max(1, beat // _DESC_BYTES)
            if beats_per_desc > 1:
                desc_beat = desc_slot * beats_per_desc
            else:
                desc_beat = desc_slot >> (desc_per_beat.bit_length() - 1)
            with m.State("RD_DESC"):
                m.d.comb += rd_rp.addr.eq(desc_beat)
                m.d.sync += part.eq(0)
                m.next = "LATCH_DESC"
            with m.State("LATCH_DESC"):
                if beats_per_desc > 1:
                    m.d.sync += desc_bits.word_select(part, dw).eq(rd_rp.data)
                    m.d.comb += rd_rp.addr.eq(desc_beat + part + 1)
                    m.d.sync += part.eq(part + 1)
                    with m.If(part == beats_per_desc - 1):
                        m.next = "DECODE"
                else:
                    if desc_per_beat > 1:
                        lane = desc_slot[:desc_per_beat.bit_length() - 1]
                        m.d.sync += desc_bits.eq(rd_rp.data.word_select(lane, 8 * _DESC_BYTES))
                    else:
                        m.d.sync += desc_bits.eq(rd_rp.data)
                    m.next = "DECODE"
            with m.State("DECODE"):
                with m.If(is_ind):
                    with m.If(in_table):
                        fail(VirtqErrorCode.INDIRECT_NESTED)
                    with m.Elif(~self.indirect_desc):
                        fail(VirtqErrorCode.INDIRECT_FEATURE)
                    with m.Elif(has_next):
                        fail(VirtqErrorCode.INDIRECT_NEXT)
                    with m.Elif((desc.len == 0) | (desc.len[:4] != 0)):
                        fail(VirtqErrorCode.INDIRECT_LEN)
                    with m.Elif(desc.len[4:] > max_indirect):
                        fail(VirtqErrorCode.INDIRECT_SIZE)
                    with m.Elif(overflow):
                        fail(VirtqErrorCode.OVERFLOW)
                    with m.Elif(st_valid & (cur == head)):
                        # The prefetcher read this very table (same checks, same data).
                        m.d.sync += [in_table.eq(1), table_n.eq(desc.len[4:]), cur.eq(0),
                                     tcount.eq(0), tbl_ram.eq(st_ram)]
                        m.next = "FETCH_DESC"
                    with m.Else():
                        m.d.sync += [tbl_addr.eq(desc.addr), tbl_len.eq(desc.len),
                                     tbl_ram.eq(0)]
                        m.next = "RD_TABLE"
                with m.Elif(overflow):
                    fail(VirtqErrorCode.OVERFLOW)
                with m.Elif(~is_wr & seen_write):
                    fail(VirtqErrorCode.ORDER)
                with m.Else():
                    m.d.sync += seen_write.eq(seen_write | is_wr)
                    with m.If(desc.len != 0):
                        # Hold each segment until the next one (or the chain's end) tells
                        # whether it is the last.
                        m.d.comb += [ch_en.eq(held_valid), ch_data.segment.eq(held),
                                     ch_data.epoch.eq(job_epoch)]
                        m.d.sync += [
                            held.queue.eq(job_q),
                            held.head.eq(head),
                            held.addr.eq(desc.addr),
                            held.len.eq(desc.len),
                            held.write.eq(is_wr),
                            held.first.eq(~held_valid),
                            held.last.eq(0),
                            held.empty.eq(0),
                            held_valid.eq(1),
                        ]
                    with m.If(has_next):
                        with m.If(Mux(in_table, desc.next >= table_n, desc.next >= size)):
                            fail(VirtqErrorCode.NEXT)
                        with m.Elif(Mux(in_table, tcount >= table_n, dcount >= size)):
                            fail(VirtqErrorCode.LOOP)
                        with m.Else():
                            m.d.sync += cur.eq(desc.next)
                            m.next = "FETCH_DESC"
                    with m.Else():
                        m.next = "FINISH"
            with m.State("RD_TABLE"):
                m.d.comb += [
                    rd_req.valid.eq(1),
                    rd_req.payload.host_addr.eq(tbl_addr),
                    rd_req.payload.ram_addr.eq(0),
                    rd_req.payload.len.eq(tbl_len[:DMA_LEN_WIDTH]),
                ]
                with m.If(rd_req.ready):
                    m.d.comb += self.counts.desc_read.eq(1)
                    m.next = "WAIT_TABLE"
            with m.State("WAIT_TABLE"):
                with m.If(rd_done):
                    with m.If(self.reset):
                        m.next = "REST"
                    with m.Elif(~rd_ok):
                        fail(VirtqErrorCode.DMA)
                    with m.Else():
                        m.d.sync += [in_table.eq(1), table_n.eq(tbl_len[4:]), cur.eq(0),
                                     tcount.eq(0)]
                        m.next = "FETCH_DESC"
            with m.State("FINISH"):
                with m.If(held_valid):
                    m.d.comb += [ch_data.segment.eq(held), ch_data.segment.last.eq(1)]
                with m.Else():
                    # A chain of zero-length buffers still needs its used entry: one beat of
                    # length 0 carries its head.
                    m.d.comb += [ch_data.segment.queue.eq(job_q), ch_data.segment.head.eq(head),
                                 ch_data.segment.first.eq(1), ch_data.segment.last.eq(1)]
                m.d.comb += [ch_data.epoch.eq(job_epoch), ch_en.eq(1), ch_commit.eq(1),
                             self.counts.chain.eq(1), self.counts.chain_pulled.eq(job_pulled),
                             la_wp.addr.eq(job_q), la_wp.data.eq(last_avail + 1),
                             la_wp.en.eq(1)]
                m.d.sync += last_avail.eq(last_avail + 1)     # still loaded (see `loaded`)
                m.d.sync += event_cur.bit_select(job_q, 1).eq(0)
                # Cache used up with the look-ahead's batch in the other cache: walk on with it,
                # unless another queue of the port waits for its turn (then give the queue back
                # as before; the look-ahead is dropped with the session).
                swap = Signal()
                wait = Signal()
                others = Signal(qc)
                m.d.comb += others.eq(pending & self.enabled & ~stopped &
                                      ~(Const(1, qc) << job_q))
                with m.Switch(job_port):
                    for p in pushed_ports:
                        with m.Case(p):
                            m.d.comb += [
                                swap.eq((pos + 1 == count_n) & ah_ready & ~ah_dead &
                                        (ah_sess == job_sess) & ~(others & port_mask[p]).any()),
                                wait.eq((pos + 1 == count_n) & (ah_armed | ah_inflight) &
                                        ~ah_dead & (ah_sess == job_sess) &
                                        ~(others & port_mask[p]).any()),
                            ]
                with m.Switch(job_sess):
                    for i, (_p, sq) in enumerate(sessions):
                        with m.Case(i):
                            m.d.sync += cache_pos[i].eq(pos + 1)
                            if sq is None:
                                with m.If(swap):
                                    # A new look at the ring, as at a refresh: windows read
                                    # before it may be stale for the new entries.
                                    m.d.sync += [cache_sel[i].eq(~cache_sel[i]),
                                                 cache_n[i].eq(ah_n), cache_pos[i].eq(0),
                                                 win_valid[i].eq(win_keep[i])]
                                with m.Elif(wait):
                                    # The look-ahead is reading for it: wait for that batch.
                                    m.d.sync += sess_wait[i].eq(1)
                                with m.Elif(pos + 1 == count_n):
                                    # Cache used up: give the queue back (poll again later).
                                    m.d.sync += sess_valid[i].eq(0)
                                    m.d.sync += pending.bit_select(job_q, 1).eq(1)
                # The prefetcher already runs on into the new batch (extended with it).
                swap_pf = Signal()
                if use_pf:
                    m.d.comb += swap_pf.eq(pf_ext & pf_live & (pf_sess == job_sess))
                with m.If(swap):
                    m.d.comb += [ah_arm.eq(1), seen_f.valid.eq(1), seen_f.queue.eq(job_q),
                                 seen_f.idx.eq(ah_from + ah_n)]
                    m.d.sync += [ah_from.eq(ah_from + ah_n), count_n.eq(ah_n), pos.eq(0)]
                    if use_pf:
                        with m.If(swap_pf):
                            m.d.sync += pf_ext.eq(0)      # consumed: the batch is current now
                        with m.Elif(pf_sess == job_sess):
                            m.d.sync += pf_live.eq(0)     # its batch was the old cache
                if use_pf:
                    # This chain's own slot (named by its avail index); also the prefetcher's
                    # floor: it issues nothing more for chains up to this one, so it never
                    # reads an entry of a cache the look-ahead is about to refill.
                    m.d.comb += [
                        pf.release.valid.eq(job_pf | (pf_live & (pf_sess == job_sess) &
                                                      (pf.owner_queue == job_q))),
                        pf.release.payload.eq(last_avail)]
                answer_fetch()
                if use_pf:
                    m.next = "REST"
                    with m.If(swap & ~swap_pf):
                        m.next = "SWAP"
                else:
                    m.next = "REST"
            if use_pf:
                with m.State("SWAP"):
                    # The prefetcher takes the new batch once the old one has drained (a few
                    # cycles), unless it serves another session.
                    with m.If(self.reset | self.hold):
                        m.next = "REST"
                    with m.Elif(~pf.busy):
                        start_prefetch(count_n)
                        m.next = "REST"
                    with m.Elif(pf_sess != job_sess):
                        m.next = "REST"
            with m.State("FAIL"):
                m.d.comb += ch_discard.eq(1)
                m.d.sync += loaded.eq(0)
                if use_pf:
                    m.d.comb += [pf.release.valid.eq(job_walk & job_pf),
                                 pf.release.payload.eq(last_avail)]
                with m.If(~self.reset):
                    m.d.comb += [self.error.valid.eq(1),
                                 self.error.payload.code.eq(err_code),
                                 self.error.payload.queue.eq(job_q)]
                    m.d.sync += stopped.bit_select(job_q, 1).eq(1)
                release()
                with m.If(job_pulled):
                    m.next = "EMPTY"
                with m.Else():
                    m.next = "REST"
            with m.State("EMPTY"):
                m.d.comb += [
                    ch_data.segment.queue.eq(job_q),
                    ch_data.segment.first.eq(1),
                    ch_data.segment.last.eq(1),
                    ch_data.segment.empty.eq(1),
                    ch_data.epoch.eq(job_epoch),
                    ch_en.eq(1),
                    ch_commit.eq(1),
                ]
                answer_fetch()
                m.next = "REST"

        # --- look-ahead refresh ------------------------------------------------------------------
        # Same rules as the walker's own refresh: the ring entries are read only after the
        # avail->idx read that shows them completed, never beyond that index (checklist rule
        # 85), and nothing is read while a queue operation or reset waits (`hold`). It writes no
        # avail_event: a session still walking has work, and the walker's own refresh, when the
        # look-ahead found nothing, does the EVENT_IDX write and re-read as before (rule 95).
        # A read that fails, or a slot that died meanwhile, is simply dropped: the walker's own
        # refresh reads again and reports what it finds.
        ah_rd = self.ahead_dma.rd_req
        ah_done = self.ahead_dma.rd_status.valid
        ah_ok = self.ahead_dma.rd_status.payload.error == DmaError.OK
        ah_k = Signal(range(batch + 1))
        ah_avail = Signal(16)           # entries published past `ah_from`
        ah_slot = Signal(16)
        ah_room = Signal(17)
        m.d.comb += [ah_avail.eq(ah_seen - ah_from), ah_slot.eq(ah_from & (ah_size - 1)),
                     ah_room.eq(ah_size - ah_slot)]
        with m.If(self.op.valid | self.reset):
            m.d.sync += ah_kill.eq(1)
        with m.FSM(name="ahead"):
            with m.State("IDLE"):
                m.d.comb += ah_none.eq(1)
                with m.If(ah_arm):
                    m.next = "ARMED"
            with m.State("ARMED"):
                m.d.comb += ah_armed.eq(1)
                with m.If(ah_arm):
                    m.next = "ARMED"
                with m.Elif(ah_dead):
                    m.next = "IDLE"
                with m.Elif(~self.hold & ~self.reset & self.driver_ok):
                    with m.If(ah_avail == 0):
                        m.next = "IDX"
                    with m.Elif(ah_avail > ah_size):
                        m.next = "NONE"     # the walker's own refresh reports it
                    with m.Else():
                        m.d.sync += ah_k.eq(batch)
                        with m.If((ah_avail <= batch) & (ah_avail <= ah_room)):
                            m.d.sync += ah_k.eq(ah_avail)
                        with m.Elif(ah_room < batch):
                            m.d.sync += ah_k.eq(ah_room)
                        m.next = "RING"
            with m.State("IDX"):
                m.d.comb += [
                    ah_inflight.eq(1),
                    ah_rd.valid.eq(1),
                    ah_rd.payload.host_addr.eq(ah_drv + byte_offset(VirtqAvailHeader, "flags")),
                    ah_rd.payload.ram_addr.eq(WALKER_AHEAD_HDR_ADDR),
                    ah_rd.payload.len.eq(hdr_bytes),
                ]
                with m.If(ah_rd.ready):
                    m.d.comb += self.counts.ahead_read.eq(1)
                    m.next = "IDX_WAIT"
            with m.State("IDX_WAIT"):
                m.d.comb += ah_inflight.eq(1)
                with m.If(ah_done):
                    with m.If(~ah_ok | ah_dead | self.reset):
                        m.next = "IDLE"
                    with m.Elif((ah_hdr.idx - ah_from)[:16] > ah_size):
                        m.next = "NONE"     # the walker's own refresh reports it
                    with m.Elif(ah_hdr.idx == ah_from):
                        # Nothing new yet: look again (one read in flight, a round trip each)
                        # while the session has entries left to walk; a driver streaming
                        # frames publishes more as the device completes them.
                        m.next = "NONE"
                    with m.Else():
                        m.d.sync += ah_seen.eq(ah_hdr.idx)
                        m.next = "ARMED"
            with m.State("RING"):
                m.d.comb += [
                    ah_inflight.eq(1),
                    ah_rd.valid.eq(1),
                    ah_rd.payload.host_addr.eq(ah_drv + virtq_avail_ring_offset(ah_slot)),
                    ah_rd.payload.ram_addr.eq(ah_cache_beat << beat_shift),
                    ah_rd.payload.len.eq(ah_k * _ENTRY_BYTES),
                ]
                with m.If(ah_rd.ready):
                    m.d.comb += self.counts.ahead_read.eq(1)
                    m.next = "RING_WAIT"
            with m.State("RING_WAIT"):
                m.d.comb += ah_inflight.eq(1)
                with m.If(ah_done):
                    with m.If(~ah_ok | ah_dead | self.reset):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += ah_n.eq(ah_k)
                        m.next = "READY"
            with m.State("READY"):
                m.d.comb += ah_ready.eq(1)
                with m.If(ah_arm):
                    m.next = "ARMED"
                with m.Elif(ah_dead):
                    m.next = "IDLE"
            with m.State("NONE"):
                m.d.comb += ah_none.eq(1)
                with m.If(ah_arm):
                    m.next = "ARMED"
                with m.Elif(ah_dead):
                    m.next = "IDLE"
                with m.Elif(ah_left & (ah_avail == 0)):
                    m.next = "ARMED"

        # The look-ahead's batch, once in the other cache, extends the prefetcher's batch of the
        # same session: its head windows go out while the walks finish the current cache, so
        # the first chains after the swap find them in flight or read (the look-ahead read its
        # entries after the avail->idx read that shows them: checklist rule 85 holds).
        if use_pf:
            with m.If(~pf_live):
                m.d.sync += pf_ext.eq(0)
            m.d.comb += [
                pf.extend.valid.eq(ah_ready & ~ah_dead & pf_live & ~pf_ext & ~pf_starting &
                                   (pf_sess == ah_sess) & (pf.owner_queue == ah_q)),
                pf.extend.payload.first.eq(ah_from),
                pf.extend.payload.count.eq(ah_n),
                pf.extend.payload.cache_beat.eq(ah_cache_beat),
            ]
            with m.If(pf.extend.valid & pf.extend.ready):
                m.d.sync += pf_ext.eq(1)

        # A session waiting for the look-ahead: swap in its batch when it is complete (and hand
        # it to the prefetcher if that is free), or give the queue back if it found nothing.
        for i in self._pushed_sess:
            with m.If(sess_wait[i]):
                with m.If((ah_sess != i) | ah_dead | ah_none):
                    m.d.sync += [sess_wait[i].eq(0), sess_valid[i].eq(0),
                                 pending.bit_select(sess_q[i], 1).eq(1)]
                with m.Elif(ah_ready):
                    m.d.comb += ah_arm.eq(1)
                    m.d.comb += [seen_w.valid.eq(1), seen_w.queue.eq(ah_q),
                                 seen_w.idx.eq(ah_from + ah_n)]
                    m.d.sync += [sess_wait[i].eq(0), cache_sel[i].eq(~cache_sel[i]),
                                 cache_n[i].eq(ah_n), cache_pos[i].eq(0),
                                 win_valid[i].eq(win_keep[i]), ah_from.eq(ah_from + ah_n)]
                    if use_pf:
                        with m.If(pf_ext & pf_live & (pf_sess == i)):
                            m.d.sync += pf_ext.eq(0)      # the prefetcher has it already
                        with m.Elif(~pf.busy & ~pf_starting):
                            m.d.comb += [
                                pf.start.valid.eq(1),
                                pf.start.payload.port.eq(sessions[i][0]),
                                pf.start.payload.queue.eq(ah_q),
                                pf.start.payload.first.eq(ah_from),
                                pf.start.payload.count.eq(ah_n),
                                pf.start.payload.desc.eq(ah_desc),
                                pf.start.payload.size.eq(ah_size),
                                pf.start.payload.cache_beat.eq(ah_cache_beat),
                            ]
                            m.d.sync += [pf_live.eq(1), pf_sess.eq(i), pf_ext.eq(0)]
            with m.If(self.reset | self.op.valid):
                m.d.sync += sess_wait[i].eq(0)

        # Every chain carries the epoch of its queue when it was walked (the device copies it
        # into the chain's completion; see interface.EPOCH_BITS).
        m.d.comb += ch_data.segment.epoch.eq(job_epoch)

        # --- scanner: hands pending pushed queues to idle sessions -------------------------------
        scan_q = Signal(range(qc))
        m.d.sync += scan_q.eq(Mux(scan_q == qc - 1, 0, scan_q + 1))
        scan_live = pending.bit_select(scan_q, 1) & self.enabled.bit_select(scan_q, 1) & \
            ~stopped.bit_select(scan_q, 1)
        with m.If(~self.hold & ~self.reset & self.driver_ok & scan_live):
            for p in pushed_ports:
                i = sess_of_port[p]
                with m.If(port_mask[p].bit_select(scan_q, 1) & ~sess_valid[i]):
                    m.d.sync += [sess_valid[i].eq(1), sess_q[i].eq(scan_q), cache_n[i].eq(0),
                                 cache_pos[i].eq(0), pending.bit_select(scan_q, 1).eq(0)]

        # --- fetches on pulled ports -------------------------------------------------------------
        for p in range(ports):
            f = self.fetch[p]
            if p in self._pulled:
                # The next fetch is taken in the cycle the current one is answered.
                m.d.comb += f.ready.eq((~fetch_valid[p] | answering[p]) & ~self.reset)
                with m.If(f.valid & f.ready):
                    m.d.sync += [fetch_valid[p].eq(1), fetch_q[p].eq(f.payload)]

        # --- doorbells, DRIVER_OK, stops from the used side ------------------------------------
        driver_ok_r = Signal()
        m.d.sync += driver_ok_r.eq(self.driver_ok)
        with m.If(self.driver_ok & ~driver_ok_r):
            m.d.sync += pending.eq(pending | (self.enabled & pushed_mask & ~stopped))
        with m.If(self.notify.valid):
            m.d.comb += self.counts.doorbell.eq(1)
            nq = self.notify.payload.queue
            with m.If((nq < qc) & self.enabled.bit_select(nq, 1) & pushed_mask.bit_select(nq, 1)):
                m.d.sync += pending.bit_select(nq, 1).eq(1)
                if self._fast_refill:
                    with m.If(self.notify.payload.has_idx):
                        m.d.comb += [hint_wp.addr.eq(nq), hint_wp.data.eq(self.notify.payload.idx),
                                     hint_wp.en.eq(1)]
                        m.d.sync += hint_ok.bit_select(nq, 1).eq(1)
        with m.If(self.stop.valid):
            m.d.sync += [stopped.bit_select(self.stop.payload, 1).eq(1), loaded.eq(0)]

        # --- queue configuration changes --------------------------------------------------------
        op = self.op.payload
        with m.If(self.op.valid):
            oq = op.queue
            m.d.sync += [event_cur.bit_select(oq, 1).eq(0), loaded.eq(0),
                         hint_ok.bit_select(oq, 1).eq(0)]
            for i in range(n_sess):
                m.d.sync += win_valid[i].eq(0)
                with m.If(sess_q[i] == oq):
                    m.d.sync += sess_valid[i].eq(0)
            with m.Switch(op.kind):
                with m.Case(QueueOpKind.INIT):
                    m.d.comb += [cfg_wp.addr.eq(oq), cfg_wp.data.eq(op.config), cfg_wp.en.eq(1),
                                 la_wp.addr.eq(oq), la_wp.data.eq(0), la_wp.en.eq(1)]
                    m.d.sync += [stopped.bit_select(oq, 1).eq(0),
                                 pending.bit_select(oq, 1).eq(pushed_mask.bit_select(oq, 1))]
                with m.Case(QueueOpKind.DISABLE):
                    m.d.sync += pending.bit_select(oq, 1).eq(0)
                with m.Case(QueueOpKind.RESTORE):
                    m.d.comb += [la_wp.addr.eq(oq), la_wp.data.eq(op.avail_idx), la_wp.en.eq(1)]

        with m.If(self.reset):
            m.d.sync += [pending.eq(0), stopped.eq(0), event_cur.eq(0), loaded.eq(0),
                         hint_ok.eq(0)]
            for i in range(n_sess):
                m.d.sync += [sess_valid[i].eq(0), win_valid[i].eq(0)]
            for p in range(ports):
                m.d.sync += fetch_valid[p].eq(0)
        return m

    @staticmethod
    def _pick(m, p, pulled, sessions, port_sess, fetch_sess, sess_valid, sess_q, cache_n,
              cache_pos, fetch_valid, fetch_q, job_port, job_sess, job_q, job_pulled, job_walk,
              pos, count_n, space, loaded):
        """In REST, port ``p`` has a job: start it (a walk of the queue whose state is still
        loaded, ``loaded(q)``, goes straight to the walk)."""
        if pulled:
            # The session of the fetched queue.
            mine = [i for i, (sp, _q) in enumerate(sessions) if sp == p]
            m.d.sync += [job_port.eq(p), job_pulled.eq(1), job_q.eq(fetch_q)]
            if not mine:
                # No queue on this port: the job answers `empty` (the queue is not usable).
                m.d.sync += [job_sess.eq(0), job_walk.eq(0)]
                m.next = "LOAD0"
                return
            m.d.sync += job_sess.eq(fetch_sess)
            with m.Switch(fetch_sess):
                for i in mine:
                    with m.Case(i):
                        walk = sess_valid[i] & (cache_pos[i] != cache_n[i]) & \
                            (sess_q[i] == fetch_q)
                        m.d.sync += [pos.eq(cache_pos[i]), count_n.eq(cache_n[i]),
                                     job_walk.eq(walk)]
                        with m.If(walk & loaded(fetch_q)):
                            m.next = "HEAD0"
                        with m.Else():
                            m.next = "LOAD0"
        else:
            i = port_sess
            cached = sess_valid[i] & (cache_pos[i] != cache_n[i])
            start = [job_port.eq(p), job_sess.eq(i), job_pulled.eq(0), job_q.eq(sess_q[i]),
                     pos.eq(cache_pos[i]), count_n.eq(cache_n[i])]
            with m.If(cached & space):
                m.d.sync += start + [job_walk.eq(1)]
                with m.If(loaded(sess_q[i])):
                    m.next = "HEAD0"
                with m.Else():
                    m.next = "LOAD0"
            with m.Else():
                m.d.sync += start + [job_walk.eq(0)]
                m.next = "LOAD0"
