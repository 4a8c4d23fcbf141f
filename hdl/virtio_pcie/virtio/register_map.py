# SPDX-License-Identifier: BSD-2-Clause
"""The virtio register maps as Markdown, generated from :mod:`virtio_pcie.spec.virtio`.

``python -m virtio_pcie.virtio.register_map > docs/registers-virtio.md`` regenerates the
committed file; a test checks that it is up to date. Offsets and sizes come from the layouts,
the access column from :data:`~virtio_pcie.spec.virtio.COMMON_CFG_ACCESS`; only the prose
describing this transport's behaviour is written here.
"""

import sys

from amaranth.lib import data

from ..spec.virtio import (COMMON_CFG_ACCESS, LEGACY_QUEUE_ADDR_SHIFT, LEGACY_VRING_ALIGN,
                           VIRTIO_MSI_NO_VECTOR, DeviceStatus, VirtioBlkConfig, VirtioF,
                           VirtioIsr, VirtioNetConfig, VirtioPciCap, VirtioPciCapType,
                           VirtioPciCfgCap, VirtioPciCommonCfg, VirtioPciLegacyHeader,
                           VirtioPciLegacyMsix, VirtioPciNotifyCap, byte_size,
                           legacy_device_config_offset)
from .transport import SUPPORTED_TRANSPORT_FEATURES

__all__ = ["render_markdown", "main"]

_COMMON_NOTES = {
    "device_feature_select": "Selects the 32-bit window of `device_feature` (any value).",
    "device_feature":        "Offered bits `select*32 ..`; 0 for windows past bit 63.",
    "driver_feature_select": "Selects the 32-bit window of `driver_feature` (any value).",
    "driver_feature":        "Reads back the offered bits written. Writes to windows >= 2 "
                             "must be 0 (else FEATURES_OK is refused). Frozen at FEATURES_OK.",
    "config_msix_vector":    "Vector for configuration changes; reads NO_VECTOR (0xFFFF) if "
                             "the value is not an entry of the MSI-X table. NO_VECTOR after "
                             "reset.",
    "num_queues":            "`queue_count`.",
    "device_status":         "Writes set bits; 0 resets (reads the old value until the engine "
                             "and the device are idle). FEATURES_OK refused for unoffered or "
                             "dependency-breaking feature sets, or without VERSION_1.",
    "config_generation":     "Changes after a device configuration change, once configuration "
                             "(or this field) is read.",
    "queue_select":          "Takes effect at once; queues >= `num_queues` read size 0.",
    "queue_size":            "Any power of two <= the maximum (reset value); other writes "
                             "ignored.",
    "queue_msix_vector":     "Vector for the selected queue, as `config_msix_vector`.",
    "queue_enable":          "Writing 1 latches size and addresses and hands them to the "
                             "virtqueue engine; other values, and rings not aligned (16/2/4 "
                             "bytes), are ignored.",
    "queue_notify_off":      "The queue index: its doorbell is at index * "
                             "`notify_off_multiplier`.",
    "queue_desc":            "Descriptor area (two 32-bit halves, low first).",
    "queue_driver":          "Driver area (available ring).",
    "queue_device":          "Device area (used ring).",
    "queue_notify_data":     "The queue index (VIRTIO_F_NOTIF_CONFIG_DATA).",
    "queue_reset":           "With VIRTIO_F_RING_RESET negotiated: writing 1 resets the "
                             "selected queue; reads 1 until the engine is done.",
    "admin_queue_index":     "0 (VIRTIO_F_ADMIN_VQ is not offered).",
    "admin_queue_num":       "0.",
}

_LEGACY_NOTES = {
    "host_features":  "Device feature bits 0-31.",
    "guest_features": "Driver feature bits 0-31 (offered bits read back).",
    "queue_pfn":      f"Ring address >> {LEGACY_QUEUE_ADDR_SHIFT}; writing activates the "
                      f"selected queue (legacy layout, {LEGACY_VRING_ALIGN}-byte alignment), 0 "
                      "deactivates it.",
    "queue_num":      "Size of the selected queue (read only).",
    "queue_sel":      "Queue select (shared with `queue_select`).",
    "queue_notify":   "Write a queue index to notify it.",
    "status":         "Device status; 0 resets, and the next legacy access waits for the reset "
                      "to complete.",
    "isr":            "ISR status, read to clear.",
    "config_vector":  "`config_msix_vector` (only while MSI-X is enabled).",
    "queue_vector":   "`queue_msix_vector` (only while MSI-X is enabled).",
}


def _fields(layout, prefix="", base=0):
    """(name, byte offset, byte size) of every leaf field, nested structures flattened."""
    rows = []
    for name, field in layout:
        offset = base + field.offset // 8
        shape = field.shape
        if isinstance(shape, data.StructLayout):
            rows += _fields(shape, f"{prefix}{name}.", offset)
        elif isinstance(shape, data.ArrayLayout):
            rows.append((f"{prefix}{name}[{shape.length}]", offset, byte_size(shape)))
        else:
            rows.append((f"{prefix}{name}", offset, byte_size(shape)))
    return rows


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _layout_table(layout, notes=None, access=None, base=0):
    rows = []
    for name, offset, size in _fields(layout, base=base):
        row = [f"0x{offset:02X}", size, f"`{name}`"]
        if access is not None:
            row.append(access.get(name, "rw").upper())
        if notes is not None:
            row.append(notes.get(name, ""))
        rows.append(row)
    header = ["Offset", "Bytes", "Field"]
    if access is not None:
        header.append("Access")
    if notes is not None:
        header.append("Behaviour")
    return _table(header, rows)


def _flag_table(flags):
    return _table(["Value", "Name"], [(f"0x{int(f.value):02X}", f.name) for f in flags])


def render_markdown():
    """The virtio part of the register documentation, as Markdown text."""
    legacy_header = byte_size(VirtioPciLegacyHeader)
    features = [(int(bit), f"VIRTIO_F_{VirtioF(bit).name}", what)
                for bit, what in sorted(SUPPORTED_TRANSPORT_FEATURES.items())]
    parts = [
        "<!-- Generated by `python -m virtio_pcie.virtio.register_map`; do not edit. -->",
        "",
        "## Virtio",
        "",
        "Register maps of the virtio PCI transport "
        "(`hdl/virtio_pcie/virtio/transport.py`), generated from the layouts in "
        "`hdl/virtio_pcie/spec/virtio.py` (virtio 1.2 §4.1). All fields are little-endian; "
        "64-bit fields are accessed as two 32-bit halves. Unlisted offsets read 0 and ignore "
        "writes.",
        "",
        f"### Common configuration (`cfg_type` {VirtioPciCapType.COMMON_CFG.value}), "
        f"{byte_size(VirtioPciCommonCfg)} bytes",
        "",
        _layout_table(VirtioPciCommonCfg, _COMMON_NOTES, COMMON_CFG_ACCESS),
        "",
        "Device status bits (`device_status`):",
        "",
        _flag_table(DeviceStatus),
        "",
        f"### ISR status (`cfg_type` {VirtioPciCapType.ISR_CFG.value}), 1 byte",
        "",
        "Reading returns the byte and clears it (and drops INTx).",
        "",
        _flag_table(VirtioIsr),
        "",
        f"### Notifications (`cfg_type` {VirtioPciCapType.NOTIFY_CFG.value})",
        "",
        "With `notify_off_multiplier` 0 there is one doorbell at offset 0 and the 16-bit value "
        "written is the queue index. With a multiplier (a power of two, at least 4) queue *n*'s "
        "doorbell is the dword at *n* × multiplier and the address names the queue. Reads "
        "return 0; doorbells for queues that are not enabled are ignored.",
        "",
        f"### Device-specific configuration (`cfg_type` {VirtioPciCapType.DEVICE_CFG.value})",
        "",
        "Forwarded to the device back-end's register block. virtio-blk "
        f"(`struct virtio_blk_config`, {byte_size(VirtioBlkConfig)} bytes):",
        "",
        _layout_table(VirtioBlkConfig),
        "",
        f"virtio-net (`struct virtio_net_config`, {byte_size(VirtioNetConfig)} bytes):",
        "",
        _layout_table(VirtioNetConfig),
        "",
        "### Legacy I/O header (transitional builds)",
        "",
        f"The MSI-X vector registers exist only while MSI-X is enabled; device-specific "
        f"configuration follows at 0x{legacy_device_config_offset(False):02X} without MSI-X, "
        f"0x{legacy_device_config_offset(True):02X} with it.",
        "",
        _layout_table(VirtioPciLegacyHeader, _LEGACY_NOTES),
        "",
        _layout_table(VirtioPciLegacyMsix, _LEGACY_NOTES, base=legacy_header),
        "",
        "### Capability structures (in configuration space)",
        "",
        "`struct virtio_pci_cap`:",
        "",
        _layout_table(VirtioPciCap),
        "",
        "`struct virtio_pci_notify_cap` and `struct virtio_pci_cfg_cap` extend it:",
        "",
        _layout_table(data.StructLayout({"notify_off_multiplier": 32}),
                      base=byte_size(VirtioPciCap)),
        "",
        _layout_table(data.StructLayout({"pci_cfg_data": 32}), base=byte_size(VirtioPciCap)),
        "",
        "### Transport feature bits this transport can offer",
        "",
        _table(["Bit", "Name", "Meaning"], features),
        "",
        f"NO_VECTOR is 0x{VIRTIO_MSI_NO_VECTOR:04X}. VIRTIO_F_ANY_LAYOUT and "
        "VIRTIO_F_NOTIFY_ON_EMPTY may be offered by transitional builds only.",
        "",
    ]
    assert byte_size(VirtioPciNotifyCap) == byte_size(VirtioPciCfgCap) == \
        byte_size(VirtioPciCap) + 4
    return "\n".join(parts)


def main():
    sys.stdout.write(render_markdown())


if __name__ == "__main__":
    main()
