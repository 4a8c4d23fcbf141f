# SPDX-License-Identifier: BSD-2-Clause
"""Fakes for the blocks around the virtio transport, for testing it on its own.

::

                 common/isr/device/notify/legacy          queues ┌──────────────────┐
    RegisterBus ──────────────────────► VirtioTransport ◄──────► │ FakeQueueEngine  │
    Initiators                               │  │  │              └──────────────────┘
                            device_config ◄──┘  │  └──► msix       MsixMonitor
                          FakeDeviceBackend     └─────► intx       (sampled by the engine)
                                                ◄────── function_config  FunctionConfigDriver

* :class:`FakeQueueEngine` plays the virtqueue engine's side of ``QueueControlSignature``:
  records every ``QueueConfig``, doorbell and queue reset (with the cycle it happened), answers
  queue resets after a latency, drops ``idle`` for a while when ``reset`` rises (DMA draining),
  raises used-buffer ``irq`` s and ``needs_reset``.
* :class:`FakeDeviceBackend` is the device's configuration register file (a
  :class:`~.register_bus.RegisterFileTarget`) plus ``changed`` and ``idle``.
* :class:`MsixMonitor` accepts MSI-X requests (optionally with back-pressure) and records them.
* :class:`FunctionConfigDriver` drives the ``function_config`` structure by field name.

Times are in clock cycles since the start of the simulation (:func:`cycles`).
"""

import collections

import cocotb
from cocotb.triggers import Event, RisingEdge
from cocotb.utils import get_sim_time

from virtio_pcie.function.interface import FunctionConfig
from virtio_pcie.virtio.interface import Doorbell, QueueConfig

from .register_bus import RegisterFileTarget

__all__ = ["cycles", "FakeQueueEngine", "FakeDeviceBackend", "MsixMonitor",
           "FunctionConfigDriver", "CLOCK_NS"]

CLOCK_NS = 4


def cycles():
    """The current simulation time in clock cycles."""
    return int(get_sim_time("ns")) // CLOCK_NS


def _const_dict(layout, raw):
    """A layout's fields (plain integers) from its bits."""
    value = layout.from_bits(raw)
    return {name: int(getattr(value, name)) for name, _ in layout}


def _pause(generator):
    if generator is None:
        return False
    try:
        return bool(next(generator))
    except StopIteration:
        return False


class FakeQueueEngine:
    """The virtqueue engine's side of the transport's ``queues`` port (see module docstring).

    Parameters
    ----------
    drain_cycles : int
        How long ``idle`` stays low after ``reset`` rises.
    queue_reset_latency : int
        Cycles from accepting a ``queue_reset`` to answering ``queue_reset_done``.
    """

    def __init__(self, dut, clock, queue_count, *, prefix="queues", drain_cycles=20,
                 queue_reset_latency=10):
        self.clock = clock
        self.layout = QueueConfig(queue_count)
        self.doorbell = Doorbell(queue_count)
        self.drain_cycles = drain_cycles
        self.queue_reset_latency = queue_reset_latency
        self.stuck = False               # never report idle (a wedged engine)
        self.config_backpressure = None
        s = lambda name: getattr(dut, f"{prefix}__{name}")
        self.config_valid, self.config_payload, self.config_ready = \
            s("config__valid"), s("config__payload"), s("config__ready")
        self.notify_valid, self.notify_payload = s("notify__valid"), s("notify__payload")
        self.qreset_valid, self.qreset_payload, self.qreset_ready = \
            s("queue_reset__valid"), s("queue_reset__payload"), s("queue_reset__ready")
        self.done_valid, self.done_payload = \
            s("queue_reset_done__valid"), s("queue_reset_done__payload")
        self.irq_valid, self.irq_payload, self.irq_ready = \
            s("irq__valid"), s("irq__payload"), s("irq__ready")
        self.reset, self.driver_ok = s("reset"), s("driver_ok")
        self.event_idx, self.indirect_desc = s("event_idx"), s("indirect_desc")
        self.needs_reset, self.idle = s("needs_reset"), s("idle")
        self.intx = dut.intx

        self.configs = []          # (cycle, {QueueConfig fields})
        self.notifies = []         # (cycle, queue)
        self.notify_idx = []       # (cycle, queue, avail index or None): NOTIFICATION_DATA
        self.queue_resets = []     # (cycle, queue)
        self.irqs_accepted = []    # (cycle, queue)
        self.reset_rises = []      # cycle
        self.reset_falls = []
        self.intx_changes = []     # (cycle, level)
        self._irqs = collections.deque()
        self._done_due = []        # (cycle, queue)
        self._needs_reset = False
        self._drain_left = 0
        self._last_reset = 0
        self._last_intx = 0
        self.event = Event()       # set on anything recorded

        self.config_ready.value = 1
        self.qreset_ready.value = 1
        self.done_valid.value = 0
        self.irq_valid.value = 0
        self.needs_reset.value = 0
        self.idle.value = 1
        self._task = cocotb.start_soon(self._run())

    def raise_irq(self, queue):
        """Send a used-buffer notification request for ``queue``."""
        self._irqs.append(queue)

    def pulse_needs_reset(self):
        self._needs_reset = True

    def clear(self):
        for log in (self.configs, self.notifies, self.notify_idx, self.queue_resets,
                    self.irqs_accepted):
            log.clear()

    async def _run(self):
        while True:
            await RisingEdge(self.clock)
            now = cycles()
            recorded = False
            # Sample what happened at this edge ---
            if self.config_valid.value and self.config_ready.value:
                self.configs.append((now, _const_dict(self.layout,
                                                      int(self.config_payload.value))))
                recorded = True
            if self.notify_valid.value:
                bell = _const_dict(self.doorbell, int(self.notify_payload.value))
                self.notifies.append((now, bell["queue"]))
                self.notify_idx.append((now, bell["queue"],
                                        bell["idx"] if bell["has_idx"] else None))
                recorded = True
            if self.qreset_valid.value and self.qreset_ready.value:
                queue = int(self.qreset_payload.value)
                self.queue_resets.append((now, queue))
                self._done_due.append((now + self.queue_reset_latency, queue))
                recorded = True
            if self.irq_valid.value and self.irq_ready.value:
                self.irqs_accepted.append((now, self._irqs.popleft()))
                recorded = True
            reset = int(self.reset.value)
            if reset and not self._last_reset:
                self.reset_rises.append(now)
                self._drain_left = self.drain_cycles
                self._irqs.clear()
                self._done_due.clear()
            elif not reset and self._last_reset:
                self.reset_falls.append(now)
            self._last_reset = reset
            intx = int(self.intx.value)
            if intx != self._last_intx:
                self.intx_changes.append((now, intx))
                self._last_intx = intx
            if recorded:
                self.event.set()
            # Drive the next cycle ---
            self.config_ready.value = 0 if _pause(self.config_backpressure) else 1
            if self._done_due and self._done_due[0][0] <= now:
                _, queue = self._done_due.pop(0)
                self.done_valid.value = 1
                self.done_payload.value = queue
            else:
                self.done_valid.value = 0
            if self._irqs:
                self.irq_valid.value = 1
                self.irq_payload.value = self._irqs[0]
            else:
                self.irq_valid.value = 0
            self.needs_reset.value = int(self._needs_reset)
            self._needs_reset = False
            if self._drain_left:
                self._drain_left -= 1
            self.idle.value = int(not self.stuck and not self._drain_left)

    async def wait_for(self, predicate, cycles_max=10_000):
        """Wait until ``predicate()`` holds (checked after every recorded event and cycle)."""
        for _ in range(cycles_max):
            if predicate():
                return
            await RisingEdge(self.clock)
        raise AssertionError(f"condition not met within {cycles_max} cycles")


class FakeDeviceBackend:
    """The device back-end's configuration register file and state (``device_config`` port)."""

    def __init__(self, dut, clock, *, size, prefix="device_config", latency=1, writable=()):
        self.clock = clock
        self.regs = RegisterFileTarget(dut, f"{prefix}__bus", clock, size=size,
                                       latency=latency, writable=writable)
        self.changed = getattr(dut, f"{prefix}__changed")
        self.idle = getattr(dut, f"{prefix}__idle")
        self.reset = getattr(dut, f"{prefix}__reset")
        self.driver_ok = getattr(dut, f"{prefix}__driver_ok")
        self.features = getattr(dut, f"{prefix}__features")
        self.changed.value = 0
        self.idle.value = 1

    @property
    def memory(self):
        return self.regs.memory

    async def change(self, offset, data, *, announce=True):
        """Change configuration bytes (from the next clock edge on) and strobe ``changed``."""
        await RisingEdge(self.clock)
        self.regs.memory[offset:offset + len(data)] = data
        if announce:
            self.changed.value = 1
            await RisingEdge(self.clock)
            self.changed.value = 0


class MsixMonitor:
    """Accepts and records the transport's MSI-X requests: ``(cycle, vector)``."""

    def __init__(self, dut, clock, *, prefix="msix"):
        self.clock = clock
        self.valid = getattr(dut, f"{prefix}__valid")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.backpressure = None
        self.requests = []
        self.ready.value = 1
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.clock)
            if self.valid.value and self.ready.value:
                self.requests.append((cycles(), int(self.payload.value)))
            self.ready.value = 0 if _pause(self.backpressure) else 1

    @property
    def vectors(self):
        return [vector for _, vector in self.requests]


class FunctionConfigDriver:
    """Drives the ``function_config`` input (:data:`FunctionConfig`) by field name."""

    def __init__(self, dut, *, name="function_config", **fields):
        self.signal = getattr(dut, name)
        self.fields = {}
        self.set(**fields)

    def set(self, **fields):
        self.fields.update(fields)
        self.signal.value = FunctionConfig.const(self.fields).as_value().value
