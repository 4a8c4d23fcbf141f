# SPDX-License-Identifier: BSD-2-Clause
"""A PCIe function written in Python, on the endpoint side of :class:`TlpCrossover`.

It stands in for RTL that does not exist yet, so that host-side plumbing (the co-simulation
bridge) meets every kind of TLP a virtio function exchanges: configuration requests, BAR reads
and writes of 32-bit, 64-bit and I/O BARs, DMA reads and writes of its own, MSI-X messages and
INTx messages. It also checks what it receives the way a careful endpoint would (completions
split at the read completion boundary, byte counts, tags) and records violations in
:attr:`EndpointModel.errors`.

Configuration space: a type-0 header with BAR0 (32-bit memory, 16 KiB: registers, MSI-X table
at 0x2000, PBA at 0x3000), BAR2 (64-bit prefetchable memory, 16 KiB of RAM), BAR4 (I/O, 32
bytes of RAM), a PCI Express capability (so 4 KiB of configuration space) and an MSI-X
capability with four vectors; Interrupt Pin A.

BAR0 registers (:class:`Reg`): an ID, a scratch register and a DMA engine: on a write to
``DOORBELL`` it reads ``LENGTH`` bytes at ``SRC`` from host memory, writes them to ``DST``,
stores their byte sum in ``CHECKSUM``, counts ``DONE`` and interrupts: MSI-X vector ``VECTOR``
when MSI-X is enabled, else INTA (held until ``INTX`` is written with 0).
"""

import enum
import logging

import cocotb
from cocotb.triggers import Event

from virtio_pcie.spec.pcie import (CapId, CplStatus, FmtType, MsgCode, MsixCap,
                                   MsixMessageControl, MsixTableEntry, MsixVectorControl, PcieCap,
                                   PciCommand, PciStatus, PciType0Header, byte_offset, byte_size)

from .tlp import RawTlp
from .tlp_stream import TlpSink, TlpSource

__all__ = ["EndpointModel", "attach", "Reg", "BAR0_SIZE", "BAR2_SIZE", "BAR4_SIZE", "MSIX_VECTORS",
           "MSIX_TABLE_OFFSET", "MSIX_PBA_OFFSET", "DEVICE_ID", "SILENT_OFFSET"]

DEVICE_ID = 0x10F0
BAR0_SIZE, BAR2_SIZE, BAR4_SIZE = 0x4000, 0x4000, 0x20
MSIX_VECTORS = 4
MSIX_TABLE_OFFSET, MSIX_PBA_OFFSET = 0x2000, 0x3000
PCIE_CAP, MSIX_CAP = 0x40, 0x80
#: A BAR0 offset the model never answers (to test completion timeouts).
SILENT_OFFSET = 0xFF0
MAX_READ_REQUEST = 256
MAX_PAYLOAD = 128


class Reg(enum.IntEnum):
    ID       = 0x00
    SCRATCH  = 0x04
    SRC_LO   = 0x08
    SRC_HI   = 0x0C
    LENGTH   = 0x10
    DST_LO   = 0x14
    DST_HI   = 0x18
    DOORBELL = 0x1C
    DONE     = 0x20
    CHECKSUM = 0x24
    VECTOR   = 0x28
    INTX     = 0x2C
    ERRORS   = 0x30


ID_VALUE = 0xC05117E5

COMMAND = byte_offset(PciType0Header, "command")
BAR0 = byte_offset(PciType0Header, "bar")
ENTRY = byte_size(MsixTableEntry)
ENTRY_ADDRESS = byte_offset(MsixTableEntry, "msg_addr")
ENTRY_DATA = byte_offset(MsixTableEntry, "msg_data")
ENTRY_CONTROL = byte_offset(MsixTableEntry, "vector_control")
VECTOR_MASK = 1 << MsixVectorControl["mask"].offset
MSIX_ENABLE = 1 << MsixMessageControl["enable"].offset
MSIX_FUNCTION_MASK = 1 << MsixMessageControl["function_mask"].offset


class EndpointModel:
    def __init__(self, dut, clock, reset, *, data_width, rcb=64):
        self.log = logging.getLogger("cocotb.endpoint_model")
        self.rcb = rcb
        self.rx_req = TlpSink(dut, "ep_rx_req", clock, reset, data_width=data_width,
                              callback=self._request)
        self.tx_cpl = TlpSource(dut, "ep_tx_cpl", clock, reset, data_width=data_width)
        self.tx_req = TlpSource(dut, "ep_tx_req", clock, reset, data_width=data_width)
        self.rx_cpl = TlpSink(dut, "ep_rx_cpl", clock, reset, data_width=data_width,
                              callback=self._completion)
        self.errors = []
        self.config_writes = []
        self.reset()

    # -- state -----------------------------------------------------------------------------
    def reset(self):
        self.cfg = bytearray(4096)
        self.wmask = bytearray(4096)
        self._put(0, PciType0Header.const({
            "vendor_id": 0x1AF4, "device_id": DEVICE_ID, "revision_id": 1,
            "class_code": 0xFF0000, "status": PciStatus.CAPABILITIES_LIST,
            "capabilities_pointer": PCIE_CAP, "interrupt_pin": 1,
            "bar": [0, 0, 0xC, 0, 1, 0]}))
        self._mask(COMMAND, 2, 0x0547)
        self._mask(BAR0, 4, ~(BAR0_SIZE - 1) & 0xFFFF_FFFF)
        self._mask(BAR0 + 8, 4, ~(BAR2_SIZE - 1) & 0xFFFF_FFF0)
        self._mask(BAR0 + 12, 4, 0xFFFF_FFFF)
        self._mask(BAR0 + 16, 4, ~(BAR4_SIZE - 1) & 0xFFFF_FFFC)
        self._mask(byte_offset(PciType0Header, "interrupt_line"), 1, 0xFF)
        self._put(PCIE_CAP, PcieCap.const({"cap_id": CapId.PCIE.value, "cap_next": MSIX_CAP,
                                           "pcie_caps": {"version": 2}}))
        self._put(MSIX_CAP, MsixCap.const({
            "cap_id": CapId.MSIX.value, "cap_next": 0,
            "message_control": {"table_size": MSIX_VECTORS - 1},
            "table": {"bir": 0, "offset": MSIX_TABLE_OFFSET >> 3},
            "pba": {"bir": 0, "offset": MSIX_PBA_OFFSET >> 3}}))
        self._mask(MSIX_CAP + byte_offset(MsixCap, "message_control"), 2,
                   MSIX_ENABLE | MSIX_FUNCTION_MASK)
        self.regs = {r: 0 for r in Reg}
        self.regs[Reg.ID] = ID_VALUE
        self.msix_table = bytearray(ENTRY * MSIX_VECTORS)
        for v in range(MSIX_VECTORS):
            self.msix_table[ENTRY * v + ENTRY_CONTROL] = VECTOR_MASK   # masked at reset
        self.bar2 = bytearray(BAR2_SIZE)
        self.bar4 = bytearray(BAR4_SIZE)
        self.intx = False
        self.pending = {}
        self.next_tag = 0
        self.msis = []
        self.dma_done = Event()

    def _put(self, offset, const):
        size = byte_size(const.shape())
        self.cfg[offset:offset + size] = const.as_value().value.to_bytes(size, "little")

    def _mask(self, offset, size, value):
        self.wmask[offset:offset + size] = value.to_bytes(size, "little")

    def _cfg(self, offset, size):
        return int.from_bytes(self.cfg[offset:offset + size], "little")

    @property
    def command(self):
        return self._cfg(COMMAND, 2)

    @property
    def msix_control(self):
        return self._cfg(MSIX_CAP + byte_offset(MsixCap, "message_control"), 2)

    def bar_address(self, index):
        value = self._cfg(BAR0 + 4 * index, 4)
        if index == 2:
            return (value & ~0xF) | (self._cfg(BAR0 + 12, 4) << 32)
        return value & ~(0x3 if index == 4 else 0xF)

    def _error(self, text):
        self.log.error("%s", text)
        self.errors.append(text)

    # -- requests from the host ------------------------------------------------------------
    def _completion_for(self, req, status=CplStatus.SC, payload=b"", byte_count=None,
                        lower_address=0):
        cpl = RawTlp(payload=payload)
        cpl["dw0.fmt_type"] = (FmtType.CPLD if payload else FmtType.CPL).value
        cpl["dw0.length"] = (len(payload) // 4) & 0x3FF
        cpl["cpl.status"] = status.value
        cpl["cpl.requester_id"] = req["req.requester_id"]
        cpl["cpl.tag"] = req["req.tag"]
        cpl["cpl.completer_id"] = 0x0100
        cpl["cpl.byte_count"] = (byte_count if byte_count is not None else 4) & 0xFFF
        cpl["cpl.lower_address"] = lower_address & 0x7F
        return cpl

    def _request(self, req):
        ft = req.fmt_type
        if ft in (FmtType.CFGRD0.value, FmtType.CFGWR0.value):
            offset = ((req["cfg.ext_register"] << 6) | req["cfg.register"]) * 4
            be = req["cfg.first_be"]
            if ft == FmtType.CFGWR0.value:
                value = int.from_bytes(req.payload[:4], "little")
                self.config_writes.append((offset, value, be))
                for i in range(4):
                    if be >> i & 1:
                        m = self.wmask[offset + i]
                        b = (value >> (8 * i)) & 0xFF
                        self.cfg[offset + i] = (self.cfg[offset + i] & ~m) | (b & m)
                self.tx_cpl.send_nowait(self._completion_for(req))
            else:
                self.tx_cpl.send_nowait(self._completion_for(req, payload=bytes(
                    self.cfg[offset:offset + 4])))
            return
        if ft in (FmtType.IORD.value, FmtType.IOWR.value):
            address = req.address
            base = self.bar_address(4)
            if not self.command & PciCommand.IO_SPACE.value or not base <= address < base + \
                    BAR4_SIZE:
                self.tx_cpl.send_nowait(self._completion_for(req, CplStatus.UR))
                return
            o = address - base
            be = req["req.first_be"]
            if ft == FmtType.IOWR.value:
                for i in range(4):
                    if be >> i & 1:
                        self.bar4[o + i] = req.payload[i]
                self.tx_cpl.send_nowait(self._completion_for(req))
            else:
                self.tx_cpl.send_nowait(self._completion_for(
                    req, payload=bytes(self.bar4[o:o + 4])))
            return
        if ft in (FmtType.MRD32.value, FmtType.MRD64.value, FmtType.MWR32.value,
                  FmtType.MWR64.value):
            self._memory(req)
            return
        self._error(f"the host sent an unexpected request {req!r}")

    def _decode(self, address):
        if not self.command & PciCommand.MEMORY_SPACE.value:
            return None, 0
        for index, size in ((0, BAR0_SIZE), (2, BAR2_SIZE)):
            base = self.bar_address(index)
            if base and base <= address < base + size:
                return index, address - base
        return None, 0

    def _memory(self, req):
        address = req.address
        n = req.length_dw
        index, offset = self._decode(address)
        write = req.fmt_type in (FmtType.MWR32.value, FmtType.MWR64.value)
        if index is None:
            if not write:
                self.tx_cpl.send_nowait(self._completion_for(req, CplStatus.UR))
            else:
                self._error(f"write to an address no BAR decodes: {req!r}")
            return
        if write:
            first_be, last_be = req["req.first_be"], req["req.last_be"]
            for i in range(4 * n):
                be = first_be if i < 4 else (last_be if i >= 4 * (n - 1) else 0xF)
                if be >> (i % 4) & 1:
                    self._write_byte(index, offset + i, req.payload[i])
            return
        if index == 0 and offset == SILENT_OFFSET:
            return                                   # never answered
        data = bytes(self._read_byte(index, offset + i) for i in range(4 * n))
        first_be = req["req.first_be"]
        lead = (first_be & -first_be).bit_length() - 1 if first_be else 0
        last_be = req["req.last_be"] if n > 1 else first_be
        trail = 4 - last_be.bit_length() if last_be else 0
        total = 4 * n - lead - trail
        # Answer in pieces split at the RCB, as a completer may (PCIe Base 4.0 §2.3.1.1).
        start = address + lead
        pos, done = 0, 0
        while pos < 4 * n:
            boundary = ((address + pos) // self.rcb + 1) * self.rcb - address
            end = min(4 * n, boundary)
            la = start if pos == 0 else address + pos
            self.tx_cpl.send_nowait(self._completion_for(req, payload=data[pos:end],
                                                         byte_count=total - done,
                                                         lower_address=la))
            done += (end - pos) - (lead if pos == 0 else 0)
            pos = end

    def _read_byte(self, index, offset):
        if index == 2:
            return self.bar2[offset]
        if MSIX_TABLE_OFFSET <= offset < MSIX_TABLE_OFFSET + len(self.msix_table):
            return self.msix_table[offset - MSIX_TABLE_OFFSET]
        if MSIX_PBA_OFFSET <= offset < MSIX_PBA_OFFSET + 8:
            return 0
        reg, byte = offset & ~3, offset & 3
        return (self.regs.get(reg, 0) >> (8 * byte)) & 0xFF

    def _write_byte(self, index, offset, value):
        if index == 2:
            self.bar2[offset] = value
            return
        if MSIX_TABLE_OFFSET <= offset < MSIX_TABLE_OFFSET + len(self.msix_table):
            self.msix_table[offset - MSIX_TABLE_OFFSET] = value
            return
        reg, byte = offset & ~3, offset & 3
        if reg not in self.regs or reg in (Reg.ID, Reg.DONE, Reg.CHECKSUM):
            return
        old = self.regs[reg]
        self.regs[reg] = (old & ~(0xFF << (8 * byte))) | (value << (8 * byte))
        if reg == Reg.DOORBELL and byte == 0:
            cocotb.start_soon(self._dma())
        elif reg == Reg.INTX and byte == 0:
            self._set_intx(bool(value & 1))

    # -- the DMA engine ---------------------------------------------------------------------
    def _tlp(self, fmt_type, address, payload=b"", n=None, tag=0):
        tlp = RawTlp(payload=payload)
        is64 = address >= 1 << 32
        tlp["dw0.fmt_type"] = (fmt_type[1] if is64 else fmt_type[0]).value
        tlp["dw0.length"] = (n if n is not None else len(payload) // 4) & 0x3FF
        tlp["req.requester_id"] = 0x0100
        tlp["req.tag"] = tag
        tlp["req.first_be"] = 0xF
        tlp["req.last_be"] = 0xF if (n or len(payload) // 4) > 1 else 0
        if is64:
            tlp["req.dw2"], tlp["req.dw3"] = address >> 32, address & 0xFFFF_FFFC
        else:
            tlp["req.dw2"] = address & 0xFFFF_FFFC
        return tlp

    async def _dma(self):
        src = self.regs[Reg.SRC_LO] | (self.regs[Reg.SRC_HI] << 32)
        dst = self.regs[Reg.DST_LO] | (self.regs[Reg.DST_HI] << 32)
        length = self.regs[Reg.LENGTH]
        if not self.command & PciCommand.BUS_MASTER.value:
            self.regs[Reg.ERRORS] += 1
            return
        data = bytearray()
        pos = 0
        while pos < length:
            n = min(MAX_READ_REQUEST, length - pos, 4096 - ((src + pos) & 0xFFF))
            tag = self.next_tag
            self.next_tag = (self.next_tag + 1) & 0x1F
            waiter = {"data": bytearray(), "event": Event(), "status": None, "bytes": n,
                      "address": src + pos}
            self.pending[tag] = waiter
            self.tx_req.send_nowait(self._tlp((FmtType.MRD32, FmtType.MRD64), src + pos,
                                              n=n // 4, tag=tag))
            await waiter["event"].wait()
            if waiter["status"] != CplStatus.SC.value:
                self.regs[Reg.ERRORS] += 1
                self.dma_done.set()
                return
            data += waiter["data"]
            pos += n
        pos = 0
        while pos < length:
            n = min(MAX_PAYLOAD, length - pos, 4096 - ((dst + pos) & 0xFFF))
            self.tx_req.send_nowait(self._tlp((FmtType.MWR32, FmtType.MWR64), dst + pos,
                                              bytes(data[pos:pos + n])))
            pos += n
        self.regs[Reg.CHECKSUM] = sum(data) & 0xFFFF_FFFF
        self.regs[Reg.DONE] += 1
        self._interrupt()
        self.dma_done.set()

    def _completion(self, cpl):
        waiter = self.pending.get(cpl.tag)
        if waiter is None:
            self._error(f"completion for no request of ours: {cpl!r}")
            return
        status = cpl["cpl.status"]
        if status != CplStatus.SC.value:
            waiter["status"] = status
            self.pending.pop(cpl.tag)
            waiter["event"].set()
            return
        la = cpl["cpl.lower_address"]
        expected_la = (waiter["address"] + len(waiter["data"])) & 0x7F
        if la != expected_la:
            self._error(f"lower address 0x{la:x}, expected 0x{expected_la:x}: {cpl!r}")
        if cpl["cpl.byte_count"] != waiter["bytes"] - len(waiter["data"]):
            self._error(f"byte count {cpl['cpl.byte_count']}, expected "
                        f"{waiter['bytes'] - len(waiter['data'])}: {cpl!r}")
        # Each completion of a split read ends at an RCB boundary unless it is the last.
        end = waiter["address"] + len(waiter["data"]) + len(cpl.payload)
        last = len(waiter["data"]) + len(cpl.payload) >= waiter["bytes"]
        if not last and end % self.rcb:
            self._error(f"completion does not end at a {self.rcb}-byte boundary: {cpl!r}")
        waiter["data"] += cpl.payload
        if last:
            waiter["status"] = status
            self.pending.pop(cpl.tag)
            waiter["event"].set()

    # -- interrupts -------------------------------------------------------------------------
    def _interrupt(self):
        control = self.msix_control
        vector = self.regs[Reg.VECTOR]
        if control & MSIX_ENABLE:
            entry = self.msix_table[ENTRY * vector:ENTRY * (vector + 1)]
            if control & MSIX_FUNCTION_MASK or entry[ENTRY_CONTROL] & VECTOR_MASK:
                self.regs[Reg.ERRORS] += 1
                return
            address = int.from_bytes(entry[ENTRY_ADDRESS:ENTRY_ADDRESS + 8], "little")
            data = bytes(entry[ENTRY_DATA:ENTRY_DATA + 4])
            self.msis.append((vector, address, data))
            self.tx_req.send_nowait(self._tlp((FmtType.MWR32, FmtType.MWR64), address, data))
        else:
            self._set_intx(True)

    def _set_intx(self, level):
        self.regs[Reg.INTX] = int(level)
        if level == self.intx:
            return
        if level and self.command & PciCommand.INTX_DISABLE.value:
            return
        self.intx = level
        msg = RawTlp.message(MsgCode.ASSERT_INTA if level else MsgCode.DEASSERT_INTA, 0x0100)
        self.tx_req.send_nowait(msg)


def attach(dut, config):
    """The co-simulation's testbench hook for the ``model`` design (see ``cosim/designs.py``)."""
    from ..harness import dut_params
    return EndpointModel(dut, dut.clk, dut.rst, data_width=dut_params()["data_width"])
