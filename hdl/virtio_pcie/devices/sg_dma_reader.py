# SPDX-License-Identifier: BSD-2-Clause
"""Turns "the next n readable bytes of request s" into DMA read requests, segment by segment."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaReadRequest
from .blk_interface import (DmaReadJob, ReadTag, SegEntry, region_index_width,
                            slot_index_width)
from .sg_cursor import SgCursor

__all__ = ["SgDmaReader"]


class SgDmaReader(wiring.Component):
    """Walks a slot's readable segment list and issues one DMA read per piece of a job.

    An :class:`~.sg_cursor.SgCursor` over the readable lists cuts each job into one piece per
    segment it touches (a job with ``first`` starts at the first readable byte, any other one
    continues where the slot's previous job ended); each piece is a DMA read request landing
    at its place from ``ram_addr`` on. A piece takes two cycles; jobs are served one at a
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
        self._max_segments = max_segments
        idx_bits = (max_segments - 1).bit_length()
        super().__init__({
            "job":      In(stream.Signature(DmaReadJob(slots, regions))),
            "seg_addr": Out(slot_index_width(slots) + idx_bits),
            "seg_en":   Out(1),
            "seg_data": In(SegEntry),
            "req":      Out(stream.Signature(DmaReadRequest)),
            "busy":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.cursor = cursor = SgCursor(
            slots=self._slots, max_segments=self._max_segments,
            side_width=region_index_width(self._regions))
        job, piece = self.job.payload, cursor.piece.payload
        tag = Signal(ReadTag(self._slots, self._regions))
        m.d.comb += [
            tag.slot.eq(piece.slot),
            tag.region.eq(piece.side),
            tag.last.eq(piece.last),

            cursor.job.valid.eq(self.job.valid),
            cursor.job.payload.slot.eq(job.slot),
            cursor.job.payload.ram_addr.eq(job.ram_addr),
            cursor.job.payload.len.eq(job.len),
            cursor.job.payload.first.eq(job.first),
            cursor.job.payload.side.eq(job.region),
            self.job.ready.eq(cursor.job.ready),

            self.seg_addr.eq(cursor.seg_addr),
            self.seg_en.eq(cursor.seg_en),
            cursor.seg_data.eq(self.seg_data),

            self.req.valid.eq(cursor.piece.valid),
            self.req.payload.host_addr.eq(piece.host_addr),
            self.req.payload.ram_addr.eq(piece.ram_addr),
            self.req.payload.len.eq(piece.len),
            self.req.payload.tag.eq(tag),
            cursor.piece.ready.eq(self.req.ready),
            self.busy.eq(cursor.busy),
        ]
        return m
