# SPDX-License-Identifier: BSD-2-Clause
"""The register traffic of Linux's virtio_pci drivers, replayed access by access.

The sequences follow ``drivers/virtio/virtio.c`` (``register_virtio_device``,
``virtio_dev_probe``, ``virtio_features_ok``), ``virtio_pci_common.c`` (``vp_find_vqs`` and its
vector-policy ladder), ``virtio_pci_modern.c`` / ``virtio_pci_modern_dev.c`` (``setup_vq``,
``vp_active_vq``, ``del_vq``, ``vp_reset``) and ``virtio_pci_legacy.c`` /
``virtio_pci_legacy_dev.c``, as summarised in the project checklist §3.2-§3.6 and §1.O. Every
register access Linux makes is made here, in the same order, with the same width.

The models sit on abstract register windows: a :class:`~.register_bus.LayoutWindow` for the
common configuration and objects with ``read(offset, size)`` / ``write(offset, value, size)``
for the others, so the same code can run over a register-bus driver (transport tests) or over
BAR accesses through the root complex (system tests). MSI-X allocation is a platform service
(:class:`MsixPlatform`): the PCI core enables MSI-X in configuration space.
"""

import logging

from virtio_pcie.spec.virtio import (LEGACY_QUEUE_ADDR_SHIFT, LEGACY_VRING_ALIGN,
                                     VIRTIO_MSI_NO_VECTOR, DeviceStatus, VirtioF,
                                     VirtioPciLegacyHeader, VirtioPciLegacyMsix, byte_offset,
                                     byte_size, legacy_device_config_offset,
                                     legacy_vring_layout, virtq_avail_size, virtq_desc_size)

__all__ = ["DriverError", "MsixPlatform", "Ring", "QueueRequest", "ModernVirtioPciDriver",
           "LegacyVirtioPciDriver", "SMP_CACHE_BYTES"]

#: vring_create_virtqueue() alignment of the used ring for modern split rings (x86).
SMP_CACHE_BYTES = 64

ACK, DRIVER, DRIVER_OK, FEATURES_OK, FAILED = (
    DeviceStatus.ACKNOWLEDGE.value, DeviceStatus.DRIVER.value, DeviceStatus.DRIVER_OK.value,
    DeviceStatus.FEATURES_OK.value, DeviceStatus.FAILED.value)


class DriverError(Exception):
    """The driver gave up (Linux would return this errno name from probe)."""

    def __init__(self, errno, message):
        super().__init__(f"{errno}: {message}")
        self.errno = errno


class MsixPlatform:
    """The PCI core's MSI-X service: ``pci_alloc_irq_vectors`` / ``pci_free_irq_vectors``.

    ``set_enable(bool)`` is called to flip MSI-X Enable in configuration space. ``table_size``
    is what the capability advertises; ``grant_more`` makes allocation succeed beyond it (a
    platform bug, used to make the device refuse vectors).
    """

    def __init__(self, table_size, set_enable, *, grant_more=False):
        self.table_size = table_size
        self.set_enable = set_enable
        self.grant_more = grant_more
        self.enabled = False
        self.allocations = []     # vector counts asked for, in order

    def alloc(self, nvectors):
        self.allocations.append(nvectors)
        if self.table_size == 0 or (nvectors > self.table_size and not self.grant_more):
            return False
        self.enabled = True
        self.set_enable(True)
        return True

    def free(self):
        if self.enabled:
            self.enabled = False
            self.set_enable(False)


class Ring:
    """Addresses of a split ring as ``vring_init(num, align)`` lays it out in one block."""

    def __init__(self, base, num, align=SMP_CACHE_BYTES):
        self.num = num
        self.desc = base
        self.avail = base + virtq_desc_size(num)
        end = self.avail + virtq_avail_size(num)
        self.used = (end + align - 1) // align * align


class QueueRequest:
    """One queue a device driver asks ``find_vqs`` for (``callback`` False = polled, no vector)."""

    def __init__(self, index, *, callback=True, size=None):
        self.index = index
        self.callback = callback
        self.size = size          # None: the size the device offers (vring may shrink it)


class _Allocator:
    def __init__(self, base=0x1_2340_0000):
        self.next = base

    def __call__(self, size, align=4096):
        self.next = (self.next + align - 1) // align * align
        base = self.next
        self.next += size
        return base


class _VirtioPciDriver:
    def __init__(self, *, msix, log_name):
        self.msix = msix
        self.alloc = _Allocator()
        self.log = logging.getLogger(f"cocotb.virtio.{log_name}")
        self.rings = {}            # queue index -> Ring
        self.vectors = {}          # queue index -> vector
        self.config_vector = VIRTIO_MSI_NO_VECTOR
        self.policy = None
        self.features = 0
        self.reset_polls = 0

    async def add_status(self, bits):
        """virtio_add_status(): always read-modify-write."""
        await self.set_status(await self.get_status() | bits)

    # vp_find_vqs() (virtio_pci_common.c): per-VQ vectors, then shared, then INTx ---

    async def find_vqs(self, queues):
        for policy in ("each", "shared", "intx"):
            try:
                await self._find_vqs_policy(queues, policy)
                self.policy = policy
                return policy
            except DriverError as e:
                self.log.info("find_vqs with %s vectors failed: %s", policy, e)
        raise DriverError("EBUSY", "no interrupt policy worked")

    async def _find_vqs_policy(self, queues, policy):
        callbacks = sum(1 for q in queues if q.callback)
        if policy == "intx":
            done = []
            for q in queues:
                await self.setup_vq(q, VIRTIO_MSI_NO_VECTOR)
                done.append(q)
            return
        nvectors = 1 + callbacks if policy == "each" else 2
        if not self.msix.alloc(nvectors):
            raise DriverError("ENOSPC", f"cannot allocate {nvectors} MSI-X vectors")
        self.msix_enabled = True
        done = []
        try:
            # vp_request_msix_vectors(): the configuration vector is vector 0.
            vector = await self.write_config_vector(0)
            if vector == VIRTIO_MSI_NO_VECTOR:
                raise DriverError("EBUSY", "device refused the configuration vector")
            self.config_vector = 0
            next_vector = 1
            for q in queues:
                if not q.callback:
                    msix_vec = VIRTIO_MSI_NO_VECTOR
                elif policy == "each":
                    msix_vec = next_vector
                    next_vector += 1
                else:
                    msix_vec = 1
                await self.setup_vq(q, msix_vec)
                done.append(q)
        except DriverError:
            await self.del_vqs(done)
            raise

    async def del_vqs(self, queues):
        """vp_del_vqs(): del_vq() for each queue, then unmap the configuration vector and free
        the MSI-X vectors -- no device reset."""
        for q in queues:
            await self.del_vq(q.index)
        if self.msix.enabled:
            await self.write_config_vector(VIRTIO_MSI_NO_VECTOR)
            self.config_vector = VIRTIO_MSI_NO_VECTOR
        self.msix.free()
        self.msix_enabled = False


class ModernVirtioPciDriver(_VirtioPciDriver):
    """``virtio_pci_modern`` over the common / ISR / device / notify windows.

    Parameters
    ----------
    common : LayoutWindow
        Over :data:`~virtio_pcie.spec.virtio.VirtioPciCommonCfg`.
    isr, device, notify
        Byte-addressed windows (``read(offset, size)``, ``write(offset, value, size)``).
    notify_off_multiplier, notify_length : int
        From the notification capability.
    extended_features : bool
        Read and write feature selects 0..3 (Linux with 128-bit features) instead of 0..1.
    """

    def __init__(self, *, common, isr, device, notify, notify_off_multiplier, notify_length,
                 msix, extended_features=True):
        super().__init__(msix=msix, log_name="modern")
        self.common, self.isr, self.device, self.notify_window = common, isr, device, notify
        self.notify_off_multiplier = notify_off_multiplier
        self.notify_length = notify_length
        self.feature_windows = 4 if extended_features else 2
        self.notify_offsets = {}
        self.msix_enabled = False

    # Status (vp_get_status / vp_set_status / vp_reset) ---

    async def get_status(self):
        return await self.common.read("device_status")

    async def set_status(self, status):
        assert status != 0, "vp_set_status() never writes 0; use reset()"
        await self.common.write("device_status", status)

    async def reset(self, poll_limit=100_000):
        """vp_reset(): write 0, then poll until it reads 0 (Linux sleeps 1 ms per poll, with no
        timeout; ``poll_limit`` only keeps a broken device from hanging the test)."""
        await self.common.write("device_status", 0)
        self.reset_polls = 0
        while await self.get_status():
            self.reset_polls += 1
            if self.reset_polls >= poll_limit:
                raise DriverError("ETIMEDOUT", "device_status never read 0 after reset")

    # Features (vp_get_features / vp_finalize_features / virtio_features_ok) ---

    async def get_features(self):
        features = 0
        for i in range(self.feature_windows):
            await self.common.write("device_feature_select", i)
            features |= await self.common.read("device_feature") << (32 * i)
        return features

    async def write_features(self, features):
        for i in range(self.feature_windows):
            await self.common.write("driver_feature_select", i)
            await self.common.write("driver_feature", features >> (32 * i) & 0xFFFF_FFFF)

    async def negotiate(self, driver_features):
        """virtio_dev_probe() up to FEATURES_OK. Returns the negotiated features, or raises
        (after writing FAILED) if the device refuses them."""
        await self.add_status(DRIVER)
        device_features = await self.get_features()
        features = device_features & driver_features
        if not features >> VirtioF.VERSION_1 & 1:
            await self.add_status(FAILED)
            raise DriverError("ENODEV", "device uses modern interface but does not have "
                                        "VIRTIO_F_VERSION_1")
        await self.write_features(features)
        await self.add_status(FEATURES_OK)
        status = await self.get_status()
        if not status & FEATURES_OK:
            await self.add_status(FAILED)
            raise DriverError("ENODEV", f"virtio: device refuses features: {status:#x}")
        self.features = features
        return features

    async def write_config_vector(self, vector):
        """vp_modern_config_vector(): write, read back."""
        await self.common.write("config_msix_vector", vector)
        return await self.common.read("config_msix_vector")

    # Queues (setup_vq / vp_active_vq / del_vq) ---

    async def setup_vq(self, q, msix_vec):
        index = q.index
        if index >= await self.common.read("num_queues"):
            raise DriverError("EINVAL", f"queue {index} beyond num_queues")
        await self.common.write("queue_select", index)
        num = await self.common.read("queue_size")
        await self.common.write("queue_select", index)
        enabled = await self.common.read("queue_enable")
        if not num or enabled:
            raise DriverError("ENOENT", f"queue {index} not available (size {num}, enable "
                                        f"{enabled})")
        if q.size is not None:
            num = q.size
        ring = self.rings.get(index)
        if ring is None or ring.num != num:
            ring = self.rings[index] = Ring(self.alloc(virtq_desc_size(num) * 2 + 8 * num), num)
        await self.active_vq(index, ring, msix_vec)
        # vp_modern_map_vq_notify()
        await self.common.write("queue_select", index)
        off = await self.common.read("queue_notify_off")
        offset = off * self.notify_off_multiplier
        if offset + 2 > self.notify_length:
            raise DriverError("EINVAL", f"bad notification offset {off} for queue {index}")
        self.notify_offsets[index] = offset
        self.vectors[index] = msix_vec
        return ring

    async def active_vq(self, index, ring, msix_vec):
        """vp_active_vq(): size, the three addresses, then the vector with read-back."""
        await self.common.write("queue_select", index)
        await self.common.write("queue_size", ring.num)
        await self.common.write("queue_select", index)
        await self.common.write("queue_desc", ring.desc)
        await self.common.write("queue_driver", ring.avail)
        await self.common.write("queue_device", ring.used)
        if msix_vec != VIRTIO_MSI_NO_VECTOR:
            await self.common.write("queue_select", index)
            await self.common.write("queue_msix_vector", msix_vec)
            if await self.common.read("queue_msix_vector") == VIRTIO_MSI_NO_VECTOR:
                raise DriverError("EBUSY", f"device refused vector {msix_vec} for queue {index}")

    async def del_vq(self, index):
        if self.msix_enabled:
            await self.common.write("queue_select", index)
            await self.common.write("queue_msix_vector", VIRTIO_MSI_NO_VECTOR)
            await self.common.read("queue_msix_vector")
        self.vectors.pop(index, None)

    async def find_vqs(self, queues):
        """vp_modern_find_vqs(): vp_find_vqs(), then enable every queue (the point of no
        return)."""
        policy = await super().find_vqs(queues)
        for q in queues:
            await self.common.write("queue_select", q.index)
            await self.common.write("queue_enable", 1)
        return policy

    async def probe(self, driver_features, queues):
        """register_virtio_device() + virtio_dev_probe() + a driver's probe: reset,
        ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK."""
        await self.reset()
        await self.add_status(ACK)
        features = await self.negotiate(driver_features)
        await self.find_vqs(queues)
        await self.add_status(DRIVER_OK)
        return features

    async def kick(self, index):
        """vp_notify(): a 16-bit write of the queue index at its doorbell."""
        await self.notify_window.write(self.notify_offsets[index], index, 2)

    async def read_isr(self):
        return await self.isr.read(0, 1)

    # Configuration space (vp_get, vp_generation, virtio_cread_bytes) ---

    async def generation(self):
        return await self.common.read("config_generation")

    async def config_read(self, offset, size):
        """virtio_cread: 1/2/4-byte reads; 8-byte fields as two 32-bit reads inside the
        generation loop (``__virtio_cread_many``)."""
        if size in (1, 2, 4):
            return await self.device.read(offset, size)
        while True:
            gen = await self.generation()
            value = 0
            for i in range(0, size, 4):
                value |= await self.device.read(offset + i, 4) << (8 * i)
            if await self.generation() == gen:
                return value


class LegacyVirtioPciDriver(_VirtioPciDriver):
    """``virtio_pci_legacy`` over the legacy I/O window (any object with ``read`` / ``write``)."""

    def __init__(self, *, io, msix):
        super().__init__(msix=msix, log_name="legacy")
        self.io = io
        self.msix_enabled = False

    def _at(self, name):
        return byte_offset(VirtioPciLegacyHeader, name)

    def _vector_at(self, name):
        return byte_size(VirtioPciLegacyHeader) + byte_offset(VirtioPciLegacyMsix, name)

    async def _read(self, name):
        return await self.io.read(self._at(name), byte_size(VirtioPciLegacyHeader[name].shape))

    async def _write(self, name, value):
        await self.io.write(self._at(name), value, byte_size(VirtioPciLegacyHeader[name].shape))

    async def get_status(self):
        return await self._read("status")

    async def set_status(self, status):
        assert status != 0
        await self._write("status", status)

    async def reset(self):
        """vp_reset() (legacy): write 0, then one read to flush the write -- no polling. Returns
        what that read saw."""
        await self._write("status", 0)
        return await self._read("status")

    async def negotiate(self, driver_features):
        """Legacy: read HOST_FEATURES, write GUEST_FEATURES (bits 0-31); no FEATURES_OK."""
        await self.add_status(DRIVER)
        device_features = await self._read("host_features")
        features = device_features & driver_features & 0xFFFF_FFFF
        await self._write("guest_features", features)
        self.features = features
        return features

    async def write_config_vector(self, vector):
        await self.io.write(self._vector_at("config_vector"), vector, 2)
        return await self.io.read(self._vector_at("config_vector"), 2)

    async def setup_vq(self, q, msix_vec):
        index = q.index
        await self._write("queue_sel", index)
        num = await self._read("queue_num")
        await self._write("queue_sel", index)
        if not num or await self._read("queue_pfn"):
            raise DriverError("ENOENT", f"queue {index} not available")
        ring = self.rings.get(index)
        if ring is None:
            desc, avail, used = legacy_vring_layout(0, num, LEGACY_VRING_ALIGN)
            base = self.alloc(used + 6 + 8 * num, LEGACY_VRING_ALIGN)
            ring = self.rings[index] = Ring(base, num, LEGACY_VRING_ALIGN)
        pfn = ring.desc >> LEGACY_QUEUE_ADDR_SHIFT
        if pfn >> 32:
            raise DriverError("E2BIG", "platform bug: legacy virtio-pci must not be used with "
                                       "RAM above 0x10000000000")
        await self._write("queue_sel", index)
        await self._write("queue_pfn", pfn)
        if msix_vec != VIRTIO_MSI_NO_VECTOR:
            await self._write("queue_sel", index)
            await self.io.write(self._vector_at("queue_vector"), msix_vec, 2)
            if await self.io.read(self._vector_at("queue_vector"), 2) == VIRTIO_MSI_NO_VECTOR:
                await self._write("queue_sel", index)
                await self._write("queue_pfn", 0)
                raise DriverError("EBUSY", f"device refused vector {msix_vec}")
        self.vectors[index] = msix_vec
        return ring

    async def del_vq(self, index):
        await self._write("queue_sel", index)
        if self.msix_enabled:
            await self.io.write(self._vector_at("queue_vector"), VIRTIO_MSI_NO_VECTOR, 2)
            await self._read("isr")          # flush the write out to the device
        await self._write("queue_sel", index)
        await self._write("queue_pfn", 0)
        self.vectors.pop(index, None)

    async def probe(self, driver_features, queues):
        await self.reset()
        await self.add_status(ACK)
        features = await self.negotiate(driver_features)
        await self.find_vqs(queues)
        await self.add_status(DRIVER_OK)
        return features

    async def kick(self, index):
        await self._write("queue_notify", index)

    async def read_isr(self):
        return await self._read("isr")

    def config_offset(self):
        return legacy_device_config_offset(self.msix_enabled)

    async def config_read(self, offset, size):
        """vp_get() (legacy): byte by byte at VIRTIO_PCI_CONFIG_OFF(msix_enabled)."""
        base = self.config_offset() + offset
        value = 0
        for i in range(size):
            value |= await self.io.read(base + i, 1) << (8 * i)
        return value

    async def config_write(self, offset, value, size):
        base = self.config_offset() + offset
        for i in range(size):
            await self.io.write(base + i, value >> (8 * i) & 0xFF, 1)
