# SPDX-License-Identifier: BSD-2-Clause
"""The virtio PCI transport: the register block a host's virtio_pci driver talks to.

Virtio 1.2 §4.1 ("Virtio Over PCI Bus"): the common configuration structure (§4.1.4.3), the
notification region (§4.1.4.4), the ISR status byte (§4.1.4.5), the device-specific configuration
window (§4.1.4.6) and, in a transitional build, the legacy I/O header (§4.1.4.10, "Legacy
Interfaces: A Note on PCI Device Layout"). Every register is decoded from the layouts in
:mod:`virtio_pcie.spec.virtio`; the behaviour follows the project's checklist
(``virtio-checklist.md`` §1.C-§1.K and §1.O) and the register traffic of Linux's
``virtio_pci_modern`` and ``virtio_pci_legacy`` drivers (checklist §3).
"""

import functools
import operator

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..function.interface import MSIX_VECTOR_WIDTH, FunctionConfig, MsixRequestSignature
from ..function.register_bus import RegisterBusSignature
from ..spec.virtio import (COMMON_CFG_ACCESS, TRANSPORT_FEATURE_BITS, VIRTIO_MSI_NO_VECTOR,
                           VIRTQ_AVAIL_ALIGN, VIRTQ_DESC_ALIGN, VIRTQ_MAX_SIZE, VIRTQ_USED_ALIGN,
                           DeviceStatus, VirtioDeviceId, VirtioF, VirtioIsr,
                           VirtioNotificationData, VirtioPciCommonCfg, VirtioPciLegacyHeader,
                           VirtioPciLegacyMsix, byte_offset, byte_size, feature_dependencies,
                           notification_bytes)
from .interface import (FEATURE_BITS, DeviceConfigSignature, QueueControlSignature,
                        queue_index_width)
from .registers import (Decoded, QueueVector, ceil_log2, dword_mux, feature_window,
                        field_touched, field_write, vector_read)

__all__ = ["VirtioTransport", "SUPPORTED_TRANSPORT_FEATURES", "QueueVector", "QueueRow",
           "RESET_SETTLE_CYCLES"]

#: Transport feature bits this block (with the project's virtqueue engine) can honour.
#: NOTIFY_ON_EMPTY and ANY_LAYOUT are legacy-only and allowed in transitional builds alone.
SUPPORTED_TRANSPORT_FEATURES = {
    VirtioF.INDIRECT_DESC:     "descriptor tables (engine)",
    VirtioF.EVENT_IDX:         "used_event / avail_event suppression (engine)",
    VirtioF.VERSION_1:         "the modern interface (mandatory)",
    VirtioF.ACCESS_PLATFORM:   "bus addresses: DMA through the host's IOMMU",
    VirtioF.ORDER_PLATFORM:    "hardware memory ordering",
    VirtioF.NOTIF_CONFIG_DATA: "queue_notify_data (reads the queue index)",
    VirtioF.NOTIFICATION_DATA: "32-bit doorbells carrying the avail index (offer it only with "
                               "an engine that uses it: checklist rule 38)",
    VirtioF.RING_RESET:        "queue_reset",
}
_LEGACY_ONLY_FEATURES = (VirtioF.NOTIFY_ON_EMPTY, VirtioF.ANY_LAYOUT)

#: The per-queue registers kept in memory (queue_size as log2, the three ring addresses).
QueueRow = data.StructLayout({
    "size_log2": 4,
    "desc":      64,
    "driver":    64,
    "device":    64,
})

#: Cycles after ``reset`` rises before the engine's and device's ``idle`` are believed (they
#: need a cycle to see ``reset`` and one to report).
RESET_SETTLE_CYCLES = 4

_COMMON = VirtioPciCommonCfg
_FEATURE_WINDOWS = FEATURE_BITS // 32
_DRIVER_SETTABLE = (DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK |
                    DeviceStatus.DRIVER_OK | DeviceStatus.FAILED).value

# Register ports, in arbitration order.
_PORTS = ("common", "isr", "device", "notify", "legacy")


def _bit(flag):
    return (int(flag.value) if hasattr(flag, "value") else int(flag)).bit_length() - 1


class VirtioTransport(wiring.Component):
    """The virtio PCI transport register block (modern, optionally transitional).

    The PCI function decodes its BARs and hands each virtio structure's window to one target
    port here (:class:`~virtio_pcie.function.register_bus.RegisterBusSignature`, byte offsets
    from the structure's start). All ports are served by one access sequencer, one access at a
    time (round robin): a register access takes two cycles (grant, then ``ack``); a
    device-configuration access takes two cycles plus the device's own latency.

    Behaviour (virtio 1.2 §4.1.4; checklist rule numbers in brackets):

    * **Features** [21, 22, 63, 66, 72]: ``device_feature`` shows ``device_features`` through
      windows 0 and 1 and reads 0 for any other select; ``driver_feature`` takes any window
      (Linux writes 0..3) and reads back the *valid* bits written (those offered).
      ``FEATURES_OK`` is refused (reads back clear) if the driver wrote a bit that is not
      offered, left a dependency of :func:`~virtio_pcie.spec.virtio.feature_dependencies`
      unmet, or (modern interface) did not accept VERSION_1. Features freeze at FEATURES_OK.
    * **Device status** [24, 59, 61, 62, 67]: writes set bits (ACKNOWLEDGE, DRIVER,
      FEATURES_OK, DRIVER_OK, FAILED); attempts to clear bits are ignored; DRIVER_OK is only
      taken together with or after FEATURES_OK on the modern interface; DEVICE_NEEDS_RESET is
      set by the engine's ``needs_reset`` and stays until reset. Writing 0 resets: ``reset`` is
      raised towards the engine and the device, all transport state returns to its reset
      values, and ``device_status`` keeps its old value until both report ``idle`` (and no
      request to them is pending); then it reads 0. While a reset is in progress, accesses to
      ``common`` and ``legacy`` are held (no ``ack``) for up to ``reset_hold_cycles``, except
      modern reads of a non-zero ``device_status`` (Linux polls it): so a legacy driver's single
      read-back after writing 0 sees 0 [67], and nothing a driver writes during a reset is lost
      or half-applied. After ``reset_hold_cycles`` held accesses complete (writes ignored).
    * **Queues** [25-28, 30, 53-55, 73, 75]: ``queue_select`` takes effect at once; a queue
      ``>= queue_count`` reads size 0 and ignores writes. ``queue_size`` accepts any power of
      two ``<= queue_size_max``. Size and ring addresses are writable while the queue is
      disabled, before DRIVER_OK (after it only with RING_RESET negotiated, to re-enable a
      queue after ``queue_reset``); they may be rewritten any number of times before
      ``queue_enable`` (Linux's vector fallback, checklist §3.3). ``queue_enable`` = 1 latches
      size and addresses into a :data:`~virtio_pcie.virtio.interface.QueueConfig` on
      ``queues.config``; other values, enabling an enabled queue, and enabling rings that are
      not aligned as virtio 1.2 §2.7 requires (rule 74) are ignored.
      ``queue_msix_vector`` / ``config_msix_vector`` read back the vector, or NO_VECTOR for
      vectors ``>= msix_vectors``; all read NO_VECTOR after reset. ``queue_reset`` (offered
      RING_RESET, negotiated) sends the queue to ``queues.queue_reset`` and reads 1 until
      ``queue_reset_done``; then the queue reads disabled with default registers.
    * **Notifications** [35, 36, 38]: with ``notify_off_multiplier`` 0 the value written
      (16-bit queue index) selects the queue; otherwise the address does (``queue_notify_off``
      = queue index). Doorbells for queues that do not exist or are not enabled, or during a
      reset, are dropped; one per access otherwise, on the always-ready ``queues.notify``.
      With NOTIFICATION_DATA negotiated [35], a write of the upper two bytes too (the 32-bit
      ``{vqn, next_off, next_wrap}``) passes its upper half on as the avail index
      (``Doorbell.idx``, ``has_idx``); a 16-bit write is still a doorbell, without it. Reads
      return 0.
    * **Interrupts** [39-43, 56, 60]: a queue's ``irq`` becomes an MSI-X request for its vector
      while MSI-X is enabled (none for NO_VECTOR), else sets ISR bit 0. A device configuration
      change (``device_config.changed``) or DEVICE_NEEDS_RESET while DRIVER_OK is set sets ISR
      bit 1 and sends the configuration vector. ``intx`` is ISR != 0 while MSI-X is disabled.
      Reading ISR returns and clears it. Queue interrupts are dropped while DRIVER_OK is clear.
    * **Device configuration** [23, 44, 46]: accesses to ``device`` (and to the legacy device
      area) go to ``device_config.bus`` at the same byte offset. ``config_generation`` changes
      after a device change once any device-configuration field or the generation itself is
      read (the spec's "dirty flag" scheme), so multi-dword reads are consistent.
    * **Legacy** (``transitional``) [64, 103-106]: see :mod:`virtio_pcie.virtio.legacy`. Once
      the driver writes to the legacy interface, ``driver_ok`` towards the engine and the
      device is high without DRIVER_OK (legacy drivers use the device before it) and the
      features they see are bits 0-31.

    What the transport expects of its neighbours (beyond their signatures):

    * ``queues.idle`` and ``device_config.idle`` are truthful from
      :data:`RESET_SETTLE_CYCLES` cycles after ``reset`` rises; a ``QueueConfig`` the engine
      accepts while ``reset`` is high is discarded with the rest of its state.
    * ``device_config.changed`` strobes no later than the first cycle in which the changed value
      can be read through ``device_config.bus``.
    * ``queues.config``, ``queues.queue_reset`` and ``msix`` are accepted in bounded time (a
      ``queue_enable`` waits for the previous configuration to be taken).

    Parameters
    ----------
    queue_count : int
        Number of virtqueues (``num_queues``), 1 to 4096. Per-queue registers live in memory.
    queue_size_max : int
        Maximum (and reset) ``queue_size``, a power of two up to 32768.
    device_type : VirtioDeviceId
        Selects which feature dependencies apply.
    device_features : int
        The offered feature bits (bit n = feature n); must contain VERSION_1.
    device_config_size : int
        Bytes of the device-specific configuration structure.
    msix_vectors : int
        MSI-X Table Size of the function (0 to 2048; 0 = no MSI-X).
    notify_off_multiplier : int
        0 (one doorbell, the value names the queue) or a power of two >= 4 (doorbell per queue).
    transitional : bool
        Add the legacy I/O interface (``legacy`` port).
    reset_hold_cycles : int
        Longest time an access is held while a reset completes, or while the engine stops a
        queue a legacy driver deactivated.

    Members
    -------
    common : In(RegisterBusSignature(6))
        The common configuration structure (64 bytes).
    isr : In(RegisterBusSignature(2))
        The ISR status byte (at offset 0).
    device : In(RegisterBusSignature(device_addr_width))
        The device-specific configuration window.
    notify : In(RegisterBusSignature(notify_addr_width))
        The notification region.
    legacy : In(RegisterBusSignature(legacy_addr_width))
        Transitional builds only: the whole legacy I/O BAR.
    queues : Out(QueueControlSignature(queue_count))
        To the virtqueue engine.
    device_config : Out(DeviceConfigSignature(device_addr_width))
        To the device back-end's configuration register block.
    msix : Out(MsixRequestSignature())
        MSI-X message requests (vector numbers).
    intx : Out(1)
        INTx level (PCI Status.Interrupt Status before Interrupt Disable).
    function_config : In(FunctionConfig)
        The function's configuration (``msix_enable`` is used).
    """

    def __init__(self, *, queue_count, queue_size_max, device_type, device_features,
                 device_config_size, msix_vectors, notify_off_multiplier, transitional=False,
                 reset_hold_cycles=10_000):
        if not isinstance(queue_count, int) or not 1 <= queue_count <= 4096:
            raise ValueError(f"queue_count must be an integer from 1 to 4096, not "
                             f"{queue_count!r}")
        if (not isinstance(queue_size_max, int) or not 1 <= queue_size_max <= VIRTQ_MAX_SIZE
                or queue_size_max & (queue_size_max - 1)):
            raise ValueError(f"queue_size_max must be a power of two from 1 to {VIRTQ_MAX_SIZE}, "
                             f"not {queue_size_max!r}")
        try:
            device_type = VirtioDeviceId(device_type)
        except ValueError:
            raise ValueError(f"device_type must be a VirtioDeviceId, not {device_type!r}") \
                from None
        if not isinstance(device_config_size, int) or not 0 <= device_config_size <= 4096:
            raise ValueError(f"device_config_size must be a byte count from 0 to 4096, not "
                             f"{device_config_size!r}")
        if not isinstance(msix_vectors, int) or not 0 <= msix_vectors <= 1 << MSIX_VECTOR_WIDTH:
            raise ValueError(f"msix_vectors must be an integer from 0 to "
                             f"{1 << MSIX_VECTOR_WIDTH}, not {msix_vectors!r}")
        mult = notify_off_multiplier
        if not isinstance(mult, int) or not (
                mult == 0 or (4 <= mult <= 1 << 20 and not mult & (mult - 1))):
            raise ValueError(f"notify_off_multiplier must be 0 or a power of two from 4 to 2**20, "
                             f"not {notify_off_multiplier!r}")
        if not isinstance(reset_hold_cycles, int) or reset_hold_cycles < 1:
            raise ValueError(f"reset_hold_cycles must be a positive integer, not "
                             f"{reset_hold_cycles!r}")
        self._check_features(device_features, device_type, transitional)

        self._queue_count          = queue_count
        self._queue_size_max       = queue_size_max
        self._device_type          = device_type
        self._device_features      = device_features
        self._device_config_size   = device_config_size
        self._msix_vectors         = msix_vectors
        self._notify_off_multiplier = notify_off_multiplier
        self._transitional         = bool(transitional)
        self._reset_hold_cycles    = reset_hold_cycles

        members = {
            "common":          In(RegisterBusSignature(ceil_log2(byte_size(_COMMON)))),
            "isr":             In(RegisterBusSignature(2)),
            "device":          In(RegisterBusSignature(self.device_addr_width)),
            "notify":          In(RegisterBusSignature(self.notify_addr_width)),
            "queues":          Out(QueueControlSignature(queue_count)),
            "device_config":   Out(DeviceConfigSignature(self.device_addr_width)),
            "msix":            Out(MsixRequestSignature()),
            "intx":            Out(1),
            "function_config": In(FunctionConfig),
        }
        if self._transitional:
            members["legacy"] = In(RegisterBusSignature(self.legacy_addr_width))
        super().__init__(members)

    @staticmethod
    def _check_features(features, device_type, transitional):
        if not isinstance(features, int) or not 0 <= features < 1 << FEATURE_BITS:
            raise ValueError(f"device_features must be an integer of at most {FEATURE_BITS} "
                             f"bits, not {features!r}")
        # virtio 1.2 §6.1: the device MUST offer VERSION_1 (checklist rule 68).
        if not features >> VirtioF.VERSION_1 & 1:
            raise ValueError(f"device_features {features:#x} must offer VIRTIO_F_VERSION_1 "
                             f"(bit {int(VirtioF.VERSION_1)})")
        # Transitional devices MUST offer ANY_LAYOUT (virtio 1.2 §6.3; rule 105).
        if transitional and not features >> VirtioF.ANY_LAYOUT & 1:
            raise ValueError(f"a transitional device must offer VIRTIO_F_ANY_LAYOUT (bit "
                             f"{int(VirtioF.ANY_LAYOUT)}); device_features is {features:#x}")
        supported = set(SUPPORTED_TRANSPORT_FEATURES)
        if transitional:
            supported |= set(_LEGACY_ONLY_FEATURES)
        for bit in TRANSPORT_FEATURE_BITS:
            if features >> bit & 1 and bit not in supported:
                try:
                    name = f"VIRTIO_F_{VirtioF(bit).name}"
                except ValueError:
                    name = "a reserved bit"
                raise ValueError(f"device_features offers feature bit {bit} ({name}), which "
                                 f"this transport cannot honour (rule 69)")
        # A device MUST NOT offer a feature that requires one it does not offer (rule 69).
        all_of, any_of = feature_dependencies(device_type)
        for bit, needs in all_of.items():
            if features >> bit & 1 and not all(features >> n & 1 for n in needs):
                raise ValueError(f"device_features offers bit {bit} without bits "
                                 f"{list(needs)} it requires")
        for bit, needs in any_of.items():
            if features >> bit & 1 and not any(features >> n & 1 for n in needs):
                raise ValueError(f"device_features offers bit {bit} without any of bits "
                                 f"{list(needs)}")

    # -- Geometry, for the capability builder ---------------------------------------------------

    @property
    def queue_count(self):
        return self._queue_count

    @property
    def msix_vectors(self):
        return self._msix_vectors

    @property
    def device_features(self):
        return self._device_features

    @property
    def transitional(self):
        return self._transitional

    @property
    def notify_off_multiplier(self):
        """Value for the notification capability's ``notify_off_multiplier``."""
        return self._notify_off_multiplier

    @property
    def common_length(self):
        """Bytes of the common configuration structure (covers queue_reset, rule 31)."""
        return byte_size(_COMMON)

    @property
    def isr_length(self):
        return byte_size(VirtioIsr)

    @property
    def device_length(self):
        return self._device_config_size

    @property
    def notify_length(self):
        """``cap.length`` of the notification structure: the last doorbell plus 2 bytes, or
        4 with NOTIFICATION_DATA offered (virtio 1.2 §4.1.4.4; rules 33 and 34)."""
        return ((self._queue_count - 1) * self._notify_off_multiplier +
                notification_bytes(self._offers(VirtioF.NOTIFICATION_DATA)))

    @property
    def legacy_length(self):
        """Bytes of the legacy I/O window: header, MSI-X vectors, device configuration."""
        return (byte_size(VirtioPciLegacyHeader) + byte_size(VirtioPciLegacyMsix) +
                self._device_config_size)

    @property
    def device_addr_width(self):
        return max(2, ceil_log2(self._device_config_size))

    @property
    def notify_addr_width(self):
        return max(2, ceil_log2(self.notify_length))

    @property
    def legacy_addr_width(self):
        return max(2, ceil_log2(self.legacy_length))

    # -- Elaboration -----------------------------------------------------------------------------

    def elaborate(self, platform):
        #   common ─┐  round robin  ┌────────────┐     ┌──────────────┐ ─► queues.config,
        #   isr    ─┤   ┌───────┐   │ decoders:  │ req │ state, irq   │    queue_reset, notify
        #   device ─┼──►│ grant ├──►│ common,isr,├────►│ router, reset│ ─► device_config
        #   notify ─┤   └───────┘   │ notify,    │     │ sequencer    │ ─► msix, intx
        #   legacy ─┘               │ legacy     │     └──────────────┘ ◄─ queues.irq, idle,
        #                           └────────────┘  device access ─►      needs_reset, ...
        #                                           device_config.bus
        m = Module()
        core = _RegisterCore(self, m)

        ports = {name: getattr(self, name) for name in _PORTS if hasattr(self, name)}
        acc = _Access(max(len(port.addr) for port in ports.values()))
        owner = Signal(range(len(_PORTS)))
        last = Signal(range(len(_PORTS)))
        r_data = Signal(32)
        acked = Signal()
        settle_timer = Signal(range(self._reset_hold_cycles))

        # Device configuration bus (registered initiator) ---
        dev_bus = self.device_config.bus
        dev_stb  = Signal()
        dev_addr = Signal(len(dev_bus.addr))
        dev_we   = Signal()
        dev_sel  = Signal(4)
        dev_wdat = Signal(32)
        m.d.comb += [
            dev_bus.stb.eq(dev_stb), dev_bus.addr.eq(dev_addr), dev_bus.we.eq(dev_we),
            dev_bus.sel.eq(dev_sel), dev_bus.w_data.eq(dev_wdat),
        ]

        # Decoders (combinational, on the latched access) ---
        active = {name: Signal(name=f"{name}_active") for name in ports}
        decoded = {
            "common": self._decode_common(m, core, acc, active["common"]),
            "isr":    self._decode_isr(m, core, acc, active["isr"]),
            "device": Decoded(device=Const(1), device_addr=acc.addr),
            "notify": self._decode_notify(m, core, acc, active["notify"]),
        }
        if self._transitional:
            from .legacy import LegacyDecoder
            decoded["legacy"] = LegacyDecoder(self).elaborate(m, core, acc, active["legacy"])

        # Access sequencer: one access at a time from any port, round robin ---
        with m.FSM(name="access"):
            with m.State("Idle"):
                with m.Switch(last):
                    for rotation in range(len(_PORTS)):
                        # The port after the one served last has the highest priority.
                        order = [name for name in _PORTS[rotation + 1:] + _PORTS[:rotation + 1]
                                 if name in ports]
                        with m.Case(rotation):
                            for i, name in enumerate(order):
                                port = ports[name]
                                with (m.If if i == 0 else m.Elif)(port.stb):
                                    m.d.sync += [
                                        owner.eq(_PORTS.index(name)),
                                        last.eq(_PORTS.index(name)),
                                        acc.addr.eq(port.addr), acc.sel.eq(port.sel),
                                        acc.we.eq(port.we), acc.w_data.eq(port.w_data),
                                    ]
                                    m.next = "Access"
            with m.State("Access"):
                for name, dec in decoded.items():
                    def to_device(dec=dec):
                        # Device configuration: forward to the device's register block.
                        m.d.sync += [
                            dev_stb.eq(1), dev_addr.eq(dec.device_addr),
                            dev_we.eq(acc.we), dev_sel.eq(acc.sel),
                            dev_wdat.eq(acc.w_data),
                        ]
                        m.next = "Device"

                    def complete(name=name, dec=dec):
                        # The access completes: its side effects happen in this cycle. One
                        # that stops a queue is acknowledged once the engine has stopped it.
                        m.d.comb += [active[name].eq(1), r_data.eq(dec.r_data)]
                        with m.If(dec.wait_config):
                            m.d.sync += settle_timer.eq(0)
                            m.next = "Settle"
                        with m.Else():
                            m.d.comb += acked.eq(1)
                            m.next = "Idle"

                    with m.If((owner == _PORTS.index(name)) & ~dec.stall):
                        if isinstance(dec.device, Const):
                            # Decided here for the ports that always (device) or never
                            # (common, ISR, notify) address device configuration: an `If` on a
                            # constant makes Yosys' Verilog writer emit an attribute on an empty
                            # statement, which Yosys and Vivado reject as a syntax error
                            # (amaranth-lang/amaranth#1648).
                            (to_device if dec.device.value else complete)()
                        else:
                            with m.If(dec.device):
                                to_device()
                            with m.Else():
                                complete()
            with m.State("Settle"):
                # The engine applies a configuration only with no DMA of its blocks in flight,
                # so once it has taken it the device no longer touches the stopped queue's
                # rings. Bounded like a reset's hold, should the engine never come to rest.
                m.d.sync += settle_timer.eq(settle_timer + 1)
                with m.If(~core.config_busy | (settle_timer == self._reset_hold_cycles - 1)):
                    m.d.comb += acked.eq(1)
                    m.next = "Idle"
            with m.State("Device"):
                with m.If(dev_bus.ack):
                    m.d.sync += dev_stb.eq(0)
                    m.d.comb += [acked.eq(1), r_data.eq(dev_bus.r_data)]
                    # Reading device configuration publishes a pending generation change.
                    m.d.comb += core.req_generation_read.eq(~acc.we)
                    m.next = "Idle"

        for name, port in ports.items():
            m.d.comb += [
                port.ack.eq(acked & (owner == _PORTS.index(name))),
                port.r_data.eq(r_data),
            ]

        core.elaborate_outputs()
        return m

    # -- Modern decoders -----------------------------------------------------------------------

    def _decode_common(self, m, core, acc, active):
        """Common configuration structure (virtio 1.2 §4.1.4.3), decoded from its layout."""
        dword = acc.addr[2:]
        view = Signal(_COMMON)
        q = core
        m.d.comb += [
            view.device_feature_select.eq(q.device_feature_select),
            view.device_feature.eq(feature_window(Const(self._device_features, FEATURE_BITS),
                                           q.device_feature_select)),
            view.driver_feature_select.eq(q.driver_feature_select),
            view.driver_feature.eq(feature_window(q.driver_features_valid,
                                                  q.driver_feature_select)),
            view.config_msix_vector.eq(vector_read(q.config_vector)),
            view.num_queues.eq(self._queue_count),
            view.device_status.eq(q.status),
            view.config_generation.eq(q.generation_now),
            view.queue_select.eq(q.queue_select),
            view.queue_msix_vector.eq(VIRTIO_MSI_NO_VECTOR),
        ]
        with m.If(q.q_exists):
            m.d.comb += [
                view.queue_size.eq(q.q_size),
                view.queue_msix_vector.eq(vector_read(q.vec_cur)),
                view.queue_enable.eq(q.q_enabled),
                view.queue_notify_off.eq(q.queue_select),
                view.queue_desc.eq(q.row_cur.desc),
                view.queue_driver.eq(q.row_cur.driver),
                view.queue_device.eq(q.row_cur.device),
                view.queue_notify_data.eq(q.queue_select),
                view.queue_reset.eq(q.q_resetting & self._offers(VirtioF.RING_RESET)),
            ]

        def write(name, old):
            assert COMMON_CFG_ACCESS.get(name, "rw") == "rw", name
            return field_write(_COMMON, name, dword=dword, sel=acc.sel, w_data=acc.w_data,
                               old=old)

        hit = {}
        value = {}
        for name, old in {
            "device_feature_select": q.device_feature_select,
            "driver_feature_select": q.driver_feature_select,
            "driver_feature":        q.driver_feature_window,
            "config_msix_vector":    view.config_msix_vector,
            "device_status":         q.status,
            "queue_select":          q.queue_select,
            "queue_size":            view.queue_size,
            "queue_msix_vector":     view.queue_msix_vector,
            "queue_enable":          Const(0, 16),
            "queue_desc":            q.row_cur.desc,
            "queue_driver":          q.row_cur.driver,
            "queue_device":          q.row_cur.device,
            "queue_reset":           Const(0, 16),
        }.items():
            hit[name], value[name] = write(name, old)
        writing = acc.we & ~q.dev_reset

        # A ring the driver did not align (virtio 1.2 §2.7; rule 74) is a driver error: the
        # queue is not enabled, so the engine only ever sees aligned rings.
        aligned = ((q.row_cur.desc[:ceil_log2(VIRTQ_DESC_ALIGN)] == 0) &
                   (q.row_cur.driver[:ceil_log2(VIRTQ_AVAIL_ALIGN)] == 0) &
                   (q.row_cur.device[:ceil_log2(VIRTQ_USED_ALIGN)] == 0))
        want_enable = (writing & hit["queue_enable"] & (value["queue_enable"] == 1) &
                       q.q_can_enable & aligned)
        want_reset = (writing & hit["queue_reset"] & (value["queue_reset"] == 1) &
                      q.ring_reset_negotiated & q.q_exists & ~q.q_resetting)
        # While a reset completes, hold every access but reads of a non-zero device_status:
        # Linux polls it (virtio 1.2 §4.1.4.3.2: the driver waits for it to read 0).
        status_read = ~acc.we & field_touched(_COMMON, "device_status", dword=dword,
                                              sel=acc.sel)
        hold = q.reset_hold & ~(status_read & (q.status != 0))
        # A queue reset waits for any queue configuration still on its way to the engine, so
        # the engine never sees a queue's reset before the enable it resets.
        stall = (hold | (want_enable & q.config_busy) |
                 (want_reset & q.q_enabled & (q.queue_reset_busy | q.config_busy)))

        gen_read = ~acc.we & field_touched(_COMMON, "config_generation", dword=dword,
                                           sel=acc.sel)
        with m.If(active):
            m.d.comb += q.req_generation_read.eq(gen_read)
            with m.If(writing):
                with m.If(hit["device_feature_select"]):
                    m.d.comb += q.req_device_feature_select.eq(1)
                with m.If(hit["driver_feature_select"]):
                    m.d.comb += q.req_driver_feature_select.eq(1)
                with m.If(hit["driver_feature"]):
                    m.d.comb += [q.req_driver_feature.eq(1),
                                 q.req_driver_feature_value.eq(value["driver_feature"])]
                with m.If(hit["config_msix_vector"]):
                    m.d.comb += [q.req_config_vector.eq(1),
                                 q.req_vector_value.eq(value["config_msix_vector"])]
                with m.If(hit["device_status"]):
                    m.d.comb += [q.req_status.eq(1),
                                 q.req_status_value.eq(value["device_status"])]
                with m.If(hit["queue_select"]):
                    m.d.comb += [q.req_queue_select.eq(1),
                                 q.req_queue_select_value.eq(value["queue_select"])]
                q.write_queue_fields(
                    size=(hit["queue_size"], value["queue_size"]),
                    vector=(hit["queue_msix_vector"], value["queue_msix_vector"]),
                    desc=(hit["queue_desc"], value["queue_desc"]),
                    driver=(hit["queue_driver"], value["queue_driver"]),
                    device=(hit["queue_device"], value["queue_device"]))
                with m.If(want_enable):
                    m.d.comb += q.req_queue_enable.eq(1)
                with m.If(want_reset):
                    m.d.comb += q.req_queue_reset.eq(1)
        # The two feature-select registers take the merged values directly.
        m.d.comb += [
            q.req_device_feature_select_value.eq(value["device_feature_select"]),
            q.req_driver_feature_select_value.eq(value["driver_feature_select"]),
        ]
        return Decoded(stall=stall, r_data=dword_mux(view, dword))

    def _decode_isr(self, m, core, acc, active):
        """ISR status (virtio 1.2 §4.1.4.5): reading returns the byte and clears it."""
        view = Signal(data.StructLayout({"isr": 8, "reserved": 24}))
        m.d.comb += view.isr.eq(core.isr)
        read = ~acc.we & field_touched(view.shape(), "isr", dword=acc.addr[2:], sel=acc.sel)
        with m.If(active & read):
            m.d.comb += core.req_isr_read.eq(1)
        return Decoded(r_data=dword_mux(view, acc.addr[2:]))

    def _decode_notify(self, m, core, acc, active):
        """Notification region (virtio 1.2 §4.1.4.4; checklist rule 38)."""
        mult = self._notify_off_multiplier
        value = VirtioNotificationData(acc.w_data)
        vqn_bytes = notification_bytes(False)
        if mult == 0:
            # One doorbell: the value's vqn is the queue index.
            lanes = [Mux(acc.sel[i], value.vqn[8 * i:8 * i + 8], 0) for i in range(vqn_bytes)]
            doorbell = acc.sel[:vqn_bytes].any()
            queue = Cat(*lanes)
        else:
            # One doorbell per queue, at queue_notify_off * multiplier; the address names it.
            shift = ceil_log2(mult)
            doorbell = acc.sel.any() & (acc.addr[2:shift] == 0)
            queue = acc.addr[shift:]
        # next_off and next_wrap (the avail index) come with a write of the whole value; taken
        # only if NOTIFICATION_DATA is negotiated (see the core)
        idx_at = byte_offset(VirtioNotificationData, "next_idx")
        with_idx = acc.sel[idx_at:notification_bytes(True)].all()
        with m.If(active & acc.we & doorbell):
            m.d.comb += [core.req_notify.eq(1), core.req_notify_queue.eq(queue),
                         core.req_notify_idx.eq(value.next_idx),
                         core.req_notify_has_idx.eq(with_idx)]
        return Decoded(r_data=Const(0, 32))

    def _offers(self, bit):
        return bool(self._device_features >> int(bit) & 1)


class _Access:
    """The access being served, latched from the granted port."""

    def __init__(self, addr_width):
        self.addr   = Signal(addr_width, name="acc_addr")
        self.sel    = Signal(4, name="acc_sel")
        self.we     = Signal(name="acc_we")
        self.w_data = Signal(32, name="acc_w_data")


def _onehot_log2(value):
    return functools.reduce(operator.or_, [Mux(value[i], i, 0) for i in range(len(value))])


class _RegisterCore:
    """The transport's state and the one place that changes it (an elaboration-time helper).

    Decoders (modern and legacy) look at the state through the ``q_*`` / ``row_cur`` signals of
    the selected queue and ask for changes by driving the ``req_*`` signals in the cycle an access
    completes; :meth:`elaborate_outputs` applies them, runs the interrupt router and the reset
    sequencer, and drives the ports towards the engine, the device and the MSI-X block.
    """

    def __init__(self, transport, m):
        t = transport
        self.t = t
        self.m = m
        qc = t.queue_count
        qw = queue_index_width(qc)
        self.qw = qw
        self.offered = Const(t.device_features, FEATURE_BITS)

        # Device-wide registers ---
        self.status                = Signal(8)
        self.device_feature_select = Signal(32)
        self.driver_feature_select = Signal(32)
        self.driver_features       = Signal(FEATURE_BITS)   # as written, offered or not
        self.driver_features_extra = Signal()   # a non-zero write beyond FEATURE_BITS
        self.config_vector         = Signal(QueueVector)
        self.queue_select          = Signal(16)
        self.generation            = Signal(8)
        self.config_dirty          = Signal()
        self.isr                   = Signal(8)
        self.legacy_mode           = Signal()   # the driver uses the legacy interface
        self.needs_reset_seen      = Signal()
        self.config_irq_pending    = Signal()
        self.dev_reset             = Signal()
        self.reset_timer_max       = max(t._reset_hold_cycles, RESET_SETTLE_CYCLES)
        self.reset_timer           = Signal(range(self.reset_timer_max + 1))
        self.reset_hold            = Signal()

        # Per-queue state: flags in flip-flops, registers in memory ---
        self.enabled   = Signal(qc)
        self.resetting = Signal(qc)
        # "stale": the queue's memory row is not valid and reads as its reset value. Setting
        # every bit resets all queues at once, without sweeping the memories.
        self.stale     = Signal(qc, init=(1 << qc) - 1)
        m.submodules.queue_rows    = self.rows    = Memory(shape=QueueRow, depth=qc, init=[])
        m.submodules.queue_vectors = self.vectors = Memory(shape=QueueVector, depth=qc, init=[])
        self.rows_w    = self.rows.write_port()
        self.rows_r    = self.rows.read_port(transparent_for=(self.rows_w,))
        self.vectors_w = self.vectors.write_port()
        self.vectors_r = self.vectors.read_port(transparent_for=(self.vectors_w,))
        self.irq_vec_r = self.vectors.read_port(transparent_for=(self.vectors_w,))

        # The selected queue, as decoders see it ---
        self.q_index    = Signal(qw)
        self.q_exists   = Signal()
        self.q_enabled  = Signal()
        self.q_resetting = Signal()
        self.q_stale    = Signal()
        self.row_cur    = Signal(QueueRow)
        self.vec_cur    = Signal(QueueVector)
        self.q_size     = Signal(16)
        self.row_next   = Signal(QueueRow)
        self.vec_next   = Signal(QueueVector)
        self.q_can_config = Signal()
        self.q_can_enable = Signal()

        # Negotiation state ---
        self.driver_features_valid = Signal(FEATURE_BITS)
        self.driver_feature_window = Signal(32)
        self.ring_reset_negotiated = Signal()
        self.features_acceptable   = Signal()
        self.features_acceptable_legacy = Signal()
        self.generation_now        = Signal(8)
        self.driver_ok             = Signal()

        # Output registers' state, for stalls ---
        self.config_busy      = Signal()
        self.queue_reset_busy = Signal()

        # Requests from decoders (combinational, in the cycle an access completes) ---
        self.req_status                      = Signal()
        self.req_status_value                = Signal(8)
        self.req_status_legacy               = Signal()
        self.req_device_feature_select       = Signal()
        self.req_device_feature_select_value = Signal(32)
        self.req_driver_feature_select       = Signal()
        self.req_driver_feature_select_value = Signal(32)
        self.req_driver_feature              = Signal()
        self.req_driver_feature_value        = Signal(32)
        self.req_driver_feature_legacy       = Signal()   # GUEST_FEATURES: window 0
        self.req_config_vector               = Signal()
        self.req_vector_value                = Signal(16)
        self.req_queue_select                = Signal()
        self.req_queue_select_value          = Signal(16)
        self.req_row                         = Signal()
        self.req_queue_enable                = Signal()
        self.req_queue_disable               = Signal()
        self.req_queue_reset                 = Signal()
        self.req_notify                      = Signal()
        self.req_notify_queue                = Signal(16)
        self.req_notify_idx                  = Signal(16)
        self.req_notify_has_idx              = Signal()
        self.req_isr_read                    = Signal()
        self.req_generation_read             = Signal()
        self.req_legacy                      = Signal()

        self._elaborate_state()

    def _elaborate_state(self):
        m, t = self.m, self.t
        qc = t.queue_count
        default_row = QueueRow.const({"size_log2": ceil_log2(t._queue_size_max)})

        # The selected queue ---
        m.d.comb += [
            self.q_index.eq(self.queue_select),
            self.q_exists.eq(self.queue_select < qc),
            self.q_enabled.eq(self.enabled.bit_select(self.q_index, 1) & self.q_exists),
            self.q_resetting.eq(self.resetting.bit_select(self.q_index, 1) & self.q_exists),
            self.q_stale.eq(self.stale.bit_select(self.q_index, 1)),
            self.rows_r.addr.eq(self.q_index),
            self.vectors_r.addr.eq(self.q_index),
            self.row_cur.eq(Mux(self.q_stale, default_row, self.rows_r.data)),
            self.vec_cur.eq(Mux(self.q_stale, QueueVector.const({}), self.vectors_r.data)),
            self.q_size.eq(Mux(self.q_exists, Const(1, 16) << self.row_cur.size_log2, 0)),
            # Defaults: decoders override single fields.
            self.row_next.eq(self.row_cur),
            self.vec_next.eq(self.vec_cur),
        ]

        # Negotiation ---
        st = self.status
        all_of, any_of = feature_dependencies(t._device_type)
        f = self.driver_features
        deps = [~f[bit] | Cat(*[f[n] for n in needs]).all() for bit, needs in all_of.items()]
        deps += [~f[bit] | Cat(*[f[n] for n in needs]).any() for bit, needs in any_of.items()]
        deps_ok = Cat(*deps).all() if deps else Const(1)
        only_offered = ~(f & ~self.offered).any() & ~self.driver_features_extra
        m.d.comb += [
            self.driver_features_valid.eq(f & self.offered),
            self.driver_feature_window.eq(feature_window(f, self.driver_feature_select)),
            self.features_acceptable_legacy.eq(only_offered & deps_ok),
            # Modern drivers must accept VERSION_1 (virtio 1.2 §6.1; rule 72).
            self.features_acceptable.eq(only_offered & deps_ok & f[VirtioF.VERSION_1]),
            self.ring_reset_negotiated.eq(f[VirtioF.RING_RESET] & self.offered[VirtioF.RING_RESET]
                                          & st[_bit(DeviceStatus.FEATURES_OK)]),
            self.generation_now.eq(self.generation + self.config_dirty),
            # Legacy drivers may use the device before DRIVER_OK (virtio 1.2 §3.1.2; rule 64).
            self.driver_ok.eq((st[_bit(DeviceStatus.DRIVER_OK)] | self.legacy_mode) &
                              ~st[_bit(DeviceStatus.FAILED)] &
                              ~st[_bit(DeviceStatus.DEVICE_NEEDS_RESET)] & ~self.dev_reset),
            self.reset_hold.eq(self.dev_reset & (self.reset_timer < t._reset_hold_cycles)),
        ]
        # Queue registers may change while the queue is disabled, before DRIVER_OK or (with
        # RING_RESET) to re-enable a queue after queue_reset (virtio 1.2 §2.6.1).
        can_config = (self.q_exists & ~self.q_enabled & ~self.q_resetting & ~self.dev_reset &
                      (~st[_bit(DeviceStatus.DRIVER_OK)] | self.ring_reset_negotiated))
        m.d.comb += [
            self.q_can_config.eq(can_config),
            self.q_can_enable.eq(can_config & ~st[_bit(DeviceStatus.FAILED)] &
                                 ~st[_bit(DeviceStatus.DEVICE_NEEDS_RESET)]),
        ]

    def write_queue_fields(self, *, size=None, vector=None, desc=None, driver=None, device=None):
        """Called by a decoder inside its write context: merge written per-queue fields."""
        m = self.m
        t = self.t
        if size is not None:
            hit, value = size
            value = value[:16]
            power_of_two = (value != 0) & ((value & (value - 1)) == 0)
            with m.If(hit & self.q_can_config & power_of_two & (value <= t._queue_size_max)):
                m.d.comb += [self.row_next.size_log2.eq(_onehot_log2(value)),
                             self.req_row.eq(1)]
        for name, field in (("desc", desc), ("driver", driver), ("device", device)):
            if field is None:
                continue
            hit, value = field
            with m.If(hit & self.q_can_config):
                m.d.comb += [getattr(self.row_next, name).eq(value), self.req_row.eq(1)]
        if vector is not None:
            # queue_msix_vector may change at any time but during a queue reset (legacy Linux
            # writes it after activating the queue with QUEUE_PFN).
            hit, value = vector
            with m.If(hit & self.q_exists & ~self.q_resetting):
                m.d.comb += [self.vec_next.eq(self.vector_of(value)), self.req_row.eq(1)]

    def vector_of(self, value):
        """The stored form (:data:`QueueVector`) of a 16-bit vector register write: NO_VECTOR
        unless it names an entry of the MSI-X table (virtio 1.2 §4.1.5.1.2; rule 54)."""
        return Cat(value[:MSIX_VECTOR_WIDTH], value < self.t.msix_vectors)

    def new_status(self, value, legacy):
        """``device_status`` after a non-zero write of ``value`` (virtio 1.2 §2.1)."""
        m = self.m
        old = self.status
        bit = {flag: _bit(flag) for flag in DeviceStatus}
        new = Signal(8)
        # Writes set bits; only a reset clears them (rule 62).
        m.d.comb += new.eq(old | (value & _DRIVER_SETTABLE))
        setting_features_ok = value[bit[DeviceStatus.FEATURES_OK]] & \
            ~old[bit[DeviceStatus.FEATURES_OK]]
        acceptable = Mux(legacy, self.features_acceptable_legacy, self.features_acceptable)
        with m.If(setting_features_ok & ~acceptable):
            # The device refuses the feature set: FEATURES_OK reads back clear (rule 63).
            m.d.comb += new[bit[DeviceStatus.FEATURES_OK]].eq(0)
        with m.If(~legacy & ~new[bit[DeviceStatus.FEATURES_OK]]):
            # No DRIVER_OK without negotiated features on the modern interface.
            m.d.comb += new[bit[DeviceStatus.DRIVER_OK]].eq(0)
        return new

    def elaborate_outputs(self):
        m, t = self.m, self.t
        qc = t.queue_count
        queues = t.queues
        bit = {flag: _bit(flag) for flag in DeviceStatus}
        writes = ~self.dev_reset
        legacy = self.req_status_legacy | self.legacy_mode

        # Simple registers ---
        with m.If(writes):
            with m.If(self.req_device_feature_select):
                m.d.sync += self.device_feature_select.eq(self.req_device_feature_select_value)
            with m.If(self.req_driver_feature_select):
                m.d.sync += self.driver_feature_select.eq(self.req_driver_feature_select_value)
            # Features freeze once FEATURES_OK or DRIVER_OK is set (rule 66).
            frozen = self.status[bit[DeviceStatus.FEATURES_OK]] | \
                self.status[bit[DeviceStatus.DRIVER_OK]]
            window = Mux(self.req_driver_feature_legacy, 0, self.driver_feature_select)
            with m.If(self.req_driver_feature & ~frozen):
                with m.If(window < _FEATURE_WINDOWS):
                    m.d.sync += self.driver_features.word_select(
                        window[:max(1, ceil_log2(_FEATURE_WINDOWS))], 32
                    ).eq(self.req_driver_feature_value)
                with m.Elif(self.req_driver_feature_value != 0):
                    m.d.sync += self.driver_features_extra.eq(1)
            with m.If(self.req_config_vector):
                m.d.sync += self.config_vector.eq(self.vector_of(self.req_vector_value))
            with m.If(self.req_queue_select):
                m.d.sync += self.queue_select.eq(self.req_queue_select_value)
            with m.If(self.req_legacy):
                m.d.sync += self.legacy_mode.eq(1)

        # Device status ---
        start_reset = Signal()
        status_next = Signal(8)
        m.d.comb += status_next.eq(self.status)
        status_written = self.new_status(self.req_status_value, legacy)
        with m.If(writes & self.req_status):
            with m.If(self.req_status_value == 0):
                m.d.comb += start_reset.eq(1)
            with m.Else():
                m.d.comb += status_next.eq(status_written)
        # The engine stopped on a ring error: DEVICE_NEEDS_RESET and a configuration interrupt
        # once DRIVER_OK is set (virtio 1.2 §2.1.2; rule 61). Legacy drivers do not know the
        # bit, so it is only shown on the modern interface (as QEMU does).
        needs_reset = queues.needs_reset & ~self.needs_reset_seen & ~self.dev_reset
        with m.If(needs_reset):
            m.d.sync += self.needs_reset_seen.eq(1)
            with m.If(~self.legacy_mode):
                m.d.comb += status_next[bit[DeviceStatus.DEVICE_NEEDS_RESET]].eq(1)
        m.d.sync += self.status.eq(status_next)

        # Configuration changes and config_generation (virtio 1.2 §4.1.4.3.1; rule 23) ---
        changed = t.device_config.changed
        with m.If(self.req_generation_read):
            m.d.sync += [self.generation.eq(self.generation_now), self.config_dirty.eq(changed)]
        with m.Elif(changed):
            m.d.sync += self.config_dirty.eq(1)
        config_event = ((changed | needs_reset) & self.status[bit[DeviceStatus.DRIVER_OK]] &
                        ~self.dev_reset)

        # ISR and INTx (virtio 1.2 §4.1.4.5; rules 39-43) ---
        isr_set = Signal(8)
        isr_clear = Signal(8)
        with m.If(self.req_isr_read):
            m.d.comb += isr_clear.eq(0xFF)
        with m.If(config_event):
            # Set before the notification is sent (rule 39).
            m.d.comb += isr_set[_bit(VirtioIsr.CONFIG)].eq(1)
            m.d.sync += self.config_irq_pending.eq(1)
        m.d.sync += self.isr.eq((self.isr & ~isr_clear) | isr_set)
        msix_enable = t.function_config.msix_enable
        m.d.comb += t.intx.eq((self.isr != 0) & ~msix_enable)

        # Interrupt router: queue irqs and configuration changes to MSI-X or ISR ---
        msix = t.msix
        msix_free = ~msix.valid | msix.ready
        with m.If(msix.ready):
            m.d.sync += msix.valid.eq(0)
        config_takes_msix = Signal()
        with m.If(self.config_irq_pending):
            with m.If(~msix_enable | ~self.config_vector.valid):
                # INTx: ISR bit 1 is the notification. MSI-X with NO_VECTOR: none (rule 56).
                m.d.sync += self.config_irq_pending.eq(0)
            with m.Elif(msix_free):
                m.d.comb += config_takes_msix.eq(1)
                m.d.sync += [self.config_irq_pending.eq(0), msix.valid.eq(1),
                             msix.payload.vector.eq(self.config_vector.vector)]
        irq = queues.irq
        irq_valid = Signal()
        irq_queue = Signal(self.qw)
        irq_done = Signal()
        vec = self.irq_vec_r.data
        vec_ok = vec.valid & ~self.stale.bit_select(irq_queue, 1)
        m.d.comb += [
            irq.ready.eq(~irq_valid | irq_done),
            self.irq_vec_r.addr.eq(irq.payload),
            self.irq_vec_r.en.eq(irq.ready),
        ]
        with m.If(irq.ready):
            m.d.sync += [irq_valid.eq(irq.valid), irq_queue.eq(irq.payload)]
        with m.If(irq_valid):
            with m.If(~self.driver_ok):
                # No used-buffer notifications before DRIVER_OK or after a reset (rules 59, 60).
                m.d.comb += irq_done.eq(1)
            with m.Elif(~msix_enable):
                m.d.comb += [irq_done.eq(1), isr_set[_bit(VirtioIsr.QUEUE)].eq(1)]
            with m.Elif(~vec_ok):
                m.d.comb += irq_done.eq(1)
            with m.Elif(msix_free & ~config_takes_msix):
                m.d.comb += irq_done.eq(1)
                m.d.sync += [msix.valid.eq(1), msix.payload.vector.eq(vec.vector)]

        # Per-queue state ---
        row_write = writes & self.req_row
        m.d.comb += [
            self.rows_w.addr.eq(self.q_index), self.rows_w.data.eq(self.row_next),
            self.rows_w.en.eq(row_write),
            self.vectors_w.addr.eq(self.q_index), self.vectors_w.data.eq(self.vec_next),
            self.vectors_w.en.eq(row_write),
        ]
        with m.If(row_write):
            m.d.sync += self.stale.bit_select(self.q_index, 1).eq(0)

        config = queues.config
        m.d.comb += self.config_busy.eq(config.valid)
        with m.If(config.ready):
            m.d.sync += config.valid.eq(0)
        with m.If(writes & (self.req_queue_enable | self.req_queue_disable)):
            # virtio 1.2 §4.1.4.3.2: the configuration is latched at queue_enable (rule 73).
            m.d.sync += [
                self.enabled.bit_select(self.q_index, 1).eq(self.req_queue_enable),
                config.valid.eq(1),
                config.payload.queue.eq(self.q_index),
                config.payload.size.eq(Const(1, 16) << self.row_next.size_log2),
                config.payload.desc.eq(self.row_next.desc),
                config.payload.driver.eq(self.row_next.driver),
                config.payload.device.eq(self.row_next.device),
                config.payload.enable.eq(self.req_queue_enable),
            ]

        queue_reset = queues.queue_reset
        m.d.comb += self.queue_reset_busy.eq(queue_reset.valid)
        with m.If(queue_reset.ready):
            m.d.sync += queue_reset.valid.eq(0)
        with m.If(writes & self.req_queue_reset):
            with m.If(self.q_enabled):
                m.d.sync += [self.resetting.bit_select(self.q_index, 1).eq(1),
                             queue_reset.valid.eq(1), queue_reset.payload.eq(self.q_index)]
            with m.Else():
                # Nothing runs on a disabled queue: its registers return to their defaults.
                m.d.sync += self.stale.bit_select(self.q_index, 1).eq(1)
        done = queues.queue_reset_done
        with m.If(done.valid & self.resetting.bit_select(done.payload, 1)):
            # virtio 1.2 §2.6.1: reset done reads 0 in queue_reset and queue_enable (rule 26).
            m.d.sync += [self.resetting.bit_select(done.payload, 1).eq(0),
                         self.enabled.bit_select(done.payload, 1).eq(0),
                         self.stale.bit_select(done.payload, 1).eq(1)]

        # Doorbells: to the engine, for existing enabled queues only (rule 36) ---
        notify_queue = self.req_notify_queue[:self.qw]
        doorbell = (writes & self.req_notify & (self.req_notify_queue < qc) &
                    self.enabled.bit_select(notify_queue, 1))
        # Levels towards the engine and the device ---
        features = Mux(self.legacy_mode, self.driver_features_valid[:32],
                       self.driver_features_valid)
        m.d.sync += [queues.notify.valid.eq(doorbell),
                     queues.notify.payload.queue.eq(notify_queue),
                     queues.notify.payload.idx.eq(self.req_notify_idx),
                     queues.notify.payload.has_idx.eq(
                         self.req_notify_has_idx & features[VirtioF.NOTIFICATION_DATA])]
        m.d.comb += [
            queues.reset.eq(self.dev_reset),
            queues.driver_ok.eq(self.driver_ok),
            queues.event_idx.eq(features[VirtioF.EVENT_IDX]),
            queues.indirect_desc.eq(features[VirtioF.INDIRECT_DESC]),
            t.device_config.reset.eq(self.dev_reset),
            t.device_config.driver_ok.eq(self.driver_ok),
            t.device_config.features.eq(features),
        ]

        # Reset sequencer (virtio 1.2 §2.4; rules 24, 59, 67) ---
        quiet = (queues.idle & t.device_config.idle & ~config.valid & ~queue_reset.valid &
                 ~msix.valid & ~irq_valid)
        with m.If(start_reset):
            m.d.sync += [
                self.dev_reset.eq(1),
                self.reset_timer.eq(0),
                self.device_feature_select.eq(0),
                self.driver_feature_select.eq(0),
                self.driver_features.eq(0),
                self.driver_features_extra.eq(0),
                self.config_vector.eq(QueueVector.const({})),
                self.queue_select.eq(0),
                self.isr.eq(0),
                self.legacy_mode.eq(0),
                self.needs_reset_seen.eq(0),
                self.config_irq_pending.eq(0),
                self.enabled.eq(0),
                self.resetting.eq(0),
                self.stale.eq((1 << qc) - 1),
            ]
        with m.Elif(self.dev_reset):
            with m.If(self.reset_timer != self.reset_timer_max):
                m.d.sync += self.reset_timer.eq(self.reset_timer + 1)
            with m.If((self.reset_timer >= RESET_SETTLE_CYCLES) & quiet):
                m.d.sync += [self.dev_reset.eq(0), self.status.eq(0)]
