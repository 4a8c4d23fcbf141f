# SPDX-License-Identifier: BSD-2-Clause
"""Receive path of the Xilinx 7-series adapter: ``m_axis_rx`` → ``rx_req`` / ``rx_cpl``."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..spec.pcie import FmtType, TlpDw0
from ..tlp.signature import TlpBeat, TlpError, TlpSignature
from .dword_queue import DwordQueue, byteswap32, first_set, mux_entries, popcount
from .xilinx7_core import DATA_WIDTHS, RxTuser

__all__ = ["Xilinx7RxPath"]

_Entry = data.StructLayout({
    "dw":   32,
    "sof":  1,     # first dword of a TLP
    "eof":  1,     # last dword of a TLP
    "bar":  3,     # BAR hit (on the sof entry)
    "ecrc": 1,     # ECRC error (on the eof entry)
})

# Completion types (Cpl, CplD, CplLk, CplDLk) differ from one another only in Fmt[1] and Type[0].
_CPL_TYPE_MASK = 0b000_11110
_CPL_TYPE      = FmtType.CPL.value & _CPL_TYPE_MASK
assert all(t.value & _CPL_TYPE_MASK == _CPL_TYPE and t.value & 0b100_00000 == 0
           for t in (FmtType.CPL, FmtType.CPLD, FmtType.CPLLK, FmtType.CPLDLK))


class Xilinx7RxPath(wiring.Component):
    """Turns the hard IP's receive AXI4-Stream into the project's TLP streams.

    Each beat's dwords are classified (start and end of TLP from ``tlast``/``tkeep`` at 64 bits,
    from ``is_sof``/``is_eof`` at 128 bits, where a beat may end one TLP and start the next) and
    appended to a queue; beats of the TLP stream are taken from its head: the header (3 or 4
    dwords, as ``Fmt`` says), then the payload packed from lane 0 and byte-swapped into address
    order. Completions go to ``rx_cpl``, everything else (requests, including the configuration
    requests the core forwards) to ``rx_req``. The path runs at full rate: a beat in, a beat out,
    every cycle.

    Members
    -------
    tdata, tkeep, tlast, tuser, tvalid : In
        The core's ``m_axis_rx_*``.
    tready : Out(1)
        To ``m_axis_rx_tready``.
    rx_req, rx_cpl : Out(TlpSignature(data_width))
        Requests (with ``bar_id`` from ``rx_bar_hit``) and completions. ``error`` carries
        :attr:`TlpError.ECRC` for a TLP the core flagged with ``rx_ecrc_err``.
    """

    def __init__(self, *, data_width):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"the 7-series core's interface is {DATA_WIDTHS[0]} or "
                             f"{DATA_WIDTHS[1]} bits wide, not {data_width!r}")
        self._width = data_width
        super().__init__({
            "tdata":  In(data_width),
            "tkeep":  In(data_width // 8),
            "tlast":  In(1),
            "tuser":  In(RxTuser),
            "tvalid": In(1),
            "tready": Out(1),
            "rx_req": Out(TlpSignature(data_width)),
            "rx_cpl": Out(TlpSignature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._width // 32
        capacity = 4 + 2 * n
        q = DwordQueue(_Entry, capacity, n, "rxq")

        # --- classify the dwords of an incoming beat --------------------------------------------
        in_pkt = Signal()          # a TLP has started and not ended in an earlier beat
        sof, eof = Signal(), Signal()
        sof_pos = Signal(range(n))
        eof_pos = Signal(range(n))
        if n == 2:
            # 64 bits: a TLP starts on the first beat after tlast; tkeep says whether the last
            # beat carries one dword or two.
            m.d.comb += [sof.eq(~in_pkt), sof_pos.eq(0), eof.eq(self.tlast),
                         eof_pos.eq(self.tkeep[4])]
        else:
            # 128 bits: is_sof/is_eof give the byte offsets of the first and last bytes.
            m.d.comb += [sof.eq(self.tuser.is_sof.present),
                         sof_pos.eq(self.tuser.is_sof.offset[2:4]),
                         eof.eq(self.tuser.is_eof.present),
                         eof_pos.eq(self.tuser.is_eof.offset[2:4])]
        eof_cont = in_pkt & eof      # the eof ends the TLP continuing from the previous beat
        eof_new = ~in_pkt & eof      # the eof ends the TLP starting in this beat
        valid = Signal(n)
        for i in range(n):
            m.d.comb += valid[i].eq(
                (in_pkt & (~eof_cont | (i <= eof_pos))) |
                (sof & (i >= sof_pos) & (~eof_new | (i <= eof_pos))))
        bar_found, bar_index = first_set(m, self.tuser.bar_hit[:7], "bar_hit")

        slots = []
        for i in range(n):
            slot = Signal(_Entry, name=f"slot{i}")
            m.d.comb += [
                slot.dw.eq(self.tdata[32 * i:32 * i + 32]),
                slot.sof.eq(sof & (sof_pos == i)),
                slot.eof.eq(eof & (eof_pos == i)),
                slot.bar.eq(Mux(sof & (sof_pos == i), bar_index, 0)),
                slot.ecrc.eq(eof & (eof_pos == i) & self.tuser.ecrc_err),
            ]
            slots.append(slot)
        # Pack the valid slots from entry 0 (at 128 bits a beat may hold the tail of one TLP and
        # the head of the next, possibly with an unused dword between them).
        packed = 0
        for i, slot in enumerate(slots):
            position = popcount(valid[:i]) if i else Const(0, 1)
            packed = packed | Mux(valid[i], slot.as_value() << (position * _Entry.size), 0)

        accept = Signal()
        m.d.comb += [
            self.tready.eq(q.count <= capacity - n),
            accept.eq(self.tvalid & self.tready),
        ]
        with m.If(accept):
            m.d.sync += in_pkt.eq(Mux(sof, ~eof_new, in_pkt & ~eof))
        m.d.comb += [
            q.push.eq(Mux(accept, packed, 0)),
            q.push_count.eq(Mux(accept, popcount(valid), 0)),
        ]

        # --- take TLP beats from the head of the queue ------------------------------------------
        mid = Signal()             # the first beat of the TLP at the head has gone out
        bar_latched = Signal(3)
        route_cpl_latched = Signal()
        occupied = q.valid_mask()
        has_eof, eof_idx = first_set(m, q.field_bits("eof") & occupied, "rxq_eof")
        head = q.entry(0)
        dw0 = TlpDw0(head.dw)
        hdr4 = FmtType.is_4dw(dw0.fmt_type.as_value())
        hdr_len = Mux(hdr4, 4, 3)
        is_cpl = (dw0.fmt_type.as_value() & _CPL_TYPE_MASK) == _CPL_TYPE

        beat = Signal(TlpBeat(self._width))
        out_valid = Signal()
        drop = Signal(range(capacity + 1))     # entries discarded this cycle (malformed input)
        take = Signal(range(capacity + 1))     # entries taken by the beat, when it is sent
        count_payload = Signal(range(n + 1))
        end = Signal()
        route_cpl = Signal()

        ecrc_bits = q.field_bits("ecrc")
        with m.If(~mid):
            # First beat: the whole header, then up to n payload dwords.
            end_first = has_eof & (eof_idx < hdr_len + n)
            m.d.comb += [
                end.eq(end_first),
                count_payload.eq(Mux(end_first, eof_idx + 1 - hdr_len, n)),
                route_cpl.eq(is_cpl),
                beat.bar_id.eq(head.bar),
                beat.sop.eq(1),
                beat.hdr.raw.eq(Cat(q.entry(0).dw, q.entry(1).dw, q.entry(2).dw,
                                    Mux(hdr4, q.entry(3).dw, 0))),
            ]
            for k in range(n):
                m.d.comb += beat.data[32 * k:32 * k + 32].eq(byteswap32(
                    Mux(hdr4, q.entry(4 + k).dw, q.entry(3 + k).dw)))
            with m.If(q.count != 0):
                with m.If(~head.sof):
                    m.d.comb += drop.eq(1)                      # not the start of a TLP
                with m.Elif(has_eof & (eof_idx + 1 < hdr_len)):
                    m.d.comb += drop.eq(eof_idx + 1)            # ended inside its header
                with m.Else():
                    m.d.comb += [
                        out_valid.eq(end_first | (q.count >= hdr_len + n)),
                        take.eq(hdr_len + count_payload),
                    ]
        with m.Else():
            end_next = has_eof & (eof_idx < n)
            m.d.comb += [
                end.eq(end_next),
                count_payload.eq(Mux(end_next, eof_idx + 1, n)),
                route_cpl.eq(route_cpl_latched),
                beat.bar_id.eq(bar_latched),
                out_valid.eq(end_next | (q.count >= n)),
                take.eq(count_payload),
            ]
            for k in range(n):
                m.d.comb += beat.data[32 * k:32 * k + 32].eq(byteswap32(q.entry(k).dw))
        m.d.comb += [
            beat.keep.eq(Cat(Const(k, range(n + 1)) < count_payload for k in range(n))),
            beat.eop.eq(end),
            beat.error.eq(Mux(end & mux_entries(eof_idx, list(ecrc_bits)),
                              TlpError.ECRC, 0)),
        ]

        # --- route: completions to rx_cpl, the rest to rx_req -----------------------------------
        sent = Signal()
        for port, selected in ((self.rx_req, ~route_cpl), (self.rx_cpl, route_cpl)):
            m.d.comb += [port.payload.eq(beat), port.valid.eq(out_valid & selected)]
        m.d.comb += sent.eq(out_valid & Mux(route_cpl, self.rx_cpl.ready, self.rx_req.ready))
        with m.If(sent):
            m.d.sync += mid.eq(~end)
            with m.If(~mid):
                m.d.sync += [bar_latched.eq(head.bar), route_cpl_latched.eq(is_cpl)]
        m.d.comb += q.pop.eq(Mux(sent, take, drop))
        q.elaborate(m)
        return m
