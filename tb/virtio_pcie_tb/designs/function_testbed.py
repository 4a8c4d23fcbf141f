# SPDX-License-Identifier: BSD-2-Clause
"""The PCI function with simple register blocks on its virtio windows, for testing it alone.

::

    rx_req/tx_cpl/tx_req ══ PcieFunction ══ common ── TestRegisterBlock (latency 0)
    rx_cpl (always ready)        │          isr    ── TestRegisterBlock (latency 1, ISR-like)
    dma_req, msix, intx, events  │          device ── TestRegisterBlock (latency 2)
    cfg, cfg_port, ext_cfg ──────┘          notify ── TestRegisterBlock (latency 0)
                                            legacy ── TestRegisterBlock (latency 1)

Each :class:`TestRegisterBlock` has up to :data:`RAM_DWORDS` read/write dwords from offset 0, a
read-to-clear dword at the end of its window (in the 4-byte ``isr`` window that is offset 0, as
virtio's ISR status) and answers every other address with a pattern that names the window and
the address, so that tests see which dword an access reached. :func:`block_model` is its Python
twin.
The design's parameters are JSON (for the harness); :func:`layout_from_params` rebuilds the
layout from them in the cocotb process.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from virtio_pcie.function.config_space import CONFIG_ADDR_WIDTH
from virtio_pcie.function.interface import FunctionConfig, FunctionEvents, MsixRequestSignature
from virtio_pcie.function.layout import FunctionLayout
from virtio_pcie.function.pcie_function import PcieFunction
from virtio_pcie.function.register_bus import RegisterBusSignature
from virtio_pcie.tlp.signature import TlpSignature

__all__ = ["FunctionTestbed", "TestRegisterBlock", "layout_from_params", "block_model",
           "block_plan", "BLOCKS", "RAM_DWORDS", "LAYOUT_PARAMS"]

RAM_DWORDS = 16
#: Per window: (tag in the read pattern, ack latency in cycles).
BLOCKS = {
    "common": (0x1, 0),
    "isr":    (0x2, 1),
    "device": (0x3, 2),
    "notify": (0x4, 0),
    "legacy": (0x5, 1),
}
LAYOUT_PARAMS = ("device_type", "transitional", "queue_count", "msix_vectors",
                 "notify_off_multiplier", "device_cfg_length", "config_mode", "ext_cap_pointer",
                 "max_payload_size")


def layout_from_params(params):
    return FunctionLayout(**{k: v for k, v in params.items() if k in LAYOUT_PARAMS})


def block_plan(addr_width):
    """(RAM dwords, read-to-clear dword) of a block with a window of ``2**addr_width`` bytes:
    the read-to-clear register is the last dword (the only one in a 4-byte ISR window), RAM
    fills the dwords before it, up to :data:`RAM_DWORDS`."""
    dwords = 1 << (addr_width - 2)
    return min(RAM_DWORDS, dwords - 1), dwords - 1


def pattern(tag, addr):
    """What a test block reads at an address it does not implement."""
    return (0xA5 << 24) | (tag << 20) | (addr & 0xFFFFF)


class block_model:
    """Python twin of :class:`TestRegisterBlock` (``addr_width`` of its window), for
    expectations. Addresses at or beyond the window's size are outside the block: the rest of
    the page decodes to nothing, reads 0 and ignores writes."""

    def __init__(self, name, addr_width):
        self.tag, self.latency = BLOCKS[name]
        self.size = 1 << addr_width
        self.ram_dwords, self.rc_dword = block_plan(addr_width)
        self.ram = [0] * self.ram_dwords
        self.rc = 0

    @property
    def rc_offset(self):
        return 4 * self.rc_dword

    def read(self, addr, sel=0xF):
        if addr >= self.size:
            return 0
        index = addr // 4
        if index == self.rc_dword:
            value = self.rc
            mask = sum(0xFF << (8 * i) for i in range(4) if sel >> i & 1)
            self.rc &= ~mask
            return value
        if index < self.ram_dwords:
            return self.ram[index]
        return pattern(self.tag, addr)

    def peek(self, addr):
        if addr >= self.size:
            return 0
        index = addr // 4
        if index == self.rc_dword:
            return self.rc
        if index < self.ram_dwords:
            return self.ram[index]
        return pattern(self.tag, addr)

    def write(self, addr, data, sel=0xF):
        if addr >= self.size:
            return
        index = addr // 4
        mask = sum(0xFF << (8 * i) for i in range(4) if sel >> i & 1)
        if index == self.rc_dword:
            self.rc = (self.rc & ~mask) | (data & mask)
        elif index < self.ram_dwords:
            self.ram[index] = (self.ram[index] & ~mask) | (data & mask)


class TestRegisterBlock(wiring.Component):
    """RAM registers, one read-to-clear register and a read pattern, behind a register bus.

    Members
    -------
    bus : In(RegisterBusSignature(addr_width))
    """

    def __init__(self, *, addr_width, tag, latency):
        self._addr_width = addr_width
        self._tag = tag
        self._latency = latency
        self._ram_dwords, self._rc_dword = block_plan(addr_width)
        super().__init__({"bus": In(RegisterBusSignature(addr_width))})

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        ram = [Signal(32, name=f"ram{i}") for i in range(self._ram_dwords)]
        rc = Signal(32)
        index = bus.addr[2:]
        mask = Cat(*(bus.sel[i].replicate(8) for i in range(4)))

        # Acknowledge after `latency` cycles of stb (0: in the first cycle).
        ack = Signal()
        if self._latency == 0:
            m.d.comb += ack.eq(bus.stb)
        else:
            count = Signal(range(self._latency + 1))
            with m.If(bus.stb & (count == self._latency)):
                m.d.comb += ack.eq(1)
                m.d.sync += count.eq(0)
            with m.Elif(bus.stb):
                m.d.sync += count.eq(count + 1)
        m.d.comb += bus.ack.eq(ack)

        read = Signal(32)
        m.d.comb += read.eq((0xA5 << 24) | (self._tag << 20) | bus.addr[:20]
                            if self._addr_width >= 20 else
                            (0xA5 << 24) | (self._tag << 20) | bus.addr)
        for i in range(self._ram_dwords):
            with m.If(index == i):
                m.d.comb += read.eq(ram[i])
                with m.If(ack & bus.we):
                    m.d.sync += ram[i].eq((ram[i] & ~mask) | (bus.w_data & mask))
        with m.If(index == self._rc_dword):
            m.d.comb += read.eq(rc)
            with m.If(ack):
                # Reading clears the bytes read; writing sets the register.
                m.d.sync += rc.eq(Mux(bus.we, (rc & ~mask) | (bus.w_data & mask), rc & ~mask))
        m.d.comb += bus.r_data.eq(read)
        return m


class FunctionTestbed(wiring.Component):
    """:class:`PcieFunction` with a :class:`TestRegisterBlock` on every virtio window.

    Parameters: ``data_width`` and the :class:`FunctionLayout` parameters (:data:`LAYOUT_PARAMS`).
    """

    def __init__(self, *, data_width, **layout_params):
        self._layout = layout_from_params(layout_params)
        self._data_width = data_width
        members = {
            "rx_req":   In(TlpSignature(data_width)),
            "tx_cpl":   Out(TlpSignature(data_width)),
            "tx_req":   Out(TlpSignature(data_width)),
            "rx_cpl":   In(TlpSignature(data_width)),
            "dma_req":  In(TlpSignature(data_width)),
            "cfg":      Out(FunctionConfig),
            "events":   In(FunctionEvents),
            "msix":     In(MsixRequestSignature()),
            "intx":     In(1),
            "cfg_port": In(RegisterBusSignature(CONFIG_ADDR_WIDTH)),
        }
        if self._layout.config_mode == "ext":
            members["ext_cfg"] = In(FunctionConfig)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        layout = self._layout
        m.submodules.function = function = PcieFunction(layout=layout,
                                                        data_width=self._data_width)
        for name in ("rx_req", "dma_req", "msix", "cfg_port"):
            connect(m, flipped(getattr(self, name)), getattr(function, name))
        for name in ("tx_cpl", "tx_req"):
            connect(m, getattr(function, name), flipped(getattr(self, name)))
        m.d.comb += [
            self.cfg.eq(function.cfg),
            function.events.eq(self.events),
            function.intx.eq(self.intx),
            self.rx_cpl.ready.eq(1),
        ]
        if layout.config_mode == "ext":
            m.d.comb += function.ext_cfg.eq(self.ext_cfg)
        for name, window in layout.register_windows.items():
            tag, latency = BLOCKS[name]
            block = TestRegisterBlock(addr_width=window.addr_width, tag=tag, latency=latency)
            m.submodules[f"{name}_block"] = block
            connect(m, getattr(function, name), block.bus)
        return m
