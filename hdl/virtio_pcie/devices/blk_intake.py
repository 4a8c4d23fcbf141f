# SPDX-License-Identifier: BSD-2-Clause
"""Receives descriptor chains, one segment per beat, into the request slots of virtio-blk."""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..virtio.interface import VirtqSegment
from .blk_interface import SUM_WIDTH, SegEntry, SlotStart, slot_index_width

__all__ = ["BlkIntake"]


class BlkIntake(wiring.Component):
    """Files each chain's buffers into a free slot's segment lists.

    A chain's first segment waits until a slot is free (back-pressure to the virtqueue
    engine). Readable buffers go to the slot's readable list, writable ones to its writable
    list, in chain order; the last writable buffer is also kept apart (it holds the status
    byte, virtio 1.2 §5.2.6, even when the lists overflowed). Zero-length buffers and
    ``empty`` beats are skipped. When the ``last`` segment has arrived, ``start`` tells the
    slot the byte totals each way.

    A chain is *bad* (and will complete with IOERR without any data moving) if a readable
    buffer follows a writable one (virtio 1.2 §2.7.4.2), if either list overflows
    ``max_segments``, or if it is cut short by another chain's ``first`` segment.

    Parameters
    ----------
    queue_count : int
    slots : int
    max_segments : int
        Entries of each segment list per slot (a power of two).

    Members
    -------
    segment : In(stream.Signature(VirtqSegment(queue_count)))
    free : In(slots)
        One bit per slot that can take a new request.
    r_addr, r_data, r_en : Out
        Write port of the readable segment RAM (entry ``slot * max_segments + index``).
    w_addr, w_data, w_en : Out
        Write port of the writable segment RAM.
    l_addr, l_data, l_en : Out
        Write port of the last-writable-buffer RAM (entry ``slot``).
    start : Out(stream.Signature(SlotStart(queue_count, slots), always_ready=True))
        One beat per chain received.
    reset : In(1)
        Drop the chain being received and every segment until it goes low.
    busy : Out(1)
        A chain is being received.
    """

    def __init__(self, *, queue_count, slots, max_segments):
        if not isinstance(max_segments, int) or max_segments < 2 or \
                max_segments & (max_segments - 1):
            raise ValueError(f"max_segments must be a power of two of at least 2, "
                             f"not {max_segments!r}")
        self._queue_count  = queue_count
        self._slots        = slots
        self._max_segments = max_segments
        seg_addr = slot_index_width(slots) + (max_segments - 1).bit_length()
        super().__init__({
            "segment": In(stream.Signature(VirtqSegment(queue_count))),
            "free":    In(slots),
            "r_addr":  Out(seg_addr),
            "r_data":  Out(SegEntry),
            "r_en":    Out(1),
            "w_addr":  Out(seg_addr),
            "w_data":  Out(SegEntry),
            "w_en":    Out(1),
            "l_addr":  Out(slot_index_width(slots)),
            "l_data":  Out(SegEntry),
            "l_en":    Out(1),
            "start":   Out(stream.Signature(SlotStart(queue_count, slots), always_ready=True)),
            "reset":   In(1),
            "busy":    Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        seg  = self.segment.payload
        maxs = self._max_segments
        idx_bits = (maxs - 1).bit_length()

        lowest = Signal(slot_index_width(self._slots))
        for i in reversed(range(self._slots)):
            with m.If(self.free[i]):
                m.d.comb += lowest.eq(i)

        slot    = Signal.like(lowest)
        n_r     = Signal(range(maxs + 1))
        n_w     = Signal(range(maxs + 1))
        sum_r   = Signal(SUM_WIDTH)
        sum_w   = Signal(SUM_WIDTH)
        bad     = Signal()
        started = Signal()
        seen_w  = Signal()
        queue   = Signal.like(self.start.payload.queue)
        head    = Signal(16)
        epoch   = Signal.like(seg.epoch)
        info    = self.start.payload

        def saturating_add(total, amount):
            wide = total + amount
            return wide.bit_select(0, SUM_WIDTH) | wide[SUM_WIDTH].replicate(SUM_WIDTH)

        entry = Signal(SegEntry)
        m.d.comb += [
            entry.addr.eq(seg.addr),
            entry.len.eq(seg.len),
            self.r_addr.eq(Cat(n_r[:idx_bits], slot)),
            self.r_data.eq(entry),
            self.w_addr.eq(Cat(n_w[:idx_bits], slot)),
            self.w_data.eq(entry),
            self.l_addr.eq(slot),
            self.l_data.eq(entry),
        ]

        with m.FSM():
            with m.State("IDLE"):
                # Lone non-first beats (an engine protocol error) and empty answers are dropped.
                m.d.comb += self.segment.ready.eq(
                    self.reset | seg.empty | ~seg.first)
                with m.If(self.segment.valid & seg.first & ~seg.empty & ~self.reset &
                          (self.free != 0)):
                    m.d.comb += self.segment.ready.eq(0)
                    m.d.sync += [
                        slot.eq(lowest),
                        queue.eq(seg.queue),
                        head.eq(seg.head),
                        epoch.eq(seg.epoch),
                        n_r.eq(0), n_w.eq(0), sum_r.eq(0), sum_w.eq(0),
                        bad.eq(0), started.eq(0), seen_w.eq(0),
                    ]
                    m.next = "COLLECT"

            with m.State("COLLECT"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.reset):
                    m.d.comb += self.segment.ready.eq(1)
                    m.next = "IDLE"
                with m.Elif(self.segment.valid & seg.first & started & ~seg.empty):
                    # Another chain begins before this one ended: close this one as bad and
                    # take the new first segment in IDLE.
                    m.d.sync += bad.eq(1)
                    m.next = "FINISH"
                with m.Else():
                    m.d.comb += self.segment.ready.eq(1)
                    with m.If(self.segment.valid & ~seg.empty):
                        m.d.sync += started.eq(1)
                        with m.If(seg.len != 0):
                            with m.If(~seg.write):
                                m.d.sync += sum_r.eq(saturating_add(sum_r, seg.len))
                                with m.If(seen_w | (n_r == maxs)):
                                    m.d.sync += bad.eq(1)
                                with m.Else():
                                    m.d.comb += self.r_en.eq(1)
                                    m.d.sync += n_r.eq(n_r + 1)
                            with m.Else():
                                m.d.comb += self.l_en.eq(1)
                                m.d.sync += [
                                    seen_w.eq(1),
                                    sum_w.eq(saturating_add(sum_w, seg.len)),
                                ]
                                with m.If(n_w == maxs):
                                    m.d.sync += bad.eq(1)
                                with m.Else():
                                    m.d.comb += self.w_en.eq(1)
                                    m.d.sync += n_w.eq(n_w + 1)
                        with m.If(seg.last):
                            m.next = "FINISH"

            with m.State("FINISH"):
                m.d.comb += [
                    self.busy.eq(1),
                    self.start.valid.eq(~self.reset),
                    info.slot.eq(slot),
                    info.queue.eq(queue),
                    info.head.eq(head),
                    info.epoch.eq(epoch),
                    info.readable.eq(sum_r),
                    info.writable.eq(sum_w),
                    info.bad.eq(bad),
                ]
                m.next = "IDLE"
        return m
