# SPDX-License-Identifier: BSD-2-Clause
"""``virtio-pcie build``: the complete Vivado build plan of a board, without running Vivado.

The plan directory holds:

* ``<name>.v``: the design (board top, adapter, core) with ``pcie_7x_0`` as a black box;
* ``<name>.xdc``: every pin of the design, from the board definition (amaranth-boards);
* ``virtio_pcie_pcie.xdc``: the reference clock and PERST# constraints;
* ``pcie_7x_0.tcl``: creates, configures, generates and patches the hard IP;
* ``<name>.tcl``: the Vivado project flow (reads the sources, sources ``pcie_7x_0.tcl``,
  synthesis, implementation, bitstream and SPI flash image);
* ``build_<name>.sh``: runs it (``vivado -mode batch``);
* ``<name>.il``: the same design as RTLIL (``<name>.v`` is written from it), for Yosys;
* ``program_jtag.tcl``: loads the bitstream over JTAG (Vivado hardware manager);
* ``program_flash.tcl``: writes the flash image to the board's configuration flash (boards whose
  flash part is known);
* ``plan.json``: what was built and why (board, link, hard-IP plan, IP properties, pins).
"""

import json
import re
from pathlib import Path

from .core import DEVICES
from .platforms import BOARDS
from .top import HARD_IP_MODULE, BoardTop
from .vivado import (after_synth_tcl, constraints, ip_config, ip_tcl, program_flash_tcl,
                     program_jtag_tcl)

__all__ = ["build_plan", "write_plan"]


def _top_ports(verilog):
    """Names of the top-level ports, from the generated Verilog."""
    header = verilog[verilog.index("module top("):]
    header = header[:header.index(");")]
    names = [p.strip() for p in header[len("module top("):].split(",")]
    return [n for n in names if n]


def _with_rtlil(platform_class):
    """``platform_class`` whose plan also holds the design as RTLIL (``top.v`` is written from
    it by Yosys), for Yosys-based checks and flows: reading it skips Yosys' Verilog front end,
    which takes many minutes on this design."""
    class WithRtlil(platform_class):
        @property
        def file_templates(self):
            return {**super().file_templates, "{{name}}.il": "{{emit_rtlil()}}"}
    WithRtlil.__name__ = WithRtlil.__qualname__ = platform_class.__name__
    return WithRtlil


def build_plan(board_name, device, *, name=None):
    """The Amaranth build plan and a description of it."""
    if board_name not in BOARDS:
        raise ValueError(f"board must be one of {sorted(BOARDS)}, not {board_name!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    board = BOARDS[board_name]
    name = name or "top"
    platform = _with_rtlil(board.platform)()
    top = BoardTop(board, device=device)
    plan_data = top.hard_ip_plan()
    platform.add_file(f"{HARD_IP_MODULE}.tcl", ip_tcl(plan_data, board.link, block=board.block))
    # Port names are fixed by the resource names: request them the way BoardTop does.
    refclk_port = ("pcie_0__clk__p" if board.refclk[0] == "pcie"
                   else f"{board.refclk[0]}_{board.refclk[1]}__p")
    platform.add_file("virtio_pcie_pcie.xdc",
                      constraints({"refclk_p": refclk_port, "perst": "pcie_0__rst__io"}))
    plan = platform.build(top, name=name, do_build=False,
                          script_after_read=f"source {HARD_IP_MODULE}.tcl",
                          script_after_synth=after_synth_tcl(board))
    description = {
        "board": board.name, "description": board.description,
        "part": f"{platform.device}-{platform.package}-{platform.speed}",
        "device": device, "core": "VirtioPcieDevice",
        "fpga": {"part": board.fpga.part, "luts": board.fpga.luts, "ffs": board.fpga.ffs,
                 "bram36": board.fpga.bram36, "dsps": board.fpga.dsps},
        "medium": ({"kind": "on-chip RAM", "sectors": board.disk_sectors,
                    "bytes": board.disk_sectors * 512} if device == "blk" else None),
        "mac": "loopback" if device == "net" else None,
        "link": {"lanes": board.link.lanes, "gen": board.link.gen,
                 "data_width": board.link.data_width,
                 "user_clock_mhz": board.link.user_clock_mhz},
        "hard_ip": {"module": HARD_IP_MODULE, "plan": plan_data,
                    "config": ip_config(plan_data, board.link, block=board.block)},
        "top": name,
    }
    return plan, description


def write_plan(board_name, device, out):
    """Write the plan to directory ``out``; returns the description (also in ``plan.json``)."""
    plan, description = build_plan(board_name, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan.extract(out)
    verilog = (out / f"{description['top']}.v").read_text()
    description["ports"] = _top_ports(verilog)
    xdc = (out / f"{description['top']}.xdc").read_text()
    description["constrained_ports"] = sorted({
        name.replace("\\[", "[") for name in re.findall(r'LOC \S+ \[get_ports "([^"]+)"\]', xdc)})
    board = BOARDS[board_name]
    part = board.platform.device
    (out / "program_jtag.tcl").write_text(program_jtag_tcl(description["top"], part))
    if board.flash_part:
        (out / "program_flash.tcl").write_text(
            program_flash_tcl(description["top"], part, board.flash_part))
    (out / "plan.json").write_text(json.dumps(description, indent=2) + "\n")
    return description
