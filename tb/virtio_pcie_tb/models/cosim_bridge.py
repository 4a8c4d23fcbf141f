# SPDX-License-Identifier: BSD-2-Clause
"""The co-simulation host bridge: a root port that turns host accesses into TLPs for the RTL and
serves the RTL's requests from guest memory.

Where :mod:`.pcie_bridge` plugs the RTL into cocotbext-pcie's simulated fabric, this bridge is
the fabric itself, for a host that lives outside the simulation (QEMU over vfio-user)::

    host (vfio-user)                 CosimHostBridge                          RTL
    cfg_read/cfg_write ───► CfgRd0/CfgWr0 ──────────────────────────► rx_req
    mem_read/mem_write ───► MRd/MWr, IORd/IOWr ─────────────────────► rx_req
                       ◄─── Cpl/CplD (by tag, RCB-split or not) ◄──── tx_cpl
    guest memory ◄──── MRd/MWr ◄──────────────────────────────────── tx_req
                       CplD split at the RCB ───────────────────────► rx_cpl
    on_msi(address, data) ◄── MWr into the MSI window ◄───────────── tx_req
    on_intx(pin, level) ◄──── Assert_INTx / Deassert_INTx ◄──────── tx_req

The host side is ``async``: each call returns when the RTL has answered, so a caller in the
simulation awaits the completion in simulated time. Requests the RTL never answers end after
``completion_timeout_ns`` with all-ones data, as a root complex's completion timeout does, and
Unsupported Request or Completer Abort completions read as all ones too (PCIe Base 4.0
§2.3.2, §6.2.3.2.2); both are recorded in :attr:`errors`.

The RTL's memory requests go to :attr:`memory` (an object with ``read(address, length)`` and
``write(address, data)``, e.g. :class:`~virtio_pcie_tb.cosim.vfio_user.DmaSpace`). A read of
memory that is not there gets an Unsupported Request completion and a write is dropped; each is
recorded in :attr:`errors` with the address. Read completions are split at every ``rcb``-byte
boundary, as a root complex that returns cache lines does (PCIe Base 4.0 §2.3.1.1), using the
same splitter as :mod:`.pcie_bridge`.

Like :mod:`.pcie_bridge` and :mod:`.tlp_stream`, this is one of the few modules that touch DUT
signals (only through the stream drivers).
"""

import logging

from cocotb.triggers import Event, First, Timer

from virtio_pcie.spec.pcie import CplStatus, FmtType, MsgCode

from .pcie_bridge import split_completion
from .tlp import RawTlp
from .tlp_stream import TlpSink, TlpSource

__all__ = ["CosimHostBridge", "AccessError", "MSI_WINDOW", "make_id"]

#: The x86 interrupt address range (Intel SDM vol. 3, "Message Address Register Format": MSI
#: addresses are 0xFEEx_xxxx). No RAM is ever there, so the bridge takes writes into it as MSIs.
MSI_WINDOW = (0xFEE0_0000, 0x10_0000)

_MWR = (FmtType.MWR32.value, FmtType.MWR64.value)
_MRD = (FmtType.MRD32.value, FmtType.MRD64.value)
_CPL = (FmtType.CPL.value, FmtType.CPLD.value, FmtType.CPLLK.value, FmtType.CPLDLK.value)
_INTX = {MsgCode.ASSERT_INTA.value + i: (i, True) for i in range(4)}
_INTX.update({MsgCode.DEASSERT_INTA.value + i: (i, False) for i in range(4)})
_MAX_READ_BYTES = 4096     # one request never crosses a 4 KiB boundary (PCIe Base 4.0 §2.2.7)


def make_id(bus, device, function):
    """A Routing ID (PCIe Base 4.0 §2.2.6.2) as a 16-bit integer."""
    return (bus << 8) | (device << 3) | function


class AccessError(Exception):
    """A host access the RTL refused (UR/CA) or never answered."""


def _byte_enables(address, length):
    """(first DW BE, last DW BE, dword count) of an access (PCIe Base 4.0 §2.2.5)."""
    first_dw = address >> 2
    last_dw = (address + length - 1) >> 2
    n = last_dw - first_dw + 1
    first_be = (0xF << (address & 3)) & 0xF
    last_be = 0xF >> (3 - ((address + length - 1) & 3))
    if n == 1:
        return first_be & last_be, 0, 1
    return first_be, last_be, n


class _Pending:
    __slots__ = ("request", "event", "data", "status", "done", "expected", "kind")

    def __init__(self, request, expected, kind):
        self.request = request
        self.event = Event()
        self.data = bytearray()
        self.status = None
        self.done = False
        self.expected = expected
        self.kind = kind


class CosimHostBridge:
    """Root port for the co-simulation (see the module docstring).

    Parameters
    ----------
    dut, clock, reset : the top level and its clock and active-high reset.
    data_width : TLP data path width in bits.
    bus : bus number of the RTL (device 0, function 0 on it).
    port_id : the Routing ID this bridge uses as requester and completer.
    rcb : read completion boundary in bytes (64 or 128).
    completion_timeout_ns : how long host requests wait for the RTL.
    memory : guest memory for the RTL's requests (can be set later).
    on_msi : ``callable(address, data)`` for writes into :data:`MSI_WINDOW`.
    on_intx : ``callable(pin, asserted)`` for INTx messages (pin 0 is INTA).
    """

    def __init__(self, dut, clock, reset=None, *, data_width, bus=1, port_id=make_id(0, 1, 0),
                 rcb=64, completion_timeout_ns=100_000, memory=None, on_msi=None, on_intx=None,
                 prefixes=("rx_req", "tx_cpl", "tx_req", "rx_cpl")):
        if rcb not in (64, 128):
            raise ValueError(f"rcb must be 64 or 128, not {rcb!r}")
        self.log = logging.getLogger("cocotb.cosim.bridge")
        self.bus = bus
        self.target_id = make_id(bus, 0, 0)
        self.port_id = port_id
        self.rcb = rcb
        self.completion_timeout_ns = completion_timeout_ns
        self.memory = memory
        self.on_msi = on_msi
        self.on_intx = on_intx
        rx_req, tx_cpl, tx_req, rx_cpl = prefixes
        self.rx_req = TlpSource(dut, rx_req, clock, reset, data_width=data_width)
        self.rx_cpl = TlpSource(dut, rx_cpl, clock, reset, data_width=data_width)
        self.tx_cpl = TlpSink(dut, tx_cpl, clock, reset, data_width=data_width,
                              callback=self._from_dut)
        self.tx_req = TlpSink(dut, tx_req, clock, reset, data_width=data_width,
                              callback=self._from_dut)
        self.errors = []
        self.bus_master = True       # set by the owner from the function's Command register
        self._pending = {}
        self._next_tag = 0
        self._tag_free = Event()
        #: Increases with every TLP in either direction (idle detection for the serve loop).
        self.activity = 0
        self.stats = {"cfg": 0, "host_mrd": 0, "host_mwr": 0, "io": 0, "dma_mrd": 0,
                      "dma_mwr": 0, "dma_read_bytes": 0, "dma_write_bytes": 0, "msi": 0,
                      "intx": 0, "cpl_to_rtl": 0}

    @property
    def busy(self):
        """Requests to the RTL outstanding or TLPs still queued towards it."""
        return bool(self._pending) or not self.rx_req.empty() or not self.rx_cpl.empty()

    def reset_state(self):
        """Forget outstanding requests (after the RTL was reset: their completions never come)."""
        for pending in self._pending.values():
            pending.status = "reset"
            pending.done = True
            pending.event.set()
        self._pending.clear()

    def _error(self, message):
        self.log.error("%s", message)
        self.errors.append(message)

    # -- host → RTL --------------------------------------------------------------------------
    async def _tag(self):
        while True:
            for _ in range(256):
                tag = self._next_tag
                self._next_tag = (self._next_tag + 1) & 0xFF
                if tag not in self._pending:
                    return tag
            self._tag_free.clear()
            await self._tag_free.wait()

    async def _non_posted(self, tlp, expected, kind):
        tag = await self._tag()
        tlp["req.tag"] = tag
        pending = _Pending(tlp, expected, kind)
        self._pending[tag] = pending
        self.activity += 1
        self.rx_req.send_nowait(tlp)
        timer = Timer(self.completion_timeout_ns, "ns")
        await First(pending.event.wait(), timer)
        if not pending.done:
            self._pending.pop(tag, None)
            self._tag_free.set()
            raise AccessError(f"completion timeout: the RTL did not answer {tlp!r} within "
                              f"{self.completion_timeout_ns} ns")
        if pending.status != CplStatus.SC.value:
            status = pending.status
            name = CplStatus(status).name if status in (0, 1, 2, 4) else status
            raise AccessError(f"{kind} completed with status {name}")
        return bytes(pending.data)

    def _request(self, fmt_type, address=None, payload=b"", first_be=0xF, last_be=0,
                 length_dw=None):
        tlp = RawTlp(payload=payload)
        tlp["dw0.fmt_type"] = fmt_type.value
        tlp["dw0.length"] = (length_dw if length_dw is not None else max(1, len(payload) // 4)) \
            & 0x3FF
        tlp["req.requester_id"] = self.port_id
        tlp["req.first_be"] = first_be
        tlp["req.last_be"] = last_be
        if address is not None:
            if FmtType.is_4dw(fmt_type.value):
                tlp["req.dw2"] = address >> 32
                tlp["req.dw3"] = address & 0xFFFF_FFFC
            else:
                tlp["req.dw2"] = address & 0xFFFF_FFFC
        return tlp

    def _config(self, write, offset, first_be, value=0):
        tlp = RawTlp(payload=value.to_bytes(4, "little") if write else b"")
        tlp["dw0.fmt_type"] = (FmtType.CFGWR0 if write else FmtType.CFGRD0).value
        tlp["dw0.length"] = 1
        tlp["cfg.requester_id"] = self.port_id
        tlp["cfg.first_be"] = first_be
        tlp["cfg.target_id"] = self.target_id
        tlp["cfg.register"] = (offset >> 2) & 0x3F
        tlp["cfg.ext_register"] = (offset >> 8) & 0xF
        return tlp

    async def cfg_read(self, offset):
        """The configuration dword at byte ``offset`` (all ones if the RTL refuses)."""
        if offset & 3 or not 0 <= offset < 4096:
            raise ValueError(f"configuration offset 0x{offset:x} is not a dword in 0..0xFFC")
        self.stats["cfg"] += 1
        for _ in range(16):
            try:
                data = await self._non_posted(self._config(False, offset, 0xF), 4, "CfgRd0")
                return int.from_bytes(data[:4].ljust(4, b"\xff"), "little")
            except AccessError as e:
                if "CRS" in str(e):
                    # Configuration Request Retry Status: the function is still initialising
                    # (PCIe Base 4.0 §2.3.1); try again a little later.
                    await Timer(1, "us")
                    continue
                self._error(f"configuration read of 0x{offset:x}: {e}")
                return 0xFFFF_FFFF
        self._error(f"configuration read of 0x{offset:x}: retry status 16 times")
        return 0xFFFF_FFFF

    async def cfg_write(self, offset, value, byte_enables=0xF):
        """Write the enabled bytes of the dword at ``offset`` (waits for the completion)."""
        if offset & 3 or not 0 <= offset < 4096:
            raise ValueError(f"configuration offset 0x{offset:x} is not a dword in 0..0xFFC")
        self.stats["cfg"] += 1
        try:
            await self._non_posted(self._config(True, offset, byte_enables, value), 0, "CfgWr0")
        except AccessError as e:
            self._error(f"configuration write of 0x{offset:x}: {e}")

    async def mem_read(self, address, length):
        """``length`` bytes from the RTL's memory space (all ones where it refuses)."""
        out = bytearray()
        while length > 0:
            chunk = min(length, _MAX_READ_BYTES - (address & (_MAX_READ_BYTES - 1)))
            first_be, last_be, n = _byte_enables(address, chunk)
            kind = FmtType.MRD64 if address >= 1 << 32 else FmtType.MRD32
            tlp = self._request(kind, address, first_be=first_be, last_be=last_be, length_dw=n)
            self.stats["host_mrd"] += 1
            try:
                data = await self._non_posted(tlp, chunk, f"MRd 0x{address:x}+{chunk}")
            except AccessError as e:
                self._error(f"memory read of {chunk} bytes at 0x{address:x}: {e}")
                data = b"\xff" * chunk
            out += data[:chunk].ljust(chunk, b"\xff")
            address += chunk
            length -= chunk
        return bytes(out)

    def mem_write(self, address, data, max_payload=128):
        """Post ``data`` to the RTL's memory space (MWr TLPs, returns at once)."""
        data = bytes(data)
        while data:
            room = min(max_payload - (address & 3), _MAX_READ_BYTES - (address & 0xFFF))
            chunk, data = data[:room], data[room:]
            first_be, last_be, n = _byte_enables(address, len(chunk))
            pad = address & 3
            payload = (b"\0" * pad + chunk).ljust(4 * n, b"\0")
            kind = FmtType.MWR64 if address >= 1 << 32 else FmtType.MWR32
            self.rx_req.send_nowait(self._request(kind, address, payload, first_be, last_be, n))
            self.stats["host_mwr"] += 1
            self.activity += 1
            address += len(chunk)

    async def io_read(self, address, length):
        if not 1 <= length <= 4 or (address & 3) + length > 4:
            raise ValueError(f"I/O read of {length} bytes at 0x{address:x} crosses a dword")
        first_be, _, _ = _byte_enables(address, length)
        tlp = self._request(FmtType.IORD, address, first_be=first_be, length_dw=1)
        self.stats["io"] += 1
        try:
            data = await self._non_posted(tlp, 4, f"IORd 0x{address:x}")
        except AccessError as e:
            self._error(f"I/O read of {length} bytes at 0x{address:x}: {e}")
            return b"\xff" * length
        data = data.ljust(4, b"\xff")
        return data[address & 3:(address & 3) + length]

    async def io_write(self, address, data):
        data = bytes(data)
        if not 1 <= len(data) <= 4 or (address & 3) + len(data) > 4:
            raise ValueError(f"I/O write of {len(data)} bytes at 0x{address:x} crosses a dword")
        first_be, _, _ = _byte_enables(address, len(data))
        payload = (b"\0" * (address & 3) + data).ljust(4, b"\0")
        tlp = self._request(FmtType.IOWR, address, payload, first_be=first_be, length_dw=1)
        self.stats["io"] += 1
        try:
            await self._non_posted(tlp, 0, f"IOWr 0x{address:x}")
        except AccessError as e:
            self._error(f"I/O write of {len(data)} bytes at 0x{address:x}: {e}")

    # -- RTL → host --------------------------------------------------------------------------
    def _from_dut(self, tlp):
        self.activity += 1
        if tlp.error:
            self._error(f"the RTL sent a TLP flagged with error 0x{tlp.error:x}: {tlp!r}")
            return
        fmt_type = tlp.fmt_type
        if fmt_type in _CPL:
            self._completion(tlp)
        elif fmt_type in _MRD:
            self._dma_read(tlp)
        elif fmt_type in _MWR:
            self._dma_write(tlp)
        elif tlp.is_message:
            self._message(tlp)
        else:
            self._error(f"the RTL sent a request the host does not take: {tlp!r}")

    def _completion(self, cpl):
        tag = cpl.tag
        pending = self._pending.get(tag)
        if pending is None:
            self._error(f"the RTL sent a completion for no outstanding request: {cpl!r}")
            return
        if cpl["cpl.requester_id"] != self.port_id:
            self._error(f"completion with requester ID 0x{cpl['cpl.requester_id']:04x}, not "
                        f"the bridge's 0x{self.port_id:04x}: {cpl!r}")
        status = cpl["cpl.status"]
        if status != CplStatus.SC.value:
            pending.status = status
            self._finish(tag, pending)
            return
        has_data = cpl.fmt_type in (FmtType.CPLD.value, FmtType.CPLDLK.value)
        if pending.expected and not has_data:
            self._error(f"the RTL answered a read with a completion without data: {cpl!r}")
            pending.status = CplStatus.CA.value
            self._finish(tag, pending)
            return
        if not pending.expected:
            pending.status = status
            self._finish(tag, pending)
            return
        # Data bytes start at Lower Address's byte in the first dword (PCIe Base 4.0 §2.3.1.1).
        skip = cpl["cpl.lower_address"] & 3 if not pending.data else 0
        remaining = cpl["cpl.byte_count"] or 4096
        useful = cpl.payload[skip:skip + remaining]
        pending.data += useful
        if remaining <= len(cpl.payload) - skip or len(pending.data) >= pending.expected:
            pending.status = status
            self._finish(tag, pending)

    def _finish(self, tag, pending):
        pending.done = True
        self._pending.pop(tag, None)
        self._tag_free.set()
        pending.event.set()

    def _in_msi_window(self, address):
        return MSI_WINDOW[0] <= address < MSI_WINDOW[0] + MSI_WINDOW[1]

    def _check_requester(self, tlp, what):
        if not self.bus_master:
            self._error(f"the RTL issued {what} with Bus Master Enable clear (PCIe Base 4.0 "
                        f"§7.5.1.1.3): {tlp!r}")

    def _dma_read(self, tlp):
        self._check_requester(tlp, "a memory read")
        address = tlp.address
        first_be, last_be = tlp["req.first_be"], tlp["req.last_be"]
        n = tlp.length_dw
        # Bytes the request covers: from the first enabled byte to the last (§2.2.5).
        lead = (first_be & -first_be).bit_length() - 1 if first_be else 0
        if n == 1:
            trail = 4 - first_be.bit_length() if first_be else 0
        else:
            trail = 4 - last_be.bit_length() if last_be else 0
        start = address + lead
        length = max(0, 4 * n - lead - trail)
        self.stats["dma_mrd"] += 1
        if (address & 0xFFF) + 4 * n > 4096:
            self._error(f"the RTL's read crosses a 4 KiB boundary (PCIe Base 4.0 §2.2.7): "
                        f"{tlp!r}")
        cpl = RawTlp()
        cpl["cpl.requester_id"] = tlp["req.requester_id"]
        cpl["cpl.completer_id"] = self.port_id
        cpl["cpl.tag"] = tlp["req.tag"]
        cpl["dw0.t8"] = tlp["dw0.t8"]
        cpl["dw0.t9"] = tlp["dw0.t9"]
        cpl["dw0.tc"] = tlp["dw0.tc"]
        cpl["dw0.attr"] = tlp["dw0.attr"]
        try:
            if self.memory is None:
                raise LookupError("no guest memory is mapped yet")
            data = self.memory.read(start, length) if length else b""
        except Exception as e:            # noqa: BLE001 - the RTL gets UR, the log says why
            self._error(f"the RTL read {length} bytes at 0x{start:x}, which is not guest "
                        f"memory: {e}")
            cpl["dw0.fmt_type"] = FmtType.CPL.value
            cpl["cpl.status"] = CplStatus.UR.value
            cpl["cpl.byte_count"] = 4
            self._send_completion(cpl)
            return
        self.stats["dma_read_bytes"] += length
        payload = (b"\0" * lead + data).ljust(4 * n, b"\0")
        cpl.payload = payload
        cpl["dw0.fmt_type"] = FmtType.CPLD.value
        cpl["dw0.length"] = n & 0x3FF
        cpl["cpl.byte_count"] = (length or 1) & 0xFFF
        cpl["cpl.lower_address"] = start & 0x7F
        for piece in split_completion(cpl, self.rcb):
            self._send_completion(piece)

    def _send_completion(self, cpl):
        self.stats["cpl_to_rtl"] += 1
        self.activity += 1
        self.rx_cpl.send_nowait(cpl)

    def _dma_write(self, tlp):
        address = tlp.address
        if self._in_msi_window(address):
            self._check_requester(tlp, "an MSI")
            self.stats["msi"] += 1
            if tlp.length_dw != 1 or tlp["req.first_be"] != 0xF:
                self._error(f"an MSI-X message must be one whole dword (PCIe Base 4.0 §6.1.4.2):"
                            f" {tlp!r}")
            value = int.from_bytes(tlp.payload[:4], "little")
            if self.on_msi is not None:
                self.on_msi(address, value)
            return
        self._check_requester(tlp, "a memory write")
        self.stats["dma_mwr"] += 1
        first_be, last_be = tlp["req.first_be"], tlp["req.last_be"]
        n = tlp.length_dw
        enables = []
        for i in range(n):
            be = first_be if i == 0 else (last_be if i == n - 1 else 0xF)
            enables.extend((be >> b) & 1 for b in range(4))
        if (address & 0xFFF) + 4 * n > 4096:
            self._error(f"the RTL's write crosses a 4 KiB boundary (PCIe Base 4.0 §2.2.7): "
                        f"{tlp!r}")
        # Write runs of enabled bytes.
        i = 0
        try:
            if self.memory is None:
                raise LookupError("no guest memory is mapped yet")
            while i < len(enables):
                if not enables[i]:
                    i += 1
                    continue
                j = i
                while j < len(enables) and enables[j]:
                    j += 1
                self.memory.write(address + i, tlp.payload[i:j])
                self.stats["dma_write_bytes"] += j - i
                i = j
        except Exception as e:           # noqa: BLE001
            self._error(f"the RTL wrote at 0x{address + i:x}, which is not guest memory: {e}")

    def _message(self, tlp):
        code = tlp["msg.message_code"]
        if code in _INTX:
            pin, level = _INTX[code]
            self.stats["intx"] += 1
            if self.on_intx is not None:
                self.on_intx(pin, level)
            return
        self._error(f"the RTL sent a message the bridge does not take: {tlp!r}")
