# SPDX-License-Identifier: BSD-2-Clause
"""Helpers shared by the Xilinx 7-series receive and transmit paths: a queue of dword entries.

Both directions re-pack TLPs between the hard IP's beats (header and payload dwords back to back)
and the project's beats (header apart, payload from lane 0). Both do it the same way: entries (a
dword and a few flags) are appended to a short queue held in one wide register, and taken from
its head. Entries past ``count`` are kept zero, so that appending is an OR at a variable shift and
taking is a variable right shift; no entry ever moves more than once per cycle.
"""

from amaranth import Cat, Const, Mux, Signal
from amaranth.lib import data

__all__ = ["DwordQueue", "byteswap32", "first_set", "popcount", "mux_entries"]


def byteswap32(value):
    """Reverse the bytes of a 32-bit value (the hard IP's payload dwords ↔ address order)."""
    return Cat(value[24:32], value[16:24], value[8:16], value[0:8])


def first_set(m, bits, name):
    """(any, index) of the lowest set bit of ``bits`` (a priority encoder)."""
    found = Signal(name=f"{name}_found")
    index = Signal(range(max(2, len(bits))), name=f"{name}_index")
    for i in reversed(range(len(bits))):
        with m.If(bits[i]):
            m.d.comb += [found.eq(1), index.eq(i)]
    return found, index


class DwordQueue:
    """A queue of up to ``capacity`` entries of ``layout``, in a register.

    Use from an ``elaborate()``: read :meth:`entry` and :attr:`count`; set :attr:`pop` (entries
    taken from the head this cycle), :attr:`push` (a vector of entries, packed from entry 0 and
    zero past :attr:`push_count`) and :attr:`push_count`; then call :meth:`elaborate`.
    """

    def __init__(self, layout, capacity, max_push, name):
        self.layout = data.Layout.cast(layout)
        self.entry_bits = self.layout.size
        self.capacity = capacity
        self.name = name
        self.buf = Signal(capacity * self.entry_bits, name=f"{name}_buf")
        self.count = Signal(range(capacity + 1), name=f"{name}_count")
        self.pop = Signal(range(capacity + 1), name=f"{name}_pop")
        self.push = Signal(max_push * self.entry_bits, name=f"{name}_push")
        self.push_count = Signal(range(max_push + 1), name=f"{name}_push_count")

    def entry(self, index):
        """Entry ``index`` (a constant) as a view of ``layout``."""
        e = self.entry_bits
        return data.View(self.layout, self.buf[index * e:(index + 1) * e])

    def field_bits(self, field):
        """A vector with bit ``j`` = 1-bit ``field`` of entry ``j``, for every entry."""
        return Cat(self.entry(j)[field] for j in range(self.capacity))

    def valid_mask(self):
        """Bit ``j`` set when entry ``j`` is occupied."""
        return Cat(Const(j, range(self.capacity + 1)) < self.count for j in range(self.capacity))

    def elaborate(self, m):
        e = self.entry_bits
        kept = Signal(range(self.capacity + 1), name=f"{self.name}_kept")
        m.d.comb += kept.eq(self.count - self.pop)
        # Entries past ``count`` are zero: shifting right brings zeros in at the top, and the
        # pushed vector is zero past ``push_count``; so OR places the new entries after the old.
        shifted = Signal.like(self.buf, name=f"{self.name}_shifted")
        m.d.comb += shifted.eq(self.buf >> (self.pop * e))
        m.d.sync += [
            self.buf.eq(shifted | (self.push << (kept * e))),
            self.count.eq(kept + self.push_count),
        ]
        return kept


def popcount(bits):
    total = Const(0, range(len(bits) + 1))
    for b in bits:
        total = total + b
    return total


def mux_entries(select, choices):
    """``choices[select]`` for a small list of equally wide values."""
    result = choices[-1]
    for i in reversed(range(len(choices) - 1)):
        result = Mux(select == i, choices[i], result)
    return result

