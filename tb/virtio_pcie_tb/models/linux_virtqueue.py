# SPDX-License-Identifier: BSD-2-Clause
"""A host-side split virtqueue that behaves like Linux's ``drivers/virtio/virtio_ring.c``.

The parts that decide doorbells and interrupts follow the kernel closely (names kept):

* ``add``: descriptors from a LIFO free list (``free_head``; a detached chain goes back at the
  head), an indirect table whenever VIRTIO_F_INDIRECT_DESC is negotiated and the buffer has
  more than one element (``virtqueue_use_indirect``), ``avail->idx`` written on every add;
* ``kick_prepare``: with EVENT_IDX ``vring_need_event(avail_event, new, old)`` over the buffers
  added since the last kick, else ``!(used->flags & VRING_USED_F_NO_NOTIFY)``;
* ``get_buf``: one used element per call; while callbacks are enabled it writes
  ``used_event = last_used_idx`` (EVENT_IDX);
* ``disable_cb`` / ``enable_cb`` / ``poll``: ``VRING_AVAIL_F_NO_INTERRUPT`` in a shadow, the
  ``used_event = 0`` write of ``disable_cb`` unless the device already triggered an event
  (``event_triggered``), ``used_event = last_used_idx`` on enable, and the more-used re-check;
* ``interrupt``: ``vring_interrupt`` (``IRQ_NONE`` without new used entries).

Only memory accesses are modelled; time is the caller's (a cocotb coroutine).
"""

from virtio_pcie.spec.virtio import vring_need_event

from .virtq_ring import DESC_BYTES, INDIRECT, NEXT, WRITE, pack_desc

__all__ = ["LinuxVirtqueue"]

VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_USED_F_NO_NOTIFY = 1


class LinuxVirtqueue:
    def __init__(self, ring, *, event_idx, indirect):
        self.ring = ring
        self.memory = ring.memory
        self.event = event_idx
        self.indirect = indirect
        size = ring.size
        self.num_free = size
        self.free_head = 0
        self.next = [(i + 1) % size for i in range(size)]     # desc_extra[].next
        self.chain_len = {}
        self.data = {}
        self.avail_idx_shadow = ring.start
        self.num_added = 0
        self.last_used_idx = ring.start
        self.avail_flags_shadow = 0
        self.event_triggered = False
        self.kicks = 0
        self.interrupts = 0
        self.spurious = 0

    # -- adding buffers -------------------------------------------------------------------------
    def add(self, out_sgs, in_sgs, token):
        """``out_sgs``/``in_sgs``: lists of (addr, len). Returns False if the ring is full."""
        sgs = [(a, n, False) for a, n in out_sgs] + [(a, n, True) for a, n in in_sgs]
        total = len(sgs)
        indirect = self.indirect and total > 1 and self.num_free
        descs_used = 1 if indirect else total
        if self.num_free < descs_used:
            return False
        head = self.free_head
        if indirect:
            table = self.memory.alloc(DESC_BYTES * total, 16)
            for i, (a, n, w) in enumerate(sgs):
                flags = (WRITE if w else 0) | (NEXT if i + 1 < total else 0)
                self.memory.write(table + DESC_BYTES * i, pack_desc(a, n, flags, i + 1))
            self.ring.write_desc(head, table, DESC_BYTES * total, INDIRECT)
            i = self.next[head]
        else:
            i = head
            for k, (a, n, w) in enumerate(sgs):
                flags = (WRITE if w else 0) | (NEXT if k + 1 < total else 0)
                self.ring.write_desc(i, a, n, flags, self.next[i])
                i = self.next[i]
        self.num_free -= descs_used
        self.free_head = i
        self.chain_len[head] = descs_used
        self.data[head] = token
        # Put the head in the avail ring and publish it (virtqueue_add_split).
        self.ring.write_avail_entry(self.avail_idx_shadow, head)
        self.avail_idx_shadow = (self.avail_idx_shadow + 1) & 0xFFFF
        self.ring.write_avail_idx(self.avail_idx_shadow)
        self.num_added += 1
        return True

    def kick_prepare(self):
        old = (self.avail_idx_shadow - self.num_added) & 0xFFFF
        new = self.avail_idx_shadow
        self.num_added = 0
        if self.event:
            return vring_need_event(self.ring.read_avail_event(), new, old)
        return not self.ring.read_used_flags() & VRING_USED_F_NO_NOTIFY

    # -- used buffers -----------------------------------------------------------------------
    def more_used(self):
        return self.last_used_idx != self.ring.read_used_idx()

    def get_buf(self):
        """(token, len) of the next used buffer, or None."""
        if not self.more_used():
            return None
        head, length = self.ring.read_used_elem(self.last_used_idx)
        if head >= self.ring.size or head not in self.data:
            raise AssertionError(f"id {head} is not a head!")
        token = self.data.pop(head)
        self._detach(head)
        self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        if not self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT and self.event:
            self.ring.write_used_event(self.last_used_idx)
        return token, length

    def _detach(self, head):
        n = self.chain_len.pop(head)
        i = head
        for _ in range(n - 1):
            i = self.next[i]
        self.next[i] = self.free_head
        self.free_head = head
        self.num_free += n

    def disable_cb(self):
        if not self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.avail_flags_shadow |= VRING_AVAIL_F_NO_INTERRUPT
            if self.event_triggered:
                return
            if self.event:
                self.ring.write_used_event(0)      # "this is a hack" (virtio_ring.c)
            else:
                self.ring.write_avail_flags(self.avail_flags_shadow)

    def enable_cb(self):
        """virtqueue_enable_cb: True if no used buffers arrived meanwhile."""
        if self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.avail_flags_shadow &= ~VRING_AVAIL_F_NO_INTERRUPT
            if not self.event:
                self.ring.write_avail_flags(self.avail_flags_shadow)
        self.event_triggered = False
        if self.event:
            self.ring.write_used_event(self.last_used_idx)
        return not self.more_used()

    def interrupt(self):
        """vring_interrupt: False (IRQ_NONE) if there is nothing new."""
        self.interrupts += 1
        if not self.more_used():
            self.spurious += 1
            return False
        if self.event:
            self.event_triggered = True
        return True
