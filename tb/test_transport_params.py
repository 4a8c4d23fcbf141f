# SPDX-License-Identifier: BSD-2-Clause
"""The transport's parameters and geometry, without a simulator.

The device-side rules about what may be *offered* (checklist rules 33, 34, 65, 68, 69, 71, 105)
are enforced when the transport is built: a bad offer is an error naming the bad value. The
register documentation generated from spec/ must match the committed file.
"""

from pathlib import Path

import pytest
from amaranth.hdl import Fragment

from transport_env import BLK_FEATURES, MODERN_PARAMS, NET_FEATURES, TRANSITIONAL_PARAMS
from virtio_pcie.spec.virtio import (VirtioBlkF, VirtioDeviceId, VirtioF, VirtioNetF,
                                     feature_mask)
from virtio_pcie.function.layout import FunctionLayout
from virtio_pcie.virtio.register_map import render_markdown
from virtio_pcie.virtio.transport import VirtioTransport

# Rejected parameters raise in __init__, after Amaranth started tracking the object.
pytestmark = [pytest.mark.unit,
              pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "registers-virtio.md"


def transport(**changes):
    return elaborated(VirtioTransport(**{**MODERN_PARAMS, **changes}))


def elaborated(component):
    """Elaborate ``component`` once (it must build; and Amaranth warns about unused ones)."""
    Fragment.get(component, None)
    return component


def test_rule_68_version_1_offered():
    """Rule 68: the device must offer VERSION_1."""
    with pytest.raises(ValueError, match="VERSION_1"):
        transport(device_features=NET_FEATURES & ~feature_mask(VirtioF.VERSION_1))


@pytest.mark.parametrize("bit", [VirtioF.RING_PACKED, VirtioF.IN_ORDER, VirtioF.SR_IOV,
                                 VirtioF.ADMIN_VQ, VirtioF.SUSPEND, 30, 42, 49])
def test_rule_71_unsupported_transport_features(bit):
    """Rules 65, 69 and 71: transport features this block (or the engine) cannot honour --
    packed rings, in-order, SR-IOV, admin queues, SUSPEND, reserved bits -- cannot be
    offered."""
    with pytest.raises(ValueError, match=f"bit {int(bit)}"):
        transport(device_features=NET_FEATURES | 1 << int(bit))


def test_rule_69_dependencies_offered():
    """Rule 69: no feature offered without the features it requires (per device type)."""
    with pytest.raises(ValueError, match="requires"):
        transport(device_features=NET_FEATURES & ~feature_mask(VirtioNetF.CTRL_VQ))
    with pytest.raises(ValueError, match="any of"):
        transport(device_features=NET_FEATURES & ~feature_mask(VirtioNetF.GUEST_TSO4))
    # Bit 7 is GUEST_TSO4 for a network device but SCSI for a block device: no net rule there.
    elaborated(VirtioTransport(**{**TRANSITIONAL_PARAMS,
                                  "device_features": BLK_FEATURES | feature_mask(VirtioBlkF.SCSI)}))


def test_rule_105_transitional_any_layout():
    """Rule 105: a transitional device must offer ANY_LAYOUT; a modern-only one may not offer
    the legacy-only bits."""
    with pytest.raises(ValueError, match="ANY_LAYOUT"):
        VirtioTransport(**{**TRANSITIONAL_PARAMS,
                           "device_features": BLK_FEATURES & ~feature_mask(VirtioF.ANY_LAYOUT)})
    with pytest.raises(ValueError, match="bit 27"):
        transport(device_features=NET_FEATURES | feature_mask(VirtioF.ANY_LAYOUT))


def test_rule_52_msix_table_size():
    """Rule 52: up to 0x800 vectors (the MSI-X Table Size field); 0 = no MSI-X."""
    assert transport(msix_vectors=0x800).msix_vectors == 0x800
    assert transport(msix_vectors=0).msix_vectors == 0
    with pytest.raises(ValueError, match="msix_vectors"):
        transport(msix_vectors=0x801)


def test_rule_70_platform_features():
    """Rule 70: an add-in card should offer ACCESS_PLATFORM and ORDER_PLATFORM; the transport
    accepts both (the test designs offer them)."""
    both = feature_mask(VirtioF.ACCESS_PLATFORM, VirtioF.ORDER_PLATFORM)
    assert transport(device_features=NET_FEATURES | both).device_features & both == both
    assert NET_FEATURES & both == both


@pytest.mark.parametrize("name, value", [
    ("queue_count", 0), ("queue_count", 4097), ("queue_count", 2.0),
    ("queue_size_max", 0), ("queue_size_max", 96), ("queue_size_max", 65536),
    ("device_type", 99), ("device_config_size", -1),
    ("msix_vectors", -1), ("msix_vectors", 2049),
    ("notify_off_multiplier", 2), ("notify_off_multiplier", 12), ("notify_off_multiplier", -4),
    ("reset_hold_cycles", 0), ("device_features", 1 << 64),
])
def test_bad_parameters(name, value):
    with pytest.raises(ValueError, match=name):
        transport(**{name: value})


@pytest.mark.parametrize("multiplier, length", [(0, 2), (4, 63 * 4 + 2), (4096, 63 * 4096 + 2)])
def test_rule_33_notify_length(multiplier, length):
    """Rules 33 and 37: the notification structure is long enough for every queue's doorbell
    (queue_notify_off * multiplier + 2); the port's window covers it."""
    t = transport(notify_off_multiplier=multiplier,
                  device_features=NET_FEATURES & ~feature_mask(VirtioF.NOTIFICATION_DATA))
    assert t.notify_length == length
    assert 1 << t.notify.signature.addr_width >= length
    assert t.notify_off_multiplier == multiplier


@pytest.mark.parametrize("multiplier, length", [(0, 4), (4, 63 * 4 + 4), (4096, 63 * 4096 + 4)])
def test_rule_34_notify_length_with_data(multiplier, length):
    """Rule 34: with NOTIFICATION_DATA offered every doorbell takes a 32-bit write, and the
    structure covers the last one's 4 bytes; the function's capability says the same."""
    assert NET_FEATURES & feature_mask(VirtioF.NOTIFICATION_DATA)
    t = transport(notify_off_multiplier=multiplier)
    assert t.notify_length == length
    layout = FunctionLayout(device_type=VirtioDeviceId.NET, queue_count=64, msix_vectors=8,
                            notify_off_multiplier=multiplier, notification_data=True)
    assert layout.windows["notify"].length == length
    assert 1 << t.notify.signature.addr_width >= length
    assert t.notify_off_multiplier == multiplier


def test_geometry():
    """Window sizes the capability builder uses (rule 31: common length 0x40)."""
    t = transport()
    assert (t.common_length, t.isr_length, t.device_length) == (0x40, 1, 28)
    assert t.common.signature.addr_width == 6 and t.isr.signature.addr_width == 2
    assert 1 << t.device.signature.addr_width >= t.device_length
    assert not hasattr(t, "legacy")
    legacy = elaborated(VirtioTransport(**TRANSITIONAL_PARAMS))
    assert legacy.legacy_length == 0x18 + 0x60
    assert 1 << legacy.legacy.signature.addr_width >= legacy.legacy_length


def test_large_queue_counts_elaborate():
    """Per-queue registers live in memories; 1024 queues elaborate."""
    transport(queue_count=1024, device_type=int(VirtioDeviceId.NET))


def test_register_docs_up_to_date():
    """docs/registers-virtio.md is generated from spec/ (regenerate with
    ``python -m virtio_pcie.virtio.register_map > docs/registers-virtio.md``)."""
    assert DOCS.read_text() == render_markdown(), \
        "docs/registers-virtio.md is stale: python -m virtio_pcie.virtio.register_map > " \
        "docs/registers-virtio.md"
