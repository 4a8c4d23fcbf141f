# SPDX-License-Identifier: BSD-2-Clause
"""Bytes ↔ fields for the spec layouts, derived once from :mod:`virtio_pcie.spec`.

The verification models read and write thousands of descriptors, ring entries and register
fields; building an Amaranth constant for each would be slow. :class:`StructCodec` walks a
:class:`~amaranth.lib.data.StructLayout` once and keeps each field's byte offset and size (nested
structures as dotted names, arrays as byte strings), so ``codec.pack(addr=..., len=...)`` is
byte-identical to ``Layout.const({...})`` without repeating a single offset by hand.
"""

import enum as py_enum
from functools import cache

from amaranth.lib import data

from virtio_pcie.spec.pcie import byte_size

__all__ = ["StructCodec", "codec"]


def _byte_aligned(layout):
    return all(f.offset % 8 == 0 and f.width % 8 == 0 for _, f in layout)


class StructCodec:
    """Byte-level view of a little-endian, byte-aligned :class:`StructLayout`. A nested
    structure whose own fields are not byte aligned (a register with bit fields) is one
    integer field."""

    def __init__(self, layout):
        self.layout = layout
        self.size = byte_size(layout)
        self.fields = {}          # name -> (byte offset, byte size, is_array)
        self._collect(layout, "", 0)

    def _collect(self, layout, prefix, base):
        for name, field in layout:
            if field.offset % 8 or field.width % 8:
                raise ValueError(f"{prefix}{name} of {layout!r} is not byte aligned")
            offset = base + field.offset // 8
            shape = field.shape
            if isinstance(shape, data.StructLayout) and _byte_aligned(shape):
                self._collect(shape, f"{prefix}{name}.", offset)
            else:
                is_array = isinstance(shape, data.ArrayLayout)
                self.fields[f"{prefix}{name}"] = (offset, field.width // 8, is_array)

    def offset(self, name):
        """Byte offset of field ``name`` (dotted for nested fields)."""
        return self.fields[name][0]

    def field_size(self, name):
        return self.fields[name][1]

    def field_at(self, offset):
        """The field covering byte ``offset``, or None."""
        for name, (start, size, _) in self.fields.items():
            if start <= offset < start + size:
                return name
        return None

    def pack(self, **values):
        """Bytes of the structure; absent fields are 0. Dotted names use ``__`` in keywords."""
        raw = bytearray(self.size)
        for key, value in values.items():
            self.put(raw, key.replace("__", "."), value)
        return bytes(raw)

    def put(self, raw, name, value):
        """Store ``value`` into field ``name`` of the byte buffer ``raw``."""
        try:
            offset, size, is_array = self.fields[name]
        except KeyError:
            raise KeyError(f"{self.layout!r} has no field {name!r}") from None
        if is_array:
            value = bytes(value)
            if len(value) != size:
                raise ValueError(f"{name} takes {size} bytes, not {len(value)}")
            raw[offset:offset + size] = value
            return
        if isinstance(value, py_enum.Enum):
            value = value.value
        value = int(value)
        if not 0 <= value < (1 << (8 * size)):
            raise ValueError(f"{name} is {8 * size} bits; {value:#x} does not fit")
        raw[offset:offset + size] = value.to_bytes(size, "little")

    def get(self, raw, name):
        offset, size, is_array = self.fields[name]
        chunk = bytes(raw[offset:offset + size])
        return chunk if is_array else int.from_bytes(chunk, "little")

    def unpack(self, raw):
        """A dict of every field of ``raw`` (at least :attr:`size` bytes)."""
        if len(raw) < self.size:
            raise ValueError(f"{self.layout!r} needs {self.size} bytes, got {len(raw)}")
        return {name: self.get(raw, name) for name in self.fields}


@cache
def codec(layout):
    """The (cached) :class:`StructCodec` of ``layout``."""
    return StructCodec(layout)
