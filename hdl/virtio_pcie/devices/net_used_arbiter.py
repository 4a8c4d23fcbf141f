# SPDX-License-Identifier: BSD-2-Clause
"""Merges the device's completion streams into the one the virtqueue engine takes.

A batch (entries up to one with ``batch_end``, the used entries of one mergeable receive frame)
is passed whole, never interleaved with another source's entries. Sources are served in fixed
priority, the first input first; an input keeps the grant while it offers an entry, so a source
never sees its offered entry replaced (stream rule: the payload holds until taken).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..virtio.interface import VirtqUsed

__all__ = ["NetUsedArbiter"]


class NetUsedArbiter(wiring.Component):
    """Priority merge of ``inputs`` completion streams that keeps batches together.

    Members
    -------
    i : In(stream.Signature(VirtqUsed(queue_count))).array(inputs)
    o : Out(stream.Signature(VirtqUsed(queue_count)))
    reset : In(1)
        Device reset: a batch cut short by it (its sources drop their completions) no longer
        holds the grant.
    """

    def __init__(self, *, queue_count, inputs):
        if not isinstance(inputs, int) or inputs < 1:
            raise ValueError(f"inputs must be a positive integer, not {inputs!r}")
        self._inputs = inputs
        super().__init__({
            "i": In(stream.Signature(VirtqUsed(queue_count))).array(inputs),
            "o": Out(stream.Signature(VirtqUsed(queue_count))),
            "reset": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._inputs
        in_batch = Signal()              # the owner has sent part of a batch
        holding = Signal()               # the owner offered an entry that was not taken yet
        owner = Signal(range(n))
        pick = Signal(range(n))
        for i in reversed(range(n)):
            with m.If(self.i[i].valid):
                m.d.comb += pick.eq(i)
        sel = Mux(in_batch | holding, owner, pick)
        valid = Signal()
        for i in range(n):
            with m.If(sel == i):
                m.d.comb += [
                    valid.eq(self.i[i].valid),
                    self.o.payload.eq(self.i[i].payload),
                    self.i[i].ready.eq(self.o.ready),
                ]
        m.d.comb += self.o.valid.eq(valid)
        taken = valid & self.o.ready
        m.d.sync += [
            owner.eq(sel),
            holding.eq(valid & ~self.o.ready),
        ]
        with m.If(self.reset):
            m.d.sync += in_batch.eq(0)
        with m.Elif(taken):
            m.d.sync += in_batch.eq(~self.o.payload.batch_end)
        return m
