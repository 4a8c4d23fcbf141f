# SPDX-License-Identifier: BSD-2-Clause
"""Reference model of the virtqueue engine's observable behaviour.

Given a ring state in host memory (:mod:`.virtq_ring`), the model says what a correct engine
does, independently of how the RTL does it:

* :meth:`VirtqueueModel.walk_chain` / :meth:`walk_queue`: the chains a device is shown, as
  segments (readable then writable, zero-length buffers left out, indirect tables expanded),
  and the first error, if any, with its code (virtio 1.2 §2.7.5-2.7.6, checklist §1.N);
* :meth:`VirtqueueModel.used_ring`: the used ring and index after a sequence of completions;
* :func:`need_interrupt`: the used buffer notification decision for one used index update
  (virtio 1.2 §2.7.7 and §2.7.10, checklist rules 92-93);
* :func:`audit_dma`: every DMA access a queue's processing may make, checked against what it
  did make (reads only of the rings, of published ring entries after their index was read, and
  of indirect tables of walked chains; writes only to used elements that were completed, to
  used->idx and to avail_event).
"""

import dataclasses

from virtio_pcie.spec.virtio import vring_need_event

from .virtq_ring import DESC_BYTES, ELEM_BYTES, INDIRECT, NEXT, WRITE, Buf, unpack_desc

__all__ = ["VirtqueueModel", "ChainResult", "QueueResult", "QueueAudit", "need_interrupt",
           "audit_dma", "accesses_of"]

_TOP = 1 << 64


@dataclasses.dataclass
class ChainResult:
    head: int
    segments: list            # [Buf], as presented
    error: str = None         # VirtqErrorCode name, or None
    tables: list = dataclasses.field(default_factory=list)   # (addr, len) indirect tables read

    def key(self, queue):
        return (queue, self.head, tuple((b.addr, b.len, b.write) for b in self.segments))


@dataclasses.dataclass
class QueueResult:
    chains: list              # valid ChainResults, in avail order
    error: str = None         # code of the first bad chain (or AVAIL_IDX / DMA)
    error_index: int = None   # its position after the first avail entry read
    tables: list = dataclasses.field(default_factory=list)


class VirtqueueModel:
    """What the engine does with one queue's memory.

    Parameters mirror :class:`~virtio_pcie.virtio.virtqueue.VirtqueueEngine`'s.
    ``failing_reads`` is a set of host addresses whose DMA read fails (indirect tables).
    """

    def __init__(self, *, max_chain, max_indirect):
        self.max_chain = max_chain
        self.max_indirect = max_indirect

    def walk_chain(self, memory, *, size, desc, head, indirect_desc, failing_reads=()):
        result = ChainResult(head, [])

        def fail(code):
            result.error = code
            result.segments = []
            return result

        if head >= size:
            return fail("HEAD")
        cur, in_table, table, table_n = head, False, None, 0
        dcount = tcount = total = 0
        seen_write = False
        while True:
            if total >= self.max_chain:
                return fail("TOO_LONG")
            total += 1
            if in_table:
                tcount += 1
                raw = memory.read(table + DESC_BYTES * cur, DESC_BYTES)
            else:
                dcount += 1
                raw = memory.read(desc + DESC_BYTES * cur, DESC_BYTES)
            addr, length, flags, nxt = unpack_desc(raw)
            if flags & INDIRECT:
                if in_table:
                    return fail("INDIRECT_NESTED")
                if not indirect_desc:
                    return fail("INDIRECT_FEATURE")
                if flags & NEXT:
                    return fail("INDIRECT_NEXT")
                if length == 0 or length % DESC_BYTES:
                    return fail("INDIRECT_LEN")
                if length // DESC_BYTES > self.max_indirect:
                    return fail("INDIRECT_SIZE")
                if addr + length > _TOP:
                    return fail("OVERFLOW")
                result.tables.append((addr, length))
                if addr in failing_reads:
                    return fail("DMA")
                in_table, table, table_n, cur, tcount = True, addr, length // DESC_BYTES, 0, 0
                continue
            if addr + length > _TOP:
                return fail("OVERFLOW")
            write = bool(flags & WRITE)
            if not write and seen_write:
                return fail("ORDER")
            seen_write |= write
            if length:
                result.segments.append(Buf(addr, length, write))
            if not flags & NEXT:
                return result
            if in_table:
                if nxt >= table_n:
                    return fail("NEXT")
                if tcount >= table_n:
                    return fail("LOOP")
            else:
                if nxt >= size:
                    return fail("NEXT")
                if dcount >= size:
                    return fail("LOOP")
            cur = nxt

    def walk_queue(self, ring, *, last_avail, indirect_desc, failing_reads=(), limit=None):
        """All chains the engine takes from ``ring`` starting at ``last_avail`` with the avail
        index as it is in memory now; stops at the first error (or after ``limit`` chains)."""
        memory = ring.memory
        idx = ring.read_avail_idx()
        n = (idx - last_avail) & 0xFFFF
        out = QueueResult([])
        if n > ring.size:
            out.error, out.error_index = "AVAIL_IDX", 0
            return out
        if limit is not None:
            n = min(n, limit)
        for i in range(n):
            head = ring.read_avail_entry(last_avail + i)
            r = self.walk_chain(memory, size=ring.size, desc=ring.desc, head=head,
                                indirect_desc=indirect_desc, failing_reads=failing_reads)
            out.tables += r.tables
            if r.error:
                out.error, out.error_index = r.error, i
                break
            out.chains.append(r)
        # The engine may read ahead the indirect table of any published head it would accept
        # (a cache, whose reads are legal even past a bad chain): allowed reads, not required.
        for i in range(n):
            table = self.prefetchable_table(ring, ring.read_avail_entry(last_avail + i),
                                            indirect_desc)
            if table is not None and table not in out.tables:
                out.tables.append(table)
        return out

    def prefetchable_table(self, ring, head, indirect_desc):
        """(addr, len) of ``head``'s indirect table if the head descriptor is an indirect one
        the engine accepts, else None."""
        if head >= ring.size:
            return None
        addr, length, flags, _ = ring.read_desc(head)
        if not flags & INDIRECT or flags & NEXT or not indirect_desc:
            return None
        if length == 0 or length % DESC_BYTES or length // DESC_BYTES > self.max_indirect:
            return None
        if addr + length > _TOP:
            return None
        return (addr, length)

    @staticmethod
    def used_ring(start, completions):
        """Used elements [(id, len)] and final used->idx after ``completions`` [(head, len)]
        are published from used index ``start``."""
        return list(completions), (start + len(completions)) & 0xFFFF


def need_interrupt(*, event_idx, old, new, used_event=None, avail_flags=None, early=None):
    """The engine's decision after moving used->idx from ``old`` to ``new``.

    ``used_event`` / ``avail_flags``: the value the driver had written when the index write
    reached it (the engine reads it again after the write). ``early``: the value the engine
    read before the write (while the device worked), or None: when that one already says
    "notify" the engine does not read again, so the decision is the OR of both (a spurious
    interrupt at worst, never a missed one).
    """
    def says(value):
        if event_idx:
            return vring_need_event(value, new, old)
        return not (value & 1)
    late = says(used_event if event_idx else avail_flags)
    return late or (early is not None and says(early))


@dataclasses.dataclass
class QueueAudit:
    """What one queue's processing may touch (see :func:`audit_dma`)."""
    ring: object               # a virtq_ring.SplitRing
    avail_start: int           # first avail index the engine reads
    published: int             # avail entries published from there
    used_start: int
    completed: int             # used entries completed from used_start
    tables: list               # (addr, len) indirect tables of walked chains
    event_idx: bool
    # (time_ns, avail index) of doorbells carrying one (VIRTIO_F_NOTIFICATION_DATA): the
    # driver's word that the entries before it are published, as good as a read of avail->idx
    doorbells: list = dataclasses.field(default_factory=list)


def audit_dma(log, queues):
    """Violations (strings) in the DMA accesses of ``log`` given the :class:`QueueAudit` of
    every queue in use. An access is legal if it is legal for one of the queues:

    * reads of avail->flags/idx, of used_event / avail->flags;
    * reads of avail ring slots holding published entries, of descriptor table entries and of
      indirect tables of walked chains, each issued after a read of that queue's avail->idx
      had completed (checklist rule 85) or after a doorbell carrying an avail index; ring
      slots before a doorbell's index count as published from the doorbell on (a broken
      driver's index beyond its own is its word: reading those slots is legal, using them
      is not, which the chains' comparison with the model checks);
    * writes of used->idx, of avail_event (EVENT_IDX only), and of used elements in slots that
      completed entries fill.
    """
    idx_done = {}
    for qa in queues:
        ring = qa.ring
        idx_done[id(qa)] = [a.done_ns for a in log if a.kind == "rd" and a.done_ns is not None
                            and (a.host_addr, a.length) == (ring.avail_flags_addr, 4)]
    errors = []
    for a in log:
        reasons = []
        for qa in queues:
            why = _check_access(a, qa, idx_done[id(qa)])
            if why is None:
                break
            reasons.append(why)
        else:
            errors.append(f"{a.kind} {a.host_addr:#x}+{a.length} at {a.time_ns} ns: "
                          f"{'; '.join(sorted(set(reasons)))}")
    return errors


def _check_access(a, qa, idx_done):
    ring, size = qa.ring, qa.ring.size
    lo, hi = a.host_addr, a.host_addr + a.length
    told = [idx for t, idx in qa.doorbells if t <= a.time_ns]
    ordered = any(t <= a.time_ns for t in idx_done) or bool(told)
    if a.kind == "rd":
        if (lo, hi) in ((ring.avail_flags_addr, ring.avail_idx_addr + 2),
                        (ring.used_event_addr, ring.used_event_addr + 2),
                        (ring.avail_flags_addr, ring.avail_flags_addr + 2)):
            return None
        ring_lo, ring_hi = ring.avail_ring_addr(0), ring.avail_ring_addr(size)
        if ring_lo <= lo < ring_hi:
            if (lo - ring_lo) % 2 or a.length % 2 or hi > ring_hi:
                return "misshapen avail ring read"
            allowed = {(qa.avail_start + i) % size for i in range(min(qa.published, size))}
            for idx in told:
                ahead = (idx - qa.avail_start) & 0xFFFF
                allowed |= {(qa.avail_start + i) % size for i in range(min(ahead, size))}
            first = (lo - ring_lo) // 2
            bad = [s for s in range(first, first + a.length // 2) if s not in allowed]
            if bad:
                return f"avail ring read of unpublished slots {bad[:4]}"
            return None if ordered else "avail ring read before avail->idx was read"
        desc_lo, desc_hi = ring.desc_region
        if desc_lo <= lo and hi <= desc_hi:
            return None if ordered else "descriptor read before avail->idx was read"
        if (lo, a.length) in set(qa.tables):
            return None if ordered else "indirect table read before avail->idx was read"
        return "read outside this queue's rings and tables"
    if (lo, hi) == (ring.used_idx_addr, ring.used_idx_addr + 2):
        return None
    if (lo, hi) == (ring.avail_event_addr, ring.avail_event_addr + 2):
        return None if qa.event_idx else "avail_event written without EVENT_IDX"
    r_lo, r_hi = ring.used_ring_region
    if r_lo <= lo and hi <= r_hi:
        if (lo - r_lo) % ELEM_BYTES or a.length % ELEM_BYTES:
            return "misshapen used ring write"
        done = {(qa.used_start + i) % size for i in range(min(qa.completed, size))}
        first = (lo - r_lo) // ELEM_BYTES
        bad = [s for s in range(first, first + a.length // ELEM_BYTES) if s not in done]
        return f"used element write to slots not completed {bad[:4]}" if bad else None
    return "write outside this queue's used ring"


def accesses_of(log, regions):
    """The accesses of ``log`` that fall in any (lo, hi) of ``regions``."""
    out = []
    for a in log:
        for lo, hi in regions:
            if lo <= a.host_addr < hi:
                out.append(a)
                break
    return out
