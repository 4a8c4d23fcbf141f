# SPDX-License-Identifier: BSD-2-Clause
"""The PCI function in ``"ext"`` mode: a vendor hard IP owns the header, its capabilities and the
BARs, and forwards the rest of configuration space.

::

    TlpSource ──► rx_req (bar_id from the "hard IP") ─┐
    TlpSink   ◄── tx_cpl, tx_req                      ├─ FunctionTestbed(config_mode="ext")
    FunctionPorts ── cfg_port (UltraScale cfg_ext),    │    virtio caps from ext_cap_pointer
                     ext_cfg (Command, MSI-X, ID...),  │
                     msix, intx ───────────────────────┘

Configuration accesses arrive both ways a hard IP forwards them: on ``cfg_port`` and as
configuration TLPs on ``rx_req`` (7-series ``EXT_CFG_CAP_PTR``). The virtio capabilities must
fill exactly the 88 bytes from 0xA8 for a device with device configuration.
"""

import struct

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer, with_timeout

from virtio_pcie.function.layout import Access
from virtio_pcie.spec.pcie import (CONFIG_SPACE_SIZE, LEGACY_CONFIG_SPACE_SIZE, CapId, CplStatus,
                                   FmtType, MsixTableEntry, PciCommand, byte_offset)
from virtio_pcie.spec.virtio import VirtioPciCfgCap
from virtio_pcie_tb import harness
from virtio_pcie_tb.designs.function_testbed import (FunctionTestbed, block_model,
                                                     layout_from_params)
from virtio_pcie_tb.models.config_space_model import ConfigSpaceModel
from virtio_pcie_tb.models.function_ports import FunctionPorts
from virtio_pcie_tb.models.tlp import RawTlp
from virtio_pcie_tb.models.tlp_stream import TlpSink, TlpSource

CLOCK_NS = 4
HARD_IP_ID = 0x0A08      # bus 0x0A, device 1, function 0, as the hard IP reports it
REQUESTER = 0x0010


class ExtTB:
    def __init__(self, dut):
        params = harness.dut_params()
        self.dut = dut
        self.layout = layout_from_params(params)
        self.width = params["data_width"]
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.rx_req = TlpSource(dut, "rx_req", dut.clk, dut.rst, data_width=self.width)
        self.tx_cpl = TlpSink(dut, "tx_cpl", dut.clk, dut.rst, data_width=self.width)
        self.tx_req = TlpSink(dut, "tx_req", dut.clk, dut.rst, data_width=self.width)
        self.ports = FunctionPorts(dut, dut.clk)
        self.blocks = {name: block_model(name, w.addr_width)
                       for name, w in self.layout.register_windows.items()}
        self.tag = 0

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def hard_ip(self, *, command=PciCommand.MEMORY_SPACE | PciCommand.IO_SPACE |
                PciCommand.BUS_MASTER, msix_enable=0):
        """What a hard IP presents as its configuration state."""
        self.ports.set_ext_cfg(pcie_id=HARD_IP_ID, command=command.value, msix_enable=msix_enable,
                               max_payload_size=0, max_read_request_size=2)

    def request(self, fmt_type, bar, offset, *, length=1, first_be=0xF, last_be=0,
                payload=b""):
        """A request as the hard IP delivers it: the host address (anywhere; only the offset in
        the BAR matters) and the BAR it hit in ``bar_id``."""
        self.tag = (self.tag + 1) % 256
        t = RawTlp(payload=payload, bar_id=bar)
        t["dw0.fmt_type"] = fmt_type.value
        t["dw0.length"] = length
        t["req.first_be"] = first_be
        t["req.last_be"] = last_be
        t["req.tag"] = self.tag
        t["req.requester_id"] = REQUESTER
        size = self.layout.bar(bar).size if self.layout.bar(bar) else 0x1000
        t["req.dw2"] = ((0xE000_0000 & ~(size - 1)) + offset) & 0xFFFFFFFC
        return t

    async def complete(self, tlp, count=1):
        self.rx_req.send_nowait(tlp)
        got = []
        for _ in range(count):
            got.append(await with_timeout(self.tx_cpl.recv(), 5, "us"))
        return got

    async def posted(self, tlp):
        self.rx_req.send_nowait(tlp)
        await with_timeout(self.rx_req.wait_idle(), 5, "us")


def _virtio_fields(layout):
    return [f for f in layout.config_fields if f.byte_offset >= layout.ext_cap_pointer]


@cocotb.test()
async def run_ext_config_space(dut):
    """Through cfg_port, configuration space holds only the virtio capabilities, chained from
    the pointer within the forwarded window; everything else reads 0; RO fields stay; the
    PCI_CFG fields are RW."""
    tb = ExtTB(dut)
    layout = tb.layout
    await tb.reset()
    port = tb.ports.cfg_port
    pointer = layout.ext_cap_pointer
    used, available = layout.config_budget
    if layout.device_cfg_length:
        assert (used, available) == (88, 88) if pointer == 0xA8 else used <= available
    image = layout.config_image()
    for addr in range(0, LEGACY_CONFIG_SPACE_SIZE, 4):
        got = await port.read(addr)
        assert got == struct.unpack_from("<I", image, addr)[0], hex(addr)
        if addr < pointer:
            assert got == 0, hex(addr)
    for addr in (0x100, 0x104, CONFIG_SPACE_SIZE - 4):
        assert await port.read(addr) == 0
    # Walk the chain the way a host would, from the pointer the hard IP's last cap holds.
    offset, seen = pointer, []
    while offset:
        value = await port.read(offset)
        assert value & 0xFF == CapId.VNDR.value
        seen.append(offset)
        offset = (value >> 8) & 0xFF
    assert seen == [c.offset for c in layout.capabilities]
    # Writes: the model says what sticks.
    model = ConfigSpaceModel(layout)
    window = next(f for f in layout.config_fields if f.access == Access.WINDOW)
    for addr in range(pointer, LEGACY_CONFIG_SPACE_SIZE, 4):
        if addr // 4 == window.dword:
            continue
        for data, sel in ((0xFFFFFFFF, 0xF), (0x12345678, 0x5), (0, 0xF)):
            await port.write(addr, data, sel)
            model.write(addr // 4, data, sel)
            assert await port.read(addr) == model.read(addr // 4), hex(addr)
    plan = layout.hard_ip_plan()
    assert plan["config_forwarding"]["first_forwarded_offset"] == pointer
    assert plan["config_forwarding"]["ext_cfg_cap_ptr_dword"] == pointer // 4


@cocotb.test()
async def run_ext_config_tlps(dut):
    """Configuration TLPs forwarded on rx_req (7-series style) reach the same space, and their
    completions carry the target ID; cfg_port accesses interleaved with them are serialised."""
    tb = ExtTB(dut)
    layout = tb.layout
    await tb.reset()
    tb.hard_ip()
    cap = layout.capability("virtio_pci_cfg").offset
    f_offset = cap + byte_offset(VirtioPciCfgCap, "cap.offset")

    def cfg(fmt_type, addr, payload=b"", be=0xF):
        tb.tag = (tb.tag + 1) % 256
        t = RawTlp(payload=payload)
        t["dw0.fmt_type"] = fmt_type.value
        t["dw0.length"] = 1
        t["cfg.first_be"] = be
        t["cfg.tag"] = tb.tag
        t["cfg.requester_id"] = REQUESTER
        t["cfg.target_id"] = HARD_IP_ID
        t["cfg.register"] = (addr >> 2) & 0x3F
        t["cfg.ext_register"] = addr >> 8
        return t

    image = layout.config_image()
    for c in layout.capabilities:
        cpl, = await tb.complete(cfg(FmtType.CFGRD0, c.offset))
        assert cpl["cpl.completer_id"] == HARD_IP_ID and cpl["cpl.status"] == CplStatus.SC.value
        assert cpl.payload == image[c.offset:c.offset + 4]

    async def hammer():
        for i in range(20):
            await tb.ports.cfg_port.write(f_offset, 0x1000 + 4 * i)
            assert await tb.ports.cfg_port.read(f_offset) == 0x1000 + 4 * i
    task = cocotb.start_soon(hammer())
    for _ in range(20):
        cpl, = await tb.complete(cfg(FmtType.CFGRD0, layout.capabilities[0].offset))
        assert cpl.payload == image[layout.capabilities[0].offset:][:4]
    await task
    cpl, = await tb.complete(cfg(FmtType.CFGWR0, f_offset, struct.pack("<I", 0x2000)))
    assert cpl.fmt_type == FmtType.CPL.value and cpl["cpl.status"] == CplStatus.SC.value
    assert await tb.ports.cfg_port.read(f_offset) == 0x2000
    assert not tb.tx_cpl.errors


@cocotb.test()
async def run_ext_bar_id(dut):
    """BAR hits come from bar_id: the offset in the BAR is the address modulo its size; a
    bar_id naming no BAR, or a BAR of the other kind, gets UR; the hard IP's Command gates
    decoding; completions carry the hard IP's ID."""
    tb = ExtTB(dut)
    layout = tb.layout
    await tb.reset()
    tb.hard_ip()
    common = layout.windows["common"]
    block = tb.blocks["common"]
    await tb.posted(tb.request(FmtType.MWR32, common.bar, common.offset + 8, length=2,
                               last_be=0xF, payload=struct.pack("<II", 0x11223344, 0x55667788)))
    block.write(8, 0x11223344)
    block.write(12, 0x55667788)
    cpl, = await tb.complete(tb.request(FmtType.MRD32, common.bar, common.offset + 8, length=3,
                                        last_be=0xF))
    assert cpl["cpl.completer_id"] == HARD_IP_ID and cpl["cpl.requester_id"] == REQUESTER
    assert cpl.payload == struct.pack("<III", 0x11223344, 0x55667788, block.peek(16))
    for bar in range(8):
        if layout.bar(bar) is None:
            cpl, = await tb.complete(tb.request(FmtType.MRD32, bar, 0))
            assert cpl["cpl.status"] == CplStatus.UR.value, bar
    io = next((b for b in layout.bars if b.is_io), None)
    if io is not None:
        cpl, = await tb.complete(tb.request(FmtType.MRD32, io.index, 0))        # wrong kind
        assert cpl["cpl.status"] == CplStatus.UR.value
        cpl, = await tb.complete(tb.request(FmtType.IOWR, io.index, 0x12, first_be=0x4,
                                            payload=b"\0\0\x5A\0"))
        assert cpl.fmt_type == FmtType.CPL.value and cpl["cpl.status"] == CplStatus.SC.value
        assert (cpl["cpl.byte_count"], cpl["cpl.lower_address"]) == (4, 0)
        tb.blocks["legacy"].write(0x10, 0x5A << 16, 0x4)
        cpl, = await tb.complete(tb.request(FmtType.IORD, io.index, 0x10))
        assert cpl.payload == struct.pack("<I", tb.blocks["legacy"].peek(0x10))
    tb.hard_ip(command=PciCommand.BUS_MASTER)
    cpl, = await tb.complete(tb.request(FmtType.MRD32, common.bar, common.offset))
    assert cpl["cpl.status"] == CplStatus.UR.value
    assert (await tb.ports.config())["pcie_id"] == HARD_IP_ID       # cfg = ext_cfg
    assert not tb.tx_cpl.errors


@cocotb.test()
async def run_ext_pci_cfg_and_msix(dut):
    """The PCI_CFG window through cfg_port (ISR read-to-clear), and MSI-X with the hard IP's
    MSI-X Enable and Bus Master Enable: the table is written through BAR memory requests and a
    request goes out as an MWr with the hard IP's requester ID."""
    tb = ExtTB(dut)
    layout = tb.layout
    await tb.reset()
    tb.hard_ip()
    port = tb.ports.cfg_port
    cap = layout.capability("virtio_pci_cfg").offset
    isr = layout.windows["isr"]
    await tb.posted(tb.request(FmtType.MWR32, isr.bar, isr.offset, first_be=0x1,
                               payload=b"\x02\0\0\0"))
    await port.write(cap + byte_offset(VirtioPciCfgCap, "cap.bar"), isr.bar, 0x1)
    await port.write(cap + byte_offset(VirtioPciCfgCap, "cap.offset"), isr.offset)
    await port.write(cap + byte_offset(VirtioPciCfgCap, "cap.length"), 1)
    data = cap + byte_offset(VirtioPciCfgCap, "pci_cfg_data")
    assert await port.read(data) == 0x02
    assert await port.read(data) == 0x00
    # MSI-X: program vector 0 through BAR memory writes, enable it in the "hard IP".
    table = layout.windows["msix_table"]
    entry = MsixTableEntry.const({"msg_addr": 0xFEE0_1000, "msg_upper_addr": 0,
                                  "msg_data": 0x4021, "vector_control": {"mask": 0}})
    raw = entry.as_value().value.to_bytes(16, "little")
    await tb.posted(tb.request(FmtType.MWR32, table.bar, table.offset, length=4, last_be=0xF,
                               payload=raw))
    tb.hard_ip(msix_enable=1)
    await tb.ports.msix_request(0)
    msg = await with_timeout(tb.tx_req.recv(), 2, "us")
    assert msg.fmt_type == FmtType.MWR32.value and msg.address == 0xFEE0_1000
    assert msg.payload == struct.pack("<I", 0x4021)
    assert msg["req.requester_id"] == HARD_IP_ID
    tb.hard_ip(msix_enable=1, command=PciCommand.MEMORY_SPACE)     # bus master off
    await tb.ports.msix_request(0)
    await Timer(200, "ns")
    assert tb.tx_req.empty()
    tb.hard_ip(msix_enable=1)
    msg = await with_timeout(tb.tx_req.recv(), 2, "us")
    assert msg.payload == struct.pack("<I", 0x4021)
    assert not tb.tx_req.errors and not tb.tx_cpl.errors


# -- pytest launchers --------------------------------------------------------------------------

EXT_DESIGN = dict(data_width=128, device_type=1, transitional=True, queue_count=3,
                  msix_vectors=4, notify_off_multiplier=4, config_mode="ext",
                  ext_cap_pointer=0xA8)


@pytest.mark.sim
def test_function_ext(simulate):
    design = harness.build(FunctionTestbed, EXT_DESIGN, name="function_testbed",
                           debug_aliases=False)
    simulate(design, "test_function_ext")
