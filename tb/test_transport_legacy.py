# SPDX-License-Identifier: BSD-2-Clause
"""The virtio PCI transport in a transitional build: the legacy I/O interface (and the modern
one next to it).

::

    LegacyVirtioPciDriver ─► legacy (I/O BAR) ┐ ┌─────────────────┐ queues ◄─► FakeQueueEngine
    ModernVirtioPciDriver ─► common/isr/...   ├►│ VirtioTransport │ device_config ◄─► FakeDevice
                                              ┘ └─────────────────┘ msix/intx ─► MsixMonitor

Design: a transitional virtio-blk function with 2 queues, 3 MSI-X vectors and a single doorbell
(``transport_env.TRANSITIONAL_PARAMS``). The legacy tests replay Linux's ``virtio_pci_legacy``
(checklist §1.O) and name the rules of §1 they check.
"""

import itertools
import random

import cocotb
import pytest

from transport_env import BLK_FEATURES, TRANSITIONAL_PARAMS, TransportTB
from virtio_pcie.spec.virtio import (LEGACY_QUEUE_ADDR_SHIFT, LEGACY_VRING_ALIGN,
                                     VIRTIO_MSI_NO_VECTOR, DeviceStatus, VirtioF, VirtioIsr,
                                     VirtioPciLegacyHeader, VirtioPciLegacyMsix, byte_offset,
                                     byte_size, feature_mask, legacy_device_config_offset,
                                     legacy_vring_layout)
from virtio_pcie.virtio.legacy import legacy_ring_offsets
from virtio_pcie_tb import harness
from virtio_pcie_tb.designs.transport_top import TransportTop
from virtio_pcie_tb.models.virtio_pci_driver import QueueRequest

ACK, DRIVER, DRIVER_OK, FEATURES_OK = (
    DeviceStatus.ACKNOWLEDGE.value, DeviceStatus.DRIVER.value, DeviceStatus.DRIVER_OK.value,
    DeviceStatus.FEATURES_OK.value)
QUEUE_SIZE = TRANSITIONAL_PARAMS["queue_size_max"]
HEADER_BYTES = byte_size(VirtioPciLegacyHeader)


def reg(name):
    return byte_offset(VirtioPciLegacyHeader, name)


def vector_reg(name):
    return HEADER_BYTES + byte_offset(VirtioPciLegacyMsix, name)


def expected_config(queue, pfn, enable=1):
    desc, avail, used = legacy_vring_layout(pfn << LEGACY_QUEUE_ADDR_SHIFT, QUEUE_SIZE)
    return {"queue": queue, "size": QUEUE_SIZE, "desc": desc, "driver": avail, "device": used,
            "enable": enable}


async def legacy_probe(tb, *, table_size=None, queues=(0, 1)):
    drv = tb.legacy_driver()
    if table_size is not None:
        drv.msix.table_size = table_size
    await drv.probe(BLK_FEATURES, [QueueRequest(q) for q in queues])
    await tb.cycles(2)
    return drv


# -- Linux replays (checklist §1.O, §3.6) -------------------------------------------------------

@cocotb.test()
async def run_linux_legacy_probe(dut):
    """Rule 106 / §1.O: virtio_pci_legacy probing virtio-blk with per-VQ MSI-X vectors: the
    header, QUEUE_PFN activation, the vector registers at 0x14/0x16, device configuration read
    byte by byte at 0x18, kicks on QUEUE_NOTIFY, interrupts; STATUS without FEATURES_OK."""
    tb = await TransportTB.create(dut)
    drv = await legacy_probe(tb)
    assert drv.policy == "each" and drv.vectors == {0: 1, 1: 2}
    assert await drv.get_status() == ACK | DRIVER | DRIVER_OK
    assert drv.features == BLK_FEATURES & 0xFFFF_FFFF
    assert tb.dev.features.value == BLK_FEATURES & 0xFFFF_FFFF
    got = [cfg for _, cfg in tb.engine.configs]
    assert got == [expected_config(q, drv.rings[q].desc >> LEGACY_QUEUE_ADDR_SHIFT)
                   for q in (0, 1)]
    assert drv.config_offset() == 0x18
    mem = bytes(tb.dev.memory)
    assert await drv.config_read(0, 8) == int.from_bytes(mem[0:8], "little")
    assert await drv.config_read(0x14, 4) == int.from_bytes(mem[0x14:0x18], "little")
    await drv.kick(1)
    await drv.kick(0)
    await tb.cycles(3)
    assert [q for _, q in tb.engine.notifies] == [1, 0]
    tb.engine.raise_irq(1)
    await tb.cycles(10)
    assert tb.msix.vectors == [2]
    # Remove: reset (synchronous), then del_vq for each queue (vector, ISR flush, PFN 0).
    assert await drv.reset() == 0
    await drv.del_vqs([QueueRequest(q) for q in (0, 1)])
    assert await tb.legacy.read(reg("queue_pfn")) == 0


@cocotb.test()
async def run_linux_legacy_intx(dut):
    """§3.6 INTx on the legacy interface: no MSI-X, device configuration at 0x14, ISR
    read-to-clear at 0x13 deasserting INTx."""
    tb = await TransportTB.create(dut)
    drv = await legacy_probe(tb, table_size=0)
    assert drv.policy == "intx" and drv.config_offset() == 0x14
    mem = bytes(tb.dev.memory)
    assert await drv.config_read(0, 4) == int.from_bytes(mem[0:4], "little")
    tb.engine.raise_irq(0)
    await tb.cycles(10)
    assert tb.dut.intx.value == 1
    assert await drv.read_isr() == VirtioIsr.QUEUE.value
    await tb.cycles(1)
    assert tb.dut.intx.value == 0 and await drv.read_isr() == 0


# -- Legacy rules -------------------------------------------------------------------------------

@cocotb.test()
async def run_rule_64_legacy_use_before_driver_ok(dut):
    """Rule 64: the legacy interface has no FEATURES_OK; the device accepts configuration
    writes before the features and use (queues, kicks, interrupts) before DRIVER_OK."""
    tb = await TransportTB.create(dut)
    drv = tb.legacy_driver()
    drv.msix.table_size = 0
    assert await drv.reset() == 0
    await drv.add_status(ACK | DRIVER)
    await drv.config_write(0x20, 1, 1)                  # writeback, before the features
    assert tb.dev.regs.accesses[-1][0] is True
    await drv.setup_vq(QueueRequest(0), VIRTIO_MSI_NO_VECTOR)
    await drv.kick(0)
    await tb.cycles(3)
    assert len(tb.engine.configs) == 1 and [q for _, q in tb.engine.notifies] == [0]
    assert tb.engine.driver_ok.value == 1, "legacy: the device works before DRIVER_OK"
    tb.engine.raise_irq(0)
    await tb.cycles(10)
    assert await drv.read_isr() == VirtioIsr.QUEUE.value
    await drv.add_status(DRIVER_OK)
    assert await drv.get_status() == ACK | DRIVER | DRIVER_OK


@cocotb.test()
async def run_rule_67_legacy_sync_reset(dut):
    """Rule 67: Linux's legacy vp_reset() writes 0 and reads STATUS once; that read returns 0
    only after the engine drained (the read is held until the reset completes)."""
    drain = 400
    tb = await TransportTB.create(dut, drain_cycles=drain)
    drv = await legacy_probe(tb)
    t0 = tb.now()
    assert await drv.reset() == 0
    assert tb.now() - t0 >= drain
    assert tb.engine.reset_falls and tb.engine.reset_falls[-1] <= tb.now()
    assert await tb.legacy.read(reg("queue_pfn")) == 0
    tb.set_msix(False)
    drv = await legacy_probe(tb)
    assert len(tb.engine.configs) == 4


@cocotb.test()
async def run_rule_103_config_moves(dut):
    """Rule 103: device configuration follows the header at 0x14, or at 0x18 while MSI-X is
    enabled (0x14/0x16 are then the vector registers); any access width reads the same."""
    tb = await TransportTB.create(dut)
    io = tb.legacy
    mem = bytes(tb.dev.memory)
    assert legacy_device_config_offset(False) == 0x14
    assert legacy_device_config_offset(True) == 0x18
    word = int.from_bytes(mem[0:4], "little")
    assert await io.read(0x14, 4) == word
    assert [await io.read(0x14 + i, 1) for i in range(4)] == list(mem[0:4])
    assert await io.read(0x16, 2) == int.from_bytes(mem[2:4], "little")
    tb.set_msix(True)
    await tb.cycles(1)
    assert await io.read(vector_reg("config_vector"), 2) == VIRTIO_MSI_NO_VECTOR
    assert await io.read(0x18, 4) == word
    await io.write(vector_reg("config_vector"), 2, 2)
    assert await io.read(vector_reg("config_vector"), 2) == 2
    await io.write(vector_reg("config_vector"), 3, 2)       # beyond the 3-entry table
    assert await io.read(vector_reg("config_vector"), 2) == VIRTIO_MSI_NO_VECTOR
    tb.set_msix(False)
    await tb.cycles(1)
    assert await io.read(0x14, 4) == word


@cocotb.test()
async def run_rule_104_legacy_ring_layout(dut):
    """Rule 104: QUEUE_PFN activates the queue with desc at PFN * 4096, avail after the
    descriptors, used at the next 4096 boundary -- for every size the transport can have."""
    tb = await TransportTB.create(dut)
    for n, (avail, used) in enumerate(legacy_ring_offsets()):
        _, a, u = legacy_vring_layout(0, 1 << n, LEGACY_VRING_ALIGN)
        assert (avail, used) == (a, u)
    await tb.legacy.write(reg("queue_sel"), 1, 2)
    assert await tb.legacy.read(reg("queue_num"), 2) == QUEUE_SIZE
    await tb.legacy.write(reg("queue_num"), 16, 2)            # read-only
    assert await tb.legacy.read(reg("queue_num"), 2) == QUEUE_SIZE
    pfn = 0xFFFF_FFFF                                          # the highest ring legacy can place
    await tb.legacy.write(reg("queue_pfn"), pfn)
    await tb.cycles(2)
    assert [cfg for _, cfg in tb.engine.configs] == [expected_config(1, pfn)]
    assert await tb.legacy.read(reg("queue_pfn")) == pfn


@cocotb.test()
async def run_rule_105_legacy_features(dut):
    """Rule 105: only feature bits 0-31 are visible (ANY_LAYOUT offered, VERSION_1 not); bits
    the driver writes that are not offered read back clear; the device sees bits 0-31."""
    tb = await TransportTB.create(dut)
    io = tb.legacy
    host = await io.read(reg("host_features"))
    assert host == BLK_FEATURES & 0xFFFF_FFFF
    assert host >> VirtioF.ANY_LAYOUT & 1
    await io.write(reg("guest_features"), 0xFFFF_FFFF)
    assert await io.read(reg("guest_features")) == host
    await tb.cycles(1)
    assert tb.dev.features.value == host
    assert tb.engine.event_idx.value == 1 and tb.engine.indirect_desc.value == 1


@cocotb.test()
async def run_rule_106_pfn(dut):
    """Rule 106: QUEUE_PFN = 0 deactivates the queue (the engine gets enable = 0); a new PFN
    for an active queue is ignored; a non-existent queue reads QUEUE_NUM 0 and ignores PFNs;
    Linux's del_vq sequence works."""
    tb = await TransportTB.create(dut)
    io = tb.legacy
    await io.write(reg("queue_sel"), 0, 2)
    await io.write(reg("queue_pfn"), 0x1234)
    await io.write(reg("queue_pfn"), 0x5678)                   # active: ignored
    assert await io.read(reg("queue_pfn")) == 0x1234
    await io.write(reg("queue_pfn"), 0)
    await tb.cycles(2)
    assert [cfg["enable"] for _, cfg in tb.engine.configs] == [1, 0]
    assert tb.engine.configs[1][1]["queue"] == 0
    assert await io.read(reg("queue_pfn")) == 0
    await io.write(reg("queue_pfn"), 0x5678)                   # re-activated
    await tb.cycles(2)
    assert tb.engine.configs[-1][1] == expected_config(0, 0x5678)
    await io.write(reg("queue_sel"), 2, 2)                     # no queue 2
    assert await io.read(reg("queue_num"), 2) == 0
    await io.write(reg("queue_pfn"), 0x9999)
    assert await io.read(reg("queue_pfn")) == 0
    await tb.cycles(2)
    assert len(tb.engine.configs) == 3


@cocotb.test()
async def run_rule_106_pfn_waits_for_the_engine(dut):
    """Rule 106 and bad input: a driver frees the ring once its QUEUE_PFN = 0 write returns
    (Linux del_vq), so the write completes only after the engine has taken the queue's
    deactivation (which it applies with none of the queue's DMA in flight). An engine that
    never takes it holds the write no longer than ``reset_hold_cycles``."""
    tb = await TransportTB.create(dut)
    io = tb.legacy
    engine = tb.engine
    await io.write(reg("queue_sel"), 0, 2)
    await io.write(reg("queue_pfn"), 0x1234)
    await tb.cycles(2)
    held = 60
    engine.config_backpressure = iter([1] * held)
    await io.write(reg("queue_pfn"), 0)
    done = tb.now()
    assert [cfg["enable"] for _, cfg in engine.configs] == [1, 0], \
        "the write completed before the engine took the deactivation"
    assert engine.configs[-1][0] <= done
    assert io.last_latency >= held, io.last_latency
    assert await io.read(reg("queue_pfn")) == 0

    # A wedged engine: the write still completes, after the bound.
    await io.write(reg("queue_pfn"), 0x5678)
    await tb.cycles(2)
    engine.config_backpressure = itertools.repeat(1)
    await io.write(reg("queue_pfn"), 0)
    bound = TRANSITIONAL_PARAMS["reset_hold_cycles"]
    assert bound <= io.last_latency <= bound + 10, io.last_latency
    engine.config_backpressure = None
    await engine.wait_for(lambda: [c["enable"] for _, c in engine.configs] == [1, 0, 1, 0])
    await io.write(reg("queue_pfn"), 0x9abc)                   # usable afterwards
    await tb.cycles(2)
    assert engine.configs[-1][1] == expected_config(0, 0x9abc)


@cocotb.test()
async def run_legacy_isr_and_status_bytes(dut):
    """Rules 42 and 62 on the legacy header: STATUS (0x12) and ISR (0x13) share a dword; a
    byte write to STATUS leaves ISR alone, a read of STATUS alone does not clear ISR."""
    tb = await TransportTB.create(dut)
    drv = await legacy_probe(tb, table_size=0)
    tb.engine.raise_irq(1)
    await tb.cycles(10)
    assert await tb.legacy.read(reg("status"), 1) == ACK | DRIVER | DRIVER_OK
    await tb.legacy.write(reg("status"), ACK, 1)               # tries to clear bits
    assert await drv.get_status() == ACK | DRIVER | DRIVER_OK
    assert tb.dut.intx.value == 1
    assert await tb.legacy.read(reg("isr"), 1) == VirtioIsr.QUEUE.value
    await tb.cycles(1)
    assert tb.dut.intx.value == 0


# -- The modern interface of the transitional build ---------------------------------------------

@cocotb.test()
async def run_rule_38_value_doorbell(dut):
    """Rules 35 and 38 with notify_off_multiplier 0: one doorbell, the 16-bit value written
    names the queue; queue_notify_off is still the index (offset 0 for every queue). A modern
    driver on a transitional device must accept VERSION_1 (rule 72)."""
    tb = await TransportTB.create(dut)
    drv = tb.modern_driver()
    await drv.probe(BLK_FEATURES, [QueueRequest(0), QueueRequest(1)])
    assert drv.notify_offsets == {0: 0, 1: 0}
    for q in (1, 0, 1, 5):
        await tb.notify.write(0, q, 2)
    await tb.notify.write(0, 1, 1)                            # byte write of the low lane
    await tb.cycles(3)
    assert [q for _, q in tb.engine.notifies] == [1, 0, 1, 1], "queue 5 does not exist"
    assert await tb.common.read("device_status") & FEATURES_OK
    tb.set_msix(False)
    status = await drv.reset() or 0
    assert status == 0
    drv = tb.modern_driver()
    await drv.reset()
    await drv.add_status(ACK | DRIVER)
    await drv.write_features(BLK_FEATURES & ~feature_mask(VirtioF.VERSION_1))
    await drv.add_status(FEATURES_OK)
    assert not await drv.get_status() & FEATURES_OK


@cocotb.test()
async def run_legacy_access_storm(dut):
    """Bad input: random accesses on every port (the legacy window included, with MSI-X
    toggling under it) never wedge the block; the legacy driver probes afterwards."""
    tb = await TransportTB.create(dut)
    rng = random.Random(7)
    buses = [tb.legacy, tb.legacy, tb.common_bus, tb.isr, tb.device, tb.notify]
    for _ in range(2000):
        bus = rng.choice(buses)
        if rng.random() < 0.05:
            tb.set_msix(rng.random() < 0.5)
        if rng.random() < 0.05:
            tb.engine.raise_irq(rng.randrange(2))
        await bus.access(rng.randrange(bus.window) & ~3, rng.randrange(16), rng.random() < 0.6,
                         rng.choice([0, 1, 0xFFFF_FFFF, rng.getrandbits(32)]))
    assert max(b.max_latency for b in buses) <= TRANSITIONAL_PARAMS["reset_hold_cycles"] + 10
    tb.set_msix(False)
    drv = await legacy_probe(tb)
    assert drv.policy == "each"


# -- pytest launchers --------------------------------------------------------------------------

GROUPS = {
    "linux":  ["run_linux_legacy_probe", "run_linux_legacy_intx", "run_rule_38_value_doorbell"],
    "rules":  ["run_rule_64_legacy_use_before_driver_ok", "run_rule_67_legacy_sync_reset",
               "run_rule_103_config_moves", "run_rule_104_legacy_ring_layout",
               "run_rule_105_legacy_features", "run_rule_106_pfn",
               "run_rule_106_pfn_waits_for_the_engine",
               "run_legacy_isr_and_status_bytes"],
    "robustness": ["run_legacy_access_storm"],
}


@pytest.fixture(scope="module")
def transitional_design():
    return harness.build(TransportTop, TRANSITIONAL_PARAMS, name="transport_transitional")


@pytest.mark.sim
@pytest.mark.parametrize("group", list(GROUPS))
def test_transport_legacy(simulate, transitional_design, group):
    simulate(transitional_design, "test_transport_legacy", testcase=GROUPS[group])


def test_groups_cover_every_cocotb_test():
    names = {name for name in globals() if name.startswith("run_")}
    grouped = [name for group in GROUPS.values() for name in group]
    assert sorted(grouped) == sorted(names) and len(set(grouped)) == len(grouped)
