# SPDX-License-Identifier: BSD-2-Clause
"""Receive filter: does a destination MAC address pass what the driver set up?

virtio 1.2 §5.1.6.5.1 (VIRTIO_NET_CTRL_RX) and §5.1.6.5.2 (VIRTIO_NET_CTRL_MAC): a frame is
accepted when the device is promiscuous, or it is broadcast, or it is multicast and all-multicast
is on or its address is in the MAC table, or it is unicast to the device's own address or to one
in the MAC table. A MAC_TABLE_SET with more unicast (multicast) entries than fit turns on
"overflow" for that class, which accepts all of it, as QEMU does: a filter that cannot hold the
list must not lose the driver's traffic. Broadcasts always pass (VIRTIO_NET_F_CTRL_RX_EXTRA,
which could turn them off, is not offered). VLAN tags are not filtered (no VIRTIO_NET_F_CTRL_VLAN).
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..spec.ethernet import ETH_BROADCAST
from .net_interface import MAC_BITS, NetFilterState

__all__ = ["NetRxFilter"]

_GROUP_BIT = MAC_BITS - 8      # bit 0 of the first address byte (IEEE 802 I/G bit)


class NetRxFilter(wiring.Component):
    """Destination-address filter, combinational: every table entry is compared at once.

    Parameters
    ----------
    table_entries : int
        Size of the MAC table.

    Members
    -------
    dst : In(48)
        Destination address, first byte in bits 47..40.
    state : In(NetFilterState(table_entries))
    accept : Out(1)
    """

    def __init__(self, *, table_entries):
        if not isinstance(table_entries, int) or not 1 <= table_entries <= 64:
            raise ValueError(f"table_entries must be an integer from 1 to 64, "
                             f"not {table_entries!r}")
        self._entries = table_entries
        super().__init__({
            "dst":    In(MAC_BITS),
            "state":  In(NetFilterState(table_entries)),
            "accept": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        st = self.state
        dst = self.dst
        in_table = 0
        for i in range(self._entries):
            in_table = in_table | (st.table_valid[i] & (st.table[i] == dst))
        multicast = dst[_GROUP_BIT]
        broadcast = dst == ETH_BROADCAST
        m.d.comb += self.accept.eq(
            st.promisc | broadcast
            | (multicast & (st.allmulti | st.multi_overflow | in_table))
            | (~multicast & ((dst == st.mac) | st.uni_overflow | in_table)))
        return m
