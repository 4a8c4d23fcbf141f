# SPDX-License-Identifier: BSD-2-Clause
"""Transmit output: frames from the transmit buffer onto the MAC stream, then their completions.

Frames go out in chain order, one beat per cycle from a read port of the transmit buffer, with
the checksum from the checksum stage substituted on the fly, and padded with zeros to the
60-byte Ethernet minimum (IEEE 802.3 §3.2.8; the MAC adds the FCS). After a frame's last beat
the chain is completed (used length 0: a transmit chain has no writable part) and its buffer
rows are freed. Frames marked to drop, and every frame while the link is down, are completed
without being sent.
"""

from amaranth import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
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

    Frames follow each other on the MAC stream without idle cycles; completions wait in a
    short queue, so the MAC side never waits for the completion port.
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
        mac = self.mac

        # Completions and buffer releases, in frame order ------------------------------------
        Done = data.StructLayout({
            "used":     VirtqUsed(self._queue_count),
            "complete": 1,                  # 0: a frame of an older generation, only freed
            "gen":      GENERATION_BITS,
            "end_row":  g.ptr_bits,
        })
        depth = 4
        m.submodules.done = done = SyncFIFOBuffered(width=Shape.cast(Done).width, depth=depth)
        push = Signal(Done)
        m.d.comb += done.w_data.eq(push)

        # The frame being read out of the buffer, and the beat on the MAC stream ----------------
        cur = Signal.like(self.frame.payload)
        active = Signal()                   # beats of `cur` remain to be read
        issued = Signal(16)
        beats = Signal(16)
        on_wire = Signal.like(self.frame.payload)   # the frame of the beat in the output register
        tvalid = Signal()
        tlast = Signal()
        beat_offset = Signal(16)
        streaming = Signal(range(depth + 1))   # frames taken for the MAC, not yet in `done`

        def send_len(frame):
            return Mux(frame.len < ETH_ZLEN, ETH_ZLEN, frame.len)

        # Beat formatting: pad past the frame end, substitute the checksum bytes.
        fr = on_wire.frame
        rel_len = named(m, widen_signed(fr.len) - widen_signed(beat_offset), "rel_len")
        rel_csum = named(m, widen_signed(on_wire.csum_pos) - widen_signed(beat_offset),
                         "rel_csum")
        rel_send = named(m, widen_signed(send_len(fr)) - widen_signed(beat_offset), "rel_send")
        out_bytes = []
        for j, octet in enumerate(lane_bytes(self.ram.data, lanes)):
            value = Mux(rel_len > j, octet, 0)
            value = Mux(on_wire.csum_en & (rel_csum == j), on_wire.csum_value[8:16], value)
            value = Mux(on_wire.csum_en & (rel_csum == j - 1), on_wire.csum_value[0:8], value)
            out_bytes.append(value)
        m.d.comb += [
            mac.tdata.eq(Cat(*out_bytes)),
            mac.tkeep.eq(Cat(*[rel_send > j for j in range(lanes)])),
            mac.tlast.eq(tlast),
            mac.tuser.eq(0),
            mac.tvalid.eq(tvalid),
        ]

        # Read a beat whenever the output register empties: one beat per cycle, and the next
        # frame's first beat right after the previous frame's last.
        advance = ~tvalid | mac.tready
        issuing = advance & active
        final = issued == beats - 1
        m.d.comb += [
            self.ram.addr.eq((cur.frame.base_row + g.header_rows + issued)[:g.row_bits]),
            self.ram.en.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += tvalid.eq(issuing)
        with m.If(issuing):
            m.d.sync += [
                tlast.eq(final),
                beat_offset.eq(issued << g.beat_shift),
                on_wire.eq(cur),
                issued.eq(issued + 1),
                active.eq(~final),
            ]

        # A frame's last beat taken by the MAC: its completion is due.
        wire_done = tvalid & mac.tready & tlast
        m.d.comb += self.sent.eq(wire_done)

        # Taking the next frame ------------------------------------------------------------------
        p = self.frame.payload
        stale = self.reset | (p.frame.gen != self.generation)
        to_mac = ~stale & ~p.drop & self.link_up
        # Room in `done` for every frame taken, so the MAC side never waits for completions.
        room = (done.level + streaming) < depth
        idle = ~active & ~tvalid
        take_stream = to_mac & room & (~active | (issuing & final))
        take_other = ~to_mac & idle & (streaming == 0) & done.w_rdy
        m.d.comb += self.frame.ready.eq(take_stream | take_other)
        taking = self.frame.valid & self.frame.ready
        with m.If(taking & to_mac):
            m.d.sync += [
                cur.eq(p),
                active.eq(1),
                issued.eq(0),
                beats.eq((send_len(p.frame) + lanes - 1) >> g.beat_shift),
            ]
        m.d.comb += [
            self.dropped.eq(taking & ~stale & p.drop),
            self.link_down.eq(taking & ~stale & ~p.drop & ~self.link_up),
        ]
        m.d.sync += streaming.eq(streaming + (taking & to_mac) - wire_done)

        # Entries into `done`: a frame sent, or one not sent (completed unless stale).
        with m.If(wire_done):
            m.d.comb += [
                done.w_en.eq(1),
                push.used.queue.eq(fr.queue),
                push.used.head.eq(fr.head),
                push.used.epoch.eq(fr.epoch),
                push.complete.eq(1),
                push.gen.eq(fr.gen),
                push.end_row.eq(fr.end_row),
            ]
        with m.Elif(taking & ~to_mac):
            m.d.comb += [
                done.w_en.eq(1),
                push.used.queue.eq(p.frame.queue),
                push.used.head.eq(p.frame.head),
                push.used.epoch.eq(p.frame.epoch),
                push.complete.eq(~stale),
                push.gen.eq(p.frame.gen),
                push.end_row.eq(p.frame.end_row),
            ]
        m.d.comb += [push.used.len.eq(0), push.used.batch_end.eq(1)]

        # Completing and freeing, in order. A frame begun before a device reset is only freed.
        head = data.View(Done, done.r_data)
        gone = ~head.complete | self.reset | (head.gen != self.generation)
        m.d.comb += [
            self.used.valid.eq(done.r_rdy & ~gone),
            self.used.payload.eq(head.used),
            done.r_en.eq(gone | self.used.ready),
        ]
        with m.If(done.r_rdy & done.r_en):
            m.d.sync += self.release_row.eq(head.end_row)
        return m
