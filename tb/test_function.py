# SPDX-License-Identifier: BSD-2-Clause
"""The PCI function through cocotbext-pcie's root complex, at 64, 128 and 256 bits.

::

    RootComplex ── DutPcieDevice ══ rx_req/tx_cpl/tx_req ══ FunctionTestbed
         │ enumerate, config, bar_window, MSI-X          ┌ PcieFunction ─ common/isr/device/notify
         │                                               │   (legacy)     └ TestRegisterBlocks
    tests ── FunctionPorts ── msix, intx, events, cfg ───┘
          ── TlpSource ────── dma_req (arbiter)

Expectations come from the :class:`FunctionLayout` the design was built with (identity, BARs,
windows, every configuration field), a Python model of configuration space built from the same
layout (:class:`ConfigSpaceModel`) and Python twins of the register blocks (:func:`block_model`).
The 128-bit build is transitional (legacy I/O BAR0); 64 and 256 are modern-only.
"""

import random
import struct

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer, with_timeout
from cocotb.utils import get_sim_time

from virtio_pcie.function.layout import VIRTIO_PAGE, Access
from virtio_pcie.spec.pcie import (LEGACY_CONFIG_SPACE_SIZE, CapId, CplStatus, FmtType,
                                   MsixTableEntry, PciCommand, PcieCap, PciStatus, PmPowerState,
                                   byte_offset)
from virtio_pcie.spec.virtio import (VIRTIO_PCI_VENDOR_ID, VirtioPciCap, VirtioPciCapType,
                                     VirtioPciCfgCap)
from virtio_pcie_tb import harness
from virtio_pcie_tb.designs.function_testbed import (FunctionTestbed, block_model,
                                                     layout_from_params)
from virtio_pcie_tb.models.config_space_model import ConfigSpaceModel
from virtio_pcie_tb.models.function_ports import FunctionPorts
from virtio_pcie_tb.models.tlp import RawTlp
from virtio_pcie_tb.models.tlp_stream import TlpSource

CLOCK_NS = 4
RAW_TAG = 0x80          # tags of hand-made requests (the root complex uses 0..31)
OUR_ID = 0x0100         # bus 1, device 0, function 0 after enumeration


def header_offset(name):
    from virtio_pcie.spec.pcie import PciType0Header
    return byte_offset(PciType0Header, name)


def _cocotbext_cpl_types():
    from cocotbext.pcie.core.tlp import TlpType
    return {TlpType.CPL, TlpType.CPL_DATA, TlpType.CPL_LOCKED, TlpType.CPL_LOCKED_DATA}


_COCOTBEXT_CPL = _cocotbext_cpl_types()


class FunctionTB:
    def __init__(self, dut, **bridge_args):
        from cocotbext.pcie.core import RootComplex
        from virtio_pcie_tb.models.pcie_bridge import DutPcieDevice
        params = harness.dut_params()
        self.dut = dut
        self.params = params
        self.layout = layout_from_params(params)
        self.width = params["data_width"]
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.rc = RootComplex()
        self.bridge = DutPcieDevice(dut, dut.clk, dut.rst, data_width=self.width, **bridge_args)
        self.rc.make_port().connect(self.bridge)
        self.ports = FunctionPorts(dut, dut.clk)
        self.dma = TlpSource(dut, "dma_req", dut.clk, dut.rst, data_width=self.width)
        self.blocks = {name: block_model(name, w.addr_width)
                       for name, w in self.layout.register_windows.items()}
        self.model = ConfigSpaceModel(self.layout)
        self.dev = None
        self.cpls = []
        self.reqs = []
        self.bridge.tx_monitors.append(self._monitor)
        # Completions for hand-made requests (tags from RAW_TAG up) are the test's, not the root
        # complex's: give their flow-control credits back instead of queueing them for nobody.
        handle_tlp = self.rc.handle_tlp

        async def handle(tlp):
            if tlp.fmt_type in _COCOTBEXT_CPL and tlp.tag >= RAW_TAG:
                tlp.release_fc()
                return
            await handle_tlp(tlp)
        self.rc.handle_tlp = handle

    def _monitor(self, tlp):
        tlp.meta["time"] = get_sim_time("ns")
        (self.cpls if tlp.is_completion else self.reqs).append(tlp)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def enumerate(self):
        await with_timeout(self.rc.enumerate(), 2, "ms")
        self.dev = self.rc.find_device((1, 0, 0))
        assert self.dev is not None, "the root complex did not find the function"
        return self.dev

    async def start(self):
        await self.reset()
        dev = await self.enumerate()
        await dev.enable_device()
        await dev.set_master()
        return dev

    # -- addresses ---------------------------------------------------------------------------
    def bar_addr(self, index):
        return self.dev.bar_addr[index]

    def window_addr(self, name, offset=0):
        w = self.layout.windows[name]
        return self.bar_addr(w.bar) + w.offset + offset

    def region(self, name):
        w = self.layout.windows[name]
        return self.dev.bar_window[w.bar], w.offset

    # -- configuration space -----------------------------------------------------------------
    async def cfg_read(self, addr):
        return await self.dev.config_read_dword(addr)

    async def cfg_write(self, addr, value, be=0xF):
        if be == 0xF:
            await self.dev.config_write_dword(addr, value)
        else:
            # One CfgWr0 with these byte enables (cocotbext-pcie splits per contiguous run).
            tlp = RawTlp(payload=struct.pack("<I", value))
            tlp["dw0.fmt_type"] = FmtType.CFGWR0.value
            tlp["dw0.length"] = 1
            tlp["cfg.first_be"] = be
            tlp["cfg.tag"] = RAW_TAG
            tlp["cfg.target_id"] = OUR_ID
            tlp["cfg.register"] = (addr >> 2) & 0x3F
            tlp["cfg.ext_register"] = addr >> 8
            cpl = await self.raw(tlp)
            assert cpl and cpl[0]["cpl.status"] == CplStatus.SC.value, cpl

    # -- hand-made TLPs ----------------------------------------------------------------------
    def request(self, fmt_type, addr=0, *, length=1, first_be=0xF, last_be=0, payload=b"",
                tag=RAW_TAG, ep=0):
        tlp = RawTlp(payload=payload)
        tlp["dw0.fmt_type"] = fmt_type.value
        tlp["dw0.length"] = length & 0x3FF
        tlp["dw0.ep"] = ep
        tlp["req.first_be"] = first_be
        tlp["req.last_be"] = last_be
        tlp["req.tag"] = tag
        if FmtType.is_4dw(fmt_type.value):
            tlp["req.dw2"] = addr >> 32
            tlp["req.dw3"] = addr & 0xFFFFFFFC
        else:
            tlp["req.dw2"] = addr & 0xFFFFFFFC
        return tlp

    async def raw(self, tlp, *, expect=True, timeout_ns=4000, count=None):
        """Send ``tlp`` into rx_req; return the completions with its tag (``expect=False``:
        wait and check that none comes)."""
        tag = tlp.tag
        start = len(self.cpls)
        self.bridge.send_request(tlp)
        deadline = get_sim_time("ns") + timeout_ns
        while get_sim_time("ns") < deadline:
            await RisingEdge(self.dut.clk)
            got = [c for c in self.cpls[start:] if c.tag == tag]
            if expect and got and (count is None or len(got) >= count):
                if count is None:
                    # all completions of a read: the last has byte count == its own bytes
                    last = got[-1]
                    if last["cpl.status"] or not last.payload or \
                            (last["cpl.byte_count"] or 4096) <= len(last.payload) - \
                            (last["cpl.lower_address"] & 3):
                        return got
                else:
                    return got
        got = [c for c in self.cpls[start:] if c.tag == tag]
        if expect:
            raise AssertionError(f"no (complete) completion for {tlp!r}: {got}")
        assert not got, f"unexpected completion for {tlp!r}: {got}"
        return []

    async def read_status(self):
        return await self.dev.config_read_word(header_offset("status"))

    def check_no_errors(self):
        assert not self.bridge.all_errors, self.bridge.all_errors


# ---------------------------------------------------------------------------------------------
# Enumeration, identity and capabilities
# ---------------------------------------------------------------------------------------------

@cocotb.test()
async def run_enumerate(dut):
    """The root complex enumerates the function, assigns every BAR and lists the
    capabilities; IDs, class, BAR kinds and sizes are the layout's."""
    tb = FunctionTB(dut)
    layout = tb.layout
    await tb.reset()
    dev = await tb.enumerate()
    assert dev.vendor_id == VIRTIO_PCI_VENDOR_ID == layout.vendor_id
    assert dev.device_id == layout.device_id
    assert dev.revision_id == layout.revision_id
    assert dev.class_code == layout.class_code
    assert dev.header_type == 0
    assert dev.subsystem_vendor_id == layout.subsystem_vendor_id
    assert dev.subsystem_id == layout.subsystem_id
    if layout.transitional:
        assert 0x1000 <= dev.device_id <= 0x103F and dev.revision_id == 0
        assert dev.subsystem_id == layout.device_type
    else:
        assert dev.device_id == 0x1040 + layout.device_type and dev.revision_id == 1
    # BARs: every one assigned with the layout's size; the others absent.
    present = {}
    for bar in layout.bars:
        present[bar.index] = bar
        assert dev.bar_size[bar.index] == bar.size, (bar, dev.bar_size)
        assert dev.bar_window[bar.index] is not None
        raw = dev.bar_raw[bar.index]
        if bar.is_io:
            assert raw & 1
        else:
            assert (raw & 0x7) == bar.kind.value and not raw & 0x8   # non-prefetchable
    for index in range(6):
        if index not in present and not (index - 1 in present and present[index - 1].is_64bit):
            assert not dev.bar_size[index], (index, dev.bar_size)
    # Capabilities, in order, at the layout's offsets (cocotbext-pcie's own walker).
    assert [(cap_id, off) for cap_id, off in dev.capabilities] == \
        [(c.cap_id.value, c.offset) for c in layout.capabilities]
    assert not dev.ext_capabilities     # 0x100 reads 0: the extended chain is empty
    assert dev.is_pcie()
    tb.check_no_errors()


@cocotb.test()
async def run_config_readback(dut):
    """Every byte of configuration space reads back as the layout says (after enumeration
    programmed the RW fields it uses); every capability field matches the spec tables;
    reserved space and the extended space read 0."""
    tb = FunctionTB(dut)
    layout = tb.layout
    await tb.reset()
    dev = await tb.enumerate()
    # What the root complex wrote while enumerating, read through its own accessors.
    image = bytearray()
    for addr in range(0, LEGACY_CONFIG_SPACE_SIZE, 4):
        image += struct.pack("<I", await tb.cfg_read(addr))
    expected = layout.config_image()
    writable = layout.writable_mask()
    hw = [f for f in layout.config_fields if f.access == Access.HW]
    hw_mask = bytearray(LEGACY_CONFIG_SPACE_SIZE)
    for f in hw:
        for bit in range(f.offset, f.offset + f.width):
            hw_mask[bit // 8] |= 1 << (bit % 8)
    for i in range(LEGACY_CONFIG_SPACE_SIZE):
        fixed = ~(writable[i] | hw_mask[i]) & 0xFF
        assert image[i] & fixed == expected[i] & fixed, \
            f"byte {i:#04x}: read {image[i]:#04x}, expected {expected[i]:#04x} in {fixed:#04x}"
    # Field by field, through the spec layouts.
    for f in layout.config_fields:
        if f.access == Access.RO:
            value = (int.from_bytes(image[4 * f.dword:4 * f.dword + 4], "little") >> f.shift) \
                & ((1 << f.width) - 1)
            assert value == f.value, f"{f.name}: {value:#x} != {f.value:#x}"
    # BAR registers hold the addresses the root complex assigned.
    for bar in layout.bars:
        raw = struct.unpack_from("<I", image, header_offset("bar") + 4 * bar.index)[0]
        if bar.is_64bit:
            raw |= struct.unpack_from("<I", image, header_offset("bar") + 4 * bar.index + 4)[0] \
                << 32
        mask = ~(bar.size - 1) & (0xFFFFFFFFFFFFFFFF if bar.is_64bit else 0xFFFFFFFF)
        assert raw & mask == dev.bar_addr[bar.index], (bar, hex(raw))
    # The virtio capabilities, decoded with the spec's struct layouts.
    seen = {}
    for cap in layout.capabilities:
        raw = int.from_bytes(image[cap.offset:cap.offset + cap.size], "little")
        if cap.cap_id != CapId.VNDR:
            continue
        view = cap.layout.from_bits(raw)
        head = view if cap.layout is VirtioPciCap else view.cap
        assert head.cap_vndr == CapId.VNDR.value and head.cap_len == cap.size
        cfg_type = VirtioPciCapType(head.cfg_type)
        seen[cfg_type] = view
        if cfg_type == VirtioPciCapType.PCI_CFG:
            continue
        window = next(w for w in layout.windows.values() if w.cfg_type == cfg_type)
        assert (head.bar, head.offset, head.length) == (window.bar, window.offset, window.length)
        bar = layout.bar(head.bar)
        assert head.offset + head.length <= bar.size     # inside its BAR (checklist 1.B)
    assert VirtioPciCapType.COMMON_CFG in seen and VirtioPciCapType.NOTIFY_CFG in seen
    assert VirtioPciCapType.ISR_CFG in seen and VirtioPciCapType.PCI_CFG in seen
    assert seen[VirtioPciCapType.NOTIFY_CFG].notify_off_multiplier == \
        layout.notify_off_multiplier
    if layout.notify_off_multiplier:
        assert seen[VirtioPciCapType.NOTIFY_CFG].cap.length >= \
            (layout.queue_count - 1) * layout.notify_off_multiplier + 2
    # Reserved and extended space read 0; the extended chain ends at once.
    for addr in (0x100, 0x104, 0x400, 0xFFC):
        assert await tb.cfg_read(addr) == 0, hex(addr)
    assert layout.capabilities_end <= 0x100
    for addr in range(layout.capabilities_end, 0x100, 4):
        assert await tb.cfg_read(addr) == 0, hex(addr)
    tb.check_no_errors()



# ---------------------------------------------------------------------------------------------
# Configuration writes: RO really read-only, RW with byte enables, RW1C, legal values
# ---------------------------------------------------------------------------------------------

@cocotb.test()
async def run_config_writes(dut):
    """Random writes with random byte enables to every dword of the legacy space (and some of
    the extended space) match the model built from the layout: RO fields never change, RW
    fields take the enabled bytes unless the value is not legal, RW1C bits clear."""
    tb = FunctionTB(dut)
    layout = tb.layout
    await tb.reset()
    await tb.enumerate()
    model = tb.model
    for f in layout.config_fields:        # start from what enumeration left
        if f.access in (Access.RW, Access.RW1C):
            value = await tb.cfg_read(4 * f.dword)
            model.set(f.name, (value >> f.shift) & ((1 << f.width) - 1))
    window = next(f for f in layout.config_fields if f.access == Access.WINDOW)
    rng = random.Random(tb.width)
    dwords = [d for d in range(LEGACY_CONFIG_SPACE_SIZE // 4) if d != window.dword]
    dwords += [0x100 // 4, 0x104 // 4, 0xFFC // 4]
    for _ in range(2):
        rng.shuffle(dwords)
        for dword in dwords:
            data = rng.choice([0xFFFFFFFF, 0, rng.getrandbits(32)])
            be = rng.choice([0xF, rng.randrange(16)])
            await tb.cfg_write(4 * dword, data, be)
            model.write(dword, data, be)
            got = await tb.cfg_read(4 * dword)
            assert got == model.read(dword), \
                f"dword {4 * dword:#05x} after writing {data:#010x}/be {be:#x}: " \
                f"{got:#010x} != model {model.read(dword):#010x}"
    for dword in range(LEGACY_CONFIG_SPACE_SIZE // 4):
        if dword != window.dword:
            assert await tb.cfg_read(4 * dword) == model.read(dword), hex(4 * dword)
    tb.check_no_errors()


@cocotb.test()
async def run_bar_sizing(dut):
    """All-ones reads back each BAR's size mask and type; unimplemented BARs and the expansion
    ROM read 0; address bits below the size ignore writes; a BAR moved to an odd place (above
    4 GiB) decodes there, and moved back the function works as before."""
    tb = FunctionTB(dut)
    layout = tb.layout
    dev = await tb.start()
    bar_reg = header_offset("bar")
    implemented = {}
    for bar in layout.bars:
        implemented[bar.index] = bar
        if bar.is_64bit:
            implemented[bar.index + 1] = None     # upper half
    # Sizing, as Linux and cocotbext do it, with decode off.
    command = await dev.config_read_word(header_offset("command"))
    await dev.config_write_word(header_offset("command"), 0)
    saved = [await tb.cfg_read(bar_reg + 4 * i) for i in range(6)]
    for i in range(6):
        await tb.cfg_write(bar_reg + 4 * i, 0xFFFFFFFF)
        got = await tb.cfg_read(bar_reg + 4 * i)
        if i not in implemented:
            assert got == 0, (i, hex(got))
        elif implemented[i] is None:
            assert got == 0xFFFFFFFF, (i, hex(got))
        else:
            bar = implemented[i]
            flags = 1 if bar.is_io else bar.kind.value
            assert got == (~(bar.size - 1) & 0xFFFFFFFF) | flags, (i, hex(got))
        await tb.cfg_write(bar_reg + 4 * i, saved[i])
    assert [await tb.cfg_read(bar_reg + 4 * i) for i in range(6)] == saved
    rom = header_offset("expansion_rom")
    await tb.cfg_write(rom, 0xFFFFFFFF)
    assert await tb.cfg_read(rom) == 0

    # Low bits are ignored; a 64-bit BAR above 4 GiB decodes there (MRd64).
    vbar = next(b for b in layout.bars if b.is_64bit)
    base = 0x1_2340_0000 & ~(vbar.size - 1)
    await tb.cfg_write(bar_reg + 4 * vbar.index, (base & 0xFFFFFFFF) | 0xFFF)
    await tb.cfg_write(bar_reg + 4 * vbar.index + 4, base >> 32)
    got = await tb.cfg_read(bar_reg + 4 * vbar.index)
    assert got == (base & 0xFFFFFFFF) | vbar.kind.value, hex(got)
    await dev.config_write_word(header_offset("command"), command)
    common = layout.windows["common"]
    tb.blocks["common"].write(0, 0x600DF00D)
    bar_window, offset = tb.region("common")
    await tb.raw(tb.request(FmtType.MWR64, base + common.offset, payload=struct.pack(
        "<I", 0x600DF00D)), expect=False, timeout_ns=200)
    cpl = await tb.raw(tb.request(FmtType.MRD64, base + common.offset))
    assert cpl[0]["cpl.status"] == CplStatus.SC.value
    assert struct.unpack("<I", cpl[0].payload)[0] == 0x600DF00D
    # The old address no longer decodes.
    old = tb.bar_addr(vbar.index) + common.offset
    cpl = await tb.raw(tb.request(FmtType.MRD32, old))
    assert cpl[0]["cpl.status"] == CplStatus.UR.value
    # Back where the root complex put it: usable as before.
    await tb.cfg_write(bar_reg + 4 * vbar.index, saved[vbar.index])
    await tb.cfg_write(bar_reg + 4 * vbar.index + 4, saved[vbar.index + 1])
    assert await bar_window.read_dword(offset) == 0x600DF00D
    tb.check_no_errors()


# ---------------------------------------------------------------------------------------------
# Memory and I/O requests
# ---------------------------------------------------------------------------------------------

def model_read(block, offset, length):
    """What reading ``length`` bytes at ``offset`` returns, applying read side effects per
    dword with the byte enables a requester uses."""
    out = bytearray()
    addr = offset
    end = offset + length
    while addr < end:
        dword = addr & ~3
        first = addr - dword
        last = min(end - dword, 4)
        sel = sum(1 << i for i in range(first, last))
        value = block.read(dword, sel)
        out += value.to_bytes(4, "little")[first:last]
        addr = dword + 4
    return bytes(out)


def model_write(block, offset, data):
    addr = offset
    for byte in data:
        dword = addr & ~3
        lane = addr - dword
        block.write(dword, byte << (8 * lane), 1 << lane)
        addr += 1


@cocotb.test()
async def run_mmio(dut):
    """Reads and writes of 1 to 16 bytes at any alignment through every window (and the legacy
    I/O BAR) match the register blocks' model: byte enables, multi-dword requests, read side
    effects (a read-to-clear register), bytes of a structure's page beyond the structure (read
    0, writes ignored), reads larger than a completion (split at 128-byte boundaries), a whole
    4 KiB page."""
    tb = FunctionTB(dut)
    layout = tb.layout
    await tb.start()
    rng = random.Random(tb.width + 1)
    # Idle cycles inside requests and back-pressure on completions.
    pauses = random.Random(tb.width + 2)
    tb.bridge.rx_req.set_idle_generator(iter(lambda: pauses.random() < 0.3, None))
    tb.bridge.tx_cpl.set_backpressure_generator(iter(lambda: pauses.random() < 0.4, None))
    for name, window in layout.register_windows.items():
        block = tb.blocks[name]
        bar_window, base = tb.region(name)
        # The window and, where the rest of its page decodes to nothing, a little beyond it.
        page_rest = window.bar == layout.windows["common"].bar and \
            window.size + 0x20 <= VIRTIO_PAGE
        span = window.size + 0x20 if page_rest else min(window.size, 0x80)
        for _ in range(24):
            offset = rng.randrange(span)
            length = rng.randrange(1, min(17, span - offset + 1))
            if rng.random() < 0.5:
                data = rng.randbytes(length)
                await bar_window.write(base + offset, data)
                model_write(block, offset, data)
            else:
                got = await bar_window.read(base + offset, length)
                assert got == model_read(block, offset, length), \
                    f"{name}+{offset:#x} ({length} bytes): {got.hex()} != " \
                    f"{model_read(block, offset, length).hex()}"
        got = await bar_window.read(base, span)
        assert got == model_read(block, 0, span), name
    # A whole page of the common window (512-byte reads, each split in four completions).
    bar_window, base = tb.region("common")
    got = await bar_window.read(base, 4096)
    assert got == model_read(tb.blocks["common"], 0, 4096)
    # Byte-wide writes at every lane, then a dword read.
    for lane in range(4):
        await bar_window.write_byte(base + 8 + lane, 0x10 + lane)
    assert await bar_window.read_dword(base + 8) == 0x13121110
    tb.check_no_errors()


@cocotb.test()
async def run_completion_fields(dut):
    """Completion headers: completer and requester IDs, tag, TC/attributes, byte count and
    lower address of every CplD of a misaligned multi-dword read; a zero-length read has no
    side effect; a write larger than Max_Payload_Size is dropped as malformed."""
    tb = FunctionTB(dut)
    await tb.start()
    block = tb.blocks["common"]
    for i in range(16):
        block.write(4 * i, 0x01010101 * i)
    bar_window, base = tb.region("common")
    await bar_window.write(base, b"".join((0x01010101 * i).to_bytes(4, "little")
                                          for i in range(16)))
    # 40 dwords from common+0x78 with first BE 1100 and last BE 0001: 155 bytes from +0x7A.
    addr = tb.window_addr("common", 0x78)
    req = tb.request(FmtType.MRD32, addr, length=40, first_be=0xC, last_be=0x1, tag=0x9A)
    req["dw0.tc"] = 3
    req["dw0.attr"] = 2
    req["req.requester_id"] = 0x0008
    cpls = await tb.raw(req)
    assert [(len(c.payload) // 4, c["cpl.byte_count"], c["cpl.lower_address"]) for c in cpls] \
        == [(2, 155, 0x7A), (32, 149, 0x00), (6, 21, 0x00)], cpls
    for c in cpls:
        assert c.fmt_type == FmtType.CPLD.value and c["cpl.status"] == CplStatus.SC.value
        assert c["cpl.completer_id"] == OUR_ID and c["cpl.requester_id"] == 0x0008
        assert c.tag == 0x9A and c["dw0.tc"] == 3 and c["dw0.attr"] == 2
    data = b"".join(c.payload for c in cpls)[2:2 + 155]
    assert data == model_read(block, 0x7A, 155)
    # Zero-length read of the read-to-clear register: one dword, byte count 1, no clearing.
    rc = block.rc_offset
    await bar_window.write_dword(base + rc, 0xC1EA0000)
    block.write(rc, 0xC1EA0000)
    cpls = await tb.raw(tb.request(FmtType.MRD32, tb.window_addr("common", rc), first_be=0))
    assert len(cpls) == 1 and len(cpls[0].payload) == 4 and cpls[0]["cpl.byte_count"] == 1
    assert cpls[0]["cpl.lower_address"] == rc
    assert await bar_window.read_dword(base + rc) == 0xC1EA0000
    # Byte counts of short reads (PCIe Base 4.0 Table 2-36).
    for first_be, count, la in ((0x1, 1, 0), (0x6, 2, 1), (0x9, 4, 0), (0x8, 1, 3), (0xE, 3, 1)):
        cpls = await tb.raw(tb.request(FmtType.MRD32, tb.window_addr("common", 4),
                                       first_be=first_be))
        assert (cpls[0]["cpl.byte_count"], cpls[0]["cpl.lower_address"]) == (count, 4 + la)
    # A write larger than the Max_Payload_Size the root complex programmed is malformed.
    mps = (await tb.ports.config())["max_payload_size"]
    too_big = (128 << mps) // 4 + 1
    before = await bar_window.read(base, 64)
    await tb.raw(tb.request(FmtType.MWR32, tb.window_addr("common"), length=too_big,
                            last_be=0xF, payload=bytes(4 * too_big)),
                 expect=False, timeout_ns=400)
    assert await bar_window.read(base, 64) == before
    tb.check_no_errors()


@cocotb.test()
async def run_unsupported_requests(dut):
    """UR paths and status bits: no BAR hit, memory space disabled, a request running past the
    end of its BAR, D3hot, locked reads, Type 1 configuration, AtomicOps, another function;
    posted requests dropped; poisoned writes; RW1C clearing."""
    tb = FunctionTB(dut)
    layout = tb.layout
    dev = await tb.start()
    from cocotbext.pcie.core.caps import PciCapId
    exp = dev.get_capability_offset(PciCapId.EXP)
    dev_status = exp + byte_offset(PcieCap, "dev_status")
    ur_bits = ("correctable_error_detected", "nonfatal_error_detected", "fatal_error_detected",
               "ur_detected")

    async def status_bits():
        value = await dev.config_read_word(dev_status)
        return {name: (value >> i) & 1 for i, name in enumerate(ur_bits)}

    async def clear_status():
        await dev.config_write_word(dev_status, 0xF)
        await dev.config_write_word(header_offset("status"), 0xFFFF)
        assert not any((await status_bits()).values())

    async def expect_ur(req, completer_id=OUR_ID):
        cpls = await tb.raw(req)
        assert len(cpls) == 1, cpls
        c = cpls[0]
        assert c.fmt_type == FmtType.CPL.value and c["cpl.status"] == CplStatus.UR.value, c
        assert c["cpl.completer_id"] == completer_id and c.tag == req.tag
        return c

    await clear_status()
    # No BAR hit.
    c = await expect_ur(tb.request(FmtType.MRD32, 0xD000_0000, length=2, last_be=0x3))
    assert c["cpl.byte_count"] == 6     # a memory read's UR says the bytes it was for
    assert await status_bits() == {"correctable_error_detected": 1, "nonfatal_error_detected": 0,
                                   "fatal_error_detected": 0, "ur_detected": 1}
    await clear_status()
    await tb.raw(tb.request(FmtType.MWR32, 0xD000_0000, payload=b"abcd"), expect=False,
                 timeout_ns=200)
    assert await status_bits() == {"correctable_error_detected": 0, "nonfatal_error_detected": 1,
                                   "fatal_error_detected": 0, "ur_detected": 1}
    await clear_status()
    # Past the end of the BAR.
    vbar = next(b for b in layout.bars if b.is_64bit)
    end = tb.bar_addr(vbar.index) + vbar.size
    await expect_ur(tb.request(FmtType.MRD32, end - 4, length=2, last_be=0xF))
    await tb.raw(tb.request(FmtType.MRD32, end - 4), timeout_ns=400)   # the last dword: fine
    # Memory space disabled: UR for reads, writes dropped.
    bar_window, base = tb.region("common")
    await bar_window.write_dword(base, 0x11111111)
    command = await dev.config_read_word(header_offset("command"))
    await dev.config_write_word(header_offset("command"),
                                command & ~PciCommand.MEMORY_SPACE.value)
    await expect_ur(tb.request(FmtType.MRD32, tb.window_addr("common")))
    await tb.raw(tb.request(FmtType.MWR32, tb.window_addr("common"),
                            payload=b"\x22\x22\x22\x22"), expect=False, timeout_ns=200)
    await dev.config_write_word(header_offset("command"), command)
    assert await bar_window.read_dword(base) == 0x11111111
    if any(b.is_io for b in layout.bars):
        io = next(b for b in layout.bars if b.is_io)
        await dev.config_write_word(header_offset("command"),
                                    command & ~PciCommand.IO_SPACE.value)
        await expect_ur(tb.request(FmtType.IORD, tb.bar_addr(io.index)))
        await dev.config_write_word(header_offset("command"), command)
        cpls = await tb.raw(tb.request(FmtType.IORD, tb.bar_addr(io.index)))
        assert cpls[0]["cpl.status"] == CplStatus.SC.value
        assert (cpls[0]["cpl.byte_count"], cpls[0]["cpl.lower_address"]) == (4, 0)
    # D3hot: only configuration requests (PCI PM 1.2 §5.3).
    pm = dev.get_capability_offset(PciCapId.PM)
    pmcsr = pm + 4
    await dev.config_write_word(pmcsr, PmPowerState.D3HOT.value)
    assert await dev.config_read_word(pmcsr) & 3 == PmPowerState.D3HOT.value
    await expect_ur(tb.request(FmtType.MRD32, tb.window_addr("common")))
    await dev.config_write_word(pmcsr, PmPowerState.D1.value)     # unsupported: ignored
    assert await dev.config_read_word(pmcsr) & 3 == PmPowerState.D3HOT.value
    await dev.config_write_word(pmcsr, PmPowerState.D0.value)
    assert await bar_window.read_dword(base) == 0x11111111
    # Request types the function does not support.
    await expect_ur(tb.request(FmtType.MRDLK32, tb.window_addr("common")))
    cfg1 = tb.request(FmtType.CFGRD1)
    cfg1["cfg.target_id"] = 0x0200
    await expect_ur(cfg1)
    await expect_ur(tb.request(FmtType.FETCHADD32, tb.window_addr("common"), payload=b"\1\0\0\0"))
    other = tb.request(FmtType.CFGRD0)
    other["cfg.target_id"] = OUR_ID | 1       # function 1 does not exist
    await expect_ur(other, completer_id=OUR_ID | 1)
    # Poisoned writes: a memory write is dropped, a configuration write gets UR.
    await clear_status()
    await tb.raw(tb.request(FmtType.MWR32, tb.window_addr("common"), payload=b"\x33" * 4, ep=1),
                 expect=False, timeout_ns=200)
    assert await bar_window.read_dword(base) == 0x11111111
    assert (await tb.read_status()) & PciStatus.DETECTED_PARITY_ERROR.value
    poisoned = tb.request(FmtType.CFGWR0, payload=b"\x40\0\0\0", ep=1)
    poisoned["cfg.target_id"] = OUR_ID
    poisoned["cfg.register"] = header_offset("cache_line_size") // 4
    poisoned["cfg.first_be"] = 0x1
    await expect_ur(poisoned)
    assert await dev.config_read_byte(header_offset("cache_line_size")) == 0
    await clear_status()
    tb.check_no_errors()


@cocotb.test()
async def run_malformed_requests(dut):
    """Malformed and odd TLPs are dropped without a completion and never wedge the function:
    bad lengths and byte enables, undefined types, truncated payloads, beats flagged with an
    error, a beat without sop, messages and stray completions (ignored)."""
    tb = FunctionTB(dut)
    dev = await tb.start()
    from cocotbext.pcie.core.caps import PciCapId
    dev_status = dev.get_capability_offset(PciCapId.EXP) + byte_offset(PcieCap, "dev_status")
    bar_window, base = tb.region("common")
    await bar_window.write_dword(base, 0x5A5A5A5A)
    codec = tb.bridge.rx_req.codec

    bad = []
    t = tb.request(FmtType.CFGRD0, length=2)            # configuration length must be 1
    t["cfg.target_id"] = OUR_ID
    bad.append(t)
    bad.append(tb.request(FmtType.MRD32, tb.window_addr("common"), length=2, last_be=0))
    bad.append(tb.request(FmtType.MRD32, tb.window_addr("common"), length=1, last_be=0xF))
    bad.append(tb.request(FmtType.IORD, 0, length=2, last_be=0xF))
    for t in bad:
        await tb.raw(t, expect=False, timeout_ns=200)
    assert (await dev.config_read_word(dev_status)) & 0x4       # fatal error detected
    # Undefined Fmt/Type, written as raw beats.
    undefined = codec.encode(tb.request(FmtType.MRD32, tb.window_addr("common")))
    undefined = [undefined[0] | (0x1F << (codec.off["hdr"] + 24))]
    await tb.bridge.rx_req.send_beats(undefined)
    # A write whose payload ends early (eop on the first beat of a longer TLP).
    long = tb.request(FmtType.MWR32, tb.window_addr("common"), length=16, last_be=0xF,
                      payload=b"\x77" * 64)
    beats = codec.encode(long)
    await tb.bridge.rx_req.send_beats([beats[0] | (1 << codec.off["eop"])])
    # A one-beat write flagged with an error on its eop.
    flagged = tb.request(FmtType.MWR32, tb.window_addr("common"), payload=b"\x66" * 4)
    flagged.error = 1
    await tb.bridge.rx_req.send_beats(codec.encode(flagged))
    # A beat without sop.
    await tb.bridge.rx_req.send_beats([beats[-1] & ~(1 << codec.off["sop"])])
    # A message and a completion, ignored.
    msg = RawTlp.message(0x7F, 0)      # Vendor_Defined Type 1
    msg["dw0.fmt_type"] = FmtType.MSG_LOC.value
    tb.bridge.send_request(msg)
    stray = RawTlp(payload=b"\0" * 4)
    stray["dw0.fmt_type"] = FmtType.CPLD.value
    stray["dw0.length"] = 1
    stray["cpl.byte_count"] = 4
    await tb.bridge.rx_req.send_beats(codec.encode(stray))
    await Timer(400, "ns")
    assert not tb.cpls or all(c.tag != RAW_TAG for c in tb.cpls)
    # Nothing was written, and the function still answers.
    assert await bar_window.read_dword(base) == 0x5A5A5A5A
    await with_timeout(tb.rc.enumerate(), 2, "ms")
    assert tb.rc.find_device((1, 0, 0)) is not None
    assert not tb.bridge.all_errors


@cocotb.test()
async def run_status_events(dut):
    """FunctionEvents set the Status bits (Master Data Parity Error only with Parity Error
    Response), Device Status UR Detected; all are RW1C."""
    tb = FunctionTB(dut)
    dev = await tb.start()
    status = header_offset("status")
    await tb.ports.pulse_events(received_master_abort=1, received_target_abort=1,
                                signaled_target_abort=1, master_data_parity_error=1)
    value = await dev.config_read_word(status)
    expected = (PciStatus.RECEIVED_MASTER_ABORT | PciStatus.RECEIVED_TARGET_ABORT |
                PciStatus.SIGNALED_TARGET_ABORT | PciStatus.DETECTED_PARITY_ERROR).value
    assert value & 0xF900 == expected, hex(value)     # no Master Data Parity Error: PERR off
    await dev.config_write_word(status, PciStatus.RECEIVED_MASTER_ABORT.value)
    assert not (await dev.config_read_word(status)) & PciStatus.RECEIVED_MASTER_ABORT.value
    command = await dev.config_read_word(header_offset("command"))
    await dev.config_write_word(header_offset("command"),
                                command | PciCommand.PARITY_ERROR_RESP.value)
    await tb.ports.pulse_events(master_data_parity_error=1, unsupported_request=1)
    assert (await dev.config_read_word(status)) & PciStatus.MASTER_DATA_PARITY_ERROR.value
    await dev.config_write_word(status, 0xFFFF)
    assert (await dev.config_read_word(status)) & 0xF900 == 0
    # The capabilities bit is read-only.
    assert (await dev.config_read_word(status)) & PciStatus.CAPABILITIES_LIST.value
    tb.check_no_errors()


@cocotb.test()
async def run_function_config(dut):
    """What the host programs appears on ``cfg``: the captured ID, Command, MPS, MRRS,
    extended tags, RCB, MSI-X bits, power state; illegal encodings are ignored."""
    tb = FunctionTB(dut)
    dev = await tb.start()
    from cocotbext.pcie.core.caps import PciCapId
    exp = dev.get_capability_offset(PciCapId.EXP)
    cfg = await tb.ports.config()
    assert cfg["pcie_id"] == OUR_ID
    assert cfg["command"] & (PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER).value == \
        (PciCommand.MEMORY_SPACE | PciCommand.BUS_MASTER).value
    assert cfg["extended_tag"] == 1          # cocotbext-pcie enables it when supported
    ctrl = exp + byte_offset(PcieCap, "dev_ctrl")
    value = await dev.config_read_word(ctrl)
    await dev.config_write_word(ctrl, (value & ~0x70E0) | (1 << 5) | (5 << 12))
    cfg = await tb.ports.config()
    assert (cfg["max_payload_size"], cfg["max_read_request_size"]) == (1, 5)
    await dev.config_write_word(ctrl, (value & ~0x70E0) | (7 << 5) | (7 << 12))   # illegal
    cfg = await tb.ports.config()
    assert (cfg["max_payload_size"], cfg["max_read_request_size"]) == (1, 5)
    link_ctrl = exp + byte_offset(PcieCap, "link_ctrl")
    await dev.config_write_word(link_ctrl, 1 << 3)
    assert (await tb.ports.config())["rcb_128"] == 1
    msix = dev.get_capability_offset(PciCapId.MSIX)
    await dev.config_write_word(msix + 2, 0xC000)
    cfg = await tb.ports.config()
    assert (cfg["msix_enable"], cfg["msix_function_mask"]) == (1, 1)
    assert (await dev.config_read_word(msix + 2)) & 0x7FF == tb.layout.msix_vectors - 1
    pm = dev.get_capability_offset(PciCapId.PM)
    await dev.config_write_word(pm + 4, 3)
    assert (await tb.ports.config())["power_state"] == 3
    tb.check_no_errors()


@cocotb.test()
async def run_cfg_port(dut):
    """The adapter's register port reaches the same configuration space as configuration
    TLPs, one access at a time when both are busy."""
    tb = FunctionTB(dut)
    layout = tb.layout
    dev = await tb.start()
    port = tb.ports.cfg_port
    assert await port.read(0) == layout.vendor_id | layout.device_id << 16
    line = header_offset("interrupt_line")
    await port.write(line & ~3, 0x5A << (8 * (line % 4)), 1 << (line % 4))
    assert await dev.config_read_byte(line) == 0x5A

    async def hammer():
        for i in range(30):
            await port.write(line & ~3, i << (8 * (line % 4)), 1 << (line % 4))
            assert (await port.read(line & ~3) >> (8 * (line % 4))) & 0xFF == i
    task = cocotb.start_soon(hammer())
    for _ in range(30):
        assert await dev.config_read_dword(0) == layout.vendor_id | layout.device_id << 16
    await task
    tb.check_no_errors()



# ---------------------------------------------------------------------------------------------
# MSI-X
# ---------------------------------------------------------------------------------------------

class Msix:
    """The MSI-X structures of the function as the host sees them."""

    ENTRY = MsixTableEntry.size // 8

    def __init__(self, tb):
        from cocotbext.pcie.core.caps import PciCapId
        self.tb = tb
        self.dev = tb.dev
        self.cap = tb.dev.get_capability_offset(PciCapId.MSIX)
        self.table, self.table_base = tb.region("msix_table")
        self.pba, self.pba_base = tb.region("msix_pba")

    async def control(self, **bits):
        value = await self.dev.config_read_word(self.cap + 2)
        for name, bit in (("enable", 15), ("function_mask", 14)):
            if name in bits:
                value = (value & ~(1 << bit)) | (int(bits[name]) << bit)
        await self.dev.config_write_word(self.cap + 2, value)

    async def mask(self, vector, masked=True):
        addr = self.table_base + vector * self.ENTRY + byte_offset(MsixTableEntry,
                                                                   "vector_control")
        await self.table.write_dword(addr, int(masked))
        # Flush the posted write, as Linux does after changing a mask bit.
        assert await self.table.read_dword(addr) == int(masked)

    async def pending(self):
        n = self.tb.layout.msix_vectors
        raw = await self.pba.read(self.pba_base, 8 * (-(-n // 64)))
        return int.from_bytes(raw, "little")

    async def entry(self, vector):
        raw = await self.table.read(self.table_base + vector * self.ENTRY, self.ENTRY)
        return MsixTableEntry.from_bits(int.from_bytes(raw, "little"))

    async def fired(self, vector, within_ns=2000):
        event = self.dev.msi_vectors[vector].event
        try:
            await with_timeout(event.wait(), within_ns, "ns")
        except cocotb.triggers.SimTimeoutError:
            return False
        event.clear()
        return True

    def clear(self):
        for v in self.dev.msi_vectors:
            v.event.clear()


@cocotb.test()
async def run_msix(dut):
    """cocotbext-pcie's alloc_irq_vectors programs the table and enables MSI-X; each vector's
    request sends its message; masked vectors, the function mask and Bus Master Enable clear
    hold it pending (PBA) until allowed; disabling MSI-X drops requests and pending bits."""
    tb = FunctionTB(dut)
    layout = tb.layout
    dev = await tb.start()
    n = layout.msix_vectors
    assert await dev.alloc_irq_vectors(1, n) == n
    msix = Msix(tb)
    msix.clear()
    # The table holds what the host wrote; Message Address bits [1:0] read 0.
    for k in range(n):
        e = await msix.entry(k)
        assert (e.msg_addr, e.msg_data, e.vector_control.mask) == \
            (dev.msi_vectors[k].addr & 0xFFFFFFFC, dev.msi_vectors[k].data, 0)
    addr0 = dev.msi_vectors[0].addr
    await msix.table.write_dword(msix.table_base, addr0 | 3)
    assert await msix.table.read_dword(msix.table_base) == addr0 & 0xFFFFFFFC
    # Every vector fires, in turn and all at once.
    for k in range(n):
        await tb.ports.msix_request(k)
        assert await msix.fired(k), f"vector {k} did not fire"
    for k in range(n):
        await tb.ports.msix_request(k)
    for k in range(n):
        assert await msix.fired(k), k
    assert await msix.pending() == 0
    # A masked vector: pending, then delivered on unmask.
    v = min(1, n - 1)
    await msix.mask(v)
    await tb.ports.msix_request(v)
    assert not await msix.fired(v, within_ns=400)
    assert await msix.pending() == 1 << v
    await tb.ports.msix_request(v)                       # still one pending message
    await msix.mask(v, False)
    assert await msix.fired(v)
    assert not await msix.fired(v, within_ns=400)
    assert await msix.pending() == 0
    # The function mask holds every vector.
    await msix.control(function_mask=1)
    await tb.ports.msix_request(0)
    assert not await msix.fired(0, within_ns=400)
    assert await msix.pending() == 1
    await msix.control(function_mask=0)
    assert await msix.fired(0)
    # Bus Master Enable clear: no message on the link, pending until it is set again.
    await dev.set_master(False)
    sent = len(tb.reqs)
    await tb.ports.msix_request(n - 1)
    await Timer(400, "ns")
    assert len(tb.reqs) == sent, tb.reqs[sent:]
    await dev.set_master(True)
    assert await msix.fired(n - 1)
    # Disabled: requests dropped, pending bits cleared.
    await msix.mask(0)
    await tb.ports.msix_request(0)
    await Timer(100, "ns")
    assert await msix.pending() == 1
    await msix.control(enable=0)
    await tb.ports.msix_request(1 % n)
    await msix.control(enable=1)
    await msix.mask(0, False)
    assert not await msix.fired(0, within_ns=400) and not await msix.fired(1 % n, within_ns=10)
    assert await msix.pending() == 0
    # A vector beyond the table is ignored.
    if n < 2048:
        sent = len(tb.reqs)
        await tb.ports.msix_request(n)
        await Timer(200, "ns")
        assert len(tb.reqs) == sent
    # A 64-bit message address: MWr64 with the entry's address and data.
    e = byte_offset(MsixTableEntry, "msg_upper_addr")
    await msix.mask(0)
    await msix.table.write_dword(msix.table_base + e, 0x1)
    await msix.mask(0, False)
    sent = len(tb.reqs)
    await tb.ports.msix_request(0)
    await Timer(200, "ns")
    msgs = tb.reqs[sent:]
    assert len(msgs) == 1 and msgs[0].fmt_type == FmtType.MWR64.value, msgs
    assert msgs[0].address == (1 << 32) | dev.msi_vectors[0].addr
    assert msgs[0].payload == struct.pack("<I", dev.msi_vectors[0].data)
    assert msgs[0]["req.requester_id"] == OUR_ID and not msgs[0]["dw0.attr"]
    await msix.table.write_dword(msix.table_base + e, 0)
    assert not [t for t in tb.bridge.errors if "MSI" in t]


# ---------------------------------------------------------------------------------------------
# INTx
# ---------------------------------------------------------------------------------------------

@cocotb.test()
async def run_intx(dut):
    """Assert_INTA/Deassert_INTA follow the intx level, gated by Interrupt Disable (setting
    it while asserted sends Deassert) and by MSI-X Enable; Status.Interrupt Status shows the
    level regardless; no redundant messages."""
    tb = FunctionTB(dut)
    dev = await tb.start()
    status = header_offset("status")
    command = header_offset("command")
    bridge = tb.bridge

    async def settle():
        await Timer(200, "ns")

    async def interrupt_status():
        return bool((await dev.config_read_word(status)) & PciStatus.INTERRUPT_STATUS.value)

    assert await dev.config_read_byte(header_offset("interrupt_pin")) == 1      # INTA
    tb.ports.set_intx(1)
    await with_timeout(bridge.wait_intx(0, True), 1, "us")
    assert await interrupt_status()
    cmd = await dev.config_read_word(command)
    await dev.config_write_word(command, cmd | PciCommand.INTX_DISABLE.value)
    await with_timeout(bridge.wait_intx(0, False), 1, "us")
    assert await interrupt_status()            # still pending internally
    await dev.config_write_word(command, cmd)
    await with_timeout(bridge.wait_intx(0, True), 1, "us")
    tb.ports.set_intx(0)
    await with_timeout(bridge.wait_intx(0, False), 1, "us")
    assert not await interrupt_status()
    # While MSI-X is enabled the function does not use INTx.
    from cocotbext.pcie.core.caps import PciCapId
    msix = dev.get_capability_offset(PciCapId.MSIX)
    await dev.config_write_word(msix + 2, 0x8000)
    tb.ports.set_intx(1)
    await settle()
    assert not bridge.intx_asserted[0]
    assert await interrupt_status()
    await dev.config_write_word(msix + 2, 0)
    await with_timeout(bridge.wait_intx(0, True), 1, "us")
    # Short pulses: the host ends up at the current level, messages alternate.
    for level in (0, 1, 0, 1, 0):
        tb.ports.set_intx(level)
        await ClockCycles(dut.clk, 1)
    await settle()
    assert not bridge.intx_asserted[0]
    kinds = [kind for _, kind, pin in bridge.intx_messages]
    assert all(pin == 0 for _, _, pin in bridge.intx_messages)
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False)), kinds
    assert kinds[0] == "assert"
    tb.check_no_errors()


# ---------------------------------------------------------------------------------------------
# The virtio PCI_CFG window
# ---------------------------------------------------------------------------------------------

@cocotb.test()
async def run_pci_cfg_window(dut):
    """Configuration reads and writes of pci_cfg_data perform 1/2/4-byte accesses at
    (cap.bar, cap.offset), with memory decode off; reading ISR this way clears it; bad
    programming reads 0 and drops writes."""
    tb = FunctionTB(dut)
    layout = tb.layout
    dev = await tb.start()
    cap = layout.capability("virtio_pci_cfg").offset
    f_bar = cap + byte_offset(VirtioPciCfgCap, "cap.bar")
    f_offset = cap + byte_offset(VirtioPciCfgCap, "cap.offset")
    f_length = cap + byte_offset(VirtioPciCfgCap, "cap.length")
    f_data = cap + byte_offset(VirtioPciCfgCap, "pci_cfg_data")

    async def program(bar, offset, length):
        await dev.config_write_byte(f_bar, bar)
        await dev.config_write_dword(f_offset, offset)
        await dev.config_write_dword(f_length, length)

    async def window_read(bar, offset, length):
        await program(bar, offset, length)
        return await dev.config_read_dword(f_data)

    async def window_write(bar, offset, length, value):
        await program(bar, offset, length)
        await dev.config_write_dword(f_data, value)

    bar_window, base = tb.region("common")
    await bar_window.write(base, bytes(range(0x10, 0x30)))
    isr_window, isr_base = tb.region("isr")
    await isr_window.write_byte(isr_base, 0x03)
    # The window needs no memory decode (firmware uses it before BARs are set up).
    command = await dev.config_read_word(header_offset("command"))
    await dev.config_write_word(header_offset("command"), 0)
    common = layout.windows["common"]
    isr = layout.windows["isr"]
    assert await window_read(common.bar, common.offset + 4, 4) == 0x17161514
    assert await window_read(common.bar, common.offset + 6, 2) == 0x1716
    assert await window_read(common.bar, common.offset + 7, 1) == 0x17
    # ISR through the window: read to clear (a one-byte partial config read also triggers it).
    await program(isr.bar, isr.offset, 1)
    assert await dev.config_read_byte(f_data) == 0x03
    assert await dev.config_read_dword(f_data) == 0x00
    await window_write(common.bar, common.offset + 8, 4, 0xDEADBEEF)
    await window_write(common.bar, common.offset + 12, 2, 0xAAAA1234)
    await window_write(common.bar, common.offset + 15, 1, 0xFFFFFF99)
    # Bad programming: reads 0, writes dropped.
    for bar, offset, length in ((common.bar, common.offset + 16, 3),      # length 3
                                (common.bar, common.offset + 18, 4),      # unaligned
                                (common.bar, common.offset + 17, 2),      # unaligned
                                (6, 0, 4), (0xFF, 0, 4),                  # no such BAR
                                (common.bar, 1 << 30, 4)):                # beyond the BAR
        assert await window_read(bar, offset, length) == 0, (bar, offset, length)
        await window_write(bar, offset, length, 0x5555AAAA)
    await dev.config_write_word(header_offset("command"), command)
    got = await bar_window.read(base, 0x20)
    assert got[8:12] == struct.pack("<I", 0xDEADBEEF)
    assert got[12:16] == bytes([0x34, 0x12, 0x1E, 0x99])
    assert got[16:0x20] == bytes(range(0x20, 0x30)), got.hex()
    assert (await isr_window.read(isr_base, 1))[0] == 0
    # The MSI-X table is reachable too.
    table = layout.windows["msix_table"]
    await dev.alloc_irq_vectors(1, layout.msix_vectors)
    assert await window_read(table.bar, table.offset + 8, 4) == dev.msi_vectors[0].data
    tb.check_no_errors()


# ---------------------------------------------------------------------------------------------
# tx_req: the DMA engine's requests, MSI-X and INTx merged a TLP at a time
# ---------------------------------------------------------------------------------------------

@cocotb.test()
async def run_tx_merge(dut):
    """MWr TLPs on dma_req reach host memory intact and in order while MSI-X and INTx
    messages are merged in, under back-pressure on tx_req; they wait while Bus Master Enable is
    clear."""
    tb = FunctionTB(dut)
    dev = await tb.start()
    n = tb.layout.msix_vectors
    await dev.alloc_irq_vectors(1, n)
    msix = Msix(tb)
    msix.clear()
    addr, mem = tb.rc.alloc_region(16384)
    rng = random.Random(7)
    tb.bridge.tx_req.set_backpressure_generator(
        iter(lambda: rng.random() < 0.3, None))
    expected = bytearray(16384)
    writes = []
    offset = 0
    while offset < 16384 - 128:
        length = rng.choice([4, 8, 60, 64, 128])
        if offset // 4096 != (offset + length - 1) // 4096:
            length = 4096 - offset % 4096          # requests never cross 4 KiB (§2.2.7)
        data = rng.randbytes(length)
        t = RawTlp(payload=data)
        t["dw0.fmt_type"] = FmtType.MWR32.value
        t["dw0.length"] = length // 4
        t["req.first_be"] = 0xF
        t["req.last_be"] = 0xF if length > 4 else 0
        t["req.requester_id"] = OUR_ID
        t["req.dw2"] = addr + offset
        writes.append(t)
        expected[offset:offset + length] = data
        offset += length
    # With Bus Master Enable clear the DMA engine's requests wait (and nothing is lost).
    await dev.set_master(False)
    for t in writes[:3]:
        tb.dma.send_nowait(t)
    await Timer(400, "ns")
    assert not any(t.fmt_type == FmtType.MWR32.value for t in tb.reqs)
    assert bytes(mem[:64]) == bytes(64)
    await dev.set_master(True)
    for t in writes[3:]:
        tb.dma.send_nowait(t)

    async def interrupts():
        for i in range(3 * n):
            await tb.ports.msix_request(i % n)
            await ClockCycles(dut.clk, rng.randrange(1, 8))
    task = cocotb.start_soon(interrupts())
    for level in (1, 0, 1, 0):
        tb.ports.set_intx(level)
        await ClockCycles(dut.clk, 37)
    await task
    await with_timeout(tb.dma.wait_idle(), 100, "us")
    await Timer(2, "us")
    assert bytes(mem[:16384]) == bytes(expected)
    mwr = [t for t in tb.reqs if t.fmt_type == FmtType.MWR32.value and
           addr <= t.address < addr + 16384]
    assert [t.address for t in mwr] == [t.address for t in writes]
    tb.check_no_errors()


# ---------------------------------------------------------------------------------------------
# Latency, in clock cycles
# ---------------------------------------------------------------------------------------------

@cocotb.test()
async def run_latency(dut):
    """Measures (and bounds) completion and interrupt latency in cycles."""
    tb = FunctionTB(dut)
    dev = await tb.start()
    await dev.alloc_irq_vectors(1, tb.layout.msix_vectors)
    results = {}

    async def latency(tlp):
        start = get_sim_time("ns")
        cpls = await tb.raw(tlp)
        return round((cpls[-1].meta["time"] - start) / CLOCK_NS)

    results["config_read"] = await latency(_cfg_read(0))
    results["mmio_read_dword"] = await latency(tb.request(FmtType.MRD32,
                                                         tb.window_addr("common")))
    results["mmio_read_128_bytes"] = await latency(
        tb.request(FmtType.MRD32, tb.window_addr("common"), length=32, last_be=0xF))
    msix = Msix(tb)
    msix.clear()
    sent = len(tb.reqs)
    start = get_sim_time("ns")
    await tb.ports.msix_request(0)
    assert await msix.fired(0)
    results["msix_request_to_message"] = round((tb.reqs[sent].meta["time"] - start) / CLOCK_NS)
    dut._log.info("latency in cycles (%d-bit): %s", tb.width, results)
    (harness.Path.cwd() / f"latency-{tb.width}.json").write_text(
        __import__("json").dumps(results, indent=2))
    assert results["config_read"] <= 12 and results["mmio_read_dword"] <= 12, results
    assert results["msix_request_to_message"] <= 10, results
    tb.check_no_errors()


def _cfg_read(addr):
    t = RawTlp()
    t["dw0.fmt_type"] = FmtType.CFGRD0.value
    t["dw0.length"] = 1
    t["cfg.first_be"] = 0xF
    t["cfg.target_id"] = OUR_ID
    t["cfg.register"] = addr >> 2
    t["cfg.tag"] = RAW_TAG
    return t


# -- pytest launchers --------------------------------------------------------------------------

DESIGNS = {
    64:  dict(device_type=2, transitional=False, queue_count=4, msix_vectors=5,
              notify_off_multiplier=4),
    128: dict(device_type=1, transitional=True, queue_count=3, msix_vectors=4,
              notify_off_multiplier=4096),
    256: dict(device_type=2, transitional=False, queue_count=2, msix_vectors=70,
              notify_off_multiplier=0),
}


def function_design(data_width):
    return harness.build(FunctionTestbed, {"data_width": data_width, **DESIGNS[data_width]},
                         name="function_testbed", debug_aliases=False)


@pytest.mark.system
@pytest.mark.parametrize("data_width", [64, 128, 256])
def test_function(simulate, data_width):
    simulate(function_design(data_width), "test_function")
