# SPDX-License-Identifier: BSD-2-Clause
"""Interfaces between the virtio transport, the virtqueue engine and the device back-ends.

::

                 queue config, resets,   ┌─────────────┐  requests (segments) ┌─────────┐
    Transport ── doorbells, status  ───► │ Virtqueue   │ ───────────────────► │ Device  │
    (registers) ◄── used-buffer irqs ─── │ engine      │ ◄─────────────────── │ back-end│
         ▲       ◄── errors, idle    ─── └─────────────┘   completions (used)  └─────────┘
         │                                     │ DMA client                    │ DMA client
         └──── device config window, config-change strobe, idle ──────────────┘

**Transport → engine** (:class:`QueueControlSignature`, engine side is ``In``):

* ``config``: a stream of :data:`QueueConfig`, one per queue whose ``queue_enable`` was written
  with 1 (modern) or whose ``QUEUE_PFN`` was written (legacy; the transport computes the three
  ring addresses with the 4096-byte legacy alignment, or sends ``enable = 0`` for a PFN of 0).
  Addresses and size are latched at that moment, as QEMU does.
* ``notify``: a stream of :data:`Doorbell`, one per doorbell write (always ready: the engine
  keeps a pending bit per queue, so back-to-back doorbells are never lost, only merged). With
  VIRTIO_F_NOTIFICATION_DATA negotiated, a 32-bit doorbell write also carries the avail index
  the driver had published when it wrote it (``idx``, ``has_idx``): every ring entry before it
  is in host memory, so the engine may read them without reading ``avail->idx`` first.
* ``queue_reset``: a stream of queue indices to reset (VIRTIO_F_RING_RESET); the engine stops
  the queue, waits for its DMA in flight and answers on ``queue_reset_done``.
* ``reset``: level; while high the engine abandons all work, lets DMA in flight finish and
  clears all queue state. ``idle`` goes high once nothing is in flight and the state is clear.
  The transport shows ``device_status == 0`` only when every block's ``idle`` is high.
* ``driver_ok``: level; no buffers are consumed and no interrupts sent while it is low.
* ``event_idx``, ``indirect_desc``: the negotiated VIRTIO_F_EVENT_IDX / INDIRECT_DESC.
* ``irq``: (engine → transport) a stream of queue indices needing a used-buffer notification,
  issued after the used index write that it announces has been handed to the link. The
  transport turns it into an MSI-X message (the queue's vector) or ISR bit 0 and INTx.
* ``needs_reset``: (engine → transport) strobe: a ring or descriptor error made the engine stop
  (virtio 1.2 §2.1.2: the transport sets DEVICE_NEEDS_RESET and sends a config interrupt).

**Engine → device** (:class:`VirtqRequestSignature`, device side is ``In``): each request (a
descriptor chain) arrives as one :data:`VirtqSegment` beat per non-empty buffer: all readable
buffers first, then all writable ones, in chain order, indirect tables expanded; ``first`` and
``last`` mark the chain; ``epoch`` tags the queue's incarnation (see :data:`EPOCH_BITS`). A
device asking for a buffer of a *pulled* queue (see ``fetch``) gets either a chain or a single
beat with ``empty`` set. Zero-length descriptors are skipped.

**Device → engine** (:class:`VirtqCompletionSignature`): one :data:`VirtqUsed` beat per
finished chain: its queue, head id, the number of bytes the device wrote to its writable
buffers and the chain's ``epoch`` (from its segments). The engine drops a completion whose queue
is disabled or whose epoch is not the queue's current one (the queue was reset or re-enabled
while the device held the chain: virtio 1.2 §2.6.1, the device must not use the new ring for
it). Entries with ``batch_end`` clear are held and published (``used.idx``) together with the
next entry that has it set, all of the same queue: virtio-net's mergeable receive buffers must
appear together (virtio 1.2 §5.1.6.4). The device sends a completion only after the statuses of
its own DMA writes for that chain came back, so the used entry follows the data on the link.

**Device ↔ transport** (:class:`DeviceConfigSignature`, transport side ``Out``): the device's
configuration structure is a register block behind ``bus``; ``changed`` (device → transport)
strobes when the device changed a field (the transport bumps ``config_generation`` and sends a
configuration-change interrupt); ``reset``/``driver_ok``/``features`` tell the device the
driver's state, and ``idle`` tells the transport the device has no DMA in flight.
"""

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..function.register_bus import RegisterBusSignature
from ..spec.virtio import VirtioNotificationData

__all__ = [
    "queue_index_width", "EPOCH_BITS", "QueueConfig", "Doorbell", "VirtqSegment", "VirtqUsed",
    "QueueControlSignature", "VirtqRequestSignature", "VirtqCompletionSignature",
    "DeviceConfigSignature", "FEATURE_BITS",
]

#: Bits of a queue's epoch: the engine advances it whenever the queue is reset, disabled or
#: re-enabled, and tags each chain with it (``VirtqSegment.epoch``); the device returns the tag
#: in the chain's ``VirtqUsed.epoch``, and a completion of an earlier epoch is dropped, so that a
#: chain the device held across a queue reset is never published in the queue's new ring. A
#: queue reset and re-enable advance it by 2, so a chain held across 8 of them would alias.
EPOCH_BITS = 4

#: Feature bits the transport can negotiate (two 32-bit windows; Linux also writes selects 2-3,
#: which read zero and are ignored).
FEATURE_BITS = 64


def queue_index_width(queue_count):
    if not isinstance(queue_count, int) or queue_count < 1:
        raise ValueError(f"queue_count must be a positive integer, not {queue_count!r}")
    return max(1, (queue_count - 1).bit_length())


def QueueConfig(queue_count):
    return data.StructLayout({
        "queue":  queue_index_width(queue_count),
        "size":   16,      # a power of two, at most 32768 (queue_size)
        "desc":   64,      # queue_desc (descriptor area)
        "driver": 64,      # queue_driver (available ring)
        "device": 64,      # queue_device (used ring)
        "enable": 1,
    })


def Doorbell(queue_count):
    return data.StructLayout({
        "queue":   queue_index_width(queue_count),
        # VIRTIO_F_NOTIFICATION_DATA (virtio 1.2 §4.1.5.2): next_off and next_wrap of a split
        # ring together are the avail index after the driver's last published entry.
        "idx":     VirtioNotificationData["next_idx"].shape,
        "has_idx": 1,
    })


def VirtqSegment(queue_count):
    return data.StructLayout({
        "queue": queue_index_width(queue_count),
        "head":  16,       # head descriptor index: the used-ring id
        "addr":  64,
        "len":   32,
        "write": 1,        # device-writable buffer
        "first": 1,
        "last":  1,
        "empty": 1,        # pulled queue had nothing; the only beat of this answer
        "epoch": EPOCH_BITS,   # the queue's incarnation: copy it into the chain's VirtqUsed
    })


def VirtqUsed(queue_count):
    return data.StructLayout({
        "queue":     queue_index_width(queue_count),
        "head":      16,
        "len":       32,   # bytes written into the chain's writable buffers
        "batch_end": 1,
        "epoch":     EPOCH_BITS,   # the chain's VirtqSegment.epoch
    })


class QueueControlSignature(wiring.Signature):
    """Transport → virtqueue engine control (``Out`` = transport side)."""

    def __init__(self, queue_count):
        self._queue_count = queue_count
        qw = queue_index_width(queue_count)
        super().__init__({
            "config":           Out(stream.Signature(QueueConfig(queue_count))),
            "notify":           Out(stream.Signature(Doorbell(queue_count), always_ready=True)),
            "queue_reset":      Out(stream.Signature(qw)),
            "queue_reset_done": In(stream.Signature(qw, always_ready=True)),
            "reset":            Out(1),
            "driver_ok":        Out(1),
            "event_idx":        Out(1),
            "indirect_desc":    Out(1),
            "irq":              In(stream.Signature(qw)),
            "needs_reset":      In(1),
            "idle":             In(1),
        })

    @property
    def queue_count(self):
        return self._queue_count

    def __eq__(self, other):
        return type(other) is type(self) and other._queue_count == self._queue_count

    def __repr__(self):
        return f"QueueControlSignature({self._queue_count})"


class VirtqRequestSignature(wiring.Signature):
    """Virtqueue engine → device requests for one port (``Out`` = engine side).

    ``fetch`` (device → engine) asks for the next chain of a pulled queue.
    """

    def __init__(self, queue_count):
        self._queue_count = queue_count
        super().__init__({
            "segment": Out(stream.Signature(VirtqSegment(queue_count))),
            "fetch":   In(stream.Signature(queue_index_width(queue_count))),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other._queue_count == self._queue_count

    def __repr__(self):
        return f"VirtqRequestSignature({self._queue_count})"


class VirtqCompletionSignature(wiring.Signature):
    """Device → virtqueue engine completions (``Out`` = device side)."""

    def __init__(self, queue_count):
        self._queue_count = queue_count
        super().__init__({
            "used": Out(stream.Signature(VirtqUsed(queue_count))),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other._queue_count == self._queue_count

    def __repr__(self):
        return f"VirtqCompletionSignature({self._queue_count})"


class DeviceConfigSignature(wiring.Signature):
    """Transport → device: configuration window and driver state (``Out`` = transport side).

    Members
    -------
    bus : Out(RegisterBusSignature(addr_width))
        Accesses to the device-specific configuration structure (modern DEVICE_CFG window, and
        the legacy header's device area), byte offsets from its start.
    changed : In(1)
        Strobe: the device changed a configuration field.
    reset : Out(1)
        Level: device reset in progress; the device drops its work and clears its state.
    driver_ok : Out(1)
    features : Out(FEATURE_BITS)
        The negotiated features (valid once FEATURES_OK is set, or in legacy mode as written).
    idle : In(1)
        The device has no DMA in flight (and, during ``reset``, its state is clear).
    """

    def __init__(self, addr_width=8):
        self._addr_width = addr_width
        super().__init__({
            "bus":       Out(RegisterBusSignature(addr_width)),
            "changed":   In(1),
            "reset":     Out(1),
            "driver_ok": Out(1),
            "features":  Out(FEATURE_BITS),
            "idle":      In(1),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other._addr_width == self._addr_width

    def __repr__(self):
        return f"DeviceConfigSignature({self._addr_width})"
