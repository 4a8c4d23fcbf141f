# SPDX-License-Identifier: BSD-2-Clause
"""The network peer against frames built and checked by scapy (an independent implementation
of the same protocols): ARP, ICMP echo of every size up to the MTU, UDP echo, and the frames it
must ignore."""

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from virtio_pcie_tb.cosim.net_peer import ETH_MIN_FRAME, NetPeer, checksum

pytestmark = pytest.mark.unit

PEER_MAC, PEER_IP = "02:00:00:77:00:01", "169.254.77.1"
GUEST_MAC, GUEST_IP = "52:54:00:77:00:02", "169.254.77.2"


@pytest.fixture
def peer():
    return NetPeer(mac=PEER_MAC, ip=PEER_IP)


def to_guest(frame):
    pkt = Ether(frame)
    assert pkt.dst == GUEST_MAC and pkt.src == PEER_MAC
    assert len(frame) >= ETH_MIN_FRAME
    return pkt


def checksums_valid(pkt):
    """scapy recomputes each checksum from scratch; the peer's must equal it."""
    ip = pkt[IP]
    rebuilt = IP(bytes(ip))
    del rebuilt.chksum
    ok = IP(bytes(rebuilt)).chksum == ip.chksum
    if ICMP in pkt:
        icmp = ICMP(bytes(pkt[ICMP]))
        del icmp.chksum
        ok &= ICMP(bytes(icmp)).chksum == pkt[ICMP].chksum
    if UDP in pkt:
        u = IP(bytes(ip))
        del u[UDP].chksum
        ok &= IP(bytes(u))[UDP].chksum == pkt[UDP].chksum
    return ok


def test_checksum_rfc1071_example():
    # RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2, so the checksum is 220d.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert checksum(b"\x01") == checksum(b"\x01\x00")


def test_arp_request_is_answered(peer):
    request = Ether(dst="ff:ff:ff:ff:ff:ff", src=GUEST_MAC) / ARP(
        op=1, hwsrc=GUEST_MAC, psrc=GUEST_IP, pdst=PEER_IP)
    (reply,) = peer.handle_frame(bytes(request))
    pkt = to_guest(reply)
    assert pkt[ARP].op == 2 and pkt[ARP].hwsrc == PEER_MAC and pkt[ARP].psrc == PEER_IP
    assert pkt[ARP].hwdst == GUEST_MAC and pkt[ARP].pdst == GUEST_IP
    assert peer.arp_cache[bytes([169, 254, 77, 2])] == bytes.fromhex("525400770002")


def test_arp_for_another_address_is_ignored(peer):
    request = Ether(dst="ff:ff:ff:ff:ff:ff", src=GUEST_MAC) / ARP(
        op=1, hwsrc=GUEST_MAC, psrc=GUEST_IP, pdst="169.254.77.9")
    assert peer.handle_frame(bytes(request)) == []
    assert peer.dropped["ARP for another address"] == 1


@pytest.mark.parametrize("size", list(range(0, 80)) + list(range(1400, 1473)))
def test_icmp_echo_of_every_size(peer, size):
    payload = bytes((i * 7 + size) & 0xFF for i in range(size))
    request = Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) / \
        ICMP(type=8, id=0x1234, seq=size) / Raw(payload)
    (reply,) = peer.handle_frame(bytes(request))
    pkt = to_guest(reply)
    assert pkt[IP].src == PEER_IP and pkt[IP].dst == GUEST_IP
    assert pkt[ICMP].type == 0 and pkt[ICMP].id == 0x1234 and pkt[ICMP].seq == size
    assert bytes(pkt[ICMP].payload)[:size] == payload
    assert pkt[IP].len == 28 + size
    assert checksums_valid(pkt)


def test_largest_ping_fills_the_mtu_and_larger_is_dropped(peer):
    ok = Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) / ICMP() / \
        Raw(b"x" * 1472)
    assert len(peer.handle_frame(bytes(ok))) == 1
    big = Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) / ICMP() / \
        Raw(b"x" * 1473)
    assert peer.handle_frame(bytes(big)) == []
    assert peer.dropped["IPv4 packet larger than the MTU"] == 1


@pytest.mark.parametrize("size", [0, 1, 17, 512, 1024, 1472])
def test_udp_echo(peer, size):
    payload = bytes(range(256)) * 6
    payload = payload[:size]
    request = Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) / \
        UDP(sport=40000, dport=7) / Raw(payload)
    (reply,) = peer.handle_frame(bytes(request))
    pkt = to_guest(reply)
    assert pkt[UDP].sport == 7 and pkt[UDP].dport == 40000
    assert bytes(pkt[UDP].payload)[:size] == payload and pkt[UDP].len == 8 + size
    assert checksums_valid(pkt)
    assert peer.stats["udp_bytes"] == size


def test_udp_without_checksum_is_accepted(peer):
    request = Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) / \
        UDP(sport=1, dport=7, chksum=0) / Raw(b"abc")
    (reply,) = peer.handle_frame(bytes(request))
    assert bytes(to_guest(reply)[UDP].payload)[:3] == b"abc"


def corrupt(frame, offset):
    frame = bytearray(frame)
    frame[offset] ^= 0x55
    return bytes(frame)


DROPPED = [
    (bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst="169.254.77.3") / ICMP()),
     "IPv4 for another address"),
    (bytes(Ether(dst="02:00:00:00:00:99", src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) /
           ICMP()), "not for this MAC"),
    (bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP, flags="MF") /
           ICMP()), "IPv4 fragment"),
    (bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP, frag=10) /
           Raw(b"x" * 8)), "IPv4 fragment"),
    (corrupt(bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) /
                   ICMP()), 14 + 8), "bad IPv4 header checksum"),
    (corrupt(bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) /
                   ICMP() / Raw(b"payload")), 14 + 20 + 9), "bad ICMP checksum"),
    (corrupt(bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) /
                   UDP(dport=7) / Raw(b"payload")), 14 + 28 + 2), "bad UDP checksum"),
    (bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) /
           UDP(dport=9) / Raw(b"x")), "UDP port 9"),
    (bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) /
           ICMP(type=13)), "ICMP type 13 code 0"),
    (bytes(Ether(dst=PEER_MAC, src=GUEST_MAC, type=0x86DD) / Raw(b"\0" * 40)),
     "ethertype 0x86dd"),
    (bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) /
           ICMP()), "IPv4 to the broadcast MAC"),
    (b"\x01\x02\x03", "runt frame"),
    (bytes(Ether(dst=PEER_MAC, src=GUEST_MAC, type=0x0800) / Raw(b"\x45\0")),
     "short IPv4 header"),
]


@pytest.mark.parametrize("frame, reason", DROPPED, ids=[f"{i}-{r}" for i, (_, r) in
                                                        enumerate(DROPPED)])
def test_frames_that_are_dropped(peer, frame, reason):
    assert peer.handle_frame(frame) == []
    assert peer.dropped[reason] == 1, dict(peer.dropped)


def test_ethernet_padding_is_ignored_on_input(peer):
    request = bytes(Ether(dst=PEER_MAC, src=GUEST_MAC) / IP(src=GUEST_IP, dst=PEER_IP) /
                    ICMP(seq=5)) + b"\0" * 30
    (reply,) = peer.handle_frame(request)
    assert to_guest(reply)[ICMP].seq == 5
