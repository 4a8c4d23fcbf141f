# SPDX-License-Identifier: BSD-2-Clause
"""Round-robin arbitration of the clients' DMA requests."""

from amaranth import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..tlp.arbiter import round_robin
from .interface import client_index_width

__all__ = ["DmaRequestArbiter"]


class DmaRequestArbiter(wiring.Component):
    """Passes one request per cycle from ``clients`` request streams, in turn.

    Clients are served round robin: after a request from client ``k`` the next one comes from
    the first client after ``k`` with a request waiting, so every client gets at least one
    request in ``clients`` through. The output adds the client's index; once a request is
    offered it stays offered until taken, unless its client withdraws it (a client that is
    reset may): then the arbiter picks again.

    Parameters
    ----------
    layout : data.Layout
        The request payload.
    clients : int

    Members
    -------
    i : In(stream.Signature(layout)).array(clients)
    o : Out(stream.Signature(StructLayout({"client": ..., "req": layout})))
    """

    def __init__(self, *, layout, clients):
        self._clients = clients
        routed = data.StructLayout({"client": client_index_width(clients), "req": layout})
        super().__init__({
            "i": In(stream.Signature(layout)).array(clients),
            "o": Out(stream.Signature(routed)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._clients
        last   = Signal(range(n))
        grant  = Signal(range(n))
        locked = Signal()
        pick   = Signal(range(n))
        any_   = Signal()
        round_robin(m, [self.i[k].valid for k in range(n)], last, pick, any_)
        sel = Signal(range(n))
        m.d.comb += sel.eq(grant)
        with m.If(~locked):
            m.d.comb += sel.eq(pick)
        m.d.comb += self.o.p.client.eq(sel)
        with m.Switch(sel):
            for k in range(n):
                with m.Case(k):
                    m.d.comb += [
                        self.o.valid.eq(self.i[k].valid),
                        self.o.p.req.eq(self.i[k].payload),
                        self.i[k].ready.eq(self.o.ready),
                    ]
        with m.If(self.o.valid):
            with m.If(self.o.ready):
                m.d.sync += [locked.eq(0), last.eq(sel)]
            with m.Else():
                m.d.sync += [locked.eq(1), grant.eq(sel)]
        with m.Else():
            # The granted client withdrew its request (a device reset ends the request its
            # block was offering): serve the others again instead of waiting for it forever.
            m.d.sync += locked.eq(0)
        return m
