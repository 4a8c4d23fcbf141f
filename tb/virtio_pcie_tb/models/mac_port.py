# SPDX-License-Identifier: BSD-2-Clause
"""The far side of a virtio-net device's MAC streams: what a wire and the host behind it see.

::

    VirtioPcieDevice(device="net")
      mac_tx__tdata/tkeep/tlast/tuser/tvalid ──► AxiStreamSink ──► MacPort.sent (Queue)
      mac_tx__tready                         ◄── (back-pressure: MacPort.set_pause_generator)
      mac_rx__tdata/tkeep/tlast/tuser/tvalid ◄── AxiStreamSource ◄── MacPort.send(frame, bad=…)
      link_up                                ◄── MacPort.set_link(up)

The streams follow :mod:`virtio_pcie.devices.net_interface` (AXI4-Stream, no preamble or FCS,
``tuser`` marks a bad frame). A *responder* (``MacPort.responder = fn``: frame → frames to send
back, e.g. :meth:`~virtio_pcie_tb.cosim.net_peer.NetPeer.handle_frame`) turns the port into an
echoing or answering peer; without one, transmitted frames wait in :attr:`MacPort.sent` for the
test to take with :meth:`MacPort.recv`.

This module and :mod:`.pcie_bridge` are the only ones of a system testbench that touch DUT
signals.
"""

import logging

import cocotb
from cocotb.queue import Queue
from cocotb.triggers import RisingEdge, Timer, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

__all__ = ["MacPort"]


class MacPort:
    """cocotbext-axi drivers on ``<prefix_rx>``/``<prefix_tx>`` and the ``link_up`` input.

    Parameters
    ----------
    dut : the cocotb handle of a design with ``mac_rx__*``, ``mac_tx__*`` and ``link_up``.
    clock, reset : its clock and (active-high) reset signals.
    """

    def __init__(self, dut, clock, reset, *, rx="mac_rx", tx="mac_tx"):
        self.dut = dut
        self.clock = clock
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, rx, bus_separator="__"),
                                      clock, reset)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, tx, bus_separator="__"),
                                  clock, reset)
        for model in (self.source, self.sink):
            model.log.setLevel(logging.WARNING)
        self.sent = Queue()            # frames the device transmitted (bytes), in order
        self.received = 0              # frames handed to the device
        self.transmitted = 0           # frames taken from the device
        self.bad_tx = []               # transmitted frames the device marked bad (tuser)
        self.responder = None
        dut.link_up.value = 1
        dut.loopback.value = 0
        cocotb.start_soon(self._collect())

    # -- link ----------------------------------------------------------------------------------
    @property
    def link_up(self):
        return bool(self.dut.link_up.value)

    async def set_link(self, up):
        """Change ``link_up`` on a clock edge (it is synchronous to the device clock)."""
        await RisingEdge(self.clock)
        self.dut.link_up.value = int(bool(up))

    async def set_loopback(self, on):
        await RisingEdge(self.clock)
        self.dut.loopback.value = int(bool(on))

    # -- device → wire -------------------------------------------------------------------------
    def set_pause_generator(self, generator):
        """Back-pressure on ``mac_tx``: ``tready`` is low in cycles where ``next()`` is true."""
        self.sink.set_pause_generator(generator)

    async def _collect(self):
        while True:
            frame = await self.sink.recv()
            data = bytes(frame.tdata)
            self.transmitted += 1
            tuser = frame.tuser
            if any(tuser) if isinstance(tuser, list) else tuser:
                self.bad_tx.append(data)
            if self.responder is not None:
                for reply in self.responder(data) or ():
                    await self.send(reply)
            else:
                self.sent.put_nowait(data)

    async def recv(self, timeout_ns=200_000):
        """The next frame the device transmitted (``TimeoutError`` if none comes)."""
        from cocotb.triggers import SimTimeoutError
        try:
            return await with_timeout(self.sent.get(), timeout_ns, "ns")
        except SimTimeoutError:
            raise TimeoutError(f"no frame on mac_tx within {timeout_ns} ns") from None

    def pending(self):
        """Frames transmitted and not yet taken."""
        out = []
        while not self.sent.empty():
            out.append(self.sent.get_nowait())
        return out

    # -- wire → device -------------------------------------------------------------------------
    async def send(self, frame, *, bad=False):
        """Queue one frame for ``mac_rx`` (``bad``: ``tuser`` set, a MAC-detected error)."""
        self.received += 1
        await self.source.send(AxiStreamFrame(bytes(frame), tuser=int(bad)))

    async def send_paced(self, frames, *, gbps=10):
        """Send ``frames`` no faster than an Ethernet link of ``gbps`` carries them: each
        frame plus its FCS, preamble and inter-frame gap (24 bytes) takes its wire time."""
        for frame in frames:
            await self.send(frame)
            await Timer((len(frame) + 24) * 8 / gbps, "ns", round_mode="ceil")

    async def flush(self):
        """Wait until every queued frame has gone into the device."""
        await self.source.wait()
