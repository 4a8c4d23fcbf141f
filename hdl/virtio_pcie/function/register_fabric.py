# SPDX-License-Identifier: BSD-2-Clause
"""Routes register-bus accesses from several initiators to the register blocks of an address map.

The function's internal register accesses (memory and I/O requests from the completer, and the
virtio PCI_CFG window of configuration space) address BAR space as one *fabric address*,
``bar << bar_addr_bits | offset`` (see :class:`~virtio_pcie.function.layout.FunctionLayout`).
This component arbitrates between the initiators (round-robin, one whole access at a time) and
decodes the granted access to the window that contains it. Accesses that hit no window are
acknowledged at once, write nothing and read zero, as the register bus rules require.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .register_bus import RegisterBusSignature

__all__ = ["RegisterFabric"]


class RegisterFabric(wiring.Component):
    """An arbiter and address decoder between register-bus initiators and targets.

    Parameters
    ----------
    addr_width : int
        Width of the initiators' address.
    initiators : int
        Number of initiator ports.
    windows : list of (name, base, size)
        Targets: ``size`` bytes (a power of two) at ``base`` (a multiple of ``size``) go to the
        target port ``name``, whose address is the offset in the window.

    Members
    -------
    initiator : In(RegisterBusSignature(addr_width)).array(initiators)
        Initiator ports. An initiator waits while another one's access is in progress.
    <name> : Out(RegisterBusSignature(log2(size)))
        One target port per window.
    """

    def __init__(self, *, addr_width, initiators, windows):
        if not isinstance(initiators, int) or initiators < 1:
            raise ValueError(f"initiators must be a positive integer, not {initiators!r}")
        members = {"initiator": In(RegisterBusSignature(addr_width)).array(initiators)}
        self._windows = []
        for name, base, size in windows:
            if size < 4 or size & (size - 1) or base % size or base + size > 1 << addr_width:
                raise ValueError(f"window {name!r} ({size:#x} bytes at {base:#x}) must be a "
                                 f"naturally aligned power of two of at least 4 bytes inside "
                                 f"the {addr_width}-bit address space")
            if name in members:
                raise ValueError(f"window name {name!r} is used twice or reserved")
            members[name] = Out(RegisterBusSignature(size.bit_length() - 1))
            self._windows.append((name, base, size))
        self._addr_width = addr_width
        self._initiators = initiators
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = self._initiators

        # -- arbitration: a grant lasts from stb to ack ------------------------------------------
        busy  = Signal()
        owner = Signal(range(n))
        last  = Signal(range(n), init=n - 1)
        pick  = Signal(range(n))
        # Round-robin: the first requesting initiator after the last one served.
        for k in reversed(range(n)):
            for j in reversed(range(n)):
                candidate = (k + 1 + j) % n
                with m.If((last == k) & self.initiator[candidate].stb):
                    m.d.comb += pick.eq(candidate)
        sel = Signal(range(n))
        m.d.comb += sel.eq(Mux(busy, owner, pick))

        # The granted access.
        addr   = Signal(self._addr_width)
        be     = Signal(4)
        we     = Signal()
        w_data = Signal(32)
        stb    = Signal()
        r_data = Signal(32)
        ack    = Signal()
        bus = self.initiator
        with m.Switch(sel):
            for k in range(n):
                with m.Case(k):
                    m.d.comb += [
                        addr.eq(bus[k].addr), be.eq(bus[k].sel), we.eq(bus[k].we),
                        w_data.eq(bus[k].w_data), stb.eq(bus[k].stb),
                        bus[k].ack.eq(ack), bus[k].r_data.eq(r_data),
                    ]

        with m.If(stb & ~ack):
            m.d.sync += [busy.eq(1), owner.eq(sel)]
        with m.If(stb & ack):
            m.d.sync += [busy.eq(0), last.eq(sel)]

        # -- address decode ----------------------------------------------------------------------
        hits = []
        for name, base, size in self._windows:
            port = getattr(self, name)
            bits = size.bit_length() - 1
            hit = Signal(name=f"hit_{name}")
            hits.append(hit)
            m.d.comb += hit.eq(addr[bits:] == (base >> bits))
            m.d.comb += [
                port.addr.eq(addr[:bits]),
                port.sel.eq(be),
                port.we.eq(we),
                port.w_data.eq(w_data),
                port.stb.eq(stb & hit),
            ]
            with m.If(hit):
                m.d.comb += [ack.eq(port.ack), r_data.eq(port.r_data)]
        # An access that hits no window is acknowledged at once and reads zero.
        any_hit = Signal()
        m.d.comb += any_hit.eq(Cat(*hits).any() if hits else 0)
        with m.If(stb & ~any_hit):
            m.d.comb += ack.eq(1)
        return m
