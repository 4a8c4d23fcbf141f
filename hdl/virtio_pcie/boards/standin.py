# SPDX-License-Identifier: BSD-2-Clause
"""A stand-in core for board bring-up until ``virtio_pcie.top.VirtioPcieDevice`` exists.

:class:`CoreStandIn` has the top's ports in "ext" mode (the four TLP streams and ``ext_cfg``) and
behaves as a function whose only contents are its configuration capabilities: it completes the
configuration requests a hard IP forwards with the five virtio vendor capabilities chained from
``ext_cap_pointer`` (so ``lspci -vv`` on a real host shows them after the hard IP's own), completes
memory reads with zeros and UR for anything else non-posted, and drops posted requests. It never
issues requests. A host's virtio_pci driver finds the capabilities and then fails its probe
(``num_queues`` reads 0): the stand-in proves link, enumeration and configuration forwarding on a
board, nothing more.

:data:`STANDIN_PLAN` is the hard-IP plan for it, in the form of
``FunctionLayout.hard_ip_plan()`` (BAR 1: MSI-X table and PBA, BAR 4/5: virtio structures).
"""

from amaranth import Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..function.interface import FunctionConfig
from ..spec.pcie import CplStatus, FmtType, TlpHeader
from ..spec.virtio import (VIRTIO_PCI_CLASS_CODE, VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
                           VIRTIO_PCI_SUBSYSTEM_ID_MODERN, VIRTIO_PCI_VENDOR_ID, VirtioDeviceId,
                           VirtioPciCap, VirtioPciCapType, VirtioPciCfgCap, VirtioPciNotifyCap,
                           byte_size)
from ..tlp.signature import TlpSignature, dwords_per_beat

__all__ = ["CoreStandIn", "standin_plan", "virtio_cap_image"]

_WINDOWS = {   # name: (cfg_type, bar, offset, length); QEMU-like, as FunctionLayout places them
    "common": (VirtioPciCapType.COMMON_CFG, 4, 0x0000, 0x38),
    "notify": (VirtioPciCapType.NOTIFY_CFG, 4, 0x3000, 0x1000),
    "isr":    (VirtioPciCapType.ISR_CFG, 4, 0x1000, 1),
    "device": (VirtioPciCapType.DEVICE_CFG, 4, 0x2000, 0x40),
}


def _put(raw, layout, name, value):
    field = layout[name]
    width = (field.shape.size if isinstance(field.shape, data.Layout) else
             Shape.cast(field.shape).width)
    start = field.offset // 8
    raw[start:start + (width + 7) // 8] = int(value).to_bytes((width + 7) // 8, "little")


def virtio_cap_image(first, notify_off_multiplier=4):
    """Bytes of the five virtio vendor capabilities chained from byte ``first`` (virtio 1.2
    §4.1.4), and their ``[(name, offset)]``."""
    order = ["common", "notify", "isr", "device", "pci_cfg"]
    sizes = {name: byte_size(VirtioPciCap) for name in order}
    sizes["notify"] = byte_size(VirtioPciNotifyCap)
    sizes["pci_cfg"] = byte_size(VirtioPciCfgCap)
    placed, offset = [], first
    for name in order:
        placed.append((name, offset))
        offset += sizes[name]
    image = bytearray(offset - first)
    for i, (name, at) in enumerate(placed):
        raw = bytearray(sizes[name])
        _put(raw, VirtioPciCap, "cap_vndr", 0x09)
        _put(raw, VirtioPciCap, "cap_next", placed[i + 1][1] if i + 1 < len(placed) else 0)
        _put(raw, VirtioPciCap, "cap_len", sizes[name])
        if name == "pci_cfg":
            _put(raw, VirtioPciCap, "cfg_type", VirtioPciCapType.PCI_CFG.value)
        else:
            cfg_type, bar, off, length = _WINDOWS[name]
            for field, value in (("cfg_type", cfg_type.value), ("bar", bar), ("offset", off),
                                 ("length", length)):
                _put(raw, VirtioPciCap, field, value)
            if name == "notify":
                _put(raw, VirtioPciNotifyCap, "notify_off_multiplier", notify_off_multiplier)
        image[at - first:at - first + len(raw)] = raw
    return bytes(image), placed


def standin_plan(device="blk", *, ext_cap_pointer=0xA8, msix_vectors=4):
    """The hard-IP plan of the stand-in, shaped like ``FunctionLayout.hard_ip_plan()``."""
    dtype = {"blk": VirtioDeviceId.BLOCK, "net": VirtioDeviceId.NET}[device]
    image, _ = virtio_cap_image(ext_cap_pointer)
    return {
        "vendor_id": VIRTIO_PCI_VENDOR_ID,
        "device_id": VIRTIO_PCI_MODERN_DEVICE_ID_BASE + int(dtype),
        "revision_id": 1, "class_code": VIRTIO_PCI_CLASS_CODE[dtype],
        "subsystem_vendor_id": VIRTIO_PCI_VENDOR_ID,
        "subsystem_id": VIRTIO_PCI_SUBSYSTEM_ID_MODERN, "interrupt_pin": "INTA",
        "bars": [
            {"index": 1, "kind": "memory", "64bit": False, "prefetchable": False,
             "size": 0x1000, "purpose": "MSI-X table and PBA"},
            {"index": 4, "kind": "memory", "64bit": True, "prefetchable": False,
             "size": 0x4000, "purpose": "virtio structures"},
        ],
        "msix": {"table_size": msix_vectors, "table_bir": 1, "table_offset": 0, "pba_bir": 1,
                 "pba_offset": 0x800},
        "pcie": {"max_payload_size_supported": 256, "extended_tag": True,
                 "port_type": "endpoint"},
        "config_forwarding": {
            "first_forwarded_offset": ext_cap_pointer,
            "ext_cfg_cap_ptr_dword": ext_cap_pointer // 4,
            "last_hard_ip_capability_next": ext_cap_pointer,
            "bytes_used": len(image), "bytes_available": 256 - ext_cap_pointer,
        },
    }


class CoreStandIn(wiring.Component):
    """A bring-up function: virtio capabilities in forwarded configuration space, zeros in BARs.

    Members
    -------
    rx_req : In(TlpSignature(data_width))
    tx_cpl : Out(TlpSignature(data_width))
    tx_req : Out(TlpSignature(data_width))
        Never valid.
    rx_cpl : In(TlpSignature(data_width))
        Always ready; discarded.
    ext_cfg : In(FunctionConfig)
        The hard IP's configuration state (the completer ID comes from here).
    """

    def __init__(self, *, data_width, ext_cap_pointer=0xA8):
        self._width = data_width
        self._first = ext_cap_pointer
        super().__init__({
            "rx_req":  In(TlpSignature(data_width)),
            "tx_cpl":  Out(TlpSignature(data_width)),
            "tx_req":  Out(TlpSignature(data_width)),
            "rx_cpl":  In(TlpSignature(data_width)),
            "ext_cfg": In(FunctionConfig),
        })

    def elaborate(self, platform):
        m = Module()
        n = dwords_per_beat(self._width)
        image, _ = virtio_cap_image(self._first)
        rom = bytearray(256)
        rom[self._first:self._first + len(image)] = image
        words = [int.from_bytes(rom[4 * i:4 * i + 4], "little") for i in range(64)]

        req = Signal(TlpHeader)
        cpl = Signal(TlpHeader)
        data = Signal(32)
        beats_left = Signal(range(1024 // n + 2))
        m.d.comb += self.rx_cpl.ready.eq(1)
        fmt = self.rx_req.payload.hdr.dw0.fmt_type
        with m.FSM():
            with m.State("Idle"):
                m.d.comb += self.rx_req.ready.eq(1)
                with m.If(self.rx_req.valid & self.rx_req.payload.sop):
                    m.d.sync += req.eq(self.rx_req.payload.hdr)
                    with m.If(FmtType.has_data(fmt.as_value()) & ~self.rx_req.payload.eop):
                        m.next = "Drain"
                    with m.Elif(fmt.as_value().matches(FmtType.MWR32, FmtType.MWR64, FmtType.MSG_RC,
                                            FmtType.MSG_LOC, FmtType.MSGD_RC,
                                            FmtType.MSGD_LOC)):
                        m.next = "Idle"
                    with m.Else():
                        m.next = "Respond"
            with m.State("Drain"):
                m.d.comb += self.rx_req.ready.eq(1)
                with m.If(self.rx_req.valid & self.rx_req.payload.eop):
                    m.next = "Idle"
                    with m.If(req.dw0.fmt_type == FmtType.CFGWR0):
                        m.next = "Respond"
            with m.State("Respond"):
                rom_index = req.cfg.register
                m.d.sync += [
                    cpl.cpl.requester_id.eq(req.req.requester_id),
                    cpl.cpl.tag.eq(req.req.tag),
                    cpl.dw0.tc.eq(req.dw0.tc),
                    cpl.dw0.attr.eq(req.dw0.attr),
                    cpl.cpl.completer_id.eq(self.ext_cfg.pcie_id),
                    data.eq(Mux(req.cfg.ext_register == 0,
                                Cat(*[Const(w, 32) for w in words]).word_select(rom_index, 32),
                                0)),
                ]
                with m.Switch(req.dw0.fmt_type):
                    with m.Case(FmtType.CFGRD0):
                        m.d.sync += [cpl.dw0.fmt_type.eq(FmtType.CPLD), cpl.dw0.length.eq(1),
                                     cpl.cpl.byte_count.eq(4), cpl.cpl.status.eq(CplStatus.SC),
                                     beats_left.eq(1)]
                    with m.Case(FmtType.CFGWR0):
                        m.d.sync += [cpl.dw0.fmt_type.eq(FmtType.CPL), cpl.dw0.length.eq(0),
                                     cpl.cpl.byte_count.eq(4), cpl.cpl.status.eq(CplStatus.SC),
                                     beats_left.eq(0)]
                    with m.Case(FmtType.MRD32, FmtType.MRD64):
                        length = Mux(req.dw0.length == 0, 1024, req.dw0.length)
                        m.d.sync += [
                            cpl.dw0.fmt_type.eq(FmtType.CPLD), cpl.dw0.length.eq(req.dw0.length),
                            cpl.cpl.byte_count.eq(4 * length),
                            cpl.cpl.lower_address.eq(Mux(FmtType.is_4dw(
                                req.dw0.fmt_type.as_value()), req.req.dw3, req.req.dw2)),
                            cpl.cpl.status.eq(CplStatus.SC),
                            beats_left.eq((length + n - 1) // n),
                            data.eq(0),
                        ]
                    with m.Default():
                        m.d.sync += [cpl.dw0.fmt_type.eq(FmtType.CPL), cpl.dw0.length.eq(0),
                                     cpl.cpl.byte_count.eq(0), cpl.cpl.status.eq(CplStatus.UR),
                                     beats_left.eq(0)]
                m.next = "Send"
            with m.State("Send"):
                first = Signal(init=1)
                length = Mux(cpl.dw0.length == 0, 1024, cpl.dw0.length)
                last = beats_left <= 1
                m.d.comb += [
                    self.tx_cpl.valid.eq(1),
                    self.tx_cpl.payload.hdr.eq(cpl),
                    self.tx_cpl.payload.sop.eq(first),
                    self.tx_cpl.payload.eop.eq(last),
                    self.tx_cpl.payload.data.eq(Mux(first, data, 0)),
                ]
                with m.If(FmtType.has_data(cpl.dw0.fmt_type.as_value())):
                    remaining = Signal(range(1025))
                    m.d.comb += remaining.eq(Mux(last, length - ((length - 1) // n) * n, n))
                    m.d.comb += self.tx_cpl.payload.keep.eq(
                        Cat(Const(k, 11) < remaining for k in range(n)))
                with m.If(self.tx_cpl.ready):
                    m.d.sync += [first.eq(0), beats_left.eq(beats_left - 1)]
                    with m.If(last):
                        m.d.sync += first.eq(1)
                        m.next = "Idle"
        return m
