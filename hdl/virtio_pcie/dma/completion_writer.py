# SPDX-License-Identifier: BSD-2-Clause
"""The last stage of the DMA read engine: completion data into a client buffer, at any alignment.

A completion's payload starts at host address ``lower_address & ~3`` in lane 0 of its first beat;
its bytes belong in the client's buffer from some byte address on. Each beat is rotated so every
byte sits in the lane of its buffer address, and written as (at most) two rows: the lanes from the
payload's shift up go to the beat's row, the lanes below to the next row. That next part is not
written at once but held (with its byte enables) and merged into the next beat's write, which
fills the rest of that row; at the end of a completion it waits for the next completion, which
usually continues the same buffer range (the next completion of the same request), so a transfer
at any alignment takes one write per row. Only when the next beat goes to another row is the held
part written on its own, which costs one cycle.

The read engine's bookkeeping for a completion (an :data:`event`) travels with its last beat and
comes out once the completion's last byte has been written, never earlier: a request's status,
which depends on these events, can then never overtake its data.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..tlp.signature import DATA_WIDTHS
from .interface import DMA_RAM_ADDR_WIDTH, DmaRamWriteSignature, client_index_width

__all__ = ["CompletionWriter", "CompletionBeat", "BEAT_INDEX_WIDTH"]

#: Bits of a beat's index within its completion (up to 1024 dwords at 64 bits, saturating).
BEAT_INDEX_WIDTH = 11


def CompletionBeat(data_width, clients, event):
    """One completion beat, placed: where it goes and which of its bytes are useful.

    Byte positions are counted from the start of the completion's first buffer row ``row``:
    useful bytes are those from ``k0 * B + u0m`` to ``k1 * B + u1m`` (``B`` bytes per row), and
    payload byte ``i`` of the completion is at position ``s + i``.
    """
    lb = exact_log2(data_width // 8)
    return data.StructLayout({
        "rows":   1,                                # write this beat (else: only its event)
        "client": client_index_width(clients),
        "row":    DMA_RAM_ADDR_WIDTH - lb,          # buffer row of this beat's low part
        "s":      lb,                               # buffer offset of payload byte 0 in its row
        "data":   data_width,
        "j":      BEAT_INDEX_WIDTH,                 # this beat's index in its completion
        "k0":     1,
        "u0m":    lb,
        "k1":     BEAT_INDEX_WIDTH,
        "u1m":    lb,
        "event":  event,
    })


class CompletionWriter(wiring.Component):
    """Writes placed completion beats into client read buffers, one row per cycle.

    Parameters
    ----------
    data_width : int
    clients : int
    event : data.Layout
        The read engine's per-completion bookkeeping; it must have a ``valid`` field.

    Members
    -------
    i : In(stream.Signature(CompletionBeat(data_width, clients, event)))
        Beats; ``ready`` depends only on this stage's state. A beat with ``rows`` clear only
        carries its ``event``.
    ram : Out(DmaRamWriteSignature(data_width))
    ram_client : Out(range(clients))
    event_row, event_beat : Out(event)
        Events released this cycle: one that waited for its held row (written this cycle), and
        one whose beat needed no waiting.
    """

    def __init__(self, *, data_width, clients, event):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
        self._data_width = data_width
        self._clients = clients
        self._event = event
        super().__init__({
            "i":          In(stream.Signature(CompletionBeat(data_width, clients, event))),
            "ram":        Out(DmaRamWriteSignature(data_width)),
            "ram_client": Out(client_index_width(clients)),
            "event_row":  Out(event),
            "event_beat": Out(event),
        })

    def elaborate(self, platform):
        m = Module()
        W = self._data_width
        B = W // 8
        ALL = (1 << B) - 1

        # The beat being written (a pipeline register, loaded whenever this stage is ready).
        beat  = Signal(CompletionBeat(W, self._clients, self._event))
        valid = Signal()
        stall = Signal()
        m.d.comb += self.i.ready.eq(~stall)
        with m.If(~stall):
            m.d.sync += [valid.eq(self.i.valid), beat.eq(self.i.payload)]

        # --- Rotation and byte enables ---------------------------------------------------------
        def row_mask(k):
            # Lanes of relative row ``k`` that hold useful bytes.
            first  = (Const(ALL, B) << beat.u0m)[:B]
            last   = ~(Const(ALL, B) << (beat.u1m + 1))[:B]
            inside = (k >= beat.k0) & (k <= beat.k1)
            return Mux(inside, Mux(k == beat.k0, first, ALL) & Mux(k == beat.k1, last, ALL), 0)

        hi_lanes = Signal(B)          # lanes below s belong to the next row
        rot      = Signal(W)          # payload byte i at lane (i + s) mod B
        be_lo    = Signal(B)
        be_hi    = Signal(B)
        m.d.comb += [
            hi_lanes.eq(~(Const(ALL, B) << beat.s)[:B]),
            rot.eq(Cat(beat.data, beat.data).bit_select((B - beat.s).as_unsigned() << 3, W)),
            be_lo.eq(row_mask(beat.j) & ~hi_lanes),
            be_hi.eq(row_mask(beat.j + 1) & hi_lanes),
        ]

        # --- The held row ------------------------------------------------------------------------
        held        = Signal()
        held_client = Signal.like(beat.client)
        held_row    = Signal.like(beat.row)
        held_data   = Signal(W)
        held_be     = Signal(B)
        held_event  = Signal(self._event)

        writes = valid & beat.rows
        # A beat for another row than the held one waits a cycle while the held row is written.
        m.d.comb += stall.eq(writes & held & ((held_row != beat.row) |
                                              (held_client != beat.client)))
        merged = Cat(Mux(held_be[i], held_data.word_select(i, 8), rot.word_select(i, 8))
                     for i in range(B))

        ram = self.ram
        with m.If(writes & ~stall):
            be = be_lo | Mux(held, held_be, 0)
            m.d.comb += [
                ram.en.eq(be != 0),
                ram.addr.eq(beat.row),
                ram.data.eq(Mux(held, merged, rot)),
                ram.be.eq(be),
                self.ram_client.eq(beat.client),
            ]
            with m.If(held):
                m.d.comb += self.event_row.eq(held_event)
            m.d.sync += [
                held.eq(be_hi != 0),
                held_client.eq(beat.client),
                held_row.eq(beat.row + 1),
                held_data.eq(rot),
                held_be.eq(be_hi),
                held_event.eq(0),
            ]
            # The completion's event waits for its last row if that row stays behind.
            with m.If(be_hi != 0):
                m.d.sync += held_event.eq(beat.event)
            with m.Else():
                m.d.comb += self.event_beat.eq(beat.event)
        with m.Else():
            with m.If(held):
                m.d.comb += [
                    ram.en.eq(1),
                    ram.addr.eq(held_row),
                    ram.data.eq(held_data),
                    ram.be.eq(held_be),
                    self.ram_client.eq(held_client),
                    self.event_row.eq(held_event),
                ]
                m.d.sync += [held.eq(0), held_event.eq(0)]
            with m.If(valid & ~stall):
                m.d.comb += self.event_beat.eq(beat.event)
        return m
