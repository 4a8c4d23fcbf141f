# SPDX-License-Identifier: BSD-2-Clause
"""The AXI4 memory port: how a device back-end reaches its medium (DDR, on-chip RAM, ...).

AMBA AXI and ACE Protocol Specification (ARM IHI 0022E), part A: the five channels of AXI4 as
one :class:`~amaranth.lib.wiring.Signature` whose members carry the specification's own signal
names, so that the Verilog ports read ``medium__awaddr``, ``medium__wdata``, ... and a board can
wire a vendor DDR controller (Xilinx MIG, LiteDRAM's AXI front end) or an AXI interconnect to
them by name, and cocotbext-axi's ``AxiBus.from_prefix(dut, "medium_")`` finds them.

=========  ===========================================================================
channel    members (``Out`` = driven by the master)
=========  ===========================================================================
AW         ``awid awaddr awlen awsize awburst awlock awcache awprot awvalid`` / ``awready``
W          ``wdata wstrb wlast wvalid`` / ``wready``
B          ``bready`` / ``bid bresp bvalid``
AR         ``arid araddr arlen arsize arburst arlock arcache arprot arvalid`` / ``arready``
R          ``rready`` / ``rid rdata rresp rlast rvalid``
=========  ===========================================================================

Every channel is a valid/ready handshake (IHI 0022E §A3.2): a transfer happens on a cycle where
both are high; a source must not wait for ``ready`` to assert ``valid`` and, once ``valid`` is
high, holds it and the payload until the transfer. The optional QoS, region and user signals
(§A8) are not part of the port; a board ties them off.

Masters in this project issue only INCR bursts (§A3.4.1) of full-width beats
(``awsize``/``arsize`` = log2 of the data width in bytes), at most
:data:`AXI_MAX_BURST_BEATS` beats, never crossing a :data:`AXI_BOUNDARY`-byte boundary
(§A3.4.1: "a burst must not cross a 4KB address boundary"), with all write strobes set and one
ID, so responses return in order (§A6.3).
"""

from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxiBurst", "AxiResp", "AXI_MAX_BURST_BEATS", "AXI_BOUNDARY", "AXI_CACHE_NORMAL",
           "AXI_WRITE_CHANNELS", "AXI_READ_CHANNELS", "AxiSignature"]

#: Most beats in one INCR burst (AXI4, AxLEN is 8 bits; IHI 0022E §A3.4.1).
AXI_MAX_BURST_BEATS = 256
#: Bursts never cross this many bytes (IHI 0022E §A3.4.1).
AXI_BOUNDARY = 4096
#: AxCACHE for the data path: Normal Non-cacheable Bufferable (IHI 0022E Table A4-5), what DDR
#: controllers expect for bulk data.
AXI_CACHE_NORMAL = 0b0011


#: Member-name prefixes of the write (AW, W, B) and read (AR, R) halves of :class:`AxiSignature`.
AXI_WRITE_CHANNELS = ("aw", "w", "b")
AXI_READ_CHANNELS  = ("ar", "r")


class AxiBurst(enum.Enum, shape=2):
    """AxBURST encoding (IHI 0022E Table A3-3)."""
    FIXED = 0
    INCR  = 1
    WRAP  = 2


class AxiResp(enum.Enum, shape=2):
    """RRESP / BRESP encoding (IHI 0022E Table A3-4)."""
    OKAY   = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


_DATA_WIDTHS = (32, 64, 128, 256, 512, 1024)


class AxiSignature(wiring.Signature):
    """An AXI4 port (``Out`` = master side, ``In`` = slave side).

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr`` / ``araddr`` (byte addresses), 12 to 64.
    data_width : int
        Width of ``wdata`` / ``rdata`` in bits: 32 to 1024, a power of two.
    id_width : int
        Width of the ID signals, 1 to 16.
    """

    def __init__(self, *, addr_width, data_width, id_width=1):
        if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
            raise ValueError(f"addr_width must be an integer from 12 to 64, not {addr_width!r}")
        if data_width not in _DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {_DATA_WIDTHS}, not {data_width!r}")
        if not isinstance(id_width, int) or not 1 <= id_width <= 16:
            raise ValueError(f"id_width must be an integer from 1 to 16, not {id_width!r}")
        self._addr_width = addr_width
        self._data_width = data_width
        self._id_width   = id_width
        super().__init__({
            # write address
            "awid":    Out(id_width),
            "awaddr":  Out(addr_width),
            "awlen":   Out(8),
            "awsize":  Out(3),
            "awburst": Out(AxiBurst),
            "awlock":  Out(1),
            "awcache": Out(4),
            "awprot":  Out(3),
            "awvalid": Out(1),
            "awready": In(1),
            # write data
            "wdata":   Out(data_width),
            "wstrb":   Out(data_width // 8),
            "wlast":   Out(1),
            "wvalid":  Out(1),
            "wready":  In(1),
            # write response
            "bid":     In(id_width),
            "bresp":   In(AxiResp),
            "bvalid":  In(1),
            "bready":  Out(1),
            # read address
            "arid":    Out(id_width),
            "araddr":  Out(addr_width),
            "arlen":   Out(8),
            "arsize":  Out(3),
            "arburst": Out(AxiBurst),
            "arlock":  Out(1),
            "arcache": Out(4),
            "arprot":  Out(3),
            "arvalid": Out(1),
            "arready": In(1),
            # read data
            "rid":     In(id_width),
            "rdata":   In(data_width),
            "rresp":   In(AxiResp),
            "rlast":   In(1),
            "rvalid":  In(1),
            "rready":  Out(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width

    @property
    def id_width(self):
        return self._id_width

    @property
    def bytes_per_beat(self):
        return self._data_width // 8

    def __eq__(self, other):
        return (type(other) is type(self) and other._addr_width == self._addr_width and
                other._data_width == self._data_width and other._id_width == self._id_width)

    def __repr__(self):
        return (f"AxiSignature(addr_width={self._addr_width}, data_width={self._data_width}, "
                f"id_width={self._id_width})")
