# SPDX-License-Identifier: BSD-2-Clause
"""The DMA write engine: memory writes from the clients' write buffers to host memory.

Requests are split into MWr TLPs at Max_Payload_Size boundaries (which never straddle a 4 KiB
one; PCIe Base 4.0 §2.2.7, §7.5.3.4). Three stages run in a pipeline so that TLP follows TLP,
and request follows request, with no idle beat between them::

    req ─► splitter ─► descriptors ─► row reader ─► descriptors ─► TLP builder ─► tx_req
                                         │ wr_ram          rows ──►┘    └─► status (in order)

* The **splitter** turns a request into one descriptor per TLP.
* The **row reader** reads the buffer rows each TLP needs (a row shared by two TLPs of one
  request is read once, a row holding nothing but the first dword's padding not at all), or
  makes rows from a request's immediate data.
* The **TLP builder** shifts rows from buffer alignment to payload alignment (payload byte 0 in
  lane 0 of the first beat is the byte at host address ``addr & ~3``) and sends the beats.

Statuses come in request order, each in the cycle after the request's last beat was taken by
``tx_req``. Bus Master Enable is checked before each TLP: while it is clear no TLP is sent and
the request ends with :attr:`DmaError.BUS_MASTER_DISABLED`.
"""

from amaranth import Array, Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..function.interface import FunctionConfig
from ..spec.pcie import (MAX_SIZE_ENCODING, MAX_TLP_PAYLOAD_BYTES, REQUEST_BOUNDARY_BYTES,
                         FmtType, PciCommand, TlpHeader, payload_size_bytes)
from ..tlp.signature import DATA_WIDTHS, TlpSignature
from .interface import (DMA_LEN_WIDTH, DMA_RAM_ADDR_WIDTH, DmaError, DmaRamReadSignature,
                        DmaRoutedStatus, DmaRoutedWriteRequest, DmaStatistics,
                        client_index_width)

__all__ = ["DmaWriteEngine", "IMMEDIATE_BYTES"]

#: Most bytes an immediate-data write carries (the width of ``imm_data``).
IMMEDIATE_BYTES = 8
SIZE_WIDTH = MAX_TLP_PAYLOAD_BYTES.bit_length()
#: Rows the row FIFO holds between the reader and the builder.
ROW_FIFO_DEPTH = 4


class DmaWriteEngine(wiring.Component):
    """Writes client write buffers (or immediate data) to host memory.

    Parameters
    ----------
    data_width : int
        TLP data path width in bits (64, 128 or 256).
    clients : int
        Number of clients whose buffers requests name.

    Members
    -------
    req : In(stream.Signature(DmaRoutedWriteRequest(clients)))
    status : Out(stream.Signature(DmaRoutedStatus(clients), always_ready=True))
        One per request, in request order.
    ram : Out(DmaRamReadSignature(data_width))
        Reads the write buffer of client ``ram_client`` (data the cycle after ``en``).
    ram_client : Out(range(clients))
    tx_req : Out(TlpSignature(data_width))
        MWr TLPs. A request's status is given only once its last beat was taken here, so the
        consumer must not buffer beats where later TLPs could overtake them.
    cfg : In(FunctionConfig)
    idle : Out(1)
        No request in progress.
    stats : Out(DmaStatistics)
        The write-side counters (``wr_*``); the others are zero.
    """

    def __init__(self, *, data_width, clients=1):
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
        self._data_width  = data_width
        self._clients     = clients
        self._client_bits = client_index_width(clients)
        super().__init__({
            "req":        In(stream.Signature(DmaRoutedWriteRequest(clients))),
            "status":     Out(stream.Signature(DmaRoutedStatus(clients), always_ready=True)),
            "ram":        Out(DmaRamReadSignature(data_width)),
            "ram_client": Out(self._client_bits),
            "tx_req":     Out(TlpSignature(data_width)),
            "cfg":        In(FunctionConfig),
            "idle":       Out(1),
            "stats":      Out(DmaStatistics),
        })

    def elaborate(self, platform):
        m = Module()

        W  = self._data_width
        B  = W // 8
        LB = exact_log2(B)
        L  = W // 32
        CB = self._client_bits
        RA = DMA_RAM_ADDR_WIDTH - LB
        cfg = self.cfg
        bme = (cfg.command & PciCommand.BUS_MASTER).as_value().any()

        Desc = data.StructLayout({
            "client":      CB,
            "tag":         8,
            "status_only": 1,              # no TLP: the request ends with ``err`` at once
            "err":         DmaError,
            "first":       1,              # first / last TLP of its request
            "last":        1,
            "addr":        64,             # host address of the TLP's first byte
            "len":         SIZE_WIDTH,     # bytes
            "x0":          DMA_RAM_ADDR_WIDTH,   # buffer address of payload byte 0
            "rows":        SIZE_WIDTH - LB + 1,  # buffer rows the payload spans
            "shared":      1,              # its first row is the previous TLP's last row
            "skip":        1,              # its first row holds only padding: not read
            "keep_last":   1,              # its last row is the next TLP's first row
            "imm_en":      1,
            "imm_data":    8 * IMMEDIATE_BYTES,
        })
        desc_width = Shape.cast(Desc).width

        # =========================================================================================
        # Splitter: one descriptor per cycle.
        # =========================================================================================
        m.submodules.to_reader  = to_reader  = SyncFIFOBuffered(width=desc_width, depth=4)
        m.submodules.to_builder = to_builder = SyncFIFOBuffered(width=desc_width, depth=8)

        cur_valid = Signal()
        cur_client = Signal(CB)
        cur_tag   = Signal(8)
        cur_err   = Signal(DmaError)
        cur_first = Signal()
        cur_addr  = Signal(64)
        cur_rem   = Signal(DMA_LEN_WIDTH + 1)
        cur_ram   = Signal(DMA_RAM_ADDR_WIDTH)
        cur_imm   = Signal()
        cur_imm_data = Signal(8 * IMMEDIATE_BYTES)

        mps_enc  = Mux(cfg.max_payload_size > MAX_SIZE_ENCODING, MAX_SIZE_ENCODING,
                       cfg.max_payload_size)
        mps      = Signal(SIZE_WIDTH)
        m.d.comb += mps.eq(payload_size_bytes(0) << mps_enc)
        assert payload_size_bytes(MAX_SIZE_ENCODING) <= REQUEST_BOUNDARY_BYTES
        to_bound = Signal(SIZE_WIDTH)
        m.d.comb += to_bound.eq(mps - (cur_addr[:SIZE_WIDTH - 1] & (mps - 1)))
        chunk    = Signal(SIZE_WIDTH)
        m.d.comb += chunk.eq(Mux(cur_rem < to_bound, cur_rem, to_bound))
        last     = cur_rem <= to_bound

        pad  = cur_addr[:2]
        span = Signal(SIZE_WIDTH + 1)          # payload bytes from the first dword's start
        desc = Signal(Desc)
        m.d.comb += [
            span.eq(pad + chunk),
            desc.client.eq(cur_client),
            desc.tag.eq(cur_tag),
            desc.status_only.eq(cur_err != DmaError.OK),
            desc.err.eq(cur_err),
            desc.first.eq(cur_first),
            desc.last.eq(last),
            desc.addr.eq(cur_addr),
            desc.len.eq(chunk),
            desc.x0.eq(cur_ram - pad),
            desc.rows.eq(((desc.x0[:LB] + span - 1) >> LB) + 1),
            desc.shared.eq(~cur_first & (desc.x0[:LB] != 0)),
            desc.skip.eq(cur_first & ((desc.x0[:LB] + pad) >= B)),
            desc.keep_last.eq(~last & ((desc.x0 + span)[:LB] != 0)),
            desc.imm_en.eq(cur_imm),
            desc.imm_data.eq(cur_imm_data),
        ]
        emit = cur_valid & to_reader.w_rdy
        m.d.comb += [to_reader.w_en.eq(emit), to_reader.w_data.eq(desc)]
        ends = emit & (desc.status_only | last)
        with m.If(emit):
            m.d.sync += [
                cur_addr.eq(cur_addr + chunk),
                cur_rem.eq(cur_rem - chunk),
                cur_ram.eq(cur_ram + chunk),
                cur_first.eq(0),
            ]
            with m.If(ends):
                m.d.sync += cur_valid.eq(0)

        req = self.req.p.req
        m.d.comb += self.req.ready.eq(~cur_valid | ends)
        accept = self.req.valid & self.req.ready
        with m.If(accept):
            bad = ((req.len == 0) | ((req.host_addr + req.len) > (1 << 64)) |
                   (req.imm_en & (req.len > IMMEDIATE_BYTES)))
            m.d.sync += [
                cur_valid.eq(1),
                cur_client.eq(self.req.p.client),
                cur_tag.eq(req.tag),
                cur_err.eq(Mux(bad, DmaError.BAD_REQUEST, DmaError.OK)),
                cur_first.eq(1),
                cur_addr.eq(req.host_addr),
                cur_rem.eq(req.len),
                # Immediate data is read from a virtual buffer whose row 1 holds it.
                cur_ram.eq(Mux(req.imm_en, B, req.ram_addr)),
                cur_imm.eq(req.imm_en),
                cur_imm_data.eq(req.imm_data),
            ]

        # =========================================================================================
        # Row reader
        # =========================================================================================
        rq     = Array(Signal(W, name=f"row{i}") for i in range(ROW_FIFO_DEPTH))
        rcount = Signal(range(ROW_FIFO_DEPTH + 1))
        rpop   = Signal(2)

        # The current job's rows still to read; a descriptor is taken with (or right after) its
        # predecessor's last read, and if nothing is left to read its first row is read in the
        # same cycle, so jobs with no row to read (a TLP living in a row shared with the
        # previous one, an error) cost no read cycle.
        rd_row    = Signal(RA)
        rd_left   = Signal(SIZE_WIDTH - LB + 1)
        rd_imm    = Signal()
        rd_imm_data = Signal(8 * IMMEDIATE_BYTES)
        rd_client = Signal(CB)
        inflight  = Signal()          # a row arrives this cycle
        inflight_imm = Signal()
        imm_row   = Signal(W)

        nd = Signal(Desc)
        m.d.comb += nd.eq(to_reader.r_data)
        nd_row0 = (nd.x0 >> LB) + nd.shared + nd.skip
        nd_rows = Mux(nd.status_only, 0, nd.rows - nd.shared - nd.skip)

        space     = (rcount + inflight) < ROW_FIFO_DEPTH
        cur_rows  = rd_left != 0
        read_cur  = cur_rows & space
        take      = to_reader.r_rdy & to_builder.w_rdy & (~cur_rows | (read_cur & (rd_left == 1)))
        read_head = take & ~cur_rows & (nd_rows != 0) & space
        do_read   = read_cur | read_head
        addr      = Mux(cur_rows, rd_row, nd_row0)
        imm       = Mux(cur_rows, rd_imm, nd.imm_en)
        imm_data  = Mux(cur_rows, rd_imm_data, nd.imm_data)
        m.d.comb += [
            self.ram.addr.eq(addr),
            self.ram.en.eq(do_read & ~imm),
            self.ram_client.eq(Mux(cur_rows, rd_client, nd.client)),
            to_reader.r_en.eq(take),
            to_builder.w_en.eq(take),
            to_builder.w_data.eq(to_reader.r_data),
        ]
        m.d.sync += [
            inflight.eq(do_read),
            inflight_imm.eq(imm),
            imm_row.eq(Mux(addr == 1, imm_data, 0)),
        ]
        with m.If(read_cur):
            m.d.sync += [rd_row.eq(rd_row + 1), rd_left.eq(rd_left - 1)]
        with m.If(take):
            m.d.sync += [
                rd_row.eq(nd_row0 + read_head),
                rd_left.eq(nd_rows - read_head),
                rd_imm.eq(nd.imm_en),
                rd_imm_data.eq(nd.imm_data),
                rd_client.eq(nd.client),
            ]

        # Row FIFO: one row in per cycle, up to two out.
        push_data = Mux(inflight_imm, imm_row, self.ram.data)
        for i in range(ROW_FIFO_DEPTH):
            with m.Switch(rpop):
                for p in range(3):
                    with m.Case(p):
                        src = i + p
                        with m.If(src < rcount):
                            if src < ROW_FIFO_DEPTH:
                                m.d.sync += rq[i].eq(rq[src])
                        with m.Elif(inflight & (i + p == rcount)):
                            m.d.sync += rq[i].eq(push_data)
        m.d.sync += rcount.eq(rcount + inflight - rpop)

        # =========================================================================================
        # TLP builder
        # =========================================================================================
        tx = self.tx_req
        d  = Signal(Desc)
        m.d.comb += d.eq(to_builder.r_data)
        d_valid = to_builder.r_rdy

        j        = Signal(SIZE_WIDTH - LB + 1)
        drop_reg = Signal()
        err_acc  = Signal(DmaError)

        d_pad  = d.addr[:2]
        d_span = Signal(SIZE_WIDTH + 1)
        n_dw   = Signal(11)
        n      = Signal(SIZE_WIDTH - LB + 1)
        s      = d.x0[:LB]
        m.d.comb += [
            d_span.eq(d_pad + d.len),
            n_dw.eq((d_span + 3) >> 2),
            n.eq((d_span + B - 1) >> LB),
        ]
        last_beat = j + 1 == n
        need_hi   = (s != 0) & (j + 1 < d.rows)
        virt      = d.skip & (j == 0)           # the first row is not in the FIFO: zeros
        have      = rcount >= 1 + need_hi - virt
        drop      = Mux(j == 0, ~bme, drop_reg)
        out_free  = ~tx.valid | tx.ready
        direct_ok = ~tx.valid                   # nothing waits in the output register
        fire      = d_valid & ~d.status_only & have & Mux(drop, direct_ok, out_free)
        st_only   = d_valid & d.status_only & direct_ok

        rows_left = d.rows - j
        with m.If(fire):
            m.d.comb += rpop.eq(Mux(last_beat, rows_left - d.keep_last, 1) - virt)
            m.d.sync += [j.eq(Mux(last_beat, 0, j + 1)), drop_reg.eq(drop)]
            with m.If(drop):
                m.d.sync += err_acc.eq(DmaError.BUS_MASTER_DISABLED)
        m.d.comb += to_builder.r_en.eq((fire & last_beat) | st_only)

        # The beat: bytes [s, s + B) of the two head rows.
        first_m = Signal(4)
        last_m  = Signal(4)
        end_b   = d_span[:2]
        m.d.comb += [
            first_m.eq((Const(0xF, 4) << d_pad)[:4]),
            last_m.eq(Mux(end_b == 0, 0xF, ~(Const(0xF, 4) << end_b)[:4])),
        ]
        hdr  = Signal(TlpHeader)
        high = d.addr[32:] != 0
        m.d.comb += [
            hdr.dw0.fmt_type.eq(Mux(high, FmtType.MWR64, FmtType.MWR32)),
            hdr.dw0.length.eq(n_dw[:10]),
            hdr.req.requester_id.eq(cfg.pcie_id),
            hdr.req.first_be.eq(Mux(n_dw == 1, first_m & last_m, first_m)),
            hdr.req.last_be.eq(Mux(n_dw == 1, 0, last_m)),
            hdr.req.dw2.eq(Mux(high, d.addr[32:], Cat(Const(0, 2), d.addr[2:32]))),
            hdr.req.dw3.eq(Mux(high, Cat(Const(0, 2), d.addr[2:32]), 0)),
        ]
        lanes_last = Signal(range(L + 1))
        m.d.comb += lanes_last.eq(n_dw - ((n - 1) << exact_log2(L)))
        keep = Mux(last_beat, ~(Const((1 << L) - 1, L) << lanes_last)[:L], (1 << L) - 1)

        req_end = last_beat & d.last
        end_err = Mux(drop, DmaError.BUS_MASTER_DISABLED, err_acc)
        out_st  = Signal()                      # the output beat ends a request
        out_st_client = Signal(CB)
        out_st_tag = Signal(8)
        out_st_err = Signal(DmaError)

        with m.If(tx.ready):
            m.d.sync += tx.valid.eq(0)
        with m.If(fire & ~drop):
            m.d.sync += [
                tx.valid.eq(1),
                tx.p.hdr.eq(hdr),
                tx.p.data.eq(Cat(Mux(virt, 0, rq[0]), Mux(virt, rq[0], rq[1]))
                             .bit_select(s << 3, W)),
                tx.p.keep.eq(keep),
                tx.p.sop.eq(j == 0),
                tx.p.eop.eq(last_beat),
                out_st.eq(req_end),
                out_st_client.eq(d.client),
                out_st_tag.eq(d.tag),
                out_st_err.eq(end_err),
            ]

        # Statuses, in request order: a request whose last beat went out, or that sent nothing
        # more (error, dropped) once nothing waits in the output register.
        m.d.sync += self.status.valid.eq(0)
        with m.If(tx.valid & tx.ready & out_st):
            m.d.sync += [
                self.status.valid.eq(1),
                self.status.p.client.eq(out_st_client),
                self.status.p.status.tag.eq(out_st_tag),
                self.status.p.status.error.eq(out_st_err),
            ]
        with m.If((fire & drop & req_end) | st_only):
            m.d.sync += [
                self.status.valid.eq(1),
                self.status.p.client.eq(d.client),
                self.status.p.status.tag.eq(d.tag),
                self.status.p.status.error.eq(Mux(st_only, d.err, end_err)),
            ]
        with m.If(fire & req_end):
            m.d.sync += err_acc.eq(DmaError.OK)

        m.d.comb += self.idle.eq(~cur_valid & (to_reader.level == 0) &
                                 (to_builder.level == 0) & ~tx.valid & ~self.status.valid)

        stats = self.stats

        def count(name, cond, amount=1):
            with m.If(cond):
                m.d.sync += stats[name].eq(stats[name] + amount)

        count("wr_requests", accept)
        count("wr_tlps", fire & ~drop & (j == 0))
        count("wr_bytes", fire & ~drop & (j == 0), d.len)
        count("wr_errors", self.status.valid & (self.status.p.status.error != DmaError.OK))

        return m
