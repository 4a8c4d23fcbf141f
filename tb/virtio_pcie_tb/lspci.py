# SPDX-License-Identifier: BSD-2-Clause
"""``lspci -vvv`` for a simulated function: what the host sees in its configuration space.

:func:`lspci` reads a function's configuration space through the root complex (configuration
read TLPs, as ``lspci`` reads sysfs's ``config``), walks the capability list and prints it in
the style of pciutils' ``lspci -vvv``: IDs, class, Command and Status, the interrupt pin, every
BAR with its address, type and size (as the host's enumeration sized them), and every capability
with its fields (PCI Express, Power Management, MSI-X, and the virtio vendor capabilities with
the structure each points to). Every field is decoded with the layouts of
:mod:`virtio_pcie.spec`, never with literal offsets.

Only what this project's functions implement is decoded in detail; anything else is shown as
its ID and offset.
"""

from virtio_pcie.spec.pcie import (CapId, ExtCapHeader, MsixCap, PcieCap, PciCommand, PciStatus,
                                   PciType0Header, PmCap, PcieDevicePortType, byte_offset,
                                   byte_size)
from virtio_pcie.spec.virtio import (VIRTIO_PCI_VENDOR_ID, VirtioPciCap, VirtioPciCapType,
                                     VirtioPciNotifyCap)

from .models.bitfields import BitFields

__all__ = ["lspci", "read_config"]

#: Names from pci.ids for the IDs this project uses.
_VENDORS = {VIRTIO_PCI_VENDOR_ID: "Red Hat, Inc."}
_DEVICES = {
    (VIRTIO_PCI_VENDOR_ID, 0x1000): "Virtio network device",
    (VIRTIO_PCI_VENDOR_ID, 0x1001): "Virtio block device",
    (VIRTIO_PCI_VENDOR_ID, 0x1041): "Virtio 1.0 network device",
    (VIRTIO_PCI_VENDOR_ID, 0x1042): "Virtio 1.0 block device",
}
_CLASSES = {0x0100: "SCSI storage controller", 0x0180: "Mass storage controller",
            0x0200: "Ethernet controller", 0x00FF: "Unclassified device"}
#: lspci's names of the virtio vendor capability types (ls-caps-vendor.c), and ours for the rest.
_VIRTIO_CAP_NAMES = {
    VirtioPciCapType.COMMON_CFG: "CommonCfg", VirtioPciCapType.NOTIFY_CFG: "Notify",
    VirtioPciCapType.ISR_CFG: "ISR", VirtioPciCapType.DEVICE_CFG: "DeviceCfg",
    VirtioPciCapType.PCI_CFG: "PCICfg (configuration access window)",
    VirtioPciCapType.SHARED_MEMORY_CFG: "SharedMemory", VirtioPciCapType.VENDOR_CFG: "Vendor",
}
_PORT_TYPES = {PcieDevicePortType.ENDPOINT.value: "Endpoint",
               PcieDevicePortType.LEGACY_ENDPOINT.value: "Legacy Endpoint",
               PcieDevicePortType.RC_INTEGRATED.value: "Root Complex Integrated Endpoint"}
_SPEEDS = {1: "2.5GT/s", 2: "5GT/s", 3: "8GT/s", 4: "16GT/s", 5: "32GT/s"}
_L0S = ["<64ns", "<128ns", "<256ns", "<512ns", "<1us", "<2us", "<4us", "unlimited"]
_L1 = ["<1us", "<2us", "<4us", "<8us", "<16us", "<32us", "<64us", "unlimited"]
_ASPM = {0: "not supported", 1: "L0s", 2: "L1", 3: "L0s L1"}


def _flag(name, on):
    return f"{name}{'+' if on else '-'}"


def _u(raw, offset, size):
    return int.from_bytes(raw[offset:offset + size], "little")


def _fields(layout, raw, offset=0):
    """The fields of ``layout`` (dotted names) decoded from ``raw`` at byte ``offset``."""
    size = byte_size(layout)
    return BitFields(layout).decode(_u(raw, offset, size))


async def read_config(pdev, size=256):
    """``size`` bytes of configuration space, read dword by dword through the root complex."""
    raw = bytearray()
    for addr in range(0, size, 4):
        raw += (await pdev.config_read32(addr)).to_bytes(4, "little")
    return bytes(raw)


def _size_text(size):
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


async def lspci(pdev, *, driver=None):
    """Lines of an ``lspci -vvv``-like listing of ``pdev`` (a :class:`~.host.PciFunction`)."""
    raw = await read_config(pdev)
    hdr = _fields(PciType0Header, raw)
    vendor, device = hdr["vendor_id"], hdr["device_id"]
    class_code = hdr["class_code"]
    cls = class_code >> 8
    p = pdev.dev.pcie_id
    lines = [f"{p.bus:02x}:{p.device:02x}.{p.function} "
             f"{_CLASSES.get(cls, 'Class')} [{cls:04x}]: {_VENDORS.get(vendor, 'Vendor')} "
             f"{_DEVICES.get((vendor, device), 'Device')} [{vendor:04x}:{device:04x}] "
             f"(rev {hdr['revision_id']:02x})"]
    if class_code & 0xFF:
        lines[0] += f" (prog-if {class_code & 0xFF:02x})"
    svendor, sdevice = hdr["subsystem_vendor_id"], hdr["subsystem_id"]
    lines.append(f"\tSubsystem: {_VENDORS.get(svendor, 'Vendor')} Device "
                 f"[{svendor:04x}:{sdevice:04x}]")
    cmd, status = hdr["command"], hdr["status"]
    names = [("I/O", PciCommand.IO_SPACE), ("Mem", PciCommand.MEMORY_SPACE),
             ("BusMaster", PciCommand.BUS_MASTER), ("SpecCycle", PciCommand.SPECIAL_CYCLES),
             ("MemWINV", PciCommand.MWI_ENABLE), ("VGASnoop", PciCommand.VGA_PALETTE_SNOOP),
             ("ParErr", PciCommand.PARITY_ERROR_RESP), ("Stepping", PciCommand.IDSEL_STEPPING),
             ("SERR", PciCommand.SERR_ENABLE), ("FastB2B", PciCommand.FAST_B2B_ENABLE),
             ("DisINTx", PciCommand.INTX_DISABLE)]
    lines.append("\tControl: " + " ".join(_flag(n, cmd & bit.value) for n, bit in names))
    s = PciStatus
    lines.append("\tStatus: " + " ".join([
        _flag("Cap", status & s.CAPABILITIES_LIST.value),
        _flag("66MHz", status & s.CAPABLE_66MHZ.value),
        _flag("FastB2B", status & s.FAST_B2B_CAPABLE.value),
        _flag("ParErr", status & s.MASTER_DATA_PARITY_ERROR.value),
        _flag(">TAbort", status & s.SIGNALED_TARGET_ABORT.value),
        _flag("<TAbort", status & s.RECEIVED_TARGET_ABORT.value),
        _flag("<MAbort", status & s.RECEIVED_MASTER_ABORT.value),
        _flag(">SERR", status & s.SIGNALED_SYSTEM_ERROR.value),
        _flag("<PERR", status & s.DETECTED_PARITY_ERROR.value),
        _flag("INTx", status & s.INTERRUPT_STATUS.value)]))
    pin = hdr["interrupt_pin"]
    if pin:
        lines.append(f"\tInterrupt: pin {'?ABCD'[pin] if pin <= 4 else '?'} "
                     f"(line {hdr['interrupt_line']})")
    lines += _bars(pdev, raw)
    if status & s.CAPABILITIES_LIST.value:
        lines += await _capabilities(pdev, raw, hdr["capabilities_pointer"])
    lines += await _ext_capabilities(pdev)
    if driver:
        lines.append(f"\tKernel driver in use: {driver}")
    return lines


def _bars(pdev, raw):
    lines = []
    bar0 = byte_offset(PciType0Header, "bar")
    bar = 0
    while bar < 6:
        value = _u(raw, bar0 + 4 * bar, 4)
        size = pdev.resource_len(bar)
        if not size:
            bar += 1
            continue
        if value & 1:
            lines.append(f"\tRegion {bar}: I/O ports at {value & ~3:04x} [size={size}]")
            bar += 1
            continue
        is64 = (value >> 1) & 3 == 2
        addr = value & ~0xF
        if is64:
            addr |= _u(raw, bar0 + 4 * (bar + 1), 4) << 32
        pref = "prefetchable" if value & 8 else "non-prefetchable"
        lines.append(f"\tRegion {bar}: Memory at {addr:x} ({'64' if is64 else '32'}-bit, "
                     f"{pref}) [size={_size_text(size)}]")
        bar += 2 if is64 else 1
    return lines


async def _capabilities(pdev, raw, pos):
    lines = []
    seen = set()
    while pos >= 0x40 and pos not in seen:
        seen.add(pos)
        pos &= ~3
        cap_id, nxt = raw[pos], raw[pos + 1]
        try:
            cid = CapId(cap_id)
        except ValueError:
            cid = None
        if cid == CapId.PCIE:
            lines += _cap_pcie(raw, pos)
        elif cid == CapId.PM:
            lines += _cap_pm(raw, pos)
        elif cid == CapId.MSIX:
            lines += _cap_msix(raw, pos)
        elif cid == CapId.VNDR and pdev.vendor == VIRTIO_PCI_VENDOR_ID:
            lines += _cap_virtio(pdev, raw, pos)
        else:
            lines.append(f"\tCapabilities: [{pos:02x}] capability ID {cap_id:#04x}")
        pos = nxt
    return lines


def _cap_pcie(raw, pos):
    f = _fields(PcieCap, raw, pos)
    port = _PORT_TYPES.get(f["pcie_caps.port_type"], f"type {f['pcie_caps.port_type']}")
    mps = 128 << f["dev_caps.max_payload_size_supported"]
    lines = [f"\tCapabilities: [{pos:02x}] Express (v{f['pcie_caps.version']}) {port}, "
             f"MSI {f['pcie_caps.interrupt_message_number']:02x}",
             f"\t\tDevCap:\tMaxPayload {mps} bytes, PhantFunc "
             f"{f['dev_caps.phantom_functions']}, Latency L0s "
             f"{_L0S[f['dev_caps.l0s_acceptable_latency']]}, L1 "
             f"{_L1[f['dev_caps.l1_acceptable_latency']]}",
             "\t\t\t" + " ".join([_flag("ExtTag", f["dev_caps.extended_tag_supported"]),
                                  _flag("RBE", f["dev_caps.role_based_error_reporting"]),
                                  _flag("FLReset", f["dev_caps.flr_capable"])]),
             "\t\tDevCtl:\t" + " ".join([
                 _flag("CorrErr", f["dev_ctrl.correctable_error_reporting"]),
                 _flag("NonFatalErr", f["dev_ctrl.nonfatal_error_reporting"]),
                 _flag("FatalErr", f["dev_ctrl.fatal_error_reporting"]),
                 _flag("UnsupReq", f["dev_ctrl.ur_reporting"]),
                 _flag("RlxdOrd", f["dev_ctrl.relaxed_ordering"]),
                 _flag("ExtTag", f["dev_ctrl.extended_tag"]),
                 _flag("NoSnoop", f["dev_ctrl.no_snoop"])]),
             f"\t\t\tMaxPayload {128 << f['dev_ctrl.max_payload_size']} bytes, MaxReadReq "
             f"{128 << f['dev_ctrl.max_read_request_size']} bytes",
             "\t\tDevSta:\t" + " ".join([
                 _flag("CorrErr", f["dev_status.correctable_error_detected"]),
                 _flag("NonFatalErr", f["dev_status.nonfatal_error_detected"]),
                 _flag("FatalErr", f["dev_status.fatal_error_detected"]),
                 _flag("UnsupReq", f["dev_status.ur_detected"]),
                 _flag("TransPend", f["dev_status.transactions_pending"])]),
             f"\t\tLnkCap:\tPort #{f['link_caps.port_number']}, Speed "
             f"{_SPEEDS.get(f['link_caps.max_link_speed'], '?')}, Width "
             f"x{f['link_caps.max_link_width']}, ASPM "
             f"{_ASPM[f['link_caps.aspm_support']]}",
             f"\t\tLnkCtl:\tASPM {'Disabled' if not f['link_ctrl.aspm_control'] else 'Enabled'}; "
             f"RCB {128 if f['link_ctrl.rcb'] else 64} bytes, "
             + _flag("CommClk", f["link_ctrl.common_clock"]),
             f"\t\tLnkSta:\tSpeed {_SPEEDS.get(f['link_status.current_link_speed'], '?')}, "
             f"Width x{f['link_status.negotiated_link_width']}",
             "\t\tDevCap2: Completion Timeout: "
             + ("Not Supported" if not f["dev_caps2.completion_timeout_ranges"] else
                f"ranges {f['dev_caps2.completion_timeout_ranges']:#x}")
             + ", " + _flag("TimeoutDis", f["dev_caps2.completion_timeout_disable"])
             + " " + _flag("10BitTagReq", f["dev_caps2.tag_10bit_requester"])]
    return lines


def _cap_pm(raw, pos):
    f = _fields(PmCap, raw, pos)
    pme = f["pmc.pme_support"]
    states = ",".join(_flag(n, pme >> i & 1) for i, n in enumerate(
        ["D0", "D1", "D2", "D3hot", "D3cold"]))
    return [f"\tCapabilities: [{pos:02x}] Power Management version {f['pmc.version']}",
            "\t\tFlags: " + " ".join([_flag("PMEClk", f["pmc.pme_clock"]),
                                      _flag("DSI", f["pmc.dsi"]),
                                      _flag("D1", f["pmc.d1_support"]),
                                      _flag("D2", f["pmc.d2_support"])])
            + f" AuxCurrent={f['pmc.aux_current']} PME({states})",
            f"\t\tStatus: D{f['pmcsr.power_state']} "
            + " ".join([_flag("NoSoftRst", f["pmcsr.no_soft_reset"]),
                        _flag("PME-Enable", f["pmcsr.pme_enable"])])
            + f" DSel={f['pmcsr.data_select']} DScale={f['pmcsr.data_scale']} "
            + _flag("PME", f["pmcsr.pme_status"])]


def _cap_msix(raw, pos):
    f = _fields(MsixCap, raw, pos)
    return [f"\tCapabilities: [{pos:02x}] MSI-X: "
            + _flag("Enable", f["message_control.enable"])
            + f" Count={f['message_control.table_size'] + 1} "
            + _flag("Masked", f["message_control.function_mask"]),
            f"\t\tVector table: BAR={f['table.bir']} offset={f['table.offset'] << 3:08x}",
            f"\t\tPBA: BAR={f['pba.bir']} offset={f['pba.offset'] << 3:08x}"]


def _cap_virtio(pdev, raw, pos):
    f = _fields(VirtioPciCap, raw, pos)
    try:
        kind = VirtioPciCapType(f["cfg_type"])
        name = _VIRTIO_CAP_NAMES.get(kind, "<unknown>")
    except ValueError:
        kind, name = None, "<unknown>"
    line = (f"\t\tBAR={f['bar']} offset={f['offset']:08x} size={f['length']:08x}")
    if kind == VirtioPciCapType.NOTIFY_CFG and f["cap_len"] >= byte_size(VirtioPciNotifyCap):
        n = _fields(VirtioPciNotifyCap, raw, pos)
        line += f" multiplier={n['notify_off_multiplier']:08x}"
    lines = [f"\tCapabilities: [{pos:02x}] Vendor Specific Information: VirtIO: {name}", line]
    if kind not in (None, VirtioPciCapType.PCI_CFG) and pdev.resource_len(f["bar"]):
        start = pdev.resource_start(f["bar"]) + f["offset"]
        lines[-1] += f"  (host address {start:x})"
    return lines


async def _ext_capabilities(pdev):
    """Extended capabilities from offset 0x100 (PCIe Base 4.0 §7.6), if any."""
    lines = []
    pos = 0x100
    seen = set()
    hdr_codec = BitFields(ExtCapHeader)
    while pos and pos not in seen and pos < 0x1000:
        seen.add(pos)
        value = await pdev.config_read32(pos)
        if value in (0, 0xFFFFFFFF):
            break
        h = hdr_codec.decode(value)
        lines.append(f"\tCapabilities: [{pos:03x} v{h['version']}] extended capability "
                     f"{h['cap_id']:#06x}")
        pos = h["next"] & ~3
    return lines
