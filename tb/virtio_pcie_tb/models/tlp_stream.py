# SPDX-License-Identifier: BSD-2-Clause
"""Drivers for the DUT's TLP streams (``<name>__payload`` / ``__valid`` / ``__ready`` ports).

:class:`TlpSource` drives a stream the DUT consumes; :class:`TlpSink` takes a stream the DUT
produces. Both follow cocotb's sampling model: after ``await RisingEdge(clk)`` signals read their
value at that edge, and values written take effect for the next edge. Both can insert idle cycles
(source) or back-pressure (sink) from a generator yielding truthy values for "pause this cycle",
as cocotbext-axi does. When idle they sleep on an event or on ``valid`` rising, not on every clock
edge, so an idle stream costs nothing.

These and :mod:`.pcie_bridge` are the only modules that touch DUT signals.
"""

import collections
import logging

import cocotb
from cocotb.triggers import Event, RisingEdge

from .tlp import BeatAssembler, BeatCodec, MalformedTlp

__all__ = ["TlpSource", "TlpSink"]


def _sig(dut, prefix, name):
    return getattr(dut, f"{prefix}__{name}")


class _Port:
    def __init__(self, dut, prefix, clock, reset, data_width):
        self.dut = dut
        self.prefix = prefix
        self.clock = clock
        self.reset = reset
        self.codec = BeatCodec(data_width)
        self.payload = _sig(dut, prefix, "payload")
        self.valid = _sig(dut, prefix, "valid")
        self.ready = _sig(dut, prefix, "ready")
        self.log = logging.getLogger(f"cocotb.tlp.{prefix}")
        self._pause = None
        self.beats = 0          # beats transferred
        self.tlps = 0           # TLPs transferred

    def set_pause_generator(self, generator=None):
        """``generator`` yields one value per cycle; truthy means pause (idle / back-pressure)."""
        self._pause = iter(generator) if generator is not None else None

    def _paused(self):
        if self._pause is None:
            return False
        try:
            return bool(next(self._pause))
        except StopIteration:
            self._pause = None
            return False


class TlpSource(_Port):
    """Sends :class:`~.tlp.RawTlp` objects into a DUT input stream."""

    def __init__(self, dut, prefix, clock, reset=None, *, data_width):
        super().__init__(dut, prefix, clock, reset, data_width)
        self._queue = collections.deque()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def set_idle_generator(self, generator=None):
        self.set_pause_generator(generator)

    def send_nowait(self, tlp, on_sent=None):
        tlp.check()
        self._queue.append((self.codec.encode(tlp), tlp, on_sent))
        self._idle.clear()
        self._wake.set()

    async def send(self, tlp):
        self.send_nowait(tlp)

    async def send_beats(self, beats):
        """Send raw beat integers (for negative tests that need malformed streams)."""
        self._queue.append((list(beats), None, None))
        self._idle.clear()
        self._wake.set()

    def empty(self):
        return not self._queue

    async def wait_idle(self):
        while self._queue or not self._idle.is_set():
            await self._idle.wait()

    async def _run(self):
        # One trigger object per signal, awaited again and again (cheaper than a new one per
        # cycle); valid and payload are written only when they change.
        edge = RisingEdge(self.clock)
        valid, ready, payload, reset = self.valid, self.ready, self.payload, self.reset
        valid_now = 0
        while True:
            if not self._queue:
                valid.value = valid_now = 0
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                # Woken by a Timer or an event, possibly in the time step of a clock edge but
                # before it: drive only from just after an edge, so that the edge awaited below
                # is the one that samples the first beat.
                await edge
                continue
            beats, tlp, on_sent = self._queue[0]
            i = 0
            n = len(beats)
            driven = -1         # the beat on payload (not written again while it waits)
            while i < n:
                if self._pause is not None and self._paused():
                    if valid_now:
                        valid.value = valid_now = 0
                    await edge
                    continue
                if driven != i:
                    payload.value = beats[i]
                    driven = i
                if not valid_now:
                    valid.value = valid_now = 1
                await edge
                if reset is not None and reset.value:
                    continue
                if ready.value:
                    i += 1
                    self.beats += 1
            self._queue.popleft()
            self.tlps += 1
            if on_sent is not None:
                on_sent(tlp)
            if not self._queue:
                valid.value = valid_now = 0


class TlpSink(_Port):
    """Receives :class:`~.tlp.RawTlp` objects from a DUT output stream.

    Each TLP goes to ``callback(tlp)`` if one is given, else to a queue read with :meth:`recv`.
    A malformed beat sequence is logged as an error and recorded in :attr:`errors`; the sink
    resynchronises on the next ``sop``.
    """

    def __init__(self, dut, prefix, clock, reset=None, *, data_width, callback=None):
        super().__init__(dut, prefix, clock, reset, data_width)
        self.callback = callback
        self.queue = collections.deque()
        self._event = Event()
        self.errors = []
        self._assembler = BeatAssembler(self.codec, name=prefix)
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    def set_backpressure_generator(self, generator=None):
        self.set_pause_generator(generator)

    def empty(self):
        return not self.queue

    async def recv(self):
        while not self.queue:
            self._event.clear()
            await self._event.wait()
        return self.queue.popleft()

    def recv_nowait(self):
        return self.queue.popleft() if self.queue else None

    async def _run(self):
        edge = RisingEdge(self.clock)
        valid = self.valid
        valid_rises = RisingEdge(valid)
        ready = self.ready
        payload = self.payload
        ready_now = 0
        while True:
            if not ready_now and self._pause is None:
                ready.value = 1
                ready_now = 1
            if not valid.value:
                # Idle: sleep until the DUT raises valid, then sample from the next edge on.
                await valid_rises
            pause = self._paused()
            if pause != (not ready_now):
                ready_now = 0 if pause else 1
                ready.value = ready_now
            await edge
            if self.reset is not None and self.reset.value:
                continue
            if ready_now and valid.value:
                beat = int(payload.value)
                self.beats += 1
                try:
                    tlp = self._assembler.push(beat)
                except MalformedTlp as e:
                    self.log.error("malformed TLP from DUT: %s", e)
                    self.errors.append(str(e))
                    self._assembler = BeatAssembler(self.codec, name=self.prefix)
                    continue
                if tlp is not None:
                    self.tlps += 1
                    if self.callback is not None:
                        self.callback(tlp)
                    else:
                        self.queue.append(tlp)
                        self._event.set()
