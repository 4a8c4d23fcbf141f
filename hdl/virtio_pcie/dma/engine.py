# SPDX-License-Identifier: BSD-2-Clause
"""The DMA engine: clients' read and write requests in, TLPs out, statuses back.

::

    client[0..N-1]                                                         link side
      rd_req ──► DmaRequestArbiter ──► DmaReadEngine ── MRd ──┐
      rd_ram ◄──────────── (by client) ◄──┘   ▲ rx_cpl ◄──────┼────────────── rx_cpl
      rd_status ◄───────── (by client) ◄──────┘               ├─ TlpArbiter ──► tx_req
      wr_req ──► DmaRequestArbiter ──► DmaWriteEngine ── MWr ─┘
      wr_ram ◄──────────── (by client) ◄──┘
      wr_status ◄───────── (by client) ◄──┘

Reads and writes are independent: a read request may overtake an earlier write request inside
the engine. A client that needs a read ordered after a write issues the read after the write's
status (posted writes are never passed by later reads on the link, PCIe Base 4.0 §2.4.1).
"""

from amaranth import Array, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..function.interface import FunctionConfig, FunctionEvents
from ..tlp.arbiter import TlpArbiter
from ..tlp.signature import DATA_WIDTHS, TlpSignature
from .interface import (DmaClientSignature, DmaReadRequest, DmaStatistics, DmaWriteRequest,
                        client_index_width)
from .read import DmaReadEngine
from .request_arbiter import DmaRequestArbiter
from .write import DmaWriteEngine

__all__ = ["DmaEngine"]


class DmaEngine(wiring.Component):
    """A bus-mastering DMA engine shared by ``clients`` clients.

    Parameters
    ----------
    data_width : int
        TLP data path width in bits (64, 128 or 256).
    clients : int
        Number of client ports.
    tag_count, read_ops, cpl_buffer_bytes, cpl_buffer_headers, completion_timeout_cycles
        See :class:`~.read.DmaReadEngine` (``read_ops`` is its ``op_count``).
    read_budget : tuple of (int or None), or None
        Per client, the most completion bytes its reads may keep outstanding (``None``: only
        ``cpl_buffer_bytes`` bounds them). A client's read request is taken only while its
        outstanding reads plus the request's length fit in its budget, or when it has none
        outstanding (so a request longer than the budget still goes, alone). Completions come
        back in request order on a link (a root complex returns them roughly so), so every
        byte outstanding delays the completions of the reads issued after it: a budget near
        the bandwidth-delay product keeps a bulk client's data flowing while the small reads of
        the others (ring and descriptor reads) see the host's latency and not a queue of data.

    Members
    -------
    client : In(DmaClientSignature(data_width)).array(clients)
        Client ports (see :mod:`.interface`). Requests of all clients are served round robin;
        statuses and buffer accesses go to the client that made the request.
    tx_req : Out(TlpSignature(data_width))
        MRd and MWr TLPs, reads and writes taking turns TLP by TLP.
    rx_cpl : In(TlpSignature(data_width))
        Completions for the MRd requests.
    cfg : In(FunctionConfig)
        Requester ID, Bus Master Enable, Max_Payload_Size, Max_Read_Request_Size, extended
        tags, RCB.
    events : Out(FunctionEvents)
        Received master / target abort and master data parity error strobes.
    idle : Out(1)
        No request in progress.
    stats : Out(DmaStatistics)
    """

    def __init__(self, *, data_width, clients=1, tag_count=256, read_ops=32,
                 cpl_buffer_bytes=16384, cpl_buffer_headers=256,
                 completion_timeout_cycles=12_500_000, read_budget=None):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
        client_index_width(clients)
        if read_budget is None:
            read_budget = (None,) * clients
        if (not isinstance(read_budget, (tuple, list)) or len(read_budget) != clients
                or not all(b is None or (isinstance(b, int) and not isinstance(b, bool)
                                         and b >= 1) for b in read_budget)):
            raise ValueError(f"read_budget must be None or {clients} positive integers or None, "
                             f"not {read_budget!r}")
        self._read_budget = tuple(read_budget)
        self._data_width = data_width
        self._clients    = clients
        self._read_args  = dict(tag_count=tag_count, op_count=read_ops,
                                cpl_buffer_bytes=cpl_buffer_bytes,
                                cpl_buffer_headers=cpl_buffer_headers,
                                completion_timeout_cycles=completion_timeout_cycles)
        # Check the read engine's parameters now, so a bad one is reported at construction.
        self._read = DmaReadEngine(data_width=data_width, clients=clients, **self._read_args)
        super().__init__({
            "client": In(DmaClientSignature(data_width)).array(clients),
            "tx_req": Out(TlpSignature(data_width)),
            "rx_cpl": In(TlpSignature(data_width)),
            "cfg":    In(FunctionConfig),
            "events": Out(FunctionEvents),
            "idle":   Out(1),
            "stats":  Out(DmaStatistics),
        })

    def elaborate(self, platform):
        m = Module()
        W = self._data_width
        N = self._clients

        m.submodules.rd_arbiter = rd_arb = DmaRequestArbiter(layout=DmaReadRequest, clients=N)
        m.submodules.wr_arbiter = wr_arb = DmaRequestArbiter(layout=DmaWriteRequest, clients=N)
        m.submodules.read  = read  = self._read
        m.submodules.write = write = DmaWriteEngine(data_width=W, clients=N)
        m.submodules.tx_arbiter = tx_arb = TlpArbiter(data_width=W, inputs=2)

        # --- Requests ------------------------------------------------------------------------
        for k in range(N):
            connect(m, client=flipped(self.client[k].wr_req), arbiter=wr_arb.i[k])
            budget = self._read_budget[k]
            if budget is None or budget >= self._read_args["cpl_buffer_bytes"]:
                connect(m, client=flipped(self.client[k].rd_req), arbiter=rd_arb.i[k])
                continue
            # Read budget: hold the client's request back while its outstanding reads and the
            # request would exceed it. Once offered, a request stays offered until taken.
            rd_req, used = self.client[k].rd_req, read.client_used[k]
            fits    = (used == 0) | (used + rd_req.p.len <= budget)
            offered = Signal(name=f"rd_offered{k}")
            m.d.comb += [
                rd_arb.i[k].payload.eq(rd_req.payload),
                rd_arb.i[k].valid.eq(rd_req.valid & (fits | offered)),
                rd_req.ready.eq(rd_arb.i[k].ready & (fits | offered)),
            ]
            m.d.sync += offered.eq(rd_arb.i[k].valid & ~rd_arb.i[k].ready)
        connect(m, arbiter=rd_arb.o, engine=read.req)
        connect(m, arbiter=wr_arb.o, engine=write.req)

        # --- Link -----------------------------------------------------------------------------
        connect(m, write=write.tx_req, arbiter=tx_arb.i[0])
        connect(m, read=read.tx_req, arbiter=tx_arb.i[1])
        connect(m, arbiter=tx_arb.o, link=flipped(self.tx_req))
        connect(m, link=flipped(self.rx_cpl), engine=read.rx_cpl)
        m.d.comb += [
            read.cfg.eq(self.cfg),
            write.cfg.eq(self.cfg),
            self.events.eq(read.events),
        ]

        # --- Statuses and buffers, by client -----------------------------------------------------
        wr_data = Array(self.client[k].wr_ram.data for k in range(N))
        wr_sel  = Signal(range(N))
        with m.If(write.ram.en):
            m.d.sync += wr_sel.eq(write.ram_client)
        m.d.comb += write.ram.data.eq(wr_data[wr_sel])
        for k in range(N):
            port = self.client[k]
            m.d.comb += [
                port.rd_status.valid.eq(read.status.valid & (read.status.p.client == k)),
                port.rd_status.payload.eq(read.status.p.status),
                port.wr_status.valid.eq(write.status.valid & (write.status.p.client == k)),
                port.wr_status.payload.eq(write.status.p.status),
                port.rd_ram.addr.eq(read.ram.addr),
                port.rd_ram.data.eq(read.ram.data),
                port.rd_ram.be.eq(read.ram.be),
                port.rd_ram.en.eq(read.ram.en & (read.ram_client == k)),
                port.wr_ram.addr.eq(write.ram.addr),
                port.wr_ram.en.eq(write.ram.en & (write.ram_client == k)),
            ]

        # --- Idle and statistics -----------------------------------------------------------------
        m.d.comb += self.idle.eq(read.idle & write.idle)
        for name in ("rd_requests", "rd_tlps", "rd_bytes", "rd_completions", "rd_errors",
                     "rd_timeouts", "cpl_unexpected", "cpl_malformed", "rd_tag_starved",
                     "rd_credit_starved"):
            m.d.comb += self.stats[name].eq(read.stats[name])
        for name in ("wr_requests", "wr_tlps", "wr_bytes", "wr_errors"):
            m.d.comb += self.stats[name].eq(write.stats[name])
        tx_stalled = Signal(32)
        with m.If(self.tx_req.valid & ~self.tx_req.ready):
            m.d.sync += tx_stalled.eq(tx_stalled + 1)
        m.d.comb += self.stats.tx_stalled.eq(tx_stalled)
        return m
