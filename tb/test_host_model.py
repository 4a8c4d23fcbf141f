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
)
from virtio_pcie_tb import harness
from virtio_pcie_tb.codec import codec
from virtio_pcie_tb.designs.minimal_endpoint import MinimalEndpoint
from virtio_pcie_tb.host import (
    BlkRequest, HostMemory, IrqMode, PciFunction, ProbeError, VirtioBlkDriver,
    VirtioNetDriver, bind_driver,
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


@cocotb.test()
@cocotb.parametrize(mode=["shared", "intx"], profile=["linux-6.12", "linux-7"])
async def run_blk_irq_modes(dut, mode, profile):
    """Forced interrupt modes: MSI-X with a shared queue vector, and INTx with the read-to-clear
    ISR (MSI-X stays disabled, the line deasserts after each ISR read)."""
    tb, fn, pdev = await blk_setup(dut, backend=RamDisk(sectors=1024, num_queues=2))
    irq_mode = IrqMode.MSIX_SHARED if mode == "shared" else IrqMode.INTX
    blk = VirtioBlkDriver(irq_mode=irq_mode)
    vdev = await bind_driver(pdev, blk, memory=tb.memory, profile=profile)
    assert vdev.transport.irq_mode == irq_mode
    assert len(blk.queues) == 2
    rng = random.Random(2)
    for queue in (0, 1):
        data = rng.randbytes(4096)
        await blk.write(64 * queue, data, queue=queue)
        assert await blk.read(64 * queue, 8, queue=queue) == data
    if mode == "shared":
        assert pdev.msix_enabled and len(pdev.msix_vectors) == 2
        assert pdev.msix_vectors[1].count >= 4     # both queues on vector 1
        assert all(q.msix_vector == 1 for q in fn.queues)
        assert fn.config_msix_vector == 0
    else:
        assert not pdev.msix_enabled and not fn.msix_enabled
        assert pdev.irq.count >= 4 and pdev.irq.unhandled == 0
        assert not fn.intx.asserted and fn.isr == 0
        assert all(q.msix_vector == 0xFFFF for q in fn.queues)
    assert not fn.errors, fn.errors


@cocotb.test()
@cocotb.parametrize(profile=["linux-6.12", "linux-7"])
async def run_blk_vector_ladder(dut, profile):
    """vp_find_vqs as Linux: a table too small for one vector per queue falls back to 2 shared
    vectors (linux-7 tries SHARED_SLOW first); a device that cannot map vectors (read back
    NO_VECTOR) falls back further; no MSI-X at all ends on INTx."""
    # 4 queues need 5 vectors; the table has 3
    tb, fn, pdev = await blk_setup(dut, backend=RamDisk(num_queues=4),
                                   fn_args={"msix_vectors": 3})
    blk = VirtioBlkDriver()
    vdev = await bind_driver(pdev, blk, memory=tb.memory, profile=profile)
    tried = [mode for mode, _ in vdev.transport.find_vqs_attempts]
    if profile == "linux-6.12":
        assert tried == [IrqMode.MSIX_EACH, IrqMode.MSIX_SHARED]
    else:
        assert tried == [IrqMode.MSIX_EACH, IrqMode.MSIX_SHARED_SLOW, IrqMode.MSIX_SHARED]
    assert [e.errno for _, e in vdev.transport.find_vqs_attempts[:-1]] == ["ENOSPC"] * \
        (len(tried) - 1)
    await check_blk_io(blk, fn.backend, random.Random(3), sectors=(5,), count=2)

    # the device maps only vector 0: the queue vector reads back NO_VECTOR -> -EBUSY, unwound
    # without a reset, retried; SHARED also needs vector 1 -> INTx
    fn2 = py_virtio_function(RamDisk(), interface="modern")
    fn2.vector_limit = 1
    tb.attach(fn2)
    await tb.rc.enumerate()
    pdev2 = await tb.pci_function(fn2)
    blk2 = VirtioBlkDriver(scan=False)
    vdev2 = await bind_driver(pdev2, blk2, memory=tb.memory, profile=profile)
    assert vdev2.transport.irq_mode == IrqMode.INTX
    assert all(e.errno == "EBUSY" for _, e in vdev2.transport.find_vqs_attempts[:-1])
    assert fn2.resets == 1        # only register_virtio_device's reset
    assert not pdev2.msix_enabled and fn2.config_msix_vector == 0xFFFF
    await check_blk_io(blk2, fn2.backend, random.Random(4), sectors=(9,), count=1)

    # no MSI-X capability at all: straight to INTx
    fn3 = py_virtio_function(RamDisk(), interface="modern", msix_vectors=0)
    tb.attach(fn3)
    await tb.rc.enumerate()
    pdev3 = await tb.pci_function(fn3)
    blk3 = VirtioBlkDriver(scan=False)
    vdev3 = await bind_driver(pdev3, blk3, memory=tb.memory, profile=profile)
    assert vdev3.transport.irq_mode == IrqMode.INTX
    n_policies = len(vdev3.profile.vector_policies)
    assert [e.errno for _, e in vdev3.transport.find_vqs_attempts[:-1]] == \
        ["EINVAL"] * n_policies
    await check_blk_io(blk3, fn3.backend, random.Random(5), sectors=(11,), count=1)
    for f in (fn, fn2, fn3):
        assert not [e for e in f.errors if "refusing" in e], f.errors


@cocotb.test()
@cocotb.parametrize(irq=["msix", "intx"])
async def run_blk_legacy(dut, irq):
    """A legacy-only device: the modern probe leaves it ("leaving for legacy driver"), the
    legacy probe takes it: 32-bit features, QUEUE_PFN rings aligned to 4096, byte-wise config
    (moving by 4 bytes with MSI-X), no FEATURES_OK, single-read reset."""
    fn_args = {} if irq == "msix" else {"msix_vectors": 0}
    tb, fn, pdev = await blk_setup(dut, interface="legacy", fn_args=fn_args)
    blk = VirtioBlkDriver()
    vdev = await bind_driver(pdev, blk, memory=tb.memory, profile="linux-6.12")
    assert vdev.transport.is_legacy
    assert ("info", "virtio_pci: leaving for legacy driver") in pdev.dmesg
    assert vdev.status_trace == [0, 1, 3, 7]
    assert not vdev.features >> 32
    assert vdev.transport.irq_mode == (IrqMode.MSIX_EACH if irq == "msix" else IrqMode.INTX)
    assert blk.capacity == 2048 and fn.legacy_active
    q = fn.queues[0]
    assert q.desc % 4096 == 0 and q.device % 4096 == 0 and q.device > q.driver
    await check_blk_io(blk, fn.backend, random.Random(6))
    assert not fn.errors, fn.errors


@cocotb.test()
async def run_blk_transitional(dut):
    """A transitional device is driven through its modern interface, or through the legacy one
    with force_legacy (the module parameter)."""
    tb, fn, pdev = await blk_setup(dut, interface="transitional")
    blk = VirtioBlkDriver(scan=False)
    vdev = await bind_driver(pdev, blk, memory=tb.memory)
    assert not vdev.transport.is_legacy and vdev.status_trace == LINUX_STATUS_SEQUENCE
    await check_blk_io(blk, fn.backend, random.Random(7), sectors=(1,), count=1)
    await vdev.remove()
    assert await vdev.get_status() == S.ACKNOWLEDGE.value     # (the read flushes the write)
    assert fn.status == S.ACKNOWLEDGE.value
    fn2 = py_virtio_function(RamDisk(), interface="transitional")
    tb.attach(fn2)
    await tb.rc.enumerate()
    pdev2 = await tb.pci_function(fn2)
    blk2 = VirtioBlkDriver(scan=False)
    vdev2 = await bind_driver(pdev2, blk2, memory=tb.memory, force_legacy=True)
    assert vdev2.transport.is_legacy
    await check_blk_io(blk2, fn2.backend, random.Random(8), sectors=(3,), count=1)
    assert not fn.errors and not fn2.errors


@cocotb.test()
async def run_blk_ring_corner_cases(dut):
    """16-bit index wrap (rings started at 0xFFF0), a full ring (requests wait, then go),
    no INDIRECT_DESC (queue depth halved, direct chains), no EVENT_IDX (NO_NOTIFY/NO_INTERRUPT
    flags), and a capacity change seen through the generation loop."""
    backend = RamDisk(sectors=4096, queue_size=16, indirect=False, event_idx=False, seg_max=14)
    tb, fn, pdev = await blk_setup(dut, backend=backend)
    fn.set_start_index(0xFFF0)
    blk = VirtioBlkDriver(scan=False)
    vdev = await bind_driver(pdev, blk, memory=tb.memory,
                             transport_options={"start_index": 0xFFF0})
    assert not vdev.features & (1 << VirtioF.INDIRECT_DESC)
    assert blk.queue_depth == 8
    rng = random.Random(9)
    payloads = [rng.randbytes(4096) for _ in range(24)]
    reqs = [await blk.submit(BlkRequest(VirtioBlkReqType.OUT, 8 * i, payload=p))
            for i, p in enumerate(payloads)]
    for req in reqs:
        assert await with_timeout(req.wait(), 200, "us") == VirtioBlkStatus.OK.value
    vq = blk.queues[0].vq
    assert vq.stats.enospc > 0 and vq.stats.indirect == 0
    assert vq.last_used_idx == (0xFFF0 + 24) & 0xFFFF       # wrapped
    for i, p in enumerate(payloads):
        assert await blk.read(8 * i, 8) == p
    # capacity change: config interrupt, generation bumped, the driver re-reads it
    backend.resize(8192)
    for _ in range(100):
        await Timer(1, "us")
        if blk.capacity == 8192:
            break
    assert blk.capacity == 8192 and fn.config_generation > 0
    # a change between the two 32-bit halves of the capacity: the generation differs, so the
    # driver reads both halves again and never sees a torn value (virtio-checklist §1.F 46)
    reads = []
    real_read = fn._read_device

    async def racing_read(off, length):
        value = await real_read(off, length)
        reads.append((off, length))
        if len(reads) == 1:
            backend.sectors = 0x1_0000_0010          # low half now stale
            fn.config_changed(interrupt=False)
        return value
    fn._read_device = racing_read
    from virtio_pcie.spec.virtio import VirtioBlkConfig
    assert await vdev.cread(VirtioBlkConfig, "capacity") == 0x1_0000_0010
    assert reads == [(0, 4), (4, 4)] * 2
    fn._read_device = real_read
    assert not fn.errors, fn.errors


@cocotb.test()
async def run_blk_bad_used_ring(dut):
    """A device that returns an id that is not a head: Linux marks the queue broken."""
    tb, fn, pdev = await blk_setup(dut)
    blk = VirtioBlkDriver(scan=False)
    await bind_driver(pdev, blk, memory=tb.memory)
    vq = blk.queues[0].vq
    # write a bogus used element (id 5, never made available) and bump used->idx by hand
    used = vq.used_addr - vq.ring.addr
    vq.ring.write_int(used + 4, 4, 5)
    vq.ring.write_int(used + 2, 2, 1)
    assert vq.get_buf() is None and vq.broken and "is not a head" in vq.broken_reason


# -- virtio-net ----------------------------------------------------------------------------------

def frame(rng, dst, src, size):
    return dst + src + b"\x08\x00" + rng.randbytes(size - 14)


async def net_setup(dut, *, interface="modern", backend=None, fn_args=None):
    tb = HostTB(dut)
    backend = backend or NetBackend()
    fn = py_virtio_function(backend, interface=interface, **(fn_args or {}))
    await tb.start(fn)
    pdev = await tb.pci_function(fn)
    return tb, fn, pdev


async def check_loopback(net, backend, rng, *, count=8, sizes=(60, 1514), queue=0, frags=None):
    for i in range(count):
        size = sizes[i % len(sizes)]
        f = frame(rng, net.mac, b"\x02\x00\x00\x00\x00\x01", size)
        await net.send(f, queue=queue, frags=frags)
        pkt = await net.recv(queue, timeout_ns=200_000)
        assert pkt.frame == f, (len(pkt.frame), len(f))
    return pkt


@cocotb.test()
@cocotb.parametrize(profile=["linux-6.12", "linux-7"], mode=["mergeable", "small", "big"])
async def run_net_modern(dut, profile, mode):
    """virtio-net through MSI-X per queue: MAC from config, control queue without a vector
    (busy-polled), RX buffers in the three Linux modes, TX with the header pushed in front,
    RX-mode commands at open, a link-down/up cycle through configuration interrupts."""
    backend = NetBackend(mrg_rxbuf=mode == "mergeable", mtu=9000 if mode == "big" else None,
                         queue_size=64)
    tb, fn, pdev = await net_setup(dut, backend=backend)
    net = VirtioNetDriver(mc_addrs=[b"\x33\x33\x00\x00\x00\x01"])
    vdev = await bind_driver(pdev, net, memory=tb.memory, profile=profile)
    assert vdev.status_trace == LINUX_STATUS_SEQUENCE
    assert vdev.transport.irq_mode == IrqMode.MSIX_EACH
    assert net.mac == backend.mac
    # the link state arrives through the config-change work queued during probe
    await with_timeout(net.wait_link(True), 100, "us")
    assert net.mergeable == (mode == "mergeable") and net.big_packets == (mode == "big")
    # control queue: created without callback, so no vector, NO_INTERRUPT semantics
    assert fn.queues[2].msix_vector == 0xFFFF and net.cvq.callback is None
    await net.open()
    cmds = [(c, d) for c, d, _, _ in backend.commands]
    assert cmds == [(0, 0), (0, 1), (1, 0)]          # PROMISC, ALLMULTI, MAC_TABLE_SET
    assert backend.promisc is False and backend.mc_table == [b"\x33\x33\x00\x00\x00\x01"]
    rx_vq = net.rx[0].vq
    assert rx_vq.use_ctx == (mode != "big") and rx_vq.num_free == 0
    rng = random.Random(10)
    sizes = (60, 1514, 8000) if mode == "big" else (60, 1514)
    await check_loopback(net, backend, rng, count=6, sizes=sizes)
    if mode == "mergeable":
        # a frame larger than one buffer (as with GRO on the device side): 3 buffers,
        # num_buffers = 3, published with one used-index update
        big = frame(rng, net.mac, b"\x02" * 6, 4000)
        backend.deliver(big)
        pkt = await net.recv(0, timeout_ns=200_000)
        assert pkt.frame == big and pkt.hdr["num_buffers"] == 3 and pkt.buffers == 3
    # filtered: another unicast address is dropped by the device
    await net.send(frame(rng, b"\x02\x99\x99\x99\x99\x99", b"\x02" * 6, 100))
    await Timer(20, "us")
    assert backend.dropped and backend.dropped[-1][2] == "filtered"
    # link down/up: configuration interrupts on vector 0
    backend.set_link(False)
    await with_timeout(net.wait_link(False), 100, "us")
    backend.set_link(True)
    await with_timeout(net.wait_link(True), 100, "us")
    assert pdev.msix_vectors[0].count >= 2
    assert net.rx[0].stats["drops"] == 0
    assert not fn.errors, fn.errors


@cocotb.test()
@cocotb.parametrize(irq=["shared", "intx"])
async def run_net_mq(dut, irq):
    """Multiqueue: every pair created, MQ_VQ_PAIRS_SET at probe, traffic on each pair; then
    the pairs reduced to 1 with a control command."""
    backend = NetBackend(max_pairs=3, queue_size=32)
    tb, fn, pdev = await net_setup(dut, backend=backend)
    net = VirtioNetDriver(num_cpus=2, tx_header="separate",
                          irq_mode=IrqMode.MSIX_SHARED if irq == "shared" else IrqMode.INTX)
    await bind_driver(pdev, net, memory=tb.memory, profile="linux-7")
    assert len(net.rx) == 3 and net.curr_queue_pairs == 2 and backend.curr_pairs == 2
    assert backend.commands[0][:3] == (4, 0, (2).to_bytes(2, "little"))
    await net.open()
    rng = random.Random(11)
    for pair in (0, 1):
        await check_loopback(net, backend, rng, count=3, queue=pair, frags=[20, 30])
    assert await net.set_queues(1) and backend.curr_pairs == 1
    assert not await net.set_queues(4)                  # beyond max_virtqueue_pairs: ERR
    assert net.commands[-1] == (4, 0, False)
    if irq == "intx":
        assert pdev.irq.count > 0 and not pdev.msix_enabled
    assert not fn.errors, fn.errors


@cocotb.test()
async def run_net_legacy(dut):
    """Legacy virtio-net: 10-byte header (no MRG_RXBUF), header in its own descriptor
    (any_header_sg needs ANY_LAYOUT, which the legacy table has), byte-wise MAC read."""
    backend = NetBackend(mrg_rxbuf=False, queue_size=32)
    tb, fn, pdev = await net_setup(dut, interface="legacy", backend=backend)
    net = VirtioNetDriver()
    vdev = await bind_driver(pdev, net, memory=tb.memory)
    assert vdev.transport.is_legacy and net.hdr_len == 10
    assert net.any_header_sg       # ANY_LAYOUT offered by the transitional device
    assert net.mac == backend.mac
    await net.open()
    await check_loopback(net, backend, random.Random(12), count=4)
    assert not fn.errors, fn.errors


@cocotb.test()
async def run_net_features(dut):
    """virtnet_validate: CTRL_RX without CTRL_VQ fails the probe (FAILED set); an MTU below 68
    is dropped from the features (written again); without MAC a random local MAC is used."""
    from virtio_pcie.spec.virtio import VirtioNetF, feature_mask
    backend = NetBackend(ctrl_vq=False, extra_features=feature_mask(VirtioNetF.CTRL_RX))
    tb, fn, pdev = await net_setup(dut, backend=backend)
    with pytest.raises(ProbeError) as e:
        await bind_driver(pdev, VirtioNetDriver(), memory=tb.memory)
    assert e.value.errno == "EINVAL"
    assert "advertises feature VIRTIO_NET_F_CTRL_RX but not VIRTIO_NET_F_CTRL_VQ" in str(e.value)
    await Timer(1, "us")       # the FAILED status write is posted
    assert fn.status & S.FAILED.value

    backend2 = NetBackend(mtu=60)
    backend2.offered_features_orig = backend2.offered_features
    fn2 = py_virtio_function(backend2)
    fn2.offered &= ~feature_mask(VirtioNetF.MAC)
    tb.attach(fn2)
    await tb.rc.enumerate()
    pdev2 = await tb.pci_function(fn2)
    pdev2.trace = []
    net = VirtioNetDriver(mac=b"\x00\x11\x22\x33\x44\x55")
    vdev = await bind_driver(pdev2, net, memory=tb.memory)
    assert not vdev.features & feature_mask(VirtioNetF.MTU) and net.mtu == 1500
    assert net.mac == b"\x02\x11\x22\x33\x44\x55"
    assert ("info", "Assigned random MAC address 02:11:22:33:44:55") in pdev2.dmesg
    df = fn2.layout.regions["common"]
    writes = [e for e in pdev2.trace if e[:3] == ("mmio_write", df.bar,
                                                  _COMMON.offset("driver_feature_select"))]
    assert len(writes) == 4          # features written twice (validate changed them)


# -- pytest launchers ---------------------------------------------------------------------------

def _design():
    return harness.build(MinimalEndpoint, {"data_width": 64}, name="minimal_endpoint")


@pytest.mark.sim
def test_host_model_blk(simulate):
    simulate(_design(), "test_host_model", testcase=[
        "run_blk_modern", "run_blk_irq_modes", "run_blk_vector_ladder", "run_blk_legacy",
        "run_blk_transitional", "run_blk_ring_corner_cases", "run_blk_bad_used_ring"])


@pytest.mark.sim
def test_host_model_net(simulate):
    simulate(_design(), "test_host_model", testcase=[
        "run_net_modern", "run_net_mq", "run_net_legacy", "run_net_features"])
