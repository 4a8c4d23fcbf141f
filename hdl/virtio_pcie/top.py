# SPDX-License-Identifier: BSD-2-Clause
"""A complete virtio PCI Express function, assembled from parameters.

::

                      ┌───────────────────────── VirtioPcieDevice ─────────────────────────────┐
    rx_req  ─────────►│ PcieFunction ── common/isr/device/notify/legacy ──► VirtioTransport    │
    tx_cpl  ◄─────────│  (config space,            (register bus)            │  │  │          │
                      │   completer, MSI-X, INTx)  ◄── msix, intx ───────────┘  │  │          │
    tx_req  ◄─────────│  ◄── dma_req ── DmaEngine ◄─ client 0 ─ VirtqueueEngine ◄┘  │ queues   │
    rx_cpl  ─────────►│               (read/write)  ◄─ client 1.. ─┐   │  ▲          │          │
                      │                                           │   ▼  │ used     │ config   │
                      │                                          device back-end ◄───┘          │
                      │                                          (VirtioBlkDevice: medium AXI4; │
                      │                                           VirtioNetDevice: MAC streams) │
                      └────────────────────────────────────────────────────────────────────────┘

Only composition happens here: each block's behaviour is documented in its own module. The
parameters choose the device type and its options; everything the blocks must agree on (queue
count, offered features, device-configuration size, MSI-X vectors, which request port each queue
uses, the longest descriptor chain the engine must accept) is derived once, from the device
back-end, and handed to the others.

Ports: the four TLP streams of :mod:`virtio_pcie.tlp.signature`; the device's own side (blk:
``medium``, an AXI4 master, unless the disk is in on-chip RAM, and ``capacity`` when the size
is not a parameter; net: ``mac_tx``/``mac_rx`` AXI-Stream, ``link_up``, ``loopback`` and the
device's drop and frame counters ``net_stats``); in
``"ext"`` configuration mode (a vendor hard IP owns the header) ``ext_cfg`` and ``cfg_port``;
and ``counters`` for benchmarks and bring-up.
"""

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from .devices.axi_ram import AxiRam
from .devices.blk import VirtioBlkDevice
from .devices.net import VirtioNetDevice
from .dma.engine import DmaEngine
from .dma.interface import DmaStatistics
from .function.interface import FunctionConfig
from .function.layout import FunctionLayout
from .function.pcie_function import PcieFunction
from .function.register_bus import RegisterBusSignature
from .function.config_space import CONFIG_ADDR_WIDTH
from .spec.virtio import VirtioDeviceId, VirtioF
from .tlp.signature import DATA_WIDTHS, TlpSignature
from .virtio.engine_signatures import VirtqCounters
from .virtio.transport import VirtioTransport
from .virtio.virtqueue import DEFAULT_IRQ_HOLDOFF, VirtqueueEngine

__all__ = ["DEVICES", "VirtioPcieDevice"]

DEVICES = ("blk", "net")

_DEVICE_TYPE = {"blk": VirtioDeviceId.BLOCK, "net": VirtioDeviceId.NET}

#: The blk device's DMA read budget, in cycles of its data path's rate: 1.5 µs of data at
#: 250 MHz (6 KiB at 128 bits), the bandwidth-delay product of a 1 µs host and a little more.
BLK_READ_BUDGET_CYCLES = 384
#: DMA read requests in progress at once on a net device, per data path width: the transmit path
#: keeps about two reads per frame a host round trip long (see the net branch below), so 128 and
#: 256 bits take the read engine's most. At 64 bits the data path, not the requests, bounds 64 B
#: frames, and more reads in flight only queued more completions ahead of each (TX 64 B at
#: L = 1 us: 12.46 Mpps with 32, 11.66 with 64; at 256 bits 13.64 with 32, 17.53 with 64).
NET_READ_OPS = {64: 32, 128: 64, 256: 64}

#: Interrupt moderation on the whole device, per data path width: the low-water mark (a held
#: notification goes out when the device has this many chains of the queue left in hand) and
#: the most cycles a notification is held. At QD 32 with the notify benchmark's host: 64 bits,
#: a request every ~2 us, (16384, 8): about 21 requests per interrupt, 0.047 interrupts per
#: request (10 gave 19.6 and 0.051, 12 gave 18.2, 6 ran the queue dry: 17 and 90 % of the
#: data path); 128 bits, (8192, 13): about 20 (with NOTIFICATION_DATA's earlier refill, 12
#: gave 0.041 interrupts per request but 92.2 % of the data path, 13 gives 0.0499 and 97.8 %,
#: 14 0.053; before it, 10 and 11 ran the queue dry); 256 bits, (16384, 17): about 21, 0.048
#: interrupts per request at 85.4 % of the data path, where moderation off gives 0.160 at
#: 96.1 % (a refill takes ~7.5 us there, 15 requests' worth, which leaves any release rule
#: almost no room: 15 and 16 gave 0.045 at 83 %, 18 gave 0.053 at 88 %; behind a Gen3 x8 link
#: 17 gives 0.053 at 75.5 % against 0.131 at 87.5 % off). ``irq_holdoff=0`` takes the data
#: path instead; see docs/virtqueue.md. A held notification shadowed by another queue's
#: message is decided again before it goes (the legacy mix's shared vector,
#: tb/test_system_blk_legacy.py).
IRQ_LOW_WATER = {64: 8, 128: 13, 256: 17}
IRQ_HOLDOFF = {64: 2 * DEFAULT_IRQ_HOLDOFF, 128: DEFAULT_IRQ_HOLDOFF,
               256: 2 * DEFAULT_IRQ_HOLDOFF}


class VirtioPcieDevice(wiring.Component):
    """A virtio device on PCI Express: ``device`` is ``"blk"`` or ``"net"``.

    Parameters
    ----------
    device : str
        ``"blk"`` (virtio-blk) or ``"net"`` (virtio-net).
    data_width : int
        TLP data path width, in bits (64, 128 or 256); also the DMA and device data width.
    transitional : bool
        Add the legacy (virtio 0.9.5) I/O-BAR interface and transitional IDs.
    config_mode : str
        ``"full"``: the function owns its whole configuration space (soft PCIe, simulation,
        co-simulation). ``"ext"``: a hard IP owns the header, BARs and standard capabilities and
        forwards configuration accesses from ``ext_cap_pointer`` up (7-series
        ``EXT_CFG_CAP_PTR``); its configuration state comes in on ``ext_cfg``.
    ext_cap_pointer : int
        First forwarded configuration offset in ``"ext"`` mode.
    queues : int
        blk: request queues (MQ when > 1); net: receive/transmit queue pairs (MQ when > 1).
    max_queue_size : int
        Largest (and reset) ``queue_size``.
    msix_vectors : int or None
        MSI-X table size; by default one per queue plus one for configuration changes (Linux's
        per-queue vector policy).
    notify_off_multiplier : int
        0, 4, or a power of two up to a page (one doorbell page per queue).
    capacity : int or None
        blk: disk size in 512-byte sectors; ``None`` adds a ``capacity`` input.
    onchip_medium : bool
        blk: keep the disk in on-chip RAM (needs ``capacity``) instead of the ``medium`` AXI4
        master port.
    blk_options, net_options : dict
        Further keyword arguments of :class:`~.devices.blk.VirtioBlkDevice` /
        :class:`~.devices.net.VirtioNetDevice`.
    dma_options : dict
        Further keyword arguments of :class:`~.dma.engine.DmaEngine`. blk's default
        ``read_budget`` bounds the device's reads (client 1) to
        :data:`BLK_READ_BUDGET_CYCLES` of data, so that the virtqueue engine's ring and
        descriptor reads do not wait behind its data in the host's completion queue.
    engine_options : dict
        Further keyword arguments of :class:`~.virtio.virtqueue.VirtqueueEngine`.
    irq_holdoff, irq_low_water : int or None
        Interrupt moderation of the virtqueue engine (its ``irq_holdoff`` and ``irq_low_water``
        inputs, here constants): a due notification waits at most ``irq_holdoff`` cycles, and
        only while the device has more than ``irq_low_water`` chains of the queue in hand.
        Defaults: :data:`IRQ_LOW_WATER` and :data:`IRQ_HOLDOFF` of the data width. At 256 bits
        they cost the data path (85 % against 96 % with moderation off at QD 32, L = 1 us);
        ``irq_holdoff=0`` turns moderation off. See docs/virtqueue.md.
    """

    def __init__(self, *, device="blk", data_width=128, transitional=False, config_mode="full",
                 ext_cap_pointer=0xA8, queues=1, max_queue_size=256, msix_vectors=None,
                 notify_off_multiplier=4, capacity=None, onchip_medium=False,
                 blk_options=None, net_options=None, dma_options=None, engine_options=None,
                 irq_holdoff=None, irq_low_water=None):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        if data_width not in DATA_WIDTHS:
            raise ValueError(f"data_width must be one of {DATA_WIDTHS}, not {data_width!r}")
        if not isinstance(queues, int) or queues < 1:
            raise ValueError(f"queues must be a positive integer, not {queues!r}")
        if onchip_medium and (device != "blk" or capacity is None):
            raise ValueError("onchip_medium needs device='blk' and a capacity")
        if device == "net" and transitional and not (net_options or {}).get("mrg_rxbuf", True):
            # A legacy driver that does not negotiate MRG_RXBUF uses the 10-byte header
            # (virtio 1.2 §5.1.6.1, legacy interface); the net device serves only the 12-byte
            # one, and a legacy driver cannot be refused. Every Linux version negotiates
            # MRG_RXBUF when it is offered.
            raise ValueError("a transitional net device must offer mrg_rxbuf (legacy drivers "
                             "without it use the 10-byte virtio_net_hdr, which is not served)")
        for name, value in (("irq_holdoff", irq_holdoff), ("irq_low_water", irq_low_water)):
            if value is not None and (not isinstance(value, int) or not 0 <= value < 1 << 16):
                raise ValueError(f"{name} must be None or an integer from 0 to 65535, "
                                 f"not {value!r}")
        if irq_holdoff is None:
            irq_holdoff = IRQ_HOLDOFF[data_width]
        self._irq_holdoff = irq_holdoff
        if irq_low_water is None:
            irq_low_water = IRQ_LOW_WATER[data_width]
        self._irq_low_water = irq_low_water
        self._device_name = device
        self._data_width = data_width
        self._onchip = onchip_medium
        self._capacity = capacity

        # --- the device back-end decides queues, features and configuration size ------------
        if device == "blk":
            self._device = VirtioBlkDevice(data_width=data_width, queue_count=queues,
                                           capacity=capacity, **(blk_options or {}))
            queue_count = queues
            features = self._device.features
            port_of_queue = (0,) * queue_count
            pulled_ports = ()
            dma_clients = 2
            # Linux builds a request of up to seg_max data segments and puts every request of
            # more than one descriptor in an indirect table (virtio_ring.c): the engine must
            # take the table's entries and, in the chain, the descriptor pointing to it.
            request_chain = self._device.max_chain
            # No look-ahead avail refresh: a blk queue rarely streams more than a batch, and
            # its extra avail->idx read (and the wait for it) made QD 1 slower (1721.6 -> 1885.5
            # cycles per 4 KiB read at 128 bits, L = 1 us) for nothing at QD 32.
            # The refill the interrupt moderation waits for: its indirect tables go out with
            # the ring entries' arrival (the early window of the heads Linux reuses) and a batch
            # across the ring's end is read at once (docs/virtqueue.md, "fast_refill"). At 64
            # bits, where QD 8 writes are bound by the inbound data path, a 64-descriptor window
            # per batch (128 cycles there) cost them 8.6 points: 16 descriptors cost 1.
            engine_limits = {"max_indirect": max(64, request_chain),
                             "max_chain": max(64, request_chain + 1),
                             "avail_lookahead": False, "fast_refill": True,
                             "walk_window": 16 if data_width == 64 else 64}
            # A root complex returns completions in request order (roughly), so every byte of
            # read data outstanding delays the completions of later reads. Left to the 16 KiB
            # completion buffer, a write's data reads queue 4 µs of completions at 128 bits (4
            # times the bandwidth-delay product at 1 µs) and each ring, descriptor and header
            # read waits behind them, starving the next requests' chain walks. The budget keeps
            # the data reads near the bandwidth-delay product (see docs/performance.md).
            dma_defaults = {"read_budget": (None, BLK_READ_BUDGET_CYCLES * data_width // 8)}
        else:
            self._device = VirtioNetDevice(data_width=data_width, queue_pairs=queues,
                                           **(net_options or {}))
            queue_count = self._device.queue_count
            features = self._device.device_features
            port_names = ["rxq", "txq", "ctrlq"]
            roles = self._device.queue_roles
            port_of_queue = tuple(port_names.index(port) for _role, port, _pulled in roles)
            pulled_ports = (port_names.index("rxq"),)
            dma_clients = 3
            # 64 DMA read requests in progress (the engine's default is 32; not at 64 bits, see
            # NET_READ_OPS): transmitting 64 B frames at line rate takes two reads per frame
            # (the prefetcher's head window, the device's header and frame) and a little more
            # (ring entries, used_event), each held for a host round trip; at L = 1 µs 32
            # requests allow at most ~14 Mpps (32 / (2.15 reads x 1.05 µs)), below 10 GbE's
            # 14.88 (docs/net.md).
            dma_defaults = {"read_ops": NET_READ_OPS[data_width]}
            # Linux's longest chains are transmit ones: the header, the linear part and up to
            # MAX_SKB_FRAGS (17) fragments; the engine's default limits cover them. Receive
            # buffers are single descriptors whose heads come from Linux's free list in runs
            # (up or down): a 32-descriptor window (one 512-byte read) serves a run of them
            # with one round trip (docs/net.md, performance).
            engine_limits = {"walk_window": 64, "avail_batch": 128, "prefetch_slots": 32}
        if transitional:
            # A transitional device MUST offer ANY_LAYOUT (virtio 1.2 §6.3); ours take any.
            features |= 1 << VirtioF.ANY_LAYOUT
        engine_limits = {**engine_limits, **(engine_options or {})}
        if engine_limits.get("fast_refill"):
            # The doorbell's avail index lets the walker read a kicked refill's ring entries
            # with its avail->idx read, one host round trip sooner (Linux 6.4 and later write it;
            # offered only to an engine that uses it, checklist rule 38).
            features |= 1 << VirtioF.NOTIFICATION_DATA
        self._features = features
        self._queue_count = queue_count
        self._port_of_queue = port_of_queue
        if msix_vectors is None:
            msix_vectors = queue_count + 1

        self._layout = FunctionLayout(
            device_type=_DEVICE_TYPE[device], transitional=transitional,
            queue_count=queue_count, msix_vectors=msix_vectors,
            notify_off_multiplier=notify_off_multiplier,
            notification_data=bool(features >> VirtioF.NOTIFICATION_DATA & 1),
            device_cfg_length=self._device.config_size, config_mode=config_mode,
            ext_cap_pointer=ext_cap_pointer)
        self._function = PcieFunction(layout=self._layout, data_width=data_width)
        self._transport = VirtioTransport(
            queue_count=queue_count, queue_size_max=max_queue_size,
            device_type=_DEVICE_TYPE[device], device_features=features,
            device_config_size=self._device.config_size, msix_vectors=msix_vectors,
            notify_off_multiplier=notify_off_multiplier, transitional=transitional)
        self._dma = DmaEngine(data_width=data_width, clients=dma_clients,
                              **{**dma_defaults, **(dma_options or {})})
        self._engine = VirtqueueEngine(data_width=data_width, queue_count=queue_count,
                                       max_queue_size=max_queue_size,
                                       port_of_queue=port_of_queue, pulled_ports=pulled_ports,
                                       **engine_limits)

        members = {
            "rx_req":   In(TlpSignature(data_width)),
            "tx_cpl":   Out(TlpSignature(data_width)),
            "tx_req":   Out(TlpSignature(data_width)),
            "rx_cpl":   In(TlpSignature(data_width)),
            "counters": Out(self.counters_layout()),
        }
        if config_mode == "ext":
            members["ext_cfg"]  = In(FunctionConfig)
            members["cfg_port"] = In(RegisterBusSignature(CONFIG_ADDR_WIDTH))
        if device == "blk":
            if not onchip_medium:
                members["medium"] = Out(self._device.medium.signature)
            if capacity is None:
                members["capacity"] = In(64)
        else:
            members["mac_tx"]   = Out(self._device.mac_tx.signature)
            members["mac_rx"]   = In(self._device.mac_rx.signature.flip())
            members["link_up"]  = In(1)
            members["loopback"] = In(1)
            members["net_stats"] = Out(self._device.stats.signature)
        super().__init__(members)

    # -- what users of the core need to know -----------------------------------------------------

    @staticmethod
    def counters_layout():
        """Layout of the ``counters`` port: the virtqueue engine's and the DMA engine's."""
        return data.StructLayout({"virtq": VirtqCounters, "dma": DmaStatistics})

    @property
    def layout(self):
        """The :class:`~.function.layout.FunctionLayout` (IDs, BARs, capabilities, windows)."""
        return self._layout

    @property
    def device_features(self):
        return self._features

    @property
    def queue_count(self):
        return self._queue_count

    @property
    def device_name(self):
        return self._device_name

    @property
    def chain_limits(self):
        """``{"max_chain": ..., "max_indirect": ...}`` of the virtqueue engine: the longest chain
        and the largest indirect table it takes (blk raises both to cover ``seg_max``)."""
        return {"max_chain": self._engine.max_chain, "max_indirect": self._engine.max_indirect}

    @property
    def irq_moderation(self):
        """``(irq_holdoff, irq_low_water)`` of the virtqueue engine (holdoff 0: off)."""
        return self._irq_holdoff, self._irq_low_water

    def elaborate(self, platform):
        m = Module()
        m.submodules.function  = function  = self._function
        m.submodules.transport = transport = self._transport
        m.submodules.dma       = dma       = self._dma
        m.submodules.engine    = engine    = self._engine
        m.submodules.device    = device    = self._device

        # --- the link ---------------------------------------------------------------------------
        connect(m, host=flipped(self.rx_req), function=function.rx_req)
        connect(m, function=function.tx_cpl, host=flipped(self.tx_cpl))
        connect(m, function=function.tx_req, host=flipped(self.tx_req))
        connect(m, host=flipped(self.rx_cpl), dma=dma.rx_cpl)
        connect(m, dma=dma.tx_req, function=function.dma_req)
        if "ext_cfg" in self.signature.members:
            m.d.comb += function.ext_cfg.eq(self.ext_cfg)
            connect(m, adapter=flipped(self.cfg_port), function=function.cfg_port)

        # --- the function's state and events ------------------------------------------------------
        m.d.comb += [
            transport.function_config.eq(function.cfg),
            dma.cfg.eq(function.cfg),
            function.events.eq(dma.events),
        ]

        # --- registers: every virtio window of the function is a transport target ---------------
        for name in self._layout.register_windows:
            connect(m, function=getattr(function, name), transport=getattr(transport, name))
        connect(m, transport=transport.msix, function=function.msix)
        m.d.comb += function.intx.eq(transport.intx)

        # --- queues -------------------------------------------------------------------------------
        # The engine's idle must cover DMA still in the engine or on its way to the link, so
        # that device_status reads 0 only after every write of the function has left
        # (virtio 1.2 §2.4: no DMA after reset completes).
        engine_idle = Signal()
        ctl = transport.queues
        connect(m, transport=ctl.config, engine=engine.control.config)
        connect(m, transport=ctl.queue_reset, engine=engine.control.queue_reset)
        connect(m, engine=engine.control.queue_reset_done, transport=ctl.queue_reset_done)
        connect(m, engine=engine.control.irq, transport=ctl.irq)
        m.d.comb += [
            engine.irq_holdoff.eq(self._irq_holdoff),
            engine.irq_low_water.eq(self._irq_low_water),
            engine.control.notify.payload.eq(ctl.notify.payload),
            engine.control.notify.valid.eq(ctl.notify.valid),
            engine.control.reset.eq(ctl.reset),
            engine.control.driver_ok.eq(ctl.driver_ok),
            engine.control.event_idx.eq(ctl.event_idx),
            engine.control.indirect_desc.eq(ctl.indirect_desc),
            ctl.needs_reset.eq(engine.control.needs_reset),
            engine_idle.eq(engine.control.idle & dma.idle),
            ctl.idle.eq(engine_idle),
        ]

        # --- DMA clients: 0 is the virtqueue engine, then the device's ---------------------------
        connect(m, engine=engine.dma, dma=dma.client[0])

        # --- the device ---------------------------------------------------------------------------
        # The transport addresses just the structure (e.g. 7 bits for blk's 0x60 bytes); the
        # device's window may be wider: the upper address bits are zero.
        tcfg, dcfg = transport.device_config, device.config
        m.d.comb += [
            dcfg.bus.addr.eq(tcfg.bus.addr),
            dcfg.bus.sel.eq(tcfg.bus.sel),
            dcfg.bus.we.eq(tcfg.bus.we),
            dcfg.bus.w_data.eq(tcfg.bus.w_data),
            dcfg.bus.stb.eq(tcfg.bus.stb),
            tcfg.bus.r_data.eq(dcfg.bus.r_data),
            tcfg.bus.ack.eq(dcfg.bus.ack),
            tcfg.changed.eq(dcfg.changed),
            tcfg.idle.eq(dcfg.idle),
            dcfg.reset.eq(tcfg.reset),
            dcfg.driver_ok.eq(tcfg.driver_ok),
            dcfg.features.eq(tcfg.features),
        ]
        if self._device_name == "blk":
            connect(m, engine=engine.request[0], device=device.requests)
            connect(m, device=device.completions, engine=engine.completion)
            connect(m, device=device.dma, dma=dma.client[1])
            if self._onchip:
                m.submodules.medium = medium = AxiRam(
                    size=self._capacity * 512, data_width=self._data_width,
                    addr_width=device.medium.signature.addr_width)
                connect(m, device=device.medium, medium=medium.bus)
            else:
                connect(m, device=device.medium, host=flipped(self.medium))
            if "capacity" in self.signature.members:
                m.d.comb += device.capacity.eq(self.capacity)
        else:
            ports = {"rxq": 0, "txq": 1, "ctrlq": 2}
            for port, index in ports.items():
                if index < len(engine.request):
                    connect(m, engine=engine.request[index], device=getattr(device, port))
            connect(m, device=device.completion, engine=engine.completion)
            connect(m, device=device.dma_tx, dma=dma.client[1])
            connect(m, device=device.dma_rx, dma=dma.client[2])
            connect(m, device=device.mac_tx, host=flipped(self.mac_tx))
            connect(m, host=flipped(self.mac_rx), device=device.mac_rx)
            m.d.comb += [
                device.link_up.eq(self.link_up),
                device.loopback.eq(self.loopback),
            ]
            connect(m, device=device.stats, host=flipped(self.net_stats))

        # --- counters -----------------------------------------------------------------------------
        m.d.comb += [
            self.counters.virtq.eq(engine.counters),
            self.counters.dma.eq(dma.stats),
        ]
        return m

