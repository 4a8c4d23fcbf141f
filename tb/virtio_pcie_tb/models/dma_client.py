# SPDX-License-Identifier: BSD-2-Clause
"""Drivers for a DMA client port of :class:`~virtio_pcie_tb.designs.dma_testbench.DmaTestbench`.

A client (``client__<k>__*`` ports) has two request streams, two always-ready status outputs and
two buffer test ports. :class:`DmaClient` turns them into coroutines a test awaits::

    status = await client.read(host_addr, ram_addr, length)      # -> DmaError
    data   = await client.read_buffer(ram_addr, length)           # bytes the engine wrote
    await client.write_buffer(ram_addr, data)                      # preload the write buffer
    status = await client.write(host_addr, ram_addr, length)

and :meth:`DmaClient.submit_read` / :meth:`DmaClient.submit_write` queue requests without
waiting, returning a :class:`Transfer` whose ``done`` event fires with the status. Each request
gets a client tag no other outstanding request of the same kind has; statuses are matched by tag.
Like the TLP stream drivers, these sleep when idle instead of waking on every clock edge.

This module, :mod:`.tlp_stream` and :mod:`.pcie_bridge` are the only ones touching DUT signals.
"""

import collections
import logging

import cocotb
from cocotb.triggers import Event, RisingEdge, ValueChange
from cocotb.utils import get_sim_time

from virtio_pcie.dma.interface import DmaError, DmaReadRequest, DmaStatus, DmaWriteRequest

__all__ = ["LayoutCodec", "RequestSource", "StatusMonitor", "BufferPorts", "Transfer",
           "DmaClient", "DmaSideband"]


class LayoutCodec:
    """Packs and unpacks plain dicts of ints for a flat :class:`amaranth.lib.data.StructLayout`."""

    def __init__(self, layout):
        self.fields = [(name, field.offset, field.width) for name, field in layout]

    def pack(self, values):
        word = 0
        for name, offset, width in self.fields:
            word |= (int(values.get(name, 0)) & ((1 << width) - 1)) << offset
        return word

    def unpack(self, word):
        return {name: (word >> offset) & ((1 << width) - 1) for name, offset, width in self.fields}


def _sig(dut, prefix, name):
    return getattr(dut, f"{prefix}__{name}")


class RequestSource:
    """Drives a ``<prefix>__payload/valid/ready`` stream with one packed word per item."""

    def __init__(self, dut, prefix, clock, reset=None):
        self.clock = clock
        self.reset = reset
        self.payload = _sig(dut, prefix, "payload")
        self.valid = _sig(dut, prefix, "valid")
        self.ready = _sig(dut, prefix, "ready")
        self.valid.value = 0
        self._queue = collections.deque()
        self._wake = Event()
        self._pause = None
        self.sent = 0
        cocotb.start_soon(self._run())

    def set_idle_generator(self, generator=None):
        """``generator`` yields one value per cycle; truthy means "do not offer this cycle"."""
        self._pause = iter(generator) if generator is not None else None

    def send_nowait(self, word, on_sent=None):
        self._queue.append((word, on_sent))
        self._wake.set()

    def _paused(self):
        if self._pause is None:
            return False
        try:
            return bool(next(self._pause))
        except StopIteration:
            self._pause = None
            return False

    async def _run(self):
        while True:
            if not self._queue:
                self.valid.value = 0
                self._wake.clear()
                await self._wake.wait()
                continue
            word, on_sent = self._queue[0]
            if self._paused():
                self.valid.value = 0
                await RisingEdge(self.clock)
                continue
            self.payload.value = word
            self.valid.value = 1
            await RisingEdge(self.clock)
            if self.reset is not None and self.reset.value:
                continue
            if self.ready.value:
                self._queue.popleft()
                self.sent += 1
                if on_sent is not None:
                    on_sent()
                if not self._queue:
                    self.valid.value = 0


class StatusMonitor:
    """Samples an always-ready ``<prefix>__payload/valid`` output; calls ``callback(word)``."""

    def __init__(self, dut, prefix, clock, callback):
        self.clock = clock
        self.payload = _sig(dut, prefix, "payload")
        self.valid = _sig(dut, prefix, "valid")
        self.callback = callback
        cocotb.start_soon(self._run())

    async def _run(self):
        valid = self.valid
        while True:
            if not valid.value:
                await RisingEdge(valid)
            await RisingEdge(self.clock)
            if valid.value:
                self.callback(int(self.payload.value))


class BufferPorts:
    """The test ports of a client's buffers: ``rdbuf`` reads the read buffer, ``wrbuf`` writes
    the write buffer. Both move one row (``data_width`` bits) per cycle and run concurrently
    with the engine; calls on one port are serialised."""

    def __init__(self, dut, prefix, clock, data_width, buffer_bytes):
        self.clock = clock
        self.row_bytes = data_width // 8
        self.size = buffer_bytes
        self.rd_addr = _sig(dut, f"{prefix}__rdbuf", "addr")
        self.rd_en = _sig(dut, f"{prefix}__rdbuf", "en")
        self.rd_data = _sig(dut, f"{prefix}__rdbuf", "data")
        self.wr_addr = _sig(dut, f"{prefix}__wrbuf", "addr")
        self.wr_en = _sig(dut, f"{prefix}__wrbuf", "en")
        self.wr_data = _sig(dut, f"{prefix}__wrbuf", "data")
        self.wr_be = _sig(dut, f"{prefix}__wrbuf", "be")
        self.rd_en.value = 0
        self.wr_en.value = 0
        self._rd_lock = cocotb.triggers.Lock()
        self._wr_lock = cocotb.triggers.Lock()

    def _rows(self, addr, length):
        rb = self.row_bytes
        first = addr // rb
        last = (addr + length - 1) // rb
        return first, last

    async def read(self, addr, length):
        """``length`` bytes of the read buffer from byte ``addr`` (wrapping at its size)."""
        if length <= 0:
            return b""
        rb = self.row_bytes
        nrows = self.size // rb
        first, last = self._rows(addr, length)
        async with self._rd_lock:
            chunks = []
            # The port is synchronous: the row addressed at one edge is readable after the next.
            for k in range(first, last + 2):
                if k <= last:
                    self.rd_addr.value = k % nrows
                    self.rd_en.value = 1
                else:
                    self.rd_en.value = 0
                await RisingEdge(self.clock)
                if k > first:
                    chunks.append(int(self.rd_data.value).to_bytes(rb, "little"))
            self.rd_en.value = 0
        data = b"".join(chunks)
        start = addr - first * rb
        return data[start:start + length]

    async def write(self, addr, data):
        """Write ``data`` to the write buffer from byte ``addr`` (wrapping at its size)."""
        data = bytes(data)
        if not data:
            return
        rb = self.row_bytes
        nrows = self.size // rb
        first, last = self._rows(addr, len(data))
        async with self._wr_lock:
            for k in range(first, last + 1):
                lo = max(addr, k * rb)
                hi = min(addr + len(data), (k + 1) * rb)
                word = int.from_bytes(data[lo - addr:hi - addr], "little") << (8 * (lo - k * rb))
                be = ((1 << (hi - lo)) - 1) << (lo - k * rb)
                self.wr_addr.value = k % nrows
                self.wr_data.value = word
                self.wr_be.value = be
                self.wr_en.value = 1
                await RisingEdge(self.clock)
            self.wr_en.value = 0


class Transfer:
    """One submitted request: its parameters, and its status once ``done`` is set."""

    __slots__ = ("kind", "tag", "host_addr", "ram_addr", "length", "status", "done",
                 "t_submit", "t_accept", "t_done", "imm")

    def __init__(self, kind, tag, host_addr, ram_addr, length, imm=None):
        self.kind = kind
        self.tag = tag
        self.host_addr = host_addr
        self.ram_addr = ram_addr
        self.length = length
        self.imm = imm
        self.status = None
        self.done = Event()
        self.t_submit = get_sim_time("ns")
        self.t_accept = None
        self.t_done = None

    async def wait(self):
        await self.done.wait()
        return self.status

    def __repr__(self):
        return (f"Transfer({self.kind} tag={self.tag} host=0x{self.host_addr:x} "
                f"ram=0x{self.ram_addr:x} len={self.length} status={self.status})")


class DmaClient:
    """Client ``index`` of a ``DmaTestbench``: requests, statuses and its two buffers."""

    def __init__(self, dut, index, clock, reset, *, data_width, buffer_bytes):
        prefix = f"client__{index}"
        self.index = index
        self.log = logging.getLogger(f"cocotb.dma.client{index}")
        self.rd_codec = LayoutCodec(DmaReadRequest)
        self.wr_codec = LayoutCodec(DmaWriteRequest)
        self.st_codec = LayoutCodec(DmaStatus)
        self.rd_req = RequestSource(dut, f"{prefix}__rd_req", clock, reset)
        self.wr_req = RequestSource(dut, f"{prefix}__wr_req", clock, reset)
        self.buffers = BufferPorts(dut, prefix, clock, data_width, buffer_bytes)
        self.buffer_bytes = buffer_bytes
        self._pending = {"rd": {}, "wr": {}}
        self._next_tag = {"rd": 0, "wr": 0}
        self._free = {"rd": Event(), "wr": Event()}
        self.submitted = {"rd": 0, "wr": 0}
        self.unmatched = []          # statuses for no outstanding request (an engine bug)
        self.wr_order = []           # write tags in the order their statuses came
        StatusMonitor(dut, f"{prefix}__rd_status", clock, lambda w: self._status("rd", w))
        StatusMonitor(dut, f"{prefix}__wr_status", clock, lambda w: self._status("wr", w))

    # -- requests --------------------------------------------------------------------------------
    async def _alloc_tag(self, kind):
        pending = self._pending[kind]
        while len(pending) >= 256:
            self._free[kind].clear()
            await self._free[kind].wait()
        tag = self._next_tag[kind]
        while tag in pending:
            tag = (tag + 1) & 0xFF
        self._next_tag[kind] = (tag + 1) & 0xFF
        return tag

    async def submit_read(self, host_addr, ram_addr, length):
        tag = await self._alloc_tag("rd")
        self.submitted["rd"] += 1
        t = Transfer("rd", tag, host_addr, ram_addr, length)
        self._pending["rd"][tag] = t
        word = self.rd_codec.pack({"host_addr": host_addr, "ram_addr": ram_addr,
                                   "len": length, "tag": tag})
        self.rd_req.send_nowait(word, on_sent=lambda: setattr(t, "t_accept",
                                                              get_sim_time("ns")))
        return t

    async def submit_write(self, host_addr, ram_addr, length, imm=None):
        """A write of ``length`` bytes from the write buffer, or of ``imm`` (an int) if given."""
        tag = await self._alloc_tag("wr")
        self.submitted["wr"] += 1
        t = Transfer("wr", tag, host_addr, ram_addr, length, imm=imm)
        self._pending["wr"][tag] = t
        word = self.wr_codec.pack({"host_addr": host_addr, "ram_addr": ram_addr, "len": length,
                                   "tag": tag, "imm_en": imm is not None,
                                   "imm_data": imm or 0})
        self.wr_req.send_nowait(word, on_sent=lambda: setattr(t, "t_accept",
                                                              get_sim_time("ns")))
        return t

    async def read(self, host_addr, ram_addr, length):
        return await (await self.submit_read(host_addr, ram_addr, length)).wait()

    async def write(self, host_addr, ram_addr, length, imm=None):
        return await (await self.submit_write(host_addr, ram_addr, length, imm)).wait()

    def _status(self, kind, word):
        st = self.st_codec.unpack(word)
        t = self._pending[kind].pop(st["tag"], None)
        if t is None:
            self.log.error("%s status for tag %d with no request outstanding", kind, st["tag"])
            self.unmatched.append((kind, st))
            return
        t.status = DmaError(st["error"])
        t.t_done = get_sim_time("ns")
        if kind == "wr":
            self.wr_order.append(t.tag)
        t.done.set()
        self._free[kind].set()

    @property
    def outstanding(self):
        return len(self._pending["rd"]) + len(self._pending["wr"])

    # -- buffers -----------------------------------------------------------------------------------
    async def read_buffer(self, ram_addr, length):
        return await self.buffers.read(ram_addr, length)

    async def write_buffer(self, ram_addr, data):
        await self.buffers.write(ram_addr, data)


class DmaSideband:
    """The engine's non-stream ports: ``cfg`` (driven), ``idle``, ``events``, ``stats``."""

    def __init__(self, dut):
        from virtio_pcie.dma.interface import DmaStatistics
        from virtio_pcie.function.interface import FunctionConfig, FunctionEvents
        self.dut = dut
        self._cfg = LayoutCodec(FunctionConfig)
        self._stats = LayoutCodec(DmaStatistics)
        self._events = LayoutCodec(FunctionEvents)

    def set_cfg(self, values):
        self.dut.cfg.value = self._cfg.pack(values)

    @property
    def idle(self):
        return bool(self.dut.idle.value)

    def stats(self):
        return self._stats.unpack(int(self.dut.stats.value))

    def events(self):
        return self._events.unpack(int(self.dut.events.value))

    async def watch_events(self, clock, sink):
        """Forever: add every event strobe seen at a clock edge to the dict ``sink``."""
        events = self.dut.events
        while True:
            if not events.value:
                await ValueChange(events)
            await RisingEdge(clock)
            for name, value in self._events.unpack(int(events.value)).items():
                sink[name] = sink.get(name, 0) + value
