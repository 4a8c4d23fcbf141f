# SPDX-License-Identifier: BSD-2-Clause
"""Drivers for any Amaranth ``lib.stream`` port of the DUT whose payload is an integer shape or
an :mod:`amaranth.lib.data` layout.

A stream member ``a.b`` of the top-level component appears as ``a__b__payload``, ``a__b__valid``
and (unless ``always_ready``) ``a__b__ready``. :class:`StreamSource` drives a stream the DUT
consumes, :class:`StreamSink` takes one the DUT produces; payloads are dicts of field values
(dotted names for nested layouts), packed and unpacked with :class:`.bitfields.BitFields`.

Sampling follows cocotb's model, as in :mod:`.tlp_stream`: after ``await RisingEdge(clk)`` a
signal reads the value it had at that edge; a value written takes effect for the next edge.
Idle drivers sleep on an event (source) or on ``valid`` rising (sink) rather than on every edge.
"""

import collections
import logging

import cocotb
from cocotb.triggers import Event, RisingEdge

from .bitfields import BitFields

__all__ = ["StreamSource", "StreamSink"]


def _sig(dut, prefix, name):
    return getattr(dut, f"{prefix}__{name}")


class _Port:
    def __init__(self, dut, prefix, clock, shape):
        self.dut = dut
        self.prefix = prefix
        self.clock = clock
        self.codec = BitFields(shape)
        self.payload = _sig(dut, prefix, "payload")
        self.valid = _sig(dut, prefix, "valid")
        self.ready = getattr(dut, f"{prefix}__ready", None)    # None: always_ready
        self.log = logging.getLogger(f"cocotb.stream.{prefix}")
        self._pause = None
        self.count = 0

    def set_pause_generator(self, generator=None):
        """``generator`` yields one value per cycle; truthy means pause."""
        self._pause = iter(generator) if generator is not None else None

    def _paused(self):
        if self._pause is None:
            return False
        try:
            return bool(next(self._pause))
        except StopIteration:
            self._pause = None
            return False


class StreamSource(_Port):
    """Sends payloads (dicts or integers) into a DUT input stream, in order."""

    def __init__(self, dut, prefix, clock, shape):
        super().__init__(dut, prefix, clock, shape)
        self._queue = collections.deque()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def set_idle_generator(self, generator=None):
        self.set_pause_generator(generator)

    def send_nowait(self, payload, on_sent=None):
        self._queue.append((self.codec.encode(payload), on_sent))
        self._idle.clear()
        self._wake.set()

    def clear(self):
        """Drop payloads not yet sent (the one being presented is still sent)."""
        while len(self._queue) > 1:
            self._queue.pop()

    def empty(self):
        return not self._queue

    async def wait_idle(self):
        while self._queue or not self._idle.is_set():
            await self._idle.wait()

    async def _run(self):
        clock = self.clock
        while True:
            if not self._queue:
                self.valid.value = 0
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                # Woken by a Timer or an event, possibly in the time step of a clock edge but
                # before it: drive only from just after an edge, so that the edge awaited below
                # is the one that samples the beat.
                await RisingEdge(clock)
                continue
            if self._paused():
                self.valid.value = 0
                await RisingEdge(clock)
                continue
            raw, on_sent = self._queue[0]
            self.payload.value = raw
            self.valid.value = 1
            await RisingEdge(clock)
            if self.ready is None or self.ready.value:
                self._queue.popleft()
                self.count += 1
                if on_sent is not None:
                    on_sent(raw)
                if not self._queue:
                    self.valid.value = 0


class StreamSink(_Port):
    """Receives payloads from a DUT output stream.

    Each payload (a dict, or an int for plain shapes) goes to ``callback(payload)`` if one is
    given, else to a queue read with :meth:`recv`.
    """

    def __init__(self, dut, prefix, clock, shape, *, callback=None):
        super().__init__(dut, prefix, clock, shape)
        self.callback = callback
        self.queue = collections.deque()
        self._event = Event()
        self._enabled = True
        if self.ready is not None:
            self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    def set_backpressure_generator(self, generator=None):
        self.set_pause_generator(generator)

    def pause(self, paused=True):
        """Hold ``ready`` low until :meth:`pause` is called with False."""
        self._enabled = not paused

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
        clock, valid, ready, payload = self.clock, self.valid, self.ready, self.payload
        ready_now = 0
        while True:
            if not valid.value:
                await RisingEdge(valid)
            want = self._enabled and not self._paused()
            if ready is not None and want != ready_now:
                ready_now = int(want)
                ready.value = ready_now
            await RisingEdge(clock)
            if (ready is None or ready_now) and valid.value:
                item = self.codec.decode(int(payload.value))
                self.count += 1
                if self.callback is not None:
                    self.callback(item)
                else:
                    self.queue.append(item)
                    self._event.set()
