# SPDX-License-Identifier: BSD-2-Clause
"""PCI and PCI Express structures, defined once as data.

Everything the gateware, the testbench models and the generated documentation need to know about
TLP headers (PCIe Base 4.0 §2.2), the type-0 configuration header (PCI Local Bus 3.0 §6.1, PCIe
Base 4.0 §7.5.1) and the capabilities this function implements (PM: PCI PM 1.2 §3.2; PCI Express:
PCIe Base 4.0 §7.5.3; MSI-X: PCIe Base 4.0 §7.7.2) is stated here as :mod:`amaranth.lib.data`
layouts and :mod:`amaranth.lib.enum` enumerations. Offsets are derived from the layouts with
:func:`byte_offset`; nothing else in the project types them again.

TLP headers are represented as 128 bits: DW0 in bits [31:0], DW1 in [63:32] and so on, each
dword holding the value drawn in the specification's figures (bit 31 of DW0 is the first bit on
the wire, i.e. ``Fmt[2]``). Payload dwords hold bytes in address order, lowest address in the
least significant byte.
"""

from amaranth.lib import data, enum

__all__ = [
    "byte_offset", "byte_size",
    "FmtType", "CplStatus", "MsgCode", "TlpAttr",
    "PcieId", "TlpDw0", "TlpRequestHeader", "TlpCompletionHeader", "TlpConfigHeader",
    "TlpMessageHeader", "TlpHeader",
    "PciCommand", "PciStatus", "PciType0Header", "BarType", "HEADER_TYPE_0",
    "CapId", "ExtCapId", "PmCap", "PmControlStatus", "PcieCap", "PcieCapabilities",
    "PcieDeviceCapabilities", "PcieDeviceControl", "PcieDeviceStatus", "PcieLinkCapabilities",
    "PcieLinkControl", "PcieLinkStatus", "PcieDeviceCapabilities2", "PcieDevicePortType",
    "MsixCap", "MsixMessageControl", "MsixTableOffset", "MsixTableEntry", "MsixVectorControl",
    "ExtCapHeader",
    "PciMemoryBar", "PciIoBar", "InterruptPin", "PmPowerState", "PmCapabilities",
    "PM_CAP_VERSION", "PCIE_CAP_VERSION", "PcieLinkSpeed", "PcieLinkCapabilities2",
    "PcieLinkControl2", "MSIX_PBA_ENTRY_BITS",
    "CONFIG_SPACE_SIZE", "LEGACY_CONFIG_SPACE_SIZE", "CAP_POINTER_MIN",
    "payload_size_bytes", "read_request_size_bytes",
    "REQUEST_BOUNDARY_BYTES", "MAX_TLP_PAYLOAD_BYTES", "MAX_SIZE_ENCODING", "RCB_BYTES",
    "ADDRESS_32_LIMIT",
]


def byte_offset(layout, name):
    """Byte offset of field ``name`` in ``layout`` (a dotted path selects nested fields)."""
    offset = 0
    for part in name.split("."):
        field = layout[part]
        if field.offset % 8:
            raise ValueError(f"field {name!r} of {layout!r} is not byte aligned")
        offset += field.offset // 8
        layout = data.Layout.cast(field.shape) if isinstance(field.shape, data.Layout) \
            else field.shape
    return offset


def byte_size(shape):
    """Size in bytes of a layout or field shape (rounded up)."""
    if isinstance(shape, data.Layout):
        return (shape.size + 7) // 8
    from amaranth.hdl import Shape
    return (Shape.cast(shape).width + 7) // 8


# ---------------------------------------------------------------------------------------------
# Transaction layer packets (PCIe Base 4.0 §2.2)
# ---------------------------------------------------------------------------------------------

class FmtType(enum.Enum, shape=8):
    """``Fmt[2:0]`` and ``Type[4:0]`` of DW0, combined (PCIe Base 4.0 Table 2-3).

    Bit 6 (``Fmt[1]``) says the TLP carries data, bit 5 (``Fmt[0]``) that the header is 4 DW.
    """
    MRD32    = 0b000_00000
    MRD64    = 0b001_00000
    MRDLK32  = 0b000_00001
    MRDLK64  = 0b001_00001
    MWR32    = 0b010_00000
    MWR64    = 0b011_00000
    IORD     = 0b000_00010
    IOWR     = 0b010_00010
    FETCHADD32 = 0b010_01100   # AtomicOps (PCIe Base 4.0 §2.2.7): requests a completer may refuse
    FETCHADD64 = 0b011_01100
    SWAP32   = 0b010_01101
    SWAP64   = 0b011_01101
    CAS32    = 0b010_01110
    CAS64    = 0b011_01110
    CFGRD0   = 0b000_00100
    CFGWR0   = 0b010_00100
    CFGRD1   = 0b000_00101
    CFGWR1   = 0b010_00101
    MSG_RC   = 0b001_10000  # routed to root complex
    MSG_ADDR = 0b001_10001  # routed by address
    MSG_ID   = 0b001_10010  # routed by ID
    MSG_BC   = 0b001_10011  # broadcast from root complex
    MSG_LOC  = 0b001_10100  # local, terminate at receiver (INTx emulation uses this)
    MSG_GATH = 0b001_10101  # gathered and routed to root complex
    MSGD_RC  = 0b011_10000
    MSGD_LOC = 0b011_10100
    CPL      = 0b000_01010
    CPLD     = 0b010_01010
    CPLLK    = 0b000_01011
    CPLDLK   = 0b010_01011

    @staticmethod
    def has_data(value):
        """Whether a ``fmt_type`` value carries a payload (works on ints and Amaranth values)."""
        return (value >> 6) & 1

    @staticmethod
    def is_4dw(value):
        """Whether a ``fmt_type`` value has a 4-DW header."""
        return (value >> 5) & 1


class CplStatus(enum.Enum, shape=3):
    """Completion status (PCIe Base 4.0 Table 2-34)."""
    SC  = 0b000  # successful completion
    UR  = 0b001  # unsupported request
    CRS = 0b010  # configuration request retry status
    CA  = 0b100  # completer abort


class MsgCode(enum.Enum, shape=8):
    """Message codes used by this function (PCIe Base 4.0 Table F-1)."""
    ASSERT_INTA   = 0x20
    ASSERT_INTB   = 0x21
    ASSERT_INTC   = 0x22
    ASSERT_INTD   = 0x23
    DEASSERT_INTA = 0x24
    DEASSERT_INTB = 0x25
    DEASSERT_INTC = 0x26
    DEASSERT_INTD = 0x27
    ERR_COR       = 0x30
    ERR_NONFATAL  = 0x31
    ERR_FATAL     = 0x33


class TlpAttr(enum.Flag, shape=2):
    """``Attr[1:0]`` of DW0; ``Attr[2]`` (IDO) is the separate ``attr2`` field."""
    NO_SNOOP         = 0b01
    RELAXED_ORDERING = 0b10


#: Bus/device/function number (Routing ID), PCIe Base 4.0 §2.2.6.2.
PcieId = data.StructLayout({
    "function": 3,
    "device":   5,
    "bus":      8,
})

#: First header dword, common to every TLP (PCIe Base 4.0 Figure 2-5).
TlpDw0 = data.StructLayout({
    "length":   10,      # payload length in dwords; 0 means 1024
    "at":        2,
    "attr":      TlpAttr,
    "ep":        1,      # poisoned
    "td":        1,      # TLP digest present
    "th":        1,
    "ln":        1,
    "attr2":     1,      # ID-based ordering
    "t8":        1,      # tag bit 8 (10-bit tags)
    "tc":        3,
    "t9":        1,      # tag bit 9 (10-bit tags)
    "fmt_type":  FmtType,
})

#: Memory, I/O and atomic requests (PCIe Base 4.0 Figures 2-13 to 2-15). The address is
#: ``dw2`` (3 DW header) or ``dw2:dw3`` (4 DW header); bits [1:0] of its last dword are PH.
TlpRequestHeader = data.StructLayout({
    "dw0":          TlpDw0,
    "first_be":     4,
    "last_be":      4,
    "tag":          8,
    "requester_id": PcieId,
    "dw2":          32,
    "dw3":          32,
})

#: Completions (PCIe Base 4.0 Figure 2-32).
TlpCompletionHeader = data.StructLayout({
    "dw0":           TlpDw0,
    "byte_count":    12,     # remaining byte count; 0 means 4096
    "bcm":           1,
    "status":        CplStatus,
    "completer_id":  PcieId,
    "lower_address": 7,
    "_rsvd":         1,
    "tag":           8,
    "requester_id":  PcieId,
    "dw3":           32,
})

#: Configuration requests (PCIe Base 4.0 Figure 2-17). ``target_id`` is the addressed function.
TlpConfigHeader = data.StructLayout({
    "dw0":          TlpDw0,
    "first_be":     4,
    "last_be":      4,
    "tag":          8,
    "requester_id": PcieId,
    "_rsvd0":       2,
    "register":     6,       # dword number, low 6 bits
    "ext_register": 4,       # dword number, high 4 bits
    "_rsvd1":       4,
    "target_id":    PcieId,
    "dw3":          32,
})

#: Messages (PCIe Base 4.0 Figure 2-22).
TlpMessageHeader = data.StructLayout({
    "dw0":          TlpDw0,
    "message_code": MsgCode,
    "tag":          8,
    "requester_id": PcieId,
    "dw2":          32,
    "dw3":          32,
})

#: Any TLP header, viewed as the kind its ``fmt_type`` says it is.
TlpHeader = data.UnionLayout({
    "dw0": TlpDw0,
    "req": TlpRequestHeader,
    "cpl": TlpCompletionHeader,
    "cfg": TlpConfigHeader,
    "msg": TlpMessageHeader,
    "raw": 128,
})


def payload_size_bytes(encoded):
    """Bytes for a Max_Payload_Size / Max_Read_Request_Size encoding (PCIe Base 4.0 §7.5.3.4)."""
    return 128 << encoded


read_request_size_bytes = payload_size_bytes

#: Largest Max_Payload_Size / Max_Read_Request_Size encoding (4096 bytes); 6 and 7 are reserved
#: (PCIe Base 4.0 §7.5.3.4).
MAX_SIZE_ENCODING = 5
#: Largest TLP payload and largest memory read request, in bytes (PCIe Base 4.0 §2.2.2: Length
#: 0 encodes 1024 DW; §2.2.9: Byte Count 0 encodes 4096 bytes).
MAX_TLP_PAYLOAD_BYTES = 4096
#: A memory request must not cross a 4-KB address boundary (PCIe Base 4.0 §2.2.7).
REQUEST_BOUNDARY_BYTES = 4096
#: Read Completion Boundary in bytes, indexed by Link Control.RCB (PCIe Base 4.0 §2.3.1.1,
#: §7.5.3.7): completions of one read are split only at naturally aligned multiples of it.
RCB_BYTES = (64, 128)
#: Memory requests to addresses below this use the 3-DW (32-bit) header (PCIe Base 4.0 §2.2.4.1).
ADDRESS_32_LIMIT = 1 << 32


# ---------------------------------------------------------------------------------------------
# Type-0 configuration space header (PCI Local Bus 3.0 §6.1, PCIe Base 4.0 §7.5.1)
# ---------------------------------------------------------------------------------------------

CONFIG_SPACE_SIZE        = 4096
LEGACY_CONFIG_SPACE_SIZE = 256
CAP_POINTER_MIN          = 0x40   # capabilities live in 0x40..0xFF
HEADER_TYPE_0            = 0x00


class PciCommand(enum.Flag, shape=16):
    IO_SPACE          = 1 << 0
    MEMORY_SPACE      = 1 << 1
    BUS_MASTER        = 1 << 2
    SPECIAL_CYCLES    = 1 << 3
    MWI_ENABLE        = 1 << 4
    VGA_PALETTE_SNOOP = 1 << 5
    PARITY_ERROR_RESP = 1 << 6
    IDSEL_STEPPING    = 1 << 7
    SERR_ENABLE       = 1 << 8
    FAST_B2B_ENABLE   = 1 << 9
    INTX_DISABLE      = 1 << 10


class PciStatus(enum.Flag, shape=16):
    IMMEDIATE_READINESS      = 1 << 0
    INTERRUPT_STATUS         = 1 << 3
    CAPABILITIES_LIST        = 1 << 4
    CAPABLE_66MHZ            = 1 << 5
    FAST_B2B_CAPABLE         = 1 << 7
    MASTER_DATA_PARITY_ERROR = 1 << 8
    DEVSEL_TIMING_LO         = 1 << 9
    DEVSEL_TIMING_HI         = 1 << 10
    SIGNALED_TARGET_ABORT    = 1 << 11
    RECEIVED_TARGET_ABORT    = 1 << 12
    RECEIVED_MASTER_ABORT    = 1 << 13
    SIGNALED_SYSTEM_ERROR    = 1 << 14
    DETECTED_PARITY_ERROR    = 1 << 15


class BarType(enum.Enum, shape=3):
    """Low bits of a BAR (PCI Local Bus 3.0 §6.2.5.1): bit 0 = I/O, bits [2:1] = memory type."""
    MEM32 = 0b000
    IO    = 0b001
    MEM64 = 0b100


#: A memory BAR (PCI Local Bus 3.0 §6.2.5.1): ``type`` is MEM32 or MEM64; a 64-bit BAR's upper
#: half is the next BAR dword, all address bits.
PciMemoryBar = data.StructLayout({
    "type":         BarType,
    "prefetchable": 1,
    "base_address": 28,     # address bits [31:4]
})

#: An I/O BAR (PCI Local Bus 3.0 §6.2.5.1).
PciIoBar = data.StructLayout({
    "io_space":     1,      # 1
    "_rsvd":        1,
    "base_address": 30,     # address bits [31:2]
})


class InterruptPin(enum.Enum, shape=8):
    """Interrupt Pin register values (PCI Local Bus 3.0 §6.2.4)."""
    NONE = 0
    INTA = 1
    INTB = 2
    INTC = 3
    INTD = 4


PciType0Header = data.StructLayout({
    "vendor_id":            16,
    "device_id":            16,
    "command":              PciCommand,
    "status":               PciStatus,
    "revision_id":          8,
    "class_code":           24,     # prog-if [7:0], sub-class [15:8], base class [23:16]
    "cache_line_size":      8,
    "latency_timer":        8,
    "header_type":          8,
    "bist":                 8,
    "bar":                  data.ArrayLayout(32, 6),
    "cardbus_cis":          32,
    "subsystem_vendor_id":  16,
    "subsystem_id":         16,
    "expansion_rom":        32,
    "capabilities_pointer": 8,
    "_rsvd":                56,
    "interrupt_line":       8,
    "interrupt_pin":        8,
    "min_gnt":              8,
    "max_lat":              8,
})


# ---------------------------------------------------------------------------------------------
# Capabilities
# ---------------------------------------------------------------------------------------------

class CapId(enum.Enum, shape=8):
    """Capability IDs (PCI Code and ID Assignment Specification §2)."""
    PM     = 0x01
    MSI    = 0x05
    VNDR   = 0x09
    PCIE   = 0x10
    MSIX   = 0x11


class ExtCapId(enum.Enum, shape=16):
    NULL = 0x0000
    AER  = 0x0001
    VSEC = 0x000B


#: Extended capability header (PCIe Base 4.0 §7.6.3).
ExtCapHeader = data.StructLayout({
    "cap_id":  ExtCapId,
    "version": 4,
    "next":    12,
})

#: Power Management Control/Status (PCI PM 1.2 §3.2.4).
PmControlStatus = data.StructLayout({
    "power_state":   2,      # 0 = D0, 3 = D3hot
    "_rsvd0":        1,
    "no_soft_reset": 1,
    "_rsvd1":        4,
    "pme_enable":    1,
    "data_select":   4,
    "data_scale":    2,
    "pme_status":    1,
})

class PmPowerState(enum.Enum, shape=2):
    """PMCSR PowerState (PCI PM 1.2 §3.2.4)."""
    D0    = 0
    D1    = 1
    D2    = 2
    D3HOT = 3


#: Power Management Capabilities register, PMC (PCI PM 1.2 §3.2.3).
PmCapabilities = data.StructLayout({
    "version":       3,
    "pme_clock":     1,
    "immediate_readiness_on_return_to_d0": 1,
    "dsi":           1,
    "aux_current":   3,
    "d1_support":    1,
    "d2_support":    1,
    "pme_support":   5,
})

#: PMC Version: 3 = PCI Power Management Interface Specification 1.2.
PM_CAP_VERSION = 3

#: Power Management capability (PCI PM 1.2 §3.2).
PmCap = data.StructLayout({
    "cap_id":     8,
    "cap_next":   8,
    "pmc":        PmCapabilities,
    "pmcsr":      PmControlStatus,
    "bridge_ext": 8,
    "data":       8,
})


class PcieDevicePortType(enum.Enum, shape=4):
    ENDPOINT        = 0b0000
    LEGACY_ENDPOINT = 0b0001
    RC_INTEGRATED   = 0b1001


PcieCapabilities = data.StructLayout({
    "version":         4,   # 2
    "port_type":       PcieDevicePortType,
    "slot_implemented": 1,
    "interrupt_message_number": 5,
    "_rsvd":           2,
})

PcieDeviceCapabilities = data.StructLayout({
    "max_payload_size_supported": 3,
    "phantom_functions":          2,
    "extended_tag_supported":     1,
    "l0s_acceptable_latency":     3,
    "l1_acceptable_latency":      3,
    "_undefined":                 3,
    "role_based_error_reporting": 1,
    "_rsvd0":                     2,
    "slot_power_limit_value":     8,
    "slot_power_limit_scale":     2,
    "flr_capable":                1,
    "_rsvd1":                     3,
})

PcieDeviceControl = data.StructLayout({
    "correctable_error_reporting": 1,
    "nonfatal_error_reporting":    1,
    "fatal_error_reporting":       1,
    "ur_reporting":                1,
    "relaxed_ordering":            1,
    "max_payload_size":            3,
    "extended_tag":                1,
    "phantom_functions":           1,
    "aux_power_pm":                1,
    "no_snoop":                    1,
    "max_read_request_size":       3,
    "initiate_flr":                1,
})

PcieDeviceStatus = data.StructLayout({
    "correctable_error_detected": 1,
    "nonfatal_error_detected":    1,
    "fatal_error_detected":       1,
    "ur_detected":                1,
    "aux_power_detected":         1,
    "transactions_pending":       1,
    "emergency_power_reduction":  1,
    "_rsvd":                      9,
})

PcieLinkCapabilities = data.StructLayout({
    "max_link_speed":          4,
    "max_link_width":          6,
    "aspm_support":            2,
    "l0s_exit_latency":        3,
    "l1_exit_latency":         3,
    "clock_power_management":  1,
    "surprise_down_reporting": 1,
    "dll_active_reporting":    1,
    "bandwidth_notification":  1,
    "aspm_optionality":        1,
    "_rsvd":                   1,
    "port_number":             8,
})

PcieLinkControl = data.StructLayout({
    "aspm_control":        2,
    "_rsvd0":              1,
    "rcb":                 1,   # read completion boundary: 0 = 64 B, 1 = 128 B (RC-set)
    "link_disable":        1,
    "retrain_link":        1,
    "common_clock":        1,
    "extended_synch":      1,
    "clock_pm_enable":     1,
    "hw_autonomous_width_disable": 1,
    "bw_mgmt_int_enable":  1,
    "autonomous_bw_int_enable": 1,
    "_rsvd1":              4,
})

PcieLinkStatus = data.StructLayout({
    "current_link_speed":      4,
    "negotiated_link_width":   6,
    "_undefined":              1,
    "link_training":           1,
    "slot_clock_configuration": 1,
    "dll_link_active":         1,
    "link_bw_management":      1,
    "link_autonomous_bw":      1,
})

PcieDeviceCapabilities2 = data.StructLayout({
    "completion_timeout_ranges": 4,
    "completion_timeout_disable": 1,
    "ari_forwarding":            1,
    "atomic_op_routing":         1,
    "atomic_op_32":              1,
    "atomic_op_64":              1,
    "cas_128":                   1,
    "no_ro_enabled_pr_pr":       1,
    "ltr":                       1,
    "tph_completer":             2,
    "ln_system_cls":             2,
    "tag_10bit_completer":       1,
    "tag_10bit_requester":       1,
    "obff":                      2,
    "extended_fmt_field":        1,
    "end_end_tlp_prefix":        1,
    "max_end_end_tlp_prefixes":  2,
    "emergency_power_reduction": 2,
    "emergency_power_init":      1,
    "_rsvd":                     4,
    "frs":                       1,
})

class PcieLinkSpeed(enum.Enum, shape=4):
    """Link speed encodings (Link Capabilities / Status, Link Control 2; PCIe Base 4.0 §7.5.3)."""
    GT_2_5 = 1
    GT_5   = 2
    GT_8   = 3
    GT_16  = 4


#: Link Capabilities 2 (PCIe Base 4.0 §7.5.3.18): bit ``n - 1`` of the vector is speed ``n``.
PcieLinkCapabilities2 = data.StructLayout({
    "_rsvd0":                1,
    "supported_link_speeds": 7,
    "crosslink":             1,
    "_rsvd1":                23,
})

#: Link Control 2 (PCIe Base 4.0 §7.5.3.19).
PcieLinkControl2 = data.StructLayout({
    "target_link_speed":           4,
    "enter_compliance":            1,
    "hw_autonomous_speed_disable": 1,
    "selectable_de_emphasis":      1,
    "transmit_margin":             3,
    "enter_modified_compliance":   1,
    "compliance_sos":              1,
    "compliance_preset":           4,
})

#: Capability Version of the PCI Express capability this function implements.
PCIE_CAP_VERSION = 2

#: PCI Express capability, version 2 (PCIe Base 4.0 §7.5.3, 0x3C bytes).
PcieCap = data.StructLayout({
    "cap_id":         8,
    "cap_next":       8,
    "pcie_caps":      PcieCapabilities,
    "dev_caps":       PcieDeviceCapabilities,
    "dev_ctrl":       PcieDeviceControl,
    "dev_status":     PcieDeviceStatus,
    "link_caps":      PcieLinkCapabilities,
    "link_ctrl":      PcieLinkControl,
    "link_status":    PcieLinkStatus,
    "slot_caps":      32,
    "slot_ctrl":      16,
    "slot_status":    16,
    "root_ctrl":      16,
    "root_caps":      16,
    "root_status":    32,
    "dev_caps2":      PcieDeviceCapabilities2,
    "dev_ctrl2":      16,
    "dev_status2":    16,
    "link_caps2":     PcieLinkCapabilities2,
    "link_ctrl2":     PcieLinkControl2,
    "link_status2":   16,
    "slot_caps2":     32,
    "slot_ctrl2":     16,
    "slot_status2":   16,
})

MsixMessageControl = data.StructLayout({
    "table_size":    11,   # N - 1
    "_rsvd":         3,
    "function_mask": 1,
    "enable":        1,
})

MsixTableOffset = data.StructLayout({
    "bir":    3,
    "offset": 29,          # byte offset >> 3
})

#: MSI-X capability (PCIe Base 4.0 §7.7.2).
MsixCap = data.StructLayout({
    "cap_id":          8,
    "cap_next":        8,
    "message_control": MsixMessageControl,
    "table":           MsixTableOffset,
    "pba":             MsixTableOffset,
})

MsixVectorControl = data.StructLayout({
    "mask":  1,
    "_rsvd": 31,
})

#: Pending bits per PBA entry (one QWORD; PCIe Base 4.0 §7.7.2.10).
MSIX_PBA_ENTRY_BITS = 64

#: One MSI-X table entry (PCIe Base 4.0 §7.7.2.6-9).
MsixTableEntry = data.StructLayout({
    "msg_addr":       32,
    "msg_upper_addr": 32,
    "msg_data":       32,
    "vector_control": MsixVectorControl,
})
