# SPDX-License-Identifier: BSD-2-Clause
"""The Xilinx 7-series PCI Express hard IP (``pcie_7x``) adapter.

::

    m_axis_rx ──► Xilinx7RxPath ──┬──► rx_req   (requests, forwarded config requests, bar_id)
                                  └──► rx_cpl   (completions)
    s_axis_tx ◄── Xilinx7TxPath ◄── TxMerge ◄──┬── TlpGate ◄── tx_cpl   (held while INTx is due)
                   (tx_buf_av gates new TLPs)  └── IntxHandshake ◄── tx_req
                                                    └──► cfg_interrupt / _assert / _rdy
    cfg_* status ──► registers ──► cfg (FunctionConfig, for the function's "ext" mode)

Supported links and widths (PG054): the 64-bit interface for x1, x2 and x4 links at 2.5 GT/s and
x1, x2 at 5 GT/s; the 128-bit interface for x4 at 5 GT/s and x8 at 2.5 or 5 GT/s
(:class:`~virtio_pcie.adapters.xilinx7_core.LinkConfig` picks one). The project's TLP streams have
the same width as the core's interface; no width conversion is done here.

Division of labour with the hard IP, and the configuration-space budget
-----------------------------------------------------------------------
The core owns the type-0 header (IDs, BARs, Command/Status), the PM capability at 0x40, the PCI
Express capability at 0x60 and the MSI-X capability at 0x9C (MSI at 0x48 is disabled: Linux's
virtio_pci never uses MSI). Configuration requests at and above byte 0xA8
(``EXT_CFG_CAP_PTR`` = 0x2A, the lowest the core allows) reach the function on ``rx_req`` like any
other request, and the function completes them on ``tx_cpl``: the 88 bytes 0xA8-0xFF hold exactly
the five virtio vendor capabilities (common 16 + notify 20 + ISR 16 + device 16 + PCI_CFG 20 =
88 bytes), and the core's MSI-X capability must point at 0xA8 (the build plan sets
``MSIX_CAP_NEXTPTR``).

MSI-X: the capability is the core's (there is no room for a second one in 88 bytes); its table
and PBA live in the function's BAR, and the function sends MSI-X messages itself as memory writes
on ``tx_req``, reading Enable and Function Mask from ``cfg`` (``cfg_interrupt_msixenable`` and
``cfg_interrupt_msixfm``). The core does not send MSI-X messages for the user (it has no address
input for them).

INTx: the core generates Assert_INTA/Deassert_INTA itself from the ``cfg_interrupt`` handshake,
so the function's INTx message TLPs are taken out of ``tx_req`` and turned into that handshake
(:class:`~virtio_pcie.adapters.intx_handshake.IntxHandshake`). The function holds a completion
until its INTx message has left (so that the Deassert_INTA of an ISR read-to-clear goes before
that read's completion: no spurious interrupt at the host); here the message leaves ``tx_req`` at
once but reaches the link only after the handshake, when the core sends it. So the adapter holds
completions too, from the message's arrival until the core has it waiting
(``IntxHandshake.busy``): the core sends its own TLPs first at a TLP boundary (``tx_cfg_gnt``
high, PG054), so the Deassert_INTA precedes the completion on the link, as the function's order
has it.
"""

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..function.interface import FunctionConfig
from ..spec.pcie import PciCommand, PcieDeviceControl, PcieLinkControl
from ..tlp.gate import TlpGate
from ..tlp.signature import TlpSignature
from .intx_handshake import IntxHandshake
from .tx_merge import TxMerge
from .xilinx7_core import DATA_WIDTHS, RxTuser, TxTuser
from .xilinx7_rx import Xilinx7RxPath
from .xilinx7_tx import Xilinx7TxPath

__all__ = ["Xilinx7PcieAdapter", "hard_ip_members"]

#: Command register bits the 7-series core reports on ``cfg_command`` (PG054: I/O and memory
#: space enables, Bus Master Enable, SERR# Enable, Interrupt Disable).
_COMMAND_BITS = (PciCommand.IO_SPACE | PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER |
                 PciCommand.SERR_ENABLE | PciCommand.INTX_DISABLE)


def hard_ip_members(data_width):
    """The adapter's members that connect to the core, named as the core's ports (``In`` = an
    output of the core)."""
    keep = data_width // 8
    return {
        # receive
        "m_axis_rx_tdata":  In(data_width), "m_axis_rx_tkeep": In(keep),
        "m_axis_rx_tlast":  In(1), "m_axis_rx_tuser": In(RxTuser.size),
        "m_axis_rx_tvalid": In(1), "m_axis_rx_tready": Out(1),
        "rx_np_ok":         Out(1), "rx_np_req": Out(1),
        # transmit
        "s_axis_tx_tdata":  Out(data_width), "s_axis_tx_tkeep": Out(keep),
        "s_axis_tx_tlast":  Out(1), "s_axis_tx_tuser": Out(TxTuser.size),
        "s_axis_tx_tvalid": Out(1), "s_axis_tx_tready": In(1),
        "tx_buf_av":        In(6), "tx_err_drop": In(1), "tx_cfg_req": In(1),
        "tx_cfg_gnt":       Out(1),
        # configuration status
        "user_lnk_up":      In(1),
        "cfg_bus_number":   In(8), "cfg_device_number": In(5), "cfg_function_number": In(3),
        "cfg_command":      In(16), "cfg_dcommand": In(16), "cfg_lcommand": In(16),
        "cfg_pmcsr_powerstate": In(2),
        "cfg_interrupt_msixenable": In(1), "cfg_interrupt_msixfm": In(1),
        # legacy interrupt
        "cfg_interrupt":    Out(1), "cfg_interrupt_assert": Out(1),
        "cfg_interrupt_di": Out(8), "cfg_interrupt_rdy": In(1),
    }


class Xilinx7PcieAdapter(wiring.Component):
    """Connects the project's TLP streams and function configuration to a ``pcie_7x`` core.

    Parameters
    ----------
    data_width : int
        64 or 128: the core's AXI4-Stream width, and the width of the TLP streams.

    Members
    -------
    m_axis_rx_*, s_axis_tx_*, tx_*, rx_np_*, cfg_*, user_lnk_up
        The core's user-side ports of the same names (:func:`hard_ip_members`).
    rx_req : Out(TlpSignature(data_width))
        Requests for the function: memory/I/O requests with ``bar_id`` (the lowest BAR bit in
        ``rx_bar_hit``; both bits of a 64-bit pair are set) and the configuration requests the
        core forwards (at and above its ``EXT_CFG_CAP_PTR``).
    rx_cpl : Out(TlpSignature(data_width))
        Completions for the function's reads.
    tx_cpl : In(TlpSignature(data_width))
        The function's completions (forwarded configuration requests included).
    tx_req : In(TlpSignature(data_width))
        The function's requests: DMA, MSI-X memory writes, and INTx messages (turned into the
        ``cfg_interrupt`` handshake).
    cfg : Out(FunctionConfig)
        The core's configuration state, registered: requester ID, Command, MPS, MRRS, extended
        tags, RCB, MSI-X enable and function mask, power state. Connect it to the function's
        ``ext_cfg``.
    link_up : Out(1)
        ``user_lnk_up``.
    activity : Out(1)
        High in each cycle a TLP beat is received or sent (for an LED).
    tx_dropped : Out(1)
        ``tx_err_drop``: the core discarded a TLP it judged malformed.
    """

    def __init__(self, *, data_width):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"the 7-series core's interface is {DATA_WIDTHS[0]} or "
                             f"{DATA_WIDTHS[1]} bits wide, not {data_width!r}")
        self._width = data_width
        super().__init__({
            **hard_ip_members(data_width),
            "rx_req":     Out(TlpSignature(data_width)),
            "rx_cpl":     Out(TlpSignature(data_width)),
            "tx_cpl":     In(TlpSignature(data_width)),
            "tx_req":     In(TlpSignature(data_width)),
            "cfg":        Out(FunctionConfig),
            "link_up":    Out(1),
            "activity":   Out(1),
            "tx_dropped": Out(1),
        })

    @property
    def data_width(self):
        return self._width

    def elaborate(self, platform):
        m = Module()
        width = self._width
        m.submodules.rx = rx = Xilinx7RxPath(data_width=width)
        m.submodules.tx = tx = Xilinx7TxPath(data_width=width)
        m.submodules.merge = merge = TxMerge(data_width=width, inputs=2)
        m.submodules.intx = intx = IntxHandshake(data_width=width)
        m.submodules.cpl_gate = cpl_gate = TlpGate(data_width=width)

        # --- receive: AXI4-Stream → requests and completions ---
        m.d.comb += [
            rx.tdata.eq(self.m_axis_rx_tdata), rx.tkeep.eq(self.m_axis_rx_tkeep),
            rx.tlast.eq(self.m_axis_rx_tlast), rx.tuser.eq(self.m_axis_rx_tuser),
            rx.tvalid.eq(self.m_axis_rx_tvalid), self.m_axis_rx_tready.eq(rx.tready),
            # Non-posted requests are taken as they come: the function completes requests in
            # order and its completions never wait for anything on the receive side.
            self.rx_np_ok.eq(1), self.rx_np_req.eq(1),
        ]
        connect(m, rx=rx.rx_req, function=flipped(self.rx_req))
        connect(m, rx=rx.rx_cpl, function=flipped(self.rx_cpl))

        # --- transmit: completions first in the round robin, INTx out of the requests ---
        # A completion waits while an INTx message is on its way into the core: the function
        # sent the message first (it holds completions while one is due), and a completion may
        # not pass a posted request (PCIe Base 4.0 §2.4.1), so the core must send the message
        # first. The wait is the handshake plus a few cycles.
        connect(m, function=flipped(self.tx_cpl), gate=cpl_gate.i)
        connect(m, gate=cpl_gate.o, merge=merge.i[0])
        m.d.comb += cpl_gate.open.eq(~intx.busy)
        connect(m, function=flipped(self.tx_req), intx=intx.i)
        connect(m, intx=intx.o, merge=merge.i[1])
        connect(m, merge=merge.o, tx=tx.i)
        m.d.comb += [
            merge.room.eq(self.tx_buf_av != 0),
            self.s_axis_tx_tdata.eq(tx.tdata), self.s_axis_tx_tkeep.eq(tx.tkeep),
            self.s_axis_tx_tlast.eq(tx.tlast), self.s_axis_tx_tuser.eq(tx.tuser),
            self.s_axis_tx_tvalid.eq(tx.tvalid), tx.tready.eq(self.s_axis_tx_tready),
            # The core may send its own TLPs (configuration completions, messages) between ours.
            self.tx_cfg_gnt.eq(1),
            self.tx_dropped.eq(self.tx_err_drop),
        ]

        # --- legacy interrupt handshake ---
        m.d.comb += [
            self.cfg_interrupt.eq(intx.interrupt),
            self.cfg_interrupt_assert.eq(intx.interrupt_assert),
            self.cfg_interrupt_di.eq(0),
            intx.interrupt_rdy.eq(self.cfg_interrupt_rdy),
        ]

        # --- the core's configuration state → FunctionConfig ---
        dcommand = PcieDeviceControl(self.cfg_dcommand)
        lcommand = PcieLinkControl(self.cfg_lcommand)
        m.d.sync += [
            self.cfg.pcie_id.bus.eq(self.cfg_bus_number),
            self.cfg.pcie_id.device.eq(self.cfg_device_number),
            self.cfg.pcie_id.function.eq(self.cfg_function_number),
            self.cfg.command.eq(self.cfg_command & _COMMAND_BITS.value),
            self.cfg.max_payload_size.eq(dcommand.max_payload_size),
            self.cfg.max_read_request_size.eq(dcommand.max_read_request_size),
            self.cfg.extended_tag.eq(dcommand.extended_tag),
            self.cfg.rcb_128.eq(lcommand.rcb),
            self.cfg.msix_enable.eq(self.cfg_interrupt_msixenable),
            self.cfg.msix_function_mask.eq(self.cfg_interrupt_msixfm),
            self.cfg.power_state.eq(self.cfg_pmcsr_powerstate),
        ]

        # --- status ---
        activity = Signal()
        m.d.comb += [
            activity.eq((self.m_axis_rx_tvalid & self.m_axis_rx_tready) |
                        (self.s_axis_tx_tvalid & self.s_axis_tx_tready)),
            self.activity.eq(activity),
            self.link_up.eq(self.user_lnk_up),
        ]
        return m
