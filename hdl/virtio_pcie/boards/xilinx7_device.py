# SPDX-License-Identifier: BSD-2-Clause
"""The virtio device core behind the Xilinx 7-series adapter: what sits next to a ``pcie_7x``.

::

    pcie_7x user side ──► Xilinx7PcieAdapter ── rx_req / rx_cpl ──►  VirtioPcieDevice
    (m_axis_rx_*, s_axis_tx_*,  │             ◄── tx_cpl / tx_req ──  (config_mode "ext",
     cfg_*, cfg_interrupt*)     └── cfg ────────── ext_cfg ────────►   virtio caps from 0xA8)
                                                                        │ medium / capacity (blk)
                                                                        │ mac_tx / mac_rx,
                                                                        │ link_up, loopback (net)
                                                                        └ counters

The board tops, ``virtio-pcie generate --interface xilinx7`` and the hard-IP system tests all use
this one component, so that what is simulated is what is built.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..adapters.xilinx7 import Xilinx7PcieAdapter, hard_ip_members
from .core import make_core

__all__ = ["Xilinx7VirtioDevice", "LINK_MEMBERS"]

#: Members of the core that the adapter drives or takes (not ports of this component).
LINK_MEMBERS = ("rx_req", "tx_cpl", "tx_req", "rx_cpl", "ext_cfg", "cfg_port")


class Xilinx7VirtioDevice(wiring.Component):
    """A :class:`~virtio_pcie.top.VirtioPcieDevice` ("ext" mode) behind a
    :class:`~virtio_pcie.adapters.xilinx7.Xilinx7PcieAdapter`.

    Parameters
    ----------
    data_width : int
        64 or 128: the ``pcie_7x`` interface width.
    **device_params
        :func:`~virtio_pcie.boards.core.core_params` arguments (``device``, ``legacy``,
        ``onchip_sectors``, and further ``VirtioPcieDevice`` parameters).

    Members
    -------
    m_axis_rx_*, s_axis_tx_*, tx_buf_av, tx_err_drop, tx_cfg_req, tx_cfg_gnt, rx_np_ok, rx_np_req,
    user_lnk_up, cfg_*
        The ``pcie_7x`` user-side ports of the same names, directions seen from this side
        (:func:`~virtio_pcie.adapters.xilinx7.hard_ip_members`): wire them one to one.
    medium, capacity, mac_tx, mac_rx, link_up, loopback, counters
        The device's own ports, as :class:`~virtio_pcie.top.VirtioPcieDevice` documents them
        (which exist depends on the device).
    pcie_link_up : Out(1)
        ``user_lnk_up``, for an LED.
    pcie_activity : Out(1)
        A TLP beat moved to or from the core in this cycle.
    pcie_tx_dropped : Out(1)
        The core discarded a TLP it judged malformed (``tx_err_drop``).
    """

    def __init__(self, *, data_width, **device_params):
        self._core = make_core(data_width=data_width, **device_params)
        self._adapter = Xilinx7PcieAdapter(data_width=data_width)
        self._width = data_width
        members = dict(hard_ip_members(data_width))
        for name, member in self._core.signature.members.items():
            if name not in LINK_MEMBERS:
                members[name] = member
        members.update({"pcie_link_up": Out(1), "pcie_activity": Out(1),
                        "pcie_tx_dropped": Out(1)})
        super().__init__(members)

    @property
    def layout(self):
        """The core's :class:`~virtio_pcie.function.layout.FunctionLayout`."""
        return self._core.layout

    @property
    def core(self):
        return self._core

    def hard_ip_plan(self):
        """How the ``pcie_7x`` IP must be configured for this core (IDs, BARs, MSI-X,
        configuration forwarding): ``FunctionLayout.hard_ip_plan()``."""
        return self._core.layout.hard_ip_plan()

    def elaborate(self, platform):
        m = Module()
        m.submodules.adapter = adapter = self._adapter
        m.submodules.core    = core    = self._core

        # --- the hard IP's side: its ports, one to one ---
        for name, member in hard_ip_members(self._width).items():
            if member.flow == In:
                m.d.comb += getattr(adapter, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(adapter, name))

        # --- adapter ↔ core: the four TLP streams and the configuration state ---
        connect(m, adapter=adapter.rx_req, core=core.rx_req)
        connect(m, adapter=adapter.rx_cpl, core=core.rx_cpl)
        connect(m, core=core.tx_cpl, adapter=adapter.tx_cpl)
        connect(m, core=core.tx_req, adapter=adapter.tx_req)
        m.d.comb += core.ext_cfg.eq(adapter.cfg)
        # The 7-series core forwards configuration accesses as TLPs on rx_req; the register
        # port (UltraScale cfg_ext) stays idle (its inputs are 0: no strobe).

        # --- the device's own ports, passed through ---
        for name, member in self.signature.members.items():
            if name in hard_ip_members(self._width) or name.startswith("pcie_"):
                continue
            if member.is_signature:
                if member.flow == Out:
                    connect(m, core=getattr(core, name), outside=flipped(getattr(self, name)))
                else:
                    connect(m, outside=flipped(getattr(self, name)), core=getattr(core, name))
            elif member.flow == Out:
                m.d.comb += getattr(self, name).eq(getattr(core, name))
            else:
                m.d.comb += getattr(core, name).eq(getattr(self, name))

        m.d.comb += [
            self.pcie_link_up.eq(adapter.link_up),
            self.pcie_activity.eq(adapter.activity),
            self.pcie_tx_dropped.eq(adapter.tx_dropped),
        ]
        return m
