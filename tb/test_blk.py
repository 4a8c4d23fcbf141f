# SPDX-License-Identifier: BSD-2-Clause
"""The virtio-blk device back-end, driven at its own ports (see :mod:`blk_tb` for the bench).

::

    BlkTB (virtqueue-engine stand-in) ── segments ──► VirtioBlkDevice ══ AXI4 ══ AxiRam
        ▲                             ◄── used ─────       ║   ║                  (DiskImage)
        └── DmaClientModel (host memory) ══ DMA client ════╝   ╚═ config (register bus)

Every request type and status, every malformed chain, any buffer split, several queues with
many requests in flight, random mixes checked byte for byte against a shadow disk, errors on
the link and on the medium, device reset while busy, the configuration structure, and the
cycles a 4 KiB request costs.
"""

import os
import random

import cocotb
import pytest
from cocotb.triggers import ClockCycles, SimTimeoutError

from blk_tb import IOERR, OK, UNSUPP, BlkTB, dwz_segment, header
from virtio_pcie.devices.blk import VirtioBlkDevice, blk_features
from virtio_pcie.spec.virtio import (VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
                                     VirtioBlkConfig, VirtioBlkF, VirtioBlkReqType, byte_offset,
                                     byte_size)
from virtio_pcie_tb import harness
from virtio_pcie_tb.designs.blk_device import BlkOnChipRam
from virtio_pcie_tb.models.disk_image import SECTOR, DiskImage
from virtio_pcie_tb.models.bitfields import BitFields

T = VirtioBlkReqType
UNMAP = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
SERIAL = "virtio-pcie-blk"


def params():
    return harness.dut_params()


def negotiated():
    """Every feature the device offers, as a driver that accepts them all would negotiate."""
    p = params()
    return blk_features(queue_count=p.get("queue_count", 1), read_only=p.get("read_only", False))


def serial():
    return params().get("serial", SERIAL).encode().ljust(VIRTIO_BLK_ID_BYTES, b"\0")


def capacity(tb):
    return params().get("capacity") or tb.image.sectors


def writable():
    return not params().get("read_only", False)


def image_from_env():
    """The disk image a pytest launcher handed over (``BLK_IMAGE``), if any."""
    path = os.environ.get("BLK_IMAGE")
    return DiskImage(path) if path else None


async def started(dut, **kwargs):
    tb = BlkTB(dut, image=image_from_env(), on_chip=os.environ.get("BLK_MEDIUM") == "on-chip",
               **kwargs)
    await tb.start(negotiated())
    return tb


async def run_all(tb, reqs, serial_id=None):
    """Submit all, wait for all, check each (they must not overlap on the disk)."""
    for req in reqs:
        tb.submit(req)
    for req in reqs:
        await tb.wait(req)
        tb.check(req, serial_id)


@cocotb.test()
async def run_smoke(dut):
    tb = await started(dut)
    data = tb.rng.randbytes(4096)
    req = await tb.run(tb.req_out(8, data, status=OK if writable() else IOERR))
    tb.check(req)
    for req in (tb.req_in(8, 4096), tb.req_flush(), tb.req_get_id()):
        await tb.run(req)
        tb.check(req, serial())
    await tb.check_disk()
    tb.finish()


@cocotb.test()
async def run_config_space(dut):
    """Every field of struct virtio_blk_config as the driver reads it (virtio 1.2 §5.2.4)."""
    tb = await started(dut)
    p = params()
    raw = await tb.cfg_read_bytes(0, byte_size(VirtioBlkConfig))
    cfg = BitFields(VirtioBlkConfig).decode(int.from_bytes(raw, "little"))
    assert cfg["capacity"] == capacity(tb)
    assert cfg["seg_max"] == p.get("max_segments", 128) - 2
    assert cfg["seg_max"] >= 64 or p.get("max_segments", 128) < 66
    assert cfg["size_max"] == p.get("size_max", 1 << 20)
    assert cfg["blk_size"] == p.get("blk_size", 512)
    assert cfg["num_queues"] == p.get("queue_count", 1)
    assert cfg["topology.physical_block_exp"] == 3 and cfg["topology.min_io_size"] == 8
    assert cfg["geometry.cylinders"] == cfg["geometry.heads"] == cfg["geometry.sectors"] == 0
    assert cfg["writeback"] == 0 and cfg["unused0"] == 0 and cfg["unused1"] == 0
    if writable():
        assert cfg["max_discard_seg"] == 1 and cfg["max_write_zeroes_seg"] == 1
        assert cfg["max_discard_sectors"] == p.get("max_discard_sectors", 1 << 16)
        assert cfg["max_write_zeroes_sectors"] == p.get("max_write_zeroes_sectors", 1 << 16)
        assert cfg["discard_sector_alignment"] == 8
        assert cfg["write_zeroes_may_unmap"] == 0
    else:
        assert cfg["max_discard_seg"] == cfg["max_write_zeroes_seg"] == 0
    assert cfg["max_secure_erase_sectors"] == 0 and cfg["zoned.zone_sectors"] == 0
    # Beyond the structure: zeros.
    for addr in (0x60, 0x64, 0xFC):
        assert await tb.cfg_access(addr) == 0
    # Only writeback is writable (VIRTIO_BLK_F_CONFIG_WCE), and only through its own byte.
    wb = byte_offset(VirtioBlkConfig, "writeback")
    await tb.cfg_access(wb & ~3, we=1, w_data=0xFFFFFFFF, sel=0xF ^ (1 << (wb % 4)))
    assert (await tb.cfg_read_bytes(0, 0x60)) == raw
    await tb.cfg_access(wb & ~3, we=1, w_data=1 << (8 * (wb % 4)), sel=1 << (wb % 4))
    assert (await tb.cfg_read_bytes(wb, 1)) == b"\x01"
    for addr in range(0, 0x60, 4):
        if addr != wb & ~3:
            await tb.cfg_access(addr, we=1, w_data=0x5A5A5A5A)
    raw2 = await tb.cfg_read_bytes(0, 0x60)
    assert raw2[:wb] == raw[:wb] and raw2[wb + 1:] == raw[wb + 1:]
    # A device reset puts writeback back to write-through.
    await tb.device_reset()
    assert (await tb.cfg_read_bytes(wb, 1)) == b"\x00"
    tb.finish()


@cocotb.test()
async def run_request_types(dut):
    """IN, OUT (one to many chunks), FLUSH, GET_ID, DISCARD, WRITE_ZEROES and their statuses."""
    tb = await started(dut)
    rng = tb.rng
    cap = capacity(tb)
    wr = OK if writable() else IOERR
    for nbytes in (512, 1024, 4096, 4608, 12800, 65536):
        sector = rng.randrange(0, cap - nbytes // SECTOR)
        for req in (tb.req_out(sector, rng.randbytes(nbytes), status=wr),
                    tb.req_in(sector, nbytes)):
            await tb.run(req)
            tb.check(req)
    # The last sectors of the disk, and a zero-length read.
    await run_all(tb, [tb.req_out(cap - 8, rng.randbytes(4096), status=wr)])
    await run_all(tb, [tb.req_in(cap - 8, 4096), tb.req_in(0, 0)])
    # FLUSH, also with a (ignored) non-zero sector; GET_ID with room for all, part, nothing.
    await run_all(tb, [tb.req_flush(), tb.req_raw(header(T.FLUSH, 12345), 1, status=OK,
                                                  what="FLUSH")])
    ident = serial()
    for room in (VIRTIO_BLK_ID_BYTES, 64, 7, 1, 0):
        req = await tb.run(tb.req_get_id(room))
        tb.check(req, ident)
    if writable():
        # WRITE_ZEROES with and without UNMAP zeroes the medium; DISCARD as built.
        for flags in (0, UNMAP):
            sector = rng.randrange(0, cap - 64)
            await run_all(tb, [tb.req_out(sector, rng.randbytes(32768))])
            await run_all(tb, [tb.req_dwz(T.WRITE_ZEROES, sector + 3, 50, flags)])
            await run_all(tb, [tb.req_in(sector, 32768)])
        sector = rng.randrange(0, cap - 64)
        await run_all(tb, [tb.req_out(sector, rng.randbytes(8192))])
        await run_all(tb, [tb.req_dwz(T.DISCARD, sector + 1, 9)])
        await run_all(tb, [tb.req_in(sector, 8192)])
        # A big WRITE_ZEROES, many chunks, to the end of the disk.
        n = min(700, cap - 8)
        await run_all(tb, [tb.req_dwz(T.WRITE_ZEROES, cap - n, n)])
    await tb.check_disk()
    tb.finish()


def malformed_cases(tb):
    """(description, request) pairs, each expected to fail without touching the disk."""
    cap = capacity(tb)
    rng = tb.rng
    d = rng.randbytes
    cases = [
        ("no writable buffer", tb.req_raw(header(T.IN, 0), 0, status=None)),
        ("no readable buffer", tb.req_raw(b"", 513, status=IOERR)),
        ("header of 8 bytes", tb.req_raw(header(T.IN, 0)[:8], 513, status=IOERR)),
        ("header of 15 bytes in two", tb.req_raw(header(T.OUT, 0)[:15], 1, status=IOERR,
                                                 rsplit=[7, 8])),
        ("IN of 1000 bytes", tb.req_raw(header(T.IN, 4), 1001, status=IOERR)),
        ("IN of 511 bytes", tb.req_raw(header(T.IN, 4), 512, status=IOERR)),
        ("OUT of 700 bytes", tb.req_raw(header(T.OUT, 4) + d(700), 1, status=IOERR)),
        ("OUT of 4097 bytes", tb.req_raw(header(T.OUT, 4) + d(4097), 1, status=IOERR,
                                         rsplit="random")),
        ("IN past the end", tb.req_raw(header(T.IN, cap - 1), 1025, status=IOERR)),
        ("IN starting at the end", tb.req_raw(header(T.IN, cap), 513, status=IOERR)),
        ("OUT past the end", tb.req_raw(header(T.OUT, cap - 2) + d(2048), 1, status=IOERR)),
        ("OUT at sector 2**64-1", tb.req_raw(header(T.OUT, (1 << 64) - 1) + d(512), 1,
                                             status=IOERR)),
        ("IN wrapping 2**64", tb.req_raw(header(T.IN, (1 << 64) - 2), 2049, status=IOERR)),
    ]
    for rtype in (2, 3, 5, 6, 10, 14, 15, 16, 0x80000000, 0x80000001, 0xFFFFFFFF):
        cases.append((f"type {rtype:#x}", tb.req_raw(header(rtype, 0) + bytes(16), 1,
                                                     status=UNSUPP)))
    if writable():
        seg = dwz_segment
        cases += [
            ("DISCARD with UNMAP", tb.req_dwz(T.DISCARD, 0, 8, UNMAP, status=UNSUPP)),
            ("DISCARD with flag 2", tb.req_dwz(T.DISCARD, 0, 8, 2, status=UNSUPP)),
            ("WRITE_ZEROES with flag 2", tb.req_dwz(T.WRITE_ZEROES, 0, 8, 2, status=UNSUPP)),
            ("WRITE_ZEROES with flags 0x80000001",
             tb.req_dwz(T.WRITE_ZEROES, 0, 8, 0x80000001, status=UNSUPP)),
            ("DISCARD without segment", tb.req_dwz(T.DISCARD, 0, 0, segments=b"",
                                                   status=IOERR)),
            ("WRITE_ZEROES with two segments",
             tb.req_dwz(T.WRITE_ZEROES, 0, 8, segments=seg(0, 8) + seg(16, 8), status=IOERR)),
            ("DISCARD with half a segment", tb.req_dwz(T.DISCARD, 0, 8, segments=seg(0, 8)[:8],
                                                       status=IOERR)),
            ("WRITE_ZEROES past the end", tb.req_dwz(T.WRITE_ZEROES, cap - 4, 8,
                                                     status=IOERR)),
            ("DISCARD past the end", tb.req_dwz(T.DISCARD, cap, 1, status=IOERR)),
            ("WRITE_ZEROES at sector 2**64-1",
             tb.req_dwz(T.WRITE_ZEROES, (1 << 64) - 1, 2, status=IOERR)),
            ("WRITE_ZEROES over the limit",
             tb.req_dwz(T.WRITE_ZEROES, 0, params().get("max_write_zeroes_sectors", 1 << 16) + 1,
                        status=IOERR)),
            ("DISCARD over the limit",
             tb.req_dwz(T.DISCARD, 0, params().get("max_discard_sectors", 1 << 16) + 1,
                        status=IOERR)),
        ]
    else:
        cases += [
            # virtio 1.2 §5.2.6.2: writes to a read-only device fail with IOERR.
            ("OUT on a read-only disk", tb.req_raw(header(T.OUT, 0) + d(512), 1, status=IOERR)),
            # A read-only device does not offer DISCARD / WRITE_ZEROES.
            ("WRITE_ZEROES on a read-only disk",
             tb.req_dwz(T.WRITE_ZEROES, 0, 8, status=UNSUPP)),
            ("DISCARD on a read-only disk", tb.req_dwz(T.DISCARD, 0, 8, status=UNSUPP)),
        ]
    # A readable buffer after a writable one (virtio 1.2 §2.7.4.2).
    req = tb.req_raw(header(T.OUT, 0) + d(512), 1, status=IOERR, rsplit=[16, 512])
    (h, hn), (data, dn) = req.readable
    (s, sn), = req.writable
    req.segments = [(h, hn, 0), (s, sn, 1), (data, dn, 0)]
    req.writable = [(s, sn)]
    cases.append(("readable after writable", req))
    # More buffers than a slot keeps.
    many = params().get("max_segments", 128) + 1
    cases.append(("OUT in too many buffers",
                  tb.req_raw(header(T.OUT, 0) + d(512 * many), 1, status=IOERR,
                             rsplit=[16] + [512] * many)))
    cases.append(("IN in too many buffers",
                  tb.req_raw(header(T.IN, 0), 512 * many + 1, status=IOERR,
                             wsplit=[512] * many + [1])))
    return cases


@cocotb.test()
async def run_malformed(dut):
    """Each malformed request fails with the right status and moves no data (B2-B8)."""
    tb = await started(dut)
    for name, req in malformed_cases(tb):
        tb.log.info("malformed: %s", name)
        if req.expect["status"] is None:        # no status byte to write
            req.expect["status"] = IOERR
        await tb.run(req)
        tb.check(req)
        if not tb.on_chip:       # (an on-chip disk is checked by reading it: once, below)
            await tb.check_disk()
    if writable():
        # Not negotiated: DISCARD and WRITE_ZEROES are unsupported (QEMU does the same).
        tb.set_features(negotiated() & ~((1 << VirtioBlkF.DISCARD) |
                                         (1 << VirtioBlkF.WRITE_ZEROES)))
        await run_all(tb, [tb.req_dwz(T.DISCARD, 0, 8, status=UNSUPP),
                           tb.req_dwz(T.WRITE_ZEROES, 8, 8, status=UNSUPP)])
        tb.set_features(negotiated())
    # Lenient where QEMU is: extra bytes the request type does not use are ignored.
    await run_all(tb, [
        tb.req_raw(header(T.IN, 0) + bytes(512), 513, status=OK, written=512, what="IN",
                   sector=0, count=1),
        tb.req_raw(header(T.FLUSH) + bytes(100), 30, status=OK, what="FLUSH"),
        tb.req_raw(header(T.GET_ID) + bytes(3), 21, status=OK, written=20, what="GET_ID"),
    ], serial())
    await tb.check_disk()
    tb.finish()


@cocotb.test()
async def run_dwz_split(dut):
    """DISCARD and WRITE_ZEROES with header, segment and status cut into many small buffers,
    negotiated or not, and with a DMA error on each buffer in turn: every request completes,
    with the right status (found by the fuzzer: such a request was left hanging)."""
    tb = await started(dut)
    rng = tb.rng
    splits = ([3, 1, 3, 2, 13, 1, 3, 1, 5], [1] * 32, [16, 1, 1, 1, 13], [8, 8, 16])
    for negotiated_dwz in (False, True):
        if not negotiated_dwz:
            tb.set_features(negotiated() & ~((1 << VirtioBlkF.DISCARD) |
                                             (1 << VirtioBlkF.WRITE_ZEROES)))
        for rtype in (T.DISCARD, T.WRITE_ZEROES):
            for pieces in splits:
                for bad in [None] + list(range(len(pieces) + 1)):
                    sector = rng.randrange(0, 64) * 8
                    req = tb.chain(header(rtype) + dwz_segment(sector, 8), 1,
                                   rsplit=list(pieces), wsplit="one")
                    ok = OK if negotiated_dwz and writable() else UNSUPP
                    if bad is None:
                        req.expect.update(what=T(rtype).name, sector=sector, count=8,
                                          status=ok, written=0)
                        await tb.run(req, timeout_cycles=50000)
                        tb.check(req)
                        continue
                    buffers = req.readable + req.writable
                    addr, n = buffers[bad]
                    tb.dma.bad_ranges = [(addr, addr + n)]
                    try:
                        await tb.run(req, timeout_cycles=50000)
                    except SimTimeoutError:
                        raise AssertionError(f"{T(rtype).name} (negotiated {negotiated_dwz}) "
                                             f"in buffers {pieces}, buffer {bad} unreadable: "
                                             f"never completed") from None
                    tb.dma.bad_ranges = []
                    assert req.used_len == 1, req.used_len       # the status byte
                    if bad < len(pieces):
                        assert req.status(tb.mem) in (IOERR, ok), (pieces, bad)
                    tb.shadow.forget(sector, 8)
        tb.set_features(negotiated())
    tb.finish()


@cocotb.test()
async def run_framing(dut):
    """Framing independence (virtio 1.2 §2.7.4): header, data and status split anywhere."""
    tb = await started(dut)
    rng = tb.rng
    cap = capacity(tb)
    for _ in range(40):
        nbytes = SECTOR * rng.choice([1, 2, 3, 8, 9, 24])
        sector = rng.randrange(0, cap - nbytes // SECTOR)
        rsplit = rng.choice(["one", "random", "pages"])
        wsplit = rng.choice(["one", "random"])
        if writable():
            data = rng.randbytes(nbytes)
            # Header and data in one buffer, or cut anywhere, even inside the header.
            req = tb.req_out(sector, data, rsplit=rsplit, hdr_split=False)
            await tb.run(req)
            tb.check(req)
        # Data and status in one buffer, or data cut at odd places.
        req = tb.req_in(sector, nbytes, wsplit=wsplit, rsplit=rng.choice(["one", [5, 11],
                                                                          [1] * 16]))
        await tb.run(req)
        tb.check(req)
    req = await tb.run(tb.req_get_id(20, wsplit=[3, 1, 9, 8]))
    tb.check(req, serial())
    await tb.check_disk()
    tb.finish()


async def random_mix(tb, count, depth, *, sizes=(1, 2, 4, 8, 8, 8, 16, 32), ops=None,
                     styles=("pages", "one", "random")):
    """``count`` random requests, at most ``depth`` in flight, on disjoint sectors, each checked
    when it completes; returns the requests."""
    rng = tb.rng
    cap = capacity(tb)
    if ops is None:
        ops = ["IN"] * 8 + (["OUT"] * 8 + ["WRITE_ZEROES", "DISCARD"] if writable() else []) + \
            ["FLUSH", "GET_ID"]
    busy = {}
    done = []

    def pick_range(n):
        for _ in range(100):
            s = rng.randrange(0, cap - n)
            if all(s + n <= lo or hi <= s for lo, hi in busy.values()):
                return s
        return None

    def harvest():
        for req in [r for r in busy if r.used_len is not None]:
            tb.check(req, serial())
            del busy[req]
            done.append(req)

    issued = 0
    while issued < count:
        harvest()
        if len(busy) >= depth:
            await tb.next_completion()
            continue
        op = rng.choice(ops)
        n = rng.choice(sizes)
        sector = pick_range(n)
        if sector is None:
            await tb.next_completion()
            continue
        qu = rng.randrange(tb.queue_count)
        if op == "IN":
            req = tb.req_in(sector, n * SECTOR, wsplit=rng.choice(styles), queue=qu)
        elif op == "OUT":
            req = tb.req_out(sector, rng.randbytes(n * SECTOR), rsplit=rng.choice(styles),
                             queue=qu)
        elif op in ("WRITE_ZEROES", "DISCARD"):
            req = tb.req_dwz(getattr(T, op), sector, n, UNMAP if op == "WRITE_ZEROES" and
                             rng.random() < 0.5 else 0, queue=qu)
        elif op == "FLUSH":
            req = tb.req_flush(queue=qu)
        else:
            req = tb.req_get_id(queue=qu)
        busy[req] = (sector, sector + n)
        tb.submit(req)
        issued += 1
    while busy:
        harvest()
        if busy:
            await tb.next_completion()
    return done


def pause(seed, p):
    rng = random.Random(seed)
    while True:
        yield rng.random() < p


@cocotb.test()
@cocotb.parametrize(mode=["fast", "slow_host", "stalls"])
async def run_random_mix(dut, mode):
    """Random requests on every queue, many in flight, against a shadow disk: with a DMA engine
    that answers at once (``fast``), a far host (``slow_host``: 1 us reads, completions out of
    order), and stalls on every stream (``stalls``)."""
    seed = ["fast", "slow_host", "stalls"].index(mode) + 10
    tb = await started(dut, seed=seed, dma="ideal" if mode == "fast" else "shared")
    count = int(os.environ.get("BLK_MIX_COUNT", 80))
    if mode == "slow_host":
        tb.dma.set_latency(250, 0)
    elif mode == "stalls":
        tb.seg_idle = pause(1, 0.3)
        tb.used_pause = pause(2, 0.5)
        tb.dma.set_backpressure(pause(3, 0.3), pause(4, 0.3))
        if tb.medium is not None:
            # The medium stalls on every AXI channel too.
            for i, channel in enumerate((tb.medium.write_if.aw_channel,
                                         tb.medium.write_if.w_channel,
                                         tb.medium.write_if.b_channel,
                                         tb.medium.read_if.ar_channel,
                                         tb.medium.read_if.r_channel)):
                channel.set_pause_generator(pause(10 + i, 0.3))
    done = await random_mix(tb, count, depth=32)
    assert len(done) == count
    # Many requests were in flight at once, across queues.
    overlap = max(sum(1 for r in done if r.submitted <= q.completed <= r.completed)
                  for q in done)
    tb.log.info("%s: %d requests, up to %d in flight, %d cycles", mode, count, overlap, tb.now)
    assert overlap >= min(8, params().get("slots", 8))
    await tb.check_disk()
    tb.finish()


@cocotb.test()
async def run_dma_errors(dut):
    """A DMA read or write that fails ends its request with IOERR (nothing is left hanging)."""
    tb = await started(dut)
    rng = tb.rng
    # The header cannot be read.
    req = tb.req_in(0, 4096)
    tb.dma.bad_ranges = [(req.readable[0][0], req.readable[0][0] + 1)]
    req.expect.update(status=IOERR, written=None)
    await tb.run(req)
    assert req.status(tb.mem) == IOERR and req.used_len == 1
    tb.dma.bad_ranges = []
    if writable():
        # OUT data cannot be read: IOERR; the sectors may or may not have been written.
        req = tb.req_out(64, rng.randbytes(8192), rsplit="pages")
        addr, n = req.readable[2]
        tb.dma.bad_ranges = [(addr + 100, addr + 101)]
        await tb.run(req)
        assert req.status(tb.mem) == IOERR and req.used_len == 1
        tb.shadow.forget(64, 16)
        tb.dma.bad_ranges = []
    # IN data cannot be written.
    req = tb.req_in(16, 8192, wsplit=[4096, 4096, 1])
    addr, n = req.writable[1]
    tb.dma.bad_ranges = [(addr, addr + n)]
    await tb.run(req)
    assert req.status(tb.mem) == IOERR and req.used_len == 1
    # The status byte cannot be written: the request still completes.
    req = tb.req_in(16, 512)
    addr, n = req.writable[-1]
    tb.dma.bad_ranges = [(addr + n - 1, addr + n)]
    await tb.run(req)
    tb.dma.bad_ranges = []
    if hasattr(tb.dma, "bme_drops"):
        # The status byte's write is dropped (Bus Master Enable cleared while it was on its
        # way, set again before the used entry: issue 12's hazard): it is written again
        # (IOERR) and only then is the request completed, never over a status byte that did
        # not land (checklist rule 87).
        req = tb.req_in(24, 1024, status=IOERR)
        addr, n = req.writable[-1]
        tb.dma.bme_drops = {addr + n - 1: 3}
        await tb.run(req)
        assert tb.dma.bme_drops[addr + n - 1] == 0
        assert req.status(tb.mem) == IOERR and req.used_len == 1, (req.status(tb.mem),
                                                                   req.used_len)
        tb.dma.bme_drops = {}
    # And everything works afterwards.
    await random_mix(tb, 20, depth=8)
    await tb.check_disk()
    tb.finish()


@cocotb.test()
async def run_medium_errors(dut):
    """The medium answering SLVERR makes the request fail with IOERR."""
    tb = await started(dut)
    rng = tb.rng
    bad = 200 * SECTOR
    tb.image.fail(bad, 1)
    req = await tb.run(tb.req_in(196, 8192))
    assert req.status(tb.mem) == IOERR and req.used_len == 1
    if writable():
        req = await tb.run(tb.req_out(199, rng.randbytes(1024)))
        assert req.status(tb.mem) == IOERR and req.used_len == 1
        req = await tb.run(tb.req_dwz(T.WRITE_ZEROES, 150, 100, status=IOERR))
        tb.check(req)
        tb.image.heal()
        tb.shadow.forget(150, 100)
    tb.image.heal()
    await random_mix(tb, 20, depth=8)
    await tb.check_disk()
    tb.finish()


@cocotb.test()
async def run_reset_while_busy(dut):
    """Device reset drops the requests once their DMA is back; the device then works again."""
    tb = await started(dut)
    rng = tb.rng
    cap = capacity(tb)
    tb.dma.set_latency((50, 150), 0)
    for round_ in range(3):
        reqs = []
        for i in range(24):
            n = rng.choice([8, 16, 128])
            sector = (i * 160) % (cap - 160)
            if writable() and rng.random() < 0.5:
                reqs.append(tb.req_out(sector, rng.randbytes(n * SECTOR), queue=i % tb.queue_count))
            else:
                reqs.append(tb.req_in(sector, n * SECTOR, queue=i % tb.queue_count))
            tb.submit(reqs[-1])
        await ClockCycles(dut.clk, rng.randrange(50, 3000))
        before = sum(r.used_len is not None for r in reqs)
        await tb.device_reset(cycles=rng.randrange(1, 50))
        # Idle means no DMA in flight: the model has nothing outstanding.
        assert not tb.dma.busy, "DMA still in flight while the device says idle"
        requests = (tb.dma.reads, tb.dma.writes)
        dropped = [r for r in reqs if r.used_len is None]
        tb.log.info("reset round %d: %d completed before the reset, %d dropped", round_,
                    before, len(dropped))
        for r in reqs:
            if r.expect["what"] == "OUT":
                tb.shadow.forget(r.expect["sector"], len(r.expect["data"]) // SECTOR)
            tb.inflight.pop((r.queue, r.head), None)
        # Nothing more happens for a dropped request.
        await ClockCycles(dut.clk, 200)
        assert (tb.dma.reads, tb.dma.writes) == requests
        assert all(r.used_len is None for r in dropped)
    await random_mix(tb, 30, depth=16)
    await tb.check_disk()
    tb.finish()


async def measure(tb, op, count, depth, nbytes=4096):
    """Cycles for ``count`` random ``op`` requests of ``nbytes`` with ``depth`` in flight."""
    rng = tb.rng
    units = capacity(tb) // (nbytes // SECTOR)

    def make(i):
        sector = rng.randrange(units) * (nbytes // SECTOR)
        if op == "read":
            return tb.req_in(sector, nbytes, wsplit=[nbytes, 1], queue=i % tb.queue_count)
        return tb.req_out(sector, rng.randbytes(nbytes), rsplit=[16, nbytes],
                          queue=i % tb.queue_count)

    start = tb.now
    reqs = []
    inflight = []
    while len(reqs) < count or inflight:
        while len(reqs) < count and len(inflight) < depth:
            reqs.append(tb.submit(make(len(reqs))))
            inflight.append(reqs[-1])
        await tb.next_completion()
        inflight = [r for r in inflight if r.used_len is None]
    cycles = tb.now - start
    for req in reqs:
        assert req.status(tb.mem) == OK
    return cycles, reqs


@cocotb.test()
async def run_throughput(dut):
    """4 KiB random reads and writes with a zero-latency DMA model: cycles per request."""
    tb = await started(dut, dma="ideal")
    bpb = tb.data_width // 8
    ideal = 4096 // bpb
    results = {}
    ops = ["read", "write"] if writable() else ["read"]
    for op in ops:
        for depth in (1, 8, 32):
            count = 8 if depth == 1 else 48
            cycles, reqs = await measure(tb, op, count, depth)
            per = cycles / count
            latency = sum(r.completed - r.submitted for r in reqs) / count
            results[(op, depth)] = per
            tb.log.info("4 KiB %s QD%-2d: %6.1f cycles/request (%.0f%% of %d-bit datapath), "
                        "latency %.0f cycles", op, depth, per, 100 * ideal / per,
                        tb.data_width, latency)
    for op in ops:
        # With a DMA engine that answers at once, throughput is bound by the data path.
        assert ideal / results[(op, 32)] >= 0.9, results
    tb.finish()


@cocotb.test()
async def run_throughput_sweep(dut):
    """The table for the lead: 4 KiB random reads and writes at QD 1, 8, 32 behind a host that
    answers reads after 0, 0.5 and 1 us (``BLK_LATENCIES``, in cycles)."""
    tb = await started(dut, dma="ideal")
    bpb = tb.data_width // 8
    ideal = 4096 // bpb
    latencies = [int(x) for x in os.environ.get("BLK_LATENCIES", "0,125,250").split(",")]
    worst = 1.0
    for latency in latencies:
        tb.dma.set_latency(latency, latency // 4)
        for op in ("read", "write"):
            for depth in (1, 8, 32):
                count = 8 if depth == 1 else 128
                cycles, reqs = await measure(tb, op, count, depth)
                per = cycles / count
                latency_c = sum(r.completed - r.submitted for r in reqs) / count
                tb.log.info("BLK width=%d host_latency=%d op=%s qd=%d cycles_per_req=%.1f "
                            "efficiency=%.3f latency_cycles=%.0f", tb.data_width, latency, op,
                            depth, per, ideal / per, latency_c)
                if depth == 32:
                    worst = min(worst, ideal / per)
    # The target at integration: QD 32 at 90 % of the data path with 1 us host latency.
    assert worst >= 0.9, f"QD32 efficiency {worst:.3f}"
    tb.finish()


@cocotb.test()
async def run_capacity_input(dut):
    """A capacity from outside (the image's size): shown, enforced, and announced when it
    changes (virtio 1.2 §5.2.6.2, B5: config-change notification)."""
    tb = await started(dut)
    cap = tb.image.sectors
    capacity_at = byte_offset(VirtioBlkConfig, "capacity")

    async def config_capacity():
        return int.from_bytes(await tb.cfg_read_bytes(capacity_at, 8), "little")

    assert await config_capacity() == cap
    assert tb.changed_strobes == 0
    half = cap // 2
    tb.set_capacity(half)
    await ClockCycles(dut.clk, 4)
    assert tb.changed_strobes == 1
    assert await config_capacity() == half
    await run_all(tb, [tb.req_in(half - 8, 4096), tb.req_in(half - 4, 4096, status=IOERR),
                       tb.req_in(half, 512, status=IOERR)])
    # More than the medium can address is cut to what it can.
    tb.set_capacity(1 << 62)
    await ClockCycles(dut.clk, 4)
    medium_bits = len(dut.medium__araddr)
    assert await config_capacity() == (1 << medium_bits) // SECTOR
    tb.set_capacity(cap)
    await ClockCycles(dut.clk, 4)
    assert tb.changed_strobes == 3
    assert await config_capacity() == cap
    await run_all(tb, [tb.req_in(cap - 8, 4096)])
    tb.finish()


IMAGE_SECTORS = [3, 100, 1000, 4095]


@cocotb.test()
async def run_image_write(dut):
    """Write a known pattern through the device into a disk image file."""
    tb = await started(dut)
    for sector in IMAGE_SECTORS:
        data = random.Random(sector).randbytes(4096)
        await run_all(tb, [tb.req_out(sector, data)])
    await tb.check_disk()
    tb.image.close()
    tb.finish()


@cocotb.test()
async def run_image_read(dut):
    """A later simulation finds the pattern in the image, through the device."""
    tb = await started(dut)
    for sector in IMAGE_SECTORS:
        req = await tb.run(tb.req_in(sector, 4096))
        assert req.status(tb.mem) == OK
        assert req.gather(tb.mem, req.writable)[:4096] == random.Random(sector).randbytes(4096)
    tb.image.close()
    tb.finish()


# -- pytest launchers --------------------------------------------------------------------------

def build(data_width, **extra):
    p = {"data_width": data_width, "queue_count": 4, "capacity": 8192, "serial": SERIAL}
    p.update(extra)
    return harness.build(VirtioBlkDevice, p, name="blk_device", debug_aliases=False)


FUNCTIONAL = ["run_smoke", "run_config_space", "run_request_types", "run_malformed",
              "run_framing", "run_random_mix", "run_dma_errors", "run_reset_while_busy"]


@pytest.mark.sim
def test_blk_128(simulate):
    """The full set at 128 bits: 8 slots, 4 queues, an external medium."""
    simulate(build(128), "test_blk",
             testcase=FUNCTIONAL + ["run_medium_errors", "run_throughput", "run_dwz_split"])


@pytest.mark.sim
def test_blk_256_on_chip_ram(simulate):
    """256 bits (a header is half a beat), 2 queues, 3 slots, DISCARD zeroes, and the
    on-chip RAM medium (a 256 KiB RAM disk)."""
    design = harness.build(BlkOnChipRam, {
        "data_width": 256, "queue_count": 2, "capacity": 512, "slots": 3,
        "discard_zeroes": True, "max_segments": 32, "serial": "on-chip-ram-disk-01",
    }, name="blk_on_chip_ram", debug_aliases=False)
    simulate(design, "test_blk", testcase=FUNCTIONAL,
             env={"BLK_MIX_COUNT": "40", "BLK_MEDIUM": "on-chip"})


def make_image(path, sectors, seed):
    path.write_bytes(random.Random(seed).randbytes(sectors * SECTOR))
    return path


@pytest.mark.sim
def test_blk_64_read_only_image(simulate, tmp_path):
    """64 bits (a header is two beats), read-only, capacity from a user's disk image, 2 slots."""
    design = build(64, queue_count=1, capacity=None, read_only=True, slots=2, max_segments=16)
    image = make_image(tmp_path / "disk.img", 3000, seed=64)
    before = image.read_bytes()
    simulate(design, "test_blk", env={"BLK_IMAGE": str(image), "BLK_MIX_COUNT": "40"},
             testcase=["run_smoke", "run_config_space", "run_malformed", "run_framing",
                       "run_random_mix", "run_capacity_input"])
    assert image.read_bytes() == before, "a read-only disk changed"


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("data_width", [64, 128, 256])
def test_blk_sweep(simulate, data_width):
    """Every width at full size (8 slots, 4 queues): the whole functional set with long random
    mixes, and the throughput table with 0, 0.5 and 1 us host latency."""
    simulate(build(data_width), "test_blk",
             testcase=FUNCTIONAL + ["run_medium_errors", "run_throughput_sweep"],
             env={"BLK_MIX_COUNT": "600"})


@pytest.mark.sim
def test_blk_image_persists(simulate, tmp_path):
    """Data written into a disk image in one simulation is there in the next."""
    image = make_image(tmp_path / "disk.img", 8192, seed=128)
    original = image.read_bytes()
    simulate(build(128), "test_blk", testcase=["run_image_write"],
             env={"BLK_IMAGE": str(image)})
    data = image.read_bytes()
    for sector in IMAGE_SECTORS:
        expected = random.Random(sector).randbytes(4096)
        assert data[sector * SECTOR:sector * SECTOR + 4096] == expected
    touched = {s + i for s in IMAGE_SECTORS for i in range(8)}
    assert all(data[s * SECTOR:(s + 1) * SECTOR] == original[s * SECTOR:(s + 1) * SECTOR]
               for s in range(8192) if s not in touched)
    simulate(build(128), "test_blk", testcase=["run_image_read"],
             env={"BLK_IMAGE": str(image)})
