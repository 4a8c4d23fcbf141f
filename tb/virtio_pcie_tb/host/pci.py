# SPDX-License-Identifier: BSD-2-Clause
"""The PCI layer of the host model: what Linux's PCI core does for a driver.

On top of cocotbext-pcie's :class:`~cocotbext.pcie.core.RootComplex` (which enumerates the bus
and assigns BARs), :class:`PciFunction` is one ``struct pci_dev``: configuration-space accessors,
the capability list walk (``pci_find_capability`` / ``pci_find_next_capability``), resources
(``pci_resource_len`` / ``pci_resource_flags``), ``pci_enable_device``, ``pci_set_master``,
``pci_iomap_range`` (:class:`MmioWindow`), MSI-X vector allocation programmed through the BAR as
``pci_alloc_irq_vectors`` does it (Message Control enable + function mask, every entry masked,
message address/data written per vector, INTx disabled, function mask cleared; entries unmasked by
``request_irq``), and INTx.

INTx cannot travel through cocotbext-pcie's TLP model, so the interrupt wire is an
:class:`IntxLine`: :class:`BridgeIntxLine` follows the Assert_INTx/Deassert_INTx messages the
bridge (:class:`~virtio_pcie_tb.models.pcie_bridge.DutPcieDevice`) consumes; Python device models
drive a :class:`SoftIntxLine`. The line is level-triggered: while it is asserted the shared
handlers run again and again, and a line nobody claims is reported like Linux's "nobody cared".

Nothing here touches DUT signals: every access is a TLP through the root complex.
"""

import enum
import logging

import cocotb
from cocotb.triggers import Event, Timer
from cocotb.utils import get_sim_time

from virtio_pcie.spec.pcie import (
    CapId, MsixCap, MsixMessageControl, MsixTableEntry, MsixVectorControl, PciCommand,
    PciType0Header, byte_offset, byte_size,
)

from .errors import LinuxError

__all__ = ["IntxLine", "SoftIntxLine", "BridgeIntxLine", "Resource", "MmioWindow", "Irq",
           "PciFunction", "find_pci_functions", "PCI_IRQ_MSIX", "PCI_IRQ_INTX"]

PCI_IRQ_INTX = 1 << 0          # PCI_IRQ_LEGACY / PCI_IRQ_INTX
PCI_IRQ_MSIX = 1 << 2

#: PCI_STD_NUM_BARS
PCI_STD_NUM_BARS = PciType0Header["bar"].shape.length
#: Linux's pci_find_capability() walk limit (PCI_FIND_CAP_TTL).
PCI_FIND_CAP_TTL = 48
#: note_interrupt(): an IRQ line is declared stuck after this many unhandled interrupts
#: in a row (Linux counts 99,900 of 100,000; the model is less patient).
UNHANDLED_IRQ_LIMIT = 1000

_CMD     = byte_offset(PciType0Header, "command")
_PIN     = byte_offset(PciType0Header, "interrupt_pin")
_CAP_PTR = byte_offset(PciType0Header, "capabilities_pointer")
_MSIX_CTRL  = byte_offset(MsixCap, "message_control")
_MSIX_TABLE = byte_offset(MsixCap, "table")
_MSIX_PBA   = byte_offset(MsixCap, "pba")
_MSIX_ENTRY = byte_size(MsixTableEntry)
_MSIX_ENABLE   = 1 << MsixMessageControl["enable"].offset
_MSIX_MASKALL  = 1 << MsixMessageControl["function_mask"].offset
_MSIX_MASKBIT  = 1 << MsixVectorControl["mask"].offset


# ---------------------------------------------------------------------------------------------
# INTx
# ---------------------------------------------------------------------------------------------

class IntxLine:
    """One INTx wire as the host's interrupt controller sees it (level, active high)."""

    def __init__(self):
        self._changed = Event()

    @property
    def asserted(self):
        raise NotImplementedError

    async def wait_change(self):
        """Return after the level changes (or may have changed)."""
        self._changed.clear()
        await self._changed.wait()

    async def wait(self, asserted=True):
        while self.asserted != asserted:
            await self.wait_change()

    def _notify(self):
        self._changed.set()


class SoftIntxLine(IntxLine):
    """An INTx wire driven by Python (a device model calls :meth:`set`)."""

    def __init__(self):
        super().__init__()
        self._level = False
        self.assertions = 0

    @property
    def asserted(self):
        return self._level

    def set(self, level):
        level = bool(level)
        if level != self._level:
            self._level = level
            self.assertions += level
            self._notify()


class BridgeIntxLine(IntxLine):
    """The INTx pin ``pin`` (0 = INTA) of a :class:`DutPcieDevice`, from the Assert_INTx /
    Deassert_INTx messages the RTL sends."""

    def __init__(self, bridge, pin=0):
        super().__init__()
        if pin not in range(4):
            raise ValueError(f"INTx pin must be 0..3 (INTA..INTD), not {pin!r}")
        self.bridge = bridge
        self.pin = pin
        cocotb.start_soon(self._follow())

    @property
    def asserted(self):
        return self.bridge.intx_asserted[self.pin]

    async def _follow(self):
        while True:
            self.bridge.intx_event.clear()
            await self.bridge.intx_event.wait()
            self._notify()


# ---------------------------------------------------------------------------------------------
# Resources and MMIO
# ---------------------------------------------------------------------------------------------

class Resource(enum.Flag):
    """The ``IORESOURCE_*`` flags of a BAR that Linux's drivers test."""
    NONE     = 0
    IO       = enum.auto()
    MEM      = enum.auto()
    MEM_64   = enum.auto()
    PREFETCH = enum.auto()


class MmioWindow:
    """``pci_iomap_range(dev, bar, offset, length)``: sized accesses inside one BAR.

    Every access is one TLP (a memory or I/O request with byte enables); 8-, 16- and 32-bit
    accesses must be naturally aligned, as ``ioread16``/``ioread32`` are on real hardware.
    """

    def __init__(self, pdev, bar, offset, length):
        self.pdev = pdev
        self.bar = bar
        self.offset = offset
        self.length = length
        self._window = pdev.dev.bar_window[bar]

    def __repr__(self):
        return f"MmioWindow(BAR{self.bar} +{self.offset:#x}, {self.length:#x} bytes)"

    def _check(self, offset, size):
        if offset < 0 or offset + size > self.length:
            raise IndexError(f"{size}-byte access at {offset:#x} outside {self!r}")
        if (self.offset + offset) % size:
            raise ValueError(f"misaligned {size}-byte MMIO access at {offset:#x} in {self!r}")

    async def read(self, offset, size):
        self._check(offset, size)
        raw = await self._window.read(self.offset + offset, size)
        value = int.from_bytes(raw, "little")
        self.pdev._trace("mmio_read", self.bar, self.offset + offset, size, value)
        return value

    async def write(self, offset, size, value):
        self._check(offset, size)
        value &= (1 << (8 * size)) - 1
        self.pdev._trace("mmio_write", self.bar, self.offset + offset, size, value)
        await self._window.write(self.offset + offset, value.to_bytes(size, "little"))

    async def read8(self, offset):
        return await self.read(offset, 1)

    async def read16(self, offset):
        return await self.read(offset, 2)

    async def read32(self, offset):
        return await self.read(offset, 4)

    async def write8(self, offset, value):
        await self.write(offset, 1, value)

    async def write16(self, offset, value):
        await self.write(offset, 2, value)

    async def write32(self, offset, value):
        await self.write(offset, 4, value)


# ---------------------------------------------------------------------------------------------
# Interrupt lines
# ---------------------------------------------------------------------------------------------

class Irq:
    """One Linux IRQ: an MSI-X vector or the function's INTx line, with its handlers.

    Handlers are ``async def handler() -> bool`` (True = ``IRQ_HANDLED``). A handler never runs
    twice at once; an edge (MSI-X) arriving while the handlers run makes them run once more
    (``IRQS_PENDING`` in ``handle_edge_irq``).
    """

    def __init__(self, name, log):
        self.name = name
        self.log = log
        self.handlers = []       # [(handler, label)]
        self.count = 0           # interrupts delivered to handlers
        self.unhandled = 0       # interrupts no handler claimed
        self.stray = 0           # interrupts with no handler registered at all
        self.disabled = False    # "nobody cared": Linux disables the line
        self.times = []          # sim time (ns) of each interrupt delivered
        self._running = False
        self._pending = False
        self._unhandled_run = 0

    def __repr__(self):
        return f"Irq({self.name!r}, count={self.count})"

    async def fire(self):
        if self.disabled:
            return
        if not self.handlers:
            self.stray += 1
            self.log.warning("irq %s: interrupt with no handler", self.name)
            return
        if self._running:
            self._pending = True
            return
        self._running = True
        try:
            while True:
                self._pending = False
                await self._run_handlers()
                if not self._pending or self.disabled:
                    break
        finally:
            self._running = False

    async def _run_handlers(self):
        self.count += 1
        self.times.append(get_sim_time("ns"))
        handled = False
        for handler, _ in list(self.handlers):
            handled |= bool(await handler())
        if handled:
            self._unhandled_run = 0
        else:
            self.unhandled += 1
            self._unhandled_run += 1
            if self._unhandled_run >= UNHANDLED_IRQ_LIMIT:
                self.log.error("irq %s: nobody cared; disabling it", self.name)
                self.disabled = True
        return handled


class _IntxIrq(Irq):
    """The level-triggered INTx line: handlers run while the line stays asserted."""

    def __init__(self, name, log, line):
        super().__init__(name, log)
        self.line = line
        self._task = None

    def start(self):
        if self._task is None:
            self._task = cocotb.start_soon(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        while not self.disabled:
            await self.line.wait(True)
            before = get_sim_time("ns")
            await self.fire()
            if get_sim_time("ns") == before:
                # handlers that take no time must not spin the simulator
                await Timer(1, "ns")


# ---------------------------------------------------------------------------------------------
# The function
# ---------------------------------------------------------------------------------------------

def _walk_devices(bus):
    for dev in bus.devices:
        yield dev
        if dev.subordinate is not None:
            yield from _walk_devices(dev.subordinate)


def find_pci_functions(rc, *, vendor=None, device=None):
    """cocotbext-pcie ``PciDevice`` objects of an enumerated ``rc`` matching the IDs (like the PCI
    core matching a driver's ``id_table``), in bus order; bridges are skipped."""
    found = []
    for dev in _walk_devices(rc.host_bridge.bus):
        if dev.header_type != 0:
            continue
        if vendor is not None and dev.vendor_id != vendor:
            continue
        if device is not None and dev.device_id != device:
            continue
        found.append(dev)
    return found


class PciFunction:
    """One enumerated PCI function, as Linux's PCI core presents it to a driver.

    Parameters
    ----------
    rc : RootComplex
    dev : cocotbext.pcie.core.pci.PciDevice
        The function as found by ``rc.enumerate()`` (see :func:`find_pci_functions`).
    intx : IntxLine, optional
        Where the function's INTx pin reaches the host. Without it the function has no
        ``irq`` (``pci_dev->irq == 0``) and drivers cannot fall back to INTx.
    """

    def __init__(self, rc, dev, *, intx=None):
        self.rc = rc
        self.dev = dev
        self.log = logging.getLogger(f"cocotb.virtio.pci.{dev.pcie_id}")
        self.vendor = dev.vendor_id
        self.device = dev.device_id
        self.revision = dev.revision_id
        self.class_code = dev.class_code
        self.subsystem_vendor = dev.subsystem_vendor_id
        self.subsystem_device = dev.subsystem_id
        self.intx_line = intx
        self.interrupt_pin = None    # read by setup()
        self.irq = None              # the INTx Irq, if the function has one
        self.enable_cnt = 0
        self.is_busmaster = False
        self.msix_enabled = False
        self.msix_vectors = []       # Irq per allocated vector
        self._rc_vectors = None      # cocotbext MsiVector per table entry (allocated once)
        self._msix_table = None      # MmioWindow over the table
        self._regions = {}           # BAR -> owner name (pci_request_region)
        self.trace = None            # set to a list to record every access
        self.dmesg = []              # (level, message) lines the drivers logged
        self.stray_msix = 0          # MSI-X messages for vectors not allocated

    @classmethod
    async def create(cls, rc, dev, *, intx=None):
        self = cls(rc, dev, intx=intx)
        await self.setup()
        return self

    async def setup(self):
        """What the PCI core knows before a driver probes: the interrupt pin (and so
        ``pci_dev->irq``)."""
        self.interrupt_pin = await self.config_read8(_PIN)
        if self.interrupt_pin:
            if self.intx_line is None:
                self.log.warning("%s has INTx pin %d but no IntxLine was connected; "
                                 "it has no irq", self.name, self.interrupt_pin)
            else:
                self.irq = _IntxIrq(f"{self.name}-intx", self.log, self.intx_line)

    @property
    def name(self):
        p = self.dev.pcie_id
        return f"0000:{p.bus:02x}:{p.device:02x}.{p.function}"

    def _trace(self, *entry):
        if self.trace is not None:
            self.trace.append(entry)

    # -- configuration space ---------------------------------------------------------------------
    async def config_read(self, addr, size):
        raw = await self.rc.config_read(self.dev.pcie_id, addr, size)
        value = int.from_bytes(raw, "little")
        self._trace("cfg_read", addr, size, value)
        return value

    async def config_write(self, addr, size, value):
        value &= (1 << (8 * size)) - 1
        self._trace("cfg_write", addr, size, value)
        await self.rc.config_write(self.dev.pcie_id, addr, value.to_bytes(size, "little"))

    async def config_read8(self, addr):
        return await self.config_read(addr, 1)

    async def config_read16(self, addr):
        return await self.config_read(addr, 2)

    async def config_read32(self, addr):
        return await self.config_read(addr, 4)

    async def config_write8(self, addr, value):
        await self.config_write(addr, 1, value)

    async def config_write16(self, addr, value):
        await self.config_write(addr, 2, value)

    async def config_write32(self, addr, value):
        await self.config_write(addr, 4, value)

    async def find_capability(self, cap_id):
        """``pci_find_capability()``: offset of the first capability ``cap_id``, or 0."""
        pos = await self.config_read8(_CAP_PTR)
        return await self._find_next(pos, cap_id)

    async def find_next_capability(self, pos, cap_id):
        """``pci_find_next_capability()``: the next ``cap_id`` after the one at ``pos``."""
        return await self._find_next(await self.config_read8(pos + 1), cap_id)

    async def _find_next(self, pos, cap_id):
        cap_id = cap_id.value if isinstance(cap_id, CapId) else cap_id
        ttl = PCI_FIND_CAP_TTL
        while ttl:
            ttl -= 1
            if pos < 0x40:
                break
            pos &= ~3
            ent = await self.config_read16(pos)
            ident = ent & 0xFF
            if ident == 0xFF:
                break
            if ident == cap_id:
                return pos
            pos = ent >> 8
        return 0

    # -- resources --------------------------------------------------------------------------------
    def resource_len(self, bar):
        """``pci_resource_len()``: 0 for an unimplemented BAR or the upper half of a 64-bit one."""
        if not 0 <= bar < PCI_STD_NUM_BARS:
            return 0
        return self.dev.bar_size[bar] or 0

    def resource_start(self, bar):
        return self.dev.bar_addr[bar] if self.resource_len(bar) else 0

    def resource_flags(self, bar):
        if not self.resource_len(bar):
            return Resource.NONE
        raw = self.dev.bar_raw[bar]
        if raw & 1:
            return Resource.IO
        flags = Resource.MEM
        if raw & 0x4:
            flags |= Resource.MEM_64
        if raw & 0x8:
            flags |= Resource.PREFETCH
        return flags

    def request_selected_regions(self, bars_mask, owner):
        """``pci_request_selected_regions()``: claim BARs; -EBUSY if someone holds one."""
        for bar in range(PCI_STD_NUM_BARS):
            if bars_mask & (1 << bar) and self._regions.get(bar) not in (None, owner):
                raise LinuxError("EBUSY", f"BAR {bar}: can't reserve, held by "
                                          f"{self._regions[bar]}")
        for bar in range(PCI_STD_NUM_BARS):
            if bars_mask & (1 << bar):
                self._regions[bar] = owner

    def release_selected_regions(self, bars_mask):
        for bar in range(PCI_STD_NUM_BARS):
            if bars_mask & (1 << bar):
                self._regions.pop(bar, None)

    def iomap(self, bar, offset=0, length=None):
        """``pci_iomap_range()``: a :class:`MmioWindow`, or None if the BAR cannot hold it."""
        size = self.resource_len(bar)
        if not size or self.dev.bar_window[bar] is None:
            return None
        length = size - offset if length is None else length
        if offset < 0 or length <= 0 or offset + length > size:
            return None
        return MmioWindow(self, bar, offset, length)

    # -- command register ------------------------------------------------------------------------
    async def _update_command(self, set_bits=0, clear_bits=0):
        old = await self.config_read16(_CMD)
        new = (old | set_bits) & ~clear_bits
        if new != old:
            await self.config_write16(_CMD, new)

    async def enable_device(self):
        """``pci_enable_device()``: turn on decoding of the resource types the BARs have."""
        self.enable_cnt += 1
        if self.enable_cnt > 1:
            return
        bits = 0
        for bar in range(PCI_STD_NUM_BARS):
            flags = self.resource_flags(bar)
            if flags & Resource.IO:
                bits |= PciCommand.IO_SPACE.value
            if flags & Resource.MEM:
                bits |= PciCommand.MEMORY_SPACE.value
        await self._update_command(set_bits=bits)

    async def disable_device(self):
        """``pci_disable_device()``: last user gone: stop bus mastering."""
        self.enable_cnt -= 1
        if self.enable_cnt > 0:
            return
        await self._update_command(clear_bits=PciCommand.BUS_MASTER.value)
        self.is_busmaster = False

    async def set_master(self):
        await self._update_command(set_bits=PciCommand.BUS_MASTER.value)
        self.is_busmaster = True

    async def clear_master(self):
        await self._update_command(clear_bits=PciCommand.BUS_MASTER.value)
        self.is_busmaster = False

    async def intx(self, enable):
        """``pci_intx()``: clear or set Command.Interrupt Disable."""
        if enable:
            await self._update_command(clear_bits=PciCommand.INTX_DISABLE.value)
        else:
            await self._update_command(set_bits=PciCommand.INTX_DISABLE.value)

    # -- MSI-X ------------------------------------------------------------------------------------
    async def msix_vec_count(self):
        """``pci_msix_vec_count()``: Table Size + 1, or -EINVAL without an MSI-X capability."""
        pos = await self.find_capability(CapId.MSIX)
        if not pos:
            raise LinuxError("EINVAL", f"{self.name}: no MSI-X capability")
        ctrl = await self.config_read16(pos + _MSIX_CTRL)
        return (ctrl & ((1 << MsixMessageControl["table_size"].width) - 1)) + 1

    async def alloc_irq_vectors(self, min_vecs, max_vecs, flags):
        """``pci_alloc_irq_vectors()``: MSI-X if allowed and possible, else the INTx line.
        Returns the number of vectors; raises :class:`LinuxError` like the kernel returns."""
        if max_vecs < min_vecs:
            raise LinuxError("EINVAL", "max_vecs < min_vecs")
        err = LinuxError("ENOSPC", "no interrupt vectors")
        if flags & PCI_IRQ_MSIX:
            try:
                return await self._enable_msix_range(min_vecs, max_vecs)
            except LinuxError as e:
                err = e
        if flags & PCI_IRQ_INTX and min_vecs == 1 and self.irq is not None:
            return 1
        raise err

    async def _enable_msix_range(self, min_vecs, max_vecs):
        if self.msix_enabled:
            raise LinuxError("EINVAL", "MSI-X already enabled")
        hwsize = await self.msix_vec_count()
        nvec = max_vecs
        if hwsize < nvec:
            if hwsize < min_vecs:
                raise LinuxError("ENOSPC", f"{self.name}: {min_vecs} MSI-X vectors needed, "
                                           f"table has {hwsize}")
            nvec = hwsize
        await self._msix_capability_init(nvec, hwsize)
        return nvec

    async def _msix_capability_init(self, nvec, tsize):
        pos = await self.find_capability(CapId.MSIX)
        ctrl_addr = pos + _MSIX_CTRL
        # Disable MSI-X while the table is set up, but enable it with all vectors masked.
        ctrl = await self.config_read16(ctrl_addr)
        await self.config_write16(ctrl_addr, ctrl | _MSIX_ENABLE | _MSIX_MASKALL)
        self.msix_enabled = True
        table = await self.config_read32(pos + _MSIX_TABLE)
        bir = table & ((1 << 3) - 1)
        offset = table & ~((1 << 3) - 1)
        if not self.resource_flags(bir):
            await self.config_write16(ctrl_addr, ctrl & ~(_MSIX_ENABLE | _MSIX_MASKALL))
            self.msix_enabled = False
            raise LinuxError("ENOMEM", f"{self.name}: MSI-X table BIR {bir} has no resource")
        self._msix_table = self.iomap(bir, offset, tsize * _MSIX_ENTRY)
        if self._msix_table is None:
            await self.config_write16(ctrl_addr, ctrl & ~(_MSIX_ENABLE | _MSIX_MASKALL))
            self.msix_enabled = False
            raise LinuxError("ENOMEM", f"{self.name}: MSI-X table at {offset:#x} does not fit "
                                       f"BAR{bir}")
        if self._rc_vectors is None:
            self._rc_vectors = self.rc.msi_alloc_vectors(tsize)
            for i, vec in enumerate(self._rc_vectors):
                vec.cb.append(self._msix_callback(i))
        ctrl_off = byte_offset(MsixTableEntry, "vector_control")
        # Make sure that all table entries are masked (msix_mask_all).
        for i in range(tsize):
            await self._msix_table.write32(i * _MSIX_ENTRY + ctrl_off, _MSIX_MASKBIT)
        self.msix_vectors = []
        for i in range(nvec):
            vec = self._rc_vectors[i]
            base = i * _MSIX_ENTRY
            await self._msix_table.write32(base + byte_offset(MsixTableEntry, "msg_addr"),
                                           vec.addr & 0xFFFFFFFF)
            await self._msix_table.write32(base + byte_offset(MsixTableEntry, "msg_upper_addr"),
                                           vec.addr >> 32)
            await self._msix_table.write32(base + byte_offset(MsixTableEntry, "msg_data"),
                                           vec.data)
            # __pci_write_msi_msg flushes with a read of the data word
            await self._msix_table.read32(base + byte_offset(MsixTableEntry, "msg_data"))
            self.msix_vectors.append(Irq(f"{self.name}-msix{i}", self.log))
        await self.intx(False)
        ctrl = await self.config_read16(ctrl_addr)
        await self.config_write16(ctrl_addr, ctrl & ~_MSIX_MASKALL)

    @property
    def msix_message_addresses(self):
        """The Message Addresses the root complex gave this function's MSI-X vectors."""
        return [vec.addr for vec in self._rc_vectors or ()]

    def _msix_callback(self, index):
        async def callback():
            if not self.msix_enabled or index >= len(self.msix_vectors):
                self.log.error("%s: MSI-X message for vector %d while it is not allocated",
                               self.name, index)
                self.stray_msix += 1
                return
            await self.msix_vectors[index].fire()
        return callback

    async def _msix_mask(self, index, masked):
        ctrl_off = index * _MSIX_ENTRY + byte_offset(MsixTableEntry, "vector_control")
        await self._msix_table.write32(ctrl_off, _MSIX_MASKBIT if masked else 0)

    async def free_irq_vectors(self):
        """``pci_free_irq_vectors()``: mask every vector, disable MSI-X, re-enable INTx."""
        if not self.msix_enabled:
            return
        for i in range(len(self.msix_vectors)):
            await self._msix_mask(i, True)
        pos = await self.find_capability(CapId.MSIX)
        ctrl = await self.config_read16(pos + _MSIX_CTRL)
        await self.config_write16(pos + _MSIX_CTRL, ctrl & ~(_MSIX_ENABLE | _MSIX_MASKALL))
        await self.intx(True)
        self.msix_enabled = False
        self.msix_vectors = []

    def irq_vector(self, nr):
        """``pci_irq_vector()``: the :class:`Irq` of MSI-X vector ``nr`` (or the INTx line)."""
        if self.msix_enabled:
            if not 0 <= nr < len(self.msix_vectors):
                raise LinuxError("EINVAL", f"MSI-X vector {nr} not allocated")
            return self.msix_vectors[nr]
        if nr == 0 and self.irq is not None:
            return self.irq
        raise LinuxError("EINVAL", f"no irq vector {nr}")

    async def request_irq(self, irq, handler, label):
        """``request_irq()``: add a handler; MSI-X vectors are unmasked, INTx starts being
        watched."""
        irq.handlers.append((handler, label))
        if irq is self.irq:
            irq.start()
        elif len(irq.handlers) == 1:
            await self._msix_mask(self.msix_vectors.index(irq), False)

    async def free_irq(self, irq, label):
        """``free_irq()``: remove the handler registered as ``label``."""
        irq.handlers = [(h, lbl) for h, lbl in irq.handlers if lbl != label]
        if irq.handlers:
            return
        if irq is self.irq:
            irq.stop()
        elif self.msix_enabled and irq in self.msix_vectors:
            await self._msix_mask(self.msix_vectors.index(irq), True)
