# SPDX-License-Identifier: BSD-2-Clause
"""Helpers that turn a register layout from :mod:`virtio_pcie.spec` into register-bus decode logic.

A register window is described by an :class:`amaranth.lib.data.StructLayout` (for example
:data:`~virtio_pcie.spec.virtio.VirtioPciCommonCfg`). The bus (see
:mod:`virtio_pcie.function.register_bus`) carries one dword per access with byte enables; these
helpers work out, from the layout alone, which bytes of a field an access touches and what the
field becomes, so that no byte offset is ever typed in a decoder:

* :func:`field_write` -- did a write touch the field, and the field's value with the written
  bytes merged into the old value (byte-granular, as PCI allows any naturally aligned access);
* :func:`field_touched` -- did an access (read or write) select any byte of the field;
* :func:`dword_mux` -- the read data of a dword-indexed window built from a view.
"""

from amaranth import Cat, Const, Mux
from amaranth.lib import data

from ..function.interface import MSIX_VECTOR_WIDTH
from ..spec.virtio import VIRTIO_MSI_NO_VECTOR, byte_offset, byte_size

__all__ = ["field_span", "field_write", "field_touched", "dword_mux", "ceil_log2",
           "feature_window", "QueueVector", "vector_read", "Decoded"]

#: An MSI-X vector as the transport stores it per event: NO_VECTOR when ``valid`` is 0.
QueueVector = data.StructLayout({
    "vector": MSIX_VECTOR_WIDTH,
    "valid":  1,
})


def ceil_log2(value):
    """Smallest ``n`` with ``2 ** n >= value``."""
    return max(0, (int(value) - 1).bit_length())


def field_span(layout, name, base=0):
    """``(first byte, byte count)`` of field ``name`` of ``layout`` placed at byte ``base``."""
    return base + byte_offset(layout, name), byte_size(layout[name].shape)


def field_write(layout, name, *, dword, sel, w_data, old, base=0):
    """Write decode of one field.

    Parameters
    ----------
    dword : Value
        Dword index of the access (bus ``addr`` without its two zero bits).
    sel, w_data : Value
        The access's byte enables and write data.
    old : Value
        The field's current value (its unselected bytes are kept).

    Returns
    -------
    (hit, merged)
        ``hit`` is 1 when the access selects at least one byte of the field; ``merged`` is the
        field's value after the write.
    """
    first, count = field_span(layout, name, base)
    old = old.as_value() if isinstance(old, data.View) else old
    hits, merged = [], []
    for i in range(count):
        byte = first + i
        lane = byte % 4
        lane_hit = (dword == byte // 4) & sel[lane]
        hits.append(lane_hit)
        merged.append(Mux(lane_hit, w_data[8 * lane:8 * lane + 8], old[8 * i:8 * i + 8]))
    return Cat(*hits).any(), Cat(*merged)


def field_touched(layout, name, *, dword, sel, base=0):
    """1 when an access at ``dword`` with byte enables ``sel`` selects a byte of the field."""
    first, count = field_span(layout, name, base)
    hits = [(dword == (first + i) // 4) & sel[(first + i) % 4] for i in range(count)]
    return Cat(*hits).any()


def dword_mux(view, dword):
    """Read data of dword ``dword`` of ``view`` (a :class:`~amaranth.lib.data.View` or value
    whose width is a multiple of 32); dwords past its end read 0."""
    value = view.as_value() if isinstance(view, data.View) else view
    count = len(value) // 32
    assert count * 32 == len(value), "register views must be a whole number of dwords"
    if count == 1:
        return Mux(dword == 0, value, 0)
    index = dword[:ceil_log2(count)]
    return Mux(dword < count, value.word_select(index, 32), 0)


def feature_window(value, select):
    """32-bit window ``select`` of a feature word ``value`` (0 past its end), as
    ``device_feature`` / ``driver_feature`` show it (virtio 1.2 §4.1.4.3)."""
    windows = len(value) // 32
    index = select[:max(1, ceil_log2(windows))]
    return Mux(select < windows, value.word_select(index, 32), 0)


def vector_read(vector):
    """A stored :data:`QueueVector` as its 16-bit register reads."""
    return Mux(vector.valid, vector.vector, VIRTIO_MSI_NO_VECTOR)


class Decoded:
    """What a register decoder says about the access being served.

    ``stall``: do not complete it in this cycle; ``r_data``: its read data; ``device``: it
    addresses the device-specific configuration, at byte ``device_addr`` of it;
    ``wait_config``: its side effects send a queue configuration to the engine, and the access
    is acknowledged only once the engine has applied it (a legacy driver frees a ring as soon as
    its ``QUEUE_PFN = 0`` write completes).
    """

    def __init__(self, *, stall=Const(0), r_data=Const(0, 32), device=Const(0), device_addr=0,
                 wait_config=Const(0)):
        self.stall       = stall
        self.r_data      = r_data
        self.device      = device
        self.device_addr = device_addr
        self.wait_config = wait_config
