# SPDX-License-Identifier: BSD-2-Clause
"""Merges TLP streams into one, a whole TLP at a time, when the hard IP has room."""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..tlp.signature import TlpSignature

__all__ = ["TxMerge"]


class TxMerge(wiring.Component):
    """Round-robin merge of ``inputs`` TLP streams, packet-atomic.

    A TLP is chosen at its first beat and keeps the output until its last beat has passed; the
    next choice starts after the input that last won. A new TLP is started only while ``room``
    is high (the 7-series core's ``tx_buf_av`` is not zero: PG054 asks the user not to start a
    TLP the core has no buffer for); a TLP already started is never held back by it.

    Members
    -------
    i : In(TlpSignature(data_width)) × inputs
        Streams to merge (``i[0]``, ``i[1]``, ...).
    o : Out(TlpSignature(data_width))
        The merged stream.
    room : In(1)
        The consumer can take a new TLP.
    """

    def __init__(self, *, data_width, inputs=2):
        if not isinstance(inputs, int) or inputs < 1:
            raise ValueError(f"inputs must be a positive integer, not {inputs!r}")
        self._inputs = inputs
        super().__init__({
            "i":    In(TlpSignature(data_width)).array(inputs),
            "o":    Out(TlpSignature(data_width)),
            "room": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        count = self._inputs
        busy = Signal()                       # inside a TLP
        owner = Signal(range(max(2, count)))  # the input whose TLP is passing
        last = Signal(range(max(2, count)))   # the input that won last
        choice = Signal(range(max(2, count)))
        any_valid = Signal()
        # Round robin: the first valid input after ``last``.
        for offset in reversed(range(1, count + 1)):
            idx = Signal(range(max(2, count)), name=f"rr{offset}")
            m.d.comb += idx.eq(Mux(last + offset >= count, last + offset - count,
                                   last + offset))
            for i in range(count):
                with m.If((idx == i) & self.i[i].valid):
                    m.d.comb += [choice.eq(i), any_valid.eq(1)]
        current = Mux(busy, owner, choice)
        enabled = busy | (any_valid & self.room)
        for i in range(count):
            with m.If(current == i):
                m.d.comb += [
                    self.o.payload.eq(self.i[i].payload),
                    self.o.valid.eq(self.i[i].valid & enabled),
                    self.i[i].ready.eq(self.o.ready & enabled),
                ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [busy.eq(~self.o.payload.eop), owner.eq(current), last.eq(current)]
        return m
