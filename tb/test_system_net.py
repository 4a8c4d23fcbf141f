# SPDX-License-Identifier: BSD-2-Clause
"""virtio-net end to end: the Linux-faithful host model drives the whole RTL device.

::

    VirtioNetDriver ─► RootComplex ── bridge ══ VirtioPcieDevice(device="net") ══ MacPort
    (host model:                                 function · transport · DMA ·     mac_tx ► sink
     virtio_net.c)                               virtqueue engine · net back-end  mac_rx ◄ source
                                                                                  link_up

Frames go both ways and are compared byte for byte; checksums are checked against scapy (an
independent implementation); steering against :func:`~virtio_pcie.devices.net_interface.rx_steer`
of a flow hash computed here; drops against the device's ``net_stats`` counters. Two builds:
a modern 2-pair device (MQ) and a transitional 1-pair device (legacy interface, INTx).

``NET_SWEEP=full`` (the slow launcher) sends every frame size from 60 bytes to the MTU's
largest frame both ways, with and without mergeable receive buffers.
"""

import logging
import os
import random

import cocotb
import pytest
from cocotb.triggers import ClockCycles, SimTimeoutError, Timer, with_timeout

from virtio_pcie.devices.net_interface import NET_COUNTERS, rx_steer
from virtio_pcie.spec.virtio import (
    VirtioF, VirtioNetConfig, VirtioNetCtrlClass, VirtioNetCtrlMac, VirtioNetCtrlMq,
    VirtioNetCtrlRx, VirtioNetF, VirtioNetHdrFlags,
)
from virtio_pcie_tb.host import IrqMode, VirtioNetDriver
from virtio_pcie_tb.system import SystemTB, build_system, design_params

FULL_SWEEP = os.environ.get("NET_SWEEP") == "full"
DEVICE_MAC = bytes.fromhex("525400123456")         # VirtioNetDevice's default address
PEER_MAC = bytes.fromhex("020000000001")
BROADCAST = b"\xff" * 6
ETH_ZLEN = 60
NEEDS_CSUM = VirtioNetHdrFlags.NEEDS_CSUM.value
DATA_VALID = VirtioNetHdrFlags.DATA_VALID.value
MS = 1_000_000          # ns


# -- frames ------------------------------------------------------------------------------------

def mac_str(mac):
    return ":".join(f"{b:02x}" for b in mac)


def raw_frame(size, dst=DEVICE_MAC, src=PEER_MAC, seed=0):
    """A non-IP frame of ``size`` bytes (no checksum, flow hash 0)."""
    rng = random.Random(size * 7919 + seed)
    return dst + src + (0x88B5).to_bytes(2, "big") + rng.randbytes(size - 14)


def ip_frame(dst=DEVICE_MAC, src=PEER_MAC, *, version=4, proto="udp", payload=b"", sport=1000,
             dport=2000, src_ip=1, dst_ip=2):
    """A TCP or UDP frame with correct checksums (scapy), padded to 60 bytes."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    l4 = (UDP(sport=sport, dport=dport) if proto == "udp"
          else TCP(sport=sport, dport=dport, flags="A", seq=12345))
    l3 = (IP(src=f"10.0.{src_ip >> 8 & 255}.{src_ip & 255}",
             dst=f"10.1.{dst_ip >> 8 & 255}.{dst_ip & 255}") if version == 4
          else IPv6(src=f"fd00::{src_ip:x}", dst=f"fd01::{dst_ip:x}"))
    frame = bytes(Ether(dst=mac_str(dst), src=mac_str(src)) / l3 / l4 / Raw(payload))
    return frame.ljust(ETH_ZLEN, b"\0")


def l4_checksum_ok(frame):
    """scapy recomputes the TCP/UDP checksum from scratch; the frame's must equal it."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    pkt = Ether(frame)
    l3 = pkt[IP] if IP in pkt else pkt[IPv6]
    l4 = TCP if TCP in pkt else UDP
    rebuilt = l3.__class__(bytes(l3))
    del rebuilt[l4].chksum
    return l3.__class__(bytes(rebuilt))[l4].chksum == pkt[l4].chksum


def ones_sum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum_partial(frame):
    """What Linux hands a CSUM device (CHECKSUM_PARTIAL): the pseudo-header sum in the L4
    checksum field, and (csum_start, csum_offset) for the header."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800:
        ihl = (frame[14] & 15) * 4
        start, proto = 14 + ihl, frame[23]
        length = int.from_bytes(frame[16:18], "big") - ihl
        pseudo = frame[26:34] + bytes([0, proto]) + length.to_bytes(2, "big")
    else:
        start, proto = 54, frame[20]
        length = int.from_bytes(frame[18:20], "big")
        pseudo = frame[22:54] + length.to_bytes(4, "big") + bytes([0, 0, 0, proto])
    offset = 16 if proto == 6 else 6
    out = bytearray(frame)
    out[start + offset:start + offset + 2] = ones_sum(pseudo).to_bytes(2, "big")
    return bytes(out), start, offset


def flow_hash(frame):
    """The receive flow hash (docs/net.md "Steering"): XOR of the 16-bit words of the IP
    addresses and, for TCP/UDP, the ports; 0 for anything else."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800 and frame[14] == 0x45 \
            and int.from_bytes(frame[20:22], "big") & 0x3FFF == 0:
        region = frame[26:34] + (frame[34:38] if frame[23] in (6, 17) else b"")
    elif ethertype == 0x86DD:
        region = frame[22:54] + (frame[54:58] if frame[20] in (6, 17) else b"")
    else:
        return 0
    h = 0
    for i in range(0, len(region), 2):
        h ^= int.from_bytes(region[i:i + 2], "big")
    return h


def sweep_sizes(largest, stride=37):
    """Every size from 60 to ``largest`` (NET_SWEEP=full), else the small sizes around the
    data path's widths, a stride through the rest, and the largest two."""
    if FULL_SWEEP:
        return list(range(ETH_ZLEN, largest + 1))
    sizes = set(range(ETH_ZLEN, ETH_ZLEN + 34)) | set(range(ETH_ZLEN, largest + 1, stride))
    return sorted(sizes | {largest - 1, largest})


# -- the testbench -----------------------------------------------------------------------------

class NetSystem(SystemTB):
    """SystemTB with the virtio-net driver bound and opened."""

    async def start(self, *, profile="linux-6.12", force_legacy=False, opened=True,
                    **driver_options):
        # A line per TLP otherwise, and a warning per empty slot while enumerating.
        logging.getLogger("cocotb.pcie").setLevel(logging.WARNING)
        logging.getLogger("cocotb.pcie.RootComplex").setLevel(logging.ERROR)
        await self.reset()
        self.net = VirtioNetDriver(**driver_options)
        self.vdev = await with_timeout(self.bind(self.net, profile=profile,
                                                 force_legacy=force_legacy), 4, "ms")
        if opened:
            await with_timeout(self.net.open(), 2, "ms")
        self.stats_at_start = self.net_stats()
        return self.net

    def new_stats(self):
        """Counters that moved since :meth:`start`."""
        now = self.net_stats()
        return {k: now[k] - self.stats_at_start[k] for k in NET_COUNTERS
                if now[k] != self.stats_at_start[k]}

    async def transmit(self, frames, **send_options):
        """Send ``frames`` from the driver; return what came out of mac_tx, in order."""
        out = []
        for frame in frames:
            await with_timeout(self.net.send(frame, **send_options), 1, "ms")
            out.append(await self.mac.recv())
        return out

    async def receive(self, frames, queue=None):
        """Frames into mac_rx; return the driver's RxPackets (of ``queue``, default any), in
        order."""
        out = []
        for frame in frames:
            await self.mac.send(frame)
            out.append(await self.net.recv(queue, timeout_ns=MS // 5))
        return out

    async def expect_nothing(self, ns=20_000):
        """No frame reaches any receive queue (and none leaves on mac_tx) for ``ns``."""
        await self.mac.flush()
        await Timer(ns, "ns")
        for q in self.net.rx:
            assert q.packets.empty(), f"receive queue {q.index} got {q.packets.get_nowait()}"
        assert not self.mac.pending()

    def check(self, *, allow=()):
        """End of a test: no malformed TLP, no unexpected drop, nothing the driver rejected."""
        self.check_bridge()
        bad = {k: v for k, v in self.new_stats().items()
               if k not in ("tx_frames", "rx_frames", "ctrl_ok") and k not in allow}
        assert not bad, f"device counters: {bad}"
        for q in self.net.rx:
            assert q.stats["drops"] == 0, f"input.{q.index}: {q.stats}"
        errors = [m for level, m in self.pci.dmesg if level in ("error", "warning")]
        assert not errors, errors


# -- probe -------------------------------------------------------------------------------------

@cocotb.test()
async def run_probe(dut):
    """virtnet_probe: features, MAC, MTU, pairs, link; the control commands it and open send."""
    tb = NetSystem(dut)
    net = await tb.start()
    vdev = tb.vdev
    assert vdev.status_trace[-1] == 0x0F, vdev.status_trace
    pairs = tb.params["queues"]
    for bit in (VirtioF.VERSION_1, VirtioF.ACCESS_PLATFORM, VirtioF.EVENT_IDX,
                VirtioNetF.MAC, VirtioNetF.STATUS, VirtioNetF.MTU, VirtioNetF.MRG_RXBUF,
                VirtioNetF.CSUM, VirtioNetF.GUEST_CSUM, VirtioNetF.CTRL_VQ, VirtioNetF.CTRL_RX,
                VirtioNetF.CTRL_MAC_ADDR):
        assert vdev.has_feature(bit), f"{bit!r} not negotiated"
    assert vdev.has_feature(VirtioNetF.MQ) == (pairs > 1)
    assert net.mac == DEVICE_MAC and net.mtu == 1500 and net.mergeable
    assert net.max_queue_pairs == pairs and net.curr_queue_pairs == pairs
    assert net.carrier and net.status == 1
    assert await vdev.cread(VirtioNetConfig, "max_virtqueue_pairs") == pairs
    # Every command probe and open sent (MQ pairs, promisc, allmulti, MAC table) succeeded.
    assert net.commands and all(ok for _c, _m, ok in net.commands), net.commands
    assert tb.new_stats() == {}
    assert tb.net_stats()["ctrl_ok"] == len(net.commands)
    tb.check()


# -- data both ways ----------------------------------------------------------------------------

@cocotb.test()
async def run_tx_sizes(dut):
    """Frames of every size (a stride by default) from the driver reach mac_tx intact, with the
    header pushed in front or in a descriptor of its own, and scattered over several."""
    tb = NetSystem(dut)
    sizes = sweep_sizes(1514)
    await tb.start()
    frames = [raw_frame(n, PEER_MAC, DEVICE_MAC) for n in sizes]
    assert await tb.transmit(frames) == frames
    # Short frames (an ARP request is 42 bytes) are padded to the Ethernet minimum.
    for n in (14, 42, 59):
        (out,) = await tb.transmit([raw_frame(n, PEER_MAC, DEVICE_MAC)])
        assert out == raw_frame(n, PEER_MAC, DEVICE_MAC).ljust(ETH_ZLEN, b"\0")
    some = frames[::7]
    assert await tb.transmit(some, frags=[20, 7, 100]) == some
    tb.net.tx_header = "separate"
    assert await tb.transmit(some) == some
    await ClockCycles(tb.dut.clk, 100)      # the counter counts the used entry, a bit later
    assert tb.new_stats()["tx_frames"] == len(frames) + 3 + 2 * len(some)
    tb.check()


@cocotb.test()
@cocotb.parametrize(mergeable=[True, False])
async def run_rx_sizes(dut, mergeable):
    """Frames of every size from the MAC reach the driver intact: mergeable buffers (one per
    frame at these sizes, num_buffers 1) and, with MRG_RXBUF refused, "small" buffers."""
    tb = NetSystem(dut)
    net = await tb.start(without=() if mergeable else (VirtioNetF.MRG_RXBUF,))
    assert net.mergeable == mergeable and not net.big_packets
    sizes = sweep_sizes(1514)
    frames = [raw_frame(n) for n in sizes]
    got = await tb.receive(frames)
    for frame, pkt in zip(frames, got, strict=True):
        assert pkt.frame == frame, f"{len(frame)}-byte frame differs"
        assert pkt.buffers == 1
        if mergeable:
            assert pkt.hdr["num_buffers"] == 1
        assert pkt.hdr["flags"] == 0 and pkt.hdr["gso_type"] == 0
    # A burst with no gaps: every frame arrives, in order.
    burst = [raw_frame(n, seed=1) for n in (60, 1514, 61, 700, 64, 1000) * 4]
    for frame in burst:
        await tb.mac.send(frame)
    for frame in burst:
        assert (await tb.net.recv(0, timeout_ns=MS // 5)).frame == frame
    assert tb.new_stats()["rx_frames"] == len(frames) + len(burst)
    tb.check()


@cocotb.test()
async def run_ring_wrap(dut):
    """More frames than the rings hold, each way, in bursts: ring positions wrap past the
    ring size and the driver's refill keeps up."""
    tb = NetSystem(dut)
    net = await tb.start()
    size = max(net.rx[0].vq.num, net.tx[0].vq.num)
    count = size + 100
    frames = [raw_frame(60 + i % 40, seed=i) for i in range(count)]
    for i in range(0, count, 25):
        await tb.mac.send_paced(frames[i:i + 25], gbps=10)
        for f in frames[i:i + 25]:
            assert (await net.recv(0, timeout_ns=MS // 5)).frame == f
    frames = [raw_frame(60 + i % 40, PEER_MAC, DEVICE_MAC, seed=i) for i in range(count)]
    for i in range(0, count, 25):
        chunk = frames[i:i + 25]
        for j, f in enumerate(chunk):
            await net.send(f, more=j != len(chunk) - 1)
        for f in chunk:
            assert await tb.mac.recv() == f
    tb.check()

@cocotb.test()
async def run_echo(dut):
    """A peer that answers: ARP, ICMP echo and UDP echo through the device and back."""
    from virtio_pcie_tb.demos.net import ping_exchange
    tb = NetSystem(dut)
    await tb.start()
    report = await ping_exchange(tb, sizes=[0, 1, 56, 1000, 1472], udp_sizes=[1, 1472])
    assert report["lost"] == 0 and report["corrupt"] == 0, report
    tb.check()


# -- checksums ---------------------------------------------------------------------------------

@cocotb.test()
async def run_tx_checksum(dut):
    """NEEDS_CSUM frames (CSUM): the frame on mac_tx carries the right TCP/UDP checksum."""
    tb = NetSystem(dut)
    await tb.start()
    rng = random.Random(3)
    for version in (4, 6):
        for proto in ("udp", "tcp"):
            for n in (0, 1, 2, 17, 100, 1000, 1400):
                frame = ip_frame(PEER_MAC, DEVICE_MAC, version=version, proto=proto,
                                 payload=rng.randbytes(n), sport=rng.randrange(65536))
                partial, start, offset = checksum_partial(frame)
                hdr = {"flags": NEEDS_CSUM, "csum_start": start, "csum_offset": offset}
                layout = rng.choice([{}, {"frags": [start + 3, 9]}])
                (out,) = await tb.transmit([partial], hdr=hdr, **layout)
                assert l4_checksum_ok(out), f"IPv{version} {proto} {n}: bad checksum"
                assert out == frame, f"IPv{version} {proto} {n}: frame differs"
    tb.check()


@cocotb.test()
async def run_rx_checksum(dut):
    """GUEST_CSUM: DATA_VALID on frames whose TCP/UDP checksum is right, never on others."""
    tb = NetSystem(dut)
    await tb.start()
    rng = random.Random(4)
    cases = []
    for version in (4, 6):
        for proto in ("udp", "tcp"):
            for n in (0, 5, 64, 1400):
                good = ip_frame(version=version, proto=proto, payload=rng.randbytes(n),
                                sport=rng.randrange(65536))
                bad = bytearray(good)
                start = checksum_partial(good)[1]
                end = 14 + (int.from_bytes(good[16:18], "big") if version == 4
                            else 40 + int.from_bytes(good[18:20], "big"))
                bad[rng.randrange(start, end)] ^= 0x20
                cases += [(good, True), (bytes(bad), False)]
    cases.append((raw_frame(200), False))
    got = await tb.receive([c[0] for c in cases])
    for i, ((frame, valid), pkt) in enumerate(zip(cases, got, strict=True)):
        assert pkt.frame == frame, f"case {i}: frame differs"
        assert pkt.hdr["flags"] == (DATA_VALID if valid else 0), \
            f"case {i}: flags {pkt.hdr['flags']:#x}, checksum {'good' if valid else 'bad'}"
    tb.check()


@cocotb.test()
async def run_checksum_refused(dut):
    """A driver that refuses CSUM and GUEST_CSUM: no DATA_VALID; frames pass unchanged."""
    tb = NetSystem(dut)
    net = await tb.start(without=(VirtioNetF.CSUM, VirtioNetF.GUEST_CSUM))
    assert not net.vdev.has_feature(VirtioNetF.GUEST_CSUM)
    frame = ip_frame(payload=b"checksummed")
    (pkt,) = await tb.receive([frame])
    assert pkt.frame == frame and pkt.hdr["flags"] == 0
    out = ip_frame(PEER_MAC, DEVICE_MAC, payload=b"sent")
    assert await tb.transmit([out]) == [out]
    tb.check()


# -- receive filters and the control queue -----------------------------------------------------

@cocotb.test()
async def run_filters(dut):
    """CTRL_RX promiscuous / all-multicast, the CTRL_MAC table, and a new address set with
    MAC_ADDR_SET (config ``mac`` follows, with a configuration interrupt)."""
    tb = NetSystem(dut)
    net = await tb.start()
    other = bytes.fromhex("02aabbccddee")
    multi = bytes.fromhex("01005e000001")
    multi2 = bytes.fromhex("333300000001")
    listed = bytes.fromhex("02aabbccdd01")

    async def accepted(frames):
        got = []
        for f in frames:
            await tb.mac.send(f)
        await tb.mac.flush()
        await ClockCycles(tb.dut.clk, 2000)
        while not net.rx[0].packets.empty():
            got.append(net.rx[0].packets.get_nowait().frame)
        return got

    mine, bcast = raw_frame(80), raw_frame(81, BROADCAST)
    to_other, to_multi = raw_frame(82, other), raw_frame(83, multi)
    to_multi2, to_listed = raw_frame(84, multi2), raw_frame(85, listed)
    everything = [mine, bcast, to_other, to_multi, to_multi2, to_listed]
    # Linux's default after open: not promiscuous, no all-multi, empty table.
    assert await accepted(everything) == [mine, bcast]
    filtered = tb.net_stats()["rx_filtered"]
    await net.set_rx_mode(promisc=True)
    assert await accepted(everything) == everything
    await net.set_rx_mode(promisc=False, allmulti=True)
    assert await accepted(everything) == [mine, bcast, to_multi, to_multi2]
    await net.set_rx_mode(allmulti=False, uc_addrs=[listed], mc_addrs=[multi2])
    assert await accepted(everything) == [mine, bcast, to_multi2, to_listed]
    assert tb.net_stats()["rx_filtered"] - filtered == 0 + 2 + 2
    # A new address: frames to the old one are filtered, config space shows the new one.
    new = bytes.fromhex("021122334455")
    changes = net.vdev.config_changes
    assert await net.send_command(VirtioNetCtrlClass.MAC, VirtioNetCtrlMac.ADDR_SET, out=[new])
    assert await net.vdev.cread(VirtioNetConfig, "mac") == new
    assert await accepted([raw_frame(90, new), raw_frame(91)]) == [raw_frame(90, new)]
    for _ in range(100):
        if net.vdev.config_changes > changes:
            break
        await Timer(100, "ns")
    assert net.vdev.config_changes > changes, "no configuration interrupt after MAC_ADDR_SET"
    assert all(ok for _c, _m, ok in net.commands), net.commands
    tb.check(allow=("rx_filtered",))


@cocotb.test()
async def run_control_malformed(dut):
    """Malformed or unknown control commands get VIRTIO_NET_ERR and change nothing."""
    tb = NetSystem(dut)
    net = await tb.start()
    cmd = net.send_command
    bad = [
        (VirtioNetCtrlClass.RX, VirtioNetCtrlRx.PROMISC, [b""]),             # no data
        (VirtioNetCtrlClass.RX, VirtioNetCtrlRx.PROMISC, [b"\x01\x00"]),     # two bytes
        (VirtioNetCtrlClass.RX, VirtioNetCtrlRx.NOBCAST, [b"\x01"]),         # not offered
        (VirtioNetCtrlClass.MAC, VirtioNetCtrlMac.ADDR_SET, [b"\x02\x00\x00"]),   # short
        (VirtioNetCtrlClass.MAC, VirtioNetCtrlMac.TABLE_SET,                  # count > data
         [(3).to_bytes(4, "little") + PEER_MAC, (0).to_bytes(4, "little")]),
        (VirtioNetCtrlClass.MAC, VirtioNetCtrlMac.TABLE_SET,                  # one table only
         [(0).to_bytes(4, "little")]),
        (VirtioNetCtrlClass.MQ, VirtioNetCtrlMq.VQ_PAIRS_SET, [(0).to_bytes(2, "little")]),
        (VirtioNetCtrlClass.MQ, VirtioNetCtrlMq.VQ_PAIRS_SET,
         [(tb.params["queues"] + 1).to_bytes(2, "little")]),
        (VirtioNetCtrlClass.MQ, VirtioNetCtrlMq.RSS_CONFIG, [bytes(16)]),
        (VirtioNetCtrlClass.VLAN, 0, [b"\x01\x00"]),
        (VirtioNetCtrlClass.ANNOUNCE, 0, []),
        (VirtioNetCtrlClass.GUEST_OFFLOADS, 0, [bytes(8)]),
        (0x77, 0, [b"\x00"]),
    ]
    for i, (c, m, out) in enumerate(bad):
        assert not await cmd(c, m, out=[o for o in out if o] or ()), f"case {i} answered OK"
    # Nothing changed: still filtering (not promiscuous), still the same address and pairs.
    assert await net.vdev.cread(VirtioNetConfig, "mac") == DEVICE_MAC
    await tb.mac.send(raw_frame(70, PEER_MAC))
    await tb.expect_nothing()
    (pkt,) = await tb.receive([raw_frame(71)])
    assert pkt.frame == raw_frame(71)
    assert tb.new_stats().get("ctrl_err") == len(bad)
    # A good command still works afterwards.
    assert await cmd(VirtioNetCtrlClass.RX, VirtioNetCtrlRx.PROMISC, out=[b"\x01"])
    tb.check(allow=("ctrl_err", "rx_filtered"))


# -- bad frames from the MAC -------------------------------------------------------------------

@cocotb.test()
async def run_rx_bad_frames(dut):
    """Runts, frames the MAC marked bad and frames beyond MTU + 18 are dropped and counted;
    good frames around them arrive."""
    tb = NetSystem(dut)
    await tb.start()
    await tb.mac.send(raw_frame(40))
    await tb.mac.send(raw_frame(100), bad=True)
    await tb.mac.send(raw_frame(1519))
    good = raw_frame(1518)
    (pkt,) = await tb.receive([good])
    assert pkt.frame == good
    await tb.expect_nothing(5000)
    assert tb.new_stats() == {"rx_runt": 1, "rx_mac_error": 1, "rx_oversize": 1,
                              "rx_frames": 1}
    tb.check(allow=("rx_runt", "rx_mac_error", "rx_oversize"))


# -- multiqueue --------------------------------------------------------------------------------

@cocotb.test()
async def run_mq_steering(dut):
    """CTRL_MQ: flows spread over the pairs in use by the flow hash; one pair after
    VQ_PAIRS_SET 1; transmit on every pair's queue."""
    tb = NetSystem(dut)
    net = await tb.start()
    pairs = tb.params["queues"]
    assert net.curr_queue_pairs == pairs
    flows = [ip_frame(version=4 if i % 3 else 6, proto="tcp" if i % 2 else "udp",
                      sport=1000 + 7 * i, dport=80, src_ip=i + 1, payload=b"x" * 20)
             for i in range(24)]
    expect = [rx_steer(flow_hash(f), pairs) for f in flows]
    assert len(set(expect)) == pairs, "the flows do not reach every pair"
    for frame in flows:
        await tb.mac.send(frame)
    for frame, pair in zip(flows, expect, strict=True):
        pkt = await net.recv(pair, timeout_ns=MS // 5)
        assert pkt.frame == frame and pkt.queue == pair
    for pair in range(pairs):
        frame = raw_frame(100 + pair, PEER_MAC, DEVICE_MAC)
        assert await tb.transmit([frame], queue=pair) == [frame]
    assert await net.set_queues(1)
    for frame in flows[:8]:
        (pkt,) = await tb.receive([frame], queue=0)
        assert pkt.frame == frame
    await tb.expect_nothing(2000)
    assert await net.set_queues(pairs)
    for frame, pair in list(zip(flows, expect, strict=True))[:8]:
        await tb.mac.send(frame)
        assert (await net.recv(pair, timeout_ns=MS // 5)).frame == frame
    tb.check()


@cocotb.test()
async def run_without_mq(dut):
    """A driver that refuses MQ on a multi-pair device: one pair; the control queue is queue 2
    (the device polls it) and works."""
    tb = NetSystem(dut)
    net = await tb.start(without=(VirtioNetF.MQ,))
    assert net.max_queue_pairs == 1 and len(net.rx) == 1
    await net.set_rx_mode(promisc=False)
    flows = [ip_frame(sport=1000 + i) for i in range(6)]
    got = await tb.receive(flows)
    assert [p.frame for p in got] == flows
    await tb.mac.send(raw_frame(70, PEER_MAC))
    await tb.expect_nothing()
    assert await net.send_command(VirtioNetCtrlClass.RX, VirtioNetCtrlRx.PROMISC, out=[b"\x01"])
    (pkt,) = await tb.receive([raw_frame(70, PEER_MAC)])
    assert pkt.frame == raw_frame(70, PEER_MAC)
    tb.check(allow=("rx_filtered",))


# -- link --------------------------------------------------------------------------------------

@cocotb.test()
async def run_link_changes(dut):
    """link_up drives status.LINK_UP with a configuration interrupt; the driver follows; no
    frame is sent while the link is down and transmission resumes after."""
    tb = NetSystem(dut)
    net = await tb.start()
    for _ in range(2):
        changes = net.vdev.config_changes
        await tb.mac.set_link(False)
        await with_timeout(net.wait_link(False), 100, "us")
        assert net.vdev.config_changes == changes + 1
        assert await net.vdev.cread(VirtioNetConfig, "status") == 0
        assert not net.carrier
        await tb.mac.set_link(True)
        await with_timeout(net.wait_link(True), 100, "us")
        assert await net.vdev.cread(VirtioNetConfig, "status") == 1
    frame = raw_frame(300, PEER_MAC, DEVICE_MAC)
    assert await tb.transmit([frame]) == [frame]
    # Link down under a sender: the driver's queue waits (carrier off); frames flow again
    # once the link is back.
    await tb.mac.set_link(False)
    await with_timeout(net.wait_link(False), 100, "us")
    sender = cocotb.start_soon(net.send(frame))
    await Timer(5000, "ns")
    assert not sender.done() and not tb.mac.pending()
    await tb.mac.set_link(True)
    await with_timeout(sender, 200, "us")
    assert await tb.mac.recv() == frame
    tb.check()


# -- interrupt modes and profiles --------------------------------------------------------------

@cocotb.test()
@cocotb.parametrize((("mode", "profile"), [(IrqMode.MSIX_SHARED, "linux-7"),
                                           (IrqMode.INTX, "linux-6.12"),
                                           (IrqMode.MSIX_EACH, "linux-7")]))
async def run_interrupt_modes(dut, mode, profile):
    """The shared-vector and INTx policies move data both ways and deliver link changes; the
    other profile (the rest of the tests run "linux-6.12") with per-queue vectors."""
    tb = NetSystem(dut)
    net = await tb.start(irq_mode=mode, profile=profile)
    assert net.vdev.transport.irq_mode == mode, net.vdev.transport.irq_mode
    await exercise(tb, net)


async def exercise(tb, net):
    """A short workout: frames both ways, a checksum each way, a link flap."""
    frames = [raw_frame(n, PEER_MAC, DEVICE_MAC) for n in (60, 333, 1514)]
    assert await tb.transmit(frames) == frames
    rx = [raw_frame(n) for n in (60, 777, 1514)]
    assert [p.frame for p in await tb.receive(rx)] == rx
    frame = ip_frame(PEER_MAC, DEVICE_MAC, proto="tcp", payload=b"csum" * 50)
    partial, start, offset = checksum_partial(frame)
    assert await tb.transmit([partial], hdr={"flags": NEEDS_CSUM, "csum_start": start,
                                             "csum_offset": offset}) == [frame]
    frame = ip_frame(proto="tcp", payload=b"csum" * 50)
    (pkt,) = await tb.receive([frame])
    assert pkt.frame == frame and pkt.hdr["flags"] == DATA_VALID
    await tb.mac.set_link(False)
    await with_timeout(net.wait_link(False), 100, "us")
    await tb.mac.set_link(True)
    await with_timeout(net.wait_link(True), 100, "us")
    tb.check()


# -- legacy (transitional build) ---------------------------------------------------------------

@cocotb.test()
@cocotb.parametrize(legacy=[True, False], mode=[IrqMode.MSIX_EACH, IrqMode.INTX])
async def run_transitional(dut, legacy, mode):
    """The transitional device through the legacy interface (force_legacy) and the modern one,
    with per-queue MSI-X and INTx."""
    tb = NetSystem(dut)
    net = await tb.start(force_legacy=legacy, irq_mode=mode)
    vdev = net.vdev
    assert vdev.transport.irq_mode == mode
    assert vdev.has_feature(VirtioF.VERSION_1) == (not legacy)
    assert net.mac == DEVICE_MAC and net.hdr_len == 12 and net.mergeable
    await exercise(tb, net)
    sizes = sweep_sizes(1514, stride=97)
    frames = [raw_frame(n, PEER_MAC, DEVICE_MAC) for n in sizes]
    assert await tb.transmit(frames) == frames
    frames = [raw_frame(n) for n in sizes]
    assert [p.frame for p in await tb.receive(frames)] == frames
    tb.check()


@cocotb.test()
async def run_no_receive_buffers(dut):
    """Before the driver posts receive buffers (bound, not opened), frames from the MAC are
    dropped and counted and transmission is not held up; after open they arrive."""
    tb = NetSystem(dut)
    net = await tb.start(opened=False)
    for n in (60, 500, 1514):
        await tb.mac.send(raw_frame(n))
    frame = raw_frame(200, PEER_MAC, DEVICE_MAC)
    assert await tb.transmit([frame]) == [frame]
    await tb.expect_nothing(5000)
    assert tb.new_stats().get("rx_no_buffer") == 3, tb.new_stats()
    await with_timeout(net.open(), 2, "ms")
    (pkt,) = await tb.receive([raw_frame(300)])
    assert pkt.frame == raw_frame(300)
    tb.check(allow=("rx_no_buffer",))


@cocotb.test()
async def run_rebind(dut):
    """The driver is removed (device reset while frames are in flight) and bound again, with
    other features: the device starts clean and works."""
    tb = NetSystem(dut)
    net = await tb.start()
    for n in range(8):
        await tb.mac.send(raw_frame(1000 + n))
    await net.send(raw_frame(1500, PEER_MAC, DEVICE_MAC))
    await net.remove(net.vdev)
    tb.mac.pending()
    net = VirtioNetDriver(without=(VirtioNetF.MRG_RXBUF, VirtioNetF.MQ))
    await with_timeout(tb.bind(net), 4, "ms")
    await with_timeout(net.open(), 2, "ms")
    assert not net.mergeable and net.max_queue_pairs == 1
    tb.net = net
    await tb.mac.flush()
    await ClockCycles(tb.dut.clk, 500)
    for q in net.rx:                      # nothing left over from the first binding
        assert q.packets.empty()
    tb.mac.pending()
    frames = [raw_frame(n, seed=9) for n in (60, 1514, 800)]
    assert [p.frame for p in await tb.receive(frames)] == frames
    frames = [raw_frame(n, PEER_MAC, DEVICE_MAC, seed=9) for n in (60, 1514, 800)]
    assert await tb.transmit(frames) == frames
    tb.check(allow=("rx_no_buffer",))

@cocotb.test()
async def run_stress(dut):
    """Both pairs busy both ways at once (receive at 10 GbE line rate), with 500 ns host
    latency (``NET_STRESS_LATENCY_NS`` sets another, to measure the margin), reordered
    completions and 64-byte completion splitting; every frame arrives once, intact, in order
    per queue."""
    latency = int(os.environ.get("NET_STRESS_LATENCY_NS", "500"))
    tb = NetSystem(dut, bridge_options={"latency_ns": latency, "reorder": True, "rcb": 64},
                   seed=5)
    net = await tb.start()
    pairs = tb.params["queues"]
    rng = random.Random(11)
    count = 160 if FULL_SWEEP else 48
    rx_frames = [ip_frame(proto=rng.choice(["udp", "tcp"]), sport=rng.randrange(65536),
                          payload=rng.randbytes(rng.randrange(0, 1458)))
                 for _ in range(count)]
    expect = {q: [f for f in rx_frames if rx_steer(flow_hash(f), pairs) == q]
              for q in range(pairs)}
    tx_frames = {q: [raw_frame(rng.randrange(60, 1515), PEER_MAC, DEVICE_MAC, seed=q)
                     for _ in range(count // pairs)] for q in range(pairs)}

    async def feed_rx():
        await tb.mac.send_paced(rx_frames, gbps=10)

    async def feed_tx(q):
        frames = tx_frames[q]
        for i, f in enumerate(frames):
            await net.send(f, queue=q, more=i % 4 != 3 and i != len(frames) - 1)

    tasks = [cocotb.start_soon(feed_rx())] + [cocotb.start_soon(feed_tx(q))
                                              for q in range(pairs)]
    for q in range(pairs):
        for i, f in enumerate(expect[q]):
            try:
                pkt = await net.recv(q, timeout_ns=MS)
            except SimTimeoutError:
                raise AssertionError(f"queue {q}: frame {i} of {len(expect[q])} missing; "
                                     f"device counters {tb.new_stats()}") from None
            if pkt.frame != f:
                where = [j for j, g in enumerate(expect[q]) if g == pkt.frame]
                raise AssertionError(f"queue {q} frame {i} differs: got frame {where} of "
                                     f"{len(expect[q])}; device counters {tb.new_stats()}")
    sent = []
    total = sum(len(v) for v in tx_frames.values())
    for _ in range(total):
        sent.append(await tb.mac.recv(timeout_ns=MS))
    for t in tasks:
        await t
    for q in range(pairs):          # each transmit queue's frames leave in its order
        mine = [f for f in sent if f in tx_frames[q]]
        assert mine == tx_frames[q], f"transmit queue {q}: frames lost, changed or reordered"
    tb.check()


# -- jumbo frames (transitional build, MTU 9000) -----------------------------------------------

@cocotb.test()
@cocotb.parametrize(mergeable=[True, False])
async def run_jumbo(dut, mergeable):
    """MTU 9000: frames spread over several mergeable buffers (num_buffers > 1, used entries
    of a frame made visible together), or, with MRG_RXBUF refused, Linux's "big packets"
    (header + page-sized buffers); jumbo frames transmitted from scatter-gather chains."""
    tb = NetSystem(dut)
    net = await tb.start(without=() if mergeable else (VirtioNetF.MRG_RXBUF,))
    mtu = tb.params["net_options"]["mtu"]
    # (Linux sets big_packets for MTU > 1500 either way; mergeable buffers take precedence)
    assert net.mtu == mtu and net.mergeable == mergeable and net.big_packets
    largest = mtu + 18
    sizes = [60, 1514, 1523, 1524, 1525, 3000, 4096, 4097, 4109, 6000, largest - 1, largest]
    if FULL_SWEEP:
        sizes = sorted(set(sizes) | set(range(60, largest + 1, 61)))
    buf = net._rx_buffer_sizes()[0] if mergeable else None
    frames = [raw_frame(n) for n in sizes]
    got = await tb.receive(frames)
    for frame, pkt in zip(frames, got, strict=True):
        assert pkt.frame == frame, f"{len(frame)}-byte frame differs"
        if mergeable:
            want = -(-(net.hdr_len + len(frame)) // buf)
            assert pkt.hdr["num_buffers"] == want == pkt.buffers, (len(frame), pkt.hdr)
    frames = [raw_frame(n, PEER_MAC, DEVICE_MAC) for n in sizes]
    assert await tb.transmit(frames) == frames
    assert await tb.transmit(frames[-3:], frags=[100, 4000, 1]) == frames[-3:]
    await tb.mac.send(raw_frame(largest + 1))
    await tb.expect_nothing(5000)
    assert tb.new_stats().get("rx_oversize") == 1
    tb.check(allow=("rx_oversize",))


# -- the device's parameters -------------------------------------------------------------------

@pytest.mark.unit
def test_transitional_net_needs_mrg_rxbuf():
    from virtio_pcie.top import VirtioPcieDevice
    with pytest.raises(ValueError, match="mrg_rxbuf"):
        VirtioPcieDevice(device="net", transitional=True, net_options={"mrg_rxbuf": False})
    VirtioPcieDevice(device="net", transitional=False, net_options={"mrg_rxbuf": False})


@pytest.mark.unit
def test_driver_refuses_only_known_features():
    assert VirtioNetDriver(without=(VirtioNetF.MRG_RXBUF,)).without == (VirtioNetF.MRG_RXBUF,)
    with pytest.raises(ValueError, match="RING_PACKED"):
        VirtioNetDriver(without=(VirtioF.RING_PACKED,))


# -- pytest launchers --------------------------------------------------------------------------

MODERN = design_params("net", 128, queues=2)
#: Transitional, one pair, jumbo frames (a legacy driver and "big packets" mode need MTU > 1500).
TRANSITIONAL = design_params("net", 128, transitional=True, queues=1, net_options={
    "mtu": 9000, "tx_buffer_bytes": 32768, "rx_buffer_bytes": 32768})
MODERN_TESTS = [
    "run_probe", "run_tx_sizes", "run_rx_sizes", "run_ring_wrap", "run_echo", "run_tx_checksum",
    "run_rx_checksum", "run_checksum_refused", "run_filters", "run_control_malformed",
    "run_rx_bad_frames", "run_mq_steering", "run_without_mq", "run_link_changes",
    "run_interrupt_modes", "run_no_receive_buffers", "run_rebind", "run_stress"]


def build(params):
    return build_system(params, ports_only=True)


@pytest.mark.system
def test_net_modern(simulate):
    simulate(build(MODERN), "test_system_net", testcase=MODERN_TESTS)


@pytest.mark.system
def test_net_transitional(simulate):
    simulate(build(TRANSITIONAL), "test_system_net", testcase=["run_transitional", "run_jumbo"])


@pytest.mark.system
@pytest.mark.slow
def test_net_every_size(simulate):
    simulate(build(MODERN), "test_system_net",
             testcase=["run_tx_sizes", "run_rx_sizes", "run_stress"], env={"NET_SWEEP": "full"})


@pytest.mark.system
@pytest.mark.slow
def test_net_jumbo_sweep(simulate):
    simulate(build(TRANSITIONAL), "test_system_net", testcase=["run_jumbo"],
             env={"NET_SWEEP": "full"})


@pytest.mark.system
def test_net_demo(simulate):
    """``virtio-pcie demo --device net`` (its short variant) on the same build."""
    from virtio_pcie_tb.demos.net import DEMO_PARAMS
    assert DEMO_PARAMS == MODERN
    simulate(build(MODERN), "virtio_pcie_tb.demos.net", env={"DEMO_QUICK": "1"})
