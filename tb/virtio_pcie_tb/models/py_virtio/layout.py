# SPDX-License-Identifier: BSD-2-Clause
"""Where the Python virtio-pci device puts its structures, and what its capabilities claim.

A :class:`DeviceLayout` has two halves that normally agree:

* ``bars`` and ``regions``: the BARs the function implements and where, inside them, it really
  decodes each structure (common configuration, ISR, device configuration, notifications, the
  MSI-X table and PBA, the legacy I/O header);
* ``caps``: the virtio vendor capabilities it advertises (:class:`CapSpec`), in list order.

Tests of a driver's capability checks (virtio-checklist §6 item 1) build layouts whose caps lie:
a misaligned offset, a short length, a reserved BAR number, a missing structure; the device
still decodes its real regions, so only the driver's checks decide the outcome.
"""

from dataclasses import dataclass, field, replace

from virtio_pcie.spec.virtio import (
    VirtioPciCap, VirtioPciCapType, VirtioPciCfgCap, VirtioPciCommonCfg, VirtioPciNotifyCap,
    VirtioPciLegacyHeader, VirtioPciLegacyMsix, byte_size,
)
from virtio_pcie.spec.pcie import MsixTableEntry

__all__ = ["BarSpec", "Region", "CapSpec", "DeviceLayout", "modern_layout", "legacy_layout",
           "transitional_layout"]


@dataclass(frozen=True)
class BarSpec:
    """One BAR: ``kind`` is "mem32", "mem64" or "io"; ``size`` a power of two in bytes."""
    index:    int
    size:     int
    kind:     str = "mem32"
    prefetch: bool = False

    def __post_init__(self):
        if self.kind not in ("mem32", "mem64", "io"):
            raise ValueError(f"BAR kind must be mem32, mem64 or io, not {self.kind!r}")
        if self.size & (self.size - 1) or self.size < (4 if self.kind == "io" else 16):
            raise ValueError(f"BAR size must be a power of two, not {self.size!r}")
        if not 0 <= self.index <= (4 if self.kind == "mem64" else 5):
            raise ValueError(f"BAR index {self.index!r} out of range for {self.kind}")


@dataclass(frozen=True)
class Region:
    """A structure the device decodes: ``length`` bytes at ``offset`` in BAR ``bar``."""
    bar:    int
    offset: int
    length: int


@dataclass(frozen=True)
class CapSpec:
    """One ``struct virtio_pci_cap`` as advertised (all fields are free, for negative tests)."""
    cfg_type:              int
    bar:                   int
    offset:                int
    length:                int
    cap_len:               int = None
    notify_off_multiplier: int = None
    id:                    int = 0

    @property
    def size(self):
        """Bytes the capability occupies in configuration space."""
        base = byte_size(VirtioPciNotifyCap) if self.cfg_type in (
            VirtioPciCapType.NOTIFY_CFG.value, VirtioPciCapType.PCI_CFG.value) \
            else byte_size(VirtioPciCap)
        return max(base, self.cap_len or 0)

    @property
    def advertised_len(self):
        return self.size if self.cap_len is None else self.cap_len


@dataclass
class DeviceLayout:
    bars:    list
    regions: dict
    caps:    list = field(default_factory=list)
    notify_off_multiplier: int = 4

    def with_cap(self, cfg_type, **changes):
        """A copy whose first cap of ``cfg_type`` has ``changes`` (None removes it)."""
        cfg_type = int(getattr(cfg_type, "value", cfg_type))
        caps = []
        done = False
        for cap in self.caps:
            if not done and cap.cfg_type == cfg_type:
                done = True
                if changes.get("remove"):
                    continue
                cap = replace(cap, **changes)
            caps.append(cap)
        if not done:
            raise KeyError(f"layout has no capability of type {cfg_type}")
        return replace(self, caps=caps)

    def without_cap(self, cfg_type):
        return self.with_cap(cfg_type, remove=True)

    def with_region(self, name, **changes):
        regions = dict(self.regions)
        regions[name] = replace(regions[name], **changes)
        return replace(self, regions=regions)


def _modern_caps(regions, multiplier):
    t = VirtioPciCapType
    caps = [CapSpec(t.COMMON_CFG.value, *_loc(regions["common"])),
            CapSpec(t.NOTIFY_CFG.value, *_loc(regions["notify"]),
                    notify_off_multiplier=multiplier),
            CapSpec(t.ISR_CFG.value, *_loc(regions["isr"]))]
    if "device" in regions:
        caps.append(CapSpec(t.DEVICE_CFG.value, *_loc(regions["device"])))
    caps.append(CapSpec(t.PCI_CFG.value, 0, 0, 0, cap_len=byte_size(VirtioPciCfgCap)))
    return caps


def _loc(region):
    return region.bar, region.offset, region.length


def _msix_regions(bar, vectors):
    table = vectors * byte_size(MsixTableEntry)
    pba_offset = max(2048, (table + 7) & ~7)
    return {"msix_table": Region(bar, 0, table),
            "msix_pba": Region(bar, pba_offset, 8 * ((vectors + 63) // 64))}


def modern_layout(*, num_queues, msix_vectors, device_config_len, multiplier=4,
                  bar=0, msix_bar=2, mem64=False):
    """The recommended modern layout (virtio-checklist §5): one 16 KiB BAR with common @0,
    ISR @0x1000, device config @0x2000, notifications @0x3000; MSI-X in its own BAR."""
    notify_len = max(2, multiplier * (num_queues - 1) + 2) if multiplier else 2
    regions = {
        "common": Region(bar, 0x0000, byte_size(VirtioPciCommonCfg)),
        "isr":    Region(bar, 0x1000, 1),
        "notify": Region(bar, 0x3000, notify_len),
    }
    if device_config_len:
        regions["device"] = Region(bar, 0x2000, device_config_len)
    kind = "mem64" if mem64 else "mem32"
    bars = [BarSpec(bar, 0x4000, kind)]
    if msix_vectors:
        bars.append(BarSpec(msix_bar, 0x1000, "mem32"))
        regions.update(_msix_regions(msix_bar, msix_vectors))
    return DeviceLayout(bars, regions, _modern_caps(regions, multiplier), multiplier)


def _legacy_io(device_config_len):
    size = byte_size(VirtioPciLegacyHeader) + byte_size(VirtioPciLegacyMsix) + device_config_len
    io_size = 1 << max(5, (size - 1).bit_length())
    return BarSpec(0, io_size, "io"), Region(0, 0, size)


def legacy_layout(*, msix_vectors, device_config_len, msix_bar=1):
    """A legacy-only device: the I/O BAR0 header, MSI-X in BAR1, no virtio capabilities."""
    io_bar, io_region = _legacy_io(device_config_len)
    bars = [io_bar]
    regions = {"legacy": io_region}
    if msix_vectors:
        bars.append(BarSpec(msix_bar, 0x1000, "mem32"))
        regions.update(_msix_regions(msix_bar, msix_vectors))
    return DeviceLayout(bars, regions, [])


def transitional_layout(*, num_queues, msix_vectors, device_config_len, multiplier=4):
    """Both interfaces, as QEMU places them: legacy I/O BAR0, MSI-X BAR1, modern BAR4."""
    modern = modern_layout(num_queues=num_queues, msix_vectors=msix_vectors,
                           device_config_len=device_config_len, multiplier=multiplier,
                           bar=4, msix_bar=1)
    io_bar, io_region = _legacy_io(device_config_len)
    regions = dict(modern.regions)
    regions["legacy"] = io_region
    return DeviceLayout([io_bar] + modern.bars, regions, modern.caps, multiplier)
