# SPDX-License-Identifier: BSD-2-Clause
"""Transmit output: frames from the transmit buffer onto the MAC stream, then their completions.

Frames go out in chain order, one beat per cycle from a read port of the transmit buffer, with
the checksum from the checksum stage substituted on the fly, and padded with zeros to the
60-byte Ethernet minimum (IEEE 802.3 §3.2.8; the MAC adds the FCS). After a frame's last beat
the chain is completed (used length 0: a transmit chain has no writable part) and its buffer
rows are freed. Frames marked to drop, and every frame while the link is down, are completed
without being sent.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from ..spec.ethernet import ETH_ZLEN
from ..virtio.interface import VirtqUsed
from .net_checksum import lane_bytes, named, widen_signed
from .net_interface import GENERATION_BITS, AxiStreamSignature, FrameBufferGeometry, TxFrameOut

__all__ = ["NetTxOutput"]


class NetTxOutput(wiring.Component):
    """Streams transmit frames to the MAC and completes their chains.

    Parameters
    ----------
    data_width : int
    queue_count : int
    buffer_bytes : int

    Members
    -------
    frame : In(stream.Signature(TxFrameOut(...)))
    ram : In(ReadPort.Signature(...))
        A read port of the transmit buffer.
    mac : Out(AxiStreamSignature(data_width))
        Frames to the MAC (``tuser`` is always 0).
    used : Out(stream.Signature(VirtqUsed(queue_count)))
        One completion per chain, ``len`` 0, ``batch_end`` set.
    release_row : Out(ptr_bits)
        Rows before this pointer are free (the fetch stage's space check).
    link_up : In(1)
    reset : In(1)
    generation : In(GENERATION_BITS)
        Frames of an older generation (fetched before a device reset) are freed silently. A
        frame already on the MAC stream when a reset comes is finished (a MAC cannot take half a
        frame back) and not completed.
    sent, dropped, link_down : Out(1)
        One-cycle event strobes for the counters.
    """

    def __init__(self, *, data_width, queue_count, buffer_bytes):
        geom = FrameBufferGeometry(data_width, buffer_bytes)
        self._geom = geom
        self._queue_count = queue_count
        super().__init__({
            "frame":       In(stream.Signature(TxFrameOut(queue_count, geom))),
            "ram":         In(ReadPort.Signature(addr_width=geom.row_bits, shape=data_width)),
            "mac":         Out(AxiStreamSignature(data_width)),
            "used":        Out(stream.Signature(VirtqUsed(queue_count))),
            "release_row": Out(geom.ptr_bits),
            "link_up":     In(1),
            "reset":       In(1),
            "generation":  In(GENERATION_BITS),
            "sent":        Out(1),
            "dropped":     Out(1),
            "link_down":   Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geom
        lanes = g.beat_bytes

        cur = Signal.like(self.frame.payload)
        fr = cur.frame
        silent = Signal()                 # a reset happened: free the frame, do not complete
        send_len = Signal(16)
        beats = Signal(16)
        issued = Signal(16)               # beats read from the buffer
        tvalid = Signal()
        tlast = Signal()
        beat_offset = Signal(16)          # frame offset of the beat in ram.data

        stale = self.reset | (self.frame.payload.frame.gen != self.generation)

        # Beat formatting: pad past the frame end, substitute the checksum bytes.
        rel_len = named(m, widen_signed(fr.len) - widen_signed(beat_offset), "rel_len")
        rel_csum = named(m, widen_signed(cur.csum_pos) - widen_signed(beat_offset), "rel_csum")
        rel_send = named(m, widen_signed(send_len) - widen_signed(beat_offset), "rel_send")
        out_bytes = []
        for j, octet in enumerate(lane_bytes(self.ram.data, lanes)):
            value = Mux(rel_len > j, octet, 0)
            value = Mux(cur.csum_en & (rel_csum == j), cur.csum_value[8:16], value)
            value = Mux(cur.csum_en & (rel_csum == j - 1), cur.csum_value[0:8], value)
            out_bytes.append(value)
        m.d.comb += [
            self.mac.tdata.eq(Cat(*out_bytes)),
            self.mac.tkeep.eq(Cat(*[rel_send > j for j in range(lanes)])),
            self.mac.tlast.eq(tlast),
            self.mac.tuser.eq(0),
            self.mac.tvalid.eq(tvalid),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.frame.ready.eq(1)
                with m.If(self.frame.valid):
                    m.d.sync += [
                        cur.eq(self.frame.payload),
                        silent.eq(stale),
                        send_len.eq(Mux(self.frame.payload.frame.len < ETH_ZLEN, ETH_ZLEN,
                                        self.frame.payload.frame.len)),
                    ]
                    m.next = "DECIDE"

            with m.State("DECIDE"):
                m.d.sync += [
                    beats.eq((send_len + lanes - 1) >> g.beat_shift),
                    issued.eq(0),
                    tvalid.eq(0),
                ]
                with m.If(silent):
                    m.next = "RELEASE"
                with m.Elif(cur.drop):
                    m.d.comb += self.dropped.eq(1)
                    m.next = "COMPLETE"
                with m.Elif(~self.link_up):
                    m.d.comb += self.link_down.eq(1)
                    m.next = "COMPLETE"
                with m.Else():
                    m.next = "STREAM"

            # RAM read port feeding the output register: a beat is read whenever the previous
            # one leaves (or none is held), so the stream runs at one beat per cycle.
            with m.State("STREAM"):
                advance = ~tvalid | self.mac.tready
                more = issued < beats
                m.d.comb += [
                    self.ram.addr.eq((fr.base_row + g.header_rows + issued)[:g.row_bits]),
                    self.ram.en.eq(advance),
                ]
                with m.If(advance):
                    m.d.sync += [
                        tvalid.eq(more),
                        tlast.eq(issued == beats - 1),
                        beat_offset.eq(issued << g.beat_shift),
                        issued.eq(issued + more),
                    ]
                with m.If(self.reset):
                    m.d.sync += silent.eq(1)
                with m.If(tvalid & self.mac.tready & tlast):
                    m.d.comb += self.sent.eq(1)
                    m.next = "COMPLETE"

            with m.State("COMPLETE"):
                gone = silent | self.reset | (fr.gen != self.generation)
                m.d.comb += [
                    self.used.valid.eq(~gone),
                    self.used.payload.queue.eq(fr.queue),
                    self.used.payload.head.eq(fr.head),
                    self.used.payload.len.eq(0),
                    self.used.payload.batch_end.eq(1),
                ]
                with m.If(gone | self.used.ready):
                    m.next = "RELEASE"

            with m.State("RELEASE"):
                m.d.sync += self.release_row.eq(fr.end_row)
                m.next = "IDLE"

        return m
