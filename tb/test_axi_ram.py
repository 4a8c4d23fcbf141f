# SPDX-License-Identifier: BSD-2-Clause
"""The on-chip RAM medium (:class:`~virtio_pcie.devices.axi_ram.AxiRam`) against cocotbext-axi.

::

    AxiMaster (cocotbext-axi) ══ AW/W/B/AR/R ══ AxiRam ── lib.memory
          │                                        ▲
          └──────────── Python shadow ─────────────┘ (compare byte for byte)

Random INCR and FIXED bursts of every transfer size, partial strobes, reads and writes at the
same time under random back-pressure on every channel, accesses beyond the RAM (DECERR), WRAP
bursts driven on the raw channels, and the streaming rate of long bursts.
"""

import random

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBurstType, AxiBus, AxiMaster, AxiResp
from cocotbext.axi.axi_channels import (AxiARSource, AxiAWSource, AxiBSink, AxiRSink,
                                        AxiWSource)

from virtio_pcie.devices.axi_ram import AxiRam
from virtio_pcie_tb import harness

CLOCK_NS = 4
INIT = bytes(range(256)) * 4


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.params = harness.dut_params()
        self.size = self.params["size"]
        self.bpb = self.params["data_width"] // 8
        self.shadow = bytearray(INIT.ljust(self.size, b"\0"))
        Clock(dut.clk, CLOCK_NS, unit="ns").start()

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def master(self, **kwargs):
        m = AxiMaster(AxiBus.from_prefix(self.dut, "bus_"), self.dut.clk, self.dut.rst, **kwargs)
        for name in ("write_if", "read_if"):
            getattr(m, name).log.setLevel("WARNING")
        return m


def random_pause(seed, p):
    rng = random.Random(seed)
    while True:
        yield rng.random() < p


@cocotb.test()
async def run_initial_contents(dut):
    tb = TB(dut)
    await tb.reset()
    axi = tb.master()
    got = await axi.read(0, len(INIT))
    assert got.data == INIT
    assert got.resp == AxiResp.OKAY


@cocotb.test()
@cocotb.parametrize(pause=[0.0, 0.3])
async def run_random_bursts(dut, pause):
    tb = TB(dut)
    await tb.reset()
    axi = tb.master(max_burst_len=64)
    if pause:
        for i, ch in enumerate((axi.write_if.aw_channel, axi.write_if.w_channel,
                                axi.write_if.b_channel, axi.read_if.ar_channel,
                                axi.read_if.r_channel)):
            ch.set_pause_generator(random_pause(i, pause))
    rng = random.Random(int(pause * 10) + tb.bpb)
    # The RAM keeps what earlier tests of this run wrote.
    tb.shadow = bytearray((await axi.read(0, tb.size)).data)
    assert tb.shadow[:0x100] == INIT[:0x100]
    max_size = (tb.bpb - 1).bit_length()

    async def writer():
        for _ in range(60):
            size = rng.randrange(0, max_size + 1)
            length = rng.randrange(1, 300)
            addr = rng.randrange(0x100, tb.size - length)   # keep out of the reader's window
            burst = AxiBurstType.INCR if rng.random() < 0.85 else AxiBurstType.FIXED
            payload = rng.randbytes(length if burst == AxiBurstType.INCR else 1 << size)
            if burst == AxiBurstType.FIXED:
                addr &= ~((1 << size) - 1)
            resp = await axi.write(addr, payload, burst=burst, size=size)
            assert resp.resp == AxiResp.OKAY
            tb.shadow[addr:addr + len(payload)] = payload
            got = await axi.read(addr, len(payload), size=size)
            assert got.data == payload, f"write/read-back at {addr:#x} size {size}"

    async def reader():
        # Reads of a region the writer never touches run concurrently with the writes.
        for _ in range(60):
            length = rng.randrange(1, 200)
            addr = rng.randrange(0, 0x100 - length)
            got = await axi.read(addr, length, size=rng.randrange(0, max_size + 1))
            assert got.data == INIT[addr:addr + length]

    w = cocotb.start_soon(writer())
    r = cocotb.start_soon(reader())
    await w
    await r
    whole = await axi.read(0, tb.size)
    assert whole.data == tb.shadow


@cocotb.test()
async def run_out_of_range(dut):
    tb = TB(dut)
    await tb.reset()
    axi = tb.master()
    addr_width = len(dut.bus__awaddr)
    if (1 << addr_width) <= tb.size:
        return
    resp = await axi.write(tb.size, b"\x55" * tb.bpb)
    assert resp.resp == AxiResp.DECERR
    got = await axi.read(tb.size, tb.bpb)
    assert got.resp == AxiResp.DECERR and got.data == bytes(tb.bpb)
    # A burst that runs off the end: the part inside is written, the answer is DECERR.
    resp = await axi.write(tb.size - tb.bpb, b"\xAA" * (2 * tb.bpb))
    assert resp.resp == AxiResp.DECERR
    got = await axi.read(tb.size - tb.bpb, tb.bpb)
    assert got.resp == AxiResp.OKAY and got.data == b"\xAA" * tb.bpb


@cocotb.test()
async def run_wrap_bursts(dut):
    """WRAP bursts (IHI 0022E §A3.4.1), which cocotbext-axi's master does not issue."""
    tb = TB(dut)
    await tb.reset()
    aw = AxiAWSource(AxiBus.from_prefix(dut, "bus_").write.aw, dut.clk, dut.rst)
    w = AxiWSource(AxiBus.from_prefix(dut, "bus_").write.w, dut.clk, dut.rst)
    b = AxiBSink(AxiBus.from_prefix(dut, "bus_").write.b, dut.clk, dut.rst)
    ar = AxiARSource(AxiBus.from_prefix(dut, "bus_").read.ar, dut.clk, dut.rst)
    r = AxiRSink(AxiBus.from_prefix(dut, "bus_").read.r, dut.clk, dut.rst)
    size = (tb.bpb - 1).bit_length()
    rng = random.Random(5)
    for beats in (2, 4, 8, 16):
        window = beats * tb.bpb
        base = 0x400
        start = base + rng.randrange(1, beats) * tb.bpb
        words = [rng.randbytes(tb.bpb) for _ in range(beats)]
        t = aw._transaction_obj()
        t.awid, t.awaddr, t.awlen, t.awsize, t.awburst = 0, start, beats - 1, size, 2
        await aw.send(t)
        for i, word in enumerate(words):
            t = w._transaction_obj()
            t.wdata = int.from_bytes(word, "little")
            t.wstrb = (1 << tb.bpb) - 1
            t.wlast = int(i == beats - 1)
            await w.send(t)
        resp = await b.recv()
        assert int(resp.bresp) == AxiResp.OKAY
        for i, word in enumerate(words):
            addr = base + (start - base + i * tb.bpb) % window
            tb.shadow[addr:addr + tb.bpb] = word
        t = ar._transaction_obj()
        t.arid, t.araddr, t.arlen, t.arsize, t.arburst = 0, start, beats - 1, size, 2
        await ar.send(t)
        for i, word in enumerate(words):
            beat = await r.recv()
            assert int(beat.rdata).to_bytes(tb.bpb, "little") == word
            assert int(beat.rlast) == int(i == beats - 1)
        # The window as a whole, read back with INCR on the raw channels.
        t = ar._transaction_obj()
        t.arid, t.araddr, t.arlen, t.arsize, t.arburst = 0, base, beats - 1, size, 1
        await ar.send(t)
        got = b"".join([int((await r.recv()).rdata).to_bytes(tb.bpb, "little")
                        for _ in range(beats)])
        assert got == bytes(tb.shadow[base:base + window])


@cocotb.test()
async def run_streaming_rate(dut):
    """Long bursts move one beat per cycle on W and on R."""
    tb = TB(dut)
    await tb.reset()
    axi = tb.master()
    length = min(tb.size, 64 * 1024)
    payload = random.Random(1).randbytes(length)
    beats = {"w": 0, "r": 0}

    async def count():
        while True:
            await RisingEdge(dut.clk)
            beats["w"] += int(dut.bus__wvalid.value) & int(dut.bus__wready.value)
            beats["r"] += int(dut.bus__rvalid.value) & int(dut.bus__rready.value)
    counter = cocotb.start_soon(count())
    await axi.write(0, payload)
    await RisingEdge(dut.clk)
    start = cocotb.utils.get_sim_time("ns")
    got = await axi.read(0, length)
    cycles = (cocotb.utils.get_sim_time("ns") - start) / CLOCK_NS
    counter.cancel()
    assert got.data == payload
    n = length // tb.bpb
    dut._log.info("read of %d beats took %d cycles", n, cycles)
    assert beats["r"] == n
    assert cycles <= n * 1.05 + 20, f"{n} beats in {cycles} cycles"


def axi_ram_with_init(**params):
    return AxiRam(init=INIT, **params)


@pytest.mark.sim
@pytest.mark.parametrize("data_width", [64, pytest.param(256, marks=pytest.mark.slow)])
def test_axi_ram(simulate, data_width):
    """(256 bits also runs under the virtio-blk device in test_blk.py, by default.)"""
    # addr_width one bit wider than the RAM, so accesses beyond it can be tried.
    design = harness.build(axi_ram_with_init, {"size": 64 * 1024, "data_width": data_width,
                                               "addr_width": 17}, name="axi_ram",
                           debug_aliases=False)
    simulate(design, "test_axi_ram")
