# SPDX-License-Identifier: BSD-2-Clause
"""The function's configuration space, generated from its :class:`FunctionLayout`.

Every field of :attr:`FunctionLayout.config_fields` becomes hardware here, by its access kind:

* ``RO``: a constant in the read-back;
* ``RW``: a register with its reset value; writes honour byte enables, and a write of a value
  outside the field's ``legal`` set leaves it unchanged (e.g. PMCSR PowerState accepts only D0
  and D3hot, PCI PM 1.2 §3.2.4);
* ``RW1C``: a status bit set by an event and cleared by writing 1 (PCIe Base 4.0 §7.4);
* ``RO/HW``: a read-only view of hardware state (Status.Interrupt Status, the ``intx_status``
  input);
* ``RW/window``: ``pci_cfg_data`` of the virtio PCI_CFG capability. A configuration write to it
  performs a ``cap.length``-byte write of its first bytes at (``cap.bar``, ``cap.offset``); a read
  performs a ``cap.length``-byte read there and returns the bytes in ``pci_cfg_data`` (virtio 1.2
  §4.1.4.9). The access goes through the same register fabric as memory requests, so reading ISR
  this way clears it. A length other than 1, 2 or 4, an offset not a multiple of the length, a BAR
  index above 5 or an offset beyond the largest BAR reads 0 and drops writes, and never hangs.

Everything else, reserved bytes and the extended space from 0x100 (whose first dword 0
terminates the extended capability chain, PCIe Base 4.0 §7.6.2), reads 0 and ignores writes.

The register port is dword-addressed with byte enables (a :class:`RegisterBusSignature` of 12
bits). Plain accesses take two cycles (``ack`` in the second); window accesses wait for the
fabric. In ``"full"`` mode the component also presents what the host programmed as a
:data:`FunctionConfig`, the BAR base addresses for the completer's decoder, and takes the events
that set the status bits; in ``"ext"`` mode it holds only the virtio capabilities.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..spec.pcie import PciCommand, PcieId
from .interface import FunctionConfig, FunctionEvents
from .layout import Access, FunctionLayout
from .register_bus import RegisterBusSignature

__all__ = ["ConfigSpace", "RequestEvents", "IdCapture", "CONFIG_ADDR_WIDTH"]

#: Address width of the configuration register port (4 KiB, PCIe Base 4.0 §7.2.2).
CONFIG_ADDR_WIDTH = 12

#: One-cycle strobes from the completer about the requests it received.
RequestEvents = data.StructLayout({
    "unsupported_nonposted": 1,   # answered a non-posted request with UR
    "unsupported_posted":    1,   # dropped a posted request nothing supports
    "poisoned":              1,   # received a poisoned request (EP set)
    "malformed":             1,   # received a malformed TLP and dropped it
})

#: A Type 0 Configuration Write's target ID, to capture (PCIe Base 4.0 §2.2.6.2).
IdCapture = data.StructLayout({
    "valid": 1,
    "id":    PcieId,
})


class ConfigSpace(wiring.Component):
    """Type-0 configuration space (or, in ``"ext"`` mode, the virtio capabilities only).

    Parameters
    ----------
    layout : FunctionLayout
        Where every field is and how it behaves.

    Members
    -------
    port : In(RegisterBusSignature(12))
        Configuration accesses: dword address (byte address, bits [1:0] zero), byte enables.
    fabric : Out(RegisterBusSignature(layout.fabric_addr_width))
        The PCI_CFG window's accesses to BAR space.
    cfg : Out(FunctionConfig)
        (``"full"`` mode) What the host programmed.
    bar_base : Out(data.ArrayLayout(64, 6))
        (``"full"`` mode) Base address of each BAR (a 64-bit BAR's in its lower index).
    intx_status : In(1)
        (``"full"`` mode) The INTx level, shown as Status.Interrupt Status.
    events : In(FunctionEvents)
        (``"full"`` mode) Status events from the requester side of the core.
    request_events : In(RequestEvents)
        (``"full"`` mode) Status events from the completer.
    id_capture : In(IdCapture)
        (``"full"`` mode) Bus and device number from a Configuration Write.
    """

    def __init__(self, *, layout):
        if not isinstance(layout, FunctionLayout):
            raise TypeError(f"layout must be a FunctionLayout, not {layout!r}")
        self._layout = layout
        members = {
            "port":   In(RegisterBusSignature(CONFIG_ADDR_WIDTH)),
            "fabric": Out(RegisterBusSignature(layout.fabric_addr_width)),
        }
        if layout.config_mode == "full":
            members.update({
                "cfg":            Out(FunctionConfig),
                "bar_base":       Out(data.ArrayLayout(64, 6)),
                "intx_status":    In(1),
                "events":         In(FunctionEvents),
                "request_events": In(RequestEvents),
                "id_capture":     In(IdCapture),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        layout = self._layout
        fields = layout.config_fields
        full = layout.config_mode == "full"
        port = self.port

        # -- storage -----------------------------------------------------------------------------
        regs = {}
        for f in fields:
            if f.access in (Access.RW, Access.RW1C, Access.WINDOW):
                regs[f.name] = Signal(f.width, init=f.value, name=f.name.replace(".", "__"))

        def reg(name):
            return regs[name] if name in regs else Const(0, 1)

        hw = {}
        if full:
            hw["header.status.interrupt_status"] = self.intx_status

        # -- read-back ---------------------------------------------------------------------------
        dword = Signal(CONFIG_ADDR_WIDTH - 2)
        m.d.comb += dword.eq(port.addr[2:])
        read_value = Signal(32)
        by_dword = {}
        for f in fields:
            by_dword.setdefault(f.dword, []).append(f)
        with m.Switch(dword):
            for index, group in sorted(by_dword.items()):
                value = 0
                const = 0
                for f in group:
                    if f.access == Access.RO:
                        const |= f.value << f.shift
                    elif f.access == Access.HW:
                        value = value | (hw[f.name].as_unsigned() << f.shift)
                    else:
                        value = value | (regs[f.name].as_unsigned() << f.shift)
                with m.Case(index):
                    m.d.comb += read_value.eq(value | const)

        # -- the PCI_CFG window (virtio 1.2 §4.1.4.9) --------------------------------------------
        window = next((f for f in fields if f.access == Access.WINDOW), None)
        is_window = Signal()
        win_valid = Signal()
        win_addr  = Signal(layout.fabric_addr_width)
        win_sel   = Signal(4)
        win_shift = Signal(2)
        win_wdata = Signal(32)
        win_rdata = Signal(32)
        if window is not None:
            prefix = window.name.rsplit(".", 1)[0]
            w_bar    = regs[f"{prefix}.cap.bar"]
            w_offset = regs[f"{prefix}.cap.offset"]
            w_length = regs[f"{prefix}.cap.length"]
            w_data   = regs[window.name]
            bits = layout.bar_addr_bits
            m.d.comb += [
                is_window.eq(dword == window.dword),
                win_shift.eq(w_offset[:2]),
                win_addr.eq(Cat(Const(0, 2), w_offset[2:bits], w_bar[:3])),
            ]
            aligned = Signal()
            with m.Switch(w_length):
                with m.Case(1):
                    m.d.comb += [aligned.eq(1), win_sel.eq(0b0001 << w_offset[:2])]
                with m.Case(2):
                    m.d.comb += [aligned.eq(~w_offset[0]), win_sel.eq(0b0011 << w_offset[:2])]
                with m.Case(4):
                    m.d.comb += [aligned.eq(w_offset[:2] == 0), win_sel.eq(0b1111)]
            m.d.comb += win_valid.eq(aligned & (w_bar < 6) & (w_offset[bits:] == 0))
            m.d.comb += win_wdata.eq(w_data << (win_shift * 8))
            length_mask = Signal(32)
            with m.Switch(w_length):
                with m.Case(1):
                    m.d.comb += length_mask.eq(0x000000FF)
                with m.Case(2):
                    m.d.comb += length_mask.eq(0x0000FFFF)
                with m.Default():
                    m.d.comb += length_mask.eq(0xFFFFFFFF)
            m.d.comb += win_rdata.eq((self.fabric.r_data >> (win_shift * 8)) & length_mask)

        # -- access sequencing -------------------------------------------------------------------
        r_data   = Signal(32)
        do_write = Signal()
        m.d.comb += port.r_data.eq(r_data)
        with m.FSM(name="access"):
            with m.State("Idle"):
                with m.If(port.stb):
                    with m.If(is_window & port.sel.any()):
                        # Merge written bytes into pci_cfg_data first: the BAR write uses them.
                        with m.If(port.we):
                            m.d.sync += w_data.eq(self._merge(port, window, w_data))
                        with m.If(win_valid):
                            m.next = "Window"
                        with m.Else():
                            with m.If(~port.we):
                                m.d.sync += [w_data.eq(0), r_data.eq(0)]
                            m.next = "Ack"
                    with m.Else():
                        m.d.sync += r_data.eq(read_value)
                        m.next = "Ack"
            with m.State("Window"):
                m.d.comb += [
                    self.fabric.stb.eq(1),
                    self.fabric.addr.eq(win_addr),
                    self.fabric.sel.eq(win_sel),
                    self.fabric.we.eq(port.we),
                    self.fabric.w_data.eq(win_wdata),
                ]
                with m.If(self.fabric.ack):
                    with m.If(~port.we):
                        m.d.sync += [w_data.eq(win_rdata), r_data.eq(win_rdata)]
                    m.next = "Ack"
            with m.State("Ack"):
                m.d.comb += [port.ack.eq(1), do_write.eq(port.we)]
                m.next = "Idle"

        # -- writes ------------------------------------------------------------------------------
        sets = self._event_sets(m, regs) if full else {}
        for f in fields:
            if f.access not in (Access.RW, Access.RW1C):
                continue
            r = regs[f.name]
            hit = do_write & (dword == f.dword)
            if f.access == Access.RW:
                new = self._merge(port, f, r)
                if f.legal is not None:
                    legal = Signal(name=f"legal_{f.name.replace('.', '__')}")
                    m.d.comb += legal.eq(Cat(*(new == v for v in f.legal)).any())
                    hit = hit & legal
                with m.If(hit):
                    m.d.sync += r.eq(new)
            else:
                clear = Signal(f.width, name=f"clear_{f.name.replace('.', '__')}")
                with m.If(hit):
                    m.d.comb += clear.eq(self._written_ones(port, f))
                # An event in the same cycle as a clear wins: no event is lost.
                m.d.sync += r.eq((r & ~clear) | sets.get(f.name, 0))

        if full:
            self._outputs(m, regs)
        return m

    @staticmethod
    def _lanes(f):
        """(lane, low bit, high bit) of each byte lane a field occupies, bits within the dword."""
        for lane in range(4):
            lo = max(f.shift, 8 * lane)
            hi = min(f.shift + f.width, 8 * lane + 8)
            if lo < hi:
                yield lane, lo, hi

    def _merge(self, port, f, old):
        """``old`` with the bytes of the field that the write selects replaced."""
        return Cat(*(Mux(port.sel[lane], port.w_data[lo:hi], old[lo - f.shift:hi - f.shift])
                     for lane, lo, hi in self._lanes(f)))

    def _written_ones(self, port, f):
        return Cat(*(Mux(port.sel[lane], port.w_data[lo:hi], 0)
                     for lane, lo, hi in self._lanes(f)))

    def _event_sets(self, m, regs):
        """What sets each RW1C bit (PCIe Base 4.0 §7.5.1.1.4, §7.5.3.5, §6.2)."""
        ev = self.events
        req = self.request_events
        perr = regs["header.command.parity_error_resp"]
        sets = {
            "header.status.signaled_target_abort":    ev.signaled_target_abort,
            "header.status.received_target_abort":    ev.received_target_abort,
            "header.status.received_master_abort":    ev.received_master_abort,
            # Master Data Parity Error only with Parity Error Response enabled; Detected Parity
            # Error for every poisoned TLP received, completion or request.
            "header.status.master_data_parity_error": ev.master_data_parity_error & perr,
            "header.status.detected_parity_error":    ev.master_data_parity_error | req.poisoned,
            "pcie.dev_status.ur_detected": (ev.unsupported_request | req.unsupported_nonposted
                                            | req.unsupported_posted),
            # A UR completion for a non-posted request is an advisory non-fatal error, logged as
            # correctable (§6.2.3.2.4.1); a dropped posted request is non-fatal, as is a
            # poisoned request; a malformed TLP is fatal (§6.2.7 default severities).
            "pcie.dev_status.correctable_error_detected": req.unsupported_nonposted,
            "pcie.dev_status.nonfatal_error_detected":    req.unsupported_posted | req.poisoned,
            "pcie.dev_status.fatal_error_detected":       req.malformed,
        }
        return {name: value for name, value in sets.items() if name in regs}

    def _outputs(self, m, regs):
        layout = self._layout
        cfg = self.cfg

        def field(name):
            return regs[name] if name in regs else Const(0, 1)

        pcie_id = Signal(PcieId)
        with m.If(self.id_capture.valid):
            m.d.sync += pcie_id.eq(self.id_capture.id)
        command = 0
        for bit in PciCommand:
            name = f"header.command.{bit.name.lower()}"
            if name in regs:
                command = command | (regs[name].as_unsigned() << (bit.value.bit_length() - 1))
        m.d.comb += [
            cfg.pcie_id.eq(pcie_id),
            cfg.command.eq(command),
            cfg.max_payload_size.eq(field("pcie.dev_ctrl.max_payload_size")),
            cfg.max_read_request_size.eq(field("pcie.dev_ctrl.max_read_request_size")),
            cfg.extended_tag.eq(field("pcie.dev_ctrl.extended_tag")),
            cfg.rcb_128.eq(field("pcie.link_ctrl.rcb")),
            cfg.msix_enable.eq(field("msix.message_control.enable")),
            cfg.msix_function_mask.eq(field("msix.message_control.function_mask")),
            cfg.power_state.eq(field("pm.pmcsr.power_state")),
        ]
        for bar in layout.bars:
            low = bar.size_bits
            parts = [Const(0, low), regs[f"header.bar.{bar.index}.address"]]
            if bar.is_64bit:
                parts.append(regs[f"header.bar.{bar.index + 1}.address"])
            m.d.comb += self.bar_base[bar.index].eq(Cat(*parts))
