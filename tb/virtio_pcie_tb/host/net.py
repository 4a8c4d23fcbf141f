# SPDX-License-Identifier: BSD-2-Clause
"""virtio-net, driver side, as Linux's ``drivers/net/virtio_net.c`` runs it.

* ``virtnet_validate``: config access required; CTRL_RX, CTRL_VLAN, GUEST_ANNOUNCE, MQ,
  CTRL_MAC_ADDR, RSS, HASH_REPORT, NOTF_COAL or VQ_NOTF_COAL without CTRL_VQ fails ("device
  advertises feature %s but not %s"); an MTU below 68 drops VIRTIO_NET_F_MTU (features re-written).
* ``virtnet_probe``: ``max_virtqueue_pairs`` if MQ (1 if out of 1..0x8000 or no CTRL_VQ); the MAC
  (byte by byte in a generation loop, or a random locally administered one); header length (12
  bytes with VERSION_1 or MRG_RXBUF, else 10); RX buffer mode: *mergeable* (MRG_RXBUF: one
  writable descriptor of ``ALIGN(hdr_len + 1518, 64)`` bytes, indirect off), *big* (any GUEST_TSO/
  ECN/UFO/USO or MTU > 1500: header + page-sized descriptors, indirect allowed) or *small* (one
  descriptor of ``hdr_len + 1518``, indirect off); every queue pair plus the control queue are
  created (``input.N``/``output.N`` with callbacks, ``control`` without: NO_VECTOR, busy-polled);
  DRIVER_OK; MQ_VQ_PAIRS_SET for ``min(cpus, max pairs)``; MAC_ADDR_SET of a random MAC with
  CTRL_MAC_ADDR; link state from ``status`` (assumed up without STATUS).
* :meth:`VirtioNetDriver.open` (``virtnet_open`` + ``ndo_set_rx_mode``): fill every active RX
  ring, then RX_PROMISC, RX_ALLMULTI and MAC_TABLE_SET if CTRL_RX.
* TX (``start_xmit``/``xmit_skb``): reclaim completed buffers, header pushed in front of the frame
  (``can_push``) or in its own descriptor, num_buffers 0, kick unless more frames follow, stop
  the queue below ``2 + MAX_SKB_FRAGS`` free descriptors.
* RX (``virtnet_poll``): NAPI-style polling scheduled from the interrupt, ``receive_buf`` checks
  (short packet, length beyond the buffer, missing mergeable buffers), refill when half empty.
* Configuration changes (``virtnet_config_changed_work``): ANNOUNCE → ANNOUNCE_ACK; LINK_UP →
  carrier.

Linux also negotiates STANDBY, RSS, HASH_REPORT, NOTF_COAL, VQ_NOTF_COAL, GUEST_HDRLEN and
DEVICE_STATS; the model does not implement what those change, leaves them out of its feature
table and warns when a device offers them.
"""

import random

import cocotb
from cocotb.queue import Queue
from cocotb.triggers import Event, Timer
from cocotb.utils import get_sim_time

from virtio_pcie.spec.virtio import (
    VirtioDeviceId, VirtioF, VirtioNetConfig, VirtioNetCtrlAck, VirtioNetCtrlAnnounce,
    VirtioNetCtrlClass, VirtioNetCtrlHdr, VirtioNetCtrlMac, VirtioNetCtrlMq, VirtioNetCtrlRx,
    VirtioNetF, VirtioNetHdr, VirtioNetHdrLegacy, VirtioNetStatus,
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
)

from ..codec import codec
from .core import VirtioDriver
from .errors import LinuxBug, LinuxError, ProbeError
from .transport import VqInfo
from .virtqueue import Sg

__all__ = ["VirtioNetDriver", "RxPacket"]

_HDR = codec(VirtioNetHdr)
_HDR_LEGACY = codec(VirtioNetHdrLegacy)
_CTRL = codec(VirtioNetCtrlHdr)

# Ethernet and Linux networking constants (include/uapi/linux/if_ether.h, virtio_net.c)
ETH_ALEN = 6
ETH_HLEN = 14
VLAN_HLEN = 4
ETH_DATA_LEN = 1500
GOOD_PACKET_LEN = ETH_HLEN + VLAN_HLEN + ETH_DATA_LEN
MIN_MTU = 68                       # ETH_MIN_MTU
MAX_SKB_FRAGS = 17
L1_CACHE_BYTES = 64
NAPI_POLL_WEIGHT = 64
#: sizeof(struct padded_vnet_hdr): big-mode data starts this far into the first page
PADDED_VNET_HDR = 32
_CTRL_STATUS_UNSET = 0xFF

_GUEST_GSO = (VirtioNetF.GUEST_TSO4, VirtioNetF.GUEST_TSO6, VirtioNetF.GUEST_ECN,
              VirtioNetF.GUEST_UFO, VirtioNetF.GUEST_USO4, VirtioNetF.GUEST_USO6)
#: Features Linux negotiates that need CTRL_VQ (virtnet_validate_features)
_NEED_CVQ = (VirtioNetF.CTRL_RX, VirtioNetF.CTRL_VLAN, VirtioNetF.GUEST_ANNOUNCE, VirtioNetF.MQ,
             VirtioNetF.CTRL_MAC_ADDR, VirtioNetF.RSS, VirtioNetF.HASH_REPORT,
             VirtioNetF.NOTF_COAL, VirtioNetF.VQ_NOTF_COAL)
#: In Linux's table, not in the model's (their behaviour is not modelled)
_NOT_MODELLED = (VirtioNetF.STANDBY, VirtioNetF.RSS, VirtioNetF.HASH_REPORT,
                 VirtioNetF.NOTF_COAL, VirtioNetF.VQ_NOTF_COAL, VirtioNetF.GUEST_HDRLEN,
                 VirtioNetF.DEVICE_STATS)


def _align(value, align):
    return (value + align - 1) & ~(align - 1)


class RxPacket:
    """A received frame: ``hdr`` (dict of the virtio_net_hdr fields), ``frame``, queue, time."""

    def __init__(self, hdr, frame, queue, buffers):
        self.hdr = hdr
        self.frame = frame
        self.queue = queue
        self.buffers = buffers
        self.time_ns = get_sim_time("ns")

    def __repr__(self):
        return f"RxPacket({len(self.frame)} bytes, queue {self.queue}, {self.buffers} bufs)"


class _RxQueue:
    def __init__(self, index, vq):
        self.index = index
        self.vq = vq
        self.packets = Queue()
        self.polling = False
        self.stats = {"packets": 0, "bytes": 0, "drops": 0, "short": 0, "too_long": 0,
                      "missing_buffers": 0, "polls": 0}


class _TxQueue:
    def __init__(self, index, vq):
        self.index = index
        self.vq = vq
        self.stopped = False
        self.wake = Event()
        self.polling = False
        self.stats = {"packets": 0, "bytes": 0, "completed": 0, "stops": 0}


class VirtioNetDriver(VirtioDriver):
    """The Linux virtio-net driver.

    Parameters
    ----------
    irq_mode : IrqMode, optional
    num_cpus : int
        Online CPUs: the number of queue pairs used is ``min(num_cpus, max_virtqueue_pairs)``.
    tx_header : "push" or "separate"
        Header in front of the frame in one descriptor (``can_push``, the usual case) or in a
        descriptor of its own.
    promisc, allmulti : bool
    uc_addrs, mc_addrs : list of bytes
        What ``ndo_set_rx_mode`` sends with CTRL_RX.
    mac : bytes, optional
        The "random" MAC used when the device does not offer VIRTIO_NET_F_MAC.
    cvq_timeout_ns : int
        Linux spins forever on a control command the device never completes; the model gives up.
    without : tuple of VirtioNetF
        Test knob: feature bits the driver refuses although it knows them (cleared in
        ``validate``, then the features are written again, as Linux does when ``virtnet_validate``
        drops VIRTIO_NET_F_MTU). E.g. ``(VirtioNetF.MRG_RXBUF,)`` gives "small" receive buffers
        on a device that offers mergeable ones.
    """

    name = "virtio_net"
    device_id = VirtioDeviceId.NET
    feature_table = (
        VirtioNetF.CSUM, VirtioNetF.GUEST_CSUM, VirtioNetF.MAC, VirtioNetF.HOST_TSO4,
        VirtioNetF.HOST_UFO, VirtioNetF.HOST_TSO6, VirtioNetF.HOST_ECN, VirtioNetF.GUEST_TSO4,
        VirtioNetF.GUEST_TSO6, VirtioNetF.GUEST_ECN, VirtioNetF.GUEST_UFO, VirtioNetF.HOST_USO,
        VirtioNetF.GUEST_USO4, VirtioNetF.GUEST_USO6, VirtioNetF.MRG_RXBUF, VirtioNetF.STATUS,
        VirtioNetF.CTRL_VQ, VirtioNetF.CTRL_RX, VirtioNetF.CTRL_VLAN, VirtioNetF.GUEST_ANNOUNCE,
        VirtioNetF.MQ, VirtioNetF.CTRL_MAC_ADDR, VirtioNetF.MTU, VirtioNetF.CTRL_GUEST_OFFLOADS,
        VirtioNetF.SPEED_DUPLEX,
    )
    feature_table_legacy = feature_table + (VirtioNetF.GSO, VirtioF.ANY_LAYOUT)

    def __init__(self, *, irq_mode=None, num_cpus=4, tx_header="push", promisc=False,
                 allmulti=False, uc_addrs=(), mc_addrs=(), mac=None, cvq_timeout_ns=10_000_000,
                 cvq_poll_ns=50, seed=0, without=()):
        super().__init__()
        known = {int(b) for b in self.feature_table_legacy}
        for bit in without:
            if int(bit) not in known:
                raise ValueError(f"without: {bit!r} is not a feature this driver knows")
        self.without = tuple(without)
        if tx_header not in ("push", "separate"):
            raise ValueError(f"tx_header must be 'push' or 'separate', not {tx_header!r}")
        self.irq_mode = irq_mode
        self.num_cpus = num_cpus
        self.tx_header = tx_header
        self.promisc = promisc
        self.allmulti = allmulti
        self.uc_addrs = list(uc_addrs)
        self.mc_addrs = list(mc_addrs)
        self.random_mac = mac
        self.cvq_timeout_ns = cvq_timeout_ns
        self.cvq_poll_ns = cvq_poll_ns
        self.rng = random.Random(seed)
        self.mac = None
        self.mtu = ETH_DATA_LEN
        self.max_queue_pairs = 1
        self.curr_queue_pairs = 1
        self.hdr_len = _HDR.size
        self.mergeable = False
        self.big_packets = False
        self.big_packets_num_skbfrags = 0
        self.any_header_sg = False
        self.has_cvq = False
        self.rx = []
        self.tx = []
        self.cvq = None
        self.status = 0
        self.carrier = False
        self.link_changed = Event()
        self.speed = None
        self.duplex = None
        self.commands = []            # (class, command, ok) of every control command
        self.is_open = False

    # -- validate / probe --------------------------------------------------------------------------
    async def validate(self, vdev):
        if not vdev.transport.has_config:
            vdev.dmesg("error", "virtnet_validate failure: config access disabled")
            raise ProbeError("EINVAL", "virtnet_validate failure: config access disabled")
        for bit in self.without:
            vdev.clear_feature(bit)
        offered = vdev.device_features
        for bit in _NOT_MODELLED:
            if offered & (1 << bit):
                vdev.dmesg("warning", f"host model: VIRTIO_NET_F_{bit.name} offered; Linux "
                                      f"would negotiate it, the model does not")
        # virtnet_validate_features (Linux tests what it negotiated: its table ∩ offered)
        if not offered & (1 << VirtioNetF.CTRL_VQ):
            for bit in _NEED_CVQ:
                if offered & (1 << bit):
                    msg = f"device advertises feature VIRTIO_NET_F_{bit.name} but not " \
                          f"VIRTIO_NET_F_CTRL_VQ"
                    vdev.dmesg("error", msg)
                    raise ProbeError("EINVAL", msg)
        if vdev.has_feature(VirtioNetF.MTU):
            mtu = await vdev.cread(VirtioNetConfig, "mtu")
            if mtu < MIN_MTU:
                vdev.clear_feature(VirtioNetF.MTU)

    async def probe(self, vdev):
        # Find if host supports multiqueue virtio_net device
        max_queue_pairs = 1
        if vdev.has_feature(VirtioNetF.MQ):
            max_queue_pairs = await vdev.cread(VirtioNetConfig, "max_virtqueue_pairs")
        # We need at least 2 queue's
        if (not VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN <= max_queue_pairs <=
                VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX or not vdev.has_feature(VirtioNetF.CTRL_VQ)):
            max_queue_pairs = 1
        # Configuration may specify what MAC to use.  Otherwise random.
        if vdev.has_feature(VirtioNetF.MAC):
            self.mac = await vdev.cread(VirtioNetConfig, "mac")
        else:
            mac = self.random_mac or bytes(self.rng.randrange(256) for _ in range(ETH_ALEN))
            # eth_random_addr: clear multicast, set locally administered
            self.mac = bytes([(mac[0] & 0xFE) | 0x02]) + bytes(mac[1:])
            vdev.dmesg("info", f"Assigned random MAC address {self.mac.hex(':')}")
        guest_gso = any(vdev.has_feature(b) for b in _GUEST_GSO)
        self.mergeable = vdev.has_feature(VirtioNetF.MRG_RXBUF)
        if vdev.has_feature(VirtioNetF.MRG_RXBUF) or vdev.has_feature(VirtioF.VERSION_1):
            self.hdr_len = _HDR.size
        else:
            self.hdr_len = _HDR_LEGACY.size
        self.any_header_sg = (vdev.has_feature(VirtioF.ANY_LAYOUT) or
                              vdev.has_feature(VirtioF.VERSION_1))
        self.has_cvq = vdev.has_feature(VirtioNetF.CTRL_VQ)
        if vdev.has_feature(VirtioNetF.MTU):
            mtu = await vdev.cread(VirtioNetConfig, "mtu")
            if mtu < MIN_MTU:
                msg = f"device MTU appears to have changed it is now {mtu} < {MIN_MTU}"
                vdev.dmesg("error", msg)
                raise ProbeError("EINVAL", msg)
            self.mtu = mtu
        # virtnet_set_big_packets
        if self.mtu > ETH_DATA_LEN or guest_gso:
            self.big_packets = True
            page = vdev.profile.page_size
            self.big_packets_num_skbfrags = MAX_SKB_FRAGS if guest_gso else \
                -(-self.mtu // page)
        self.curr_queue_pairs = min(self.num_cpus, max_queue_pairs)
        self.max_queue_pairs = max_queue_pairs
        await self._init_vqs(vdev)
        if vdev.has_feature(VirtioNetF.SPEED_DUPLEX):
            await self._update_settings(vdev)
        await vdev.device_ready()
        await self.set_queues(self.curr_queue_pairs)
        # a random MAC address has been assigned, notify the device.
        if not vdev.has_feature(VirtioNetF.MAC) and vdev.has_feature(VirtioNetF.CTRL_MAC_ADDR):
            if not await self.send_command(VirtioNetCtrlClass.MAC, VirtioNetCtrlMac.ADDR_SET,
                                           out=[self.mac]):
                raise ProbeError("EINVAL", "virtio_net: setting MAC address failed")
        # Assume link up if device can't report link status, otherwise get link status from
        # config.
        self.carrier = False
        if vdev.has_feature(VirtioNetF.STATUS):
            await vdev._config_changed_irq()
        else:
            self.status = VirtioNetStatus.LINK_UP.value
            self.carrier = True

    async def _init_vqs(self, vdev):
        ctx = not self.big_packets or self.mergeable
        infos = []
        for i in range(self.max_queue_pairs):
            infos.append(VqInfo(f"input.{i}", self._skb_recv_done, ctx=ctx))
            infos.append(VqInfo(f"output.{i}", self._skb_xmit_done))
        if self.has_cvq:
            infos.append(VqInfo("control", None))
        vqs = await vdev.find_vqs(infos, irq_mode=self.irq_mode)
        self.rx = [_RxQueue(i, vqs[2 * i]) for i in range(self.max_queue_pairs)]
        self.tx = [_TxQueue(i, vqs[2 * i + 1]) for i in range(self.max_queue_pairs)]
        self.cvq = vqs[-1] if self.has_cvq else None

    async def _update_settings(self, vdev):
        self.speed = await vdev.cread(VirtioNetConfig, "speed")
        self.duplex = await vdev.cread(VirtioNetConfig, "duplex")

    # -- control queue -----------------------------------------------------------------------------
    async def send_command(self, cls, cmd, *, out=(), in_length=0):
        """``virtnet_send_command()``: returns True if the device answered VIRTIO_NET_OK.
        ``out`` is a list of byte strings, each its own scatter-gather element."""
        if not self.has_cvq:
            raise LinuxBug("virtnet_send_command without VIRTIO_NET_F_CTRL_VQ (BUG_ON)")
        memory = self.vdev.transport.memory
        hdr = memory.buffer(_CTRL.pack(**{"class": int(cls), "command": int(cmd)}))
        outs = [memory.buffer(bytes(o)) for o in out]
        status = memory.buffer(bytes([_CTRL_STATUS_UNSET]))
        ins = [memory.alloc(in_length)] if in_length else []
        sgs = [[Sg.of(hdr)]]
        if outs:
            sgs.append([Sg.of(b) for b in outs])
        n_out = len(sgs)
        sgs.append([Sg.of(status)])
        if ins:
            sgs.append([Sg.of(b) for b in ins])
        n_in = len(sgs) - n_out
        ok = False
        try:
            try:
                await self.cvq.add_sgs(sgs, n_out, n_in, "cvq")
            except LinuxError as e:
                self.vdev.dmesg("warning", f"Failed to add sgs for command vq: {e.code}")
                return False
            if await self.cvq.kick():
                # Spin for a response
                start = get_sim_time("ns")
                while self.cvq.get_buf() is None and not self.cvq.broken:
                    if get_sim_time("ns") - start > self.cvq_timeout_ns:
                        raise LinuxBug(f"control command {int(cls)}/{int(cmd)} not completed "
                                       f"in {self.cvq_timeout_ns} ns; Linux would spin forever")
                    await Timer(self.cvq_poll_ns, "ns")
            ok = status.read_int(0, 1) == VirtioNetCtrlAck.OK.value
            self.reply = ins[0].read() if ins else b""
        finally:
            self.commands.append((int(cls), int(cmd), ok))
            for b in [hdr, status] + outs + ins:
                memory.free(b)
        return ok

    async def set_queues(self, queue_pairs):
        """``virtnet_set_queues()``: MQ_VQ_PAIRS_SET (only with CTRL_VQ and MQ)."""
        if not self.has_cvq or not self.vdev.has_feature(VirtioNetF.MQ):
            return True
        ok = await self.send_command(VirtioNetCtrlClass.MQ, VirtioNetCtrlMq.VQ_PAIRS_SET,
                                     out=[queue_pairs.to_bytes(2, "little")])
        if not ok:
            self.vdev.dmesg("warning", f"Fail to set num of queue pairs to {queue_pairs}")
            return False
        old = self.curr_queue_pairs
        self.curr_queue_pairs = queue_pairs
        if self.is_open:
            for q in self.rx[old:queue_pairs]:
                await self._try_fill_recv(q)
        return True

    async def set_rx_mode(self, *, promisc=None, allmulti=None, uc_addrs=None, mc_addrs=None):
        """``virtnet_set_rx_mode()`` (the rx_mode work item)."""
        if promisc is not None:
            self.promisc = promisc
        if allmulti is not None:
            self.allmulti = allmulti
        if uc_addrs is not None:
            self.uc_addrs = list(uc_addrs)
        if mc_addrs is not None:
            self.mc_addrs = list(mc_addrs)
        # We can't dynamically set ndo_set_rx_mode, so return gracefully
        if not self.vdev.has_feature(VirtioNetF.CTRL_RX):
            return
        for value, cmd, what in ((self.promisc, VirtioNetCtrlRx.PROMISC, "promisc"),
                                 (self.allmulti, VirtioNetCtrlRx.ALLMULTI, "allmulti")):
            if not await self.send_command(VirtioNetCtrlClass.RX, cmd, out=[bytes([value])]):
                self.vdev.dmesg("warning", f"Failed to {'en' if value else 'dis'}able "
                                           f"{what} mode.")
        uc = len(self.uc_addrs).to_bytes(4, "little") + b"".join(self.uc_addrs)
        mc = len(self.mc_addrs).to_bytes(4, "little") + b"".join(self.mc_addrs)
        if not await self.send_command(VirtioNetCtrlClass.MAC, VirtioNetCtrlMac.TABLE_SET,
                                       out=[uc, mc]):
            self.vdev.dmesg("warning", "Failed to set MAC filter table.")

    # -- configuration changes ---------------------------------------------------------------------
    async def config_changed(self, vdev):
        """``virtnet_config_changed_work``."""
        v = await vdev.cread_feature(VirtioNetF.STATUS, VirtioNetConfig, "status")
        if v is None:
            return
        if v & VirtioNetStatus.ANNOUNCE.value:
            # netdev_notify_peers(), then virtnet_ack_link_announce()
            if not await self.send_command(VirtioNetCtrlClass.ANNOUNCE,
                                           VirtioNetCtrlAnnounce.ACK):
                vdev.dmesg("warning", "Failed to ack link announce.")
        # Ignore unknown (future) status bits
        v &= VirtioNetStatus.LINK_UP.value
        if self.status == v:
            return
        self.status = v
        if v:
            if vdev.has_feature(VirtioNetF.SPEED_DUPLEX):
                await self._update_settings(vdev)
            self.carrier = True
            for q in self.tx:
                q.wake.set()
        else:
            self.carrier = False
        self.link_changed.set()

    async def wait_link(self, up=True):
        while self.carrier != up:
            self.link_changed.clear()
            await self.link_changed.wait()

    # -- open / receive ----------------------------------------------------------------------------
    async def open(self):
        """``virtnet_open()``: fill the RX rings of the active pairs, enable NAPI, then the
        stack's ``ndo_set_rx_mode``."""
        self.is_open = True
        for q in self.rx[:self.curr_queue_pairs]:
            await self._try_fill_recv(q)
        for q in self.rx:
            self._napi_schedule_rx(q)
        await self.set_rx_mode()

    def _rx_buffer_sizes(self):
        page = self.vdev.profile.page_size
        if self.mergeable:
            return [_align(self.hdr_len + GOOD_PACKET_LEN, L1_CACHE_BYTES)]
        if self.big_packets:
            return [self.hdr_len, page - PADDED_VNET_HDR] + \
                [page] * self.big_packets_num_skbfrags
        return [self.hdr_len + GOOD_PACKET_LEN]

    async def _add_recvbuf(self, q):
        memory = self.vdev.transport.memory
        sizes = self._rx_buffer_sizes()
        bufs = [memory.alloc(size, zero=False) for size in sizes]
        sgs = [Sg.of(b) for b in bufs]
        if q.vq.use_ctx:
            await q.vq.add_inbuf_ctx(sgs, bufs, ctx=len(sizes))
        else:
            await q.vq.add_inbuf(sgs, bufs)

    async def _try_fill_recv(self, q):
        """``try_fill_recv()``: post buffers until the ring is full, then kick."""
        while q.vq.num_free:
            try:
                await self._add_recvbuf(q)
            except LinuxError:
                break
        if q.vq.kick_prepare():
            await q.vq.notify()

    async def _skb_recv_done(self, vq):
        q = next(q for q in self.rx if q.vq is vq)
        self._napi_schedule_rx(q)

    def _napi_schedule_rx(self, q):
        if q.polling:
            return
        q.polling = True
        q.vq.disable_cb()
        cocotb.start_soon(self._virtnet_poll(q))

    async def _virtnet_poll(self, q):
        """``virtnet_poll()``: receive up to a budget, refill, re-enable interrupts."""
        while True:
            q.stats["polls"] += 1
            received = await self._virtnet_receive(q, NAPI_POLL_WEIGHT)
            if received < NAPI_POLL_WEIGHT:
                opaque = q.vq.enable_cb_prepare()
                if q.vq.poll(opaque):
                    q.vq.disable_cb()
                    continue
                break
        q.polling = False

    async def _virtnet_receive(self, q, budget):
        packets = 0
        while packets < budget:
            got = q.vq.get_buf_ctx()
            if got is None:
                break
            await self._receive_buf(q, *got)
            packets += 1
        if q.index < self.curr_queue_pairs and self.is_open and \
                q.vq.num_free > min(budget, q.vq.vring_size) // 2:
            await self._try_fill_recv(q)
        return packets

    async def _receive_buf(self, q, bufs, length, ctx):
        memory = self.vdev.transport.memory
        if length < self.hdr_len + ETH_HLEN:
            self.log.debug("short packet %d", length)
            q.stats["short"] += 1
            q.stats["drops"] += 1
            for b in bufs:
                memory.free(b)
            return
        raw = b"".join(b.read() for b in bufs)
        if length > len(raw):
            self.log.debug("rx error: len %d exceeds buffer %d", length, len(raw))
            q.stats["too_long"] += 1
            q.stats["drops"] += 1
            for b in bufs:
                memory.free(b)
            return
        hdr_codec = _HDR if self.hdr_len == _HDR.size else _HDR_LEGACY
        hdr = hdr_codec.unpack(raw[:self.hdr_len])
        # (big mode: the header fills the first descriptor, the frame the following ones)
        frame = raw[self.hdr_len:length]
        nbufs = 1
        if self.mergeable:
            num_buf = hdr["num_buffers"]
            while num_buf > 1:
                got = q.vq.get_buf_ctx()
                if got is None:
                    missing = num_buf - 1
                    self.log.debug("rx error: %d buffers out of %d missing", missing,
                                   hdr["num_buffers"])
                    q.stats["missing_buffers"] += 1
                    q.stats["drops"] += 1
                    for b in bufs:
                        memory.free(b)
                    return
                more, more_len, _ = got
                chunk = b"".join(b.read() for b in more)
                if more_len > len(chunk):
                    q.stats["too_long"] += 1
                    q.stats["drops"] += 1
                    return
                frame += chunk[:more_len]
                for b in more:
                    memory.free(b)
                num_buf -= 1
                nbufs += 1
        for b in bufs:
            memory.free(b)
        q.stats["packets"] += 1
        q.stats["bytes"] += len(frame)
        q.packets.put_nowait(RxPacket(hdr, frame, q.index, nbufs))

    async def recv(self, queue=None, *, timeout_ns=None):
        """The next received frame (an :class:`RxPacket`) of ``queue`` (default: any queue)."""
        from cocotb.triggers import with_timeout
        if queue is None:
            while True:
                for q in self.rx:
                    if not q.packets.empty():
                        return q.packets.get_nowait()
                await Timer(100, "ns")
                if timeout_ns is not None:
                    timeout_ns -= 100
                    if timeout_ns <= 0:
                        raise TimeoutError("no packet received")
        if timeout_ns is None:
            return await self.rx[queue].packets.get()
        return await with_timeout(self.rx[queue].packets.get(), timeout_ns, "ns")

    # -- transmit ----------------------------------------------------------------------------------
    def _free_old_xmit(self, q):
        memory = self.vdev.transport.memory
        while (got := q.vq.get_buf()) is not None:
            bufs, _ = got
            for b in bufs:
                memory.free(b)
            q.stats["completed"] += 1

    async def send(self, frame, *, queue=0, more=False, hdr=None, frags=None):
        """``start_xmit()`` of one frame; ``more`` is ``xmit_more`` (no kick yet). ``hdr``
        overrides header fields; ``frags`` splits the frame into elements of these sizes."""
        q = self.tx[queue]
        memory = self.vdev.transport.memory
        while q.stopped or not self.carrier:
            q.wake.clear()
            await q.wake.wait()
        # Free up any pending old buffers before queueing new ones.
        while True:
            q.vq.disable_cb()
            self._free_old_xmit(q)
            if more or q.vq.enable_cb_delayed():
                break
        fields = {"flags": 0, "gso_type": 0, "hdr_len": 0, "gso_size": 0, "csum_start": 0,
                  "csum_offset": 0}
        if self.hdr_len == _HDR.size:
            fields["num_buffers"] = 0
        fields.update(hdr or {})
        hdr_codec = _HDR if self.hdr_len == _HDR.size else _HDR_LEGACY
        header = hdr_codec.pack(**fields)
        pieces = [frame] if not frags else self._fragments(frame, frags)
        if self.tx_header == "push" and self.any_header_sg:
            pieces[0] = header + pieces[0]
        else:
            pieces.insert(0, header)
        bufs = [memory.buffer(p) for p in pieces]
        try:
            await q.vq.add_outbuf([Sg.of(b) for b in bufs], bufs)
        except LinuxError as e:
            for b in bufs:
                memory.free(b)
            if e.errno == "ENOSPC":
                # "Unexpected TXQ queue failure": Linux drops the frame
                self.vdev.dmesg("warning", f"Unexpected TXQ ({queue}) queue failure: {e.code}")
            raise
        q.stats["packets"] += 1
        q.stats["bytes"] += len(frame)
        # If running out of space, stop queue to avoid getting packets that we are then unable
        # to transmit.
        if q.vq.num_free < 2 + MAX_SKB_FRAGS:
            q.stopped = True
            q.stats["stops"] += 1
            if not q.vq.enable_cb_delayed():
                self._napi_schedule_tx(q)
        if not more or q.stopped:
            if q.vq.kick_prepare():
                await q.vq.notify()

    @staticmethod
    def _fragments(frame, sizes):
        pieces, pos = [], 0
        for size in sizes:
            pieces.append(frame[pos:pos + size])
            pos += size
        if pos < len(frame):
            pieces.append(frame[pos:])
        return [p for p in pieces if p]

    async def _skb_xmit_done(self, vq):
        q = next(q for q in self.tx if q.vq is vq)
        self._napi_schedule_tx(q)

    def _napi_schedule_tx(self, q):
        if q.polling:
            return
        q.polling = True
        q.vq.disable_cb()
        cocotb.start_soon(self._virtnet_poll_tx(q))

    async def _virtnet_poll_tx(self, q):
        while True:
            self._free_old_xmit(q)
            if q.stopped and q.vq.num_free >= 2 + MAX_SKB_FRAGS:
                q.stopped = False
                q.wake.set()
            opaque = q.vq.enable_cb_prepare()
            if q.vq.poll(opaque):
                q.vq.disable_cb()
                continue
            break
        q.polling = False

    async def remove(self, vdev):
        """``virtnet_remove()``: reset the device, free unused buffers, delete the queues."""
        self.is_open = False
        await vdev.reset_device()
        await vdev.del_vqs()
