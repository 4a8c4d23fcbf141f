# SPDX-License-Identifier: BSD-2-Clause
"""A top level for simulating any component whose interface has constant members.

Amaranth gives an ``always_ready`` (``always_valid``) stream a :class:`~amaranth.hdl.Const`
``ready`` (``valid``), and :func:`amaranth.back.verilog.convert` cannot make a port of a
constant. :class:`SimTop` wraps a component in one with the same member tree, every member a
plain signal: a constant member becomes an output port tied to its value, or an input port that
is left unused. Port names are unchanged (``dma__rd_status__valid``, ...).
"""

from amaranth import Module
from amaranth.hdl import Const
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out

__all__ = ["SimTop", "plain_signature"]


def plain_signature(signature):
    """``signature`` with every sub-signature replaced by a plain :class:`wiring.Signature`."""
    members = {}
    for name, member in signature.members.items():
        if member.is_port:
            new = Out(member.shape, init=member.init)
            if member.flow == In:
                new = new.flip()
        else:
            # ``member.signature`` is already seen from this side (flipped for an In member).
            new = Out(plain_signature(member.signature))
        if member.dimensions:
            new = new.array(*member.dimensions)
        members[name] = new
    return wiring.Signature(members)


class SimTop(wiring.Component):
    """Exposes ``inner``'s whole interface with no constant members."""

    def __init__(self, inner):
        self._inner = inner
        super().__init__(plain_signature(inner.signature))

    @property
    def inner(self):
        return self._inner

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self._inner
        outer_ports = list(self.signature.flatten(self))
        inner_ports = list(inner.signature.flatten(inner))
        assert [p for p, *_ in outer_ports] == [p for p, *_ in inner_ports]
        for (_, member, outer), (_, _, value) in zip(outer_ports, inner_ports, strict=True):
            if member.flow == Flow.Out:
                m.d.comb += outer.eq(value)
            elif not isinstance(value, Const):
                m.d.comb += value.eq(outer)
        return m
