# SPDX-License-Identifier: BSD-2-Clause
"""The RTL as a vfio-user device: QEMU's accesses become TLPs through the cosim host bridge.

QEMU's ``vfio-user-pci`` treats the server like the kernel's vfio-pci treats a physical device:
it emulates the BAR registers and the MSI-X table itself (table writes never reach the server;
it delivers MSI-X through the per-vector eventfds it hands over with ``SET_IRQS``), and forwards
every other configuration access and every BAR access. So this device plays the part of the
firmware and of the kernel's vfio-pci towards the RTL:

* **Enumeration** (:meth:`RtlFunction.enumerate`): reads the RTL's header and capability list
  with CfgRd0, sizes its BARs (PCI 3.0 §6.2.5.1), assigns them fixed bus addresses (32-bit
  memory BARs from 0x8000_0000, 64-bit ones from 64 GiB so that 4-DW requests are exercised, I/O
  BARs from 0x1000), and programs its MSI-X table (PCIe Base 4.0 §7.7.2) with one message per
  vector: address :data:`~virtio_pcie_tb.models.cosim_bridge.MSI_WINDOW`, data = the vector
  number, masked. The bridge takes a write into that window as MSI-X vector ``data``. Then the
  Command register goes back to 0, as after reset.
* **Regions**: a BAR region's offset ``o`` is the RTL bus address ``base + o`` (MRd/MWr, or
  IORd/IOWr for an I/O BAR); the configuration region is CfgRd0/CfgWr0.
* **Configuration writes** are forwarded to the RTL (byte enables as QEMU wrote them), except:

  - the BARs and the expansion ROM BAR: the bridge owns the RTL's BARs; QEMU's writes go to a
    virtual BAR that answers sizing like hardware (reads return ``~(size - 1) | type``),
  - the MSI-X Message Control register: QEMU turns MSI-X on and off with ``SET_IRQS``, and the
    bridge sets the RTL's MSI-X Enable from that (any MSI-X ``SET_IRQS`` with a count enables it,
    as kernel vfio does; disable-all clears it), unmasking exactly the vectors that have an
    eventfd. Reads of Message Control show the Enable and Function Mask bits QEMU wrote.

  The Command register is forwarded as written: Memory/I-O Space and Bus Master Enable reach
  the RTL (the bridge reports DMA or MSI issued with Bus Master clear as an error), and so does
  Interrupt Disable. When the bridge itself must write the MSI-X table while the guest has
  Memory Space disabled, it enables it for those writes and restores the guest's value.
* **INTx**: Assert_INTx signals the INTx eventfd (automasked: the next one waits for QEMU's
  ``UNMASK``, the guest's EOI); if the RTL still asserts the line at ``UNMASK`` it is signalled
  again, like a level-triggered interrupt. Deassert_INTx clears a pending one.
* **MSI**: not offered (an RTL with an MSI capability gets a warning: QEMU would try to use it).
* **DEVICE_RESET**: pulses the RTL's reset (when the caller gave a reset coroutine), then
  enumerates and programs it again.
"""

import errno
import logging

from virtio_pcie.spec.pcie import (CONFIG_SPACE_SIZE, LEGACY_CONFIG_SPACE_SIZE, CapId,
                                   MsixCap, MsixMessageControl, MsixTableEntry, MsixVectorControl,
                                   PciCommand, PciStatus, PciType0Header, byte_offset, byte_size)

from ..models.cosim_bridge import MSI_WINDOW
from .vfio_user import (IrqInfoFlags, IrqType, PciIrq, PciRegion, Region, RegionFlags,
                        VfioUserDevice, VfioUserError)

__all__ = ["RtlFunction", "Bar"]

# Configuration header offsets, from the layouts (never typed in).
VENDOR_ID = byte_offset(PciType0Header, "vendor_id")
COMMAND = byte_offset(PciType0Header, "command")
STATUS = byte_offset(PciType0Header, "status")
REVISION = byte_offset(PciType0Header, "revision_id")
HEADER_TYPE = byte_offset(PciType0Header, "header_type")
BAR0 = byte_offset(PciType0Header, "bar")
BAR_COUNT = 6
EXPANSION_ROM = byte_offset(PciType0Header, "expansion_rom")
CAP_POINTER = byte_offset(PciType0Header, "capabilities_pointer")
INTERRUPT_PIN = byte_offset(PciType0Header, "interrupt_pin")
SUBSYSTEM_VENDOR_ID = byte_offset(PciType0Header, "subsystem_vendor_id")
HEADER_DWORDS = byte_size(PciType0Header) // 4

MSIX_CONTROL = byte_offset(MsixCap, "message_control")
MSIX_TABLE = byte_offset(MsixCap, "table")
MSIX_PBA = byte_offset(MsixCap, "pba")
MSIX_ENTRY_SIZE = byte_size(MsixTableEntry)
MSIX_ENABLE_BIT = MsixMessageControl["enable"].offset
MSIX_FMASK_BIT = MsixMessageControl["function_mask"].offset
MSIX_TABLE_SIZE_BITS = MsixMessageControl["table_size"].width
MSIX_VECTOR_MASK = 1 << MsixVectorControl["mask"].offset

# Bus addresses the bridge gives the RTL's BARs.
MEM32_BASE = 0x8000_0000
MEM64_BASE = 0x10_0000_0000
IO_BASE = 0x1000

# BAR register bits (PCI Local Bus 3.0 §6.2.5.1).
BAR_IO = 0x1
BAR_TYPE_64 = 0x4
BAR_PREFETCH = 0x8


class Bar:
    """One implemented BAR of the RTL: ``index``, ``size``, kind and assigned ``address``."""

    def __init__(self, index, size, io, is64, prefetch):
        self.index, self.size, self.io, self.is64, self.prefetch = index, size, io, is64, prefetch
        self.address = None

    @property
    def type_bits(self):
        if self.io:
            return BAR_IO
        return (BAR_TYPE_64 if self.is64 else 0) | (BAR_PREFETCH if self.prefetch else 0)

    def __repr__(self):
        kind = "I/O" if self.io else ("64-bit" if self.is64 else "32-bit") + \
            (" prefetchable" if self.prefetch else "")
        where = f" at 0x{self.address:x}" if self.address is not None else ""
        return f"BAR{self.index}: {kind} {self.size} bytes{where}"


def _dwords(offset, length):
    """(dword offset, first byte in it, bytes in it) covering ``offset``..``offset+length``."""
    pieces = []
    end = offset + length
    while offset < end:
        dword = offset & ~3
        n = min(end, dword + 4) - offset
        pieces.append((dword, offset - dword, n))
        offset += n
    return pieces


class RtlFunction(VfioUserDevice):
    """The RTL behind a :class:`~virtio_pcie_tb.models.cosim_bridge.CosimHostBridge`.

    Parameters
    ----------
    bridge : the host bridge connected to the RTL.
    reset : an ``async`` callable that resets the RTL (for ``DEVICE_RESET``), or None.
    """

    def __init__(self, bridge, *, reset=None, logger=None):
        self.bridge = bridge
        self._reset_rtl = reset
        self.log = logger or logging.getLogger("cocotb.cosim.function")
        self.regions = {}
        self.irq_types = {}
        self.bars = {}
        self.caps = {}
        self.ext_config = False
        self.ids = {}
        self.interrupt_pin = 0
        self.msix = None            # (cap offset, vectors, table bar, table offset, pba bar, ...)
        bridge.on_msi = self._msi
        bridge.on_intx = self._intx
        self._reset_virtual_state()
        self.warnings = []

    def _reset_virtual_state(self):
        self.virtual_bars = [0] * BAR_COUNT
        self.virtual_rom = 0
        self.command = 0
        self.msix_control = 0           # Enable / Function Mask as QEMU wrote them
        self.intx_level = False
        self.msix_unused_signalled = set()
        self.bridge.bus_master = False

    # -- enumeration -----------------------------------------------------------------------
    async def enumerate(self):
        """Read the RTL's header and capabilities, size and place its BARs, program MSI-X."""
        b = self.bridge
        header = [await b.cfg_read(4 * i) for i in range(HEADER_DWORDS)]

        def field(offset, size):
            return (header[offset // 4] >> (8 * (offset % 4))) & ((1 << (8 * size)) - 1)

        vendor = field(VENDOR_ID, 2)
        if vendor in (0xFFFF, 0):
            raise RuntimeError(f"the RTL does not answer configuration reads (vendor ID "
                               f"0x{vendor:04x})")
        if field(HEADER_TYPE, 1) & 0x7F != 0:
            raise RuntimeError(f"the RTL has header type {field(HEADER_TYPE, 1):#x}; only type-0 "
                               f"endpoints can be co-simulated")
        self.ids = {"vendor": vendor, "device": field(VENDOR_ID + 2, 2),
                    "revision": field(REVISION, 1), "class": field(REVISION + 1, 3),
                    "subsystem_vendor": field(SUBSYSTEM_VENDOR_ID, 2),
                    "subsystem": field(SUBSYSTEM_VENDOR_ID + 2, 2)}
        self.interrupt_pin = field(INTERRUPT_PIN, 1)

        # Capability list (PCI 3.0 §6.7).
        self.caps = {}
        if field(STATUS, 2) & PciStatus.CAPABILITIES_LIST.value:
            pointer, seen = field(CAP_POINTER, 1) & 0xFC, 0
            while pointer and seen < 48:
                dword = await b.cfg_read(pointer)
                self.caps.setdefault(dword & 0xFF, pointer)
                pointer = (dword >> 8) & 0xFC
                seen += 1
        self.ext_config = CapId.PCIE.value in self.caps
        if CapId.MSI.value in self.caps:
            self._warn("the RTL has an MSI capability; the co-simulation offers QEMU only MSI-X "
                       "and INTx")

        # BARs (PCI 3.0 §6.2.5.1): write all ones, read back, restore.
        self.bars = {}
        i = 0
        while i < BAR_COUNT:
            offset = BAR0 + 4 * i
            original = header[offset // 4]
            await b.cfg_write(offset, 0xFFFF_FFFF)
            probe = await b.cfg_read(offset)
            await b.cfg_write(offset, original)
            if probe in (0, 0xFFFF_FFFF):
                i += 1
                continue
            if probe & BAR_IO:
                mask = probe & 0xFFFF_FFFC
                if mask & 0xFFFF_0000 == 0:
                    mask |= 0xFFFF_0000          # 16-bit I/O decoder
                size = (~mask & 0xFFFF_FFFF) + 1
                self.bars[i] = Bar(i, size, True, False, False)
                i += 1
                continue
            is64 = (probe >> 1) & 3 == 2
            mask = probe & 0xFFFF_FFF0
            if is64 and i + 1 < BAR_COUNT:
                await b.cfg_write(offset + 4, 0xFFFF_FFFF)
                high = await b.cfg_read(offset + 4)
                await b.cfg_write(offset + 4, header[offset // 4 + 1])
                mask |= high << 32
                size = (~mask & 0xFFFF_FFFF_FFFF_FFFF) + 1
            else:
                size = (~mask & 0xFFFF_FFFF) + 1
            self.bars[i] = Bar(i, size, False, is64, bool(probe & BAR_PREFETCH))
            i += 2 if is64 else 1

        # MSI-X (PCIe Base 4.0 §7.7.2).
        self.msix = None
        if CapId.MSIX.value in self.caps:
            cap = self.caps[CapId.MSIX.value]
            control = (await b.cfg_read(cap)) >> (8 * MSIX_CONTROL)
            table = await b.cfg_read(cap + MSIX_TABLE)
            pba = await b.cfg_read(cap + MSIX_PBA)
            vectors = (control & ((1 << MSIX_TABLE_SIZE_BITS) - 1)) + 1
            self.msix = {"cap": cap, "vectors": vectors, "table_bar": table & 7,
                         "table_offset": table & ~7, "pba_bar": pba & 7, "pba_offset": pba & ~7}
            if self.msix["table_bar"] not in self.bars:
                raise RuntimeError(f"the MSI-X table is in BAR{table & 7}, which the RTL does "
                                   f"not implement")

        self._describe()
        await self._program()
        return self.summary()

    def _describe(self):
        self.regions = {PciRegion.CONFIG: Region(
            CONFIG_SPACE_SIZE if self.ext_config else LEGACY_CONFIG_SPACE_SIZE,
            RegionFlags.READ | RegionFlags.WRITE)}
        for index, bar in self.bars.items():
            self.regions[index] = Region(bar.size, RegionFlags.READ | RegionFlags.WRITE)
        self.irq_types = {}
        if self.interrupt_pin:
            self.irq_types[PciIrq.INTX] = IrqType(1, IrqInfoFlags.EVENTFD |
                                                  IrqInfoFlags.MASKABLE |
                                                  IrqInfoFlags.AUTOMASKED)
        if self.msix:
            self.irq_types[PciIrq.MSIX] = IrqType(self.msix["vectors"],
                                                  IrqInfoFlags.EVENTFD | IrqInfoFlags.NORESIZE)

    async def _program(self):
        """Place the BARs and write the MSI-X table (all vectors masked); Command back to 0."""
        b = self.bridge
        next_mem32, next_mem64, next_io = MEM32_BASE, MEM64_BASE, IO_BASE
        for index, bar in sorted(self.bars.items()):
            align = max(bar.size, 16 if not bar.io else 4)
            if bar.io:
                bar.address = -(-next_io // align) * align
                next_io = bar.address + bar.size
            elif bar.is64:
                bar.address = -(-next_mem64 // align) * align
                next_mem64 = bar.address + bar.size
            else:
                bar.address = -(-next_mem32 // align) * align
                next_mem32 = bar.address + bar.size
            offset = BAR0 + 4 * index
            await b.cfg_write(offset, (bar.address & 0xFFFF_FFFF) | bar.type_bits)
            if bar.is64:
                await b.cfg_write(offset + 4, bar.address >> 32)
        if self.msix:
            await self._with_memory_space(self._write_msix_table)
        await b.cfg_write(COMMAND, 0, byte_enables=0x3)
        self.command = 0
        b.bus_master = False

    async def _with_memory_space(self, action):
        """Run ``action`` with the RTL's Memory Space enabled, then restore Command."""
        need = not self.command & PciCommand.MEMORY_SPACE.value
        if need:
            await self.bridge.cfg_write(COMMAND, self.command | PciCommand.MEMORY_SPACE.value,
                                        byte_enables=0x3)
        await action()
        if need:
            await self.bridge.cfg_write(COMMAND, self.command, byte_enables=0x3)

    def _table_address(self, vector):
        bar = self.bars[self.msix["table_bar"]]
        return bar.address + self.msix["table_offset"] + vector * MSIX_ENTRY_SIZE

    async def _write_msix_table(self):
        for vector in range(self.msix["vectors"]):
            entry = MsixTableEntry.const({"msg_addr": MSI_WINDOW[0], "msg_upper_addr": 0,
                                         "msg_data": vector, "vector_control": {"mask": 1}})
            data = entry.as_value().value.to_bytes(MSIX_ENTRY_SIZE, "little")
            self.bridge.mem_write(self._table_address(vector), data)

    async def _set_vector_masks(self):
        enabled = set(self.irqs.enabled(PciIrq.MSIX)) if self.irqs else set()
        control = byte_offset(MsixTableEntry, "vector_control")
        for vector in range(self.msix["vectors"]):
            value = 0 if vector in enabled else MSIX_VECTOR_MASK
            self.bridge.mem_write(self._table_address(vector) + control,
                                  value.to_bytes(4, "little"))

    def summary(self):
        return {"ids": self.ids, "bars": [repr(bar) for _, bar in sorted(self.bars.items())],
                "capabilities": {f"0x{cap:02x}": f"0x{off:02x}"
                                 for cap, off in sorted(self.caps.items())},
                "config_size": self.regions[PciRegion.CONFIG].size,
                "msix_vectors": self.msix["vectors"] if self.msix else 0,
                "interrupt_pin": self.interrupt_pin, "warnings": self.warnings}

    def describe(self):
        ids = self.ids
        parts = [f"{ids['vendor']:04x}:{ids['device']:04x} class {ids['class']:06x} "
                 f"rev {ids['revision']:02x}"]
        parts += [repr(bar) for _, bar in sorted(self.bars.items())] or ["no BARs"]
        parts.append(f"MSI-X {self.msix['vectors']} vectors" if self.msix else "no MSI-X")
        parts.append(f"INT{'ABCD'[self.interrupt_pin - 1]}" if 1 <= self.interrupt_pin <= 4
                     else "no INTx")
        return ", ".join(parts)

    def _warn(self, text):
        self.log.warning("%s", text)
        self.warnings.append(text)

    # -- configuration region -------------------------------------------------------------
    def _virtual_bar_value(self, index):
        bar = self.bars.get(index)
        if bar is None:
            # The upper half of a 64-bit BAR, or an unimplemented BAR.
            low = self.bars.get(index - 1)
            if low is not None and low.is64:
                return self.virtual_bars[index] & ((~(low.size - 1) >> 32) & 0xFFFF_FFFF)
            return 0
        mask = ~(bar.size - 1) & 0xFFFF_FFFF
        return (self.virtual_bars[index] & mask & ~0xF) | bar.type_bits if not bar.io else \
            (self.virtual_bars[index] & mask & ~0x3) | BAR_IO

    async def _config_dword(self, dword):
        if BAR0 <= dword < BAR0 + 4 * BAR_COUNT:
            return self._virtual_bar_value((dword - BAR0) // 4)
        if dword == EXPANSION_ROM:
            return 0
        value = await self.bridge.cfg_read(dword)
        if self.msix and dword == self.msix["cap"]:
            bits = (1 << MSIX_ENABLE_BIT) | (1 << MSIX_FMASK_BIT)
            shift = 8 * MSIX_CONTROL
            value = (value & ~(bits << shift)) | ((self.msix_control & bits) << shift)
        return value

    async def _config_read(self, offset, count):
        out = bytearray()
        for dword, first, n in _dwords(offset, count):
            value = await self._config_dword(dword)
            out += value.to_bytes(4, "little")[first:first + n]
        return bytes(out)

    async def _config_write(self, offset, data):
        pos = 0
        for dword, first, n in _dwords(offset, len(data)):
            chunk = data[pos:pos + n]
            pos += n
            value = int.from_bytes(b"\0" * first + chunk + b"\0" * (4 - first - n), "little")
            enables = ((1 << n) - 1) << first
            if BAR0 <= dword < BAR0 + 4 * BAR_COUNT:
                index = (dword - BAR0) // 4
                self.virtual_bars[index] = self._merge(self.virtual_bars[index], value, enables)
                continue
            if dword == EXPANSION_ROM:
                continue
            if self.msix and dword == self.msix["cap"]:
                # Cap ID and next pointer are read-only; Message Control goes through SET_IRQS.
                control_enables = (enables >> MSIX_CONTROL) & 0x3
                if control_enables:
                    self.msix_control = self._merge(self.msix_control,
                                                    value >> (8 * MSIX_CONTROL), control_enables)
                continue
            if dword == COMMAND and enables & 0x3:
                self.command = self._merge(self.command, value & 0xFFFF, enables & 0x3)
                self.bridge.bus_master = bool(self.command & PciCommand.BUS_MASTER.value)
            await self.bridge.cfg_write(dword, value, byte_enables=enables)

    @staticmethod
    def _merge(old, new, enables):
        mask = 0
        for i in range(4):
            if enables >> i & 1:
                mask |= 0xFF << (8 * i)
        return (old & ~mask) | (new & mask)

    # -- vfio-user device interface --------------------------------------------------------
    def _bar(self, index):
        bar = self.bars.get(index)
        if bar is None:
            raise VfioUserError(errno.EINVAL, f"BAR{index} is not implemented")
        return bar

    async def region_read(self, index, offset, count):
        if index == PciRegion.CONFIG:
            return await self._config_read(offset, count)
        bar = self._bar(index)
        if bar.io:
            out = bytearray()
            for dword, first, n in _dwords(bar.address + offset, count):
                out += await self.bridge.io_read(dword + first, n)
            return bytes(out)
        return await self.bridge.mem_read(bar.address + offset, count)

    async def region_write(self, index, offset, data):
        if index == PciRegion.CONFIG:
            await self._config_write(offset, data)
            return
        bar = self._bar(index)
        if bar.io:
            pos = 0
            for dword, first, n in _dwords(bar.address + offset, len(data)):
                await self.bridge.io_write(dword + first, data[pos:pos + n])
                pos += n
            return
        self.bridge.mem_write(bar.address + offset, data)

    async def reset(self):
        self.log.info("DEVICE_RESET: resetting the RTL")
        if self._reset_rtl is not None:
            await self._reset_rtl()
        self.bridge.reset_state()
        self._reset_virtual_state()
        await self.enumerate()

    async def irqs_changed(self, index):
        if index != PciIrq.MSIX or not self.msix:
            return
        active = self.irqs.active[PciIrq.MSIX]
        cap = self.msix["cap"]
        # Vector masks first, then Enable (PCIe Base 4.0 §7.7.2.2: with Enable set and Function
        # Mask clear, every unmasked vector may fire).
        await self._with_memory_space(self._set_vector_masks)
        control = (1 << MSIX_ENABLE_BIT) if active else 0
        await self.bridge.cfg_write(cap, control << (8 * MSIX_CONTROL),
                                    byte_enables=0x3 << MSIX_CONTROL)
        self.log.info("MSI-X %s, vectors with eventfds: %s", "enabled" if active else "disabled",
                      self.irqs.enabled(PciIrq.MSIX))

    def irq_unmasked(self, index, sub):
        return index == PciIrq.INTX and self.intx_level

    def client_disconnected(self):
        self.msix_unused_signalled.clear()

    # -- interrupts from the RTL ----------------------------------------------------------
    def _msi(self, address, data):
        if not self.msix:
            self.bridge._error(f"the RTL wrote an MSI (0x{data:x} at 0x{address:x}) but has no "
                               f"MSI-X capability")
            return
        vector = data
        if address != MSI_WINDOW[0] or vector >= self.msix["vectors"]:
            self.bridge._error(f"MSI write 0x{data:x} at 0x{address:x} matches no MSI-X table "
                               f"entry the bridge programmed (address 0x{MSI_WINDOW[0]:x}, data "
                               f"0..{self.msix['vectors'] - 1})")
            return
        if self.irqs is None or not self.irqs.trigger(PciIrq.MSIX, vector):
            if vector not in self.msix_unused_signalled:
                self.msix_unused_signalled.add(vector)
                self._warn(f"MSI-X vector {vector} fired but QEMU has given it no eventfd")

    def _intx(self, pin, level):
        if pin + 1 != self.interrupt_pin:
            self.bridge._error(f"the RTL sent INT{'ABCD'[pin]} but its Interrupt Pin is "
                               f"{self.interrupt_pin}")
            return
        self.intx_level = level
        if self.irqs is None or PciIrq.INTX not in self.irq_types:
            return
        if level:
            self.irqs.trigger(PciIrq.INTX, 0)
        else:
            self.irqs.clear_pending(PciIrq.INTX, 0)
