# SPDX-License-Identifier: BSD-2-Clause
"""``virtio-pcie demo --device net``: a NIC on the simulated PCIe link, pinging a peer.

::

    VirtioNetDriver ─► RootComplex ── bridge ══ VirtioPcieDevice(device="net") ══ MacPort ── NetPeer
    + a tiny guest IP stack (this module)                                        (ARP, ICMP echo,
                                                                                  UDP echo)

The simulation enumerates the device, binds the Linux-faithful driver model, then talks to a
peer on the MAC side (:class:`~virtio_pcie_tb.cosim.net_peer.NetPeer`, the co-simulation's
peer): ARP, ICMP echo of every size from 0 to the MTU's largest, and UDP echo with transmit
checksum offload (the peer verifies every checksum it receives and drops bad ones; the driver
checks DATA_VALID on the answers). Then it streams frames each way and reports frames per second
in simulated cycles. Everything is verified; the report ends with PASS or FAIL.

:func:`ping_exchange` is also used by the system tests (``tb/test_system_net.py``).
"""

import logging
import os
import struct
import sys
import time
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, Timer, with_timeout
from cocotb.utils import get_sim_time

from ..cosim.net_peer import NetPeer, checksum

__all__ = ["ping_exchange", "run_net_demo", "DEMO_PARAMS"]

GUEST_IP = bytes([169, 254, 77, 2])
PEER_IP = bytes([169, 254, 77, 1])
PEER_MAC = bytes.fromhex("020000770001")
ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
IPPROTO_ICMP, IPPROTO_UDP = 1, 17
ECHO_PORT = 7
#: IPv4 payload of the largest frame: MTU 1500 minus the IPv4 header.
IP_PAYLOAD_MAX = 1480

#: The demo's design: the system tests' modern 2-pair build (one cached build for both).
DEMO_PARAMS = {"device": "net", "data_width": 128, "transitional": False, "queues": 2}


# -- a guest IP stack just big enough to ping ---------------------------------------------------

def _ether(dst, src, ethertype, payload):
    return dst + src + struct.pack("!H", ethertype) + payload


def _ipv4(proto, src, dst, payload, ident):
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto,
                         0, src, dst)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def arp_request(mac):
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, mac, GUEST_IP, bytes(6), PEER_IP)
    return _ether(b"\xff" * 6, mac, ETH_P_ARP, arp)


def icmp_echo(mac, peer_mac, ident, seq, payload):
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    msg = msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]
    return _ether(peer_mac, mac, ETH_P_IP, _ipv4(IPPROTO_ICMP, GUEST_IP, PEER_IP, msg, seq))


def udp_partial(mac, peer_mac, sport, payload, ident):
    """A UDP datagram to the echo port as Linux hands it to a CSUM device: the pseudo-header
    sum in the checksum field; returns (frame, csum_start, csum_offset)."""
    length = 8 + len(payload)
    pseudo = GUEST_IP + PEER_IP + struct.pack("!BBH", 0, IPPROTO_UDP, length)
    partial = (~checksum(pseudo)) & 0xFFFF          # the folded sum, not complemented
    udp = struct.pack("!HHHH", sport, ECHO_PORT, length, partial) + payload
    frame = _ether(peer_mac, mac, ETH_P_IP, _ipv4(IPPROTO_UDP, GUEST_IP, PEER_IP, udp, ident))
    return frame, 14 + 20, 6


async def ping_exchange(tb, *, sizes, udp_sizes, timeout_ns=400_000):
    """Attach a :class:`NetPeer` to ``tb.mac`` and talk to it through ``tb.net``: ARP, one ICMP
    echo per entry of ``sizes`` (payload bytes), one UDP echo per entry of ``udp_sizes`` (sent
    with NEEDS_CSUM). Returns a report dict; ``lost``/``corrupt`` count failures."""
    from virtio_pcie.spec.virtio import VirtioNetHdrFlags
    net, mac = tb.net, tb.net.mac
    peer = NetPeer(mac=PEER_MAC, ip=PEER_IP)
    tb.mac.responder = peer.handle_frame
    report = {"sent": 0, "answered": 0, "lost": 0, "corrupt": 0, "bytes": 0,
              "data_valid": 0, "peer_dropped": peer.dropped}

    async def answer():
        try:
            return await net.recv(timeout_ns=timeout_ns)
        except TimeoutError:
            return None
    try:
        await net.send(arp_request(mac))
        report["sent"] += 1
        pkt = await answer()
        if pkt is None or pkt.frame[12:14] != struct.pack("!H", ETH_P_ARP) \
                or pkt.frame[14 + 8:14 + 14] != PEER_MAC:
            report["lost" if pkt is None else "corrupt"] += 1
            return report
        peer_mac = pkt.frame[6:12]
        report["answered"] += 1
        for seq, n in enumerate(sizes):
            payload = bytes((seq + i) & 0xFF for i in range(n))
            await net.send(icmp_echo(mac, peer_mac, 0x4242, seq, payload))
            report["sent"] += 1
            pkt = await answer()
            if pkt is None:
                report["lost"] += 1
                continue
            ip = pkt.frame[14:]
            total = struct.unpack_from("!H", ip, 2)[0]
            icmp = ip[20:total]
            if (ip[9] != IPPROTO_ICMP or icmp[0] != 0 or checksum(icmp)
                    or struct.unpack_from("!HH", icmp, 4) != (0x4242, seq) or icmp[8:] != payload):
                report["corrupt"] += 1
                continue
            report["answered"] += 1
            report["bytes"] += n
        for i, n in enumerate(udp_sizes):
            payload = bytes((7 * i + j) & 0xFF for j in range(n))
            frame, start, offset = udp_partial(mac, peer_mac, 40000 + i, payload, 0x100 + i)
            await net.send(frame, hdr={"flags": VirtioNetHdrFlags.NEEDS_CSUM.value,
                                       "csum_start": start, "csum_offset": offset})
            report["sent"] += 1
            pkt = await answer()
            if pkt is None:
                report["lost"] += 1
                continue
            ip = pkt.frame[14:]
            total = struct.unpack_from("!H", ip, 2)[0]
            udp = ip[20:total]
            if ip[9] != IPPROTO_UDP or udp[8:] != payload or udp[:2] != b"\x00\x07":
                report["corrupt"] += 1
                continue
            report["answered"] += 1
            report["bytes"] += n
            if pkt.hdr["flags"] & VirtioNetHdrFlags.DATA_VALID.value:
                report["data_valid"] += 1
    finally:
        tb.mac.responder = None
    return report


# -- the demo simulation ---------------------------------------------------------------------------

def _feature_names(bits):
    from virtio_pcie.spec.virtio import VirtioF, VirtioNetF
    names = []
    for bit in range(128):
        if bits >> bit & 1:
            for enum in (VirtioF, VirtioNetF):
                try:
                    names.append(enum(bit).name)
                    break
                except ValueError:
                    continue
            else:
                names.append(f"bit{bit}")
    return names


def _wrap(words, indent="    ", width=96):
    lines, line = [], indent
    for w in words:
        if len(line) + len(w) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += w + " "
    lines.append(line.rstrip())
    return "\n".join(lines)


async def _stream(tb, frames, direction, clock_ns):
    """Send ``frames`` one way as fast as the driver and the device go; returns cycles."""
    net = tb.net
    start = get_sim_time("ns")
    if direction == "tx":
        for f in frames[:-1]:
            await net.send(f, more=True)
        await net.send(frames[-1])
        for f in frames:
            if await tb.mac.recv() != f:
                raise AssertionError("a streamed frame came out different")
    else:
        for f in frames:
            await tb.mac.send(f)
        for f in frames:
            if (await net.recv(0, timeout_ns=1_000_000)).frame != f:
                raise AssertionError("a streamed frame came in different")
    return (get_sim_time("ns") - start) / clock_ns


@cocotb.test()
async def demo_net(dut):
    from ..system import CLOCK_NS, SystemTB
    from ..host import VirtioNetDriver
    quick = os.environ.get("DEMO_QUICK") == "1"
    logging.getLogger("cocotb.pcie").setLevel(logging.WARNING)     # not a line per TLP
    logging.getLogger("cocotb.pcie.RootComplex").setLevel(logging.ERROR)
    lines = []
    say = lines.append
    tb = SystemTB(dut)
    await tb.reset()
    tb.net = net = VirtioNetDriver()
    t0 = get_sim_time("ns")
    vdev = await with_timeout(tb.bind(net), 4, "ms")
    await with_timeout(net.open(), 2, "ms")
    pdev = tb.pci
    dev = pdev.dev
    say("== the device the host found ==")
    say(f"{dev.pcie_id} Ethernet controller [{dev.class_code:06x}]: "
        f"[{dev.vendor_id:04x}:{dev.device_id:04x}] (rev {dev.revision_id:02x}), "
        f"subsystem [{dev.subsystem_vendor_id:04x}:{dev.subsystem_id:04x}]")
    say(f"driver: virtio_net, interrupts {vdev.transport.irq_mode.value}, "
        f"status sequence {' -> '.join(f'{s:#x}' for s in vdev.status_trace)}")
    say("offered:")
    say(_wrap(_feature_names(vdev.device_features)))
    say("negotiated:")
    say(_wrap(_feature_names(vdev.features)))
    say(f"mac {net.mac.hex(':')}, mtu {net.mtu}, queue pairs {net.curr_queue_pairs} of "
        f"{net.max_queue_pairs}, link {'up' if net.carrier else 'down'}, receive buffers "
        f"{'mergeable' if net.mergeable else 'big' if net.big_packets else 'small'}")
    say(f"probe and open: {(get_sim_time('ns') - t0) / 1000:.1f} us simulated, "
        f"{len(net.commands)} control commands, all OK: "
        f"{all(ok for _c, _m, ok in net.commands)}")

    say("")
    say("== talking to a peer (169.254.77.1) on the MAC side ==")
    sizes = list(range(0, IP_PAYLOAD_MAX - 8 + 1, 97 if quick else 13)) + [IP_PAYLOAD_MAX - 8]
    udp_sizes = [1, 512, IP_PAYLOAD_MAX - 8] if quick else [1, 18, 512, 1000, IP_PAYLOAD_MAX - 8]
    t0 = get_sim_time("ns")
    report = await ping_exchange(tb, sizes=sizes, udp_sizes=udp_sizes)
    took = get_sim_time("ns") - t0
    say(f"ARP, {len(sizes)} ICMP echoes ({sizes[0]}..{sizes[-1]} bytes), {len(udp_sizes)} UDP "
        f"echoes with checksum offload:")
    say(f"    {report['answered']} of {report['sent']} answered, {report['lost']} lost, "
        f"{report['corrupt']} corrupt; {report['bytes']} payload bytes verified; "
        f"{report['data_valid']} of {len(udp_sizes)} UDP answers DATA_VALID")
    say(f"peer dropped: {dict(report['peer_dropped']) or 'nothing'}; "
        f"{took / 1000:.1f} us simulated ({took / CLOCK_NS:.0f} cycles)")

    say("")
    say("== streaming (driver model as fast as it goes; 250 MHz clock) ==")
    stream_ok = True
    for size in (64, 512, 1514):
        n = 16 if quick else 64
        tx = [bytes(PEER_MAC) + net.mac + b"\x88\xb5" + bytes([i]) * (size - 14) for i in range(n)]
        rx = [net.mac + bytes(PEER_MAC) + b"\x88\xb5" + bytes([i]) * (size - 14) for i in range(n)]
        try:
            tx_cycles = await _stream(tb, tx, "tx", CLOCK_NS)
            rx_cycles = await _stream(tb, rx, "rx", CLOCK_NS)
        except AssertionError as e:
            say(f"{size:5d} B: FAILED ({e})")
            stream_ok = False
            continue
        say(f"{size:5d} B: TX {n} frames in {tx_cycles:7.0f} cycles "
            f"({tx_cycles / n:6.1f}/frame, {250 * n / tx_cycles:5.2f} Mpps); "
            f"RX {n} in {rx_cycles:7.0f} cycles ({rx_cycles / n:6.1f}/frame, "
            f"{250 * n / rx_cycles:5.2f} Mpps)")
    say("(the whole device with the driver model and a host that answers at once; a short "
        "stream includes the\n pipeline's start: the sustained rates are in docs/net.md and "
        "`virtio-pcie bench`)")

    await ClockCycles(dut.clk, 200)
    stats = tb.net_stats()
    counters = {k.split(".", 1)[1]: v for k, v in tb.counters().items()
                if k.startswith("virtq.")}
    say("")
    say("== counters ==")
    say("device: " + ", ".join(f"{k} {v}" for k, v in stats.items() if v))
    say("virtqueue engine: " + ", ".join(f"{k} {v}" for k, v in counters.items() if v))
    irqs = sum(v.count for v in pdev.msix_vectors) if pdev.msix_vectors else pdev.irq.count
    doorbells = sum(q.vq.stats.kicks for q in net.rx + net.tx)
    say(f"host: {irqs} interrupts, {doorbells} doorbells")
    errors = tb.bridge.all_errors
    ok = (report["lost"] == 0 and report["corrupt"] == 0 and stream_ok and not errors
          and report["data_valid"] == len(udp_sizes) and not report["peer_dropped"])
    if errors:
        say(f"bridge errors: {errors[:3]}")
    say("")
    say("PASS" if ok else "FAIL")
    Path(os.getcwd(), "report.txt").write_text("\n".join(lines) + "\n")
    await Timer(1, "ns")
    assert ok, "the demo's checks failed (see the report)"


def run_net_demo(*, data_width=128, verbose=False, quick=False):
    """Build the net device (cached), run :func:`demo_net`, print its report."""
    from .. import harness
    from ..system import build_system
    started = time.monotonic()
    params = dict(DEMO_PARAMS, data_width=data_width)
    print(f"virtio-pcie demo: building the virtio-net device ({data_width}-bit; a few minutes "
          f"the first time, cached after)...", file=sys.stderr)
    design = build_system(params, ports_only=True, verbose=True)
    out = harness.SIM_BUILD / "demo" / f"net-{data_width}"
    print("virtio-pcie demo: simulating (driver model → root complex → bridge → RTL → peer)...",
          file=sys.stderr)
    failed = None
    try:
        harness.run(design, "virtio_pcie_tb.demos.net", test_dir=out, quiet=not verbose,
                    env={"DEMO_QUICK": "1" if quick else "0"})
    except harness.SimulationFailed as e:
        failed = e
    report = out / "report.txt"
    if report.exists():
        print(report.read_text())
    if failed is not None:
        print(f"demo FAILED: {failed}", file=sys.stderr)
        return 1
    print(f"virtio-pcie demo: done in {time.monotonic() - started:.0f} s "
          f"(outputs in {out})", file=sys.stderr)
    return 0
