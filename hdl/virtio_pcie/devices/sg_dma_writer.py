# SPDX-License-Identifier: BSD-2-Clause
"""Turns "the next n writable bytes of request s" into DMA write requests, segment by segment."""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaWriteRequest
from .blk_interface import DmaWriteJob, SegEntry, WriteTag, slot_index_width
from .sg_cursor import SgCursor

__all__ = ["SgDmaWriter"]


class SgDmaWriter(wiring.Component):
    """Walks a slot's writable segment list and issues one DMA write per piece of a job.

    Data jobs go through an :class:`~.sg_cursor.SgCursor` over the writable lists, as in
    :class:`~.sg_dma_reader.SgDmaReader`: one request per segment touched, the data taken from
    the write buffer at ``ram_addr``. A *status* job writes one byte, ``status_byte``, as
    immediate data into the last byte of the slot's last writable buffer (virtio 1.2 §5.2.6:
    the status is the last byte of the chain), read from the last-buffer RAM. Jobs are served
    one at a time, in the order taken, so a status byte follows its data writes.

    The request ``tag`` is a :func:`~.blk_interface.WriteTag`: the slot and ``last`` on a
    job's final request; the DMA engine returns write statuses in issue order, so ``last``
    coming back means the whole job is on its way to the host.

    Members
    -------
    job : In(stream.Signature(DmaWriteJob(slots)))
    seg_addr, seg_en : Out
        Read port of the writable segment RAM.
    seg_data : In(SegEntry)
    last_addr, last_en : Out
        Read port of the last-writable-buffer RAM (entry ``slot``).
    last_data : In(SegEntry)
    req : Out(stream.Signature(DmaWriteRequest))
    busy : Out(1)
    """

    def __init__(self, *, slots, max_segments):
        self._slots = slots
        self._max_segments = max_segments
        idx_bits = (max_segments - 1).bit_length()
        super().__init__({
            "job":       In(stream.Signature(DmaWriteJob(slots))),
            "seg_addr":  Out(slot_index_width(slots) + idx_bits),
            "seg_en":    Out(1),
            "seg_data":  In(SegEntry),
            "last_addr": Out(slot_index_width(slots)),
            "last_en":   Out(1),
            "last_data": In(SegEntry),
            "req":       Out(stream.Signature(DmaWriteRequest)),
            "busy":      Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.cursor = cursor = SgCursor(slots=self._slots,
                                                max_segments=self._max_segments)
        job, piece = self.job.payload, cursor.piece.payload
        slot = Signal.like(job.slot)
        byte = Signal(8)
        tag  = Signal(WriteTag(self._slots))
        last = self.last_data
        status = Signal()          # the status byte is being written
        m.d.comb += [
            cursor.job.payload.slot.eq(job.slot),
            cursor.job.payload.ram_addr.eq(job.ram_addr),
            cursor.job.payload.len.eq(job.len),
            cursor.job.payload.first.eq(job.first),
            self.seg_addr.eq(cursor.seg_addr),
            self.seg_en.eq(cursor.seg_en),
            cursor.seg_data.eq(self.seg_data),
            self.last_addr.eq(slot),

            # Data pieces from the cursor, or the status byte.
            self.req.valid.eq(cursor.piece.valid | status),
            self.req.payload.host_addr.eq(Mux(status, last.addr + last.len - 1,
                                              piece.host_addr)),
            self.req.payload.ram_addr.eq(Mux(status, 0, piece.ram_addr)),
            self.req.payload.len.eq(Mux(status, 1, piece.len)),
            self.req.payload.imm_en.eq(status),
            self.req.payload.imm_data.eq(byte),
            tag.slot.eq(Mux(status, slot, piece.slot)),
            tag.last.eq(status | piece.last),
            self.req.payload.tag.eq(tag),
            cursor.piece.ready.eq(self.req.ready & ~status),
        ]

        with m.FSM():
            with m.State("IDLE"):
                # Data jobs go to the cursor; a status job waits for it to finish its last.
                m.d.comb += [
                    cursor.job.valid.eq(self.job.valid & ~job.status),
                    self.job.ready.eq(cursor.job.ready),
                    self.busy.eq(cursor.busy),
                ]
                with m.If(self.job.valid & job.status & cursor.job.ready):
                    m.d.sync += [slot.eq(job.slot), byte.eq(job.status_byte)]
                    m.next = "FETCH_LAST"
            with m.State("FETCH_LAST"):
                m.d.comb += [self.busy.eq(1), self.last_en.eq(1)]
                m.next = "STATUS"
            with m.State("STATUS"):
                m.d.comb += [self.busy.eq(1), status.eq(1)]
                with m.If(self.req.ready):
                    m.next = "IDLE"
        return m
