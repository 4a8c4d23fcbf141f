# SPDX-License-Identifier: BSD-2-Clause
"""Register-traffic profiles: which Linux the host model behaves as.

Linux's virtio-pci driver changed in ways a device can see (virtio-checklist §3.2, §3.6, §7):

* how many feature words it reads and writes: selects 0 and 1 (64 bits) until the "virtio:
  introduce extended features" series, selects 0..3 (128 bits) after it;
* the interrupt-vector ladder of ``vp_find_vqs()``: EACH → SHARED → INTx, and, since the admin
  virtqueue work, EACH → SHARED_SLOW → SHARED → INTx;
* which transport feature bits ``vring_transport_features()`` / ``vp_transport_features()``
  keep (``VIRTIO_TRANSPORT_F_START`` .. ``END``).

A :class:`Profile` states those differences as data; every layer of the model reads the one it is
given. ``PROFILES["linux-6.12"]`` and ``PROFILES["linux-7"]`` are the two the project tests
against; a user can build another with :func:`dataclasses.replace`.

Host parameters that are not version dependent but are not in the virtio specification either
(``PAGE_SIZE``, ``SMP_CACHE_BYTES``, the reset poll interval) live here too, so that nothing in
the model is a bare number.
"""

import enum
from dataclasses import dataclass, field

from virtio_pcie.spec.virtio import VirtioF

__all__ = ["VectorPolicy", "IrqMode", "Profile", "PROFILES", "get_profile"]


class VectorPolicy(enum.Enum):
    """``enum vp_vq_vector_policy`` (drivers/virtio/virtio_pci_common.c)."""
    EACH        = "each"          # one vector for config, one per queue with a callback
    SHARED_SLOW = "shared-slow"   # as EACH, but slow-path queues share the config vector
    SHARED      = "shared"        # one vector for config, one shared by all queues


class IrqMode(enum.Enum):
    """What ``vp_find_vqs()`` ended up with (or what a test forces)."""
    MSIX_EACH        = "msix-each"
    MSIX_SHARED_SLOW = "msix-shared-slow"
    MSIX_SHARED      = "msix-shared"
    INTX             = "intx"

    @classmethod
    def from_policy(cls, policy):
        return {VectorPolicy.EACH: cls.MSIX_EACH, VectorPolicy.SHARED_SLOW: cls.MSIX_SHARED_SLOW,
                VectorPolicy.SHARED: cls.MSIX_SHARED}[policy]

    @property
    def policy(self):
        return {IrqMode.MSIX_EACH: VectorPolicy.EACH,
                IrqMode.MSIX_SHARED_SLOW: VectorPolicy.SHARED_SLOW,
                IrqMode.MSIX_SHARED: VectorPolicy.SHARED}.get(self)


#: Transport bits Linux keeps (vring_transport_features + vp_transport_features); everything
#: else in [VIRTIO_TRANSPORT_F_START, VIRTIO_TRANSPORT_F_END) is cleared before it is written back.
_LINUX_TRANSPORT_FEATURES = (
    VirtioF.INDIRECT_DESC, VirtioF.EVENT_IDX, VirtioF.VERSION_1, VirtioF.ACCESS_PLATFORM,
    VirtioF.RING_PACKED, VirtioF.ORDER_PLATFORM, VirtioF.NOTIFICATION_DATA, VirtioF.SR_IOV,
    VirtioF.RING_RESET, VirtioF.ADMIN_VQ,
)


@dataclass(frozen=True)
class Profile:
    """The host behaviour one Linux version shows to a virtio-pci device.

    Attributes
    ----------
    name : str
    feature_words : int
        32-bit feature windows read and written (``device_feature_select`` /
        ``driver_feature_select`` 0 .. ``feature_words - 1``).
    vector_policies : tuple of VectorPolicy
        The MSI-X attempts of ``vp_find_vqs()``, in order; INTx follows if the function has an
        interrupt pin.
    transport_feature_start, transport_feature_end : int
        ``VIRTIO_TRANSPORT_F_START`` and ``VIRTIO_TRANSPORT_F_END``.
    transport_features : tuple of int
        Bits of that range the transport and ring code keep.
    page_size, smp_cache_bytes : int
        ``PAGE_SIZE`` (notify-map and device-config window limits) and ``SMP_CACHE_BYTES`` (the
        split-ring alignment of modern devices).
    reset_poll_ns : int
        ``msleep(1)`` between ``device_status`` reads while a modern reset is pending.
    """
    name:                    str
    feature_words:           int
    vector_policies:         tuple
    transport_feature_start: int = 28
    transport_feature_end:   int = 42
    transport_features:      tuple = field(default=_LINUX_TRANSPORT_FEATURES)
    page_size:               int = 4096
    smp_cache_bytes:         int = 64
    reset_poll_ns:           int = 1_000_000

    def __post_init__(self):
        if self.feature_words not in (2, 4):
            raise ValueError(f"feature_words must be 2 or 4, not {self.feature_words!r}")
        for policy in self.vector_policies:
            if not isinstance(policy, VectorPolicy):
                raise TypeError(f"vector policy {policy!r} is not a VectorPolicy")

    @property
    def feature_bits(self):
        return 32 * self.feature_words

    def filter_transport_features(self, features, device_features):
        """``virtio_dev_probe()`` keeps every offered transport bit, then
        ``vring_transport_features()`` and ``vp_transport_features()`` drop the ones Linux does
        not understand. Returns the new feature word."""
        for bit in range(self.transport_feature_start, self.transport_feature_end):
            mask = 1 << bit
            if device_features & mask and bit in self.transport_features:
                features |= mask
            else:
                features &= ~mask
        return features


PROFILES = {
    # Linux 6.12 (LTS): 64 feature bits, vector ladder EACH, SHARED, INTx.
    "linux-6.12": Profile(
        name="linux-6.12", feature_words=2,
        vector_policies=(VectorPolicy.EACH, VectorPolicy.SHARED)),
    # Linux 7.x: extended (128-bit) features, SHARED_SLOW step for slow-path queues.
    "linux-7": Profile(
        name="linux-7", feature_words=4,
        vector_policies=(VectorPolicy.EACH, VectorPolicy.SHARED_SLOW, VectorPolicy.SHARED)),
}


def get_profile(profile):
    """A :class:`Profile` from itself or its name."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown host profile {profile!r}; known: {sorted(PROFILES)}") \
            from None
