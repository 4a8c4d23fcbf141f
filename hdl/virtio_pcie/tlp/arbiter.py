# SPDX-License-Identifier: BSD-2-Clause
"""Merges several TLP streams into one, a whole TLP at a time.

Round-robin between packets: when a TLP ends, the next input after the one just served that has a
TLP waiting goes next, so no input starves another. The beats of a TLP are never interleaved with
another's. The arbiter holds no data: a beat moves from the granted input to the output in the
same cycle, so a TLP that an input has handed over is already on the output (a client that waits
for its TLP to leave before issuing something else keeps that order on the link).

Once the output shows a beat, the choice is held until that beat is taken, so the output follows
the stream rules even when a more favoured input becomes valid in the meantime.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .signature import TlpSignature

__all__ = ["TlpArbiter"]


class TlpArbiter(wiring.Component):
    """Round-robin TLP stream arbiter.

    Parameters
    ----------
    data_width : int
        TLP data path width, in bits.
    inputs : int
        Number of input streams.

    Members
    -------
    i : In(TlpSignature(data_width)).array(inputs)
        The inputs.
    o : Out(TlpSignature(data_width))
        The merged stream.
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
        locked = Signal()                       # a TLP is under way, or a beat is shown
        owner  = Signal(range(n))
        last   = Signal(range(n), init=n - 1)   # the input served last
        pick   = Signal(range(n))
        for k in range(n):
            for j in reversed(range(n)):
                candidate = (k + 1 + j) % n
                with m.If((last == k) & self.i[candidate].valid):
                    m.d.comb += pick.eq(candidate)
        sel = Signal(range(n))
        m.d.comb += sel.eq(Mux(locked, owner, pick))

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
                m.d.sync += [locked.eq(1), owner.eq(sel)]
        return m
