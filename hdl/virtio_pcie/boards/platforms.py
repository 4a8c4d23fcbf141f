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

__all__ = ["Board", "BOARDS"]


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
class Board:
    name:        str
    platform:    type
    link:        LinkConfig
    block:       str           # PCIe_Blk_Locn
    refclk:      tuple         # (resource name, number)
    description: str


BOARDS = {
    "litefury": Board("litefury", _fix_m2(LitefuryPlatform), LinkConfig(lanes=4, gen=2), "X0Y0",
                      ("pcie", 0), "RHS Research Litefury (Artix-7 xc7a100t, M.2 x4)"),
    "nitefury": Board("nitefury", _fix_m2(NitefuryIIPlatform), LinkConfig(lanes=4, gen=2), "X0Y0",
                      ("pcie", 0), "RHS Research Nitefury II (Artix-7 xc7a200t, M.2 x4)"),
    "alinx_ax7325b": Board("alinx_ax7325b", AX7325BPciePlatform, LinkConfig(lanes=8, gen=2),
                           "X0Y0", ("pcie_refclk", 0),
                           "ALINX AX7325B (Kintex-7 xc7k325t, PCIe x8)"),
}
