# SPDX-License-Identifier: BSD-2-Clause
"""Pure-Python checks of the host model's building blocks (no simulator): the layout codec,
the ring geometry Linux uses, the profiles and their transport-feature filter, the device
layouts and their capability sizes, and the Linux-shaped errors."""

import struct

import pytest

from virtio_pcie.spec.pcie import MsixTableEntry
from virtio_pcie.spec.virtio import (
    VirtioBlkConfig, VirtioF, VirtioNetConfig, VirtioNetHdr, VirtioPciCapType, VirtqDesc,
    VirtqDescFlags, feature_mask,
)
from virtio_pcie_tb.codec import codec
from virtio_pcie_tb.host import PROFILES, IrqMode, LinuxError, VectorPolicy, get_profile
from virtio_pcie_tb.host.virtqueue import vring_size
from virtio_pcie_tb.models.py_virtio import legacy_layout, modern_layout, transitional_layout

pytestmark = pytest.mark.unit


def test_codec_matches_c_structs():
    d = codec(VirtqDesc).pack(addr=0x1122334455667788, len=0x1000,
                              flags=VirtqDescFlags.NEXT | VirtqDescFlags.WRITE, next=7)
    assert d == struct.pack("<QIHH", 0x1122334455667788, 0x1000, 3, 7)
    assert codec(VirtqDesc).unpack(d)["next"] == 7
    c = codec(VirtioBlkConfig)
    assert c.offset("topology.min_io_size") == 0x1A and c.offset("num_queues") == 0x22
    assert codec(VirtioNetConfig).fields["mac"] == (0, 6, True)
    assert codec(VirtioNetHdr).size == 12
    # a nested register with bit fields is one integer field
    assert codec(MsixTableEntry).fields["vector_control"] == (12, 4, False)
    with pytest.raises(ValueError):
        codec(VirtqDesc).pack(next=1 << 16)
    with pytest.raises(KeyError):
        codec(VirtqDesc).pack(bogus=1)


def test_vring_size_matches_linux():
    # include/uapi/linux/virtio_ring.h vring_size(num, align)
    def linux(num, align):
        return (((16 * num + 2 * (3 + num) + align - 1) & ~(align - 1)) + 2 * 3 + 8 * num)
    for num in (1, 2, 16, 128, 256, 1024, 32768):
        for align in (64, 4096):
            assert vring_size(num, align) == linux(num, align)


def test_profiles():
    p6, p7 = PROFILES["linux-6.12"], PROFILES["linux-7"]
    assert (p6.feature_words, p7.feature_words) == (2, 4)
    assert p6.vector_policies == (VectorPolicy.EACH, VectorPolicy.SHARED)
    assert p7.vector_policies == (VectorPolicy.EACH, VectorPolicy.SHARED_SLOW,
                                  VectorPolicy.SHARED)
    assert get_profile("linux-7") is p7 and get_profile(p6) is p6
    with pytest.raises(ValueError, match="unknown host profile"):
        get_profile("linux-2.6")
    assert IrqMode.from_policy(VectorPolicy.SHARED) == IrqMode.MSIX_SHARED
    assert IrqMode.INTX.policy is None


def test_transport_feature_filter():
    p = PROFILES["linux-6.12"]
    offered = feature_mask(VirtioF.VERSION_1, VirtioF.EVENT_IDX, VirtioF.IN_ORDER,
                           VirtioF.NOTIF_CONFIG_DATA, VirtioF.ACCESS_PLATFORM,
                           VirtioF.RING_RESET, VirtioF.SUSPEND) | 0b111
    kept = p.filter_transport_features(0b101, offered)
    # Linux clears IN_ORDER and NOTIF_CONFIG_DATA (and knows nothing of bit 43 in 6.12),
    # keeps the others, never touches device-type bits
    assert kept == 0b101 | feature_mask(VirtioF.VERSION_1, VirtioF.EVENT_IDX,
                                        VirtioF.ACCESS_PLATFORM, VirtioF.RING_RESET)


def test_layouts():
    lay = modern_layout(num_queues=3, msix_vectors=4, device_config_len=0x60)
    assert lay.regions["notify"].length == 4 * 2 + 2
    types = [c.cfg_type for c in lay.caps]
    assert types == [VirtioPciCapType.COMMON_CFG.value, VirtioPciCapType.NOTIFY_CFG.value,
                     VirtioPciCapType.ISR_CFG.value, VirtioPciCapType.DEVICE_CFG.value,
                     VirtioPciCapType.PCI_CFG.value]
    assert [c.size for c in lay.caps] == [16, 20, 16, 16, 20]
    short = lay.with_cap(VirtioPciCapType.COMMON_CFG, length=55)
    assert short.caps[0].length == 55 and lay.caps[0].length == 0x40
    assert len(lay.without_cap(VirtioPciCapType.ISR_CFG).caps) == 4
    leg = legacy_layout(msix_vectors=2, device_config_len=0x60)
    assert leg.bars[0].kind == "io" and not leg.caps
    tr = transitional_layout(num_queues=1, msix_vectors=2, device_config_len=0x1C)
    assert {b.index for b in tr.bars} == {0, 1, 4} and tr.caps[0].bar == 4


def test_linux_errors():
    e = LinuxError("EINVAL", "virtio_pci: bad capability len 55 (>=56 expected)")
    assert e.code == -22 and "bad capability len" in str(e)
    with pytest.raises(ValueError):
        LinuxError("EWHATEVER", "")
