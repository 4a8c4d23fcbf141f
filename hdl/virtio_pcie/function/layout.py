# SPDX-License-Identifier: BSD-2-Clause
"""Where everything of the PCI function lives, computed from its parameters.

:class:`FunctionLayout` is pure Python (no gateware). From a handful of parameters (virtio device
type, transitional or not, queue and MSI-X vector counts, notify multiplier, device configuration
length, and whether the function owns its whole configuration space or only a part a hard IP
forwards) it decides:

* the identity: vendor, device, revision, class and subsystem IDs (virtio 1.2 §4.1.2 "PCI Device
  Discovery", and its legacy note for transitional devices);
* the BARs, QEMU-like: BAR0 the legacy I/O interface (transitional only), BAR1 a 32-bit memory
  BAR with the MSI-X table and PBA, BAR4/5 a 64-bit non-prefetchable memory BAR with the virtio
  structures one 4 KiB page each (common, ISR, device, then notify) — non-prefetchable because
  ISR reads have side effects (virtio checklist §1.B rule 19);
* the *windows*: the parts of BAR space decoded to one register block each (a structure's
  length rounded up to a power of two; the rest of its page reads 0), with the register bus
  address width each block sees;
* the capability chain and its offsets (PCI Express, Power Management, MSI-X, then the virtio
  vendor-specific capabilities COMMON, NOTIFY, ISR, DEVICE, PCI_CFG);
* every field of configuration space, as a list of :class:`ConfigField` (name, bit position,
  access, value), from which :class:`~virtio_pcie.function.config_space.ConfigSpace` generates the
  registers, the tests derive their expectations and the documentation is rendered.

Every offset and value comes from the layouts of :mod:`virtio_pcie.spec`; nothing that depends
on a parameter is typed in.

In ``"ext"`` mode a vendor hard IP owns the configuration header, its own capabilities and the
BAR registers, and forwards configuration accesses at and above ``ext_cap_pointer`` to the
function (Xilinx 7-series ``EXT_CFG_CAP_PTR``; UltraScale ``cfg_ext``). Only the virtio vendor
capabilities are then ours, chained from that pointer within the forwarded window (88 bytes for
the usual 0xA8); :meth:`FunctionLayout.hard_ip_plan` says how the hard IP must be configured.
"""

import enum as py_enum
from dataclasses import dataclass

from amaranth.hdl import Shape
from amaranth.lib import data

from ..spec import pcie, virtio
from ..spec.pcie import (BarType, CapId, InterruptPin, PcieCap, PcieDevicePortType, PcieLinkSpeed,
                         PciCommand, PciStatus, PciType0Header, PmCap, PmPowerState, MsixCap,
                         MsixTableEntry, byte_size)
from ..spec.virtio import (VirtioDeviceId, VirtioPciCap, VirtioPciCapType, VirtioPciCfgCap,
                           VirtioPciNotifyCap)

__all__ = ["Access", "Bar", "Window", "Capability", "ConfigField", "FunctionLayout",
           "CONFIG_MODES", "NOTIFY_MULTIPLIERS", "VIRTIO_PAGE"]

#: Configuration modes: the function owns all of configuration space, or a hard IP forwards part.
CONFIG_MODES = ("full", "ext")
#: notify_off_multiplier values the function accepts (virtio 1.2 §4.1.4.4: 0 or an even power of
#: two; the transport decodes the queue from the address unless it is 0).
NOTIFY_MULTIPLIERS = (0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: Each virtio structure gets its own page of the virtio BAR, as QEMU lays them out.
VIRTIO_PAGE = 4096

_MAX_MSIX_VECTORS = 1 << Shape.cast(pcie.MsixMessageControl["table_size"].shape).width
_DEVICE_CFG_LENGTH = {
    VirtioDeviceId.NET:     byte_size(virtio.VirtioNetConfig),
    VirtioDeviceId.BLOCK:   byte_size(virtio.VirtioBlkConfig),
    VirtioDeviceId.ENTROPY: 0,
}


def _pow2_at_least(n, minimum=1):
    size = minimum
    while size < n:
        size *= 2
    return size


def _log2(n):
    assert n > 0 and n & (n - 1) == 0, n
    return n.bit_length() - 1


def _align(n, a):
    return (n + a - 1) // a * a


class Access(py_enum.Enum):
    """How a configuration space field behaves."""
    RO   = "RO"      # read-only constant
    RW   = "RW"      # read/write storage, reset to ``value``
    RW1C = "RW1C"    # status set by hardware, cleared by writing 1
    HW   = "RO/HW"   # read-only, reflects hardware state
    WINDOW = "RW/window"   # pci_cfg_data: reading/writing it accesses a BAR (virtio 1.2 §4.1.4.9)


@dataclass(frozen=True)
class Bar:
    """A Base Address Register: ``index`` (the lower one of a 64-bit pair), kind and size."""
    index:        int
    kind:         BarType
    size:         int
    prefetchable: bool = False
    purpose:      str = ""

    @property
    def is_64bit(self):
        return self.kind == BarType.MEM64

    @property
    def is_io(self):
        return self.kind == BarType.IO

    @property
    def size_bits(self):
        return _log2(self.size)


@dataclass(frozen=True)
class Window:
    """A part of a BAR decoded to one register block.

    ``size`` bytes of BAR space starting at ``offset`` (a power of two, naturally aligned) reach
    the block, whose register bus has ``addr_width`` bits; ``length`` is the length of the
    structure in it as the virtio capability advertises it.
    """
    name:    str
    bar:     int
    offset:  int
    size:    int
    length:  int
    cfg_type: VirtioPciCapType | None = None

    @property
    def addr_width(self):
        return _log2(self.size)


@dataclass(frozen=True)
class Capability:
    """A capability in configuration space: its ``name``, ID, byte ``offset``, layout and the
    offset of the next one (0 ends the chain)."""
    name:     str
    cap_id:   CapId
    offset:   int
    layout:   data.Layout
    next:     int
    cfg_type: VirtioPciCapType | None = None

    @property
    def size(self):
        return byte_size(self.layout)


@dataclass(frozen=True)
class ConfigField:
    """One field of configuration space.

    ``offset`` is the bit position in configuration space (byte ``offset // 8``); a field never
    crosses a dword. ``value`` is the constant (RO), the reset value (RW) or 0. Writes of values
    outside ``legal`` (when given) leave an RW field unchanged.
    """
    name:   str
    offset: int
    width:  int
    access: Access
    value:  int = 0
    legal:  tuple | None = None
    doc:    str = ""

    @property
    def byte_offset(self):
        return self.offset // 8

    @property
    def dword(self):
        return self.offset // 32

    @property
    def shift(self):
        """Bit position within its dword."""
        return self.offset % 32


def _resolve(layout, path):
    """(bit offset, width) of a dotted ``path`` in ``layout``; parts may name array elements
    (integers) or members of an :class:`amaranth.lib.enum.Flag` (one bit each)."""
    offset = 0
    shape = layout
    for part in path.split("."):
        if isinstance(shape, type) and issubclass(shape, py_enum.Flag):
            member = shape[part.upper()]
            return offset + _log2(member.value), 1
        shape = data.Layout.cast(shape) if isinstance(shape, data.Layout) else shape
        if isinstance(shape, data.ArrayLayout):
            index = int(part)
            offset += index * Shape.cast(shape.elem_shape).width if not isinstance(
                shape.elem_shape, data.Layout) else index * shape.elem_shape.size
            shape = shape.elem_shape
            continue
        field = shape[part]
        offset += field.offset
        shape = field.shape
    if isinstance(shape, data.Layout):
        width = shape.size
    else:
        width = Shape.cast(shape).width
    return offset, width


class FunctionLayout:
    """The identity, BARs, windows, capabilities and configuration fields of the function.

    Parameters
    ----------
    device_type : VirtioDeviceId or int
        The virtio device type (1 net, 2 block, 3 console, 4 entropy).
    transitional : bool
        A transitional device: transitional device ID, revision 0, subsystem device ID = device
        type, and the legacy I/O interface in BAR0. Otherwise a modern-only device: device ID
        0x1040 + type, revision 1.
    queue_count : int
        Virtqueues; sizes the notify structure.
    msix_vectors : int
        MSI-X Table Size (1 to 2048).
    notify_off_multiplier : int
        0 (one doorbell; the written value selects the queue) or a power of two up to 4096 (queue
        ``q``'s doorbell at ``q * multiplier``).
    notification_data : bool
        VIRTIO_F_NOTIFICATION_DATA is offered: each doorbell takes a 32-bit write, and the notify
        structure's ``cap.length`` covers the last one's 4 bytes (checklist rule 34).
    device_cfg_length : int or None
        Bytes of device-specific configuration; ``None`` takes the spec structure's size for net
        and block (0 for entropy). 0 means no DEVICE structure.
    config_mode : "full" or "ext"
        Whether the function owns all of configuration space, or a hard IP forwards accesses at
        and above ``ext_cap_pointer``.
    ext_cap_pointer : int
        In ``"ext"`` mode, the first forwarded byte offset (dword aligned, 0x40..0xFC).
    max_payload_size : int
        Max_Payload_Size Supported, in bytes (128 to 4096).
    extended_tag : bool
        Extended (8-bit) tags supported.
    link_speed : PcieLinkSpeed or int
        Maximum (and current) link speed advertised.
    link_width : int
        Maximum (and negotiated) link width advertised.
    subsystem_vendor_id, subsystem_id : int or None
        Subsystem IDs; ``None`` gives 0x1AF4 and, for a modern device,
        :data:`~virtio_pcie.spec.virtio.VIRTIO_PCI_SUBSYSTEM_ID_MODERN` (a transitional device's
        subsystem ID is the device type, as the spec requires).
    """

    def __init__(self, *, device_type, transitional=False, queue_count, msix_vectors,
                 notify_off_multiplier=4, notification_data=False, device_cfg_length=None,
                 config_mode="full",
                 ext_cap_pointer=0xA8, max_payload_size=256, extended_tag=True,
                 link_speed=PcieLinkSpeed.GT_2_5, link_width=1, subsystem_vendor_id=None,
                 subsystem_id=None):
        try:
            device_type = VirtioDeviceId(device_type)
        except ValueError:
            raise ValueError(f"device_type must be one of {[int(d) for d in VirtioDeviceId]}, "
                             f"not {device_type!r}") from None
        if device_type not in virtio.VIRTIO_PCI_CLASS_CODE:
            raise ValueError(f"device type {device_type!r} has no PCI class code in spec/virtio.py")
        if not isinstance(transitional, bool):
            raise ValueError(f"transitional must be True or False, not {transitional!r}")
        if transitional and device_type not in virtio.VIRTIO_PCI_TRANSITIONAL_DEVICE_ID:
            raise ValueError(f"device type {device_type!r} has no transitional device ID")
        if not isinstance(queue_count, int) or not 1 <= queue_count <= 0x10000:
            raise ValueError(f"queue_count must be an integer from 1 to 65536, not "
                             f"{queue_count!r}")
        if not isinstance(msix_vectors, int) or not 1 <= msix_vectors <= _MAX_MSIX_VECTORS:
            raise ValueError(f"msix_vectors must be an integer from 1 to {_MAX_MSIX_VECTORS}, "
                             f"not {msix_vectors!r}")
        if notify_off_multiplier not in NOTIFY_MULTIPLIERS:
            raise ValueError(f"notify_off_multiplier must be one of {NOTIFY_MULTIPLIERS}, not "
                             f"{notify_off_multiplier!r}")
        if device_cfg_length is None:
            if device_type not in _DEVICE_CFG_LENGTH:
                raise ValueError(f"device_cfg_length must be given for device type "
                                 f"{device_type!r}")
            device_cfg_length = _DEVICE_CFG_LENGTH[device_type]
        if not isinstance(device_cfg_length, int) or not 0 <= device_cfg_length <= VIRTIO_PAGE:
            raise ValueError(f"device_cfg_length must be an integer from 0 to {VIRTIO_PAGE}, not "
                             f"{device_cfg_length!r}")
        if config_mode not in CONFIG_MODES:
            raise ValueError(f"config_mode must be one of {CONFIG_MODES}, not {config_mode!r}")
        if (not isinstance(ext_cap_pointer, int) or ext_cap_pointer % 4
                or not pcie.CAP_POINTER_MIN <= ext_cap_pointer < pcie.LEGACY_CONFIG_SPACE_SIZE):
            last = pcie.LEGACY_CONFIG_SPACE_SIZE - 4
            raise ValueError(f"ext_cap_pointer must be a dword-aligned offset from "
                             f"{pcie.CAP_POINTER_MIN:#x} to {last:#x}, not {ext_cap_pointer!r}")
        if max_payload_size not in [128 << n for n in range(6)]:
            raise ValueError(f"max_payload_size must be 128, 256, 512, 1024, 2048 or 4096, not "
                             f"{max_payload_size!r}")
        try:
            link_speed = PcieLinkSpeed(link_speed)
        except ValueError:
            raise ValueError(f"link_speed must be one of {[s.value for s in PcieLinkSpeed]}, not "
                             f"{link_speed!r}") from None
        if link_width not in (1, 2, 4, 8, 12, 16, 32):
            raise ValueError(f"link_width must be 1, 2, 4, 8, 12, 16 or 32, not {link_width!r}")
        for name, value in (("subsystem_vendor_id", subsystem_vendor_id),
                            ("subsystem_id", subsystem_id)):
            if value is not None and (not isinstance(value, int) or not 0 <= value <= 0xFFFF):
                raise ValueError(f"{name} must be a 16-bit integer or None, not {value!r}")
        if transitional and subsystem_id not in (None, int(device_type)):
            raise ValueError(f"a transitional device's subsystem_id must be its device type "
                             f"{int(device_type)}, not {subsystem_id!r}")

        self.device_type           = device_type
        self.transitional          = transitional
        self.queue_count           = queue_count
        self.msix_vectors          = msix_vectors
        self.notify_off_multiplier = notify_off_multiplier
        self.notification_data     = bool(notification_data)
        self.device_cfg_length     = device_cfg_length
        self.config_mode           = config_mode
        self.ext_cap_pointer       = ext_cap_pointer if config_mode == "ext" else None
        self.max_payload_size      = max_payload_size
        self.extended_tag          = extended_tag
        self.link_speed            = link_speed
        self.link_width            = link_width

        # -- identity (virtio 1.2 §4.1.2) --------------------------------------------------------
        self.vendor_id = virtio.VIRTIO_PCI_VENDOR_ID
        if transitional:
            self.device_id   = virtio.VIRTIO_PCI_TRANSITIONAL_DEVICE_ID[device_type]
            self.revision_id = 0
            self.subsystem_id = int(device_type)
        else:
            self.device_id   = virtio.VIRTIO_PCI_MODERN_DEVICE_ID_BASE + int(device_type)
            self.revision_id = 1
            self.subsystem_id = (virtio.VIRTIO_PCI_SUBSYSTEM_ID_MODERN if subsystem_id is None
                                 else subsystem_id)
        self.subsystem_vendor_id = (virtio.VIRTIO_PCI_VENDOR_ID if subsystem_vendor_id is None
                                    else subsystem_vendor_id)
        self.class_code    = virtio.VIRTIO_PCI_CLASS_CODE[device_type]
        self.interrupt_pin = InterruptPin.INTA

        self._plan_bars()
        self._plan_capabilities()
        self.config_fields = self._config_fields()
        self._check_fields()

    # -- BARs and windows ------------------------------------------------------------------------
    def _plan_bars(self):
        bars = []
        windows = []
        # BAR0: the legacy I/O interface (transitional only): the header, the MSI-X vector
        # registers while MSI-X is enabled, then device configuration (virtio 1.2 §4.1.4.8).
        self.legacy_length = None
        if self.transitional:
            self.legacy_length = (virtio.legacy_device_config_offset(msix_enabled=True)
                                  + self.device_cfg_length)
            size = _pow2_at_least(self.legacy_length, 4)
            bars.append(Bar(0, BarType.IO, size, purpose="legacy virtio I/O interface"))
            windows.append(Window("legacy", 0, 0, size, self.legacy_length))

        # BAR1: MSI-X table then PBA (PCIe Base 4.0 §7.7.2: QWORD-aligned, may share a page).
        table_length = self.msix_vectors * byte_size(MsixTableEntry)
        pba_length   = -(-self.msix_vectors // pcie.MSIX_PBA_ENTRY_BITS) * \
            (pcie.MSIX_PBA_ENTRY_BITS // 8)
        table_size = _pow2_at_least(table_length)
        pba_size   = _pow2_at_least(pba_length)
        msix_bar_size = _pow2_at_least(table_size + pba_size, VIRTIO_PAGE)
        bars.append(Bar(1, BarType.MEM32, msix_bar_size, purpose="MSI-X table and PBA"))
        windows.append(Window("msix_table", 1, 0, table_size, table_length))
        windows.append(Window("msix_pba", 1, table_size, pba_size, pba_length))

        # BAR4/5: the virtio structures, one page each (QEMU's places), notify last. Each window
        # is its structure rounded up to a power of two: the rest of the page decodes to no
        # register block, reads 0 and ignores writes, and the block's register bus is as wide
        # as the structure needs (what the transport's target ports expect).
        common_length = byte_size(virtio.VirtioPciCommonCfg)
        isr_length    = byte_size(virtio.VirtioIsr)
        # The last queue's doorbell plus a 16-bit write, or a 32-bit one with NOTIFICATION_DATA
        # (virtio 1.2 §4.1.4.4, checklist rules 33 and 34; queue_notify_off is the queue index).
        notify_length = ((self.queue_count - 1) * self.notify_off_multiplier +
                         virtio.notification_bytes(self.notification_data))
        notify_size   = _pow2_at_least(notify_length, 4)
        notify_offset = _align(3 * VIRTIO_PAGE, notify_size)
        windows.append(Window("common", 4, 0 * VIRTIO_PAGE, _pow2_at_least(common_length, 4),
                              common_length, VirtioPciCapType.COMMON_CFG))
        windows.append(Window("isr", 4, 1 * VIRTIO_PAGE, _pow2_at_least(isr_length, 4),
                              isr_length, VirtioPciCapType.ISR_CFG))
        if self.device_cfg_length:
            windows.append(Window("device", 4, 2 * VIRTIO_PAGE,
                                  _pow2_at_least(self.device_cfg_length, 4),
                                  self.device_cfg_length, VirtioPciCapType.DEVICE_CFG))
        windows.append(Window("notify", 4, notify_offset, notify_size, notify_length,
                              VirtioPciCapType.NOTIFY_CFG))
        virtio_bar_size = _pow2_at_least(notify_offset + max(notify_size, VIRTIO_PAGE))
        bars.append(Bar(4, BarType.MEM64, virtio_bar_size, purpose="virtio structures"))

        self.bars = bars
        self.windows = {w.name: w for w in windows}
        #: Bits of offset within the largest BAR; the function's internal register fabric
        #: addresses (bar, offset) as ``bar << bar_addr_bits | offset``.
        self.bar_addr_bits = max(b.size_bits for b in bars)
        self.fabric_addr_width = self.bar_addr_bits + 3
        for w in windows:
            bar = self.bar(w.bar)
            assert w.offset % w.size == 0 and w.offset + w.size <= bar.size, w

    def bar(self, index):
        """The :class:`Bar` with this index, or ``None``."""
        for b in self.bars:
            if b.index == index:
                return b
        return None

    @property
    def register_windows(self):
        """The windows the function exposes as register-bus initiator ports (not MSI-X)."""
        return {name: w for name, w in self.windows.items() if not name.startswith("msix")}

    def fabric_address(self, bar, offset):
        return (bar << self.bar_addr_bits) | offset

    # -- capabilities ----------------------------------------------------------------------------
    def _plan_capabilities(self):
        chain = []
        if self.config_mode == "full":
            chain += [("pcie", CapId.PCIE, PcieCap, None),
                      ("pm",   CapId.PM,   PmCap,   None),
                      ("msix", CapId.MSIX, MsixCap, None)]
        vendor = [("virtio_common", VirtioPciCap,       VirtioPciCapType.COMMON_CFG),
                  ("virtio_notify", VirtioPciNotifyCap, VirtioPciCapType.NOTIFY_CFG),
                  ("virtio_isr",    VirtioPciCap,       VirtioPciCapType.ISR_CFG)]
        if self.device_cfg_length:
            vendor.append(("virtio_device", VirtioPciCap, VirtioPciCapType.DEVICE_CFG))
        vendor.append(("virtio_pci_cfg", VirtioPciCfgCap, VirtioPciCapType.PCI_CFG))
        chain += [(name, CapId.VNDR, layout, cfg_type) for name, layout, cfg_type in vendor]

        start = pcie.CAP_POINTER_MIN if self.config_mode == "full" else self.ext_cap_pointer
        offsets = []
        offset = start
        for _, _, layout, _ in chain:
            offsets.append(offset)
            offset = _align(offset + byte_size(layout), 4)
        end = offset
        if end > pcie.LEGACY_CONFIG_SPACE_SIZE:
            raise ValueError(
                f"the capabilities need {end - start} bytes from {start:#x} but only "
                f"{pcie.LEGACY_CONFIG_SPACE_SIZE - start} are available below "
                f"{pcie.LEGACY_CONFIG_SPACE_SIZE:#x}; lower ext_cap_pointer "
                f"(or drop the DEVICE structure)")
        caps = []
        for i, (name, cap_id, layout, cfg_type) in enumerate(chain):
            nxt = offsets[i + 1] if i + 1 < len(chain) else 0
            caps.append(Capability(name, cap_id, offsets[i], layout, nxt, cfg_type))
        self.capabilities = caps
        self.capabilities_pointer = start
        self.capabilities_end = end

    def capability(self, name):
        for c in self.capabilities:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def config_budget(self):
        """(bytes used, bytes available) by our capabilities from their first offset."""
        return (self.capabilities_end - self.capabilities_pointer,
                pcie.LEGACY_CONFIG_SPACE_SIZE - self.capabilities_pointer)

    # -- configuration space fields --------------------------------------------------------------
    def _config_fields(self):
        fields = []

        def add(prefix, layout, base, path, access, value=0, legal=None, doc="", bits=None):
            # ``base`` is a byte offset for a layout, a bit offset with explicit ``bits``.
            if bits is None:
                bit, width = _resolve(layout, path)
                bit += base * 8
            else:
                bit, width = base + bits[0], bits[1]
            fields.append(ConfigField(f"{prefix}.{path}", bit, width, access, int(value),
                                      legal, doc))

        RO = Access.RO
        if self.config_mode == "full":
            self._header_fields(add)
        for cap in self.capabilities:
            base = cap.offset
            if cap.cap_id == CapId.PCIE:
                self._pcie_fields(add, base)
            elif cap.cap_id == CapId.PM:
                self._pm_fields(add, base)
            elif cap.cap_id == CapId.MSIX:
                self._msix_fields(add, base)
            else:
                self._virtio_fields(add, cap)
            prefix = cap.name
            head = "cap." if cap.layout in (VirtioPciNotifyCap, VirtioPciCfgCap) else ""
            id_name = "cap_vndr" if cap.cap_id == CapId.VNDR else "cap_id"
            add(prefix, cap.layout, base, f"{head}{id_name}", RO, cap.cap_id.value,
                doc="capability ID")
            add(prefix, cap.layout, base, f"{head}cap_next", RO, cap.next,
                doc="next capability")
        return sorted(fields, key=lambda f: f.offset)

    def _header_fields(self, add):
        RO, RW, RW1C, HW = Access.RO, Access.RW, Access.RW1C, Access.HW
        h = "header"
        H = PciType0Header
        add(h, H, 0, "vendor_id", RO, self.vendor_id)
        add(h, H, 0, "device_id", RO, self.device_id)
        # Command (PCI Local Bus 3.0 §6.2.2, PCIe Base 4.0 §7.5.1.1.3): bits a PCIe endpoint
        # implements are RW, the rest read 0. I/O Space Enable only exists with an I/O BAR.
        command_rw = [PciCommand.MEMORY_SPACE, PciCommand.BUS_MASTER,
                      PciCommand.PARITY_ERROR_RESP, PciCommand.SERR_ENABLE,
                      PciCommand.INTX_DISABLE]
        if any(b.is_io for b in self.bars):
            command_rw.insert(0, PciCommand.IO_SPACE)
        for bit in command_rw:
            add(h, H, 0, f"command.{bit.name.lower()}", RW, 0)
        # Status (PCIe Base 4.0 §7.5.1.1.4).
        add(h, H, 0, "status.interrupt_status", HW, doc="the intx input (INTx pending)")
        add(h, H, 0, "status.capabilities_list", RO, 1)
        for bit in (PciStatus.MASTER_DATA_PARITY_ERROR, PciStatus.SIGNALED_TARGET_ABORT,
                    PciStatus.RECEIVED_TARGET_ABORT, PciStatus.RECEIVED_MASTER_ABORT,
                    PciStatus.SIGNALED_SYSTEM_ERROR, PciStatus.DETECTED_PARITY_ERROR):
            add(h, H, 0, f"status.{bit.name.lower()}", RW1C)
        add(h, H, 0, "revision_id", RO, self.revision_id)
        add(h, H, 0, "class_code", RO, self.class_code)
        add(h, H, 0, "cache_line_size", RW, 0, doc="no effect (PCIe Base 4.0 §7.5.1.1.7)")
        add(h, H, 0, "header_type", RO, pcie.HEADER_TYPE_0)
        # BARs (PCI Local Bus 3.0 §6.2.5.1): the type bits are RO; the address bits at and above
        # the BAR size are RW, those below read 0 (which is how software sizes the BAR). A 64-bit
        # BAR's upper dword is all address bits.
        bar_bit = PciType0Header["bar"].offset
        for bar in self.bars:
            base = bar_bit + 32 * bar.index
            if bar.is_io:
                flags_layout = pcie.PciIoBar
                flags = pcie.PciIoBar.const({"io_space": 1}).as_value().value
            else:
                flags_layout = pcie.PciMemoryBar
                flags = pcie.PciMemoryBar.const({"type": bar.kind,
                                                 "prefetchable": bar.prefetchable}
                                                ).as_value().value
            flag_bits, _ = _resolve(flags_layout, "base_address")
            add(h, None, base, f"bar.{bar.index}.flags", RO, flags, bits=(0, flag_bits),
                doc=bar.purpose)
            add(h, None, base, f"bar.{bar.index}.address", RW, 0,
                bits=(bar.size_bits, 32 - bar.size_bits), doc=f"{bar.size} bytes")
            if bar.is_64bit:
                add(h, None, base + 32, f"bar.{bar.index + 1}.address", RW, 0, bits=(0, 32),
                    doc="upper half")
        add(h, H, 0, "subsystem_vendor_id", RO, self.subsystem_vendor_id)
        add(h, H, 0, "subsystem_id", RO, self.subsystem_id)
        add(h, H, 0, "capabilities_pointer", RO, self.capabilities_pointer)
        add(h, H, 0, "interrupt_line", RW, 0, doc="no effect (PCI Local Bus 3.0 §6.2.4)")
        add(h, H, 0, "interrupt_pin", RO, self.interrupt_pin.value)

    def _pcie_fields(self, add, base):
        RO, RW, RW1C = Access.RO, Access.RW, Access.RW1C
        p, L = "pcie", PcieCap
        mps = _log2(self.max_payload_size // 128)
        add(p, L, base, "pcie_caps.version", RO, pcie.PCIE_CAP_VERSION)
        add(p, L, base, "pcie_caps.port_type", RO, PcieDevicePortType.ENDPOINT.value)
        add(p, L, base, "dev_caps.max_payload_size_supported", RO, mps)
        add(p, L, base, "dev_caps.extended_tag_supported", RO, self.extended_tag)
        # Role-based error reporting is mandatory since PCIe 1.1 (PCIe Base 4.0 §7.5.3.3).
        add(p, L, base, "dev_caps.role_based_error_reporting", RO, 1)
        for name in ("correctable_error_reporting", "nonfatal_error_reporting",
                     "fatal_error_reporting", "ur_reporting"):
            add(p, L, base, f"dev_ctrl.{name}", RW, 0)
        # Defaults of PCIe Base 4.0 §7.5.3.4: RO and No Snoop enabled, MPS 128, MRRS 512.
        add(p, L, base, "dev_ctrl.relaxed_ordering", RW, 1)
        add(p, L, base, "dev_ctrl.max_payload_size", RW, 0, legal=tuple(range(mps + 1)),
            doc="values above Max_Payload_Size Supported are ignored")
        if self.extended_tag:
            add(p, L, base, "dev_ctrl.extended_tag", RW, 0)
        add(p, L, base, "dev_ctrl.no_snoop", RW, 1)
        add(p, L, base, "dev_ctrl.max_read_request_size", RW, 2, legal=tuple(range(6)),
            doc="reserved values 6 and 7 are ignored")
        for name in ("correctable_error_detected", "nonfatal_error_detected",
                     "fatal_error_detected", "ur_detected"):
            add(p, L, base, f"dev_status.{name}", RW1C)
        add(p, L, base, "link_caps.max_link_speed", RO, self.link_speed.value)
        add(p, L, base, "link_caps.max_link_width", RO, self.link_width)
        # ASPM Optionality Compliance: required of devices built to PCIe 3.1 and later.
        add(p, L, base, "link_caps.aspm_optionality", RO, 1)
        add(p, L, base, "link_ctrl.aspm_control", RW, 0, legal=(0,),
            doc="ASPM is not supported: only 0 is accepted")
        add(p, L, base, "link_ctrl.rcb", RW, 0, doc="set by software for endpoints")
        add(p, L, base, "link_ctrl.common_clock", RW, 0)
        add(p, L, base, "link_ctrl.extended_synch", RW, 0)
        add(p, L, base, "link_status.current_link_speed", RO, self.link_speed.value)
        add(p, L, base, "link_status.negotiated_link_width", RO, self.link_width)
        add(p, L, base, "link_status.slot_clock_configuration", RO, 1)
        add(p, L, base, "link_caps2.supported_link_speeds", RO,
            (1 << self.link_speed.value) - 1)
        add(p, L, base, "link_ctrl2.target_link_speed", RW, self.link_speed.value,
            legal=tuple(range(1, self.link_speed.value + 1)))

    def _pm_fields(self, add, base):
        RO, RW = Access.RO, Access.RW
        add("pm", PmCap, base, "pmc.version", RO, pcie.PM_CAP_VERSION)
        # D0 and D3hot only (PCI PM 1.2 §3.2.4: writes of unsupported states are ignored).
        add("pm", PmCap, base, "pmcsr.power_state", RW, PmPowerState.D0.value,
            legal=(PmPowerState.D0.value, PmPowerState.D3HOT.value))
        # No_Soft_Reset: state is kept across D3hot -> D0 (no internal reset on that transition).
        add("pm", PmCap, base, "pmcsr.no_soft_reset", RO, 1)

    def _msix_fields(self, add, base):
        RO, RW = Access.RO, Access.RW
        table = self.windows["msix_table"]
        pba = self.windows["msix_pba"]
        align = pcie.MsixTableOffset["offset"].offset    # the offset field holds bytes >> 3
        add("msix", MsixCap, base, "message_control.table_size", RO, self.msix_vectors - 1)
        add("msix", MsixCap, base, "message_control.function_mask", RW, 0)
        add("msix", MsixCap, base, "message_control.enable", RW, 0)
        add("msix", MsixCap, base, "table.bir", RO, table.bar)
        add("msix", MsixCap, base, "table.offset", RO, table.offset >> align)
        add("msix", MsixCap, base, "pba.bir", RO, pba.bar)
        add("msix", MsixCap, base, "pba.offset", RO, pba.offset >> align)

    def _virtio_fields(self, add, cap):
        RO, RW = Access.RO, Access.RW
        head = "cap." if cap.layout in (VirtioPciNotifyCap, VirtioPciCfgCap) else ""
        add(cap.name, cap.layout, cap.offset, f"{head}cap_len", RO, cap.size)
        add(cap.name, cap.layout, cap.offset, f"{head}cfg_type", RO, cap.cfg_type.value)
        if cap.cfg_type == VirtioPciCapType.PCI_CFG:
            # bar, offset, length and pci_cfg_data are RW (virtio 1.2 §4.1.4.9).
            add(cap.name, cap.layout, cap.offset, "cap.bar", RW, 0)
            add(cap.name, cap.layout, cap.offset, "cap.offset", RW, 0)
            add(cap.name, cap.layout, cap.offset, "cap.length", RW, 0)
            add(cap.name, cap.layout, cap.offset, "pci_cfg_data", Access.WINDOW,
                doc="a cap.length access at (cap.bar, cap.offset)")
            return
        window = next(w for w in self.windows.values() if w.cfg_type == cap.cfg_type)
        add(cap.name, cap.layout, cap.offset, f"{head}bar", RO, window.bar)
        add(cap.name, cap.layout, cap.offset, f"{head}offset", RO, window.offset)
        add(cap.name, cap.layout, cap.offset, f"{head}length", RO, window.length)
        if cap.cfg_type == VirtioPciCapType.NOTIFY_CFG:
            add(cap.name, cap.layout, cap.offset, "notify_off_multiplier", RO,
                self.notify_off_multiplier)

    # -- checks and views ------------------------------------------------------------------------
    def _check_fields(self):
        used = {}
        for f in self.config_fields:
            if f.shift + f.width > 32:
                raise AssertionError(f"field {f.name} crosses a dword")
            if f.value >> f.width:
                raise AssertionError(f"field {f.name}: value {f.value:#x} wider than {f.width}")
            for bit in range(f.offset, f.offset + f.width):
                if bit in used:
                    raise AssertionError(f"fields {used[bit]} and {f.name} overlap")
                used[bit] = f.name
        self._fields_by_name = {f.name: f for f in self.config_fields}

    def field(self, name):
        """The :class:`ConfigField` called ``name`` (e.g. ``"pcie.dev_ctrl.max_payload_size"``)."""
        return self._fields_by_name[name]

    def has_field(self, name):
        return name in self._fields_by_name

    def config_image(self):
        """Configuration space after reset, as bytes (``LEGACY_CONFIG_SPACE_SIZE`` long; the
        extended space reads 0)."""
        value = 0
        for f in self.config_fields:
            value |= f.value << f.offset
        return value.to_bytes(pcie.LEGACY_CONFIG_SPACE_SIZE, "little")

    def writable_mask(self):
        """Bytes with a bit set for every bit software can change (RW, RW1C, the window)."""
        value = 0
        for f in self.config_fields:
            if f.access in (Access.RW, Access.RW1C, Access.WINDOW):
                value |= ((1 << f.width) - 1) << f.offset
        return value.to_bytes(pcie.LEGACY_CONFIG_SPACE_SIZE, "little")

    def hard_ip_plan(self):
        """What a hard IP that owns the header must be configured with (``"ext"`` mode).

        Returns a dict: the IDs, the interrupt pin, the BARs (index, I/O or memory, 64-bit,
        prefetchable, size), the MSI-X capability (table size, BIR and offset of table and PBA),
        the PCI Express settings this function relies on, and where configuration accesses must
        be forwarded (the first forwarded byte and dword, the next pointer the hard IP's last
        capability must hold). In ``"full"`` mode the same data describes what the function
        itself presents.
        """
        table = self.windows["msix_table"]
        pba = self.windows["msix_pba"]
        plan = {
            "vendor_id": self.vendor_id, "device_id": self.device_id,
            "revision_id": self.revision_id, "class_code": self.class_code,
            "subsystem_vendor_id": self.subsystem_vendor_id, "subsystem_id": self.subsystem_id,
            "interrupt_pin": self.interrupt_pin.name,
            "bars": [{"index": b.index, "kind": "io" if b.is_io else "memory",
                      "64bit": b.is_64bit, "prefetchable": b.prefetchable, "size": b.size,
                      "purpose": b.purpose} for b in self.bars],
            "msix": {"table_size": self.msix_vectors, "table_bir": table.bar,
                     "table_offset": table.offset, "pba_bir": pba.bar,
                     "pba_offset": pba.offset},
            "pcie": {"max_payload_size_supported": self.max_payload_size,
                     "extended_tag": self.extended_tag, "port_type": "endpoint",
                     "link_speed": self.link_speed.name, "link_width": self.link_width},
        }
        if self.config_mode == "ext":
            used, available = self.config_budget
            plan["config_forwarding"] = {
                "first_forwarded_offset": self.ext_cap_pointer,
                "ext_cfg_cap_ptr_dword": self.ext_cap_pointer // 4,
                "last_hard_ip_capability_next": self.ext_cap_pointer,
                "bytes_used": used, "bytes_available": available,
            }
        return plan

    def describe(self):
        """A short human-readable summary (for logs and reports)."""
        kind = "transitional" if self.transitional else "modern"
        lines = [f"virtio {self.device_type.name.lower()} ({kind}), "
                 f"{self.vendor_id:04x}:{self.device_id:04x} rev {self.revision_id}, class "
                 f"{self.class_code:06x}, subsystem {self.subsystem_vendor_id:04x}:"
                 f"{self.subsystem_id:04x}, config mode {self.config_mode}"]
        for b in self.bars:
            kind = "I/O" if b.is_io else ("64-bit memory" if b.is_64bit else "32-bit memory")
            lines.append(f"  BAR{b.index}: {kind}, {b.size} bytes: {b.purpose}")
        for w in self.windows.values():
            lines.append(f"    {w.name:<10} BAR{w.bar} +{w.offset:#07x}, {w.size:#x} bytes "
                         f"(structure {w.length:#x}), register bus {w.addr_width} bits")
        for c in self.capabilities:
            lines.append(f"  cap {c.name:<15} at {c.offset:#04x} ({c.size} bytes), next "
                         f"{c.next:#04x}")
        return "\n".join(lines)

    def __repr__(self):
        return (f"FunctionLayout(device_type={self.device_type.name}, transitional="
                f"{self.transitional}, queue_count={self.queue_count}, msix_vectors="
                f"{self.msix_vectors}, notify_off_multiplier={self.notify_off_multiplier}, "
                f"device_cfg_length={self.device_cfg_length}, config_mode={self.config_mode!r}"
                + (f", ext_cap_pointer={self.ext_cap_pointer:#x}" if self.ext_cap_pointer
                   else "") + ")")
