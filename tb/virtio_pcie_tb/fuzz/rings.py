# SPDX-License-Identifier: BSD-2-Clause
"""The hostile driver's virtqueues: split rings it writes itself, valid or broken.

A :class:`RawQueue` is one queue's memory (a
:class:`~virtio_pcie_tb.models.virtq_ring.SplitRing`, written with the spec layouts) plus the
driver's bookkeeping: free descriptors, the chains it published and what each may receive. It
publishes any chain shape (direct, indirect, direct then indirect, zero-length buffers, any
descriptor placement) or a chain broken in one of the ways of
:data:`~virtio_pcie_tb.models.virtq_ring.MALFORMATIONS`, and checks every used element the
device returns:

* its ``id`` must be the head of a chain the driver published and has not seen used yet
  (Linux: "id %u is not a head!", virtio 1.2 §2.7.8);
* its ``len`` must not exceed the chain's device-writable bytes (virtio 1.2 §2.7.8.1: the device
  MUST NOT report more than it could write).

A violation is a *corruption* (the driver would be fed wrong data). The writable buffers of a
valid chain are granted to the link monitor while the chain is outstanding.
"""

import dataclasses

from virtio_pcie.spec.virtio import (legacy_vring_layout, virtq_avail_size, virtq_desc_size,
                                     virtq_used_size)

from ..models.virtq_ports import Segment
from ..models.virtq_ring import (DESC_BYTES, INDIRECT, NEXT, WRITE, DescAllocator,
                                 SplitRing, malformed_chain, pack_desc, unpack_desc)

__all__ = ["Segment", "Chain", "RawQueue"]


@dataclasses.dataclass
class Chain:
    head: int
    segments: list           # [Segment], readable then writable
    token: object            # what the workload wants back
    descs: list              # descriptor indices of the main table it uses
    writable: int = 0        # device-writable bytes

    def __post_init__(self):
        self.writable = sum(s.len for s in self.segments if s.write)


class RawQueue:
    """One virtqueue as the hostile driver keeps it.

    Parameters
    ----------
    memory : :class:`~.memory.FuzzMemory`
    index, size : int
    rng : random.Random
    monitor : :class:`~.monitors.LinkMonitor`
    legacy : bool
        Lay the rings out contiguously with 4096-byte alignment (``QUEUE_PFN``).
    """

    def __init__(self, memory, *, index, size, rng, monitor, legacy=False):
        self.memory = memory
        self.index = index
        self.size = size
        self.rng = rng
        self.monitor = monitor
        if legacy:
            _, _, used_off = legacy_vring_layout(0, size)
            base = memory.alloc_addr(used_off + virtq_used_size(size), 4096)
            desc, avail, used = legacy_vring_layout(base, size)
            self.ring = SplitRing(memory, size, desc=desc, avail=avail, used=used)
            self.pfn = base >> 12
        else:
            self.ring = SplitRing(memory, size)
            self.pfn = None
        self.alloc = DescAllocator(size, rng, shuffle=rng.random() < 0.7)
        self.outstanding = {}       # head -> Chain
        self.raw_heads = {}         # head -> writable bytes, of raw heads (add_raw_head)
        self.broken = False         # a malformed chain was published: the queue is dead
        self.used_grant = ("used", index, id(self))

    @property
    def addresses(self):
        return self.ring.desc, self.ring.avail, self.ring.used

    def grant_used(self):
        self.monitor.grant(self.used_grant, self.ring.used, virtq_used_size(self.size))

    def revoke_used(self, grace=True):
        self.monitor.revoke(self.used_grant, grace=grace)

    # -- publishing ---------------------------------------------------------------------------
    def free_descs(self):
        return len(self.alloc)

    def add(self, segments, token, *, indirect_ok, shape=None):
        """Write a valid chain of ``segments`` (readable first); returns the :class:`Chain` or
        None when descriptors run out. ``shape``: "direct", "indirect" or "mixed"."""
        n = len(segments)
        shapes = ["direct"]
        if indirect_ok:
            shapes += ["indirect", "mixed"] if n >= 2 else ["indirect"]
        shape = shape if shape in shapes else self.rng.choice(shapes)
        n_direct = {"direct": n, "indirect": 0}.get(shape)
        if n_direct is None:
            n_direct = self.rng.randint(1, n - 1)
        used = n_direct + (0 if shape == "direct" else 1)
        idx = self.alloc.take(used)
        if idx is None:
            return None
        ring = self.ring
        for k in range(n_direct):
            s = segments[k]
            more = k + 1 < n_direct or shape != "direct"
            ring.write_desc(idx[k], s.addr, s.len, (WRITE if s.write else 0) |
                            (NEXT if more else 0),
                            idx[k + 1] if more else self.rng.randrange(0x10000))
        if shape != "direct":
            tabled = segments[n_direct:]
            m = len(tabled)
            order = list(range(m))
            if m > 2 and self.rng.random() < 0.5:
                rest = order[1:]
                self.rng.shuffle(rest)
                order = [0] + rest
            table = self.memory.alloc_addr(DESC_BYTES * m, 16)
            for k, s in enumerate(tabled):
                more = k + 1 < m
                self.memory.write(table + DESC_BYTES * order[k],
                                  pack_desc(s.addr, s.len, (WRITE if s.write else 0) |
                                            (NEXT if more else 0),
                                            order[k + 1] if more else self.rng.randrange(0x10000)))
            # virtio 1.2 §2.7.5.3.1: the device ignores WRITE on an indirect descriptor.
            ring.write_desc(idx[n_direct], table, DESC_BYTES * m,
                            INDIRECT | (WRITE if self.rng.random() < 0.2 else 0),
                            self.rng.randrange(0x10000))
        chain = Chain(idx[0], list(segments), token, idx)
        self.outstanding[chain.head] = chain
        for s in segments:
            if s.write:
                self.monitor.grant(("buf", self.index, id(self), chain.head), s.addr, s.len)
        ring.add(chain.head, publish=False)
        return chain

    def add_malformed(self, kind, *, max_chain, max_indirect):
        """Publish a chain broken as ``kind``; nothing of it is granted. Returns False if the
        ring has too few free descriptors."""
        if len(self.alloc) < max(2, min(self.size, 7)) or \
                (kind == "too_long" and max_chain + 1 > len(self.alloc) and
                 max_chain + 1 <= self.size):
            return False
        if kind in ("too_long",) and max_chain + 1 > self.size and len(self.alloc) < 1:
            return False
        head = malformed_chain(self.ring, self.rng, self.alloc, kind, max_chain=max_chain,
                               max_indirect=max_indirect)
        self.ring.add(head, publish=False)
        self.malformed_head = head
        self.broken = True
        return True

    def add_raw_head(self, head):
        """Put any index in the avail ring (a head out of range, a reused or free head).

        A head inside the table starts whatever chain the table holds there (zeros: one empty
        readable buffer; or a chain used before): the driver handed it over, so the device may
        use it, writing into its writable buffers (granted here) and returning the head."""
        head &= 0xFFFF
        self.ring.add(head, publish=False)
        if head < self.size and head not in self.raw_heads:
            writable = 0
            for addr, length in self._walk(head):
                self.monitor.grant(("raw", self.index, id(self), head), addr, length)
                writable += length
            self.raw_heads[head] = writable

    def _walk(self, head):
        """The writable (addr, len) buffers of the chain at ``head``, read as a device would
        (direct descriptors, then one level of indirect table); stops at a loop."""
        out, seen, i = [], set(), head
        while i < self.size and i not in seen:
            seen.add(i)
            addr, length, flags, nxt = self.ring.read_desc(i)
            if flags & INDIRECT:
                count = min(length // DESC_BYTES, 4096)
                for k in range(count):
                    if not self.memory.contains(addr + k * DESC_BYTES, DESC_BYTES):
                        break
                    a, n, f, _ = unpack_desc(self.memory.read(addr + k * DESC_BYTES,
                                                              DESC_BYTES))
                    if f & WRITE and n:
                        out.append((a, n))
                break
            if flags & WRITE and length:
                out.append((addr, length))
            if not flags & NEXT:
                break
            i = nxt
        return out

    def publish(self):
        self.ring.publish()

    def bump_avail_idx(self, delta):
        """Move avail->idx by ``delta`` without writing ring entries (a lying driver)."""
        self.ring.avail_idx = (self.ring.avail_idx + delta) & 0xFFFF
        self.ring.publish()

    # -- taking buffers back ------------------------------------------------------------------
    def reap(self):
        """Used elements since the last call: [(chain or None, len, problem or None)]."""
        ring = self.ring
        out = []
        new = ring.read_used_idx()
        while ring.last_used != new:
            head, length = ring.read_used_elem(ring.last_used)
            ring.last_used = (ring.last_used + 1) & 0xFFFF
            chain = self.outstanding.pop(head, None) if head < self.size else None
            if chain is None and head in self.raw_heads:
                # A raw head's chain (see add_raw_head): legal to use, once.
                writable = self.raw_heads.pop(head)
                self.monitor.revoke(("raw", self.index, id(self), head))
                out.append((None, length, None if length <= writable else
                            f"queue {self.index}: used len {length} > {writable} writable "
                            f"bytes of raw head {head}"))
                continue
            if chain is None:
                out.append((None, length, f"queue {self.index}: used id {head} is not an "
                                          f"outstanding head"))
                continue
            self.monitor.revoke(("buf", self.index, id(self), head))
            for d in chain.descs:
                self.alloc.free.append(d)
            problem = None
            if length > chain.writable:
                problem = (f"queue {self.index}: used len {length} > {chain.writable} writable "
                           f"bytes of head {head}")
            out.append((chain, length, problem))
        return out

    def abandon(self):
        """Forget every outstanding chain (after a reset); returns them."""
        chains = list(self.outstanding.values())
        for c in chains:
            self.monitor.revoke(("buf", self.index, id(self), c.head), grace=False)
        self.outstanding = {}
        return chains

    @property
    def regions(self):
        return {"desc": (self.ring.desc, virtq_desc_size(self.size)),
                "avail": (self.ring.avail, virtq_avail_size(self.size)),
                "used": (self.ring.used, virtq_used_size(self.size))}
