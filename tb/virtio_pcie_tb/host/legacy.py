# SPDX-License-Identifier: BSD-2-Clause
"""The legacy (virtio 0.9.5) PCI interface, as ``virtio_pci_legacy.c`` and
``virtio_pci_legacy_dev.c`` drive it.

Everything lives in I/O BAR 0 (:data:`~virtio_pcie.spec.virtio.VirtioPciLegacyHeader`): 32 feature
bits, one status byte with no FEATURES_OK step, a reset that is a write of 0 followed by a single
read (no polling), queues activated by writing the page frame number of a contiguous ring aligned
to 4096 bytes (``QUEUE_PFN``; rings above 2^44 bytes are refused as a "platform bug"), one
notification register, and the device configuration read and written byte by byte at an offset
that moves by 4 bytes while MSI-X is enabled (``VIRTIO_PCI_CONFIG_OFF``).

Only transitional device IDs (0x1000..0x103F) with Revision ID 0 are taken; the virtio device type
is the PCI subsystem device ID.
"""

from virtio_pcie.spec.virtio import (
    LEGACY_QUEUE_ADDR_SHIFT, LEGACY_VRING_ALIGN, VirtioPciLegacyHeader, VirtioPciLegacyMsix,
    VIRTIO_MSI_NO_VECTOR, legacy_device_config_offset, byte_size,
)

from ..codec import codec
from .errors import LinuxBug, LinuxError, ProbeError
from .transport import VIRTIO_PCI_DEVICE_ID_MIN, VirtioPciDevice

__all__ = ["VirtioPciLegacy", "VIRTIO_PCI_LEGACY_DEVICE_ID_MAX", "VIRTIO_PCI_ABI_VERSION"]

#: vp_legacy_probe: "We only own devices >= 0x1000 and <= 0x103f: leave the rest."
VIRTIO_PCI_LEGACY_DEVICE_ID_MAX = 0x103F
#: The PCI Revision ID of a legacy device (VIRTIO_PCI_ABI_VERSION).
VIRTIO_PCI_ABI_VERSION = 0

_HDR  = codec(VirtioPciLegacyHeader)
_MSIX = codec(VirtioPciLegacyMsix)
_MSIX_BASE = byte_size(VirtioPciLegacyHeader)


class VirtioPciLegacy(VirtioPciDevice):
    """``virtio_pci_legacy_probe`` and the legacy config ops."""

    is_legacy = True

    def __init__(self, pdev, *, memory, profile):
        super().__init__(pdev, memory=memory, profile=profile)
        self.io = None
        self.features = 0

    async def _r(self, name):
        return await self.io.read(_HDR.offset(name), _HDR.field_size(name))

    async def _w(self, name, value):
        await self.io.write(_HDR.offset(name), _HDR.field_size(name), value)

    async def _rv(self, name):
        return await self.io.read16(_MSIX_BASE + _MSIX.offset(name))

    async def _wv(self, name, value):
        await self.io.write16(_MSIX_BASE + _MSIX.offset(name), value)

    async def probe(self):
        """``vp_legacy_probe()``."""
        pdev = self.pdev
        if not VIRTIO_PCI_DEVICE_ID_MIN <= pdev.device <= VIRTIO_PCI_LEGACY_DEVICE_ID_MAX:
            raise ProbeError("ENODEV", f"device id {pdev.device:#06x} is not a legacy virtio "
                                       f"device")
        if pdev.revision != VIRTIO_PCI_ABI_VERSION:
            raise ProbeError("ENODEV", f"revision {pdev.revision} is not the legacy ABI "
                                       f"version {VIRTIO_PCI_ABI_VERSION}")
        try:
            pdev.request_selected_regions(1 << 0, "virtio-pci-legacy")
        except LinuxError as e:
            raise ProbeError(e.errno, e.message) from None
        self.io = pdev.iomap(0)
        if self.io is None:
            pdev.release_selected_regions(1 << 0)
            raise ProbeError("EIO", "virtio-pci-legacy: cannot map BAR0")
        self.device_id = pdev.subsystem_device
        self.has_config = True

    def _config_off(self):
        return legacy_device_config_offset(self.msix_enabled)

    # -- config ops --------------------------------------------------------------------------------
    async def get_status(self):
        return await self._r("status")

    async def set_status(self, status):
        if status == 0:
            raise LinuxBug("vp_set_status(0)")
        await self._w("status", status)

    async def reset(self):
        """0 means a reset; one read flushes it (the legacy driver does not poll)."""
        await self._w("status", 0)
        await self._r("status")

    async def get_features(self):
        return await self._r("host_features")

    async def finalize_features(self, features):
        # Make sure we don't have any features > 32 bits!
        if features >> 32:
            raise LinuxBug(f"legacy features above bit 31: {features:#x}")
        await self._w("guest_features", features)
        self.features = features

    async def generation(self):
        return 0    # the legacy interface has no config_generation

    async def get(self, offset, length):
        base = self._config_off() + offset
        return bytes([await self.io.read8(base + i) for i in range(length)])

    async def set(self, offset, data):
        base = self._config_off() + offset
        for i, b in enumerate(data):
            await self.io.write8(base + i, b)

    async def read_isr(self):
        return await self._r("isr")

    async def config_vector(self, vector):
        await self._wv("config_vector", vector)
        # Verify we had enough resources to assign the vector (also flushes the write).
        return await self._rv("config_vector")

    async def queue_vector(self, index, vector):
        await self._w("queue_sel", index)
        await self._wv("queue_vector", vector)
        return await self._rv("queue_vector")

    async def _set_queue_address(self, index, pfn):
        await self._w("queue_sel", index)
        await self._w("queue_pfn", pfn)

    async def setup_vq(self, index, callback, name, ctx, msix_vec):
        """``setup_vq()`` of virtio_pci_legacy.c."""
        # Check if queue is either not available or already active.
        await self._w("queue_sel", index)
        num = await self._r("queue_num")
        await self._w("queue_sel", index)
        active = await self._r("queue_pfn")
        if not num or active:
            raise LinuxError("ENOENT", f"queue {index}: size {num}, pfn {active:#x}")
        vq = self._new_virtqueue(index, num, callback, name, ctx,
                                 vring_align=LEGACY_VRING_ALIGN, may_reduce_num=False,
                                 features=self.features, notify=self._notify)
        q_pfn = vq.desc_addr >> LEGACY_QUEUE_ADDR_SHIFT
        if q_pfn >> 32:
            limit_gb = 1 << (32 + LEGACY_QUEUE_ADDR_SHIFT - 30)
            self.dmesg("error", f"platform bug: legacy virtio-pci must not be used with RAM "
                                f"above {limit_gb:#x}GB")
            vq.free_ring()
            raise LinuxError("E2BIG", "legacy ring above the 32-bit PFN range")
        # activate the queue
        await self._set_queue_address(index, q_pfn)
        vq.priv = None
        if msix_vec != VIRTIO_MSI_NO_VECTOR:
            if await self.queue_vector(index, msix_vec) == VIRTIO_MSI_NO_VECTOR:
                await self._set_queue_address(index, 0)
                vq.free_ring()
                raise LinuxError("EBUSY", f"queue {index}: queue vector read back "
                                          f"VIRTIO_MSI_NO_VECTOR")
        return vq

    async def del_vq(self, state):
        if self.msix_enabled:
            await self.queue_vector(state.vq.index, VIRTIO_MSI_NO_VECTOR)
            # Flush the write out to device
            await self._r("isr")
        # Select and deactivate the queue
        await self._set_queue_address(state.vq.index, 0)
        state.vq.free_ring()

    async def enable_queues(self):
        """Legacy queues are live from the ``QUEUE_PFN`` write: nothing to do."""

    async def _notify(self, vq):
        await self._w("queue_notify", vq.index)
        return True

    async def remove(self):
        self.pdev.release_selected_regions(1 << 0)
