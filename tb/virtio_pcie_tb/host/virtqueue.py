# SPDX-License-Identifier: BSD-2-Clause
"""The split virtqueue, driver side, as Linux's ``drivers/virtio/virtio_ring.c`` runs it.

One :class:`Virtqueue` is one ``struct vring_virtqueue`` with a split ring (virtio 1.2 §2.7):
the descriptor table, the available ring and the used ring in one block of host memory laid out by
``vring_init()`` (``vring_align`` = ``SMP_CACHE_BYTES`` for modern devices, 4096 for legacy ones),
zeroed, the free descriptors chained through a shadow ``desc_extra[].next``. Methods keep the
kernel's names and rules:

* :meth:`add_sgs` (``virtqueue_add_sgs``): readable scatter-gather lists first, then writable;
  an indirect table when INDIRECT_DESC is negotiated, the queue has no per-buffer context and the
  request has more than one element (``virtqueue_use_indirect``); ``-ENOSPC`` (after notifying the
  device if the request had readable parts) when descriptors run out; a forced kick after 65535
  additions without one.
* :meth:`kick_prepare` / :meth:`notify` / :meth:`kick`: with EVENT_IDX a doorbell only when
  ``vring_need_event(avail_event, new, old)``, else unless ``used->flags & NO_NOTIFY``.
* :meth:`get_buf`: reads ``used->idx`` then the element, checks the id (``"id %u out of
  range"``, ``"id %u is not a head!"`` mark the queue broken, ``BAD_RING``), frees the chain and,
  while callbacks are enabled, publishes ``used_event = last_used_idx``.
* :meth:`disable_cb` (``used_event = 0`` hack with EVENT_IDX, ``NO_INTERRUPT`` flag without),
  :meth:`enable_cb_prepare`, :meth:`poll`, :meth:`enable_cb`, :meth:`enable_cb_delayed` (used_event
  at ¾ of the outstanding buffers), :meth:`vring_interrupt` (``IRQ_NONE`` when there is no work).

Counters per queue (:attr:`stats`) let tests and benches assert on doorbells and interrupts. A
queue may start its indices at any value (``start_index``) to exercise the 16-bit wrap; the
device side must be told the same (a test back door), since a real device starts at 0.
"""

import logging
from dataclasses import dataclass, field

from virtio_pcie.spec.virtio import (
    VirtqAvailFlags, VirtqAvailHeader, VirtqDesc, VirtqDescFlags, VirtqUsedElem, VirtqUsedFlags,
    VirtqUsedHeader, legacy_vring_layout, virtq_avail_ring_offset, virtq_avail_event_offset,
    virtq_desc_size, virtq_used_event_offset, virtq_used_ring_offset, virtq_used_size,
    vring_need_event, VIRTQ_MAX_SIZE,
)

from ..codec import codec
from .errors import LinuxError, VirtqueueBroken

__all__ = ["Sg", "VirtqueueStats", "Virtqueue", "vring_size"]

_DESC  = codec(VirtqDesc)
_AVAIL = codec(VirtqAvailHeader)
_USED  = codec(VirtqUsedHeader)
_ELEM  = codec(VirtqUsedElem)
_F_NEXT     = VirtqDescFlags.NEXT.value
_F_WRITE    = VirtqDescFlags.WRITE.value
_F_INDIRECT = VirtqDescFlags.INDIRECT.value
_NO_INTERRUPT = VirtqAvailFlags.NO_INTERRUPT.value
_NO_NOTIFY    = VirtqUsedFlags.NO_NOTIFY.value


@dataclass(frozen=True)
class Sg:
    """One scatterlist element: ``length`` bytes of host memory at bus address ``addr``."""
    addr:   int
    length: int

    @classmethod
    def of(cls, buf, offset=0, length=None):
        """The element covering ``buf`` (a :class:`~.memory.DmaBuffer`) or a part of it."""
        length = buf.size - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > buf.size:
            raise ValueError(f"{length} bytes at {offset} outside a {buf.size}-byte buffer")
        return cls(buf.addr + offset, length)


@dataclass
class VirtqueueStats:
    added:         int = 0     # buffers (chains) made available
    used:          int = 0     # buffers taken back with get_buf
    kicks:         int = 0     # doorbells written
    kicks_skipped: int = 0     # kick_prepare said the device does not want one
    interrupts:    int = 0     # vring_interrupt calls that found work
    spurious:      int = 0     # vring_interrupt calls with nothing new (IRQ_NONE)
    indirect:      int = 0     # buffers sent with an indirect table
    enospc:        int = 0     # add_sgs refused for lack of descriptors
    times:         list = field(default_factory=list)   # sim ns of each interrupt with work


def vring_size(num, align):
    """``vring_size()``: bytes of a split ring of ``num`` entries laid out with ``align``."""
    _, _, used = legacy_vring_layout(0, num, align)
    return used + virtq_used_size(num)


class Virtqueue:
    """A split virtqueue in host memory (``vring_create_virtqueue``).

    Parameters
    ----------
    index : int
        Queue index (what the doorbell carries).
    num : int
        Size the device offered; may be halved (``may_reduce_num``) while the ring does not fit
        ``ring_alloc_limit`` bytes, as Linux does on allocation failure.
    memory : HostMemory
    vring_align : int
    event_idx, indirect : bool
        VIRTIO_F_EVENT_IDX / VIRTIO_F_INDIRECT_DESC negotiated.
    notify : async callable(vq) -> bool
        Writes the doorbell (the transport's ``vp_notify``).
    callback : async callable(vq), optional
        Called from :meth:`vring_interrupt`; None for polled queues (``NO_INTERRUPT`` is set in the
        available ring when EVENT_IDX is off).
    ctx : bool
        The queue carries a per-buffer context (``virtqueue_add_inbuf_ctx``); disables indirect.
    """

    def __init__(self, *, index, num, memory, vring_align, event_idx, indirect, notify,
                 callback=None, name="", ctx=False, may_reduce_num=True, ring_alloc_limit=None,
                 page_size=4096, start_index=0, observer=None):
        if not num or num & (num - 1) or num > VIRTQ_MAX_SIZE:
            raise LinuxError("EINVAL", f"virtqueue {name}: bad ring size {num}")
        self.log = logging.getLogger(f"cocotb.virtio.vq.{name or index}")
        self.index = index
        self.name = name
        self.memory = memory
        self.notify_fn = notify
        self.callback = callback
        self.event = bool(event_idx)
        self.indirect = bool(indirect) and not ctx
        self.use_ctx = ctx
        self.vring_align = vring_align
        self.broken = False
        self.broken_reason = None
        self.event_triggered = False
        self.stats = VirtqueueStats()
        # Test instrumentation (not Linux): told what the device may write, and when it may no
        # longer (the fuzzer's link monitor). ring_added/ring_freed(vq),
        # buffers_added(vq, head, [(addr, length)] of writable elements), buffers_used(vq, head).
        self.observer = observer

        # vring_alloc_queue_split: halve num while the allocation "fails"
        while num and vring_size(num, vring_align) > page_size:
            if ring_alloc_limit is None or vring_size(num, vring_align) <= ring_alloc_limit:
                break
            if not may_reduce_num:
                raise LinuxError("ENOMEM", f"virtqueue {name}: cannot allocate "
                                           f"{vring_size(num, vring_align)} bytes for the ring")
            num //= 2
        self.num = num
        self.num_max = num
        self.ring = memory.alloc(vring_size(num, vring_align), align=max(page_size, vring_align))
        desc, avail, used = legacy_vring_layout(self.ring.addr, num, vring_align)
        self.desc_addr, self.avail_addr, self.used_addr = desc, avail, used
        self._avail_off = avail - desc
        self._used_off = used - desc
        if observer is not None:
            observer.ring_added(self)

        self.free_head = 0
        self.num_free = num
        self.desc_extra = [[0, 0, 0, i + 1] for i in range(num)]   # addr, len, flags, next
        self.desc_state = [None] * num    # head -> (data, indirect buffer or ctx)
        self.avail_flags_shadow = 0
        self.avail_idx_shadow = start_index & 0xFFFF
        self.last_used_idx = start_index & 0xFFFF
        self.num_added = 0
        if start_index:
            self._w16(self._avail_off + _AVAIL.offset("idx"), self.avail_idx_shadow)
            self._w16(self._used_off + _USED.offset("idx"), self.last_used_idx)
        # virtqueue_vring_init_split: no callback -> the device need not interrupt
        if callback is None:
            self.avail_flags_shadow |= _NO_INTERRUPT
            if not self.event:
                self._w16(self._avail_off + _AVAIL.offset("flags"), self.avail_flags_shadow)

    def __repr__(self):
        return f"Virtqueue({self.name or self.index}, num={self.num})"

    # -- ring memory (the CPU's view) -------------------------------------------------------------
    def _w16(self, offset, value):
        self.ring.write_int(offset, 2, value)

    def _r16(self, offset):
        return self.ring.read_int(offset, 2)

    @property
    def vring_size(self):
        return self.num

    def _used_idx(self):
        return self._r16(self._used_off + _USED.offset("idx"))

    def _used_flags(self):
        return self._r16(self._used_off + _USED.offset("flags"))

    def _avail_event(self):
        return self._r16(self._used_off + virtq_avail_event_offset(self.num))

    def _set_used_event(self, value):
        self._w16(self._avail_off + virtq_used_event_offset(self.num), value & 0xFFFF)

    def _write_desc(self, table, offset, i, addr, length, flags, nxt):
        table.write(offset + i * _DESC.size,
                    _DESC.pack(addr=addr, len=length, flags=flags, next=nxt))

    def _bad_ring(self, message):
        self.log.error("%s: %s", self.name or self.index, message)
        self.broken = True
        self.broken_reason = message

    # -- adding buffers ----------------------------------------------------------------------------
    def _use_indirect(self, total_sg):
        return self.indirect and total_sg > 1 and self.num_free

    async def add_sgs(self, sgs, out_sgs, in_sgs, data, ctx=None):
        """``virtqueue_add_sgs()``: ``sgs`` is a list of ``out_sgs + in_sgs`` scatterlists (lists
        of :class:`Sg`). ``data`` is the token :meth:`get_buf` returns. Raises LinuxError ENOSPC /
        EIO like the kernel returns them."""
        if data is None:
            raise ValueError("virtqueue_add: data must not be None (BUG_ON)")
        if ctx is not None and self.indirect:
            raise ValueError("virtqueue_add: ctx with an indirect-capable queue (BUG_ON)")
        if len(sgs) != out_sgs + in_sgs:
            raise ValueError(f"{len(sgs)} scatterlists for {out_sgs} out + {in_sgs} in")
        if self.broken:
            raise VirtqueueBroken(f"virtqueue {self.name}: add to a broken queue")
        elements = [(sg, i >= out_sgs) for i, lst in enumerate(sgs) for sg in lst]
        total_sg = len(elements)
        if total_sg == 0:
            raise ValueError("virtqueue_add: no scatterlist elements (BUG_ON)")
        head = self.free_head
        indirect = bool(self._use_indirect(total_sg))
        descs_used = 1 if indirect else total_sg
        if self.num_free < descs_used:
            self.log.debug("can't add buf len %d - avail = %d", descs_used, self.num_free)
            self.stats.enospc += 1
            # "FIXME: for historical reasons, we force a notify here if there are outgoing
            # parts to the buffer."
            if out_sgs:
                await self.notify()
            raise LinuxError("ENOSPC", f"virtqueue {self.name}: {descs_used} descriptors "
                                       f"needed, {self.num_free} free")
        if indirect:
            table = self.memory.alloc(total_sg * _DESC.size, align=_DESC.size)
            for i, (sg, writable) in enumerate(elements):
                flags = _F_NEXT | (_F_WRITE if writable else 0)
                if i == total_sg - 1:
                    flags &= ~_F_NEXT
                self._write_desc(table, 0, i, sg.addr, sg.length, flags, i + 1)
            self._add_desc(head, table.addr, total_sg * _DESC.size, _F_INDIRECT)
            self.free_head = self.desc_extra[head][3]
            self.desc_state[head] = (data, table)
            self.stats.indirect += 1
        else:
            i = head
            prev = head
            for sg, writable in elements:
                prev = i
                i = self._add_desc(i, sg.addr, sg.length,
                                   _F_NEXT | (_F_WRITE if writable else 0))
            # Last one doesn't continue.
            self._set_desc_flags(prev, self.desc_extra[prev][2] & ~_F_NEXT)
            self.free_head = i
            self.desc_state[head] = (data, ctx)
        self.num_free -= descs_used
        if self.observer is not None:
            self.observer.buffers_added(self, head, [(sg.addr, sg.length)
                                                     for sg, writable in elements if writable])

        # Put entry in available array (but don't update avail->idx until they do sync).
        slot = self.avail_idx_shadow & (self.num - 1)
        self._w16(self._avail_off + virtq_avail_ring_offset(slot), head)
        # Descriptors and available array need to be set before we expose the new available
        # array entries.
        self.avail_idx_shadow = (self.avail_idx_shadow + 1) & 0xFFFF
        self._w16(self._avail_off + _AVAIL.offset("idx"), self.avail_idx_shadow)
        self.num_added += 1
        self.stats.added += 1
        # This is very unlikely, but theoretically possible.  Kick just in case.
        if self.num_added == (1 << 16) - 1:
            await self.kick()

    def _add_desc(self, i, addr, length, flags):
        nxt = self.desc_extra[i][3]
        self.desc_extra[i][:3] = [addr, length, flags]
        self._write_desc(self.ring, 0, i, addr, length, flags, nxt)
        return nxt

    def _set_desc_flags(self, i, flags):
        self.desc_extra[i][2] = flags
        addr, length, _, nxt = self.desc_extra[i]
        self._write_desc(self.ring, 0, i, addr, length, flags, nxt)

    async def add_outbuf(self, sg, data):
        await self.add_sgs([sg], 1, 0, data)

    async def add_inbuf(self, sg, data):
        await self.add_sgs([sg], 0, 1, data)

    async def add_inbuf_ctx(self, sg, data, ctx):
        await self.add_sgs([sg], 0, 1, data, ctx=ctx)

    # -- notifying the device ----------------------------------------------------------------------
    def kick_prepare(self):
        """``virtqueue_kick_prepare()``: does the device want a doorbell for what was added?"""
        old = (self.avail_idx_shadow - self.num_added) & 0xFFFF
        new = self.avail_idx_shadow
        self.num_added = 0
        if self.event:
            needs_kick = vring_need_event(self._avail_event(), new, old)
        else:
            needs_kick = not (self._used_flags() & _NO_NOTIFY)
        if not needs_kick:
            self.stats.kicks_skipped += 1
        return needs_kick

    async def notify(self):
        """``virtqueue_notify()``: write the doorbell; False if the queue is broken."""
        if self.broken:
            return False
        self.stats.kicks += 1
        if not await self.notify_fn(self):
            self.broken = True
            self.broken_reason = "notify failed"
            return False
        return True

    async def kick(self):
        if self.kick_prepare():
            return await self.notify()
        return True

    # -- taking buffers back -----------------------------------------------------------------------
    def more_used(self):
        return self.last_used_idx != self._used_idx()

    def _detach_buf(self, head):
        data, extra = self.desc_state[head]
        if self.observer is not None:
            self.observer.buffers_used(self, head)
        self.desc_state[head] = None
        i = head
        self.num_free += 1
        while self.desc_extra[i][2] & _F_NEXT:
            i = self.desc_extra[i][3]
            self.num_free += 1
        self.desc_extra[i][3] = self.free_head
        self.free_head = head
        if self.desc_extra[head][2] & _F_INDIRECT:
            self.memory.free(extra)
            extra = None
        return data, extra

    def get_buf_ctx(self):
        """``virtqueue_get_buf_ctx()``: ``(data, len, ctx)`` of the next used buffer, or None."""
        if self.broken:
            return None
        if not self.more_used():
            return None
        last_used = self.last_used_idx & (self.num - 1)
        raw = self.ring.read(self._used_off + virtq_used_ring_offset(last_used), _ELEM.size)
        i = _ELEM.get(raw, "id")
        length = _ELEM.get(raw, "len")
        if i >= self.num:
            self._bad_ring(f"id {i} out of range")
            return None
        if self.desc_state[i] is None:
            self._bad_ring(f"id {i} is not a head!")
            return None
        data, ctx = self._detach_buf(i)
        self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        # If we expect an interrupt for the next entry, tell host by writing event index.
        if not self.avail_flags_shadow & _NO_INTERRUPT:
            self._set_used_event(self.last_used_idx)
        self.stats.used += 1
        return data, length, ctx

    def get_buf(self):
        """``virtqueue_get_buf()``: ``(data, len)`` or None."""
        got = self.get_buf_ctx()
        return None if got is None else got[:2]

    def detach_unused_buf(self):
        """``virtqueue_detach_unused_buf()``: take back a buffer the device never used."""
        for head, state in enumerate(self.desc_state):
            if state is not None:
                data, _ = self._detach_buf(head)
                self.avail_idx_shadow = (self.avail_idx_shadow - 1) & 0xFFFF
                self._w16(self._avail_off + _AVAIL.offset("idx"), self.avail_idx_shadow)
                return data
        return None

    # -- callbacks ---------------------------------------------------------------------------------
    def disable_cb(self):
        """``virtqueue_disable_cb()``."""
        if self.event_triggered:
            return
        if not self.avail_flags_shadow & _NO_INTERRUPT:
            self.avail_flags_shadow |= _NO_INTERRUPT
            if self.event:
                # TODO in Linux: "this is a hack. Figure out a cleaner value to write."
                self._set_used_event(0)
            else:
                self._w16(self._avail_off + _AVAIL.offset("flags"), self.avail_flags_shadow)

    def enable_cb_prepare(self):
        """``virtqueue_enable_cb_prepare()``: returns the ``last_used_idx`` for :meth:`poll`."""
        if self.event_triggered:
            self.event_triggered = False
        if self.avail_flags_shadow & _NO_INTERRUPT:
            self.avail_flags_shadow &= ~_NO_INTERRUPT
            if not self.event:
                self._w16(self._avail_off + _AVAIL.offset("flags"), self.avail_flags_shadow)
        self._set_used_event(self.last_used_idx)
        return self.last_used_idx

    def poll(self, last_used_idx):
        """``virtqueue_poll()``: True if buffers were used since ``last_used_idx``."""
        if self.broken:
            return False
        return last_used_idx != self._used_idx()

    def enable_cb(self):
        """``virtqueue_enable_cb()``: False if there are already pending buffers."""
        return not self.poll(self.enable_cb_prepare())

    def enable_cb_delayed(self):
        """``virtqueue_enable_cb_delayed()``: ask for an interrupt only after about ¾ of the
        outstanding buffers are used. False if that many are already used."""
        if self.event_triggered:
            self.event_triggered = False
        if self.avail_flags_shadow & _NO_INTERRUPT:
            self.avail_flags_shadow &= ~_NO_INTERRUPT
            if not self.event:
                self._w16(self._avail_off + _AVAIL.offset("flags"), self.avail_flags_shadow)
        # TODO in Linux: tune this threshold
        bufs = ((self.avail_idx_shadow - self.last_used_idx) & 0xFFFF) * 3 // 4
        self._set_used_event(self.last_used_idx + bufs)
        if ((self._used_idx() - self.last_used_idx) & 0xFFFF) > bufs:
            return False
        return True

    async def vring_interrupt(self):
        """``vring_interrupt()``: run the callback if there is work; False = ``IRQ_NONE``."""
        if not self.more_used():
            self.log.debug("virtqueue interrupt with no work for %s", self.name)
            self.stats.spurious += 1
            return False
        if self.broken:
            return True
        # Just a hint for performance: so it's ok that this can be racy!
        if self.event:
            self.event_triggered = True
        self.stats.interrupts += 1
        from cocotb.utils import get_sim_time
        self.stats.times.append(get_sim_time("ns"))
        if self.callback is not None:
            await self.callback(self)
        return True

    def free_ring(self):
        """``vring_del_virtqueue()``: give the ring (and outstanding indirect tables) back."""
        if self.observer is not None:
            self.observer.ring_freed(self)
        for head, state in enumerate(self.desc_state):
            if state is not None and self.desc_extra[head][2] & _F_INDIRECT:
                self.memory.free(state[1])
        self.memory.free(self.ring)

    @property
    def desc_table_bytes(self):
        return virtq_desc_size(self.num)
