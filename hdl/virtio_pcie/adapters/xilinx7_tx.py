# SPDX-License-Identifier: BSD-2-Clause
"""Transmit path of the Xilinx 7-series adapter: a TLP stream → ``s_axis_tx``."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..spec.pcie import FmtType
from ..tlp.signature import TlpError, TlpSignature
from .dword_queue import DwordQueue, byteswap32, first_set, mux_entries, popcount
from .xilinx7_core import DATA_WIDTHS, TxTuser

__all__ = ["Xilinx7TxPath"]

_Entry = data.StructLayout({
    "dw":  32,
    "eof": 1,      # last dword of a TLP
    "dsc": 1,      # the TLP is to be discontinued (on the eof entry)
})


class Xilinx7TxPath(wiring.Component):
    """Turns a TLP stream into the hard IP's transmit AXI4-Stream.

    Each TLP beat is split into entries (on the first beat the 3 or 4 header dwords, then the
    payload dwords byte-swapped into the core's order) appended to a queue; AXI beats are taken
    from its head, never mixing two TLPs (the 7-series transmit interface starts every TLP in
    dword 0). ``tvalid`` and the beat depend only on registers, so the beat is held steady while
    the core holds ``tready`` low. The path runs at full rate.

    Members
    -------
    i : In(TlpSignature(data_width))
        TLPs to send. A TLP flagged with :attr:`TlpError.DISCONTINUE` is sent with ``src_dsc``
        (the core drops it).
    tdata, tkeep, tlast, tuser, tvalid : Out
        To the core's ``s_axis_tx_*``.
    tready : In(1)
        From ``s_axis_tx_tready``.
    """

    def __init__(self, *, data_width):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"the 7-series core's interface is {DATA_WIDTHS[0]} or "
                             f"{DATA_WIDTHS[1]} bits wide, not {data_width!r}")
        self._width = data_width
        super().__init__({
            "i":      In(TlpSignature(data_width)),
            "tdata":  Out(data_width),
            "tkeep":  Out(data_width // 8),
            "tlast":  Out(1),
            "tuser":  Out(TxTuser),
            "tvalid": Out(1),
            "tready": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._width // 32
        capacity = 3 * n + 4
        q = DwordQueue(_Entry, capacity, n + 4, "txq")
        beat = self.i.payload

        # --- entries of an incoming beat --------------------------------------------------------
        hdr4 = FmtType.is_4dw(beat.hdr.dw0.fmt_type.as_value())
        dsc = (beat.error.as_value() & TlpError.DISCONTINUE.value) != 0
        # A TLP without payload ends with its last header dword.
        no_payload_end = beat.eop & (beat.keep == 0)
        hdr_entries = []
        for k in range(4):
            e = Signal(_Entry, name=f"hdr_entry{k}")
            eof_here = {2: no_payload_end & ~hdr4, 3: no_payload_end & hdr4}.get(k, Const(0))
            m.d.comb += [e.dw.eq(beat.hdr.raw[32 * k:32 * k + 32]), e.eof.eq(eof_here),
                         e.dsc.eq(eof_here & dsc)]
            hdr_entries.append(e)
        pay_entries = []
        for k in range(n):
            e = Signal(_Entry, name=f"pay_entry{k}")
            last = beat.keep[k] & (beat.keep[k + 1] == 0 if k + 1 < n else 1)
            m.d.comb += [
                e.dw.eq(Mux(beat.keep[k], byteswap32(beat.data[32 * k:32 * k + 32]), 0)),
                e.eof.eq(beat.eop & last),
                e.dsc.eq(beat.eop & last & dsc),
            ]
            pay_entries.append(Mux(beat.keep[k], e.as_value(), 0))
        payload = Cat(*pay_entries)
        first3 = Cat(*(e.as_value() for e in hdr_entries[:3]), payload)
        first4 = Cat(*(e.as_value() for e in hdr_entries[:4]), payload)
        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(q.count <= 2 * n),
            accept.eq(self.i.valid & self.i.ready),
            q.push.eq(Mux(accept, Mux(beat.sop, Mux(hdr4, first4, first3), payload), 0)),
            q.push_count.eq(Mux(accept, popcount(beat.keep) +
                                Mux(beat.sop, Mux(hdr4, 4, 3), 0), 0)),
        ]

        # --- AXI beats from the head of the queue -----------------------------------------------
        occupied = q.valid_mask()
        has_eof, eof_idx = first_set(m, q.field_bits("eof") & occupied, "txq_eof")
        end = has_eof & (eof_idx < n)
        count_out = Signal(range(n + 1))
        m.d.comb += count_out.eq(Mux(end, eof_idx + 1, n))
        for k in range(n):
            present = Const(k, range(n + 1)) < count_out
            m.d.comb += [
                self.tdata[32 * k:32 * k + 32].eq(Mux(present, q.entry(k).dw, 0)),
                self.tkeep[4 * k:4 * k + 4].eq(Mux(present, 0b1111, 0)),
            ]
        m.d.comb += [
            self.tvalid.eq(end | (q.count >= n)),
            self.tlast.eq(end),
            self.tuser.src_dsc.eq(end & mux_entries(eof_idx, list(q.field_bits("dsc")))),
            q.pop.eq(Mux(self.tvalid & self.tready, count_out, 0)),
        ]
        q.elaborate(m)
        return m
