# SPDX-License-Identifier: BSD-2-Clause
"""FunctionLayout, without a simulator: identity, BARs, windows, capabilities and fields follow
the specifications for every parameter set; bad parameters get errors that name them; the
committed register documentation is what the layout renders; the components elaborate."""

import itertools
from pathlib import Path

import pytest

from virtio_pcie.function.layout import Access, FunctionLayout
from virtio_pcie.function.registers_doc import render_document
from virtio_pcie.spec import pcie, virtio
from virtio_pcie.spec.pcie import BarType, CapId, byte_size
from virtio_pcie.spec.virtio import VirtioDeviceId, VirtioPciCapType

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parent.parent / "docs" / "registers.md"


def layouts():
    for device_type, transitional, multiplier, mode, queues, vectors in itertools.product(
            (VirtioDeviceId.NET, VirtioDeviceId.BLOCK, VirtioDeviceId.ENTROPY),
            (False, True), (0, 4, 4096), ("full", "ext"), (1, 3, 64), (1, 33, 2048)):
        yield FunctionLayout(device_type=device_type, transitional=transitional,
                             queue_count=queues, msix_vectors=vectors,
                             notify_off_multiplier=multiplier, config_mode=mode)


def test_identity():
    """virtio 1.2 §4.1.2 (checklist 1.A): IDs, revision, subsystem, class."""
    for layout in layouts():
        t = layout.device_type
        assert layout.vendor_id == 0x1AF4
        assert layout.class_code == virtio.VIRTIO_PCI_CLASS_CODE[t]
        if layout.transitional:
            assert layout.device_id == virtio.VIRTIO_PCI_TRANSITIONAL_DEVICE_ID[t]
            assert 0x1000 <= layout.device_id <= 0x103F
            assert layout.revision_id == 0 and layout.subsystem_id == t
        else:
            assert layout.device_id == 0x1040 + t and layout.revision_id == 1
            assert layout.subsystem_id >= 0x40
    custom = FunctionLayout(device_type=2, queue_count=1, msix_vectors=2,
                            subsystem_vendor_id=0x10EE, subsystem_id=0x0007)
    assert (custom.subsystem_vendor_id, custom.subsystem_id) == (0x10EE, 0x0007)


def test_bars_and_windows():
    """Power-of-two BARs; windows naturally aligned inside their BAR, not overlapping, each its
    structure rounded up to a power of two; BAR0 is I/O only for a transitional device (Linux's
    legacy driver maps BAR0); virtio structures in a non-prefetchable memory BAR, one page
    each; MSI-X table and PBA QWORD aligned."""
    for layout in layouts():
        indices = [b.index for b in layout.bars]
        assert (0 in indices) == layout.transitional
        for b in layout.bars:
            assert b.size & (b.size - 1) == 0 and not b.prefetchable
            if b.is_io:
                assert b.index == 0 and b.size <= 256      # PCI 3.0: I/O BARs up to 256 bytes
            if b.is_64bit:
                assert b.index + 1 not in indices and b.index % 2 == 0
        spans = []
        for w in layout.windows.values():
            bar = layout.bar(w.bar)
            assert w.offset % w.size == 0 and w.offset + w.size <= bar.size
            assert w.length <= w.size and w.addr_width == w.size.bit_length() - 1
            assert w.size == 4 or w.size < 2 * w.length or w.name == "msix_pba"
            spans.append((layout.fabric_address(w.bar, w.offset), w.size))
        spans.sort()
        for (a, sa), (b, _) in itertools.pairwise(spans):
            assert a + sa <= b
        virtio_bar = layout.bar(layout.windows["common"].bar)
        assert virtio_bar.kind == BarType.MEM64
        assert layout.windows["common"].offset == 0 and layout.windows["isr"].offset == 0x1000
        assert layout.windows["common"].length == byte_size(virtio.VirtioPciCommonCfg) == 0x40
        assert layout.windows["msix_table"].offset % 8 == 0
        assert layout.windows["msix_pba"].offset % 8 == 0
        assert layout.windows["msix_table"].length == 16 * layout.msix_vectors
        assert layout.windows["msix_pba"].length * 8 >= layout.msix_vectors
        if layout.transitional:
            assert layout.windows["legacy"].length == \
                virtio.legacy_device_config_offset(True) + layout.device_cfg_length
        assert ("device" in layout.windows) == bool(layout.device_cfg_length)
        assert set(layout.register_windows) <= {"common", "isr", "device", "notify", "legacy"}


def test_notify_structure():
    """virtio 1.2 §4.1.4.4 (checklist rules 33/37): every queue's doorbell fits."""
    for layout in layouts():
        n = layout.windows["notify"]
        m = layout.notify_off_multiplier
        assert n.offset % 2 == 0
        assert n.length == (layout.queue_count - 1) * m + 2
        assert n.offset >= 0x3000 and n.offset % max(n.size, 0x1000) == 0


def test_transport_ports_match():
    """Every virtio window is exactly as wide, and its structure exactly as long, as the
    transport's target port for it, so the top connects them one to one."""
    from amaranth import Module
    from amaranth.lib.wiring import connect
    from virtio_pcie.function.pcie_function import PcieFunction
    from virtio_pcie.spec.virtio import VirtioF, feature_mask
    from virtio_pcie.virtio.transport import VirtioTransport
    for device_type, transitional, queues, multiplier in itertools.product(
            (VirtioDeviceId.NET, VirtioDeviceId.BLOCK), (False, True), (1, 3, 64), (0, 4, 4096)):
        layout = FunctionLayout(device_type=device_type, transitional=transitional,
                                queue_count=queues, msix_vectors=3,
                                notify_off_multiplier=multiplier)
        features = feature_mask(VirtioF.VERSION_1)
        if transitional:
            features |= feature_mask(VirtioF.ANY_LAYOUT)
        transport = VirtioTransport(queue_count=queues, queue_size_max=256,
                                    device_type=device_type, device_features=features,
                                    device_config_size=layout.device_cfg_length, msix_vectors=3,
                                    notify_off_multiplier=multiplier, transitional=transitional)
        transport._MustUse__silence = True        # built only to compare its ports
        lengths = {"common": transport.common_length, "isr": transport.isr_length,
                   "notify": transport.notify_length, "device": transport.device_length}
        if transitional:
            lengths["legacy"] = transport.legacy_length
        for name, window in layout.register_windows.items():
            assert window.length == lengths[name], (name, window, lengths[name])
        if queues == 3:
            function = PcieFunction(layout=layout, data_width=64)
            function._MustUse__silence = True
            m = Module()
            m._MustUse__silence = True
            for name in layout.register_windows:
                connect(m, getattr(function, name), getattr(transport, name))


def test_capabilities_full():
    """PCIe, PM, MSI-X, then COMMON, NOTIFY, ISR, DEVICE, PCI_CFG; dword aligned, chained,
    within 0x40..0xFF."""
    layout = FunctionLayout(device_type=2, queue_count=4, msix_vectors=5)
    names = [c.name for c in layout.capabilities]
    assert names == ["pcie", "pm", "msix", "virtio_common", "virtio_notify", "virtio_isr",
                     "virtio_device", "virtio_pci_cfg"]
    assert layout.capabilities_pointer == pcie.CAP_POINTER_MIN
    for a, b in itertools.pairwise(layout.capabilities):
        assert a.next == b.offset and a.offset + a.size <= b.offset
    assert layout.capabilities[-1].next == 0
    assert all(c.offset % 4 == 0 for c in layout.capabilities)
    assert layout.capabilities_end <= pcie.LEGACY_CONFIG_SPACE_SIZE
    assert [c.cfg_type for c in layout.capabilities if c.cap_id == CapId.VNDR] == \
        [VirtioPciCapType.COMMON_CFG, VirtioPciCapType.NOTIFY_CFG, VirtioPciCapType.ISR_CFG,
         VirtioPciCapType.DEVICE_CFG, VirtioPciCapType.PCI_CFG]


def test_ext_budget():
    """anchors.md §1.6: the five virtio caps take exactly the 88 bytes a 7-series forwards from
    0xA8; without a DEVICE structure they take 72; a pointer with too little room is refused
    with the numbers."""
    ext = FunctionLayout(device_type=1, queue_count=3, msix_vectors=4, config_mode="ext")
    assert ext.config_budget == (88, 88)
    assert [c.cap_id for c in ext.capabilities] == [CapId.VNDR] * 5
    assert ext.capabilities[0].offset == 0xA8 and ext.capabilities[-1].next == 0
    assert all(f.byte_offset >= 0xA8 for f in ext.config_fields)
    plan = ext.hard_ip_plan()
    assert plan["config_forwarding"] == {"first_forwarded_offset": 0xA8,
                                         "ext_cfg_cap_ptr_dword": 0x2A,
                                         "last_hard_ip_capability_next": 0xA8,
                                         "bytes_used": 88, "bytes_available": 88}
    assert [b["index"] for b in plan["bars"]] == [1, 4]
    assert plan["msix"]["table_size"] == 4
    entropy = FunctionLayout(device_type=4, queue_count=1, msix_vectors=2, config_mode="ext")
    assert entropy.config_budget == (72, 88)
    with pytest.raises(ValueError, match=r"need 88 bytes from 0xac but only 84"):
        FunctionLayout(device_type=1, queue_count=3, msix_vectors=4, config_mode="ext",
                       ext_cap_pointer=0xAC)


def test_fields():
    """Fields never overlap or cross a dword (checked by the layout), RO fields of the header
    carry the identity, and the virtio capabilities point at the windows."""
    for layout in itertools.islice(layouts(), 0, None, 7):
        image = layout.config_image()
        if layout.config_mode == "full":
            assert int.from_bytes(image[0:2], "little") == layout.vendor_id
            assert int.from_bytes(image[2:4], "little") == layout.device_id
            assert image[pcie.byte_offset(pcie.PciType0Header, "capabilities_pointer")] == 0x40
            assert image[pcie.byte_offset(pcie.PciType0Header, "interrupt_pin")] == 1
        for cap in layout.capabilities:
            assert image[cap.offset] == cap.cap_id.value
            assert image[cap.offset + 1] == cap.next
        writable = layout.writable_mask()
        for f in layout.config_fields:
            if f.access == Access.RO:
                for bit in range(f.offset, f.offset + f.width):
                    assert not writable[bit // 8] >> (bit % 8) & 1
        window = [f for f in layout.config_fields if f.access == Access.WINDOW]
        assert len(window) == 1 and window[0].offset % 32 == 0


def test_bad_parameters():
    """Errors name the bad value."""
    cases = [
        (dict(device_type=9), "device_type"),
        (dict(msix_vectors=0), "msix_vectors must be an integer from 1 to 2048, not 0"),
        (dict(msix_vectors=2049), "2049"),
        (dict(queue_count=0), "queue_count"),
        (dict(notify_off_multiplier=3), "notify_off_multiplier"),
        (dict(config_mode="half"), "config_mode"),
        (dict(config_mode="ext", ext_cap_pointer=0xA9), "ext_cap_pointer"),
        (dict(config_mode="ext", ext_cap_pointer=0x100), "ext_cap_pointer"),
        (dict(device_cfg_length=5000), "device_cfg_length"),
        (dict(device_type=3), "device_cfg_length must be given"),
        (dict(max_payload_size=100), "max_payload_size"),
        (dict(link_speed=9), "link_speed"),
        (dict(link_width=3), "link_width"),
        (dict(transitional=True, subsystem_id=0x1100), "subsystem_id"),
        (dict(transitional="yes"), "transitional"),
    ]
    for overrides, message in cases:
        params = dict(device_type=2, queue_count=1, msix_vectors=2)
        params.update(overrides)
        with pytest.raises(ValueError, match=message):
            FunctionLayout(**params)
    FunctionLayout(device_type=3, queue_count=2, msix_vectors=3, device_cfg_length=12)


def test_registers_doc_is_current():
    """docs/registers.md is what the layout renders (regenerate with
    ``python -m virtio_pcie.function.registers_doc docs/registers.md``)."""
    assert DOCS.read_text() == render_document(), \
        "docs/registers.md is out of date: python -m virtio_pcie.function.registers_doc " \
        "docs/registers.md"


@pytest.mark.parametrize("params", [
    dict(device_type=2, queue_count=1, msix_vectors=1, notify_off_multiplier=0),
    dict(device_type=1, transitional=True, queue_count=64, msix_vectors=129,
         notify_off_multiplier=4096, config_mode="ext", ext_cap_pointer=0x40),
    pytest.param(dict(device_type=1, queue_count=1024, msix_vectors=2048,
                      notify_off_multiplier=4096), marks=pytest.mark.slow),
])
def test_elaborates(params):
    """The function elaborates at the extremes (1 vector, no multiplier; 129 vectors, 64 queues
    with page-sized doorbells, ext mode; and, slow, the 2048-vector maximum)."""
    from amaranth.back import rtlil
    from virtio_pcie.function.pcie_function import PcieFunction
    layout = FunctionLayout(**params)
    rtlil.convert(PcieFunction(layout=layout, data_width=64))
