# SPDX-License-Identifier: BSD-2-Clause
"""Guard tests for spec/: every layout against the specification's offset tables and against
``struct.pack`` of the C structures, and the TLP header layouts against cocotbext-pcie's packer.

A failure here means a layout in ``hdl/virtio_pcie/spec`` no longer matches the standard; every
other test trusts these layouts.
"""

import struct

import pytest
from amaranth.lib import data

from virtio_pcie.spec import pcie, virtio
from virtio_pcie.spec.pcie import byte_offset, byte_size

pytestmark = pytest.mark.unit


def pack(layout, values):
    """Bytes of a layout constant, little-endian as in memory."""
    return layout.const(values).as_value().value.to_bytes(byte_size(layout), "little")


def check_offsets(layout, table, size):
    for name, offset in table.items():
        assert byte_offset(layout, name) == offset, f"{name}: {byte_offset(layout, name):#x}"
    assert byte_size(layout) == size


# -- PCI / PCIe ----------------------------------------------------------------------------------

def test_type0_header_offsets():
    check_offsets(pcie.PciType0Header, {
        "vendor_id": 0x00, "device_id": 0x02, "command": 0x04, "status": 0x06,
        "revision_id": 0x08, "class_code": 0x09, "cache_line_size": 0x0C, "latency_timer": 0x0D,
        "header_type": 0x0E, "bist": 0x0F, "bar": 0x10, "cardbus_cis": 0x28,
        "subsystem_vendor_id": 0x2C, "subsystem_id": 0x2E, "expansion_rom": 0x30,
        "capabilities_pointer": 0x34, "interrupt_line": 0x3C, "interrupt_pin": 0x3D,
        "min_gnt": 0x3E, "max_lat": 0x3F,
    }, 0x40)
    assert pcie.PciType0Header["bar"].shape.length == 6


def test_command_status_bits():
    assert pcie.PciCommand.BUS_MASTER.value == 0x0004
    assert pcie.PciCommand.INTX_DISABLE.value == 0x0400
    assert pcie.PciStatus.INTERRUPT_STATUS.value == 0x0008
    assert pcie.PciStatus.CAPABILITIES_LIST.value == 0x0010
    assert pcie.PciStatus.RECEIVED_MASTER_ABORT.value == 0x2000


def test_pcie_cap_offsets():
    check_offsets(pcie.PcieCap, {
        "pcie_caps": 0x02, "dev_caps": 0x04, "dev_ctrl": 0x08, "dev_status": 0x0A,
        "link_caps": 0x0C, "link_ctrl": 0x10, "link_status": 0x12, "slot_caps": 0x14,
        "root_ctrl": 0x1C, "root_status": 0x20, "dev_caps2": 0x24, "dev_ctrl2": 0x28,
        "link_caps2": 0x2C, "link_ctrl2": 0x30, "slot_caps2": 0x34, "slot_status2": 0x3A,
    }, 0x3C)
    # Device Control: MPS in bits [7:5], extended tag bit 8, MRRS in [14:12] (§7.5.3.4)
    assert pcie.PcieDeviceControl["max_payload_size"].offset == 5
    assert pcie.PcieDeviceControl["extended_tag"].offset == 8
    assert pcie.PcieDeviceControl["max_read_request_size"].offset == 12
    assert pcie.PcieDeviceCapabilities["extended_tag_supported"].offset == 5
    assert pcie.PcieDeviceCapabilities["flr_capable"].offset == 28
    assert pcie.PcieLinkStatus["negotiated_link_width"].offset == 4
    assert pcie.PcieLinkCapabilities["port_number"].offset == 24


def test_pm_msix_caps():
    check_offsets(pcie.PmCap, {"pmc": 2, "pmcsr": 4, "data": 7}, 8)
    check_offsets(pcie.MsixCap, {"message_control": 2, "table": 4, "pba": 8}, 12)
    assert pcie.MsixMessageControl["enable"].offset == 15
    assert pcie.MsixMessageControl["function_mask"].offset == 14
    entry = pack(pcie.MsixTableEntry, {"msg_addr": 0xFEE00000, "msg_upper_addr": 1,
                                      "msg_data": 0x4021, "vector_control": {"mask": 1}})
    assert entry == struct.pack("<IIII", 0xFEE00000, 1, 0x4021, 1)


# -- TLP headers against cocotbext-pcie's own encoder -------------------------------------------

def _wire_header(hdr, dwords):
    return struct.pack(f">{dwords}L", *[(hdr >> (32 * i)) & 0xFFFFFFFF for i in range(dwords)])


def _hdr(**fields):
    value = pcie.TlpHeader.const({}).as_value().value
    from virtio_pcie_tb.models.tlp import HDR
    for path, field_value in fields.items():
        value = HDR.set(value, path.replace("__", "."), field_value)
    return value


def test_tlp_memory_request_headers():
    from cocotbext.pcie.core.tlp import Tlp, TlpType
    from cocotbext.pcie.core.utils import PcieId
    for fmt_type, addr, cx in ((pcie.FmtType.MRD32, 0x12345678, TlpType.MEM_READ),
                               (pcie.FmtType.MRD64, 0x1_2345_6788, TlpType.MEM_READ_64),
                               (pcie.FmtType.MWR64, 0xFFFF_0000_0000_1000, TlpType.MEM_WRITE_64)):
        t = Tlp()
        t.fmt_type = cx
        t.requester_id = PcieId(1, 2, 3)
        t.tag = 0x5A
        t.length = 3
        t.first_be = 0xE
        t.last_be = 0x3
        t.address = addr
        is_4dw = pcie.FmtType.is_4dw(fmt_type.value)
        hdr = _hdr(dw0__fmt_type=fmt_type.value, dw0__length=3, req__first_be=0xE,
                   req__last_be=3, req__tag=0x5A,
                   req__requester_id=(1 << 8) | (2 << 3) | 3,
                   req__dw2=(addr >> 32) if is_4dw else addr,
                   req__dw3=(addr & 0xFFFFFFFF) if is_4dw else 0)
        assert _wire_header(hdr, 4 if is_4dw else 3) == bytes(t.pack_header()), fmt_type


def test_tlp_completion_and_config_headers():
    from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
    from cocotbext.pcie.core.utils import PcieId
    t = Tlp()
    t.fmt_type = TlpType.CPL_DATA
    t.completer_id = PcieId(1, 0, 0)
    t.requester_id = PcieId(0, 0, 0)
    t.tag = 0x81
    t.length = 2
    t.byte_count = 0x123
    t.lower_address = 0x44
    t.status = CplStatus.SC
    hdr = _hdr(dw0__fmt_type=pcie.FmtType.CPLD.value, dw0__length=2, cpl__byte_count=0x123,
               cpl__completer_id=1 << 8, cpl__tag=0x81, cpl__lower_address=0x44)
    assert _wire_header(hdr, 3) == bytes(t.pack_header())

    t = Tlp()
    t.fmt_type = TlpType.CFG_WRITE_0
    t.requester_id = PcieId(0, 0, 0)
    t.completer_id = PcieId(3, 0, 0)
    t.tag = 7
    t.length = 1
    t.first_be = 0x3
    t.address = 0x1FC
    hdr = _hdr(dw0__fmt_type=pcie.FmtType.CFGWR0.value, dw0__length=1, cfg__first_be=3,
               cfg__tag=7, cfg__target_id=3 << 8, cfg__register=(0x1FC >> 2) & 0x3F,
               cfg__ext_register=0x1FC >> 8)
    assert _wire_header(hdr, 3) == bytes(t.pack_header())


def test_atomic_op_types():
    from cocotbext.pcie.core.tlp import TlpType

    def encoding(t):
        fmt, typ = t.value
        return (fmt.value << 5) | typ
    assert pcie.FmtType.FETCHADD32.value == encoding(TlpType.FETCH_ADD)
    assert pcie.FmtType.FETCHADD64.value == encoding(TlpType.FETCH_ADD_64)
    assert pcie.FmtType.SWAP32.value == encoding(TlpType.SWAP)
    assert pcie.FmtType.SWAP64.value == encoding(TlpType.SWAP_64)
    assert pcie.FmtType.CAS32.value == encoding(TlpType.CAS)
    assert pcie.FmtType.CAS64.value == encoding(TlpType.CAS_64)


def test_function_layouts():
    # PCI Local Bus 3.0 §6.2.5.1, §6.2.4; PCI PM 1.2 §3.2.3; PCIe Base 4.0 §7.5.3.18-19, §7.7.2.10
    assert pcie.PciMemoryBar.const({"type": pcie.BarType.MEM64, "prefetchable": 1}
                                   ).as_value().value == 0xC
    assert pcie.PciMemoryBar["base_address"].offset == 4
    assert pcie.PciIoBar.const({"io_space": 1}).as_value().value == 1
    assert pcie.PciIoBar["base_address"].offset == 2
    assert pcie.InterruptPin.INTA.value == 1
    assert byte_size(pcie.PmCapabilities) == 2
    assert pcie.PmCapabilities["pme_support"].offset == 11
    assert pcie.PmPowerState.D3HOT.value == 3
    assert pcie.PcieLinkCapabilities2["supported_link_speeds"].offset == 1
    assert pcie.PcieLinkControl2["target_link_speed"].offset == 0
    assert byte_size(pcie.PcieLinkCapabilities2) == 4 and byte_size(pcie.PcieLinkControl2) == 2
    assert pcie.MSIX_PBA_ENTRY_BITS == 64


def test_tlp_10bit_tag_bits():
    # T9 and T8 sit in DW0 bits 23 and 19 (PCIe Base 4.0 §2.2.6.2)
    assert pcie.TlpDw0["t9"].offset == 23 and pcie.TlpDw0["t8"].offset == 19
    assert pcie.TlpDw0["fmt_type"].offset == 24
    assert data.Layout.cast(pcie.TlpHeader).size == 128


# -- virtio --------------------------------------------------------------------------------------

def test_virtio_pci_caps():
    check_offsets(virtio.VirtioPciCap, {"cap_vndr": 0, "cap_next": 1, "cap_len": 2,
                                        "cfg_type": 3, "bar": 4, "id": 5, "padding": 6,
                                        "offset": 8, "length": 12}, 16)
    check_offsets(virtio.VirtioPciNotifyCap, {"notify_off_multiplier": 16}, 20)
    check_offsets(virtio.VirtioPciCfgCap, {"pci_cfg_data": 16}, 20)
    raw = pack(virtio.VirtioPciNotifyCap, {"cap": {"cap_vndr": 9, "cap_next": 0x50,
                                                   "cap_len": 20,
                                                   "cfg_type": virtio.VirtioPciCapType.NOTIFY_CFG,
                                                   "bar": 2, "offset": 0x3000, "length": 0x100},
                                           "notify_off_multiplier": 4})
    assert raw == struct.pack("<BBBBBBHIII", 9, 0x50, 20, 2, 2, 0, 0, 0x3000, 0x100, 4)


def test_common_cfg_layout():
    # include/uapi/linux/virtio_pci.h VIRTIO_PCI_COMMON_* and Linux check_offsets()
    check_offsets(virtio.VirtioPciCommonCfg, {
        "device_feature_select": 0x00, "device_feature": 0x04, "driver_feature_select": 0x08,
        "driver_feature": 0x0C, "config_msix_vector": 0x10, "num_queues": 0x12,
        "device_status": 0x14, "config_generation": 0x15, "queue_select": 0x16,
        "queue_size": 0x18, "queue_msix_vector": 0x1A, "queue_enable": 0x1C,
        "queue_notify_off": 0x1E, "queue_desc": 0x20, "queue_driver": 0x28,
        "queue_device": 0x30, "queue_notify_data": 0x38, "queue_reset": 0x3A,
        "admin_queue_index": 0x3C, "admin_queue_num": 0x3E,
    }, 0x40)
    assert virtio.VIRTIO_PCI_COMMON_CFG_MIN_LEN == 56
    values = dict(device_feature_select=1, device_feature=2, driver_feature_select=3,
                  driver_feature=4, config_msix_vector=5, num_queues=6, device_status=7,
                  config_generation=8, queue_select=9, queue_size=10, queue_msix_vector=11,
                  queue_enable=12, queue_notify_off=13, queue_desc=14, queue_driver=15,
                  queue_device=16, queue_notify_data=17, queue_reset=18, admin_queue_index=19,
                  admin_queue_num=20)
    assert pack(virtio.VirtioPciCommonCfg, values) == struct.pack(
        "<IIIIHHBBHHHHHQQQHHHH", *values.values())
    for name in virtio.COMMON_CFG_ACCESS:
        assert name in virtio.VirtioPciCommonCfg.members


def test_legacy_layout():
    check_offsets(virtio.VirtioPciLegacyHeader, {
        "host_features": 0x00, "guest_features": 0x04, "queue_pfn": 0x08, "queue_num": 0x0C,
        "queue_sel": 0x0E, "queue_notify": 0x10, "status": 0x12, "isr": 0x13}, 0x14)
    assert virtio.legacy_device_config_offset(False) == 0x14
    assert virtio.legacy_device_config_offset(True) == 0x18
    assert byte_offset(virtio.VirtioPciLegacyMsix, "queue_vector") == 2


def test_split_ring_layouts():
    desc = pack(virtio.VirtqDesc, {"addr": 0x1122334455667788, "len": 0x1000,
                                   "flags": virtio.VirtqDescFlags.NEXT |
                                   virtio.VirtqDescFlags.WRITE, "next": 7})
    assert desc == struct.pack("<QIHH", 0x1122334455667788, 0x1000, 3, 7)
    assert pack(virtio.VirtqUsedElem, {"id": 9, "len": 513}) == struct.pack("<II", 9, 513)
    assert virtio.VIRTQ_IDX_BYTES == struct.calcsize("<H")
    n = 256
    assert virtio.virtq_desc_size(n) == 16 * n
    assert virtio.virtq_avail_size(n) == 6 + 2 * n
    assert virtio.virtq_used_size(n) == 6 + 8 * n
    assert virtio.virtq_used_event_offset(n) == 4 + 2 * n
    assert virtio.virtq_avail_event_offset(n) == 4 + 8 * n
    # Linux vring_size(256, 4096) == 10246
    desc_a, avail_a, used_a = virtio.legacy_vring_layout(0x10000, n)
    assert (desc_a, avail_a, used_a) == (0x10000, 0x11000, 0x12000)
    assert used_a + virtio.virtq_used_size(n) - desc_a == 10246


def test_vring_need_event():
    # virtio-queue.h: (u16)(new - event - 1) < (u16)(new - old)
    assert virtio.vring_need_event(5, 6, 5)
    assert not virtio.vring_need_event(6, 6, 5)
    assert virtio.vring_need_event(0xFFFF, 0, 0xFFFE)   # across the 16-bit wrap
    assert not virtio.vring_need_event(10, 5, 0)


def test_blk_layouts():
    check_offsets(virtio.VirtioBlkConfig, {
        "capacity": 0x00, "size_max": 0x08, "seg_max": 0x0C, "geometry": 0x10,
        "blk_size": 0x14, "topology": 0x18, "topology.min_io_size": 0x1A,
        "topology.opt_io_size": 0x1C, "writeback": 0x20, "unused0": 0x21, "num_queues": 0x22,
        "max_discard_sectors": 0x24, "max_discard_seg": 0x28,
        "discard_sector_alignment": 0x2C, "max_write_zeroes_sectors": 0x30,
        "max_write_zeroes_seg": 0x34, "write_zeroes_may_unmap": 0x38, "unused1": 0x39,
        "max_secure_erase_sectors": 0x3C, "max_secure_erase_seg": 0x40,
        "secure_erase_sector_alignment": 0x44, "zoned": 0x48,
    }, 0x60)
    raw = pack(virtio.VirtioBlkConfig, {
        "capacity": 131072, "size_max": 65536, "seg_max": 254,
        "geometry": {"cylinders": 1, "heads": 2, "sectors": 3}, "blk_size": 4096,
        "topology": {"physical_block_exp": 3, "alignment_offset": 0, "min_io_size": 8,
                     "opt_io_size": 64},
        "writeback": 1, "num_queues": 4, "max_discard_sectors": 1 << 20,
        "max_discard_seg": 1, "discard_sector_alignment": 8,
        "max_write_zeroes_sectors": 1 << 20, "max_write_zeroes_seg": 1,
        "write_zeroes_may_unmap": 1})
    assert raw == struct.pack("<QIIHBBIBBHIBBHIIIIIB3sIII20s4s",
                              131072, 65536, 254, 1, 2, 3, 4096, 3, 0, 8, 64, 1, 0, 4,
                              1 << 20, 1, 8, 1 << 20, 1, 1, b"\0" * 3, 0, 0, 0,
                              b"\0" * 20, b"\0" * 4)
    assert pack(virtio.VirtioBlkOutHdr, {"type": virtio.VirtioBlkReqType.OUT,
                                         "sector": 2048}) == struct.pack("<IIQ", 1, 0, 2048)
    assert byte_size(virtio.VirtioBlkDiscardWriteZeroes) == 16
    assert virtio.VirtioBlkReqType.WRITE_ZEROES.value == 13
    assert virtio.VirtioBlkReqType.DISCARD.value == 11


def test_net_layouts():
    check_offsets(virtio.VirtioNetConfig, {
        "mac": 0x00, "status": 0x06, "max_virtqueue_pairs": 0x08, "mtu": 0x0A, "speed": 0x0C,
        "duplex": 0x10, "rss_max_key_size": 0x11, "rss_max_indirection_table_length": 0x12,
        "supported_hash_types": 0x14, "supported_tunnel_types": 0x18}, 0x1C)
    hdr = pack(virtio.VirtioNetHdr, {"flags": virtio.VirtioNetHdrFlags.NEEDS_CSUM,
                                     "gso_type": virtio.VirtioNetGsoType.NONE, "hdr_len": 54,
                                     "gso_size": 0, "csum_start": 34, "csum_offset": 16,
                                     "num_buffers": 1})
    assert hdr == struct.pack("<BBHHHHH", 1, 0, 54, 0, 34, 16, 1)
    assert byte_size(virtio.VirtioNetCtrlHdr) == 2
    assert byte_size(virtio.VirtioNetHdrLegacy) == 10
    assert virtio.VirtioNetCtrlAnnounce.ACK == 0 and virtio.VirtioNetCtrlVlan.DEL == 1
    # include/uapi/linux/virtio_net.h
    assert (virtio.VirtioNetF.DEVICE_STATS, virtio.VirtioNetF.VQ_NOTF_COAL,
            virtio.VirtioNetF.NOTF_COAL, virtio.VirtioNetF.GUEST_USO4,
            virtio.VirtioNetF.GUEST_USO6, virtio.VirtioNetF.HOST_USO,
            virtio.VirtioNetF.GUEST_HDRLEN, virtio.VirtioNetF.RSC_EXT,
            virtio.VirtioNetF.STANDBY) == (50, 52, 53, 54, 55, 56, 59, 61, 62)


def test_feature_bits():
    assert virtio.VirtioF.VERSION_1 == 32
    assert virtio.VirtioF.RING_RESET == 40
    assert virtio.feature_mask(virtio.VirtioF.VERSION_1, virtio.VirtioF.EVENT_IDX) == \
        (1 << 32) | (1 << 29)
    for device_type in virtio.VirtioDeviceId:
        for table in virtio.feature_dependencies(device_type):
            for feature, needs in table.items():
                assert all(int(n) != int(feature) for n in needs)
    # blk's WRITE_ZEROES shares bit 14 with net's HOST_UFO: it must not inherit its dependency
    assert virtio.VirtioBlkF.WRITE_ZEROES not in virtio.feature_dependencies(
        virtio.VirtioDeviceId.BLOCK)[0]


def test_ids():
    assert virtio.VIRTIO_PCI_MODERN_DEVICE_ID_BASE + virtio.VirtioDeviceId.BLOCK == 0x1042
    assert virtio.VIRTIO_PCI_TRANSITIONAL_DEVICE_ID[virtio.VirtioDeviceId.NET] == 0x1000
    assert virtio.VIRTIO_PCI_SUBSYSTEM_ID_MODERN >= 0x40


# -- Feature dependency tables (transport) -------------------------------------------------------

def test_feature_dependencies_per_device_type():
    """Net requirements apply to network devices only: device bit numbers are per type."""
    net_all, net_any = virtio.feature_dependencies(virtio.VirtioDeviceId.NET)
    assert net_all[int(virtio.VirtioNetF.HOST_TSO4)] == (int(virtio.VirtioNetF.CSUM),)
    assert net_any[int(virtio.VirtioNetF.GUEST_ECN)] == (int(virtio.VirtioNetF.GUEST_TSO4),
                                                         int(virtio.VirtioNetF.GUEST_TSO6))
    assert net_any[int(virtio.VirtioNetF.HOST_ECN)] == (int(virtio.VirtioNetF.HOST_TSO4),
                                                        int(virtio.VirtioNetF.HOST_TSO6))
    assert virtio.feature_dependencies(virtio.VirtioDeviceId.BLOCK) == ({}, {})
    assert list(virtio.TRANSPORT_FEATURE_BITS) == list(range(24, 50))
    assert all(bit in virtio.TRANSPORT_FEATURE_BITS for bit in virtio.VirtioF)


def test_split_ring_alignment():
    """virtio 1.2 §2.7 alignment table; the legacy layout satisfies it for every size."""
    assert (virtio.VIRTQ_DESC_ALIGN, virtio.VIRTQ_AVAIL_ALIGN, virtio.VIRTQ_USED_ALIGN) == \
        (16, 2, 4)
    assert byte_size(virtio.VirtqDesc) == virtio.VIRTQ_DESC_ALIGN
    for n in range(16):
        desc, avail, used = virtio.legacy_vring_layout(0x1000, 1 << n)
        assert desc % virtio.VIRTQ_DESC_ALIGN == 0 and avail % virtio.VIRTQ_AVAIL_ALIGN == 0
        assert used % virtio.VIRTQ_USED_ALIGN == 0

# -- Ethernet, IP, TCP, UDP (network byte order, spec/ethernet.py) --------------------------------

def test_ethernet_header_tables():
    """The header tables against scapy's packing of the same headers."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from virtio_pcie.spec import ethernet as eth

    def field(raw, table, name):
        return int.from_bytes(raw[eth.field_offset(table, name):eth.field_end(table, name)],
                              "big")

    raw = bytes(Ether(dst="01:02:03:04:05:06", src="0a:0b:0c:0d:0e:0f", type=0x1234))
    assert len(raw) == eth.ETH_HLEN
    assert field(raw, eth.ETH_HEADER, "dst") == 0x010203040506
    assert field(raw, eth.ETH_HEADER, "src") == 0x0A0B0C0D0E0F
    assert field(raw, eth.ETH_HEADER, "ethertype") == 0x1234

    raw = bytes(IP(len=0x1234, id=0x5678, flags="MF", frag=5, ttl=0x40, proto=17, chksum=0xBEEF,
                   src="1.2.3.4", dst="5.6.7.8"))
    assert len(raw) == eth.IPV4_MIN_HLEN
    assert field(raw, eth.IPV4_HEADER, "version_ihl") == 0x45
    assert field(raw, eth.IPV4_HEADER, "total_length") == 0x1234
    assert field(raw, eth.IPV4_HEADER, "identification") == 0x5678
    assert field(raw, eth.IPV4_HEADER, "flags_fragment") == eth.IPV4_FLAG_MF | 5
    assert field(raw, eth.IPV4_HEADER, "ttl") == 0x40
    assert field(raw, eth.IPV4_HEADER, "protocol") == eth.IpProto.UDP
    assert field(raw, eth.IPV4_HEADER, "checksum") == 0xBEEF
    assert field(raw, eth.IPV4_HEADER, "src") == 0x01020304
    assert field(raw, eth.IPV4_HEADER, "dst") == 0x05060708

    raw = bytes(IPv6(plen=0x1234, nh=6, hlim=7, src="::1", dst="::2"))
    assert len(raw) == eth.IPV6_HLEN
    assert field(raw, eth.IPV6_HEADER, "version_class_flow") >> 28 == eth.IPV6_VERSION
    assert field(raw, eth.IPV6_HEADER, "payload_length") == 0x1234
    assert field(raw, eth.IPV6_HEADER, "next_header") == eth.IpProto.TCP
    assert field(raw, eth.IPV6_HEADER, "hop_limit") == 7
    assert field(raw, eth.IPV6_HEADER, "src") == 1
    assert field(raw, eth.IPV6_HEADER, "dst") == 2

    raw = bytes(TCP(sport=0x1111, dport=0x2222, seq=3, ack=4, window=0x5555, chksum=0x6666,
                    urgptr=0x7777))
    assert len(raw) == eth.TCP_MIN_HLEN
    for name, value in (("src_port", 0x1111), ("dst_port", 0x2222), ("seq", 3), ("ack", 4),
                        ("window", 0x5555), ("checksum", 0x6666), ("urgent", 0x7777)):
        assert field(raw, eth.TCP_HEADER, name) == value, name

    raw = bytes(UDP(sport=0x1111, dport=0x2222, len=0x3333, chksum=0x4444))
    assert len(raw) == eth.UDP_HLEN
    for name, value in (("src_port", 0x1111), ("dst_port", 0x2222), ("length", 0x3333),
                        ("checksum", 0x4444)):
        assert field(raw, eth.UDP_HEADER, name) == value, name

    assert eth.frame_offset(eth.ETH_HLEN, (eth.IPV4_HEADER, "src")) == 26
    assert eth.frame_offset(eth.ETH_HLEN, (eth.IPV6_HEADER, "src")) == 22
    assert eth.L4_HEADER_MIN_LEN[eth.IpProto.TCP] == 20
    assert (eth.ETH_ZLEN, eth.VLAN_HLEN, eth.ETH_FCS_LEN) == (60, 4, 4)


def test_transfer_size_rules():
    # PCIe Base 4.0 §7.5.3.4: 000b = 128 bytes ... 101b = 4096 bytes.
    assert [pcie.payload_size_bytes(n) for n in range(pcie.MAX_SIZE_ENCODING + 1)] == \
        [128, 256, 512, 1024, 2048, 4096]
    assert pcie.payload_size_bytes(pcie.MAX_SIZE_ENCODING) == pcie.MAX_TLP_PAYLOAD_BYTES
    # Length is 10 bits with 0 meaning 1024 DW; Byte Count is 12 bits with 0 meaning 4096.
    assert 4 * (1 << pcie.TlpDw0["length"].width) == pcie.MAX_TLP_PAYLOAD_BYTES
    assert 1 << pcie.TlpCompletionHeader["byte_count"].width == pcie.MAX_TLP_PAYLOAD_BYTES
    assert pcie.REQUEST_BOUNDARY_BYTES == 4096
    assert pcie.RCB_BYTES == (64, 128)
    # Lower Address carries the low 7 bits: enough to place a completion within a 128-byte RCB.
    assert 1 << pcie.TlpCompletionHeader["lower_address"].width == max(pcie.RCB_BYTES)
    assert pcie.ADDRESS_32_LIMIT == 2**32
