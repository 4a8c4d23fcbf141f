# SPDX-License-Identifier: BSD-2-Clause
"""virtio-blk back-end pieces that need no Verilator: parameters, features, the header decoder
and the round-robin arbiter in Amaranth's own simulator, the disk image and shadow disk models.
"""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from virtio_pcie.devices.axi import AxiSignature
from virtio_pcie.devices.blk import VirtioBlkDevice, blk_features
from virtio_pcie.devices.blk_config import BlkConfigSpace
from virtio_pcie.devices.blk_decoder import BlkDecoder
from virtio_pcie.devices.blk_interface import BlkOp
from virtio_pcie.devices.stream_arbiter import StreamArbiter
from virtio_pcie.spec.virtio import (VirtioBlkDiscardWriteZeroes, VirtioBlkF, VirtioBlkOutHdr,
                                     VirtioBlkReqType, VirtioBlkStatus, VirtioF, feature_mask)
from virtio_pcie_tb.models.bitfields import BitFields
from virtio_pcie_tb.models.disk_image import SECTOR, DiskImage, MediumError, ShadowDisk

T, S = VirtioBlkReqType, VirtioBlkStatus


# -- features and parameters -------------------------------------------------------------------

@pytest.mark.unit
def test_features():
    base = feature_mask(VirtioF.VERSION_1, VirtioF.ACCESS_PLATFORM, VirtioF.ORDER_PLATFORM,
                        VirtioF.INDIRECT_DESC, VirtioF.EVENT_IDX, VirtioBlkF.SIZE_MAX,
                        VirtioBlkF.SEG_MAX, VirtioBlkF.BLK_SIZE, VirtioBlkF.FLUSH,
                        VirtioBlkF.TOPOLOGY, VirtioBlkF.CONFIG_WCE)
    rw = feature_mask(VirtioBlkF.DISCARD, VirtioBlkF.WRITE_ZEROES)
    assert blk_features() == base | rw
    assert blk_features(queue_count=4) == base | rw | feature_mask(VirtioBlkF.MQ)
    assert blk_features(read_only=True) == base | feature_mask(VirtioBlkF.RO)
    device = unused(VirtioBlkDevice(data_width=128, queue_count=2, capacity=1024))
    assert device.features == blk_features(queue_count=2)
    assert device.config_size == 0x60
    # B1: FLUSH is offered whenever CONFIG_WCE is; never anything unimplemented.
    for bits in (device.features, blk_features(read_only=True)):
        assert bits & (1 << VirtioBlkF.FLUSH)
        for absent in (VirtioBlkF.GEOMETRY, VirtioBlkF.ZONED, VirtioBlkF.SECURE_ERASE,
                       VirtioBlkF.LIFETIME, VirtioBlkF.BARRIER, VirtioBlkF.SCSI,
                       VirtioF.RING_PACKED, VirtioF.IN_ORDER, VirtioF.NOTIFICATION_DATA):
            assert not bits & (1 << absent)


@pytest.mark.unit
@pytest.mark.parametrize("bad, text", [
    ({"data_width": 96}, "96"),
    ({"queue_count": 0}, "0"),
    ({"capacity": -1}, "-1"),
    ({"capacity": 1 << 30, "medium_addr_width": 32}, "does not fit"),
    ({"serial": "x" * 21}, "xxxxxxxxxxxxxxxxxxxxx"),
    ({"slots": 0}, "0"),
    ({"chunk_bytes": 1000}, "1000"),
    ({"slot_bytes": 1024, "chunk_bytes": 1024}, "1024"),
    ({"slots": 16, "slot_bytes": 8192}, "do not fit"),
    ({"max_segments": 100}, "100"),
    ({"blk_size": 100}, "100"),
    ({"size_max": 16}, "16"),
    ({"max_discard_sectors": 0}, "0"),
    ({"slots": 65, "slot_bytes": 512, "chunk_bytes": 256}, "65"),
])
def test_bad_parameters(bad, text):
    params = {"data_width": 128, "capacity": 1024, **bad}
    with warnings.catch_warnings():
        # The half-built component is garbage, not an unused design.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=text):
            unused(VirtioBlkDevice(**params))
        gc.collect()


def unused(component):
    component._MustUse__silence = True      # built only to look at its interface
    return component


@pytest.mark.unit
def test_medium_address_width():
    for params, width in (({"capacity": 8192}, 22), ({"capacity": 1}, 12), ({}, 32)):
        device = unused(VirtioBlkDevice(data_width=64, **params))
        assert device.medium.signature.addr_width == width
    with pytest.raises(ValueError, match="data_width"):
        AxiSignature(addr_width=32, data_width=48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="opt_io_size is 32 bits"):
            VirtioBlkDevice(data_width=64, capacity=8, opt_io_size=1 << 32)
        with pytest.raises(ValueError, match="does not fit"):
            BlkConfigSpace(fields={"blk_size": 1 << 40}, writeback_writable=True)
        with pytest.raises(ValueError, match="no field 'bogus'"):
            BlkConfigSpace(fields={"bogus": 1}, writeback_writable=True)
        gc.collect()


# -- the header decoder, in Amaranth's simulator -----------------------------------------------

HDR = BitFields(VirtioBlkOutHdr)
DWZ = BitFields(VirtioBlkDiscardWriteZeroes)
CAPACITY = 1000


def decode_all(cases, *, read_only=False, discard_zeroes=False, features=None):
    """Run each (header fields, dwz fields, readable, writable) through a BlkDecoder."""
    dut = BlkDecoder(slots=4, medium_addr_width=24, read_only=read_only,
                     discard_zeroes=discard_zeroes, max_discard_sectors=64,
                     max_write_zeroes_sectors=128)
    features = blk_features(read_only=read_only) if features is None else features
    results = []

    async def bench(ctx):
        ctx.set(dut.capacity, CAPACITY)
        ctx.set(dut.features, features)
        for i, (hdr, dwz, readable, writable) in enumerate(cases):
            entry = HDR.encode(hdr) | (DWZ.encode(dwz) << 128)
            ctx.set(dut.req.payload.slot, i % 4)
            ctx.set(dut.req.payload.readable, readable)
            ctx.set(dut.req.payload.writable, writable)
            ctx.set(dut.req.valid, 1)
            await ctx.tick()
            ctx.set(dut.req.valid, 0)
            ctx.set(dut.hdr_data, entry)        # the header RAM answers a cycle later
            for _ in range(8):
                if ctx.get(dut.rsp.valid):
                    break
                await ctx.tick()
            else:
                raise AssertionError("no answer")
            rsp = ctx.get(dut.rsp.payload)
            assert rsp.slot == i % 4
            results.append((rsp.status, rsp.op, rsp.length, rsp.addr))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.unit
def test_decoder_table():
    IN, OUT, D, W = T.IN.value, T.OUT.value, T.DISCARD.value, T.WRITE_ZEROES.value
    cases = [
        # (header, dwz segment, readable, writable) -> (status, op, length, address)
        (({"type": IN, "sector": 10}, {}, 16, 4097), (S.OK, BlkOp.READ, 4096, 10 * SECTOR)),
        (({"type": IN, "sector": 992}, {}, 16, 4097), (S.OK, BlkOp.READ, 4096, 992 * SECTOR)),
        (({"type": IN, "sector": 993}, {}, 16, 4097), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": IN, "sector": 1000}, {}, 16, 1), (S.OK, BlkOp.READ, 0, None)),
        (({"type": IN, "sector": 1001}, {}, 16, 1), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": IN, "sector": 0}, {}, 16, 1001), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": IN, "sector": (1 << 64) - 1}, {}, 16, 513), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": IN, "sector": 0}, {}, 16, (1 << 32) + 1), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": OUT, "sector": 4}, {}, 16 + 1024, 1), (S.OK, BlkOp.WRITE, 1024, 4 * SECTOR)),
        (({"type": OUT, "sector": 4}, {}, 16 + 1000, 1), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": OUT, "sector": 999}, {}, 16 + 1024, 1), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": T.FLUSH.value, "sector": 77}, {}, 16, 1), (S.OK, BlkOp.NONE, 0, None)),
        (({"type": T.GET_ID.value}, {}, 16, 21), (S.OK, BlkOp.ID, 20, None)),
        (({"type": T.GET_ID.value}, {}, 16, 100), (S.OK, BlkOp.ID, 20, None)),
        (({"type": T.GET_ID.value, "sector": 1 << 60}, {}, 16, 6), (S.OK, BlkOp.ID, 5, None)),
        (({"type": D}, {"sector": 5, "num_sectors": 8}, 32, 1), (S.OK, BlkOp.NONE, 0, None)),
        (({"type": D}, {"sector": 5, "num_sectors": 8, "flags": 1}, 32, 1),
         (S.UNSUPP, BlkOp.NONE, 0, None)),
        (({"type": D}, {"sector": 5, "num_sectors": 65}, 32, 1), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": D}, {"sector": 5, "num_sectors": 8}, 48, 1), (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": W}, {"sector": 5, "num_sectors": 8, "flags": 1}, 32, 1),
         (S.OK, BlkOp.ZERO, 8 * SECTOR, 5 * SECTOR)),
        (({"type": W}, {"sector": 5, "num_sectors": 8, "flags": 2}, 32, 1),
         (S.UNSUPP, BlkOp.NONE, 0, None)),
        (({"type": W}, {"sector": 995, "num_sectors": 8}, 32, 1),
         (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": W}, {"sector": 0, "num_sectors": 129}, 32, 1),
         (S.IOERR, BlkOp.NONE, 0, None)),
        (({"type": W}, {"sector": 0, "num_sectors": 8}, 16, 1), (S.IOERR, BlkOp.NONE, 0, None)),
    ]
    for rtype in (2, 3, 5, 10, 14, 15, 0x80000000, 0xFFFFFFFF):
        cases.append((({"type": rtype}, {}, 32, 1), (S.UNSUPP, BlkOp.NONE, 0, None)))
    got = decode_all([c for c, _ in cases])
    for (case, (status, op, length, addr)), (g_status, g_op, g_length, g_addr) \
            in zip(cases, got, strict=True):
        assert (g_status, g_op, g_length) == (status, op, length), case
        if addr is not None:
            assert g_addr == addr, case


@pytest.mark.unit
def test_decoder_options():
    wz = ({"type": T.WRITE_ZEROES.value}, {"sector": 1, "num_sectors": 2}, 32, 1)
    out = ({"type": T.OUT.value}, {}, 16 + 512, 1)
    discard = ({"type": T.DISCARD.value}, {"sector": 1, "num_sectors": 2}, 32, 1)
    # Read-only: writes fail with IOERR (virtio 1.2 §5.2.6.2); reads still work.
    got = decode_all([out, wz, ({"type": T.IN.value}, {}, 16, 513)], read_only=True,
                     features=blk_features())
    assert [g[0] for g in got] == [S.IOERR, S.IOERR, S.OK]
    # DISCARD zeroes when built so.
    assert decode_all([discard], discard_zeroes=True)[0][:3] == (S.OK, BlkOp.ZERO, 1024)
    # Not negotiated: UNSUPP.
    got = decode_all([discard, wz], features=blk_features() & ~(
        (1 << VirtioBlkF.DISCARD) | (1 << VirtioBlkF.WRITE_ZEROES)))
    assert [g[0] for g in got] == [S.UNSUPP, S.UNSUPP]


# -- the round-robin arbiter --------------------------------------------------------------------

@pytest.mark.unit
def test_stream_arbiter():
    """A waiting input is served before any other is served twice, and a presented beat stays
    presented until it is taken."""
    n = 4
    dut = StreamArbiter(shape=8, count=n)
    rng = random.Random(3)
    served = []

    async def bench(ctx):
        pending = [0] * n
        since = [None] * n          # services of each input since this one began to wait
        presented = None
        for _ in range(600):
            for i in range(n):
                if not pending[i] and rng.random() < 0.3:
                    pending[i] = 1
                    since[i] = [0] * n
                ctx.set(dut.i[i].valid, pending[i])
                ctx.set(dut.i[i].payload, 16 * i + len(served) % 16)
            ready = rng.random() < 0.6
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-8)
            if ctx.get(dut.o.valid):
                grant = ctx.get(dut.grant)
                assert ctx.get(dut.o.payload) == 16 * grant + len(served) % 16
                if presented is not None:
                    assert grant == presented, "the arbiter switched away from a waiting beat"
                if ready:
                    served.append(grant)
                    pending[grant] = 0
                    presented = None
                    for i in range(n):
                        if pending[i]:
                            since[i][grant] += 1
                            assert since[i][grant] <= 1, f"input {i} starved by {grant}"
                else:
                    presented = grant
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(served) > 100 and set(served) == set(range(n))


# -- disk image and shadow disk ------------------------------------------------------------------

@pytest.mark.unit
def test_disk_image(tmp_path):
    path = tmp_path / "disk.img"
    with pytest.raises(FileNotFoundError):
        DiskImage(path)
    with DiskImage(path, sectors=16) as image:
        assert image.sectors == 16 and image.size == 16 * SECTOR
        image.mem[512:516] = b"abcd"
        image.fail(1024, 8)
        with pytest.raises(MediumError):
            image.mem[1020:1030]
        with pytest.raises(MediumError):
            image.mem[1030:1031] = b"x"
        image.heal()
        image.mem[1030:1031] = b"x"
    assert path.stat().st_size == 16 * SECTOR
    with DiskImage(path) as image:
        assert image.read(512, 4) == b"abcd" and image.read(1030, 1) == b"x"
    path.write_bytes(b"\0" * 700)
    with pytest.raises(ValueError, match="700"):
        DiskImage(path)
    assert DiskImage(sectors=2, fill=7).read(0, 3) == b"\7\7\7"


@pytest.mark.unit
def test_shadow_disk():
    shadow = ShadowDisk(bytes(8 * SECTOR))
    shadow.write(1, b"\1" * SECTOR)
    shadow.zero(1, 1)
    shadow.write(2, b"\2" * 2 * SECTOR)
    shadow.forget(3, 1)
    assert not shadow.known(2, 2) and shadow.known(0, 3)
    with pytest.raises(ValueError):
        shadow.read(3, 1)
    with pytest.raises(ValueError):
        shadow.write(7, bytes(2 * SECTOR))
    actual = bytearray(shadow.data)
    actual[3 * SECTOR] = 0x55            # unknown: ignored
    assert shadow.mismatches(actual) == []
    actual[5 * SECTOR + 9] = 0x55
    assert shadow.mismatches(actual) == [5]
    for zeroes, expect in ((True, bytes(SECTOR)), (False, b"\2" * SECTOR)):
        s = ShadowDisk(shadow.data, discard_zeroes=zeroes)
        s.discard(2, 1)
        assert s.read(2, 1) == expect
    s = ShadowDisk(shadow.data, discard_zeroes=None)
    s.discard(2, 1)
    assert not s.known(2, 1)
