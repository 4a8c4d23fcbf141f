# SPDX-License-Identifier: BSD-2-Clause
"""Shared test environment of tb/test_transport*.py: the DUT parameters and the TB class.

::

    RegisterBusInitiator ×5 ──► common/isr/device/notify/legacy ┌─────────────────┐
    (+ Linux driver models)                                      │ VirtioTransport │
                                   FakeQueueEngine ◄── queues ──►│  (TransportTop) │
                                 FakeDeviceBackend ◄─ device_config                 │
                                        MsixMonitor ◄── msix, intx ◄────────────────┘
                               FunctionConfigDriver ──► function_config
"""

from amaranth.hdl import Fragment
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from virtio_pcie.spec.virtio import (VirtioBlkConfig, VirtioBlkF, VirtioDeviceId, VirtioF,
                                     VirtioNetConfig, VirtioNetF, VirtioPciCommonCfg, byte_size,
                                     feature_mask)
from virtio_pcie.virtio.transport import VirtioTransport
from virtio_pcie_tb import harness
from virtio_pcie_tb.models.register_bus import LayoutWindow, RegisterBusInitiator
from virtio_pcie_tb.models.transport_peers import (CLOCK_NS, FakeDeviceBackend, FakeQueueEngine,
                                                   FunctionConfigDriver, MsixMonitor, cycles)
from virtio_pcie_tb.models.virtio_pci_driver import (LegacyVirtioPciDriver, ModernVirtioPciDriver,
                                                     MsixPlatform)

#: A virtio-net function with 64 queues, a doorbell page per queue and 8 MSI-X vectors (and
#: NOTIFICATION_DATA: 32-bit doorbells carrying the avail index).
NET_FEATURES = feature_mask(
    VirtioF.VERSION_1, VirtioF.RING_RESET, VirtioF.EVENT_IDX, VirtioF.INDIRECT_DESC,
    VirtioF.ACCESS_PLATFORM, VirtioF.ORDER_PLATFORM, VirtioF.NOTIFICATION_DATA,
    VirtioNetF.CSUM, VirtioNetF.GUEST_CSUM, VirtioNetF.HOST_TSO4, VirtioNetF.GUEST_TSO4,
    VirtioNetF.GUEST_ECN, VirtioNetF.CTRL_VQ, VirtioNetF.MQ, VirtioNetF.MAC, VirtioNetF.STATUS,
    VirtioNetF.MRG_RXBUF)
MODERN_PARAMS = {
    "queue_count": 64, "queue_size_max": 256, "device_type": int(VirtioDeviceId.NET),
    "device_features": NET_FEATURES, "device_config_size": byte_size(VirtioNetConfig),
    "msix_vectors": 8, "notify_off_multiplier": 4096, "reset_hold_cycles": 2000,
}

#: A transitional virtio-blk function: 2 queues, one doorbell, 3 MSI-X vectors.
BLK_FEATURES = feature_mask(
    VirtioF.ANY_LAYOUT, VirtioF.VERSION_1, VirtioF.INDIRECT_DESC, VirtioF.EVENT_IDX,
    VirtioBlkF.SEG_MAX, VirtioBlkF.BLK_SIZE, VirtioBlkF.FLUSH)
TRANSITIONAL_PARAMS = {
    "queue_count": 2, "queue_size_max": 128, "device_type": int(VirtioDeviceId.BLOCK),
    "device_features": BLK_FEATURES, "device_config_size": byte_size(VirtioBlkConfig),
    "msix_vectors": 3, "notify_off_multiplier": 0, "transitional": True,
    "reset_hold_cycles": 2000,
}


class TransportTB:
    """Clock, reset, bus initiators and fakes around one transport build."""

    def __init__(self, dut, *, drain_cycles=20, device_latency=1):
        self.dut = dut
        self.params = harness.dut_params()
        # Geometry for the driver models (elaborated, as Amaranth wants every component used).
        self.model = VirtioTransport(**self.params)
        Fragment.get(self.model, None)
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        clk = dut.clk
        self.clk = clk
        self.common_bus = RegisterBusInitiator(dut, "common", clk)
        self.common = LayoutWindow(self.common_bus, VirtioPciCommonCfg)
        self.isr = RegisterBusInitiator(dut, "isr", clk)
        self.device = RegisterBusInitiator(dut, "device", clk)
        self.notify = RegisterBusInitiator(dut, "notify", clk)
        self.legacy = (RegisterBusInitiator(dut, "legacy", clk) if self.model.transitional
                       else None)
        self.engine = FakeQueueEngine(dut, clk, self.model.queue_count,
                                      drain_cycles=drain_cycles)
        self.dev = FakeDeviceBackend(dut, clk, size=self.params["device_config_size"],
                                     latency=device_latency)
        self.dev.memory[:] = bytes((0x10 + i) & 0xFF for i in range(len(self.dev.memory)))
        self.msix = MsixMonitor(dut, clk)
        self.function = FunctionConfigDriver(dut, msix_enable=0)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.clk)
        # Forget what the fakes saw before the reset (a previous test's last transfers).
        self.engine.clear()
        self.engine.intx_changes.clear()
        self.msix.requests.clear()
        self.dev.regs.accesses.clear()

    @classmethod
    async def create(cls, dut, **kwargs):
        tb = cls(dut, **kwargs)
        await tb.reset()
        return tb

    def set_msix(self, enabled):
        self.function.set(msix_enable=int(enabled))

    def platform(self, **kwargs):
        return MsixPlatform(self.model.msix_vectors, self.set_msix, **kwargs)

    def modern_driver(self, *, platform=None, **kwargs):
        return ModernVirtioPciDriver(
            common=self.common, isr=self.isr, device=self.device, notify=self.notify,
            notify_off_multiplier=self.model.notify_off_multiplier,
            notify_length=self.model.notify_length, msix=platform or self.platform(), **kwargs)

    def legacy_driver(self, *, platform=None):
        return LegacyVirtioPciDriver(io=self.legacy, msix=platform or self.platform())

    async def cycles(self, n):
        await ClockCycles(self.clk, n)

    @staticmethod
    def now():
        return cycles()
