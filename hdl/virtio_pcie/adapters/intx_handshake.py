# SPDX-License-Identifier: BSD-2-Clause
"""Turns Assert_INTx / Deassert_INTx message TLPs into a hard IP's ``cfg_interrupt`` handshake."""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..spec.pcie import FmtType, MsgCode
from ..tlp.signature import TlpSignature

__all__ = ["IntxHandshake", "SETTLE_CYCLES"]

#: Cycles the stream stays held after ``cfg_interrupt_rdy``: PG054 has the core make the message
#: after the handshake ("on the following clock cycle") and send it ahead of the user's next TLP
#: (``tx_cfg_gnt`` high); these cycles cover the core's latency from ``rdy`` to having the
#: message waiting, which PG054 does not state. They cost 32 to 64 ns per INTx message.
SETTLE_CYCLES = 8


class IntxHandshake(wiring.Component):
    """Takes INTx messages out of a TLP stream and signals them on a legacy interrupt handshake.

    Hard IPs such as the 7-series core send the INTx messages themselves (PG054, "Legacy
    Interrupt Mode": the user raises ``cfg_interrupt`` with ``cfg_interrupt_assert`` = 1 for
    Assert_INTA, = 0 for Deassert_INTA, and holds it until ``cfg_interrupt_rdy``); a function that
    emits the message TLPs (PCIe Base 4.0 §2.2.8.1) reaches the link through this block. Other
    TLPs pass through unchanged and in order: while a handshake is in progress, and for
    :data:`SETTLE_CYCLES` after it (until the core has its message waiting), the stream is held,
    so a later TLP never overtakes an interrupt message. ``busy`` says so, for the other streams
    that must not overtake it either (the completions: see
    :class:`~virtio_pcie.adapters.xilinx7.Xilinx7PcieAdapter`).

    Members
    -------
    i : In(TlpSignature(data_width))
        The function's requests, INTx messages included.
    o : Out(TlpSignature(data_width))
        The same without INTx messages.
    interrupt, interrupt_assert : Out(1)
        To ``cfg_interrupt`` and ``cfg_interrupt_assert``.
    interrupt_rdy : In(1)
        From ``cfg_interrupt_rdy``.
    busy : Out(1)
        An INTx message is at ``i``, in the handshake, or not yet waiting in the core: a TLP
        started now could reach the link before it.
    """

    def __init__(self, *, data_width):
        super().__init__({
            "i":                In(TlpSignature(data_width)),
            "o":                Out(TlpSignature(data_width)),
            "interrupt":        Out(1),
            "interrupt_assert": Out(1),
            "interrupt_rdy":    In(1),
            "busy":             Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        beat = self.i.payload
        code = beat.hdr.msg.message_code.as_value()
        is_intx = Signal()
        asserting = Signal()
        m.d.comb += [
            is_intx.eq(beat.sop & (beat.hdr.dw0.fmt_type == FmtType.MSG_LOC) &
                       (code >= MsgCode.ASSERT_INTA.value) &
                       (code <= MsgCode.DEASSERT_INTD.value)),
            asserting.eq(code <= MsgCode.ASSERT_INTD.value),
        ]
        settle = Signal(range(SETTLE_CYCLES + 1))
        with m.FSM() as fsm:
            with m.State("Pass"):
                m.d.comb += [
                    self.o.payload.eq(beat),
                    self.o.valid.eq(self.i.valid & ~is_intx),
                    self.i.ready.eq(self.o.ready | is_intx),
                ]
                with m.If(self.i.valid & is_intx):
                    m.d.sync += self.interrupt_assert.eq(asserting)
                    m.next = "Handshake"
            with m.State("Handshake"):
                m.d.comb += self.interrupt.eq(1)
                with m.If(self.interrupt_rdy):
                    m.d.sync += settle.eq(SETTLE_CYCLES)
                    m.next = "Settle"
            with m.State("Settle"):
                m.d.sync += settle.eq(settle - 1)
                with m.If(settle == 1):
                    m.next = "Pass"
        m.d.comb += self.busy.eq((self.i.valid & is_intx) | ~fsm.ongoing("Pass"))
        return m
