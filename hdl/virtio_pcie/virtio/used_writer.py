# SPDX-License-Identifier: BSD-2-Clause
"""The used side of split virtqueues: used ring elements, used->idx, used buffer notifications.

References: virtio 1.2 §2.7.8 "The Virtqueue Used Ring", §2.7.7 "Used Buffer Notification
Suppression", §2.7.10; project checklist rules 86-96.
"""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaError, DmaRamReadSignature, DmaRamWriteSignature
from ..spec.virtio import (VirtqAvailFlags, VirtqAvailHeader, VirtqUsedElem, VirtqUsedHeader,
                           VIRTQ_IDX_BYTES, byte_offset, byte_size, virtq_used_event_offset,
                           virtq_used_ring_offset)
from .engine_signatures import (EPOCH_BITS, AvailSeen, DmaRequesterSignature, QueueOp,
                                QueueOpKind, VirtqErrorCode, VirtqErrorReport)
from .interface import VirtqCompletionSignature, queue_index_width

__all__ = ["UsedWriter", "UsedCounts", "USED_EVENT_ADDR"]

#: Byte address in the DMA read buffer where used_event (or avail->flags) lands; captured into
#: a register.
USED_EVENT_ADDR = 0xFF80

_ELEM_BYTES = byte_size(VirtqUsedElem)

UsedCounts = data.StructLayout({
    "event_read": 1,
    "used_write": 1,
    "idx_write":  1,
    "interrupt":  1,
    "completed":  1,
    "dropped":    1,
})

_UsedConfig = data.StructLayout({
    "size":   16,
    "driver": 64,
    "device": 64,
})


class UsedWriter(wiring.Component):
    """Publishes the device's completions in the used ring and asks for interrupts.

    Completions are gathered in the write buffer while they belong to the same queue and come
    back to back; a gathered batch is written with one DMA write (two when it wraps past the
    ring's end), then, once their statuses are back without error, ``used->idx`` with one
    2-byte write, all behind the device's own payload writes (whose statuses the device saw
    before completing; virtio 1.2 §2.7.8, checklist rules 86-87 and 91). An element write that
    failed (dropped while Bus Master Enable was clear) stops the queue with a DMA error and
    its index is never written. A batch is published only at an entry with
    ``batch_end`` set; a batch larger than the buffer has its elements written early and its
    index later. After the index write's status came back, ``used_event`` (VIRTIO_F_EVENT_IDX)
    or ``avail->flags`` is read, so the read is ordered after the index on the link, and the
    interrupt decision is ``vring_need_event(used_event, new, old)`` over the whole batch
    (rule 93) or "NO_INTERRUPT clear" (rule 92). The interrupt request goes out on ``irq``.

    Overlap: publishing and notifying are two machines. The publisher gathers, writes the
    elements and the index; once the index write's status is back the update is published
    and its queue is marked *dirty*, and the publisher goes on with the next update (of any
    queue) at once. The notifier takes the dirty queues in turn (round robin), one at a time:
    it reads that queue's published index and the index of its last decision (a RAM of
    ``queue_count`` 16-bit entries) and decides over everything published in between, one
    ``used_event`` read for however many updates were published meanwhile. So a read's round
    trip holds back neither the next updates' publication (of this queue or another) nor the
    decision's scope: ``vring_need_event`` over ``[last decided, published)`` is the decision
    of one update covering them all. The read still goes out after the index writes it covers
    (their statuses came back before the queue was marked dirty), and an index published
    after the notifier took the queue leaves it dirty for the next round. Only one event read
    is in flight at a time (the early read, a decision's or a held queue's second look), so
    every read lands in the one ``used_event`` register. A ``gathered_queues`` queue's finished
    batch waits for more of its completions while its own read is in flight, unless another
    queue's entry needs the write buffer. (Until wave 8 the writer waited for
    each update's read, taking only that queue's completions meanwhile: with four queues'
    completions interleaving it published about 2.3 entries per host round trip.)

    Completions for disabled queues, and completions of chains walked before the queue was last
    reset or re-enabled (``VirtqUsed.epoch``), are dropped. Queues stopped by a ring error keep
    their used side: their chains were valid.

    Early ``used_event`` read: when a chain of a moderated queue is committed to the device
    (``committed``), the writer reads that queue's ``used_event`` (or ``avail->flags``) at once,
    while the device works on the request. When the batch is published and that value
    already says "notify" for the new index, the interrupt follows the index write without a
    second read (the write's status has come back, so the message is ordered behind it on the
    link). Otherwise the value is read again after the index write, as without the early read:
    a driver that re-armed in between (virtio 1.2 §2.7.10, the re-check race) is still
    notified. The early value can only be older than the driver's current one, so it adds at
    most a spurious interrupt, which a driver ignores; never a missed one. With a
    Linux driver, whose ``used_event`` only moves forward up to its ``last_used_idx``, it adds
    none.

    Interrupt moderation (``irq_holdoff`` above 0), per queue: a notification due while the
    device still has more than ``irq_low_water`` chains of that queue in hand (read from the
    avail ring by the walker and not completed) is held, for at most ``irq_holdoff`` cycles; the
    used entries are published meanwhile as usual, and further notifications due for the same
    queue merge into the held one. It goes out as soon as the queue's chains in hand fall to
    ``irq_low_water`` (the device is running dry: the driver must refill in time), when the time
    is up, or when another queue's notification needs the holding place (one place: a held queue
    never blocks another). One exception keeps the batches large: after an interrupt covering n
    entries, the driver resubmits what it reaped, so for the next ``irq_holdoff`` cycles, until
    the walker has read n more of that queue's chains, it is not running dry even with few
    chains in hand, and its next notification is held for the refill too (then, with the refill
    in hand, until the low-water mark again). With EVENT_IDX, if the queue had more than
    ``irq_low_water`` chains in hand counting those n when the interrupt went, the next
    notification waits for all n of them, whatever the count: released on the mark before the
    refill arrived, it would cover only the completions since the interrupt, and so would the
    next (every batch smaller than the completions of one refill time repeats itself). A queue
    with no chain in hand is never held. A queue reset, a device reset or DRIVER_OK falling
    drops the hold. A hold after which a message went out for another queue (with a vector
    shared by both, or INTx, the driver's handler may have taken the held entries then) is
    decided again before it goes: ``used_event`` (``avail->flags``) is read once more, after
    every entry it covers was published, and if the driver no longer asks to be notified for any
    of them (``vring_need_event`` over them all) nothing is sent; otherwise the notification is
    only sent later, never suppressed (virtio 1.2 §2.7.10 sets no deadline). Pulled queues
    (``moderated_queues`` leaves them out) are never held: a device keeps receive buffers until
    traffic comes. The count of chains in hand is the avail index up to which the walker has the
    queue's entries (``seen``) minus its completions taken (published, or in the open batch; a
    RAM of ``queue_count`` 16-bit indices); after a state restore it starts from the restored
    used index. It counts a chain from its ring read, not from its commit to the device: a
    refill's chains reach the device only after their descriptor and table reads, and counted
    late they made a queue whose refill was on its way look dry.

    Parameters
    ----------
    data_width : int
    queue_count : int
    used_batch : int
        Used elements gathered per DMA write.
    moderated_queues : sequence of int, optional
        Queues whose notifications may be held and whose used_event is read early (default:
        all); the engine passes its pushed queues.
    gathered_queues : sequence of int, optional
        Queues whose finished batch waits for more of their completions while their
        ``used_event`` read is in flight (default: none): fewer element and index writes
        where the driver does not need each entry at once. The engine passes its pulled
        (receive) queues: a receive path's payload writes share the write engine with them,
        while a transmit (or blk) driver reuses each buffer as soon as it sees it used.

    Members
    -------
    dma : Out(DmaRequesterSignature())
    rd_ram : In(DmaRamWriteSignature(data_width))
        Snooped for the used_event / avail->flags read.
    wr_ram : In(DmaRamReadSignature(data_width))
        The DMA engine reads used elements from the write buffer.
    completion : In(VirtqCompletionSignature(queue_count))
    irq : Out(stream.Signature(queue_index_width(queue_count)))
    op : In(stream.Signature(QueueOp(queue_count), always_ready=True))
    hold : In(1)
        Do not accept completions or start a write.
    idle : Out(1)
        No DMA in flight (a gathered batch may be waiting for more entries, a dirty queue for
        its decision).
    reset, driver_ok, event_idx : In(1)
    enabled : In(queue_count)
    epoch : In(queue_count * EPOCH_BITS)
        Each queue's current epoch; completions of another epoch are dropped.
    stop : Out(stream.Signature(queue_index_width(queue_count), always_ready=True))
        A DMA error on this queue's used ring or event read.
    error : Out(stream.Signature(VirtqErrorReport(queue_count), always_ready=True))
    counts : Out(UsedCounts)
    committed : In(stream.Signature(queue_index_width(queue_count), always_ready=True))
        A chain of this queue was committed to the device (strobe): its ``used_event`` is read
        early.
    seen : In(stream.Signature(AvailSeen(queue_count), always_ready=True))
        The walker has this queue's avail entries up to ``idx`` in hand (strobe): the chains
        in hand counted for moderation.
    irq_holdoff : In(16)
        Most cycles a notification may be held (0: never held).
    irq_low_water : In(16)
        A notification is held only while the queue has more chains than this in hand.
    """

    def __init__(self, *, data_width, queue_count, used_batch, moderated_queues=None,
                 gathered_queues=()):
        if not isinstance(used_batch, int) or not 1 <= used_batch <= 4096:
            raise ValueError(f"used_batch must be an integer from 1 to 4096, not {used_batch!r}")
        if moderated_queues is None:
            moderated_queues = range(queue_count)
        moderated_queues = tuple(moderated_queues)
        if any(not isinstance(q, int) or not 0 <= q < queue_count for q in moderated_queues):
            raise ValueError(f"moderated_queues must be queue numbers below {queue_count}, not "
                             f"{moderated_queues!r}")
        self._moderated = sum(1 << q for q in set(moderated_queues))
        gathered_queues = tuple(gathered_queues)
        if any(not isinstance(q, int) or not 0 <= q < queue_count for q in gathered_queues):
            raise ValueError(f"gathered_queues must be queue numbers below {queue_count}, not "
                             f"{gathered_queues!r}")
        self._gathered = sum(1 << q for q in set(gathered_queues))
        self._dw    = data_width
        self._qc    = queue_count
        self._batch = used_batch
        qw = queue_index_width(queue_count)
        super().__init__({
            "dma":        Out(DmaRequesterSignature()),
            "rd_ram":     In(DmaRamWriteSignature(data_width)),
            "wr_ram":     In(DmaRamReadSignature(data_width)),
            "completion": In(VirtqCompletionSignature(queue_count)),
            "irq":        Out(stream.Signature(qw)),
            "op":         In(stream.Signature(QueueOp(queue_count), always_ready=True)),
            "hold":       In(1),
            "idle":       Out(1),
            "reset":      In(1),
            "driver_ok":  In(1),
            "event_idx":  In(1),
            "enabled":    In(queue_count),
            "epoch":      In(queue_count * EPOCH_BITS),
            "stop":       Out(stream.Signature(qw, always_ready=True)),
            "error":      Out(stream.Signature(VirtqErrorReport(queue_count), always_ready=True)),
            "counts":     Out(UsedCounts),
            "committed":  In(stream.Signature(qw, always_ready=True)),
            "seen":       In(stream.Signature(AvailSeen(queue_count), always_ready=True)),
            "irq_holdoff":   In(16),
            "irq_low_water": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        dw, qc, batch = self._dw, self._qc, self._batch
        beat = dw // 8
        beat_shift = beat.bit_length() - 1
        per_beat = dw // (8 * _ELEM_BYTES)           # used elements per buffer beat
        qw = queue_index_width(qc)

        # --- per-queue state: ring addresses, the published used->idx, the decided one ---------
        # (the publisher reads them at b_q, the notifier at n_q)
        m.submodules.cfg_mem = cfg_mem = memory.Memory(shape=_UsedConfig, depth=qc, init=[])
        m.submodules.idx_mem = idx_mem = memory.Memory(shape=16, depth=qc, init=[])
        m.submodules.dec_mem = dec_mem = memory.Memory(shape=16, depth=qc, init=[])
        cfg_wp, cfg_rp, n_cfg_rp = (cfg_mem.write_port(), cfg_mem.read_port(),
                                    cfg_mem.read_port())
        idx_wp, idx_rp = idx_mem.write_port(), idx_mem.read_port()
        # (transparent: an index published while the notifier loads it is seen, see N_LOAD)
        n_idx_rp = idx_mem.read_port(transparent_for=(idx_wp,))
        dec_wp, dec_rp = dec_mem.write_port(), dec_mem.read_port()

        # --- write buffer: gathered used elements, read by the DMA engine ----------------------
        buf_depth = max(2, (batch + per_beat - 1) // per_beat)
        m.submodules.buf = buf = memory.Memory(shape=dw, depth=buf_depth, init=[])
        buf_wp = buf.write_port(granularity=8 * _ELEM_BYTES)
        buf_rp = buf.read_port()
        m.d.comb += [
            buf_rp.addr.eq(self.wr_ram.addr),
            buf_rp.en.eq(self.wr_ram.en),
            self.wr_ram.data.eq(buf_rp.data),
        ]

        # --- chains in hand per queue: the avail index the walker has in hand, in RAM ----------
        # Counted from the walker's ring reads, not from the chains it commits: a refill's
        # chains reach the device only after their descriptor and indirect table reads (two
        # round trips after the ring read, more for a refill longer than the prefetcher's
        # slots), and counted late they made the queue look dry while its refill was on the
        # way (at 256 bits, a notification every 7 requests). The index is absolute: one cycle
        # after each report the RAM takes it, and `sn_add` is how far it moved (0 if it did not
        # move forward).
        moderated = Const(self._moderated, qc)
        gathered  = Const(self._gathered, qc)
        m.submodules.taken_mem = taken_mem = memory.Memory(shape=16, depth=qc, init=[])
        tk_wp = taken_mem.write_port()
        tk_inc_rp = taken_mem.read_port(transparent_for=(tk_wp,))
        tk_rp = taken_mem.read_port(transparent_for=(tk_wp,))
        cm = self.committed
        cm_mod = Signal()
        sn = self.seen
        sn_v = Signal()
        sn_q = Signal(qw)
        sn_idx = Signal(16)
        sn_add = Signal(16)
        sn_fwd = Signal(16)
        m.d.comb += [cm_mod.eq(cm.valid & moderated.bit_select(cm.payload, 1)),
                     tk_inc_rp.addr.eq(sn.payload.queue)]
        m.d.sync += [sn_v.eq(sn.valid & moderated.bit_select(sn.payload.queue, 1)),
                     sn_q.eq(sn.payload.queue), sn_idx.eq(sn.payload.idx)]
        m.d.comb += sn_fwd.eq(sn_idx - tk_inc_rp.data)
        with m.If(sn_v & ~sn_fwd[15]):
            m.d.comb += [tk_wp.addr.eq(sn_q), tk_wp.data.eq(sn_idx), tk_wp.en.eq(1),
                         sn_add.eq(sn_fwd)]

        # --- used_event / avail->flags snoop ---------------------------------------------------
        # event_val holds the last value read, for queue ev_q (valid: ev_valid); the early read
        # and the read after the index write land in it alike (only one is ever in flight).
        event_val = Signal(16)
        ev_q      = Signal(qw)
        ev_valid  = Signal()
        pf_want   = Signal()                 # a chain was committed: read its used_event early
        pf_q      = Signal(qw)
        pf_busy   = Signal()                 # the early read is in flight
        pf_killed = Signal()                 # ... and a device reset came meanwhile
        rd_ram = self.rd_ram
        with m.If(rd_ram.en & (rd_ram.addr == USED_EVENT_ADDR >> beat_shift)):
            for i in range(2):
                with m.If(rd_ram.be[i]):
                    m.d.sync += event_val.word_select(i, 8).eq(rd_ram.data.word_select(i, 8))

        # --- the open batch --------------------------------------------------------------------
        b_open  = Signal()                   # entries accepted and not yet published
        b_q     = Signal(qw)
        b_n     = Signal(range(batch + 1))   # elements in the buffer, not yet written
        b_end   = Signal()                   # the last accepted entry had batch_end
        b_ready = Signal()                   # cfg and wr_idx are loaded for b_q
        cfg     = Signal(_UsedConfig)
        wr_idx  = Signal(16)                 # the next used ring index to fill
        n1      = Signal(range(batch + 1))   # elements before the ring's end
        n1_r    = Signal(range(batch + 1))
        outstanding = Signal(range(4))
        w_err   = Signal()
        published = Signal()                 # strobe: used->idx of b_q is now wr_idx

        size_mask = Signal(16)
        slot      = Signal(16)
        m.d.comb += [size_mask.eq(cfg.size - 1), slot.eq(wr_idx & size_mask)]

        m.d.comb += [cfg_rp.addr.eq(b_q), idx_rp.addr.eq(b_q)]

        # --- the notification in progress (notifier) -------------------------------------------
        # Queues whose used->idx moved since their last notification decision are "dirty"; the
        # notifier takes them one at a time (in turn), n_q with its update [n_old, n_new).
        dirty   = Signal(qc)
        n_q     = Signal(qw)
        n_cfg   = Signal(_UsedConfig)
        n_old   = Signal(16)                 # used->idx at the queue's last decision
        n_new   = Signal(16)                 # used->idx published, this decision's end
        n_pub   = Signal(16)                 # the queue's latest published used->idx
        need    = Signal()
        n_idle  = Signal()                   # the notifier is free (IDLE)
        n_reading_b = Signal()               # its used_event read for b_q is in flight
        n_take  = Signal()                   # ... and takes the dirty queue `pick`
        n_addr  = Signal(qw)
        pick    = Signal(qw)                 # the dirty queue the notifier takes next
        # (the queue is read at `pick` while it is taken, so that its state is there a cycle
        # later; an update published in that cycle is taken with it)
        m.d.comb += [n_addr.eq(Mux(n_idle, pick, n_q)),
                     n_cfg_rp.addr.eq(n_addr), n_idx_rp.addr.eq(n_addr),
                     dec_rp.addr.eq(n_addr), tk_rp.addr.eq(n_q)]
        # The next dirty queue after the last one taken (round robin: a queue completing
        # steadily does not keep the others' decisions waiting).
        dirty_now = Signal(qc)               # (with an update published in this cycle)
        above     = Signal(qc)
        m.d.comb += [dirty_now.eq(dirty | Mux(published, Const(1, qc) << b_q, 0)),
                     above.eq(dirty_now & ~((Const(2, qc + 1) << n_q) - 1)[:qc])]
        for i in reversed(range(qc)):
            with m.If(dirty_now[i]):
                m.d.comb += pick.eq(i)
        for i in reversed(range(qc)):
            with m.If(above[i]):
                m.d.comb += pick.eq(i)

        used = self.completion.used
        c = used.payload
        # A completion for a disabled queue, or of a chain walked before the queue was last
        # reset or re-enabled (its epoch is not the queue's), is dropped: it must not be
        # published in the queue's new ring (virtio 1.2 §2.6.1).
        c_live = ((c.queue < qc) & self.enabled.bit_select(c.queue, 1) &
                  (self.epoch.bit_select(c.queue * EPOCH_BITS, EPOCH_BITS) == c.epoch))

        def put(index):
            elem = Signal(VirtqUsedElem)
            m.d.comb += [
                elem.id.eq(c.head),
                elem.len.eq(c.len),
                buf_wp.addr.eq(index // per_beat if per_beat > 1 else index),
                buf_wp.data.eq(elem.as_value().replicate(per_beat)),
                buf_wp.en.eq(1 << (index % per_beat) if per_beat > 1 else 1),
            ]

        wr_req, rd_req = self.dma.wr_req, self.dma.rd_req
        wr_status, rd_status = self.dma.wr_status, self.dma.rd_status
        with m.If(wr_req.valid & wr_req.ready):
            m.d.sync += outstanding.eq(outstanding + 1 - wr_status.valid)
        with m.Elif(wr_status.valid):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If(wr_status.valid & (wr_status.payload.error != DmaError.OK)):
            m.d.sync += w_err.eq(1)

        n_reporting = Signal()               # the notifier reports an error in this cycle

        def report(code, queue):
            with m.If(~self.reset):
                m.d.comb += [self.error.valid.eq(1), self.error.payload.code.eq(code),
                             self.error.payload.queue.eq(queue),
                             self.stop.valid.eq(1), self.stop.payload.eq(queue)]

        # --- the notification decision: vring_need_event or NO_INTERRUPT ------------------------
        # virtio 1.2 §2.7.10: vring_need_event(used_event, new_idx, old_idx) over the whole update
        due   = Signal()
        ahead = Signal(16)
        moved = Signal(16)
        m.d.comb += [ahead.eq(n_new - event_val - 1), moved.eq(n_new - n_old),
                     due.eq(Mux(self.event_idx, ahead < moved,
                                ~(event_val & VirtqAvailFlags.NO_INTERRUPT.value).any()))]
        event_addr = n_cfg.driver + Mux(self.event_idx, virtq_used_event_offset(n_cfg.size),
                                        byte_offset(VirtqAvailHeader, "flags"))

        def read_event(addr=event_addr, queue=n_q):
            # The one used_event (avail->flags) read: the notifier's queue's (by default) or a
            # held queue's; its value lands at USED_EVENT_ADDR for queue `queue`.
            m.d.comb += [
                rd_req.valid.eq(1),
                rd_req.payload.host_addr.eq(addr),
                rd_req.payload.ram_addr.eq(USED_EVENT_ADDR),
                rd_req.payload.len.eq(VIRTQ_IDX_BYTES),
            ]
            with m.If(rd_req.ready):
                m.d.comb += self.counts.event_read.eq(1)
                m.d.sync += [ev_q.eq(queue), ev_valid.eq(0)]

        # --- early used_event read: its status -------------------------------------------------
        with m.If(cm_mod):
            m.d.sync += [pf_want.eq(1), pf_q.eq(cm.payload)]
        with m.If(pf_busy & rd_status.valid):
            m.d.sync += pf_busy.eq(0)
            with m.If((rd_status.payload.error == DmaError.OK) & ~pf_killed & ~self.reset):
                m.d.sync += ev_valid.eq(1)

        # --- interrupt moderation: one held notification ---------------------------------------
        H  = self.irq_holdoff
        LW = self.irq_low_water
        hold_valid = Signal()
        hold_q     = Signal(qw)
        hold_timer = Signal(16)
        hold_left  = Signal(16)              # the held queue's chains in hand
        hold_cov   = Signal(16)              # used entries the held notification covers
        hold_end   = Signal(16)              # ... up to this used index (the last published)
        hold_ev    = Signal(64)              # the held queue's used_event / avail->flags address
        # A message went out for another queue since the hold began: with a shared vector
        # (or INTx) the driver's handler may have taken the held entries already.
        hold_shadow = Signal()
        recheck     = Signal()               # go from FINAL to the shadowed hold's second look
        expire     = Signal()
        held_due   = Signal()
        held_ahead = Signal(16)
        m.d.comb += [held_ahead.eq(hold_end - event_val - 1),
                     held_due.eq(Mux(self.event_idx, held_ahead < hold_cov,
                                     ~(event_val & VirtqAvailFlags.NO_INTERRUPT.value).any()))]
        with m.If(hold_valid & (hold_timer != 0)):
            m.d.sync += hold_timer.eq(hold_timer - 1)
        # The refill the last interrupt asked for: the driver resubmits what it reaped, so after
        # an interrupt covering n entries of queue rf_q, up to n new chains of it are expected
        # within the refill window (irq_holdoff cycles). While they are, the queue is not running
        # dry even with few chains in hand: its notification may wait for them.
        rf_q     = Signal(qw)
        rf_left  = Signal(16)
        rf_timer = Signal(16)
        # The refill is expected in full before the low-water mark decides: the driver's
        # handler reaps more than the interrupt covered (what completed until it ran), so the
        # refill arrives late and large. Released on the mark before it has all arrived, the
        # next interrupt covers only the completions since the last one, and the batches stay
        # small (a stable mode: at the 256-bit data path, half the size the mark allows).
        # Only where the mark would have held anyway (chains in hand and the covered ones
        # above it at the interrupt): a queue kept shallower is never held for its refill.
        # Only with EVENT_IDX: without it the covered entries include those the driver's
        # handler took while it ran with NO_INTERRUPT set (virtblk_done polls until the queue
        # is empty), and waiting for their refill too ran the queue dry (notify bench, flags
        # only, 128 bits: 98.1 -> 90.6 % of the data path).
        rf_gate  = Signal()
        with m.If(rf_timer != 0):
            m.d.sync += rf_timer.eq(rf_timer - 1)
        with m.If((sn_q == rf_q) & (sn_add != 0)):
            m.d.sync += rf_left.eq(Mux(sn_add >= rf_left, 0, rf_left - sn_add))

        def refill_expected(q):
            return (rf_q == q) & (rf_left != 0) & (rf_timer != 0)

        def refill_pending(q):
            return refill_expected(q) & rf_gate

        def in_hand_with_refill(q, n):
            # Chains of the refill not yet committed count as in hand: a device that takes
            # fewer chains at once than the refill brings commits its last ones only as it
            # runs down, and must not be held until it is dry waiting for them.
            return n + Mux(refill_expected(q), rf_left, 0)

        def notified(q, n, have):
            m.d.sync += [rf_q.eq(q), rf_left.eq(n), rf_timer.eq(H),
                         rf_gate.eq((have + n > LW) & self.event_idx)]
        h_up   = Mux(sn_q == hold_q, sn_add, 0)
        h_down = self.counts.completed & (c.queue == hold_q)
        with m.If(h_down & (hold_left + h_up != 0)):
            m.d.sync += hold_left.eq(hold_left + h_up - 1)
        with m.Elif(~h_down):
            m.d.sync += hold_left.eq(hold_left + h_up)
        # (not while a finished batch of the held queue is on its way or its update waits for
        # its decision: that decision sends the notification, one interrupt for both)
        m.d.comb += expire.eq(hold_valid & ~(b_open & b_end & (b_q == hold_q)) &
                              ~dirty.bit_select(hold_q, 1) &
                              ((hold_timer == 0) | (hold_left == 0) |
                               ((in_hand_with_refill(hold_q, hold_left) <= LW) &
                                ~refill_pending(hold_q))))

        # --- the publisher: gather, write the elements, then used->idx -----------------------
        with m.FSM(name="used") as pub_fsm:
            with m.State("COLLECT"):
                with m.If(self.reset):
                    m.d.comb += used.ready.eq(1)
                    m.d.sync += [b_open.eq(0), b_n.eq(0)]
                with m.Elif(~self.hold & self.driver_ok):
                    with m.If(used.valid & ~c_live):
                        m.d.comb += [used.ready.eq(1), self.counts.dropped.eq(1)]
                    with m.Elif(used.valid & ~b_open):
                        m.d.comb += [used.ready.eq(1), self.counts.completed.eq(1)]
                        put(0)
                        m.d.sync += [b_open.eq(1), b_q.eq(c.queue), b_n.eq(1),
                                     b_end.eq(c.batch_end), b_ready.eq(0)]
                        m.next = "LOAD0"
                    with m.Elif(used.valid & (c.queue == b_q) & (b_n != batch)):
                        m.d.comb += [used.ready.eq(1), self.counts.completed.eq(1)]
                        put(b_n)
                        m.d.sync += [b_n.eq(b_n + 1), b_end.eq(c.batch_end)]
                    with m.Elif(b_open & ((b_n == batch) | used.valid |
                                          (b_end & ~n_reading_b))):
                        # Full, or another queue's entry (a device that breaks the batch rule:
                        # publish what we have), or finished and nothing more is waiting. A
                        # finished batch of a gathered queue whose used_event read is in
                        # flight waits for more of its entries until the read is back (its
                        # next decision cannot start before): one update then, not one per
                        # gap in the completions, as long as no other queue's entry needs the
                        # buffer.
                        with m.If(used.valid & (c.queue != b_q)):
                            m.d.sync += b_end.eq(1)
                        m.d.sync += w_err.eq(0)
                        m.next = "W_ELEM"
            with m.State("LOAD0"):
                m.next = "LOAD1"
            with m.State("LOAD1"):
                m.d.sync += [cfg.eq(cfg_rp.data), wr_idx.eq(idx_rp.data), b_ready.eq(1)]
                m.next = "COLLECT"

            with m.State("W_ELEM"):
                room = Signal(17)
                m.d.comb += room.eq(cfg.size - slot)
                with m.If(b_n == 0):
                    m.next = "W_IDX"
                with m.Else():
                    m.d.comb += n1.eq(Mux(b_n > room, room, b_n))
                    m.d.comb += [
                        wr_req.valid.eq(1),
                        wr_req.payload.host_addr.eq(cfg.device + virtq_used_ring_offset(slot)),
                        wr_req.payload.ram_addr.eq(0),
                        wr_req.payload.len.eq(n1 * _ELEM_BYTES),
                    ]
                    with m.If(wr_req.ready):
                        m.d.comb += self.counts.used_write.eq(1)
                        m.d.sync += n1_r.eq(n1)
                        with m.If(n1 != b_n):
                            m.next = "W_ELEM2"
                        with m.Else():
                            m.d.sync += [wr_idx.eq(wr_idx + b_n), b_n.eq(0)]
                            m.next = "W_IDX"
            with m.State("W_ELEM2"):
                m.d.comb += [
                    wr_req.valid.eq(1),
                    wr_req.payload.host_addr.eq(cfg.device + virtq_used_ring_offset(0)),
                    wr_req.payload.ram_addr.eq(n1_r * _ELEM_BYTES),
                    wr_req.payload.len.eq((b_n - n1_r) * _ELEM_BYTES),
                ]
                with m.If(wr_req.ready):
                    m.d.comb += self.counts.used_write.eq(1)
                    m.d.sync += [wr_idx.eq(wr_idx + b_n), b_n.eq(0)]
                    m.next = "W_IDX"
            with m.State("W_IDX"):
                # used->idx publishes the elements: it goes out only once their writes' statuses
                # are back without error (virtio 1.2 §2.7.8: the index is updated after the
                # entries). A status is given when the write's last TLP has left, or when the
                # DMA engine dropped it (Bus Master Enable clear, PCIe Base 4.0 §7.5.1.1.3): an
                # index sent behind a dropped element, once bus mastering is back, would publish
                # an entry the driver never got. On an error or a reset, no index: W_WAIT
                # reports the error or drops the batch.
                with m.If(~b_end):
                    m.next = "W_WAIT"
                with m.Elif((outstanding != 0) | wr_status.valid):
                    pass
                with m.Elif(w_err | self.reset):
                    m.next = "W_WAIT"
                with m.Else():
                    m.d.comb += [
                        wr_req.valid.eq(1),
                        wr_req.payload.host_addr.eq(cfg.device +
                                                    byte_offset(VirtqUsedHeader, "idx")),
                        wr_req.payload.len.eq(VIRTQ_IDX_BYTES),
                        wr_req.payload.imm_en.eq(1),
                        wr_req.payload.imm_data.eq(wr_idx),
                    ]
                    with m.If(wr_req.ready):
                        m.d.comb += self.counts.idx_write.eq(1)
                        m.next = "W_WAIT"
            with m.State("W_WAIT"):
                with m.If((outstanding == 0) & ~wr_status.valid):
                    with m.If(self.reset):
                        m.d.sync += [b_open.eq(0), b_n.eq(0)]
                        m.next = "COLLECT"
                    with m.Elif(w_err):
                        # Nothing of the batch is published, and the stored index stays
                        # where the driver saw it last: a later completion of the queue (its
                        # used side keeps working) is written over the lost elements' slots,
                        # never published behind them. (One report a cycle: the notifier's
                        # goes first.)
                        with m.If(~n_reporting):
                            report(VirtqErrorCode.DMA, b_q)
                            m.d.sync += [b_open.eq(0), b_n.eq(0)]
                            m.next = "COLLECT"
                    with m.Elif(~b_end):
                        m.next = "COLLECT"         # elements written early; idx comes later
                    with m.Else():
                        m.next = "FINAL"
            with m.State("FINAL"):
                # The index write's status is back: the update is published, and its
                # notification decision is the notifier's (the queue is dirty), ordered after
                # the index on the link. The publisher goes on with the next update at once.
                m.d.comb += [idx_wp.addr.eq(b_q), idx_wp.data.eq(wr_idx), idx_wp.en.eq(1),
                             published.eq(1)]
                m.d.sync += b_open.eq(b_n != 0)
                m.next = "COLLECT"

        # --- the notifier: used_event reads, decisions, interrupts, moderation ----------------
        with m.FSM(name="notify") as n_fsm:
            with m.State("IDLE"):
                with m.If(self.reset):
                    pass
                with m.Elif(expire & ~self.hold):
                    m.next = "SEND_HELD"
                with m.Elif(~self.hold & self.driver_ok & dirty_now.any()):
                    m.d.comb += n_take.eq(1)
                    m.d.sync += n_q.eq(pick)
                    m.next = "N_LOAD"
                with m.Elif(~self.hold & self.driver_ok & ~b_open & ~used.valid & pf_want &
                            ~pf_busy):
                    # (only while nothing else is to do: the early read is for latency at low
                    # load, and would keep a busy queue's decision waiting a round trip)
                    m.d.sync += [n_q.eq(pf_q), pf_want.eq(0)]
                    m.next = "PF_LOAD0"
            with m.State("N_LOAD"):
                # Indices published up to the cycle the queue was taken are read (the read port
                # is transparent); one published in this cycle keeps the queue dirty.
                m.d.sync += [n_cfg.eq(n_cfg_rp.data), n_old.eq(dec_rp.data),
                             n_new.eq(n_idx_rp.data), n_pub.eq(n_idx_rp.data)]
                m.next = "EARLY"

            # --- early used_event read (n_q is pf_q) -------------------------------------------
            with m.State("PF_LOAD0"):
                m.next = "PF_LOAD1"
            with m.State("PF_LOAD1"):
                m.d.sync += n_cfg.eq(n_cfg_rp.data)
                m.next = "PF_READ"
            with m.State("PF_READ"):
                with m.If(self.reset | ~self.driver_ok | self.hold):
                    m.next = "IDLE"
                with m.Else():
                    read_event()
                    with m.If(rd_req.ready):
                        m.d.sync += [pf_busy.eq(1), pf_killed.eq(0)]
                        m.next = "IDLE"

            # --- used buffer notification ---------------------------------------------------------
            with m.State("EARLY"):
                # The early value already says "notify": no second read. Otherwise (no value, or
                # "no") read it again now, behind the index write (the re-check race).
                with m.If(pf_busy):
                    pass                                     # wait for the early read
                with m.Elif(self.reset | (n_new == n_old)):
                    m.next = "IDLE"                          # nothing to decide
                with m.Elif(ev_valid & (ev_q == n_q) & due):
                    m.d.sync += need.eq(1)
                    m.next = "NOTIFY"
                with m.Else():
                    m.next = "R_EVENT"
            with m.State("R_EVENT"):
                read_event()
                with m.If(rd_req.ready):
                    m.next = "R_WAIT"
            with m.State("R_WAIT"):
                with m.If(rd_status.valid):
                    with m.If(self.reset):
                        m.next = "IDLE"
                    with m.Elif(rd_status.payload.error != DmaError.OK):
                        # Cannot tell: notify (a spurious interrupt is harmless).
                        report(VirtqErrorCode.DMA, n_q)
                        m.d.comb += n_reporting.eq(1)
                        m.d.sync += need.eq(1)
                        m.next = "NOTIFY"
                    with m.Else():
                        m.d.sync += ev_valid.eq(1)
                        m.next = "DECIDE"
            with m.State("DECIDE"):
                m.d.sync += need.eq(due)
                m.next = "NOTIFY"
            with m.State("NOTIFY"):
                # The queue's chains in hand: committed, less every completion taken (published,
                # or gathered in the publisher's open batch); a value beyond the queue size,
                # e.g. after a restore, counts as none.
                in_hand  = Signal(16)
                may_hold = Signal()
                taken    = Signal(16)
                with m.If(b_open & (b_q == n_q) & b_ready):
                    m.d.comb += taken.eq(wr_idx + b_n)
                with m.Elif(b_open & (b_q == n_q)):
                    m.d.comb += taken.eq(n_pub + b_n)
                with m.Else():
                    m.d.comb += taken.eq(n_pub)
                m.d.comb += [
                    in_hand.eq(tk_rp.data - taken),
                    may_hold.eq((H != 0) & moderated.bit_select(n_q, 1) &
                                (in_hand <= n_cfg.size) & (in_hand != 0) &
                                ((in_hand_with_refill(n_q, in_hand) > LW) |
                                 refill_pending(n_q))),
                ]
                send_now  = Signal()
                held_here = Signal()
                m.d.comb += held_here.eq(hold_valid & (hold_q == n_q))
                # The held queue's updates decide its release here, due or not: while its
                # completions stream in, a batch of it is nearly always open, and the release
                # in IDLE (which waits for that batch) would wait until the queue is dry.
                with m.If(~self.driver_ok | self.reset):
                    m.next = "N_FINAL"
                with m.Elif(held_here & may_hold & (hold_timer != 0)):
                    # merged into the held one (published under the hold)
                    m.d.sync += [hold_left.eq(in_hand), hold_cov.eq(hold_cov + moved),
                                 hold_end.eq(n_new)]
                    m.next = "N_FINAL"
                with m.Elif(held_here & hold_shadow & ~need):
                    # running dry, but shadowed and this update is not due: decide again
                    m.d.sync += [hold_cov.eq(hold_cov + moved), hold_end.eq(n_new),
                                 recheck.eq(1)]
                    m.next = "N_FINAL"
                with m.Elif(~need & ~held_here):
                    m.next = "N_FINAL"
                with m.Elif(held_here):
                    # The queue is running dry or its time is up: one interrupt for both.
                    m.d.comb += [self.irq.valid.eq(1), self.irq.payload.eq(n_q)]
                    with m.If(self.irq.ready):
                        m.d.comb += self.counts.interrupt.eq(1)
                        m.d.sync += hold_valid.eq(0)
                        notified(n_q, hold_cov + moved, in_hand)
                        m.next = "N_FINAL"
                with m.Elif(may_hold & hold_valid):
                    # Another queue holds the place: its notification goes now, this one waits.
                    m.d.comb += [self.irq.valid.eq(1), self.irq.payload.eq(hold_q)]
                    with m.If(self.irq.ready):
                        m.d.comb += self.counts.interrupt.eq(1)
                        notified(hold_q, hold_cov, hold_left)
                        m.d.sync += [hold_q.eq(n_q), hold_timer.eq(H), hold_left.eq(in_hand),
                                     hold_cov.eq(moved), hold_end.eq(n_new),
                                     hold_ev.eq(event_addr), hold_shadow.eq(1)]
                        m.next = "N_FINAL"
                with m.Elif(may_hold):
                    m.d.sync += [hold_valid.eq(1), hold_q.eq(n_q), hold_timer.eq(H),
                                 hold_left.eq(in_hand), hold_cov.eq(moved), hold_end.eq(n_new),
                                 hold_ev.eq(event_addr), hold_shadow.eq(0)]
                    m.next = "N_FINAL"
                with m.Else():
                    m.d.comb += send_now.eq(1)
                with m.If(send_now):
                    m.d.comb += [self.irq.valid.eq(1), self.irq.payload.eq(n_q)]
                    with m.If(self.irq.ready):
                        m.d.comb += self.counts.interrupt.eq(1)
                        notified(n_q, moved, in_hand)
                        m.d.sync += hold_shadow.eq(1)
                        m.next = "N_FINAL"
            def send_held():
                m.d.comb += [self.irq.valid.eq(1), self.irq.payload.eq(hold_q)]
                with m.If(self.irq.ready):
                    m.d.comb += self.counts.interrupt.eq(1)
                    m.d.sync += hold_valid.eq(0)
                    notified(hold_q, hold_cov, hold_left)
                    m.next = "IDLE"
            with m.State("SEND_HELD"):
                with m.If(~hold_valid | self.reset | ~self.driver_ok):
                    m.d.sync += hold_valid.eq(0)
                    m.next = "IDLE"
                with m.Elif(hold_shadow):
                    m.next = "H_READ"
                with m.Else():
                    send_held()
            # A shadowed hold: read used_event (avail->flags) again, now that every entry it
            # covers is published, and decide over them all (virtio 1.2 §2.7.10): a driver
            # whose handler already took them (run by a message for another queue on the same
            # vector) has moved used_event past them, and the message would find no work.
            with m.State("H_READ"):
                with m.If(~hold_valid | self.reset | ~self.driver_ok):
                    m.d.sync += hold_valid.eq(0)
                    m.next = "IDLE"
                with m.Elif(~pf_busy):                       # one event read at a time
                    read_event(hold_ev, hold_q)
                    with m.If(rd_req.ready):
                        m.next = "H_WAIT"
            with m.State("H_WAIT"):
                with m.If(rd_status.valid):
                    with m.If(self.reset | ~hold_valid):
                        m.d.sync += hold_valid.eq(0)
                        m.next = "IDLE"
                    with m.Elif(rd_status.payload.error != DmaError.OK):
                        # Cannot tell: notify (a spurious interrupt is harmless).
                        report(VirtqErrorCode.DMA, hold_q)
                        m.d.comb += n_reporting.eq(1)
                        m.d.sync += hold_shadow.eq(0)
                        m.next = "SEND_HELD"
                    with m.Else():
                        m.d.sync += ev_valid.eq(1)
                        m.next = "H_DECIDE"
            with m.State("H_DECIDE"):
                with m.If(~hold_valid | self.reset | ~self.driver_ok | ~held_due):
                    m.d.sync += hold_valid.eq(0)             # nothing left to announce
                    m.next = "IDLE"
                with m.Else():
                    send_held()
            with m.State("N_FINAL"):
                m.d.comb += [dec_wp.addr.eq(n_q), dec_wp.data.eq(n_new), dec_wp.en.eq(1)]
                m.d.sync += recheck.eq(0)
                with m.If(recheck):
                    m.next = "H_READ"
                with m.Else():
                    m.next = "IDLE"

        # --- dirty queues: set when an update is published, cleared when the notifier takes it
        m.d.comb += [n_idle.eq(n_fsm.ongoing("IDLE")),
                     n_reading_b.eq((n_fsm.ongoing("R_EVENT") | n_fsm.ongoing("R_WAIT")) &
                                    (n_q == b_q) & gathered.bit_select(b_q, 1))]
        with m.If(n_take):
            m.d.sync += dirty.bit_select(pick, 1).eq(0)
        with m.If(published & ~(n_take & (pick == b_q))):
            m.d.sync += dirty.bit_select(b_q, 1).eq(1)
            with m.If(b_q == n_q):
                m.d.sync += n_pub.eq(wr_idx)
        m.d.comb += self.idle.eq(pub_fsm.ongoing("COLLECT") & n_fsm.ongoing("IDLE") & ~pf_busy)

        # --- queue configuration changes ---------------------------------------------------------
        op = self.op.payload
        with m.If(self.op.valid):
            oq = op.queue
            with m.If(b_open & (b_q == oq)):
                m.d.sync += [b_open.eq(0), b_n.eq(0)]
            with m.If(hold_q == oq):
                m.d.sync += hold_valid.eq(0)          # a reset queue is not notified
            with m.If(rf_q == oq):
                m.d.sync += rf_timer.eq(0)
            with m.If(pf_q == oq):
                m.d.sync += pf_want.eq(0)
            with m.If(ev_q == oq):
                m.d.sync += ev_valid.eq(0)
            m.d.sync += dirty.bit_select(oq, 1).eq(0)   # nothing to decide in a reset queue
            with m.Switch(op.kind):
                with m.Case(QueueOpKind.INIT):
                    m.d.comb += [
                        cfg_wp.addr.eq(oq), cfg_wp.en.eq(1),
                        cfg_wp.data.size.eq(op.config.size),
                        cfg_wp.data.driver.eq(op.config.driver),
                        cfg_wp.data.device.eq(op.config.device),
                        idx_wp.addr.eq(oq), idx_wp.data.eq(0), idx_wp.en.eq(1),
                        dec_wp.addr.eq(oq), dec_wp.data.eq(0), dec_wp.en.eq(1),
                        tk_wp.addr.eq(oq), tk_wp.data.eq(0), tk_wp.en.eq(1),
                    ]
                with m.Case(QueueOpKind.RESTORE):
                    # Chains in hand restart from none: completions of chains walked before
                    # the restore are dropped (epochs).
                    m.d.comb += [idx_wp.addr.eq(oq), idx_wp.data.eq(op.used_idx),
                                 idx_wp.en.eq(1),
                                 dec_wp.addr.eq(oq), dec_wp.data.eq(op.used_idx),
                                 dec_wp.en.eq(1),
                                 tk_wp.addr.eq(oq), tk_wp.data.eq(op.used_idx), tk_wp.en.eq(1)]
        with m.If(self.reset | ~self.driver_ok):
            m.d.sync += hold_valid.eq(0)
        with m.If(self.reset):
            m.d.sync += [ev_valid.eq(0), pf_want.eq(0), rf_timer.eq(0), dirty.eq(0)]
            with m.If(pf_busy):
                m.d.sync += pf_killed.eq(1)
        return m

