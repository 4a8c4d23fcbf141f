# SPDX-License-Identifier: BSD-2-Clause
"""The virtio-net device configuration structure, as a register block (virtio 1.2 §5.1.4).

``struct virtio_net_config`` (:data:`~virtio_pcie.spec.virtio.VirtioNetConfig`): ``mac`` (the
current address: the configured one after reset, or the last VIRTIO_NET_CTRL_MAC_ADDR_SET),
``status`` (VIRTIO_NET_S_LINK_UP follows the ``link_up`` input), ``max_virtqueue_pairs``,
``mtu``; ``speed`` reads SPEED_UNKNOWN (0xFFFFFFFF) and ``duplex`` DUPLEX_UNKNOWN (0xFF), as QEMU
reports them without VIRTIO_NET_F_SPEED_DUPLEX; the RSS fields read 0. The structure is
read-only with VIRTIO_F_VERSION_1 (writes are acknowledged and ignored). A change of
``link_up`` strobes ``changed`` (the transport then raises a configuration interrupt).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..function.register_bus import RegisterBusSignature
from ..spec.ethernet import ETH_ALEN
from ..spec.virtio import VirtioNetConfig, VirtioNetStatus, byte_size
from .net_interface import MAC_BITS

__all__ = ["NetConfigRegisters", "NET_SPEED_UNKNOWN", "NET_DUPLEX_UNKNOWN"]

NET_SPEED_UNKNOWN  = 0xFFFF_FFFF        # Linux SPEED_UNKNOWN
NET_DUPLEX_UNKNOWN = 0xFF               # Linux DUPLEX_UNKNOWN


class NetConfigRegisters(wiring.Component):
    """Serves ``virtio_net_config`` on the device configuration window.

    Parameters
    ----------
    queue_pairs : int
    mtu : int
    addr_width : int
        Width of the window's byte address.

    Members
    -------
    bus : In(RegisterBusSignature(addr_width))
        Answers every access in the cycle after it starts; bytes past the structure read 0.
    mac : In(48)
    link_up : In(1)
    changed : Out(1)
        Strobe: ``link_up`` changed.
    """

    def __init__(self, *, queue_pairs, mtu, addr_width=8):
        if (1 << addr_width) < byte_size(VirtioNetConfig):
            raise ValueError(f"addr_width {addr_width} cannot address the "
                             f"{byte_size(VirtioNetConfig)}-byte configuration structure")
        self._pairs = queue_pairs
        self._mtu = mtu
        super().__init__({
            "bus":     In(RegisterBusSignature(addr_width)),
            "mac":     In(MAC_BITS),
            "link_up": In(1),
            "changed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        size = byte_size(VirtioNetConfig)
        dwords = -(-size // 4)

        cfg = Signal(VirtioNetConfig)
        m.d.comb += [
            cfg.status.eq(Mux(self.link_up, VirtioNetStatus.LINK_UP.value, 0)),
            cfg.max_virtqueue_pairs.eq(self._pairs),
            cfg.mtu.eq(self._mtu),
            cfg.speed.eq(NET_SPEED_UNKNOWN),
            cfg.duplex.eq(NET_DUPLEX_UNKNOWN),
        ]
        for i in range(ETH_ALEN):
            m.d.comb += cfg.mac[i].eq(self.mac[8 * (ETH_ALEN - 1 - i):8 * (ETH_ALEN - i)])
        pad = 32 * dwords - 8 * size
        words = Cat(cfg.as_value(), Const(0, pad)) if pad else cfg.as_value()

        bus = self.bus
        index = bus.addr >> 2
        with m.If(bus.stb & ~bus.ack):
            m.d.sync += [
                bus.ack.eq(1),
                bus.r_data.eq(0),
            ]
            with m.If(~bus.we & (index < dwords)):
                m.d.sync += bus.r_data.eq(words.word_select(index, 32))
        with m.Else():
            m.d.sync += bus.ack.eq(0)

        # A change, not the first sample after reset, is a configuration change.
        link_was = Signal()
        primed = Signal()
        m.d.sync += [link_was.eq(self.link_up), primed.eq(1)]
        m.d.comb += self.changed.eq(primed & (link_was != self.link_up))
        return m
