# SPDX-License-Identifier: BSD-2-Clause
"""The completer: requests from the host become register accesses, and get their completions.

One request is handled at a time, in arrival order::

    rx_req ──► Decode ─┬─ CfgRd0/CfgWr0 (function 0) ──► config  (configuration register port)
                       ├─ MRd/MWr/IORd/IOWr hitting a BAR ──► fabric (one access per dword)
                       ├─ refused non-posted ──► Cpl with UR
                       └─ refused posted, messages, malformed ──► dropped
    tx_cpl ◄── Respond ◄── completion buffer (one read completion boundary of data)

**Decoding.** In ``"full"`` mode a memory request hits a memory BAR whose base matches the address
above the BAR size, an I/O request an I/O BAR, and only while Memory / I/O Space Enable is set
and the function is in D0 (PCI PM 1.2 §5.3: only configuration requests in D3hot). In ``"ext"``
mode the hard IP decodes: the request hits the BAR named by ``bar_id`` if that BAR exists and is
of the request's kind. A request must fit in its BAR; one that runs past the BAR's end hits
nothing. The offset in the BAR becomes the *fabric address* ``bar << bar_addr_bits | offset``.

**Register accesses.** Each dword of a hit request is one register-bus access on ``fabric`` with
the request's byte enables (First DW BE on the first dword, Last DW BE on the last, all four in
between); a dword with no byte enabled is not accessed at all (a zero-length read has no read
side effect). Writes are checked beat by beat before any of the beat's dwords is written.

**Completions** (PCIe Base 4.0 §2.2.9, §2.3.1.1). A memory read returns CplDs of at most 128
bytes, split at naturally aligned 128-byte boundaries, which is legal for either Read Completion
Boundary and never exceeds any Max_Payload_Size; each says the bytes still to come in Byte Count
and the address of its first byte in Lower Address. Completions for I/O and configuration
requests have Byte Count 4 and Lower Address 0. Completer ID is the captured ID (the target ID
for configuration requests), tag, requester ID, TC and attributes come from the request.

**Refusals.** A non-posted request that hits no BAR, hits a disabled space, is of an
unsupported type (locked reads, Type 1 configuration, AtomicOps) or targets another function
gets a Cpl with status UR; a posted one (a memory write) is dropped; both raise
``events.unsupported_*``. A poisoned memory write is dropped, a poisoned I/O or configuration
write answered with UR (§2.7.2.2). Messages are accepted and ignored. A malformed TLP (undefined
Fmt/Type, a length or byte enables that break §2.2.5/§2.2.7, a write payload above
Max_Payload_Size, a payload that disagrees with the header, a beat flagged with ``error``) is
dropped without completion (§2.3.2) and raises ``events.malformed``. ``rx_req`` is
back-pressured only while a request is in progress; every path ends by consuming the request
through its ``eop``.

**Bus and device number** (``"full"`` mode) are captured from every Type 0 Configuration Write
to function 0 and reported on ``id_capture`` (§2.2.6.2).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.pcie import (CplStatus, FmtType, PciCommand, PcieId, PmPowerState,
                         TlpHeader)
from ..tlp.signature import TlpSignature, dwords_per_beat
from .config_space import CONFIG_ADDR_WIDTH, IdCapture, RequestEvents
from .interface import FunctionConfig
from .layout import FunctionLayout
from .register_bus import RegisterBusSignature

__all__ = ["Completer", "COMPLETION_CHUNK_BYTES"]

#: Largest read completion this completer sends: a naturally aligned 128 bytes is a multiple of
#: either Read Completion Boundary and no larger than the smallest Max_Payload_Size.
COMPLETION_CHUNK_BYTES = 128

_MAX_LENGTH_DW = 1024        # Length field 0 means 1024 dwords (PCIe Base 4.0 §2.2.2)

# Fmt/Type values the completer recognises; anything else is malformed.
_NONPOSTED_REFUSED = (FmtType.MRDLK32, FmtType.MRDLK64, FmtType.CFGRD1, FmtType.CFGWR1,
                      FmtType.FETCHADD32, FmtType.FETCHADD64, FmtType.SWAP32, FmtType.SWAP64,
                      FmtType.CAS32, FmtType.CAS64)
_MEMORY_READS = (FmtType.MRD32, FmtType.MRD64, FmtType.MRDLK32, FmtType.MRDLK64)


def _lowest_set(value, width):
    """Index of the lowest set bit of a ``width``-bit value (0 if none), as an expression."""
    result = Const(0, range(width))
    for i in reversed(range(width)):
        result = Mux(value[i], i, result)
    return result


def _highest_set(value, width):
    result = Const(0, range(width))
    for i in range(width):
        result = Mux(value[i], i, result)
    return result


class Completer(wiring.Component):
    """Completes configuration, memory and I/O requests (see the module documentation).

    Parameters
    ----------
    layout : FunctionLayout
        BARs, windows and configuration mode.
    data_width : int
        TLP data path width, in bits.

    Members
    -------
    rx_req : In(TlpSignature(data_width))
        Requests from the host.
    tx_cpl : Out(TlpSignature(data_width))
        Completions. A TLP's beats are sent back to back.
    config : Out(RegisterBusSignature(12))
        Configuration register accesses.
    fabric : Out(RegisterBusSignature(layout.fabric_addr_width))
        BAR-space register accesses.
    cfg : In(FunctionConfig)
        Command register (space enables), power state, the function's ID.
    bar_base : In(data.ArrayLayout(64, 6))
        (``"full"`` mode) BAR base addresses.
    id_capture : Out(IdCapture)
        (``"full"`` mode) Strobes the target ID of each Configuration Write to function 0.
    events : Out(RequestEvents)
        One-cycle strobes about refused and malformed requests.
    """

    def __init__(self, *, layout, data_width):
        if not isinstance(layout, FunctionLayout):
            raise TypeError(f"layout must be a FunctionLayout, not {layout!r}")
        self._layout = layout
        self._data_width = data_width
        self._lanes = dwords_per_beat(data_width)
        members = {
            "rx_req": In(TlpSignature(data_width)),
            "tx_cpl": Out(TlpSignature(data_width)),
            "config": Out(RegisterBusSignature(CONFIG_ADDR_WIDTH)),
            "fabric": Out(RegisterBusSignature(layout.fabric_addr_width)),
            "cfg":    In(FunctionConfig),
            "events": Out(RequestEvents),
        }
        if layout.config_mode == "full":
            members["bar_base"] = In(data.ArrayLayout(64, 6))
            members["id_capture"] = Out(IdCapture)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        layout = self._layout
        lanes = self._lanes
        full = layout.config_mode == "full"
        rx = self.rx_req
        chunk_dw = COMPLETION_CHUNK_BYTES // 4

        # -- the request being handled -----------------------------------------------------------
        hdr    = Signal(TlpHeader)
        bar_id = Signal(3)
        ft     = Signal(8)
        m.d.comb += ft.eq(hdr.dw0.fmt_type.as_value())

        def is_type(*types):
            return Cat(*(ft == t.value for t in types)).any()

        length_dw = Signal(range(_MAX_LENGTH_DW + 1))
        m.d.comb += length_dw.eq(Mux(hdr.dw0.length == 0, _MAX_LENGTH_DW, hdr.dw0.length))
        first_be = hdr.req.first_be
        last_be  = hdr.req.last_be
        is_4dw   = FmtType.is_4dw(ft)
        address  = Signal(64)
        m.d.comb += address.eq(Mux(is_4dw, Cat(Const(0, 2), hdr.req.dw3[2:], hdr.req.dw2),
                                   Cat(Const(0, 2), hdr.req.dw2[2:])))

        is_mrd   = is_type(FmtType.MRD32, FmtType.MRD64)
        is_mwr   = is_type(FmtType.MWR32, FmtType.MWR64)
        is_iord  = is_type(FmtType.IORD)
        is_iowr  = is_type(FmtType.IOWR)
        is_cfgrd = is_type(FmtType.CFGRD0)
        is_cfgwr = is_type(FmtType.CFGWR0)
        is_cpl   = is_type(FmtType.CPL, FmtType.CPLD, FmtType.CPLLK, FmtType.CPLDLK)
        # Messages: Type 10rrr with a 4-DW header, with or without data (§2.2.8).
        is_msg   = (ft[3:5] == 0b10) & ft[5] & ~ft[7]
        is_refused_type = is_type(*_NONPOSTED_REFUSED)
        is_mem   = is_mrd | is_mwr
        is_io    = is_iord | is_iowr
        known    = (is_mem | is_io | is_cfgrd | is_cfgwr | is_cpl | is_msg | is_refused_type)
        has_data = FmtType.has_data(ft)

        # Byte count of the whole request from its byte enables (§2.2.9, Table 2-36).
        lsb_first = Signal(2)
        total_bytes = Signal(range(4 * _MAX_LENGTH_DW + 1))
        m.d.comb += lsb_first.eq(_lowest_set(first_be, 4))
        with m.If(length_dw == 1):
            m.d.comb += total_bytes.eq(Mux(first_be == 0, 1,
                                           _highest_set(first_be, 4) - lsb_first + 1))
        with m.Else():
            m.d.comb += total_bytes.eq(length_dw * 4 - lsb_first
                                       - (3 - _highest_set(last_be, 4)))

        # Header rules the completer checks (§2.2.5 byte enables, §2.2.7 I/O and configuration).
        one_dw_rules = (length_dw == 1) & (last_be == 0)
        mem_be_rules = Mux(length_dw == 1, last_be == 0, (first_be != 0) & (last_be != 0))
        # A payload larger than Max_Payload_Size makes the TLP malformed (§2.2.2).
        max_payload_dw = Signal(range(_MAX_LENGTH_DW + 1))
        mps = self.cfg.max_payload_size
        m.d.comb += max_payload_dw.eq(Mux(mps > 5, _MAX_LENGTH_DW, 32 << mps))
        header_ok = Signal()
        m.d.comb += header_ok.eq(known & ~ft[7] &
                                 Mux(is_io | is_cfgrd | is_cfgwr, one_dw_rules, 1) &
                                 Mux(is_mem, mem_be_rules, 1) &
                                 Mux(is_mwr, length_dw <= max_payload_dw, 1))

        # -- BAR decode --------------------------------------------------------------------------
        command = self.cfg.command
        in_d0 = self.cfg.power_state == PmPowerState.D0.value
        hit       = Signal()
        hit_fab   = Signal(layout.fabric_addr_width)
        for bar in layout.bars:
            bits = bar.size_bits
            if bar.is_io:
                kind_ok = is_io & (command & PciCommand.IO_SPACE).as_value().any()
            else:
                kind_ok = is_mem & (command & PciCommand.MEMORY_SPACE).as_value().any()
            if full:
                if bar.is_io:
                    match = address[bits:32] == self.bar_base[bar.index][bits:32]
                else:
                    match = address[bits:] == self.bar_base[bar.index][bits:]
            else:
                match = bar_id == bar.index
            # The request must end inside the BAR (§7.5.1.2.1: a BAR decodes its own range).
            fits = (address[2:bits] + length_dw) <= (bar.size >> 2)
            with m.If(kind_ok & in_d0 & match & fits):
                m.d.comb += [
                    hit.eq(1),
                    hit_fab.eq(Cat(address[:bits], Const(0, layout.bar_addr_bits - bits),
                                   Const(bar.index, 3))),
                ]

        # -- state shared by the paths -----------------------------------------------------------
        dw_index  = Signal(range(_MAX_LENGTH_DW + 1))   # dwords of the request done
        fab_addr  = Signal(layout.fabric_addr_width)    # fabric address of the current dword
        line_dw   = Signal(5)                           # current dword's place in 128 bytes
        remaining = Signal(range(4 * _MAX_LENGTH_DW + 1))  # bytes still to complete
        lane      = Signal(range(lanes))
        reading   = Signal()                            # a memory or I/O read is in progress
        first_chunk = Signal()
        chunk_len = Signal(range(chunk_dw + 1))
        chunk_idx = Signal(range(chunk_dw))

        cpl_status = Signal(CplStatus)
        cpl_data   = Signal()           # the completion carries data (CplD)
        cpl_id     = Signal(PcieId)
        cpl_bc     = Signal(12)
        cpl_la     = Signal(7)

        # The completion buffer: one chunk, written a lane at a time, read a beat at a time.
        beats = chunk_dw // lanes
        m.submodules.buffer = buffer = Memory(shape=self._data_width, depth=beats, init=[])
        buf_w = buffer.write_port(granularity=32)
        buf_r = buffer.read_port(transparent_for=(buf_w,))

        current_be = Signal(4)
        m.d.comb += current_be.eq(Mux(dw_index == 0, first_be,
                                      Mux(dw_index == length_dw - 1, last_be, 0xF)))

        # Checks of a write payload beat, made before any of its dwords is written: the dwords
        # left from the beat's first one decide its keep and eop.
        left_dw = Signal(range(_MAX_LENGTH_DW + 1))
        m.d.comb += left_dw.eq(length_dw - (dw_index - lane))
        expect_keep = Signal(lanes)
        for n in range(1, lanes + 1):
            with m.If(left_dw >= n):
                m.d.comb += expect_keep.eq((1 << n) - 1)
        beat_error = rx.p.eop & rx.p.error.as_value().any()
        beat_ok = Signal()
        m.d.comb += beat_ok.eq((rx.p.keep == expect_keep) & (rx.p.eop == (left_dw <= lanes)) &
                               ~beat_error)
        lane_data = Signal(32)
        with m.Switch(lane):
            for k in range(lanes):
                with m.Case(k):
                    m.d.comb += lane_data.eq(rx.p.data[32 * k:32 * k + 32])
        last_lane = (lane == lanes - 1) | (dw_index + 1 == length_dw)

        # A request without payload is exactly one beat with eop and no lanes; a one-dword
        # write (I/O, configuration) one beat with lane 0.
        single_beat_ok = rx.p.eop & ~beat_error & (rx.p.keep == Mux(has_data, 1, 0))
        single_beat_kind = is_mrd | is_io | is_cfgrd | is_cfgwr

        after_drain = Signal(2)
        AFTER_IDLE, AFTER_RESPOND, AFTER_READ = 0, 1, 2
        events = self.events

        def refuse_nonposted():
            m.d.sync += [cpl_status.eq(CplStatus.UR), cpl_data.eq(0),
                         after_drain.eq(AFTER_RESPOND)]
            m.d.comb += events.unsupported_nonposted.eq(1)
            with m.If(is_type(*_MEMORY_READS)):
                m.d.sync += [cpl_bc.eq(total_bytes), cpl_la.eq(Cat(lsb_first, address[2:7]))]
            m.next = "Drain"

        with m.FSM(name="completer"):
            with m.State("Idle"):
                # A beat without sop outside a TLP breaks the stream rules: drop it.
                m.d.comb += rx.ready.eq(rx.valid & ~rx.p.sop)
                with m.If(rx.valid & ~rx.p.sop):
                    m.d.comb += events.malformed.eq(1)
                with m.If(rx.valid & rx.p.sop):
                    m.d.sync += [hdr.eq(rx.p.hdr), bar_id.eq(rx.p.bar_id)]
                    m.next = "Decode"

            with m.State("Decode"):
                # Defaults: a successful completion without data for I/O and configuration.
                m.d.sync += [
                    dw_index.eq(0), lane.eq(0), first_chunk.eq(1), reading.eq(0),
                    line_dw.eq(address[2:7]), remaining.eq(total_bytes),
                    fab_addr.eq(hit_fab), cpl_status.eq(CplStatus.SC), cpl_data.eq(0),
                    cpl_id.eq(self.cfg.pcie_id), cpl_bc.eq(4), cpl_la.eq(0),
                    after_drain.eq(AFTER_IDLE),
                ]
                with m.If(~header_ok | (single_beat_kind & ~single_beat_ok)):
                    m.d.comb += events.malformed.eq(1)
                    m.next = "Drain"
                with m.Elif(is_cpl | is_msg):
                    m.next = "Drain"      # stray completions and messages: accepted, ignored
                with m.Elif(is_refused_type):
                    refuse_nonposted()
                with m.Elif(hdr.dw0.ep & has_data):
                    # Poisoned write: never performed; I/O and configuration get UR (§2.7.2.2).
                    m.d.comb += events.poisoned.eq(1)
                    with m.If(~is_mwr):
                        m.d.sync += [cpl_status.eq(CplStatus.UR), after_drain.eq(AFTER_RESPOND)]
                        with m.If(is_cfgwr):
                            m.d.sync += cpl_id.eq(hdr.cfg.target_id)
                    m.next = "Drain"
                with m.Elif(is_cfgrd | is_cfgwr):
                    m.d.sync += cpl_id.eq(hdr.cfg.target_id)
                    with m.If(hdr.cfg.target_id.function != 0):
                        refuse_nonposted()
                    with m.Else():
                        m.d.sync += cpl_data.eq(is_cfgrd)
                        m.next = "Config"
                with m.Elif(~hit):
                    with m.If(is_mwr):
                        m.d.comb += events.unsupported_posted.eq(1)
                        m.next = "Drain"
                    with m.Else():
                        refuse_nonposted()
                with m.Elif(is_mwr | is_iowr):
                    m.next = "Write"
                with m.Else():            # MRd, IORd
                    m.d.sync += [reading.eq(1), after_drain.eq(AFTER_READ)]
                    m.next = "Drain"

            # Consume the request up to its eop, then go on.
            with m.State("Drain"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid & rx.p.eop):
                    with m.Switch(after_drain):
                        with m.Case(AFTER_RESPOND):
                            m.next = "Respond"
                        with m.Case(AFTER_READ):
                            m.next = "Chunk"
                        with m.Default():
                            m.next = "Idle"

            with m.State("Config"):
                m.d.comb += [
                    self.config.stb.eq(1),
                    self.config.addr.eq(Cat(Const(0, 2), hdr.cfg.register,
                                            hdr.cfg.ext_register)),
                    self.config.sel.eq(first_be),
                    self.config.we.eq(is_cfgwr),
                    self.config.w_data.eq(rx.p.data[:32]),
                ]
                with m.If(self.config.ack):
                    m.d.comb += [
                        rx.ready.eq(1),
                        buf_w.addr.eq(0),
                        buf_w.data.eq(self.config.r_data),
                        buf_w.en.eq(1),
                    ]
                    if full:
                        m.d.comb += [self.id_capture.valid.eq(is_cfgwr),
                                     self.id_capture.id.eq(hdr.cfg.target_id)]
                    m.d.sync += chunk_len.eq(1)
                    m.next = "Respond"

            # Memory and I/O writes: one access per dword; a beat is taken after its last one.
            with m.State("Write"):
                with m.If(rx.valid):
                    with m.If(~beat_ok):
                        m.d.comb += events.malformed.eq(1)
                        m.next = "Drain"
                    with m.Else():
                        skip = current_be == 0
                        m.d.comb += [
                            self.fabric.stb.eq(~skip),
                            self.fabric.addr.eq(fab_addr),
                            self.fabric.sel.eq(current_be),
                            self.fabric.we.eq(1),
                            self.fabric.w_data.eq(lane_data),
                        ]
                        with m.If(skip | self.fabric.ack):
                            m.d.sync += [dw_index.eq(dw_index + 1), fab_addr.eq(fab_addr + 4),
                                         lane.eq(lane + 1)]
                            with m.If(last_lane):
                                m.d.comb += rx.ready.eq(1)
                                m.d.sync += lane.eq(0)
                                with m.If(rx.p.eop):
                                    with m.If(is_iowr):
                                        m.next = "Respond"
                                    with m.Else():
                                        m.next = "Idle"

            # Reads: a chunk runs to the next 128-byte boundary or the end of the request.
            with m.State("Chunk"):
                left = length_dw - dw_index
                room = chunk_dw - line_dw
                m.d.sync += [
                    chunk_len.eq(Mux(left < room, left, room)),
                    chunk_idx.eq(0),
                    cpl_data.eq(1),
                ]
                with m.If(is_mrd):
                    m.d.sync += [
                        cpl_bc.eq(remaining),
                        cpl_la.eq(Cat(Mux(first_chunk, lsb_first, 0), line_dw)),
                    ]
                m.next = "Read"

            with m.State("Read"):
                skip = current_be == 0
                m.d.comb += [
                    self.fabric.stb.eq(~skip),
                    self.fabric.addr.eq(fab_addr),
                    self.fabric.sel.eq(current_be),
                    self.fabric.we.eq(0),
                ]
                with m.If(skip | self.fabric.ack):
                    m.d.comb += [
                        buf_w.addr.eq(chunk_idx // lanes),
                        buf_w.data.eq(Mux(skip, 0, self.fabric.r_data).replicate(lanes)),
                        buf_w.en.eq(1 << (chunk_idx % lanes)),
                    ]
                    m.d.sync += [dw_index.eq(dw_index + 1), fab_addr.eq(fab_addr + 4),
                                 line_dw.eq(line_dw + 1), chunk_idx.eq(chunk_idx + 1)]
                    with m.If(chunk_idx + 1 == chunk_len):
                        m.next = "Respond"

            # Send the completion (CplD data from the buffer), beats back to back.
            with m.State("Respond"):
                self._respond(m, hdr=hdr, status=cpl_status, with_data=cpl_data, cpl_id=cpl_id,
                              byte_count=cpl_bc, lower_address=cpl_la, chunk_len=chunk_len,
                              buf_r=buf_r)
                with m.If(self.tx_cpl.valid & self.tx_cpl.ready & self.tx_cpl.p.eop):
                    m.d.sync += [
                        first_chunk.eq(0),
                        remaining.eq(remaining - (chunk_len * 4 -
                                                  Mux(first_chunk, lsb_first, 0))),
                    ]
                    with m.If(reading & (dw_index != length_dw)):
                        m.next = "Chunk"
                    with m.Else():
                        m.next = "Idle"
        return m

    def _respond(self, m, *, hdr, status, with_data, cpl_id, byte_count, lower_address,
                 chunk_len, buf_r):
        lanes = self._lanes
        tx = self.tx_cpl
        beat = Signal(range(COMPLETION_CHUNK_BYTES // 4 // lanes + 1))
        n_beats = Signal.like(beat)
        m.d.comb += n_beats.eq(Mux(with_data, (chunk_len + lanes - 1) // lanes, 1))
        last = beat + 1 == n_beats
        transfer = tx.valid & tx.ready
        with m.If(transfer):
            m.d.sync += beat.eq(Mux(last, 0, beat + 1))
        # The buffer's read port presents the beat after a transfer one cycle later.
        m.d.comb += buf_r.addr.eq(Mux(transfer, Mux(last, 0, beat + 1), beat))

        cpl = Signal(TlpHeader)
        m.d.comb += [
            cpl.dw0.fmt_type.eq(Mux(with_data, FmtType.CPLD, FmtType.CPL)),
            cpl.dw0.length.eq(Mux(with_data, chunk_len, 0)),
            cpl.dw0.tc.eq(hdr.dw0.tc),
            cpl.dw0.attr.eq(hdr.dw0.attr),
            cpl.dw0.t8.eq(hdr.dw0.t8),
            cpl.dw0.t9.eq(hdr.dw0.t9),
            cpl.cpl.byte_count.eq(byte_count),
            cpl.cpl.status.eq(status),
            cpl.cpl.completer_id.eq(cpl_id),
            cpl.cpl.lower_address.eq(lower_address),
            cpl.cpl.tag.eq(hdr.req.tag),
            cpl.cpl.requester_id.eq(hdr.req.requester_id),
        ]
        keep = Signal(lanes)
        left = chunk_len - beat * lanes
        for n in range(1, lanes + 1):
            with m.If(with_data & (left >= n)):
                m.d.comb += keep.eq((1 << n) - 1)
        m.d.comb += [
            tx.valid.eq(1),
            tx.p.hdr.eq(cpl),
            tx.p.data.eq(buf_r.data),
            tx.p.keep.eq(keep),
            tx.p.sop.eq(beat == 0),
            tx.p.eop.eq(last),
        ]
