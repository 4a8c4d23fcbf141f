# SPDX-License-Identifier: BSD-2-Clause
"""The address side of an AXI4 master: jobs cut into INCR bursts that AXI allows."""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI_BOUNDARY, AXI_CACHE_NORMAL, AXI_MAX_BURST_BEATS, AxiBurst

__all__ = ["AxiBurstJob", "AxiBurstCommand", "AxiBurstSplitter"]


def AxiBurstJob(addr_width, beats_width):
    """Move ``beats`` full-width beats from byte address ``addr`` on (beat-aligned, > 0)."""
    return data.StructLayout({"addr": addr_width, "beats": beats_width})


def AxiBurstCommand(addr_width, beats_width):
    """One INCR burst of a job: ``beats`` from ``addr``; ``offset``: the job's beats before
    it; ``last``: the job's final burst."""
    return data.StructLayout({
        "addr":   addr_width,
        "beats":  range(AXI_MAX_BURST_BEATS + 1),
        "offset": beats_width,
        "last":   1,
    })


class AxiBurstSplitter(wiring.Component):
    """Cuts each job into INCR bursts of full-width beats and offers them one after another.

    A burst is at most :data:`~.axi.AXI_MAX_BURST_BEATS` beats and never crosses an
    :data:`~.axi.AXI_BOUNDARY` (IHI 0022E §A3.4.1); bursts follow each other back to back, a
    new job's first burst one cycle after the previous job's last was taken. The
    :class:`~.medium_reader.MediumReader` (AR) and :class:`~.medium_writer.MediumWriter` (AW)
    put it in front of their address channel with :meth:`drive`.

    Parameters
    ----------
    addr_width : int
    data_width : int
        Bits per beat.
    beats_width : int
        Bits of a job's length in beats.

    Members
    -------
    job : In(stream.Signature(AxiBurstJob(addr_width, beats_width)))
    burst : Out(stream.Signature(AxiBurstCommand(addr_width, beats_width)))
    """

    def __init__(self, *, addr_width, data_width, beats_width):
        self._addr_width = addr_width
        self._bpb = data_width // 8
        super().__init__({
            "job":   In(stream.Signature(AxiBurstJob(addr_width, beats_width))),
            "burst": Out(stream.Signature(AxiBurstCommand(addr_width, beats_width))),
        })

    def drive(self, bus, channel):
        """Assignments driving ``bus``'s address channel ``channel`` ("ar" or "aw") with the
        offered burst: address, length, full-width size, INCR, normal memory; ID 0."""
        def field(name):
            return getattr(bus, f"{channel}{name}")
        burst = self.burst.payload
        return [
            field("addr").eq(burst.addr),
            field("len").eq(burst.beats - 1),
            field("size").eq(self._bpb.bit_length() - 1),
            field("burst").eq(AxiBurst.INCR),
            field("cache").eq(AXI_CACHE_NORMAL),
        ]

    def elaborate(self, platform):
        m = Module()
        shift = self._bpb.bit_length() - 1
        job, out = self.job.payload, self.burst.payload

        addr    = Signal(self._addr_width)
        left    = Signal.like(job.beats)
        done    = Signal.like(job.beats)
        to_edge = Signal(range(AXI_BOUNDARY // self._bpb + 1))
        room    = Signal.like(to_edge)     # beats before the boundary, at most a whole burst
        beats   = Signal.like(out.beats)
        m.d.comb += [
            to_edge.eq((AXI_BOUNDARY - addr[:12]) >> shift),
            room.eq(Mux(to_edge > AXI_MAX_BURST_BEATS, AXI_MAX_BURST_BEATS, to_edge)),
            beats.eq(Mux(left < room, left, room)),
            out.addr.eq(addr),
            out.beats.eq(beats),
            out.offset.eq(done),
            out.last.eq(left == beats),
        ]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(self.job.valid):
                    m.d.sync += [addr.eq(job.addr), left.eq(job.beats), done.eq(0)]
                    m.next = "BURST"
            with m.State("BURST"):
                m.d.comb += self.burst.valid.eq(1)
                with m.If(self.burst.ready):
                    m.d.sync += [
                        addr.eq(addr + (beats << shift)),
                        left.eq(left - beats),
                        done.eq(done + beats),
                    ]
                    with m.If(out.last):
                        m.next = "IDLE"
        return m
