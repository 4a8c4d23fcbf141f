# SPDX-License-Identifier: BSD-2-Clause
"""The host model's probe rejects malformed virtio-pci layouts exactly as Linux does
(virtio-checklist §3.1, §6 item 1).

::

    RootComplex ─┬─ DutPcieDevice ══ MinimalEndpoint (RTL, ID 0x10FF: not virtio)
                 ├─ PyVirtioFunction (case 1: common offset 2)
                 ├─ PyVirtioFunction (case 2: common length 55)
                 └─ ...               one root port per case, enumerated once

Every case is a Python device whose capabilities lie in one way while its registers stay
where they are; the expected outcome is Linux's: the errno ``virtio_pci_probe()`` (or the
driver) returns and the kernel log line it prints. Layouts that are valid but unusual (a
transitional device without COMMON falls back to the legacy interface) must still work.
"""

import logging
from dataclasses import dataclass, field, replace

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer, with_timeout

from cocotbext.pcie.core import Device, RootComplex

from virtio_pcie.spec.virtio import (
    DeviceStatus, VirtioF, VirtioPciCapType as T, VIRTIO_PCI_VENDOR_ID, feature_mask,
)
from virtio_pcie_tb import harness
from virtio_pcie_tb.designs.minimal_endpoint import MinimalEndpoint
from virtio_pcie_tb.host import (
    BridgeIntxLine, HostMemory, LinuxBug, PciFunction, ProbeError, VirtioBlkDriver,
    VirtioNetDriver, bind_driver, find_pci_functions,
)
from virtio_pcie_tb.models.pcie_bridge import DutPcieDevice
from virtio_pcie_tb.models.py_virtio import (
    BarSpec, NetBackend, RamDisk, py_virtio_function,
)

CLOCK_NS = 4


@dataclass
class Case:
    """One malformed (or unusual) device and the outcome Linux gives it."""
    name:     str
    layout:   object = None               # callable(layout) -> layout
    backend:  str = "blk"
    fn_args:  dict = field(default_factory=dict)
    setup:    object = None               # callable(fn)
    errno:    str = None                  # expected ProbeError errno; None = probe succeeds
    message:  str = ""                    # expected in the error (and dmesg when logged)
    bug:      bool = False                # a BUG_ON in Linux
    legacy:   bool = False                # expected to bind through the legacy interface


def _cap(cfg_type, **changes):
    return lambda layout: layout.with_cap(cfg_type, **changes)


def _upper_half_of_64bit(layout):
    """BAR0 is 64-bit; the COMMON cap names BAR1 (its upper half, which has no resource)."""
    layout = replace(layout, bars=[BarSpec(0, 0x4000, "mem64")] + layout.bars[1:])
    return layout.with_cap(T.COMMON_CFG, bar=1)


CASES = [
    Case("common offset not aligned", _cap(T.COMMON_CFG, offset=2),
         errno="EINVAL", message="virtio_pci: offset 2 not aligned to 4"),
    Case("common length 55", _cap(T.COMMON_CFG, length=55),
         errno="EINVAL", message="virtio_pci: bad capability len 55 (>=56 expected)"),
    Case("common bar 6 (reserved): skipped", _cap(T.COMMON_CFG, bar=6),
         errno="ENODEV", message="virtio_pci: leaving for legacy driver"),
    Case("common on an unimplemented BAR: skipped", _cap(T.COMMON_CFG, bar=3),
         errno="ENODEV", message="virtio_pci: leaving for legacy driver"),
    Case("common on the upper half of a 64-bit BAR: skipped", _upper_half_of_64bit,
         errno="ENODEV", message="virtio_pci: leaving for legacy driver"),
    Case("common beyond the end of the BAR", _cap(T.COMMON_CFG, offset=0x3FF0),
         errno="EINVAL", message="virtio_pci: map virtio 56@16368 out of range on bar 0 "
                                 "length 16384"),
    Case("ISR missing", lambda lay: lay.without_cap(T.ISR_CFG),
         errno="EINVAL", message="virtio_pci: missing capabilities"),
    Case("ISR bar 6 (reserved): missing", _cap(T.ISR_CFG, bar=6),
         errno="EINVAL", message="virtio_pci: missing capabilities"),
    Case("NOTIFY missing", lambda lay: lay.without_cap(T.NOTIFY_CFG),
         errno="EINVAL", message="virtio_pci: missing capabilities"),
    Case("ISR length 0", _cap(T.ISR_CFG, length=0),
         errno="EINVAL", message="virtio_pci: bad capability len 0 (>0 expected)"),
    Case("NOTIFY offset odd", _cap(T.NOTIFY_CFG, offset=0x3001),
         errno="EINVAL", message="virtio_pci: offset 12289 not aligned to 2"),
    Case("DEVICE offset not aligned", _cap(T.DEVICE_CFG, offset=0x2002),
         errno="EINVAL", message="virtio_pci: offset 8194 not aligned to 4"),
    Case("NOTIFY too short for queue 1", _cap(T.NOTIFY_CFG, length=2), backend="net",
         errno="ENOMEM", message="bad notification offset 1 (x 4) for queue 1 > 2"),
    Case("DEVICE shorter than the capacity field", _cap(T.DEVICE_CFG, length=4), bug=True,
         message="BUG_ON(offset + len > device_len)"),
    Case("RING_RESET with a 58-byte common structure", _cap(T.COMMON_CFG, length=0x3A),
         setup=lambda fn: setattr(fn, "offered", fn.offered | feature_mask(VirtioF.RING_RESET)),
         errno="EINVAL",
         message="virtio: common cfg size(58) does not match the feature VIRTIO_F_RING_RESET"),
    Case("no VIRTIO_F_VERSION_1 on the modern interface",
         setup=lambda fn: setattr(fn, "offered", fn.offered & ~feature_mask(VirtioF.VERSION_1)),
         errno="EINVAL", message="device uses modern interface but does not have "
                                 "VIRTIO_F_VERSION_1"),
    Case("device refuses the features",
         setup=lambda fn: setattr(fn, "refuse_features", lambda f: True),
         errno="ENODEV", message="virtio: device refuses features: 3"),
    Case("transitional device without COMMON: legacy driver takes it",
         lambda lay: lay.without_cap(T.COMMON_CFG), fn_args={"interface": "transitional"},
         legacy=True),
    Case("legacy I/O BAR but revision 1: nobody takes it",
         lambda lay: lay.without_cap(T.COMMON_CFG),
         fn_args={"interface": "transitional", "revision": 1},
         errno="ENODEV", message="virtio_pci: leaving for legacy driver"),
]


def _backend(case):
    return RamDisk(sectors=256) if case.backend == "blk" else NetBackend()


def _build(case):
    args = dict(case.fn_args)
    interface = args.pop("interface", "modern")
    fn = py_virtio_function(_backend(case), interface=interface, **args)
    if case.layout is not None:
        # the same device, with the capabilities transformed
        fn = py_virtio_function(_backend(case), interface=interface,
                                layout=case.layout(fn.layout), **args)
    if case.setup is not None:
        case.setup(fn)
    return fn


def _logged(err, pdev, message):
    return message in str(err) or any(message in line for _, line in pdev.dmesg)


@cocotb.test()
async def run_malformed_layouts(dut):
    logging.getLogger("cocotb.pcie").setLevel(logging.ERROR)
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    rc = RootComplex()
    bridge = DutPcieDevice(dut, dut.clk, dut.rst, data_width=harness.dut_params()["data_width"])
    rc.make_port().connect(bridge)
    fns = [_build(case) for case in CASES]
    for fn in fns:
        rc.make_port().connect(Device(fn))
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    await with_timeout(rc.enumerate(), 2, "ms")
    memory = HostMemory(rc)

    # The RTL bystander has the virtio vendor ID but device ID 0x10FF: vp_modern_probe leaves
    # it (-ENODEV, nothing logged) and so does the legacy probe.
    (rtl,) = [d for d in find_pci_functions(rc, vendor=VIRTIO_PCI_VENDOR_ID)
              if d.device_id == 0x10FF]
    pdev = await PciFunction.create(rc, rtl, intx=BridgeIntxLine(bridge))
    with pytest.raises(ProbeError) as e:
        await bind_driver(pdev, VirtioBlkDriver(), memory=memory)
    assert e.value.errno == "ENODEV" and not pdev.dmesg

    failures = []
    for case, fn in zip(CASES, fns, strict=True):
        pdev = await PciFunction.create(rc, rc.find_device(fn.pcie_id), intx=fn.intx)
        driver = VirtioBlkDriver(scan=False) if case.backend == "blk" else VirtioNetDriver()
        try:
            vdev = await bind_driver(pdev, driver, memory=memory)
        except ProbeError as err:
            if case.errno is None or err.errno != case.errno or \
                    not _logged(err, pdev, case.message):
                failures.append(f"{case.name}: got {err!r}, dmesg {pdev.dmesg}")
            continue
        except LinuxBug as err:
            if not case.bug or case.message not in str(err):
                failures.append(f"{case.name}: got {err!r}")
            continue
        if case.errno is not None or case.bug:
            failures.append(f"{case.name}: the probe succeeded")
            continue
        if vdev.transport.is_legacy != case.legacy:
            failures.append(f"{case.name}: legacy={vdev.transport.is_legacy}")
        data = bytes(range(256)) * 2
        await driver.write(1, data)
        if await driver.read(1, 1) != data:
            failures.append(f"{case.name}: data mismatch")
    for case, fn in zip(CASES, fns, strict=True):
        # a probe that failed after the device was touched leaves FAILED set (virtio core)
        if case.errno in ("ENOMEM",) or "refuses" in case.message:
            await Timer(1, "us")
            if not fn.status & DeviceStatus.FAILED.value:
                failures.append(f"{case.name}: FAILED not set ({fn.status:#x})")
    assert not failures, "\n".join(failures)


@pytest.mark.sim
def test_host_model_malformed_caps(simulate):
    design = harness.build(MinimalEndpoint, {"data_width": 64}, name="minimal_endpoint")
    simulate(design, "test_host_model_caps", testcase=["run_malformed_layouts"])
