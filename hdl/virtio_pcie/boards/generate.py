# SPDX-License-Identifier: BSD-2-Clause
"""``virtio-pcie generate``: the core as one Verilog file, its description and a README.

``--interface generic``: :class:`~virtio_pcie.top.VirtioPcieDevice` in "ext" mode, with its TLP
streams (``rx_req``, ``tx_cpl``, ``tx_req``, ``rx_cpl``, see :mod:`virtio_pcie.tlp.signature`),
``ext_cfg`` and ``cfg_port``, for a shim to any hard IP. ``--interface xilinx7``:
:class:`~.xilinx7_device.Xilinx7VirtioDevice`, the same core behind the 7-series adapter, with the
``pcie_7x`` user-side ports named as the core's, ready to wire to a Vivado ``pcie_7x`` IP
configured by the generated ``pcie_7x_0.tcl``.

The JSON description holds the parameters, every port (direction, width, what it is), the
hard-IP plan (IDs, BARs, MSI-X table and PBA, configuration forwarding) and the register map
(the virtio capabilities in configuration space, the windows in the BARs, and the fields of the
structures in them), all read from the core that was converted.
"""

import json
from pathlib import Path

from amaranth import Value
from amaranth.back import verilog
from amaranth.lib.wiring import In

from ..adapters.xilinx7_core import LinkConfig
from ..spec import virtio
from ..spec.virtio import VirtioDeviceId, byte_size
from ..tlp.signature import DATA_WIDTHS
from ..virtio.register_map import _fields as layout_fields
from .core import DEVICES, core_params, make_core
from .vivado import ip_tcl
from .xilinx7_device import Xilinx7VirtioDevice

__all__ = ["INTERFACES", "generate", "register_map", "port_table"]

INTERFACES = ("generic", "xilinx7")

#: What each top-level member is (by member name, or name prefix for the hard IP's ports).
_PORT_DOCS = {
    "clk":        "the clock of the whole core (the hard IP's user clock), rising edge",
    "rst":        "synchronous reset, active high (7-series: user_reset_out)",
    "rx_req":     "TLP stream in: requests from the host (memory and I/O with bar_id; "
                  "configuration requests the hard IP forwards)",
    "tx_cpl":     "TLP stream out: completions of those requests",
    "tx_req":     "TLP stream out: DMA reads/writes, MSI-X messages, INTx messages",
    "rx_cpl":     "TLP stream in: completions of the core's reads",
    "ext_cfg":    "in: the hard IP's configuration state (FunctionConfig: bus/device/function, "
                  "Command, MPS, MRRS, extended tags, RCB, MSI-X enable/mask, power state)",
    "cfg_port":   "register bus in: configuration accesses a hard IP forwards as register "
                  "reads/writes (UltraScale cfg_ext); tie stb low if unused",
    "counters":   "out: virtqueue and DMA statistics (VirtioPcieDevice.counters_layout())",
    "medium":     "AXI4 master: the disk, sector n at byte n*512",
    "capacity":   "in: disk size in 512-byte sectors",
    "mac_tx":     "AXI4-Stream out: transmitted Ethernet frames (tuser: bad frame)",
    "mac_rx":     "AXI4-Stream in: received Ethernet frames (tuser: bad frame, dropped)",
    "link_up":    "in: the Ethernet link is up (virtio-net status)",
    "loopback":   "in: transmitted frames go to the receive queue instead of mac_tx",
    "pcie_link_up":    "out: user_lnk_up (for an LED)",
    "pcie_activity":   "out: a TLP beat moved to or from the hard IP in this cycle",
    "pcie_tx_dropped": "out: the hard IP discarded a TLP it judged malformed (tx_err_drop)",
    "m_axis_rx_": "pcie_7x receive AXI4-Stream (PG054)",
    "s_axis_tx_": "pcie_7x transmit AXI4-Stream (PG054)",
    "tx_":        "pcie_7x transmit buffer status and configuration-TLP grant",
    "rx_np_":     "pcie_7x non-posted flow control (held high: requests are always taken)",
    "user_lnk_up": "pcie_7x link up",
    "cfg_interrupt": "pcie_7x legacy interrupt handshake (INTx)",
    "cfg_interrupt_": "pcie_7x legacy interrupt handshake (INTx)",
    "cfg_interrupt_msix": "pcie_7x configuration status: MSI-X enable / function mask",
    "cfg_":       "pcie_7x configuration status (bus/device/function, Command, Device and "
                  "Link Control, power state)",
}


def _port_doc(name):
    """What port ``name`` is: its member's entry, or the longest prefix entry (``…_``)."""
    member = name.split("__")[0]
    if member in _PORT_DOCS:
        return _PORT_DOCS[member]
    prefixes = [key for key in _PORT_DOCS if name.startswith(key) and
                (key.endswith("_") or key == "cfg_interrupt_msix")]
    return _PORT_DOCS[max(prefixes, key=len)] if prefixes else ""


def port_table(component):
    """Every top-level port of ``component``'s Verilog: name, direction, width, what it is."""
    ports = [{"name": "clk", "direction": "input", "width": 1, "doc": _PORT_DOCS["clk"]},
             {"name": "rst", "direction": "input", "width": 1, "doc": _PORT_DOCS["rst"]}]
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        ports.append({"name": name, "direction": "input" if member.flow == In else "output",
                      "width": len(Value.cast(value)), "doc": _port_doc(name)})
    return ports


_DEVICE_CONFIG = {VirtioDeviceId.BLOCK: virtio.VirtioBlkConfig,
                  VirtioDeviceId.NET: virtio.VirtioNetConfig}


def register_map(layout):
    """The register map of a :class:`~virtio_pcie.function.layout.FunctionLayout`, as data:
    capabilities (offset, size, next, ``cfg_type``), windows (BAR, offset, decoded size,
    structure length) and the fields of each structure (byte offset, bytes)."""
    structures = {
        "common": virtio.VirtioPciCommonCfg,
        "device": _DEVICE_CONFIG.get(layout.device_type),
    }
    if layout.transitional:
        structures["legacy"] = virtio.VirtioPciLegacyHeader
    fields = {name: [{"field": f, "offset": off, "bytes": size}
                     for f, off, size in layout_fields(struct)]
              for name, struct in structures.items()
              if struct is not None and name in layout.windows}
    fields["isr"] = [{"field": "isr", "offset": 0, "bytes": byte_size(virtio.VirtioIsr),
                      "bits": {flag.name: flag.value for flag in virtio.VirtioIsr}}]
    return {
        "config_mode": layout.config_mode,
        "capabilities": [
            {"name": c.name, "cap_id": c.cap_id.value, "offset": c.offset, "size": c.size,
             "next": c.next, "cfg_type": None if c.cfg_type is None else c.cfg_type.value}
            for c in layout.capabilities],
        "windows": [
            {"name": w.name, "bar": w.bar, "offset": w.offset, "size": w.size,
             "length": w.length, "cfg_type": None if w.cfg_type is None else w.cfg_type.value}
            for w in layout.windows.values()],
        "notify_off_multiplier": layout.notify_off_multiplier,
        "structures": fields,
    }


def generate(*, device, width, interface, legacy=False, onchip_sectors=None, out):
    """Write the core and its description to directory ``out``; returns the description."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if width not in DATA_WIDTHS:
        raise ValueError(f"width must be one of {DATA_WIDTHS}, not {width!r}")
    if interface not in INTERFACES:
        raise ValueError(f"interface must be one of {INTERFACES}, not {interface!r}")
    if interface == "xilinx7" and width not in (64, 128):
        raise ValueError(f"the 7-series core's interface is 64 or 128 bits wide, not {width}")
    name = f"virtio_pcie_{device}"
    params = core_params(device=device, data_width=width, legacy=legacy,
                         onchip_sectors=onchip_sectors)
    if interface == "xilinx7":
        component = Xilinx7VirtioDevice(data_width=width, device=device, legacy=legacy,
                                        onchip_sectors=onchip_sectors)
    else:
        component = make_core(device=device, data_width=width, legacy=legacy,
                              onchip_sectors=onchip_sectors)
    layout = component.layout
    plan = layout.hard_ip_plan()
    ports = port_table(component)
    text = verilog.convert(component, name=name, emit_src=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.v").write_text(text)
    description = {
        "name": name, "device": device, "data_width": width, "interface": interface,
        "legacy": legacy, "core": "VirtioPcieDevice",
        "parameters": params,
        "medium": ("on-chip RAM" if onchip_sectors else "medium AXI4 master port")
                  if device == "blk" else None,
        "clock_domain": "one clock (clk, rising edge), synchronous active-high reset (rst)",
        "ports": ports, "hard_ip_plan": plan, "register_map": register_map(layout),
    }
    files = [f"{name}.v", f"{name}.json", "README.md"]
    if interface == "xilinx7":
        link = LinkConfig(lanes=4, gen=1) if width == 64 else LinkConfig(lanes=4, gen=2)
        (out / "pcie_7x_0.tcl").write_text(ip_tcl(plan, link))
        files.append("pcie_7x_0.tcl")
        description["hard_ip_tcl"] = {"file": "pcie_7x_0.tcl", "link": link.name}
    (out / f"{name}.json").write_text(json.dumps(description, indent=2) + "\n")
    (out / "README.md").write_text(_readme(description, files, layout))
    return description


def _readme(d, files, layout):
    name, device = d["name"], d["device"]
    flags = (" --legacy" if d["legacy"] else "") + \
        (f" --onchip-sectors {d['parameters']['capacity']}"
         if d["parameters"].get("onchip_medium") else "")
    rows = "\n".join(f"| `{p['name']}` | {p['direction']} | {p['width']} | {p['doc']} |"
                     for p in d["ports"])
    plan = d["hard_ip_plan"]
    bars = "\n".join(f"| {b['index']} | {'I/O' if b['kind'] == 'io' else 'memory'}"
                     f"{', 64-bit' if b['64bit'] else ''} | {b['size']:#x} | {b['purpose']} |"
                     for b in plan["bars"])
    caps = "\n".join(f"| {c['offset']:#04x} | `{c['name']}` | {c['size']} | {c['next']:#04x} |"
                     for c in d["register_map"]["capabilities"])
    fwd = plan["config_forwarding"]
    msix = plan["msix"]
    tcl = ""
    if "hard_ip_tcl" in d:
        tcl = (f"\n`pcie_7x_0.tcl` creates and configures the `pcie_7x` IP "
               f"({d['hard_ip_tcl']['link']}, {d['data_width']}-bit; edit the link at its top "
               f"for your board) and patches `MSIX_CAP_NEXTPTR` to "
               f"{fwd['first_forwarded_offset']:#04x}.\n")
    return f"""# {name}: a virtio {device} device core for PCI Express

Generated by `virtio-pcie generate --device {device} --width {d['data_width']} --interface \
{d['interface']}{flags}` from virtio-pcie: `VirtioPcieDevice` in "ext" configuration mode
({layout.describe().splitlines()[0]}).

Files: {', '.join(f'`{f}`' for f in files)}. `{name}.json` holds the same information as this
page, machine-readable: parameters, ports, the hard-IP plan and the register map. See
docs/integration.md of virtio-pcie.
{tcl}
## Clocking and streams

The whole core runs on `clk` (rising edge) with `rst` synchronous and active high. TLP streams
(`*__payload`, `*__valid`, `*__ready`) follow the rules in `virtio_pcie/tlp/signature.py`: a beat
moves when valid and ready are both high; the payload packs `hdr` (128 bits, DW0 in the low bits),
`data`, `keep` (one bit per dword), `sop`, `eop`, `bar_id`, `func_num` and `error`.

## Ports

| port | direction | width | what |
|---|---|---|---|
{rows}

## What the hard IP must present

IDs {plan['vendor_id']:04x}:{plan['device_id']:04x} rev {plan['revision_id']}, subsystem
{plan['subsystem_vendor_id']:04x}:{plan['subsystem_id']:04x}, class {plan['class_code']:06x},
interrupt pin {plan['interrupt_pin']}. MSI-X: {msix['table_size']} vectors, table in BAR
{msix['table_bir']} at {msix['table_offset']:#x}, PBA in BAR {msix['pba_bir']} at
{msix['pba_offset']:#x} (the hard IP's MSI-X capability; the core writes the messages itself).

| BAR | kind | size | holds |
|---|---|---|---|
{bars}

Configuration requests at and above byte {fwd['first_forwarded_offset']:#04x} (dword
{fwd['ext_cfg_cap_ptr_dword']:#04x}) must be forwarded to the core, and the hard IP's last
capability must point at {fwd['last_hard_ip_capability_next']:#04x}. The core's capabilities use
{fwd['bytes_used']} of the {fwd['bytes_available']} bytes there:

| offset | capability | bytes | next |
|---|---|---|---|
{caps}
"""
