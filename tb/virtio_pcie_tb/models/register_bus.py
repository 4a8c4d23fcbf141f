# SPDX-License-Identifier: BSD-2-Clause
"""Drivers for register-bus ports (:mod:`virtio_pcie.function.register_bus`).

* :class:`RegisterBusInitiator` drives a DUT *target* port (``<prefix>__addr/sel/we/w_data/stb``
  in, ``__r_data/ack`` out) the way the function's completer does: one access at a time, held
  until ``ack``. It takes byte offsets and access sizes (1, 2, 4 and, as two dword accesses low
  half first, 8) and computes ``addr`` / ``sel``, so tests speak in the spec's terms. It fails an
  access that is not acknowledged within ``timeout_cycles``: a wedged block is a test failure,
  not a hung simulation.
* :class:`RegisterFileTarget` answers a DUT *initiator* port with a byte array (a device's
  configuration structure), with a configurable latency.
* :class:`LayoutWindow` names registers by layout field (``await common.read("queue_size")``),
  taking offsets and sizes from :mod:`virtio_pcie.spec`; no offset is typed in a test.

Like :mod:`.tlp_stream`, these sample after ``RisingEdge(clk)`` (the values the DUT saw at that
edge) and drive values that take effect at the next edge. This module, :mod:`.tlp_stream`,
:mod:`.pcie_bridge` and :mod:`.transport_peers` are the only ones that touch DUT signals.
"""

import logging

import cocotb
from cocotb.triggers import Lock, RisingEdge

from virtio_pcie.spec.pcie import byte_offset, byte_size

__all__ = ["RegisterBusInitiator", "RegisterFileTarget", "LayoutWindow", "BusWedged"]


class BusWedged(AssertionError):
    """A register access was not acknowledged in time."""


def _sig(dut, prefix, name):
    return getattr(dut, f"{prefix}__{name}")


class RegisterBusInitiator:
    """Drives accesses into a DUT register-bus target port."""

    def __init__(self, dut, prefix, clock, *, timeout_cycles=20_000):
        self.prefix = prefix
        self.clock = clock
        self.timeout_cycles = timeout_cycles
        self.addr = _sig(dut, prefix, "addr")
        self.sel = _sig(dut, prefix, "sel")
        self.we = _sig(dut, prefix, "we")
        self.w_data = _sig(dut, prefix, "w_data")
        self.stb = _sig(dut, prefix, "stb")
        self.r_data = _sig(dut, prefix, "r_data")
        self.ack = _sig(dut, prefix, "ack")
        self.window = 1 << len(self.addr)
        self.stb.value = 0
        self.log = logging.getLogger(f"cocotb.regbus.{prefix}")
        self._lock = Lock()
        self.accesses = 0
        self.last_latency = 0      # cycles from stb to ack of the last access
        self.max_latency = 0

    async def access(self, dword_addr, sel, we, w_data=0):
        """One bus access; returns the 32-bit read data (0 for writes)."""
        if dword_addr % 4 or not 0 <= dword_addr < self.window:
            raise ValueError(f"{self.prefix}: address {dword_addr:#x} is not a dword in the "
                             f"{self.window}-byte window")
        async with self._lock:
            self.addr.value = dword_addr
            self.sel.value = sel
            self.we.value = int(bool(we))
            self.w_data.value = w_data & 0xFFFF_FFFF
            self.stb.value = 1
            cycle = 0
            while cycle < self.timeout_cycles:
                await RisingEdge(self.clock)
                cycle += 1
                if self.ack.value:
                    data = int(self.r_data.value) if not we else 0
                    break
            else:
                self.stb.value = 0
                raise BusWedged(f"{self.prefix}: {'write' if we else 'read'} at "
                                f"{dword_addr:#x} (sel {sel:#x}) not acknowledged within "
                                f"{self.timeout_cycles} cycles")
            self.stb.value = 0
            self.accesses += 1
            self.last_latency = cycle
            self.max_latency = max(self.max_latency, cycle)
            return data

    def _lanes(self, offset, size):
        if size not in (1, 2, 4):
            raise ValueError(f"access size must be 1, 2, 4 or 8, not {size!r}")
        if offset % size:
            raise ValueError(f"{self.prefix}: {size}-byte access at {offset:#x} is not aligned")
        lane = offset % 4
        return offset - lane, ((1 << size) - 1) << lane, 8 * lane

    async def read(self, offset, size=4):
        """Naturally aligned read of ``size`` bytes at byte ``offset`` (8 = two dwords)."""
        if size == 8:
            low = await self.read(offset, 4)
            return low | await self.read(offset + 4, 4) << 32
        dword, sel, shift = self._lanes(offset, size)
        data = await self.access(dword, sel, False)
        return (data >> shift) & ((1 << (8 * size)) - 1)

    async def write(self, offset, value, size=4):
        """Naturally aligned write of ``size`` bytes at byte ``offset`` (8 = low, then high)."""
        if size == 8:
            await self.write(offset, value & 0xFFFF_FFFF, 4)
            await self.write(offset + 4, value >> 32 & 0xFFFF_FFFF, 4)
            return
        dword, sel, shift = self._lanes(offset, size)
        await self.access(dword, sel, True, (value & ((1 << (8 * size)) - 1)) << shift)


class RegisterFileTarget:
    """Answers a DUT register-bus initiator port from a byte array.

    Reads return the selected bytes (0 past the end); writes change the selected bytes of
    ``writable`` offsets only. ``latency`` cycles pass between ``stb`` and ``ack``. Accesses are
    logged in :attr:`accesses` as ``(we, byte address, sel, data)``.
    """

    def __init__(self, dut, prefix, clock, *, size, latency=1, writable=()):
        self.clock = clock
        self.memory = bytearray(size)
        self.latency = latency
        self.writable = set(writable)
        self.accesses = []
        self.addr = _sig(dut, prefix, "addr")
        self.sel = _sig(dut, prefix, "sel")
        self.we = _sig(dut, prefix, "we")
        self.w_data = _sig(dut, prefix, "w_data")
        self.stb = _sig(dut, prefix, "stb")
        self.r_data = _sig(dut, prefix, "r_data")
        self.ack = _sig(dut, prefix, "ack")
        self.ack.value = 0
        self.r_data.value = 0
        self._task = cocotb.start_soon(self._run())

    def _dword(self, addr):
        return int.from_bytes(bytes(self.memory[addr + i] if addr + i < len(self.memory) else 0
                                    for i in range(4)), "little")

    async def _run(self):
        waited = 0
        acked = False
        while True:
            await RisingEdge(self.clock)
            if acked:
                # The DUT sampled ack at this edge; its stb is still high in this sample.
                self.ack.value = 0
                acked = False
                continue
            if not self.stb.value:
                waited = 0
                continue
            if waited < self.latency:
                waited += 1
                continue
            waited = 0
            addr, sel = int(self.addr.value), int(self.sel.value)
            if self.we.value:
                data = int(self.w_data.value)
                for lane in range(4):
                    if sel >> lane & 1 and addr + lane in self.writable:
                        self.memory[addr + lane] = data >> (8 * lane) & 0xFF
                self.accesses.append((True, addr, sel, data))
            else:
                data = self._dword(addr)
                self.accesses.append((False, addr, sel, data))
                self.r_data.value = data
            self.ack.value = 1
            acked = True


class LayoutWindow:
    """A register structure (an :mod:`amaranth.lib.data` layout) behind a bus initiator.

    Fields are accessed by name with their natural size (64-bit fields as two 32-bit accesses,
    low half first, as Linux's ``vp_iowrite64_twopart`` does); ``base`` is the structure's byte
    offset in the window.
    """

    def __init__(self, bus, layout, base=0):
        self.bus = bus
        self.layout = layout
        self.base = base

    def offset(self, name):
        return self.base + byte_offset(self.layout, name)

    def size(self, name):
        layout = self.layout
        for part in name.split("."):
            shape = layout[part].shape
            layout = shape
        return byte_size(shape)

    async def read(self, name):
        return await self.bus.read(self.offset(name), self.size(name))

    async def write(self, name, value):
        await self.bus.write(self.offset(name), value, self.size(name))
