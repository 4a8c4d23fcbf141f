# SPDX-License-Identifier: BSD-2-Clause
"""Turns "the next n writable bytes of request s" into DMA write requests, segment by segment."""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaWriteRequest
from .blk_interface import DmaWriteJob, SegEntry, WriteTag, slot_index_width

__all__ = ["SgDmaWriter"]


class SgDmaWriter(wiring.Component):
    """Walks a slot's writable segment list and issues one DMA write per piece of a job.

    Data jobs work as in :class:`~.sg_dma_reader.SgDmaReader`: a cursor per slot into its
    writable bytes, one request per segment touched, the data taken from the write buffer at
    ``ram_addr``. A *status* job writes one byte, ``status_byte``, as immediate data into the
    last byte of the slot's last writable buffer (virtio 1.2 §5.2.6: the status is the last
    byte of the chain), read from the last-buffer RAM.

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
        self._idx_bits = (max_segments - 1).bit_length()
        super().__init__({
            "job":       In(stream.Signature(DmaWriteJob(slots))),
            "seg_addr":  Out(slot_index_width(slots) + self._idx_bits),
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
        job = self.job.payload
        cur_seg = Array(Signal(self._idx_bits + 1, name=f"cursor_seg{s}")
                        for s in range(self._slots))
        cur_off = Array(Signal(32, name=f"cursor_off{s}") for s in range(self._slots))

        slot     = Signal.like(job.slot)
        ram_addr = Signal(16)
        left     = Signal(16)
        seg_i    = Signal(self._idx_bits + 1)
        offset   = Signal(32)
        byte     = Signal(8)

        seg   = self.seg_data
        avail = Signal(32)
        piece = Signal(16)
        whole = Signal()
        final = Signal()
        tag   = Signal(WriteTag(self._slots))
        m.d.comb += [
            avail.eq(seg.len - offset),
            whole.eq(avail <= left),
            piece.eq(Mux(whole, avail, left)),
            final.eq(piece == left),
            tag.slot.eq(slot),
            self.seg_addr.eq(Cat(seg_i[:self._idx_bits], slot)),
            self.last_addr.eq(slot),
            self.req.payload.tag.eq(tag),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    m.d.sync += [
                        slot.eq(job.slot),
                        ram_addr.eq(job.ram_addr),
                        left.eq(job.len),
                        seg_i.eq(Mux(job.first, 0, cur_seg[job.slot])),
                        offset.eq(Mux(job.first, 0, cur_off[job.slot])),
                        byte.eq(job.status_byte),
                    ]
                    with m.If(job.status):
                        m.next = "FETCH_LAST"
                    with m.Else():
                        m.next = "FETCH"

            with m.State("FETCH"):
                m.d.comb += [self.busy.eq(1), self.seg_en.eq(1)]
                m.next = "ISSUE"

            with m.State("ISSUE"):
                m.d.comb += [
                    self.busy.eq(1),
                    self.req.valid.eq(1),
                    self.req.payload.host_addr.eq(seg.addr + offset),
                    self.req.payload.ram_addr.eq(ram_addr),
                    self.req.payload.len.eq(piece),
                    tag.last.eq(final),
                ]
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

            with m.State("FETCH_LAST"):
                m.d.comb += [self.busy.eq(1), self.last_en.eq(1)]
                m.next = "STATUS"

            with m.State("STATUS"):
                last = self.last_data
                m.d.comb += [
                    self.busy.eq(1),
                    self.req.valid.eq(1),
                    self.req.payload.host_addr.eq(last.addr + last.len - 1),
                    self.req.payload.len.eq(1),
                    self.req.payload.imm_en.eq(1),
                    self.req.payload.imm_data.eq(byte),
                    tag.last.eq(1),
                ]
                with m.If(self.req.ready):
                    m.next = "IDLE"
        return m
