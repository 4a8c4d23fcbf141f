# SPDX-License-Identifier: BSD-2-Clause
"""Signals the PCI function's configuration space shares with the rest of the core.

* :data:`FunctionConfig`: what the host programmed in configuration space, as the configuration
  space (or a hard IP's configuration status outputs) presents it. Every block that issues
  requests or decodes addresses takes it as an input: the completer (memory/I/O space enables),
  the DMA engine (Bus Master Enable, MPS, MRRS, extended tags, RCB, requester ID), MSI-X (enable,
  function mask), INTx (interrupt disable).
* :data:`FunctionEvents`: one-cycle strobes from the rest of the core that set sticky status
  bits in configuration space (PCI Status, PCIe Device Status).
* :func:`MsixRequestSignature`: the stream on which the transport asks the MSI-X block to send a
  vector's message. The MSI-X block sends it only while MSI-X is enabled and Bus Master Enable
  is set; a masked vector (or a function mask) sets the vector's pending bit instead, and the
  message goes out on unmask.
"""

from amaranth.lib import data, stream

from ..spec.pcie import PciCommand, PcieId

__all__ = ["FunctionConfig", "FunctionEvents", "MSIX_VECTOR_WIDTH", "MsixRequest",
           "MsixRequestSignature"]

MSIX_VECTOR_WIDTH = 11     # MSI-X Table Size field: up to 2048 vectors

FunctionConfig = data.StructLayout({
    "pcie_id":               PcieId,     # this function's requester/completer ID
    "command":               PciCommand,
    "max_payload_size":      3,          # encoded as in Device Control (128 << n bytes)
    "max_read_request_size": 3,
    "extended_tag":          1,          # 8-bit tags allowed (else 5-bit)
    "rcb_128":               1,          # read completion boundary is 128 bytes (else 64)
    "msix_enable":           1,
    "msix_function_mask":    1,
    "power_state":           2,          # PMCSR PowerState: 0 = D0, 3 = D3hot
})

FunctionEvents = data.StructLayout({
    "received_master_abort":    1,   # our request got a UR completion
    "received_target_abort":    1,   # our request got a CA completion
    "signaled_target_abort":    1,   # we completed a request with CA
    "master_data_parity_error": 1,   # we received a poisoned completion
    "unsupported_request":      1,   # we received a request we answer with UR (Device Status)
})

MsixRequest = data.StructLayout({
    "vector": MSIX_VECTOR_WIDTH,
})


def MsixRequestSignature():
    return stream.Signature(MsixRequest)
