# SPDX-License-Identifier: BSD-2-Clause
"""The internal register bus: how the completer (and the PCI_CFG window) reach register blocks.

Every structure a host maps through a BAR (virtio common configuration, ISR, device
configuration, notify doorbells, the MSI-X table and PBA, the legacy I/O header) is a *register
block* with a :class:`RegisterBusSignature` target port covering its window. The function's
completer turns memory and I/O requests into one bus access per dword.

Transfer rules (initiator's view; a target port is ``In(RegisterBusSignature(...))``):

1. The initiator asserts ``stb`` with ``addr``, ``sel``, ``we`` and ``w_data`` and holds all of
   them unchanged until the cycle in which the target asserts ``ack``.
2. The target asserts ``ack`` for exactly one cycle per access, in the first cycle of ``stb`` at
   the earliest (a combinational ``ack`` is allowed) and after any number of cycles at the latest.
   A target must never leave an access without ``ack``: accesses it does not implement are
   acknowledged, write nothing and read zero.
3. For reads, ``r_data`` is valid in the ``ack`` cycle. Bytes not selected by ``sel`` are
   don't-care for the initiator.
4. Read side effects (ISR read-to-clear) and writes take effect exactly once, in the ``ack``
   cycle, and only on the bytes selected by ``sel``.
5. ``addr`` is the byte address within the target's window with bits [1:0] zero; ``sel`` has
   one bit per byte of the dword (bit 0 = lowest address).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterBusSignature"]


class RegisterBusSignature(wiring.Signature):
    """Signature of a register bus port addressing a window of ``2 ** addr_width`` bytes.

    Members
    -------
    addr : Out(addr_width)
        Byte address in the window, dword aligned.
    sel : Out(4)
        Byte enables.
    we : Out(1)
        Write (1) or read (0).
    w_data : Out(32)
        Write data.
    stb : Out(1)
        Access request, held until ``ack``.
    r_data : In(32)
        Read data, valid with ``ack``.
    ack : In(1)
        The access is done.
    """

    def __init__(self, addr_width):
        if not isinstance(addr_width, int) or addr_width < 2:
            raise ValueError(f"addr_width must be an integer of at least 2, not {addr_width!r}")
        self._addr_width = addr_width
        super().__init__({
            "addr":   Out(addr_width),
            "sel":    Out(4),
            "we":     Out(1),
            "w_data": Out(32),
            "stb":    Out(1),
            "r_data": In(32),
            "ack":    In(1),
        })

    @property
    def addr_width(self):
        return self._addr_width

    def __eq__(self, other):
        return type(other) is type(self) and other._addr_width == self._addr_width

    def __repr__(self):
        return f"RegisterBusSignature({self._addr_width})"
