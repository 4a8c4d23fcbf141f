# SPDX-License-Identifier: BSD-2-Clause
"""The Xilinx 7-series adapter between a model of the ``pcie_7x`` hard IP and an ext-mode function.

::

    RootComplex ── Xilinx7PcieModel (Python: header, BARs, PM/PCIe/MSI-X caps, forwarding ≥ 0xA8)
                     │ m_axis_rx / s_axis_tx / cfg_* / cfg_interrupt*
                   Xilinx7PcieAdapter (RTL, the DUT)
                     │ rx_req / rx_cpl / tx_cpl / tx_req / cfg
                   ExtFunctionStandIn (Python: virtio caps at 0xA8.., BAR memory, MSI-X/INTx, DMA)

The host enumerates the device; its capability walk goes through the core's PM, PCI Express and
MSI-X capabilities into the forwarded virtio capabilities. Then MMIO through both BARs with byte
enables, DMA both ways through ``tx_req``/``rx_cpl``, MSI-X messages, INTx through the
``cfg_interrupt`` handshake, the configuration the host programs appearing on ``cfg``, and a
stream of back-to-back writes (straddled at 128 bits) under idle cycles and back-pressure, with
the cycles counted. The same model carries the host-model system tests of the adapter with the
real core (``test_xilinx7_system.py``).
"""

import itertools
import logging
import random
import struct

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer, with_timeout

from cocotbext.pcie.core import RootComplex

from virtio_pcie.adapters.xilinx7 import Xilinx7PcieAdapter
from virtio_pcie.adapters.xilinx7_core import HARD_IP_CAPABILITIES
from virtio_pcie.spec.pcie import CapId, FmtType
from virtio_pcie.spec.virtio import VIRTIO_PCI_VENDOR_ID, VirtioPciCapType
from virtio_pcie_tb import harness
from virtio_pcie_tb.models.ext_function import (DMA_DOORBELL, STANDIN_LAYOUT,
                                                ExtFunctionStandIn)
from virtio_pcie_tb.models.tlp_stream import TlpSink, TlpSource
from virtio_pcie_tb.models.xilinx7_pcie import Xilinx7PcieModel

CLOCK_NS = 4
EXT_CAP_POINTER = 0xA8


class TB:
    def __init__(self, dut, *, straddle=True):
        self.dut = dut
        logging.getLogger("cocotb.pcie").setLevel(logging.WARNING)
        width = harness.dut_params()["data_width"]
        self.width = width
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.rc = RootComplex()
        self.model = Xilinx7PcieModel(
            dut, dut.clk, dut.rst, data_width=width, straddle=straddle,
            vendor_id=VIRTIO_PCI_VENDOR_ID, device_id=0x1042, revision_id=1,
            class_code=0x010000, subsystem_vendor_id=VIRTIO_PCI_VENDOR_ID, subsystem_id=0x1100,
            interrupt_pin=1, bars=STANDIN_LAYOUT["bars"], msix=STANDIN_LAYOUT["msix"],
            ext_cfg_cap_ptr=EXT_CAP_POINTER // 4, last_cap_next=EXT_CAP_POINTER)
        self.rc.make_port().connect(self.model)
        sinks = {name: TlpSink(dut, name, dut.clk, dut.rst, data_width=width)
                 for name in ("rx_req", "rx_cpl")}
        sources = {name: TlpSource(dut, name, dut.clk, dut.rst, data_width=width)
                   for name in ("tx_cpl", "tx_req")}
        self.sinks, self.sources = sinks, sources
        self.fn = ExtFunctionStandIn(dut, sinks["rx_req"], sinks["rx_cpl"], sources["tx_cpl"],
                                     sources["tx_req"], ext_cap_pointer=EXT_CAP_POINTER)
        self.dev = None

    async def start(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        await with_timeout(self.rc.enumerate(), 2, "ms")
        self.dev = self.rc.find_device(self.model.function.pcie_id)
        assert self.dev is not None, "the root complex did not find the device"

    def watch_rx_stalls(self):
        """Count cycles in which the core offers a beat the adapter does not take."""
        counter = [0]

        async def watch():
            while True:
                await RisingEdge(self.dut.clk)
                if self.dut.m_axis_rx_tvalid.value and not self.dut.m_axis_rx_tready.value:
                    counter[0] += 1
        cocotb.start_soon(watch())
        return counter

    def check_clean(self):
        assert not self.model.errors, self.model.errors
        assert not self.fn.errors, self.fn.errors
        for port in list(self.sinks.values()):
            assert not port.errors, port.errors


def cycle_pause(seed):
    rng = random.Random(seed)
    return (rng.random() < 0.3 for _ in itertools.count())


@cocotb.test()
async def run_enumerate_and_walk(dut):
    """The capability chain continues from the core's MSI-X capability into the virtio caps."""
    tb = TB(dut)
    await tb.start()
    dev = tb.dev
    assert dev.vendor_id == VIRTIO_PCI_VENDOR_ID and dev.device_id == 0x1042
    hard = [(c.cap_id, c.offset) for c in HARD_IP_CAPABILITIES if c.name != "msi"]
    virtio = [(CapId.VNDR.value, off) for _, off in tb.fn.caps]
    assert [(int(c), o) for c, o in dev.capabilities] == hard + virtio, dev.capabilities
    # The walk read the forwarded capabilities through the DUT.
    assert tb.model.forwarded_config >= len(virtio)
    assert tb.fn.config_requests == tb.model.forwarded_config
    # Each virtio capability reads back as the function placed it, through the adapter.
    types = (VirtioPciCapType.COMMON_CFG, VirtioPciCapType.NOTIFY_CFG, VirtioPciCapType.ISR_CFG,
             VirtioPciCapType.DEVICE_CFG, VirtioPciCapType.PCI_CFG)
    for (name, off), cfg_type in zip(tb.fn.caps, types, strict=True):
        dw0 = await dev.config_read_dword(off)
        assert dw0 & 0xFF == CapId.VNDR.value and (dw0 >> 24) == cfg_type.value, (name, dw0)
    # The PCI_CFG capability's offset field is writable through the forwarded path; byte
    # enables are honoured (one byte written).
    pci_cfg = dict(tb.fn.caps)["pci_cfg"]
    await dev.config_write_byte(pci_cfg + 8, 0x5A)
    assert (await dev.config_read_dword(pci_cfg + 8)) == 0x5A
    # Outside the forwarded window the core answers itself (the DUT sees nothing).
    before = tb.fn.config_requests
    assert (await dev.config_read_dword(0)) == (0x1042 << 16) | VIRTIO_PCI_VENDOR_ID
    assert tb.fn.config_requests == before
    # The configuration the host programmed reaches cfg: bus/device number, Command.
    await ClockCycles(dut.clk, 2)
    fn = tb.model.function
    assert tb.fn.pcie_id == int(fn.pcie_id)
    tb.check_clean()


@cocotb.test()
async def run_mmio_and_dma(dut):
    """MMIO through BAR 1 and the 64-bit BAR 4 (bar_id), and DMA through tx_req/rx_cpl."""
    tb = TB(dut)
    await tb.start()
    dev = tb.dev
    await dev.enable_device()
    await dev.set_master()
    await ClockCycles(dut.clk, 2)
    assert tb.fn.cfg_field("command") & 0b110 == 0b110     # memory space, bus master
    rng = random.Random(1)
    for bar in (1, 4):
        window = dev.bar_window[bar]
        for length in (1, 2, 3, 4, 7, 8, 13, 32, 64, 100, 256):
            offset = rng.randrange(0, 0x400 - length) + (0x400 if bar == 4 else 0)
            data = bytes(rng.randrange(256) for _ in range(length))
            await window.write(offset, data)
            got = await window.read(offset, length)
            assert got == data, (bar, offset, length, got.hex(), data.hex())
            assert tb.fn.bars[bar][offset:offset + length] == data
    memory = (FmtType.MRD32.value, FmtType.MRD64.value, FmtType.MWR32.value, FmtType.MWR64.value)
    assert {r.bar_id for r in tb.fn.requests if r.fmt_type in memory} == {1, 4}
    # DMA: the function reads host memory and writes it back elsewhere.
    base, mem = tb.rc.alloc_region(16384)
    src, dst = base, base + 8192
    payload = bytes(rng.randrange(256) for _ in range(3000))
    mem[0:len(payload)] = payload
    await dev.bar_window[4].write(DMA_DOORBELL[1], struct.pack("<QQQ", src, dst, len(payload)))
    await with_timeout(tb.fn.dma_done.wait(), 200, "us")
    await tb.sources["tx_req"].wait_idle()
    await Timer(2, "us")        # the last writes cross the adapter, the model and the link
    assert bytes(mem[8192:8192 + len(payload)]) == payload
    tb.check_clean()


@cocotb.test()
async def run_interrupts(dut):
    """MSI-X messages the function writes itself; INTx through the cfg_interrupt handshake."""
    tb = TB(dut)
    await tb.start()
    dev = tb.dev
    await dev.enable_device()
    await dev.set_master()
    # INTx first (MSI-X off): a notify write asserts INTA, the ISR read deasserts it.
    await dev.bar_window[4].write(STANDIN_LAYOUT["windows"]["notify"][2], b"\x00\x00")
    await with_timeout(tb.model.wait_intx(asserted=True), 50, "us")
    assert tb.model.function.interrupt_status
    await dev.bar_window[4].read(STANDIN_LAYOUT["windows"]["isr"][2], 1)
    # The function hands over Deassert_INTA and the ISR read's completion together: the
    # adapter holds the completion until the core has the message, so the host has the line
    # low by the time the read returns (no spurious interrupt).
    assert not tb.model.intx_asserted[0], "the ISR read completed before Deassert_INTA"
    assert [kind for _, kind, _ in tb.model.intx_messages] == ["assert", "deassert"]
    # MSI-X: enabling it in the core's capability shows on cfg; the message is a memory write.
    await dev.alloc_irq_vectors(1, 1)
    await ClockCycles(dut.clk, 2)
    assert tb.fn.cfg_field("msix_enable") == 1
    event = dev.msi_vectors[0].event
    event.clear()
    await dev.bar_window[4].write(STANDIN_LAYOUT["windows"]["notify"][2], b"\x00\x00")
    await with_timeout(event.wait(), 50, "us")
    assert tb.fn.msix_sent == 1
    assert [kind for _, kind, _ in tb.model.intx_messages] == ["assert", "deassert"]
    tb.check_clean()


@cocotb.test()
async def run_device_control(dut):
    """MPS, MRRS, extended tags and RCB the host writes in the core's PCIe capability."""
    tb = TB(dut)
    await tb.start()
    dev = tb.dev
    pcie = [c.offset for c in HARD_IP_CAPABILITIES if c.name == "pcie"][0]
    devctl = await dev.config_read_word(pcie + 8)
    devctl = (devctl & ~(0x7 << 5) & ~(0x7 << 12)) | (1 << 5) | (3 << 12) | (1 << 8)
    await dev.config_write_word(pcie + 8, devctl)
    lnkctl = await dev.config_read_word(pcie + 16)
    await dev.config_write_word(pcie + 16, lnkctl | (1 << 3))
    await ClockCycles(dut.clk, 2)
    assert tb.fn.cfg_field("max_payload_size") == 1
    assert tb.fn.cfg_field("max_read_request_size") == 3
    assert tb.fn.cfg_field("extended_tag") == 1
    assert tb.fn.cfg_field("rcb_128") == 1
    tb.check_clean()


@cocotb.test()
@cocotb.parametrize(stress=[False, True])
async def run_streaming(dut, stress):
    """Back-to-back writes of every small size (straddled at 128 bits), then a long burst,
    under idle cycles and back-pressure when ``stress``; counts the cycles."""
    tb = TB(dut)
    await tb.start()
    dev = tb.dev
    await dev.enable_device()
    if stress:
        tb.model.rx_idle = cycle_pause(2)
        tb.model.tx_backpressure = cycle_pause(3)
        tb.sinks["rx_req"].set_backpressure_generator(cycle_pause(4))
    window = dev.bar_window[4]
    rng = random.Random(5)
    expect = bytearray(0x1000)
    for length in list(range(1, 41)) * 2:
        offset = rng.randrange(0, 0x1000 - length)
        data = bytes(rng.randrange(256) for _ in range(length))
        await window.write(offset, data)
        expect[offset:offset + length] = data
    got = await window.read(0, 0x1000)
    assert got == bytes(expect)
    # A burst of 16 writes of 256 bytes. The adapter must never be the bottleneck: with the
    # function always ready it must take every beat the core offers (no cycle with tvalid and
    # not tready on m_axis_rx); the cycles from first to last beat are reported.
    stalls = tb.watch_rx_stalls()
    beats_before = tb.sinks["rx_req"].beats
    start = None
    for i in range(16):
        await window.write(i * 256, bytes([i]) * 256)
    while tb.sinks["rx_req"].beats < beats_before + 16 * (256 // (tb.width // 8)):
        await RisingEdge(dut.clk)
        if start is None and tb.sinks["rx_req"].beats > beats_before:
            start = cocotb.utils.get_sim_time("ns")
    cycles = (cocotb.utils.get_sim_time("ns") - start) / CLOCK_NS
    dut._log.info("16 x 256-byte writes at %d bits: %d cycles on rx_req (%d payload beats), "
                  "%d cycles the adapter held m_axis_rx back%s", tb.width, cycles,
                  16 * 256 // (tb.width // 8), stalls[0], " under stress" if stress else "")
    if not stress:
        assert stalls[0] == 0, f"the adapter stalled the core for {stalls[0]} cycles"
    tb.check_clean()


# --- pytest launchers -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=[64, 128], ids=lambda w: f"w{w}")
def design(request):
    return harness.build(Xilinx7PcieAdapter, {"data_width": request.param},
                         name="xilinx7_adapter")


@pytest.mark.sim
def test_xilinx7_adapter(design, simulate):
    simulate(design, "test_xilinx7_adapter")
