# SPDX-License-Identifier: BSD-2-Clause
"""The virtio PCI transport (modern interface), register by register.

::

    RegisterBusInitiator ×4 ─► common/isr/  ┌─────────────────┐ queues ◄─► FakeQueueEngine
    ModernVirtioPciDriver      device/notify│ VirtioTransport │ device_config ◄─► FakeDevice
    (Linux's register traffic)              └─────────────────┘ msix/intx ─► MsixMonitor

Design: a virtio-net function, 64 queues, 8 MSI-X vectors, a doorbell page per queue
(``transport_env.MODERN_PARAMS``). Each numbered rule of the checklist's §1 that concerns the
transport has a cocotb test named ``run_rule_<n>_...``; the Linux sequences of §3.2, §3.3 and
§3.6 are replayed by :mod:`virtio_pcie_tb.models.virtio_pci_driver`. Bad input: a random
access storm on every port never wedges the block and a Linux probe works afterwards.
"""

import random

import cocotb
import pytest
from cocotb.triggers import RisingEdge

from transport_env import MODERN_PARAMS, NET_FEATURES, TransportTB
from virtio_pcie.spec.virtio import (VIRTIO_MSI_NO_VECTOR, DeviceStatus, VirtioF, VirtioIsr,
                                     VirtioNetF, VirtioNotificationData, VirtioPciCommonCfg,
                                     byte_offset, feature_mask)
from virtio_pcie.virtio.transport import RESET_SETTLE_CYCLES
from virtio_pcie_tb import harness
from virtio_pcie_tb.designs.transport_top import TransportTop
from virtio_pcie_tb.models.virtio_pci_driver import DriverError, QueueRequest, Ring

ACK, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET, FAILED = (
    DeviceStatus.ACKNOWLEDGE.value, DeviceStatus.DRIVER.value, DeviceStatus.DRIVER_OK.value,
    DeviceStatus.FEATURES_OK.value, DeviceStatus.DEVICE_NEEDS_RESET.value,
    DeviceStatus.FAILED.value)
ISR_QUEUE, ISR_CONFIG = VirtioIsr.QUEUE.value, VirtioIsr.CONFIG.value
V1 = feature_mask(VirtioF.VERSION_1)
NOTIFY_PAGE = MODERN_PARAMS["notify_off_multiplier"]


def off(name):
    return byte_offset(VirtioPciCommonCfg, name)


async def bring_up(tb, queues=(0, 1, 2), *, features=NET_FEATURES, driver_ok=True, **kwargs):
    """Linux probe (checklist §3.2/§3.3) with MSI-X, one vector per queue."""
    drv = tb.modern_driver(**kwargs)
    await drv.reset()
    await drv.add_status(ACK)
    await drv.negotiate(features)
    await drv.find_vqs([q if isinstance(q, QueueRequest) else QueueRequest(q) for q in queues])
    if driver_ok:
        await drv.add_status(DRIVER_OK)
    return drv


async def to_features_ok(tb, features):
    """reset, ACKNOWLEDGE, DRIVER, write ``features`` in windows 0..3, set FEATURES_OK;
    returns the status read back."""
    drv = tb.modern_driver()
    await drv.reset()
    await drv.add_status(ACK | DRIVER)
    await drv.write_features(features)
    await drv.add_status(FEATURES_OK)
    return await drv.get_status()


async def wait_msix(tb, count, cycles_max=200):
    for _ in range(cycles_max):
        if len(tb.msix.requests) >= count:
            return
        await RisingEdge(tb.clk)
    raise AssertionError(f"expected {count} MSI-X requests, got {tb.msix.requests}")


# -- Linux replays (checklist §3) ----------------------------------------------------------------

@cocotb.test()
async def run_linux_modern_probe(dut):
    """§3.2 + §3.3 + §3.6 (per-VQ vectors): the exact traffic of virtio_pci_modern probing
    virtio-net with a polled control queue, then kicks and used-buffer interrupts."""
    tb = await TransportTB.create(dut)
    drv = tb.modern_driver()
    queues = [QueueRequest(0), QueueRequest(1), QueueRequest(2, callback=False)]
    features = await drv.probe(NET_FEATURES, queues)
    assert features == NET_FEATURES
    assert drv.policy == "each"
    assert await drv.get_status() == ACK | DRIVER | FEATURES_OK | DRIVER_OK
    assert tb.dev.features.value == NET_FEATURES
    assert tb.engine.event_idx.value == 1 and tb.engine.indirect_desc.value == 1
    assert tb.engine.driver_ok.value == 1 and tb.dev.driver_ok.value == 1
    # Queue configurations reach the engine only at queue_enable, once each (rule 73).
    got = [cfg for _, cfg in tb.engine.configs]
    assert [cfg["queue"] for cfg in got] == [0, 1, 2]
    for cfg in got:
        ring = drv.rings[cfg["queue"]]
        assert cfg == {"queue": cfg["queue"], "size": 256, "desc": ring.desc,
                       "driver": ring.avail, "device": ring.used, "enable": 1}
    assert drv.vectors == {0: 1, 1: 2, 2: VIRTIO_MSI_NO_VECTOR}
    assert drv.notify_offsets == {0: 0, 1: NOTIFY_PAGE, 2: 2 * NOTIFY_PAGE}
    for q in (2, 0, 1):
        await drv.kick(q)
    await tb.cycles(3)
    assert [q for _, q in tb.engine.notifies] == [2, 0, 1]
    for q in (0, 1, 2):
        tb.engine.raise_irq(q)
    await tb.cycles(20)
    assert tb.msix.vectors == [1, 2], "queue 2 has no vector: no interrupt (rule 56)"
    assert await drv.read_isr() == 0, "with MSI-X the ISR is not used for queues"


@cocotb.test()
async def run_linux_vector_fallback(dut):
    """Rule 58, §3.6 + §3.3: per-VQ vectors refused by the device (a vector beyond the table
    reads back NO_VECTOR), Linux unwinds without a reset and re-programs every queue for the
    shared policy; then an INTx-only platform. Queue registers are written several times before
    queue_enable; the engine sees each queue once."""
    tb = await TransportTB.create(dut)
    queues = [QueueRequest(i) for i in range(9)]        # 10 vectors wanted, 8 in the table
    drv = tb.modern_driver(platform=tb.platform(grant_more=True))
    await drv.probe(NET_FEATURES, queues)
    assert drv.policy == "shared"
    assert drv.msix.allocations == [10, 2]
    assert await drv.common.read("config_msix_vector") == 0
    for i in range(9):
        await drv.common.write("queue_select", i)
        assert await drv.common.read("queue_msix_vector") == 1
    assert sorted(cfg["queue"] for _, cfg in tb.engine.configs) == list(range(9))
    tb.engine.raise_irq(8)
    await wait_msix(tb, 1)
    assert tb.msix.vectors == [1]

    # A platform with too few vectors for either MSI-X policy: INTx. (The driver above is
    # removed first: its vectors are freed.)
    tb.set_msix(False)
    tb.engine.clear()
    drv = tb.modern_driver(platform=tb.platform())
    drv.msix.table_size = 1
    await drv.probe(NET_FEATURES, queues[:3])
    assert drv.policy == "intx" and not tb.function.fields["msix_enable"]
    assert len(tb.engine.configs) == 3
    tb.engine.raise_irq(1)
    await tb.cycles(10)
    assert tb.dut.intx.value == 1
    assert await drv.read_isr() == ISR_QUEUE
    await tb.cycles(1)
    assert tb.dut.intx.value == 0


@cocotb.test()
async def run_linux_shrunk_queue(dut):
    """§3.3 step 3: the driver shrinks a queue (vring allocation halving); the engine gets the
    size it wrote (rule 28)."""
    tb = await TransportTB.create(dut)
    await bring_up(tb, [QueueRequest(0, size=64), QueueRequest(1, size=1)])
    sizes = {cfg["queue"]: cfg["size"] for _, cfg in tb.engine.configs}
    assert sizes == {0: 64, 1: 1}


# -- 1.C Common configuration -------------------------------------------------------------------

@cocotb.test()
async def run_rule_20_64bit_halves(dut):
    """Rule 20: the low and high halves of 64-bit fields are accessed independently."""
    tb = await TransportTB.create(dut)
    c = tb.common
    await c.write("queue_select", 3)
    for name in ("queue_desc", "queue_driver", "queue_device"):
        await tb.common_bus.write(off(name), 0x1111_2222, 4)
        await tb.common_bus.write(off(name) + 4, 0x3333_4444, 4)
        assert await c.read(name) == 0x3333_4444_1111_2222
        await tb.common_bus.write(off(name) + 4, 0x5555_6666, 4)       # high half only
        assert await tb.common_bus.read(off(name), 4) == 0x1111_2222
        assert await c.read(name) == 0x5555_6666_1111_2222


@cocotb.test()
async def run_rule_21_feature_windows(dut):
    """Rule 21: device_feature shows bits select*32.. for any select: 0 beyond 64 bits; Linux's
    extended-feature reads and writes of selects 0..3 are tolerated."""
    tb = await TransportTB.create(dut)
    drv = tb.modern_driver(extended_features=True)
    assert await drv.get_features() == NET_FEATURES
    for select in (2, 3, 7, 0x8000_0000, 0xFFFF_FFFF):
        await tb.common.write("device_feature_select", select)
        assert await tb.common.read("device_feature_select") == select
        assert await tb.common.read("device_feature") == 0
    assert await to_features_ok(tb, NET_FEATURES) & FEATURES_OK


@cocotb.test()
async def run_rule_22_driver_features(dut):
    """Rule 22: driver_feature presents the valid bits written (never-offered bits read 0, but
    still count at FEATURES_OK, see rule 63)."""
    tb = await TransportTB.create(dut)
    c = tb.common
    offered_low = NET_FEATURES & 0xFFFF_FFFF
    await c.write("driver_feature_select", 0)
    await c.write("driver_feature", 0xFFFF_FFFF)
    assert await c.read("driver_feature") == offered_low
    await c.write("driver_feature", offered_low & 0x0000_FFFF)
    assert await c.read("driver_feature") == offered_low & 0x0000_FFFF
    await c.write("driver_feature_select", 1)
    await c.write("driver_feature", 1)
    assert await c.read("driver_feature") == 1
    await c.write("driver_feature_select", 2)
    await c.write("driver_feature", 0)
    assert await c.read("driver_feature") == 0


@cocotb.test()
async def run_rule_23_config_generation(dut):
    """Rules 23 and 46: config_generation changes once a changed field has been read, so
    Linux's generation loop never accepts a torn multi-dword read; and never changes without a
    change (the 'dirty flag' scheme)."""
    tb = await TransportTB.create(dut)
    c, dev = tb.common, tb.device
    g0 = await c.read("config_generation")
    for _ in range(3):
        await dev.read(0, 4)
        await dev.read(4, 2)
    assert await c.read("config_generation") == g0, "no change, no new generation"
    # A change between the two halves of a 6-byte read (the MAC): torn, so the generation moves.
    g = await c.read("config_generation")
    low = await dev.read(0, 4)
    await tb.dev.change(0, bytes([0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5]))
    high = await dev.read(4, 2)
    assert (low, high) == (0x13121110, 0xA5A4)
    assert await c.read("config_generation") != g
    # A change before any read: the first read moves it too.
    g = await c.read("config_generation")
    await tb.dev.change(4, bytes([0xB4, 0xB5]))
    await dev.read(0, 4)
    await dev.read(4, 2)
    assert await c.read("config_generation") != g
    # A change reported after the last field read, before the closing generation read.
    g = await c.read("config_generation")
    await dev.read(0, 4)
    await tb.dev.change(0, bytes([0xC0]))
    assert await c.read("config_generation") != g
    # Linux's generation loop returns the new, consistent value.
    drv = tb.modern_driver()
    assert await drv.config_read(0, 8) == int.from_bytes(bytes(tb.dev.memory[:8]), "little")


@cocotb.test()
async def run_rule_24_reset_completes(dut):
    """Rules 24 and 59: writing 0 resets; device_status reads 0 only once the engine and the
    device report idle (DMA drained), polled the Linux way; everything is back to its reset
    value and nothing is raised afterwards."""
    drain = 300
    tb = await TransportTB.create(dut, drain_cycles=drain)
    drv = await bring_up(tb)
    await tb.common.write("queue_select", 1)
    tb.common_bus.max_latency = 0
    await drv.reset()
    start = tb.engine.reset_rises[-1]
    assert tb.engine.reset_falls and tb.engine.reset_falls[-1] >= start + drain
    assert drv.reset_polls > 3, "Linux polled a non-zero status while the engine drained"
    assert tb.common_bus.max_latency < 10, "polls of a non-zero status are not held"
    assert tb.engine.reset.value == 0 and tb.dev.reset.value == 0
    c = tb.common
    assert await c.read("device_status") == 0
    assert await c.read("queue_select") == 0
    assert await c.read("config_msix_vector") == VIRTIO_MSI_NO_VECTOR
    await c.write("driver_feature_select", 0)
    assert await c.read("driver_feature") == 0
    assert tb.dev.features.value == 0 and tb.engine.driver_ok.value == 0
    # A queue interrupt after the reset is not delivered (rule 59).
    sent = len(tb.msix.requests)
    tb.engine.raise_irq(0)
    await tb.cycles(20)
    assert len(tb.msix.requests) == sent and await tb.isr.read(0, 1) == 0
    # Reset from status 0 (nothing to show): the next access waits for the reset to finish.
    tb.engine.drain_cycles = 100
    await c.write("device_status", 0)
    t0 = tb.now()
    assert await c.read("device_status") == 0
    assert tb.now() - t0 >= 100 - 10, "the read waited for the engine"


@cocotb.test()
async def run_rule_24_reset_bounded(dut):
    """Rule 24 with an engine that never drains: polls keep reading the old status (the reset
    never completes), other accesses are held at most reset_hold_cycles and then complete,
    nothing wedges; when the engine drains, the reset completes."""
    tb = await TransportTB.create(dut)
    await bring_up(tb)
    tb.engine.stuck = True
    await tb.common.write("device_status", 0)
    for _ in range(3):
        assert await tb.common.read("device_status") == ACK | DRIVER | FEATURES_OK | DRIVER_OK
    t0 = tb.now()
    await tb.common.write("queue_select", 5)          # held, then dropped
    held = tb.now() - t0
    hold = MODERN_PARAMS["reset_hold_cycles"]
    assert hold - 5 <= held <= hold + 10, held
    assert await tb.common.read("queue_select") == 0
    assert await tb.isr.read(0, 1) == 0, "ISR is always served"
    tb.engine.stuck = False
    await tb.cycles(2 * RESET_SETTLE_CYCLES)
    assert await tb.common.read("device_status") == 0


@cocotb.test()
async def run_rule_25_queue_enable_after_reset(dut):
    """Rule 25: queue_enable reads 0 after reset (and the queue can be set up again)."""
    tb = await TransportTB.create(dut)
    drv = await bring_up(tb)
    for q in range(3):
        await tb.common.write("queue_select", q)
        assert await tb.common.read("queue_enable") == 1
    await drv.reset()
    for q in range(3):
        await tb.common.write("queue_select", q)
        assert await tb.common.read("queue_enable") == 0
        assert await tb.common.read("queue_size") == MODERN_PARAMS["queue_size_max"]
        assert await tb.common.read("queue_desc") == 0
    tb.engine.clear()
    await bring_up(tb)
    assert len(tb.engine.configs) == 3


@cocotb.test()
async def run_rule_26_queue_reset(dut):
    """Rules 26 and 75: with RING_RESET negotiated, queue_reset = 1 resets the queue in the
    engine; queue_reset reads 1 until the engine is done, then queue_reset and queue_enable
    read 0; Linux re-programs (new size, new rings) and re-enables after DRIVER_OK
    (vp_modern_disable_vq_and_reset / vp_modern_enable_vq_after_reset)."""
    tb = await TransportTB.create(dut)
    tb.engine.queue_reset_latency = 40
    drv = await bring_up(tb)
    c = tb.common
    await c.write("queue_select", 1)
    assert await c.read("queue_reset") == 0
    await c.write("queue_reset", 1)
    polls = 0
    while await c.read("queue_reset"):
        polls += 1
    assert polls > 2 and [q for _, q in tb.engine.queue_resets] == [1]
    assert await c.read("queue_enable") == 0
    assert await c.read("queue_msix_vector") == VIRTIO_MSI_NO_VECTOR, "queue state reset"
    assert await c.read("queue_size") == MODERN_PARAMS["queue_size_max"]
    tb.engine.clear()
    ring = Ring(0x5_0000_0000, 128)
    await drv.active_vq(1, ring, 2)
    await c.write("queue_select", 1)
    await c.write("queue_enable", 1)
    await tb.cycles(2)
    assert [cfg for _, cfg in tb.engine.configs] == [
        {"queue": 1, "size": 128, "desc": ring.desc, "driver": ring.avail, "device": ring.used,
         "enable": 1}]
    assert await c.read("queue_reset") == 0 and await c.read("queue_enable") == 1
    # Without RING_RESET negotiated, queue_reset is ignored.
    await bring_up(tb, features=NET_FEATURES & ~feature_mask(VirtioF.RING_RESET))
    tb.engine.clear()
    await c.write("queue_select", 0)
    await c.write("queue_reset", 1)
    assert await c.read("queue_reset") == 0 and await c.read("queue_enable") == 1
    assert not tb.engine.queue_resets


@cocotb.test()
async def run_rule_26_reset_follows_enable(dut):
    """Rule 26 with a slow engine: a queue reset written right after queue_enable reaches the
    engine after the enable's configuration, never before it."""
    tb = await TransportTB.create(dut)
    await to_features_ok(tb, NET_FEATURES)
    tb.engine.config_backpressure = iter([1] * 50)
    c = tb.common
    await c.write("queue_select", 3)
    await c.write("queue_enable", 1)
    await c.write("queue_reset", 1)
    await tb.engine.wait_for(lambda: tb.engine.queue_resets)
    assert tb.engine.configs and tb.engine.configs[0][0] < tb.engine.queue_resets[0][0]
    while await c.read("queue_reset"):
        pass
    assert await c.read("queue_enable") == 0


@cocotb.test()
async def run_rule_27_missing_queue(dut):
    """Rule 27: queue_size reads 0 for a queue that does not exist; its registers ignore
    writes and it cannot be enabled."""
    tb = await TransportTB.create(dut)
    c = tb.common
    for q in (MODERN_PARAMS["queue_count"], 0x100, 0xFFFF):
        await c.write("queue_select", q)
        assert await c.read("queue_select") == q, "queue_select takes effect immediately"
        assert await c.read("queue_size") == 0
        await c.write("queue_size", 16)
        await c.write("queue_desc", 0x1000)
        await c.write("queue_msix_vector", 1)
        await c.write("queue_enable", 1)
        assert await c.read("queue_size") == 0 and await c.read("queue_desc") == 0
        assert await c.read("queue_msix_vector") == VIRTIO_MSI_NO_VECTOR
        assert await c.read("queue_enable") == 0
    assert not tb.engine.configs


@cocotb.test()
async def run_rule_28_queue_size(dut):
    """Rule 28: queue_size takes any power of two up to the maximum; other values are ignored;
    the engine gets the size written."""
    tb = await TransportTB.create(dut)
    c = tb.common
    await c.write("queue_select", 4)
    assert await c.read("queue_size") == 256
    for value, expect in ((64, 64), (100, 64), (512, 64), (0, 64), (0xFFFF, 64), (1, 1),
                          (256, 256), (32, 32)):
        await c.write("queue_size", value)
        assert await c.read("queue_size") == expect, value
    await c.write("queue_enable", 1)
    await tb.cycles(2)
    assert [cfg["size"] for _, cfg in tb.engine.configs] == [32]


@cocotb.test()
async def run_rule_30_read_only_and_ignored(dut):
    """Rule 30: writes to read-only fields are ignored; queue_enable = 0 is ignored; queue
    registers of an enabled queue, and of any queue after DRIVER_OK without RING_RESET, are
    ignored."""
    tb = await TransportTB.create(dut)
    c = tb.common
    before = {name: await c.read(name) for name in
              ("device_feature", "num_queues", "config_generation")}
    for name in before:
        await c.write(name, 0x5A5A)
    assert {name: await c.read(name) for name in before} == before
    await bring_up(tb, features=NET_FEATURES & ~feature_mask(VirtioF.RING_RESET))
    await c.write("queue_select", 2)
    for name in ("queue_notify_off", "queue_notify_data"):
        await c.write(name, 0x77)
        assert await c.read(name) == 2
    await c.write("queue_enable", 0)
    assert await c.read("queue_enable") == 1
    desc = await c.read("queue_desc")
    await c.write("queue_desc", 0xDEAD_0000)
    await c.write("queue_size", 16)
    assert await c.read("queue_desc") == desc and await c.read("queue_size") == 256
    # Queue 5 was never set up; after DRIVER_OK it cannot be.
    await c.write("queue_select", 5)
    await c.write("queue_desc", 0x1000)
    await c.write("queue_enable", 1)
    assert await c.read("queue_desc") == 0 and await c.read("queue_enable") == 0
    await tb.cycles(2)
    assert len(tb.engine.configs) == 3, tb.engine.configs


@cocotb.test()
async def run_rule_31_common_length(dut):
    """Rules 31 and 29: the structure is 0x40 bytes (queue_reset inside it, so Linux keeps
    RING_RESET); the admin-queue fields read 0 (ADMIN_VQ cannot be offered, see
    test_transport_params.py)."""
    tb = await TransportTB.create(dut)
    assert tb.model.common_length == 0x40
    assert off("queue_reset") + 2 <= tb.model.common_length
    assert await tb.common.read("admin_queue_index") == 0
    assert await tb.common.read("admin_queue_num") == 0


@cocotb.test()
async def run_rule_32_notify_off(dut):
    """Rule 32: queue_notify_off is the queue index; num_queues is the queue count."""
    tb = await TransportTB.create(dut)
    assert await tb.common.read("num_queues") == MODERN_PARAMS["queue_count"]
    for q in (0, 1, 17, 63):
        await tb.common.write("queue_select", q)
        assert await tb.common.read("queue_notify_off") == q


# -- 1.D Notifications --------------------------------------------------------------------------

@cocotb.test()
async def run_rule_35_doorbells(dut):
    """Rules 35 and 38: a 16-bit write at a queue's doorbell (queue_notify_off * multiplier)
    names the queue by its address; doorbells written back to back all reach the engine;
    the region reads 0."""
    tb = await TransportTB.create(dut)
    drv = await bring_up(tb, queues=(0, 1, 2, 3))
    order = [3, 0, 2, 1] * 8
    t0 = tb.now()
    for q in order:
        await drv.kick(q)
    elapsed = tb.now() - t0
    await tb.cycles(3)
    assert [q for _, q in tb.engine.notifies] == order
    assert elapsed <= 3 * len(order), f"{elapsed} cycles for {len(order)} doorbells"
    # The address, not the value, selects the queue (the value is Linux's queue index).
    await tb.notify.write(2 * NOTIFY_PAGE, 0x1234, 2)
    await tb.notify.write(3 * NOTIFY_PAGE, 0, 4)
    await tb.cycles(3)
    assert [q for _, q in tb.engine.notifies[-2:]] == [2, 3]
    assert await tb.notify.read(NOTIFY_PAGE, 4) == 0


@cocotb.test()
async def run_rule_35_notification_data(dut):
    """Rule 35: with NOTIFICATION_DATA negotiated a 32-bit doorbell write passes its upper half
    (next_off, next_wrap: the split ring's avail index) on with the queue; a 16-bit write is a
    doorbell without it. Not negotiated, the upper half is nothing."""
    tb = await TransportTB.create(dut)
    assert NET_FEATURES & feature_mask(VirtioF.NOTIFICATION_DATA)

    def word(vqn, next_idx):
        return VirtioNotificationData.const({"vqn": vqn, "next_idx": next_idx}).as_value().value
    await bring_up(tb, queues=(0, 1, 2))
    await tb.notify.write(2 * NOTIFY_PAGE, word(2, 0xFFFE), 4)
    await tb.notify.write(1 * NOTIFY_PAGE, 1, 2)
    await tb.notify.write(0, word(0, 7), 4)
    await tb.cycles(3)
    assert [(q, i) for _, q, i in tb.engine.notify_idx[-3:]] == [(2, 0xFFFE), (1, None), (0, 7)]
    await bring_up(tb, queues=(0, 1),
                   features=NET_FEATURES & ~feature_mask(VirtioF.NOTIFICATION_DATA))
    await tb.notify.write(1 * NOTIFY_PAGE, word(1, 0x1234), 4)
    await tb.cycles(3)
    assert tb.engine.notify_idx[-1][1:] == (1, None)


@cocotb.test()
async def run_rule_36_spurious_doorbells(dut):
    """Rule 36: doorbells of disabled queues, writes elsewhere in a doorbell page and empty
    writes are ignored; the block keeps working."""
    tb = await TransportTB.create(dut)
    drv = await bring_up(tb, queues=(0,))
    await tb.notify.write(5 * NOTIFY_PAGE, 5, 2)               # queue 5 is not enabled
    await tb.notify.write(0x100, 0, 2)                         # inside page 0, not the doorbell
    await tb.notify.access(0, 0, True, 0)                      # no byte enabled
    await tb.cycles(3)
    assert not tb.engine.notifies
    await drv.kick(0)
    await tb.cycles(3)
    assert [q for _, q in tb.engine.notifies] == [0]


# -- 1.E ISR and INTx ---------------------------------------------------------------------------

@cocotb.test()
async def run_rule_39_config_isr_first(dut):
    """Rules 39 and 47: a configuration change with DRIVER_OK sets ISR bit 1 before the
    configuration vector is sent (checked while the MSI-X block holds the request back)."""
    tb = await TransportTB.create(dut)
    await bring_up(tb)
    tb.msix.backpressure = iter([1] * 1000)
    await tb.dev.change(6, bytes([1, 0]))
    await tb.cycles(5)
    assert not tb.msix.requests and tb.dut.msix__valid.value == 1
    assert await tb.isr.read(0, 1) == ISR_CONFIG, "ISR bit 1 set while the message waits"
    tb.msix.backpressure = None
    await wait_msix(tb, 1)
    assert tb.msix.vectors == [0]


@cocotb.test()
async def run_rule_40_intx(dut):
    """Rules 40, 41 and 42: with MSI-X disabled a queue interrupt sets ISR bit 0 and raises
    INTx; reading ISR returns it, clears it and drops INTx."""
    tb = await TransportTB.create(dut)
    drv = tb.modern_driver()
    drv.msix.table_size = 0
    await drv.probe(NET_FEATURES, [QueueRequest(0)])
    assert drv.policy == "intx"
    tb.engine.raise_irq(0)
    await tb.cycles(10)
    assert tb.dut.intx.value == 1 and not tb.msix.requests
    assert await tb.isr.read(0, 1) == ISR_QUEUE
    await tb.cycles(1)
    assert tb.dut.intx.value == 0
    assert await tb.isr.read(0, 1) == 0
    assert [level for _, level in tb.engine.intx_changes] == [1, 0]
    # Enabling MSI-X masks INTx without clearing ISR (rule 41: only while MSI-X is disabled).
    tb.engine.raise_irq(0)
    await tb.cycles(10)
    tb.set_msix(True)
    await tb.cycles(2)
    await tb.cycles(1)
    assert tb.dut.intx.value == 0
    tb.set_msix(False)
    await tb.cycles(2)
    assert tb.dut.intx.value == 1


@cocotb.test()
async def run_rule_42_isr_read_clears(dut):
    """Rule 42 (and 50 for this block): ISR clears on any read that selects its byte (1- or
    4-byte); a read selecting only other bytes of the dword returns 0 and clears nothing; a
    write changes nothing."""
    tb = await TransportTB.create(dut)
    drv = tb.modern_driver()
    drv.msix.table_size = 0
    await drv.probe(NET_FEATURES, [QueueRequest(0)])
    for access in ((0, 0b0001), (0, 0b1111)):
        tb.engine.raise_irq(0)
        await tb.cycles(10)
        assert await tb.isr.access(0, 0b0010, False) >> 8 & 0xFF == 0    # reserved byte
        await tb.isr.access(0, 0b0001, True, 0)
        assert tb.dut.intx.value == 1
        assert await tb.isr.access(*access, False) & 0xFF == ISR_QUEUE
        await tb.cycles(1)
        assert tb.dut.intx.value == 0


@cocotb.test()
async def run_rule_43_both_causes(dut):
    """Rule 43: one interrupt may carry both causes: ISR reads 3 after a queue interrupt and a
    configuration change (INTx)."""
    tb = await TransportTB.create(dut)
    drv = tb.modern_driver()
    drv.msix.table_size = 0
    await drv.probe(NET_FEATURES, [QueueRequest(0)])
    tb.engine.raise_irq(0)
    await tb.dev.change(6, bytes([1]))
    await tb.cycles(10)
    assert await tb.isr.read(0, 1) == ISR_QUEUE | ISR_CONFIG
    assert await tb.isr.read(0, 1) == 0


# -- 1.F Device configuration -------------------------------------------------------------------

@cocotb.test()
async def run_rule_44_config_before_features_ok(dut):
    """Rules 44 and 45: device configuration is readable before FEATURES_OK (right after
    reset), with 1, 2 and 4-byte accesses at the field offsets; writes reach the device."""
    tb = await TransportTB.create(dut)
    drv = tb.modern_driver()
    await drv.reset()
    mem = bytes(tb.dev.memory)
    assert await tb.device.read(0, 4) == int.from_bytes(mem[0:4], "little")
    assert await tb.device.read(6, 2) == int.from_bytes(mem[6:8], "little")
    assert await tb.device.read(0x11, 1) == mem[0x11]
    await tb.device.write(4, 0xBEEF, 2)
    assert tb.dev.regs.accesses[-1] == (True, 4, 0b0011, 0xBEEF)


@cocotb.test()
async def run_rule_47_config_interrupt(dut):
    """Rule 47: device configuration changes raise the configuration interrupt only once
    DRIVER_OK is set (before it the driver reads the configuration anyway)."""
    tb = await TransportTB.create(dut)
    await bring_up(tb, driver_ok=False)
    await tb.dev.change(6, bytes([1]))
    await tb.cycles(10)
    assert not tb.msix.requests and await tb.isr.read(0, 1) == 0
    await tb.common.write("device_status", ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    await tb.dev.change(6, bytes([0]))
    await wait_msix(tb, 1)
    assert tb.msix.vectors == [0]


# -- 1.G Access widths (the PCI_CFG window's accesses, as this block sees them) -----------------

@cocotb.test()
async def run_rule_50_access_widths(dut):
    """Rules 49 and 50 (this block's part): 1, 2 and 4-byte accesses reach exactly the bytes
    they select: byte writes into 16- and 32-bit fields, a dword read across several fields."""
    tb = await TransportTB.create(dut)
    bus = tb.common_bus
    await bus.write(off("queue_select"), 0x02, 1)
    await bus.write(off("queue_select") + 1, 0x00, 1)
    assert await tb.common.read("queue_select") == 2
    await bus.write(off("device_feature_select") + 2, 0xAB, 1)
    assert await tb.common.read("device_feature_select") == 0x00AB_0000
    dword = await bus.read(off("device_status") & ~3, 4)
    assert dword == (await tb.common.read("queue_select")) << 16 | \
        (await tb.common.read("config_generation")) << 8 | await tb.common.read("device_status")
    await bus.write(off("queue_size"), 0x0010_0020, 4)       # queue_size 32, vector 16 (none)
    assert await tb.common.read("queue_size") == 32
    assert await tb.common.read("queue_msix_vector") == VIRTIO_MSI_NO_VECTOR


# -- 1.H MSI-X vectors --------------------------------------------------------------------------

@cocotb.test()
async def run_rule_53_vector_mapping(dut):
    """Rules 53, 54 and 55: any event maps to any vector of the table and can be unmapped; a
    vector beyond the table reads NO_VECTOR; all are unmapped after reset."""
    tb = await TransportTB.create(dut)
    c = tb.common
    table = MODERN_PARAMS["msix_vectors"]
    for value, expect in ((0, 0), (table - 1, table - 1), (table, VIRTIO_MSI_NO_VECTOR),
                          (0x7FF, VIRTIO_MSI_NO_VECTOR), (3, 3),
                          (VIRTIO_MSI_NO_VECTOR, VIRTIO_MSI_NO_VECTOR)):
        await c.write("config_msix_vector", value)
        assert await c.read("config_msix_vector") == expect, value
        await c.write("queue_select", 9)
        await c.write("queue_msix_vector", value)
        assert await c.read("queue_msix_vector") == expect, value
    for q in range(4):
        await c.write("queue_select", q)
        await c.write("queue_msix_vector", q + 1)
    await c.write("config_msix_vector", 7)
    await tb.modern_driver().reset()
    assert await c.read("config_msix_vector") == VIRTIO_MSI_NO_VECTOR
    for q in range(4):
        await c.write("queue_select", q)
        assert await c.read("queue_msix_vector") == VIRTIO_MSI_NO_VECTOR


@cocotb.test()
async def run_rule_56_no_vector_no_interrupt(dut):
    """Rule 56: with MSI-X enabled, an event mapped to NO_VECTOR sends nothing, and the ISR
    queue bit is not used."""
    tb = await TransportTB.create(dut)
    drv = await bring_up(tb, queues=(0, QueueRequest(1, callback=False)))
    tb.engine.raise_irq(1)
    await tb.cycles(10)
    assert not tb.msix.requests and await drv.read_isr() == 0
    await tb.common.write("config_msix_vector", VIRTIO_MSI_NO_VECTOR)
    await tb.dev.change(6, bytes([1]))
    await tb.cycles(10)
    assert not tb.msix.requests and tb.dut.intx.value == 0
    tb.engine.raise_irq(0)
    await wait_msix(tb, 1)
    assert tb.msix.vectors == [1]


# -- 1.I Status and reset -----------------------------------------------------------------------

@cocotb.test()
async def run_rule_60_nothing_before_driver_ok(dut):
    """Rule 60: before DRIVER_OK the engine's driver_ok is low and queue interrupts are
    dropped (also after FAILED)."""
    tb = await TransportTB.create(dut)
    await bring_up(tb, driver_ok=False)
    assert tb.engine.driver_ok.value == 0 and tb.dev.driver_ok.value == 0
    tb.engine.raise_irq(0)
    await tb.cycles(10)
    assert not tb.msix.requests
    await tb.common.write("device_status", ACK | DRIVER | FEATURES_OK | DRIVER_OK)
    await tb.cycles(1)
    assert tb.engine.driver_ok.value == 1
    await tb.common.write("device_status", ACK | DRIVER | FEATURES_OK | DRIVER_OK | FAILED)
    await tb.cycles(1)
    assert tb.engine.driver_ok.value == 0, "FAILED: stop processing (rule 66)"
    tb.engine.raise_irq(0)
    await tb.cycles(10)
    assert not tb.msix.requests


@cocotb.test()
async def run_rule_61_needs_reset(dut):
    """Rule 61: an engine error sets DEVICE_NEEDS_RESET and, with DRIVER_OK, sends the
    configuration interrupt; the bit stays through driver writes until reset (rule 62)."""
    tb = await TransportTB.create(dut)
    drv = await bring_up(tb)
    tb.engine.pulse_needs_reset()
    await wait_msix(tb, 1)
    assert tb.msix.vectors == [0]
    status = await drv.get_status()
    assert status == ACK | DRIVER | FEATURES_OK | DRIVER_OK | NEEDS_RESET
    assert tb.engine.driver_ok.value == 0
    assert await drv.read_isr() == ISR_CONFIG
    await drv.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK)      # tries to clear it
    assert await drv.get_status() == status
    await drv.add_status(FAILED)
    assert await drv.get_status() == status | FAILED
    await drv.reset()
    assert await drv.get_status() == 0
    # Before DRIVER_OK: the bit, but no interrupt.
    await bring_up(tb, driver_ok=False)
    tb.engine.pulse_needs_reset()
    await tb.cycles(10)
    assert await drv.get_status() & NEEDS_RESET
    assert len(tb.msix.requests) == 1


@cocotb.test()
async def run_rule_62_status_bits_stick(dut):
    """Rule 62: writes that try to clear status bits are ignored; bits the driver may not set
    (SUSPEND, reserved, DEVICE_NEEDS_RESET) are ignored."""
    tb = await TransportTB.create(dut)
    drv = tb.modern_driver()
    await drv.reset()
    await drv.set_status(ACK | DRIVER)
    await drv.set_status(ACK)
    assert await drv.get_status() == ACK | DRIVER
    await drv.set_status(DeviceStatus.SUSPEND.value | 0x20 | NEEDS_RESET)
    assert await drv.get_status() == ACK | DRIVER


@cocotb.test()
async def run_rule_63_features_ok_refusal(dut):
    """Rule 63: FEATURES_OK reads back clear when the driver accepted a feature that is not
    offered or one whose requirements it did not accept (virtio 1.2 net 'Feature bit
    requirements'); a valid subset is accepted, again after a reset; DRIVER_OK without
    FEATURES_OK is not taken."""
    tb = await TransportTB.create(dut)
    refused = {
        "bit 4 never offered":            V1 | 1 << 4,
        "bit 70 never offered":           V1 | 1 << 70,
        "GUEST_ECN without GUEST_TSO4/6": V1 | feature_mask(VirtioNetF.GUEST_ECN,
                                                            VirtioNetF.GUEST_CSUM),
        "HOST_TSO4 without CSUM":         V1 | feature_mask(VirtioNetF.HOST_TSO4),
        "MQ without CTRL_VQ":             V1 | feature_mask(VirtioNetF.MQ),
    }
    for why, features in refused.items():
        status = await to_features_ok(tb, features)
        assert not status & FEATURES_OK, why
        await tb.common.write("device_status", status | DRIVER_OK)
        assert not await tb.common.read("device_status") & DRIVER_OK, why
    accepted = [V1, NET_FEATURES,
                V1 | feature_mask(VirtioNetF.GUEST_ECN, VirtioNetF.GUEST_TSO4,
                                  VirtioNetF.GUEST_CSUM),
                V1 | feature_mask(VirtioNetF.MQ, VirtioNetF.CTRL_VQ), NET_FEATURES]
    for features in accepted:
        assert await to_features_ok(tb, features) & FEATURES_OK, hex(features)
        assert tb.dev.features.value == features


@cocotb.test()
async def run_rule_65_no_suspend(dut):
    """Rule 65: SUSPEND is not offered (not a supported transport feature), so the SUSPEND
    status bit is ignored even when fully initialised."""
    tb = await TransportTB.create(dut)
    drv = await bring_up(tb)
    await drv.add_status(DeviceStatus.SUSPEND.value)
    assert await drv.get_status() == ACK | DRIVER | FEATURES_OK | DRIVER_OK
    assert tb.engine.driver_ok.value == 1


@cocotb.test()
async def run_rule_66_features_frozen(dut):
    """Rule 66: the negotiated feature set freezes at FEATURES_OK."""
    tb = await TransportTB.create(dut)
    await to_features_ok(tb, V1)
    await tb.common.write("driver_feature_select", 0)
    await tb.common.write("driver_feature", NET_FEATURES & 0xFFFF_FFFF)
    assert await tb.common.read("driver_feature") == 0
    assert tb.dev.features.value == V1


@cocotb.test()
async def run_rule_72_version_1_required(dut):
    """Rule 72: on the modern interface a feature set without VERSION_1 is refused, and Linux
    gives up with FAILED."""
    tb = await TransportTB.create(dut)
    assert not await to_features_ok(tb, NET_FEATURES & ~V1) & FEATURES_OK
    drv = tb.modern_driver()
    await drv.reset()
    await drv.add_status(ACK)
    try:
        await drv.negotiate(NET_FEATURES & ~V1)
    except DriverError as e:
        assert e.errno == "ENODEV"
    else:
        raise AssertionError("Linux refuses a modern device without VERSION_1")
    assert await drv.get_status() & FAILED


# -- 1.K Queue configuration --------------------------------------------------------------------

@cocotb.test()
async def run_rule_73_latch_at_enable(dut):
    """Rule 73: size and addresses are latched at queue_enable = 1: the engine gets them then,
    and later writes (queue enabled) change nothing; enabling twice sends nothing more."""
    tb = await TransportTB.create(dut)
    c = tb.common
    await c.write("queue_select", 7)
    await c.write("queue_desc", 0x1_0000)
    await c.write("queue_driver", 0x1_1000)
    await c.write("queue_device", 0x1_2000)
    assert not tb.engine.configs
    await c.write("queue_enable", 1)
    await c.write("queue_desc", 0x9_0000)
    await c.write("queue_enable", 1)
    assert [cfg for _, cfg in tb.engine.configs] == [
        {"queue": 7, "size": 256, "desc": 0x1_0000, "driver": 0x1_1000, "device": 0x1_2000,
         "enable": 1}]
    assert await c.read("queue_desc") == 0x1_0000


@cocotb.test()
async def run_rule_74_ring_alignment(dut):
    """Rule 74: rings must be aligned (descriptors 16, avail 2, used 4 bytes); enabling a
    misaligned ring is ignored (a driver error the engine never sees), fixing it works."""
    tb = await TransportTB.create(dut)
    c = tb.common
    await c.write("queue_select", 2)
    for name, bad in (("queue_desc", 0x1008), ("queue_driver", 0x2001), ("queue_device", 0x3002)):
        good = {"queue_desc": 0x1000, "queue_driver": 0x2000, "queue_device": 0x3000}
        for field, value in good.items():
            await c.write(field, bad if field == name else value)
        await c.write("queue_enable", 1)
        assert await c.read("queue_enable") == 0, name
    await c.write("queue_device", 0x3004)
    await c.write("queue_enable", 1)
    assert await c.read("queue_enable") == 1
    await tb.cycles(2)
    assert [cfg["device"] for _, cfg in tb.engine.configs] == [0x3004]


@cocotb.test()
async def run_rule_73_engine_backpressure(dut):
    """Rule 73 with an engine slow to take queue configurations: queue_enable waits for the
    previous configuration, none is lost."""
    tb = await TransportTB.create(dut)
    tb.engine.config_backpressure = iter([1] * 30 + [0, 1, 1, 1] * 200)
    await bring_up(tb, queues=range(6))
    assert sorted(cfg["queue"] for _, cfg in tb.engine.configs) == list(range(6))


# -- Bad input and figures ----------------------------------------------------------------------

@cocotb.test()
async def run_access_storm(dut):
    """Bad input (issue 5): 3000 random accesses (any port, address, byte enables, data,
    resets included) never wedge the block -- every access is acknowledged in bounded time --
    and Linux probes the device normally afterwards."""
    tb = await TransportTB.create(dut)
    rng = random.Random(5)
    buses = [tb.common_bus, tb.isr, tb.device, tb.notify]
    hold = MODERN_PARAMS["reset_hold_cycles"]
    for _ in range(3000):
        bus = rng.choice(buses)
        addr = rng.randrange(bus.window) & ~3
        if bus is tb.notify and rng.random() < 0.7:
            addr = rng.randrange(64) * NOTIFY_PAGE
        sel = rng.randrange(16)
        data = rng.choice([0, 1, 0xFFFF_FFFF, rng.getrandbits(32), rng.randrange(16)])
        if rng.random() < 0.1:
            tb.engine.raise_irq(rng.randrange(64))
        if rng.random() < 0.02:
            tb.engine.pulse_needs_reset()
        if rng.random() < 0.05:
            await tb.dev.change(rng.randrange(24), bytes([rng.getrandbits(8)]))
        if rng.random() < 0.05:
            tb.set_msix(rng.random() < 0.5)
        await bus.access(addr, sel, rng.random() < 0.6, data)
    assert max(b.max_latency for b in buses) <= hold + 10
    tb.set_msix(False)
    drv = await bring_up(tb)
    assert drv.policy == "each"
    await drv.kick(1)
    await tb.cycles(3)
    assert tb.engine.notifies[-1][1] == 1


@cocotb.test()
async def run_figures(dut):
    """Measured in clock cycles: register access latency, doorbell rate, irq -> MSI-X latency,
    reset completion after the engine goes idle."""
    tb = await TransportTB.create(dut, drain_cycles=0)
    drv = await bring_up(tb, queues=(0, 1))
    t0 = tb.now()
    await tb.common.read("queue_size")
    read_latency = tb.now() - t0
    t0 = tb.now()
    for _ in range(100):
        await tb.notify.write(NOTIFY_PAGE, 1, 2)
    per_doorbell = (tb.now() - t0) / 100
    await tb.cycles(3)
    assert len(tb.engine.notifies) == 100
    sent = len(tb.msix.requests)
    for _ in range(16):
        tb.engine.raise_irq(0)
    await wait_msix(tb, sent + 16)
    latency = tb.msix.requests[sent][0] - tb.engine.irqs_accepted[0][0]
    span = tb.msix.requests[-1][0] - tb.msix.requests[sent][0]
    t0 = tb.now()
    await drv.reset()
    reset_cycles = tb.now() - t0
    tb.dut._log.info("FIGURES read latency %d cycles; %.1f cycles per doorbell; irq->MSI-X "
                     "%d cycles, 16 irqs in %d cycles; reset (idle engine) %d cycles",
                     read_latency, per_doorbell, latency, span, reset_cycles)
    assert read_latency <= 3 and per_doorbell <= 3 and latency <= 3 and span <= 16


# -- Edge-case build: one queue, no MSI-X, notify_off_multiplier 4 -------------------------------

SMALL_PARAMS = {**MODERN_PARAMS, "queue_count": 1, "queue_size_max": 1, "msix_vectors": 0,
                "notify_off_multiplier": 4}


@cocotb.test()
async def run_single_queue_function(dut):
    """The smallest function: one queue of one entry, no MSI-X table (every vector reads
    NO_VECTOR, Linux falls back to INTx), doorbells 4 bytes apart; queue 1 does not exist."""
    tb = await TransportTB.create(dut)
    c = tb.common
    drv = tb.modern_driver()
    await drv.probe(NET_FEATURES, [QueueRequest(0)])
    assert drv.policy == "intx" and drv.notify_offsets == {0: 0}
    assert [cfg["size"] for _, cfg in tb.engine.configs] == [1]
    await c.write("config_msix_vector", 0)
    assert await c.read("config_msix_vector") == VIRTIO_MSI_NO_VECTOR
    await c.write("queue_select", 1)
    assert await c.read("queue_size") == 0 and await c.read("queue_enable") == 0
    await c.write("queue_enable", 1)
    await drv.kick(0)
    await tb.cycles(3)
    assert [q for _, q in tb.engine.notifies] == [0] and len(tb.engine.configs) == 1
    tb.engine.raise_irq(0)
    await tb.cycles(10)
    assert await drv.read_isr() == ISR_QUEUE
    await drv.reset()
    await c.write("queue_select", 0)
    assert await c.read("queue_enable") == 0 and await c.read("queue_size") == 1


# -- pytest launchers --------------------------------------------------------------------------

GROUPS = {
    "linux":     ["run_linux_modern_probe", "run_linux_vector_fallback", "run_linux_shrunk_queue"],
    "common":    ["run_rule_20_64bit_halves", "run_rule_21_feature_windows",
                  "run_rule_22_driver_features", "run_rule_23_config_generation",
                  "run_rule_27_missing_queue", "run_rule_28_queue_size",
                  "run_rule_30_read_only_and_ignored", "run_rule_31_common_length",
                  "run_rule_32_notify_off", "run_rule_50_access_widths"],
    "status":    ["run_rule_24_reset_completes", "run_rule_24_reset_bounded",
                  "run_rule_25_queue_enable_after_reset", "run_rule_26_queue_reset",
                  "run_rule_26_reset_follows_enable",
                  "run_rule_60_nothing_before_driver_ok", "run_rule_61_needs_reset",
                  "run_rule_62_status_bits_stick", "run_rule_63_features_ok_refusal",
                  "run_rule_65_no_suspend", "run_rule_66_features_frozen",
                  "run_rule_72_version_1_required", "run_rule_73_latch_at_enable",
                  "run_rule_74_ring_alignment",
                  "run_rule_73_engine_backpressure"],
    "interrupts": ["run_rule_35_doorbells", "run_rule_35_notification_data",
                   "run_rule_36_spurious_doorbells",
                   "run_rule_39_config_isr_first", "run_rule_40_intx",
                   "run_rule_42_isr_read_clears", "run_rule_43_both_causes",
                   "run_rule_44_config_before_features_ok", "run_rule_47_config_interrupt",
                   "run_rule_53_vector_mapping", "run_rule_56_no_vector_no_interrupt"],
    "robustness": ["run_access_storm", "run_figures"],
}
SMALL_TESTS = ["run_single_queue_function"]


@pytest.fixture(scope="module")
def modern_design():
    return harness.build(TransportTop, MODERN_PARAMS, name="transport_modern")


@pytest.mark.sim
@pytest.mark.parametrize("group", list(GROUPS))
def test_transport(simulate, modern_design, group):
    simulate(modern_design, "test_transport", testcase=GROUPS[group])


@pytest.mark.sim
@pytest.mark.slow
def test_transport_single_queue(simulate):
    design = harness.build(TransportTop, SMALL_PARAMS, name="transport_single_queue")
    simulate(design, "test_transport", testcase=SMALL_TESTS)


def test_groups_cover_every_cocotb_test():
    names = {name for name in globals() if name.startswith("run_")}
    grouped = [name for group in GROUPS.values() for name in group] + SMALL_TESTS
    assert sorted(grouped) == sorted(names) and len(set(grouped)) == len(grouped)
