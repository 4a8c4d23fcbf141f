# SPDX-License-Identifier: BSD-2-Clause
"""Transmit checksum: reads each frame's ``virtio_net_hdr`` and, for VIRTIO_NET_HDR_F_NEEDS_CSUM,
computes the checksum the driver left to the device (virtio 1.2 §5.1.6.2, VIRTIO_NET_F_CSUM).

The driver has put the pseudo-header sum in the checksum field; the device sums the frame from
``csum_start`` to its end (field included), folds, complements, and the output stage writes the
result at ``csum_start + csum_offset``. A zero result is sent as 0xFFFF (the same number in ones'
complement, and a UDP checksum of 0 would mean "none", RFC 768). The sum reads one beat per
cycle from the beat holding ``csum_start``; frames without NEEDS_CSUM only have their header read.
This stage runs one frame ahead of the output stage, on its own read port.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from ..spec.virtio import VirtioNetGsoType, VirtioNetHdr, VirtioNetHdrFlags
from .net_checksum import fold_ones_complement, lane_range, masked_word_sum, swap_bytes
from .net_interface import FrameBufferGeometry, TxFrame, TxFrameOut

__all__ = ["NetTxChecksum"]


class NetTxChecksum(wiring.Component):
    """Parses transmit headers and computes requested checksums.

    Parameters
    ----------
    data_width : int
    queue_count : int
    buffer_bytes : int

    Members
    -------
    frame : In(stream.Signature(TxFrame(...)))
    out : Out(stream.Signature(TxFrameOut(...)))
        The frame with ``drop`` (bad chain, DMA error, a GSO type other than NONE, a checksum
        field outside the frame) and the checksum to insert (``csum_en``).
    ram : In(ReadPort.Signature(...))
        A read port of the transmit buffer (this stage drives ``addr`` and ``en``).
    csum_enable : In(1)
        VIRTIO_NET_F_CSUM was negotiated; without it NEEDS_CSUM is ignored (virtio 1.2
        §5.1.6.2.1: the driver must not set it then).
    """

    def __init__(self, *, data_width, queue_count, buffer_bytes):
        geom = FrameBufferGeometry(data_width, buffer_bytes)
        self._geom = geom
        super().__init__({
            "frame":       In(stream.Signature(TxFrame(queue_count, geom))),
            "out":         Out(stream.Signature(TxFrameOut(queue_count, geom))),
            "ram":         In(ReadPort.Signature(addr_width=geom.row_bits, shape=data_width)),
            "csum_enable": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geom
        lanes = g.beat_bytes

        frame = Signal.like(self.frame.payload)
        hdr_area = Signal(8 * g.header_area)
        hdr = data.View(VirtioNetHdr, hdr_area[8 * g.header_offset:])
        row = Signal(range(g.header_rows + 1))
        result = Signal.like(self.out.payload)

        cs = Signal(16)                       # csum_start
        beat = Signal(16)                     # next beat to read for the sum
        last_beat = Signal(16)
        data_valid = Signal()                 # ram.data holds beat data_beat
        data_beat = Signal(16)
        acc = Signal(32)

        def data_row(index):
            return (frame.base_row + g.header_rows + index)[:g.row_bits]

        m.d.comb += [
            self.out.payload.eq(result),
            self.out.payload.frame.eq(frame),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.frame.ready.eq(1)
                with m.If(self.frame.valid):
                    m.d.sync += [frame.eq(self.frame.payload), row.eq(0)]
                    m.next = "HEADER_READ"

            # The header sits at the end of the frame's header rows.
            with m.State("HEADER_READ"):
                m.d.comb += [
                    self.ram.addr.eq((frame.base_row + row)[:g.row_bits]),
                    self.ram.en.eq(1),
                ]
                m.next = "HEADER_WAIT"

            with m.State("HEADER_WAIT"):
                m.d.sync += [
                    hdr_area.word_select(row, g.data_width).eq(self.ram.data),
                    row.eq(row + 1),
                ]
                with m.If(row == g.header_rows - 1):
                    m.next = "PARSE"
                with m.Else():
                    m.next = "HEADER_READ"

            with m.State("PARSE"):
                needs_flag = (hdr.flags & VirtioNetHdrFlags.NEEDS_CSUM).as_value().any()
                needs = self.csum_enable & needs_flag
                pos = hdr.csum_start + hdr.csum_offset
                outside = (pos + 2) > frame.len
                drop = frame.bad | (hdr.gso_type != VirtioNetGsoType.NONE) | (needs & outside)
                m.d.sync += [
                    result.drop.eq(drop),
                    result.csum_en.eq(needs & ~drop),
                    result.csum_pos.eq(pos),
                    result.csum_value.eq(0),
                    cs.eq(hdr.csum_start),
                    beat.eq(hdr.csum_start >> g.beat_shift),
                    last_beat.eq((frame.len - 1) >> g.beat_shift),
                    data_valid.eq(0),
                    acc.eq(0),
                ]
                with m.If(needs & ~drop):
                    m.next = "SUM"
                with m.Else():
                    m.next = "EMIT"

            # One beat per cycle from the beat holding csum_start to the last one.
            with m.State("SUM"):
                issue = beat <= last_beat
                m.d.comb += [
                    self.ram.addr.eq(data_row(beat)),
                    self.ram.en.eq(issue),
                ]
                m.d.sync += [
                    data_valid.eq(issue),
                    data_beat.eq(beat),
                    beat.eq(beat + issue),
                ]
                mask = lane_range(m, data_beat << g.beat_shift, cs, frame.len, lanes, "sum_lanes")
                with m.If(data_valid):
                    m.d.sync += acc.eq(acc + masked_word_sum(self.ram.data, mask, lanes))
                with m.If(~issue & ~data_valid):
                    m.next = "FOLD"

            with m.State("FOLD"):
                folded = fold_ones_complement(acc)
                # A region starting at an odd offset has its bytes in swapped roles.
                ordered = Mux(cs[0], swap_bytes(folded), folded)
                value = (~ordered)[:16]
                m.d.sync += result.csum_value.eq(Mux(value == 0, 0xFFFF, value))
                m.next = "EMIT"

            with m.State("EMIT"):
                m.d.comb += self.out.valid.eq(1)
                with m.If(self.out.ready):
                    m.next = "IDLE"

        return m
