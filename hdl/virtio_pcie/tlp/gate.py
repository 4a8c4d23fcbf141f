# SPDX-License-Identifier: BSD-2-Clause
"""Lets whole TLPs through while a condition holds.

A TLP starts through the gate only while ``open`` is high; one that has started (or whose first
beat is already shown downstream) goes through to its end whatever ``open`` does, so the gate
never cuts a TLP nor withdraws a beat it has shown (stream rule 2). While closed, the input is
simply not taken: nothing is dropped.

The function uses it to hold the DMA engine's requests while Bus Master Enable is clear or the
function is not in D0 (PCIe Base 4.0 §7.5.1.1.3, PCI PM 1.2 §5.3): a function must not issue
requests then, whatever its DMA engine does.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .signature import TlpSignature

__all__ = ["TlpGate"]


class TlpGate(wiring.Component):
    """Passes whole TLPs from ``i`` to ``o`` while ``open`` is high.

    Parameters
    ----------
    data_width : int
        TLP data path width, in bits.

    Members
    -------
    i : In(TlpSignature(data_width))
    o : Out(TlpSignature(data_width))
    open : In(1)
        New TLPs may start.
    """

    def __init__(self, *, data_width):
        super().__init__({
            "i":    In(TlpSignature(data_width)),
            "o":    Out(TlpSignature(data_width)),
            "open": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        in_packet = Signal()     # a TLP is part way through
        shown     = Signal()     # a beat is shown downstream and not yet taken
        passing = self.open | in_packet | shown
        m.d.comb += [
            self.o.payload.eq(self.i.payload),
            self.o.valid.eq(self.i.valid & passing),
            self.i.ready.eq(self.o.ready & passing),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [in_packet.eq(~self.o.p.eop), shown.eq(0)]
        with m.Elif(self.o.valid):
            m.d.sync += shown.eq(1)
        return m
