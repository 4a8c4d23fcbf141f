# SPDX-License-Identifier: BSD-2-Clause
"""The boards, from amaranth-boards, with what PCIe needs corrected or added.

* Litefury / Nitefury II (RHS Research, M.2 2280, Artix-7 xc7a100t-fgg484 / xc7a200t-fbg484, x4):
  amaranth-boards 0.0.21 declares PERST# (``pcie.rst``) as an *output*; it is the host's reset to
  the card, an input. The platforms here redeclare the ``pcie`` resource with ``rst`` as an input.
* ALINX AX7325B (Kintex-7 xc7k325t-ffg900, PCIe x8 edge): amaranth-boards has no reference clock
  in its ``pcie`` resource. The board routes the edge connector's REFCLK to MGTREFCLK0 of bank 116
  at U8/U7, as on the KC705 whose GTX lane placement (M6 … AA4) it follows; **check this pin pair
  against the AX7325B schematic before building** (it is the one pin here not taken from
  amaranth-boards).
"""

from dataclasses import dataclass

from amaranth.build import Attrs, DiffPairs, PinsN, Resource, Subsignal
from amaranth_boards.alinx_ax7325b import AX7325BPlatform
from amaranth_boards.nitefury import LitefuryPlatform, NitefuryIIPlatform

from ..adapters.xilinx7_core import LinkConfig

__all__ = ["Fpga", "Board", "BOARDS"]


def _m2_pcie():
    return Resource("pcie", 0,
        Subsignal("clkreq", PinsN("G1", dir="o"), Attrs(IOSTANDARD="LVCMOS33")),
        Subsignal("rst",    PinsN("J1", dir="i"), Attrs(IOSTANDARD="LVCMOS33", PULLUP="TRUE")),
        Subsignal("clk",    DiffPairs(p="F6", n="E6", dir="i")),
        Subsignal("rx",     DiffPairs(p="B10 B8 D11 D9", n="A10 A8 C11 C9", dir="i")),
        Subsignal("tx",     DiffPairs(p="B6 B4 D5 D7", n="A6 A4 C5 C7", dir="o")),
    )


def _fix_m2(cls):
    class Fixed(cls):
        resources = [r for r in cls.resources if r.name != "pcie"] + [_m2_pcie()]
    Fixed.__name__ = cls.__name__
    return Fixed


class AX7325BPciePlatform(AX7325BPlatform):
    resources = AX7325BPlatform.resources + [
        Resource("pcie_refclk", 0, DiffPairs(p="U8", n="U7", dir="i")),
    ]


@dataclass(frozen=True)
class Fpga:
    """The logic of a 7-series device (DS180, "7 Series FPGAs Data Sheet: Overview", Tables 3
    and 4: 4 LUT6 and 8 flip-flops per slice; block RAM counted in 36 Kb blocks)."""
    part:   str
    luts:   int
    ffs:    int
    bram36: int
    dsps:   int


#: The FPGAs of the boards below.
XC7A100T = Fpga("xc7a100t", luts=63_400, ffs=126_800, bram36=135, dsps=240)
XC7A200T = Fpga("xc7a200t", luts=134_600, ffs=269_200, bram36=365, dsps=740)
XC7K325T = Fpga("xc7k325t", luts=203_800, ffs=407_600, bram36=445, dsps=840)


@dataclass(frozen=True)
class Board:
    """A board: its platform, FPGA, PCIe link and hard-IP placement, and the size of the blk
    device's on-chip disk (none of these boards has a memory path the core can use: see
    docs/boards.md)."""
    name:         str
    platform:     type
    fpga:         Fpga
    link:         LinkConfig
    block:        str           # PCIe_Blk_Locn
    refclk:       tuple         # (resource name, number)
    disk_sectors: int           # blk: on-chip RAM disk, 512-byte sectors
    description:  str
    flash_part:   str | None = None   # Vivado's name of the configuration flash, if known


#: The M.2 boards' configuration flash (a 256 Mb S25FL256S, as amaranth-boards programs it).
_M2_FLASH = "s25fl256sxxxxxx0-spi-x1_x2_x4"

BOARDS = {
    "litefury": Board("litefury", _fix_m2(LitefuryPlatform), XC7A100T,
                      LinkConfig(lanes=4, gen=2), "X0Y0", ("pcie", 0), 512,
                      "RHS Research Litefury (Artix-7 xc7a100t, M.2 x4)", _M2_FLASH),
    "nitefury": Board("nitefury", _fix_m2(NitefuryIIPlatform), XC7A200T,
                      LinkConfig(lanes=4, gen=2), "X0Y0", ("pcie", 0), 2048,
                      "RHS Research Nitefury II (Artix-7 xc7a200t, M.2 x4)", _M2_FLASH),
    "alinx_ax7325b": Board("alinx_ax7325b", AX7325BPciePlatform, XC7K325T,
                           LinkConfig(lanes=8, gen=2), "X0Y0", ("pcie_refclk", 0), 2048,
                           "ALINX AX7325B (Kintex-7 xc7k325t, PCIe x8)"),
}
