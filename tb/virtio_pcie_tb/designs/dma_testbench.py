# SPDX-License-Identifier: BSD-2-Clause
"""The DMA engine with real client buffers, for the DMA tests and the DMA benchmark.

Each client of a :class:`~virtio_pcie.dma.engine.DmaEngine` gets the two RAMs a real client
owns (:mod:`amaranth.lib.memory`): a read buffer the engine writes and a write buffer the engine
reads. The testbench reaches them through extra ports (``rdbuf`` reads the read buffer,
``wrbuf`` writes the write buffer) that work while the engine runs, so a test can preload and
inspect buffers without touching the engine's ports::

      tb ──► client[k].rd_req / wr_req ──►┌───────────┐── tx_req ──► bridge
      tb ◄── client[k].rd_status / wr_st ◄│ DmaEngine │◄─ rx_cpl ─── bridge
      tb ◄─► client[k].rdbuf ─► [read buffer ]◄─ rd_ram ─┤     │
      tb ──► client[k].wrbuf ─► [write buffer]── wr_ram ─┘  cfg ◄── tb

``rx_req`` and ``tx_cpl`` exist so that the design plugs into the root-complex bridge: requests
are taken and dropped, no completion is ever sent. ``cfg`` is driven by the test (there is no
configuration space here).
"""

from amaranth import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from virtio_pcie.dma.engine import DmaEngine
from virtio_pcie.dma.interface import (DMA_RAM_ADDR_WIDTH, DmaReadRequest, DmaStatistics,
                                       DmaStatus, DmaWriteRequest)
from virtio_pcie.function.interface import FunctionConfig, FunctionEvents
from virtio_pcie.tlp.signature import TlpSignature

__all__ = ["DmaTestbench", "TestClientSignature", "build_dma_testbench", "TIMEOUT_CYCLES",
           "BUFFER_BYTES"]

#: Completion timeout of the shared test design, in cycles: long enough for 16 KiB of
#: completions (the engine's default completion buffer) to drain at 64 bits behind 1 µs of
#: latency, short enough for timeout tests to run quickly.
TIMEOUT_CYCLES = 8192
#: Client buffer size of the shared test design.
BUFFER_BYTES = 16384


def build_dma_testbench(data_width):
    """The one DMA test design per data width that the DMA tests and the benchmark share."""
    from virtio_pcie_tb import harness
    return harness.build(DmaTestbench, {
        "data_width": data_width, "clients": 2, "buffer_bytes": BUFFER_BYTES,
        "engine": {"completion_timeout_cycles": TIMEOUT_CYCLES},
    }, name="dma_testbench", ports_only=True)


def TestClientSignature(data_width, buffer_bytes):
    """One client as the testbench sees it (``In`` = driven by the testbench)."""
    row_bits = (buffer_bytes // (data_width // 8) - 1).bit_length()
    return wiring.Signature({
        "rd_req":    In(stream.Signature(DmaReadRequest)),
        "wr_req":    In(stream.Signature(DmaWriteRequest)),
        # Status streams are always ready; a top level cannot have a constant ``ready`` port.
        "rd_status": Out(wiring.Signature({"payload": Out(DmaStatus), "valid": Out(1)})),
        "wr_status": Out(wiring.Signature({"payload": Out(DmaStatus), "valid": Out(1)})),
        "rdbuf":     In(wiring.Signature({"addr": Out(row_bits), "en": Out(1),
                                          "data": In(data_width)})),
        "wrbuf":     In(wiring.Signature({"addr": Out(row_bits), "en": Out(1),
                                          "data": Out(data_width),
                                          "be": Out(data_width // 8)})),
    })


class DmaTestbench(wiring.Component):
    """A :class:`DmaEngine` whose clients are buffer pairs driven by the testbench.

    Parameters
    ----------
    data_width : int
    clients : int
    buffer_bytes : int
        Size of each buffer (a power of two, at most 64 KiB); buffer addresses wrap at it.
    engine : dict
        Further :class:`DmaEngine` parameters.
    """

    def __init__(self, *, data_width, clients=2, buffer_bytes=1 << DMA_RAM_ADDR_WIDTH,
                 engine=None):
        if buffer_bytes & (buffer_bytes - 1) or not \
                data_width // 8 < buffer_bytes <= 1 << DMA_RAM_ADDR_WIDTH:
            raise ValueError(f"buffer_bytes must be a power of two up to "
                             f"{1 << DMA_RAM_ADDR_WIDTH}, not {buffer_bytes!r}")
        self._data_width = data_width
        self._clients = clients
        self._buffer_bytes = buffer_bytes
        self._engine_args = dict(engine or {})
        super().__init__({
            "rx_req": In(TlpSignature(data_width)),
            "tx_cpl": Out(TlpSignature(data_width)),
            "tx_req": Out(TlpSignature(data_width)),
            "rx_cpl": In(TlpSignature(data_width)),
            "cfg":    In(FunctionConfig),
            "events": Out(FunctionEvents),
            "idle":   Out(1),
            "stats":  Out(DmaStatistics),
            "client": Out(TestClientSignature(data_width, buffer_bytes)).array(clients),
        })

    def elaborate(self, platform):
        m = Module()
        W = self._data_width
        depth = self._buffer_bytes // (W // 8)
        m.submodules.engine = engine = DmaEngine(data_width=W, clients=self._clients,
                                                 **self._engine_args)
        m.d.comb += [
            self.rx_req.ready.eq(1),
            self.tx_cpl.valid.eq(0),
            engine.cfg.eq(self.cfg),
            self.events.eq(engine.events),
            self.idle.eq(engine.idle),
            self.stats.eq(engine.stats),
        ]
        wiring.connect(m, engine=engine.tx_req, link=wiring.flipped(self.tx_req))
        wiring.connect(m, link=wiring.flipped(self.rx_cpl), engine=engine.rx_cpl)

        for k in range(self._clients):
            tb, port = self.client[k], engine.client[k]
            wiring.connect(m, tb=wiring.flipped(tb.rd_req), engine=port.rd_req)
            wiring.connect(m, tb=wiring.flipped(tb.wr_req), engine=port.wr_req)
            m.d.comb += [
                tb.rd_status.valid.eq(port.rd_status.valid),
                tb.rd_status.payload.eq(port.rd_status.payload),
                tb.wr_status.valid.eq(port.wr_status.valid),
                tb.wr_status.payload.eq(port.wr_status.payload),
            ]

            rdbuf = Memory(shape=W, depth=depth, init=[])
            wrbuf = Memory(shape=W, depth=depth, init=[])
            m.submodules[f"rdbuf{k}"] = rdbuf
            m.submodules[f"wrbuf{k}"] = wrbuf

            fill = rdbuf.write_port(granularity=8)      # the engine writes read data
            look = rdbuf.read_port()                    # the testbench inspects it
            m.d.comb += [
                fill.addr.eq(port.rd_ram.addr),
                fill.data.eq(port.rd_ram.data),
                fill.en.eq(Mux(port.rd_ram.en, port.rd_ram.be, 0)),
                look.addr.eq(tb.rdbuf.addr),
                look.en.eq(tb.rdbuf.en),
                tb.rdbuf.data.eq(look.data),
            ]
            load = wrbuf.write_port(granularity=8)      # the testbench preloads write data
            take = wrbuf.read_port()                    # the engine reads it
            m.d.comb += [
                load.addr.eq(tb.wrbuf.addr),
                load.data.eq(tb.wrbuf.data),
                load.en.eq(Mux(tb.wrbuf.en, tb.wrbuf.be, 0)),
                take.addr.eq(port.wr_ram.addr),
                take.en.eq(port.wr_ram.en),
                port.wr_ram.data.eq(take.data),
            ]
        return m
