# SPDX-License-Identifier: BSD-2-Clause
"""Stand-ins for what surrounds a device back-end: the virtqueue engine's request and completion
ports, and the transport's side of :class:`~virtio_pcie.virtio.interface.DeviceConfigSignature`.

::

    VirtqEngineStub ── <port>__segment ──► device    chains, one beat per buffer
                    ◄─ <port>__fetch ────            pulled ports: "give me a chain of queue q"
                    ◄─ <completion>__used__* ──      used entries (batches)
    DeviceConfigStub ── config__bus__* / reset / driver_ok / features ──► device
                     ◄─ config__changed / idle

The engine stub holds, per pulled queue, the chains the driver made available, and answers each
fetch with the next one (or an ``empty`` beat), after ``fetch_latency`` cycles, in fetch order.
It checks what a real engine would rely on: completions name outstanding heads, a batch stays on
one queue. It never touches the rings in host memory (there are none): a device test drives the
device's contract directly, as the virtqueue engine would.
"""

import collections
import dataclasses

import cocotb
from cocotb.triggers import Event, RisingEdge, Timer

from virtio_pcie.virtio.interface import VirtqSegment, VirtqUsed, queue_index_width

from .stream import StreamSink, StreamSource

__all__ = ["Buffer", "Chain", "VirtqEngineStub", "RegisterBusInitiator", "DeviceConfigStub"]


@dataclasses.dataclass
class Buffer:
    addr: int
    length: int
    write: bool = False


@dataclasses.dataclass
class Chain:
    head: int
    buffers: list
    tag: object = None          # anything the test wants back with the completion

    @property
    def readable(self):
        return [b for b in self.buffers if not b.write]

    @property
    def writable(self):
        return [b for b in self.buffers if b.write]


@dataclasses.dataclass
class Used:
    queue: int
    head: int
    length: int
    batch_end: bool
    chain: Chain
    time_ns: float


class VirtqEngineStub:
    """The virtqueue engine's device-side ports, for a device under test.

    Parameters
    ----------
    pushed : list of str
        Request ports whose chains the engine pushes (``<port>__segment``).
    pulled : list of str
        Request ports the device pulls from (``<port>__fetch``).
    completion : str
        The completion port's prefix.
    fetch_latency : int
        Cycles from a fetch to its answer.
    """

    def __init__(self, dut, clock, *, queue_count, pushed=(), pulled=(), completion="completion",
                 fetch_latency=1, period_ns=4):
        self.dut = dut
        self.clock = clock
        self.queue_count = queue_count
        self.fetch_latency = fetch_latency
        self.period_ns = period_ns
        layout = VirtqSegment(queue_count)
        self.ports = {}
        for name in list(pushed) + list(pulled):
            self.ports[name] = StreamSource(dut, f"{name}__segment", clock, layout)
        self.fetch_sinks = {}
        for name in pulled:
            self.fetch_sinks[name] = StreamSink(dut, f"{name}__fetch", clock,
                                                queue_index_width(queue_count),
                                                callback=self._fetch_handler(name))
        self.used_sink = StreamSink(dut, f"{completion}__used", clock, VirtqUsed(queue_count),
                                    callback=self._on_used)
        self.available = collections.defaultdict(collections.deque)   # pulled queue -> chains
        self.outstanding = {}             # (queue, head) -> Chain
        self.used = []                    # Used entries, in order
        self.batches = []                 # lists of Used, one per batch
        self.errors = []
        self.fetches = collections.Counter()
        self.empty_answers = collections.Counter()
        self._batch = []
        self._used_event = Event()
        self._next_head = collections.Counter()

    # -- giving chains to the device -----------------------------------------------------------

    def new_head(self, queue):
        head = self._next_head[queue]
        self._next_head[queue] = (head + 1) % 0x10000
        return head

    def _beats(self, queue, chain):
        buffers = [b for b in chain.buffers if b.length]     # the engine skips empty buffers
        beats = []
        for i, b in enumerate(buffers):
            beats.append({"queue": queue, "head": chain.head, "addr": b.addr, "len": b.length,
                          "write": int(b.write), "first": int(i == 0),
                          "last": int(i == len(buffers) - 1), "empty": 0})
        return beats

    def push(self, port, queue, chain):
        """Send a chain of a pushed queue now."""
        self.outstanding[(queue, chain.head)] = chain
        for beat in self._beats(queue, chain):
            self.ports[port].send_nowait(beat)

    def post(self, queue, chain):
        """Make a chain available on a pulled queue."""
        self.outstanding[(queue, chain.head)] = chain
        self.available[queue].append(chain)

    def withdraw(self, queue):
        """Forget the chains of a pulled queue not fetched yet (a device reset)."""
        for chain in self.available.pop(queue, ()):
            self.outstanding.pop((queue, chain.head), None)

    def _fetch_handler(self, port):
        def on_fetch(queue):
            self.fetches[queue] += 1
            cocotb.start_soon(self._answer(port, queue))
        return on_fetch

    async def _answer(self, port, queue):
        if self.fetch_latency > 1:
            await Timer((self.fetch_latency - 1) * self.period_ns, "ns")
        chains = self.available.get(queue)
        if chains:
            for beat in self._beats(queue, chains.popleft()):
                self.ports[port].send_nowait(beat)
        else:
            self.empty_answers[queue] += 1
            self.ports[port].send_nowait({"queue": queue, "head": 0, "addr": 0, "len": 0,
                                          "write": 0, "first": 1, "last": 1, "empty": 1})

    # -- what comes back ------------------------------------------------------------------------

    def _on_used(self, entry):
        from cocotb.utils import get_sim_time
        key = (entry["queue"], entry["head"])
        chain = self.outstanding.pop(key, None)
        if chain is None:
            self.errors.append(f"completion of queue {key[0]} head {key[1]}, not outstanding")
        used = Used(entry["queue"], entry["head"], entry["len"], bool(entry["batch_end"]), chain,
                    get_sim_time("ns"))
        if self._batch and self._batch[0].queue != used.queue:
            self.errors.append(f"batch mixes queues {self._batch[0].queue} and {used.queue}")
        self.used.append(used)
        self._batch.append(used)
        if used.batch_end:
            self.batches.append(self._batch)
            self._batch = []
        self._used_event.set()

    async def wait_used(self, count, timeout_cycles=200000):
        """Wait until at least ``count`` used entries have come back in all."""
        waited = 0
        while len(self.used) < count:
            self._used_event.clear()
            await cocotb.triggers.First(self._used_event.wait(),
                                        Timer(1000 * self.period_ns, "ns"))
            waited += 1000
            if waited > timeout_cycles:
                raise AssertionError(f"only {len(self.used)} of {count} used entries came back")


class RegisterBusInitiator:
    """Accesses a :class:`~virtio_pcie.function.register_bus.RegisterBusSignature` target."""

    def __init__(self, dut, prefix, clock):
        sig = lambda name: getattr(dut, f"{prefix}__{name}")
        self.clock = clock
        self.addr, self.sel, self.we = sig("addr"), sig("sel"), sig("we")
        self.w_data, self.stb = sig("w_data"), sig("stb")
        self.r_data, self.ack = sig("r_data"), sig("ack")
        self.stb.value = 0
        self._lock = cocotb.triggers.Lock()

    async def _access(self, addr, we, data=0, sel=0xF):
        async with self._lock:
            self.addr.value = addr
            self.sel.value = sel
            self.we.value = we
            self.w_data.value = data
            self.stb.value = 1
            for _ in range(64):
                await RisingEdge(self.clock)
                if self.ack.value:
                    value = int(self.r_data.value)
                    self.stb.value = 0
                    await RisingEdge(self.clock)
                    return value
            raise AssertionError(f"register access at {addr:#x} was never acknowledged")

    async def read(self, addr, sel=0xF):
        return await self._access(addr, 0, sel=sel)

    async def write(self, addr, data, sel=0xF):
        await self._access(addr, 1, data, sel)

    async def read_bytes(self, offset, length):
        """Bytes of the window from ``offset``, read a dword at a time."""
        out = bytearray()
        for addr in range(offset & ~3, offset + length, 4):
            out += (await self.read(addr)).to_bytes(4, "little")
        start = offset & 3
        return bytes(out[start:start + length])


class DeviceConfigStub:
    """The transport's side of a device's ``config`` port (``DeviceConfigSignature``)."""

    def __init__(self, dut, clock, prefix="config"):
        sig = lambda name: getattr(dut, f"{prefix}__{name}")
        self.bus = RegisterBusInitiator(dut, f"{prefix}__bus", clock)
        self.clock = clock
        self._reset, self._driver_ok, self._features = \
            sig("reset"), sig("driver_ok"), sig("features")
        self._changed, self._idle = sig("changed"), sig("idle")
        self._reset.value = 0
        self._driver_ok.value = 0
        self._features.value = 0
        self.changes = 0
        cocotb.start_soon(self._count_changes())

    async def _count_changes(self):
        while True:
            await RisingEdge(self.clock)
            if self._changed.value:
                self.changes += 1

    def set_features(self, features):
        self._features.value = features

    def set_driver_ok(self, ok=True):
        self._driver_ok.value = int(ok)

    def set_reset(self, active):
        self._reset.value = int(active)

    @property
    def idle(self):
        return bool(self._idle.value)

    async def device_reset(self, timeout_cycles=100000):
        """Status 0: reset until idle (as the transport does before showing status 0)."""
        self._driver_ok.value = 0
        self._reset.value = 1
        for _ in range(timeout_cycles):
            await RisingEdge(self.clock)
            if self._idle.value:
                break
        else:
            raise AssertionError("the device never became idle during reset")
        cycles = _
        for _ in range(4):
            await RisingEdge(self.clock)
        self._reset.value = 0
        await RisingEdge(self.clock)
        return cycles
