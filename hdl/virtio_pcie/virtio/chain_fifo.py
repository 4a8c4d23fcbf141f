# SPDX-License-Identifier: BSD-2-Clause
"""The segment FIFO between the ring walker and one request port of a device.

The walker writes a chain's segments as it validates the chain and commits them only when the
whole chain turned out valid, so a device never sees any part of a malformed chain (virtio 1.2
§2.7.5 and §2.7.5.3.1 driver requirements; project checklist §1.N rule 99: "never DMA outside
the described buffers"). The reader side drops whole chains of queues that were reset or
re-enabled after the chain was built (virtio 1.2 §2.6.1 "Virtqueue Reset": the device must not
execute requests of a reset queue).
"""

from amaranth import Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .engine_signatures import EPOCH_BITS, ChainEntry, ChainWriteSignature
from .interface import VirtqSegment

__all__ = ["ChainFifo"]


class ChainFifo(wiring.Component):
    """Holds committed chains for one request port and presents their segments in order.

    Parameters
    ----------
    queue_count : int
    depth : int
        Entries held; a power of two, at least ``max_chain``.
    max_chain : int
        The longest chain (in segments) the walker may write; ``w.space`` is high while at
        least that many entries are free.
    pulled : bool
        The port's chains answer fetches: a dropped chain is replaced by an ``empty`` beat, so
        that every fetch still gets exactly one answer.

    Members
    -------
    w : In(ChainWriteSignature(queue_count))
        Tentative writes, commit and discard (see the signature).
    o : Out(stream.Signature(VirtqSegment(queue_count)))
        Segments of committed chains. A chain whose first beat, before it is taken, finds its
        queue disabled or its epoch changed (``enabled``, ``epoch``) is dropped whole and
        counted on ``dropped``; that first beat is withdrawn (``valid`` falls without a
        transfer: the one exception to the stream rules, so that a device never receives a
        chain of a queue that was reset while the chain waited at the port).
    enabled : In(queue_count)
    epoch : In(queue_count * EPOCH_BITS)
        Per-queue state from the engine's control.
    clear : In(1)
        Empties the FIFO (device reset). A chain whose presentation had begun ends early.
    dropped : Out(1)
        Strobe: a stale chain was dropped.
    """

    def __init__(self, *, queue_count, depth, max_chain, pulled=False):
        if depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two >= 2, not {depth!r}")
        if not 1 <= max_chain <= depth:
            raise ValueError(f"max_chain must be between 1 and depth {depth}, not {max_chain!r}")
        self._queue_count = queue_count
        self._depth = depth
        self._max_chain = max_chain
        self._pulled = bool(pulled)
        super().__init__({
            "w":       In(ChainWriteSignature(queue_count)),
            "o":       Out(stream.Signature(VirtqSegment(queue_count))),
            "enabled": In(queue_count),
            "epoch":   In(queue_count * EPOCH_BITS),
            "clear":   In(1),
            "dropped": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self._depth
        ptr_bits = depth.bit_length()          # one extra bit tells full from empty

        m.submodules.ram = ram = memory.Memory(shape=ChainEntry(self._queue_count), depth=depth,
                                               init=[])
        wp = ram.write_port()
        rp = ram.read_port()

        wr_ptr     = Signal(ptr_bits)   # next tentative write
        commit_ptr = Signal(ptr_bits)   # end of committed entries
        rd_ptr     = Signal(ptr_bits)   # next entry to read from the RAM

        # --- write side: tentative writes, commit, discard ---------------------------------
        wr_next = Signal(ptr_bits)
        m.d.comb += [
            wp.addr.eq(wr_ptr[:ptr_bits - 1]),
            wp.data.eq(self.w.data),
            wp.en.eq(self.w.en),
            wr_next.eq(wr_ptr + self.w.en),
            self.w.space.eq((depth - (wr_ptr - rd_ptr)[:ptr_bits]) >= self._max_chain),
        ]
        m.d.sync += wr_ptr.eq(wr_next)
        with m.If(self.w.commit):
            m.d.sync += commit_ptr.eq(wr_next)
        with m.Elif(self.w.discard):
            m.d.sync += wr_ptr.eq(commit_ptr)

        # --- read side: RAM read, then a one-entry output register -------------------------
        # `fetched` says the RAM read port holds an entry not yet moved on (its data stays put
        # while `en` is low). An entry moves into the output register when that is free (or is
        # being emptied), or is discarded while a stale chain is being dropped; the next RAM
        # read is issued in the same cycle, so a ready consumer takes one segment per cycle.
        # Staleness is judged on the output register, every cycle its entry is a chain's first
        # beat, so that no beat of a queue reset before the transfer reaches the device.
        out_valid = Signal()
        out       = Signal(ChainEntry(self._queue_count))
        fetched   = Signal()
        dropping  = Signal()                  # inside a stale chain: discard up to its last
        entry     = ChainEntry(self._queue_count)(rp.data)
        oseg      = out.segment

        stale     = Signal()
        withdraw  = Signal()
        transfer  = Signal()
        drop_next = Signal()
        move      = Signal()
        take      = Signal()
        m.d.comb += [
            stale.eq(~self.enabled.bit_select(oseg.queue, 1) |
                     (self.epoch.bit_select(oseg.queue * EPOCH_BITS, EPOCH_BITS) != out.epoch)),
            # `empty` beats answer fetches and are never stale.
            withdraw.eq(out_valid & oseg.first & ~oseg.empty & stale),
            self.o.valid.eq(out_valid & ~withdraw),
            self.o.payload.eq(oseg),
            transfer.eq(self.o.valid & self.o.ready),
            drop_next.eq(dropping | (withdraw & ~oseg.last)),
            move.eq(fetched & (drop_next | ~out_valid | transfer |
                               (withdraw if not self._pulled else 0))),
            take.eq((rd_ptr != commit_ptr) & (~fetched | move)),
            rp.addr.eq(rd_ptr[:ptr_bits - 1]),
            rp.en.eq(take),
            self.dropped.eq(withdraw),
        ]
        m.d.sync += fetched.eq(take | (fetched & ~move))
        with m.If(take):
            m.d.sync += rd_ptr.eq(rd_ptr + 1)
        with m.If(transfer | (withdraw if not self._pulled else 0)):
            m.d.sync += out_valid.eq(0)
        with m.If(withdraw):
            m.d.sync += dropping.eq(~oseg.last)
            if self._pulled:
                m.d.sync += [oseg.empty.eq(1), oseg.first.eq(1), oseg.last.eq(1),
                             oseg.addr.eq(0), oseg.len.eq(0), oseg.write.eq(0)]
        with m.If(move):
            with m.If(drop_next):
                m.d.sync += dropping.eq(~entry.segment.last)
            with m.Else():
                m.d.sync += [out_valid.eq(1), out.eq(entry)]

        with m.If(self.clear):
            m.d.sync += [wr_ptr.eq(0), commit_ptr.eq(0), rd_ptr.eq(0), out_valid.eq(0),
                         fetched.eq(0), dropping.eq(0)]
        return m
