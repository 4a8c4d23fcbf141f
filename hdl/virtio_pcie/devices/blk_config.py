# SPDX-License-Identifier: BSD-2-Clause
"""The virtio-blk device configuration structure as a register block (virtio 1.2 §5.2.4)."""

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..function.register_bus import RegisterBusSignature
from ..spec.virtio import VirtioBlkConfig, byte_offset, byte_size

__all__ = ["BlkConfigSpace", "check_config_fields"]


def check_config_fields(fields, layout=VirtioBlkConfig, prefix=""):
    """Raise ``ValueError`` unless every value in ``fields`` (nested dicts for nested structs)
    names a field of ``layout`` and fits its width (``Layout.const`` would truncate)."""
    if not isinstance(fields, dict):
        raise ValueError(f"fields must be a dict, not {fields!r}")
    for name, value in fields.items():
        try:
            fld = layout[name]
        except KeyError:
            raise ValueError(f"virtio_blk_config has no field {prefix}{name!r}") from None
        if isinstance(fld.shape, data.StructLayout):
            check_config_fields(value, fld.shape, f"{prefix}{name}.")
        elif not isinstance(value, int) or not 0 <= value < (1 << fld.width):
            raise ValueError(f"virtio_blk_config field {prefix}{name} is {fld.width} bits; "
                             f"{value!r} does not fit")


class BlkConfigSpace(wiring.Component):
    """``struct virtio_blk_config`` behind a register bus target.

    Every field is laid out by :data:`~virtio_pcie.spec.virtio.VirtioBlkConfig`. All fields are
    read-only constants except ``capacity`` (from an input, so it can change at run time) and
    ``writeback`` (virtio 1.2 §5.2.4, VIRTIO_BLK_F_CONFIG_WCE: the driver may write it; it
    reads 0, write-through, after reset). Accesses are acknowledged one cycle after ``stb``;
    reads beyond the structure return zero; writes to anything but ``writeback`` are ignored.

    Parameters
    ----------
    fields : dict
        Constant field values, as accepted by ``VirtioBlkConfig.const()`` (``capacity`` and
        ``writeback`` are ignored here).
    writeback_writable : bool
        Whether the driver may write ``writeback`` (VIRTIO_BLK_F_CONFIG_WCE offered).
    addr_width : int
        Address width of the register window (the structure is 0x60 bytes).

    Members
    -------
    bus : In(RegisterBusSignature(addr_width))
    capacity : In(64)
        The capacity in 512-byte sectors, as shown to the driver.
    writeback : Out(1)
        The cache mode the driver chose (0 write-through, 1 write-back).
    reset : In(1)
        Device reset: ``writeback`` returns to 0.
    """

    def __init__(self, *, fields, writeback_writable, addr_width=8):
        if (1 << addr_width) < byte_size(VirtioBlkConfig):
            raise ValueError(f"addr_width {addr_width!r} cannot address the "
                             f"{byte_size(VirtioBlkConfig)}-byte structure")
        check_config_fields(fields)
        self._const = VirtioBlkConfig.const(fields).as_value().value
        self._writeback_writable = bool(writeback_writable)
        super().__init__({
            "bus":       In(RegisterBusSignature(addr_width)),
            "capacity":  In(64),
            "writeback": Out(1),
            "reset":     In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        value = Signal(VirtioBlkConfig)
        m.d.comb += [
            value.as_value().eq(self._const),
            value.capacity.eq(self.capacity),
            value.writeback.eq(self.writeback),
        ]
        dwords = data.ArrayLayout(32, byte_size(VirtioBlkConfig) // 4)
        words = data.View(dwords, value.as_value())
        index = bus.addr[2:]
        with m.If(index < dwords.length):
            m.d.comb += bus.r_data.eq(words[index])

        ack = Signal()
        m.d.sync += ack.eq(bus.stb & ~ack)
        m.d.comb += bus.ack.eq(ack)

        wb_offset = byte_offset(VirtioBlkConfig, "writeback")
        with m.If(self.reset):
            m.d.sync += self.writeback.eq(0)
        elif_write = (ack & bus.stb & bus.we & (index == wb_offset // 4) &
                      bus.sel[wb_offset % 4])
        if self._writeback_writable:
            with m.Elif(elif_write):
                m.d.sync += self.writeback.eq(bus.w_data.word_select(wb_offset % 4, 8)[0])
        return m
