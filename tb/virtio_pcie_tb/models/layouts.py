# SPDX-License-Identifier: BSD-2-Clause
"""Packing :mod:`amaranth.lib.data` layouts to integers and bytes, and back, in Python.

The testbench builds stream payloads and in-memory structures (virtio headers, DMA requests)
from the same layouts as the gateware, without an Amaranth ``Const`` per beat; and, unlike
``Layout.const()``, it accepts any integer for an enum field, so tests can send values the
specification does not define. Nested fields are written with dots: ``"topology.min_io_size"``.
"""

import enum
from types import SimpleNamespace

from amaranth.lib import data

__all__ = ["fields", "pack", "unpack", "pack_bytes", "unpack_bytes", "byte_size"]

_CACHE = {}


def fields(layout):
    """``{dotted name: (bit offset, width)}`` for every leaf field of ``layout``."""
    key = id(layout)
    if key not in _CACHE:
        out = {}

        def walk(lay, prefix, base):
            for name, fld in lay:
                shape = fld.shape
                full = f"{prefix}{name}"
                if isinstance(shape, data.StructLayout):
                    walk(shape, full + ".", base + fld.offset)
                else:
                    out[full] = (base + fld.offset, fld.width)
        walk(layout, "", 0)
        _CACHE[key] = (layout, out)
    return _CACHE[key][1]


def pack(layout, values=None, **kwargs):
    """An integer with the given fields set (others zero)."""
    table = fields(layout)
    result = 0
    for name, value in {**(values or {}), **kwargs}.items():
        offset, width = table[name]
        if isinstance(value, enum.Enum):
            value = value.value
        value = int(value)
        if not 0 <= value < (1 << width):
            raise ValueError(f"{name} = {value} does not fit {width} bits")
        result |= value << offset
    return result


def unpack(layout, value):
    """A namespace with every leaf field of ``layout`` (dots become nested namespaces)."""
    root = SimpleNamespace()
    for name, (offset, width) in fields(layout).items():
        node = root
        parts = name.split(".")
        for part in parts[:-1]:
            if not hasattr(node, part):
                setattr(node, part, SimpleNamespace())
            node = getattr(node, part)
        setattr(node, parts[-1], (value >> offset) & ((1 << width) - 1))
    return root


def byte_size(layout):
    return (data.Layout.cast(layout).size + 7) // 8


def pack_bytes(layout, values=None, **kwargs):
    """The little-endian bytes of :func:`pack` (the C struct in memory)."""
    return pack(layout, values, **kwargs).to_bytes(byte_size(layout), "little")


def unpack_bytes(layout, raw):
    return unpack(layout, int.from_bytes(raw, "little"))
