# SPDX-License-Identifier: BSD-2-Clause
"""A cursor per request into its scatter-gather list: "the next n bytes" → one piece per buffer."""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .blk_interface import JOB_LEN_WIDTH, SegEntry, slot_index_width

__all__ = ["SgJob", "SgPiece", "SgCursor"]


def SgJob(slots, side_width):
    """The next ``len`` bytes of a slot's list (from its first byte with ``first``), to or from
    the buffer at ``ram_addr``; ``side`` comes back with every piece."""
    return data.StructLayout({
        "slot":     slot_index_width(slots),
        "ram_addr": 16,
        "len":      JOB_LEN_WIDTH,
        "first":    1,
        "side":     side_width,
    })


def SgPiece(slots, side_width):
    """One contiguous piece of a job: ``len`` bytes at ``host_addr`` ↔ the buffer at
    ``ram_addr``; ``last`` on the job's final piece."""
    return data.StructLayout({
        "slot":      slot_index_width(slots),
        "host_addr": 64,
        "ram_addr":  16,
        "len":       JOB_LEN_WIDTH,
        "last":      1,
        "side":      side_width,
    })


class SgCursor(wiring.Component):
    """Walks the segment lists of ``slots`` requests, one job at a time, piece by piece.

    Each slot has a cursor (segment, offset) into the bytes of its list; a job with ``first``
    starts at the list's first byte, any other job continues where the slot's previous job
    ended. A job of ``len`` bytes becomes one piece per segment it touches (framing
    independence, virtio 1.2 §2.7.4: the bytes may be split at any boundary), the pieces
    landing (or taken) contiguously from ``ram_addr``. A piece takes two cycles (segment
    fetch, then the piece offered until taken); jobs are served one at a time, in the order
    taken. The scatter-gather DMA engines of virtio-blk (:class:`~.sg_dma_reader.SgDmaReader`,
    :class:`~.sg_dma_writer.SgDmaWriter`) are this cursor with their DMA request in front.

    Parameters
    ----------
    slots : int
    max_segments : int
        Entries per slot in the segment RAM (a power of two).
    side_width : int
        Bits carried from a job to each of its pieces.

    Members
    -------
    job : In(stream.Signature(SgJob(slots, side_width)))
    seg_addr, seg_en : Out
        Read port of the segment RAM (entry ``slot * max_segments + index``; data the cycle
        after ``seg_en``).
    seg_data : In(SegEntry)
    piece : Out(stream.Signature(SgPiece(slots, side_width)))
    busy : Out(1)
        A job is being walked (``job`` is not ready).
    """

    def __init__(self, *, slots, max_segments, side_width=1):
        self._slots = slots
        self._idx_bits = (max_segments - 1).bit_length()
        super().__init__({
            "job":      In(stream.Signature(SgJob(slots, side_width))),
            "seg_addr": Out(slot_index_width(slots) + self._idx_bits),
            "seg_en":   Out(1),
            "seg_data": In(SegEntry),
            "piece":    Out(stream.Signature(SgPiece(slots, side_width))),
            "busy":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        job = self.job.payload
        cur_seg = Array(Signal(self._idx_bits + 1, name=f"cursor_seg{s}")
                        for s in range(self._slots))
        cur_off = Array(Signal(32, name=f"cursor_off{s}") for s in range(self._slots))

        slot     = Signal.like(job.slot)
        side     = Signal.like(job.side)
        ram_addr = Signal(16)
        left     = Signal(JOB_LEN_WIDTH)
        seg_i    = Signal(self._idx_bits + 1)
        offset   = Signal(32)

        seg   = self.seg_data
        avail = Signal(32)
        piece = Signal(JOB_LEN_WIDTH)
        whole = Signal()       # the piece takes the rest of the segment
        final = Signal()       # the piece ends the job
        out   = self.piece.payload
        m.d.comb += [
            avail.eq(seg.len - offset),
            whole.eq(avail <= left),
            piece.eq(Mux(whole, avail, left)),
            final.eq(piece == left),
            out.slot.eq(slot),
            out.host_addr.eq(seg.addr + offset),
            out.ram_addr.eq(ram_addr),
            out.len.eq(piece),
            out.last.eq(final),
            out.side.eq(side),
            self.seg_addr.eq(Cat(seg_i[:self._idx_bits], slot)),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    m.d.sync += [
                        slot.eq(job.slot),
                        side.eq(job.side),
                        ram_addr.eq(job.ram_addr),
                        left.eq(job.len),
                        seg_i.eq(Mux(job.first, 0, cur_seg[job.slot])),
                        offset.eq(Mux(job.first, 0, cur_off[job.slot])),
                    ]
                    m.next = "FETCH"

            with m.State("FETCH"):
                m.d.comb += [self.busy.eq(1), self.seg_en.eq(1)]
                m.next = "OFFER"

            with m.State("OFFER"):
                m.d.comb += [self.busy.eq(1), self.piece.valid.eq(1)]
                next_seg = Mux(whole, seg_i + 1, seg_i)
                next_off = Mux(whole, 0, offset + piece)
                with m.If(self.piece.ready):
                    m.d.sync += [
                        seg_i.eq(next_seg),
                        offset.eq(next_off),
                        ram_addr.eq(ram_addr + piece),
                        left.eq(left - piece),
                    ]
                    with m.If(final):
                        m.d.sync += [
                            cur_seg[slot].eq(next_seg),
                            cur_off[slot].eq(next_off),
                        ]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "FETCH"
        return m
