# SPDX-License-Identifier: BSD-2-Clause
"""The co-simulation plumbing under a scripted QEMU, with every kind of TLP a virtio function
exchanges, before the function exists::

    QEMU stand-in (thread)           simulation (cocotb)                         RTL
    VfioUserClient ─ unix socket ─► ServeLoop → VfioUserServer → RtlFunction
      memfd guest RAM, eventfds         → CosimHostBridge ══ rx_req/tx_cpl/tx_req/rx_cpl ══►
                                                                   TlpCrossover (4 FIFOs)
                                                                         ══ ep_* ══ EndpointModel

The endpoint model has a 32-bit, a 64-bit and an I/O BAR, MSI-X with four vectors, INTA and a
DMA engine; the QEMU stand-in does what QEMU's ``vfio-user-pci`` does (negotiation, region and
interrupt queries, configuration and BAR accesses, DMA_MAP of a memfd, SET_IRQS with eventfds,
UNMASK, DEVICE_RESET) and checks what comes back, including guest memory written by the
endpoint's DMA and the eventfds its MSI-X and INTx messages signal. Refused and lost requests
(DMA outside guest memory, a BAR read the endpoint never answers) must come back as all-ones
data and recorded errors, never as a hang.
"""

import os
import select
import struct
import tempfile
import threading
import traceback
from pathlib import Path

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from virtio_pcie_tb import harness
from virtio_pcie_tb.cosim.rtl_device import RtlFunction
from virtio_pcie_tb.cosim.simulation import ServeLoop
from virtio_pcie_tb.cosim.vfio_user import (IrqInfoFlags, IrqSetFlags, PciIrq, VfioUserServer)
from virtio_pcie_tb.cosim.vfio_user_client import VfioUserClient
from virtio_pcie_tb.designs.tlp_crossover import TlpCrossover
from virtio_pcie_tb.models.cosim_bridge import MSI_WINDOW, CosimHostBridge
from virtio_pcie_tb.models.endpoint_model import (BAR0_SIZE, BAR2_SIZE, BAR4_SIZE, DEVICE_ID,
                                                  ENTRY, ENTRY_ADDRESS, ENTRY_CONTROL,
                                                  ENTRY_DATA, ID_VALUE, MSIX_CAP, MSIX_ENABLE,
                                                  MSIX_VECTORS, SILENT_OFFSET, EndpointModel,
                                                  Reg)

CONFIG = 7
RAM = 2 << 20


def eventfd_wait(fd, timeout=20.0):
    """Count signalled on ``fd`` within ``timeout`` seconds (0 if none)."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return 0
    return struct.unpack("<Q", os.read(fd, 8))[0]


class Qemu:
    """The QEMU stand-in: one method per step, each checking its replies."""

    def __init__(self, path, model, bridge, function):
        self.c = VfioUserClient(path, timeout=60)
        self.model, self.bridge, self.function = model, bridge, function
        self.ram = os.memfd_create("guest-ram")
        os.ftruncate(self.ram, RAM)
        self.msix = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(MSIX_VECTORS)]
        self.intx = os.eventfd(0, os.EFD_NONBLOCK)

    def call(self, send, *args, **kwargs):
        send(*args, **kwargs)
        reply = self.c.recv()
        assert reply.ok, f"{send.__name__}{args}: error {reply.error}"
        return reply

    def read(self, region, offset, count):
        return self.call(self.c.region_read, region, offset, count).payload[16:]

    def write(self, region, offset, data):
        self.call(self.c.region_write, region, offset, data)

    def cfg32(self, offset):
        return struct.unpack("<I", self.read(CONFIG, offset, 4))[0]

    def reg(self, reg, value=None):
        if value is None:
            return struct.unpack("<I", self.read(0, reg, 4))[0]
        self.write(0, reg, struct.pack("<I", value))

    def run(self):
        c = self.c
        self.call(c.version)
        # -- what the device is ------------------------------------------------------------
        _, flags, regions, irqs = struct.unpack("<IIII", self.call(c.device_info).payload)
        assert (regions, irqs) == (9, 5)
        sizes = {i: struct.unpack("<IIIIQQ", self.call(c.region_info, i).payload)[4]
                 for i in range(9)}
        assert sizes == {0: BAR0_SIZE, 1: 0, 2: BAR2_SIZE, 3: 0, 4: BAR4_SIZE, 5: 0, 6: 0,
                         7: 4096, 8: 0}
        intx = struct.unpack("<IIII", self.call(c.irq_info, PciIrq.INTX).payload)
        assert intx[1] == IrqInfoFlags.EVENTFD | IrqInfoFlags.MASKABLE | \
            IrqInfoFlags.AUTOMASKED and intx[3] == 1
        msix = struct.unpack("<IIII", self.call(c.irq_info, PciIrq.MSIX).payload)
        assert msix[3] == MSIX_VECTORS
        # -- configuration space: IDs over CfgRd0, virtual BARs ---------------------------
        header = self.read(CONFIG, 0, 64)
        assert struct.unpack_from("<HH", header) == (0x1AF4, DEVICE_ID)
        assert self.cfg32(0x10) == 0 and self.cfg32(0x18) == 0xC and self.cfg32(0x20) == 1
        rtl_bars = [self.model.bar_address(i) for i in (0, 2, 4)]
        for offset, expect in [(0x10, 0xFFFF_C000), (0x18, 0xFFFF_C00C), (0x1C, 0xFFFF_FFFF),
                               (0x20, 0xFFFF_FFE1)]:
            self.write(CONFIG, offset, b"\xff" * 4)
            assert self.cfg32(offset) == expect, hex(self.cfg32(offset))
        self.write(CONFIG, 0x10, struct.pack("<I", 0xFE00_0000))       # the guest's address
        assert self.cfg32(0x10) == 0xFE00_0000
        assert [self.model.bar_address(i) for i in (0, 2, 4)] == rtl_bars, \
            "QEMU's BAR writes must not reach the RTL"
        assert rtl_bars[0] == 0x8000_0000 and rtl_bars[1] >= 1 << 32 and rtl_bars[2] == 0x1000
        # Command is forwarded: Memory, I/O, Bus Master.
        self.write(CONFIG, 0x04, struct.pack("<H", 0x0007))
        assert self.model.command & 0x7 == 0x7 and self.bridge.bus_master
        # -- BAR accesses: 32-bit, 64-bit (4-DW requests, split completions), I/O ----------
        assert self.reg(Reg.ID) == ID_VALUE
        self.reg(Reg.SCRATCH, 0x12345678)
        assert self.reg(Reg.SCRATCH) == 0x12345678
        assert self.read(0, Reg.SCRATCH + 1, 2) == b"\x56\x34"
        assert self.read(0, Reg.ID, 8) == struct.pack("<II", ID_VALUE, 0x12345678)
        blob = bytes((i * 13 + 5) & 0xFF for i in range(300))
        self.write(2, 0x7E, blob)                         # unaligned, several MWr
        # (posted: the read behind them, which they may not be passed by, makes them visible)
        assert self.read(2, 0x7E, 300) == blob            # completions split at the RCB
        assert self.model.bar2[0x7E:0x7E + 300] == blob
        self.write(4, 0x4, b"\x01\x02\x03\x04")
        self.write(4, 0x11, b"\xAA\xBB")
        assert self.read(4, 0x4, 4) == b"\x01\x02\x03\x04" and self.read(4, 0x10, 4)[1:3] == \
            b"\xAA\xBB"
        assert self.model.bar4[0x11:0x13] == b"\xAA\xBB"
        # -- guest memory ----------------------------------------------------------------
        self.call(c.dma_map, 0, RAM // 2, os.dup(self.ram), 0)
        self.call(c.dma_map, RAM // 2, RAM // 2, os.dup(self.ram), RAM // 2)
        # -- MSI-X: SET_IRQS enables it in the RTL and unmasks the vectors with eventfds ---
        self.write(CONFIG, MSIX_CAP + 2, struct.pack("<H", MSIX_ENABLE))   # QEMU's own write
        self.call(c.set_irq_eventfds, PciIrq.MSIX, 0, self.msix)
        assert self.model.msix_control & MSIX_ENABLE
        table = self.model.msix_table
        for v in range(MSIX_VECTORS):
            entry = table[ENTRY * v:ENTRY * (v + 1)]
            assert int.from_bytes(entry[ENTRY_ADDRESS:ENTRY_ADDRESS + 8], "little") == \
                MSI_WINDOW[0]
            assert int.from_bytes(entry[ENTRY_DATA:ENTRY_DATA + 4], "little") == v
            assert entry[ENTRY_CONTROL] == 0, f"vector {v} still masked"
        assert self.cfg32(MSIX_CAP) >> 16 & MSIX_ENABLE
        # -- DMA across two mappings, completion back as MSI-X vector 2 -------------------
        pattern = bytes((i * 7 + 3) & 0xFF for i in range(3000))
        src, dst = RAM // 2 - 0x40, 0x180100
        os.pwrite(self.ram, pattern, src)
        self.reg(Reg.SRC_LO, src)
        self.reg(Reg.DST_LO, dst)
        self.reg(Reg.LENGTH, len(pattern))
        self.reg(Reg.VECTOR, 2)
        self.reg(Reg.DOORBELL, 1)
        assert eventfd_wait(self.msix[2]) == 1, "MSI-X vector 2 was not signalled"
        assert os.pread(self.ram, len(pattern), dst) == pattern
        assert self.reg(Reg.CHECKSUM) == sum(pattern) and self.reg(Reg.DONE) == 1
        assert eventfd_wait(self.msix[0], 0) == 0
        # De-assigning a vector masks it in the RTL; disabling MSI-X clears Enable.
        self.call(c.set_irqs, PciIrq.MSIX, 3, 1,
                  IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER)
        assert table[ENTRY * 3 + ENTRY_CONTROL] == 1 and table[ENTRY * 2 + ENTRY_CONTROL] == 0
        self.call(c.set_irqs, PciIrq.MSIX, 0, 0,
                  IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER)
        assert not self.model.msix_control & MSIX_ENABLE
        # -- INTx: automasked, re-signalled at UNMASK while the RTL holds the line ---------
        self.call(c.set_irq_eventfds, PciIrq.INTX, 0, [self.intx])
        self.reg(Reg.DOORBELL, 1)
        assert eventfd_wait(self.intx) == 1 and self.model.intx
        unmask = IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_UNMASK
        self.call(c.set_irqs, PciIrq.INTX, 0, 1, unmask)
        assert eventfd_wait(self.intx, 5) == 1, "a held INTx must fire again at UNMASK"
        self.reg(Reg.INTX, 0)                              # the driver clears the cause
        self.read(0, Reg.ID, 4)                            # (ordering: the Deassert is in)
        self.call(c.set_irqs, PciIrq.INTX, 0, 1, unmask)
        assert eventfd_wait(self.intx, 0.5) == 0
        assert not self.function.intx_level
        # -- failures come back as all ones and recorded errors, never as a hang -----------
        self.reg(Reg.SRC_LO, 0x4000_0000)                  # not guest memory
        self.reg(Reg.DOORBELL, 1)
        for _ in range(100):
            if self.reg(Reg.ERRORS):
                break
        assert self.reg(Reg.ERRORS) == 1
        assert self.read(0, SILENT_OFFSET, 4) == b"\xff" * 4
        # -- DEVICE_RESET: the RTL is reset, enumerated and programmed again ---------------
        self.call(c.reset)
        assert self.model.regs[Reg.SCRATCH] == 0 and self.model.command == 0
        assert [self.model.bar_address(i) for i in (0, 2, 4)] == rtl_bars
        c.close()


def rtl_side(dut):
    data_width = harness.dut_params()["data_width"]
    Clock(dut.clk, 4, unit="ns").start()
    bridge = CosimHostBridge(dut, dut.clk, dut.rst, data_width=data_width,
                             completion_timeout_ns=20_000)
    model = EndpointModel(dut, dut.clk, dut.rst, data_width=data_width)

    async def reset():
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        model.reset()
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)

    return bridge, model, RtlFunction(bridge, reset=reset), reset


@cocotb.test()
async def run_cosim_plumbing(dut):
    bridge, model, function, reset = rtl_side(dut)
    await reset()
    summary = await function.enumerate()
    assert summary["msix_vectors"] == MSIX_VECTORS and summary["config_size"] == 4096
    assert summary["interrupt_pin"] == 1 and len(summary["bars"]) == 3
    path = Path(tempfile.mkdtemp(prefix="cosim-")) / "vfu.sock"
    server = VfioUserServer(path, function)
    bridge.memory = server.dma
    qemu = Qemu(path, model, bridge, function)
    failure = []

    def script():
        try:
            qemu.run()
        except BaseException:                       # noqa: BLE001 - reported below
            failure.append(traceback.format_exc())
            qemu.c.close()

    thread = threading.Thread(target=script, daemon=True)
    thread.start()
    loop = ServeLoop(server, bridge, idle_wait_s=0.002, log=dut._log)
    assert await loop.wait_for_client(30)
    await loop.run()
    thread.join(10)
    server.close()
    assert not failure, failure[0]
    assert loop.end_reason == "client disconnected"
    assert not model.errors, model.errors
    # Exactly the two failures the script provoked, each recorded with its cause.
    errors = bridge.errors
    assert len(errors) == 2, errors
    assert "0x40000000, which is not guest memory" in errors[0]
    assert "completion timeout" in errors[1]
    assert bridge.stats["msi"] == 1 and bridge.stats["intx"] >= 2
    # Two transfers of 3000 bytes (one signalled by MSI-X, one by INTx).
    assert bridge.stats["dma_read_bytes"] == 6000 and bridge.stats["dma_write_bytes"] == 6000


@pytest.mark.sim
@pytest.mark.parametrize("data_width", [64, pytest.param(256, marks=pytest.mark.slow)])
def test_cosim_plumbing(simulate, data_width):
    design = harness.build(TlpCrossover, {"data_width": data_width}, name="tlp_crossover")
    simulate(design, "test_cosim_bridge", testcase=["run_cosim_plumbing"], timeout_s=300)
