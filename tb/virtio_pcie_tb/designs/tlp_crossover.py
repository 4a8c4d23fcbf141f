# SPDX-License-Identifier: BSD-2-Clause
"""Four TLP FIFOs that put a testbench model where an endpoint's RTL would be.

The host side of a bridge connects to ``rx_req``/``tx_cpl``/``tx_req``/``rx_cpl`` exactly as
to a function; a Python endpoint model connects to the ``ep_*`` streams, which are the same
streams seen from the function's side::

    bridge ── rx_req ─► FIFO ─► ep_rx_req ──► model
    bridge ◄─ tx_cpl ◄─ FIFO ◄─ ep_tx_cpl ◄── model
    bridge ◄─ tx_req ◄─ FIFO ◄─ ep_tx_req ◄── model
    bridge ── rx_cpl ─► FIFO ─► ep_rx_cpl ──► model

So the bridge's beats, handshakes and back-pressure are real RTL signals while the function's
behaviour is scripted; it tests the co-simulation plumbing (MSI-X, INTx, DMA, BARs) before the
real function exists.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from virtio_pcie.tlp.fifo import TlpFifo
from virtio_pcie.tlp.signature import TlpSignature

__all__ = ["TlpCrossover"]


class TlpCrossover(wiring.Component):
    """Members: the four function streams (as :class:`MinimalEndpoint` has them) and their
    mirror images ``ep_rx_req`` (Out), ``ep_tx_cpl`` (In), ``ep_tx_req`` (In), ``ep_rx_cpl``
    (Out), each through a ``depth``-beat FIFO."""

    def __init__(self, *, data_width, depth=4):
        self._data_width = data_width
        self._depth = depth
        sig = TlpSignature(data_width)
        super().__init__({
            "rx_req": In(sig), "tx_cpl": Out(sig), "tx_req": Out(sig), "rx_cpl": In(sig),
            "ep_rx_req": Out(sig), "ep_tx_cpl": In(sig), "ep_tx_req": In(sig),
            "ep_rx_cpl": Out(sig),
        })

    def elaborate(self, platform):
        m = Module()
        for name, src, dst in [("req", self.rx_req, self.ep_rx_req),
                               ("cpl", self.ep_tx_cpl, self.tx_cpl),
                               ("dma", self.ep_tx_req, self.tx_req),
                               ("dma_cpl", self.rx_cpl, self.ep_rx_cpl)]:
            fifo = TlpFifo(data_width=self._data_width, depth=self._depth)
            m.submodules[name] = fifo
            wiring.connect(m, wiring.flipped(src), fifo.i)
            wiring.connect(m, fifo.o, wiring.flipped(dst))
        return m
