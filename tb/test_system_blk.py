# SPDX-License-Identifier: BSD-2-Clause
"""virtio-blk end to end: the Linux-faithful host model drives the whole RTL device.

::

    VirtioBlkDriver ─► RootComplex ── bridge ══ VirtioPcieDevice(device="blk") ══ AxiRam(disk)
    (host model,       (cocotbext-   (latency,   function · transport · DMA ·      (DiskImage,
     Linux 6.12 / 7)    pcie)         reorder,   virtqueue engine · blk back-end    a file or
                                      RCB split)                                     memory)

The design is the project's main blk build (:data:`MAIN`): 128-bit, modern, four request queues
(MQ), its size taken from the disk image on a ``capacity`` input (so it can change at run time),
and a 48-bit medium address (so capacities beyond 2^32 sectors exist and the 64-bit
``capacity`` field can tear). ``virtio-pcie demo`` runs the same build.

Every request is verified byte for byte against a Python shadow disk
(:class:`~virtio_pcie_tb.blk_workload.BlkWorkload`), and at the end of each test the whole
medium is compared with the shadow. ``SYSBLK_SEED`` changes the random choices.

The legacy interface is in ``test_system_blk_legacy.py``, the 64- and 256-bit builds in
``test_system_blk_widths.py``.
"""

import os
import random

import cocotb
import pytest
from cocotb.triggers import Timer, with_timeout

from system_blk_env import (BRIDGES, IRQ_SETUPS, MAIN, SECTOR, SEED, bind, check_interrupts,
                            irq_setup, run_mix)
from virtio_pcie.spec.virtio import VirtioBlkConfig, VirtioBlkReqType, VirtioBlkStatus
from virtio_pcie_tb.blk_workload import MIX_RW, BlkWorkload
from virtio_pcie_tb.codec import codec
from virtio_pcie_tb.host import BlkRequest, IrqMode
from virtio_pcie_tb.models.disk_image import DiskImage, ShadowDisk
from virtio_pcie_tb.system import SystemTB, build_system

_CFG = codec(VirtioBlkConfig)


# -- cocotb tests --------------------------------------------------------------------------------

@cocotb.test()
async def run_probe_and_io(dut):
    """Linux's probe path binds the device; writes and reads come back intact, at both ends."""
    tb = SystemTB(dut)
    await tb.reset()
    blk, vdev = await bind(tb)
    assert vdev.transport.irq_mode == IrqMode.MSIX_EACH
    capacity = tb.capacity
    shadow = ShadowDisk(tb.image)
    rng = random.Random(SEED)
    for sector, count in ((0, 8), (capacity - 8, 8), (123, 1), (2048, 64)):
        data = rng.randbytes(count * SECTOR)
        await with_timeout(blk.write(sector, data), 2, "ms")
        shadow.write(sector, data)
        got = await with_timeout(blk.read(sector, count), 2, "ms")
        assert got == data, f"sector {sector}: read back differs"
    assert not shadow.mismatches(tb.image.buffer)
    tb.check_bridge()


@cocotb.test()
async def run_request_types(dut):
    """FLUSH, GET_ID, WRITE_ZEROES (with and without UNMAP), DISCARD, refused requests."""
    tb = SystemTB(dut)
    await tb.reset()
    blk, _ = await bind(tb)
    capacity = tb.capacity
    await blk.write(16, b"\xAA" * (8 * SECTOR))
    status = await (await blk.submit(BlkRequest(VirtioBlkReqType.FLUSH, 0))).wait()
    assert status == VirtioBlkStatus.OK.value
    assert await blk.get_id() == "virtio-pcie-blk"
    await blk.write_zeroes([(16, 2)], unmap=False)
    await blk.write_zeroes([(18, 2)], unmap=True)
    assert await blk.read(16, 8) == bytes(4 * SECTOR) + b"\xAA" * (4 * SECTOR)
    await blk.discard([(20, 2)])      # leaves the data (discard_zeroes=False)
    assert await blk.read(20, 4) == b"\xAA" * (4 * SECTOR)
    for req, expect in (
            (BlkRequest(VirtioBlkReqType.IN, capacity, in_length=SECTOR), "IOERR"),
            (BlkRequest(VirtioBlkReqType.OUT, capacity - 1, payload=bytes(2 * SECTOR)),
             "IOERR"),
            (BlkRequest(VirtioBlkReqType.GET_LIFETIME, 0, in_length=16), "UNSUPP")):
        status = await (await blk.submit(req)).wait()
        assert status == VirtioBlkStatus[expect].value, (req, status)
    assert tb.image.read((capacity - 1) * SECTOR, SECTOR) == bytes(SECTOR), \
        "a refused write touched the medium"
    tb.check_bridge()


@cocotb.test()
async def run_longest_request(dut):
    """A request as long as Linux makes them: seg_max data segments plus the header and the
    status, in one indirect table (virtio_ring.c puts every multi-buffer request there). The
    engine once took at most 64 descriptors while the device offered seg_max 126: Linux's first
    large write (mkfs in the co-simulation) made the device fail the queue. One-sector segments
    (a scattered direct-I/O buffer) keep the request short."""
    tb = SystemTB(dut)
    await tb.reset()
    blk, _ = await bind(tb, sg_layout="pages")
    assert blk.sg_elems == 126, blk.sg_elems
    blk.limits["max_segment_size"] = SECTOR
    data = random.Random(4).randbytes(blk.sg_elems * SECTOR)
    await with_timeout(blk.write(2048, data), 1, "ms")
    assert await with_timeout(blk.read(2048, blk.sg_elems), 1, "ms") == data
    assert tb.image.read(2048 * SECTOR, len(data)) == data
    tb.check_bridge()


@cocotb.test()
@cocotb.parametrize(setup=IRQ_SETUPS)
async def run_random_mix(dut, setup):
    """Random mixes of every request type on the four queues, in every interrupt set-up
    Linux's vector ladder reaches, as Linux 6.12 and 7 drive it."""
    profile, mode = irq_setup(setup)
    index = IRQ_SETUPS.index(setup)
    rng = random.Random(SEED * 1000 + index)
    tb = SystemTB(dut, bridge_options=BRIDGES[index % len(BRIDGES)], seed=index)
    await tb.reset()
    blk, vdev = await bind(tb, profile=profile, irq_mode=mode)
    qd = rng.choice([4, 16, 32])
    work = await run_mix(tb, blk, seed=rng.getrandbits(32), requests=60, qd=qd)
    assert len(work.stats.by_queue) == len(blk.queues), work.stats.by_queue
    check_interrupts(vdev, blk)
    tb.log.info("%s %s QD %d: %s", profile, mode.value, qd, work.stats)


@cocotb.test()
async def run_queue_depths(dut):
    """QD 1 on one queue; then more requests in flight than one queue's ring holds (Linux
    halved the rings: ring allocations above a page failed), so the driver waits for space
    (-ENOSPC, BLK_STS_DEV_RESOURCE) while the device works through a full ring."""
    from virtio_pcie_tb.host import vring_size
    ring = 128
    tb = SystemTB(dut)
    await tb.reset()
    blk, vdev = await bind(tb, transport_options={"ring_alloc_limit": vring_size(ring, 64)})
    assert all(q.vq.num == ring for q in blk.queues), [q.vq.num for q in blk.queues]
    work = await run_mix(tb, blk, seed=SEED + 11, requests=24, qd=1, mix=MIX_RW)
    assert work.stats.max_inflight == 1
    work = BlkWorkload(blk, ShadowDisk(tb.image), rng=random.Random(SEED + 12), mix=MIX_RW,
                       sizes={1: 1})
    await with_timeout(work.run(ring + 32, qd=ring + 32, queue=1), 20, "ms")
    work.check(tb.image.buffer)
    assert blk.queues[1].vq.stats.enospc, "the ring never filled up"
    check_interrupts(vdev, blk)
    tb.check_bridge()


@cocotb.test()
async def run_intx_once_per_interrupt(dut):
    """INTx: each interrupt runs the handler once. Reading the ISR clears it and drops the
    line; the device sends Deassert_INTA before that read's completion, so when the driver's
    handler returns the line is already low. (Regression: the completion used to go first and
    every interrupt was followed by a spurious one that found the ISR empty, IRQ_NONE: half
    of all INTx interrupts.)"""
    tb = SystemTB(dut)
    await tb.reset()
    blk, vdev = await bind(tb, irq_mode=IrqMode.INTX)
    irq = vdev.pdev.irq
    before = irq.count
    messages = len(tb.bridge.intx_messages)
    requests = 6
    for i in range(requests):         # QD 1: one completion, one interrupt each
        await with_timeout(blk.write(8 * i, bytes([i + 1]) * (8 * SECTOR)), 1, "ms")
        await Timer(1, "us")
    assert irq.unhandled == 0, f"{irq.unhandled} of {irq.count} INTx interrupts found no work"
    assert irq.count - before == requests, (irq.count, before)
    kinds = [kind for _, kind, _ in tb.bridge.intx_messages[messages:]]
    assert kinds == ["assert", "deassert"] * requests, kinds
    tb.check_bridge()


@cocotb.test()
@cocotb.parametrize(mode=[IrqMode.MSIX_EACH, IrqMode.INTX])
async def run_capacity_change(dut, mode):
    """The disk grows at run time: the device raises a configuration interrupt, the driver
    re-reads the capacity (virtblk_config_changed_work), and I/O reaches the new sectors,
    which were refused before."""
    full = 16384
    tb = SystemTB(dut, image=DiskImage(sectors=full))
    tb.set_capacity(full // 2)
    await tb.reset()
    blk, vdev = await bind(tb, irq_mode=mode)
    assert blk.capacity == full // 2
    req = await blk.submit(BlkRequest(VirtioBlkReqType.IN, full // 2, in_length=8 * SECTOR))
    assert await req.wait() == VirtioBlkStatus.IOERR.value
    changes = vdev.config_changes
    tb.set_capacity(full)
    for _ in range(200):
        if blk.capacity == full:
            break
        await Timer(100, "ns")
    assert vdev.config_changes == changes + 1, (vdev.config_changes, changes)
    assert blk.capacity == full, "the driver did not see the new capacity"
    if mode == IrqMode.INTX:
        assert vdev.transport.config_interrupts == 1
    else:
        assert vdev.pdev.msix_vectors[0].count == 1, "no interrupt on the config vector"
    data = random.Random(SEED).randbytes(8 * SECTOR)
    await blk.write(full - 8, data)
    assert await blk.read(full - 8, 8) == data
    # shrinking is announced the same way
    tb.set_capacity(full // 4)
    for _ in range(200):
        if blk.capacity == full // 4:
            break
        await Timer(100, "ns")
    assert blk.capacity == full // 4 and vdev.config_changes == changes + 2
    tb.check_bridge()


@cocotb.test()
async def run_config_generation(dut):
    """config_generation makes multi-dword reads consistent (virtio 1.2 §4.1.4.3.1): a 64-bit
    capacity changing between the driver's two 32-bit reads is seen as a new generation, and
    Linux's read loop (__virtio_cread_many) returns the new value, never a torn one."""
    tb = SystemTB(dut)
    before = (1 << 32) - 1           # 0x0000_0000_FFFF_FFFF
    after = 1 << 32                  # 0x0000_0001_0000_0000: both halves change
    tb.set_capacity(before)
    await tb.reset()
    blk, vdev = await bind(tb)
    assert blk.capacity == before
    # The driver's own re-read on the configuration interrupt is held back (as Linux holds it
    # while the config core is disabled), so that only the reads below touch the structure.
    vdev.config_core_enabled = False
    t = vdev.transport
    offset = _CFG.offset("capacity")
    # no change, no new generation
    gen0 = await t.generation()
    assert int.from_bytes(await t.get(offset, 4), "little") == before & 0xFFFFFFFF
    assert await t.generation() == gen0, "config_generation moved without a change"
    # the change lands between the two halves: the halves are torn, the generation tells
    lo = int.from_bytes(await t.get(offset, 4), "little")
    tb.set_capacity(after)
    await Timer(20, "ns")
    hi = int.from_bytes(await t.get(offset + 4, 4), "little")
    assert (hi << 32 | lo) not in (before, after), "expected a torn read in this sequence"
    gen1 = await t.generation()
    assert gen1 != gen0, "the capacity changed during the read but config_generation did not"
    assert await t.generation() == gen1
    # the driver's loop gives the new value
    assert await vdev.cread(VirtioBlkConfig, "capacity") == after
    # race the loop itself: change the capacity again in the middle of a cread
    third = (2 << 32) - 1
    trace = []

    async def change_midway():
        while len(trace) < 2:          # the generation and the low half have been read
            await Timer(4, "ns")
        tb.set_capacity(third)
    vdev.pdev.trace = trace
    task = cocotb.start_soon(change_midway())
    got = await vdev.cread(VirtioBlkConfig, "capacity")
    await task
    vdev.pdev.trace = None
    assert got == third, f"cread returned {got:#x}, not the final {third:#x}"
    gens = [e for e in trace if e[0] == "mmio_read" and e[3] == 1]
    assert len(gens) >= 3, f"the generation loop did not retry: {trace}"
    # the interrupts of the two changes were delivered; the driver now catches up
    assert vdev.config_change_pending
    vdev.config_core_enabled = True
    vdev._dispatch_config_change()
    for _ in range(100):
        if blk.capacity == third:
            break
        await Timer(100, "ns")
    assert blk.capacity == third
    tb.check_bridge()


@cocotb.test()
async def run_image_write(dut):
    """First of two simulations: read a user's image (its size is the disk's), write to it."""
    path = os.environ["SYSBLK_IMAGE"]
    with DiskImage(path) as image:
        tb = SystemTB(dut, image=image)
        await tb.reset()
        blk, _ = await bind(tb)
        assert blk.capacity == image.sectors
        rng = random.Random(SEED)
        original = random.Random(int(os.environ["SYSBLK_IMAGE_SEED"]))
        pattern = original.randbytes(image.size)
        assert await blk.read(0, 64) == pattern[:64 * SECTOR], "the image's data is not seen"
        shadow = ShadowDisk(pattern)
        work = BlkWorkload(blk, shadow, rng=rng, mix=MIX_RW)
        await with_timeout(work.run(40, qd=8), 20, "ms")
        work.check(image.buffer)
        await blk.flush()
        image.flush()
        with open(path + ".expect", "wb") as f:
            f.write(bytes(shadow.data))
    tb.check_bridge()


@cocotb.test()
async def run_image_read(dut):
    """Second simulation: the writes of the first are on the image, and read back through
    the device."""
    path = os.environ["SYSBLK_IMAGE"]
    with open(path + ".expect", "rb") as f:
        expect = f.read()
    with DiskImage(path) as image:
        assert image.read(0, image.size) == expect, "the image file lost writes"
        tb = SystemTB(dut, image=image)
        await tb.reset()
        blk, _ = await bind(tb)
        step = 256
        for sector in range(0, image.sectors, step):
            got = await with_timeout(blk.read(sector, step), 2, "ms")
            assert got == expect[sector * SECTOR:(sector + step) * SECTOR], \
                f"sectors {sector}..{sector + step - 1} read back differ"
    tb.check_bridge()


# -- pytest launchers --------------------------------------------------------------------------

@pytest.mark.system
def test_blk_basics(simulate):
    simulate(build_system(MAIN), "test_system_blk",
             testcase=["run_probe_and_io", "run_request_types", "run_longest_request",
                       "run_queue_depths",
                       "run_intx_once_per_interrupt", "run_capacity_change",
                       "run_config_generation"])


@pytest.mark.system
def test_blk_random_mix(simulate):
    simulate(build_system(MAIN), "test_system_blk", testcase=["run_random_mix"])


@pytest.mark.system
def test_blk_image_persists(simulate, sim_dir):
    """A disk image file written in one simulation is read back in the next."""
    sectors = 4096
    path = sim_dir / "disk.img"
    seed = SEED + 77
    path.write_bytes(random.Random(seed).randbytes(sectors * SECTOR))
    env = {"SYSBLK_IMAGE": str(path), "SYSBLK_IMAGE_SEED": str(seed)}
    design = build_system(MAIN)
    simulate(design, "test_system_blk", testcase=["run_image_write"], env=env)
    simulate(design, "test_system_blk", testcase=["run_image_read"], env=env)


@pytest.mark.unit
def test_irq_moderation_parameters():
    """Moderation is on at every width, with the width's low-water mark and holdoff;
    explicit values win (``irq_holdoff=0`` turns it off); bad values are refused with their
    name."""
    from virtio_pcie.top import IRQ_HOLDOFF, IRQ_LOW_WATER, VirtioPcieDevice
    assert VirtioPcieDevice(data_width=64).irq_moderation == (16384, 8)
    assert VirtioPcieDevice(data_width=128).irq_moderation == (8192, 13)
    assert VirtioPcieDevice(data_width=256).irq_moderation == (16384, 17)
    assert all(IRQ_HOLDOFF[w] and IRQ_LOW_WATER[w] for w in (64, 128, 256))
    assert VirtioPcieDevice(data_width=256, irq_holdoff=100,
                            irq_low_water=3).irq_moderation == (100, 3)
    for bad in ({"irq_holdoff": -1}, {"irq_holdoff": 1 << 16}, {"irq_low_water": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            VirtioPcieDevice(**bad)
