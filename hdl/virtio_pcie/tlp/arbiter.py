# SPDX-License-Identifier: BSD-2-Clause
"""Round-robin merging of TLP streams, a whole TLP at a time."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .signature import TlpSignature

__all__ = ["TlpArbiter", "round_robin"]


def round_robin(m, requests, last, sel, any_):
    """Drive ``sel`` with the first asserted bit of ``requests`` after index ``last``."""
    n = len(requests)
    with m.Switch(last):
        for prev in range(n):
            with m.Case(prev):
                for off in reversed(range(1, n + 1)):
                    idx = (prev + off) % n
                    with m.If(requests[idx]):
                        m.d.comb += [sel.eq(idx), any_.eq(1)]


class TlpArbiter(wiring.Component):
    """Merges TLP streams into one, taking turns TLP by TLP (round robin).

    It adds no latency and no buffering: a beat is taken from an input in the cycle it is taken
    by the output, so a producer knows when its TLP has left (the DMA write engine relies on
    this to order its statuses after its data). Once an input's beat is offered on the output it
    stays selected until that TLP's last beat is taken (stream rule 2 holds on the output).

    Parameters
    ----------
    data_width : int
        TLP data path width in bits.
    inputs : int
        Number of input streams.

    Members
    -------
    i : In(TlpSignature(data_width)).array(inputs)
    o : Out(TlpSignature(data_width))
    """

    def __init__(self, *, data_width, inputs):
        if not isinstance(inputs, int) or inputs < 1:
            raise ValueError(f"inputs must be a positive integer, not {inputs!r}")
        self._inputs = inputs
        super().__init__({
            "i": In(TlpSignature(data_width)).array(inputs),
            "o": Out(TlpSignature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._inputs
        last   = Signal(range(n))
        grant  = Signal(range(n))
        locked = Signal()
        pick   = Signal(range(n))
        any_   = Signal()
        round_robin(m, [self.i[k].valid for k in range(n)], last, pick, any_)
        sel = Signal(range(n))
        m.d.comb += sel.eq(grant)
        with m.If(~locked):
            m.d.comb += sel.eq(pick)
        with m.Switch(sel):
            for k in range(n):
                with m.Case(k):
                    m.d.comb += [
                        self.o.valid.eq(self.i[k].valid),
                        self.o.payload.eq(self.i[k].payload),
                        self.i[k].ready.eq(self.o.ready),
                    ]
        with m.If(self.o.valid):
            with m.If(self.o.ready & self.o.p.eop):
                m.d.sync += [locked.eq(0), last.eq(sel)]
            with m.Else():
                m.d.sync += [locked.eq(1), grant.eq(sel)]
        return m
