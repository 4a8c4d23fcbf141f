# SPDX-License-Identifier: BSD-2-Clause
"""The receive frame buffer: two RAM banks, so that every bank has one write and one read port.

Two blocks write the buffer: the ingress (frame data, a row in any cycle a MAC beat arrives, never
held up) and the egress (each frame's ``virtio_net_hdr`` in the rows in front of it, once it knows
``num_buffers``); the DMA engine reads it. A RAM with two write ports and a read port does not
map to FPGA block RAM, so rows alternate between two banks (even rows, odd rows): the ingress,
which writes consecutive rows, writes each bank at most every other cycle while a frame streams
in, and a header write to a bank the ingress is not writing in that cycle goes at once; so a
header waits one cycle at most. The DMA engine reads one row per cycle from whichever bank holds
it.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaRamReadSignature
from .net_interface import FrameBufferGeometry

__all__ = ["NetRxBuffer"]


class NetRxBuffer(wiring.Component):
    """The receive buffer's storage and port arbitration.

    Parameters
    ----------
    data_width : int
    buffer_bytes : int

    Members
    -------
    frames : Out(WritePort.Signature(...))
        The ingress's writes (a memory write port, as ``Memory.write_port()`` is); always taken.
    header : Out(WritePort.Signature(...))
        The egress's header writes; taken in a cycle where ``header_ready`` is high.
    header_ready : Out(1)
    dma : In(DmaRamReadSignature(data_width))
        The DMA engine's read port (``addr`` and ``en`` in, ``data`` out one cycle later).
    """

    def __init__(self, *, data_width, buffer_bytes):
        geom = FrameBufferGeometry(data_width, buffer_bytes)
        self._geom = geom
        port = WritePort.Signature(addr_width=geom.row_bits, shape=data_width, granularity=8)
        super().__init__({
            # (A memory's own write port signature: addr, data and en come in.)
            "frames":       Out(port),
            "header":       Out(port),
            "header_ready": Out(1),
            "dma":          In(DmaRamReadSignature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geom
        frames, header, dma = self.frames, self.header, self.dma

        frames_bank = frames.addr[0]
        header_bank = header.addr[0]
        frames_writing = frames.en.any()
        m.d.comb += self.header_ready.eq(~(frames_writing & (frames_bank == header_bank)))

        read_bank = Signal()
        with m.If(dma.en):
            m.d.sync += read_bank.eq(dma.addr[0])
        data = []
        for bank in range(2):
            mem = Memory(shape=g.data_width, depth=g.rows // 2, init=[])
            m.submodules[f"bank{bank}"] = mem
            w = mem.write_port(granularity=8)
            r = mem.read_port()
            mine = frames_writing & (frames_bank == bank)
            m.d.comb += [
                w.addr.eq(Mux(mine, frames.addr[1:], header.addr[1:])),
                w.data.eq(Mux(mine, frames.data, header.data)),
                w.en.eq(Mux(mine, frames.en, Mux(header_bank == bank, header.en, 0))),
                r.addr.eq(dma.addr[1:]),
                r.en.eq(dma.en),
            ]
            data.append(r.data)
        m.d.comb += dma.data.eq(Mux(read_bank, data[1], data[0]))
        return m
