# SPDX-License-Identifier: BSD-2-Clause
"""A network back-end behind the Python virtio-pci function (virtio 1.2 §5.1, "Network Device").

Queues are ``receiveq1, transmitq1, …, receiveqN, transmitqN`` and, with CTRL_VQ, ``controlq``.

* Transmit: each chain's readable bytes are a ``virtio_net_hdr`` (12 bytes with VERSION_1 or
  MRG_RXBUF, else 10) and the frame, wherever the descriptor boundaries fall; the frame goes to
  :attr:`NetBackend.transmitted` and, in loopback mode, back to the receive queue of the same
  pair (pair 1 once the driver limited the pairs). Used length 0.
* Receive (:meth:`NetBackend.deliver`): with MRG_RXBUF as many buffers as the frame needs, the
  first carrying ``num_buffers``, all published with one index update; without it one chain
  that must hold header and frame (else the frame is dropped), ``num_buffers = 1``. Frames wait
  for buffers in a small backlog. Frames are filtered by the RX mode and MAC table when CTRL_RX
  is negotiated.
* Control queue: RX modes, MAC table and address, MQ pairs (1..max), ANNOUNCE_ACK (clears
  ``status.ANNOUNCE``), VLAN and guest-offload commands; anything else answers VIRTIO_NET_ERR.
* :meth:`set_link` and :meth:`announce` change ``status`` and raise a configuration interrupt.
"""

from collections import deque

import cocotb
from cocotb.triggers import Event

from virtio_pcie.spec.virtio import (
    VirtioDeviceId, VirtioF, VirtioNetConfig, VirtioNetCtrlAck, VirtioNetCtrlAnnounce,
    VirtioNetCtrlClass, VirtioNetCtrlHdr, VirtioNetCtrlMac, VirtioNetCtrlMq, VirtioNetCtrlRx,
    VirtioNetF, VirtioNetHdr, VirtioNetHdrLegacy, VirtioNetStatus, feature_mask,
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
)

from ...codec import codec

__all__ = ["NetBackend"]

_CFG = codec(VirtioNetConfig)
_HDR = codec(VirtioNetHdr)
_HDR_LEGACY = codec(VirtioNetHdrLegacy)
_CTRL = codec(VirtioNetCtrlHdr)
_ETH_ALEN = 6
_BACKLOG = 256


class NetBackend:
    """A virtio-net back-end: loopback or a test-driven wire.

    Parameters
    ----------
    mac : bytes
    max_pairs : int
        ``max_virtqueue_pairs`` (MQ offered when > 1).
    queue_size : int
    mrg_rxbuf, ctrl_vq, ctrl_rx, status, mtu, guest_announce, csum : feature switches
        (``mtu`` is an int to offer VIRTIO_NET_F_MTU, or None)
    loopback : bool
        Transmitted frames come back on the receive queue of the same pair.
    """

    name = "net"
    device_type = VirtioDeviceId.NET

    def __init__(self, *, mac=b"\x52\x54\x00\x12\x34\x56", max_pairs=1, queue_size=256,
                 mrg_rxbuf=True, ctrl_vq=True, ctrl_rx=True, status=True, mtu=None,
                 guest_announce=False, csum=False, event_idx=True, indirect=True,
                 loopback=True, extra_features=0):
        self.mac = bytes(mac)
        self.max_pairs = max_pairs
        self.mrg_rxbuf = mrg_rxbuf
        self.ctrl_vq = ctrl_vq
        self.ctrl_rx = ctrl_rx
        self.status_feature = status
        self.mtu = mtu
        self.guest_announce = guest_announce
        self.csum = csum
        self.event_idx = event_idx
        self.indirect = indirect
        self.loopback = loopback
        self.extra_features = extra_features
        self.queue_sizes = [queue_size] * (2 * max_pairs + (1 if ctrl_vq else 0))
        self.link_status = VirtioNetStatus.LINK_UP.value
        self.transmitted = []           # (pair, frame, header dict)
        self.received = []              # (pair, frame) delivered to the driver
        self.dropped = []               # (pair, frame, reason)
        self.commands = []              # (class, command, data, ack)
        self.tx_event = Event()
        self.fn = None
        self._reset_filters()

    def _reset_filters(self):
        self.curr_pairs = 1
        self.promisc = True             # without CTRL_RX the device does not filter
        self.allmulti = True
        self.uc_table = []
        self.mc_table = []
        self._backlog = [deque() for _ in range(self.max_pairs)]

    def offered_features(self):
        f = feature_mask(VirtioF.VERSION_1, VirtioF.ACCESS_PLATFORM, VirtioF.ORDER_PLATFORM,
                         VirtioF.ANY_LAYOUT, VirtioNetF.MAC)
        for cond, bit in ((self.event_idx, VirtioF.EVENT_IDX),
                          (self.indirect, VirtioF.INDIRECT_DESC),
                          (self.mrg_rxbuf, VirtioNetF.MRG_RXBUF),
                          (self.ctrl_vq, VirtioNetF.CTRL_VQ),
                          (self.ctrl_vq and self.ctrl_rx, VirtioNetF.CTRL_RX),
                          (self.status_feature, VirtioNetF.STATUS),
                          (self.mtu is not None, VirtioNetF.MTU),
                          (self.ctrl_vq and self.guest_announce, VirtioNetF.GUEST_ANNOUNCE),
                          (self.csum, VirtioNetF.CSUM),
                          (self.ctrl_vq and self.max_pairs > 1, VirtioNetF.MQ)):
            if cond:
                f |= feature_mask(bit)
        return f | self.extra_features

    def config_bytes(self):
        return _CFG.pack(mac=self.mac, status=self.link_status,
                         max_virtqueue_pairs=self.max_pairs, mtu=self.mtu or 0)

    def config_write(self, offset, data):
        pass      # read-only in virtio 1.x

    # -- life cycle -------------------------------------------------------------------------------
    def attach(self, fn):
        self.fn = fn
        for pair in range(self.max_pairs):
            cocotb.start_soon(self._tx_worker(fn.queues[2 * pair + 1], pair))
            cocotb.start_soon(self._rx_worker(fn.queues[2 * pair], pair))
        if self.ctrl_vq:
            cocotb.start_soon(self._ctrl_worker(fn.queues[-1]))

    def reset(self):
        self._reset_filters()

    def driver_ok(self):
        self.promisc = not self._negotiated(VirtioNetF.CTRL_RX)
        self.allmulti = self.promisc

    def _negotiated(self, bit):
        return bool(self.fn.negotiated & (1 << int(bit)))

    @property
    def hdr_len(self):
        if self._negotiated(VirtioF.VERSION_1) or self._negotiated(VirtioNetF.MRG_RXBUF):
            return _HDR.size
        return _HDR_LEGACY.size

    # -- link --------------------------------------------------------------------------------------
    def set_link(self, up):
        """Change ``status.LINK_UP`` and notify the driver."""
        if up:
            self.link_status |= VirtioNetStatus.LINK_UP.value
        else:
            self.link_status &= ~VirtioNetStatus.LINK_UP.value
        self.fn.config_changed()

    def announce(self):
        """Ask the driver to announce itself (GUEST_ANNOUNCE)."""
        self.link_status |= VirtioNetStatus.ANNOUNCE.value
        self.fn.config_changed()

    # -- transmit ----------------------------------------------------------------------------------
    async def _tx_worker(self, q, pair):
        while True:
            chain = await q.pop()
            if chain is None:
                continue
            gen = q.generation
            raw = await chain.read()
            hdr_codec = _HDR if self.hdr_len == _HDR.size else _HDR_LEGACY
            if len(raw) < hdr_codec.size:
                self.dropped.append((pair, raw, "tx header too short"))
                hdr, frame = None, b""
            else:
                hdr = hdr_codec.unpack(raw[:hdr_codec.size])
                frame = raw[hdr_codec.size:]
                self.transmitted.append((pair, frame, hdr))
                self.tx_event.set()
            if gen == q.generation:
                await q.push_used([(chain.head, 0)])
            if frame and self.loopback:
                self.deliver(frame, pair=pair if pair < self.curr_pairs else 0)

    # -- receive -----------------------------------------------------------------------------------
    def _accept(self, frame):
        if len(frame) < 2 * _ETH_ALEN:
            return False
        dst = frame[:_ETH_ALEN]
        if self.promisc or dst == self.mac or dst == b"\xff" * _ETH_ALEN:
            return True
        if dst[0] & 1:
            return self.allmulti or dst in self.mc_table
        return dst in self.uc_table

    def deliver(self, frame, pair=0):
        """Give ``frame`` to the driver on receive queue ``pair`` (as if it came off the wire).
        """
        if not self.link_status & VirtioNetStatus.LINK_UP.value:
            self.dropped.append((pair, frame, "link down"))
            return
        if not self._accept(frame):
            self.dropped.append((pair, frame, "filtered"))
            return
        backlog = self._backlog[pair]
        if len(backlog) >= _BACKLOG:
            self.dropped.append((pair, frame, "backlog full"))
            return
        backlog.append(frame)
        self.fn.queues[2 * pair].kick()

    async def _rx_worker(self, q, pair):
        while True:
            if not self._backlog[pair]:
                # wait for a frame (kick() also wakes pop callers; wait on the queue's event)
                q._kick.clear()
                await q._kick.wait()
                continue
            frame = self._backlog[pair][0]
            chain = await q.pop()
            if chain is None:
                continue
            gen = q.generation
            delivered = await self._fill(q, chain, frame, pair)
            if gen != q.generation:
                continue
            self._backlog[pair].popleft()
            if delivered:
                self.received.append((pair, frame))

    async def _fill(self, q, chain, frame, pair):
        hdr_len = self.hdr_len
        if hdr_len == _HDR.size:
            make_hdr = lambda n: _HDR.pack(num_buffers=n)
        else:
            make_hdr = lambda n: _HDR_LEGACY.pack()
        if not self._negotiated(VirtioNetF.MRG_RXBUF):
            if chain.writable_len < hdr_len + len(frame):
                self.dropped.append((pair, frame, "buffer too small"))
                await q.push_used([(chain.head, 0)])
                return False
            data = make_hdr(1) + frame
            await chain.write(data)
            await q.push_used([(chain.head, len(data))])
            return True
        # mergeable: fill buffers until the frame is placed, header in the first
        chains = [chain]
        total = chain.writable_len
        while total < hdr_len + len(frame):
            more = await q.pop()
            if more is None:
                return False
            chains.append(more)
            total += more.writable_len
        data = make_hdr(len(chains)) + frame
        entries = []
        pos = 0
        for c in chains:
            piece = data[pos:pos + c.writable_len]
            await c.write(piece)
            entries.append((c.head, len(piece)))
            pos += len(piece)
        await q.push_used(entries)
        return True

    # -- control queue -----------------------------------------------------------------------------
    async def _ctrl_worker(self, q):
        while True:
            chain = await q.pop()
            if chain is None:
                continue
            gen = q.generation
            raw = await chain.read()
            if len(raw) < _CTRL.size or chain.writable_len < 1:
                self.fn.device_error("virtio-net ctrl missing headers")
                continue
            cls, cmd = raw[0], raw[1]
            data = raw[_CTRL.size:]
            ok = self._command(cls, cmd, data)
            ack = VirtioNetCtrlAck.OK.value if ok else VirtioNetCtrlAck.ERR.value
            self.commands.append((cls, cmd, data, ack))
            await chain.write(bytes([ack]), offset=chain.writable_len - 1)
            if gen == q.generation:
                await q.push_used([(chain.head, 1)])

    def _command(self, cls, cmd, data):
        C = VirtioNetCtrlClass
        if cls == C.RX:
            if not self._negotiated(VirtioNetF.CTRL_RX) or len(data) != 1:
                return False
            if cmd == VirtioNetCtrlRx.PROMISC:
                self.promisc = bool(data[0])
            elif cmd == VirtioNetCtrlRx.ALLMULTI:
                self.allmulti = bool(data[0])
            elif cmd not in list(VirtioNetCtrlRx):
                return False
            return True
        if cls == C.MAC:
            if cmd == VirtioNetCtrlMac.TABLE_SET:
                tables = []
                pos = 0
                for _ in range(2):
                    if pos + 4 > len(data):
                        return False
                    n = int.from_bytes(data[pos:pos + 4], "little")
                    pos += 4
                    if pos + n * _ETH_ALEN > len(data):
                        return False
                    tables.append([data[pos + i * _ETH_ALEN:pos + (i + 1) * _ETH_ALEN]
                                   for i in range(n)])
                    pos += n * _ETH_ALEN
                if pos != len(data):
                    return False
                self.uc_table, self.mc_table = tables
                return True
            if cmd == VirtioNetCtrlMac.ADDR_SET and len(data) == _ETH_ALEN:
                self.mac = bytes(data)
                return True
            return False
        if cls == C.MQ and cmd == VirtioNetCtrlMq.VQ_PAIRS_SET:
            if not self._negotiated(VirtioNetF.MQ) or len(data) != 2:
                return False
            pairs = int.from_bytes(data, "little")
            if not VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN <= pairs <= self.max_pairs:
                return False
            self.curr_pairs = pairs
            return True
        if cls == C.ANNOUNCE and cmd == VirtioNetCtrlAnnounce.ACK:
            self.link_status &= ~VirtioNetStatus.ANNOUNCE.value
            self.fn.config_changed(interrupt=False)
            return True
        if cls in (C.VLAN, C.GUEST_OFFLOADS):
            return True
        return False
