# SPDX-License-Identifier: BSD-2-Clause
"""Host memory for the driver model: DMA-coherent buffers in the root complex's address space.

Linux allocates rings with ``dma_alloc_coherent()`` and maps request buffers with the DMA API;
in the simulation the root complex's memory (cocotbext-pcie ``RootComplex.mem_address_space``)
is what the device reads and writes with its memory requests. :class:`HostMemory` hands out
:class:`DmaBuffer` objects from a pool in that space: the driver (the "CPU") reads and writes them
directly, without bus traffic, while the device reaches them with TLPs at ``buffer.addr``.

By default the pool is the root complex's own ``mem_pool`` (addresses below 2 GiB). Tests that
need 64-bit DMA addresses, or addresses beyond what a legacy ``QUEUE_PFN`` can hold, pass
``base`` to place a private pool anywhere else in the 64-bit space. Address 0 is never handed
out, as no real host would.
"""

from dataclasses import dataclass

__all__ = ["DmaBuffer", "DmaAllocator", "HostMemory"]


@dataclass
class DmaBuffer:
    """``size`` bytes at bus address ``addr``; ``mem`` is a writable view of them."""
    addr: int
    size: int
    mem:  memoryview

    def read(self, offset=0, length=None):
        length = self.size - offset if length is None else length
        self._check(offset, length)
        return bytes(self.mem[offset:offset + length])

    def write(self, offset, data):
        self._check(offset, len(data))
        self.mem[offset:offset + len(data)] = data

    def read_int(self, offset, size):
        return int.from_bytes(self.read(offset, size), "little")

    def write_int(self, offset, size, value):
        self.write(offset, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def fill(self, value=0):
        self.mem[:] = bytes([value]) * self.size

    def _check(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IndexError(f"access of {length} bytes at offset {offset} outside a DMA buffer "
                             f"of {self.size} bytes at {self.addr:#x}")


class DmaAllocator:
    """The host model's DMA API: :meth:`alloc`, :meth:`free` and :meth:`buffer`.

    A subclass says where new buffers come from (:meth:`_new_buffer`); buffers given back with
    :meth:`free` are reused by later allocations of the same size and alignment, as Linux's DMA
    pools reuse their blocks, so rings and request buffers land at addresses a device has seen
    before.
    """

    def __init__(self):
        self._free = {}          # size -> [DmaBuffer] ready for reuse

    def _new_buffer(self, size, align):
        """A new :class:`DmaBuffer` of ``size`` bytes aligned to ``align``."""
        raise NotImplementedError

    def alloc(self, size, *, align=16, zero=True):
        """A :class:`DmaBuffer` of ``size`` bytes aligned to ``align`` (a power of two)."""
        if size <= 0:
            raise ValueError(f"DMA buffer size must be positive, not {size!r}")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment must be a power of two, not {align!r}")
        reuse = [b for b in self._free.get(size, ()) if b.addr % align == 0]
        if reuse:
            buf = reuse[-1]
            self._free[size].remove(buf)
        else:
            buf = self._new_buffer(size, align)
        if zero:
            buf.fill(0)
        return buf

    def free(self, buf):
        """Give ``buf`` back (it is reused by a later allocation of the same size)."""
        if not isinstance(buf, DmaBuffer):
            raise TypeError(f"{buf!r} is not a DmaBuffer")
        self._free.setdefault(buf.size, []).append(buf)

    def buffer(self, data, *, align=16):
        """A new buffer holding ``data``."""
        buf = self.alloc(len(data), align=align, zero=False)
        buf.write(0, data)
        return buf


class HostMemory(DmaAllocator):
    """DMA-coherent memory of one simulated host.

    Parameters
    ----------
    rc : cocotbext.pcie.core.RootComplex
    base, size : int, optional
        Place a private pool at ``base`` (``size`` bytes, default 1 GiB) instead of using
        ``rc.mem_pool``.
    """

    def __init__(self, rc, *, base=None, size=1 << 30):
        self.rc = rc
        if base is None:
            self.pool = rc.mem_pool
        else:
            if base <= 0 or base % 4096:
                raise ValueError(f"pool base must be a positive multiple of 4096, not {base:#x}")
            self.pool = rc.mem_address_space.create_pool(base, size)
        super().__init__()
        self.allocated_bytes = 0
        # The pool's buddy allocator would hand out bus address 0 first; keep it.
        self._guard = self.pool.alloc_region(4096)

    def _new_buffer(self, size, align):
        # The buddy allocator aligns every block to its power-of-two size. The whole block is
        # backed by memory: devices read whole dwords (and more) around a buffer, as they
        # may on a real host.
        block = 1 << (max(size, align, 64) - 1).bit_length()
        region = self.pool.alloc_region(block)
        addr = region.get_absolute_address(0)
        if addr % align:
            raise AssertionError(f"pool returned {addr:#x}, not aligned to {align}")
        buf = DmaBuffer(addr, size, memoryview(region.mem)[:size])
        self.allocated_bytes += block
        return buf
