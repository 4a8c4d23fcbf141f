# SPDX-License-Identifier: BSD-2-Clause
"""Round-robin merging of several streams into one."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamArbiter"]


class StreamArbiter(wiring.Component):
    """Passes one beat at a time from ``count`` input streams to one output, round robin.

    The input after the last one served has priority, so every input with a beat waiting is
    served within ``count`` transfers. Once the output is valid its source is held until the
    beat is taken, as the stream rules require; there is no register on the path (the output
    is valid in the cycle the input is).

    Parameters
    ----------
    shape : shape-castable
        Payload of every stream.
    count : int
        Number of inputs.

    Members
    -------
    i : In(stream.Signature(shape)).array(count)
    o : Out(stream.Signature(shape))
    grant : Out(range(count))
        Which input the output beat comes from (meaningful while ``o.valid``).
    """

    def __init__(self, *, shape, count):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, not {count!r}")
        self._count = count
        super().__init__({
            "i":     In(stream.Signature(shape)).array(count),
            "o":     Out(stream.Signature(shape)),
            "grant": Out(range(count)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._count
        last   = Signal(range(n))
        held   = Signal(range(n))
        locked = Signal()
        pick   = Signal(range(n))

        with m.Switch(last):
            for start in range(n):
                with m.Case(start):
                    order = [(start + 1 + k) % n for k in range(n)]
                    # Later assignments win: walk from lowest to highest priority.
                    for index in reversed(order):
                        with m.If(self.i[index].valid):
                            m.d.comb += pick.eq(index)

        m.d.comb += self.grant.eq(pick)
        with m.If(locked):
            m.d.comb += self.grant.eq(held)

        with m.Switch(self.grant):
            for index in range(n):
                with m.Case(index):
                    m.d.comb += [
                        self.o.valid.eq(self.i[index].valid),
                        self.o.payload.eq(self.i[index].payload),
                        self.i[index].ready.eq(self.o.ready),
                    ]

        with m.If(self.o.valid & ~self.o.ready):
            m.d.sync += [locked.eq(1), held.eq(self.grant)]
        with m.Else():
            m.d.sync += locked.eq(0)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += last.eq(self.grant)
        return m
