# SPDX-License-Identifier: BSD-2-Clause
"""Drivers for the PCI function's side ports: MSI-X requests, the INTx level, status events,
the configuration outputs and inputs, and register-bus initiator ports (``cfg_port``).

Like :mod:`.tlp_stream` and :mod:`.pcie_bridge`, these are the only places that touch the DUT's
signals; the tests use them and the layouts of :mod:`virtio_pcie.spec` and
:mod:`virtio_pcie.function.interface` to encode and decode. Signals are driven after a clock
edge and sampled at the next one, as :mod:`.tlp_stream` does.
"""

import logging

from cocotb.triggers import ReadOnly, RisingEdge

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["StructCodec", "RegisterBusInitiator", "StreamDriver", "FunctionPorts"]


class StructCodec:
    """Packs dicts into a :class:`~amaranth.lib.data.StructLayout`'s bits and back (top-level
    fields; nested layouts as integers or dicts)."""

    def __init__(self, layout):
        self.layout = data.Layout.cast(layout)

    def _width(self, shape):
        return shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width

    def decode(self, value):
        out = {}
        for name, field in self.layout:
            width = self._width(field.shape)
            out[name] = (int(value) >> field.offset) & ((1 << width) - 1)
        return out

    def encode(self, values, base=0):
        value = base
        for name, field_value in values.items():
            field = self.layout[name]
            shape = field.shape
            width = self._width(shape)
            if isinstance(field_value, dict):
                field_value = StructCodec(shape).encode(field_value)
            field_value = int(getattr(field_value, "value", field_value))
            mask = ((1 << width) - 1) << field.offset
            value = (value & ~mask) | ((field_value << field.offset) & mask)
        return value


class RegisterBusInitiator:
    """Drives a register-bus target port of the DUT (``<prefix>__addr/sel/we/w_data/stb`` in,
    ``r_data/ack`` out) one access at a time.

    ``timeout_cycles`` bounds the wait for ``ack``: a target that never answers fails the test.
    """

    def __init__(self, dut, prefix, clock, *, timeout_cycles=1000):
        self.clock = clock
        self.timeout_cycles = timeout_cycles
        self.log = logging.getLogger(f"cocotb.regbus.{prefix}")
        self._s = {name: getattr(dut, f"{prefix}__{name}")
                   for name in ("addr", "sel", "we", "w_data", "stb", "r_data", "ack")}
        self._s["stb"].value = 0
        self.accesses = 0
        self.last_latency = None

    async def access(self, addr, *, write, data=0, sel=0xF):
        if addr % 4:
            raise ValueError(f"register bus addresses are dword aligned, not {addr:#x}")
        s = self._s
        await RisingEdge(self.clock)
        s["addr"].value = addr
        s["sel"].value = sel
        s["we"].value = int(write)
        s["w_data"].value = data
        s["stb"].value = 1
        cycles = 0
        while True:
            await RisingEdge(self.clock)
            cycles += 1
            if s["ack"].value:
                value = int(s["r_data"].value)
                break
            if cycles > self.timeout_cycles:
                s["stb"].value = 0
                raise TimeoutError(f"no ack for the access at {addr:#x} after {cycles} cycles")
        s["stb"].value = 0
        self.accesses += 1
        self.last_latency = cycles
        return value

    async def read(self, addr, sel=0xF):
        return await self.access(addr, write=False, sel=sel)

    async def write(self, addr, data, sel=0xF):
        await self.access(addr, write=True, data=data, sel=sel)


class StreamDriver:
    """Sends payload values on a DUT input stream (``<prefix>__payload/valid/ready``)."""

    def __init__(self, dut, prefix, clock):
        self.clock = clock
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.valid.value = 0

    async def send(self, payload):
        await RisingEdge(self.clock)
        self.payload.value = payload
        self.valid.value = 1
        while True:
            await RisingEdge(self.clock)
            if self.ready.value:
                break
        self.valid.value = 0


class FunctionPorts:
    """The side ports of :class:`~virtio_pcie.function.pcie_function.PcieFunction` (or a
    design exposing them under the same names)."""

    def __init__(self, dut, clock):
        from virtio_pcie.function.interface import FunctionConfig, FunctionEvents, MsixRequest
        self.dut = dut
        self.clock = clock
        self.cfg_codec = StructCodec(FunctionConfig)
        self.events_codec = StructCodec(FunctionEvents)
        self.msix_codec = StructCodec(MsixRequest)
        self.msix = StreamDriver(dut, "msix", clock)
        self.cfg_port = RegisterBusInitiator(dut, "cfg_port", clock)
        dut.intx.value = 0
        dut.events.value = 0
        self.has_ext_cfg = hasattr(dut, "ext_cfg")
        if self.has_ext_cfg:
            dut.ext_cfg.value = 0

    async def msix_request(self, vector):
        await self.msix.send(self.msix_codec.encode({"vector": vector}))

    def set_intx(self, level):
        self.dut.intx.value = int(level)

    async def pulse_events(self, **names):
        await RisingEdge(self.clock)
        self.dut.events.value = self.events_codec.encode(names)
        await RisingEdge(self.clock)
        self.dut.events.value = 0

    async def config(self):
        """The ``cfg`` output as a dict of FunctionConfig fields."""
        await ReadOnly()
        value = int(self.dut.cfg.value)
        await RisingEdge(self.clock)
        return self.cfg_codec.decode(value)

    def set_ext_cfg(self, **values):
        current = int(self.dut.ext_cfg.value)
        self.dut.ext_cfg.value = self.cfg_codec.encode(values, base=current)
