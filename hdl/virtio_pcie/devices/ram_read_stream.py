# SPDX-License-Identifier: BSD-2-Clause
"""A synchronous RAM read port turned into a back-pressured stream, one beat per cycle."""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["RamReadStream"]


class RamReadStream(wiring.Component):
    """Reads a RAM at the addresses of a command stream and streams out what it read.

    A synchronous RAM read port answers one cycle after its address, and cannot be held; a bus
    such as AXI W or R must be able to stall the data at any beat. This block issues a read
    only when a small FIFO behind the port is sure to have room for its answer, so the stream
    runs at one beat per cycle while the consumer is ready, stalls without losing a beat, and
    needs no second read of the RAM.

    Parameters
    ----------
    addr_width : int
        Width of the RAM's (beat) address.
    data_width : int
        Width of a RAM word.
    side_width : int
        Width of side information carried from each command to its data (``last``, an ID, ...).
    depth : int
        FIFO depth; 3 or more sustain one beat per cycle.

    Members
    -------
    cmd : In(stream.Signature(StructLayout({"addr", "zero", "side"})))
        One read per beat. With ``zero`` set the RAM is not read and the data is all zero.
    port_addr, port_en : Out
        Drive the RAM read port (``en`` high for one cycle per read).
    port_data : In(data_width)
        The RAM read port's data, valid the cycle after ``port_en``.
    o : Out(stream.Signature(StructLayout({"data", "side"})))
        The words read, in command order.
    busy : Out(1)
        A read is in flight or data is waiting in the FIFO.
    """

    def __init__(self, *, addr_width, data_width, side_width=1, depth=4):
        for name, value in (("addr_width", addr_width), ("data_width", data_width),
                            ("side_width", side_width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(depth, int) or depth < 3:
            raise ValueError(f"depth must be an integer of at least 3, not {depth!r}")
        self._data_width = data_width
        self._side_width = side_width
        self._depth      = depth
        super().__init__({
            "cmd":       In(stream.Signature(data.StructLayout({
                             "addr": addr_width, "zero": 1, "side": side_width}))),
            "port_addr": Out(addr_width),
            "port_en":   Out(1),
            "port_data": In(data_width),
            "o":         Out(stream.Signature(data.StructLayout({
                             "data": data_width, "side": side_width}))),
            "busy":      Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = self._data_width + self._side_width
        m.submodules.fifo = fifo = SyncFIFO(width=width, depth=self._depth)

        # A read issued in this cycle lands in the FIFO in the next one; count it until then so
        # the FIFO can never overflow (its level does not see data still inside the RAM).
        in_flight = Signal()
        in_zero   = Signal()
        in_side   = Signal(self._side_width)
        room      = fifo.level + in_flight < self._depth

        m.d.comb += [
            self.cmd.ready.eq(room),
            self.port_addr.eq(self.cmd.payload.addr),
            self.port_en.eq(self.cmd.valid & room & ~self.cmd.payload.zero),
        ]
        m.d.sync += [
            in_flight.eq(self.cmd.valid & room),
            in_zero.eq(self.cmd.payload.zero),
            in_side.eq(self.cmd.payload.side),
        ]

        word = Signal(self._data_width)
        m.d.comb += [
            word.eq(0),
            fifo.w_en.eq(in_flight),
            fifo.w_data.eq(word | (in_side << self._data_width)),
        ]
        with m.If(~in_zero):
            m.d.comb += word.eq(self.port_data)

        m.d.comb += [
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.data.eq(fifo.r_data[:self._data_width]),
            self.o.payload.side.eq(fifo.r_data[self._data_width:]),
            fifo.r_en.eq(self.o.ready),
            self.busy.eq(in_flight | fifo.r_rdy),
        ]
        return m
