# SPDX-License-Identifier: BSD-2-Clause
"""Host memory for fuzz runs: two backed blocks of the root complex's address space.

A fuzz process runs thousands of runs against one root complex. The host model's
:class:`~virtio_pcie_tb.host.memory.HostMemory` takes a new region of the root complex's pool for
every new buffer size, and the pool's address space looks regions up in a list, so thousands of
runs would slow every DMA access down. :class:`FuzzMemory` instead owns two fixed blocks, one
below 4 GiB (32-bit DMA addresses) and one far above (64-bit ones), and hands out addresses
from them with a bump allocator that :meth:`FuzzMemory.reset` rewinds at the start of each run.

It speaks both memory interfaces of the verification package:

* the host model's DMA API (:meth:`alloc`, :meth:`free`, :meth:`buffer`, returning
  :class:`~virtio_pcie_tb.host.memory.DmaBuffer`), so the Linux-faithful drivers run on it;
* the address-space API of :class:`~virtio_pcie_tb.models.dma_memory.DmaMemory`
  (:meth:`alloc_addr`, :meth:`read`, :meth:`write`, :meth:`read_u16`, :meth:`write_u16`), so the
  ring builder (:class:`~virtio_pcie_tb.models.virtq_ring.SplitRing`) writes rings into it.

Each allocation picks one of the two blocks at random (seeded), so rings, tables and buffers of
one request mix 32- and 64-bit addresses.
"""

from cocotbext.axi.address_space import MemoryRegion

from ..host.memory import DmaAllocator, DmaBuffer

__all__ = ["FuzzMemory", "HIGH_BASE"]

#: Base of the block above 4 GiB (64-bit DMA addresses, 4-DW request headers).
HIGH_BASE = 0x0000_0002_0000_0000


class _Block:
    def __init__(self, base, mem):
        self.base = base
        self.mem = mem          # bytearray
        self.size = len(mem)
        self.next = 64          # never hand out the block's first bytes

    def alloc(self, length, align):
        addr = (self.base + self.next + align - 1) // align * align
        end = addr + max(length, 1)
        if end > self.base + self.size:
            return None
        self.next = end - self.base
        return addr

    def contains(self, addr, length):
        return self.base <= addr and addr + length <= self.base + self.size


class FuzzMemory(DmaAllocator):
    """Two memory blocks of ``size`` bytes each in ``rc``'s memory space.

    Parameters
    ----------
    rc : cocotbext.pcie.core.RootComplex
    size : int
        Bytes per block.
    rng : random.Random
        Chooses the block of each allocation (replace it with :meth:`reset`).
    """

    def __init__(self, rc, *, size=8 << 20, rng=None):
        low = rc.mem_pool.alloc_region(size)
        high = MemoryRegion(size)
        rc.mem_address_space.register_region(high, HIGH_BASE)
        self.blocks = [_Block(low.get_absolute_address(0), low.mem),
                       _Block(HIGH_BASE, high.mem)]
        self.rng = rng
        self.high_share = 0.5
        super().__init__()
        self.allocated_bytes = 0

    def reset(self, rng, *, high_share=0.5):
        """Forget every allocation (a new run); ``high_share`` of them go above 4 GiB."""
        self.rng = rng
        self.high_share = high_share
        for block in self.blocks:
            # Zeroed whole: a device reading past what was allocated (a descriptor index out of
            # range, a huge length) must see the same bytes whatever the earlier runs left.
            block.mem[:] = bytes(len(block.mem))
            block.next = 64
        self._free = {}
        self.allocated_bytes = 0

    # -- the address-space view ---------------------------------------------------------------
    def _block(self, addr, length):
        for block in self.blocks:
            if block.contains(addr, length):
                return block
        raise ValueError(f"access {addr:#x}+{length} outside the fuzz memory")

    def contains(self, addr, length=1):
        return any(b.contains(addr, length) for b in self.blocks)

    def alloc_addr(self, length, align=64):
        """A zeroed area of ``length`` bytes aligned to ``align``; its bus address."""
        order = [self.blocks[1], self.blocks[0]]
        if self.rng is not None and self.rng.random() >= self.high_share:
            order.reverse()
        for block in order:
            addr = block.alloc(length, align)
            if addr is not None:
                off = addr - block.base
                block.mem[off:off + max(length, 1)] = bytes(max(length, 1))
                self.allocated_bytes += length
                return addr
        raise MemoryError(f"fuzz memory exhausted ({length} bytes wanted)")

    def extend(self, addr, length, new_length):
        """Grow the allocation of ``length`` bytes at ``addr`` to ``new_length`` bytes (zeroed).

        Only the last allocation of its block can grow: nothing else may lie in the new bytes.
        """
        block = self._block(addr, max(length, 1))
        end = addr + max(length, 1) - block.base
        if block.next != end:
            raise ValueError(f"{addr:#x}+{length} is not the last allocation of its block")
        if new_length <= length:
            return
        if not block.contains(addr, new_length):
            raise MemoryError(f"fuzz memory exhausted ({new_length} bytes wanted)")
        block.mem[end:addr + new_length - block.base] = bytes(addr + new_length - block.base
                                                              - end)
        self.allocated_bytes += new_length - length
        block.next = addr + new_length - block.base

    def read(self, addr, length):
        block = self._block(addr, length)
        off = addr - block.base
        return bytes(block.mem[off:off + length])

    def write(self, addr, data):
        block = self._block(addr, len(data))
        off = addr - block.base
        block.mem[off:off + len(data)] = data

    def read_u16(self, addr):
        return int.from_bytes(self.read(addr, 2), "little")

    def write_u16(self, addr, value):
        self.write(addr, (value & 0xFFFF).to_bytes(2, "little"))

    # -- the host model's DMA API (DmaAllocator) -----------------------------------------------
    def _new_buffer(self, size, align):
        addr = self.alloc_addr(size, align)
        block = self._block(addr, size)
        off = addr - block.base
        return DmaBuffer(addr, size, memoryview(block.mem)[off:off + size])
