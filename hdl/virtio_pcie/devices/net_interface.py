# SPDX-License-Identifier: BSD-2-Clause
"""Interfaces of the virtio-net back-end: the MAC streams, the statistics counters, the receive
filter state and the records that pass between its blocks.

**MAC streams** (:class:`AxiStreamSignature`) follow AMBA AXI4-Stream: a beat moves in a cycle
where ``tvalid`` and ``tready`` are both high; ``tkeep`` has one bit per byte of ``tdata`` (byte
``i`` of the frame in a beat is ``tdata[8*i +: 8]``, the first byte of the frame in lane 0 of the
first beat); every beat but the last of a frame has all ``tkeep`` bits set and the last one a
contiguous run from lane 0; ``tlast`` marks the last beat; ``tuser`` (one bit) on any beat marks
the frame bad. Frames carry no preamble and no FCS (the MAC adds and checks it). Amaranth
flattens the members as ``<port>__tdata``, ``<port>__tvalid``, …, so cocotbext-axi attaches with
``AxiStreamBus.from_prefix(dut, "<port>", bus_separator="__")`` and a Verilog MAC's
``m_axis_*`` / ``s_axis_*`` ports map one to one.

**Statistics** (:class:`NetStatsSignature`): one 32-bit wrapping counter per event in
:data:`NET_COUNTERS`, cleared only by the clock domain's reset (a driver reset keeps them, as a
NIC's hardware counters do).

**MAC addresses** are 48-bit integers with the first byte on the wire (the lowest address of the
``mac`` array in ``virtio_net_config``) in bits 47..40, as they are written ``aa:bb:cc:dd:ee:ff``.
"""

from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..spec.ethernet import ETH_ALEN, ETH_HLEN, VLAN_HLEN
from ..spec.virtio import VirtioNetHdr, byte_size
from ..virtio.interface import EPOCH_BITS, queue_index_width

__all__ = ["AxiStreamSignature", "NET_COUNTERS", "NetStatsSignature", "NetFilterState",
           "mac_to_int", "mac_to_str", "MAC_BITS", "NET_HDR_BYTES", "GENERATION_BITS",
           "max_frame_bytes", "FrameBufferGeometry", "TxFrame", "TxFrameOut", "RxFrame",
           "RX_STEER_MULTIPLIER", "rx_steer", "DMA_TAG_CTRL", "DMA_TAG_FRAME_END"]

MAC_BITS = 8 * ETH_ALEN

#: sizeof(struct virtio_net_hdr) with VIRTIO_F_VERSION_1 (virtio 1.2 §5.1.6).
NET_HDR_BYTES = byte_size(VirtioNetHdr)

#: DMA tag bits of the receive client: the control queue's requests, and a frame's last write.
DMA_TAG_CTRL      = 0x80
DMA_TAG_FRAME_END = 0x40

#: Receive steering (see :func:`rx_steer`): an odd 16-bit multiplier that spreads the flow
#: hash's low bits (ports) into its high bits.
RX_STEER_MULTIPLIER = 0x9E37


def rx_steer(flow_hash, pairs):
    """The receive queue pair (0-based) of a frame: ``((hash * 0x9E37) mod 2**16 * pairs) >>
    16``, a multiply-shift that spreads flows evenly over the pairs in use and never needs a
    division. The gateware computes exactly this; tests use this function as the reference."""
    mixed = (flow_hash * RX_STEER_MULTIPLIER) & 0xFFFF
    return (mixed * pairs) >> 16


#: Width of the device-reset generation count that tags work in flight (see VirtioNetDevice).
GENERATION_BITS = 4


def max_frame_bytes(mtu):
    """The largest frame the device passes either way: MTU plus an Ethernet header with one
    802.1Q tag (virtio 1.2 §5.1.6.3.2: no packets larger than MTU plus the link header)."""
    return mtu + ETH_HLEN + VLAN_HLEN


class FrameBufferGeometry:
    """How frames are laid out in a frame buffer (the transmit and the receive buffer).

    The buffer is a ring of beat-wide rows. A frame takes :attr:`header_rows` rows that end with
    the 12-byte ``virtio_net_hdr``, then its data from the start of the next row: the header and
    the frame are contiguous bytes, as the driver's buffers hold them, and the frame is aligned
    to the data path, as the MAC streams want it. Row pointers carry one extra wrap bit.
    """

    def __init__(self, data_width, buffer_bytes):
        if data_width not in (64, 128, 256):
            raise ValueError(f"data_width must be 64, 128 or 256, not {data_width!r}")
        if (not isinstance(buffer_bytes, int) or buffer_bytes & (buffer_bytes - 1)
                or not 1024 <= buffer_bytes <= 32768):
            raise ValueError(f"buffer size must be a power of two from 1024 to 32768 bytes, "
                             f"not {buffer_bytes!r}")
        self.data_width    = data_width
        self.beat_bytes    = data_width // 8
        self.beat_shift    = self.beat_bytes.bit_length() - 1
        self.buffer_bytes  = buffer_bytes
        self.header_rows   = -(-NET_HDR_BYTES // self.beat_bytes)
        self.header_area   = self.header_rows * self.beat_bytes
        self.header_offset = self.header_area - NET_HDR_BYTES   # where the header starts
        self.rows          = buffer_bytes // self.beat_bytes
        self.row_bits      = self.rows.bit_length() - 1
        self.ptr_bits      = self.row_bits + 1
        self.byte_bits     = self.ptr_bits + self.beat_shift     # byte pointer with wrap bit

    def frame_rows(self, frame_bytes):
        return self.header_rows + -(-frame_bytes // self.beat_bytes)


def TxFrame(queue_count, geometry):
    """A transmit frame whose data is in the buffer (fetch stage -> checksum stage)."""
    return data.StructLayout({
        "queue":    queue_index_width(queue_count),
        "head":     16,
        "epoch":    EPOCH_BITS,           # the chain's queue epoch (returned in its used entry)
        "base_row": geometry.ptr_bits,    # first header row
        "end_row":  geometry.ptr_bits,    # first row after the frame (what it frees)
        "len":      16,                   # frame bytes after the virtio_net_hdr
        "bad":      1,                    # malformed chain or DMA error: complete, do not send
        "gen":      GENERATION_BITS,
    })


def TxFrameOut(queue_count, geometry):
    """A transmit frame ready to send (checksum stage -> output stage)."""
    return data.StructLayout({
        "frame":      TxFrame(queue_count, geometry),
        "drop":       1,
        "csum_en":    1,
        "csum_pos":   16,                 # csum_start + csum_offset
        "csum_value": 16,
    })


def RxFrame(geometry):
    """A received frame waiting in the receive buffer (ingress -> egress)."""
    return data.StructLayout({
        "base_row": geometry.ptr_bits,
        "len":      16,
        "hash":     16,                   # flow hash for steering
        "csum_ok":  1,                    # TCP/UDP checksum verified (DATA_VALID)
    })


class AxiStreamSignature(wiring.Signature):
    """An AXI4-Stream frame stream (``Out`` = source side).

    Members
    -------
    tdata : Out(data_width)
    tkeep : Out(data_width // 8)
    tlast : Out(1)
    tuser : Out(1)
        The frame is bad (a receive error, or a transmit frame to abort).
    tvalid : Out(1)
    tready : In(1)
    """

    def __init__(self, data_width):
        if data_width not in (64, 128, 256):
            raise ValueError(f"data_width must be 64, 128 or 256, not {data_width!r}")
        self._data_width = data_width
        super().__init__({
            "tdata":  Out(data_width),
            "tkeep":  Out(data_width // 8),
            "tlast":  Out(1),
            "tuser":  Out(1),
            "tvalid": Out(1),
            "tready": In(1),
        })

    @property
    def data_width(self):
        return self._data_width

    def __eq__(self, other):
        return type(other) is type(self) and other._data_width == self._data_width

    def __repr__(self):
        return f"AxiStreamSignature({self._data_width})"


#: Counter name -> what it counts.
NET_COUNTERS = {
    "tx_frames":    "frames handed to the MAC",
    "tx_dropped":   "transmit chains dropped: malformed (writable buffers, header not a plain "
                    "virtio_net_hdr, shorter than an Ethernet header, longer than the largest "
                    "frame, checksum position outside the frame) or a DMA read error",
    "tx_link_down": "transmit frames dropped because the link was down",
    "rx_frames":    "frames delivered to the driver",
    "rx_runt":      "frames from the MAC shorter than 60 bytes",
    "rx_mac_error": "frames the MAC marked bad (tuser)",
    "rx_oversize":  "frames from the MAC longer than the largest frame (MTU + 18 bytes)",
    "rx_filtered":  "frames the receive filter rejected",
    "rx_overflow":  "frames dropped because the receive buffer was full",
    "rx_no_buffer": "frames dropped because the receive queue had no buffer (or the driver was "
                    "not ready)",
    "rx_too_big":   "frames larger than the buffers posted for them",
    "rx_bad_chain": "receive chains returned unused (readable buffers, more segments than the "
                    "cache holds)",
    "rx_dma_error": "received frames whose DMA write failed (returned with length 0)",
    "ctrl_ok":      "control commands answered VIRTIO_NET_OK",
    "ctrl_err":     "control commands answered VIRTIO_NET_ERR",
}


class NetStatsSignature(wiring.Signature):
    """The device's counters (``Out`` = device side): one ``Out(32)`` per :data:`NET_COUNTERS`
    entry."""

    def __init__(self):
        super().__init__({name: Out(32) for name in NET_COUNTERS})

    def __eq__(self, other):
        return type(other) is type(self)

    def __repr__(self):
        return "NetStatsSignature()"


def NetFilterState(table_entries):
    """What the control queue set for the receive filter (virtio 1.2 §5.1.6.5.1-2)."""
    return data.StructLayout({
        "mac":            MAC_BITS,     # the device's own address (config ``mac``, ADDR_SET)
        "promisc":        1,
        "allmulti":       1,
        "uni_overflow":   1,            # TABLE_SET had more unicast entries than fit: accept all
        "multi_overflow": 1,            # ... multicast entries: accept all multicast
        "table_valid":    table_entries,
        "table":          data.ArrayLayout(MAC_BITS, table_entries),
    })


def mac_to_int(mac):
    """``"52:54:00:12:34:56"``, six bytes or an int -> the 48-bit integer form."""
    if isinstance(mac, int):
        if not 0 <= mac < (1 << MAC_BITS):
            raise ValueError(f"MAC address {mac!r} does not fit in 48 bits")
        return mac
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != ETH_ALEN:
            raise ValueError(f"MAC address {mac!r} is not {ETH_ALEN} bytes")
        return int.from_bytes(mac, "big")
    if isinstance(mac, str):
        parts = mac.split(":")
        if len(parts) != ETH_ALEN or not all(len(p) == 2 for p in parts):
            raise ValueError(f"MAC address {mac!r} is not of the form aa:bb:cc:dd:ee:ff")
        try:
            return int("".join(parts), 16)
        except ValueError:
            raise ValueError(f"MAC address {mac!r} is not hexadecimal") from None
    raise TypeError(f"MAC address must be a str, bytes or int, not {mac!r}")


def mac_to_str(mac):
    return ":".join(f"{b:02x}" for b in mac_to_int(mac).to_bytes(ETH_ALEN, "big"))
