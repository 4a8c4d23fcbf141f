# SPDX-License-Identifier: BSD-2-Clause
"""Device-level testbench for :class:`~virtio_pcie.devices.blk.VirtioBlkDevice`.

::

   BlkTB ─ chains as segments ─► requests ┌──────────────────┐ medium ══ AxiRam (cocotbext-axi)
         ◄─ used entries ─────── completions│ VirtioBlkDevice │            on a DiskImage
   DmaClientModel ◄═ rd_req/rd_ram/rd_status│                  │
   (host memory)  ◄═ wr_req/wr_ram/wr_status└──────────────────┘ config.bus ◄─ register reads

The testbench plays the parts around the device:

* the **virtqueue engine**: it turns each request's buffers into segment beats (readable
  first, then writable, ``first``/``last`` on the chain) and takes the used entries;
* the **DMA engine**: by default the project's DMA client model
  (:class:`virtio_pcie_tb.models.dma_client_model.DmaClientModel`): random latencies, read
  completions cut at the RCB and delivered out of order, statuses in the same cycle as the last
  beat, junk data on failed reads. For throughput figures, :class:`IdealDma` instead: a model
  written for this bench that moves exactly one beat per cycle each way with a fixed latency,
  so the cycles counted are the device's own. Both check that every DMA read falls inside a
  readable buffer and every DMA write inside a writable buffer of a request in flight;
* the **transport**: register reads and writes of the configuration structure, the negotiated
  features, device reset.

The engine and transport sides run in one clock loop (one ``await`` per cycle for all their
ports), which keeps the simulation fast; the medium is cocotbext-axi's ``AxiRam``. Requests
are built from the spec layouts with any buffer split (:meth:`BlkTB.chain`) and checked byte
for byte against a :class:`~virtio_pcie_tb.models.disk_image.ShadowDisk` (:meth:`BlkTB.check`).
"""

import collections
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, RisingEdge

from virtio_pcie.dma.interface import DmaError, DmaReadRequest, DmaStatus, DmaWriteRequest
from virtio_pcie.spec.virtio import (VIRTIO_BLK_ID_BYTES, VirtioBlkDiscardWriteZeroes,
                                     VirtioBlkOutHdr, VirtioBlkReqType, VirtioBlkStatus)
from virtio_pcie.virtio.interface import VirtqSegment, VirtqUsed
from virtio_pcie_tb import harness
from virtio_pcie_tb.models.bitfields import BitFields
from virtio_pcie_tb.models.disk_image import SECTOR, DiskImage, ShadowDisk, attach_axi_ram
from virtio_pcie_tb.models.dma_client_model import DmaClientModel
from virtio_pcie_tb.models.dma_memory import DmaMemory

__all__ = ["CLOCK_NS", "Request", "SharedDma", "IdealDma", "BlkTB", "header", "dwz_segment"]

CLOCK_NS  = 4
CANARY    = 0xA5                      # fills writable buffers before a request

OK, IOERR, UNSUPP = (VirtioBlkStatus.OK.value, VirtioBlkStatus.IOERR.value,
                     VirtioBlkStatus.UNSUPP.value)


_HDR = BitFields(VirtioBlkOutHdr)
_DWZ = BitFields(VirtioBlkDiscardWriteZeroes)
_RD_REQ = BitFields(DmaReadRequest)
_WR_REQ = BitFields(DmaWriteRequest)
_STATUS = BitFields(DmaStatus)


def header(rtype, sector=0, reserved=0):
    """A ``struct virtio_blk_outhdr`` (any 32-bit ``type``, even undefined ones)."""
    return _HDR.encode({"type": int(getattr(rtype, "value", rtype)), "reserved": reserved,
                        "sector": sector}).to_bytes(16, "little")


def dwz_segment(sector, num_sectors, flags=0):
    return _DWZ.encode({"sector": sector, "num_sectors": num_sectors,
                        "flags": flags}).to_bytes(16, "little")


class Request:
    """One descriptor chain and what the testbench expects of it."""

    def __init__(self, queue, head, readable, writable):
        self.queue = queue
        self.head = head
        self.readable = readable          # [(addr, len)]
        self.writable = writable
        self.done = Event()
        self.used_len = None
        self.submitted = None             # cycle numbers
        self.completed = None
        self.expect = {}                  # filled by the request builders
        self.segments = None              # explicit beat list (for malformed chains)

    @property
    def readable_len(self):
        return sum(n for _, n in self.readable)

    @property
    def writable_len(self):
        return sum(n for _, n in self.writable)

    def ranges(self):
        return [(a, a + n) for a, n in self.readable + self.writable]

    def gather(self, mem, buffers):
        return b"".join(mem.read(a, n) for a, n in buffers)

    def status(self, mem):
        addr, n = self.writable[-1]
        return mem.read(addr + n - 1, 1)[0]

    def __repr__(self):
        return (f"Request(q{self.queue} h{self.head} {self.expect.get('what', '?')} "
                f"r={[n for _, n in self.readable]} w={[n for _, n in self.writable]})")


class SharedDma:
    """The project's DMA client model on the device's ``dma`` port, with this bench's checks.

    ``bad_ranges`` (host ``(lo, hi)`` pairs) make the DMA requests touching them fail.
    ``bme_drops`` (host address -> count): the next ``count`` writes starting there end with
    BUS_MASTER_DISABLED and write nothing, as the DMA engine's while Bus Master Enable is clear.
    """

    def __init__(self, tb, data_width, seed):
        self.tb = tb
        self.bad_ranges = []
        self.bme_drops = {}
        self.reads = 0
        self.writes = 0
        # Write statuses come back at once: with a write latency the model waits with
        # Timer(when - now) on float nanoseconds, which cocotb 2.1 can refuse ("Unable to
        # accurately represent 32.000000000000455(ns)").
        self.model = DmaClientModel(tb.dut, "dma", tb.dut.clk, data_width=data_width,
                                    memory=tb.mem, read_latency=(1, 40), write_latency=0,
                                    reorder=True, seed=seed, error_hook=self._hook)

    def set_latency(self, read, write):
        """Cycles (or (min, max) ranges); reads at least 1 (the model waits with a Timer)."""
        self.model.read_latency = read
        self.model.write_latency = write

    def set_backpressure(self, rd=None, wr=None):
        self.model.set_backpressure(rd=rd, wr=wr)

    @property
    def reorder(self):
        return self.model.reorder

    @reorder.setter
    def reorder(self, value):
        self.model.reorder = value

    def _hook(self, kind, req):
        write = kind == "wr"
        if write:
            self.writes += 1
        else:
            self.reads += 1
        host, length = req["host_addr"], req["len"]
        self.tb.check_dma(host, length, write=write, what=f"{kind} tag {req['tag']:#x}")
        if any(host < hi and lo < host + length for lo, hi in self.bad_ranges):
            return DmaError.UNSUPPORTED_REQUEST
        if write and self.bme_drops.get(host, 0) > 0:
            self.bme_drops[host] -= 1
            return DmaError.BUS_MASTER_DISABLED
        return None

    @property
    def busy(self):
        return not self.model.idle

    def drive(self, now, sampled):
        """(The shared model runs on its own.)"""


class IdealDma:
    """A DMA engine that moves exactly one beat per cycle each way, for throughput figures.

    Reads: after ``rd_latency`` cycles the bytes land, cut at ``rcb`` host-address boundaries
    and (with ``reorder``) delivered in random order across requests; the status follows the
    last beat. Writes: the write buffer is read one beat per cycle, back to back across
    requests; statuses come back in issue order, ``wr_latency`` cycles after the request.
    It is driven from :class:`BlkTB`'s clock loop.
    """

    def __init__(self, tb, data_width, rng):
        self.tb = tb
        self.mem = tb.mem
        self.bpb = data_width // 8
        self.beat_bits = 16 - (self.bpb.bit_length() - 1)
        self.rng = rng
        self.rd_latency = 0
        self.wr_latency = 0
        self.rcb = 64
        self.reorder = False
        self.max_reads = 32
        self.bad_ranges = []
        self.rd_pending = []          # completions: [ready_at, order, beats, record, failed]
        self.rd_current = None
        self.rd_status = collections.deque()
        self.rd_inflight = 0
        self.wr_queue = collections.deque()
        self.wr_pipe = collections.deque()
        self.wr_status = collections.deque()
        self.wr_reading = None
        self.reads = 0
        self.writes = 0
        self._order = 0

    def set_latency(self, read, write):
        self.rd_latency = read
        self.wr_latency = write

    def set_backpressure(self, rd=None, wr=None):
        self.tb.rd_pause = rd
        self.tb.wr_pause = wr

    def _bad(self, lo, hi):
        return any(lo < b_hi and b_lo < hi for b_lo, b_hi in self.bad_ranges)

    def beats(self, ram_addr, payload):
        """(beat address, data, byte enables) writes that put ``payload`` at ``ram_addr``."""
        out = []
        bpb = self.bpb
        pos = 0
        while pos < len(payload):
            addr = ram_addr + pos
            beat = addr // bpb
            lo = addr - beat * bpb
            n = min(bpb - lo, len(payload) - pos)
            data = int.from_bytes(payload[pos:pos + n], "little") << (8 * lo)
            be = ((1 << n) - 1) << lo
            out.append((beat & ((1 << self.beat_bits) - 1), data, be))
            pos += n
        return out

    def _next(self):
        self._order += 1
        return self._order

    def take_read(self, now, req):
        """A read request was transferred in cycle ``now``."""
        self.reads += 1
        host, ram, length, tag = req["host_addr"], req["ram_addr"], req["len"], req["tag"]
        self.tb.check_dma(host, length, write=False, what=f"read tag {tag:#x}")
        if length == 0 or ram + length > 1 << 16:
            self.tb.error(f"bad DMA read request {req}")
        record = {"tag": tag, "left": 1, "error": None}
        self.rd_inflight += 1
        if self._bad(host, host + length):
            record["error"] = DmaError.UNSUPPORTED_REQUEST
            self.rd_pending.append([now + self.rd_latency, self._next(), [], record])
            return
        payload = self.mem.read(host, length)
        # Cut at the read completion boundary of the host address, as a root complex does;
        # with reorder, group the pieces into completions of 1 to 4 RCBs.
        pieces = []
        pos = 0
        while pos < length:
            n = min(length - pos, self.rcb - ((host + pos) % self.rcb))
            pieces.append((pos, n))
            pos += n
        cpls = []
        i = 0
        while i < len(pieces):
            k = self.rng.randint(1, 4) if self.reorder else len(pieces)
            group = pieces[i:i + k]
            cpls.append((group[0][0], sum(n for _, n in group)))
            i += k
        record["left"] = len(cpls)
        for start, size in cpls:
            jitter = self.rng.randint(0, 8) if self.reorder else 0
            self.rd_pending.append([now + self.rd_latency + jitter, self._next(),
                                    self.beats(ram + start, payload[start:start + size]),
                                    record])

    def next_read_beat(self, now):
        """The (addr, data, be) to write in this cycle, or None."""
        while True:
            if self.rd_current is None:
                ready = [c for c in self.rd_pending if c[0] <= now]
                if not ready:
                    return None
                pick = self.rng.choice(ready) if self.reorder else min(ready, key=lambda c: c[1])
                self.rd_pending.remove(pick)
                self.rd_current = [pick[2], 0, pick[3]]
            beats, index, record = self.rd_current
            if index < len(beats):
                self.rd_current[1] += 1
                if index + 1 == len(beats):
                    self._piece_done(now, record)
                    self.rd_current = None
                return beats[index]
            self._piece_done(now, record)     # a failed read carries no data
            self.rd_current = None

    def _piece_done(self, now, record):
        record["left"] -= 1
        if record["left"] == 0:
            self.rd_status.append((now + 1, record["tag"], record["error"] or DmaError.OK))
            self.rd_inflight -= 1

    def take_write(self, now, req):
        self.writes += 1
        host, length = req["host_addr"], req["len"]
        self.tb.check_dma(host, length, write=True, what=f"write tag {req['tag']:#x}")
        if length == 0 or (req["imm_en"] and length > 8):
            self.tb.error(f"bad DMA write request {req}")
        beats = [] if req["imm_en"] else \
            list(range(req["ram_addr"] // self.bpb,
                       (req["ram_addr"] + length - 1) // self.bpb + 1))
        self.wr_queue.append({"req": req, "beats": beats, "next": 0, "data": {},
                              "taken": now})

    def write_done(self, now, entry):
        req = entry["req"]
        length = req["len"]
        if req["imm_en"]:
            payload = req["imm_data"].to_bytes(8, "little")[:length]
        else:
            bpb = self.bpb
            raw = b"".join(entry["data"][b].to_bytes(bpb, "little") for b in entry["beats"])
            off = req["ram_addr"] - entry["beats"][0] * bpb
            payload = raw[off:off + length]
        error = DmaError.OK
        if self._bad(req["host_addr"], req["host_addr"] + length):
            error = DmaError.UNSUPPORTED_REQUEST
        else:
            self.mem.write(req["host_addr"], payload)
        self.wr_status.append((max(now, entry["taken"] + self.wr_latency) + 1, req["tag"],
                               error))

    @property
    def busy(self):
        return bool(self.rd_pending or self.rd_current or self.rd_status or self.wr_queue or
                    self.wr_pipe or self.wr_status or self.wr_reading)

    def drive(self, now, tb):
        """One cycle of the DMA ports, from :meth:`BlkTB._run` (transfers already taken)."""
        tb._set("dma__rd_req__ready", int(self.rd_inflight < self.max_reads and
                                          not tb._pause("rd_pause")))
        beat = self.next_read_beat(now)
        if beat is None:
            tb._set("dma__rd_ram__en", 0)
        else:
            tb._set("dma__rd_ram__addr", beat[0])
            tb._set("dma__rd_ram__data", beat[1])
            tb._set("dma__rd_ram__be", beat[2])
            tb._set("dma__rd_ram__en", 1)
        if self.rd_status and self.rd_status[0][0] <= now:
            _, tag, err = self.rd_status.popleft()
            tb._set("dma__rd_status__payload", _STATUS.encode({"tag": tag, "error": err.value}))
            tb._set("dma__rd_status__valid", 1)
        else:
            tb._set("dma__rd_status__valid", 0)

        tb._set("dma__wr_req__ready", int(len(self.wr_queue) < 4 and not tb._pause("wr_pause")))
        # Read the write buffer for the oldest write, one beat per cycle.
        if self.wr_reading is None and self.wr_queue:
            self.wr_reading = self.wr_queue.popleft()
            if not self.wr_reading["beats"]:
                self.write_done(now, self.wr_reading)
                self.wr_reading = None
        if self.wr_reading is not None:
            entry = self.wr_reading
            beat = entry["beats"][entry["next"]]
            tb._set("dma__wr_ram__addr", beat & ((1 << self.beat_bits) - 1))
            tb._set("dma__wr_ram__en", 1)
            self.wr_pipe.append((now, entry, beat))
            entry["next"] += 1
            if entry["next"] == len(entry["beats"]):
                self.wr_reading = None
        else:
            tb._set("dma__wr_ram__en", 0)
        if self.wr_status and self.wr_status[0][0] <= now:
            _, tag, err = self.wr_status.popleft()
            tb._set("dma__wr_status__payload", _STATUS.encode({"tag": tag, "error": err.value}))
            tb._set("dma__wr_status__valid", 1)
        else:
            tb._set("dma__wr_status__valid", 0)

    def sample(self, now, tb):
        """Transfers at this edge (from :meth:`BlkTB._run`)."""
        if tb._last_written.get("dma__rd_req__ready") and tb._get("dma__rd_req__valid"):
            self.take_read(now, _RD_REQ.decode(tb._get("dma__rd_req__payload")))
        if tb._last_written.get("dma__wr_req__ready") and tb._get("dma__wr_req__valid"):
            self.take_write(now, _WR_REQ.decode(tb._get("dma__wr_req__payload")))
        while self.wr_pipe and self.wr_pipe[0][0] <= now - 2:
            _, entry, beat = self.wr_pipe.popleft()
            entry["data"][beat] = tb._get("dma__wr_ram__data")
            if len(entry["data"]) == len(entry["beats"]):
                self.write_done(now, entry)


class BlkTB:
    """Clock, reset, the models around the device, and request building and checking."""

    def __init__(self, dut, *, image=None, seed=1, dma="shared", on_chip=False):
        self.dut = dut
        self.params = harness.dut_params()
        self.data_width = self.params["data_width"]
        self.queue_count = self.params.get("queue_count", 1)
        self.rng = random.Random(seed)
        self.log = dut._log
        self.errors = []
        self.now = 0
        Clock(dut.clk, CLOCK_NS, unit="ns").start()

        capacity = self.params.get("capacity")
        # An on-chip medium: no medium port to serve (the names may still resolve to the
        # design's internal wires, so do not look).
        self.on_chip = on_chip
        if image is None:
            # The on-chip RAM starts out zero; an external medium gets random contents.
            image = DiskImage(sectors=capacity or 4096)
            if not self.on_chip:
                image.write(0, random.Random(seed + 3).randbytes(image.size))
        if capacity is not None and image.sectors != capacity:
            raise ValueError(f"the disk image has {image.sectors} sectors, the device "
                             f"{capacity}")
        self.image = image
        self.shadow = ShadowDisk(image, discard_zeroes=self.params.get("discard_zeroes", False))
        self.medium = None if self.on_chip else \
            attach_axi_ram(dut, "medium", dut.clk, dut.rst, image)
        if capacity is None:
            self.set_capacity(image.sectors)

        self.mem = DmaMemory()
        self.mem_rng = random.Random(seed + 1)
        self.inflight = {}                     # (queue, head) -> Request
        self.completed = []
        self.any_done = Event()
        self.beats = collections.deque()
        self.seg_idle = None                   # generators: truthy = pause this cycle
        self.used_pause = None
        self.rd_pause = None                   # (IdealDma only)
        self.wr_pause = None
        self.cfg_ops = collections.deque()
        self.cfg_current = None
        self.segment_codec = BitFields(VirtqSegment(self.queue_count))
        self.used_codec = BitFields(VirtqUsed(self.queue_count))
        self._last_written = {}
        self._h = {}
        names = ["requests__segment__valid", "requests__segment__payload",
                 "requests__segment__ready", "completions__used__valid",
                 "completions__used__payload", "completions__used__ready",
                 "config__bus__addr", "config__bus__sel", "config__bus__we",
                 "config__bus__w_data", "config__bus__stb", "config__bus__r_data",
                 "config__bus__ack", "config__reset", "config__driver_ok",
                 "config__features", "config__idle", "config__changed",
                 "requests__fetch__valid", "requests__fetch__ready"]
        if dma == "ideal":
            names += ["dma__rd_req__valid", "dma__rd_req__payload", "dma__rd_req__ready",
                      "dma__rd_status__valid", "dma__rd_status__payload",
                      "dma__rd_ram__addr", "dma__rd_ram__data", "dma__rd_ram__be",
                      "dma__rd_ram__en", "dma__wr_req__valid", "dma__wr_req__payload",
                      "dma__wr_req__ready", "dma__wr_status__valid", "dma__wr_status__payload",
                      "dma__wr_ram__addr", "dma__wr_ram__en", "dma__wr_ram__data"]
        for name in names:
            self._h[name] = getattr(dut, name)
        for name in ("requests__segment__valid", "completions__used__ready", "config__bus__stb",
                     "config__reset", "requests__fetch__ready"):
            self._set(name, 0)
        if dma == "ideal":
            for name in ("dma__rd_req__ready", "dma__rd_status__valid", "dma__rd_ram__en",
                         "dma__wr_req__ready", "dma__wr_status__valid", "dma__wr_ram__en"):
                self._set(name, 0)
            self.dma = IdealDma(self, self.data_width, random.Random(seed + 2))
        elif dma == "shared":
            self.dma = SharedDma(self, self.data_width, seed + 2)
        else:
            raise ValueError(f"dma must be 'shared' or 'ideal', not {dma!r}")
        self._set("config__driver_ok", 1)
        self.changed_strobes = 0
        self._loop = None

    # -- plumbing --------------------------------------------------------------------------------
    def _set(self, name, value):
        if self._last_written.get(name) != value:
            self._h[name].value = value
            self._last_written[name] = value

    def _get(self, name):
        return int(self._h[name].value)

    def error(self, message):
        self.log.error(message)
        self.errors.append(message)

    def set_features(self, bits):
        self._set("config__features", bits)

    def set_capacity(self, sectors):
        """Drive the device's ``capacity`` input (devices built with ``capacity=None``)."""
        self.dut.capacity.value = sectors

    async def start(self, features):
        """Reset the design and start the models; ``features`` are the negotiated ones."""
        self.set_features(features)
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        self._loop = cocotb.start_soon(self._run())
        await ClockCycles(self.dut.clk, 2)
        if self.on_chip:
            # The RAM keeps what earlier tests of this simulation wrote: learn it.
            step = 128
            for sector in range(0, self.shadow.sectors, step):
                n = min(step, self.shadow.sectors - sector)
                req = await self.run(self.req_in(sector, n * SECTOR, wsplit="one"))
                assert req.status(self.mem) == OK, "reading the on-chip disk failed"
                self.shadow.write(sector, req.gather(self.mem, req.writable)[:n * SECTOR])

    def check_dma(self, addr, length, *, write, what):
        """A DMA access must fall inside one buffer of the right kind of a request in flight."""
        for req in self.inflight.values():
            for a, n in (req.writable if write else req.readable):
                if a <= addr and addr + length <= a + n:
                    return
        kind = "writable" if write else "readable"
        self.error(f"DMA {what} at {addr:#x}+{length} is outside every {kind} buffer in flight")

    # -- the clock loop --------------------------------------------------------------------------
    async def _run(self):
        clk = self.dut.clk
        dma = self.dma if isinstance(self.dma, IdealDma) else None
        seg_cur = None
        used_ready = 0
        while True:
            await RisingEdge(clk)
            self.now += 1
            now = self.now

            # Transfers at this edge (values seen by the design's flops).
            if seg_cur is not None and self._get("requests__segment__ready"):
                payload, req = seg_cur
                if req is not None and req.submitted is None:
                    req.submitted = now
                seg_cur = None
            if used_ready and self._get("completions__used__valid"):
                self._complete(self.used_codec.decode(self._get("completions__used__payload")))
            if dma is not None:
                dma.sample(now, self)
            if self.cfg_current is not None and self._get("config__bus__ack"):
                op = self.cfg_current
                op["data"] = self._get("config__bus__r_data")
                op["event"].set()
                self.cfg_current = None
                self._set("config__bus__stb", 0)
            if self._get("config__changed"):
                self.changed_strobes += 1

            # What to drive for the next edge.
            if seg_cur is None and self.beats and not self._pause("seg_idle"):
                seg_cur = self.beats.popleft()
            self._set("requests__segment__valid", int(seg_cur is not None))
            if seg_cur is not None:
                self._set("requests__segment__payload", seg_cur[0])

            used_ready = int(not self._pause("used_pause"))
            self._set("completions__used__ready", used_ready)

            if dma is not None:
                dma.drive(now, self)

            if self.cfg_current is None and self.cfg_ops:
                op = self.cfg_current = self.cfg_ops.popleft()
                self._set("config__bus__addr", op["addr"])
                self._set("config__bus__sel", op["sel"])
                self._set("config__bus__we", op["we"])
                self._set("config__bus__w_data", op["w_data"])
                self._set("config__bus__stb", 1)

    def _pause(self, name):
        gen = getattr(self, name)
        if gen is None:
            return False
        try:
            return bool(next(gen))
        except StopIteration:
            setattr(self, name, None)
            return False

    def _complete(self, used):
        key = (used["queue"], used["head"])
        req = self.inflight.pop(key, None)
        if req is None:
            self.error(f"used entry for queue {key[0]} head {key[1]} that is not in flight")
            return
        if not used["batch_end"]:
            self.error(f"used entry {key} without batch_end")
        req.used_len = used["len"]
        req.completed = self.now
        self.completed.append(req)
        req.done.set()
        self.any_done.set()

    # -- transport side --------------------------------------------------------------------------
    async def cfg_access(self, addr, *, we=0, w_data=0, sel=0xF):
        op = {"addr": addr, "we": we, "w_data": w_data, "sel": sel, "event": Event(),
              "data": None}
        self.cfg_ops.append(op)
        await op["event"].wait()
        return op["data"]

    async def cfg_read_bytes(self, offset, length):
        out = bytearray()
        for dword in range(offset // 4, (offset + length + 3) // 4):
            out += (await self.cfg_access(dword * 4)).to_bytes(4, "little")
        start = offset % 4
        return bytes(out[start:start + length])

    async def device_reset(self, cycles=1):
        """Assert the transport's device reset until the device is idle again. Segments not
        yet sent are dropped (the virtqueue engine resets too)."""
        self.beats.clear()
        self._set("config__reset", 1)
        await ClockCycles(self.dut.clk, cycles)
        for _ in range(100000):
            await RisingEdge(self.dut.clk)
            if self._get("config__idle"):
                break
        else:
            raise AssertionError("device never went idle during reset")
        self._set("config__reset", 0)
        await RisingEdge(self.dut.clk)

    @property
    def idle(self):
        return bool(self._get("config__idle"))

    # -- requests --------------------------------------------------------------------------------
    def free_head(self, queue):
        used = {h for (q, h) in self.inflight if q == queue}
        for _ in range(1000):
            head = self.rng.randrange(0, 1024)
            if head not in used:
                return head
        raise RuntimeError("no free head")

    def alloc(self, length):
        """Fresh host memory for a buffer, at an odd offset now and then (the DMA engine
        realigns; the device must not care)."""
        offset = self.mem_rng.choice([0, 0, 0, 1, 3, 8, 64, 511, 2048, 4093])
        return self.mem.alloc_addr(length + 4096, align=4096) + offset

    def split(self, total, style):
        """Buffer lengths adding up to ``total`` (a list is taken as given)."""
        if isinstance(style, list):
            assert sum(style) == total, (style, total)
            return style
        if total == 0:
            return []
        if style == "one":
            return [total]
        if style == "pages":
            return [min(4096, total - i) for i in range(0, total, 4096)]
        if style == "random":
            cuts = sorted(self.rng.sample(range(1, total), min(total - 1,
                                                               self.rng.randint(0, 5))))
            edges = [0] + cuts + [total]
            return [b - a for a, b in zip(edges, edges[1:], strict=False)]
        raise ValueError(f"unknown split style {style!r}")

    def chain(self, readable, writable_len, *, rsplit="one", wsplit="one", queue=None):
        """A request whose readable buffers hold ``readable`` and whose writable buffers have
        ``writable_len`` bytes (filled with a canary), split as asked."""
        queue = self.rng.randrange(self.queue_count) if queue is None else queue
        rbufs = []
        pos = 0
        for n in self.split(len(readable), rsplit):
            addr = self.alloc(n)
            self.mem.write(addr, readable[pos:pos + n])
            rbufs.append((addr, n))
            pos += n
        wbufs = []
        for n in self.split(writable_len, wsplit):
            addr = self.alloc(n)
            self.mem.write(addr, bytes([CANARY]) * n)
            wbufs.append((addr, n))
        req = Request(queue, self.free_head(queue), rbufs, wbufs)
        req.expect["readable"] = bytes(readable)
        return req

    def submit(self, req):
        """Send the chain's segments to the device."""
        key = (req.queue, req.head)
        assert key not in self.inflight
        self.inflight[key] = req
        segs = req.segments
        if segs is None:
            segs = [(a, n, 0) for a, n in req.readable] + [(a, n, 1) for a, n in req.writable]
        for i, (addr, n, write) in enumerate(segs):
            beat = self.segment_codec.encode({
                "queue": req.queue, "head": req.head, "addr": addr, "len": n, "write": write,
                "first": int(i == 0), "last": int(i == len(segs) - 1)})
            self.beats.append((beat, req if i == 0 else None))
        return req

    async def run(self, req, timeout_cycles=200000):
        self.submit(req)
        await self.wait(req, timeout_cycles)
        return req

    async def wait(self, req, timeout_cycles=200000):
        from cocotb.triggers import with_timeout
        await with_timeout(req.done.wait(), timeout_cycles * CLOCK_NS, "ns")

    async def next_completion(self, timeout_cycles=200000):
        """Wait until some request completes (returns at once if one did since the last call)."""
        from cocotb.triggers import with_timeout
        await with_timeout(self.any_done.wait(), timeout_cycles * CLOCK_NS, "ns")
        self.any_done.clear()

    async def drain(self, timeout_cycles=400000):
        for req in list(self.inflight.values()):
            await self.wait(req, timeout_cycles)

    # -- request builders (expectations included) ------------------------------------------------
    def req_in(self, sector, nbytes, *, rsplit="one", wsplit="pages", status=OK, queue=None):
        req = self.chain(header(VirtioBlkReqType.IN, sector), nbytes + 1, rsplit=rsplit,
                         wsplit=wsplit, queue=queue)
        req.expect.update(what="IN", sector=sector, count=nbytes // SECTOR, status=status,
                          written=nbytes if status == OK else 0)
        return req

    def req_out(self, sector, data, *, rsplit="pages", wsplit="one", status=OK, queue=None,
                hdr_split=True):
        readable = header(VirtioBlkReqType.OUT, sector) + data
        if isinstance(rsplit, str) and hdr_split and rsplit != "random":
            rsplit = [16] + self.split(len(data), rsplit)
        req = self.chain(readable, 1, rsplit=rsplit, wsplit=wsplit, queue=queue)
        req.expect.update(what="OUT", sector=sector, data=bytes(data), status=status,
                          written=0)
        return req

    def req_flush(self, *, status=OK, queue=None):
        req = self.chain(header(VirtioBlkReqType.FLUSH), 1, queue=queue)
        req.expect.update(what="FLUSH", status=status, written=0)
        return req

    def req_get_id(self, room=VIRTIO_BLK_ID_BYTES, *, wsplit="one", queue=None):
        req = self.chain(header(VirtioBlkReqType.GET_ID), room + 1, wsplit=wsplit, queue=queue)
        req.expect.update(what="GET_ID", status=OK, written=min(room, VIRTIO_BLK_ID_BYTES))
        return req

    def req_dwz(self, rtype, sector, count, flags=0, *, status=OK, queue=None, rsplit=None,
                segments=None):
        body = segments if segments is not None else dwz_segment(sector, count, flags)
        readable = header(rtype) + body
        req = self.chain(readable, 1, rsplit=rsplit or [16, len(body)] if body else [16],
                         queue=queue)
        req.expect.update(what=VirtioBlkReqType(rtype).name, sector=sector, count=count,
                          status=status, written=0)
        return req

    def req_raw(self, readable, writable_len, *, status, written=0, rsplit="one",
                wsplit="one", queue=None, what="raw", **expect):
        req = self.chain(readable, writable_len, rsplit=rsplit, wsplit=wsplit, queue=queue)
        req.expect.update(what=what, status=status, written=written, **expect)
        return req

    # -- checking --------------------------------------------------------------------------------
    def check(self, req, serial=None):
        """Check a completed request against its expectation; apply it to the shadow disk."""
        exp = req.expect
        what = exp.get("what")
        if req.used_len is None:
            raise AssertionError(f"{req} did not complete")
        written = exp.get("written", 0)
        if req.writable_len == 0:
            assert req.used_len == 0, f"{req}: used len {req.used_len} without writable bytes"
        else:
            status = req.status(self.mem)
            assert status == exp["status"], \
                f"{req}: status {status}, expected {exp['status']}"
            assert req.used_len == written + 1, \
                f"{req}: used len {req.used_len}, expected {written + 1}"
            data = req.gather(self.mem, req.writable)
            # Nothing but the data and the status byte was written.
            untouched = data[written:-1]
            assert untouched == bytes([CANARY]) * len(untouched), \
                f"{req}: writable bytes {written}..{len(data) - 1} were written"
            if what == "IN" and exp["status"] == OK:
                expected = self.shadow.read(exp["sector"], exp["count"]) \
                    if self.shadow.known(exp["sector"], exp["count"]) else None
                if expected is not None and data[:written] != expected:
                    first = next(i for i in range(written) if data[i] != expected[i])
                    raise AssertionError(f"{req}: read data differs from the disk at byte "
                                         f"{first} (sector {exp['sector'] + first // SECTOR})")
            if what == "GET_ID":
                assert data[:written] == serial[:written], \
                    f"{req}: serial {data[:written]!r}, expected {serial[:written]!r}"
        assert req.gather(self.mem, req.readable) == exp["readable"], \
            f"{req}: a readable buffer was written"
        if exp["status"] == OK:
            if what == "OUT":
                self.shadow.write(exp["sector"], exp["data"])
            elif what == "WRITE_ZEROES":
                self.shadow.zero(exp["sector"], exp["count"])
            elif what == "DISCARD":
                self.shadow.discard(exp["sector"], exp["count"])

    async def check_disk(self):
        """The disk holds what the shadow says: compared directly on an external medium, read
        back through the device (64 KiB at a time) on an on-chip one."""
        if not self.on_chip:
            bad = self.shadow.mismatches(self.image.buffer)
            assert not bad, f"medium differs from the shadow disk at sectors {bad}"
            return
        step = 128
        for sector in range(0, self.shadow.sectors, step):
            n = min(step, self.shadow.sectors - sector)
            req = await self.run(self.req_in(sector, n * SECTOR, wsplit="one"))
            self.check(req)

    def finish(self):
        assert not self.errors, "testbench errors:\n" + "\n".join(self.errors[:10])
