# SPDX-License-Identifier: BSD-2-Clause
"""Split virtqueues in host memory, written the way a driver writes them, valid or not.

* :class:`SplitRing`: the three parts of one queue (virtio 1.2 §2.7) in a
  :class:`~.dma_memory.DmaMemory`, packed with the layouts of :mod:`virtio_pcie.spec.virtio`,
  with raw access to every field (so a test can make any ring state, malformed included).
* :func:`random_chain`: writes one random chain (direct, indirect, or direct + indirect;
  zero-length buffers; any descriptor placement) and returns what a correct device presents.
* :data:`MALFORMATIONS` and :func:`malformed_chain`: one chain broken in a given way, each
  the subject of a rule in the project's virtio checklist §1.N.

Nothing here touches the simulator; the reference model (:mod:`.virtqueue_model`) and the tests
read the same memory.
"""

import dataclasses

from virtio_pcie.spec.virtio import (VIRTQ_AVAIL_ALIGN, VIRTQ_DESC_ALIGN, VIRTQ_USED_ALIGN,
                                     VirtqAvailHeader, VirtqDesc, VirtqDescFlags, VirtqUsedElem,
                                     VirtqUsedHeader, byte_offset, byte_size,
                                     virtq_avail_event_offset, virtq_avail_ring_offset,
                                     virtq_avail_size, virtq_desc_size, virtq_used_event_offset,
                                     virtq_used_ring_offset, virtq_used_size)

from ..codec import codec

__all__ = ["NEXT", "WRITE", "INDIRECT", "Buf", "SplitRing", "pack_desc", "unpack_desc",
           "random_chain",
           "MALFORMATIONS", "malformed_chain", "DescAllocator"]

NEXT     = VirtqDescFlags.NEXT.value
WRITE    = VirtqDescFlags.WRITE.value
INDIRECT = VirtqDescFlags.INDIRECT.value
DESC_BYTES = byte_size(VirtqDesc)
ELEM_BYTES = byte_size(VirtqUsedElem)


_DESC_CODEC = codec(VirtqDesc)
_ELEM_CODEC = codec(VirtqUsedElem)


def pack_desc(addr, length, flags, next_=0):
    """A struct virtq_desc's bytes (little-endian, as in memory)."""
    return _DESC_CODEC.pack(addr=addr & (2**64 - 1), len=length & 0xFFFFFFFF,
                            flags=flags & 0xFFFF, next=next_ & 0xFFFF)


def unpack_desc(raw):
    """(addr, len, flags, next) of a struct virtq_desc's bytes."""
    d = _DESC_CODEC.unpack(raw)
    return d["addr"], d["len"], d["flags"], d["next"]


@dataclasses.dataclass(frozen=True)
class Buf:
    addr: int
    len: int
    write: bool


class SplitRing:
    """One split virtqueue's memory, and the driver-side shadow indices.

    ``start`` is the 16-bit index the queue starts at (avail->idx = used->idx = start); the
    engine must be told the same with ``restore``.
    """

    def __init__(self, memory, size, *, start=0, desc=None, avail=None, used=None):
        self.memory = memory
        self.size = size
        self.desc = desc if desc is not None else memory.alloc_addr(virtq_desc_size(size),
                                                               VIRTQ_DESC_ALIGN)
        self.avail = avail if avail is not None else memory.alloc_addr(virtq_avail_size(size),
                                                                  VIRTQ_AVAIL_ALIGN)
        self.used = used if used is not None else memory.alloc_addr(virtq_used_size(size),
                                                               VIRTQ_USED_ALIGN)
        self.start = start & 0xFFFF
        self.avail_idx = self.start          # driver's shadow of avail->idx
        self.last_used = self.start          # driver's last seen used->idx
        self.write_avail_idx(self.start)
        self.write_used_idx(self.start)

    # -- field addresses (all from spec layouts) ------------------------------------------------
    def desc_addr(self, i):
        return self.desc + DESC_BYTES * i

    @property
    def avail_flags_addr(self):
        return self.avail + byte_offset(VirtqAvailHeader, "flags")

    @property
    def avail_idx_addr(self):
        return self.avail + byte_offset(VirtqAvailHeader, "idx")

    def avail_ring_addr(self, slot):
        return self.avail + virtq_avail_ring_offset(slot)

    @property
    def used_event_addr(self):
        return self.avail + virtq_used_event_offset(self.size)

    @property
    def used_flags_addr(self):
        return self.used + byte_offset(VirtqUsedHeader, "flags")

    @property
    def used_idx_addr(self):
        return self.used + byte_offset(VirtqUsedHeader, "idx")

    def used_elem_addr(self, slot):
        return self.used + virtq_used_ring_offset(slot)

    @property
    def avail_event_addr(self):
        return self.used + virtq_avail_event_offset(self.size)

    # -- raw access -------------------------------------------------------------------------------
    def write_desc(self, i, addr, length, flags, next_=0):
        self.memory.write(self.desc_addr(i), pack_desc(addr, length, flags, next_))

    def read_desc(self, i):
        return unpack_desc(self.memory.read(self.desc_addr(i), DESC_BYTES))

    def write_avail_entry(self, index, head):
        self.memory.write_u16(self.avail_ring_addr(index % self.size), head)

    def read_avail_entry(self, index):
        return self.memory.read_u16(self.avail_ring_addr(index % self.size))

    def write_avail_idx(self, value):
        self.memory.write_u16(self.avail_idx_addr, value)

    def read_avail_idx(self):
        return self.memory.read_u16(self.avail_idx_addr)

    def write_avail_flags(self, value):
        self.memory.write_u16(self.avail_flags_addr, value)

    def write_used_event(self, value):
        self.memory.write_u16(self.used_event_addr, value)

    def read_used_event(self):
        return self.memory.read_u16(self.used_event_addr)

    def read_avail_flags(self):
        return self.memory.read_u16(self.avail_flags_addr)

    def write_used_idx(self, value):
        self.memory.write_u16(self.used_idx_addr, value)

    def read_used_idx(self):
        return self.memory.read_u16(self.used_idx_addr)

    def read_used_flags(self):
        return self.memory.read_u16(self.used_flags_addr)

    def read_used_elem(self, index):
        e = _ELEM_CODEC.unpack(self.memory.read(self.used_elem_addr(index % self.size),
                                                ELEM_BYTES))
        return e["id"], e["len"]

    def read_avail_event(self):
        return self.memory.read_u16(self.avail_event_addr)

    # -- driver actions ----------------------------------------------------------------------------
    def add(self, head, publish=True):
        """Put ``head`` in the next avail ring slot; with ``publish``, update avail->idx."""
        self.write_avail_entry(self.avail_idx, head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        if publish:
            self.write_avail_idx(self.avail_idx)

    def publish(self):
        self.write_avail_idx(self.avail_idx)

    # -- regions (for DMA legality checks) --------------------------------------------------------
    @property
    def desc_region(self):
        return (self.desc, self.desc + virtq_desc_size(self.size))

    @property
    def used_ring_region(self):
        return (self.used_elem_addr(0), self.used_elem_addr(self.size))


class DescAllocator:
    """Free descriptor indices of a ring, handed out in a random or sequential order."""

    def __init__(self, size, rng, shuffle=True):
        self.free = list(range(size))
        if shuffle:
            rng.shuffle(self.free)

    def take(self, n):
        if n > len(self.free):
            return None
        out, self.free = self.free[:n], self.free[n:]
        return out

    def __len__(self):
        return len(self.free)


def _buffers(rng, memory, n, *, zero_len_p=0.15, max_len=4096):
    """``n`` buffers: some readable then some writable, some of length 0."""
    n_read = rng.randint(0, n)
    bufs = []
    for i in range(n):
        length = 0 if rng.random() < zero_len_p else rng.randint(1, max_len)
        addr = memory.alloc_addr(max(length, 1), rng.choice([1, 2, 8, 64]))
        bufs.append(Buf(addr, length, i >= n_read))
    return bufs


def _write_table(memory, rng, bufs, order=None):
    """An indirect table holding ``bufs`` chained in order through a random slot
    permutation; returns (table address, entries)."""
    n = len(bufs)
    slots = list(range(n))
    if order == "sequential" or n < 2:
        pass
    else:
        rest = slots[1:]
        rng.shuffle(rest)
        slots = [0] + rest          # the chain starts at table entry 0
    table = memory.alloc_addr(DESC_BYTES * n, 16)
    for k, buf in enumerate(bufs):
        flags = (WRITE if buf.write else 0) | (NEXT if k + 1 < n else 0)
        nxt = slots[k + 1] if k + 1 < n else rng.randrange(0, 0x10000)
        memory.write(table + DESC_BYTES * slots[k], pack_desc(buf.addr, buf.len, flags, nxt))
    return table, n


def random_chain(ring, rng, alloc, *, indirect_ok, max_descs, kind=None, max_table=16):
    """Write one valid chain into ``ring`` using descriptors from ``alloc``.

    Returns (head, segments) where segments are the non-empty :class:`Buf` a device must see,
    or None if ``alloc`` has too few free descriptors. ``max_descs`` bounds the descriptors the
    chain uses in all (direct, the indirect one, table entries); ``max_table`` the entries of
    an indirect table.
    """
    kinds = ["direct"] + (["indirect", "mixed"] if indirect_ok and max_descs >= 2 else [])
    kind = kind or rng.choice(kinds)
    memory = ring.memory
    if kind == "direct":
        n = rng.randint(1, max(1, min(max_descs, ring.size, 8)))
        idx = alloc.take(n)
        if idx is None:
            return None
        bufs = _buffers(rng, memory, n)
        for k, buf in enumerate(bufs):
            flags = (WRITE if buf.write else 0) | (NEXT if k + 1 < n else 0)
            nxt = idx[k + 1] if k + 1 < n else rng.randrange(0, 0x10000)
            ring.write_desc(idx[k], buf.addr, buf.len, flags, nxt)
        return idx[0], [b for b in bufs if b.len]
    n_direct = 0 if kind == "indirect" else rng.randint(1, max(1, min(3, max_descs - 2,
                                                                       ring.size - 1)))
    n_table = rng.randint(1, max(1, min(rng.choice([4, max_table]), max_descs - 1 - n_direct)))
    idx = alloc.take(n_direct + 1)
    if idx is None:
        return None
    bufs = _buffers(rng, memory, n_direct + n_table)
    direct, tabled = bufs[:n_direct], bufs[n_direct:]
    table, entries = _write_table(memory, rng, tabled)
    for k, buf in enumerate(direct):
        ring.write_desc(idx[k], buf.addr, buf.len, (WRITE if buf.write else 0) | NEXT, idx[k + 1])
    # The WRITE flag of an indirect descriptor is ignored (virtio 1.2 §2.7.5.3.1): set it now
    # and then to show it.
    ring.write_desc(idx[n_direct], table, DESC_BYTES * entries,
                    INDIRECT | (WRITE if rng.random() < 0.3 else 0), rng.randrange(0, 0x10000))
    return idx[0], [b for b in bufs if b.len]


#: Ways to break a chain, with the error code the engine must report (names of
#: :class:`~virtio_pcie.virtio.engine_signatures.VirtqErrorCode`) when the queue size is at
#: most ``max_chain`` and ``max_chain`` at most ``max_indirect`` (otherwise a loop can hit the
#: chain length limit first; the reference model always gives the code that applies).
MALFORMATIONS = {
    "next_range":       "NEXT",
    "loop":             "LOOP",
    "order":            "ORDER",
    "overflow":         "OVERFLOW",
    "head_range":       "HEAD",
    "indirect_len0":    "INDIRECT_LEN",
    "indirect_len_mod": "INDIRECT_LEN",
    "indirect_next":    "INDIRECT_NEXT",
    "nested":           "INDIRECT_NESTED",
    "indirect_size":    "INDIRECT_SIZE",
    "table_next_range": "NEXT",
    "table_loop":       "LOOP",
    "indirect_overflow": "OVERFLOW",
    "too_long":         "TOO_LONG",
}


def malformed_chain(ring, rng, alloc, kind, *, max_chain, max_indirect):
    """Write one chain broken as ``kind`` (a key of :data:`MALFORMATIONS`); returns its head
    (which for ``head_range`` is itself out of range)."""
    memory = ring.memory
    size = ring.size
    buf = lambda w=False, n=64: Buf(memory.alloc_addr(n, 8), n, w)
    if kind == "head_range":
        return rng.randrange(size, 0x10000)
    if kind in ("next_range", "loop", "order", "overflow", "too_long"):
        if kind == "too_long":
            n = max_chain + 1
            if n > size:      # not reachable through the direct table: use an indirect one
                return _indirect_broken(ring, rng, alloc, [buf() for _ in range(n - 1)])
        else:
            n = rng.randint(2, max(2, min(size, 6))) if size >= 2 else 1
        idx = alloc.take(n)
        assert idx is not None, "ring too full for a malformed chain"
        bufs = [buf() for _ in range(n)]
        bad = rng.randrange(n)
        for k, b in enumerate(bufs):
            flags = NEXT if k + 1 < n else 0
            nxt = idx[k + 1] if k + 1 < n else 0
            addr, length = b.addr, b.len
            if kind == "next_range" and k == bad:
                flags, nxt = NEXT, rng.randrange(size, 0x10000)
            if kind == "loop" and k == n - 1:
                flags, nxt = NEXT, idx[rng.randrange(n)]
            if kind == "order":
                # writable then readable at position `bad` (needs bad >= 1)
                w = max(1, bad)
                flags |= WRITE if k == w - 1 else 0
            if kind == "overflow" and k == bad:
                length = rng.randint(2, 1 << 20)
                addr = (1 << 64) - rng.randint(1, length - 1)
            ring.write_desc(idx[k], addr, length, flags, nxt)
        if kind == "loop" and size == 1:
            ring.write_desc(idx[0], bufs[0].addr, 64, NEXT, idx[0])
        return idx[0]
    # indirect malformations: a direct prefix of 0 or 1, then the indirect descriptor
    idx = alloc.take(2)
    assert idx is not None
    prefix = rng.random() < 0.5 and size >= 2
    head = idx[0]
    ind = idx[1] if prefix else idx[0]
    if prefix:
        b = buf()
        ring.write_desc(idx[0], b.addr, b.len, NEXT, idx[1])
    entries = [buf(w=(k >= 1)) for k in range(rng.randint(1, 4))]
    table, n = _write_table(memory, rng, entries, order="sequential")
    length, flags, nxt = DESC_BYTES * n, INDIRECT, 0
    addr = table
    if kind == "indirect_len0":
        length = 0
    elif kind == "indirect_len_mod":
        length = DESC_BYTES * n + rng.randint(1, 15)
    elif kind == "indirect_next":
        flags |= NEXT
        nxt = idx[0]
    elif kind == "indirect_size":
        big = max_indirect + 1
        table = memory.alloc_addr(DESC_BYTES * big, 16)
        for k in range(big):
            b = buf()
            memory.write(table + DESC_BYTES * k, pack_desc(b.addr, b.len,
                                                           NEXT if k + 1 < big else 0, k + 1))
        addr, length = table, DESC_BYTES * big
    elif kind == "nested":
        k = rng.randrange(n)
        inner, _ = _write_table(memory, rng, [buf()])
        old = memory.read(table + DESC_BYTES * k, DESC_BYTES)
        _, _, oflags, onext = unpack_desc(old)
        memory.write(table + DESC_BYTES * k, pack_desc(inner, DESC_BYTES,
                                                       INDIRECT | (oflags & NEXT), onext))
    elif kind == "table_next_range":
        k = rng.randrange(n)
        memory.write(table + DESC_BYTES * k, pack_desc(entries[k].addr, entries[k].len,
                                                       NEXT | (WRITE if entries[k].write else 0),
                                                       rng.randrange(n, 0x10000)))
    elif kind == "table_loop":
        k = n - 1
        memory.write(table + DESC_BYTES * k, pack_desc(entries[k].addr, entries[k].len,
                                                       NEXT | (WRITE if entries[k].write else 0),
                                                       rng.randrange(n)))
    elif kind == "indirect_overflow":
        addr = (1 << 64) - DESC_BYTES * n + rng.randint(1, 15)
    else:
        raise ValueError(f"unknown malformation {kind!r}")
    ring.write_desc(ind, addr, length, flags, nxt)
    return head


def _indirect_broken(ring, rng, alloc, bufs):
    idx = alloc.take(1)
    assert idx is not None, "ring too full for a malformed chain"
    table, n = _write_table(ring.memory, rng, bufs, order="sequential")
    # one direct readable descriptor first is not possible (no NEXT from indirect), so the
    # whole overlong chain lives in the table plus the indirect descriptor itself
    ring.write_desc(idx[0], table, DESC_BYTES * n, INDIRECT, 0)
    return idx[0]
