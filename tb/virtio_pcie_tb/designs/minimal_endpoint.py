# SPDX-License-Identifier: BSD-2-Clause
"""The smallest PCIe endpoint that a root complex enumerates: a type-0 header and nothing else.

It exists to prove the TLP path (root complex → bridge → RTL → bridge → root complex) before any
real function is built, and stays as the bridge's own test design. Configuration reads of
function 0 return a read-only type-0 header with no BARs and no capabilities; configuration
writes complete successfully and change nothing; other non-posted requests get Unsupported
Request completions; posted requests are dropped.
"""

from amaranth import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from virtio_pcie.spec.pcie import (CplStatus, FmtType, PcieId, PciStatus, PciType0Header,
                                   TlpHeader)
from virtio_pcie.spec.virtio import VIRTIO_PCI_VENDOR_ID
from virtio_pcie.tlp.signature import TlpSignature

__all__ = ["MinimalEndpoint"]


class MinimalEndpoint(wiring.Component):
    """Answers configuration requests with a fixed type-0 header.

    Members
    -------
    rx_req : In(TlpSignature(data_width))
    tx_cpl : Out(TlpSignature(data_width))
    tx_req : Out(TlpSignature(data_width))
        Never valid.
    rx_cpl : In(TlpSignature(data_width))
        Always ready; completions are discarded.
    """

    def __init__(self, *, data_width, device_id=0x10FF, class_code=0xFF0000):
        self._data_width = data_width
        self._header = PciType0Header.const({
            "vendor_id":   VIRTIO_PCI_VENDOR_ID,
            "device_id":   device_id,
            "status":      PciStatus(0),
            "revision_id": 1,
            "class_code":  class_code,
            "header_type": 0,
        }).as_value().value
        super().__init__({
            "rx_req": In(TlpSignature(data_width)),
            "tx_cpl": Out(TlpSignature(data_width)),
            "tx_req": Out(TlpSignature(data_width)),
            "rx_cpl": In(TlpSignature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        header_dwords = PciType0Header.size // 32
        rom = [Const((self._header >> (32 * i)) & 0xFFFFFFFF, 32) for i in range(header_dwords)]

        req     = Signal(TlpHeader)
        cpl     = Signal(TlpHeader)
        cpl_dw  = Signal(32)
        our_id  = Signal(PcieId)
        respond = Signal()

        m.d.comb += self.rx_cpl.ready.eq(1)

        with m.FSM():
            with m.State("Receive"):
                m.d.comb += self.rx_req.ready.eq(1)
                with m.If(self.rx_req.valid & self.rx_req.p.sop):
                    m.d.sync += req.eq(self.rx_req.p.hdr)
                    with m.If(self.rx_req.p.eop):
                        m.next = "Decode"
                    with m.Else():
                        m.next = "Drain"
            with m.State("Drain"):
                m.d.comb += self.rx_req.ready.eq(1)
                with m.If(self.rx_req.valid & self.rx_req.p.eop):
                    m.next = "Decode"
            with m.State("Decode"):
                fmt_type = req.dw0.fmt_type
                is_cfg = (fmt_type == FmtType.CFGRD0) | (fmt_type == FmtType.CFGWR0)
                register = req.cfg.ext_register.as_unsigned() << 6 | req.cfg.register
                m.d.sync += [
                    cpl.eq(0),
                    cpl.cpl.requester_id.eq(req.req.requester_id),
                    cpl.cpl.tag.eq(req.req.tag),
                    cpl.dw0.t8.eq(req.dw0.t8),
                    cpl.dw0.t9.eq(req.dw0.t9),
                    cpl.dw0.tc.eq(req.dw0.tc),
                    cpl.dw0.attr.eq(req.dw0.attr),
                    cpl.cpl.byte_count.eq(4),
                    cpl_dw.eq(0),
                    respond.eq(1),
                ]
                with m.If(is_cfg):
                    # Capture our bus and device number (PCIe Base 4.0 §2.2.6.2).
                    m.d.sync += our_id.eq(req.cfg.target_id)
                    m.d.sync += cpl.cpl.completer_id.eq(req.cfg.target_id)
                with m.Else():
                    m.d.sync += cpl.cpl.completer_id.eq(our_id)
                with m.If(is_cfg & (req.cfg.target_id.function == 0)):
                    with m.If(fmt_type == FmtType.CFGRD0):
                        m.d.sync += [
                            cpl.dw0.fmt_type.eq(FmtType.CPLD),
                            cpl.dw0.length.eq(1),
                        ]
                        with m.Switch(register):
                            for i, value in enumerate(rom):
                                with m.Case(i):
                                    m.d.sync += cpl_dw.eq(value)
                    with m.Else():
                        m.d.sync += cpl.dw0.fmt_type.eq(FmtType.CPL)
                with m.Elif((fmt_type == FmtType.MWR32) | (fmt_type == FmtType.MWR64) |
                            ((fmt_type.as_value() & 0b1_1000) == 0b1_0000)):
                    m.d.sync += respond.eq(0)          # posted: no completion
                with m.Else():
                    m.d.sync += [
                        cpl.dw0.fmt_type.eq(FmtType.CPL),
                        cpl.cpl.status.eq(CplStatus.UR),
                    ]
                m.next = "Respond"
            with m.State("Respond"):
                m.d.comb += [
                    self.tx_cpl.valid.eq(respond),
                    self.tx_cpl.p.hdr.eq(cpl),
                    self.tx_cpl.p.data.eq(cpl_dw),
                    self.tx_cpl.p.keep.eq(cpl.dw0.fmt_type == FmtType.CPLD),
                    self.tx_cpl.p.sop.eq(1),
                    self.tx_cpl.p.eop.eq(1),
                ]
                with m.If(~respond | self.tx_cpl.ready):
                    m.next = "Receive"
        return m
