# SPDX-License-Identifier: BSD-2-Clause
"""Shares one DMA client port's request and status streams between several requesters."""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..dma.interface import DMA_TAG_WIDTH
from .engine_signatures import DmaRequesterSignature

__all__ = ["DmaRequestMux"]


class DmaRequestMux(wiring.Component):
    """Round-robin merge of ``clients`` DMA requesters onto one read and one write request
    stream, with statuses routed back by tag.

    The top ``client_bits`` bits of each request's tag are replaced by the client's index, so a
    client has ``DMA_TAG_WIDTH - client_bits`` tag bits of its own; its statuses come back with
    its own bits unchanged. A request stream's grant is held while its ``valid`` is up and not
    yet accepted, so the payload seen downstream never changes before the transfer.

    Parameters
    ----------
    clients : int
        Number of requesters (at least 1).

    Members
    -------
    client : In(DmaRequesterSignature()).array(clients)
    rd_req : Out(stream.Signature(DmaReadRequest))
    rd_status : In(stream.Signature(DmaStatus, always_ready=True))
    wr_req : Out(stream.Signature(DmaWriteRequest))
    wr_status : In(stream.Signature(DmaStatus, always_ready=True))
    """

    def __init__(self, *, clients):
        if not isinstance(clients, int) or clients < 1:
            raise ValueError(f"clients must be a positive integer, not {clients!r}")
        self._clients = clients
        self._client_bits = max(1, (clients - 1).bit_length())
        sig = DmaRequesterSignature()
        super().__init__({
            "client":    In(sig).array(clients),
            "rd_req":    sig.members["rd_req"],
            "rd_status": sig.members["rd_status"],
            "wr_req":    sig.members["wr_req"],
            "wr_status": sig.members["wr_status"],
        })

    @property
    def client_bits(self):
        return self._client_bits

    def elaborate(self, platform):
        m = Module()
        n = self._clients
        own_bits = DMA_TAG_WIDTH - self._client_bits

        for kind in ("rd", "wr"):
            out = getattr(self, f"{kind}_req")
            ins = [getattr(c, f"{kind}_req") for c in self.client]
            grant  = Signal(range(n), name=f"{kind}_grant")
            held   = Signal(name=f"{kind}_held")
            held_g = Signal(range(n), name=f"{kind}_held_grant")
            rr     = Signal(range(n), name=f"{kind}_rr")

            # Grant: the held one, else the first valid requester at or after rr.
            with m.If(held):
                m.d.comb += grant.eq(held_g)
            with m.Else():
                with m.Switch(rr):
                    for r in range(n):
                        with m.Case(r):
                            order = [(r + k) % n for k in range(n)]
                            for k, i in enumerate(order):
                                cond = ins[i].valid
                                with (m.If(cond) if k == 0 else m.Elif(cond)):
                                    m.d.comb += grant.eq(i)

            with m.Switch(grant):
                for i in range(n):
                    with m.Case(i):
                        m.d.comb += [
                            out.valid.eq(ins[i].valid),
                            out.payload.eq(ins[i].payload),
                            out.payload.tag.eq(ins[i].payload.tag[:own_bits] |
                                               (i << own_bits)),
                            ins[i].ready.eq(out.ready),
                        ]
            m.d.sync += [held.eq(out.valid & ~out.ready), held_g.eq(grant)]
            with m.If(out.valid & out.ready):
                m.d.sync += rr.eq(Mux(grant == n - 1, 0, grant + 1))

            status = getattr(self, f"{kind}_status")
            for i, c in enumerate(self.client):
                cs = getattr(c, f"{kind}_status")
                m.d.comb += [
                    cs.valid.eq(status.valid & (status.payload.tag[own_bits:] == i)),
                    cs.payload.eq(status.payload),
                    cs.payload.tag.eq(status.payload.tag[:own_bits]),
                ]
        return m

