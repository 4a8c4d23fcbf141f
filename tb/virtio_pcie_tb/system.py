# SPDX-License-Identifier: BSD-2-Clause
"""The whole device in simulation: the RTL top, a root complex, the device's outside world.

::

    host model ─► RootComplex ── DutPcieDevice ══ TLP streams ══ VirtioPcieDevice
    (virtio_pcie_tb.host)        (bridge: latency,             │ medium ── AxiRam (DiskImage)
                                  reorder, RCB split)          └ mac_tx / mac_rx ── peer

:func:`design_params` makes the parameters of a :class:`~virtio_pcie.top.VirtioPcieDevice` for
a test, a benchmark, the demo or the fuzzer; :class:`SystemTB` is what a cocotb test creates
first: clock, reset, root complex, bridge, and the device's back-end models (a disk image on the
blk medium; for net, :class:`~.models.mac_port.MacPort` in :attr:`SystemTB.mac`: cocotbext-axi
drivers on ``mac_rx`` / ``mac_tx`` and the ``link_up`` input, optionally answering as a peer).
:meth:`SystemTB.bind` runs Linux's probe path and returns the bound driver. Shared by the
system tests, ``virtio-pcie demo``, ``bench`` and ``fuzz``.
"""

import logging

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from .harness import dut_params

__all__ = ["CLOCK_NS", "design_params", "SystemTB", "build_system"]

CLOCK_NS = 4          # 250 MHz

#: Default disk size of system tests: 32 MiB.
DEFAULT_SECTORS = 65536


def design_params(device="blk", data_width=128, *, transitional=False, queues=1, **extra):
    """JSON-able parameters of a :class:`~virtio_pcie.top.VirtioPcieDevice` for simulation."""
    params = {"device": device, "data_width": data_width, "transitional": transitional,
              "queues": queues}
    if device == "blk":
        params["capacity"] = extra.pop("capacity", DEFAULT_SECTORS)
    params.update(extra)
    return params


def build_system(params, *, name=None, **kwargs):
    """Build (once) the simulation of a :class:`~virtio_pcie.top.VirtioPcieDevice`."""
    from virtio_pcie.top import VirtioPcieDevice
    from .harness import build
    if name is None:
        name = f"system_{params['device']}{'_legacy' if params.get('transitional') else ''}" \
               f"_{params['data_width']}"
    return build(VirtioPcieDevice, params, name=name, debug_aliases=False, **kwargs)


class SystemTB:
    """Root complex, bridge and device back-end models around the simulated top.

    Parameters
    ----------
    dut : the cocotb top-level handle.
    image : :class:`~.models.disk_image.DiskImage` or None
        blk: the medium's contents (a fresh zeroed disk of the design's capacity by default).
    bridge_options : dict
        Keyword arguments of :class:`~.models.pcie_bridge.DutPcieDevice` (latency, reorder,
        RCB splitting, error hooks).
    """

    def __init__(self, dut, *, image=None, bridge_options=None, seed=0):
        from cocotbext.pcie.core import RootComplex

        from .models.pcie_bridge import DutPcieDevice
        self.dut = dut
        self.params = dut_params()
        self.device = self.params.get("device", "blk")
        self.data_width = self.params["data_width"]
        self.log = logging.getLogger("cocotb.system")
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.rc = RootComplex()
        self.bridge = DutPcieDevice(dut, dut.clk, dut.rst, data_width=self.data_width,
                                    seed=seed, **(bridge_options or {}))
        self.rc.make_port().connect(self.bridge)
        self.image = None
        self.medium = None
        self.mac = None
        if self.device == "blk":
            from .models.disk_image import DiskImage, attach_axi_ram
            self.image = image or DiskImage(sectors=self.params["capacity"])
            self.medium = attach_axi_ram(dut, "medium", dut.clk, dut.rst, self.image)
        elif self.device == "net":
            from .models.mac_port import MacPort
            self.mac = MacPort(dut, dut.clk, dut.rst)
        self.pci = None

    async def reset(self, cycles=8):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def enumerate(self):
        """Enumerate the bus and return the host model's :class:`~.host.PciFunction`."""
        from virtio_pcie.spec.virtio import VIRTIO_PCI_VENDOR_ID

        from .host import BridgeIntxLine, PciFunction, find_pci_functions
        await self.rc.enumerate()
        found = find_pci_functions(self.rc, vendor=VIRTIO_PCI_VENDOR_ID)
        assert len(found) == 1, f"expected one virtio function, found {found}"
        self.pci = await PciFunction.create(self.rc, found[0],
                                            intx=BridgeIntxLine(self.bridge))
        return self.pci

    async def bind(self, driver, *, profile="linux-6.12", force_legacy=False, memory=None,
                   transport_options=None):
        """Enumerate (if not yet) and bind ``driver`` the way Linux does; returns the
        :class:`~.host.VirtioDevice`."""
        from .host import HostMemory, bind_driver
        if self.pci is None:
            await self.enumerate()
        self.memory = memory or HostMemory(self.rc)
        self.vdev = await bind_driver(self.pci, driver, memory=self.memory, profile=profile,
                                      force_legacy=force_legacy,
                                      transport_options=transport_options)
        return self.vdev

    def counters(self):
        """The RTL's virtqueue and DMA counters, as a dict of ints."""
        from amaranth.lib import data

        from virtio_pcie.top import VirtioPcieDevice
        from .models.bitfields import BitFields
        layout = data.Layout.cast(VirtioPcieDevice.counters_layout())
        return BitFields(layout).decode(int(self.dut.counters.value))

    def net_stats(self):
        """net: the device's frame and drop counters (``net_stats``), as a dict of ints."""
        from virtio_pcie.devices.net_interface import NET_COUNTERS
        return {name: int(getattr(self.dut, f"net_stats__{name}").value)
                for name in NET_COUNTERS}

    def check_bridge(self):
        """Fail if the bridge saw malformed TLPs from the RTL."""
        errors = self.bridge.all_errors
        assert not errors, f"the bridge reported: {errors[:5]}"

