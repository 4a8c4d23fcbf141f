# SPDX-License-Identifier: BSD-2-Clause
"""The board top: PCIe reference clock, the ``pcie_7x`` hard IP, the adapter, the core, LEDs.

::

    REFCLK± ─► IBUFDS_GTE2 ─► pcie_7x_0 (black box, from the Vivado IP of the build plan)
    PERST# ───────────────────┘  │ user_clk_out / user_reset_out ─► "sync" domain
    lanes ◄──────────────────────┤ m_axis_rx / s_axis_tx / cfg_*
                                 ▼
                  Xilinx7VirtioDevice: Xilinx7PcieAdapter ◄──► VirtioPcieDevice ("ext" mode)
                                         blk: disk in on-chip RAM (board.disk_sectors)
                                         net: loopback (transmitted frames are received)
    LEDs: 0 link up · 1 TLP activity (stretched) · 2 heartbeat (user clock alive) · 3 PERST#

Everything runs in the core's user clock domain (``user_clk_out``: 125 or 250 MHz, see
:class:`~virtio_pcie.adapters.xilinx7_core.LinkConfig`), reset by ``user_reset_out``.

The core is built in the constructor, so that the build plan reads the hard IP's configuration
from the very core that goes into the bitstream (:meth:`BoardTop.hard_ip_plan`).
"""

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io

from ..adapters.xilinx7 import hard_ip_members
from ..adapters.xilinx7_core import core_ports
from .xilinx7_device import Xilinx7VirtioDevice

__all__ = ["BoardTop", "HARD_IP_MODULE"]

#: Module name of the Vivado IP (``create_ip -module_name``).
HARD_IP_MODULE = "pcie_7x_0"

# Inputs of the core the design does not use, and their values (PG054 defaults).
_TIE = {
    "rx_np_req": 1, "tx_cfg_gnt": 1, "cfg_trn_pending": 0, "cfg_pm_halt_aspm_l0s": 0,
    "cfg_pm_halt_aspm_l1": 0, "cfg_pm_force_state_en": 0, "cfg_pm_force_state": 0,
    "cfg_dsn": 0, "cfg_turnoff_ok": 0, "cfg_pm_wake": 0, "cfg_pm_send_pme_to": 0,
    "cfg_ds_bus_number": 0, "cfg_ds_device_number": 0, "cfg_ds_function_number": 0,
    "cfg_interrupt_stat": 0, "cfg_pciecap_interrupt_msgnum": 0,
    "cfg_mgmt_di": 0, "cfg_mgmt_byte_en": 0, "cfg_mgmt_dwaddr": 0, "cfg_mgmt_wr_en": 0,
    "cfg_mgmt_rd_en": 0, "cfg_mgmt_wr_readonly": 0, "cfg_mgmt_wr_rw1c_as_rw": 0,
    "pl_directed_link_change": 0, "pl_directed_link_width": 0, "pl_directed_link_speed": 0,
    "pl_directed_link_auton": 0, "pl_upstream_prefer_deemph": 1, "pl_transmit_hot_rst": 0,
    "pl_downstream_deemph_source": 0, "pcie_drp_clk": 1, "pcie_drp_en": 0, "pcie_drp_we": 0,
    "pcie_drp_addr": 0, "pcie_drp_di": 0,
}


class BoardTop(Elaboratable):
    """The top of a board build.

    Parameters
    ----------
    board : :class:`~.platforms.Board`
    device : "blk" or "net"
    """

    def __init__(self, board, *, device):
        self.board = board
        self.device = device
        self.link = board.link
        onchip = board.disk_sectors if device == "blk" else None
        self.core = Xilinx7VirtioDevice(data_width=board.link.data_width, device=device,
                                        onchip_sectors=onchip)

    def hard_ip_plan(self):
        """The ``pcie_7x`` configuration this top's core needs."""
        return self.core.hard_ip_plan()

    def elaborate(self, platform):
        m = Module()
        lanes = self.link.lanes
        width = self.link.data_width

        # --- pins: the lanes and REFCLK go to the GTs untouched (no I/O buffers) ---
        pcie = platform.request("pcie", 0, dir="-")
        m.submodules.perst = perst = io.Buffer("i", pcie.rst)
        if self.board.refclk[0] == "pcie":
            refclk_pins = pcie.clk
            m.submodules.clkreq = clkreq = io.Buffer("o", pcie.clkreq)
            m.d.comb += clkreq.o.eq(1)      # CLKREQ# asserted: keep the reference clock
        else:
            refclk_pins = platform.request(*self.board.refclk, dir="-")
        refclk = Signal()
        m.submodules.refclk_buf = Instance(
            "IBUFDS_GTE2", i_I=refclk_pins.p, i_IB=refclk_pins.n, i_CEB=0, o_O=refclk,
            o_ODIV2=Signal())

        # --- clock domain of the core ---
        user_clk, user_reset = Signal(), Signal()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(user_clk), ResetSignal("sync").eq(user_reset)]

        # --- hard IP and the core behind its adapter ---
        m.submodules.core = core = self.core
        if self.device == "net":
            # No Ethernet on these boards: the device's loopback returns transmitted frames to
            # the receive queue, with the link reported up.
            m.d.comb += [core.loopback.eq(1), core.link_up.eq(1), core.mac_tx.tready.eq(1)]

        ports = {}
        core_side = hard_ip_members(width)
        for name, (direction, bits) in core_ports(width, lanes).items():
            if name in core_side:
                ports[f"{direction}_{name}"] = getattr(core, name)
            elif name in _TIE:
                ports[f"i_{name}"] = _TIE[name]
            elif direction == "o":
                ports[f"o_{name}"] = Signal(bits, name=f"pcie_{name}")
        ports.update({
            "i_sys_clk": refclk, "i_sys_rst_n": ~perst.i,
            "o_user_clk_out": user_clk, "o_user_reset_out": user_reset,
            "i_pci_exp_rxp": pcie.rx.p[:lanes], "i_pci_exp_rxn": pcie.rx.n[:lanes],
            "o_pci_exp_txp": pcie.tx.p[:lanes], "o_pci_exp_txn": pcie.tx.n[:lanes],
        })
        m.submodules.pcie = Instance(HARD_IP_MODULE, **ports)

        # --- LEDs ---
        leds = []
        for i in range(4):
            leds.append(io.Buffer("o", platform.request("led", i, dir="-")))
            m.submodules[f"led{i}"] = leds[-1]
        stretch = Signal(22)
        heartbeat = Signal(27)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        with m.If(core.pcie_activity):
            m.d.sync += stretch.eq(-1)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        m.d.comb += [
            leds[0].o.eq(core.pcie_link_up),
            leds[1].o.eq(stretch != 0),
            leds[2].o.eq(heartbeat[-1]),
            leds[3].o.eq(perst.i),
        ]
        return m
