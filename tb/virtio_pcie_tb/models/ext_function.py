# SPDX-License-Identifier: BSD-2-Clause
"""A stand-in for the PCIe function in "ext" mode, at TLP level, for testing hard-IP adapters.

Until the project's top (``virtio_pcie.top.VirtioPcieDevice``) exists, the adapter tests put this
Python function on the adapter's TLP streams (through :mod:`.tlp_stream` drivers). It does what
the function does in ext mode, in the simplest way that checks the adapter:

* completes the configuration requests the hard IP forwards, from an image of the five virtio
  vendor capabilities chained from ``ext_cap_pointer`` (writable where virtio 1.2 §4.1.4.9 makes
  the PCI_CFG capability writable), using the completer ID the adapter reports in ``cfg``;
* completes memory reads and stores memory writes per BAR (``bar_id`` decides the BAR), honouring
  byte enables;
* on a write to the NOTIFY window of BAR 4: sends the MSI-X message of vector 0 (a memory write
  to the address in its table in BAR 1) if MSI-X is enabled in ``cfg``, else an Assert_INTA
  message; a read of the ISR byte returns 1 and sends Deassert_INTA (read-to-clear);
* on a write to :data:`DMA_DOORBELL` (BAR 4, device window): reads ``length`` bytes of host memory
  at ``src`` with MRd requests (split at MRRS) and writes them back at ``dst`` with MWr requests
  (split at MPS) — which exercises ``rx_cpl`` and ``tx_req``.
"""

import logging
import struct

import cocotb
from cocotb.triggers import Event

from virtio_pcie.function.interface import FunctionConfig
from virtio_pcie.spec.pcie import (CplStatus, FmtType, MsgCode, MsixTableEntry,
                                   payload_size_bytes)
from virtio_pcie.spec.virtio import (VirtioPciCap, VirtioPciCapType, VirtioPciCfgCap,
                                     VirtioPciNotifyCap, byte_size)

from ..codec import codec
from .tlp import RawTlp

__all__ = ["ExtFunctionStandIn", "STANDIN_LAYOUT", "DMA_DOORBELL", "virtio_cap_image"]

_CAP = codec(VirtioPciCap)
_NCAP = codec(VirtioPciNotifyCap)
_ENTRY = codec(MsixTableEntry)

#: BARs and windows of the stand-in, QEMU-like (and as the function's FunctionLayout plans them).
STANDIN_LAYOUT = {
    "bars": [
        {"index": 1, "kind": "memory", "64bit": False, "prefetchable": False, "size": 0x1000,
         "purpose": "MSI-X table and PBA"},
        {"index": 4, "kind": "memory", "64bit": True, "prefetchable": False, "size": 0x4000,
         "purpose": "virtio structures"},
    ],
    "msix": {"table_size": 4, "table_bir": 1, "table_offset": 0, "pba_bir": 1,
             "pba_offset": 0x800},
    "windows": {   # (cfg_type, bar, offset, length)
        "common": (VirtioPciCapType.COMMON_CFG, 4, 0x0000, 0x38),
        "notify": (VirtioPciCapType.NOTIFY_CFG, 4, 0x3000, 0x1000),
        "isr":    (VirtioPciCapType.ISR_CFG, 4, 0x1000, 1),
        "device": (VirtioPciCapType.DEVICE_CFG, 4, 0x2000, 0x40),
    },
    "notify_off_multiplier": 4,
}

#: A write of (src, dst, length) as three qwords here starts a DMA copy.
DMA_DOORBELL = (4, 0x2800)


def virtio_cap_image(first, layout=STANDIN_LAYOUT):
    """Bytes of the virtio capabilities chained from byte ``first``: common, notify, ISR,
    device, PCI_CFG (virtio 1.2 §4.1.4); returns (image, [(name, offset)])."""
    order = ["common", "notify", "isr", "device", "pci_cfg"]
    sizes = {name: byte_size(VirtioPciCap) for name in order}
    sizes["notify"] = byte_size(VirtioPciNotifyCap)
    sizes["pci_cfg"] = byte_size(VirtioPciCfgCap)
    placed = []
    offset = first
    for name in order:
        placed.append((name, offset))
        offset += sizes[name]
    image = bytearray(offset - first)
    for i, (name, at) in enumerate(placed):
        raw = bytearray(sizes[name])
        nxt = placed[i + 1][1] if i + 1 < len(placed) else 0
        _CAP.put(raw, "cap_vndr", 0x09)
        _CAP.put(raw, "cap_next", nxt)
        _CAP.put(raw, "cap_len", sizes[name])
        if name == "pci_cfg":
            _CAP.put(raw, "cfg_type", VirtioPciCapType.PCI_CFG.value)
        else:
            cfg_type, bar, off, length = layout["windows"][name]
            _CAP.put(raw, "cfg_type", cfg_type.value)
            _CAP.put(raw, "bar", bar)
            _CAP.put(raw, "offset", off)
            _CAP.put(raw, "length", length)
            if name == "notify":
                _NCAP.put(raw, "notify_off_multiplier", layout["notify_off_multiplier"])
        image[at - first:at - first + len(raw)] = raw
    return bytes(image), placed


def _cfg_field(value, name):
    field = FunctionConfig
    offset = 0
    for part in name.split("."):
        f = field[part]
        offset += f.offset
        field = f.shape
    from amaranth.hdl import Shape
    width = field.size if hasattr(field, "size") and not isinstance(field, type) \
        else Shape.cast(field).width
    return (value >> offset) & ((1 << width) - 1)


class ExtFunctionStandIn:
    """The stand-in function on an adapter's TLP streams.

    Parameters
    ----------
    dut : the cocotb handle whose ``cfg`` port is the adapter's FunctionConfig output.
    rx_req, rx_cpl : TlpSink
        Requests and completions from the adapter (created with no callback).
    tx_cpl, tx_req : TlpSource
        Completions and requests to the adapter.
    ext_cap_pointer : int
        First forwarded byte (0xA8 for the 7-series core).
    """

    def __init__(self, dut, rx_req, rx_cpl, tx_cpl, tx_req, *, ext_cap_pointer=0xA8):
        self.log = logging.getLogger("cocotb.standin")
        self.dut = dut
        self.rx_req, self.rx_cpl, self.tx_cpl, self.tx_req = rx_req, rx_cpl, tx_cpl, tx_req
        self.first = ext_cap_pointer
        image, self.caps = virtio_cap_image(ext_cap_pointer)
        self.config = bytearray(256)
        self.config[ext_cap_pointer:ext_cap_pointer + len(image)] = image
        self.bars = {b["index"]: bytearray(b["size"]) for b in STANDIN_LAYOUT["bars"]}
        self.errors = []
        self.requests = []               # every request received (RawTlp)
        self.config_requests = 0
        self.msix_sent = 0
        self._tag = 0
        self._completions = {}
        self._cpl_event = Event()
        self.dma_done = Event()
        cocotb.start_soon(self._serve())
        cocotb.start_soon(self._collect_completions())

    # -- what the adapter reports -----------------------------------------------------------------
    @property
    def cfg(self):
        return int(self.dut.cfg.value)

    def cfg_field(self, name):
        return _cfg_field(self.cfg, name)

    @property
    def pcie_id(self):
        return self.cfg_field("pcie_id")

    # -- requests ---------------------------------------------------------------------------------
    async def _serve(self):
        while True:
            req = await self.rx_req.recv()
            self.requests.append(req)
            ft = req.fmt_type
            if ft in (FmtType.CFGRD0.value, FmtType.CFGWR0.value):
                self.config_requests += 1
                await self._config(req)
            elif ft in (FmtType.MRD32.value, FmtType.MRD64.value):
                await self._mem_read(req)
            elif ft in (FmtType.MWR32.value, FmtType.MWR64.value):
                await self._mem_write(req)
            else:
                self.errors.append(f"unexpected request {req!r}")

    def _completion(self, req, payload=b"", status=CplStatus.SC, byte_count=None, lower=0):
        cpl = RawTlp()
        cpl["dw0.fmt_type"] = (FmtType.CPLD if payload else FmtType.CPL).value
        cpl["dw0.length"] = (len(payload) // 4) & 0x3FF
        cpl["dw0.tc"] = req["dw0.tc"]
        cpl["dw0.attr"] = req["dw0.attr"]
        cpl["cpl.status"] = status.value
        cpl["cpl.completer_id"] = self.pcie_id
        cpl["cpl.requester_id"] = req["req.requester_id"]
        cpl["cpl.tag"] = req["req.tag"]
        cpl["cpl.byte_count"] = (byte_count if byte_count is not None else len(payload)) & 0xFFF
        cpl["cpl.lower_address"] = lower & 0x7F
        cpl.payload = payload
        return cpl

    async def _config(self, req):
        reg = (req["cfg.ext_register"] << 6) | req["cfg.register"]
        addr = 4 * reg
        if not self.first <= addr < 256:
            self.errors.append(f"configuration request outside the forwarded window: {req!r}")
        if req.fmt_type == FmtType.CFGRD0.value:
            data = bytes(self.config[addr:addr + 4]) if addr < 256 else bytes(4)
            self.tx_cpl.send_nowait(self._completion(req, data, byte_count=4))
            return
        be = req["cfg.first_be"]
        # Only the PCI_CFG capability's bar, offset, length and data are writable.
        pci_cfg = dict(self.caps)["pci_cfg"]
        writable = set(range(pci_cfg + _CAP.offset("bar"), pci_cfg + _CAP.offset("bar") + 1))
        writable |= set(range(pci_cfg + _CAP.offset("offset"), pci_cfg + byte_size(
            VirtioPciCfgCap)))
        for i in range(4):
            if be >> i & 1 and addr + i in writable:
                self.config[addr + i] = req.payload[i]
        self.tx_cpl.send_nowait(self._completion(req))

    async def _mem_read(self, req):
        bar = self.bars.get(req.bar_id)
        if bar is None:
            self.tx_cpl.send_nowait(self._completion(req, status=CplStatus.UR))
            return
        offset = req.address & (len(bar) - 1)
        n = 4 * req.length_dw
        data = bytearray(bar[offset:offset + n])
        first_be, last_be = req["req.first_be"], req["req.last_be"]
        first = (first_be & -first_be).bit_length() - 1 if first_be else 0
        if req.length_dw == 1:
            last = first_be.bit_length() - 1 if first_be else 0
        else:
            last = 4 * (req.length_dw - 1) + last_be.bit_length() - 1
        count = last - first + 1 if first_be else 1
        if req.bar_id == 4 and offset == STANDIN_LAYOUT["windows"]["isr"][2]:
            data[0] = 1
            self.tx_req.send_nowait(RawTlp.message(MsgCode.DEASSERT_INTA, self.pcie_id))
        self.tx_cpl.send_nowait(self._completion(req, bytes(data), byte_count=count,
                                                 lower=(req.address + first)))

    async def _mem_write(self, req):
        bar = self.bars.get(req.bar_id)
        if bar is None:
            self.errors.append(f"write to a BAR the stand-in does not have: {req!r}")
            return
        offset = req.address & (len(bar) - 1)
        first_be, last_be = req["req.first_be"], req["req.last_be"]
        n = req.length_dw
        for i, byte in enumerate(req.payload):
            dw, b = divmod(i, 4)
            be = first_be if dw == 0 else (last_be if dw == n - 1 else 0xF)
            if be >> b & 1:
                bar[offset + i] = byte
        if req.bar_id == 4 and offset == STANDIN_LAYOUT["windows"]["notify"][2]:
            await self._interrupt()
        if (req.bar_id, offset) == DMA_DOORBELL:
            src, dst, length = struct.unpack_from("<QQQ", bar, offset)
            cocotb.start_soon(self._dma(src, dst, length))

    async def _interrupt(self):
        if self.cfg_field("msix_enable"):
            entry = self.bars[1][0:16]
            addr = _ENTRY.get(entry, "msg_addr") | (_ENTRY.get(entry, "msg_upper_addr") << 32)
            value = _ENTRY.get(entry, "msg_data")
            self.tx_req.send_nowait(self._write(addr, struct.pack("<L", value)))
            self.msix_sent += 1
        else:
            self.tx_req.send_nowait(RawTlp.message(MsgCode.ASSERT_INTA, self.pcie_id))

    # -- DMA ---------------------------------------------------------------------------------
    def _write(self, addr, data):
        t = RawTlp()
        four = addr >> 32 != 0
        t["dw0.fmt_type"] = (FmtType.MWR64 if four else FmtType.MWR32).value
        t["dw0.length"] = (len(data) // 4) & 0x3FF
        t["req.requester_id"] = self.pcie_id
        t["req.first_be"] = 0xF
        t["req.last_be"] = 0xF if len(data) > 4 else 0
        if four:
            t["req.dw2"] = addr >> 32
            t["req.dw3"] = addr & 0xFFFFFFFC
        else:
            t["req.dw2"] = addr & 0xFFFFFFFC
        t.payload = data
        return t

    def _read(self, addr, length, tag):
        t = RawTlp()
        four = addr >> 32 != 0
        t["dw0.fmt_type"] = (FmtType.MRD64 if four else FmtType.MRD32).value
        t["dw0.length"] = (length // 4) & 0x3FF
        t["req.requester_id"] = self.pcie_id
        t["req.tag"] = tag
        t["req.first_be"] = 0xF
        t["req.last_be"] = 0xF if length > 4 else 0
        if four:
            t["req.dw2"] = addr >> 32
            t["req.dw3"] = addr & 0xFFFFFFFC
        else:
            t["req.dw2"] = addr & 0xFFFFFFFC
        return t

    async def _collect_completions(self):
        while True:
            cpl = await self.rx_cpl.recv()
            if cpl["cpl.requester_id"] != self.pcie_id:
                self.errors.append(f"completion for someone else: {cpl!r}")
            self._completions.setdefault(cpl.tag, []).append(cpl)
            self._cpl_event.set()

    async def _dma(self, src, dst, length):
        mrrs = payload_size_bytes(self.cfg_field("max_read_request_size"))
        mps = payload_size_bytes(self.cfg_field("max_payload_size"))
        data = bytearray()
        pos = 0
        while pos < length:
            n = min(mrrs, length - pos, 4096 - ((src + pos) & 0xFFF))
            tag = self._tag
            self._tag = (self._tag + 1) % 32
            self._completions.pop(tag, None)
            self.tx_req.send_nowait(self._read(src + pos, n, tag))
            got = bytearray()
            while len(got) < n:
                self._cpl_event.clear()
                if not self._completions.get(tag):
                    await self._cpl_event.wait()
                    continue
                cpl = self._completions[tag].pop(0)
                if cpl["cpl.status"] != CplStatus.SC.value:
                    self.errors.append(f"DMA read failed: {cpl!r}")
                    return
                got += cpl.payload
            data += got[:n]
            pos += n
        pos = 0
        while pos < length:
            n = min(mps, length - pos, 4096 - ((dst + pos) & 0xFFF))
            self.tx_req.send_nowait(self._write(dst + pos, bytes(data[pos:pos + n])))
            pos += n
        self.dma_done.set()

