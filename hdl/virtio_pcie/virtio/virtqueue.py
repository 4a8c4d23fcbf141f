# SPDX-License-Identifier: BSD-2-Clause
"""The split virtqueue engine: from doorbells to requests, from completions to used entries and
interrupts (virtio 1.2 §2.7 "Split Virtqueues"; project virtio checklist §1.K-1.N).

::

     control.config ─┐   ┌──────────────┐  chain[p]  ┌───────────┐ request[p].segment
     queue_reset ────┤   │ RingWalker   │──────────► │ ChainFifo │ ─────────────────► device
     restore ────────┼──►│ (avail ring, │            └───────────┘  (one per port)
       control ──op──┤   │ descriptors) │◄── request[p].fetch (pulled ports) ◄──── device
     control.notify ─┼──►│ +DescPrefetch│
                     │   └──────┬───────┘
                     │          │ dma (tag 0)    ┌──────────────┐
                     │          ├──────────────► │DmaRequestMux │ ══ dma.rd_req/wr_req ══► DMA
                     │          │ dma (tag 1)    └──────────────┘ ◄═ statuses, rd_ram ═══
                     │   ┌──────┴───────┐
                     └──►│ UsedWriter   │◄── completion.used ◄──── device
     control.irq ◄───────│ (used ring,  │
                         │ notifications│──► dma.wr_ram (the used element buffer)
                         └──────────────┘

The engine's control part applies queue configuration, queue resets and index restores while
both blocks are held at rest (no DMA in flight), keeps the per-queue ``enabled`` bits and
epochs (chains built before a queue was reset are dropped at the port), raises
``needs_reset`` on any ring error and adds up the counters.

Host round trips per request: one avail->idx read and one ring read per batch of up to
``avail_batch`` requests (on a pushed queue with work, read by the walker's look-ahead while it
walks the batch before: ``ahead_dma``, the mux's fourth requester); the head descriptor window
and indirect table of each chain, read ahead for up to ``prefetch_slots`` chains at once (running
on into the look-ahead's batch before the walker gets there); one
used element write per batch of completions, one used->idx write and one used_event (or
avail->flags) read per publication (none when the value read early, while the device
worked, already says "notify").
Doorbells and interrupts: with VIRTIO_F_EVENT_IDX the driver is asked to kick only when the
engine has gone idle, and interrupts follow ``used_event``, held (``irq_holdoff``) while the
device has more than ``irq_low_water`` chains of the queue in hand.
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DATA_WIDTHS, DmaClientSignature
from ..spec.virtio import VIRTQ_AVAIL_ALIGN, VIRTQ_DESC_ALIGN, VIRTQ_MAX_SIZE, VIRTQ_USED_ALIGN
from .chain_fifo import ChainFifo
from .dma_request_mux import DmaRequestMux
from .engine_signatures import (EPOCH_BITS, QueueOp, QueueOpKind, QueueRestore, VirtqCounters,
                                VirtqErrorCode, VirtqErrorReport)
from .interface import (QueueControlSignature, VirtqCompletionSignature, VirtqRequestSignature,
                        queue_index_width)
from .ring_walker import RingWalker
from .used_writer import UsedWriter

__all__ = ["VirtqueueEngine", "DEFAULT_IRQ_HOLDOFF", "DEFAULT_IRQ_LOW_WATER"]

#: Interrupt moderation default: a notification waits at most 8192 cycles (32.8 us at
#: 250 MHz) ...
DEFAULT_IRQ_HOLDOFF = 8192
#: ... and only while the device has more than 14 chains of its queue in hand: at QD 32 one
#: interrupt then covers about 20 requests (0.05 per request), while the device keeps work for
#: the ~5 us a host takes (at L = 1 us) to run its handler, resubmit and have the new chains
#: walked, and enough requests in flight for its own pipeline.
DEFAULT_IRQ_LOW_WATER = 14


def _pow2(n):
    return isinstance(n, int) and n > 0 and not n & (n - 1)


class VirtqueueEngine(wiring.Component):
    """Split virtqueue engine for ``queue_count`` queues served through one DMA client port.

    Parameters
    ----------
    data_width : int
        DMA data path width in bits (64, 128 or 256).
    queue_count : int
        Queues (per-queue state is in RAM; 64 or more is fine).
    max_queue_size : int
        Largest queue size a driver may enable (a power of two up to 32768); larger is refused
        as a configuration error.
    port_of_queue : sequence of int, optional
        Request port of each queue (default: all on port 0). Ports are numbered from 0 with
        none left out.
    pulled_ports : sequence of int
        Ports whose queues the device pulls with ``fetch`` (e.g. network receive queues).
    max_chain : int
        Longest chain accepted, in descriptors (direct, indirect and table descriptors); a
        longer one is an error (virtio 1.2 allows a device "a reasonable limit").
    max_indirect : int
        Most entries in an indirect table (at most ``max_chain``).
    avail_batch : int
        Most avail ring entries read at once.
    used_batch : int
        Most used elements written at once.
    desc_window : int
        Descriptors the prefetcher reads ahead per chain (its head window).
    avail_lookahead : bool, optional
        Read a pushed queue's next avail batch while its walks use the one in hand (default
        True; see :class:`~.ring_walker.RingWalker`).
    walk_window : int, optional
        Descriptors read at once when a walk needs one that is in no window read so far
        (default ``desc_window``, 1 to 64): aligned to its size when that is a power of two, so
        that heads running down (Linux reuses the descriptors freed last first) hit it as well
        as heads running up.
    prefetch_slots : int
        Chains of a pushed queue whose head descriptors and indirect tables are read ahead, in
        parallel (0 or a power of two up to 32).
    prefetch_table : int
        Largest indirect table read ahead, in descriptors (Linux: 3 for a block request, up to
        19 for a network packet); larger tables are read when their chain is walked.
    fast_refill : bool
        Read a pushed session's descriptor window (``walk_window`` descriptors where its last
        heads were) together with each batch of ring entries, and let the prefetcher take the
        heads it holds from there: a refill's indirect tables go out one host round trip
        earlier (Linux reuses the descriptors it freed last first). Default off; needs
        prefetching.

    Members
    -------
    control : In(QueueControlSignature(queue_count))
        From the transport; see :mod:`.interface`.
    dma : Out(DmaClientSignature(data_width))
        To the DMA engine; the engine owns both buffers.
    request : Out(VirtqRequestSignature(queue_count)).array(ports)
        Segments of each port's chains; ``fetch`` is served on pulled ports only.
    completion : In(VirtqCompletionSignature(queue_count))
    restore : In(stream.Signature(QueueRestore(queue_count)))
        Sets an enabled queue's next avail index and its used index (state restore, tests).
    irq_holdoff : In(16, init=DEFAULT_IRQ_HOLDOFF)
        Interrupt moderation: most cycles a used buffer notification may wait while the device
        still has work of its queue in hand, so that one interrupt covers more completions (0:
        none). Left unconnected: 8192 cycles (32.8 us at 250 MHz).
    irq_low_water : In(16, init=DEFAULT_IRQ_LOW_WATER)
        A notification waits only while the device has more than this many chains of its
        queue in hand (read from its avail ring, not completed); at or below it the device
        is running dry and the notification goes at once. Left unconnected: 14. Both are
        levels that may change at run time; see :class:`.used_writer.UsedWriter`.
    counters : Out(VirtqCounters)
    error : Out(VirtqErrorReport(queue_count))
        The last error: code and queue.
    """

    def __init__(self, *, data_width, queue_count, max_queue_size=256, port_of_queue=None,
                 pulled_ports=(), max_chain=64, max_indirect=None, avail_batch=32,
                 used_batch=32, desc_window=4, prefetch_slots=16, prefetch_table=16,
                 walk_window=None, avail_lookahead=True, fast_refill=False):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
        queue_index_width(queue_count)
        if not _pow2(max_queue_size) or max_queue_size > VIRTQ_MAX_SIZE:
            raise ValueError(f"max_queue_size must be a power of two up to {VIRTQ_MAX_SIZE}, "
                             f"not {max_queue_size!r}")
        if port_of_queue is None:
            port_of_queue = (0,) * queue_count
        port_of_queue = tuple(port_of_queue)
        if len(port_of_queue) != queue_count:
            raise ValueError(f"port_of_queue must have {queue_count} entries, not "
                             f"{len(port_of_queue)}")
        if any(not isinstance(p, int) or p < 0 for p in port_of_queue):
            raise ValueError(f"port_of_queue entries must be port numbers, not {port_of_queue!r}")
        ports = max(port_of_queue) + 1
        if set(port_of_queue) != set(range(ports)):
            raise ValueError(f"port_of_queue must use every port from 0 to {ports - 1}, not "
                             f"{sorted(set(port_of_queue))}")
        pulled_ports = tuple(sorted(set(pulled_ports)))
        if any(p not in range(ports) for p in pulled_ports):
            raise ValueError(f"pulled_ports must name ports 0..{ports - 1}, not {pulled_ports!r}")
        if not isinstance(max_chain, int) or not 1 <= max_chain <= 4096:
            raise ValueError(f"max_chain must be an integer from 1 to 4096, not {max_chain!r}")
        if max_indirect is None:
            max_indirect = max_chain
        if not isinstance(max_indirect, int) or not 1 <= max_indirect <= min(max_chain, 2047):
            raise ValueError(f"max_indirect must be an integer from 1 to "
                             f"{min(max_chain, 2047)} (max_chain), not {max_indirect!r}")
        if not isinstance(avail_batch, int) or not 1 <= avail_batch <= 256:
            raise ValueError(f"avail_batch must be an integer from 1 to 256, not "
                             f"{avail_batch!r}")
        if not _pow2(prefetch_slots) and prefetch_slots != 0 or prefetch_slots > 32:
            raise ValueError(f"prefetch_slots must be 0 or a power of two up to 32, not "
                             f"{prefetch_slots!r}")
        if not isinstance(used_batch, int) or not 1 <= used_batch <= 4096:
            raise ValueError(f"used_batch must be an integer from 1 to 4096, not {used_batch!r}")
        if not isinstance(desc_window, int) or not 1 <= desc_window <= 64:
            raise ValueError(f"desc_window must be an integer from 1 to 64, not "
                             f"{desc_window!r}")
        self._dw = data_width
        self._qc = queue_count
        self._max_size = max_queue_size
        self._port_of_queue = port_of_queue
        self._ports = ports
        self._pulled = pulled_ports
        self._max_chain = max_chain
        self._max_indirect = max_indirect
        self._avail_batch = avail_batch
        self._used_batch = used_batch
        self._desc_window = desc_window
        if walk_window is not None and (not isinstance(walk_window, int) or
                                        not 1 <= walk_window <= 64):
            raise ValueError(f"walk_window must be an integer from 1 to 64, not "
                             f"{walk_window!r}")
        self._walk_window = walk_window
        self._fast_refill = bool(fast_refill)
        if not isinstance(avail_lookahead, bool):
            raise ValueError(f"avail_lookahead must be a bool, not {avail_lookahead!r}")
        self._lookahead = avail_lookahead
        self._prefetch_slots = prefetch_slots
        if not isinstance(prefetch_table, int) or not 1 <= prefetch_table <= 256:
            raise ValueError(f"prefetch_table must be an integer from 1 to 256, not "
                             f"{prefetch_table!r}")
        self._prefetch_table = prefetch_table
        depth = 2
        while depth < 2 * max_chain:
            depth *= 2
        self._fifo_depth = depth
        # Checked here so that a bad value fails at construction.
        self._walker = self._make_walker()
        self._used = UsedWriter(data_width=data_width, queue_count=queue_count,
                                used_batch=used_batch,
                                # An engine with pulled (receive) ports serves a network
                                # device, whose driver moderates with NAPI: its notifications
                                # are not held and its used_event is not read early (a device
                                # receiving at line rate needs every host round trip for its
                                # buffers).
                                moderated_queues=[] if pulled_ports else range(queue_count),
                                # Receive queues publish a round trip's worth per update; see
                                # UsedWriter (gathered_queues).
                                gathered_queues=[q for q in range(queue_count)
                                                 if port_of_queue[q] in pulled_ports])
        super().__init__({
            "control":    In(QueueControlSignature(queue_count)),
            "dma":        Out(DmaClientSignature(data_width)),
            "request":    Out(VirtqRequestSignature(queue_count)).array(ports),
            "completion": In(VirtqCompletionSignature(queue_count)),
            "restore":    In(stream.Signature(QueueRestore(queue_count))),
            "irq_holdoff": In(16, init=DEFAULT_IRQ_HOLDOFF),
            "irq_low_water": In(16, init=DEFAULT_IRQ_LOW_WATER),
            "counters":   Out(VirtqCounters),
            "error":      Out(VirtqErrorReport(queue_count)),
        })

    def _make_walker(self):
        return RingWalker(data_width=self._dw, queue_count=self._qc,
                          max_queue_size=self._max_size, port_of_queue=self._port_of_queue,
                          pulled_ports=self._pulled, max_chain=self._max_chain,
                          max_indirect=self._max_indirect, avail_batch=self._avail_batch,
                          desc_window=self._desc_window, prefetch_slots=self._prefetch_slots,
                          prefetch_table=self._prefetch_table,
                          walk_window=self._walk_window, avail_lookahead=self._lookahead,
                          fast_refill=self._fast_refill)

    @property
    def ports(self):
        return self._ports

    @property
    def max_chain(self):
        """Most descriptors in a chain (an indirect table's entries and the descriptor pointing
        to it included); a longer chain stops its queue (``TOO_LONG``)."""
        return self._max_chain

    @property
    def max_indirect(self):
        """Most entries in an indirect table; a larger table stops its queue
        (``INDIRECT_SIZE``)."""
        return self._max_indirect

    def elaborate(self, platform):
        m = Module()
        qc, ports = self._qc, self._ports
        ctl = self.control

        m.submodules.walker = walker = self._walker
        m.submodules.used   = used   = self._used
        m.submodules.dma_mux = mux = DmaRequestMux(clients=4)
        fifos = []
        for p in range(ports):
            fifo = ChainFifo(queue_count=qc, depth=self._fifo_depth, max_chain=self._max_chain,
                             pulled=p in self._pulled)
            m.submodules[f"chain_fifo_{p}"] = fifo
            fifos.append(fifo)

        enabled = Signal(qc)
        epoch   = Signal(qc * EPOCH_BITS)

        # --- DMA: requests through the multiplexer, buffer ports to their owners -------------
        wiring.connect(m, walker=walker.dma, mux=mux.client[0])
        wiring.connect(m, used=used.dma, mux=mux.client[1])
        wiring.connect(m, prefetch=walker.prefetch_dma, mux=mux.client[2])
        wiring.connect(m, ahead=walker.ahead_dma, mux=mux.client[3])
        dma = self.dma
        m.d.comb += [
            dma.rd_req.payload.eq(mux.rd_req.payload),
            dma.rd_req.valid.eq(mux.rd_req.valid),
            mux.rd_req.ready.eq(dma.rd_req.ready),
            dma.wr_req.payload.eq(mux.wr_req.payload),
            dma.wr_req.valid.eq(mux.wr_req.valid),
            mux.wr_req.ready.eq(dma.wr_req.ready),
            mux.rd_status.payload.eq(dma.rd_status.payload),
            mux.rd_status.valid.eq(dma.rd_status.valid),
            mux.wr_status.payload.eq(dma.wr_status.payload),
            mux.wr_status.valid.eq(dma.wr_status.valid),
        ]
        for block in (walker, used):
            m.d.comb += [
                block.rd_ram.addr.eq(dma.rd_ram.addr),
                block.rd_ram.data.eq(dma.rd_ram.data),
                block.rd_ram.be.eq(dma.rd_ram.be),
                block.rd_ram.en.eq(dma.rd_ram.en),
            ]
        m.d.comb += [
            used.wr_ram.addr.eq(dma.wr_ram.addr),
            used.wr_ram.en.eq(dma.wr_ram.en),
            dma.wr_ram.data.eq(used.wr_ram.data),
        ]

        # --- avail side → chain FIFOs → request ports ------------------------------------------
        for p, fifo in enumerate(fifos):
            wiring.connect(m, walker=walker.chain[p], fifo=fifo.w)
            m.d.comb += [
                self.request[p].segment.payload.eq(fifo.o.payload),
                self.request[p].segment.valid.eq(fifo.o.valid),
                fifo.o.ready.eq(self.request[p].segment.ready),
                walker.fetch[p].payload.eq(self.request[p].fetch.payload),
                walker.fetch[p].valid.eq(self.request[p].fetch.valid),
                self.request[p].fetch.ready.eq(walker.fetch[p].ready),
                fifo.enabled.eq(enabled),
                fifo.epoch.eq(epoch),
                fifo.clear.eq(ctl.reset),
            ]
        m.d.comb += [
            walker.notify.payload.eq(ctl.notify.payload),
            walker.notify.valid.eq(ctl.notify.valid),
            walker.stop.payload.eq(used.stop.payload),
            walker.stop.valid.eq(used.stop.valid),
        ]

        # --- used side ---------------------------------------------------------------------------
        m.d.comb += [
            used.completion.used.payload.eq(self.completion.used.payload),
            used.completion.used.valid.eq(self.completion.used.valid),
            self.completion.used.ready.eq(used.completion.used.ready),
            ctl.irq.payload.eq(used.irq.payload),
            ctl.irq.valid.eq(used.irq.valid),
            used.irq.ready.eq(ctl.irq.ready),
        ]

        # --- levels to both blocks ---------------------------------------------------------------
        for block in (walker, used):
            m.d.comb += [
                block.reset.eq(ctl.reset),
                block.driver_ok.eq(ctl.driver_ok),
                block.event_idx.eq(ctl.event_idx),
                block.enabled.eq(enabled),
            ]
        m.d.comb += [walker.indirect_desc.eq(ctl.indirect_desc), walker.epoch.eq(epoch),
                     used.epoch.eq(epoch)]

        # --- control: configuration, queue reset, restore ------------------------------------
        # Each change waits until both blocks are held with no DMA in flight, then takes one
        # cycle (the `op` strobe) and answers its stream.
        op = Signal(QueueOp(qc))
        bad = Signal()
        cfg = ctl.config.payload
        size = cfg.size
        misaligned = ((cfg.desc & (VIRTQ_DESC_ALIGN - 1)) != 0) | \
            ((cfg.driver & (VIRTQ_AVAIL_ALIGN - 1)) != 0) | \
            ((cfg.device & (VIRTQ_USED_ALIGN - 1)) != 0)
        # virtio 1.2 §2.7: the queue size is a power of two (checklist rule 73).
        m.d.comb += bad.eq((size == 0) | ((size & (size - 1)) != 0) | (size > self._max_size) |
                           misaligned)
        at_rest = walker.idle & used.idle
        both_op = [walker.op.payload.eq(op), used.op.payload.eq(op)]
        m.d.comb += both_op

        cfg_error = Signal()
        with m.FSM(name="control"):
            with m.State("IDLE"):
                with m.If(ctl.config.valid):
                    m.next = "CONFIG"
                with m.Elif(ctl.queue_reset.valid):
                    m.next = "QUEUE_RESET"
                with m.Elif(self.restore.valid):
                    m.next = "RESTORE"
            with m.State("CONFIG"):
                m.d.comb += [
                    walker.hold.eq(1), used.hold.eq(1),
                    op.queue.eq(cfg.queue),
                    op.config.size.eq(cfg.size),
                    op.config.desc.eq(cfg.desc),
                    op.config.driver.eq(cfg.driver),
                    op.config.device.eq(cfg.device),
                    op.kind.eq(QueueOpKind.INIT),
                ]
                with m.If(bad | ~cfg.enable):
                    m.d.comb += op.kind.eq(QueueOpKind.DISABLE)
                with m.If(at_rest):
                    m.d.comb += [walker.op.valid.eq(1), used.op.valid.eq(1),
                                 ctl.config.ready.eq(1)]
                    self._apply(m, op, enabled, epoch, enable=cfg.enable & ~bad)
                    with m.If(cfg.enable & bad):
                        m.d.comb += cfg_error.eq(1)
                    m.next = "IDLE"
            with m.State("QUEUE_RESET"):
                m.d.comb += [walker.hold.eq(1), used.hold.eq(1),
                             op.queue.eq(ctl.queue_reset.payload),
                             op.kind.eq(QueueOpKind.DISABLE)]
                with m.If(at_rest):
                    m.d.comb += [walker.op.valid.eq(1), used.op.valid.eq(1),
                                 ctl.queue_reset.ready.eq(1),
                                 ctl.queue_reset_done.valid.eq(1),
                                 ctl.queue_reset_done.payload.eq(ctl.queue_reset.payload)]
                    self._apply(m, op, enabled, epoch, enable=0)
                    m.next = "IDLE"
            with m.State("RESTORE"):
                r = self.restore.payload
                m.d.comb += [walker.hold.eq(1), used.hold.eq(1),
                             op.queue.eq(r.queue), op.kind.eq(QueueOpKind.RESTORE),
                             op.avail_idx.eq(r.avail_idx), op.used_idx.eq(r.used_idx)]
                with m.If(at_rest):
                    m.d.comb += [walker.op.valid.eq(1), used.op.valid.eq(1),
                                 self.restore.ready.eq(1)]
                    self._apply(m, op, enabled, epoch,
                                enable=enabled.bit_select(r.queue, 1))
                    m.next = "IDLE"

        with m.If(ctl.reset):
            m.d.sync += enabled.eq(0)
        m.d.comb += ctl.idle.eq(at_rest & ~ctl.config.valid & ~ctl.queue_reset.valid)

        # --- chains committed to pushed ports (early used_event) and read (chains in hand) -----
        # Pulled chains are left out: a device holds receive buffers until traffic comes, which
        # says nothing about when. Every port sees the same chain data; the walker commits one
        # chain at a time.
        m.d.comb += [
            used.committed.valid.eq(walker.counts.chain & ~walker.counts.chain_pulled),
            used.committed.payload.eq(walker.chain[0].data.segment.queue),
            used.seen.valid.eq(walker.seen.valid),
            used.seen.payload.eq(walker.seen.payload),
            used.irq_holdoff.eq(self.irq_holdoff),
            used.irq_low_water.eq(self.irq_low_water),
        ]

        # --- errors and counters -----------------------------------------------------------------
        errors = [walker.error, used.error]
        with m.If(~ctl.reset):
            m.d.comb += ctl.needs_reset.eq(walker.error.valid | used.error.valid | cfg_error)
        with m.If(cfg_error):
            m.d.sync += [self.error.code.eq(VirtqErrorCode.CONFIG),
                         self.error.queue.eq(cfg.queue)]
        for e in errors:
            with m.If(e.valid & ~ctl.reset):
                m.d.sync += self.error.eq(e.payload)

        c = self.counters
        incr = {
            "doorbells":    [walker.counts.doorbell],
            "avail_reads":  [walker.counts.avail_read, walker.counts.ahead_read],
            "desc_reads":   [walker.counts.desc_read],
            "event_writes": [walker.counts.event_write],
            "chains":       [walker.counts.chain],
            "event_reads":  [used.counts.event_read],
            "used_writes":  [used.counts.used_write],
            "idx_writes":   [used.counts.idx_write],
            "interrupts":   [used.counts.interrupt],
            "completed":    [used.counts.completed],
            "dropped":      [used.counts.dropped] + [f.dropped for f in fifos],
            "errors":       [walker.error.valid & ~ctl.reset, used.error.valid & ~ctl.reset,
                             cfg_error & ~ctl.reset],
        }
        for name, strobes in incr.items():
            field = getattr(c, name)
            m.d.sync += field.eq(field + sum(strobes))
        return m

    def _apply(self, m, op, enabled, epoch, *, enable):
        q = op.queue
        m.d.sync += [
            enabled.bit_select(q, 1).eq(enable),
            epoch.bit_select(q * EPOCH_BITS, EPOCH_BITS).eq(
                epoch.bit_select(q * EPOCH_BITS, EPOCH_BITS) + 1),
        ]
