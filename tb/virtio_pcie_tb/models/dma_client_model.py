# SPDX-License-Identifier: BSD-2-Clause
"""A DMA engine model serving one DMA client port (:class:`~virtio_pcie.dma.interface.
DmaClientSignature`) from a Python memory (:class:`~.dma_memory.DmaMemory`,
or anything with ``read(addr, n)`` and ``write(addr, data)``).

::

    DUT client ── <prefix>__rd_req ──► DmaClientModel ── memory
               ◄─ <prefix>__rd_ram ─── (read data into the client's buffer, beat by beat)
               ◄─ <prefix>__rd_status  (when every byte of a read landed, or on error)
               ── <prefix>__wr_req ──►
               ◄► <prefix>__wr_ram     (reads the client's write buffer: address, then data)
               ◄─ <prefix>__wr_status  (in issue order)

It behaves as the interface promises and no better: read data arrives after a random latency,
in chunks of ``chunk`` host bytes (a read completion boundary) whose order across all
outstanding reads is random when ``reorder`` is set; the status may come in the same cycle as
the last beat. Writes are taken in order, their data read from the write buffer (or ``imm_data``)
and applied to host memory when taken; their statuses come back in issue order after a random
latency. Host memory is read when a read request is taken and written when a write is, so a
read issued after a write's status sees the write (PCIe: a read does not pass a posted write).

``error_hook(kind, request)`` (kind "rd" or "wr", request a dict of the request's fields) may
return a :class:`~virtio_pcie.dma.interface.DmaError` to fail a request: a failed read writes
junk into its buffer range and reports the error; a failed write changes nothing in host memory.
Every request is recorded in :attr:`log` as a :class:`DmaAccess`.
"""

import collections
import dataclasses
import random

import cocotb
from cocotb.triggers import Event, RisingEdge, Timer
from cocotb.utils import get_sim_time

from virtio_pcie.dma.interface import DmaError, DmaReadRequest, DmaStatus, DmaWriteRequest

from .stream import StreamSink, StreamSource

__all__ = ["DmaAccess", "DmaClientModel"]


@dataclasses.dataclass
class DmaAccess:
    kind: str              # "rd" or "wr"
    host_addr: int
    length: int
    ram_addr: int
    tag: int
    data: bytes            # bytes read from / written to host memory (b"" on error)
    error: DmaError
    time_ns: float         # when the request was taken
    imm: bool = False
    done_ns: float = None  # when its status was sent

    @property
    def end(self):
        return self.host_addr + self.length


class _Read:
    def __init__(self, access, beats):
        self.access = access
        self.beats = beats          # [(ram beat address, data, byte enables)], in chunks
        self.left = len(beats)


def _latency(spec, rng):
    if isinstance(spec, (tuple, list)):
        return rng.randint(spec[0], spec[1])
    return int(spec)


class DmaClientModel:
    """Serves the DUT's DMA client port ``prefix`` (e.g. ``"dma"``).

    Parameters
    ----------
    read_latency, write_latency : int or (min, max)
        Cycles from taking a request to its first data beat (reads) or its status (writes).
    reorder : bool
        Deliver read chunks of different requests in random order.
    chunk : int
        Host bytes per read completion chunk (the read completion boundary).
    status_with_last_beat : bool or float
        Send a read's status in the same cycle as its last data beat (a probability if float).
    clock_period_ns : float
    """

    def __init__(self, dut, prefix, clock, *, data_width, memory, read_latency=(20, 60),
                 write_latency=(2, 10), reorder=True, chunk=64, status_with_last_beat=0.5,
                 seed=0, clock_period_ns=4, error_hook=None):
        self.dut = dut
        self.clock = clock
        self.memory = memory
        self.beat_bytes = data_width // 8
        self.read_latency = read_latency
        self.write_latency = write_latency
        self.reorder = reorder
        self.chunk = chunk
        self.status_with_last_beat = status_with_last_beat
        self.period = clock_period_ns
        self.rng = random.Random(seed)
        self.error_hook = error_hook
        self.bus_master = True
        self.log = []
        self.reads_in_flight = 0
        self.writes_in_flight = 0

        sig = lambda name: getattr(dut, f"{prefix}__{name}")
        self.rd_addr, self.rd_data = sig("rd_ram__addr"), sig("rd_ram__data")
        self.rd_be, self.rd_en = sig("rd_ram__be"), sig("rd_ram__en")
        self.wr_addr, self.wr_en, self.wr_data = (sig("wr_ram__addr"), sig("wr_ram__en"),
                                                   sig("wr_ram__data"))
        self.rd_en.value = 0
        self.wr_en.value = 0

        self.rd_status = StreamSource(dut, f"{prefix}__rd_status", clock, DmaStatus)
        self.wr_status = StreamSource(dut, f"{prefix}__wr_status", clock, DmaStatus)
        self.rd_req = StreamSink(dut, f"{prefix}__rd_req", clock, DmaReadRequest,
                                 callback=self._take_read)
        self.wr_req = StreamSink(dut, f"{prefix}__wr_req", clock, DmaWriteRequest,
                                 callback=self._take_write)

        self._landing = []               # reads whose data may be delivered
        self._landing_wake = Event()
        self._writes = collections.deque()
        self._write_wake = Event()
        self._wr_statuses = collections.deque()
        self._wr_status_wake = Event()
        cocotb.start_soon(self._deliver_reads())
        cocotb.start_soon(self._serve_writes())
        cocotb.start_soon(self._send_write_statuses())

    # -- configuration -------------------------------------------------------------------------
    def set_backpressure(self, rd=None, wr=None):
        """Generators of per-cycle "not ready" for the request streams."""
        self.rd_req.set_backpressure_generator(rd)
        self.wr_req.set_backpressure_generator(wr)

    def now_ns(self):
        return get_sim_time("ns")

    @property
    def idle(self):
        return not (self.reads_in_flight or self.writes_in_flight)

    def _error_for(self, kind, req):
        if not self.bus_master:
            return DmaError.BUS_MASTER_DISABLED
        if req["len"] == 0 or req["host_addr"] + req["len"] > 1 << 64:
            return DmaError.BAD_REQUEST
        if self.error_hook is not None:
            err = self.error_hook(kind, req)
            if err is not None:
                return DmaError(err)
        return DmaError.OK

    # -- reads ---------------------------------------------------------------------------------
    def _take_read(self, req):
        error = self._error_for("rd", req)
        host, length, ram = req["host_addr"], req["len"], req["ram_addr"]
        payload = self.memory.read(host, length) if error == DmaError.OK else b""
        access = DmaAccess("rd", host, length, ram, req["tag"], payload, error, self.now_ns())
        self.log.append(access)
        self.reads_in_flight += 1
        data = payload if error == DmaError.OK else self.rng.randbytes(max(length, 1))[:length]
        # Split at `chunk` host-address boundaries; an error delivers a random prefix only.
        chunks, i = [], 0
        while i < length:
            n = min(length - i, self.chunk - (host + i) % self.chunk)
            chunks.append(self._beats(ram + i, data[i:i + n]))
            i += n
        if error != DmaError.OK and chunks:
            chunks = chunks[:self.rng.randrange(len(chunks) + 1)]
        read = _Read(access, chunks)
        cocotb.start_soon(self._land_later(read, _latency(self.read_latency, self.rng)))

    def _beats(self, ram_addr, payload):
        b = self.beat_bytes
        out = []
        i = 0
        while i < len(payload):
            beat, offset = divmod(ram_addr + i, b)
            n = min(len(payload) - i, b - offset)
            out.append((beat, int.from_bytes(payload[i:i + n], "little") << (8 * offset),
                        ((1 << n) - 1) << offset))
            i += n
        return out

    async def _land_later(self, read, cycles):
        await Timer(cycles * self.period, "ns")
        self._landing.append(read)
        self._landing_wake.set()

    async def _deliver_reads(self):
        clock = self.clock
        while True:
            if not self._landing:
                self.rd_en.value = 0
                self._landing_wake.clear()
                await self._landing_wake.wait()
                await RisingEdge(clock)
                continue
            i = self.rng.randrange(len(self._landing)) if self.reorder else 0
            read = self._landing[i]
            if not read.beats:
                # (an error with no data delivered)
                self._landing.pop(i)
                self.rd_en.value = 0
                await RisingEdge(clock)
                self._finish_read(read)
                continue
            chunk = read.beats.pop(0)
            for n, (beat, value, be) in enumerate(chunk):
                self.rd_addr.value = beat
                self.rd_data.value = value
                self.rd_be.value = be
                self.rd_en.value = 1
                last = not read.beats and n == len(chunk) - 1
                if last:
                    self._landing.remove(read)
                    same = self.status_with_last_beat
                    if same is True or (same and self.rng.random() < same):
                        self._finish_read(read)
                        await RisingEdge(clock)
                    else:
                        await RisingEdge(clock)
                        self.rd_en.value = 0
                        self._finish_read(read)
                else:
                    await RisingEdge(clock)

    def _finish_read(self, read):
        read.access.done_ns = self.now_ns()
        self.reads_in_flight -= 1
        self.rd_status.send_nowait({"tag": read.access.tag, "error": read.access.error.value})

    # -- writes --------------------------------------------------------------------------------
    def _take_write(self, req):
        self.writes_in_flight += 1
        self._writes.append((req, self.now_ns()))
        self._write_wake.set()

    async def _serve_writes(self):
        clock = self.clock
        b = self.beat_bytes
        while True:
            if not self._writes:
                self._write_wake.clear()
                await self._write_wake.wait()
                await RisingEdge(clock)
                continue
            req, taken_ns = self._writes.popleft()
            host, length, ram = req["host_addr"], req["len"], req["ram_addr"]
            error = self._error_for("wr", req)
            if req["imm_en"]:
                payload = (req["imm_data"] & ((1 << (8 * min(length, 8))) - 1)) \
                    .to_bytes(8, "little")[:length]
            elif length:
                first, last = ram // b, (ram + length - 1) // b
                beats = []
                for k in range(last - first + 2):
                    if k <= last - first:
                        self.wr_addr.value = first + k
                        self.wr_en.value = 1
                    else:
                        self.wr_en.value = 0
                    await RisingEdge(clock)
                    if k >= 1:
                        beats.append(int(self.wr_data.value))
                self.wr_en.value = 0
                raw = b"".join(v.to_bytes(b, "little") for v in beats)
                payload = raw[ram % b:ram % b + length]
            else:
                payload = b""
            if error == DmaError.OK:
                self.memory.write(host, payload)
            access = DmaAccess("wr", host, length, ram, req["tag"],
                               payload if error == DmaError.OK else b"", error, taken_ns,
                               imm=bool(req["imm_en"]))
            self.log.append(access)
            delay = _latency(self.write_latency, self.rng) * self.period
            self._wr_statuses.append((self.now_ns() + delay, access))
            self._wr_status_wake.set()

    async def _send_write_statuses(self):
        while True:
            if not self._wr_statuses:
                self._wr_status_wake.clear()
                await self._wr_status_wake.wait()
                continue
            when, access = self._wr_statuses[0]
            now = self.now_ns()
            if when > now:
                # Simulated times are floats in ns: the difference may not be a whole number
                # of the simulator's steps (e.g. 35.99999999994 ns).
                await Timer(when - now, "ns", round_mode="round")
            self._wr_statuses.popleft()
            access.done_ns = self.now_ns()
            self.writes_in_flight -= 1
            self.wr_status.send_nowait({"tag": access.tag, "error": access.error.value})
