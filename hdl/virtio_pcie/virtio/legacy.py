# SPDX-License-Identifier: BSD-2-Clause
"""The legacy (virtio 0.9.5) I/O interface of a transitional transport.

Virtio 1.2 §4.1.4.10 ("Legacy Interfaces: A Note on PCI Device Layout") and Linux's
``virtio_pci_legacy.c``; checklist §1.O (rules 64, 103-106). The whole legacy I/O BAR is one
register window laid out by :data:`~virtio_pcie.spec.virtio.VirtioPciLegacyHeader`, then,
**only while MSI-X is enabled**, :data:`~virtio_pcie.spec.virtio.VirtioPciLegacyMsix`, then the
device-specific configuration (so it starts at
:func:`~virtio_pcie.spec.virtio.legacy_device_config_offset`, 0x14 or 0x18, and moves when the
driver enables or disables MSI-X).

The legacy registers are another view of the same transport state as the modern ones (a driver
uses one interface until the next reset):

* HOST_FEATURES: device feature bits 0-31. GUEST_FEATURES: driver feature bits 0-31 (bits 32-63
  count as not accepted, rule 105).
* QUEUE_PFN: writing a page number (``addr >> 12``) activates the selected queue with the legacy
  contiguous ring layout (:func:`~virtio_pcie.spec.virtio.legacy_vring_layout`, 4096-byte
  alignment, current ``queue_size``): the engine gets the three addresses on ``queues.config``.
  Writing 0 deactivates it (``enable = 0``); the write completes only once the engine has
  stopped the queue, with none of its DMA in flight, since the driver frees the ring as soon as
  its (non-posted) I/O write returns. A new page number for an active queue is ignored
  (deactivate it first). Reads give the page number of the descriptor table.
* QUEUE_NUM: the queue size (read only). QUEUE_SEL, QUEUE_NOTIFY (queue index written), STATUS
  and ISR as their modern counterparts; there is no FEATURES_OK step on this interface.
* MSI-X config / queue vector: ``config_msix_vector`` and the selected ``queue_msix_vector``.
* Device configuration: forwarded to the device's register block like the modern window, at any
  access width (Linux reads it byte by byte). Little-endian hosts are assumed.

Reset is synchronous for the driver: after STATUS is written with 0, the transport holds the next
legacy access (Linux reads STATUS once) until the reset has completed (rule 67).
"""

from amaranth import Array, Cat, Const, Mux, Signal
from amaranth.lib import data

from ..spec.virtio import (LEGACY_QUEUE_ADDR_SHIFT, LEGACY_VRING_ALIGN, VIRTIO_MSI_NO_VECTOR,
                           VirtioPciLegacyHeader, VirtioPciLegacyMsix, byte_size,
                           legacy_device_config_offset, legacy_vring_layout)
from .registers import Decoded, dword_mux, field_touched, field_write, vector_read

__all__ = ["LegacyDecoder", "LegacyRegisters", "legacy_ring_offsets"]

#: The legacy registers in front of the device configuration (the vectors only with MSI-X).
LegacyRegisters = data.StructLayout({
    "header": VirtioPciLegacyHeader,
    "msix":   VirtioPciLegacyMsix,
})

_MSIX_BASE = byte_size(VirtioPciLegacyHeader)


def legacy_ring_offsets(size_log2_count=16):
    """``[(avail, used)]``: byte offsets from the descriptor table of a legacy ring of
    ``2 ** n`` entries, for each ``n`` (virtio 1.2, "Legacy Interfaces: A Note on Virtqueue
    Layout")."""
    table = []
    for n in range(size_log2_count):
        desc, avail, used = legacy_vring_layout(0, 1 << n, LEGACY_VRING_ALIGN)
        table.append((avail - desc, used - desc))
    return table


class LegacyDecoder:
    """Decodes accesses to the legacy I/O window into the transport's register requests.

    An elaboration-time helper of :class:`~virtio_pcie.virtio.transport.VirtioTransport` (which
    owns the state); :meth:`elaborate` adds its logic to the transport's module.
    """

    def __init__(self, transport):
        self._transport = transport

    def elaborate(self, m, core, acc, active):
        t = self._transport
        q = core
        dword = acc.addr[2:]
        msix_enable = t.function_config.msix_enable
        config_offset = Mux(msix_enable, legacy_device_config_offset(True),
                            legacy_device_config_offset(False))
        device_area = acc.addr >= config_offset

        # Read view ---
        view = Signal(LegacyRegisters)
        h = view.header
        m.d.comb += [
            h.host_features.eq(t.device_features & 0xFFFF_FFFF),
            h.guest_features.eq(q.driver_features_valid[:32]),
            h.queue_pfn.eq(Mux(q.q_exists, q.row_cur.desc >> LEGACY_QUEUE_ADDR_SHIFT, 0)),
            h.queue_num.eq(q.q_size),
            h.queue_sel.eq(q.queue_select),
            h.status.eq(q.status),
            h.isr.eq(q.isr),
            view.msix.config_vector.eq(vector_read(q.config_vector)),
            view.msix.queue_vector.eq(Mux(q.q_exists, vector_read(q.vec_cur),
                                          VIRTIO_MSI_NO_VECTOR)),
        ]

        # Write decode ---
        def write(layout, name, old, base=0):
            return field_write(layout, name, dword=dword, sel=acc.sel, w_data=acc.w_data,
                               old=old, base=base)

        hit, value = {}, {}
        for name, old in {
            "guest_features": q.driver_features[:32],
            "queue_pfn":      h.queue_pfn,
            "queue_sel":      q.queue_select,
            "queue_notify":   Const(0, 16),
            "status":         q.status,
        }.items():
            hit[name], value[name] = write(VirtioPciLegacyHeader, name, old)
        for name, old in {
            "config_vector": view.msix.config_vector,
            "queue_vector":  view.msix.queue_vector,
        }.items():
            hit[name], value[name] = write(VirtioPciLegacyMsix, name, old, base=_MSIX_BASE)
            hit[name] = hit[name] & msix_enable

        writing = acc.we & ~device_area & ~q.dev_reset
        pfn = value["queue_pfn"]
        activate = writing & hit["queue_pfn"] & (pfn != 0) & q.q_can_enable
        deactivate = writing & hit["queue_pfn"] & (pfn == 0) & q.q_exists & ~q.q_resetting

        # The legacy ring: desc at pfn << 12, avail after desc, used at the next 4096 boundary.
        offsets = legacy_ring_offsets(1 << len(q.row_cur.size_log2))
        avail_offset = Array(Const(avail, 32) for avail, _ in offsets)[q.row_cur.size_log2]
        used_offset  = Array(Const(used, 32) for _, used in offsets)[q.row_cur.size_log2]
        desc = Cat(Const(0, LEGACY_QUEUE_ADDR_SHIFT), pfn)

        # Hold every legacy access while a reset completes, so the driver's single read of
        # STATUS after writing 0 reads 0 (Linux vp_reset(); checklist rule 67).
        stall = q.reset_hold | ((activate | (deactivate & q.q_enabled)) & q.config_busy)

        isr_read = ~acc.we & ~device_area & field_touched(VirtioPciLegacyHeader, "isr",
                                                          dword=dword, sel=acc.sel)
        with m.If(active):
            with m.If(isr_read):
                m.d.comb += q.req_isr_read.eq(1)
            with m.If(writing):
                m.d.comb += q.req_legacy.eq(1)
                with m.If(hit["guest_features"]):
                    m.d.comb += [q.req_driver_feature.eq(1),
                                 q.req_driver_feature_legacy.eq(1),
                                 q.req_driver_feature_value.eq(value["guest_features"])]
                with m.If(hit["queue_sel"]):
                    m.d.comb += [q.req_queue_select.eq(1),
                                 q.req_queue_select_value.eq(value["queue_sel"])]
                with m.If(hit["queue_notify"]):
                    m.d.comb += [q.req_notify.eq(1),
                                 q.req_notify_queue.eq(value["queue_notify"])]
                with m.If(hit["status"]):
                    m.d.comb += [q.req_status.eq(1), q.req_status_legacy.eq(1),
                                 q.req_status_value.eq(value["status"])]
                with m.If(hit["config_vector"]):
                    m.d.comb += [q.req_config_vector.eq(1),
                                 q.req_vector_value.eq(value["config_vector"])]
                q.write_queue_fields(vector=(hit["queue_vector"], value["queue_vector"]))
                with m.If(activate):
                    m.d.comb += [
                        q.row_next.desc.eq(desc),
                        q.row_next.driver.eq(desc + avail_offset),
                        q.row_next.device.eq(desc + used_offset),
                        q.req_row.eq(1),
                        q.req_queue_enable.eq(1),
                    ]
                with m.If(deactivate):
                    m.d.comb += [
                        q.row_next.desc.eq(0), q.row_next.driver.eq(0), q.row_next.device.eq(0),
                        q.req_row.eq(1),
                        q.req_queue_disable.eq(q.q_enabled),
                    ]

        # A deactivation completes only once the engine has stopped the queue: the driver frees
        # the ring when its write returns (Linux del_vq), so no used-ring write may follow it.
        return Decoded(stall=stall, r_data=dword_mux(view, dword), device=device_area,
                       device_addr=acc.addr - config_offset,
                       wait_config=deactivate & q.q_enabled)
