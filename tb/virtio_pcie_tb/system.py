# SPDX-License-Identifier: BSD-2-Clause
"""The whole device in simulation: the RTL top, a root complex, the device's outside world.

::

    host model ─► RootComplex ── DutPcieDevice ══ TLP streams ══ VirtioPcieDevice
    (virtio_pcie_tb.host)        (bridge: latency,             │ medium ── AxiRam (DiskImage)
                                  reorder, RCB split)          └ mac_tx / mac_rx ── peer

    or, behind a hard IP (``build_system(..., interface="xilinx7")``):

    host model ─► RootComplex ── Xilinx7PcieModel ══ pcie_7x ports ══ Xilinx7VirtioDevice
                                 (header, BARs, PM/PCIe/MSI-X      (adapter + VirtioPcieDevice
                                  caps; forwards ≥ 0xA8)            in "ext" mode)

:func:`design_params` makes the parameters of a :class:`~virtio_pcie.top.VirtioPcieDevice` for
a test, a benchmark, the demo or the fuzzer; :class:`SystemTB` is what a cocotb test creates
first: clock, reset, root complex, bridge (or, for a design built behind the 7-series adapter,
the model of the ``pcie_7x`` hard IP, configured from the design's hard-IP plan), and the
device's back-end models (a disk image on the blk medium; for net,
:class:`~.models.mac_port.MacPort` in :attr:`SystemTB.mac`: cocotbext-axi drivers on ``mac_rx``
/ ``mac_tx`` and the ``link_up`` input, optionally answering as a peer). :meth:`SystemTB.bind`
runs Linux's probe path and returns the bound driver. Shared by the system tests,
``virtio-pcie demo``, ``bench`` and ``fuzz``.
"""

import logging

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from .harness import dut_description, dut_params

__all__ = ["CLOCK_NS", "INTERFACES", "MAIN_DESIGNS", "design_params", "SystemTB",
           "build_system"]

#: How the design meets the root complex: its own TLP streams, or the 7-series hard IP's ports.
INTERFACES = ("generic", "xilinx7")

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


#: The project's main build of each device: what ``virtio-pcie demo`` runs and the system tests
#: share (one Verilator build serves both). blk: 128-bit, modern, four request queues (MQ), the
#: size taken from the disk image on the ``capacity`` input (so it can change at run time), a
#: 48-bit medium address (capacities beyond 2^32 sectors, as a DDR-backed disk may have).
MAIN_DESIGNS = {
    "blk": design_params("blk", 128, queues=4, capacity=None,
                         blk_options={"medium_addr_width": 48}),
}


def build_system(params, *, name=None, interface="generic", ports_only=True, **kwargs):
    """Build (once) the simulation of a :class:`~virtio_pcie.top.VirtioPcieDevice`.

    Only the top level's ports are visible to cocotb (``ports_only``; everything the system
    testbench touches is a port): the build is faster and the simulation about 2.5 times faster
    than with every internal signal public. Waveforms still show everything.

    With ``interface="xilinx7"`` the device is built in "ext" configuration mode behind the
    7-series adapter (:class:`~virtio_pcie.boards.xilinx7_device.Xilinx7VirtioDevice`, as the
    board builds have it), and :class:`SystemTB` puts the ``pcie_7x`` model in front of it.
    """
    from .harness import build
    if interface not in INTERFACES:
        raise ValueError(f"interface must be one of {INTERFACES}, not {interface!r}")
    prefix = "system" if interface == "generic" else f"system_{interface}"
    if name is None:
        name = f"{prefix}_{params['device']}{'_legacy' if params.get('transitional') else ''}" \
               f"_{params['data_width']}"
    if interface == "xilinx7":
        from virtio_pcie.boards.xilinx7_device import Xilinx7VirtioDevice
        params = dict(params)
        params["legacy"] = params.pop("transitional", False)
        return build(Xilinx7VirtioDevice, params, name=name, debug_aliases=False,
                     ports_only=ports_only, describe=_describe_xilinx7, **kwargs)
    from virtio_pcie.top import VirtioPcieDevice
    return build(VirtioPcieDevice, params, name=name, debug_aliases=False,
                 ports_only=ports_only, **kwargs)


def _describe_xilinx7(component):
    """What the testbench needs to model the hard IP in front of a Xilinx7VirtioDevice, and
    where the core placed its capabilities and windows."""
    from virtio_pcie.boards.generate import register_map
    registers = register_map(component.layout)
    return {"interface": "xilinx7", "hard_ip_plan": component.hard_ip_plan(),
            "capabilities": registers["capabilities"], "windows": registers["windows"]}


class SystemTB:
    """Root complex, bridge and device back-end models around the simulated top.

    Parameters
    ----------
    dut : the cocotb top-level handle.
    image : :class:`~.models.disk_image.DiskImage` or None
        blk: the medium's contents (a fresh zeroed disk of the design's capacity by default).
    bridge_options : dict
        Keyword arguments of :class:`~.models.pcie_bridge.DutPcieDevice` (latency, reorder,
        RCB splitting, error hooks); behind a hard IP, those of
        :class:`~.models.xilinx7_pcie.Xilinx7PcieModel` (the same host options, and the core's
        own: ``straddle``, ``tx_buf_av``, ...).
    quiet : bool
        Keep cocotbext-pcie's per-access INFO logging off (warnings and errors still show).
    mac : "cocotbext" or "lean"
        net: the MAC side's model, :class:`~.models.mac_port.MacPort` (cocotbext-axi, the
        default) or :class:`~.models.axis_frames.LeanMacPort` (less Python per beat, for
        benchmarks at line rate).

    A blk design built with ``capacity=None`` gets the image's size on its ``capacity`` input
    (:meth:`set_capacity` changes it, as a resized backing store would).

    Members
    -------
    interface : "generic" or "xilinx7"
        How the design was built (:func:`build_system`).
    bridge
        The :class:`~.models.pcie_bridge.DutPcieDevice`, or the
        :class:`~.models.xilinx7_pcie.Xilinx7PcieModel` of a design behind the 7-series adapter.
    """

    def __init__(self, dut, *, image=None, bridge_options=None, seed=0, quiet=True,
                 mac="cocotbext"):
        from cocotbext.pcie.core import RootComplex

        self.dut = dut
        self.params = dut_params()
        self.device = self.params.get("device", "blk")
        self.data_width = self.params["data_width"]
        self.log = logging.getLogger("cocotb.system")
        description = dut_description() or {}
        self.interface = description.get("interface", "generic")
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.rc = RootComplex()
        if self.interface == "xilinx7":
            from .models.xilinx7_pcie import Xilinx7PcieModel
            self.bridge = Xilinx7PcieModel.from_plan(
                dut, dut.clk, dut.rst, data_width=self.data_width,
                plan=description["hard_ip_plan"], seed=seed, **(bridge_options or {}))
        else:
            from .models.pcie_bridge import DutPcieDevice
            self.bridge = DutPcieDevice(dut, dut.clk, dut.rst, data_width=self.data_width,
                                        seed=seed, **(bridge_options or {}))
        self.rc.make_port().connect(self.bridge)
        self.image = None
        self.medium = None
        self.mac = None
        if quiet:
            # cocotbext-pcie logs every configuration access at INFO: slow and noisy.
            logging.getLogger("cocotb.pcie").setLevel(logging.WARNING)
        if self.device == "blk":
            from .models.disk_image import DiskImage, attach_axi_ram
            built = self.params["capacity"]
            self.image = image or DiskImage(sectors=built or DEFAULT_SECTORS)
            self.medium = attach_axi_ram(dut, "medium", dut.clk, dut.rst, self.image)
            if built is None:
                # A design without a fixed size takes it from the disk image it is given.
                self.set_capacity(self.image.sectors)
        elif self.device == "net":
            if mac == "lean":
                from .models.axis_frames import LeanMacPort
                self.mac = LeanMacPort(dut, dut.clk, dut.rst, data_width=self.data_width)
            elif mac == "cocotbext":
                from .models.mac_port import MacPort
                self.mac = MacPort(dut, dut.clk, dut.rst)
            else:
                raise ValueError(f"mac must be 'cocotbext' or 'lean', not {mac!r}")
        self.pci = None

    @property
    def capacity(self):
        """blk: the disk size in sectors the device shows (its parameter or its input)."""
        if self.params.get("capacity") is not None:
            return self.params["capacity"]
        return int(self.dut.capacity.value)

    def set_capacity(self, sectors):
        """blk, built with ``capacity=None``: drive the ``capacity`` input."""
        if self.params.get("capacity") is not None:
            raise ValueError(f"this design has a fixed capacity ({self.params['capacity']} "
                             f"sectors); build it with capacity=None to change it")
        self.dut.capacity.value = sectors

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
        """Fail if the bridge (or the hard-IP model) saw malformed TLPs from the RTL."""
        errors = self.bridge.all_errors
        assert not errors, f"the bridge reported: {errors[:5]}"

