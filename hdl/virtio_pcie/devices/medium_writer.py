# SPDX-License-Identifier: BSD-2-Clause
"""Writes chunks of the read buffer (or zeros) to the medium through AXI4 AW/W/B bursts."""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .axi import AxiResp, AxiSignature
from .axi_burst_splitter import AxiBurstSplitter
from .blk_interface import JOB_LEN_WIDTH, MediumDone, MediumJob
from .ram_read_stream import RamReadStream

__all__ = ["MediumWriter"]


class MediumWriter(wiring.Component):
    """Moves ``len`` bytes from the buffer at beat ``ram`` (or zeros) to the medium at ``addr``.

    The address side splits each job into INCR bursts with an
    :class:`~.axi_burst_splitter.AxiBurstSplitter`, as :class:`~.medium_reader.MediumReader`
    does, and issues them back to back, each once there is room to remember it on the data and
    response sides. The data side reads the buffer one beat per cycle (or sends zeros for a
    ``zero`` job, without reading) and drives W with all strobes set and ``wlast`` on each
    burst's final beat, stalling as W demands. The response side counts B answers and reports
    a job ``done`` with its last burst's, with ``error`` if any burst got SLVERR or DECERR: the
    data is then on the medium (IHI 0022E §A3.3.1, "write response ... after the last data
    transfer"), which is what the device needs before it completes an OUT.

    Members
    -------
    job : In(stream.Signature(MediumJob(...)))
    bus : Out(AxiSignature(...))
        Only the AW, W and B channels are used.
    ram_addr, ram_en : Out
        Read port of the read buffer.
    ram_data : In(data_width)
    done : Out(stream.Signature(MediumDone(slots), always_ready=True))
    busy : Out(1)
    """

    def __init__(self, *, slots, medium_addr_width, data_width, ram_beat_width, id_width=1,
                 max_bursts=8):
        self._slots = slots
        self._maw = medium_addr_width
        self._data_width = data_width
        self._bpb = data_width // 8
        self._ram_bits = ram_beat_width
        self._max_bursts = max_bursts
        self._job_layout = MediumJob(slots, medium_addr_width, ram_beat_width)
        super().__init__({
            "job":      In(stream.Signature(self._job_layout)),
            "bus":      Out(AxiSignature(addr_width=medium_addr_width, data_width=data_width,
                                         id_width=id_width)),
            "ram_addr": Out(ram_beat_width),
            "ram_en":   Out(1),
            "ram_data": In(data_width),
            "done":     Out(stream.Signature(MediumDone(slots), always_ready=True)),
            "busy":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus   = self.bus
        shift = self._bpb.bit_length() - 1
        job   = self.job.payload
        beats_w = JOB_LEN_WIDTH - shift + 1

        w_entry = data.StructLayout({"ram": self._ram_bits, "beats": 9, "zero": 1})
        b_entry = data.StructLayout({"slot": job.slot.shape(), "last": 1})
        m.submodules.w_fifo = w_fifo = SyncFIFO(width=w_entry.size, depth=4)
        m.submodules.b_fifo = b_fifo = SyncFIFO(width=b_entry.size, depth=self._max_bursts)

        # -- Address side -----------------------------------------------------------------------
        # Each burst goes out on AW once the data and response sides can remember it.
        m.submodules.splitter = splitter = AxiBurstSplitter(
            addr_width=self._maw, data_width=self._data_width, beats_width=beats_w)
        slot = Signal.like(job.slot)
        ram  = Signal(self._ram_bits)
        zero = Signal()
        burst = splitter.burst.payload
        w_push = Signal(w_entry)
        b_push = Signal(b_entry)
        room = w_fifo.w_rdy & b_fifo.w_rdy
        m.d.comb += [
            splitter.job.valid.eq(self.job.valid),
            splitter.job.payload.addr.eq(job.addr),
            splitter.job.payload.beats.eq(job.len >> shift),
            self.job.ready.eq(splitter.job.ready),
            *splitter.drive(bus, "aw"),
            bus.awvalid.eq(splitter.burst.valid & room),
            splitter.burst.ready.eq(bus.awready & room),
            w_push.ram.eq(ram + burst.offset),
            w_push.beats.eq(burst.beats),
            w_push.zero.eq(zero),
            b_push.slot.eq(slot),
            b_push.last.eq(burst.last),
            w_fifo.w_data.eq(w_push),
            b_fifo.w_data.eq(b_push),
            w_fifo.w_en.eq(bus.awvalid & bus.awready),
            b_fifo.w_en.eq(bus.awvalid & bus.awready),
        ]
        with m.If(self.job.valid & self.job.ready):
            m.d.sync += [slot.eq(job.slot), ram.eq(job.ram), zero.eq(job.zero)]

        # -- Data side: buffer reads, one burst after another -----------------------------------
        m.submodules.reader = reader = RamReadStream(addr_width=self._ram_bits,
                                                     data_width=self._data_width,
                                                     side_width=1)
        w_head   = data.View(w_entry, w_fifo.r_data)
        w_active = Signal()
        w_ram    = Signal(self._ram_bits)
        w_left   = Signal(9)
        w_zero   = Signal()
        m.d.comb += [
            reader.cmd.valid.eq(w_active),
            reader.cmd.payload.addr.eq(w_ram),
            reader.cmd.payload.zero.eq(w_zero),
            reader.cmd.payload.side.eq(w_left == 1),
            self.ram_addr.eq(reader.port_addr),
            self.ram_en.eq(reader.port_en),
            reader.port_data.eq(self.ram_data),
        ]
        w_take = reader.cmd.valid & reader.cmd.ready
        load = ~w_active | (w_take & (w_left == 1))
        m.d.comb += w_fifo.r_en.eq(load)
        with m.If(load):
            m.d.sync += [
                w_active.eq(w_fifo.r_rdy),
                w_ram.eq(w_head.ram),
                w_left.eq(w_head.beats),
                w_zero.eq(w_head.zero),
            ]
        with m.Elif(w_take):
            m.d.sync += [w_ram.eq(w_ram + 1), w_left.eq(w_left - 1)]
        m.d.comb += [
            bus.wvalid.eq(reader.o.valid),
            bus.wdata.eq(reader.o.payload.data),
            bus.wlast.eq(reader.o.payload.side),
            bus.wstrb.eq(-1),
            reader.o.ready.eq(bus.wready),
        ]

        # -- Response side ----------------------------------------------------------------------
        b_head = data.View(b_entry, b_fifo.r_data)
        error  = Signal()
        beat_err = bus.bresp != AxiResp.OKAY
        m.d.comb += [
            bus.bready.eq(b_fifo.r_rdy),
            b_fifo.r_en.eq(bus.bvalid),
            self.done.payload.slot.eq(b_head.slot),
            self.done.payload.error.eq(error | beat_err),
            self.busy.eq(b_fifo.r_rdy),
        ]
        with m.If(bus.bvalid & bus.bready):
            with m.If(b_head.last):
                m.d.comb += self.done.valid.eq(1)
                m.d.sync += error.eq(0)
            with m.Else():
                m.d.sync += error.eq(error | beat_err)
        return m
