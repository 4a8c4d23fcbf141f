# SPDX-License-Identifier: BSD-2-Clause
"""Reads the descriptors of a batch of chains ahead of the ring walker, several at a time.

Walking chains one after another costs one host round trip per descriptor window and one per
indirect table. The prefetcher hides them: once the walker has read a batch of avail ring
entries (after the avail->idx read completed: checklist rule 85), it reads each entry's head
descriptor window and, when the head is an indirect descriptor the walker will accept, its
table, with up to ``slots`` chains in flight. It is only a cache: the walker uses a slot when
it is complete and does its own reads otherwise (a slot whose read failed, a chain that leaves
its window, a table too large), so what the engine does and reports does not depend on it.

Descriptors of published, unfinished chains do not change (the driver may reuse them only
after the device returned the chain), so data read after the batch's avail->idx read stays
valid for every chain of the batch.

Slots are named by the chain's avail index (not its place in a cache), so a batch can be
*extended* with the next one (the walker's look-ahead refresh reads it into the session's
second entry cache): the prefetcher runs on into it without draining, and when the walker
swaps caches the first chains of the new batch already have their head windows in flight or
read. The walker's releases tell the prefetcher how far it has walked (``floor``): nothing is
issued for a chain behind it, and slots left behind it (a chain the walker walked itself
because its slot was not issued yet) are freed.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..dma.interface import DmaError
from ..spec.virtio import VirtqDesc, VirtqDescFlags, byte_size
from .engine_signatures import DmaRequesterSignature
from .interface import queue_index_width

__all__ = ["DescPrefetcher", "SlotState", "PrefetchStart", "PrefetchExtend", "SlotInfo",
           "SessionWindow"]

_DESC_BYTES = byte_size(VirtqDesc)


class SlotState(enum.Enum, shape=3):
    FREE  = 0   # not in use
    WIN   = 1   # head window read in flight
    CHECK = 2   # window landed; table decision pending
    TABLE = 3   # table read in flight
    READY = 4   # everything read
    MISS  = 5   # nothing usable (read failed, head out of range): the walker reads itself


def PrefetchStart(queue_count, batch, ports):
    return data.StructLayout({
        "port":       range(ports),
        "queue":      queue_index_width(queue_count),
        "first":      16,                 # avail index of cache entry 0
        "count":      range(batch + 1),   # cache entries 0 .. count-1
        "desc":       64,
        "size":       16,
        "cache_beat": 16,                 # RAM beat address of the port's avail entry cache
    })


def PrefetchExtend(batch):
    return data.StructLayout({
        "first":      16,                 # avail index of its entry 0: the active batch's end
        "count":      range(batch + 1),
        "cache_beat": 16,
    })


def SessionWindow(window):
    """The walker's descriptor window of the prefetcher's session: descriptors ``base`` ..
    ``base + n - 1`` at descriptor ``desc`` of the read buffer, current for every chain
    published before avail index ``obs``."""
    return data.StructLayout({
        "valid": 1,
        "base":  16,
        "n":     range(window + 1),
        "obs":   16,
        "desc":  16,
    })


def SlotInfo(window, table):
    return data.StructLayout({
        "state":   SlotState,
        "wn":      range(window + 1),     # descriptors in the window (from the head)
        "table":   1,                     # the head's indirect table is in the slot
    })


class DescPrefetcher(wiring.Component):
    """Prefetches head windows and indirect tables of a cached avail batch.

    Parameters
    ----------
    data_width : int
    queue_count, ports : int
    batch : int
        Avail entries per cache (positions 0 .. batch-1).
    slots : int
        Chains in flight (a power of two); chain at cache position ``pos`` uses slot
        ``pos % slots``.
    window : int
        Descriptors per head window.
    table : int
        Largest indirect table prefetched, in descriptors (at most the walker's
        ``max_indirect``).
    slot_beat : int
        RAM beat address of slot 0; slot ``s`` has its window at descriptor
        ``s * (window + table)`` from there, and its table right after the window.
    session_window : int
        Descriptors in the walker's session window (``win``), 0 for none. A head the window
        holds is taken from it: the slot reads no window of its own (its ``wn`` is 0; the
        walker finds the head in its window) and goes straight on to the table.

    Members
    -------
    dma : Out(DmaRequesterSignature())
        Reads only; tag = slot * 2 + (1 for a table).
    ram_addr : Out(16)
    ram_data : In(data_width)
        A read port of the walker's read buffer (data one cycle after the address).
    start : In(stream.Signature(PrefetchStart(...), always_ready=True))
        Begin a batch (taken only while not ``busy``).
    extend : In(stream.Signature(PrefetchExtend(batch)))
        Append the next batch of the same queue (its entries continue the active batch's
        avail indices, in another cache); taken while active, not stopping, and no other
        extension is pending. The cache of the active batch is not read again once the
        prefetcher has moved on into the extension.
    stop : In(1)
        End the batch: issue nothing more, wait for the reads in flight, free every slot.
    indirect_desc : In(1)
    busy : Out(1)
        A batch is active or reads are in flight.
    active : Out(1)
    owner_port, owner_queue : Out
    query_pos : In(range(batch))
    query : Out(SlotInfo(window, table))
        The slot of cache position ``query_pos`` of the active batch (MISS if it is not
        that position's).
    release : In(stream.Signature(range(batch), always_ready=True))
        The walker is done with a position's slot.
    win : In(SessionWindow(session_window))
        Only with ``session_window``. A slot that took its head from it becomes MISS if the
        window is no longer valid when the head is looked at (the walker reads it again).
    """

    def __init__(self, *, data_width, queue_count, ports, batch, slots, window, table,
                 max_indirect, slot_beat, session_window=0):
        if slots < 1 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two, not {slots!r}")
        self._dw = data_width
        self._qc = queue_count
        self._ports = ports
        self._batch = batch
        self._slots = slots
        self._window = window
        self._table = table
        self._max_indirect = max_indirect
        self._slot_beat = slot_beat
        self._sw = session_window
        members = {}
        if session_window:
            members["win"] = In(SessionWindow(session_window))
        super().__init__({
            **members,
            "dma":           Out(DmaRequesterSignature()),
            "ram_addr":      Out(16),
            "ram_data":      In(data_width),
            "start":         In(stream.Signature(PrefetchStart(queue_count, batch, ports),
                                                 always_ready=True)),
            "extend":        In(stream.Signature(PrefetchExtend(batch))),
            "stop":          In(1),
            "indirect_desc": In(1),
            "busy":          Out(1),
            "active":        Out(1),
            "owner_port":    Out(range(ports)),
            "owner_queue":   Out(queue_index_width(queue_count)),
            "query_pos":     In(16),
            "query":         Out(SlotInfo(window, table)),
            "release":       In(stream.Signature(16, always_ready=True)),
        })

    def slot_desc(self, slot):
        """First descriptor of ``slot``'s window, in descriptors from the RAM's start."""
        return self._slot_beat * (self._dw // 8) // _DESC_BYTES + \
            slot * (self._window + self._table)

    def elaborate(self, platform):
        m = Module()
        S, W, T = self._slots, self._window, self._table
        dw = self._dw
        beat = dw // 8
        beat_shift = beat.bit_length() - 1
        slot_bits = max(1, (S - 1).bit_length())

        state    = [Signal(SlotState, name=f"slot{s}_state") for s in range(S)]
        spos     = [Signal(16, name=f"slot{s}_pos") for s in range(S)]
        swn      = [Signal(range(W + 1), name=f"slot{s}_wn") for s in range(S)]
        stable   = [Signal(name=f"slot{s}_table") for s in range(S)]
        # The head is in the session window, at descriptor `shead` of the read buffer.
        ssrc     = [Signal(name=f"slot{s}_src") for s in range(S)]
        shead    = [Signal(16, name=f"slot{s}_head") for s in range(S)]

        active = Signal()
        job    = Signal.like(self.start.payload)
        issue  = Signal(16)                         # avail index of the next chain to prefetch
        floor  = Signal(16)                         # the walker is done with every one before
        # The batch being issued (`from0`: avail index of entry 0 of the cache at `beat0`) and
        # the extension that follows it.
        from0  = Signal(16)
        n0     = Signal(range(self._batch + 1))
        beat0  = Signal(16)
        has1   = Signal()
        n1     = Signal(range(self._batch + 1))
        beat1  = Signal(16)
        off    = Signal(16)
        m.d.comb += off.eq(issue - from0)

        def behind(a, b):
            """Avail index ``a`` comes before ``b`` (16-bit wrap; a session's indices are
            never more than a few batches apart)."""
            d = (b - a)[:16]
            return (d != 0) & ~d[15]
        in_flight = Signal(range(2 * S + 1))
        m.d.comb += [
            self.active.eq(active),
            self.owner_port.eq(job.port),
            self.owner_queue.eq(job.queue),
            self.busy.eq(active | (in_flight != 0)),
        ]

        # --- query and release by the walker ----------------------------------------------------
        qslot = self.query_pos[:slot_bits] if S > 1 else 0
        with m.Switch(qslot):
            for s in range(S):
                with m.Case(s):
                    m.d.comb += [
                        self.query.state.eq(Mux(active & (spos[s] == self.query_pos) &
                                                (state[s] != SlotState.FREE),
                                                state[s], SlotState.MISS)),
                        self.query.wn.eq(swn[s]),
                        self.query.table.eq(stable[s]),
                    ]

        # --- statuses -------------------------------------------------------------------------
        st = self.dma.rd_status
        st_slot  = st.payload.tag[1:1 + slot_bits] if S > 1 else 0
        st_table = st.payload.tag[0]
        st_ok    = st.payload.error == DmaError.OK

        # --- the issuing state machine ------------------------------------------------------------
        rd = self.dma.rd_req
        head = Signal(16)
        cur_slot = Signal(range(S))
        desc_bits = Signal(8 * _DESC_BYTES)
        desc = VirtqDesc(desc_bits)
        part = Signal(range(max(2, 8 * _DESC_BYTES // dw + 1)))
        beats_per_desc = max(1, _DESC_BYTES // beat)
        desc_per_beat = max(1, beat // _DESC_BYTES)

        # a slot with its window landed and its table not yet decided
        check_any = Signal()
        check_slot = Signal(range(S))
        for s in reversed(range(S)):
            with m.If(state[s] == SlotState.CHECK):
                m.d.comb += [check_any.eq(1), check_slot.eq(s)]

        # --- extension ---------------------------------------------------------------------------
        ext = self.extend
        m.d.comb += ext.ready.eq(active & ~has1 & ~self.stop &
                                 (ext.payload.first == (from0 + n0)[:16]))
        with m.If(ext.valid & ext.ready):
            m.d.sync += [has1.eq(1), n1.eq(ext.payload.count), beat1.eq(ext.payload.cache_beat)]

        issue_slot = issue[:slot_bits] if S > 1 else 0
        issue_free = Signal()
        with m.Switch(issue_slot):
            for s in range(S):
                with m.Case(s):
                    m.d.comb += issue_free.eq(state[s] == SlotState.FREE)

        def set_slot(index, **fields):
            with m.Switch(index):
                for s in range(S):
                    with m.Case(s):
                        for name, value in fields.items():
                            target = {"state": state, "pos": spos, "wn": swn,
                                      "table": stable, "src": ssrc, "head": shead}[name][s]
                            m.d.sync += target.eq(value)

        wn = Signal(range(W + 1))
        m.d.comb += wn.eq(Mux(job.size - head < W, job.size - head, W))

        # cur_slot's window and table in the RAM, and its head descriptor (in the window, or in
        # the session window)
        slot_area = Signal(16)
        head_desc = Signal(16)
        m.d.comb += [slot_area.eq(self.slot_desc(0) + cur_slot * (W + T)),
                     head_desc.eq(slot_area)]
        cur_src = Signal()
        if self._sw:
            with m.Switch(cur_slot):
                for s in range(S):
                    with m.Case(s):
                        m.d.comb += cur_src.eq(ssrc[s])
                        with m.If(ssrc[s]):
                            m.d.comb += head_desc.eq(shead[s])
        if beats_per_desc > 1:
            head_beat = head_desc * beats_per_desc
        else:
            head_beat = head_desc >> (desc_per_beat.bit_length() - 1)

        is_ind = (desc.flags & VirtqDescFlags.INDIRECT).as_value().any()
        has_next = (desc.flags & VirtqDescFlags.NEXT).as_value().any()
        end = Signal(65)
        m.d.comb += end.eq(desc.addr + desc.len)
        # Exactly the walker's acceptance of an indirect descriptor, and a table that fits.
        take_table = is_ind & self.indirect_desc & ~has_next & (desc.len != 0) & \
            (desc.len[:4] == 0) & (desc.len[4:] <= min(T, self._max_indirect)) & \
            ~(end[64] & (end[:64] != 0))

        def in_session(h):
            return self.win.valid & ((h - self.win.base)[:16] < self.win.n) & \
                behind(issue, self.win.obs)

        with m.FSM(name="prefetch"):
            with m.State("IDLE"):
                with m.If(self.start.valid & ~self.busy):
                    st0 = self.start.payload
                    m.d.sync += [active.eq(1), job.eq(st0), issue.eq(st0.first),
                                 floor.eq(st0.first), from0.eq(st0.first), n0.eq(st0.count),
                                 beat0.eq(st0.cache_beat), has1.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.stop):
                    m.d.sync += active.eq(0)
                    m.next = "DRAIN"
                with m.Elif(check_any):
                    m.d.sync += [cur_slot.eq(check_slot), part.eq(0)]
                    m.next = "CHECK0"
                with m.Elif(behind(issue, floor)):
                    # The walker went past (it walked those chains itself).
                    m.d.sync += issue.eq(floor)
                with m.Elif((off >= n0) & has1):
                    # Batch issued: go on into the extension (its cache is read from now on).
                    m.d.sync += [from0.eq(from0 + n0), n0.eq(n1), beat0.eq(beat1), has1.eq(0)]
                with m.Elif((off < n0) & issue_free):
                    entry_byte = (beat0 << beat_shift) + off * 2
                    m.d.comb += self.ram_addr.eq(entry_byte >> beat_shift)
                    m.d.sync += cur_slot.eq(issue_slot)
                    m.next = "HEAD"
            with m.State("HEAD"):
                lane = (off * 2)[1:beat_shift] if beat_shift > 1 else 0
                h = self.ram_data.word_select(lane, 16)
                m.d.sync += head.eq(h)
                set_slot(cur_slot, pos=issue)
                with m.If(self.stop | behind(issue, floor)):
                    m.next = "RUN"                  # (RUN then drains, or skips ahead)
                with m.Elif(h >= job.size):
                    set_slot(cur_slot, state=SlotState.MISS)
                    m.d.sync += issue.eq(issue + 1)
                    m.next = "RUN"
                if self._sw:
                    with m.Elif(in_session(h)):
                        # In the session window: no window read; the table decision next.
                        set_slot(cur_slot, state=SlotState.CHECK, wn=0, table=0, src=1,
                                 head=self.win.desc + (h - self.win.base)[:16])
                        m.d.sync += issue.eq(issue + 1)
                        m.next = "RUN"
                with m.Else():
                    set_slot(cur_slot, src=0)
                    m.next = "ISSUE_WIN"
            with m.State("ISSUE_WIN"):
                m.d.comb += [
                    rd.valid.eq(1),
                    rd.payload.host_addr.eq(job.desc + head * _DESC_BYTES),
                    rd.payload.ram_addr.eq(slot_area * _DESC_BYTES),
                    rd.payload.len.eq(wn * _DESC_BYTES),
                    rd.payload.tag.eq(cur_slot << 1),
                ]
                with m.If(rd.ready):
                    set_slot(cur_slot, state=SlotState.WIN, wn=wn, table=0)
                    m.d.sync += issue.eq(issue + 1)
                    m.next = "RUN"
            with m.State("CHECK0"):
                m.d.comb += self.ram_addr.eq(head_beat)
                m.next = "CHECK1"
            with m.State("CHECK1"):
                if beats_per_desc > 1:
                    m.d.sync += [desc_bits.word_select(part, dw).eq(self.ram_data),
                                 part.eq(part + 1)]
                    m.d.comb += self.ram_addr.eq(head_beat + part + 1)
                    with m.If(part == beats_per_desc - 1):
                        m.next = "DECIDE"
                else:
                    if desc_per_beat > 1:
                        lane = head_desc[:desc_per_beat.bit_length() - 1]
                        m.d.sync += desc_bits.eq(self.ram_data.word_select(lane,
                                                                           8 * _DESC_BYTES))
                    else:
                        m.d.sync += desc_bits.eq(self.ram_data)
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(self.stop):
                    set_slot(cur_slot, state=SlotState.READY)
                    m.next = "RUN"
                if self._sw:
                    with m.Elif(cur_src & ~self.win.valid):
                        # The session window went (the walker reads a new one): the head just
                        # looked at may not be the chain's.
                        set_slot(cur_slot, state=SlotState.MISS)
                        m.next = "RUN"
                with m.Elif(take_table):
                    m.next = "ISSUE_TABLE"
                with m.Else():
                    set_slot(cur_slot, state=SlotState.READY)
                    m.next = "RUN"
            with m.State("ISSUE_TABLE"):
                m.d.comb += [
                    rd.valid.eq(1),
                    rd.payload.host_addr.eq(desc.addr),
                    rd.payload.ram_addr.eq((slot_area + W) * _DESC_BYTES),
                    rd.payload.len.eq(desc.len),
                    rd.payload.tag.eq((cur_slot << 1) | 1),
                ]
                with m.If(rd.ready):
                    set_slot(cur_slot, state=SlotState.TABLE, table=1)
                    m.next = "RUN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)     # a start is taken in IDLE only
                with m.If(in_flight == 0):
                    for s in range(S):
                        m.d.sync += state[s].eq(SlotState.FREE)
                    m.next = "IDLE"

        # --- bookkeeping: reads in flight, statuses, releases ----------------------------------
        issued = rd.valid & rd.ready
        m.d.sync += in_flight.eq(in_flight + issued - st.valid)
        with m.If(st.valid):
            with m.Switch(st_slot):
                for s in range(S):
                    with m.Case(s):
                        with m.If(~st_ok):
                            m.d.sync += state[s].eq(SlotState.MISS)
                        with m.Elif(st_table):
                            m.d.sync += state[s].eq(SlotState.READY)
                        with m.Else():
                            m.d.sync += state[s].eq(SlotState.CHECK)
        # A slot left behind the walker (issued after the walker had walked its chain itself) is
        # freed once it has nothing in flight; a slot the walker used is freed at its release.
        for s in range(S):
            with m.If(active & ((state[s] == SlotState.READY) | (state[s] == SlotState.MISS)) &
                      behind(spos[s], floor)):
                m.d.sync += state[s].eq(SlotState.FREE)
        with m.If(self.release.valid & active):
            m.d.sync += floor.eq(self.release.payload + 1)
            rslot = self.release.payload[:slot_bits] if S > 1 else 0
            with m.Switch(rslot):
                for s in range(S):
                    with m.Case(s):
                        with m.If(spos[s] == self.release.payload):
                            m.d.sync += state[s].eq(SlotState.FREE)
        return m
