# SPDX-License-Identifier: BSD-2-Clause
"""The virtio core (``drivers/virtio/virtio.c``): device registration and driver binding.

:class:`VirtioDevice` is one ``struct virtio_device`` on top of a transport. It runs the status
sequence exactly as Linux does (every status change is a read-modify-write):

1. ``register_virtio_device``: reset (modern: write 0 and poll until 0), ACKNOWLEDGE;
2. ``virtio_dev_probe``: DRIVER; read the device features (64 or 128 bits, per profile); keep
   driver table ∩ device features, plus every offered transport bit, which the ring and
   transport code then filter; write them (``finalize_features``); let the driver ``validate``
   (re-write if it changed anything); FEATURES_OK and read it back ("device refuses features" if
   the device cleared it); the driver's ``probe`` (queues, configuration, DRIVER_OK); DRIVER_OK
   if the driver did not set it; then configuration-change notifications are delivered.

Any failure sets FAILED (``status | 0x80``) and raises :class:`~.errors.ProbeError`.

:class:`VirtioDriver` is the base of the per-device drivers (``struct virtio_driver``): a feature
table (and a legacy one), ``validate``, ``probe``, ``remove`` and ``config_changed``.
Configuration reads go through :meth:`VirtioDevice.cread`, which repeats multi-part reads while
``config_generation`` changes, as ``__virtio_cread_many`` does.
"""

import logging

import cocotb

from virtio_pcie.spec.virtio import DeviceStatus, VirtioF

from ..codec import codec
from .errors import LinuxBug, LinuxError, ProbeError
from .profiles import get_profile
from .transport import virtio_pci_probe

__all__ = ["VirtioDevice", "VirtioDriver"]

_S_ACKNOWLEDGE = DeviceStatus.ACKNOWLEDGE.value
_S_DRIVER      = DeviceStatus.DRIVER.value
_S_DRIVER_OK   = DeviceStatus.DRIVER_OK.value
_S_FEATURES_OK = DeviceStatus.FEATURES_OK.value
_S_FAILED      = DeviceStatus.FAILED.value

#: Transport features the model cannot carry out although Linux would negotiate them.
_UNSUPPORTED = {
    VirtioF.RING_PACKED: "the packed virtqueue layout",
    VirtioF.ADMIN_VQ: "administration virtqueues",
}


class VirtioDriver:
    """Base of a virtio device driver (``struct virtio_driver``).

    Subclasses set :attr:`device_id`, :attr:`feature_table` (and :attr:`feature_table_legacy`)
    and implement :meth:`probe`; :meth:`validate`, :meth:`remove` and :meth:`config_changed`
    are optional.
    """

    name = "virtio"
    device_id = None
    feature_table = ()
    feature_table_legacy = None

    def __init__(self):
        self.vdev = None
        self.log = logging.getLogger(f"cocotb.virtio.{self.name}")

    async def validate(self, vdev):
        """Called after the first ``finalize_features``; may clear feature bits."""

    async def probe(self, vdev):
        raise NotImplementedError

    async def remove(self, vdev):
        await vdev.reset_device()
        await vdev.del_vqs()

    async def config_changed(self, vdev):
        """A configuration-change interrupt arrived (runs as a work item)."""


class VirtioDevice:
    """``struct virtio_device`` over a virtio-pci transport."""

    def __init__(self, transport):
        self.transport = transport
        self.profile = transport.profile
        self.id = transport.device_id
        self.log = logging.getLogger(f"cocotb.virtio.core.{transport.pdev.name}")
        self.device_features = 0
        self.features = 0
        self.driver = None
        self.config_core_enabled = False
        self.config_change_pending = False
        self.config_changes = 0
        self.status_trace = []        # every value written to device_status
        transport.config_changed = self._config_changed_irq

    @property
    def pdev(self):
        return self.transport.pdev

    def dmesg(self, level, message):
        self.pdev.dmesg.append((level, message))
        getattr(self.log, level)("%s: %s", self.pdev.name, message)

    # -- status ------------------------------------------------------------------------------------
    async def get_status(self):
        return await self.transport.get_status()

    async def _set_status(self, status):
        self.status_trace.append(status)
        await self.transport.set_status(status)

    async def add_status(self, status):
        """``virtio_add_status()``: read, OR, write."""
        await self._set_status(await self.get_status() | status)

    async def reset_device(self):
        """``virtio_reset_device()``."""
        self.status_trace.append(0)
        await self.transport.reset()

    async def device_ready(self):
        """``virtio_device_ready()``: set DRIVER_OK (the device may now use the queues)."""
        status = await self.get_status()
        if status & _S_DRIVER_OK:
            self.dmesg("warning", "virtio_device_ready: DRIVER_OK already set")
        await self._set_status(status | _S_DRIVER_OK)

    async def register(self):
        """``register_virtio_device()``: reset (in case a previous driver messed it up), then
        acknowledge that we've seen the device."""
        await self.reset_device()
        await self.add_status(_S_ACKNOWLEDGE)

    # -- features ----------------------------------------------------------------------------------
    def has_feature(self, bit):
        """``virtio_has_feature()``; device-type bits must be in the driver's table (else BUG)."""
        bit = int(bit)
        is_transport = (self.profile.transport_feature_start <= bit <
                        self.profile.transport_feature_end)
        if not is_transport and self.driver is not None:
            tables = set(self.driver.feature_table) | set(self.driver.feature_table_legacy or ())
            if bit not in {int(b) for b in tables}:
                raise LinuxBug(f"virtio_check_driver_offered_feature: bit {bit} is not in "
                               f"the {self.driver.name} feature table")
        return bool(self.features & (1 << bit))

    def clear_feature(self, bit):
        self.features &= ~(1 << int(bit))

    async def _finalize_features(self):
        for bit, what in _UNSUPPORTED.items():
            if self.features & (1 << bit):
                raise NotImplementedError(
                    f"the device offers VIRTIO_F_{bit.name}; Linux would use {what}, which this "
                    f"host model does not implement")
        await self.transport.finalize_features(self.features)

    # -- binding -----------------------------------------------------------------------------------
    async def probe_driver(self, driver):
        """``virtio_dev_probe()``: negotiate, then run ``driver.probe``."""
        if driver.device_id is not None and self.id != driver.device_id:
            raise ProbeError("ENODEV", f"virtio device type {self.id} is not "
                                       f"{driver.name} ({driver.device_id})")
        self.driver = driver
        driver.vdev = self
        try:
            # We have a driver!
            await self.add_status(_S_DRIVER)
            # Figure out what features the device supports.
            self.device_features = device = await self.transport.get_features()
            driver_features = 0
            for bit in driver.feature_table:
                driver_features |= 1 << int(bit)
            if driver.feature_table_legacy is not None:
                legacy = 0
                for bit in driver.feature_table_legacy:
                    legacy |= 1 << int(bit)
            else:
                legacy = driver_features & 0xFFFFFFFFFFFFFFFF
            if device & (1 << VirtioF.VERSION_1):
                self.features = driver_features & device
            else:
                self.features = legacy & device
            # Transport features always preserved to pass to finalize_features; the ring and
            # transport code then keep the ones they understand.
            self.features = self.profile.filter_transport_features(self.features, device)
            if self.features & (1 << VirtioF.SR_IOV) and not await self._has_sriov():
                self.features &= ~(1 << VirtioF.SR_IOV)
            await self._finalize_features()
            before = self.features
            await driver.validate(self)
            # Did validation change any features? Then write them again.
            if self.features != before:
                await self._finalize_features()
            await self._features_ok()
            await driver.probe(self)
            # If probe didn't do it, mark device DRIVER_OK ourselves.
            if not await self.get_status() & _S_DRIVER_OK:
                await self.device_ready()
        except LinuxError as e:
            await self.add_status(_S_FAILED)
            if isinstance(e, ProbeError):
                raise
            raise ProbeError(e.errno, e.message) from e
        self.config_core_enabled = True
        if self.config_change_pending:
            self._dispatch_config_change()

    async def _has_sriov(self):
        return any(cap_id == 0x0010 for cap_id, _ in self.pdev.dev.ext_capabilities)

    async def _features_ok(self):
        """``virtio_features_ok()``: FEATURES_OK, read back."""
        if not self.features & (1 << VirtioF.VERSION_1):
            return      # legacy: no FEATURES_OK
        await self.add_status(_S_FEATURES_OK)
        status = await self.get_status()
        if not status & _S_FEATURES_OK:
            self.dmesg("error", f"virtio: device refuses features: {status:x}")
            raise ProbeError("ENODEV", f"virtio: device refuses features: {status:x}")

    async def remove(self):
        """``virtio_dev_remove()``: driver remove (resets the device), then ACKNOWLEDGE again."""
        self.config_core_enabled = False
        await self.driver.remove(self)
        if await self.get_status():
            self.dmesg("warning", "device status not 0 after the driver's remove")
        await self.add_status(_S_ACKNOWLEDGE)

    # -- queues ------------------------------------------------------------------------------------
    async def find_vqs(self, vqs_info, *, irq_mode=None):
        """``virtio_find_vqs()``."""
        vqs = await self.transport.find_vqs(vqs_info, irq_mode=irq_mode)
        await self.transport.enable_queues()
        return vqs

    async def del_vqs(self):
        await self.transport.del_vqs()

    # -- configuration space -----------------------------------------------------------------------
    def _config_access(self):
        if not self.transport.has_config:
            raise LinuxError("EINVAL", "config access disabled")

    async def cread_bytes(self, offset, length, *, unit):
        """``__virtio_cread_many()``: ``length // unit`` reads of ``unit`` bytes, repeated while
        ``config_generation`` changes."""
        self._config_access()
        gen = await self.transport.generation()
        while True:
            old = gen
            raw = b"".join([await self.transport.get(offset + i, unit)
                            for i in range(0, length, unit)])
            gen = await self.transport.generation()
            if gen == old:
                return raw

    async def cread(self, layout, name):
        """``virtio_cread()`` of field ``name`` of the device configuration ``layout``:
        1/2/4-byte fields in one access, 8-byte fields and byte arrays in a generation loop."""
        c = codec(layout)
        offset, size, is_array = c.fields[name]
        if is_array:
            return await self.cread_bytes(offset, size, unit=1)
        if size == 8:
            return int.from_bytes(await self.cread_bytes(offset, 8, unit=8), "little")
        self._config_access()
        return int.from_bytes(await self.transport.get(offset, size), "little")

    async def cread_feature(self, bit, layout, name):
        """``virtio_cread_feature()``: None (``-ENOENT``) if ``bit`` was not negotiated."""
        if not self.has_feature(bit):
            return None
        return await self.cread(layout, name)

    async def cwrite(self, layout, name, value):
        c = codec(layout)
        offset, size, _ = c.fields[name]
        self._config_access()
        await self.transport.set(offset, int(value).to_bytes(size, "little"))

    # -- configuration changes ---------------------------------------------------------------------
    async def _config_changed_irq(self):
        """``virtio_config_changed()`` from the transport's interrupt handler."""
        self.config_changes += 1
        if not self.config_core_enabled:
            self.config_change_pending = True
            return
        self._dispatch_config_change()

    def _dispatch_config_change(self):
        self.config_change_pending = False
        if self.driver is not None:
            # drivers queue work for it; the interrupt handler does not wait
            cocotb.start_soon(self.driver.config_changed(self))


async def bind_driver(pdev, driver, *, memory, profile="linux-6.12", force_legacy=False,
                      transport_options=None):
    """The whole Linux path from an enumerated function to a bound driver:
    ``virtio_pci_probe`` → ``register_virtio_device`` → ``virtio_dev_probe``.

    ``transport_options`` sets attributes of the transport before registration (test knobs
    such as ``ring_alloc_limit`` or ``start_index``). Returns the :class:`VirtioDevice`.
    """
    profile = get_profile(profile)
    transport = await virtio_pci_probe(pdev, memory=memory, profile=profile,
                                       force_legacy=force_legacy)
    for key, value in (transport_options or {}).items():
        if not hasattr(transport, key):
            raise AttributeError(f"transport has no option {key!r}")
        setattr(transport, key, value)
    vdev = VirtioDevice(transport)
    await vdev.register()
    await vdev.probe_driver(driver)
    return vdev


__all__.append("bind_driver")
