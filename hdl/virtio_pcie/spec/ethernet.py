# SPDX-License-Identifier: BSD-2-Clause
"""The frame formats the network device looks into, defined once as data.

Ethernet II (IEEE 802.3 §3.1, with the 802.1Q tag), IPv4 (RFC 791), IPv6 (RFC 8200), TCP
(RFC 9293) and UDP (RFC 768) headers, and the Internet checksum (RFC 1071). Unlike the virtio
structures, these are in network byte order (big-endian), so they are given as tables of
``name: (byte offset, byte size)`` rather than as little-endian :mod:`amaranth.lib.data`
layouts. :func:`field_offset` and :func:`field_end` read them.

Frames on the MAC streams carry no FCS: the MAC checks and strips it on receive and appends it on
transmit, so the smallest frame is :data:`ETH_ZLEN` (60) bytes.
"""

import enum as py_enum

__all__ = [
    "ETH_ALEN", "ETH_HLEN", "ETH_ZLEN", "ETH_FCS_LEN", "VLAN_HLEN", "ETH_BROADCAST",
    "EtherType", "IpProto", "ETH_HEADER", "IPV4_HEADER", "IPV4_MIN_HLEN", "IPV4_VERSION",
    "IPV4_FLAG_MF", "IPV4_FRAGMENT_OFFSET_MASK", "IPV6_HEADER", "IPV6_HLEN", "IPV6_VERSION",
    "TCP_HEADER", "TCP_MIN_HLEN", "UDP_HEADER", "UDP_HLEN", "L4_HEADER_MIN_LEN",
    "field_offset", "field_end", "frame_offset",
]

ETH_ALEN    = 6        # bytes in a MAC address
ETH_HLEN    = 14       # destination, source, EtherType
ETH_ZLEN    = 60       # minimum frame length without FCS
ETH_FCS_LEN = 4
VLAN_HLEN   = 4        # an 802.1Q tag between the source address and the EtherType
ETH_BROADCAST = 0xFFFF_FFFF_FFFF


class EtherType(py_enum.IntEnum):
    IPV4 = 0x0800
    ARP  = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD


class IpProto(py_enum.IntEnum):
    """IPv4 protocol / IPv6 next-header numbers."""
    TCP = 6
    UDP = 17


#: Ethernet II header (IEEE 802.3 §3.1.1). Bit 0 of the first destination byte is the
#: group (multicast) bit.
ETH_HEADER = {
    "dst":       (0, 6),
    "src":       (6, 6),
    "ethertype": (12, 2),
}

#: IPv4 header without options (RFC 791 §3.1).
IPV4_HEADER = {
    "version_ihl":    (0, 1),
    "tos":            (1, 1),
    "total_length":   (2, 2),
    "identification": (4, 2),
    "flags_fragment": (6, 2),
    "ttl":            (8, 1),
    "protocol":       (9, 1),
    "checksum":       (10, 2),
    "src":            (12, 4),
    "dst":            (16, 4),
}
IPV4_MIN_HLEN = 20
IPV4_VERSION  = 4
IPV4_FLAG_MF              = 0x2000     # in flags_fragment: more fragments
IPV4_FRAGMENT_OFFSET_MASK = 0x1FFF

#: IPv6 fixed header (RFC 8200 §3).
IPV6_HEADER = {
    "version_class_flow": (0, 4),
    "payload_length":     (4, 2),
    "next_header":        (6, 1),
    "hop_limit":          (7, 1),
    "src":                (8, 16),
    "dst":                (24, 16),
}
IPV6_HLEN    = 40
IPV6_VERSION = 6

#: TCP header without options (RFC 9293 §3.1).
TCP_HEADER = {
    "src_port": (0, 2),
    "dst_port": (2, 2),
    "seq":      (4, 4),
    "ack":      (8, 4),
    "offset_flags": (12, 2),
    "window":   (14, 2),
    "checksum": (16, 2),
    "urgent":   (18, 2),
}
TCP_MIN_HLEN = 20

#: UDP header (RFC 768).
UDP_HEADER = {
    "src_port": (0, 2),
    "dst_port": (2, 2),
    "length":   (4, 2),
    "checksum": (6, 2),
}
UDP_HLEN = 8

#: The shortest valid transport header, by protocol.
L4_HEADER_MIN_LEN = {IpProto.TCP: TCP_MIN_HLEN, IpProto.UDP: UDP_HLEN}


def field_offset(table, name):
    """Byte offset of ``name`` in a header table."""
    return table[name][0]


def field_end(table, name):
    """Byte offset just past ``name`` in a header table."""
    offset, size = table[name]
    return offset + size


def frame_offset(*parts):
    """Byte offset in a frame of a field reached through headers laid end to end.

    ``frame_offset(ETH_HLEN, (IPV4_HEADER, "src"))`` is where an untagged IPv4 frame's source
    address starts. Integers are header lengths; ``(table, name)`` pairs are field offsets.
    """
    total = 0
    for part in parts:
        if isinstance(part, tuple):
            total += field_offset(*part)
        else:
            total += part
    return total
