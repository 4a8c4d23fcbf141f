# SPDX-License-Identifier: BSD-2-Clause
"""Reads chunks of the medium into the write buffer through AXI4 AR/R bursts."""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .axi import AxiResp, AxiSignature
from .axi_burst_splitter import AxiBurstSplitter
from .blk_interface import JOB_LEN_WIDTH, MediumDone, MediumJob

__all__ = ["MediumReader"]


class MediumReader(wiring.Component):
    """Moves ``len`` bytes from the medium at ``addr`` to the buffer at beat ``ram``, per job.

    The address side (an :class:`~.axi_burst_splitter.AxiBurstSplitter`) splits each job into
    INCR bursts of full-width beats, at most :data:`~.axi.AXI_MAX_BURST_BEATS` long and never
    across a :data:`~.axi.AXI_BOUNDARY` (IHI 0022E §A3.4.1), and issues them back to back,
    across jobs, as fast as the slave takes them. The data side writes each beat into the
    buffer as it arrives (one ID: data returns in order) and reports a job ``done``, with
    ``error`` if any beat came back with SLVERR or DECERR. Jobs must be whole beats long and
    start on a beat boundary.

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
        # A job is taken when its data-side entry fits; its bursts go out on AR back to back.
        m.submodules.splitter = splitter = AxiBurstSplitter(
            addr_width=self._maw, data_width=self._bpb * 8, beats_width=beats_w)
        m.d.comb += [
            splitter.job.valid.eq(self.job.valid & jobs.w_rdy),
            splitter.job.payload.addr.eq(job.addr),
            splitter.job.payload.beats.eq(job.len >> shift),
            self.job.ready.eq(splitter.job.ready & jobs.w_rdy),
            jobs.w_en.eq(self.job.valid & self.job.ready),
            *splitter.drive(bus, "ar"),
            bus.arvalid.eq(splitter.burst.valid),
            splitter.burst.ready.eq(bus.arready),
        ]

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
