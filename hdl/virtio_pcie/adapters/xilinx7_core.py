# SPDX-License-Identifier: BSD-2-Clause
"""The Xilinx 7-series Integrated Block for PCI Express (``pcie_7x``), stated as data.

Everything the adapter, its cocotb model, the board build plans and the generated documentation
need to know about the hard IP's user interface is here, once. Sources: Xilinx PG054 ("7 Series
FPGAs Integrated Block for PCI Express", v3.3 of the core); the port list and ``CONFIG.*`` names
of a Vivado-generated ``pcie_7x`` 3.3 IP (as published in ufrisk/pcileech-fpga,
``acorn_ft2232h/ip/pcie_7x_0.xci``); the wrapper parameters that pcileech-fpga issue #159 edits
(``EXT_CFG_CAP_PTR``, ``*_CAP_NEXTPTR``); LitePCIe ``litepcie/phy/s7pciephy.py`` (the
``create_ip`` flow, tuser bit positions, ``endianness = "big"``).

The AXI4-Stream data path
-------------------------
* TLPs are sequences of dwords. Each dword on ``tdata`` holds the value as the PCIe Base
  specification draws it, bit 31 being the first bit on the wire: for header dwords that is the
  project's :data:`~virtio_pcie.spec.pcie.TlpHeader` convention; for payload dwords it means the
  byte at the lowest address is in bits [31:24] (LitePCIe calls the core "big endian"). The
  adapter byte-swaps payload dwords, so that inside the project bytes are in address order.
* Dword ``k`` of a beat is ``tdata[32*k+31:32*k]``; the first dword of a TLP is dword 0 of a
  beat, except on the 128-bit receive interface, where a TLP may start in dword 2 of a beat whose
  dwords 0-1 end the previous one (``is_sof``/``is_eof`` in ``m_axis_rx_tuser`` say where).
* ``tkeep`` is byte-granular but only whole dwords are ever valid; the 128-bit receive interface
  does not use ``tkeep`` or ``tlast``.

Configuration space
-------------------
The core implements the type-0 header and, at fixed offsets, the PM, MSI, PCI Express and MSI-X
capabilities (:data:`HARD_IP_CAPABILITIES`). With ``CONFIG.PCI_CFG_Space`` it forwards
configuration requests at and above dword ``CONFIG.PCI_CFG_Space_Addr`` (``EXT_CFG_CAP_PTR``;
0x2A..0x3F, i.e. byte 0xA8 and up) to the user as TLPs on the receive interface; the user
completes them on the transmit interface. The last capability of the core must point at the
first forwarded byte for software to find what is there (its ``*_CAP_NEXTPTR`` attribute, which
the build plan patches; see :mod:`virtio_pcie.boards.vivado`).
"""

from dataclasses import dataclass

from amaranth.lib import data

__all__ = ["DATA_WIDTHS", "RxTuser", "TxTuser", "SofEof", "HardIpCapability",
           "HARD_IP_CAPABILITIES", "EXT_CFG_CAP_PTR_MIN", "LINK_SPEEDS", "LINK_WIDTHS",
           "LinkConfig", "core_ports"]

#: AXI4-Stream widths of the core that the adapter supports (256 bits is not a 7-series width).
DATA_WIDTHS = (64, 128)

#: ``is_sof`` / ``is_eof`` fields of the 128-bit receive ``tuser`` (PG054, "Receive Interface").
SofEof = data.StructLayout({
    "offset":  4,   # byte offset in tdata of the first (sof) or last (eof) byte of the TLP
    "present": 1,
})

#: ``m_axis_rx_tuser[21:0]`` (PG054 Table "m_axis_rx_tuser").
RxTuser = data.StructLayout({
    "ecrc_err": 1,     # the TLP of this packet failed its ECRC check (on its last beat)
    "err_fwd":  1,     # poisoned TLP (the header's EP bit is set as well)
    "bar_hit":  8,     # bit n: BAR n (both bits of a 64-bit pair), bit 6: expansion ROM
    "is_sof":   SofEof,   # 128-bit interface only
    "_rsvd":    2,
    "is_eof":   SofEof,   # 128-bit interface only
})

#: ``s_axis_tx_tuser[3:0]`` (PG054 Table "s_axis_tx_tuser").
TxTuser = data.StructLayout({
    "ecrc_gen": 1,     # ask the core to append an ECRC
    "err_fwd":  1,     # poison the TLP
    "str":      1,     # streamed (cut-through) transmission
    "src_dsc":  1,     # discontinue: the core drops the TLP
})


@dataclass(frozen=True)
class HardIpCapability:
    """A capability the core implements at a fixed byte ``offset`` (``size`` bytes)."""
    name:   str
    cap_id: int
    offset: int
    size:   int


#: The core's legacy capabilities at their fixed places (``PM_BASE_PTR``, ``MSI_BASE_PTR``,
#: ``PCIE_BASE_PTR``, ``MSIX_BASE_PTR``); MSI-X ends at 0xA8, the first forwardable byte.
HARD_IP_CAPABILITIES = (
    HardIpCapability("pm",   0x01, 0x40, 8),
    HardIpCapability("msi",  0x05, 0x48, 24),
    HardIpCapability("pcie", 0x10, 0x60, 60),
    HardIpCapability("msix", 0x11, 0x9C, 12),
)

#: Lowest legal ``EXT_CFG_CAP_PTR`` (a dword number): byte 0xA8, just above the MSI-X capability.
EXT_CFG_CAP_PTR_MIN = 0x2A

#: Link speeds (GT/s as the CONFIG.Link_Speed string) and widths the 7-series core offers.
LINK_SPEEDS = {1: "2.5_GT/s", 2: "5.0_GT/s"}
LINK_WIDTHS = (1, 2, 4, 8)


@dataclass(frozen=True)
class LinkConfig:
    """A link configuration and the interface it needs (PG054, "Transaction Layer Interface":
    the user clock must carry the link's bandwidth on the chosen width; valid user clocks are
    62.5, 125 and 250 MHz; x8 at 5 GT/s needs the 128-bit interface at 250 MHz)."""
    lanes: int
    gen:   int

    def __post_init__(self):
        if self.lanes not in LINK_WIDTHS:
            raise ValueError(f"lanes must be one of {LINK_WIDTHS}, not {self.lanes!r}")
        if self.gen not in LINK_SPEEDS:
            raise ValueError(f"gen must be 1 or 2 (the 7-series core is Gen2 at most), not "
                             f"{self.gen!r}")

    @property
    def lane_gen(self):
        return self.lanes * self.gen

    @property
    def data_width(self):
        """64 bits up to x4 Gen1 / x2 Gen2, else 128 (the narrower width at a lower clock)."""
        return 64 if self.lane_gen <= 4 else 128

    @property
    def user_clock_mhz(self):
        # A Gen1 lane carries 2 Gb/s: 64 bits at 31.25 MHz; the clock scales with lanes x gen
        # (x4 Gen2: 64 bits at 250 MHz or 128 bits at 125 MHz). 125 MHz at least, as LitePCIe
        # does (62.5 MHz is legal but slows everything behind the core).
        per_unit = 31.25 if self.data_width == 64 else 15.625
        return max(125.0, per_unit * self.lane_gen)

    @property
    def link_speed(self):
        return LINK_SPEEDS[self.gen]

    @property
    def name(self):
        return f"x{self.lanes} Gen{self.gen}"


def core_ports(data_width, lanes):
    """The ports of a generated ``pcie_7x`` core (internal clocking, no shared logic outside),
    as ``{name: (direction, width)}`` with the core's directions ("i" into the core)."""
    if data_width not in DATA_WIDTHS:
        raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
    keep = data_width // 8
    return {
        # lanes, clock and reset
        "pci_exp_txp": ("o", lanes), "pci_exp_txn": ("o", lanes),
        "pci_exp_rxp": ("i", lanes), "pci_exp_rxn": ("i", lanes),
        "sys_clk": ("i", 1), "sys_rst_n": ("i", 1),
        "user_clk_out": ("o", 1), "user_reset_out": ("o", 1), "user_lnk_up": ("o", 1),
        "user_app_rdy": ("o", 1),
        # transmit
        "tx_buf_av": ("o", 6), "tx_cfg_req": ("o", 1), "tx_err_drop": ("o", 1),
        "tx_cfg_gnt": ("i", 1),
        "s_axis_tx_tready": ("o", 1), "s_axis_tx_tdata": ("i", data_width),
        "s_axis_tx_tkeep": ("i", keep), "s_axis_tx_tlast": ("i", 1),
        "s_axis_tx_tvalid": ("i", 1), "s_axis_tx_tuser": ("i", TxTuser.size),
        # receive
        "m_axis_rx_tdata": ("o", data_width), "m_axis_rx_tkeep": ("o", keep),
        "m_axis_rx_tlast": ("o", 1), "m_axis_rx_tvalid": ("o", 1),
        "m_axis_rx_tready": ("i", 1), "m_axis_rx_tuser": ("o", RxTuser.size),
        "rx_np_ok": ("i", 1), "rx_np_req": ("i", 1),
        # configuration status
        "cfg_status": ("o", 16), "cfg_command": ("o", 16), "cfg_dstatus": ("o", 16),
        "cfg_dcommand": ("o", 16), "cfg_lstatus": ("o", 16), "cfg_lcommand": ("o", 16),
        "cfg_dcommand2": ("o", 16), "cfg_pcie_link_state": ("o", 3),
        "cfg_pmcsr_pme_en": ("o", 1), "cfg_pmcsr_powerstate": ("o", 2),
        "cfg_pmcsr_pme_status": ("o", 1), "cfg_received_func_lvl_rst": ("o", 1),
        "cfg_bus_number": ("o", 8), "cfg_device_number": ("o", 5),
        "cfg_function_number": ("o", 3), "cfg_to_turnoff": ("o", 1),
        "cfg_vc_tcvc_map": ("o", 7),
        # configuration control
        "cfg_trn_pending": ("i", 1), "cfg_pm_halt_aspm_l0s": ("i", 1),
        "cfg_pm_halt_aspm_l1": ("i", 1), "cfg_pm_force_state_en": ("i", 1),
        "cfg_pm_force_state": ("i", 2), "cfg_dsn": ("i", 64), "cfg_turnoff_ok": ("i", 1),
        "cfg_pm_wake": ("i", 1), "cfg_pm_send_pme_to": ("i", 1),
        "cfg_ds_bus_number": ("i", 8), "cfg_ds_device_number": ("i", 5),
        "cfg_ds_function_number": ("i", 3),
        # interrupts
        "cfg_interrupt": ("i", 1), "cfg_interrupt_rdy": ("o", 1),
        "cfg_interrupt_assert": ("i", 1), "cfg_interrupt_di": ("i", 8),
        "cfg_interrupt_do": ("o", 8), "cfg_interrupt_mmenable": ("o", 3),
        "cfg_interrupt_msienable": ("o", 1), "cfg_interrupt_msixenable": ("o", 1),
        "cfg_interrupt_msixfm": ("o", 1), "cfg_interrupt_stat": ("i", 1),
        "cfg_pciecap_interrupt_msgnum": ("i", 5),
        # configuration management (unused: tied off)
        "cfg_mgmt_do": ("o", 32), "cfg_mgmt_rd_wr_done": ("o", 1),
        "cfg_mgmt_di": ("i", 32), "cfg_mgmt_byte_en": ("i", 4), "cfg_mgmt_dwaddr": ("i", 10),
        "cfg_mgmt_wr_en": ("i", 1), "cfg_mgmt_rd_en": ("i", 1),
        "cfg_mgmt_wr_readonly": ("i", 1), "cfg_mgmt_wr_rw1c_as_rw": ("i", 1),
        # physical layer
        "pl_directed_link_change": ("i", 2), "pl_directed_link_width": ("i", 2),
        "pl_directed_link_speed": ("i", 1), "pl_directed_link_auton": ("i", 1),
        "pl_upstream_prefer_deemph": ("i", 1), "pl_sel_lnk_rate": ("o", 1),
        "pl_sel_lnk_width": ("o", 2), "pl_ltssm_state": ("o", 6),
        "pl_lane_reversal_mode": ("o", 2), "pl_phy_lnk_up": ("o", 1),
        "pl_tx_pm_state": ("o", 3), "pl_rx_pm_state": ("o", 2), "pl_link_upcfg_cap": ("o", 1),
        "pl_link_gen2_cap": ("o", 1), "pl_link_partner_gen2_supported": ("o", 1),
        "pl_initial_link_width": ("o", 3), "pl_directed_change_done": ("o", 1),
        "pl_received_hot_rst": ("o", 1), "pl_transmit_hot_rst": ("i", 1),
        "pl_downstream_deemph_source": ("i", 1),
        # DRP (unused: tied off)
        "pcie_drp_clk": ("i", 1), "pcie_drp_en": ("i", 1), "pcie_drp_we": ("i", 1),
        "pcie_drp_addr": ("i", 9), "pcie_drp_di": ("i", 16), "pcie_drp_rdy": ("o", 1),
        "pcie_drp_do": ("o", 16),
    }
