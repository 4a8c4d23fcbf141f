# SPDX-License-Identifier: BSD-2-Clause
"""Stream payloads (any :mod:`amaranth.lib.data` layout, bit fields included) to and from
integers, fast enough for testbenches.

``Layout.const(...)`` builds Amaranth objects for every value; a driver packing a stream beat
every cycle wants plain shifts. :class:`BitFields` takes the field offsets from the layout
once. (Byte-aligned memory structures have :mod:`virtio_pcie_tb.codec`.)
"""

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["BitFields"]


class BitFields:
    """Packs and unpacks a layout's fields to and from an integer, without Amaranth objects on
    the hot path."""

    def __init__(self, shape):
        self.fields = []               # (dotted name, offset, width)
        if isinstance(shape, data.Layout):
            self._walk(shape, "", 0)
        else:
            self.fields.append(("", 0, Shape.cast(shape).width))
        self.width = Shape.cast(shape).width

    def _walk(self, layout, prefix, base):
        for name, field in layout:
            shape = field.shape
            if isinstance(shape, data.StructLayout):
                self._walk(shape, f"{prefix}{name}.", base + field.offset)
            else:
                self.fields.append((f"{prefix}{name}", base + field.offset, field.width))

    def encode(self, values):
        if not isinstance(values, dict):
            return int(values) & ((1 << self.width) - 1)
        raw = 0
        for name, offset, width in self.fields:
            v = values.get(name, 0)
            raw |= (int(v) & ((1 << width) - 1)) << offset
        unknown = set(values) - {name for name, _, _ in self.fields}
        if unknown:
            raise KeyError(f"no fields {sorted(unknown)} in this layout")
        return raw

    def decode(self, raw):
        if len(self.fields) == 1 and self.fields[0][0] == "":
            return raw
        return {name: (raw >> offset) & ((1 << width) - 1)
                for name, offset, width in self.fields}
