# SPDX-License-Identifier: BSD-2-Clause
"""Virtio structures, defined once as data.

The virtio 1.2 specification (OASIS virtio-v1.2-cs01; section names quoted in each ``Ref:``
line) and the original 0.9.5 legacy PCI interface (Linux ``include/uapi/linux/virtio_pci.h``
under ``VIRTIO_PCI_NO_LEGACY``) stated as :mod:`amaranth.lib.data` layouts. Field names are the
spec's C names. All multi-byte fields are little-endian, so a layout's bit ``n`` is bit ``n % 8``
of byte ``n // 8`` in memory: ``Layout.const(...).as_value().value.to_bytes(size, "little")``
is byte-identical to the C struct.
"""

import enum as py_enum

from amaranth.hdl import Shape
from amaranth.lib import data, enum

from .pcie import byte_offset, byte_size

__all__ = [
    "byte_offset", "byte_size",
    "VIRTIO_PCI_VENDOR_ID", "VIRTIO_PCI_MODERN_DEVICE_ID_BASE", "VIRTIO_PCI_TRANSITIONAL_DEVICE_ID",
    "VIRTIO_PCI_SUBSYSTEM_ID_MODERN", "VirtioDeviceId", "VIRTIO_PCI_CLASS_CODE",
    "VirtioPciCapType", "VirtioPciCap", "VirtioPciNotifyCap", "VirtioNotificationData",
    "notification_bytes", "VirtioPciCfgCap",
    "VirtioPciCommonCfg", "COMMON_CFG_ACCESS", "VIRTIO_PCI_COMMON_CFG_MIN_LEN",
    "VIRTIO_MSI_NO_VECTOR", "DeviceStatus", "VirtioIsr",
    "VirtioF", "VirtioBlkF", "VirtioNetF", "feature_mask", "FEATURE_DEPENDENCIES",
    "FEATURE_DEPENDENCIES_ANY", "feature_dependencies", "TRANSPORT_FEATURE_BITS",
    "VirtioPciLegacyHeader", "VirtioPciLegacyMsix", "LEGACY_QUEUE_ADDR_SHIFT", "LEGACY_VRING_ALIGN",
    "legacy_device_config_offset",
    "VirtqDescFlags", "VirtqDesc", "VirtqAvailFlags", "VirtqAvailHeader", "VirtqUsedFlags",
    "VirtqUsedHeader", "VirtqUsedElem", "VIRTQ_MAX_SIZE",
    "VIRTQ_DESC_ALIGN", "VIRTQ_AVAIL_ALIGN", "VIRTQ_USED_ALIGN",
    "virtq_desc_size", "virtq_avail_size", "virtq_used_size",
    "virtq_avail_ring_offset", "virtq_used_event_offset", "virtq_used_ring_offset",
    "virtq_avail_event_offset", "VIRTQ_IDX_BYTES", "legacy_vring_layout", "vring_need_event",
    "VirtioBlkGeometry", "VirtioBlkTopology", "VirtioBlkZoned", "VirtioBlkConfig",
    "VirtioBlkReqType", "VirtioBlkStatus", "VirtioBlkOutHdr", "VirtioBlkDiscardWriteZeroes",
    "VIRTIO_BLK_SECTOR_SIZE", "VIRTIO_BLK_ID_BYTES", "VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP",
    "VirtioNetConfig", "VirtioNetStatus", "VirtioNetHdr", "VirtioNetHdrLegacy", "VirtioNetHdrFlags",
    "VirtioNetGsoType", "VirtioNetCtrlHdr", "VirtioNetCtrlClass", "VirtioNetCtrlRx",
    "VirtioNetCtrlMac", "VirtioNetCtrlVlan", "VirtioNetCtrlAnnounce", "VirtioNetCtrlGuestOffloads",
    "VirtioNetCtrlMq", "VirtioNetCtrlAck",
    "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN", "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX",
]


# ---------------------------------------------------------------------------------------------
# PCI identity
# Ref: virtio 1.2, "PCI Device Discovery"
# ---------------------------------------------------------------------------------------------

VIRTIO_PCI_VENDOR_ID             = 0x1AF4
VIRTIO_PCI_MODERN_DEVICE_ID_BASE = 0x1040
VIRTIO_PCI_SUBSYSTEM_ID_MODERN   = 0x1100   # any value >= 0x40 keeps legacy drivers off


class VirtioDeviceId(py_enum.IntEnum):
    """Virtio device type IDs (virtio 1.2, "Device Types")."""
    NET     = 1
    BLOCK   = 2
    CONSOLE = 3
    ENTROPY = 4


#: Transitional PCI device IDs (virtio 1.2, "Legacy Interfaces: A Note on PCI Device Discovery").
VIRTIO_PCI_TRANSITIONAL_DEVICE_ID = {
    VirtioDeviceId.NET:     0x1000,
    VirtioDeviceId.BLOCK:   0x1001,
    VirtioDeviceId.CONSOLE: 0x1003,
    VirtioDeviceId.ENTROPY: 0x1005,
}

#: PCI class codes (base, sub-class, prog-if) as QEMU presents each device type.
VIRTIO_PCI_CLASS_CODE = {
    VirtioDeviceId.NET:     0x020000,   # network controller, Ethernet
    VirtioDeviceId.BLOCK:   0x010000,   # mass storage, SCSI (QEMU's choice for virtio-blk)
    VirtioDeviceId.CONSOLE: 0x078000,   # communication controller, other
    VirtioDeviceId.ENTROPY: 0x00ff00,
}


# ---------------------------------------------------------------------------------------------
# Capabilities
# Ref: virtio 1.2, "Virtio Structure PCI Capabilities"
# ---------------------------------------------------------------------------------------------

class VirtioPciCapType(enum.Enum, shape=8):
    COMMON_CFG        = 1
    NOTIFY_CFG        = 2
    ISR_CFG           = 3
    DEVICE_CFG        = 4
    PCI_CFG           = 5
    SHARED_MEMORY_CFG = 8
    VENDOR_CFG        = 9


#: struct virtio_pci_cap
VirtioPciCap = data.StructLayout({
    "cap_vndr": 8,
    "cap_next": 8,
    "cap_len":  8,
    "cfg_type": VirtioPciCapType,
    "bar":      8,
    "id":       8,
    "padding":  16,
    "offset":   32,
    "length":   32,
})

#: struct virtio_pci_notify_cap
VirtioPciNotifyCap = data.StructLayout({
    "cap":                   VirtioPciCap,
    "notify_off_multiplier": 32,
})

#: A driver notification with VIRTIO_F_NOTIFICATION_DATA (virtio 1.2 §2.9 and §4.1.5.2; le32):
#: the queue (or queue_notify_data with NOTIF_CONFIG_DATA), then, for a split ring, next_off
#: (15 bits) and next_wrap (1) together: the avail index after the driver's last published
#: entry. Without the feature a notification is ``vqn`` alone (16 bits).
VirtioNotificationData = data.StructLayout({
    "vqn":      16,
    "next_idx": 16,
})

def notification_bytes(with_data):
    """Bytes of one driver notification write: the queue's 16 bits, or with
    VIRTIO_F_NOTIFICATION_DATA the whole :data:`VirtioNotificationData`."""
    if with_data:
        return byte_size(VirtioNotificationData)
    return Shape.cast(VirtioNotificationData["vqn"].shape).width // 8


#: struct virtio_pci_cfg_cap
VirtioPciCfgCap = data.StructLayout({
    "cap":          VirtioPciCap,
    "pci_cfg_data": 32,
})


# Ref: virtio 1.2, "Common configuration structure layout" (struct virtio_pci_common_cfg,
# extended with the 1.2 queue_notify_data / queue_reset and the 1.3 admin queue fields).
VirtioPciCommonCfg = data.StructLayout({
    "device_feature_select": 32,
    "device_feature":        32,
    "driver_feature_select": 32,
    "driver_feature":        32,
    "config_msix_vector":    16,
    "num_queues":            16,
    "device_status":         8,
    "config_generation":     8,
    "queue_select":          16,
    "queue_size":            16,
    "queue_msix_vector":     16,
    "queue_enable":          16,
    "queue_notify_off":      16,
    "queue_desc":            64,
    "queue_driver":          64,
    "queue_device":          64,
    "queue_notify_data":     16,
    "queue_reset":           16,
    "admin_queue_index":     16,
    "admin_queue_num":       16,
})

#: Driver access to each common configuration field; absent means read/write.
COMMON_CFG_ACCESS = {
    "device_feature":    "ro",
    "num_queues":        "ro",
    "config_generation": "ro",
    "queue_notify_off":  "ro",
    "queue_notify_data": "ro",
    "admin_queue_index": "ro",
    "admin_queue_num":   "ro",
}

#: sizeof(struct virtio_pci_common_cfg) in virtio 1.0, the minimum Linux maps.
VIRTIO_PCI_COMMON_CFG_MIN_LEN = byte_offset(VirtioPciCommonCfg, "queue_notify_data")

VIRTIO_MSI_NO_VECTOR = 0xFFFF


class DeviceStatus(enum.Flag, shape=8):
    """Device status field (virtio 1.2, "Device Status Field")."""
    ACKNOWLEDGE        = 1
    DRIVER             = 2
    DRIVER_OK          = 4
    FEATURES_OK        = 8
    SUSPEND            = 16
    DEVICE_NEEDS_RESET = 64
    FAILED             = 128


class VirtioIsr(enum.Flag, shape=8):
    """ISR status (virtio 1.2, "ISR status capability")."""
    QUEUE  = 1
    CONFIG = 2


# ---------------------------------------------------------------------------------------------
# Feature bits
# Ref: virtio 1.2, "Reserved Feature Bits" and the device types' "Feature bits"
# ---------------------------------------------------------------------------------------------

class VirtioF(py_enum.IntEnum):
    """Device-independent feature bit numbers."""
    NOTIFY_ON_EMPTY    = 24
    ANY_LAYOUT         = 27
    INDIRECT_DESC      = 28
    EVENT_IDX          = 29
    VERSION_1          = 32
    ACCESS_PLATFORM    = 33
    RING_PACKED        = 34
    IN_ORDER           = 35
    ORDER_PLATFORM     = 36
    SR_IOV             = 37
    NOTIFICATION_DATA  = 38
    NOTIF_CONFIG_DATA  = 39
    RING_RESET         = 40
    ADMIN_VQ           = 41
    SUSPEND            = 43


class VirtioBlkF(py_enum.IntEnum):
    BARRIER      = 0
    SIZE_MAX     = 1
    SEG_MAX      = 2
    GEOMETRY     = 4
    RO           = 5
    BLK_SIZE     = 6
    SCSI         = 7
    FLUSH        = 9
    TOPOLOGY     = 10
    CONFIG_WCE   = 11
    MQ           = 12
    DISCARD      = 13
    WRITE_ZEROES = 14
    LIFETIME     = 15
    SECURE_ERASE = 16
    ZONED        = 17


class VirtioNetF(py_enum.IntEnum):
    CSUM                = 0
    GUEST_CSUM          = 1
    CTRL_GUEST_OFFLOADS = 2
    MTU                 = 3
    MAC                 = 5
    GSO                 = 6
    GUEST_TSO4          = 7
    GUEST_TSO6          = 8
    GUEST_ECN           = 9
    GUEST_UFO           = 10
    HOST_TSO4           = 11
    HOST_TSO6           = 12
    HOST_ECN            = 13
    HOST_UFO            = 14
    MRG_RXBUF           = 15
    STATUS              = 16
    CTRL_VQ             = 17
    CTRL_RX             = 18
    CTRL_VLAN           = 19
    CTRL_RX_EXTRA       = 20
    GUEST_ANNOUNCE      = 21
    MQ                  = 22
    CTRL_MAC_ADDR       = 23
    DEVICE_STATS        = 50
    VQ_NOTF_COAL        = 52
    NOTF_COAL           = 53
    GUEST_USO4          = 54
    GUEST_USO6          = 55
    HOST_USO            = 56
    HASH_REPORT         = 57
    GUEST_HDRLEN        = 59
    RSS                 = 60
    RSC_EXT             = 61
    STANDBY             = 62
    SPEED_DUPLEX        = 63


def feature_mask(*bits):
    """The 64-bit (or wider) feature word with the given bit numbers set."""
    value = 0
    for bit in bits:
        value |= 1 << int(bit)
    return value


#: Feature -> features it requires (virtio 1.2, net "Feature bit requirements"). Device-type bits
#: overlap between types (bit 14 is HOST_UFO for net, WRITE_ZEROES for blk): an entry applies only
#: to the device type of its enum; use :func:`feature_dependencies`.
FEATURE_DEPENDENCIES = {
    VirtioNetF.GUEST_TSO4:     (VirtioNetF.GUEST_CSUM,),
    VirtioNetF.GUEST_TSO6:     (VirtioNetF.GUEST_CSUM,),
    VirtioNetF.GUEST_UFO:      (VirtioNetF.GUEST_CSUM,),
    VirtioNetF.HOST_TSO4:      (VirtioNetF.CSUM,),
    VirtioNetF.HOST_TSO6:      (VirtioNetF.CSUM,),
    VirtioNetF.HOST_UFO:       (VirtioNetF.CSUM,),
    VirtioNetF.CTRL_RX:        (VirtioNetF.CTRL_VQ,),
    VirtioNetF.CTRL_VLAN:      (VirtioNetF.CTRL_VQ,),
    VirtioNetF.GUEST_ANNOUNCE: (VirtioNetF.CTRL_VQ,),
    VirtioNetF.MQ:             (VirtioNetF.CTRL_VQ,),
    VirtioNetF.CTRL_MAC_ADDR:  (VirtioNetF.CTRL_VQ,),
    VirtioNetF.RSS:            (VirtioNetF.CTRL_VQ,),
}

#: Feature -> features of which it requires at least one (virtio 1.2, net "Feature bit
#: requirements": GUEST_ECN needs GUEST_TSO4 or GUEST_TSO6; HOST_ECN needs HOST_TSO4 or HOST_TSO6).
FEATURE_DEPENDENCIES_ANY = {
    VirtioNetF.GUEST_ECN: (VirtioNetF.GUEST_TSO4, VirtioNetF.GUEST_TSO6),
    VirtioNetF.HOST_ECN:  (VirtioNetF.HOST_TSO4, VirtioNetF.HOST_TSO6),
}

#: Bits reserved for the transport and queue mechanisms (virtio 1.2, "Feature Bits": 24 to 41,
#: plus 42 to 49 reserved for future extensions); the others belong to the device type.
TRANSPORT_FEATURE_BITS = range(24, 50)

_DEVICE_FEATURE_ENUMS = {
    VirtioDeviceId.NET:   VirtioNetF,
    VirtioDeviceId.BLOCK: VirtioBlkF,
}


def feature_dependencies(device_type):
    """The requirement tables that apply to a device of type ``device_type``.

    Device-type feature bits are numbered per type (bit 7 is GUEST_TSO4 for a network device,
    SCSI for a block device), so :data:`FEATURE_DEPENDENCIES` and
    :data:`FEATURE_DEPENDENCIES_ANY` entries apply only to the device type their enum names.
    Returns ``(all_of, any_of)``: two dicts from a feature bit number to a tuple of bit numbers.
    """
    device_type = VirtioDeviceId(device_type)
    kinds = (VirtioF, _DEVICE_FEATURE_ENUMS.get(device_type, VirtioF))

    def select(table):
        return {int(f): tuple(int(r) for r in reqs) for f, reqs in table.items()
                if type(f) in kinds}
    return select(FEATURE_DEPENDENCIES), select(FEATURE_DEPENDENCIES_ANY)


# ---------------------------------------------------------------------------------------------
# Legacy (0.9.5) interface
# Ref: virtio 1.2, "Legacy Interfaces: A Note on PCI Device Layout"; Linux virtio_pci.h
# ---------------------------------------------------------------------------------------------

#: The I/O BAR header, without the MSI-X vector registers.
VirtioPciLegacyHeader = data.StructLayout({
    "host_features":  32,
    "guest_features": 32,
    "queue_pfn":      32,
    "queue_num":      16,
    "queue_sel":      16,
    "queue_notify":   16,
    "status":         8,
    "isr":            8,
})

#: Appended after :data:`VirtioPciLegacyHeader` only while MSI-X is enabled.
VirtioPciLegacyMsix = data.StructLayout({
    "config_vector": 16,
    "queue_vector":  16,
})

LEGACY_QUEUE_ADDR_SHIFT = 12     # VIRTIO_PCI_QUEUE_ADDR_SHIFT
LEGACY_VRING_ALIGN      = 4096   # VIRTIO_PCI_VRING_ALIGN


def legacy_device_config_offset(msix_enabled):
    """VIRTIO_PCI_CONFIG_OFF(msix_enabled): where device config starts in the I/O BAR."""
    offset = byte_size(VirtioPciLegacyHeader)
    if msix_enabled:
        offset += byte_size(VirtioPciLegacyMsix)
    return offset


# ---------------------------------------------------------------------------------------------
# Split virtqueues
# Ref: virtio 1.2, "Split Virtqueues" (struct virtq_desc, virtq_avail, virtq_used)
# ---------------------------------------------------------------------------------------------

VIRTQ_MAX_SIZE = 32768

#: Alignment in bytes of the three parts of a split virtqueue (virtio 1.2 §2.7, "Split
#: Virtqueues": Descriptor Table 16, Available Ring 2, Used Ring 4).
VIRTQ_DESC_ALIGN  = 16
VIRTQ_AVAIL_ALIGN = 2
VIRTQ_USED_ALIGN  = 4


class VirtqDescFlags(enum.Flag, shape=16):
    NEXT     = 1
    WRITE    = 2
    INDIRECT = 4


VirtqDesc = data.StructLayout({
    "addr":  64,
    "len":   32,
    "flags": VirtqDescFlags,
    "next":  16,
})


class VirtqAvailFlags(enum.Flag, shape=16):
    NO_INTERRUPT = 1


class VirtqUsedFlags(enum.Flag, shape=16):
    NO_NOTIFY = 1


#: Fixed head of struct virtq_avail; ``ring[size]`` of le16 and ``used_event`` follow.
VirtqAvailHeader = data.StructLayout({
    "flags": VirtqAvailFlags,
    "idx":   16,
})

#: Fixed head of struct virtq_used; ``ring[size]`` of :data:`VirtqUsedElem` and
#: ``avail_event`` follow.
VirtqUsedHeader = data.StructLayout({
    "flags": VirtqUsedFlags,
    "idx":   16,
})

VirtqUsedElem = data.StructLayout({
    "id":  32,
    "len": 32,
})

_DESC_BYTES      = byte_size(VirtqDesc)
_AVAIL_HDR_BYTES = byte_size(VirtqAvailHeader)
_USED_HDR_BYTES  = byte_size(VirtqUsedHeader)
_USED_ELEM_BYTES = byte_size(VirtqUsedElem)

#: Size of every le16 ring index: ``idx``, ``avail->ring[i]``, ``used_event``, ``avail_event``.
VIRTQ_IDX_BYTES = Shape.cast(VirtqAvailHeader["idx"].shape).width // 8


def virtq_desc_size(size):
    return _DESC_BYTES * size


def virtq_avail_ring_offset(index):
    """Byte offset of ``avail->ring[index]``."""
    return _AVAIL_HDR_BYTES + VIRTQ_IDX_BYTES * index


def virtq_used_event_offset(size):
    """Byte offset of ``used_event`` (after ``avail->ring[size]``)."""
    return virtq_avail_ring_offset(size)


def virtq_avail_size(size):
    return virtq_used_event_offset(size) + VIRTQ_IDX_BYTES


def virtq_used_ring_offset(index):
    """Byte offset of ``used->ring[index]``."""
    return _USED_HDR_BYTES + _USED_ELEM_BYTES * index


def virtq_avail_event_offset(size):
    """Byte offset of ``avail_event`` (after ``used->ring[size]``)."""
    return virtq_used_ring_offset(size)


def virtq_used_size(size):
    return virtq_avail_event_offset(size) + VIRTQ_IDX_BYTES


def legacy_vring_layout(base, size, align=LEGACY_VRING_ALIGN):
    """(desc, avail, used) addresses of a legacy contiguous ring at ``base``
    (virtio 1.2, "Legacy Interfaces: A Note on Virtqueue Layout")."""
    desc  = base
    avail = desc + virtq_desc_size(size)
    used  = (avail + virtq_avail_size(size) + align - 1) & ~(align - 1)
    return desc, avail, used


def vring_need_event(event_idx, new_idx, old_idx):
    """virtio 1.2 ``vring_need_event``: must a notification be sent after moving an index from
    ``old_idx`` to ``new_idx`` when the other side asked for one at ``event_idx``?"""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


# ---------------------------------------------------------------------------------------------
# Block device
# Ref: virtio 1.2, "Block Device" (struct virtio_blk_config, struct virtio_blk_req)
# ---------------------------------------------------------------------------------------------

VIRTIO_BLK_SECTOR_SIZE = 512
VIRTIO_BLK_ID_BYTES    = 20
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1

VirtioBlkGeometry = data.StructLayout({
    "cylinders": 16,
    "heads":     8,
    "sectors":   8,
})

VirtioBlkTopology = data.StructLayout({
    "physical_block_exp": 8,
    "alignment_offset":   8,
    "min_io_size":        16,
    "opt_io_size":        32,
})

VirtioBlkZoned = data.StructLayout({
    "zone_sectors":       32,
    "max_open_zones":     32,
    "max_active_zones":   32,
    "max_append_sectors": 32,
    "write_granularity":  32,
    "model":              8,
    "unused2":            24,
})

VirtioBlkConfig = data.StructLayout({
    "capacity":                      64,
    "size_max":                      32,
    "seg_max":                       32,
    "geometry":                      VirtioBlkGeometry,
    "blk_size":                      32,
    "topology":                      VirtioBlkTopology,
    "writeback":                     8,
    "unused0":                       8,
    "num_queues":                    16,
    "max_discard_sectors":           32,
    "max_discard_seg":               32,
    "discard_sector_alignment":      32,
    "max_write_zeroes_sectors":      32,
    "max_write_zeroes_seg":          32,
    "write_zeroes_may_unmap":        8,
    "unused1":                       24,
    "max_secure_erase_sectors":      32,
    "max_secure_erase_seg":          32,
    "secure_erase_sector_alignment": 32,
    "zoned":                         VirtioBlkZoned,
})


class VirtioBlkReqType(enum.Enum, shape=32):
    IN           = 0
    OUT          = 1
    FLUSH        = 4
    GET_ID       = 8
    GET_LIFETIME = 10
    DISCARD      = 11
    WRITE_ZEROES = 13
    SECURE_ERASE = 14


class VirtioBlkStatus(enum.Enum, shape=8):
    OK     = 0
    IOERR  = 1
    UNSUPP = 2


#: The device-readable request header (struct virtio_blk_outhdr).
VirtioBlkOutHdr = data.StructLayout({
    "type":     VirtioBlkReqType,
    "reserved": 32,      # ioprio in legacy drivers; ignored
    "sector":   64,
})

#: One segment of a DISCARD / WRITE_ZEROES / SECURE_ERASE request.
VirtioBlkDiscardWriteZeroes = data.StructLayout({
    "sector":      64,
    "num_sectors": 32,
    "flags":       32,  # bit 0: unmap
})


# ---------------------------------------------------------------------------------------------
# Network device
# Ref: virtio 1.2, "Network Device" (struct virtio_net_config, struct virtio_net_hdr)
# ---------------------------------------------------------------------------------------------

class VirtioNetStatus(enum.Flag, shape=16):
    LINK_UP  = 1
    ANNOUNCE = 2


VirtioNetConfig = data.StructLayout({
    "mac":                              data.ArrayLayout(8, 6),
    "status":                           VirtioNetStatus,
    "max_virtqueue_pairs":              16,
    "mtu":                              16,
    "speed":                            32,
    "duplex":                           8,
    "rss_max_key_size":                 8,
    "rss_max_indirection_table_length": 16,
    "supported_hash_types":             32,
    "supported_tunnel_types":           32,
})


class VirtioNetHdrFlags(enum.Flag, shape=8):
    NEEDS_CSUM = 1
    DATA_VALID = 2
    RSC_INFO   = 4


class VirtioNetGsoType(enum.Enum, shape=8):
    NONE  = 0
    TCPV4 = 1
    UDP   = 3
    TCPV6 = 4
    UDP_L4 = 5
    ECN   = 0x80


#: struct virtio_net_hdr as used with VIRTIO_F_VERSION_1 (12 bytes, num_buffers always present).
VirtioNetHdr = data.StructLayout({
    "flags":       VirtioNetHdrFlags,
    "gso_type":    VirtioNetGsoType,
    "hdr_len":     16,
    "gso_size":    16,
    "csum_start":  16,
    "csum_offset": 16,
    "num_buffers": 16,
})

#: struct virtio_net_hdr without ``num_buffers`` (10 bytes): the header a legacy driver uses when
#: neither VIRTIO_F_VERSION_1 nor VIRTIO_NET_F_MRG_RXBUF is negotiated (virtio 1.2, "Legacy
#: Interface: Device Operation").
VirtioNetHdrLegacy = data.StructLayout({
    "flags":       VirtioNetHdrFlags,
    "gso_type":    VirtioNetGsoType,
    "hdr_len":     16,
    "gso_size":    16,
    "csum_start":  16,
    "csum_offset": 16,
})

#: Head of a control-queue command (struct virtio_net_ctrl_hdr); data then the ack byte follow.
VirtioNetCtrlHdr = data.StructLayout({
    "class":   8,
    "command": 8,
})


class VirtioNetCtrlClass(py_enum.IntEnum):
    RX             = 0
    MAC            = 1
    VLAN           = 2
    ANNOUNCE       = 3
    MQ             = 4
    GUEST_OFFLOADS = 5


class VirtioNetCtrlRx(py_enum.IntEnum):
    PROMISC  = 0
    ALLMULTI = 1
    ALLUNI   = 2
    NOMULTI  = 3
    NOUNI    = 4
    NOBCAST  = 5


class VirtioNetCtrlMac(py_enum.IntEnum):
    TABLE_SET = 0
    ADDR_SET  = 1


class VirtioNetCtrlVlan(py_enum.IntEnum):
    ADD = 0
    DEL = 1


class VirtioNetCtrlAnnounce(py_enum.IntEnum):
    ACK = 0


class VirtioNetCtrlGuestOffloads(py_enum.IntEnum):
    SET = 0


class VirtioNetCtrlMq(py_enum.IntEnum):
    VQ_PAIRS_SET = 0
    RSS_CONFIG   = 1
    HASH_CONFIG  = 2


VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000


class VirtioNetCtrlAck(py_enum.IntEnum):
    OK  = 0
    ERR = 1
