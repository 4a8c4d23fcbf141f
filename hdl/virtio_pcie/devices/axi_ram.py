# SPDX-License-Identifier: BSD-2-Clause
"""An on-chip RAM behind an AXI4 slave port: the medium of a small disk.

Wire it to a device's medium port (``connect(m, blk.medium, ram.bus)``) to get a RAM disk that
needs nothing off-chip; a board with DDR attaches its memory controller instead.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from .axi import AxiBurst, AxiResp, AxiSignature
from .ram_read_stream import RamReadStream

__all__ = ["AxiRam"]


def _burst_layout(addr_width, id_width):
    return data.StructLayout({
        "id":    id_width,
        "addr":  addr_width,
        "len":   8,
        "size":  3,
        "burst": AxiBurst,
    })


class AxiRam(wiring.Component):
    """A RAM of ``size`` bytes, read and written through AXI4 (IHI 0022E).

    Every burst type (FIXED, INCR, WRAP) and transfer size (narrow bursts use the byte lanes of
    their address, IHI 0022E §A3.4.3) is served; write strobes select the bytes written. Reads
    and writes proceed at the same time, each at one beat per cycle, with no bubble between
    bursts. Accesses at or beyond ``size`` return DECERR (reads give zero data; writes change
    nothing). The slave has no combinational path from an input to an output.

    Parameters
    ----------
    size : int
        Bytes of RAM; a multiple of the data width in bytes.
    data_width : int
        Width of the data bus, in bits.
    addr_width : int or None
        Width of the address bus; at least enough for ``size`` (the default).
    id_width : int
        Width of the IDs, echoed in ``bid`` / ``rid``.
    init : bytes or None
        Initial contents (shorter is padded with zeros).

    Members
    -------
    bus : In(AxiSignature(addr_width=..., data_width=..., id_width=...))
    """

    def __init__(self, *, size, data_width, addr_width=None, id_width=1, init=None):
        bytes_per_beat = data_width // 8 if isinstance(data_width, int) else 0
        if not isinstance(size, int) or size <= 0 or not bytes_per_beat \
                or size % bytes_per_beat:
            raise ValueError(f"size must be a positive multiple of the data width in bytes, "
                             f"not {size!r}")
        needed = max(12, (size - 1).bit_length())
        if addr_width is None:
            addr_width = needed
        if not isinstance(addr_width, int) or addr_width < needed:
            raise ValueError(f"addr_width must be an integer of at least {needed} for "
                             f"{size} bytes, not {addr_width!r}")
        if init is not None and len(init) > size:
            raise ValueError(f"init has {len(init)} bytes, more than size ({size})")
        self._size       = size
        self._data_width = data_width
        self._addr_width = addr_width
        self._id_width   = id_width
        self._init       = bytes(init or b"")
        super().__init__({
            "bus": In(AxiSignature(addr_width=addr_width, data_width=data_width,
                                   id_width=id_width)),
        })

    @property
    def size(self):
        return self._size

    def _next_addr(self, m, burst, addr):
        """The address of the beat after ``addr`` in ``burst`` (IHI 0022E §A3.4.2)."""
        step    = Signal(self._addr_width)
        aligned = Signal(self._addr_width)
        incr    = Signal(self._addr_width)
        mask    = Signal(self._addr_width)
        nxt     = Signal(self._addr_width)
        m.d.comb += [
            step.eq(1 << burst.size),
            aligned.eq(addr & ~(step - 1)),
            incr.eq(aligned + step),
            # WRAP bursts have 2, 4, 8 or 16 beats: wrap inside the aligned window of
            # (len + 1) << size bytes.
            mask.eq(((burst.len + 1) << burst.size) - 1),
        ]
        with m.Switch(burst.burst):
            with m.Case(AxiBurst.FIXED):
                m.d.comb += nxt.eq(addr)
            with m.Case(AxiBurst.WRAP):
                m.d.comb += nxt.eq((addr & ~mask) | (incr & mask))
            with m.Default():
                m.d.comb += nxt.eq(incr)
        return nxt

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        bpb = self._data_width // 8
        shift = (bpb - 1).bit_length()
        depth = self._size // bpb
        beat_bits = max(1, (depth - 1).bit_length())
        words = [int.from_bytes(self._init[i * bpb:(i + 1) * bpb].ljust(bpb, b"\0"), "little")
                 for i in range((len(self._init) + bpb - 1) // bpb)]
        m.submodules.mem = mem = Memory(shape=self._data_width, depth=depth, init=words)
        wr = mem.write_port(granularity=8)
        rd = mem.read_port()
        burst_shape = _burst_layout(self._addr_width, self._id_width)

        # -- Write: AW FIFO -> W beats into the RAM -> B FIFO ----------------------------------
        m.submodules.aw_fifo = aw_fifo = SyncFIFO(width=burst_shape.size, depth=2)
        m.submodules.b_fifo  = b_fifo  = SyncFIFO(width=self._id_width + 2, depth=2)
        aw_in = Signal(burst_shape)
        m.d.comb += [
            aw_in.id.eq(bus.awid),
            aw_in.addr.eq(bus.awaddr),
            aw_in.len.eq(bus.awlen),
            aw_in.size.eq(bus.awsize),
            aw_in.burst.eq(bus.awburst),
            aw_fifo.w_data.eq(aw_in),
            aw_fifo.w_en.eq(bus.awvalid),
            bus.awready.eq(aw_fifo.w_rdy),
        ]
        aw_out  = data.View(burst_shape, aw_fifo.r_data)
        w_active = Signal()
        w_burst  = Signal(burst_shape)
        w_left   = Signal(8)
        w_resp   = Signal(AxiResp)
        w_in     = Signal()
        w_take   = Signal()
        w_last   = Signal()
        w_next   = self._next_addr(m, w_burst, w_burst.addr)
        m.d.comb += [
            w_in.eq(w_burst.addr < self._size),
            # Stall the data only while the response FIFO is full (a registered condition).
            bus.wready.eq(w_active & b_fifo.w_rdy),
            w_take.eq(bus.wvalid & bus.wready),
            w_last.eq(w_take & (w_left == 0)),
            wr.addr.eq((w_burst.addr >> shift)[:beat_bits]),
            wr.data.eq(bus.wdata),
            wr.en.eq(bus.wstrb & (w_take & w_in).replicate(bpb)),
            b_fifo.w_en.eq(w_last),
            b_fifo.w_data.eq(w_burst.id |
                             (Mux(w_in, w_resp, AxiResp.DECERR) << self._id_width)),
        ]
        # The next burst starts in the cycle after the last beat of this one: no bubble.
        load_w = ~w_active | w_last
        m.d.comb += aw_fifo.r_en.eq(load_w)
        with m.If(load_w):
            m.d.sync += [
                w_active.eq(aw_fifo.r_rdy),
                w_burst.eq(aw_out),
                w_left.eq(aw_out.len),
                w_resp.eq(AxiResp.OKAY),
            ]
        with m.Elif(w_take):
            m.d.sync += [
                w_burst.addr.eq(w_next),
                w_left.eq(w_left - 1),
            ]
            with m.If(~w_in):
                m.d.sync += w_resp.eq(AxiResp.DECERR)
        m.d.comb += [
            bus.bvalid.eq(b_fifo.r_rdy),
            bus.bid.eq(b_fifo.r_data[:self._id_width]),
            bus.bresp.eq(b_fifo.r_data[self._id_width:]),
            b_fifo.r_en.eq(bus.bready),
        ]

        # -- Read: AR FIFO -> RAM reads -> R ---------------------------------------------------
        m.submodules.ar_fifo = ar_fifo = SyncFIFO(width=burst_shape.size, depth=2)
        side = data.StructLayout({"id": self._id_width, "resp": AxiResp, "last": 1})
        m.submodules.reader = reader = RamReadStream(addr_width=beat_bits,
                                                     data_width=self._data_width,
                                                     side_width=side.size)
        ar_in = Signal(burst_shape)
        m.d.comb += [
            ar_in.id.eq(bus.arid),
            ar_in.addr.eq(bus.araddr),
            ar_in.len.eq(bus.arlen),
            ar_in.size.eq(bus.arsize),
            ar_in.burst.eq(bus.arburst),
            ar_fifo.w_data.eq(ar_in),
            ar_fifo.w_en.eq(bus.arvalid),
            bus.arready.eq(ar_fifo.w_rdy),
        ]
        ar_out   = data.View(burst_shape, ar_fifo.r_data)
        r_active = Signal()
        r_burst  = Signal(burst_shape)
        r_left   = Signal(8)
        r_in     = Signal()
        r_next   = self._next_addr(m, r_burst, r_burst.addr)
        cmd_side = Signal(side)
        m.d.comb += [
            r_in.eq(r_burst.addr < self._size),
            cmd_side.id.eq(r_burst.id),
            cmd_side.resp.eq(Mux(r_in, AxiResp.OKAY, AxiResp.DECERR)),
            cmd_side.last.eq(r_left == 0),
            reader.cmd.valid.eq(r_active),
            reader.cmd.payload.addr.eq((r_burst.addr >> shift)[:beat_bits]),
            reader.cmd.payload.zero.eq(~r_in),
            reader.cmd.payload.side.eq(cmd_side),
        ]
        r_take = reader.cmd.valid & reader.cmd.ready
        load_r = ~r_active | (r_take & (r_left == 0))
        m.d.comb += ar_fifo.r_en.eq(load_r)
        with m.If(load_r):
            m.d.sync += [
                r_active.eq(ar_fifo.r_rdy),
                r_burst.eq(ar_out),
                r_left.eq(ar_out.len),
            ]
        with m.Elif(r_take):
            m.d.sync += [
                r_burst.addr.eq(r_next),
                r_left.eq(r_left - 1),
            ]
        out_side = data.View(side, reader.o.payload.side)
        m.d.comb += [
            rd.addr.eq(reader.port_addr),
            rd.en.eq(reader.port_en),
            reader.port_data.eq(rd.data),
            bus.rvalid.eq(reader.o.valid),
            bus.rdata.eq(reader.o.payload.data),
            bus.rid.eq(out_side.id),
            bus.rresp.eq(out_side.resp),
            bus.rlast.eq(out_side.last),
            reader.o.ready.eq(bus.rready),
        ]
        return m
