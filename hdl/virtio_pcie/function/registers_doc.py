# SPDX-License-Identifier: BSD-2-Clause
"""Renders the function's configuration space, BARs and windows as Markdown.

Everything comes from :class:`~virtio_pcie.function.layout.FunctionLayout` (and through it from
:mod:`virtio_pcie.spec`), so the document cannot drift from the gateware: a test compares the
committed ``docs/registers.md`` with :func:`render_document`. To regenerate it::

    python -m virtio_pcie.function.registers_doc docs/registers.md
"""

import argparse
import sys
from pathlib import Path

from .layout import Access, FunctionLayout

__all__ = ["PROFILES", "render_layout", "render_document", "main"]

#: The reference profiles the document shows: (title, FunctionLayout parameters).
PROFILES = [
    ("virtio-blk, modern, full configuration space",
     dict(device_type=2, transitional=False, queue_count=1, msix_vectors=2,
          notify_off_multiplier=4)),
    ("virtio-net, transitional, hard IP forwarding from 0xA8 (\"ext\" mode)",
     dict(device_type=1, transitional=True, queue_count=3, msix_vectors=4,
          notify_off_multiplier=4, config_mode="ext", ext_cap_pointer=0xA8)),
]

_ACCESS_NOTES = {
    Access.RO:     "read-only constant",
    Access.RW:     "read/write; writes honour byte enables; values outside the legal set are "
                   "ignored",
    Access.RW1C:   "status: set by hardware, cleared by writing 1",
    Access.HW:     "read-only, reflects hardware state",
    Access.WINDOW: "virtio PCI_CFG data: a read or write performs a `cap.length`-byte access "
                   "at (`cap.bar`, `cap.offset`) (virtio 1.2 §4.1.4.9)",
}


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _bits(f):
    hi = f.shift + f.width - 1
    return f"[{f.shift}]" if f.width == 1 else f"[{hi}:{f.shift}]"


def render_layout(layout, title):
    out = [f"## {title}", ""]
    params = (f"`device_type={layout.device_type.name}`, `transitional={layout.transitional}`, "
              f"`queue_count={layout.queue_count}`, `msix_vectors={layout.msix_vectors}`, "
              f"`notify_off_multiplier={layout.notify_off_multiplier}`, "
              f"`device_cfg_length={layout.device_cfg_length}`, "
              f"`config_mode=\"{layout.config_mode}\"`")
    if layout.ext_cap_pointer is not None:
        params += f", `ext_cap_pointer={layout.ext_cap_pointer:#x}`"
    out += [f"Parameters: {params}.", ""]

    out += ["### Identity", ""]
    out += [_table(["Register", "Value"], [
        ("Vendor ID", f"`{layout.vendor_id:#06x}`"),
        ("Device ID", f"`{layout.device_id:#06x}`"),
        ("Revision ID", f"`{layout.revision_id}`"),
        ("Class code", f"`{layout.class_code:#08x}`"),
        ("Subsystem vendor ID", f"`{layout.subsystem_vendor_id:#06x}`"),
        ("Subsystem ID", f"`{layout.subsystem_id:#06x}`"),
        ("Interrupt pin", layout.interrupt_pin.name),
    ]), ""]

    out += ["### BARs", ""]
    rows = []
    for b in layout.bars:
        kind = "I/O" if b.is_io else ("64-bit memory" if b.is_64bit else "32-bit memory")
        index = f"{b.index}/{b.index + 1}" if b.is_64bit else f"{b.index}"
        rows.append((index, kind, "no" if not b.prefetchable else "yes", f"{b.size:#x}",
                     b.purpose))
    out += [_table(["BAR", "Kind", "Prefetchable", "Size", "Contents"], rows), ""]

    out += ["### Windows", "", "Each window is decoded to one register block; the virtio "
            "windows are the function's register-bus initiator ports of the same name. BAR "
            "bytes outside every window (the rest of each virtio structure's page) read 0 and "
            "ignore writes.", ""]
    rows = [(f"`{w.name}`", w.bar, f"{w.offset:#06x}", f"{w.size:#x}", f"{w.length:#x}",
             w.addr_width) for w in layout.windows.values()]
    out += [_table(["Window", "BAR", "Offset", "Size", "Structure length",
                    "Register bus address bits"], rows), ""]

    out += ["### Capabilities", ""]
    used, available = layout.config_budget
    rows = [(f"{c.offset:#04x}", c.name, f"{c.cap_id.value:#04x}",
             c.cfg_type.name if c.cfg_type is not None else "", c.size, f"{c.next:#04x}")
            for c in layout.capabilities]
    out += [_table(["Offset", "Capability", "ID", "virtio cfg_type", "Bytes", "Next"], rows), ""]
    out += [f"The capabilities use {used} of the {available} bytes from "
            f"{layout.capabilities_pointer:#04x} to the end of the legacy configuration space. "
            f"The extended configuration space (0x100 and up) reads 0, which ends the extended "
            f"capability list.", ""]
    if layout.config_mode == "ext":
        plan = layout.hard_ip_plan()
        fwd = plan["config_forwarding"]
        msix = plan["msix"]
        out += ["### What the hard IP must be configured with", ""]
        last_next = fwd["last_hard_ip_capability_next"]
        out += [f"- Forward configuration accesses from byte {fwd['first_forwarded_offset']:#x} "
                f"(7-series `EXT_CFG_CAP_PTR` = {fwd['ext_cfg_cap_ptr_dword']:#x} dwords); the "
                f"hard IP's last capability must point to {last_next:#x}.",
                "- The IDs, class code and interrupt pin above; the BARs above.",
                f"- MSI-X: table size {msix['table_size']}, table in BAR{msix['table_bir']} at "
                f"{msix['table_offset']:#x}, PBA in BAR{msix['pba_bir']} at "
                f"{msix['pba_offset']:#x} (the function implements both in that BAR).",
                f"- PCI Express: Max_Payload_Size Supported "
                f"{plan['pcie']['max_payload_size_supported']} bytes, extended tags "
                f"{'supported' if plan['pcie']['extended_tag'] else 'not supported'}.", ""]

    out += ["### Configuration space fields", "",
            "Fields not listed read 0 and ignore writes (reserved or not implemented).", ""]
    rows = []
    for f in layout.config_fields:
        value = f"`{f.value:#x}`" if f.access in (Access.RO, Access.RW) else ""
        notes = f.doc
        if f.legal is not None:
            legal = ", ".join(str(v) for v in f.legal)
            notes = (notes + "; " if notes else "") + f"legal: {legal}"
        rows.append((f"{4 * f.dword:#05x}", _bits(f), f"`{f.name}`", f.access.value, value,
                     notes))
    out += [_table(["Dword", "Bits", "Field", "Access", "Value / reset", "Notes"], rows), ""]
    return "\n".join(out)


def render_document():
    out = ["# Register maps", "",
           "<!-- Generated by `python -m virtio_pcie.function.registers_doc docs/registers.md`"
           " from FunctionLayout and spec/; do not edit. -->", "",
           "The PCI function's identity, BARs, windows, capability chain and every "
           "configuration-space field are computed by `FunctionLayout` "
           "(`hdl/virtio_pcie/function/layout.py`) from the build parameters; this page shows "
           "them for reference profiles. The virtio structures inside the windows are described "
           "in [registers-virtio.md](registers-virtio.md).", "",
           "Access kinds:", ""]
    out += [f"- **{access.value}**: {note}" for access, note in _ACCESS_NOTES.items()]
    out += [""]
    for title, params in PROFILES:
        out += [render_layout(FunctionLayout(**params), title)]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m virtio_pcie.function.registers_doc",
                                     description="Render the function's register maps.")
    parser.add_argument("output", nargs="?", help="file to write (default: standard output)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the file differs from what would be written")
    args = parser.parse_args(argv)
    text = render_document()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is out of date; regenerate it with "
                  f"python -m virtio_pcie.function.registers_doc {path}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
