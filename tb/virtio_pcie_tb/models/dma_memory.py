# SPDX-License-Identifier: BSD-2-Clause
"""Host memory for unit-level DMA models: one 64-bit address space seen two ways.

* As an address space (:meth:`DmaMemory.read`, :meth:`DmaMemory.write`): what a DMA engine
  model (:mod:`.dma_client_model`) serves. Addresses never allocated read as ``fill`` and may be
  written (sparse pages); an access past 2**64 is an error.
* As the DMA API of the host driver model (:meth:`alloc`, :meth:`free`, :meth:`buffer`, returning
  :class:`virtio_pcie_tb.host.memory.DmaBuffer`): so the Linux-faithful
  :class:`virtio_pcie_tb.host.virtqueue.Virtqueue` runs on it without a root complex.
  :meth:`alloc_addr` hands out a bare address (ring builders).

Allocations start above 4 GiB (64-bit DMA addresses) and are never reused unless freed.
"""

import bisect

from ..host.memory import DmaAllocator, DmaBuffer

__all__ = ["DmaMemory"]

_PAGE = 4096
_TOP = 1 << 64


class DmaMemory(DmaAllocator):
    def __init__(self, fill=0, base=0x1_0000_0000):
        super().__init__()
        self._fill = fill
        self._next = base
        self._bases = []         # sorted region start addresses
        self._regions = {}       # start -> bytearray
        self._pages = {}         # sparse storage outside regions

    # -- allocation -------------------------------------------------------------------------------
    def alloc_addr(self, length, align=64):
        """A fresh zeroed region of ``length`` bytes aligned to ``align``; its address."""
        length = max(int(length), 1)
        addr = (self._next + align - 1) // align * align
        self._next = addr + length
        self._regions[addr] = bytearray(length)
        bisect.insort(self._bases, addr)
        return addr

    def _new_buffer(self, size, align):
        addr = self.alloc_addr(size, align)
        return DmaBuffer(addr, size, memoryview(self._regions[addr]))

    # -- the address space -----------------------------------------------------------------------
    @staticmethod
    def _check(addr, length):
        if addr < 0 or length < 0 or addr + length > _TOP:
            raise ValueError(f"access {addr:#x}+{length} outside the 64-bit address space")

    def _pieces(self, addr, length):
        """(storage, offset, n, addr) pieces covering [addr, addr+length)."""
        while length:
            i = bisect.bisect_right(self._bases, addr) - 1
            if i >= 0:
                start = self._bases[i]
                region = self._regions[start]
                if addr < start + len(region):
                    n = min(length, start + len(region) - addr)
                    yield region, addr - start, n
                    addr += n
                    length -= n
                    continue
            limit = self._bases[i + 1] if i + 1 < len(self._bases) else _TOP
            number, offset = divmod(addr, _PAGE)
            n = min(length, _PAGE - offset, limit - addr)
            page = self._pages.get(number)
            if page is None:
                page = self._pages[number] = bytearray([self._fill]) * _PAGE
            yield page, offset, n
            addr += n
            length -= n

    def read(self, addr, length):
        self._check(addr, length)
        return b"".join(bytes(s[o:o + n]) for s, o, n in self._pieces(addr, length))

    def write(self, addr, payload):
        payload = bytes(payload)
        self._check(addr, len(payload))
        i = 0
        for storage, offset, n in self._pieces(addr, len(payload)):
            storage[offset:offset + n] = payload[i:i + n]
            i += n

    def read_u16(self, addr):
        return int.from_bytes(self.read(addr, 2), "little")

    def write_u16(self, addr, value):
        self.write(addr, (value & 0xFFFF).to_bytes(2, "little"))
