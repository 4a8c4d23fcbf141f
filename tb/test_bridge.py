# SPDX-License-Identifier: BSD-2-Clause
"""The TLP path end to end, before any real function exists.

Loopback: random TLPs through a :class:`~virtio_pcie.tlp.fifo.TlpFifo` under random idle cycles
and back-pressure, at every data width::

    TlpSource ──► i ┌─────────┐ o ──► TlpSink      (compare, TLP for TLP)
                    │ TlpFifo │
                    └─────────┘

Enumeration: cocotbext-pcie's root complex finds the minimal endpoint through the bridge::

    RootComplex ── DutPcieDevice ══ rx_req/tx_cpl/tx_req/rx_cpl ══ MinimalEndpoint

Bad input: malformed beat sequences are reported by the sink and the stream keeps working; the
RTL answers truncated and unknown requests and keeps working.
"""

import itertools
import random

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer, with_timeout

from virtio_pcie.spec.pcie import CplStatus, FmtType
from virtio_pcie.tlp.fifo import TlpFifo
from virtio_pcie_tb import harness
from virtio_pcie_tb.designs.minimal_endpoint import MinimalEndpoint
from virtio_pcie_tb.models.tlp import RawTlp
from virtio_pcie_tb.models.tlp_stream import TlpSink, TlpSource

CLOCK_NS = 4


def random_tlp(rng):
    kind = rng.choice(["mwr", "mrd", "cpld", "cpl", "cfgwr", "msg"])
    t = RawTlp()
    if kind == "mwr":
        n = rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 32, 33, 64])
        t = RawTlp(payload=rng.randbytes(4 * n))
        t["dw0.fmt_type"] = rng.choice([FmtType.MWR32, FmtType.MWR64]).value
        t["dw0.length"] = n
        t["req.dw2"] = rng.getrandbits(32) & ~3
        if t.is_4dw:
            t["req.dw3"] = rng.getrandbits(32) & ~3
    elif kind == "mrd":
        t["dw0.fmt_type"] = FmtType.MRD32.value
        t["dw0.length"] = rng.randrange(1, 1024)
        t["req.tag"] = rng.randrange(256)
        t["req.dw2"] = rng.getrandbits(32) & ~3
    elif kind == "cpld":
        n = rng.randrange(1, 40)
        t = RawTlp(payload=rng.randbytes(4 * n))
        t["dw0.fmt_type"] = FmtType.CPLD.value
        t["dw0.length"] = n
        t["cpl.byte_count"] = 4 * n
        t["cpl.tag"] = rng.randrange(256)
    elif kind == "cpl":
        t["dw0.fmt_type"] = FmtType.CPL.value
        t["cpl.status"] = CplStatus.UR.value
    elif kind == "cfgwr":
        t = RawTlp(payload=rng.randbytes(4))
        t["dw0.fmt_type"] = FmtType.CFGWR0.value
        t["dw0.length"] = 1
        t["cfg.register"] = rng.randrange(64)
    else:
        t["dw0.fmt_type"] = FmtType.MSG_LOC.value
        t["msg.message_code"] = 0x20
    return t.check()


class LoopbackTB:
    def __init__(self, dut, data_width):
        self.dut = dut
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.source = TlpSource(dut, "i", dut.clk, dut.rst, data_width=data_width)
        self.sink = TlpSink(dut, "o", dut.clk, dut.rst, data_width=data_width)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)


def cycle_pause():
    return itertools.cycle([1, 1, 1, 0])


def random_pause(seed):
    rng = random.Random(seed)
    while True:
        yield rng.random() < 0.4


@cocotb.test()
@cocotb.parametrize(idle=[None, cycle_pause, random_pause], backpressure=[None, cycle_pause,
                                                                          random_pause])
async def run_loopback(dut, idle, backpressure):
    data_width = harness.dut_params()["data_width"]
    tb = LoopbackTB(dut, data_width)
    await tb.reset()
    tb.source.set_idle_generator(idle(1) if idle is random_pause else idle and idle())
    tb.sink.set_backpressure_generator(backpressure(2) if backpressure is random_pause
                                       else backpressure and backpressure())
    rng = random.Random(data_width)
    sent = [random_tlp(rng) for _ in range(200)]
    for t in sent:
        tb.source.send_nowait(t)
    for i, t in enumerate(sent):
        got = await with_timeout(tb.sink.recv(), 100, "us")
        assert got.hdr == t.hdr and got.payload == t.payload, f"TLP {i}: {got!r} != {t!r}"
    assert not tb.sink.errors
    assert tb.sink.beats == tb.source.beats


@cocotb.test()
async def run_malformed_stream(dut):
    """Beats that break the stream rules are reported and the sink resynchronises."""
    data_width = harness.dut_params()["data_width"]
    tb = LoopbackTB(dut, data_width)
    await tb.reset()
    codec = tb.source.codec
    good = random_tlp(random.Random(7))
    long = RawTlp(payload=bytes(range(64)) * 2)
    long["dw0.fmt_type"] = FmtType.MWR32.value
    long["dw0.length"] = 32
    beats = codec.encode(long)
    truncated = beats[:1] + [beats[-1]]                # payload shorter than the header says
    unknown = codec.encode(RawTlp())
    unknown = [unknown[0] | (0x1F << (codec.off["hdr"] + 24))]   # undefined Fmt/Type
    no_sop = beats[1:]
    for seq in (truncated, unknown, no_sop):
        await tb.source.send_beats(seq)
        tb.source.send_nowait(good)
        got = await with_timeout(tb.sink.recv(), 20, "us")
        assert got.hdr == good.hdr and got.payload == good.payload
    assert len(tb.sink.errors) >= 3, tb.sink.errors
    assert any("says 32 dwords" in e or "beats for" in e for e in tb.sink.errors)
    assert any("unknown Fmt/Type" in e for e in tb.sink.errors)
    assert any("without sop" in e for e in tb.sink.errors)


class EndpointTB:
    def __init__(self, dut, data_width, **bridge_args):
        from cocotbext.pcie.core import RootComplex
        from virtio_pcie_tb.models.pcie_bridge import DutPcieDevice
        self.dut = dut
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.rc = RootComplex()
        self.dev = DutPcieDevice(dut, dut.clk, dut.rst, data_width=data_width, **bridge_args)
        self.rc.make_port().connect(self.dev)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)


@cocotb.test()
async def run_enumerate(dut):
    data_width = harness.dut_params()["data_width"]
    tb = EndpointTB(dut, data_width)
    await tb.reset()
    await with_timeout(tb.rc.enumerate(), 1, "ms")
    dev = tb.rc.find_device((1, 0, 0))
    assert dev is not None, "the root complex did not find the endpoint"
    assert dev.vendor_id == 0x1AF4 and dev.device_id == 0x10FF
    assert dev.header_type == 0 and dev.class_code == 0xFF0000
    assert dev.revision_id == 1
    assert not dev.capabilities and not any(dev.bar)
    assert not tb.dev.all_errors


@cocotb.test()
async def run_requests_refused(dut):
    """Non-posted requests the endpoint does not support get UR; posted ones are dropped; a
    truncated or unknown TLP does not wedge it."""
    data_width = harness.dut_params()["data_width"]
    tb = EndpointTB(dut, data_width)
    await tb.reset()
    cpls = []
    tb.dev.tx_monitors.append(lambda t: cpls.append(t) if t.is_completion else None)

    mrd = RawTlp()
    mrd["dw0.fmt_type"] = FmtType.MRD32.value
    mrd["dw0.length"] = 1
    mrd["req.tag"] = 0x42
    mrd["req.requester_id"] = 0x0010
    mrd["req.dw2"] = 0x1000
    tb.dev.send_request(mrd)
    mwr = RawTlp(payload=bytes(64))
    mwr["dw0.fmt_type"] = FmtType.MWR32.value
    mwr["dw0.length"] = 16
    tb.dev.send_request(mwr)
    # truncated MWr: the header says 16 dwords, one beat is sent, then a read
    beats = tb.dev.rx_req.codec.encode(mwr)
    await tb.dev.rx_req.send_beats([beats[0] | (1 << tb.dev.rx_req.codec.off["eop"])])
    mrd2 = RawTlp(mrd.hdr)
    mrd2["req.tag"] = 0x43
    tb.dev.send_request(mrd2)
    for _ in range(200):
        await RisingEdge(dut.clk)
        if len(cpls) >= 2:
            break
    assert [c["cpl.status"] for c in cpls] == [CplStatus.UR.value] * 2, cpls
    assert [c.tag for c in cpls] == [0x42, 0x43]
    assert all(c["cpl.requester_id"] == 0x0010 for c in cpls)
    await Timer(100, "ns")
    assert len(cpls) == 2, "a posted request must not be answered"
    # still enumerates afterwards
    await with_timeout(tb.rc.enumerate(), 1, "ms")
    assert tb.rc.find_device((1, 0, 0)) is not None


@cocotb.test()
async def run_request_credits(dut):
    """Requests from the root port wait for the device port's receive credits, which come back
    only when the RTL takes a request: with the request stream held back, as many posted writes
    go down as the port has posted header credits and the next one waits; let go, all arrive."""
    from cocotbext.pcie.core.tlp import Tlp, TlpType
    data_width = harness.dut_params()["data_width"]
    tb = EndpointTB(dut, data_width)
    await tb.reset()
    await with_timeout(tb.rc.enumerate(), 1, "ms")
    port = tb.dev.upstream_port
    root = port.other.parent                       # the root port the bridge is connected to
    credits = port.fc_state[0].ph.rx_initial_allocation
    assert credits == 64
    held = [True]

    def hold():
        while True:
            yield held[0]
    tb.dev.rx_req.set_idle_generator(hold())
    taken_before = tb.dev.rx_req.tlps
    sent = []

    async def send_writes(count):
        for i in range(count):
            tlp = Tlp()
            tlp.fmt_type = TlpType.MEM_WRITE
            tlp.requester_id = root.pcie_id
            tlp.set_addr_be_data(0x1000 + 4 * i, i.to_bytes(4, "little"))
            await root.downstream_send(tlp)
            sent.append(i)
    writer = cocotb.start_soon(send_writes(credits + 6))
    await Timer(2, "us")
    assert len(sent) == credits, f"{len(sent)} posted writes passed {credits} header credits"
    assert tb.dev.rx_req.tlps == taken_before
    held[0] = False
    await with_timeout(writer, 10, "us")
    for _ in range(2000):
        if tb.dev.rx_req.tlps == taken_before + credits + 6:
            break
        await RisingEdge(dut.clk)
    assert tb.dev.rx_req.tlps == taken_before + credits + 6
    assert not tb.dev.all_errors


# -- pytest launchers --------------------------------------------------------------------------

WIDTHS = [64, 128, 256]


@pytest.mark.sim
@pytest.mark.parametrize("data_width", WIDTHS)
def test_loopback(simulate, data_width):
    design = harness.build(TlpFifo, {"data_width": data_width, "depth": 8}, name="tlp_fifo")
    simulate(design, "test_bridge", testcase=["run_loopback", "run_malformed_stream"])


@pytest.mark.sim
@pytest.mark.parametrize("data_width", WIDTHS)
def test_minimal_endpoint(simulate, data_width):
    design = harness.build(MinimalEndpoint, {"data_width": data_width}, name="minimal_endpoint")
    simulate(design, "test_bridge", testcase=["run_enumerate", "run_requests_refused",
                                              "run_request_credits"])


@pytest.mark.sim
def test_build_keeps_binary_only(simulate):
    """A finished build keeps the simulator and its sources but none of Verilator's ~150 MB of
    precompiled headers and objects per design (a full run once filled a CI machine's disk)."""
    design = harness.build(TlpFifo, {"data_width": 64, "depth": 8}, name="tlp_fifo")
    left = sorted(p.name for p in design.directory.iterdir())
    assert (design.directory / design.toplevel).is_file(), left
    assert design.verilog.is_file(), left
    for pattern in ("*.gch", "*.o", "*.a", "Vtop*.cpp"):
        assert not list(design.directory.glob(pattern)), (pattern, left)
    simulate(design, "test_bridge", testcase=["run_loopback"])
