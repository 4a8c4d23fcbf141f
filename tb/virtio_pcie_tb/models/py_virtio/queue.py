# SPDX-License-Identifier: BSD-2-Clause
"""One split virtqueue, device side, walked with DMA through the root complex.

:class:`DeviceQueue` is what a device back-end pulls descriptor chains from and pushes used
entries to (virtio 1.2 §2.7):

* :meth:`DeviceQueue.pop` reads ``avail->idx``, then the ring entry, then the chain (following
  NEXT, expanding one INDIRECT table); it checks each chain as QEMU does (head or next out of
  range, loops, bad indirect tables, readable after writable) and, on an error, stops the device
  with DEVICE_NEEDS_RESET and a configuration interrupt (:meth:`Function.device_error`);
* :meth:`DeviceQueue.push_used` writes the used elements, then one ``used->idx`` update for the
  whole batch (so mergeable receive buffers appear together), then decides on an interrupt: with
  EVENT_IDX ``vring_need_event(used_event, new, old)``, without it unless the driver set
  NO_INTERRUPT;
* driver → device suppression: without EVENT_IDX the device sets ``used->flags = NO_NOTIFY`` while
  it is busy and clears it (re-checking the index, the classic race) before it sleeps; with
  EVENT_IDX it publishes ``avail_event = last_avail_idx`` before it sleeps.

A :class:`Chain` offers the readable bytes (:meth:`Chain.read`) and scatters into the writable
buffers (:meth:`Chain.write`); zero-length descriptors are accepted and skipped.
"""

from cocotb.triggers import Event

from virtio_pcie.spec.virtio import (
    VirtqAvailFlags, VirtqAvailHeader, VirtqDesc, VirtqDescFlags, VirtqUsedElem, VirtqUsedFlags,
    VirtqUsedHeader, virtq_avail_event_offset, virtq_avail_ring_offset, virtq_used_event_offset,
    virtq_used_ring_offset, vring_need_event,
)

from ...codec import codec

__all__ = ["Chain", "DeviceQueue", "RingError"]

_DESC  = codec(VirtqDesc)
_AVAIL = codec(VirtqAvailHeader)
_USED  = codec(VirtqUsedHeader)
_ELEM  = codec(VirtqUsedElem)
_F_NEXT, _F_WRITE, _F_INDIRECT = (VirtqDescFlags.NEXT.value, VirtqDescFlags.WRITE.value,
                                  VirtqDescFlags.INDIRECT.value)


class RingError(Exception):
    """The driver broke a ring rule; the device needs a reset."""


class Chain:
    """One descriptor chain: ``head`` and its buffers ``[(addr, length, writable)]``."""

    def __init__(self, queue, head, buffers):
        self.queue = queue
        self.head = head
        self.buffers = buffers
        self.readable = [(a, n) for a, n, w in buffers if not w and n]
        self.writable = [(a, n) for a, n, w in buffers if w and n]

    @property
    def readable_len(self):
        return sum(n for _, n in self.readable)

    @property
    def writable_len(self):
        return sum(n for _, n in self.writable)

    async def read(self, length=None):
        """The device-readable bytes (all of them, or the first ``length``)."""
        fn = self.queue.fn
        out = bytearray()
        for addr, n in self.readable:
            if length is not None and len(out) >= length:
                break
            take = n if length is None else min(n, length - len(out))
            out += await fn.dma_read(addr, take)
        return bytes(out)

    async def write(self, data, offset=0):
        """Scatter ``data`` into the writable buffers from byte ``offset``; returns the bytes
        written. Raises ValueError if they do not fit."""
        if offset + len(data) > self.writable_len:
            raise ValueError(f"{len(data)} bytes at {offset} do not fit {self.writable_len} "
                             f"writable bytes")
        fn = self.queue.fn
        pos = 0
        skip = offset
        for addr, n in self.writable:
            if pos >= len(data):
                break
            if skip >= n:
                skip -= n
                continue
            take = min(n - skip, len(data) - pos)
            await fn.dma_write(addr + skip, data[pos:pos + take])
            pos += take
            skip = 0
        return len(data)

    def __repr__(self):
        return f"Chain(head={self.head}, {len(self.readable)} out, {len(self.writable)} in)"


class DeviceQueue:
    """Device-side state of one virtqueue of a :class:`~.function.PyVirtioFunction`."""

    def __init__(self, fn, index, max_size):
        self.fn = fn
        self.index = index
        self.max_size = max_size
        self.notify_off = index
        self.kicks = 0
        self.interrupts = 0
        self.suppressed_interrupts = 0
        self.chains = 0
        self._kick = Event()
        self.reset()

    def reset(self):
        self.size = self.max_size
        self.desc = self.driver = self.device = 0
        self.enabled = False
        self.msix_vector = 0xFFFF
        self.last_avail_idx = self.fn.start_index
        self.used_idx = self.fn.start_index
        self.generation = getattr(self, "generation", 0) + 1
        self._busy_flag = False
        self._kick.set()          # wake poppers so they notice

    def set_start_index(self, index):
        """Test back door: the driver model started this queue's indices at ``index``."""
        self.last_avail_idx = index & 0xFFFF
        self.used_idx = index & 0xFFFF

    @property
    def event_idx(self):
        return self.fn.has_feature_event_idx

    def kick(self):
        self.kicks += 1
        self._kick.set()

    def live(self):
        return self.enabled and self.fn.queues_running()

    # -- ring access -------------------------------------------------------------------------------
    async def _r16(self, addr):
        return int.from_bytes(await self.fn.dma_read(addr, 2), "little")

    async def _w16(self, addr, value):
        await self.fn.dma_write(addr, (value & 0xFFFF).to_bytes(2, "little"))

    async def _avail_idx(self):
        return await self._r16(self.driver + _AVAIL.offset("idx"))

    async def _set_used_flags(self, flags):
        await self._w16(self.device + _USED.offset("flags"), flags)

    # -- popping chains ----------------------------------------------------------------------------
    async def pop(self):
        """Wait for the next available chain; returns a :class:`Chain`, or None if the queue
        was reset (or the device stopped) while waiting."""
        gen = self.generation
        while True:
            if gen != self.generation:
                return None
            if not self.live():
                self._kick.clear()
                await self._kick.wait()
                continue
            chain = await self.try_pop()
            if gen != self.generation:
                return None
            if chain is not None:
                return chain
            self._kick.clear()
            if await self._prepare_sleep():
                continue
            await self._kick.wait()

    async def try_pop(self):
        """The next available chain, or None if there is none right now."""
        if not self.live():
            return None
        avail = await self._avail_idx()
        pending = (avail - self.last_avail_idx) & 0xFFFF
        if pending > self.size:
            self.fn.device_error(f"Guest moved index from {self.last_avail_idx} to {avail}")
            return None
        if not pending:
            return None
        if not self._busy_flag and not self.event_idx:
            self._busy_flag = True
            await self._set_used_flags(VirtqUsedFlags.NO_NOTIFY.value)
        slot = self.last_avail_idx % self.size
        head = await self._r16(self.driver + virtq_avail_ring_offset(slot))
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        try:
            buffers = await self._walk(head)
        except RingError as e:
            self.fn.device_error(str(e))
            return None
        self.chains += 1
        return Chain(self, head, buffers)

    async def _prepare_sleep(self):
        """Re-enable driver notifications before sleeping; True if more work arrived."""
        if self.event_idx:
            await self._w16(self.device + virtq_avail_event_offset(self.size),
                            self.last_avail_idx)
        elif self._busy_flag:
            self._busy_flag = False
            await self._set_used_flags(0)
        else:
            return False
        # Suppression is not synchronised: look again before sleeping.
        return self.live() and await self._avail_idx() != self.last_avail_idx

    async def _walk(self, head):
        if head >= self.size:
            raise RingError(f"Guest says index {head} is available")
        buffers = []
        table, table_len = None, self.size
        i = head
        count = 0
        seen_write = False
        while True:
            if table is None:
                raw = await self.fn.dma_read(self.desc + i * _DESC.size, _DESC.size)
            else:
                raw = table[i * _DESC.size:(i + 1) * _DESC.size]
            d = _DESC.unpack(raw)
            count += 1
            if count > table_len:
                raise RingError("Looped descriptor")
            if d["flags"] & _F_INDIRECT:
                if table is not None:
                    raise RingError("Indirect descriptor in an indirect table")
                if not self.fn.has_feature_indirect:
                    raise RingError("Indirect descriptor without VIRTIO_F_INDIRECT_DESC")
                if d["flags"] & _F_NEXT:
                    raise RingError("Indirect descriptor with NEXT")
                if d["len"] == 0 or d["len"] % _DESC.size:
                    raise RingError("Invalid size for indirect buffer table")
                table = await self.fn.dma_read(d["addr"], d["len"])
                table_len = d["len"] // _DESC.size
                i, count = 0, 0
                continue
            writable = bool(d["flags"] & _F_WRITE)
            if not writable and seen_write:
                raise RingError("Incorrect order for descriptors")
            seen_write |= writable
            buffers.append((d["addr"], d["len"], writable))
            if not d["flags"] & _F_NEXT:
                return buffers
            i = d["next"]
            if i >= table_len:
                raise RingError(f"Desc next is {i}")

    # -- used ring ---------------------------------------------------------------------------------
    async def push_used(self, entries):
        """Publish ``[(head, length)]`` with one ``used->idx`` update; interrupt if wanted."""
        if not entries or not self.enabled:
            return
        gen = self.generation
        old = self.used_idx
        idx = old
        for head, length in entries:
            slot = idx % self.size
            await self.fn.dma_write(self.device + virtq_used_ring_offset(slot),
                                    _ELEM.pack(id=head, len=length))
            idx = (idx + 1) & 0xFFFF
        if gen != self.generation:
            return
        self.used_idx = idx
        await self._w16(self.device + _USED.offset("idx"), idx)
        if self.event_idx:
            used_event = await self._r16(self.driver + virtq_used_event_offset(self.size))
            need = vring_need_event(used_event, idx, old)
        else:
            flags = await self._r16(self.driver + _AVAIL.offset("flags"))
            need = not flags & VirtqAvailFlags.NO_INTERRUPT.value
        if need:
            self.interrupts += 1
            await self.fn.queue_interrupt(self)
        else:
            self.suppressed_interrupts += 1
