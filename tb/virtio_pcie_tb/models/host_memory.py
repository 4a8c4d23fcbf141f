# SPDX-License-Identifier: BSD-2-Clause
"""A sparse 64-bit host memory for DMA models, with a bump allocator.

Unwritten bytes read as a fill byte (0 by default). Addresses wrap at 2**64 only if a caller
asks for it: an access past the top is an error, as a DMA engine would refuse it.
"""

__all__ = ["HostMemory"]

_PAGE = 4096
_TOP = 1 << 64


class HostMemory:
    def __init__(self, fill=0):
        self._pages = {}
        self._fill = fill
        self._next = 0x1_0000_0000          # allocations start above 4 GiB: 64-bit addresses

    def _page(self, number, create):
        page = self._pages.get(number)
        if page is None and create:
            page = self._pages[number] = bytearray([self._fill]) * _PAGE
        return page

    @staticmethod
    def _check(addr, length):
        if addr < 0 or length < 0 or addr + length > _TOP:
            raise ValueError(f"access {addr:#x}+{length} outside the 64-bit address space")

    def read(self, addr, length):
        self._check(addr, length)
        out = bytearray()
        while length:
            number, offset = divmod(addr, _PAGE)
            n = min(length, _PAGE - offset)
            page = self._page(number, False)
            out += page[offset:offset + n] if page is not None else bytes([self._fill]) * n
            addr += n
            length -= n
        return bytes(out)

    def write(self, addr, payload):
        payload = bytes(payload)
        self._check(addr, len(payload))
        i = 0
        while i < len(payload):
            number, offset = divmod(addr + i, _PAGE)
            n = min(len(payload) - i, _PAGE - offset)
            self._page(number, True)[offset:offset + n] = payload[i:i + n]
            i += n

    def read_u16(self, addr):
        return int.from_bytes(self.read(addr, 2), "little")

    def write_u16(self, addr, value):
        self.write(addr, (value & 0xFFFF).to_bytes(2, "little"))

    def read_u32(self, addr):
        return int.from_bytes(self.read(addr, 4), "little")

    def alloc(self, length, align=64):
        """A fresh, zeroed, ``align``-aligned region; never reused."""
        addr = (self._next + align - 1) // align * align
        self._next = addr + max(length, 1)
        return addr
