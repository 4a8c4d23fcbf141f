# SPDX-License-Identifier: BSD-2-Clause
"""The TLP stream: the one definition of a transaction-layer packet on an internal bus.

A TLP travels as one or more *beats* of a :class:`amaranth.lib.stream.Signature` whose payload is
:func:`TlpBeat`. Four such streams connect a PCI Express function to the link (or to a vendor
hard-IP adapter), named by PCIe role as in verilog-pcie:

============  ===========  ====================================================================
stream        direction    carries
============  ===========  ====================================================================
``rx_req``    host→device  requests the function completes: CfgRd0/CfgWr0, MRd/MWr, IORd/IOWr,
                           messages
``tx_cpl``    device→host  completions for ``rx_req`` requests (Cpl/CplD)
``tx_req``    device→host  requests the function issues: MRd/MWr (DMA, MSI-X), Msg (INTx)
``rx_cpl``    host→device  completions for ``tx_req`` reads
============  ===========  ====================================================================

Transfer rules (those of :mod:`amaranth.lib.stream`, Amaranth ``docs/stdlib/stream.rst``):

1. A beat is transferred on a cycle where both ``valid`` and ``ready`` are high.
2. Once ``valid`` is asserted, the producer keeps it and the payload unchanged until the beat is
   transferred.
3. The producer must not wait for ``ready`` before asserting ``valid``.
4. The consumer may wait for ``valid`` before asserting ``ready``.

Beat rules:

* ``hdr`` is valid on the beat with ``sop`` set (the first beat) and ignored on others. It is
  the :data:`~virtio_pcie.spec.pcie.TlpHeader` (4 DW, DW0 in the low bits); unused header dwords
  of a 3-DW header are zero.
* Payload dwords are packed from lane 0 of the first beat: payload dword ``i`` is in beat
  ``i // (data_width // 32)``, lane ``i % (data_width // 32)``, lane ``k`` being
  ``data[32*k:32*k+32]``; bytes within a dword are in address order, lowest in the low byte.
* ``keep`` has one bit per dword lane and marks lanes carrying payload. Valid lanes are
  contiguous from lane 0; every beat but the last is full. A TLP without payload is exactly one
  beat with ``sop``, ``eop`` and ``keep == 0``.
* ``eop`` marks the last beat. A TLP with ``n`` payload dwords takes
  ``max(1, ceil(n / (data_width // 32)))`` beats.
* ``bar_id`` (``rx_req`` only) is the BAR the request hit, when a hard IP decodes BARs; a function
  that owns its configuration space decodes BARs itself and ignores it.
* ``func_num`` is the function number for multi-function hard IPs, 0 otherwise.
* ``error`` flags a TLP the link layer knows to be bad (:class:`TlpError`); it is meaningful on
  the ``eop`` beat. Receivers drop such TLPs.
"""

from amaranth.lib import data, enum, stream

from ..spec.pcie import TlpHeader

__all__ = ["DATA_WIDTHS", "TlpError", "TlpBeat", "TlpSignature", "dwords_per_beat"]

#: Data path widths the core supports, in bits.
DATA_WIDTHS = (64, 128, 256)


class TlpError(enum.Flag, shape=4):
    DISCONTINUE = 1     # the sender aborted the TLP part way (truncated)
    ECRC        = 2     # ECRC check failed
    MALFORMED   = 4     # the link layer found the TLP malformed


def _check_width(data_width):
    if data_width not in DATA_WIDTHS:
        raise ValueError(f"TLP data width must be one of {DATA_WIDTHS}, not {data_width!r}")


def dwords_per_beat(data_width):
    _check_width(data_width)
    return data_width // 32


def TlpBeat(data_width):
    """Payload layout of one TLP stream beat for a ``data_width``-bit data path."""
    _check_width(data_width)
    return data.StructLayout({
        "hdr":      TlpHeader,
        "data":     data_width,
        "keep":     data_width // 32,
        "sop":      1,
        "eop":      1,
        "bar_id":   3,
        "func_num": 8,
        "error":    TlpError,
    })


def TlpSignature(data_width):
    """Stream signature of TLP beats; see the module documentation for the transfer rules."""
    return stream.Signature(TlpBeat(data_width))
