# SPDX-License-Identifier: BSD-2-Clause
"""A simulation top level for components whose signature has always-ready / always-valid streams.

Amaranth represents the ``ready`` of an ``always_ready`` stream (and the ``valid`` of an
``always_valid`` one) as ``Const(1)``, which cannot be a top-level port, so such a component cannot
be converted to Verilog on its own. :class:`SimulationTop` wraps it with the same ports, those
streams replaced by plain ones: the constant member becomes an output tied to 1 (when the wrapped
component drives it) or an ignored input (when the environment would).
"""

from amaranth import Const, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SimulationTop", "plain_signature"]


def plain_signature(signature):
    """``signature`` (unflipped) with every always-ready / always-valid stream made plain."""
    if isinstance(signature, stream.Signature):
        return stream.Signature(signature.members["payload"].shape)
    members = {}
    for name, member in signature.members.items():
        if member.is_port:
            members[name] = member
            continue
        inner = member.signature
        if isinstance(inner, wiring.FlippedSignature):
            inner = inner.flip()
        members[name] = (Out if member.flow == Out else In)(plain_signature(inner))
    return wiring.Signature(members)


class SimulationTop(wiring.Component):
    """``inner`` with plain streams in place of always-ready / always-valid ones.

    Ports keep the wrapped component's names (``queues__notify__valid``, ...).
    """

    def __init__(self, inner):
        self._inner = inner
        super().__init__(plain_signature(inner.signature))

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self._inner
        for path, member, value in inner.signature.flatten(inner):
            outer = self
            for part in path:
                outer = getattr(outer, part) if isinstance(part, str) else outer[part]
            if isinstance(value, Const):
                if member.flow == Out:
                    m.d.comb += outer.eq(value)
            elif member.flow == Out:
                m.d.comb += outer.eq(value)
            else:
                m.d.comb += value.eq(outer)
        return m
