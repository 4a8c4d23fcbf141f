# SPDX-License-Identifier: BSD-2-Clause
"""INTx emulation: Assert_INTA / Deassert_INTA messages that follow an interrupt level.

PCIe Base 4.0 §2.2.8.1 and §6.1.3: a function signals a level-triggered legacy interrupt with a
pair of messages (routing "local", terminated at the receiver), sent on each change of the
*effective* level. The effective level is the ``intx`` input while Command.Interrupt Disable is
clear and MSI-X is disabled (a function with MSI-X enabled must not use INTx, §6.1.4); setting
Interrupt Disable while asserted sends Deassert_INTA. Status.Interrupt Status shows the ``intx``
input itself, whatever Interrupt Disable says (§7.5.1.1.4), and is wired in the configuration
space. INTx messages are not gated by Bus Master Enable.

Only the latest level matters: if it changes while a message waits for the link, the next
message brings the host to the current level, and no redundant pair is sent.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..spec.pcie import FmtType, MsgCode, PciCommand, TlpHeader
from ..tlp.signature import TlpSignature
from .interface import FunctionConfig

__all__ = ["IntxMessages"]


class IntxMessages(wiring.Component):
    """Sends Assert_INTA / Deassert_INTA when the effective INTx level changes.

    Parameters
    ----------
    data_width : int
        TLP data path width, in bits.

    Members
    -------
    intx : In(1)
        The interrupt level (virtio: ISR status is not zero and MSI-X is disabled).
    cfg : In(FunctionConfig)
        Interrupt Disable, MSI-X Enable, requester ID.
    tx : Out(TlpSignature(data_width))
        The messages.
    asserted : Out(1)
        What the host was last told (1 after Assert_INTA went out).
    pending : Out(1)
        The effective level differs from what the host was told: a message is due or being
        sent. The function holds its completions meanwhile (see
        :class:`~virtio_pcie.function.pcie_function.PcieFunction`).
    """

    def __init__(self, *, data_width):
        super().__init__({
            "intx":     In(1),
            "cfg":      In(FunctionConfig),
            "tx":       Out(TlpSignature(data_width)),
            "asserted": Out(1),
            "pending":  Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        wanted = Signal()
        m.d.comb += wanted.eq(self.intx & ~(cfg.command & PciCommand.INTX_DISABLE).as_value().any()
                              & ~cfg.msix_enable)

        sending = Signal()     # the level carried by the message being sent
        with m.FSM(name="intx") as fsm:
            with m.State("Idle"):
                with m.If(wanted != self.asserted):
                    m.d.sync += sending.eq(wanted)
                    m.next = "Send"
            with m.State("Send"):
                m.d.comb += self.tx.valid.eq(1)
                with m.If(self.tx.ready):
                    m.d.sync += self.asserted.eq(sending)
                    m.next = "Idle"
        m.d.comb += self.pending.eq((wanted != self.asserted) | fsm.ongoing("Send"))

        hdr = Signal(TlpHeader)
        m.d.comb += [
            hdr.dw0.fmt_type.eq(FmtType.MSG_LOC),
            hdr.msg.message_code.eq(Mux(sending, MsgCode.ASSERT_INTA, MsgCode.DEASSERT_INTA)),
            hdr.msg.requester_id.eq(cfg.pcie_id),
            self.tx.p.hdr.eq(hdr),
            self.tx.p.sop.eq(1),
            self.tx.p.eop.eq(1),
        ]
        return m
