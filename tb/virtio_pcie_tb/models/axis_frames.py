# SPDX-License-Identifier: BSD-2-Clause
"""Lean drivers for the DUT's AXI4-Stream frame ports (``<name>__tdata`` / ``tkeep`` / ``tlast``
/ ``tuser`` / ``tvalid`` / ``tready``), for benchmarks that move frames at line rate.

:class:`AxisFrameSource` sends frames into a DUT input (a MAC's receive side), one beat per
cycle while ``tready`` allows, frames back to back unless ``gap_cycles`` idle cycles are asked
for between them (to pace it to a slower line rate). :class:`AxisFrameSink` takes a DUT output
(a MAC's transmit side) with ``tready`` always high, as a MAC that is never out of room, and
records each frame with the cycle its last beat moved. Both follow the sampling model of
:mod:`.tlp_stream` and sleep when idle, so an idle port costs nothing; cocotbext-axi's
drivers do the same job with more features (pauses, per-beat hooks) and more Python per beat.

Beat layout (see :class:`~virtio_pcie.devices.net_interface.AxiStreamSignature`): byte ``i`` of
a beat in ``tdata[8*i +: 8]``, ``tkeep`` one bit per byte, full on every beat but the last.

:class:`LeanMacPort` puts the two on a net device's ``mac_rx``/``mac_tx`` with ``link_up`` high:
``SystemTB(..., mac="lean")`` uses it instead of :class:`~.mac_port.MacPort` for benchmarks.
"""

import collections

import cocotb
from cocotb.triggers import Event, RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["AxisFrameSource", "AxisFrameSink", "LeanMacPort"]


def _sig(dut, prefix, name):
    return getattr(dut, f"{prefix}__{name}")


def frame_beats(frame, beat_bytes):
    """``(tdata, tkeep, tlast)`` integers of each beat of ``frame``."""
    beats = []
    for pos in range(0, len(frame), beat_bytes):
        chunk = frame[pos:pos + beat_bytes]
        beats.append((int.from_bytes(chunk, "little"), (1 << len(chunk)) - 1,
                      int(pos + beat_bytes >= len(frame))))
    return beats


class AxisFrameSource:
    """Sends frames into the DUT's ``prefix`` AXI4-Stream input.

    Attributes
    ----------
    gap_cycles : int
        Idle cycles between frames (0: back to back).
    sent : list of int
        Simulation time (ns) at which each frame's last beat was taken.
    """

    def __init__(self, dut, prefix, clock, reset=None, *, data_width):
        self.clock = clock
        self.reset = reset
        self.beat_bytes = data_width // 8
        self.tdata = _sig(dut, prefix, "tdata")
        self.tkeep = _sig(dut, prefix, "tkeep")
        self.tlast = _sig(dut, prefix, "tlast")
        self.tuser = _sig(dut, prefix, "tuser")
        self.tvalid = _sig(dut, prefix, "tvalid")
        self.tready = _sig(dut, prefix, "tready")
        self.gap_cycles = 0
        self.sent = []
        self._queue = collections.deque()
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self.tvalid.value = 0
        self.tuser.value = 0
        self._task = cocotb.start_soon(self._run())

    def send_nowait(self, frame, tuser=0):
        if not frame:
            raise ValueError("an AXI4-Stream frame has at least one byte")
        self._queue.append((frame_beats(bytes(frame), self.beat_bytes), int(tuser)))
        self._idle.clear()
        self._wake.set()

    async def wait_idle(self):
        while self._queue or not self._idle.is_set():
            await self._idle.wait()

    async def _run(self):
        clock = self.clock
        while True:
            if not self._queue:
                self.tvalid.value = 0
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                await RisingEdge(clock)       # drive from just after an edge (see tlp_stream)
                continue
            beats, tuser = self._queue[0]
            i = 0
            while i < len(beats):
                data, keep, last = beats[i]
                self.tdata.value = data
                self.tkeep.value = keep
                self.tlast.value = last
                self.tuser.value = tuser
                self.tvalid.value = 1
                await RisingEdge(clock)
                if self.reset is not None and self.reset.value:
                    continue
                if self.tready.value:
                    i += 1
            self._queue.popleft()
            self.sent.append(get_sim_time("ns"))
            if self.gap_cycles:
                self.tvalid.value = 0
                for _ in range(self.gap_cycles):
                    await RisingEdge(clock)


class AxisFrameSink:
    """Takes frames from the DUT's ``prefix`` AXI4-Stream output, ``tready`` always high.

    Attributes
    ----------
    frames : collections.deque of (time_ns, bytes, tuser)
        Received frames (when ``keep_data``; else the data is ``None``).
    times : list of int
        Simulation time (ns) of each frame's last beat.
    """

    def __init__(self, dut, prefix, clock, reset=None, *, data_width, keep_data=True):
        self.clock = clock
        self.reset = reset
        self.beat_bytes = data_width // 8
        self.keep_data = keep_data
        self.tdata = _sig(dut, prefix, "tdata")
        self.tkeep = _sig(dut, prefix, "tkeep")
        self.tlast = _sig(dut, prefix, "tlast")
        self.tuser = _sig(dut, prefix, "tuser")
        self.tvalid = _sig(dut, prefix, "tvalid")
        self.tready = _sig(dut, prefix, "tready")
        self.frames = collections.deque()
        self.times = []
        self.event = Event()
        self.tready.value = 1
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        clock, tvalid = self.clock, self.tvalid
        parts, bad = [], 0
        while True:
            if not tvalid.value:
                await RisingEdge(tvalid)
            await RisingEdge(clock)
            if self.reset is not None and self.reset.value:
                parts, bad = [], 0
                continue
            if not tvalid.value:
                continue
            bad |= int(self.tuser.value)
            if self.keep_data:
                keep = int(self.tkeep.value)
                nbytes = keep.bit_length()
                parts.append(int(self.tdata.value).to_bytes(self.beat_bytes, "little")[:nbytes])
            if self.tlast.value:
                now = get_sim_time("ns")
                self.times.append(now)
                self.frames.append((now, b"".join(parts) if self.keep_data else None, bad))
                parts, bad = [], 0
                self.event.set()


class LeanMacPort:
    """A net device's MAC side for benchmarks: :attr:`source` on ``mac_rx``, :attr:`sink` on
    ``mac_tx`` (always ready, frame data not kept), the link up and loopback off."""

    def __init__(self, dut, clock, reset, *, data_width, rx="mac_rx", tx="mac_tx"):
        self.dut = dut
        self.source = AxisFrameSource(dut, rx, clock, reset, data_width=data_width)
        self.sink = AxisFrameSink(dut, tx, clock, reset, data_width=data_width, keep_data=False)
        dut.link_up.value = 1
        dut.loopback.value = 0
