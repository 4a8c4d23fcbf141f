# SPDX-License-Identifier: BSD-2-Clause
"""Turns "the next n readable bytes of request s" into DMA read requests, segment by segment."""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaReadRequest
from .blk_interface import DmaReadJob, ReadTag, SegEntry, slot_index_width

__all__ = ["SgDmaReader"]


class SgDmaReader(wiring.Component):
    """Walks a slot's readable segment list and issues one DMA read per piece of a job.

    Each slot has a cursor (segment, offset) into its readable bytes; a job with ``first``
    starts at the beginning, any other job continues where the slot's previous job ended.
    A job of ``len`` bytes becomes one request per segment it touches (framing independence,
    virtio 1.2 §2.7.4: the bytes may be split at any boundary), landing contiguously at
    ``ram_addr``. A piece takes two cycles (segment fetch, request); jobs are served one at a
    time, in the order taken.

    The request ``tag`` is a :func:`~.blk_interface.ReadTag`: the slot, the job's chunk
    buffer, and ``last`` on the job's final request.

    Parameters
    ----------
    slots, regions : int
    max_segments : int
        Entries per slot in the segment RAM (a power of two).

    Members
    -------
    job : In(stream.Signature(DmaReadJob(slots, regions)))
    seg_addr, seg_en : Out
        Read port of the readable segment RAM (entry ``slot * max_segments + index``).
    seg_data : In(SegEntry)
    req : Out(stream.Signature(DmaReadRequest))
    busy : Out(1)
    """

    def __init__(self, *, slots, regions, max_segments):
        self._slots = slots
        self._regions = regions
        self._idx_bits = (max_segments - 1).bit_length()
        super().__init__({
            "job":      In(stream.Signature(DmaReadJob(slots, regions))),
            "seg_addr": Out(slot_index_width(slots) + self._idx_bits),
            "seg_en":   Out(1),
            "seg_data": In(SegEntry),
            "req":      Out(stream.Signature(DmaReadRequest)),
            "busy":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        job = self.job.payload
        cur_seg = Array(Signal(self._idx_bits + 1, name=f"cursor_seg{s}")
                        for s in range(self._slots))
        cur_off = Array(Signal(32, name=f"cursor_off{s}") for s in range(self._slots))

        slot     = Signal.like(job.slot)
        region   = Signal.like(job.region)
        ram_addr = Signal(16)
        left     = Signal(16)
        seg_i    = Signal(self._idx_bits + 1)
        offset   = Signal(32)

        seg   = self.seg_data
        avail = Signal(32)
        piece = Signal(16)
        whole = Signal()       # the piece takes the rest of the segment
        final = Signal()       # the piece ends the job
        tag   = Signal(ReadTag(self._slots, self._regions))
        m.d.comb += [
            avail.eq(seg.len - offset),
            whole.eq(avail <= left),
            piece.eq(Mux(whole, avail, left)),
            final.eq(piece == left),
            tag.slot.eq(slot),
            tag.region.eq(region),
            tag.last.eq(final),
            self.req.payload.host_addr.eq(seg.addr + offset),
            self.req.payload.ram_addr.eq(ram_addr),
            self.req.payload.len.eq(piece),
            self.req.payload.tag.eq(tag),
            self.seg_addr.eq(Cat(seg_i[:self._idx_bits], slot)),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    m.d.sync += [
                        slot.eq(job.slot),
                        region.eq(job.region),
                        ram_addr.eq(job.ram_addr),
                        left.eq(job.len),
                        seg_i.eq(Mux(job.first, 0, cur_seg[job.slot])),
                        offset.eq(Mux(job.first, 0, cur_off[job.slot])),
                    ]
                    m.next = "FETCH"

            with m.State("FETCH"):
                m.d.comb += [self.busy.eq(1), self.seg_en.eq(1)]
                m.next = "ISSUE"

            with m.State("ISSUE"):
                m.d.comb += [self.busy.eq(1), self.req.valid.eq(1)]
                next_seg = Mux(whole, seg_i + 1, seg_i)
                next_off = Mux(whole, 0, offset + piece)
                with m.If(self.req.ready):
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
