# SPDX-License-Identifier: BSD-2-Clause
"""Layouts and signatures shared by the blocks inside the virtqueue engine.

The engine (:class:`~.virtqueue.VirtqueueEngine`) is built from a ring walker (avail ring and
descriptor chains), one chain FIFO per request port, a used writer (used ring and interrupts)
and a DMA request multiplexer. These are the signals between them, plus the few the engine
exposes beyond the fixed interfaces of :mod:`.interface`:

* :data:`VirtqCounters` and :data:`VirtqErrorReport`: observability (benchmarks, debugging).
* :func:`QueueRestore`: setting a queue's ring indices (vDPA-style state restore, and the way
  testbenches start a queue near the 16-bit index wrap without pushing 65 000 requests).
"""

from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaReadRequest, DmaStatus, DmaWriteRequest
from .interface import EPOCH_BITS, VirtqSegment, queue_index_width

__all__ = [
    "EPOCH_BITS", "VirtqErrorCode", "VirtqErrorReport", "VirtqCounters", "COUNTER_WIDTH",
    "QueueRestore", "QueueOpKind", "QueueOp", "QueueConfigWord", "ChainEntry", "AvailSeen",
    "DmaRequesterSignature", "ChainWriteSignature",
]

COUNTER_WIDTH = 32


class VirtqErrorCode(enum.Enum, shape=4):
    """Why the engine stopped a queue (virtio 1.2 §2.7 "Split Virtqueues" driver requirements;
    the QEMU conditions of the project's virtio checklist §1.N, rule 99)."""
    NONE             = 0
    CONFIG           = 1    # enabled with a size that is 0, not a power of 2 or too large, or
                            # with a misaligned ring (desc 16, avail 2, used 4 bytes)
    AVAIL_IDX        = 2    # avail->idx moved by more than the queue size
    HEAD             = 3    # head index >= queue size
    NEXT             = 4    # next >= queue size (or >= the indirect table's entries)
    LOOP             = 5    # chain longer than the queue size (or than the indirect table)
    TOO_LONG         = 6    # chain longer than the engine's max_chain
    INDIRECT_FEATURE = 7    # INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated
    INDIRECT_NEXT    = 8    # INDIRECT and NEXT together
    INDIRECT_NESTED  = 9    # INDIRECT inside an indirect table
    INDIRECT_LEN     = 10   # indirect len 0 or not a multiple of 16
    INDIRECT_SIZE    = 11   # indirect table with more entries than max_indirect
    ORDER            = 12   # device-readable descriptor after a device-writable one
    OVERFLOW         = 13   # addr + len beyond 2**64
    DMA              = 14   # a DMA error on a ring or descriptor access


def VirtqErrorReport(queue_count):
    return data.StructLayout({
        "code":  VirtqErrorCode,
        "queue": queue_index_width(queue_count),
    })


def AvailSeen(queue_count):
    """The walker has a pushed queue's avail entries up to ``idx`` (exclusive) in hand: read
    into a session's cache, to be walked. An absolute index, not a count, so that a batch read
    again (after a dropped look-ahead) is never counted twice."""
    return data.StructLayout({
        "queue": queue_index_width(queue_count),
        "idx":   16,
    })


#: Event counters, each wrapping at 2**32.
VirtqCounters = data.StructLayout({
    "doorbells":    COUNTER_WIDTH,   # notify beats seen (all queues, merged or not)
    "avail_reads":  COUNTER_WIDTH,   # DMA reads of avail->idx and of avail ring entries
    "desc_reads":   COUNTER_WIDTH,   # DMA reads of descriptor windows and indirect tables
    "event_reads":  COUNTER_WIDTH,   # DMA reads of used_event / avail->flags
    "event_writes": COUNTER_WIDTH,   # DMA writes of avail_event
    "used_writes":  COUNTER_WIDTH,   # DMA writes of used ring elements
    "idx_writes":   COUNTER_WIDTH,   # DMA writes of used->idx
    "interrupts":   COUNTER_WIDTH,   # beats sent on control.irq
    "chains":       COUNTER_WIDTH,   # chains committed to a request port (before the epoch check)
    "completed":    COUNTER_WIDTH,   # completions accepted for an enabled queue
    "dropped":      COUNTER_WIDTH,   # completions for a disabled queue, and stale chains dropped
    "errors":       COUNTER_WIDTH,   # queues stopped (every VirtqErrorCode except NONE)
})


def QueueRestore(queue_count):
    """Set a queue's ring indices: the next avail index to read and the used index."""
    return data.StructLayout({
        "queue":     queue_index_width(queue_count),
        "avail_idx": 16,
        "used_idx":  16,
    })


class QueueOpKind(enum.Enum, shape=2):
    INIT    = 0   # new configuration, indices 0, queue enabled
    DISABLE = 1   # queue reset, enable = 0, or a refused configuration
    RESTORE = 2   # new indices for an enabled queue


#: A queue's ring configuration as the walker and the used writer keep it.
QueueConfigWord = data.StructLayout({
    "size":   16,
    "desc":   64,
    "driver": 64,
    "device": 64,
})


def QueueOp(queue_count):
    """Engine control → walker and used writer: applied in the cycle it is valid. The engine
    sends it only while both blocks are held and at rest."""
    return data.StructLayout({
        "kind":      QueueOpKind,
        "queue":     queue_index_width(queue_count),
        "config":    QueueConfigWord,
        "avail_idx": 16,
        "used_idx":  16,
    })


def ChainEntry(queue_count):
    return data.StructLayout({
        "segment": VirtqSegment(queue_count),
        "epoch":   EPOCH_BITS,
    })


class DmaRequesterSignature(wiring.Signature):
    """The request/status half of a DMA client port (``Out`` = requester side), without the
    buffer RAM ports: what each block inside the engine has towards the DMA multiplexer."""

    def __init__(self):
        super().__init__({
            "rd_req":    Out(stream.Signature(DmaReadRequest)),
            "rd_status": In(stream.Signature(DmaStatus, always_ready=True)),
            "wr_req":    Out(stream.Signature(DmaWriteRequest)),
            "wr_status": In(stream.Signature(DmaStatus, always_ready=True)),
        })

    def __eq__(self, other):
        return type(other) is type(self)

    def __repr__(self):
        return "DmaRequesterSignature()"


class ChainWriteSignature(wiring.Signature):
    """Walker → chain FIFO (``Out`` = walker side).

    ``en`` writes ``data`` tentatively; ``commit`` makes every entry written so far (including
    one written in the same cycle) visible to the reader; ``discard`` drops the entries written
    since the last commit. ``space`` is high while the FIFO can take a whole chain of the
    engine's maximum length.
    """

    def __init__(self, queue_count):
        self._queue_count = queue_count
        super().__init__({
            "data":    Out(ChainEntry(queue_count)),
            "en":      Out(1),
            "commit":  Out(1),
            "discard": Out(1),
            "space":   In(1),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other._queue_count == self._queue_count

    def __repr__(self):
        return f"ChainWriteSignature({self._queue_count})"
