# SPDX-License-Identifier: BSD-2-Clause
"""Reads chunks of the medium into the write buffer through AXI4 AR/R bursts."""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .axi import (AXI_BOUNDARY, AXI_CACHE_NORMAL, AXI_MAX_BURST_BEATS, AxiBurst, AxiResp,
                  AxiSignature)
from .blk_interface import JOB_LEN_WIDTH, MediumDone, MediumJob

__all__ = ["MediumReader"]


class MediumReader(wiring.Component):
    """Moves ``len`` bytes from the medium at ``addr`` to the buffer at beat ``ram``, per job.

    The address side splits each job into INCR bursts of full-width beats, at most
    :data:`~.axi.AXI_MAX_BURST_BEATS` long and never across a :data:`~.axi.AXI_BOUNDARY`
    (IHI 0022E §A3.4.1), and issues them back to back, across jobs, as fast as the slave
    takes them. The data side writes each beat into the buffer as it arrives (one ID: data
    returns in order) and reports a job ``done``, with ``error`` if any beat came back with
    SLVERR or DECERR. Jobs must be whole beats long and start on a beat boundary.

    Members
    -------
    job : In(stream.Signature(MediumJob(...)))
    bus : Out(AxiSignature(...))
        Only the AR and R channels are used.
    ram_addr, ram_data, ram_en : Out
        Write port of the write buffer (full beats).
    done : Out(stream.Signature(MediumDone(slots), always_ready=True))
    busy : Out(1)
        Jobs are in flight.
    """

    def __init__(self, *, slots, medium_addr_width, data_width, ram_beat_width, id_width=1,
                 max_jobs=4):
        self._slots = slots
        self._maw = medium_addr_width
        self._bpb = data_width // 8
        self._ram_bits = ram_beat_width
        self._max_jobs = max_jobs
        self._job_layout = MediumJob(slots, medium_addr_width, ram_beat_width)
        super().__init__({
            "job":      In(stream.Signature(self._job_layout)),
            "bus":      Out(AxiSignature(addr_width=medium_addr_width, data_width=data_width,
                                         id_width=id_width)),
            "ram_addr": Out(ram_beat_width),
            "ram_data": Out(data_width),
            "ram_en":   Out(1),
            "done":     Out(stream.Signature(MediumDone(slots), always_ready=True)),
            "busy":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus   = self.bus
        shift = self._bpb.bit_length() - 1
        job   = self.job.payload
        beats_w = JOB_LEN_WIDTH - shift + 1

        # -- Data side bookkeeping: one entry per job, in issue order ---------------------------
        entry = data.StructLayout({"slot": job.slot.shape(), "ram": self._ram_bits,
                                   "beats": beats_w})
        m.submodules.jobs = jobs = SyncFIFO(width=entry.size, depth=self._max_jobs)
        push = Signal(entry)
        m.d.comb += [
            push.slot.eq(job.slot),
            push.ram.eq(job.ram),
            push.beats.eq(job.len >> shift),
            jobs.w_data.eq(push),
        ]

        # -- Address side -----------------------------------------------------------------------
        addr = Signal(self._maw)
        left = Signal(beats_w)
        to_edge = Signal(range(AXI_BOUNDARY // self._bpb + 1))
        room  = Signal.like(to_edge)     # beats before the boundary, at most a whole burst
        burst = Signal(range(AXI_MAX_BURST_BEATS + 1))
        m.d.comb += [
            to_edge.eq((AXI_BOUNDARY - addr[:12]) >> shift),
            room.eq(Mux(to_edge > AXI_MAX_BURST_BEATS, AXI_MAX_BURST_BEATS, to_edge)),
            burst.eq(Mux(left < room, left, room)),
        ]
        m.d.comb += [
            bus.araddr.eq(addr),
            bus.arlen.eq(burst - 1),
            bus.arsize.eq(shift),
            bus.arburst.eq(AxiBurst.INCR),
            bus.arcache.eq(AXI_CACHE_NORMAL),
        ]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [
                    self.job.ready.eq(jobs.w_rdy),
                    jobs.w_en.eq(self.job.valid),
                ]
                with m.If(self.job.valid & jobs.w_rdy):
                    m.d.sync += [addr.eq(job.addr), left.eq(job.len >> shift)]
                    m.next = "BURST"
            with m.State("BURST"):
                m.d.comb += bus.arvalid.eq(1)
                with m.If(bus.arready):
                    m.d.sync += [
                        addr.eq(addr + (burst << shift)),
                        left.eq(left - burst),
                    ]
                    with m.If(left == burst):
                        m.next = "IDLE"

        # -- Data side --------------------------------------------------------------------------
        head  = data.View(entry, jobs.r_data)
        count = Signal(beats_w)
        error = Signal()
        beat_err = bus.rresp != AxiResp.OKAY
        take = bus.rvalid & bus.rready
        m.d.comb += [
            bus.rready.eq(jobs.r_rdy),
            self.ram_addr.eq(head.ram + count),
            self.ram_data.eq(bus.rdata),
            self.ram_en.eq(take),
            self.done.payload.slot.eq(head.slot),
            self.done.payload.error.eq(error | beat_err),
            self.busy.eq(jobs.r_rdy),
        ]
        with m.If(take):
            with m.If(count + 1 == head.beats):
                m.d.comb += [self.done.valid.eq(1), jobs.r_en.eq(1)]
                m.d.sync += [count.eq(0), error.eq(0)]
            with m.Else():
                m.d.sync += [count.eq(count + 1), error.eq(error | beat_err)]
        return m
