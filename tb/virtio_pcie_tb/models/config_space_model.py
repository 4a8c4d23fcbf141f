# SPDX-License-Identifier: BSD-2-Clause
"""A Python model of the function's configuration space, from its :class:`FunctionLayout`.

It applies configuration writes the way the specification says each field behaves (RO ignored,
RW merged by byte enables unless the value is not legal, RW1C cleared by ones) and answers reads
with what the RTL must return, so tests compare the RTL with it dword for dword. The
``pci_cfg_data`` window and hardware-driven bits are not modelled here: :meth:`read` takes their
current values from the caller.
"""

from virtio_pcie.function.layout import Access
from virtio_pcie.spec.pcie import CONFIG_SPACE_SIZE

__all__ = ["ConfigSpaceModel"]


class ConfigSpaceModel:
    def __init__(self, layout):
        self.layout = layout
        self.values = {f.name: f.value for f in layout.config_fields}
        self._by_dword = {}
        for f in layout.config_fields:
            self._by_dword.setdefault(f.dword, []).append(f)

    def fields_in(self, dword):
        return self._by_dword.get(dword, [])

    def read(self, dword, hw=None):
        """The dword at index ``dword``; ``hw`` maps HW/window field names to values."""
        hw = hw or {}
        value = 0
        for f in self.fields_in(dword):
            v = hw.get(f.name, self.values[f.name]) if f.access in (Access.HW, Access.WINDOW) \
                else self.values[f.name]
            value |= v << f.shift
        return value

    def write(self, dword, data, be=0xF):
        """Apply a configuration write; the window field is left to the caller."""
        if not 0 <= dword < CONFIG_SPACE_SIZE // 4:
            raise ValueError(dword)
        for f in self.fields_in(dword):
            mask = 0
            for lane in range(4):
                if be >> lane & 1:
                    mask |= 0xFF << (8 * lane)
            field_mask = ((1 << f.width) - 1) << f.shift
            written = ((data & mask) >> f.shift) & ((1 << f.width) - 1)
            selected = ((mask & field_mask) >> f.shift)
            if not selected:
                continue
            old = self.values[f.name]
            if f.access == Access.RW:
                new = (old & ~selected) | written
                if f.legal is None or new in f.legal:
                    self.values[f.name] = new
            elif f.access == Access.RW1C:
                self.values[f.name] = old & ~written

    def set(self, name, value):
        self.values[name] = value

    def get(self, name):
        return self.values[name]

    def read_bytes(self, offset, length, hw=None):
        out = bytearray()
        for byte in range(offset, offset + length):
            out.append((self.read(byte // 4, hw) >> (8 * (byte % 4))) & 0xFF)
        return bytes(out)
