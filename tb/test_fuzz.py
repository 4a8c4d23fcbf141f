# SPDX-License-Identifier: BSD-2-Clause
"""Robustness (issue 12): DMA faults during blk requests, and the fuzzer's default campaigns.

::

    VirtioBlkDriver ─► RootComplex ── bridge ══ VirtioPcieDevice(device="blk") ══ AxiRam(disk)
                                        ▲
                          completion_hook: poisoned / UR / CA / missing completions

``run_blk_dma_faults`` is the directed test of item 4: a DMA error while a request's data is
read ends that request with IOERR and the next request works without a reset; an unreadable
ring stops the queue with DEVICE_NEEDS_RESET, and after a reset a freshly bound driver does
verified I/O. ``run_legacy_disable_avail_event`` and ``test_request_arbiter_withdrawn_request``
are regression tests of fuzz findings (docs/robustness.md), ``test_fuzz_chain_limits`` and
``test_fuzz_memory_bad_size_ring`` of the fuzzer's own. ``test_fuzz`` runs the default
``virtio-pcie fuzz`` campaigns in chunks (the fuzz builds) and requires every run to pass;
``test_fuzz_long`` (``slow``) is issue 12's 10 000-run campaign per device.
"""

import random

import cocotb
import pytest
from cocotb.triggers import Timer, with_timeout
from cocotb.utils import get_sim_time

from virtio_pcie.spec.pcie import CplStatus, FmtType
from virtio_pcie.spec.virtio import (DeviceStatus, VirtioBlkOutHdr, VirtioBlkReqType,
                                     VirtioBlkStatus, VirtioF)
from virtio_pcie_tb.codec import codec
from virtio_pcie_tb.fuzz.rings import RawQueue
from virtio_pcie_tb.host import BlkRequest, VirtioBlkDriver
from virtio_pcie_tb.models.tlp import RawTlp
from virtio_pcie_tb.system import SystemTB

SECTOR = 512
OK, IOERR = VirtioBlkStatus.OK.value, VirtioBlkStatus.IOERR.value
_HDR = codec(VirtioBlkOutHdr)


class _ReadFault:
    """Completion hook: the device's memory reads that ``select(request, completion)`` picks
    (at their first completion) are answered ``kind`` ("poison", "ur", "ca" or "drop"), for
    ``limit`` requests."""

    def __init__(self, bridge, kind, select, limit=1):
        self.bridge, self.kind, self.select, self.limit = bridge, kind, select, limit
        self.hit = set()

    def __call__(self, request, cpl):
        key = id(request)
        if key not in self.hit:
            if len(self.hit) >= self.limit or not self.select(request, cpl):
                return cpl
            self.hit.add(key)
        if self.kind == "drop":
            return []
        if self.kind == "poison":
            out = RawTlp(cpl.hdr, cpl.payload)
            out["dw0.ep"] = 1
            return [out]
        out = RawTlp(cpl.hdr)
        out["dw0.fmt_type"] = FmtType.CPL.value
        out["dw0.length"] = 0
        out["cpl.status"] = (CplStatus.UR if self.kind == "ur" else CplStatus.CA).value
        out["cpl.byte_count"] = 4
        return [out] if self.bridge._is_final(cpl) else []


def _ring_span(vq):
    """The part of a ring the device reads: descriptor table and available ring."""
    return vq.desc_addr, vq.used_addr


async def _status_until(vdev, bit, timeout_ns=200_000):
    started = get_sim_time("ns")
    while not (status := await vdev.get_status()) & bit:
        assert get_sim_time("ns") - started < timeout_ns, f"device_status {status:#x}"
        await Timer(500, "ns")
    return status


@cocotb.test()
async def run_blk_dma_faults(dut):
    """A poisoned, UR, CA or missing completion for a request's data ends the request with
    IOERR and later requests work; an unreadable ring sets DEVICE_NEEDS_RESET, and after a
    reset a newly bound driver does verified I/O."""
    tb = SystemTB(dut)
    await tb.reset()
    rng = random.Random(12)
    blk = VirtioBlkDriver(scan=False)
    vdev = await with_timeout(tb.bind(blk), 2, "ms")
    vq = blk.queues[0].vq
    lo, hi = _ring_span(vq)
    bridge = tb.bridge
    # -- the data of a write, then of a read: IOERR, nothing else disturbed --------------------
    for kind in ("poison", "ur", "ca", "drop"):
        for typ in (VirtioBlkReqType.OUT, VirtioBlkReqType.IN):
            sector = rng.randrange(0, 1000)
            if typ == VirtioBlkReqType.OUT:
                # the data the device fetches for a write
                data = rng.randbytes(8 * SECTOR)
                req = BlkRequest(typ, sector, payload=data)
                pick = (lambda r, c, data=data: len(c.payload) >= 16 and
                        bytes(c.payload[:16]) in data)
            else:
                # a read fetches only its header (type IN, this sector)
                hdr = _HDR.pack(type=typ.value, reserved=0, sector=sector)
                req = BlkRequest(typ, sector, in_length=8 * SECTOR)
                pick = (lambda r, c, hdr=hdr: hdr in bytes(c.payload))
            bridge.completion_hook = _ReadFault(bridge, kind, pick)
            status = await with_timeout((await blk.submit(req)).wait(), 200, "us")
            assert status == IOERR, (kind, typ, status)
            assert bridge.completion_hook.hit, (kind, typ)
            bridge.completion_hook = None
            assert not await vdev.get_status() & DeviceStatus.DEVICE_NEEDS_RESET.value
            data = rng.randbytes(8 * SECTOR)
            await with_timeout(blk.write(sector, data), 200, "us")
            assert await with_timeout(blk.read(sector, 8), 200, "us") == data, (kind, typ)
    # -- the ring itself unreadable: DEVICE_NEEDS_RESET, then reset and a new driver -----------
    bridge.completion_hook = _ReadFault(bridge, "ur", lambda r, c: lo <= r.address < hi,
                                        limit=4)
    stuck = await blk.submit(BlkRequest(VirtioBlkReqType.IN, 5, in_length=SECTOR))
    await _status_until(vdev, DeviceStatus.DEVICE_NEEDS_RESET.value)
    bridge.completion_hook = None
    assert not stuck.done
    await with_timeout(blk.remove(vdev), 200, "us")
    blk = VirtioBlkDriver(scan=False)
    vdev = await with_timeout(tb.bind(blk, memory=tb.memory), 2, "ms")
    assert await vdev.get_status() == 0x0F
    for _ in range(3):
        sector, count = rng.randrange(0, 1000), rng.choice([1, 8, 16])
        data = rng.randbytes(count * SECTOR)
        await with_timeout(blk.write(sector, data), 200, "us")
        assert await with_timeout(blk.read(sector, count), 200, "us") == data
    assert tb.image.read(sector * SECTOR, count * SECTOR) == data
    tb.check_bridge()


@cocotb.test()
async def run_legacy_disable_avail_event(dut):
    """Fuzz finding (blk seed 300, run 122): a legacy driver deactivates a queue
    (``QUEUE_PFN = 0``) while the ring walker waits for its read of ``avail->idx``; the walker
    must not then write ``avail_event`` into the ring the driver has taken back (virtio 1.2
    §2.7.10: the device writes ``avail_event`` only while it owns the ring). The read is held
    2 us by the host, so the deactivation lands between the read and the write that would
    follow it; the link monitor judges every write of the device."""
    from virtio_pcie_tb.fuzz.blk import BlkWorkload
    from virtio_pcie_tb.fuzz.driver import HostileDriver
    from virtio_pcie_tb.fuzz.run import FuzzContext, RunResult

    ctx = FuzzContext(dut, BlkWorkload)
    await ctx.start()
    rng = random.Random(122)
    await ctx.hw_reset(rng)
    ctx.bridge.latency_ns, ctx.bridge.reorder, ctx.bridge.rcb = 0, False, None
    ctx.memory.reset(rng, high_share=1.0)
    ctx.workload.begin_run(rng, RunResult(0, 122))
    drv = HostileDriver(ctx, rng, ctx.workload, legacy=True)
    for cycle in range(3):
        await drv.device_reset()
        await drv.write_status(DeviceStatus.ACKNOWLEDGE.value | DeviceStatus.DRIVER.value)
        offered = await drv.read_features()
        assert offered >> VirtioF.EVENT_IDX & 1
        await drv.write_features(1 << VirtioF.EVENT_IDX)
        await drv._lw("queue_sel", 0)
        size = await drv._lr("queue_num")
        q = RawQueue(ctx.memory, index=0, size=size, rng=rng, monitor=ctx.monitor, legacy=True)
        q.grant_used()
        # The device's reads of the ring are answered 2 us late from now on.
        ctx.bridge.latency_ns = 2000
        await drv._lw("queue_pfn", q.pfn)        # activates the queue: the walker scans it
        await drv._lw("queue_pfn", 0)            # and the driver takes the ring back
        q.revoke_used()
        await Timer(6, "us")
        ctx.bridge.latency_ns = 0
        assert not ctx.monitor.violations, (cycle, ctx.monitor.violations)
        assert not ctx.monitor.overdue(), cycle
    # The device still works: a queue set up again takes a kick and writes avail_event there.
    q = RawQueue(ctx.memory, index=0, size=size, rng=rng, monitor=ctx.monitor, legacy=True)
    q.grant_used()
    writes = ctx.monitor.counts["mwr"]
    await drv._lw("queue_pfn", q.pfn)
    await drv._lw("queue_notify", 0)
    await Timer(3, "us")
    assert ctx.monitor.counts["mwr"] > writes
    assert not ctx.monitor.violations, ctx.monitor.violations


# -- pytest launchers --------------------------------------------------------------------------

#: The default campaigns (seed 2026): ``chunks`` simulator processes of ``runs`` runs each per
#: device, separate tests so that pytest-xdist spreads them over its workers. A run is a fresh
#: device, 8 to 40 hostile actions and a clean Linux-model rebind with verified I/O: about 30 us
#: of simulated time and 0.2 to 0.4 s of CPU on average, up to about 2 s for the busiest runs
#: (the Python models' cost per TLP dominates; docs/robustness.md, "What a run costs").
CAMPAIGN = {"blk": {"chunks": 3, "runs": 40}, "net": {"chunks": 2, "runs": 40}}
CAMPAIGN_SEED = 2026

#: The long campaign of issue 12 (``slow``): runs per device, and simulator processes.
LONG_RUNS, LONG_BATCH, LONG_SEED = 10_000, 200, 12


@pytest.mark.system
def test_blk_dma_faults(simulate):
    from virtio_pcie_tb.fuzz import build_fuzz_design
    simulate(build_fuzz_design("blk"), "test_fuzz", testcase=["run_blk_dma_faults"])


@pytest.mark.system
def test_legacy_disable_avail_event(simulate):
    from virtio_pcie_tb.fuzz import build_fuzz_design
    simulate(build_fuzz_design("blk"), "test_fuzz", testcase=["run_legacy_disable_avail_event"])


def _check(summary, runs):
    result = summary.as_dict()
    assert result["runs"] == runs
    assert not result["failed_runs"], "\n".join(summary.report())
    assert result["hangs"] == result["dma_violations"] == result["corruptions"] == 0
    return result


@pytest.mark.system
@pytest.mark.parametrize("device,chunk", [(d, k) for d, c in CAMPAIGN.items()
                                          for k in range(c["chunks"])])
def test_fuzz(device, chunk, tmp_path):
    from virtio_pcie_tb.fuzz import run_campaign
    runs = CAMPAIGN[device]["runs"]
    summary = run_campaign(device, runs=runs, seed=CAMPAIGN_SEED, first=chunk * runs,
                           batch=runs, out_dir=tmp_path)
    result = _check(summary, runs)
    assert result["requests"] > 0 and result["faults_injected"] > 0


@pytest.mark.system
def test_fuzz_walk_bound(tmp_path):
    """Fuzz finding (net seed 701, run 5784), the fuzzer's, not the device's: a control-queue
    chain looping between descriptors 0xab and 0xf5, in two different 64-descriptor windows,
    cost the walker a host round trip per step (1.27 us at 1 us latency) until the 64-step
    ``max_chain`` limit failed it, about 81 us. 28 transmit chains waited behind it, and the
    tidy-up, which allowed 40 us without a completion, called that a hang. The device was
    working, within its bound; the tidy-up's bound now includes the walks the engine may
    rightly make (``stall_bound_ns``), and the run must pass with the loop reported."""
    from virtio_pcie_tb.fuzz import run_campaign
    from virtio_pcie_tb.fuzz.workload import STALL_NS, stall_bound_ns
    assert stall_bound_ns(queues=3, max_chain=64, latency_ns=1000) > STALL_NS + 64 * 1270
    summary = run_campaign("net", runs=1, seed=701, first=5784, batch=1, out_dir=tmp_path)
    result = _check(summary, 1)
    assert result["errors_reported"] >= 6, "the loop is failed and reported, not ignored"


@pytest.mark.system
def test_fuzz_legacy_deactivation(tmp_path):
    """Fuzz finding (blk seed 702, run 7992), the device's: a legacy driver wrote QUEUE_PFN = 0
    while a completion of that queue was being published. The transport completed the write at
    once; the used->idx write, already queued in the DMA engine, reached host memory 470 ns
    later, after the driver could have freed the ring. The write now completes only once the
    engine has stopped the queue with none of its DMA in flight."""
    from virtio_pcie_tb.fuzz import run_campaign
    summary = run_campaign("blk", runs=1, seed=702, first=7992, batch=1, out_dir=tmp_path)
    _check(summary, 1)


@pytest.mark.system
def test_fuzz_pci_cfg_legacy_write(tmp_path):
    """Fuzz finding (net seed 801, run 6920), the fuzzer's: a modern driver's random
    configuration write into the PCI_CFG window's data reached the legacy I/O BAR (the window
    pointed there), which put the transitional device in legacy mode. A host-memory fault on a
    control-queue ring read then stopped that queue, as it should, but in legacy mode the device
    shows no DEVICE_NEEDS_RESET, and the tidy-up, which did not count the write as a legacy one,
    called the stopped queue a hang. Such a write now makes the driver as blind as a legacy
    write through the I/O BAR does."""
    from virtio_pcie_tb.fuzz import run_campaign
    summary = run_campaign("net", runs=1, seed=801, first=6920, batch=1, out_dir=tmp_path)
    _check(summary, 1)


@pytest.mark.system
def test_fuzz_failed_status(tmp_path):
    """Fuzz finding (blk seed 802, run 8844), the fuzzer's: a random write had set FAILED in
    device_status, without the driver model knowing. The device stops serving its queues once
    the driver has given up on it (its DRIVER_OK towards the engine excludes FAILED), and the
    tidy-up, which looked only for DEVICE_NEEDS_RESET or DRIVER_OK gone, called 59 unserved
    requests a hang. A device with FAILED set owes nothing; a clean driver must still bind
    after reset."""
    from virtio_pcie_tb.fuzz import run_campaign
    summary = run_campaign("blk", runs=1, seed=802, first=8844, batch=1, out_dir=tmp_path)
    _check(summary, 1)


@pytest.mark.system
def test_fuzz_legacy_pfn_random_write(tmp_path):
    """Fuzz finding (blk seed 902, run 2407), the monitor's: a legacy driver's random 5-byte
    I/O write at offset 4 set GUEST_FEATURES (EVENT_IDX among them) and QUEUE_PFN = 3 of queue
    0 right after a reset; the transport activated the queue and the engine, looking at it at
    once, wrote avail_event at the end of that ring's used area, 130 ns after the write. The
    ring is the device's from the QUEUE_PFN write on; the monitor now shadows the legacy header
    from the I/O writes delivered to the device and grants the used ring of a queue a write
    activates, as it shadows the MSI-X table."""
    from virtio_pcie_tb.fuzz import run_campaign
    summary = run_campaign("blk", runs=1, seed=902, first=2407, batch=1, out_dir=tmp_path)
    _check(summary, 1)


@pytest.mark.system
def test_fuzz_msix_address_low_bits(tmp_path):
    """Fuzz finding (net seed 801, run 9234), the monitor's: a random 64-byte write into the
    MSI-X table left 0x...d5 in an entry's Message Address. The device sends the message to
    0x...d4 (bits 1:0 only keep it DWORD aligned, PCIe Base 4.0 §7.7.2.6), and the monitor,
    which matched addresses exactly, reported a write outside every granted region."""
    from virtio_pcie_tb.fuzz import run_campaign
    summary = run_campaign("net", runs=1, seed=801, first=9234, batch=1, out_dir=tmp_path)
    _check(summary, 1)


@pytest.mark.unit
def test_monitor_legacy_grants_end(monkeypatch):
    """The monitor's grant of a legacy used ring (made when a QUEUE_PFN write activates a
    queue, whoever wrote it) ends when the device says the ring is no longer its own: at the
    completion of the queue's QUEUE_PFN = 0 write, and after a STATUS = 0 write at the
    completion of the next legacy access (the transport holds it until the reset is done);
    both with the grace of a TLP already started. Before, such grants were never withdrawn."""
    from virtio_pcie.spec.pcie import byte_offset
    from virtio_pcie.spec.virtio import (LEGACY_QUEUE_ADDR_SHIFT, VirtioPciLegacyHeader,
                                         legacy_vring_layout)
    from virtio_pcie_tb.fuzz import monitors
    from virtio_pcie_tb.fuzz.monitors import GRACE_NS, LinkMonitor

    now = [0]
    monkeypatch.setattr(monitors, "get_sim_time", lambda unit="ns": now[0])

    class Bridge:
        tx_monitors, rx_monitors = [], []

    io_base = 0xC000
    mon = LinkMonitor(Bridge(), bars={2: (io_base, 256)},
                      msix={"vectors": 2, "pos": 0, "bir": 1, "table": 0}, pci_cfg_pos=None)
    mon.watch_legacy(bar=2, max_queue_size=256)
    to_device, from_device = Bridge.rx_monitors[0], Bridge.tx_monitors[0]
    legacy = codec(VirtioPciLegacyHeader)

    def io(fmt, field, value, tag):
        off = byte_offset(VirtioPciLegacyHeader, field)
        t = RawTlp(payload=(value << 8 * (off % 4)).to_bytes(4, "little")
                   if fmt == FmtType.IOWR else b"")
        t["dw0.fmt_type"] = fmt.value
        t["dw0.length"] = 1
        t["req.first_be"] = ((1 << legacy.field_size(field)) - 1) << off % 4
        t["req.tag"] = tag
        t["req.dw2"] = io_base + off - off % 4
        to_device(t)

    def cpl(tag):
        t = RawTlp()
        t["dw0.fmt_type"] = FmtType.CPL.value
        t["cpl.tag"] = tag
        from_device(t)

    def used_write(page):
        _, _, used = legacy_vring_layout(page << LEGACY_QUEUE_ADDR_SHIFT, 256)
        t = RawTlp(payload=bytes(8))
        t["dw0.fmt_type"] = FmtType.MWR64.value
        t["dw0.length"] = 2
        t["req.first_be"], t["req.last_be"] = 0xF, 0xF
        t["req.dw3"] = used
        before = len(mon.violations)
        from_device(t)
        return len(mon.violations) == before

    # QUEUE_PFN = 0: the ring is the device's until the write completes, plus the grace
    io(FmtType.IOWR, "queue_sel", 1, tag=1)
    io(FmtType.IOWR, "queue_pfn", 3, tag=2)
    assert used_write(3)
    io(FmtType.IOWR, "queue_pfn", 0, tag=3)
    now[0] = 1000
    assert used_write(3)                       # the write has not completed
    cpl(3)
    now[0] += GRACE_NS
    assert used_write(3)
    now[0] += 1
    assert not used_write(3)
    assert mon.violations[-1][0] == "write"

    # STATUS = 0: the grant ends at the completion of the next legacy access
    io(FmtType.IOWR, "queue_sel", 0, tag=4)
    io(FmtType.IOWR, "queue_pfn", 5, tag=5)
    io(FmtType.IOWR, "status", 0, tag=6)
    cpl(6)
    now[0] += 10_000
    assert used_write(5)                       # the reset may still be running
    io(FmtType.IORD, "status", 0, tag=7)       # held until the reset has completed
    now[0] += 5_000
    assert used_write(5)
    cpl(7)
    now[0] += GRACE_NS + 1
    assert not used_write(5)
    # a queue activated again after the reset is the device's again
    io(FmtType.IOWR, "queue_pfn", 5, tag=8)
    assert used_write(5)


@pytest.mark.slow
@pytest.mark.system
@pytest.mark.parametrize("device", ["blk", "net"])
def test_fuzz_long(device, tmp_path):
    """Issue 12's campaign: 10 000 runs per device, 0 hangs, 0 DMA violations, 0 corruptions.
    About 0.3 s (blk) and 0.25 s (net) per run on an idle core, about 50 and 42 minutes per
    device (docs/robustness.md, "What a run costs"); ``virtio-pcie fuzz
    --device D --runs 10000 --seed 12 --json`` is the same from the command line."""
    from virtio_pcie_tb.fuzz import run_campaign
    summary = run_campaign(device, runs=LONG_RUNS, seed=LONG_SEED, batch=LONG_BATCH,
                           out_dir=tmp_path)
    _check(summary, LONG_RUNS)


@pytest.mark.unit
def test_request_arbiter_withdrawn_request():
    """Fuzz finding (net seed 200, run 23): the transmit fetch offered a DMA read the read
    engine could not take yet, then a device reset withdrew it. The arbiter stayed locked on
    that client, so no client's read was ever taken again: after the reset the control queue's
    commands never completed. A withdrawn request must release the arbiter."""
    from amaranth.sim import Simulator

    from virtio_pcie.dma.interface import DmaReadRequest
    from virtio_pcie.dma.request_arbiter import DmaRequestArbiter

    dut = DmaRequestArbiter(layout=DmaReadRequest, clients=3)
    taken = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i[1].valid, 1)
        ctx.set(dut.i[1].payload.len, 64)
        await ctx.tick().repeat(2)           # offered, not taken: the arbiter locks on it
        ctx.set(dut.i[1].valid, 0)           # withdrawn
        ctx.set(dut.i[0].valid, 1)
        ctx.set(dut.i[0].payload.len, 16)
        ctx.set(dut.o.ready, 1)
        for _ in range(4):
            await ctx.tick()
            if ctx.get(dut.i[0].ready):
                taken.append(ctx.get(dut.o.payload.client))
                break

    sim = Simulator(dut)
    sim.add_clock(4e-9)
    sim.add_testbench(bench)
    sim.run()
    assert taken == [0], "client 0's request was never taken after client 1 withdrew its own"


@pytest.mark.unit
@pytest.mark.parametrize("device", ["blk", "net"])
def test_fuzz_chain_limits(device):
    """Fuzz finding (blk seed 600, runs 5 and 287), the fuzzer's, not the device's: the hostile
    driver took the engine's chain limits from ``engine_options`` with the engine's defaults
    (64 / 64), but the blk design raises them to cover ``seg_max`` (129 / 128). Its
    "oversized" indirect table of 65 entries was legal, the device rightly used the chain and
    returned its head, and the fuzzer, which had not recorded it as outstanding, reported a
    corruption. The limits must be the design's, and the chains malformed as ``too_long`` and
    ``indirect_size`` must exceed them."""
    from virtio_pcie.top import VirtioPcieDevice
    from virtio_pcie_tb.fuzz.campaign import fuzz_params
    from virtio_pcie_tb.fuzz.run import chain_limits
    from virtio_pcie_tb.models.dma_memory import DmaMemory
    from virtio_pcie_tb.models.virtq_ring import (DESC_BYTES, INDIRECT, NEXT, DescAllocator,
                                                  SplitRing, malformed_chain)

    params = fuzz_params(device)
    design = VirtioPcieDevice(**params).chain_limits
    limits = chain_limits(params)
    assert limits == design
    if device == "blk":
        assert limits["max_indirect"] > 64, "the blk design's table limit is above the default"
    rng = random.Random(600)
    for kind in ("indirect_size", "too_long"):
        for _ in range(8):
            memory = DmaMemory()
            ring = SplitRing(memory, 64)
            head = malformed_chain(ring, rng, DescAllocator(64, rng), kind, **limits)
            # walk the chain as the engine counts it: direct descriptors, one table
            count, i, table = 0, head, None
            while True:
                addr, length, flags, nxt = ring.read_desc(i)
                count += 1
                if flags & INDIRECT:
                    table = length // DESC_BYTES
                    count += table
                    break
                if not flags & NEXT:
                    break
                i = nxt
            if kind == "indirect_size":
                assert table > design["max_indirect"], (kind, table, design)
            else:
                assert count > design["max_chain"], (kind, count, design)


@pytest.mark.unit
def test_fuzz_memory_bad_size_ring():
    """Fuzz finding (net seed 2026, run 138), the fuzzer's, not the device's: the hostile
    driver wrote an invalid queue size (say 3) with an 8-entry ring; the device ignored the
    size, as it may, and the enable took the queue at its size of 256. The driver had granted
    the 2054-byte used ring of that size but allocated only the 70 bytes of its own, so the
    device's legitimate `avail_event` write at the ring's end (used + 0x804) zeroed two bytes
    of a transmit frame allocated there later, which came back "never transmitted". The
    driver now keeps the whole used ring it gave free (``FuzzMemory.extend``)."""
    from virtio_pcie.spec.virtio import virtq_used_size
    from virtio_pcie_tb.fuzz.memory import FuzzMemory

    class _Region:
        def __init__(self, size):
            self.mem = bytearray(size)

        def get_absolute_address(self, offset):
            return 0x10_0000 + offset

    class _Rc:
        class mem_pool:                                          # noqa: N801
            alloc_region = _Region

        class mem_address_space:                                 # noqa: N801
            @staticmethod
            def register_region(region, base):
                pass

    memory = FuzzMemory(_Rc, size=1 << 16, rng=random.Random(138))
    memory.reset(random.Random(138))
    used = memory.alloc_addr(virtq_used_size(8), 4)
    memory.extend(used, virtq_used_size(8), virtq_used_size(256))
    avail_event = used + virtq_used_size(256) - 2
    for _ in range(64):                       # later allocations, in either block
        addr = memory.alloc_addr(984, 2)
        assert not addr <= avail_event < addr + 984 and \
            not used <= addr < used + virtq_used_size(256), (hex(addr), hex(used))
    with pytest.raises(ValueError, match="not the last allocation"):
        memory.extend(used, virtq_used_size(256), virtq_used_size(512))
