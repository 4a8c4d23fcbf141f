# SPDX-License-Identifier: BSD-2-Clause
"""The host driver model against the pure-Python virtio-pci device, on one root complex.

::

    RootComplex ─┬─ root port ── DutPcieDevice ══ MinimalEndpoint (RTL: clock, and a bystander
                 │                                 that virtio_pci must not take: ID 0x10FF)
                 └─ root port ── PyVirtioFunction (RamDisk / NetBackend, Python)
                                       ▲
    host model: PciFunction → VirtioPciModern/Legacy → Virtqueue → VirtioBlkDriver/NetDriver

Each test probes a fresh device the way Linux does and moves data: blk and net, modern, legacy
and transitional interfaces, the three interrupt modes (MSI-X per queue, MSI-X shared, INTx)
and both profiles (Linux 6.12: 64 feature bits; Linux 7: 128 feature bits, SHARED_SLOW step).
"""

import logging
import random

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer, with_timeout

from cocotbext.pcie.core import Device, RootComplex

from virtio_pcie.spec.virtio import (
    DeviceStatus, VirtioBlkReqType, VirtioBlkStatus, VirtioF, VirtioPciCommonCfg,
    VIRTIO_PCI_VENDOR_ID,
)
from virtio_pcie_tb import harness
from virtio_pcie_tb.codec import codec
from virtio_pcie_tb.designs.minimal_endpoint import MinimalEndpoint
from virtio_pcie_tb.host import (
    BlkRequest, HostMemory, IrqMode, LinuxError, PciFunction, ProbeError, VirtioBlkDriver,
    VirtioNetDriver, bind_driver, find_pci_functions,
)
from virtio_pcie_tb.models.pcie_bridge import DutPcieDevice
from virtio_pcie_tb.models.py_virtio import NetBackend, RamDisk, py_virtio_function

CLOCK_NS = 4
S = DeviceStatus
LINUX_STATUS_SEQUENCE = [0, S.ACKNOWLEDGE.value, (S.ACKNOWLEDGE | S.DRIVER).value,
                         (S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK).value,
                         (S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK).value]
_COMMON = codec(VirtioPciCommonCfg)


class HostTB:
    """Clock and reset for the RTL bystander, a root complex, and Python devices on it."""

    def __init__(self, dut):
        self.dut = dut
        # cocotbext-pcie logs every TLP at INFO; keep the log readable (and the run fast)
        logging.getLogger("cocotb.pcie").setLevel(logging.ERROR)
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.rc = RootComplex()
        self.bridge = DutPcieDevice(dut, dut.clk, dut.rst,
                                    data_width=harness.dut_params()["data_width"])
        self.rc.make_port().connect(self.bridge)
        self.memory = None

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def attach(self, fn):
        self.rc.make_port().connect(Device(fn))
        return fn

    async def start(self, *fns):
        await self.reset()
        for fn in fns:
            self.attach(fn)
        await with_timeout(self.rc.enumerate(), 1, "ms")
        self.memory = HostMemory(self.rc)

    async def pci_function(self, fn):
        dev = self.rc.find_device(fn.pcie_id)
        assert dev is not None, f"{fn.pcie_id} not enumerated"
        return await PciFunction.create(self.rc, dev, intx=fn.intx)


async def blk_setup(dut, *, interface="modern", backend=None, fn_args=None):
    tb = HostTB(dut)
    backend = backend or RamDisk(sectors=2048)
    fn = py_virtio_function(backend, interface=interface, **(fn_args or {}))
    await tb.start(fn)
    pdev = await tb.pci_function(fn)
    return tb, fn, pdev


async def check_blk_io(blk, backend, rng, *, sectors=(0, 7, 100), count=8):
    for sector in sectors:
        data = rng.randbytes(count * 512)
        await blk.write(sector, data)
        assert backend.data[sector * 512:(sector + count) * 512] == data
        assert await blk.read(sector, count) == data


# -- virtio-blk ----------------------------------------------------------------------------------

@cocotb.test()
@cocotb.parametrize(profile=["linux-6.12", "linux-7"])
async def run_blk_modern(dut, profile):
    """Probe, negotiate and move data as Linux: status 0 → 1 → 3 → 0xB → 0xF, MSI-X per queue,
    every request type of virtio_blk.c."""
    tb, fn, pdev = await blk_setup(dut)
    pdev.trace = []
    blk = VirtioBlkDriver()
    vdev = await bind_driver(pdev, blk, memory=tb.memory, profile=profile)
    assert vdev.status_trace == LINUX_STATUS_SEQUENCE
    assert vdev.transport.irq_mode == IrqMode.MSIX_EACH
    # feature windows read and written: 0,1 (6.12) or 0..3 (7)
    common_bar = fn.layout.regions["common"].bar
    selects = [e[-1] for e in pdev.trace if e[:3] == ("mmio_write", common_bar,
                                                      _COMMON.offset("device_feature_select"))]
    expected = [0, 1] if profile == "linux-6.12" else [0, 1, 2, 3]
    assert selects == expected, selects
    assert vdev.features & (1 << VirtioF.VERSION_1)
    assert vdev.features & (1 << VirtioF.EVENT_IDX) and vdev.features & (1 << VirtioF.INDIRECT_DESC)
    assert fn.driver_features == vdev.features
    assert blk.capacity == 2048 and blk.serial == "py-virtio-blk"
    rng = random.Random(1)
    await check_blk_io(blk, fn.backend, rng)
    await blk.flush()
    await blk.discard([(16, 8)])
    fn.backend.data[32 * 512:40 * 512] = b"\xAA" * 4096
    await blk.write_zeroes([(32, 8)])
    assert await blk.read(32, 8) == bytes(4096)
    # out of range: IOERR as Linux sees it
    req = await blk.submit(BlkRequest(VirtioBlkReqType.IN, 2047, in_length=1024))
    assert await with_timeout(req.wait(), 100, "us") == VirtioBlkStatus.IOERR.value
    vq = blk.queues[0].vq
    assert vq.stats.interrupts > 0 and vq.stats.kicks > 0
    assert not fn.errors, fn.errors
    assert pdev.msix_vectors[1].count == vq.stats.interrupts + vq.stats.spurious


# -- pytest launchers ---------------------------------------------------------------------------

def _design():
    return harness.build(MinimalEndpoint, {"data_width": 64}, name="minimal_endpoint")


@pytest.mark.sim
def test_host_model_blk(simulate):
    simulate(_design(), "test_host_model", testcase=["run_blk_modern"])
