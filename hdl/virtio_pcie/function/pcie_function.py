# SPDX-License-Identifier: BSD-2-Clause
"""The PCI Express endpoint function: configuration space, BARs, completer, MSI-X and INTx.

::

    rx_req ──► Completer ──► TlpGate ──► tx_cpl   (held while an INTx message is due)
                 │ config      │ fabric (bar << bar_addr_bits | offset)
    cfg_port ──► ConfigArbiter │
                 ▼             ▼
              ConfigSpace ──► RegisterFabric ──► common · isr · device · notify · legacy (ports)
                 │ cfg  (PCI_CFG window)   └──► MsixController (table, PBA)
                 ▼                                  │ messages
    cfg ◄── FunctionConfig   dma_req ──► TlpGate ──► TlpArbiter ◄── IntxMessages ◄── intx
                                  (Bus Master Enable, D0)  └──► tx_req

Everything is placed by a :class:`~virtio_pcie.function.layout.FunctionLayout`. The virtio
windows come out as register-bus initiator ports named after the structures (``common``,
``isr``, ``device`` when the device has configuration, ``notify``, and ``legacy`` for a
transitional device), each addressing its window from 0 with
:attr:`~virtio_pcie.function.layout.Window.addr_width` bits. The transport is their target.

Configuration space is reached by configuration TLPs on ``rx_req`` and by ``cfg_port`` (for a
hard-IP adapter that forwards configuration accesses, e.g. UltraScale ``cfg_ext``); the two
share the configuration space one access at a time.

In ``"ext"`` mode (a hard IP owns the header, its capabilities and the BARs) the configuration
space holds only the virtio capabilities, BAR hits come from ``rx_req``'s ``bar_id``, and what
the host programmed in the hard IP's registers (Command, Device Control, MSI-X, the function's
ID) comes in on ``ext_cfg`` and is passed through to ``cfg``. Status bits are then the hard IP's;
``events`` is not used.

Completions for the function's own requests (``rx_cpl``) are not this component's business: the
top connects them to the DMA engine.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..spec.pcie import PciCommand, PmPowerState
from ..tlp.arbiter import TlpArbiter
from ..tlp.gate import TlpGate
from ..tlp.signature import TlpSignature, dwords_per_beat
from .completer import Completer
from .config_space import CONFIG_ADDR_WIDTH, ConfigSpace
from .interface import FunctionConfig, FunctionEvents, MsixRequestSignature
from .intx import IntxMessages
from .layout import FunctionLayout
from .msix import MsixController
from .register_bus import RegisterBusSignature
from .register_fabric import RegisterFabric

__all__ = ["PcieFunction"]


class PcieFunction(wiring.Component):
    """A virtio PCI Express endpoint function (see the module documentation).

    Parameters
    ----------
    layout : FunctionLayout
        Identity, BARs, windows, capabilities.
    data_width : int
        TLP data path width, in bits (64, 128 or 256).

    Members
    -------
    rx_req : In(TlpSignature(data_width))
        Requests from the host (configuration, memory, I/O, messages).
    tx_cpl : Out(TlpSignature(data_width))
        Completions for them.
    tx_req : Out(TlpSignature(data_width))
        Requests to the host: ``dma_req``'s, MSI-X messages, INTx messages.
    dma_req : In(TlpSignature(data_width))
        The DMA engine's MRd/MWr, merged into ``tx_req`` a TLP at a time. New TLPs are not
        taken while Bus Master Enable is clear or the function is not in D0 (one under way
        finishes).
    cfg : Out(FunctionConfig)
        What the host programmed (Command, MPS, MRRS, extended tags, RCB, MSI-X, power state,
        the function's ID).
    events : In(FunctionEvents)
        Strobes that set status bits (``"full"`` mode).
    msix : In(MsixRequestSignature())
        Vectors to signal.
    intx : In(1)
        The INTx level.
    cfg_port : In(RegisterBusSignature(12))
        Configuration accesses from a hard-IP adapter: dword address, byte enables.
    ext_cfg : In(FunctionConfig)
        (``"ext"`` mode) The hard IP's configuration state.
    common, isr, device, notify, legacy : Out(RegisterBusSignature(window.addr_width))
        The virtio windows (``device`` only with device configuration, ``legacy`` only for a
        transitional device).
    """

    def __init__(self, *, layout, data_width):
        if not isinstance(layout, FunctionLayout):
            raise TypeError(f"layout must be a FunctionLayout, not {layout!r}")
        dwords_per_beat(data_width)     # checks the width
        self._layout = layout
        self._data_width = data_width
        members = {
            "rx_req":   In(TlpSignature(data_width)),
            "tx_cpl":   Out(TlpSignature(data_width)),
            "tx_req":   Out(TlpSignature(data_width)),
            "dma_req":  In(TlpSignature(data_width)),
            "cfg":      Out(FunctionConfig),
            "events":   In(FunctionEvents),
            "msix":     In(MsixRequestSignature()),
            "intx":     In(1),
            "cfg_port": In(RegisterBusSignature(CONFIG_ADDR_WIDTH)),
        }
        if layout.config_mode == "ext":
            members["ext_cfg"] = In(FunctionConfig)
        for name, window in layout.register_windows.items():
            members[name] = Out(RegisterBusSignature(window.addr_width))
        super().__init__(members)

    @property
    def layout(self):
        return self._layout

    def elaborate(self, platform):
        m = Module()
        layout = self._layout
        width = self._data_width
        full = layout.config_mode == "full"

        m.submodules.completer = completer = Completer(layout=layout, data_width=width)
        m.submodules.config_space = config_space = ConfigSpace(layout=layout)
        m.submodules.config_arbiter = config_arbiter = RegisterFabric(
            addr_width=CONFIG_ADDR_WIDTH, initiators=2,
            windows=[("config", 0, 1 << CONFIG_ADDR_WIDTH)])
        m.submodules.fabric = fabric = RegisterFabric(
            addr_width=layout.fabric_addr_width, initiators=2,
            windows=[(name, layout.fabric_address(w.bar, w.offset), w.size)
                     for name, w in layout.windows.items()])
        m.submodules.msix = msix = MsixController(layout=layout, data_width=width)
        m.submodules.intx = intx = IntxMessages(data_width=width)
        m.submodules.tx_arbiter = tx_arbiter = TlpArbiter(data_width=width, inputs=3)
        m.submodules.dma_gate = dma_gate = TlpGate(data_width=width)
        m.submodules.cpl_gate = cpl_gate = TlpGate(data_width=width)

        # --- requests from the host ---
        connect(m, host=flipped(self.rx_req), completer=completer.rx_req)
        # A completion waits while an INTx message is due, so that the Deassert_INTA caused by
        # a read-to-clear of the ISR goes out before that read's completion. A completion may
        # not pass a posted request (PCIe Base 4.0 §2.4.1, ordering rules), so when the driver sees
        # the ISR value the line is already low at the interrupt controller: no second,
        # spurious interrupt (IRQ_NONE) after each real one. The wait is a few cycles.
        connect(m, completer=completer.tx_cpl, gate=cpl_gate.i)
        connect(m, gate=cpl_gate.o, host=flipped(self.tx_cpl))
        m.d.comb += cpl_gate.open.eq(~intx.pending)

        # --- configuration space: TLPs and the adapter's port, one access at a time ---
        connect(m, completer=completer.config, arbiter=config_arbiter.initiator[0])
        connect(m, adapter=flipped(self.cfg_port), arbiter=config_arbiter.initiator[1])
        connect(m, arbiter=config_arbiter.config, config_space=config_space.port)

        # --- BAR space: memory/I/O requests and the PCI_CFG window ---
        connect(m, completer=completer.fabric, fabric=fabric.initiator[0])
        connect(m, pci_cfg=config_space.fabric, fabric=fabric.initiator[1])
        for name in layout.register_windows:
            connect(m, fabric=getattr(fabric, name), transport=flipped(getattr(self, name)))
        connect(m, fabric=fabric.msix_table, msix=msix.table)
        connect(m, fabric=fabric.msix_pba, msix=msix.pba)

        # --- requests to the host ---
        # The DMA engine's requests wait while the function may not master the bus.
        connect(m, dma=flipped(self.dma_req), gate=dma_gate.i)
        connect(m, gate=dma_gate.o, arbiter=tx_arbiter.i[0])
        m.d.comb += dma_gate.open.eq(
            (self.cfg.command & PciCommand.BUS_MASTER).as_value().any() &
            (self.cfg.power_state == PmPowerState.D0.value))
        connect(m, msix=msix.tx, arbiter=tx_arbiter.i[1])
        connect(m, intx=intx.tx, arbiter=tx_arbiter.i[2])
        connect(m, arbiter=tx_arbiter.o, host=flipped(self.tx_req))
        connect(m, transport=flipped(self.msix), msix=msix.requests)
        m.d.comb += intx.intx.eq(self.intx)

        # --- what the host programmed ---
        if full:
            m.d.comb += [
                self.cfg.eq(config_space.cfg),
                completer.bar_base.eq(config_space.bar_base),
                config_space.id_capture.eq(completer.id_capture),
                config_space.request_events.eq(completer.events),
                config_space.events.eq(self.events),
                config_space.intx_status.eq(self.intx),
            ]
        else:
            m.d.comb += self.cfg.eq(self.ext_cfg)
        m.d.comb += [
            completer.cfg.eq(self.cfg),
            msix.cfg.eq(self.cfg),
            intx.cfg.eq(self.cfg),
        ]
        return m
