# SPDX-License-Identifier: BSD-2-Clause
"""A virtio-pci function written in Python: the reference the host model is tested against.

:class:`PyVirtioFunction` is a cocotbext-pcie :class:`~cocotbext.pcie.core.MemoryEndpoint`
attached to the same :class:`~cocotbext.pcie.core.RootComplex` as the RTL, so the host model can
be proven on it independently of the RTL (a model bug and an RTL bug cannot hide each other). It
follows the device rules of virtio-checklist §1:

* identity (modern or transitional IDs), BARs and virtio vendor capabilities from a
  :class:`~.layout.DeviceLayout` (which may lie, for negative tests), a PCI_CFG access window;
* the common configuration structure (feature windows for any select, driver features frozen at
  FEATURES_OK and checked there, status bits that only reset clears, reset with an optional
  delay, ``config_generation`` bumped on the first device-config read after a change, queue
  registers latched at ``queue_enable``, vectors beyond the table reading back NO_VECTOR);
* ISR read-to-clear; INTx level = ISR ≠ 0 while MSI-X is off and Interrupt Disable is clear,
  mirrored in PCI Status bit 3, driven on an :class:`~virtio_pcie_tb.host.pci.SoftIntxLine`;
* notifications decoded from the address (or the value with a multiplier of 0), 32-bit
  notification data when negotiated;
* its own MSI-X table and PBA (per-vector and function masks, pending bits fired on unmask);
* the legacy I/O header (transitional and legacy layouts), with the MSI-X registers and the
  device-config shift while MSI-X is enabled;
* DEVICE_NEEDS_RESET and a configuration interrupt on a ring error.

A back-end (:mod:`.blk`, :mod:`.net`) supplies features, device configuration and the queue
workers. Test knobs: ``reset_delay_ns``, ``vector_limit`` (vectors the device can map),
``refuse_features`` (callable), ``notify_offsets`` (per-queue ``queue_notify_off``).
"""

import logging
import struct

import cocotb
from cocotb.utils import get_sim_time

from cocotbext.pcie.core import MemoryEndpoint
from cocotbext.pcie.core.caps import MsixCapability, PciCap, PciCapId
from cocotbext.pcie.core.tlp import Tlp, TlpType

from virtio_pcie.spec.pcie import MsixTableEntry, MsixVectorControl
from virtio_pcie.spec.virtio import (
    DeviceStatus, feature_dependencies, VirtioF, VirtioIsr, VirtioPciCap, VirtioPciCapType,
    VirtioPciCfgCap, VirtioPciCommonCfg, VirtioPciLegacyHeader, VirtioPciLegacyMsix,
    VirtioPciNotifyCap, LEGACY_QUEUE_ADDR_SHIFT, VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_VENDOR_ID,
    byte_size, legacy_device_config_offset, legacy_vring_layout,
)

from ...codec import codec
from ...host.pci import SoftIntxLine
from .queue import DeviceQueue

__all__ = ["PyVirtioFunction"]

_COMMON = codec(VirtioPciCommonCfg)
_LEGACY = codec(VirtioPciLegacyHeader)
_LMSIX  = codec(VirtioPciLegacyMsix)
_CAP    = codec(VirtioPciCap)
_NCAP   = codec(VirtioPciNotifyCap)
_CFGCAP = codec(VirtioPciCfgCap)
_ENTRY  = codec(MsixTableEntry)
_MASKBIT = 1 << MsixVectorControl["mask"].offset
_S = DeviceStatus


class _VendorCap(PciCap):
    """A virtio vendor capability in configuration space (bytes fixed, except PCI_CFG's)."""

    def __init__(self, fn, spec):
        super().__init__()
        self.fn = fn
        self.spec = spec
        self.cap_id = PciCapId.VNDR
        self.length = (spec.size + 3) // 4
        raw = bytearray(4 * self.length)
        _CAP.put(raw, "cap_len", spec.advertised_len)
        _CAP.put(raw, "cfg_type", spec.cfg_type)
        _CAP.put(raw, "bar", spec.bar)
        _CAP.put(raw, "id", spec.id)
        _CAP.put(raw, "offset", spec.offset)
        _CAP.put(raw, "length", spec.length)
        if spec.notify_off_multiplier is not None:
            _NCAP.put(raw, "notify_off_multiplier", spec.notify_off_multiplier)
        self.raw = raw

    @property
    def is_pci_cfg(self):
        return self.spec.cfg_type == VirtioPciCapType.PCI_CFG.value

    async def _read_register(self, reg):
        if self.is_pci_cfg and reg == _CFGCAP.offset("pci_cfg_data") // 4:
            await self.fn.pci_cfg_access(self.raw, None)
        return int.from_bytes(self.raw[4 * reg:4 * reg + 4], "little")

    async def _write_register(self, reg, data, mask):
        if not self.is_pci_cfg:
            return
        # bar, offset, length and pci_cfg_data are RW (virtio 1.2, "PCI configuration access
        # capability")
        old = bytearray(self.raw[4 * reg:4 * reg + 4])
        new = data.to_bytes(4, "little")
        for i in range(4):
            if mask & (1 << i):
                old[i] = new[i]
        writable = {_CAP.offset("bar") // 4, _CAP.offset("offset") // 4,
                    _CAP.offset("length") // 4, _CFGCAP.offset("pci_cfg_data") // 4}
        if reg not in writable:
            return
        if reg == _CAP.offset("bar") // 4:
            # only the bar byte of that dword is writable
            bar_byte = _CAP.offset("bar") % 4
            self.raw[4 * reg + bar_byte] = old[bar_byte]
        else:
            self.raw[4 * reg:4 * reg + 4] = old
        if reg == _CFGCAP.offset("pci_cfg_data") // 4:
            await self.fn.pci_cfg_access(self.raw, bytes(old))


class _MsixCap(MsixCapability):
    """cocotbext's MSI-X capability, telling the function when Enable / Function Mask change."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    async def _write_register(self, reg, data, mask):
        await super()._write_register(reg, data, mask)
        if reg == 0:
            self.fn._msix_control_changed()


class PyVirtioFunction(MemoryEndpoint):
    """A virtio-pci function with a Python back-end.

    Parameters
    ----------
    backend : a :class:`~.blk.RamDisk` or :class:`~.net.NetBackend`
    layout : DeviceLayout
    transitional : bool
        Transitional IDs (0x1000 + type, Revision 0, subsystem ID = type) instead of modern
        (0x1040 + type, Revision 1).
    device_id, revision, subsystem_id : int, optional
        Override the IDs (negative tests).
    intx : bool
        Implement INTA (interrupt pin 1) on :attr:`intx`.
    """

    def __init__(self, backend, layout, *, transitional=False, device_id=None, revision=None,
                 subsystem_id=None, intx=True, msix_vectors=None, queue_sizes=None, **kwargs):
        super().__init__(**kwargs)
        self.vlog = logging.getLogger(f"cocotb.virtio.pydev.{backend.name}")
        self.backend = backend
        self.layout = layout
        dtype = int(backend.device_type)
        self.vendor_id = VIRTIO_PCI_VENDOR_ID
        if transitional:
            from virtio_pcie.spec.virtio import VIRTIO_PCI_TRANSITIONAL_DEVICE_ID
            self.device_id = VIRTIO_PCI_TRANSITIONAL_DEVICE_ID[backend.device_type]
            self.revision_id = 0
            self.subsystem_id = dtype
        else:
            from virtio_pcie.spec.virtio import (VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
                                                 VIRTIO_PCI_SUBSYSTEM_ID_MODERN)
            self.device_id = VIRTIO_PCI_MODERN_DEVICE_ID_BASE + dtype
            self.revision_id = 1
            self.subsystem_id = VIRTIO_PCI_SUBSYSTEM_ID_MODERN
        if device_id is not None:
            self.device_id = device_id
        if revision is not None:
            self.revision_id = revision
        if subsystem_id is not None:
            self.subsystem_id = subsystem_id
        self.subsystem_vendor_id = VIRTIO_PCI_VENDOR_ID
        from virtio_pcie.spec.virtio import VIRTIO_PCI_CLASS_CODE
        self.class_code = VIRTIO_PCI_CLASS_CODE[backend.device_type]

        # -- BARs and capabilities ------------------------------------------------------------
        for bar in layout.bars:
            self.bar_ptr = bar.index
            self.add_region(bar.size, self._bar_read(bar.index), self._bar_write(bar.index),
                            ext=bar.kind == "mem64", prefetch=bar.prefetch, io=bar.kind == "io")
        self.register_rx_tlp_handler(TlpType.MEM_READ, self._handle_mem_read)
        self.register_rx_tlp_handler(TlpType.MEM_READ_64, self._handle_mem_read)
        self.msix_vectors = msix_vectors if msix_vectors is not None else (
            layout.regions["msix_table"].length // byte_size(MsixTableEntry)
            if "msix_table" in layout.regions else 0)
        if self.msix_vectors:
            self.msix_cap = _MsixCap(self)
            self.msix_cap.msix_table_size = self.msix_vectors - 1
            t, p = layout.regions["msix_table"], layout.regions["msix_pba"]
            self.msix_cap.msix_table_bar_indicator_register = t.bar
            self.msix_cap.msix_table_offset = t.offset
            self.msix_cap.msix_pba_bar_indicator_register = p.bar
            self.msix_cap.msix_pba_offset = p.offset
            self.register_capability(self.msix_cap)
        else:
            self.msix_cap = None
        self.vendor_caps = [_VendorCap(self, spec) for spec in layout.caps]
        for cap in self.vendor_caps:
            self.register_capability(cap)
        self.intx = SoftIntxLine() if intx else None
        self.interrupt_pin = 1 if intx else 0

        # -- virtio state -----------------------------------------------------------------------
        self.start_index = 0           # test back door: ring indices start here after reset
        sizes = queue_sizes or backend.queue_sizes
        self.queues = [DeviceQueue(self, i, size) for i, size in enumerate(sizes)]
        self.num_queues = len(self.queues)
        self.offered = backend.offered_features()
        self.msix_table = [[0, 0, 0, _MASKBIT] for _ in range(self.msix_vectors)]
        self.msix_pba = 0
        self.reset_delay_ns = 0
        self.vector_limit = None
        self.refuse_features = None
        self.strict_features = True
        self.errors = []               # driver mistakes and ring errors, as text
        self.config_interrupts = 0
        self.msix_messages = 0
        self.resets = 0
        self.legacy_active = False
        self.config_generation = 0
        self._config_dirty = False
        self._reset_until = None
        self._reset_state()
        backend.attach(self)

    def _reset_state(self):
        self.status = 0
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0
        self.driver_features_raw = 0
        self.config_msix_vector = VIRTIO_MSI_NO_VECTOR
        self.queue_select = 0
        self.isr = 0
        for q in self.queues:
            q.reset()
        self.legacy_active = False

    # -- derived state ----------------------------------------------------------------------------
    @property
    def negotiated(self):
        return self.driver_features

    @property
    def has_feature_event_idx(self):
        return bool(self.driver_features & (1 << VirtioF.EVENT_IDX))

    @property
    def has_feature_indirect(self):
        return bool(self.driver_features & (1 << VirtioF.INDIRECT_DESC))

    @property
    def msix_enabled(self):
        return self.msix_cap is not None and self.msix_cap.msix_enable

    def queues_running(self):
        if self.status & (_S.DEVICE_NEEDS_RESET.value | _S.FAILED.value):
            return False
        if self.legacy_active:
            return True      # a legacy device must tolerate use before DRIVER_OK
        return bool(self.status & _S.DRIVER_OK.value)

    # -- DMA ---------------------------------------------------------------------------------------
    async def dma_read(self, addr, length):
        if not self.bus_master_enable:
            self.device_error(f"DMA read at {addr:#x} without Bus Master Enable")
            return bytes(length)
        try:
            return await self.mem_read(addr, length)
        except Exception as e:       # noqa: BLE001 - cocotbext raises plain Exception
            raise RuntimeError(f"DMA read of {length} bytes at {addr:#x} failed: {e}") from e

    async def dma_write(self, addr, data):
        if not self.bus_master_enable:
            self.device_error(f"DMA write at {addr:#x} without Bus Master Enable")
            return
        await self.mem_write(addr, data)

    # -- BAR decode --------------------------------------------------------------------------------
    def _find(self, bar, addr, length):
        for name, region in self.layout.regions.items():
            if region.bar == bar and region.offset <= addr < region.offset + region.length:
                return name, addr - region.offset
        return None, None

    def _bar_read(self, bar):
        async def read(addr, length):
            name, off = self._find(bar, addr, length)
            if name is None:
                return bytes(length)
            return await getattr(self, f"_read_{name}")(off, length)
        return read

    def _bar_write(self, bar):
        async def write(addr, data):
            name, off = self._find(bar, addr, len(data))
            if name is None:
                return
            await getattr(self, f"_write_{name}")(off, bytes(data))
        return write

    async def _handle_mem_read(self, tlp):
        """Memory reads honouring byte enables (a read of the ISR byte must not read more)."""
        bar = self.match_bar(tlp.address)
        if not bar:
            await self.send(Tlp.create_ur_completion_for_tlp(tlp, self.pcie_id))
            return
        region, addr = bar
        first = tlp.get_first_be_offset()
        count = tlp.get_be_byte_count()
        data = bytearray(4 * tlp.length)
        if count:
            data[first:first + count] = await self.read_region(region, addr + first, count)
        cpl = Tlp.create_completion_data_for_tlp(tlp, self.pcie_id)
        cpl.set_data(bytes(data))
        cpl.byte_count = count
        cpl.lower_address = (tlp.address + first) & 0x7F
        await self.send(cpl)

    async def write_config_register(self, reg, data, mask):
        await super().write_config_register(reg, data, mask)
        self._update_intx()

    # -- common configuration -------------------------------------------------------------------
    def _q(self):
        return self.queues[self.queue_select] if self.queue_select < self.num_queues else None

    def _get_common(self, name):
        q = self._q()
        sel = self.device_feature_select
        if name == "device_feature":
            return (self.offered >> (32 * sel)) & 0xFFFFFFFF
        if name == "driver_feature":
            return (self.driver_features >> (32 * self.driver_feature_select)) & 0xFFFFFFFF
        if name == "num_queues":
            return self.num_queues
        if name == "device_status":
            return self._status_read()
        if name == "config_generation":
            return self.config_generation & 0xFF
        if name.startswith("queue_") and name != "queue_select":
            if q is None:
                return 0
            return {"queue_size": q.size, "queue_msix_vector": q.msix_vector,
                    "queue_enable": int(q.enabled), "queue_notify_off": q.notify_off,
                    "queue_desc": q.desc, "queue_driver": q.driver, "queue_device": q.device,
                    "queue_notify_data": q.index, "queue_reset": 0}[name]
        if name in ("admin_queue_index", "admin_queue_num"):
            return 0
        return getattr(self, name)

    async def _set_common(self, name, value):
        q = self._q()
        if name in ("device_feature_select", "driver_feature_select", "queue_select"):
            setattr(self, name, value)
        elif name == "driver_feature":
            if self.status & _S.FEATURES_OK.value:
                self._error("driver_feature written after FEATURES_OK (ignored)")
                return
            shift = 32 * self.driver_feature_select
            mask = 0xFFFFFFFF << shift
            self.driver_features_raw = (self.driver_features_raw & ~mask) | (value << shift)
            self.driver_features = self.driver_features_raw & self.offered
        elif name == "config_msix_vector":
            self.config_msix_vector = self._map_vector(value)
        elif name == "device_status":
            await self._write_status(value)
        elif q is not None and name in ("queue_size", "queue_msix_vector", "queue_enable",
                                        "queue_desc", "queue_driver", "queue_device",
                                        "queue_reset"):
            await self._set_queue_field(q, name, value)
        # read-only fields ignore writes

    async def _set_queue_field(self, q, name, value):
        if name == "queue_msix_vector":
            q.msix_vector = self._map_vector(value)
            return
        if name == "queue_reset":
            if value == 1 and self.driver_features & (1 << VirtioF.RING_RESET):
                q.reset()
            return
        if q.enabled and name != "queue_enable":
            self._error(f"queue {q.index}: {name} written while enabled (ignored)")
            return
        if name == "queue_size":
            if value == 0 or value & (value - 1) or value > q.max_size:
                self._error(f"queue {q.index}: invalid queue_size {value} (ignored)")
                return
            q.size = value
        elif name == "queue_enable":
            if value != 1:
                self._error(f"queue {q.index}: queue_enable written with {value} (ignored)")
                return
            for addr, align, what in ((q.desc, 16, "desc"), (q.driver, 2, "driver"),
                                      (q.device, 4, "device")):
                if addr % align:
                    self.device_error(f"queue {q.index}: {what} area {addr:#x} not aligned "
                                      f"to {align}")
                    return
            q.enabled = True
            q.kick()
        else:
            setattr(q, name[len("queue_"):], value)

    def _map_vector(self, value):
        if value == VIRTIO_MSI_NO_VECTOR:
            return value
        limit = self.msix_vectors if self.vector_limit is None else \
            min(self.vector_limit, self.msix_vectors)
        return value if value < limit else VIRTIO_MSI_NO_VECTOR

    def _status_read(self):
        if self._reset_until is not None:
            if get_sim_time("ns") < self._reset_until:
                return self._status_before_reset
            self._reset_until = None
        return self.status

    async def _write_status(self, value):
        if value == 0:
            self._do_reset()
            return
        old = self.status
        new = old | value
        if new & ~value & ~_S.DEVICE_NEEDS_RESET.value:
            self._error(f"device_status write {value:#x} clears bits of {old:#x} (ignored)")
        if value & _S.FEATURES_OK.value and not old & _S.FEATURES_OK.value:
            reason = self._check_features()
            if reason:
                self._error(f"refusing FEATURES_OK: {reason}")
                new &= ~_S.FEATURES_OK.value
        self.status = new
        if new & _S.DRIVER_OK.value and not old & _S.DRIVER_OK.value:
            # QEMU effectively kicks every queue when DRIVER_OK is set
            for q in self.queues:
                q.kick()
            self.backend.driver_ok()

    def _check_features(self):
        f = self.driver_features
        if self.strict_features and self.driver_features_raw & ~self.offered:
            return f"bits {self.driver_features_raw & ~self.offered:#x} were never offered"
        if not f & (1 << VirtioF.VERSION_1):
            return "VIRTIO_F_VERSION_1 not accepted"
        all_of, any_of = feature_dependencies(self.backend.device_type)
        for feature, needs in all_of.items():
            if f & (1 << feature) and not all(f & (1 << n) for n in needs):
                return f"feature bit {feature} without bits {', '.join(map(str, needs))}"
        for feature, needs in any_of.items():
            if f & (1 << feature) and not any(f & (1 << n) for n in needs):
                return f"feature bit {feature} without any of bits {', '.join(map(str, needs))}"
        if self.refuse_features is not None and self.refuse_features(f):
            return "refused by the test"
        return None

    def _do_reset(self):
        self.resets += 1
        if self.reset_delay_ns:
            self._status_before_reset = self.status or _S.ACKNOWLEDGE.value
            self._reset_until = get_sim_time("ns") + self.reset_delay_ns
        self._reset_state()
        self.backend.reset()
        self._update_intx()

    async def _read_common(self, off, length):
        return await self._struct_read(_COMMON, self._get_common, off, length)

    async def _write_common(self, off, data):
        await self._struct_write(_COMMON, self._get_common, self._set_common, off, data)

    async def _struct_read(self, c, getter, off, length):
        out = bytearray(length)
        for name, (start, size, _) in c.fields.items():
            lo, hi = max(start, off), min(start + size, off + length)
            if lo < hi:
                value = getter(name).to_bytes(size, "little")
                out[lo - off:hi - off] = value[lo - start:hi - start]
        return bytes(out)

    async def _struct_write(self, c, getter, setter, off, data):
        for name, (start, size, _) in c.fields.items():
            lo, hi = max(start, off), min(start + size, off + len(data))
            if lo < hi:
                value = bytearray(getter(name).to_bytes(size, "little"))
                value[lo - start:hi - start] = data[lo - off:hi - off]
                await setter(name, int.from_bytes(value, "little"))

    # -- ISR, notifications, device configuration ------------------------------------------------
    async def _read_isr(self, off, length):
        value = self.isr if off == 0 else 0
        if off == 0:
            self.isr = 0
            self._update_intx()
        return bytes([value]) + bytes(length - 1)

    async def _write_isr(self, off, data):
        pass

    async def _read_notify(self, off, length):
        return bytes(length)

    async def _write_notify(self, off, data):
        value = int.from_bytes(data, "little")
        mult = self.layout.notify_off_multiplier
        if mult:
            if off % mult:
                self._error(f"notification at unaligned offset {off:#x}")
                return
            candidates = [q for q in self.queues if q.notify_off * mult == off]
            if not candidates:
                self._error(f"notification at offset {off:#x} matches no queue")
                return
            index = candidates[0].index
        else:
            index = value & 0xFFFF
        if self.driver_features & (1 << VirtioF.NOTIFICATION_DATA) and len(data) != 4:
            self._error(f"{len(data)}-byte notification with NOTIFICATION_DATA negotiated")
        self.notify(index)

    def notify(self, index):
        if index >= self.num_queues:
            self._error(f"notification for queue {index}, which does not exist")
            return
        self.queues[index].kick()

    async def _read_device(self, off, length):
        if self._config_dirty:
            self._config_dirty = False
            self.config_generation = (self.config_generation + 1) & 0xFF
        raw = self.backend.config_bytes()
        chunk = raw[off:off + length]
        return chunk + bytes(length - len(chunk))

    async def _write_device(self, off, data):
        self.backend.config_write(off, data)

    def config_changed(self, *, interrupt=True):
        """The back-end changed its configuration: next read bumps the generation; send a
        configuration interrupt (ISR bit 1 set first)."""
        self._config_dirty = True
        if interrupt and self.status & _S.DRIVER_OK.value:
            cocotb.start_soon(self.config_interrupt())

    # -- legacy I/O header -------------------------------------------------------------------------
    async def _read_legacy(self, off, length):
        cfg = legacy_device_config_offset(self.msix_enabled)
        out = bytearray()
        for i in range(length):
            o = off + i
            if o >= cfg:
                raw = self.backend.config_bytes()
                out.append(raw[o - cfg] if o - cfg < len(raw) else 0)
            else:
                out += await self._struct_read(_LEGACY, self._get_legacy, o, 1) \
                    if o < _LEGACY.size else await self._struct_read(
                        _LMSIX, self._get_legacy_msix, o - _LEGACY.size, 1)
        return bytes(out)

    async def _write_legacy(self, off, data):
        cfg = legacy_device_config_offset(self.msix_enabled)
        if off >= cfg:
            self.backend.config_write(off - cfg, data)
            return
        if off >= _LEGACY.size:
            await self._struct_write(_LMSIX, self._get_legacy_msix, self._set_legacy_msix,
                                     off - _LEGACY.size, data)
            return
        await self._struct_write(_LEGACY, self._get_legacy, self._set_legacy, off, data)

    def _get_legacy(self, name):
        q = self._q()
        if name == "host_features":
            return self.offered & 0xFFFFFFFF
        if name == "guest_features":
            return self.driver_features & 0xFFFFFFFF
        if name == "queue_pfn":
            return (q.desc >> LEGACY_QUEUE_ADDR_SHIFT) if q and q.enabled else 0
        if name == "queue_num":
            return q.max_size if q else 0
        if name == "queue_sel":
            return self.queue_select
        if name == "queue_notify":
            return 0
        if name == "status":
            return self.status
        if name == "isr":
            value = self.isr
            self.isr = 0
            self._update_intx()
            return value
        raise KeyError(name)

    async def _set_legacy(self, name, value):
        q = self._q()
        self.legacy_active = True
        if name == "guest_features":
            self.driver_features = value & self.offered & 0xFFFFFFFF
            self.driver_features_raw = value
        elif name == "queue_sel":
            self.queue_select = value
        elif name == "queue_pfn" and q is not None:
            if value == 0:
                q.reset()
            else:
                q.size = q.max_size
                q.desc, q.driver, q.device = legacy_vring_layout(
                    value << LEGACY_QUEUE_ADDR_SHIFT, q.size)
                q.enabled = True
                q.kick()
        elif name == "queue_notify":
            self.notify(value)
        elif name == "status":
            if value == 0:
                self._do_reset()
                self.reset_delay_ns and self._error("legacy reset cannot be delayed")
                self._reset_until = None
            else:
                old = self.status
                self.status = value
                if value & _S.DRIVER_OK.value and not old & _S.DRIVER_OK.value:
                    self.backend.driver_ok()
                    for queue in self.queues:
                        queue.kick()
                self.legacy_active = True

    def _get_legacy_msix(self, name):
        q = self._q()
        if name == "config_vector":
            return self.config_msix_vector
        return q.msix_vector if q else VIRTIO_MSI_NO_VECTOR

    async def _set_legacy_msix(self, name, value):
        q = self._q()
        if name == "config_vector":
            self.config_msix_vector = self._map_vector(value)
        elif q is not None:
            q.msix_vector = self._map_vector(value)

    # -- PCI_CFG window ----------------------------------------------------------------------------
    async def pci_cfg_access(self, raw, write_data):
        """A config access to ``pci_cfg_data``: a ``length``-byte access of BAR ``bar`` at
        ``offset`` (virtio 1.2, "PCI configuration access capability")."""
        bar = _CAP.get(raw, "bar")
        offset = _CAP.get(raw, "offset")
        length = _CAP.get(raw, "length")
        data_off = _CFGCAP.offset("pci_cfg_data")
        if length not in (1, 2, 4) or offset % length or bar > 5 or self.regions[bar] is None:
            if write_data is None:
                raw[data_off:data_off + 4] = bytes(4)
            return
        if write_data is None:
            value = await self._bar_read(bar)(offset, length)
            raw[data_off:data_off + 4] = value + bytes(4 - length)
        else:
            await self._bar_write(bar)(offset, write_data[:length])

    # -- interrupts --------------------------------------------------------------------------------
    def _update_intx(self):
        pending = self.isr != 0
        self.interrupt_status = pending and not self.msix_enabled
        if self.intx is not None:
            self.intx.set(pending and not self.msix_enabled and not self.interrupt_disable)

    async def queue_interrupt(self, q):
        if self.msix_enabled:
            if q.msix_vector != VIRTIO_MSI_NO_VECTOR:
                await self._msix_signal(q.msix_vector)
        else:
            self.isr |= VirtioIsr.QUEUE.value
            self._update_intx()

    async def config_interrupt(self):
        """ISR bit 1 is set before the notification, MSI-X or not (virtio 1.2 §4.1.4.5)."""
        self.config_interrupts += 1
        self.isr |= VirtioIsr.CONFIG.value
        if self.msix_enabled:
            if self.config_msix_vector != VIRTIO_MSI_NO_VECTOR:
                await self._msix_signal(self.config_msix_vector)
        else:
            self._update_intx()

    def device_error(self, message):
        """A ring error: DEVICE_NEEDS_RESET, then a configuration interrupt if DRIVER_OK."""
        self._error(message)
        if self.status & _S.DEVICE_NEEDS_RESET.value:
            return
        self.status |= _S.DEVICE_NEEDS_RESET.value
        if self.status & _S.DRIVER_OK.value:
            cocotb.start_soon(self.config_interrupt())

    def _error(self, message):
        self.vlog.warning("%s", message)
        self.errors.append(message)

    # -- MSI-X table and PBA -----------------------------------------------------------------------
    def _vector_masked(self, v):
        return self.msix_cap.msix_function_mask or self.msix_table[v][3] & _MASKBIT

    async def _msix_signal(self, v):
        if v >= self.msix_vectors:
            return
        if self._vector_masked(v):
            self.msix_pba |= 1 << v
            return
        await self._msix_send(v)

    async def _msix_send(self, v):
        lo, hi, data, _ = self.msix_table[v]
        self.msix_messages += 1
        await self.mem_write(lo | hi << 32, struct.pack("<I", data))

    def _msix_control_changed(self):
        self._update_intx()
        self._fire_pending()

    def _fire_pending(self):
        if not self.msix_enabled:
            return
        for v in range(self.msix_vectors):
            if self.msix_pba & (1 << v) and not self._vector_masked(v):
                self.msix_pba &= ~(1 << v)
                cocotb.start_soon(self._msix_send(v))

    async def _read_msix_table(self, off, length):
        raw = b"".join(_ENTRY.pack(msg_addr=e[0], msg_upper_addr=e[1], msg_data=e[2],
                                   vector_control=e[3]) for e in self.msix_table)
        return raw[off:off + length] + bytes(max(0, off + length - len(raw)))

    async def _write_msix_table(self, off, data):
        raw = bytearray(b"".join(_ENTRY.pack(msg_addr=e[0], msg_upper_addr=e[1], msg_data=e[2],
                                             vector_control=e[3]) for e in self.msix_table))
        raw[off:off + len(data)] = data
        names = ("msg_addr", "msg_upper_addr", "msg_data", "vector_control")
        for v in range(self.msix_vectors):
            entry = _ENTRY.unpack(raw[v * _ENTRY.size:(v + 1) * _ENTRY.size])
            self.msix_table[v] = [entry[n] for n in names]
        self._fire_pending()

    async def _read_msix_pba(self, off, length):
        raw = self.msix_pba.to_bytes(self.layout.regions["msix_pba"].length, "little")
        return raw[off:off + length] + bytes(max(0, off + length - len(raw)))

    async def _write_msix_pba(self, off, data):
        pass      # read-only

    # -- test back doors ---------------------------------------------------------------------------
    def set_start_index(self, index):
        """Test back door: rings start at ``index`` (the driver model's ``start_index``)."""
        self.start_index = index & 0xFFFF
        for q in self.queues:
            q.set_start_index(index)

    def interrupt_disable_set(self):
        return bool(self.interrupt_disable)

