# SPDX-License-Identifier: BSD-2-Clause
"""The virtio-pci transport, as Linux's ``virtio_pci`` module drives it.

Three parts, in the order of Linux's files:

* :class:`VirtioPciDevice` (``virtio_pci_common.c``): what both interfaces share: the interrupt
  set-up ladder of ``vp_find_vqs()`` (MSI-X with one vector per queue with a callback plus one for
  configuration changes; on failure everything is unwound, *without* a device reset, and retried
  with the next policy of the :class:`~.profiles.Profile`, then INTx), ``vp_del_vqs()``, and the
  interrupt handlers ``vp_interrupt`` (INTx: read-to-clear ISR), ``vp_vring_interrupt`` and
  ``vp_config_changed``.
* :class:`VirtioPciModern` (``virtio_pci_modern_dev.c`` + ``virtio_pci_modern.c``): the
  capability walk and checks of ``vp_modern_probe()`` / ``virtio_pci_find_capability()`` /
  ``vp_modern_map_capability()``, and the register traffic of status, features, configuration
  and queue set-up through :class:`RegisterWindow` objects, accessed by field name from the spec
  layouts.
* :func:`virtio_pci_probe` (``virtio_pci_probe()``): enable the function, try the modern
  interface, fall back to the legacy one (:mod:`.legacy`) on ``-ENODEV``, set bus mastering.

Every probe failure raises :class:`~.errors.ProbeError` with Linux's errno and log text, and is
also appended to ``pdev.dmesg``.
"""

import logging
from dataclasses import dataclass
from collections.abc import Awaitable, Callable

from cocotb.triggers import Timer
from cocotb.utils import get_sim_time

from virtio_pcie.spec.pcie import CapId, byte_size
from virtio_pcie.spec.virtio import (
    VirtioF, VirtioIsr, VirtioPciCap, VirtioPciCapType, VirtioPciCommonCfg,
    VirtioNotificationData, VirtioPciNotifyCap, VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_COMMON_CFG_MIN_LEN,
    VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
)

from ..codec import codec
from .errors import LinuxBug, LinuxError, ProbeError
from .pci import PCI_IRQ_MSIX, PCI_STD_NUM_BARS, Resource
from .profiles import IrqMode, VectorPolicy, get_profile
from .virtqueue import Virtqueue

__all__ = ["VqInfo", "RegisterWindow", "VirtioPciDevice", "VirtioPciModern", "virtio_pci_probe",
           "VIRTIO_PCI_DEVICE_ID_MIN", "VIRTIO_PCI_DEVICE_ID_MAX"]

#: virtio_pci owns device IDs 0x1000..0x107F of vendor 0x1AF4 (vp_modern_probe)
VIRTIO_PCI_DEVICE_ID_MIN = 0x1000
VIRTIO_PCI_DEVICE_ID_MAX = 0x107F

#: VP_MSIX_CONFIG_VECTOR / VP_MSIX_VQ_VECTOR (virtio_pci_common.h)
VP_MSIX_CONFIG_VECTOR = 0
VP_MSIX_VQ_VECTOR = 1

_CAP    = codec(VirtioPciCap)
_NCAP   = codec(VirtioPciNotifyCap)
_COMMON = codec(VirtioPciCommonCfg)
#: sizeof(struct virtio_pci_modern_common_cfg): what Linux maps of the common structure
_COMMON_MAP_SIZE = byte_size(VirtioPciCommonCfg)


def _end_of(name):
    """``offsetofend(struct virtio_pci_modern_common_cfg, name)``."""
    return _COMMON.offset(name) + _COMMON.field_size(name)


@dataclass
class VqInfo:
    """One entry of the ``vqs_info[]`` array a driver passes to ``find_vqs()``.

    ``name=None`` leaves a hole (no queue is created, indices are not consumed);
    ``callback=None`` makes a polled queue (no interrupt vector).
    """
    name:      str | None
    callback:  Callable[..., Awaitable] | None = None
    ctx:       bool = False
    slow_path: bool = False


@dataclass
class _QueueState:
    vq:          Virtqueue
    msix_vector: int
    slow_path:   bool = False


class RegisterWindow:
    """A virtio structure mapped from a BAR; fields are read and written by name.

    Each field is accessed with its natural width (8, 16 or 32 bits); 64-bit fields as two
    32-bit accesses, low half first (``vp_iowrite64_twopart``). An access past the mapped length
    is a :class:`~.errors.LinuxBug`.
    """

    def __init__(self, mmio, layout, length, name):
        self.mmio = mmio
        self.codec = codec(layout)
        self.length = length
        self.name = name

    def _field(self, name):
        try:
            offset, size, is_array = self.codec.fields[name]
        except KeyError:
            raise KeyError(f"{self.name} has no field {name!r}") from None
        if is_array:
            raise TypeError(f"{self.name}.{name} is an array; access it byte by byte")
        if offset + size > self.length:
            raise LinuxBug(f"{self.name}.{name} at {offset:#x}+{size} is beyond the "
                           f"{self.length:#x} bytes mapped")
        return offset, size

    async def read(self, name):
        offset, size = self._field(name)
        if size == 8:
            lo = await self.mmio.read32(offset)
            hi = await self.mmio.read32(offset + 4)
            return lo | hi << 32
        return await self.mmio.read(offset, size)

    async def write(self, name, value):
        offset, size = self._field(name)
        if size == 8:
            await self.mmio.write32(offset, value & 0xFFFFFFFF)
            await self.mmio.write32(offset + 4, value >> 32)
            return
        await self.mmio.write(offset, size, value)


class VirtioPciDevice:
    """``struct virtio_pci_device``: state and behaviour common to both interfaces.

    Subclasses provide the transport operations (status, features, configuration, queue
    set-up). ``config_changed`` is set by the virtio core to receive configuration interrupts.
    """

    is_legacy = False

    def __init__(self, pdev, *, memory, profile):
        self.pdev = pdev
        self.memory = memory
        self.profile = get_profile(profile)
        self.log = logging.getLogger(f"cocotb.virtio.pci.{pdev.name}")
        self.vqs = {}                 # queue index -> _QueueState
        self.virtqueues = []          # queues with callbacks, on the shared/INTx handler
        self.slow_virtqueues = []     # slow-path queues, on the config handler
        self.msix_enabled = False
        self.msix_vectors = 0
        self.msix_used_vectors = 0
        self.per_vq_vectors = False
        self.intx_enabled = False
        self.irq_mode = None
        self.find_vqs_attempts = []   # (IrqMode, LinuxError or None) per vp_find_vqs attempt
        self.config_changed = None    # async callable, set by the virtio core
        self.config_interrupts = 0
        self.ring_alloc_limit = None  # emulate dma_alloc_coherent failures (bytes)
        self.start_index = 0          # test back door: first ring index of new queues
        self.vq_observer = None       # test instrumentation: see Virtqueue(observer=...)
        self.device_id = None         # virtio device type
        self.has_config = False

    def dmesg(self, level, message):
        """Log like ``dev_err``/``dev_warn``/``dev_info`` and keep the line in ``pdev.dmesg``."""
        self.pdev.dmesg.append((level, message))
        getattr(self.log, level)("%s: %s", self.pdev.name, message)

    # -- interrupt handlers ----------------------------------------------------------------------
    async def _vp_config_changed(self):
        """Handle a configuration change: tell the driver, then the slow-path queues."""
        self.config_interrupts += 1
        if self.config_changed is not None:
            await self.config_changed()
        for vq in list(self.slow_virtqueues):
            await vq.vring_interrupt()
        return True

    async def _vp_vring_interrupt(self):
        """Notify all virtqueues on an interrupt."""
        handled = False
        for vq in list(self.virtqueues):
            handled |= await vq.vring_interrupt()
        return handled

    async def _vp_interrupt(self):
        """INTx: reading the ISR also clears it, so it is read exactly once."""
        isr = await self.read_isr()
        if not isr:
            return False
        if isr & VirtioIsr.CONFIG.value:
            await self._vp_config_changed()
        return await self._vp_vring_interrupt()

    # -- vp_find_vqs -----------------------------------------------------------------------------
    async def find_vqs(self, vqs_info, *, irq_mode=None):
        """``vp_find_vqs()``: create the queues and their interrupts. ``irq_mode`` forces one
        step of the ladder (an :class:`~.profiles.IrqMode`); None runs the profile's ladder."""
        if irq_mode is None:
            policies, allow_intx = self.profile.vector_policies, True
        elif irq_mode == IrqMode.INTX:
            policies, allow_intx = (), True
        else:
            policies, allow_intx = (irq_mode.policy,), False
        err = LinuxError("ENOENT", "no interrupt mode to try")
        for policy in policies:
            try:
                vqs = await self._find_vqs_msix(vqs_info, policy)
            except LinuxError as e:
                self.find_vqs_attempts.append((IrqMode.from_policy(policy), e))
                err = e
                continue
            self.irq_mode = IrqMode.from_policy(policy)
            self.find_vqs_attempts.append((self.irq_mode, None))
            return vqs
        if not allow_intx:
            raise err
        # Is there an interrupt? If not give up.
        if self.pdev.irq is None:
            raise err
        try:
            vqs = await self._find_vqs_intx(vqs_info)
        except LinuxError as e:
            self.find_vqs_attempts.append((IrqMode.INTX, e))
            raise
        self.irq_mode = IrqMode.INTX
        self.find_vqs_attempts.append((IrqMode.INTX, None))
        return vqs

    async def _request_msix_vectors(self, nvectors, per_vq_vectors):
        self.msix_vectors = nvectors
        await self.pdev.alloc_irq_vectors(nvectors, nvectors, PCI_IRQ_MSIX)
        self.msix_enabled = True
        # Set the vector used for configuration
        v = self.msix_used_vectors
        await self.pdev.request_irq(self.pdev.irq_vector(v), self._vp_config_changed, "config")
        self.msix_used_vectors += 1
        v = await self.config_vector(v)
        # Verify we had enough resources to assign the vector
        if v == VIRTIO_MSI_NO_VECTOR:
            raise LinuxError("EBUSY", "config_msix_vector read back VIRTIO_MSI_NO_VECTOR")
        if not per_vq_vectors:
            # Shared vector for all VQs
            v = self.msix_used_vectors
            await self.pdev.request_irq(self.pdev.irq_vector(v), self._vp_vring_interrupt,
                                        "virtqueues")
            self.msix_used_vectors += 1

    async def _find_vqs_msix(self, vqs_info, policy):
        per_vq_vectors = policy != VectorPolicy.SHARED
        if per_vq_vectors:
            # Best option: one for change interrupt, one per vq.
            nvectors = 1 + sum(1 for info in vqs_info if info and info.name and info.callback)
        else:
            # Second best: one for change, shared for all vqs.
            nvectors = 2
        try:
            await self._request_msix_vectors(nvectors, per_vq_vectors)
            self.per_vq_vectors = per_vq_vectors
            self._allocated_vectors = self.msix_used_vectors
            vqs = []
            queue_idx = 0
            for info in vqs_info:
                if info is None or info.name is None:
                    vqs.append(None)
                    continue
                vqs.append(await self._find_one_vq_msix(queue_idx, info, policy))
                queue_idx += 1
            return vqs
        except LinuxError:
            await self.del_vqs()
            raise

    async def _find_one_vq_msix(self, queue_idx, info, policy):
        if not info.callback:
            msix_vec = VIRTIO_MSI_NO_VECTOR
        elif policy == VectorPolicy.EACH or (policy == VectorPolicy.SHARED_SLOW and
                                             not info.slow_path):
            msix_vec = self._allocated_vectors
            self._allocated_vectors += 1
        elif policy != VectorPolicy.EACH and info.slow_path:
            msix_vec = VP_MSIX_CONFIG_VECTOR
        else:
            msix_vec = VP_MSIX_VQ_VECTOR
        vq = await self._vp_setup_vq(queue_idx, info, msix_vec)
        if (policy == VectorPolicy.SHARED or msix_vec == VIRTIO_MSI_NO_VECTOR or
                msix_vec == VP_MSIX_CONFIG_VECTOR):
            return vq
        # allocate per-vq irq if available and necessary
        await self.pdev.request_irq(self.pdev.irq_vector(msix_vec), vq.vring_interrupt,
                                    f"vq{queue_idx}")
        return vq

    async def _find_vqs_intx(self, vqs_info):
        await self.pdev.request_irq(self.pdev.irq, self._vp_interrupt, "intx")
        self.intx_enabled = True
        self.per_vq_vectors = False
        vqs = []
        queue_idx = 0
        try:
            for info in vqs_info:
                if info is None or info.name is None:
                    vqs.append(None)
                    continue
                vqs.append(await self._vp_setup_vq(queue_idx, info, VIRTIO_MSI_NO_VECTOR))
                queue_idx += 1
        except LinuxError:
            await self.del_vqs()
            raise
        return vqs

    async def _vp_setup_vq(self, index, info, msix_vec):
        vq = await self.setup_vq(index, info.callback, info.name, info.ctx, msix_vec)
        state = _QueueState(vq, msix_vec, info.slow_path)
        self.vqs[index] = state
        if info.callback:
            if msix_vec == VP_MSIX_CONFIG_VECTOR and self.msix_enabled:
                self.slow_virtqueues.append(vq)
            else:
                self.virtqueues.append(vq)
        return vq

    async def del_vqs(self):
        """``vp_del_vqs()``: unmap every queue's vector, free the interrupts and the rings,
        disable MSI-X. The device is not reset."""
        for index, state in list(self.vqs.items()):
            if self.per_vq_vectors:
                v = state.msix_vector
                if v not in (VIRTIO_MSI_NO_VECTOR, VP_MSIX_CONFIG_VECTOR):
                    await self.pdev.free_irq(self.pdev.irq_vector(v), f"vq{index}")
            for lst in (self.virtqueues, self.slow_virtqueues):
                if state.vq in lst:
                    lst.remove(state.vq)
            await self.del_vq(state)
            del self.vqs[index]
        self.per_vq_vectors = False
        if self.intx_enabled:
            await self.pdev.free_irq(self.pdev.irq, "intx")
            self.intx_enabled = False
        for i in range(self.msix_used_vectors):
            await self.pdev.free_irq(self.pdev.irq_vector(i), "config" if i == 0
                                     else "virtqueues")
        if self.msix_enabled:
            # Disable the vector used for configuration
            await self.config_vector(VIRTIO_MSI_NO_VECTOR)
            await self.pdev.free_irq_vectors()
            self.msix_enabled = False
        self.msix_vectors = 0
        self.msix_used_vectors = 0

    def _new_virtqueue(self, index, num, callback, name, ctx, *, vring_align, may_reduce_num,
                       notify, features):
        return Virtqueue(
            index=index, num=num, memory=self.memory, vring_align=vring_align,
            event_idx=features & (1 << VirtioF.EVENT_IDX),
            indirect=features & (1 << VirtioF.INDIRECT_DESC), notify=notify,
            callback=callback, name=name, ctx=ctx, may_reduce_num=may_reduce_num,
            ring_alloc_limit=self.ring_alloc_limit, page_size=self.profile.page_size,
            start_index=self.start_index, observer=self.vq_observer)

    # -- transport operations (per interface) ---------------------------------------------------
    async def read_isr(self):
        raise NotImplementedError

    async def config_vector(self, vector):
        raise NotImplementedError

    async def setup_vq(self, index, callback, name, ctx, msix_vec):
        raise NotImplementedError

    async def del_vq(self, state):
        raise NotImplementedError


class VirtioPciModern(VirtioPciDevice):
    """The modern (virtio 1.x) interface: ``virtio_pci_modern_probe`` and its config ops."""

    def __init__(self, pdev, *, memory, profile):
        super().__init__(pdev, memory=memory, profile=profile)
        self.modern_bars = 0
        self.common = None
        self.isr = None
        self.device = None
        self.common_len = 0
        self.device_len = 0
        self.notify_base = None
        self.notify_len = 0
        self.notify_map_cap = 0
        self.notify_offset_multiplier = 0
        self.features = 0
        self.reset_polls = 0
        self.reset_timeout_ns = 100_000_000

    # -- probe -------------------------------------------------------------------------------------
    def _fail(self, errno, message, level="error"):
        self.dmesg(level, message)
        return ProbeError(errno, message)

    async def _find_capability(self, cfg_type, ioresource_types):
        """``virtio_pci_find_capability()``."""
        pdev = self.pdev
        pos = await pdev.find_capability(CapId.VNDR)
        while pos > 0:
            typ = await pdev.config_read8(pos + _CAP.offset("cfg_type"))
            bar = await pdev.config_read8(pos + _CAP.offset("bar"))
            # Ignore structures with reserved BAR values
            if bar < PCI_STD_NUM_BARS and typ == cfg_type.value:
                if pdev.resource_len(bar) and pdev.resource_flags(bar) & ioresource_types:
                    self.modern_bars |= 1 << bar
                    return pos
            pos = await pdev.find_next_capability(pos, CapId.VNDR)
        return 0

    async def _map_capability(self, off, minlen, align, start, size):
        """``vp_modern_map_capability()``: returns (MmioWindow, length)."""
        pdev = self.pdev
        bar = await pdev.config_read8(off + _CAP.offset("bar"))
        offset = await pdev.config_read32(off + _CAP.offset("offset"))
        length = await pdev.config_read32(off + _CAP.offset("length"))
        # Check if the BAR may have changed since we requested the region.
        if bar >= PCI_STD_NUM_BARS or not self.modern_bars & (1 << bar):
            raise self._fail("EINVAL", f"virtio_pci: bar unexpectedly changed to {bar}")
        if length <= start:
            raise self._fail("EINVAL", f"virtio_pci: bad capability len {length} "
                                       f"(>{start} expected)")
        if length - start < minlen:
            raise self._fail("EINVAL", f"virtio_pci: bad capability len {length} "
                                       f"(>={minlen} expected)")
        length -= start
        if (start + offset) & 0xFFFFFFFF < offset:
            raise self._fail("EINVAL", f"virtio_pci: map wrap-around {start}+{offset}")
        offset = (offset + start) & 0xFFFFFFFF
        if offset & (align - 1):
            raise self._fail("EINVAL", f"virtio_pci: offset {offset} not aligned to {align}")
        if length > size:
            length = size
        bar_len = pdev.resource_len(bar)
        if minlen + offset > bar_len:
            raise self._fail("EINVAL", f"virtio_pci: map virtio {minlen}@{offset} out of range "
                                       f"on bar {bar} length {bar_len}")
        # pci_iomap_range() maps no further than the end of the BAR
        mmio = pdev.iomap(bar, offset, min(length, bar_len - offset)) if offset < bar_len \
            else None
        if mmio is None:
            raise self._fail("EINVAL", f"virtio_pci: unable to map virtio {length}@{offset} "
                                       f"on bar {bar}")
        return mmio, length

    async def probe(self):
        """``vp_modern_probe()``: find and map the structures. Raises ProbeError."""
        pdev = self.pdev
        # We only own devices >= 0x1000 and <= 0x107f: leave the rest.
        if not VIRTIO_PCI_DEVICE_ID_MIN <= pdev.device <= VIRTIO_PCI_DEVICE_ID_MAX:
            raise ProbeError("ENODEV", f"device id {pdev.device:#06x} is not virtio")
        if pdev.device < VIRTIO_PCI_MODERN_DEVICE_ID_BASE:
            # Transitional devices: use the PCI subsystem device id as virtio device id.
            self.device_id = pdev.subsystem_device
        else:
            self.device_id = pdev.device - VIRTIO_PCI_MODERN_DEVICE_ID_BASE
        io_or_mem = Resource.IO | Resource.MEM
        # check for a common config: if not, use legacy mode (bar 0).
        common = await self._find_capability(VirtioPciCapType.COMMON_CFG, io_or_mem)
        if not common:
            raise self._fail("ENODEV", "virtio_pci: leaving for legacy driver", "info")
        # If common is there, these should be too...
        isr = await self._find_capability(VirtioPciCapType.ISR_CFG, io_or_mem)
        notify = await self._find_capability(VirtioPciCapType.NOTIFY_CFG, io_or_mem)
        if not isr or not notify:
            raise self._fail("EINVAL", f"virtio_pci: missing capabilities "
                                       f"{common}/{isr}/{notify}")
        # Device capability is only mandatory for devices that have device-specific config.
        device = await self._find_capability(VirtioPciCapType.DEVICE_CFG, io_or_mem)
        try:
            pdev.request_selected_regions(self.modern_bars, "virtio-pci-modern")
        except LinuxError as e:
            raise self._fail(e.errno, e.message) from None
        try:
            mmio, self.common_len = await self._map_capability(
                common, VIRTIO_PCI_COMMON_CFG_MIN_LEN, 4, 0, _COMMON_MAP_SIZE)
            self.common = RegisterWindow(mmio, VirtioPciCommonCfg, self.common_len, "common")
            self.isr, _ = await self._map_capability(isr, 1, 1, 0, 1)
            # Read notify_off_multiplier from config space.
            self.notify_offset_multiplier = await pdev.config_read32(
                notify + _NCAP.offset("notify_off_multiplier"))
            # Read notify length and offset from config space.
            notify_length = await pdev.config_read32(notify + _NCAP.offset("cap.length"))
            notify_offset = await pdev.config_read32(notify + _NCAP.offset("cap.offset"))
            # If notify length is small, map it all now; otherwise map each VQ later.
            page = self.profile.page_size
            if notify_length + notify_offset % page <= page:
                self.notify_base, self.notify_len = await self._map_capability(
                    notify, 2, 2, 0, notify_length)
            else:
                self.notify_map_cap = notify
            if device:
                self.device, self.device_len = await self._map_capability(device, 0, 4, 0, page)
        except ProbeError:
            pdev.release_selected_regions(self.modern_bars)
            raise
        self.has_config = self.device is not None

    # -- config ops --------------------------------------------------------------------------------
    async def get_status(self):
        return await self.common.read("device_status")

    async def set_status(self, status):
        # We should never be setting status to 0.
        if status == 0:
            raise LinuxBug("vp_set_status(0)")
        await self.common.write("device_status", status)

    async def reset(self):
        """``vp_reset()``: write 0, then poll ``device_status`` until it reads 0."""
        await self.common.write("device_status", 0)
        # After writing 0 to device_status, the driver MUST wait for a read of device_status
        # to return 0 before reinitializing the device.
        started = get_sim_time("ns")
        while await self.common.read("device_status"):
            self.reset_polls += 1
            if get_sim_time("ns") - started > self.reset_timeout_ns:
                raise LinuxBug(f"device_status never read 0 after a reset "
                               f"({self.reset_timeout_ns} ns); Linux would hang here")
            await Timer(self.profile.reset_poll_ns, "ns")

    async def get_features(self):
        """``vp_modern_get_extended_features()`` (or the 64-bit version of older kernels)."""
        features = 0
        for i in range(self.profile.feature_words):
            await self.common.write("device_feature_select", i)
            features |= await self.common.read("device_feature") << (32 * i)
        return features

    async def finalize_features(self, features):
        """``vp_finalize_features()`` after the ring/transport bits were filtered."""
        if not features & (1 << VirtioF.VERSION_1):
            raise self._fail("EINVAL", "virtio: device uses modern interface but does not "
                                       "have VIRTIO_F_VERSION_1")
        for bit, field in ((VirtioF.NOTIF_CONFIG_DATA, "queue_notify_data"),
                           (VirtioF.RING_RESET, "queue_reset"),
                           (VirtioF.ADMIN_VQ, "admin_queue_num")):
            if features & (1 << bit) and self.common_len < _end_of(field):
                raise self._fail("EINVAL", f"virtio: common cfg size({self.common_len}) does "
                                           f"not match the feature VIRTIO_F_{bit.name}")
        for i in range(self.profile.feature_words):
            await self.common.write("driver_feature_select", i)
            await self.common.write("driver_feature", (features >> (32 * i)) & 0xFFFFFFFF)
        self.features = features

    async def generation(self):
        return await self.common.read("config_generation")

    def _check_config(self, offset, length):
        if self.device is None:
            raise LinuxBug("config access on a device without a DEVICE_CFG structure")
        if offset + length > self.device_len:
            raise LinuxBug(f"BUG_ON(offset + len > device_len): {offset}+{length} > "
                           f"{self.device_len}")

    async def get(self, offset, length):
        """``vp_get()``: 1, 2, 4 bytes in one access; 8 as two 32-bit reads."""
        self._check_config(offset, length)
        if length in (1, 2, 4):
            return (await self.device.read(offset, length)).to_bytes(length, "little")
        if length == 8:
            lo = await self.device.read32(offset)
            hi = await self.device.read32(offset + 4)
            return (lo | hi << 32).to_bytes(8, "little")
        raise LinuxBug(f"vp_get of {length} bytes")

    async def set(self, offset, data):
        self._check_config(offset, len(data))
        if len(data) in (1, 2, 4):
            await self.device.write(offset, len(data), int.from_bytes(data, "little"))
        elif len(data) == 8:
            await self.device.write32(offset, int.from_bytes(data[:4], "little"))
            await self.device.write32(offset + 4, int.from_bytes(data[4:], "little"))
        else:
            raise LinuxBug(f"vp_set of {len(data)} bytes")

    async def read_isr(self):
        return await self.isr.read8(0)

    async def config_vector(self, vector):
        """``vp_modern_config_vector()``: write, then read back (flush + verify)."""
        await self.common.write("config_msix_vector", vector)
        return await self.common.read("config_msix_vector")

    async def queue_vector(self, index, vector):
        await self.common.write("queue_select", index)
        await self.common.write("queue_msix_vector", vector)
        return await self.common.read("queue_msix_vector")

    # -- queues ------------------------------------------------------------------------------------
    async def _map_vq_notify(self, index):
        """``vp_modern_map_vq_notify()``: (window, offset) of the queue's doorbell, or None."""
        await self.common.write("queue_select", index)
        off = await self.common.read("queue_notify_off")
        mult = self.notify_offset_multiplier
        if self.notify_base is not None:
            # offset should not wrap
            if off * mult + 2 > self.notify_len:
                self.dmesg("warning", f"bad notification offset {off} (x {mult}) for queue "
                                      f"{index} > {self.notify_len}")
                return None
            return self.notify_base, off * mult
        try:
            mmio, _ = await self._map_capability(self.notify_map_cap, 2, 2, off * mult, 2)
        except ProbeError:
            return None
        return mmio, 0

    async def setup_vq(self, index, callback, name, ctx, msix_vec):
        """``setup_vq()`` + ``vp_active_vq()`` of virtio_pci_modern.c."""
        if index >= await self.common.read("num_queues"):
            raise LinuxError("EINVAL", f"queue {index} >= num_queues")
        await self.common.write("queue_select", index)
        num = await self.common.read("queue_size")
        await self.common.write("queue_select", index)
        enabled = await self.common.read("queue_enable")
        # Check if queue is either not available or already active.
        if not num or enabled:
            raise LinuxError("ENOENT", f"queue {index}: size {num}, enable {enabled}")
        with_data = self.features & (1 << VirtioF.NOTIFICATION_DATA)
        vq = self._new_virtqueue(
            index, num, callback, name, ctx, vring_align=self.profile.smp_cache_bytes,
            may_reduce_num=True, features=self.features,
            notify=self._notify_with_data if with_data else self._notify)
        try:
            # activate the queue
            await self.common.write("queue_select", index)
            await self.common.write("queue_size", vq.num)
            await self.common.write("queue_select", index)
            await self.common.write("queue_desc", vq.desc_addr)
            await self.common.write("queue_driver", vq.avail_addr)
            await self.common.write("queue_device", vq.used_addr)
            if msix_vec != VIRTIO_MSI_NO_VECTOR:
                if await self.queue_vector(index, msix_vec) == VIRTIO_MSI_NO_VECTOR:
                    raise LinuxError("EBUSY", f"queue {index}: queue_msix_vector read back "
                                              f"VIRTIO_MSI_NO_VECTOR")
            vq.priv = await self._map_vq_notify(index)
            if vq.priv is None:
                raise LinuxError("ENOMEM", f"queue {index}: cannot map its notification "
                                           f"address")
        except LinuxError:
            vq.free_ring()
            raise
        return vq

    async def del_vq(self, state):
        if self.msix_enabled:
            await self.queue_vector(state.vq.index, VIRTIO_MSI_NO_VECTOR)
        state.vq.free_ring()

    async def enable_queues(self):
        """Select and activate all queues (``vp_modern_find_vqs`` after ``vp_find_vqs``)."""
        for index in sorted(self.vqs):
            await self.common.write("queue_select", index)
            await self.common.write("queue_enable", 1)

    async def _notify(self, vq):
        """``vp_notify()``: the queue's index, 16 bits, to its notification address."""
        window, offset = vq.priv
        await window.write16(offset, vq.index)
        return True

    async def _notify_with_data(self, vq):
        """``vp_notify_with_data()``: ``avail_idx << 16 | index``, 32 bits."""
        window, offset = vq.priv
        value = VirtioNotificationData.const({"vqn": vq.index, "next_idx": vq.avail_idx_shadow})
        await window.write32(offset, value.as_value().value)
        return True

    async def remove(self):
        self.pdev.release_selected_regions(self.modern_bars)


async def virtio_pci_probe(pdev, *, memory, profile="linux-6.12", force_legacy=False):
    """``virtio_pci_probe()``: enable the function, probe the modern interface (or, with
    ``force_legacy``, the legacy one first), fall back on ``-ENODEV``, set bus mastering.

    Returns the transport (:class:`VirtioPciModern` or :class:`~.legacy.VirtioPciLegacy`);
    raises :class:`~.errors.ProbeError` as Linux fails the probe.
    """
    from .legacy import VirtioPciLegacy
    await pdev.enable_device()
    modern = VirtioPciModern(pdev, memory=memory, profile=profile)
    legacy = VirtioPciLegacy(pdev, memory=memory, profile=profile)
    order = (legacy, modern) if force_legacy else (modern, legacy)
    first_error = None
    try:
        try:
            await order[0].probe()
            transport = order[0]
        except ProbeError as e:
            first_error = e
            retry = e.errno == "ENODEV" or (force_legacy and e.errno == "ENOMEM")
            if not retry:
                raise
            try:
                await order[1].probe()
            except ProbeError as e2:
                # The kernel log shows both; the modern message is the informative one when the
                # legacy probe merely declined the device.
                if e2.errno == "ENODEV" and first_error is not None:
                    raise first_error from e2
                raise
            transport = order[1]
    except ProbeError:
        await pdev.disable_device()
        raise
    await pdev.set_master()
    return transport
