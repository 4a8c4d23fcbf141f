# SPDX-License-Identifier: BSD-2-Clause
"""MSI-X: the vector table and Pending Bit Array in a BAR, and the interrupt messages.

PCIe Base 4.0 §6.1.4 and §7.7.2. The table (one :data:`~virtio_pcie.spec.pcie.MsixTableEntry`
per vector: message address, upper address, data, vector control) lives in a memory and is read
and written through the ``table`` register port; the PBA (one pending bit per vector) is read
through ``pba`` and ignores writes. Mask bits reset to 1, as the spec requires, and Message
Address bits [1:0] read 0.

A request on ``requests`` names a vector. While MSI-X is disabled requests are dropped (the
transport uses INTx then). Otherwise the vector's message is sent at once if it can be: the
vector is unmasked, the function is not masked (Function Mask), Bus Master Enable is set and
the function is in D0. If not, the vector's pending bit is set instead, and the message goes out
once all of these hold (a masked vector "fires on unmask", §6.1.4.5); sending clears the pending
bit. Several requests for one pending vector give one message. Disabling MSI-X clears every
pending bit.

Messages are memory writes of one dword: Message Data at Message Address (MWr32 when the upper
address is 0, else MWr64), requester ID the function's, without Relaxed Ordering so that they
stay behind the data writes they announce (§2.4.1).

A pending vector is found by a scan that looks at one vector per cycle, so delivery after an
unmask takes at most ``msix_vectors`` cycles; a request that can be sent at once is sent at once.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec.pcie import FmtType, MsixTableEntry, PciCommand, PmPowerState, TlpHeader, byte_offset
from ..tlp.signature import TlpSignature
from .interface import FunctionConfig, MsixRequestSignature
from .layout import FunctionLayout
from .register_bus import RegisterBusSignature

__all__ = ["MsixController"]

_ENTRY_BITS   = MsixTableEntry.size
_ENTRY_DWORDS = _ENTRY_BITS // 32
_DW_ADDR      = byte_offset(MsixTableEntry, "msg_addr") // 4
_DW_UPPER     = byte_offset(MsixTableEntry, "msg_upper_addr") // 4
_DW_DATA      = byte_offset(MsixTableEntry, "msg_data") // 4
_DW_CONTROL   = byte_offset(MsixTableEntry, "vector_control") // 4


class MsixController(wiring.Component):
    """MSI-X table, PBA and message generation.

    Parameters
    ----------
    layout : FunctionLayout
        Vector count and the table and PBA windows.
    data_width : int
        TLP data path width, in bits.

    Members
    -------
    table : In(RegisterBusSignature(...))
        The MSI-X table window.
    pba : In(RegisterBusSignature(...))
        The PBA window (read-only).
    requests : In(MsixRequestSignature())
        Vectors to signal; always ready.
    cfg : In(FunctionConfig)
        MSI-X Enable, Function Mask, Bus Master Enable, power state, requester ID.
    tx : Out(TlpSignature(data_width))
        Interrupt messages (MWr).
    """

    def __init__(self, *, layout, data_width):
        if not isinstance(layout, FunctionLayout):
            raise TypeError(f"layout must be a FunctionLayout, not {layout!r}")
        self._layout = layout
        self._data_width = data_width
        super().__init__({
            "table":    In(RegisterBusSignature(layout.windows["msix_table"].addr_width)),
            "pba":      In(RegisterBusSignature(layout.windows["msix_pba"].addr_width)),
            "requests": In(MsixRequestSignature()),
            "cfg":      In(FunctionConfig),
            "tx":       Out(TlpSignature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self._layout.msix_vectors
        cfg = self.cfg

        m.submodules.entries = entries = Memory(shape=_ENTRY_BITS, depth=n, init=[])
        wr     = entries.write_port(granularity=8)
        bus_rd = entries.read_port()
        msg_rd = entries.read_port()

        masked  = Signal(n, init=(1 << n) - 1)   # Vector Control Mask bits (reset: masked)
        pending = Signal(n)                      # the PBA

        # -- the table window --------------------------------------------------------------------
        table = self.table
        entry = Signal(range(max(n, 2 ** max(0, table.addr.shape().width - 4))))
        m.d.comb += entry.eq(table.addr[4:])
        in_range = entry < n
        dword = table.addr[2:4]
        read_busy = Signal()
        read_dword = Signal(2)
        read_entry = Signal.like(entry)
        read_valid = Signal()
        clear_mask = Signal(n)
        set_mask   = Signal(n)
        entry_bit  = Signal(n)          # one-hot decodes, each made once
        m.d.comb += entry_bit.eq(Const(1, n) << entry)
        with m.If(table.stb & table.we):
            m.d.comb += table.ack.eq(1)
            with m.If(in_range):
                with m.If(dword == _DW_CONTROL):
                    with m.If(table.sel[0]):
                        with m.If(table.w_data[0]):
                            m.d.comb += set_mask.eq(entry_bit)
                        with m.Else():
                            m.d.comb += clear_mask.eq(entry_bit)
                with m.Else():
                    # Message Address bits [1:0] are 0 (PCIe Base 4.0 §7.7.2.6).
                    value = Mux(dword == _DW_ADDR, Cat(Const(0, 2), table.w_data[2:]), table.w_data)
                    m.d.comb += [
                        wr.addr.eq(entry),
                        wr.data.eq(value.replicate(_ENTRY_DWORDS)),
                        wr.en.eq(table.sel << (4 * dword)),
                    ]
        with m.Elif(table.stb & ~read_busy):
            # Reads take a cycle through the memory's read port.
            m.d.sync += [read_busy.eq(1), read_dword.eq(dword), read_entry.eq(entry),
                         read_valid.eq(in_range)]
        with m.Elif(table.stb & read_busy):
            m.d.sync += read_busy.eq(0)
            m.d.comb += table.ack.eq(1)
            word = Signal(32)
            with m.Switch(read_dword):
                for i in range(_ENTRY_DWORDS):
                    with m.Case(i):
                        if i == _DW_CONTROL:
                            m.d.comb += word.eq(masked.bit_select(read_entry, 1))
                        else:
                            m.d.comb += word.eq(bus_rd.data[32 * i:32 * i + 32])
            m.d.comb += table.r_data.eq(Mux(read_valid, word, 0))
        m.d.comb += bus_rd.addr.eq(entry)

        # -- the PBA window (read-only) ----------------------------------------------------------
        pba = self.pba
        pba_dwords = -(-n // 32)
        padded = Cat(pending, Const(0, 32 * pba_dwords - n))
        m.d.comb += pba.ack.eq(pba.stb)
        with m.Switch(pba.addr[2:]):
            for i in range(pba_dwords):
                with m.Case(i):
                    m.d.comb += pba.r_data.eq(padded[32 * i:32 * i + 32])

        # -- sending -----------------------------------------------------------------------------
        can_send = Signal()
        m.d.comb += can_send.eq(cfg.msix_enable & ~cfg.msix_function_mask &
                                (cfg.command & PciCommand.BUS_MASTER).as_value().any() &
                                (cfg.power_state == PmPowerState.D0.value))
        req = self.requests
        m.d.comb += req.ready.eq(1)
        req_vector = req.payload.vector
        req_ok = req.valid & cfg.msix_enable & (req_vector < n)

        scan = Signal(range(n))
        scan_bit = Signal(n)
        req_bit = Signal(n)
        m.d.comb += [scan_bit.eq(Const(1, n) << scan), req_bit.eq(Const(1, n) << req_vector)]
        vector = Signal(range(n))
        set_pending = Signal(n)
        clear_pending = Signal(n)
        msg_addr = Signal(64)
        msg_data = Signal(32)
        with m.FSM(name="sender"):
            with m.State("Idle"):
                with m.If(req_ok & can_send & ~(masked & req_bit).any()):
                    # A request that can go at once: no pending bit.
                    m.d.sync += vector.eq(req_vector)
                    m.d.comb += clear_pending.eq(req_bit)
                    m.next = "Fetch"
                with m.Else():
                    with m.If(req_ok):
                        m.d.comb += set_pending.eq(req_bit)
                    with m.If(can_send & (pending & ~masked & scan_bit).any()):
                        m.d.sync += vector.eq(scan)
                        m.d.comb += clear_pending.eq(scan_bit)
                        m.next = "Fetch"
                    m.d.sync += scan.eq(Mux(scan == n - 1, 0, scan + 1))
            with m.State("Fetch"):
                with m.If(req_ok):
                    m.d.comb += set_pending.eq(req_bit)
                m.next = "Latch"
            with m.State("Latch"):
                with m.If(req_ok):
                    m.d.comb += set_pending.eq(req_bit)
                entry_view = MsixTableEntry(msg_rd.data)
                m.d.sync += [
                    msg_addr.eq(Cat(Const(0, 2), entry_view.msg_addr[2:],
                                    entry_view.msg_upper_addr)),
                    msg_data.eq(entry_view.msg_data),
                ]
                m.next = "Send"
            with m.State("Send"):
                with m.If(req_ok):
                    m.d.comb += set_pending.eq(req_bit)
                m.d.comb += self.tx.valid.eq(1)
                with m.If(self.tx.ready):
                    m.next = "Idle"
        m.d.comb += msg_rd.addr.eq(vector)

        with m.If(~cfg.msix_enable):
            m.d.sync += pending.eq(0)
        with m.Else():
            m.d.sync += pending.eq((pending & ~clear_pending) | set_pending)
        m.d.sync += masked.eq((masked & ~clear_mask) | set_mask)

        # The message: one dword of Message Data at Message Address (PCIe Base 4.0 §6.1.4.2).
        hdr = Signal(TlpHeader)
        upper = msg_addr[32:].any()
        m.d.comb += [
            hdr.dw0.fmt_type.eq(Mux(upper, FmtType.MWR64, FmtType.MWR32)),
            hdr.dw0.length.eq(1),
            hdr.req.first_be.eq(0xF),
            hdr.req.requester_id.eq(cfg.pcie_id),
            hdr.req.dw2.eq(Mux(upper, msg_addr[32:], msg_addr[:32])),
            hdr.req.dw3.eq(Mux(upper, msg_addr[:32], 0)),
            self.tx.p.hdr.eq(hdr),
            self.tx.p.data.eq(msg_data),
            self.tx.p.keep.eq(1),
            self.tx.p.sop.eq(1),
            self.tx.p.eop.eq(1),
        ]
        return m
