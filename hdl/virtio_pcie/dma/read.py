# SPDX-License-Identifier: BSD-2-Clause
"""The DMA read engine: memory reads from host memory into the clients' read buffers.

Requests are split into MRd TLPs at Max_Read_Request_Size and 4 KiB boundaries (PCIe Base 4.0
§2.2.7, §7.5.3.4), each with its own PCIe tag. Completions come back in any order across tags,
split at the read completion boundary (§2.3.1.1); each is written straight to its place in the
client's buffer, found from the tag's table entry and the completion's Byte Count, so no
reorder buffer is needed (the verilog-pcie / Corundum design; this is an independent
implementation). A request's status comes when every PCIe tag it used has been retired, after
the last of its bytes was written, so nothing ever lands in a client buffer after its status.

Inside, in the order a completion meets them::

    req ──► request table ──► MRd issue ──► tx_req         (tag pool, completion space)
                 ▲                │ tag table, issue time
                 │ events         ▼
    rx_cpl ──► S0: read the tag's entries ──► S1: check, place, retire ──► S2: CompletionWriter
                 ▲ timeout tokens                                              │ ram
                 └── timeout scanner (one tag per cycle)

After reset the engine fills its tag pool and clears the tag state, one tag per cycle, before it
takes requests or completions.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from ..function.interface import FunctionConfig, FunctionEvents
from ..spec.pcie import (ADDRESS_32_LIMIT, MAX_SIZE_ENCODING, MAX_TLP_PAYLOAD_BYTES, RCB_BYTES,
                         REQUEST_BOUNDARY_BYTES, CplStatus, FmtType, PciCommand, TlpHeader,
                         payload_size_bytes)
from ..tlp.signature import DATA_WIDTHS, TlpSignature
from .completion_writer import BEAT_INDEX_WIDTH, CompletionWriter
from .interface import (DMA_LEN_WIDTH, DMA_RAM_ADDR_WIDTH, DmaError, DmaRamWriteSignature,
                        DmaRoutedReadRequest, DmaRoutedStatus, DmaStatistics, client_index_width)

__all__ = ["DmaReadEngine"]

#: PCIe tags usable without Extended Tag Field Enable (5-bit tags, PCIe Base 4.0 §2.2.6.2).
BASE_TAGS = 32
#: Bits of a transfer size within one TLP (1 to 4096 bytes).
SIZE_WIDTH = (MAX_TLP_PAYLOAD_BYTES).bit_length()
#: Bits of the free-running cycle counter used to time completions out.
TIME_WIDTH = 32


class CplKind(enum.Enum, shape=2):
    """What the completion path does with a completion TLP."""
    UNEXPECTED   = 0   # no outstanding request owns it: dropped and counted
    DATA         = 1   # successful completion with data that fits its request
    ERROR_STATUS = 2   # UR or CA: the request ends with an error
    MALFORMED    = 3   # inconsistent with its request: dropped, the tag is quarantined


class TokenKind(enum.Enum, shape=1):
    TIMEOUT = 0   # the tag has waited longer than the completion timeout
    RELEASE = 1   # a quarantined tag has waited long enough to be reused


def _sat_incr(value):
    return Mux(value == (1 << len(value)) - 1, value, value + 1)


class DmaReadEngine(wiring.Component):
    """Reads host memory into client read buffers.

    Parameters
    ----------
    data_width : int
        TLP data path width in bits (64, 128 or 256).
    clients : int
        Number of clients whose buffers requests name (the ``client`` field of requests).
    tag_count : int
        PCIe tags, 32 to 256. Tags 0-31 are always used; the others only while
        ``cfg.extended_tag`` is set (PCIe Base 4.0 §7.5.3.4, Extended Tag Field Enable).
    op_count : int
        Requests in progress at once (each may use many tags).
    cpl_buffer_bytes, cpl_buffer_headers : int
        Completion buffer space: the engine never has more completion data (in dword-rounded
        bytes) or more completion TLPs (counted at one per RCB block) outstanding than these,
        as a hard IP with finite completion buffers requires.
    completion_timeout_cycles : int
        A tag with no (complete) answer after this many cycles is timed out; its request ends
        with :attr:`DmaError.TIMEOUT`. The tag is then quarantined until twice this time has
        passed since it was issued: late completions for it are dropped as unexpected.

    Members
    -------
    req : In(stream.Signature(DmaRoutedReadRequest(clients)))
        Read requests with the index of the client that made them.
    status : Out(stream.Signature(DmaRoutedStatus(clients), always_ready=True))
        One per request, when it ended; in completion order, not request order.
    ram : Out(DmaRamWriteSignature(data_width))
        Writes to the read buffer of client ``ram_client``.
    ram_client : Out(range(clients))
    tx_req : Out(TlpSignature(data_width))
        MRd requests (one beat each).
    rx_cpl : In(TlpSignature(data_width))
        Completions; a beat is taken every cycle, except for one cycle when a timed-out tag is
        retired, or when a completion starts in another buffer row than the one the previous
        completion ended in (see :class:`~.completion_writer.CompletionWriter`).
    cfg : In(FunctionConfig)
    events : Out(FunctionEvents)
        ``received_master_abort`` (UR completion), ``received_target_abort`` (CA completion),
        ``master_data_parity_error`` (poisoned completion, if Parity Error Response is set).
    idle : Out(1)
        No request in progress.
    stats : Out(DmaStatistics)
        The read-side counters (``rd_*``, ``cpl_*``); the others are zero.
    client_used : Out(range(cpl_buffer_bytes + 2**16)).array(clients)
        Each client's reads in progress, in bytes: the completion space (dword-rounded) its
        issued and not yet retired MRds hold, plus what remains to be issued of the request
        being split, if it is the client's.
    """

    def __init__(self, *, data_width, clients=1, tag_count=256, op_count=32,
                 cpl_buffer_bytes=16384, cpl_buffer_headers=256,
                 completion_timeout_cycles=12_500_000):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
        if not isinstance(tag_count, int) or not BASE_TAGS <= tag_count <= 256:
            raise ValueError(f"tag_count must be an integer from {BASE_TAGS} to 256, "
                             f"not {tag_count!r}")
        if not isinstance(op_count, int) or not 1 <= op_count <= 64:
            raise ValueError(f"op_count must be an integer from 1 to 64, not {op_count!r}")
        if not isinstance(cpl_buffer_bytes, int) or cpl_buffer_bytes < MAX_TLP_PAYLOAD_BYTES:
            raise ValueError(f"cpl_buffer_bytes must be at least {MAX_TLP_PAYLOAD_BYTES} (one "
                             f"largest read), not {cpl_buffer_bytes!r}")
        max_headers = MAX_TLP_PAYLOAD_BYTES // RCB_BYTES[0] + 1
        if not isinstance(cpl_buffer_headers, int) or cpl_buffer_headers < max_headers:
            raise ValueError(f"cpl_buffer_headers must be at least {max_headers} (one largest "
                             f"read), not {cpl_buffer_headers!r}")
        if (not isinstance(completion_timeout_cycles, int)
                or not 16 <= completion_timeout_cycles < 2**(TIME_WIDTH - 2)):
            raise ValueError(f"completion_timeout_cycles must be an integer from 16 to "
                             f"{2**(TIME_WIDTH - 2) - 1}, not {completion_timeout_cycles!r}")
        self._data_width   = data_width
        self._clients      = clients
        self._tag_count    = tag_count
        self._op_count     = op_count
        self._cpl_bytes    = cpl_buffer_bytes
        self._cpl_headers  = cpl_buffer_headers
        self._timeout      = completion_timeout_cycles
        self._client_bits  = client_index_width(clients)
        super().__init__({
            "req":        In(stream.Signature(DmaRoutedReadRequest(clients))),
            "status":     Out(stream.Signature(DmaRoutedStatus(clients), always_ready=True)),
            "ram":        Out(DmaRamWriteSignature(data_width)),
            "ram_client": Out(self._client_bits),
            "tx_req":     Out(TlpSignature(data_width)),
            "rx_cpl":     In(TlpSignature(data_width)),
            "cfg":        In(FunctionConfig),
            "events":     Out(FunctionEvents),
            "idle":       Out(1),
            "stats":      Out(DmaStatistics),
            "client_used": Out(range(cpl_buffer_bytes + 2**DMA_LEN_WIDTH)).array(clients),
        })

    def elaborate(self, platform):
        m = Module()

        W   = self._data_width
        B   = W // 8                       # bytes per beat (and per buffer row)
        LB  = exact_log2(B)
        L   = W // 32                      # dword lanes per beat
        T   = self._tag_count
        TB  = ceil_log2(T)
        OPS = self._op_count
        OB  = max(1, ceil_log2(OPS))
        CB  = self._client_bits
        RA  = DMA_RAM_ADDR_WIDTH - LB      # row (beat) address bits
        cfg = self.cfg

        TagEntry = data.StructLayout({
            "op":       OB,
            "client":   CB,
            "ram_addr": DMA_RAM_ADDR_WIDTH,   # buffer address of the first byte requested
            "len":      SIZE_WIDTH,           # bytes requested
            "addr_lo":  7,                    # host address bits [6:0] of the first byte
            "cplh":     7,                    # completion headers reserved
            "cplb":     SIZE_WIDTH,           # completion bytes reserved
            "ts":       TIME_WIDTH,           # when the MRd was issued
        })
        Progress = data.StructLayout({
            "gen":       1,                   # == the tag's issue toggle when this is current
            "remaining": SIZE_WIDTH,
        })
        Event = data.StructLayout({
            "valid": 1,
            "op":    OB,
            "dec":   1,                       # one of the op's tags retired
            "err":   DmaError,
        })

        now = Signal(TIME_WIDTH)
        m.d.sync += now.eq(now + 1)

        bme = (cfg.command & PciCommand.BUS_MASTER).as_value().any()
        rcb_128 = cfg.rcb_128

        # =========================================================================================
        # Tag pool: tags 0-31 always, 32 and up with extended tags. Filled after reset.
        # =========================================================================================
        m.submodules.free_lo = free_lo = SyncFIFOBuffered(width=TB, depth=BASE_TAGS)
        if T > BASE_TAGS:
            m.submodules.free_hi = free_hi = SyncFIFOBuffered(width=TB, depth=T - BASE_TAGS)
        else:
            free_hi = None

        init_ctr  = Signal(range(T + 1))
        init_done = Signal()
        free_push = Signal()
        free_tag  = Signal(TB)
        with m.If(~init_done):
            m.d.comb += [free_push.eq(1), free_tag.eq(init_ctr)]
            m.d.sync += init_ctr.eq(init_ctr + 1)
            with m.If(init_ctr == T - 1):
                m.d.sync += init_done.eq(1)
        m.d.comb += [
            free_lo.w_data.eq(free_tag),
            free_lo.w_en.eq(free_push & (free_tag < BASE_TAGS)),
        ]
        if free_hi is not None:
            m.d.comb += [
                free_hi.w_data.eq(free_tag),
                free_hi.w_en.eq(free_push & (free_tag >= BASE_TAGS)),
            ]

        # Issue toggles ``tag_a``, retirement toggles ``tag_b``: a tag is active while they
        # differ; ``tag_q`` marks a retired tag in quarantine (not yet back in the pool).
        # (Bit memories with asynchronous read ports: small, and cheap to simulate.)
        m.submodules.tag_a = tag_a = Memory(shape=1, depth=T, init=[])
        m.submodules.tag_b = tag_b = Memory(shape=1, depth=T, init=[])
        m.submodules.tag_q = tag_q = Memory(shape=1, depth=T, init=[])
        a_wr, b_wr, q_wr = tag_a.write_port(), tag_b.write_port(), tag_q.write_port()

        def bit_reader(mem, addr):
            port = mem.read_port(domain="comb")
            m.d.comb += port.addr.eq(addr)
            return port.data

        m.submodules.tag_table = tag_table = Memory(shape=TagEntry, depth=T, init=[])
        m.submodules.progress  = progress  = Memory(shape=Progress, depth=T, init=[])
        table_wr    = tag_table.write_port()
        table_cpl   = tag_table.read_port(transparent_for=(table_wr,))
        table_scan  = tag_table.read_port(transparent_for=(table_wr,))
        progress_wr = progress.write_port()
        progress_rd = progress.read_port(transparent_for=(progress_wr,))

        # =========================================================================================
        # Request table ("ops"): one entry per request in progress.
        # =========================================================================================
        op_busy   = Signal(OPS)
        op_all    = Signal(OPS)                      # every MRd of the request was issued
        op_client = Array(Signal(CB, name=f"op{i}_client") for i in range(OPS))
        op_tag    = Array(Signal(8, name=f"op{i}_tag") for i in range(OPS))
        op_err    = Array(Signal(DmaError, name=f"op{i}_err") for i in range(OPS))
        op_out    = Array(Signal(range(T + 1), name=f"op{i}_outstanding") for i in range(OPS))

        ev_a = Signal(Event)     # released with the buffer row it waited for
        ev_b = Signal(Event)     # released with the beat that carried it
        issue_inc = Signal()     # an MRd of ``cur_op`` was issued
        abort_err = Signal(DmaError)
        abort     = Signal()     # stop issuing ``cur_op`` (bus master disabled / failed)

        # =========================================================================================
        # Request intake and MRd issue
        # =========================================================================================
        cur_valid  = Signal()
        cur_op     = Signal(OB)
        cur_client = Signal(CB)
        cur_addr   = Signal(64)
        cur_rem    = Signal(DMA_LEN_WIDTH + 1)
        cur_ram    = Signal(DMA_RAM_ADDR_WIDTH)

        free_op     = Signal(OB)
        free_op_any = Signal()
        for i in reversed(range(OPS)):
            with m.If(~op_busy[i]):
                m.d.comb += [free_op.eq(i), free_op_any.eq(1)]

        # Chunk: up to the next Max_Read_Request_Size boundary, which is never past a 4 KiB one.
        # For timing, the chunk of the current position and the completion space it needs are
        # registers, computed a cycle ahead for the position the engine moves to (a new request,
        # or the current one after its MRd), so that the issue decision compares registers instead
        # of ending a chain of adders that starts at the configuration (docs/dma.md, "Timing").
        mrrs_enc = Mux(cfg.max_read_request_size > MAX_SIZE_ENCODING, MAX_SIZE_ENCODING,
                       cfg.max_read_request_size)
        mrrs     = Signal(SIZE_WIDTH)
        m.d.comb += mrrs.eq(payload_size_bytes(0) << mrrs_enc)
        assert payload_size_bytes(MAX_SIZE_ENCODING) <= REQUEST_BOUNDARY_BYTES
        rcb_lo   = exact_log2(RCB_BYTES[0])
        rcb_hi   = exact_log2(RCB_BYTES[1])
        AB       = SIZE_WIDTH - 1          # host address bits that place an MRd (within 4 KiB)

        def chunk_of(addr, rem):
            """The MRd at host address ``addr`` (its low bits) with ``rem`` bytes left to read:
            its length, whether it is the last, and the completion space it may take:
            dword-rounded bytes, and one header per RCB block (the most a completer may split it
            into, PCIe Base 4.0 §2.3.1.1)."""
            to_bound = Signal(SIZE_WIDTH)
            last     = Signal()
            length   = Signal(SIZE_WIDTH)
            space_b  = Signal(SIZE_WIDTH + 1)
            space_h  = Signal(8)
            m.d.comb += [
                to_bound.eq(mrrs - (addr[:AB] & (mrrs - 1))),
                last.eq(rem <= to_bound),
                length.eq(Mux(last, rem, to_bound)),
                space_b.eq((addr[:2] + length + 3) & ~3),
                space_h.eq(Mux(rcb_128,
                               (addr[:rcb_hi] + length + RCB_BYTES[1] - 1) >> rcb_hi,
                               (addr[:rcb_lo] + length + RCB_BYTES[0] - 1) >> rcb_lo)),
            ]
            return length, last, space_b, space_h

        chunk      = Signal(SIZE_WIDTH)    # of the MRd at cur_addr (registers, see above)
        last_chunk = Signal()
        need_b     = Signal(SIZE_WIDTH + 1)
        need_h     = Signal(8)
        pad        = cur_addr[:2]
        # ``room_b``/``room_h``: completion space not reserved by issued MRds.
        room_b   = Signal(range(self._cpl_bytes + 1), init=self._cpl_bytes)
        room_h   = Signal(range(self._cpl_headers + 1), init=self._cpl_headers)
        ret_b    = Signal(SIZE_WIDTH + 1)
        ret_h    = Signal(8)
        credit_ok = (need_b <= room_b) & (need_h <= room_h)

        tag_from_lo = free_lo.r_rdy
        tag_from_hi = (free_hi.r_rdy & cfg.extended_tag) if free_hi is not None else 0
        tag_avail   = tag_from_lo | tag_from_hi
        new_tag     = Signal(TB)
        m.d.comb += new_tag.eq(Mux(tag_from_lo, free_lo.r_data,
                                   free_hi.r_data if free_hi is not None else 0))

        tx_free = ~self.tx_req.valid | self.tx_req.ready
        with m.If(self.tx_req.ready):
            m.d.sync += self.tx_req.valid.eq(0)

        op_failed = op_err[cur_op] != DmaError.OK
        want      = cur_valid & bme & ~op_failed
        issue     = Signal()
        m.d.comb += [
            issue.eq(want & tag_avail & credit_ok & tx_free),
            abort.eq(cur_valid & (~bme | op_failed)),
            abort_err.eq(Mux(bme, DmaError.OK, DmaError.BUS_MASTER_DISABLED)),
            issue_inc.eq(issue),
        ]
        m.d.comb += [
            free_lo.r_en.eq(issue & tag_from_lo),
        ]
        if free_hi is not None:
            m.d.comb += free_hi.r_en.eq(issue & ~tag_from_lo)

        # The MRd (PCIe Base 4.0 §2.2.7 Figure 2-13/2-14; 3-DW header below 4 GiB, §2.2.4.1).
        end_b   = pad + chunk                       # bytes from the first dword's start
        n_dw    = Signal(11)
        m.d.comb += n_dw.eq((end_b + 3) >> 2)
        first_m = Signal(4)
        last_m  = Signal(4)
        m.d.comb += [
            first_m.eq((Const(0xF, 4) << pad)[:4]),
            last_m.eq(Mux(end_b[:2] == 0, 0xF, ~(Const(0xF, 4) << end_b[:2])[:4])),
        ]
        hdr = Signal(TlpHeader)
        high = cur_addr[32:] != 0
        m.d.comb += [
            hdr.dw0.fmt_type.eq(Mux(high, FmtType.MRD64, FmtType.MRD32)),
            hdr.dw0.length.eq(n_dw[:10]),
            hdr.req.tag.eq(new_tag),
            hdr.req.requester_id.eq(cfg.pcie_id),
            hdr.req.first_be.eq(Mux(n_dw == 1, first_m & last_m, first_m)),
            hdr.req.last_be.eq(Mux(n_dw == 1, 0, last_m)),
            hdr.req.dw2.eq(Mux(high, cur_addr[32:], Cat(Const(0, 2), cur_addr[2:32]))),
            hdr.req.dw3.eq(Mux(high, Cat(Const(0, 2), cur_addr[2:32]), 0)),
        ]
        assert ADDRESS_32_LIMIT == 1 << 32

        with m.If(issue):
            m.d.sync += [
                self.tx_req.valid.eq(1),
                self.tx_req.p.hdr.eq(hdr),
                self.tx_req.p.data.eq(0),
                self.tx_req.p.keep.eq(0),
                self.tx_req.p.sop.eq(1),
                self.tx_req.p.eop.eq(1),
                cur_addr.eq(cur_addr + chunk),
                cur_rem.eq(cur_rem - chunk),
                cur_ram.eq(cur_ram + chunk),
            ]
            m.d.comb += [a_wr.en.eq(1), a_wr.addr.eq(new_tag),
                         a_wr.data.eq(~bit_reader(tag_a, new_tag))]
            m.d.comb += [
                table_wr.en.eq(1),
                table_wr.addr.eq(new_tag),
                table_wr.data.op.eq(cur_op),
                table_wr.data.client.eq(cur_client),
                table_wr.data.ram_addr.eq(cur_ram),
                table_wr.data.len.eq(chunk),
                table_wr.data.addr_lo.eq(cur_addr[:7]),
                table_wr.data.cplh.eq(need_h),
                table_wr.data.cplb.eq(need_b),
                table_wr.data.ts.eq(now),
            ]

        cur_done = (issue & last_chunk) | abort
        with m.If(cur_done):
            m.d.sync += cur_valid.eq(0)

        # Accept a request (possibly in the cycle the previous one issues its last MRd).
        req  = self.req.p.req
        wrap = (req.host_addr + req.len) > (1 << 64)
        req_err = Signal(DmaError)
        with m.If(req.len == 0):
            m.d.comb += req_err.eq(DmaError.BAD_REQUEST)
        with m.Elif(wrap):
            m.d.comb += req_err.eq(DmaError.BAD_REQUEST)
        with m.Elif(~bme):
            m.d.comb += req_err.eq(DmaError.BUS_MASTER_DISABLED)
        m.d.comb += self.req.ready.eq(init_done & free_op_any & (~cur_valid | cur_done))
        accept = self.req.valid & self.req.ready
        with m.If(accept & (req_err == DmaError.OK)):
            m.d.sync += [
                cur_valid.eq(1),
                cur_op.eq(free_op),
                cur_client.eq(self.req.p.client),
                cur_addr.eq(req.host_addr),
                cur_rem.eq(req.len),
                cur_ram.eq(req.ram_addr),
            ]

        # The next MRd's chunk, for the position the engine moves to: all three are computed
        # every cycle and the choice is the last step before the registers. (Without a request
        # or an MRd, the current position's is recomputed, so that a change of
        # Max_Read_Request_Size or RCB in the middle of a request applies from the next cycle.)
        next_addr = Signal(AB)
        next_rem  = Signal.like(cur_rem)
        m.d.comb += [next_addr.eq(cur_addr[:AB] + chunk), next_rem.eq(cur_rem - chunk)]
        on_req   = chunk_of(req.host_addr, req.len)
        on_issue = chunk_of(next_addr, next_rem)
        on_hold  = chunk_of(cur_addr, cur_rem)
        for i, reg in enumerate((chunk, last_chunk, need_b, need_h)):
            m.d.sync += reg.eq(Mux(accept, on_req[i], Mux(issue, on_issue[i], on_hold[i])))

        # =========================================================================================
        # Completion timeout scanner: one tag per cycle.
        # =========================================================================================
        tok_pending = Signal()
        tok_kind    = Signal(TokenKind)
        tok_tag     = Signal(TB)
        tok_gen     = Signal()
        scan_ptr    = Signal(TB)
        scan_tag    = Signal(TB)
        m.d.sync += [
            scan_ptr.eq(Mux(scan_ptr == T - 1, 0, scan_ptr + 1)),
            scan_tag.eq(scan_ptr),
        ]
        m.d.comb += [table_scan.addr.eq(scan_ptr), table_scan.en.eq(1)]
        scan_age    = Signal(TIME_WIDTH)
        m.d.comb += scan_age.eq(now - table_scan.data.ts)
        scan_gen    = bit_reader(tag_a, scan_tag)
        scan_active = scan_gen ^ bit_reader(tag_b, scan_tag)
        scan_quar   = bit_reader(tag_q, scan_tag)
        with m.If(init_done & ~tok_pending):
            with m.If(scan_active & (scan_age >= self._timeout)):
                m.d.sync += [tok_pending.eq(1), tok_kind.eq(TokenKind.TIMEOUT),
                             tok_tag.eq(scan_tag), tok_gen.eq(scan_gen)]
            with m.Elif(~scan_active & scan_quar & (scan_age >= 2 * self._timeout)):
                m.d.sync += [tok_pending.eq(1), tok_kind.eq(TokenKind.RELEASE),
                             tok_tag.eq(scan_tag)]

        # =========================================================================================
        # Completion path. S0: a beat (or a scanner token between TLPs) enters and the tag's
        # table entries are read. S1: the header is checked against the tag's request and the
        # placement computed; the TLP's effect on the tag is committed on its last beat. S2: the
        # beat is rotated to its buffer alignment and written, combining with a row left over
        # by the previous beat or TLP.
        # =========================================================================================
        stall  = Signal()
        in_tlp = Signal()
        rx     = self.rx_cpl
        take_token = tok_pending & ~in_tlp & ~stall
        # (Completions wait while the tag state is cleared after reset.)
        m.d.comb += rx.ready.eq(init_done & ~stall & ~(tok_pending & ~in_tlp))
        rx_take = rx.valid & rx.ready
        with m.If(rx_take):
            m.d.sync += in_tlp.eq(~rx.p.eop)
        with m.If(take_token):
            m.d.sync += tok_pending.eq(0)

        s0_tag = Mux(take_token, tok_tag, rx.p.hdr.cpl.tag[:TB])
        m.d.comb += [
            table_cpl.addr.eq(s0_tag), table_cpl.en.eq(~stall),
            progress_rd.addr.eq(s0_tag), progress_rd.en.eq(~stall),
        ]

        s1_valid  = Signal()
        s1_token  = Signal()
        s1_tkind  = Signal(TokenKind)
        s1_tgen   = Signal()
        s1_tag    = Signal(TB)
        s1_beat   = Signal.like(rx.p)
        with m.If(~stall):
            m.d.sync += [
                s1_valid.eq(rx_take | take_token),
                s1_token.eq(take_token),
                s1_tkind.eq(tok_kind),
                s1_tgen.eq(tok_gen),
                s1_tag.eq(s0_tag),
                s1_beat.eq(rx.p),
            ]

        # --- S1: decode the header against the tag's entry --------------------------------------
        Ctx = data.StructLayout({
            "kind":    CplKind,
            "rows":    1,            # write this TLP's data to the buffer
            "final":   1,            # last completion of its tag
            "err":     DmaError,     # error this TLP gives its request
            "tag":     TB,
            "op":      OB,
            "client":  CB,
            "gen":     1,
            "new_rem": SIZE_WIDTH,
            "cplh":    7,
            "cplb":    SIZE_WIDTH,
            "s":       LB,           # buffer byte offset of payload byte 0 within its row
            "row0":    RA,           # buffer row of payload byte 0
            "k0":      1,            # first row (relative) with useful bytes, and lane
            "u0m":     LB,
            "k1":      BEAT_INDEX_WIDTH,  # last row (relative) with useful bytes, and lane
            "u1m":     LB,
            "nb":      BEAT_INDEX_WIDTH,  # beats the header announces
        })
        st  = table_cpl.data
        pg  = progress_rd.data
        h   = s1_beat.hdr
        tag_full = h.cpl.tag
        idx = tag_full[:TB]
        gen    = bit_reader(tag_a, s1_tag)
        active = gen ^ bit_reader(tag_b, s1_tag)
        quar   = bit_reader(tag_q, s1_tag)
        fmt    = h.dw0.fmt_type
        is_cpl  = fmt == FmtType.CPL
        is_cpld = fmt == FmtType.CPLD
        tag_ok  = (h.dw0.t8 == 0) & (h.dw0.t9 == 0)
        if T < 256:
            tag_ok = tag_ok & (tag_full < T)
        owned = (is_cpl | is_cpld) & tag_ok & active & \
            (h.cpl.requester_id.as_value() == cfg.pcie_id.as_value())

        bc        = Signal(SIZE_WIDTH)
        remaining = Signal(SIZE_WIDTH)
        offset    = Signal(SIZE_WIDTH)
        len_dw    = Signal(11)
        carried   = Signal(SIZE_WIDTH + 1)
        la        = h.cpl.lower_address
        lpad      = la[:2]
        m.d.comb += [
            bc.eq(Mux(h.cpl.byte_count == 0, MAX_TLP_PAYLOAD_BYTES, h.cpl.byte_count)),
            remaining.eq(Mux(pg.gen == gen, pg.remaining, st.len)),
            offset.eq(st.len - remaining),
            len_dw.eq(Mux(h.dw0.length == 0, 1024, h.dw0.length)),
            carried.eq((len_dw << 2) - lpad),
        ]
        final  = bc <= carried
        nbytes = Signal(SIZE_WIDTH)
        m.d.comb += nbytes.eq(Mux(final, bc, carried))
        exp_la = (st.addr_lo + offset)[:7]
        # PCIe Base 4.0 §2.3.1.1: Byte Count is what remains of the request, Lower Address is
        # where this completion starts; every completion but the last ends on an RCB boundary
        # (checked against 64 bytes, the smaller RCB, so no legal split is refused); the last
        # carries exactly the dwords it needs.
        fits = ((bc == remaining) & (la == exp_la) &
                Mux(final, (carried - bc) < 4, (la + carried)[:exact_log2(RCB_BYTES[0])] == 0))

        base   = Signal(DMA_RAM_ADDR_WIDTH)      # buffer address of payload byte 0
        u0     = Signal(LB + 2)
        u1     = Signal(SIZE_WIDTH + 1)
        m.d.comb += [
            base.eq(st.ram_addr + offset - lpad),
            u0.eq(base[:LB] + lpad),
            u1.eq(u0 + nbytes - 1),
        ]
        ctx_new = Signal(Ctx)
        m.d.comb += [
            ctx_new.final.eq(final),
            ctx_new.tag.eq(idx),
            ctx_new.op.eq(st.op),
            ctx_new.client.eq(st.client),
            ctx_new.gen.eq(gen),
            ctx_new.new_rem.eq(remaining - nbytes),
            ctx_new.cplh.eq(st.cplh),
            ctx_new.cplb.eq(st.cplb),
            ctx_new.s.eq(base[:LB]),
            ctx_new.row0.eq(base[LB:]),
            ctx_new.k0.eq(u0 >> LB),
            ctx_new.u0m.eq(u0[:LB]),
            ctx_new.k1.eq(u1 >> LB),
            ctx_new.u1m.eq(u1[:LB]),
            ctx_new.nb.eq((len_dw + L - 1) >> exact_log2(L) if L > 1 else len_dw),
        ]
        with m.If(~owned):
            m.d.comb += ctx_new.kind.eq(CplKind.UNEXPECTED)
        with m.Elif(h.cpl.status == CplStatus.SC):
            with m.If(is_cpld & fits):
                m.d.comb += [
                    ctx_new.kind.eq(CplKind.DATA),
                    ctx_new.err.eq(Mux(h.dw0.ep, DmaError.POISONED, DmaError.OK)),
                    # No data is written for a poisoned completion (PCIe Base 4.0 §2.7.2.2) or
                    # for a request that has already failed.
                    ctx_new.rows.eq(~h.dw0.ep & (op_err[st.op] == DmaError.OK)),
                ]
            with m.Else():
                m.d.comb += [ctx_new.kind.eq(CplKind.MALFORMED),
                             ctx_new.err.eq(DmaError.MALFORMED)]
        with m.Elif(is_cpl & (h.cpl.status == CplStatus.UR)):
            m.d.comb += [ctx_new.kind.eq(CplKind.ERROR_STATUS),
                         ctx_new.err.eq(DmaError.UNSUPPORTED_REQUEST)]
        with m.Elif(is_cpl & (h.cpl.status == CplStatus.CA)):
            m.d.comb += [ctx_new.kind.eq(CplKind.ERROR_STATUS),
                         ctx_new.err.eq(DmaError.COMPLETER_ABORT)]
        with m.Else():
            # CRS is not a valid status for a memory read; a CplD must carry SC (§2.2.9).
            m.d.comb += [ctx_new.kind.eq(CplKind.MALFORMED),
                         ctx_new.err.eq(DmaError.MALFORMED)]

        ctx_reg = Signal(Ctx)
        j_reg   = Signal(BEAT_INDEX_WIDTH)
        ctx     = Signal(Ctx)
        j       = Signal(BEAT_INDEX_WIDTH)
        sop     = s1_beat.sop
        m.d.comb += [
            ctx.eq(Mux(sop, ctx_new, ctx_reg)),
            j.eq(Mux(sop, 0, j_reg)),
        ]
        s1_adv  = s1_valid & ~stall
        s1_beat_adv = s1_adv & ~s1_token
        with m.If(s1_beat_adv):
            m.d.sync += j_reg.eq(_sat_incr(j))
            with m.If(sop):
                m.d.sync += ctx_reg.eq(ctx_new)

        eop = s1_beat.eop
        # A TLP the link flagged, or whose beats do not match its Length, is malformed after all.
        broken = s1_beat.error.as_value().any() | (j + 1 != ctx.nb)
        kind   = Signal(CplKind)
        m.d.comb += kind.eq(Mux((ctx.kind == CplKind.DATA) & eop & broken,
                                CplKind.MALFORMED, ctx.kind))
        commit = s1_beat_adv & eop

        # --- S1 commit: retire / quarantine tags, events for the request table ---------------
        s1_ev       = Signal(Event)
        retire      = Signal()
        quarantine  = Signal()
        release     = Signal()
        r_tag       = Signal(TB)
        m.d.comb += [r_tag.eq(Mux(s1_token, s1_tag, ctx.tag))]
        with m.If(commit):
            with m.Switch(kind):
                with m.Case(CplKind.DATA):
                    with m.If(ctx.final):
                        m.d.comb += [retire.eq(1),
                                     s1_ev.valid.eq(1), s1_ev.dec.eq(1), s1_ev.err.eq(ctx.err)]
                    with m.Else():
                        m.d.comb += [
                            progress_wr.en.eq(1),
                            progress_wr.addr.eq(ctx.tag),
                            progress_wr.data.gen.eq(ctx.gen),
                            progress_wr.data.remaining.eq(ctx.new_rem),
                            s1_ev.valid.eq(ctx.err != DmaError.OK),
                            s1_ev.err.eq(ctx.err),
                        ]
                with m.Case(CplKind.ERROR_STATUS):
                    m.d.comb += [retire.eq(1),
                                 s1_ev.valid.eq(1), s1_ev.dec.eq(1), s1_ev.err.eq(ctx.err)]
                with m.Case(CplKind.MALFORMED):
                    m.d.comb += [retire.eq(1), quarantine.eq(1),
                                 s1_ev.valid.eq(1), s1_ev.dec.eq(1),
                                 s1_ev.err.eq(DmaError.MALFORMED)]
            m.d.comb += s1_ev.op.eq(ctx.op)
        tok_active = active
        with m.If(s1_adv & s1_token):
            with m.If((s1_tkind == TokenKind.TIMEOUT) & tok_active &
                      (gen == s1_tgen)):
                m.d.comb += [retire.eq(1), quarantine.eq(1),
                             s1_ev.valid.eq(1), s1_ev.dec.eq(1), s1_ev.op.eq(st.op),
                             s1_ev.err.eq(DmaError.TIMEOUT)]
            with m.If((s1_tkind == TokenKind.RELEASE) & ~tok_active &
                      quar):
                m.d.comb += release.eq(1)

        with m.If(retire):
            # A retired tag is active (its toggles differ), so its new retirement toggle is its
            # issue toggle, known from S1's read (no second read of ``tag_b``: timing).
            m.d.comb += [b_wr.en.eq(1), b_wr.addr.eq(r_tag),
                         b_wr.data.eq(Mux(s1_token, gen, ctx.gen))]
            # Mark the progress entry as belonging to this issue of the tag, so that it reads as
            # stale after the next issue (which toggles the tag's generation).
            m.d.comb += [
                progress_wr.en.eq(1),
                progress_wr.addr.eq(r_tag),
                progress_wr.data.gen.eq(Mux(s1_token, gen, ctx.gen)),
                progress_wr.data.remaining.eq(0),
            ]
            m.d.comb += [
                ret_b.eq(Mux(s1_token, st.cplb, ctx.cplb)),
                ret_h.eq(Mux(s1_token, st.cplh, ctx.cplh)),
            ]
        m.d.comb += [q_wr.en.eq(quarantine | release), q_wr.addr.eq(r_tag),
                     q_wr.data.eq(quarantine)]
        with m.If(init_done & ((retire & ~quarantine) | release)):
            m.d.comb += [free_push.eq(1), free_tag.eq(r_tag)]

        m.d.sync += [
            room_b.eq(room_b - Mux(issue, need_b, 0) + ret_b),
            room_h.eq(room_h - Mux(issue, need_h, 0) + ret_h),
        ]
        # The same completion space, by client (for the engine's per-client read budgets).
        ret_client = Mux(s1_token, st.client, ctx.client)
        # ``client_used`` is the completion space the client's issued MRds hold plus what is left
        # to issue of its request in progress, kept as one register changed by whatever changes
        # either part (for timing: the engine's budget check then starts at a register, not at
        # a sum). An MRd moves its chunk from the second part to the first, rounded to dwords.
        for k in range(self._clients):
            used_k = Signal.like(self.client_used[k], name=f"client_used{k}")
            mine   = cur_client == k
            m.d.sync += used_k.eq(used_k
                                  + Mux(issue & mine, need_b - chunk, 0)
                                  - Mux(abort & mine, cur_rem, 0)
                                  + Mux(accept & (req_err == DmaError.OK) &
                                        (self.req.p.client == k), req.len, 0)
                                  - Mux(ret_client == k, ret_b, 0))
            m.d.comb += self.client_used[k].eq(used_k)

        # After reset every tag is idle, not quarantined, with no progress of an earlier issue:
        # the tag state RAMs are cleared while the pool is filled (nothing else writes them
        # then: no request is taken and no completion either).
        with m.If(~init_done):
            m.d.comb += [
                a_wr.en.eq(1), a_wr.addr.eq(init_ctr), a_wr.data.eq(0),
                b_wr.en.eq(1), b_wr.addr.eq(init_ctr), b_wr.data.eq(0),
                q_wr.en.eq(1), q_wr.addr.eq(init_ctr), q_wr.data.eq(0),
                progress_wr.en.eq(1), progress_wr.addr.eq(init_ctr), progress_wr.data.eq(0),
            ]

        # --- S2: realign and write ------------------------------------------------------------
        m.submodules.writer = writer = CompletionWriter(data_width=W, clients=self._clients,
                                                        event=Event)
        m.d.comb += [
            stall.eq(~writer.i.ready),
            writer.i.valid.eq(s1_valid),
            writer.i.p.rows.eq(~s1_token & ctx.rows & (kind == CplKind.DATA)),
            writer.i.p.client.eq(ctx.client),
            writer.i.p.row.eq(ctx.row0 + j),
            writer.i.p.s.eq(ctx.s),
            writer.i.p.data.eq(s1_beat.data),
            writer.i.p.j.eq(j),
            writer.i.p.k0.eq(ctx.k0),
            writer.i.p.u0m.eq(ctx.u0m),
            writer.i.p.k1.eq(ctx.k1),
            writer.i.p.u1m.eq(ctx.u1m),
            writer.i.p.event.eq(s1_ev),
        ]
        wiring.connect(m, writer=writer.ram, engine=wiring.flipped(self.ram))
        m.d.comb += [
            self.ram_client.eq(writer.ram_client),
            ev_a.eq(writer.event_row),
            ev_b.eq(writer.event_beat),
        ]

        # =========================================================================================
        # Request table updates and statuses
        # =========================================================================================
        done = Signal(OPS)
        for i in range(OPS):
            dec_a = ev_a.valid & ev_a.dec & (ev_a.op == i)
            dec_b = ev_b.valid & ev_b.dec & (ev_b.op == i)
            inc   = issue_inc & (cur_op == i)
            m.d.sync += op_out[i].eq(op_out[i] + inc - dec_a - dec_b)
            with m.If(op_err[i] == DmaError.OK):
                with m.If(ev_a.valid & (ev_a.op == i) & (ev_a.err != DmaError.OK)):
                    m.d.sync += op_err[i].eq(ev_a.err)
                with m.Elif(ev_b.valid & (ev_b.op == i) & (ev_b.err != DmaError.OK)):
                    m.d.sync += op_err[i].eq(ev_b.err)
                with m.Elif(abort & (cur_op == i)):
                    m.d.sync += op_err[i].eq(abort_err)
            with m.If((issue & last_chunk | abort) & (cur_op == i)):
                m.d.sync += op_all[i].eq(1)
            m.d.comb += done[i].eq(op_busy[i] & op_all[i] & (op_out[i] == 0))

        with m.If(accept):
            m.d.sync += [
                op_busy.bit_select(free_op, 1).eq(1),
                op_all.bit_select(free_op, 1).eq(req_err != DmaError.OK),
                op_client[free_op].eq(self.req.p.client),
                op_tag[free_op].eq(req.tag),
                op_err[free_op].eq(req_err),
            ]

        m.d.sync += self.status.valid.eq(0)
        pick = Signal(OB)
        for i in reversed(range(OPS)):
            with m.If(done[i]):
                m.d.comb += pick.eq(i)
        with m.If(done != 0):
            m.d.sync += [
                self.status.valid.eq(1),
                self.status.p.client.eq(op_client[pick]),
                self.status.p.status.tag.eq(op_tag[pick]),
                self.status.p.status.error.eq(op_err[pick]),
                op_busy.bit_select(pick, 1).eq(0),
            ]
        # (An op is never allocated in the cycle it is picked: it is still busy then.)

        m.d.comb += self.idle.eq(op_busy == 0)

        # =========================================================================================
        # Events and statistics
        # =========================================================================================
        sop_commit = s1_beat_adv & sop & (ctx_new.kind == CplKind.ERROR_STATUS)
        m.d.sync += [
            self.events.received_master_abort.eq(
                sop_commit & (ctx_new.err == DmaError.UNSUPPORTED_REQUEST)),
            self.events.received_target_abort.eq(
                sop_commit & (ctx_new.err == DmaError.COMPLETER_ABORT)),
            self.events.master_data_parity_error.eq(
                s1_beat_adv & sop & (ctx_new.kind == CplKind.DATA) &
                (ctx_new.err == DmaError.POISONED) &
                (cfg.command & PciCommand.PARITY_ERROR_RESP).as_value().any()),
        ]

        stats = self.stats

        def count(name, cond, amount=1):
            with m.If(cond):
                m.d.sync += stats[name].eq(stats[name] + amount)

        count("rd_requests", accept)
        count("rd_tlps", issue)
        count("rd_bytes", issue, chunk)
        count("rd_completions", commit)
        count("rd_errors", self.status.valid & (self.status.p.status.error != DmaError.OK))
        count("rd_timeouts", s1_adv & s1_token & quarantine)
        count("cpl_unexpected", commit & (kind == CplKind.UNEXPECTED))
        count("cpl_malformed", commit & (kind == CplKind.MALFORMED))
        count("rd_tag_starved", want & ~tag_avail)
        count("rd_credit_starved", want & tag_avail & ~credit_ok)

        return m
