# SPDX-License-Identifier: BSD-2-Clause
"""The guest's network peer: a host on the far side of the link that answers ARP, ICMP echo and
UDP echo, from raw Ethernet frames to raw Ethernet frames.

It is transport-agnostic: :meth:`NetPeer.handle_frame` takes one frame (destination MAC first,
no FCS) and returns the frames to send back. The co-simulation connects it to the MAC side of the
RTL's network device, or, with ``--qemu-device``, to QEMU's ``-netdev dgram``.

What it answers (and checks; anything else is counted in :attr:`NetPeer.dropped` by reason):

* ARP requests for its address (RFC 826), learning the asker's address;
* ICMP echo requests (RFC 792) of any size that fits the link MTU, payload echoed unchanged;
* UDP datagrams to the echo port (RFC 862), payload echoed unchanged.

IPv4 header checksums (RFC 791), ICMP checksums and non-zero UDP checksums (RFC 768) are
verified on input (bad ones are dropped) and computed on output. Fragments are dropped: the
guest checks send nothing larger than the MTU. Frames shorter than the Ethernet minimum (60
bytes without FCS) are padded, as a real transmitter does.
"""

import collections
import struct

__all__ = ["NetPeer", "checksum", "parse_mac", "format_mac", "ETH_MIN_FRAME"]

ETH_HEADER = struct.Struct("!6s6sH")
ETH_MIN_FRAME = 60
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ARP = struct.Struct("!HHBBH6s4s6s4s")
ARP_REQUEST, ARP_REPLY = 1, 2
IPV4 = struct.Struct("!BBHHHBBH4s4s")
PROTO_ICMP, PROTO_UDP = 1, 17
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
UDP = struct.Struct("!HHHH")
BROADCAST = b"\xff" * 6


def parse_mac(text):
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)


def format_mac(mac):
    return ":".join(f"{b:02x}" for b in mac)


def parse_ip(text):
    parts = [int(p) for p in text.split(".")]
    if len(parts) != 4 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"bad IPv4 address {text!r}")
    return bytes(parts)


def checksum(data):
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class NetPeer:
    """A tiny IPv4 host.

    Parameters
    ----------
    mac, ip : its addresses (``"02:00:00:77:00:01"``, ``"169.254.77.1"``).
    udp_echo_port : the UDP port it echoes (7, RFC 862).
    mtu : the largest IP packet it accepts and sends.
    """

    def __init__(self, *, mac, ip, udp_echo_port=7, mtu=1500):
        self.mac = parse_mac(mac) if isinstance(mac, str) else bytes(mac)
        self.ip = parse_ip(ip) if isinstance(ip, str) else bytes(ip)
        self.udp_echo_port = udp_echo_port
        self.mtu = mtu
        self.arp_cache = {}
        self.stats = collections.Counter()
        self.dropped = collections.Counter()
        self._ip_id = 0

    def _drop(self, reason):
        self.dropped[reason] += 1
        return []

    def _ethernet(self, dst, ethertype, payload):
        frame = ETH_HEADER.pack(dst, self.mac, ethertype) + payload
        return frame.ljust(ETH_MIN_FRAME, b"\0")

    def handle_frame(self, frame):
        """Frames to send in answer to ``frame`` (possibly none)."""
        frame = bytes(frame)
        self.stats["frames_in"] += 1
        if len(frame) < ETH_HEADER.size:
            return self._drop("runt frame")
        dst, src, ethertype = ETH_HEADER.unpack_from(frame)
        if dst not in (self.mac, BROADCAST):
            return self._drop("not for this MAC")
        body = frame[ETH_HEADER.size:]
        if ethertype == ETHERTYPE_ARP:
            replies = self._arp(src, body)
        elif ethertype == ETHERTYPE_IPV4:
            if dst == BROADCAST:
                return self._drop("IPv4 to the broadcast MAC")
            replies = self._ipv4(src, body)
        else:
            return self._drop(f"ethertype 0x{ethertype:04x}")
        self.stats["frames_out"] += len(replies)
        return replies

    # -- ARP ---------------------------------------------------------------------------------
    def _arp(self, src, body):
        if len(body) < ARP.size:
            return self._drop("short ARP")
        htype, ptype, hlen, plen, oper, sha, spa, _tha, tpa = ARP.unpack_from(body)
        if (htype, ptype, hlen, plen) != (1, ETHERTYPE_IPV4, 6, 4):
            return self._drop("ARP not Ethernet/IPv4")
        if sha != src:
            return self._drop("ARP sender differs from the frame's source")
        self.arp_cache[spa] = sha
        if oper != ARP_REQUEST:
            self.stats["arp_other"] += 1
            return []
        if tpa != self.ip:
            return self._drop("ARP for another address")
        self.stats["arp_requests"] += 1
        reply = ARP.pack(1, ETHERTYPE_IPV4, 6, 4, ARP_REPLY, self.mac, self.ip, sha, spa)
        return [self._ethernet(src, ETHERTYPE_ARP, reply)]

    # -- IPv4 --------------------------------------------------------------------------------
    def _ipv4(self, src_mac, body):
        if len(body) < IPV4.size:
            return self._drop("short IPv4 header")
        ver_ihl, tos, total, _ident, frag, _ttl, proto, _csum, src, dst = IPV4.unpack_from(body)
        ihl = (ver_ihl & 0xF) * 4
        if ver_ihl >> 4 != 4 or ihl < IPV4.size or len(body) < ihl:
            return self._drop("bad IPv4 version or header length")
        if total < ihl or total > len(body):
            return self._drop("IPv4 total length beyond the frame")
        if total > self.mtu:
            return self._drop("IPv4 packet larger than the MTU")
        if checksum(body[:ihl]):
            return self._drop("bad IPv4 header checksum")
        if frag & 0x3FFF:                          # MF set or a fragment offset
            return self._drop("IPv4 fragment")
        if dst != self.ip:
            return self._drop("IPv4 for another address")
        payload = body[ihl:total]
        if proto == PROTO_ICMP:
            answer = self._icmp(payload)
        elif proto == PROTO_UDP:
            answer = self._udp(src, payload)
        else:
            return self._drop(f"IP protocol {proto}")
        if answer is None:
            return []
        self.arp_cache.setdefault(src, src_mac)
        return [self._ethernet(src_mac, ETHERTYPE_IPV4, self._ip_packet(proto, src, answer))]

    def _ip_packet(self, proto, dst, payload):
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        header = IPV4.pack(0x45, 0, IPV4.size + len(payload), self._ip_id, 0x4000, 64, proto, 0,
                           self.ip, dst)
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return header + payload

    def _icmp(self, message):
        if len(message) < 8:
            self._drop("short ICMP")
            return None
        if checksum(message):
            self._drop("bad ICMP checksum")
            return None
        kind, code = message[0], message[1]
        if kind != ICMP_ECHO_REQUEST or code != 0:
            self._drop(f"ICMP type {kind} code {code}")
            return None
        self.stats["icmp_echo"] += 1
        self.stats["icmp_bytes"] += len(message) - 8
        reply = bytes([ICMP_ECHO_REPLY, 0, 0, 0]) + message[4:]
        return reply[:2] + struct.pack("!H", checksum(reply)) + reply[4:]

    def _udp(self, src_ip, datagram):
        if len(datagram) < UDP.size:
            self._drop("short UDP")
            return None
        sport, dport, length, csum = UDP.unpack_from(datagram)
        if length < UDP.size or length > len(datagram):
            self._drop("bad UDP length")
            return None
        datagram = datagram[:length]
        if csum and self._udp_checksum(src_ip, self.ip, datagram):
            self._drop("bad UDP checksum")
            return None
        if dport != self.udp_echo_port:
            self._drop(f"UDP port {dport}")
            return None
        self.stats["udp_echo"] += 1
        self.stats["udp_bytes"] += length - UDP.size
        payload = datagram[UDP.size:]
        reply = UDP.pack(dport, sport, length, 0) + payload
        value = self._udp_checksum(self.ip, src_ip, reply) or 0xFFFF
        return reply[:6] + struct.pack("!H", value) + reply[8:]

    @staticmethod
    def _udp_checksum(src, dst, datagram):
        pseudo = src + dst + struct.pack("!BBH", 0, PROTO_UDP, len(datagram))
        return checksum(pseudo + datagram)
