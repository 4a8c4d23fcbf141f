# SPDX-License-Identifier: BSD-2-Clause
"""The virtio-net device back-end (virtio 1.2 §5.1, "Network Device"): a NIC between the
virtqueue engine and an Ethernet MAC.

::

            txq (pushed) ──► NetTxFetch ──► NetTxChecksum ──► NetTxOutput ──► mac_tx ─┐ loopback
     dma_tx.rd ◄─────────┘      └──► transmit buffer ◄─────────┴──────────────┘       │
                                                                                         ▼
     rxq (pulled) ◄─► NetRxCache ◄──► NetRxEgress ◄── frame FIFO ◄── NetRxIngress ◄── mac_rx
     dma_rx.wr ◄──────────────────────────┘   └──► NetRxBuffer ◄─────────┘ (+NetRxFilter)
     ctrlq (pushed) ──► NetControl ──► filter state, queue pairs, MAC ──► config, ingress
     dma_rx.rd, acks ◄────┘
     completion ◄── NetUsedArbiter ◄── control, returned chains, transmit, receive
     config.bus ──► NetConfigRegisters (mac, status/LINK_UP, max_virtqueue_pairs, mtu)

**Queues** (virtio 1.2 §5.1.2): receiveq *k* is ``2k``, transmitq *k* is ``2k + 1``, the
controlq ``2 * queue_pairs`` (with VIRTIO_NET_F_MQ negotiated; else queue 2). The integration
routes every receive queue to ``rxq`` as a *pulled* queue, every transmit queue to ``txq`` and the
control queue to ``ctrlq`` (both pushed): see :attr:`VirtioNetDevice.queue_roles`. Without MQ
and with more than one pair offered, the control queue is queue 2 (a receive queue under MQ); the
device then polls it through ``rxq`` (see :class:`~.net_ctrl.NetControl`).

**Steering**: frames go to the receive queue of pair :func:`~.net_interface.rx_steer` (flow
hash, pairs in use); after a device reset, and until VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, only pair
1 is used (virtio 1.2 §5.1.6.5.5). Transmit queues are served in the order their chains arrive.

**DMA**: ``dma_tx`` carries the transmit frame reads; ``dma_rx`` the receive frame writes, the
control commands' reads and their acks (tag bit 7). Each client's buffer is owned here.

**Device reset** (``config.reset``): chains arriving are dropped, frames in flight finish their
DMA and are freed without completions (each piece of work carries the generation of resets it
started in), the control state returns to its defaults, and ``config.idle`` rises once no DMA is
in flight. Counters keep counting.

Only VIRTIO_F_VERSION_1 drivers are served (12-byte ``virtio_net_hdr`` with ``num_buffers``).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect

from ..dma.interface import DmaClientSignature
from ..spec.ethernet import ETH_ZLEN
from ..spec.virtio import VirtioF, VirtioNetConfig, VirtioNetF, byte_size, feature_mask
from ..virtio.interface import (
    DeviceConfigSignature, VirtqCompletionSignature, VirtqRequestSignature,
)
from .net_config import NetConfigRegisters
from .net_ctrl import NetControl
from .net_interface import (
    DMA_TAG_CTRL, GENERATION_BITS, NET_COUNTERS, AxiStreamSignature, FrameBufferGeometry,
    NetStatsSignature, RxFrame, mac_to_int, max_frame_bytes,
)
from .net_rx_buffer import NetRxBuffer
from .net_rx_cache import NetRxCache
from .net_rx_egress import NetRxEgress
from .net_rx_ingress import NetRxIngress
from .net_tx_checksum import NetTxChecksum
from .net_tx_fetch import NetTxFetch
from .net_tx_output import NetTxOutput
from .net_used_arbiter import NetUsedArbiter

__all__ = ["VirtioNetDevice", "net_device_features"]

_MTU_MIN, _MTU_MAX = 68, 9000   # virtio 1.2 §5.1.4.1 (mtu >= 68); the 32-bit checksum sums


def net_device_features(*, queue_pairs=1, mrg_rxbuf=True, csum=True, guest_csum=True,
                        ctrl_vq=True):
    """The feature bits a :class:`VirtioNetDevice` with these parameters offers."""
    bits = [VirtioF.VERSION_1, VirtioF.ACCESS_PLATFORM, VirtioF.ORDER_PLATFORM,
            VirtioF.INDIRECT_DESC, VirtioF.EVENT_IDX,
            VirtioNetF.MAC, VirtioNetF.STATUS, VirtioNetF.MTU]
    if mrg_rxbuf:
        bits.append(VirtioNetF.MRG_RXBUF)
    if csum:
        bits.append(VirtioNetF.CSUM)
    if guest_csum:
        bits.append(VirtioNetF.GUEST_CSUM)
    if ctrl_vq:
        # Everything that depends on the control queue comes with it, and only with it
        # (virtio 1.2 §5.1.3.1; Linux refuses to probe otherwise).
        bits += [VirtioNetF.CTRL_VQ, VirtioNetF.CTRL_RX, VirtioNetF.CTRL_MAC_ADDR]
        if queue_pairs > 1:
            bits.append(VirtioNetF.MQ)
    return feature_mask(*bits)


class VirtioNetDevice(wiring.Component):
    """A virtio network device back-end with AXI4-Stream MAC ports.

    Parameters
    ----------
    data_width : int
        DMA and MAC data path width in bits: 64, 128 or 256.
    queue_pairs : int
        ``max_virtqueue_pairs`` (1 to 16); more than one offers VIRTIO_NET_F_MQ.
    mac_address : str or int
        The MAC address (``"52:54:00:12:34:56"``).
    mtu : int
        ``mtu`` (68 to 9000), offered as VIRTIO_NET_F_MTU. Frames up to ``mtu + 18`` bytes pass
        (an Ethernet header with one VLAN tag), both ways.
    mrg_rxbuf, csum, guest_csum, ctrl_vq : bool
        Offer these features (all implemented; ``ctrl_vq`` also brings CTRL_RX, CTRL_MAC_ADDR
        and, with several pairs, MQ).
    mac_table_entries : int
        MAC filter table size (unicast and multicast entries together).
    tx_buffer_bytes, rx_buffer_bytes : int
        Transmit and receive frame buffers (powers of two, 1 KiB to 32 KiB).
    tx_frames_in_flight, rx_frames_in_flight : int
        Frames whose DMA may be in flight together, each way.
    rx_cache_segments : int
        Receive buffers held per receive queue (see :class:`~.net_rx_cache.NetRxCache`).
    rx_fetch_depth : int
        Receive fetches in flight per queue.
    ctrl_buffer_bytes : int
        Control command buffer.
    ctrl_poll_cycles : int
        Control queue polling period without MQ (see above).
    config_addr_width : int
        Width of the device configuration window's address.

    Members
    -------
    txq : In(VirtqRequestSignature(queue_count))
        Transmit queues' chains (pushed; ``fetch`` is unused).
    rxq : In(VirtqRequestSignature(queue_count))
        Receive queues (pulled: the device fetches).
    ctrlq : In(VirtqRequestSignature(queue_count))
        The control queue (pushed); only with ``ctrl_vq``.
    completion : Out(VirtqCompletionSignature(queue_count))
        Used entries; a mergeable frame's entries form one batch.
    dma_tx, dma_rx : Out(DmaClientSignature(data_width))
    config : In(DeviceConfigSignature(config_addr_width))
    mac_tx : Out(AxiStreamSignature(data_width))
        Frames to the MAC, 60 bytes or more, no FCS; ``tuser`` is 0.
    mac_rx : In(AxiStreamSignature(data_width))
        Frames from the MAC, no FCS; ``tuser`` marks a bad frame; ``tready`` is always 1.
    link_up : In(1)
        Synchronous to the device clock; a change is a configuration change.
    loopback : In(1)
        Transmit frames go to the receive path instead of ``mac_tx`` (``mac_rx`` is ignored).
    stats : Out(NetStatsSignature())
    """

    def __init__(self, *, data_width=128, queue_pairs=1, mac_address="52:54:00:12:34:56",
                 mtu=1500, mrg_rxbuf=True, csum=True, guest_csum=True, ctrl_vq=True,
                 mac_table_entries=16, tx_buffer_bytes=16384, rx_buffer_bytes=16384,
                 tx_frames_in_flight=32, rx_frames_in_flight=32, rx_cache_segments=32,
                 rx_fetch_depth=8, ctrl_buffer_bytes=256, ctrl_poll_cycles=256,
                 config_addr_width=8):
        if data_width not in (64, 128, 256):
            raise ValueError(f"data_width must be 64, 128 or 256, not {data_width!r}")
        if not isinstance(queue_pairs, int) or not 1 <= queue_pairs <= 16:
            raise ValueError(f"queue_pairs must be an integer from 1 to 16, not {queue_pairs!r}")
        if queue_pairs > 1 and not ctrl_vq:
            raise ValueError(f"queue_pairs {queue_pairs} needs ctrl_vq (VIRTIO_NET_F_MQ depends "
                             f"on VIRTIO_NET_F_CTRL_VQ)")
        if not isinstance(mtu, int) or not _MTU_MIN <= mtu <= _MTU_MAX:
            raise ValueError(f"mtu must be an integer from {_MTU_MIN} to {_MTU_MAX}, not {mtu!r}")
        for name, value in (("mrg_rxbuf", mrg_rxbuf), ("csum", csum),
                            ("guest_csum", guest_csum), ("ctrl_vq", ctrl_vq)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {value!r}")
        self._dw = data_width
        self._pairs = queue_pairs
        self._mac = mac_to_int(mac_address)
        self._mtu = mtu
        self._max_frame = max_frame_bytes(mtu)
        self._offer = dict(mrg_rxbuf=mrg_rxbuf, csum=csum, guest_csum=guest_csum,
                           ctrl_vq=ctrl_vq)
        self._table = mac_table_entries
        self._tx_bytes = tx_buffer_bytes
        self._rx_bytes = rx_buffer_bytes
        self._tx_flight = tx_frames_in_flight
        self._rx_flight = rx_frames_in_flight
        self._cache_segments = rx_cache_segments
        self._fetch_depth = rx_fetch_depth
        self._ctrl_bytes = ctrl_buffer_bytes
        self._poll_cycles = ctrl_poll_cycles
        self._queue_count = 2 * queue_pairs + (1 if ctrl_vq else 0)
        # Check every block's parameters now, so a bad value fails here and names itself.
        FrameBufferGeometry(data_width, tx_buffer_bytes)
        FrameBufferGeometry(data_width, rx_buffer_bytes)
        self._config_addr_width = config_addr_width
        self._blocks = self._make_blocks()      # (also checks every block's parameters)

        members = {
            "txq":        In(VirtqRequestSignature(self._queue_count)),
            "rxq":        In(VirtqRequestSignature(self._queue_count)),
            "completion": Out(VirtqCompletionSignature(self._queue_count)),
            "dma_tx":     Out(DmaClientSignature(data_width)),
            "dma_rx":     Out(DmaClientSignature(data_width)),
            "config":     In(DeviceConfigSignature(config_addr_width)),
            "mac_tx":     Out(AxiStreamSignature(data_width)),
            "mac_rx":     In(AxiStreamSignature(data_width)),
            "link_up":    In(1),
            "loopback":   In(1),
            "stats":      Out(NetStatsSignature()),
        }
        if ctrl_vq:
            members["ctrlq"] = In(VirtqRequestSignature(self._queue_count))
        super().__init__(members)

    # -- what the integration needs to know ---------------------------------------------------

    @property
    def queue_count(self):
        """``num_queues``: two per pair, plus the control queue."""
        return self._queue_count

    @property
    def device_features(self):
        """The feature bits this device offers (the transport's ``device_feature``)."""
        return net_device_features(queue_pairs=self._pairs, **self._offer)

    @property
    def queue_roles(self):
        """For each queue index: ``(role, port, pulled)``, role one of ``"receiveq"``,
        ``"transmitq"``, ``"controlq"``; port the request port's name."""
        roles = []
        for q in range(self._queue_count):
            if self._offer["ctrl_vq"] and q == 2 * self._pairs:
                roles.append(("controlq", "ctrlq", False))
            elif q % 2 == 0:
                roles.append(("receiveq", "rxq", True))
            else:
                roles.append(("transmitq", "txq", False))
        return roles

    @property
    def config_size(self):
        """Bytes of the device configuration structure (the DEVICE_CFG window's length)."""
        return byte_size(VirtioNetConfig)

    @property
    def max_frame_bytes(self):
        return self._max_frame

    # -- structure ----------------------------------------------------------------------------

    def _make_blocks(self):
        dw, qc, pairs = self._dw, self._queue_count, self._pairs
        return dict(
            tx_fetch=NetTxFetch(data_width=dw, queue_count=qc, buffer_bytes=self._tx_bytes,
                                max_frame_bytes=self._max_frame,
                                frames_in_flight=self._tx_flight),
            tx_checksum=NetTxChecksum(data_width=dw, queue_count=qc,
                                      buffer_bytes=self._tx_bytes),
            tx_output=NetTxOutput(data_width=dw, queue_count=qc, buffer_bytes=self._tx_bytes),
            rx_ingress=NetRxIngress(data_width=dw, buffer_bytes=self._rx_bytes,
                                    max_frame_bytes=self._max_frame,
                                    table_entries=self._table),
            rx_cache=NetRxCache(queue_count=qc, queue_pairs=pairs,
                                segments=self._cache_segments, fetch_depth=self._fetch_depth),
            rx_egress=NetRxEgress(data_width=dw, queue_count=qc, queue_pairs=pairs,
                                  buffer_bytes=self._rx_bytes,
                                  cache_segments=self._cache_segments,
                                  fetch_depth=self._fetch_depth,
                                  frames_in_flight=self._rx_flight),
            control=NetControl(data_width=dw, queue_count=qc, queue_pairs=pairs,
                               mac_address=self._mac, table_entries=self._table,
                               buffer_bytes=self._ctrl_bytes, poll_cycles=self._poll_cycles),
            config_regs=NetConfigRegisters(queue_pairs=pairs, mtu=self._mtu,
                                           addr_width=self._config_addr_width),
            used_arbiter=NetUsedArbiter(queue_count=qc, inputs=4),
        )

    def elaborate(self, platform):
        m = Module()
        b = self._blocks
        for name, block in b.items():
            m.submodules[name] = block
        tx_fetch, tx_checksum, tx_output = b["tx_fetch"], b["tx_checksum"], b["tx_output"]
        ingress, cache, egress = b["rx_ingress"], b["rx_cache"], b["rx_egress"]
        control, regs, arbiter = b["control"], b["config_regs"], b["used_arbiter"]
        tx_geom = FrameBufferGeometry(self._dw, self._tx_bytes)
        rx_geom = FrameBufferGeometry(self._dw, self._rx_bytes)

        # Driver state -------------------------------------------------------------------------
        features = self.config.features

        def negotiated(bit):
            return features[int(bit)]

        reset = self.config.reset
        enable = self.config.driver_ok & ~reset
        generation = Signal(GENERATION_BITS)   # counts device resets (see the module doc)
        reset_was = Signal()
        m.d.sync += reset_was.eq(reset)
        with m.If(reset & ~reset_was):
            m.d.sync += generation.eq(generation + 1)

        # Transmit path ------------------------------------------------------------------------
        m.submodules.tx_buffer = tx_buffer = Memory(shape=self._dw, depth=tx_geom.rows, init=[])
        tx_w = tx_buffer.write_port(granularity=8)
        m.d.comb += [
            tx_w.addr.eq(self.dma_tx.rd_ram.addr),
            tx_w.data.eq(self.dma_tx.rd_ram.data),
            tx_w.en.eq(Mux(self.dma_tx.rd_ram.en, self.dma_tx.rd_ram.be, 0)),
        ]
        connect(m, tx_checksum.ram, tx_buffer.read_port())
        connect(m, tx_output.ram, tx_buffer.read_port())
        connect(m, wiring.flipped(self.txq.segment), tx_fetch.segment)
        connect(m, tx_fetch.rd_req, wiring.flipped(self.dma_tx.rd_req))
        connect(m, wiring.flipped(self.dma_tx.rd_status), tx_fetch.rd_status)
        connect(m, tx_fetch.frame, tx_checksum.frame)
        connect(m, tx_checksum.out, tx_output.frame)
        m.d.comb += [
            self.txq.fetch.valid.eq(0),
            self.dma_tx.wr_req.valid.eq(0),
            tx_fetch.release_row.eq(tx_output.release_row),
            tx_fetch.reset.eq(reset),
            tx_fetch.generation.eq(generation),
            tx_checksum.csum_enable.eq(negotiated(VirtioNetF.CSUM)),
            tx_output.link_up.eq(self.link_up),
            tx_output.reset.eq(reset),
            tx_output.generation.eq(generation),
        ]

        # MAC side, with the loopback ----------------------------------------------------------
        loop = self.loopback
        src, dst = tx_output.mac, ingress.mac
        for name in ("tdata", "tkeep", "tlast", "tuser"):
            m.d.comb += [
                getattr(self.mac_tx, name).eq(getattr(src, name)),
                getattr(dst, name).eq(Mux(loop, getattr(src, name), getattr(self.mac_rx, name))),
            ]
        m.d.comb += [
            self.mac_tx.tvalid.eq(src.tvalid & ~loop),
            dst.tvalid.eq(Mux(loop, src.tvalid, self.mac_rx.tvalid)),
            src.tready.eq(Mux(loop, dst.tready, self.mac_tx.tready)),
            self.mac_rx.tready.eq(dst.tready),
        ]

        # Receive path ---------------------------------------------------------------------------
        m.submodules.rx_buffer = rx_buffer = NetRxBuffer(data_width=self._dw,
                                                         buffer_bytes=self._rx_bytes)
        connect(m, ingress.ram, rx_buffer.frames)
        connect(m, egress.ram, rx_buffer.header)
        m.d.comb += [
            egress.ram_ready.eq(rx_buffer.header_ready),
            rx_buffer.dma.addr.eq(self.dma_rx.wr_ram.addr),
            rx_buffer.dma.en.eq(self.dma_rx.wr_ram.en),
            self.dma_rx.wr_ram.data.eq(rx_buffer.dma.data),
        ]
        # As many records as the buffer holds smallest frames: a burst is limited by the buffer.
        m.submodules.rx_frames = rx_frames = SyncFIFOBuffered(
            width=RxFrame(rx_geom).size, depth=rx_geom.rows // rx_geom.frame_rows(ETH_ZLEN))
        m.d.comb += [
            rx_frames.w_data.eq(ingress.frame.payload),
            rx_frames.w_en.eq(ingress.frame.valid),
            ingress.frame.ready.eq(rx_frames.w_rdy),
            egress.frame.payload.eq(rx_frames.r_data),
            egress.frame.valid.eq(rx_frames.r_rdy),
            rx_frames.r_en.eq(egress.frame.ready),
        ]
        connect(m, egress.cache, cache.access)
        m.d.comb += [
            ingress.release_row.eq(egress.release_row),
            ingress.enable.eq(enable),
            ingress.filter.eq(control.filter),
            cache.curr_pairs.eq(control.curr_pairs),
            cache.enable.eq(enable),
            cache.reset.eq(reset),
            egress.mrg_rxbuf.eq(negotiated(VirtioNetF.MRG_RXBUF)),
            egress.guest_csum.eq(negotiated(VirtioNetF.GUEST_CSUM)),
            egress.curr_pairs.eq(control.curr_pairs),
            egress.enable.eq(enable),
            egress.reset.eq(reset),
            egress.generation.eq(generation),
        ]

        # Receive port: answers to the control queue's polls go to the control block.
        poll_mode = Signal()
        if self._pairs > 1 and self._offer["ctrl_vq"]:
            m.d.comb += poll_mode.eq(negotiated(VirtioNetF.CTRL_VQ)
                                     & ~negotiated(VirtioNetF.MQ))
        answer = self.rxq.segment
        to_control = poll_mode & (answer.payload.queue == 2)
        m.d.comb += [
            cache.segment.payload.eq(answer.payload),
            control.poll_segment.payload.eq(answer.payload),
            cache.segment.valid.eq(answer.valid & ~to_control),
            control.poll_segment.valid.eq(answer.valid & to_control),
            answer.ready.eq(Mux(to_control, control.poll_segment.ready, cache.segment.ready)),
        ]
        connect(m, control.poll_fetch, cache.extra_fetch)
        connect(m, cache.fetch, wiring.flipped(self.rxq.fetch))

        # Receive DMA client: frame writes and control acks share the write requests ------------
        connect(m, control.rd_req, wiring.flipped(self.dma_rx.rd_req))
        connect(m, wiring.flipped(self.dma_rx.rd_status), control.rd_status)
        connect(m, wiring.flipped(self.dma_rx.rd_ram), control.rd_ram)
        wr = self.dma_rx.wr_req
        with m.If(control.wr_req.valid):
            m.d.comb += [
                wr.valid.eq(1),
                wr.payload.eq(control.wr_req.payload),
                control.wr_req.ready.eq(wr.ready),
            ]
        with m.Else():
            m.d.comb += [
                wr.valid.eq(egress.wr_req.valid),
                wr.payload.eq(egress.wr_req.payload),
                egress.wr_req.ready.eq(wr.ready),
            ]
        status = self.dma_rx.wr_status
        for block, mine in ((control, (status.payload.tag & DMA_TAG_CTRL) != 0),
                            (egress, (status.payload.tag & DMA_TAG_CTRL) == 0)):
            m.d.comb += [
                block.wr_status.payload.eq(status.payload),
                block.wr_status.valid.eq(status.valid & mine),
            ]

        # Control queue and configuration ---------------------------------------------------
        if self._offer["ctrl_vq"]:
            connect(m, wiring.flipped(self.ctrlq.segment), control.segment)
            m.d.comb += self.ctrlq.fetch.valid.eq(0)
        m.d.comb += [
            control.ctrl_rx.eq(negotiated(VirtioNetF.CTRL_RX)),
            control.ctrl_mac_addr.eq(negotiated(VirtioNetF.CTRL_MAC_ADDR)),
            control.mq.eq(negotiated(VirtioNetF.MQ)),
            control.poll_enable.eq(poll_mode & enable),
            control.reset.eq(reset),
        ]
        connect(m, wiring.flipped(self.config.bus), regs.bus)
        m.d.comb += [
            regs.mac.eq(control.filter.mac),
            regs.link_up.eq(self.link_up),
            self.config.changed.eq(regs.changed | control.mac_changed),
            self.config.idle.eq(tx_fetch.idle & egress.idle & control.idle),
        ]

        # Completions ----------------------------------------------------------------------------
        for i, source in enumerate((control.used, cache.returned, tx_output.used, egress.used)):
            connect(m, source, arbiter.i[i])
        connect(m, arbiter.o, wiring.flipped(self.completion.used))
        m.d.comb += arbiter.reset.eq(reset)

        # Counters -------------------------------------------------------------------------------
        events = {
            "tx_frames":    [tx_output.sent],
            "tx_dropped":   [tx_output.dropped],
            "tx_link_down": [tx_output.link_down],
            "rx_frames":    [egress.delivered],
            "rx_runt":      [ingress.runt],
            "rx_mac_error": [ingress.mac_error],
            "rx_oversize":  [ingress.oversize],
            "rx_filtered":  [ingress.filtered],
            "rx_overflow":  [ingress.overflow],
            "rx_no_buffer": [ingress.no_buffer, egress.no_buffer],
            "rx_too_big":   [egress.too_big],
            "rx_bad_chain": [cache.bad_chain],
            "rx_dma_error": [egress.dma_error],
            "ctrl_ok":      [control.ok],
            "ctrl_err":     [control.err],
        }
        assert set(events) == set(NET_COUNTERS)
        for name, strobes in events.items():
            counter = getattr(self.stats, name)
            m.d.sync += counter.eq(counter + sum(strobes[1:], strobes[0]))
        return m
