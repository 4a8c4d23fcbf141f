# SPDX-License-Identifier: BSD-2-Clause
"""The local side of the DMA engine: how the virtqueue engine and the devices move data.

A *client* (the virtqueue engine, a device back-end) owns two RAMs of the TLP data path width:
a *read buffer* that the DMA read engine fills with data fetched from host memory, and a *write
buffer* that the DMA write engine reads from when writing to host memory. A client asks for a
transfer with a request stream and learns its end from a status stream::

                 rd_req ──►┌────────────┐── MRd ──► tx_req
    client       rd_ram ◄──│ DMA engine │◄─ CplD ── rx_cpl
    (owns RAMs)  wr_req ──►│            │── MWr ──► tx_req
                 wr_ram ◄─►└────────────┘
                 rd_status / wr_status ◄──

Requests (:data:`DmaReadRequest`, :data:`DmaWriteRequest`) name a host byte address, a byte
length (1 to 65535), a byte address in the client's buffer and a client-chosen ``tag`` that comes
back in the status. Any host and buffer alignment is allowed; the engine realigns.

* **Reads**: data lands in the read buffer through ``rd_ram`` (the engine drives it; writes are
  always accepted, one beat per cycle, with byte enables). Completions may arrive in any order
  across PCIe tags and split at the read completion boundary; bytes land at their place
  directly, so the buffer never needs reordering. The status comes when every byte of the
  request has landed (or on the first error).
* **Writes**: the engine reads the write buffer through ``wr_ram`` (address in one cycle, data
  the next; no back-pressure) and issues MWr TLPs split at Max_Payload_Size and 4 KiB. With
  ``imm_en`` set, the data is instead the low ``len`` bytes of ``imm_data`` (``len`` <= 8) and
  the buffer is not read: used-ring entries and status bytes need no buffer round trip.
  Write statuses come back **in issue order**, each once the request's last TLP has been handed
  to ``tx_req``. Posted writes do not pass each other on the link, so a client that issues
  something after seeing a write's status (a used-ring index, an MSI-X message) is ordered
  after that write's data.

Statuses are ``always_ready`` streams: a client must accept one in any cycle. ``error`` is a
:class:`DmaError`; after an error the engine keeps working.

Buffer addresses and ports: ``ram_addr`` in requests is a byte address; the RAM ports carry the
beat address (``ram_addr // (data_width // 8)``), ``DMA_RAM_ADDR_WIDTH`` bits of byte address in
all. A client whose buffers are smaller ignores the upper address bits.
"""

from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..tlp.signature import DATA_WIDTHS

__all__ = [
    "DMA_LEN_WIDTH", "DMA_TAG_WIDTH", "DMA_RAM_ADDR_WIDTH", "DmaError",
    "DmaReadRequest", "DmaWriteRequest", "DmaStatus",
    "DmaRamWriteSignature", "DmaRamReadSignature", "DmaClientSignature",
]

#: Bits of a transfer length in bytes (so at most 65535 bytes per request).
DMA_LEN_WIDTH      = 16
#: Bits of the client-chosen request tag.
DMA_TAG_WIDTH      = 8
#: Bits of a byte address in a client's buffer (64 KiB).
DMA_RAM_ADDR_WIDTH = 16


class DmaError(enum.Enum, shape=4):
    """How a DMA request ended."""
    OK                  = 0
    UNSUPPORTED_REQUEST = 1   # a completion with UR status
    COMPLETER_ABORT     = 2   # a completion with CA status
    POISONED            = 3   # a completion with EP set
    TIMEOUT             = 4   # no (complete) answer within the completion timeout
    MALFORMED           = 5   # a completion that did not fit the request
    BUS_MASTER_DISABLED = 6   # Bus Master Enable was clear; nothing was issued
    BAD_REQUEST         = 7   # length 0, or the range wraps past 2**64


DmaReadRequest = data.StructLayout({
    "host_addr": 64,
    "ram_addr":  DMA_RAM_ADDR_WIDTH,
    "len":       DMA_LEN_WIDTH,
    "tag":       DMA_TAG_WIDTH,
})

DmaWriteRequest = data.StructLayout({
    "host_addr": 64,
    "ram_addr":  DMA_RAM_ADDR_WIDTH,
    "len":       DMA_LEN_WIDTH,
    "tag":       DMA_TAG_WIDTH,
    "imm_en":    1,
    "imm_data":  64,
})

DmaStatus = data.StructLayout({
    "tag":   DMA_TAG_WIDTH,
    "error": DmaError,
})


def _check(data_width):
    if data_width not in DATA_WIDTHS:
        raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")


def _beat_addr_width(data_width):
    return DMA_RAM_ADDR_WIDTH - (data_width // 8).bit_length() + 1


class DmaRamWriteSignature(wiring.Signature):
    """Write port of a client read buffer, driven by the DMA engine (``Out`` = engine side).

    ``addr`` is a beat address; the write happens in every cycle ``en`` is high, on the bytes
    selected by ``be``.
    """

    def __init__(self, data_width):
        _check(data_width)
        self._data_width = data_width
        super().__init__({
            "addr": Out(_beat_addr_width(data_width)),
            "data": Out(data_width),
            "be":   Out(data_width // 8),
            "en":   Out(1),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other._data_width == self._data_width

    def __repr__(self):
        return f"DmaRamWriteSignature({self._data_width})"


class DmaRamReadSignature(wiring.Signature):
    """Read port of a client write buffer, driven by the DMA engine (``Out`` = engine side).

    ``data`` holds the beat at ``addr`` in the cycle after one where ``en`` was high, and keeps
    it until the next such cycle (a synchronous RAM read port with read enable).
    """

    def __init__(self, data_width):
        _check(data_width)
        self._data_width = data_width
        super().__init__({
            "addr": Out(_beat_addr_width(data_width)),
            "en":   Out(1),
            "data": In(data_width),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other._data_width == self._data_width

    def __repr__(self):
        return f"DmaRamReadSignature({self._data_width})"


class DmaClientSignature(wiring.Signature):
    """A client's port on the DMA engine (``Out`` = client side; the engine has ``In`` ports).

    Members
    -------
    rd_req : Out(stream.Signature(DmaReadRequest))
    rd_status : In(stream.Signature(DmaStatus, always_ready=True))
    rd_ram : In(DmaRamWriteSignature(data_width))
        The engine writes the client's read buffer.
    wr_req : Out(stream.Signature(DmaWriteRequest))
    wr_status : In(stream.Signature(DmaStatus, always_ready=True))
    wr_ram : In(DmaRamReadSignature(data_width))
        The engine reads the client's write buffer.
    """

    def __init__(self, data_width):
        _check(data_width)
        self._data_width = data_width
        super().__init__({
            "rd_req":    Out(stream.Signature(DmaReadRequest)),
            "rd_status": In(stream.Signature(DmaStatus, always_ready=True)),
            "rd_ram":    In(DmaRamWriteSignature(data_width)),
            "wr_req":    Out(stream.Signature(DmaWriteRequest)),
            "wr_status": In(stream.Signature(DmaStatus, always_ready=True)),
            "wr_ram":    In(DmaRamReadSignature(data_width)),
        })

    @property
    def data_width(self):
        return self._data_width

    def __eq__(self, other):
        return type(other) is type(self) and other._data_width == self._data_width

    def __repr__(self):
        return f"DmaClientSignature({self._data_width})"
