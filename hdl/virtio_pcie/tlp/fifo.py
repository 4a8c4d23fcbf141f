# SPDX-License-Identifier: BSD-2-Clause
"""A first-in first-out buffer for TLP streams."""

from amaranth import Module, Shape
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .signature import TlpBeat, TlpSignature

__all__ = ["TlpFifo"]


class TlpFifo(wiring.Component):
    """Buffers up to ``depth`` TLP beats between two TLP streams.

    Parameters
    ----------
    data_width : int
        TLP data path width, in bits.
    depth : int
        Beats held.

    Members
    -------
    i : In(TlpSignature(data_width))
        Beats in.
    o : Out(TlpSignature(data_width))
        The same beats out, in order, one cycle or more later.
    level : Out(range(depth + 1))
        Beats held.
    """

    def __init__(self, *, data_width, depth=16):
        if depth < 2:
            raise ValueError(f"depth must be at least 2, not {depth!r}")
        self._data_width = data_width
        self._depth = depth
        super().__init__({
            "i":     In(TlpSignature(data_width)),
            "o":     Out(TlpSignature(data_width)),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(TlpBeat(self._data_width)).width
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=width, depth=self._depth)
        m.d.comb += [
            fifo.w_data.eq(self.i.payload),
            fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
            self.level.eq(fifo.level),
        ]
        return m
