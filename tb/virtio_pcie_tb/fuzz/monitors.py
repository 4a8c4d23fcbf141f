# SPDX-License-Identifier: BSD-2-Clause
"""Invariant monitors on the TLP streams of a fuzzed device.

:class:`LinkMonitor` is attached to the bridge's ``tx_monitors`` (every TLP the device sends)
and ``rx_monitors`` (every TLP delivered to it). It judges the device by what crosses the link,
and it learns the host's side of the rules from the same traffic, so that a driver's write is
accounted for however it reached the device (the fuzzer's own accesses, the Linux-faithful
driver's, a random access that happened to hit a register):

* **Write legality.** Every memory write of the device must land inside a region the driver
  made writable to it: a *grant* (:meth:`LinkMonitor.grant`, made by the drivers for used rings
  and for the writable buffers of chains they published, withdrawn with :meth:`revoke`), or the
  address of an MSI-X table entry while MSI-X is enabled and neither the function nor the entry
  is masked (PCIe Base 4.0 §6.1.4; the table is shadowed from the writes delivered to it,
  through its BAR or the virtio PCI_CFG window); or, on a transitional device, the used ring
  of a queue a legacy QUEUE_PFN write activated (:meth:`LinkMonitor.watch_legacy`: the legacy
  header is shadowed from the I/O writes delivered to it, whoever made them), until that
  queue's ``QUEUE_PFN = 0`` write or a legacy device reset has completed.
* **Bus mastering.** No memory request (read, write, MSI-X message) while the Command
  register's Bus Master Enable is clear (PCIe Base 4.0 §7.5.1.1.3), shadowed from delivered
  configuration writes.
* **Completions.** Every non-posted request delivered to the device (configuration, memory and
  I/O reads, I/O and configuration writes) is answered within :data:`COMPLETION_BOUND_NS`.

A change that takes a permission away (Bus Master Enable cleared, a vector masked, a grant
revoked) applies :data:`GRACE_NS` after the TLP that made it was delivered: a TLP the device
had already started may still finish.
"""

from cocotb.utils import get_sim_time

from virtio_pcie.spec.pcie import (CAP_POINTER_MIN, FmtType, MsixCap, MsixMessageControl,
                                   MsixTableEntry, MsixVectorControl, PciCommand,
                                   PciType0Header, byte_offset, byte_size)
from virtio_pcie.spec.virtio import (LEGACY_QUEUE_ADDR_SHIFT, VirtioPciCap, VirtioPciCfgCap,
                                     VirtioPciLegacyHeader, legacy_vring_layout,
                                     virtq_used_size)

from ..codec import codec

__all__ = ["LinkMonitor", "COMPLETION_BOUND_NS", "GRACE_NS"]

#: A non-posted request must be answered within this (the transport holds accesses for at most
#: 10 000 cycles while a device reset completes; 40 us at 250 MHz, plus margin).
COMPLETION_BOUND_NS = 50_000
#: A permission taken away still covers TLPs the device sends this soon after (a TLP already
#: started finishes: at most a few hundred bytes at the data path's rate).
GRACE_NS = 400

_NON_POSTED = {FmtType.MRD32.value, FmtType.MRD64.value, FmtType.IORD.value,
               FmtType.IOWR.value, FmtType.CFGRD0.value, FmtType.CFGWR0.value}
_MEM_READ = {FmtType.MRD32.value, FmtType.MRD64.value}
_MEM_WRITE = {FmtType.MWR32.value, FmtType.MWR64.value}
_CPL = {FmtType.CPL.value, FmtType.CPLD.value}

_CMD = byte_offset(PciType0Header, "command")
_BME = PciCommand.BUS_MASTER.value
_MSIX_CTRL = byte_offset(MsixCap, "message_control")
_MSIX_ENABLE = 1 << MsixMessageControl["enable"].offset
_MSIX_MASKALL = 1 << MsixMessageControl["function_mask"].offset
_ENTRY = byte_size(MsixTableEntry)
_ENTRY_CODEC = codec(MsixTableEntry)
_VECTOR_MASK = 1 << MsixVectorControl["mask"].offset
_CAP_NEXT = byte_offset(MsixCap, "cap_next")     # every capability starts with id, next
_CAP_BAR = byte_offset(VirtioPciCap, "bar")
_CAP_OFFSET = byte_offset(VirtioPciCap, "offset")
_CAP_LENGTH = byte_offset(VirtioPciCap, "length")
_CFG_DATA = byte_offset(VirtioPciCfgCap, "pci_cfg_data")
_IOWR = FmtType.IOWR.value
_IO = {FmtType.IORD.value, _IOWR}
_LEGACY_CODEC = codec(VirtioPciLegacyHeader)


def _span(layout, name):
    start = byte_offset(layout, name)
    return range(start, start + _LEGACY_CODEC.field_size(name))


_L_SEL = _span(VirtioPciLegacyHeader, "queue_sel")
_L_PFN = _span(VirtioPciLegacyHeader, "queue_pfn")
_L_STATUS = _span(VirtioPciLegacyHeader, "status")


def _be_bytes(tlp):
    """(byte offset from the dword-aligned address, byte) pairs a write request carries."""
    first, last = tlp["req.first_be"], tlp["req.last_be"]
    n = len(tlp.payload)
    out = []
    for i in range(n):
        dw, lane = divmod(i, 4)
        if dw == 0:
            on = first >> lane & 1
        elif dw == n // 4 - 1:
            on = last >> lane & 1
        else:
            on = 1
        if on:
            out.append((i, tlp.payload[i]))
    return out


class LinkMonitor:
    """Checks the device's TLPs against the permissions the host gave it.

    Parameters
    ----------
    bridge : :class:`~virtio_pcie_tb.models.pcie_bridge.DutPcieDevice`
    bars : dict
        BAR index -> (bus address, size) of the enumerated function.
    msix : dict
        ``pos`` (capability offset), ``bir``, ``table`` (offset in the BAR), ``vectors``.
    pci_cfg_pos : int or None
        Offset of the virtio PCI_CFG capability.
    """

    def __init__(self, bridge, *, bars, msix, pci_cfg_pos):
        self.bars = dict(bars)
        self.msix = msix
        self.pci_cfg_pos = pci_cfg_pos
        self.config = bytearray(4096)        # configuration space as last written
        self.table = bytearray(_ENTRY * msix["vectors"])
        self.table_unknown = False           # written through a path the shadow cannot follow
        self.grants = {}                     # owner -> [(start, end)]
        self._ending = []                    # (start, end, until_ns) of revoked grants
        self._bme_off_since = None
        self._msi_closed = []                # (entry or None, since_ns): masked / disabled
        self.pending = {}                    # (requester, tag) -> (time_ns, tlp)
        self.violations = []                 # (kind, message)
        self.counts = {"mwr": 0, "mrd": 0, "msi": 0}
        self.enabled = True
        self.legacy = None                   # (I/O BAR index, largest queue size) when watched
        self._l_sel = bytearray(2)
        self._l_pfn = {}                     # queue -> page number as last written
        self._l_serial = 0                   # makes every legacy grant's owner unique
        self._revoke_at_cpl = {}             # (requester, tag) -> owners to revoke then
        self._after_reset = None             # owners to revoke once a legacy reset completed
        bridge.tx_monitors.append(self._from_device)
        bridge.rx_monitors.append(self._to_device)

    # -- what the host grants -------------------------------------------------------------------
    def grant(self, owner, start, length):
        if length > 0:
            self.grants.setdefault(owner, []).append((start, start + length))

    def revoke(self, owner, *, grace=True):
        regions = self.grants.pop(owner, ())
        if grace:
            until = get_sim_time("ns") + GRACE_NS
            self._ending.extend((s, e, until) for s, e in regions)

    def revoke_all(self, *, grace=False, match=None):
        for owner in [o for o in self.grants if match is None or match(o)]:
            self.revoke(owner, grace=grace)

    def initialise(self, config_bytes, table_bytes):
        """Set the shadows from what was read back at the start of a run."""
        self.config[:len(config_bytes)] = config_bytes
        self.table[:] = table_bytes[:len(self.table)]
        self.table_unknown = False
        self._bme_off_since = None if self._bme() else 0
        self._msi_closed = []
        self._refresh_msi(0)

    def watch_legacy(self, *, bar, max_queue_size):
        """Follow the legacy I/O header in ``bar``: a QUEUE_PFN write that activates a queue
        (whoever made it: a random write of the fuzzer too) grants that queue's legacy used
        ring, at the moment the write reaches the device, for every ring size the queue may
        have (powers of two up to ``max_queue_size``).

        The grant ends (with :data:`GRACE_NS`) when the device has said the ring is no longer
        its own: at the completion of the queue's ``QUEUE_PFN = 0`` write (the transport
        completes it only once the queue is stopped with none of its DMA in flight), or, after
        a STATUS = 0 write, at the completion of the next legacy access delivered (the
        transport holds that access until the reset has completed). A new page number for an
        active queue is granted too, though the transport ignores it: a reset the shadow does
        not see (a random write to the modern STATUS) may have made the queue inactive, and a
        grant too many only makes the check weaker, never a false alarm."""
        self.legacy = (bar, max_queue_size)

    def _legacy_owners(self, queue=None):
        return [o for o in self.grants
                if o[0] == "legacy-used" and (queue is None or o[1] == queue)]

    def _apply_legacy_access(self, tlp):
        bar, max_size = self.legacy
        base, size = self.bars[bar]
        addr = tlp.address
        if not base <= addr < base + size:
            return
        key = (tlp["req.requester_id"], tlp.tag)
        if self._after_reset is not None:
            # the first legacy access after a reset: its completion ends the reset's hold
            self._revoke_at_cpl.setdefault(key, []).extend(self._after_reset)
            self._after_reset = None
        if tlp.fmt_type != _IOWR:
            return
        sel_before = int.from_bytes(self._l_sel, "little")
        pfn = bytearray(self._l_pfn.get(sel_before, 0).to_bytes(4, "little"))
        pfn_hit = False
        for off, value in _be_bytes(tlp):
            a = addr + off - base
            if a in _L_SEL:
                self._l_sel[a - _L_SEL.start] = value
            elif a in _L_PFN:
                pfn[a - _L_PFN.start] = value
                pfn_hit = True
            elif a in _L_STATUS and value == 0:
                self._l_sel[:] = bytes(2)          # a device reset
                self._l_pfn = {}
                self._after_reset = self._legacy_owners()
        if not pfn_hit:
            return
        # The transport merges the written bytes with the selected queue's page number.
        page = int.from_bytes(pfn, "little")
        self._l_pfn[sel_before] = page
        if page == 0:
            self._revoke_at_cpl.setdefault(key, []).extend(self._legacy_owners(sel_before))
            return
        ring = page << LEGACY_QUEUE_ADDR_SHIFT
        self._l_serial += 1
        owner = ("legacy-used", sel_before, page, self._l_serial)
        n = 1
        while n <= max_size:
            _, _, used = legacy_vring_layout(ring, n)
            self.grant(owner, used, virtq_used_size(n))
            n *= 2

    def reset_run(self):
        self._l_sel[:] = bytes(2)
        self._l_pfn = {}
        self._revoke_at_cpl = {}
        self._after_reset = None
        self.grants = {}
        self._ending = []
        self.pending = {}
        self.violations = []
        self.counts = {"mwr": 0, "mrd": 0, "msi": 0}

    # -- shadows --------------------------------------------------------------------------------
    def _bme(self):
        return bool(int.from_bytes(self.config[_CMD:_CMD + 2], "little") & _BME)

    def _msix_control(self):
        at = self.msix["pos"] + _MSIX_CTRL
        return int.from_bytes(self.config[at:at + 2], "little")

    def _entry(self, i):
        entry = _ENTRY_CODEC.unpack(self.table[i * _ENTRY:(i + 1) * _ENTRY])
        # PCIe Base 4.0 §7.7.2.6: Message Address bits 1:0 keep the message DWORD aligned;
        # software must write them as 0 and the device sends with them cleared whatever was
        # written (net seed 801 run 9234: a random write put 0x...d5 there).
        addr = (entry["msg_addr"] & ~3) | entry["msg_upper_addr"] << 32
        return addr, entry["msg_data"], bool(entry["vector_control"] & _VECTOR_MASK)

    def _refresh_msi(self, now):
        """Record when each vector stopped being allowed to send (closed) or reopened."""
        ctrl = self._msix_control()
        function_open = bool(ctrl & _MSIX_ENABLE) and not ctrl & _MSIX_MASKALL
        closed = []
        for i in range(self.msix["vectors"]):
            is_closed = not function_open or self._entry(i)[2]
            if is_closed:
                prev = next((t for e, t in self._msi_closed if e == i), None)
                closed.append((i, now if prev is None else prev))
        self._msi_closed = closed

    def _apply_config_write(self, tlp):
        reg = (tlp["cfg.ext_register"] << 6) | tlp["cfg.register"]
        base = 4 * reg
        be = tlp["cfg.first_be"]
        now = get_sim_time("ns")
        bme_before = self._bme()
        written = {}
        for lane in range(4):
            if be >> lane & 1 and lane < len(tlp.payload):
                self.config[base + lane] = tlp.payload[lane]
                written[base + lane] = tlp.payload[lane]
        if bme_before and not self._bme():
            self._bme_off_since = now
        elif not bme_before and self._bme():
            self._bme_off_since = None
        self._refresh_msi(now)
        pos = self.pci_cfg_pos
        if pos is not None and any(pos + _CFG_DATA <= a < pos + _CFG_DATA + 4 for a in written):
            bar = self.config[pos + _CAP_BAR]
            if bar == self.msix["bir"]:
                offset = int.from_bytes(self.config[pos + _CAP_OFFSET:pos + _CAP_OFFSET + 4],
                                        "little")
                table = self.msix["table"]
                if offset < table + len(self.table) and offset + 4 > table:
                    # A window write into the table: follow it as the window would, but the
                    # exact bytes depend on cap.length; stop judging messages by the table.
                    self.table_unknown = True

    def _apply_table_write(self, tlp):
        addr = tlp.address
        bir = self.msix["bir"]
        base, size = self.bars[bir]
        start = base + self.msix["table"]
        end = start + len(self.table)
        if not (addr < end and addr + len(tlp.payload) > start and base <= addr < base + size):
            return
        for off, value in _be_bytes(tlp):
            a = addr + off
            if start <= a < end:
                self.table[a - start] = value
        self._refresh_msi(get_sim_time("ns"))

    # -- traffic --------------------------------------------------------------------------------
    def _to_device(self, tlp):
        ft = tlp.fmt_type
        if ft in _CPL:
            return
        if ft in _NON_POSTED:
            key = (tlp["req.requester_id"], tlp.tag)
            self.pending[key] = (get_sim_time("ns"), tlp)
        if ft == FmtType.CFGWR0.value:
            self._apply_config_write(tlp)
        elif ft in _IO and self.legacy is not None:
            self._apply_legacy_access(tlp)
        elif ft in _MEM_WRITE:
            self._apply_table_write(tlp)

    def _from_device(self, tlp):
        ft = tlp.fmt_type
        now = get_sim_time("ns")
        if ft in _CPL:
            key = (tlp["cpl.requester_id"], tlp.tag)
            self.pending.pop(key, None)
            for owner in self._revoke_at_cpl.pop(key, ()):
                self.revoke(owner)
            return
        if not self.enabled or tlp.is_message:
            return
        if ft in _MEM_READ or ft in _MEM_WRITE:
            if self._bme_off_since is not None and now - self._bme_off_since > GRACE_NS:
                self._violation("bus_master", f"{tlp!r} while Bus Master Enable is clear "
                                              f"(since {self._bme_off_since} ns)")
        if ft in _MEM_READ:
            self.counts["mrd"] += 1
            return
        if ft not in _MEM_WRITE:
            return
        self.counts["mwr"] += 1
        start = tlp.address + next((off for off, _ in _be_bytes(tlp)), 0)
        nbytes = sum(1 for _ in _be_bytes(tlp))
        if self._is_msi(tlp, now):
            return
        if self._covered(start, start + nbytes, now):
            return
        self._violation("write", f"{tlp!r}: {nbytes} bytes at {start:#x} outside every region "
                                 f"the driver made writable")

    def _is_msi(self, tlp, now):
        """An MSI-X message: a 4-byte write of an entry's data to its address. Judged here."""
        if len(tlp.payload) != 4 or tlp["req.first_be"] != 0xF:
            return False
        data = int.from_bytes(tlp.payload, "little")
        matches = [i for i in range(self.msix["vectors"])
                   if self._entry(i)[0] == tlp.address and self._entry(i)[1] == data]
        if not matches:
            return self.table_unknown
        self.counts["msi"] += 1
        closed = dict(self._msi_closed)
        if any(i not in closed or now - closed[i] <= GRACE_NS for i in matches):
            return True
        self._violation("msix", f"MSI-X message {tlp!r} while vector(s) {matches} are masked "
                                f"or MSI-X is disabled")
        return True

    def _covered(self, start, end, now):
        spans = [(s, e) for regions in self.grants.values() for s, e in regions]
        self._ending = [x for x in self._ending if x[2] >= now]
        spans += [(s, e) for s, e, _ in self._ending]
        # the union of the spans must cover [start, end)
        pos = start
        for s, e in sorted(spans):
            if s > pos:
                break
            if e > pos:
                pos = e
                if pos >= end:
                    return True
        return pos >= end

    def _violation(self, kind, message):
        self.violations.append((kind, f"{get_sim_time('ns'):.0f} ns: {message}"))

    # -- checks at the end of a run ------------------------------------------------------------
    def overdue(self, now=None):
        """Non-posted requests not answered within the bound."""
        now = get_sim_time("ns") if now is None else now
        return [(t, tlp) for t, tlp in self.pending.values() if now - t > COMPLETION_BOUND_NS]

    def forget_pending(self):
        self.pending = {}


def find_capability_offsets(config_bytes):
    """{cap id: [offsets]} of the capability list in a configuration-space image."""
    out = {}
    pos = config_bytes[byte_offset(PciType0Header, "capabilities_pointer")]
    seen = set()
    while pos >= CAP_POINTER_MIN and pos not in seen:
        seen.add(pos)
        out.setdefault(config_bytes[pos], []).append(pos)
        # The pointer's two low bits are reserved (PCI Local Bus 3.0 §6.7).
        pos = config_bytes[pos + _CAP_NEXT] & ~3
    return out


__all__.append("find_capability_offsets")
