# SPDX-License-Identifier: BSD-2-Clause
"""Drivers for the virtqueue engine's non-DMA ports: the transport side (``control``,
``restore``, ``counters``, ``error``) and the device side (``request[p]``, ``completion``).

::

    VirtqTransport ── control.config/notify/queue_reset, restore ──► engine
                   ◄─ control.irq, queue_reset_done, needs_reset, idle
    VirtqDevicePorts ◄─ request[p].segment            (chains, one beat per buffer)
                     ── request[p].fetch ──►            (pulled ports)
                     ── completion.used ──►             (used entries)

Tests and benchmarks use these and never touch DUT signals themselves.
"""

import collections
import dataclasses

import cocotb
from cocotb.triggers import Event, RisingEdge, SimTimeoutError, with_timeout

from virtio_pcie.virtio.engine_signatures import (QueueRestore, VirtqCounters, VirtqErrorCode,
                                                  VirtqErrorReport)
from virtio_pcie.virtio.interface import (Doorbell, QueueConfig, VirtqSegment, VirtqUsed,
                                          queue_index_width)
from virtio_pcie.virtio.virtqueue import DEFAULT_IRQ_LOW_WATER

from .bitfields import BitFields
from .stream import StreamSink, StreamSource

__all__ = ["VirtqTransport", "VirtqDevicePorts", "Chain", "Segment"]


class VirtqTransport:
    """The transport's side of ``control``: queue configuration, doorbells, resets, and the
    interrupt requests and errors coming back."""

    def __init__(self, dut, clock, *, queue_count, prefix="control"):
        self.dut = dut
        self.clock = clock
        self.queue_count = queue_count
        qw = queue_index_width(queue_count)
        p = prefix
        self.config = StreamSource(dut, f"{p}__config", clock, QueueConfig(queue_count))
        self.notify_src = StreamSource(dut, f"{p}__notify", clock, Doorbell(queue_count))
        self.queue_reset_src = StreamSource(dut, f"{p}__queue_reset", clock, qw)
        self.restore_src = StreamSource(dut, "restore", clock, QueueRestore(queue_count))
        self.irqs = []                  # (time ns, queue)
        self.irq_callbacks = []
        self.irq_sink = StreamSink(dut, f"{p}__irq", clock, qw, callback=self._on_irq)
        self.reset_done = []
        self._reset_done_event = Event()
        self.reset_done_sink = StreamSink(dut, f"{p}__queue_reset_done", clock, qw,
                                          callback=self._on_reset_done)
        self._reset = getattr(dut, f"{p}__reset")
        self._driver_ok = getattr(dut, f"{p}__driver_ok")
        self._event_idx = getattr(dut, f"{p}__event_idx")
        self._indirect = getattr(dut, f"{p}__indirect_desc")
        self._needs_reset = getattr(dut, f"{p}__needs_reset")
        self._idle = getattr(dut, f"{p}__idle")
        self._counters = dut.counters
        self._error = dut.error
        self._counter_codec = BitFields(VirtqCounters)
        self._error_codec = BitFields(VirtqErrorReport(queue_count))
        self.needs_reset_events = 0
        self._holdoff = dut.irq_holdoff
        self._holdoff.value = 0            # tests check each notification decision exactly
        self._low_water = dut.irq_low_water
        self._low_water.value = DEFAULT_IRQ_LOW_WATER
        self._reset.value = 0
        self._driver_ok.value = 0
        self._event_idx.value = 0
        self._indirect.value = 0
        cocotb.start_soon(self._watch_needs_reset())

    def _on_irq(self, queue):
        from cocotb.utils import get_sim_time
        self.irqs.append((get_sim_time("ns"), queue))
        for cb in list(self.irq_callbacks):
            cb(queue)

    def _on_reset_done(self, queue):
        self.reset_done.append(queue)
        self._reset_done_event.set()

    async def _watch_needs_reset(self):
        while True:
            await RisingEdge(self._needs_reset)
            self.needs_reset_events += 1

    # -- levels --------------------------------------------------------------------------------
    def set_features(self, *, event_idx, indirect_desc):
        self._event_idx.value = int(bool(event_idx))
        self._indirect.value = int(bool(indirect_desc))

    def set_irq_holdoff(self, cycles, low_water=None):
        """Interrupt moderation of the engine (its ``irq_holdoff`` input, and its
        ``irq_low_water`` input unless None: left as it is)."""
        self._holdoff.value = cycles
        if low_water is not None:
            self._low_water.value = low_water

    def set_driver_ok(self, value=True):
        self._driver_ok.value = int(bool(value))

    @property
    def idle(self):
        return bool(self._idle.value)

    async def device_reset(self, max_cycles=100000):
        """Raise ``reset``, wait for ``idle``, lower it (what the transport does on a write
        of 0 to device_status)."""
        self._driver_ok.value = 0
        self._reset.value = 1
        await RisingEdge(self.clock)
        for _ in range(max_cycles):
            await RisingEdge(self.clock)
            if self._idle.value:
                break
        else:
            raise TimeoutError("engine not idle after reset")
        self._reset.value = 0
        await RisingEdge(self.clock)

    # -- streams -------------------------------------------------------------------------------
    def enable_queue(self, queue, *, size, desc, driver, device, enable=True):
        self.config.send_nowait({"queue": queue, "size": size, "desc": desc, "driver": driver,
                                 "device": device, "enable": int(enable)})

    def notify(self, queue, idx=None):
        """A doorbell; ``idx``: the avail index it carries (VIRTIO_F_NOTIFICATION_DATA)."""
        self.notify_src.send_nowait({"queue": queue, "idx": idx or 0,
                                     "has_idx": int(idx is not None)})

    def restore(self, queue, *, avail_idx, used_idx):
        self.restore_src.send_nowait({"queue": queue, "avail_idx": avail_idx,
                                      "used_idx": used_idx})

    async def queue_reset(self, queue, max_cycles=100000):
        before = len(self.reset_done)
        self.queue_reset_src.send_nowait(queue)
        for _ in range(max_cycles):
            if len(self.reset_done) > before:
                assert self.reset_done[before] == queue
                return
            self._reset_done_event.clear()
            await self._reset_done_event.wait()
        raise TimeoutError(f"no queue_reset_done for queue {queue}")

    async def settle(self):
        """Wait until the configuration streams were consumed."""
        for src in (self.config, self.restore_src, self.queue_reset_src, self.notify_src):
            await src.wait_idle()

    # -- observation ---------------------------------------------------------------------------
    def counters(self):
        return self._counter_codec.decode(int(self._counters.value))

    def last_error(self):
        e = self._error_codec.decode(int(self._error.value))
        return VirtqErrorCode(e["code"]), e["queue"]


@dataclasses.dataclass
class Segment:
    addr: int
    len: int
    write: bool


@dataclasses.dataclass
class Chain:
    port: int
    queue: int
    head: int
    segments: list
    time_ns: float
    empty: bool = False
    epoch: int = 0          # the queue's epoch when the engine walked the chain

    @property
    def readable(self):
        return [s for s in self.segments if not s.write]

    @property
    def writable(self):
        return [s for s in self.segments if s.write]

    def key(self):
        """Comparable form: (queue, head, ((addr, len, write), ...))."""
        return (self.queue, self.head, tuple((s.addr, s.len, s.write) for s in self.segments))


class VirtqDevicePorts:
    """The device's side: collects each port's chains, sends fetches and completions.

    A chain is delivered to ``on_chain(chain)`` if set, else appended to ``chains[port]``.
    Protocol errors seen on the segment streams (a beat without ``first`` outside a chain, a
    chain mixing queues or heads, readable after writable) are recorded in :attr:`errors`.
    """

    def __init__(self, dut, clock, *, queue_count, ports, pulled_ports=()):
        self.dut = dut
        self.clock = clock
        self.queue_count = queue_count
        self.ports = ports
        self.pulled = set(pulled_ports)
        self.chains = [[] for _ in range(ports)]
        self.answers = [collections.deque() for _ in range(ports)]
        self._answer_event = [Event() for _ in range(ports)]
        self.errors = []
        self.on_chain = None
        self._partial = [None] * ports
        self.epochs = {}                # queue -> epoch of the last chain seen
        self.sinks = []
        self.fetch_src = {}
        qw = queue_index_width(queue_count)
        for p in range(ports):
            self.sinks.append(StreamSink(dut, f"request__{p}__segment", clock,
                                         VirtqSegment(queue_count),
                                         callback=lambda beat, p=p: self._on_beat(p, beat)))
            if p in self.pulled:
                self.fetch_src[p] = StreamSource(dut, f"request__{p}__fetch", clock, qw)
        self.completion = StreamSource(dut, "completion__used", clock, VirtqUsed(queue_count))

    def set_backpressure(self, port, generator):
        self.sinks[port].set_backpressure_generator(generator)

    def _on_beat(self, port, beat):
        from cocotb.utils import get_sim_time
        now = get_sim_time("ns")
        partial = self._partial[port]
        if beat["first"]:
            if partial is not None:
                self.errors.append(f"port {port}: chain {partial.head} had no last beat")
            partial = Chain(port, beat["queue"], beat["head"], [], now, bool(beat["empty"]),
                            beat["epoch"])
            if not beat["empty"]:
                self.epochs[beat["queue"]] = beat["epoch"]
        elif partial is None:
            self.errors.append(f"port {port}: beat without first outside a chain: {beat}")
            return
        elif beat["queue"] != partial.queue or beat["head"] != partial.head:
            self.errors.append(f"port {port}: beat of {beat['queue']}/{beat['head']} inside "
                               f"chain {partial.queue}/{partial.head}")
        if not beat["empty"] and (beat["len"] or beat["first"] and beat["last"]):
            if partial.segments and partial.segments[-1].write and not beat["write"]:
                self.errors.append(f"port {port}: readable after writable in {partial.head}")
            if beat["len"]:
                partial.segments.append(Segment(beat["addr"], beat["len"], bool(beat["write"])))
        if beat["last"]:
            self._partial[port] = None
            if port in self.pulled:
                self.answers[port].append(partial)
                self._answer_event[port].set()
            if self.on_chain is not None:
                self.on_chain(partial)
            else:
                self.chains[port].append(partial)
        else:
            self._partial[port] = partial

    async def fetch(self, port, queue, timeout_ns=200_000):
        """Ask a pulled port for a chain of ``queue``; returns the :class:`Chain` (``empty``
        set if there was none). Raises TimeoutError if no answer comes."""
        self.fetch_src[port].send_nowait(queue)
        while not self.answers[port]:
            self._answer_event[port].clear()
            try:
                await with_timeout(self._answer_event[port].wait(), timeout_ns, "ns")
            except SimTimeoutError:
                raise TimeoutError(f"no answer to a fetch of queue {queue} on port {port}") \
                    from None
        return self.answers[port].popleft()

    def complete(self, queue, head, length, batch_end=True, epoch=None, on_sent=None):
        """Send a used entry; ``epoch`` defaults to that of the queue's last chain seen (pass
        a chain's own :attr:`Chain.epoch` to complete a chain walked before a queue reset).
        ``on_sent()`` is called when the engine has taken it."""
        if epoch is None:
            epoch = self.epochs.get(queue, 0)
        self.completion.send_nowait({"queue": queue, "head": head, "len": length,
                                     "batch_end": int(batch_end), "epoch": epoch},
                                    on_sent=on_sent)

    async def wait_completions_sent(self):
        await self.completion.wait_idle()
