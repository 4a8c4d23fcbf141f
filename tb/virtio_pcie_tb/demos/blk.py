# SPDX-License-Identifier: BSD-2-Clause
"""Demo simulation: the virtio-blk device end to end, as a Linux host would meet it.

A cocotb module (run by :func:`virtio_pcie_tb.demos.run_demo`): the root complex enumerates the
RTL, the Linux-faithful host model binds ``virtio_blk`` to it, and a verified I/O workload runs.
The report goes to ``report.txt`` in the simulation's directory, section by section, so that a
failure still leaves everything up to it:

1. **Enumeration**: an ``lspci -vvv``-like listing of what the host sees (IDs, class, Command and
   Status, BARs with sizes, every capability with its fields), then the virtio structures each
   vendor capability points to, read through the BARs: the common configuration (per queue:
   size, vectors, doorbell, ring addresses), the device configuration (``virtio_blk_config``),
   the notification and ISR areas, and the MSI-X table.
2. **Feature negotiation**: the bits offered and accepted, by name; the status sequence as the
   register traffic shows it (writes and the FEATURES_OK read-back); the interrupt set-up.
3. **I/O**: random data written across the disk at a queue depth over every request queue, a
   FLUSH, everything read back and compared with the shadow disk, then the whole medium compared
   byte for byte; the other request types once each. Requests, bytes, simulated time (cycles and
   µs at 250 MHz), throughput, latency, doorbells and interrupts (host side and the device's own
   counters), DMA traffic.

Options arrive as environment variables (``DEMO_*``, set by ``run_demo``): ``DEMO_MIB`` data
written and read back, ``DEMO_QD``, ``DEMO_REQ_KIB`` request size, ``DEMO_SEED``,
``DEMO_LATENCY_NS`` host memory latency, ``DEMO_PROFILE`` host profile, ``DEMO_IMAGE`` a raw
disk image file (its size is the disk's; it keeps the writes), ``DEMO_CORRUPT`` (tests only: one
byte of the medium is changed behind the device's back, which the demo must catch).
"""

import os
import random
from pathlib import Path

import cocotb
from cocotb.triggers import with_timeout
from cocotb.utils import get_sim_time

from virtio_pcie.spec.virtio import (DeviceStatus, VirtioBlkConfig, VirtioBlkF, VirtioBlkReqType,
                                     VirtioBlkStatus, VirtioF, VirtioPciCommonCfg,
                                     VIRTIO_MSI_NO_VECTOR)

from ..blk_workload import BlkWorkload
from ..codec import codec
from ..host import BlkRequest, VirtioBlkDriver
from ..lspci import lspci
from ..models.disk_image import SECTOR, DiskImage, ShadowDisk
from ..system import CLOCK_NS, SystemTB

_COMMON = codec(VirtioPciCommonCfg)
_BLKCFG = codec(VirtioBlkConfig)
MIB = 1 << 20


class Report:
    """Lines written to ``report.txt`` as they come."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.write_text("")

    def __call__(self, *lines):
        with open(self.path, "a") as f:
            for line in lines:
                f.write(f"{line}\n")

    def section(self, title):
        self("", f"== {title} " + "=" * max(0, 94 - len(title)), "")


def _env(name, default, kind=str):
    value = os.environ.get(name, "")
    return kind(value) if value != "" else default


def feature_name(bit):
    """``VIRTIO_BLK_F_*`` / ``VIRTIO_F_*`` name of feature ``bit``."""
    for enum_cls, prefix, bits in ((VirtioBlkF, "BLK_F_", range(0, 24)),
                                   (VirtioF, "F_", range(24, 128))):
        if bit in bits:
            try:
                return prefix + enum_cls(bit).name
            except ValueError:
                return f"bit {bit}"
    return f"bit {bit}"


def feature_names(mask):
    return [feature_name(b) for b in range(mask.bit_length()) if mask >> b & 1]


def status_name(value):
    if value == 0:
        return "0 (reset)"
    names = [s.name for s in DeviceStatus if value & s.value]
    return f"{value:#04x} {'|'.join(names)}"


def _wrap(words, indent, width=100):
    lines, line = [], indent
    for w in words:
        if len(line) + len(w) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += w + " "
    if line.strip():
        lines.append(line.rstrip())
    return lines


def _us(ns):
    return f"{ns / 1000:.1f} µs"


def _cycles(ns):
    return int(round(ns / CLOCK_NS))


# -- the structures behind the vendor capabilities -------------------------------------------------

async def virtio_structures(tb, vdev, blk, report):
    t = vdev.transport
    pdev = vdev.pdev

    def where(window):
        host = pdev.resource_start(window.bar) + window.offset
        return f"BAR{window.bar}+{window.offset:#06x} (host {host:x})"

    common = t.common
    report(f"common configuration (CommonCfg) at {where(common.mmio)}, {t.common_len:#x} bytes:")
    words = []
    for i in range(vdev.profile.feature_words):
        await common.write("device_feature_select", i)
        words.append(await common.read("device_feature"))
    dwords = []
    for i in range(vdev.profile.feature_words):
        await common.write("driver_feature_select", i)
        dwords.append(await common.read("driver_feature"))
    report(f"  device_feature[0..{len(words) - 1}] = "
           + " ".join(f"{w:08x}" for w in words),
           f"  driver_feature[0..{len(dwords) - 1}] = "
           + " ".join(f"{w:08x}" for w in dwords))
    num_queues = await common.read("num_queues")
    status = await common.read("device_status")
    report(f"  num_queues = {num_queues}, device_status = {status_name(status)}, "
           f"config_generation = {await common.read('config_generation')}, "
           f"config_msix_vector = {_vector(await common.read('config_msix_vector'))}")
    mult = t.notify_offset_multiplier
    notify = t.notify_base
    for q in range(num_queues):
        await common.write("queue_select", q)
        size = await common.read("queue_size")
        enable = await common.read("queue_enable")
        vector = await common.read("queue_msix_vector")
        off = await common.read("queue_notify_off")
        desc = await common.read("queue_desc")
        drv = await common.read("queue_driver")
        dev = await common.read("queue_device")
        bell = notify.offset + off * mult
        report(f"  queue {q}: size {size}, {'enabled' if enable else 'disabled'}, msix_vector "
               f"{_vector(vector)}, notify_off {off} -> doorbell BAR{notify.bar}+{bell:#06x}; "
               f"desc {desc:#x} driver {drv:#x} device {dev:#x}")
    report(f"ISR status (ISR) at {where(t.isr)}: 1 byte, read-to-clear (not read here)",
           f"notifications (Notify) at {where(notify)}, {t.notify_len} bytes: queue q's doorbell "
           f"at q x notify_off_multiplier ({mult})")
    device = t.device
    report(f"device configuration (DeviceCfg: struct virtio_blk_config) at {where(device)}, "
           f"{t.device_len:#x} bytes:")
    parts = []
    for name, (offset, size, is_array) in _BLKCFG.fields.items():
        if is_array or name.rsplit(".", 1)[-1].startswith("unused") or \
                offset + size > t.device_len:
            continue
        value = int.from_bytes(await t.get(offset, size), "little")
        parts.append(f"{name}={value}")
    report(*_wrap(parts, "  "))
    capacity = blk.capacity
    report(f"  -> {capacity} sectors of 512 bytes = {capacity * SECTOR / MIB:g} MiB")
    # the MSI-X table, as the PCI core programmed it
    table = pdev._msix_table
    if table is not None:
        report(f"MSI-X table at BAR{table.bar}+{table.offset:#06x}:")
        from virtio_pcie.spec.pcie import MsixTableEntry
        entry = codec(MsixTableEntry)
        for i, irq in enumerate(pdev.msix_vectors):
            base = i * entry.size
            lo = await table.read32(base + entry.offset("msg_addr"))
            hi = await table.read32(base + entry.offset("msg_upper_addr"))
            data = await table.read32(base + entry.offset("msg_data"))
            ctrl = await table.read32(base + entry.offset("vector_control"))
            users = ", ".join(label for _, label in irq.handlers) or "unused"
            report(f"  vector {i}: address {hi << 32 | lo:#x} data {data:#06x} "
                   f"{'masked' if ctrl & 1 else 'unmasked'} ({users})")


def _vector(v):
    return "NO_VECTOR" if v == VIRTIO_MSI_NO_VECTOR else str(v)


# -- feature negotiation ---------------------------------------------------------------------------

def negotiation(vdev, blk, trace, report):
    t = vdev.transport
    offered, accepted = vdev.device_features, vdev.features
    report(f"host: {vdev.profile.name} profile ({vdev.profile.feature_bits} feature bits "
           f"read and written)")
    report(f"offered  ({offered:#x}):")
    report(*_wrap(feature_names(offered), "    "))
    report(f"accepted ({accepted:#x}):")
    report(*_wrap(feature_names(accepted), "    "))
    refused = offered & ~accepted
    report("not accepted: " + (" ".join(feature_names(refused)) or "none"))
    # the status register traffic, from the recorded accesses
    status_at = t.common.mmio.offset + _COMMON.offset("device_status")
    steps = []
    last_write = None
    for kind, bar, offset, _size, value in (e for e in trace if e[0].startswith("mmio")):
        if bar != t.common.mmio.bar or offset != status_at:
            continue
        if kind == "mmio_write":
            steps.append(f"write {status_name(value)}")
            last_write = value
        elif last_write == value and value & DeviceStatus.FEATURES_OK.value \
                and not value & DeviceStatus.DRIVER_OK.value:
            # virtio_features_ok(): the device kept FEATURES_OK, so it accepts the features
            steps.append(f"read back {value:#04x}")
            last_write = None
    report("device_status:")
    report(*_wrap([s + " ->" for s in steps[:-1]] + steps[-1:], "    "))
    mode = t.irq_mode.value
    vectors = len(vdev.pdev.msix_vectors) if t.msix_enabled else 0
    report(f"interrupts: {mode}" + (f" ({vectors} MSI-X vectors)" if vectors else ""))
    report(f"queues: {len(blk.queues)} request queues x {blk.queues[0].vq.num} entries, "
           f"{'indirect descriptors, ' if blk.queues[0].vq.indirect else ''}"
           f"{'EVENT_IDX' if blk.queues[0].vq.event else 'no EVENT_IDX'}; queue depth "
           f"{blk.queue_depth}, up to {blk.sg_elems} data segments per request")
    cfg = sum(1 for e in trace if e[0].startswith("cfg"))
    mmio = sum(1 for e in trace if e[0].startswith("mmio"))
    report(f"the probe took {cfg} configuration and {mmio} BAR accesses "
           f"(and read the first 4 KiB and the serial, as udev does)")


# -- I/O -------------------------------------------------------------------------------------------

def _snapshot(tb, blk, pdev):
    return {"counters": tb.counters(),
            "kicks": sum(q.vq.stats.kicks for q in blk.queues),
            "skipped": sum(q.vq.stats.kicks_skipped for q in blk.queues),
            "irqs": [v.count for v in pdev.msix_vectors] if pdev.msix_enabled else
                    [pdev.irq.count if pdev.irq else 0],
            "ns": get_sim_time("ns")}


def _phase_line(name, work, data_width):
    st = work.stats
    ns = st.elapsed_ns
    peak = data_width // 8 * 1000 / CLOCK_NS        # MB/s of the data path, one direction
    mbs = st.bytes / ns * 1000 if ns else 0
    return (f"{name:<6} {st.requests} requests, {st.bytes / MIB:g} MiB in {_cycles(ns)} cycles "
            f"({_us(ns)}): {mbs:.0f} MB/s = {100 * mbs / peak:.0f} % of the {data_width}-bit "
            f"data path; latency mean {_us(st.latency_ns_mean)}, max {_us(st.latency_ns_max)}")


async def io_workload(tb, blk, vdev, report, *, mib, qd, req_kib, seed, corrupt):
    rng = random.Random(seed)
    shadow = ShadowDisk(tb.image)
    nsect = req_kib * 1024 // SECTOR
    slots = blk.capacity // nsect
    count = max(1, int(mib * MIB) // (nsect * SECTOR))
    if count > slots:
        raise ValueError(f"{mib} MiB do not fit a {blk.capacity * SECTOR / MIB:g} MiB disk")
    chosen = rng.sample(range(slots), count)
    pdev = vdev.pdev
    report(f"{len(blk.queues)} request queues, QD {qd}, {req_kib} KiB requests at random places "
           f"across the disk, host memory latency {tb.bridge.latency_ns} ns, seed {seed}", "")
    before = _snapshot(tb, blk, pdev)
    writes = BlkWorkload(blk, shadow, rng=rng)
    await with_timeout(writes.run_list([("write", s * nsect, nsect) for s in chosen], qd=qd),
                       100, "ms")
    report(_phase_line("write", writes, tb.data_width))
    started = get_sim_time("ns")
    await blk.flush()
    report(f"flush  OK in {_cycles(get_sim_time('ns') - started)} cycles (write-through: every "
           f"write was on the medium before it completed)")
    if corrupt:
        victim = chosen[0] * nsect * SECTOR + 100
        tb.image.buffer[victim] ^= 0xFF
        report(f"(test: byte {victim} of the medium changed behind the device's back)")
    rng.shuffle(chosen)
    reads = BlkWorkload(blk, shadow, rng=rng)
    await with_timeout(reads.run_list([("read", s * nsect, nsect) for s in chosen], qd=qd),
                       100, "ms")
    report(_phase_line("read", reads, tb.data_width))
    after = _snapshot(tb, blk, pdev)
    failures = writes.failures + reads.failures
    medium = writes.verify_medium(tb.image.buffer)
    if failures:
        report(f"verify: {len(failures)} requests FAILED:", *[f"  {f}" for f in failures[:10]])
    else:
        report(f"verify: all {reads.stats.requests} reads returned what was written "
               f"(shadow disk)")
    if medium:
        report(f"verify: {medium[0]}")
    else:
        report(f"verify: the whole medium ({shadow.sectors * SECTOR / MIB:g} MiB) matches the "
               f"shadow disk byte for byte")

    # the device's and the host's view of notifications and interrupts
    c0, c1 = before["counters"], after["counters"]

    def delta(name):
        return c1[name] - c0[name]
    requests = writes.stats.requests + reads.stats.requests + 1
    kicks = after["kicks"] - before["kicks"]
    skipped = after["skipped"] - before["skipped"]
    irqs = [b - a for a, b in zip(before["irqs"], after["irqs"], strict=True)]
    report("", f"doorbells: the host wrote {kicks} ({skipped} more were not needed: EVENT_IDX), "
           f"the device counted {delta('virtq.doorbells')}; "
           f"{kicks / requests:.2f} per request")
    if pdev.msix_enabled:
        per = ", ".join(f"{lbl} {n}" for n, lbl in zip(
            irqs, [", ".join(lbl for _, lbl in v.handlers) or "-" for v in pdev.msix_vectors],
            strict=True))
        report(f"interrupts: {sum(irqs)} MSI-X messages ({per}); the device sent "
               f"{delta('virtq.interrupts')}; {sum(irqs) / requests:.2f} per request")
    else:
        report(f"interrupts: INTx asserted {sum(irqs)} times; {sum(irqs) / requests:.2f} per "
               f"request")
    report(f"DMA: the device read {delta('dma.rd_bytes') / MIB:.2f} MiB in "
           f"{delta('dma.rd_tlps')} read requests and wrote {delta('dma.wr_bytes') / MIB:.2f} MiB "
           f"in {delta('dma.wr_tlps')} write TLPs (data, rings, status bytes); "
           f"{delta('virtq.chains')} descriptor chains, {delta('virtq.errors')} errors")
    return failures + medium


async def other_requests(tb, blk, report):
    """Each remaining request type once, with its outcome (after the medium was verified: these
    writes are checked by reading them back)."""
    failures = []
    capacity = blk.capacity
    serial = await blk.get_id()
    report("", f"GET_ID       -> {serial!r}")
    sector = capacity - 128
    await blk.write(sector, bytes([0x5A]) * (16 * SECTOR))
    await blk.write_zeroes([(sector, 8)], unmap=True)
    ok = await blk.read(sector, 16) == bytes(8 * SECTOR) + bytes([0x5A]) * (8 * SECTOR)
    report(f"WRITE_ZEROES -> OK; 8 sectors read back as zeros, the next 8 untouched: "
           f"{'yes' if ok else 'NO'}")
    await blk.discard([(sector + 8, 8)])
    report("DISCARD      -> OK (the data stays: the device does not zero discarded sectors)")
    req = await blk.submit(BlkRequest(VirtioBlkReqType.IN, capacity, in_length=SECTOR))
    status = VirtioBlkStatus(await req.wait()).name
    report(f"IN past the last sector -> {status} (refused; no byte moved)")
    if not ok:
        failures.append("WRITE_ZEROES did not read back as expected")
    if status != "IOERR":
        failures.append(f"a read past the end completed with {status}, not IOERR")
    return failures


@cocotb.test()
async def demo_blk(dut):
    report = Report(Path(os.getcwd(), "report.txt"))
    mib = _env("DEMO_MIB", 4.0, float)
    qd = _env("DEMO_QD", 16, int)
    req_kib = _env("DEMO_REQ_KIB", 64, int)
    seed = _env("DEMO_SEED", 1, int)
    latency = _env("DEMO_LATENCY_NS", 500, int)
    profile = _env("DEMO_PROFILE", "linux-6.12")
    image_path = _env("DEMO_IMAGE", None)
    corrupt = bool(_env("DEMO_CORRUPT", 0, int))

    image = DiskImage(image_path) if image_path else None
    tb = SystemTB(dut, image=image, bridge_options={"latency_ns": latency})
    p = tb.params
    report(f"virtio-pcie demo: virtio-blk, {p['data_width']}-bit TLP data path, "
           f"{1000 // CLOCK_NS} MHz core clock",
           f"design: VirtioPcieDevice(device='blk', data_width={p['data_width']}, "
           f"transitional={p['transitional']}, queues={p['queues']}, capacity="
           f"{'from the disk image' if p['capacity'] is None else p['capacity']})",
           f"disk: {image_path or 'a zeroed in-memory image'}, "
           f"{tb.image.size / MIB:g} MiB")
    await tb.reset()

    report.section("Enumeration: what the host sees")
    pci = await with_timeout(tb.enumerate(), 2, "ms")
    pci.trace = trace = []
    blk = VirtioBlkDriver()
    vdev = await with_timeout(tb.bind(blk, profile=profile), 4, "ms")
    pci.trace = None
    report(*(await lspci(pci, driver="virtio-pci")))
    report("")
    await virtio_structures(tb, vdev, blk, report)

    report.section("Feature negotiation")
    negotiation(vdev, blk, trace, report)

    report.section("I/O")
    failures = await io_workload(tb, blk, vdev, report, mib=mib, qd=qd, req_kib=req_kib,
                                 seed=seed, corrupt=corrupt)
    failures += await other_requests(tb, blk, report)
    tb.check_bridge()
    if tb.image is not None:
        tb.image.flush()

    report.section("Result")
    elapsed = get_sim_time("ns")
    if failures:
        report(f"FAIL: {len(failures)} problems (see above); simulated {_cycles(elapsed)} "
               f"cycles ({_us(elapsed)})")
    else:
        report(f"PASS: the host enumerated the device, bound virtio-blk and moved "
               f"{2 * mib:g} MiB with every byte verified; simulated {_cycles(elapsed)} cycles "
               f"({_us(elapsed)})")
    assert not failures, f"{len(failures)} verification failures: {failures[:3]}"
