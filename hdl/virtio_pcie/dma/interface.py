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
  request has landed, or after an error once no more of its data can land: the engine writes
  nothing into a request's buffer range after its status, so the client may reuse the range at
  once. (Read statuses come in completion order, not request order.)
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
    "client_index_width", "DmaRoutedReadRequest", "DmaRoutedWriteRequest", "DmaRoutedStatus",
    "DmaStatistics",
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


# ---------------------------------------------------------------------------------------------
# Between the DMA engine's own blocks: requests and statuses tagged with the client they belong
# to (the arbiters add the index, the engines carry it through, the status router consumes it).
# ---------------------------------------------------------------------------------------------

def client_index_width(clients):
    """Bits of a client index for ``clients`` clients (at least 1)."""
    if not isinstance(clients, int) or clients < 1:
        raise ValueError(f"clients must be a positive integer, not {clients!r}")
    return max(1, (clients - 1).bit_length())


def DmaRoutedReadRequest(clients):
    return data.StructLayout({"client": client_index_width(clients), "req": DmaReadRequest})


def DmaRoutedWriteRequest(clients):
    return data.StructLayout({"client": client_index_width(clients), "req": DmaWriteRequest})


def DmaRoutedStatus(clients):
    return data.StructLayout({"client": client_index_width(clients), "status": DmaStatus})


#: Statistics counters of the DMA engine (each wraps at 2**32). Read side: ``rd_requests``
#: accepted, ``rd_tlps`` MRd issued, ``rd_bytes`` requested by them, ``rd_completions`` received,
#: ``rd_errors`` requests that ended with an error, ``rd_timeouts`` PCIe tags that timed out,
#: ``cpl_unexpected`` completions for no outstanding request (dropped), ``cpl_malformed``
#: completions that did not fit their request (dropped), ``rd_tag_starved`` / ``rd_credit_starved``
#: cycles a read was ready to go but no tag / completion buffer space was free. Write side:
#: ``wr_requests``, ``wr_tlps`` MWr issued, ``wr_bytes`` written by them, ``wr_errors``. Link:
#: ``tx_stalled`` cycles ``tx_req`` was valid and not ready.
DmaStatistics = data.StructLayout({
    name: 32 for name in (
        "rd_requests", "rd_tlps", "rd_bytes", "rd_completions", "rd_errors", "rd_timeouts",
        "cpl_unexpected", "cpl_malformed", "rd_tag_starved", "rd_credit_starved",
        "wr_requests", "wr_tlps", "wr_bytes", "wr_errors", "tx_stalled",
    )
})
