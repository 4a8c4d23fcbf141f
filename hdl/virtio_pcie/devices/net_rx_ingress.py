# SPDX-License-Identifier: BSD-2-Clause
"""Receive ingress: frames from the MAC into the receive buffer, parsed on the fly.

The receive side stores each frame whole before any DMA (store and forward): whether it is
delivered depends on its end (length, the MAC's error flag, the checksum), and how many buffers
it takes depends on its length. While a frame streams in, one beat per cycle, this stage

* writes it to the receive buffer after room for its ``virtio_net_hdr`` (the egress stage writes
  the header there once it knows ``num_buffers``);
* checks the destination address against the receive filter (:class:`NetRxFilter`);
* computes a flow hash for queue steering: the XOR of the 16-bit words of the IPv4/IPv6 source
  and destination addresses and, for unfragmented TCP and UDP, the ports (0 for anything else);
* verifies TCP and UDP checksums over IPv4 (no options, not fragmented) and IPv6 (no extension
  headers): the ones' complement sum of the addresses, the transport header and data, plus the
  protocol and transport length of the pseudo-header (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1)
  must be 0xFFFF. The result becomes VIRTIO_NET_HDR_F_DATA_VALID (virtio 1.2 §5.1.6.4.1). A UDP
  checksum of 0 ("none") is never reported valid.

Header fields are taken at fixed offsets as their beat passes; every decision that depends on a
field is made in that beat or a later one, at every data width.

Frames are dropped and counted when the driver is not ready, the MAC flags them (``tuser``),
they are shorter than 60 bytes or longer than the largest frame, the filter rejects them, or the
buffer (or the frame queue) is full. The MAC stream is never back-pressured (``tready`` is
always 1), so a MAC without back-pressure can be attached directly.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from ..spec.ethernet import (
    ETH_HEADER, ETH_HLEN, ETH_ZLEN, IPV4_FLAG_MF, IPV4_FRAGMENT_OFFSET_MASK, IPV4_HEADER,
    IPV4_MIN_HLEN, IPV4_VERSION, IPV6_HEADER, IPV6_HLEN, IPV6_VERSION, TCP_MIN_HLEN, UDP_HEADER,
    UDP_HLEN, EtherType, IpProto, frame_offset,
)
from .net_checksum import (
    fold_ones_complement, lane_bytes, lane_range, masked_word_sum, masked_word_xor, named,
    tree_add,
)
from .net_interface import AxiStreamSignature, FrameBufferGeometry, NetFilterState, RxFrame
from .net_rx_filter import NetRxFilter

__all__ = ["NetRxIngress"]

# Frame offsets of what the ingress looks at (untagged Ethernet II).
_ETHERTYPE   = frame_offset((ETH_HEADER, "ethertype"))
_V4          = ETH_HLEN
_V4_VER_IHL  = frame_offset(_V4, (IPV4_HEADER, "version_ihl"))
_V4_TOTLEN   = frame_offset(_V4, (IPV4_HEADER, "total_length"))
_V4_FRAG     = frame_offset(_V4, (IPV4_HEADER, "flags_fragment"))
_V4_PROTO    = frame_offset(_V4, (IPV4_HEADER, "protocol"))
_V4_ADDRS    = frame_offset(_V4, (IPV4_HEADER, "src"))
_V4_L4       = _V4 + IPV4_MIN_HLEN
_V6          = ETH_HLEN
_V6_VERSION  = frame_offset(_V6, (IPV6_HEADER, "version_class_flow"))
_V6_PLEN     = frame_offset(_V6, (IPV6_HEADER, "payload_length"))
_V6_NEXT     = frame_offset(_V6, (IPV6_HEADER, "next_header"))
_V6_ADDRS    = frame_offset(_V6, (IPV6_HEADER, "src"))
_V6_L4       = _V6 + IPV6_HLEN
_PORTS_LEN   = 4                                    # source and destination port
_UDP_CSUM    = UDP_HEADER["checksum"][0]
_V4_IHL_MIN  = (IPV4_VERSION << 4) | (IPV4_MIN_HLEN // 4)


class _Fields:
    """Header bytes at fixed frame offsets, as the beats pass.

    ``byte(offset)`` is valid from the beat holding ``offset`` on (in that beat it comes straight
    from ``tdata``); ``held(offset)`` is the captured copy, valid after that beat and until the
    same beat of the next frame.
    """

    def __init__(self, m, tdata, beat, strobe, beat_bytes):
        self._m = m
        self._tdata = tdata
        self._beat = beat
        self._strobe = strobe
        self._bw = beat_bytes
        self._held = {}
        self._now = {}

    def _capture(self, offset):
        if offset not in self._held:
            k, lane = divmod(offset, self._bw)
            reg = Signal(8, name=f"held_byte{offset}")
            with self._m.If(self._strobe & (self._beat == k)):
                self._m.d.sync += reg.eq(self._tdata[8 * lane:8 * lane + 8])
            self._held[offset] = reg
        return self._held[offset]

    def byte(self, offset):
        if offset not in self._now:
            k, lane = divmod(offset, self._bw)
            now = Signal(8, name=f"byte{offset}")
            self._m.d.comb += now.eq(Mux(self._beat == k, self._tdata[8 * lane:8 * lane + 8],
                                         self._capture(offset)))
            self._now[offset] = now
        return self._now[offset]

    def held(self, offset):
        return self._capture(offset)

    def field(self, offset, size, held=False):
        """A big-endian field of ``size`` bytes."""
        get = self.held if held else self.byte
        return Cat(*[get(offset + i) for i in reversed(range(size))])


class NetRxIngress(wiring.Component):
    """Receives frames from the MAC into the receive buffer.

    Parameters
    ----------
    data_width : int
    buffer_bytes : int
        Receive buffer size.
    max_frame_bytes : int
    table_entries : int
        MAC filter table size.

    Members
    -------
    mac : In(AxiStreamSignature(data_width))
        Frames from the MAC (``tready`` is always 1).
    ram : In(WritePort.Signature(...))
        A write port of the receive buffer (byte granularity; this stage writes whole rows).
    frame : Out(stream.Signature(RxFrame(...)))
        Accepted frames, in arrival order, two cycles after their last beat. A frame that ends
        while the previous record still waits for ``ready`` is dropped as an overflow.
    release_row : In(ptr_bits)
        The egress stage's free pointer.
    enable : In(1)
        The driver is ready (DRIVER_OK and no reset); frames arriving otherwise are dropped.
    filter : In(NetFilterState(table_entries))
    no_buffer, mac_error, runt, oversize, filtered, overflow : Out(1)
        Drop event strobes, at most one per frame.
    """

    def __init__(self, *, data_width, buffer_bytes, max_frame_bytes, table_entries):
        geom = FrameBufferGeometry(data_width, buffer_bytes)
        if geom.frame_rows(max_frame_bytes) * 2 > geom.rows:
            raise ValueError(f"buffer_bytes {buffer_bytes} holds fewer than two frames of "
                             f"{max_frame_bytes} bytes")
        self._geom = geom
        self._max_frame = max_frame_bytes
        self._entries = table_entries
        super().__init__({
            "mac":         In(AxiStreamSignature(data_width)),
            "ram":         In(WritePort.Signature(addr_width=geom.row_bits, shape=data_width,
                                                  granularity=8)),
            "frame":       Out(stream.Signature(RxFrame(geom))),
            "release_row": In(geom.ptr_bits),
            "enable":      In(1),
            "filter":      In(NetFilterState(table_entries)),
            "no_buffer":   Out(1),
            "mac_error":   Out(1),
            "runt":        Out(1),
            "oversize":    Out(1),
            "filtered":    Out(1),
            "overflow":    Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geom
        lanes = g.beat_bytes
        max_beats = -(-self._max_frame // lanes)
        s = self.mac

        m.d.comb += s.tready.eq(1)
        strobe = s.tvalid

        beat = Signal(range(max_beats + 2))          # beat index in the frame, saturating
        beat_offset = Signal(16)
        m.d.comb += beat_offset.eq(beat << g.beat_shift)
        base_row = Signal(g.ptr_bits)                # the frame's first (header) row
        f = _Fields(m, s.tdata, beat, strobe, lanes)

        # Filter: the destination address is in the first beat -------------------------------------
        m.submodules.filter = rx_filter = NetRxFilter(table_entries=self._entries)
        octets = lane_bytes(s.tdata, lanes)
        m.d.comb += [
            rx_filter.dst.eq(Cat(*reversed(octets[:6]))),
            rx_filter.state.eq(self.filter),
        ]
        accepted = Signal()
        with m.If(strobe & (beat == 0)):
            m.d.sync += accepted.eq(rx_filter.accept)
        accept_now = Mux(beat == 0, rx_filter.accept, accepted)

        # Header fields ------------------------------------------------------------------------
        def classify(get, prefix):
            ethertype = get(_ETHERTYPE, 2)
            v4 = named(m, (ethertype == EtherType.IPV4) & (get(_V4_VER_IHL, 1) == _V4_IHL_MIN)
                       & ((get(_V4_FRAG, 2) & (IPV4_FLAG_MF | IPV4_FRAGMENT_OFFSET_MASK)) == 0),
                       f"{prefix}v4")
            v6 = named(m, (ethertype == EtherType.IPV6)
                       & ((get(_V6_VERSION, 1) >> 4) == IPV6_VERSION), f"{prefix}v6")
            proto = named(m, Mux(v6, get(_V6_NEXT, 1), get(_V4_PROTO, 1)), f"{prefix}proto")
            tcp = named(m, proto == IpProto.TCP, f"{prefix}tcp")
            udp = named(m, proto == IpProto.UDP, f"{prefix}udp")
            plen = named(m, get(_V6_PLEN, 2), f"{prefix}v6_plen")
            totlen = named(m, get(_V4_TOTLEN, 2), f"{prefix}v4_totlen")
            l4_len = named(m, Mux(v6, plen, totlen - IPV4_MIN_HLEN)[:16], f"{prefix}l4_len")
            l3_end = named(m, Mux(v6, _V6_L4 + plen, _V4 + totlen), f"{prefix}l3_end")
            return v4, v6, proto, tcp, udp, l4_len, l3_end

        v4, v6, _, tcp, udp, _, l3_end = classify(lambda o, n: f.field(o, n), "")
        addrs = named(m, Mux(v6, _V6_ADDRS, _V4_ADDRS), "addrs")
        l4 = Mux(v6, _V6_L4, _V4_L4)
        ip = v4 | v6

        # Per-beat contributions ---------------------------------------------------------------
        keep = s.tkeep
        csum_mask = named(m, lane_range(m, beat_offset, addrs, l3_end, lanes, "csum_range") & keep,
                          "csum_mask")
        hash_end = named(m, l4 + Mux(tcp | udp, _PORTS_LEN, 0), "hash_end")
        hash_mask = named(m, lane_range(m, beat_offset, addrs, hash_end, lanes, "hash_range")
                          & keep, "hash_mask")
        beat_sum = named(m, masked_word_sum(s.tdata, csum_mask, lanes), "beat_sum")
        beat_xor = named(m, masked_word_xor(s.tdata, hash_mask, lanes), "beat_xor")
        acc = Signal(32)
        flow = Signal(16)
        acc_next = named(m, (Mux(beat == 0, 0, acc) + beat_sum)[:32], "acc_next")
        flow_next = named(m, Mux(beat == 0, 0, flow) ^ Mux(ip, beat_xor, 0), "flow_next")

        # Writing the buffer -----------------------------------------------------------------------
        row = named(m, (base_row + g.header_rows + beat)[:g.ptr_bits], "row")
        room = named(m, (row - self.release_row)[:g.ptr_bits] < g.rows, "room")
        in_range = beat < max_beats
        m.d.comb += [
            self.ram.addr.eq(row[:g.row_bits]),
            self.ram.data.eq(s.tdata),
        ]

        # Sticky per-frame conditions (cleared by the first beat of the next frame).
        was_disabled = Signal()
        was_error = Signal()
        was_long = Signal()
        was_full = Signal()
        disabled = named(m, Mux(beat == 0, 0, was_disabled) | ~self.enable, "disabled")
        error = named(m, Mux(beat == 0, 0, was_error) | s.tuser, "error")
        too_long = named(m, Mux(beat == 0, 0, was_long) | ~in_range, "too_long")
        full = named(m, Mux(beat == 0, 0, was_full) | (in_range & ~room), "full")

        with m.If(strobe & ~disabled & ~error & in_range & room):
            m.d.comb += self.ram.en.eq(Const(-1, lanes))

        length = named(m, (beat_offset + tree_add([keep[j] for j in range(lanes)]))[:16], "length")

        # Frame end --------------------------------------------------------------------------------
        # Stage 1 (the cycle after the last beat) takes the verdict from the held header fields,
        # which stay until the same beat of the next frame; stage 2 offers the record to the
        # frame FIFO and holds it until taken.
        ending = Signal()
        end_len = Signal(16)
        end_acc = Signal(32)
        end_flow = Signal(16)
        end_base = Signal(g.ptr_bits)
        pushing = Signal()
        record = Signal.like(self.frame.payload)
        last = strobe & s.tlast
        with m.If(strobe):
            m.d.sync += [
                was_disabled.eq(disabled),
                was_error.eq(error),
                was_long.eq(too_long),
                was_full.eq(full),
                acc.eq(acc_next),
                flow.eq(flow_next),
                beat.eq(Mux(s.tlast, 0, Mux(beat > max_beats, beat, beat + 1))),
            ]

        # One drop reason per frame, in this order of precedence. A record still waiting for
        # the frame FIFO counts as a full buffer.
        reasons = [
            (self.no_buffer, disabled),
            (self.mac_error, error),
            (self.oversize,  too_long | (length > self._max_frame)),
            (self.runt,      length < ETH_ZLEN),
            (self.filtered,  ~accept_now),
            (self.overflow,  full | (pushing & ~self.frame.ready)),
        ]
        dropped = Const(0, 1)
        for event, cond in reasons:
            m.d.comb += event.eq(last & ~dropped & cond)
            dropped = dropped | cond
        commit = last & ~dropped

        m.d.sync += ending.eq(commit)
        with m.If(commit):
            m.d.sync += [
                base_row.eq(row + 1),
                end_len.eq(length),
                end_acc.eq(acc_next),
                end_flow.eq(flow_next),
                end_base.eq(base_row),
            ]

        hv4, hv6, hproto, htcp, hudp, hl4_len, hl3_end = \
            classify(lambda o, n: f.field(o, n, held=True), "held_")
        min_l4 = Mux(htcp, TCP_MIN_HLEN, UDP_HLEN)
        udp_csum = Mux(hv6, f.field(_V6_L4 + _UDP_CSUM, 2, held=True),
                       f.field(_V4_L4 + _UDP_CSUM, 2, held=True))
        total = fold_ones_complement(end_acc + hproto + hl4_len)
        csum_ok = ((hv4 | hv6) & (htcp | hudp) & (hl4_len >= min_l4) & (hl3_end <= end_len)
                   & ~(hudp & (udp_csum == 0)) & (total == 0xFFFF))

        with m.If(ending):
            m.d.sync += [
                pushing.eq(1),
                record.base_row.eq(end_base),
                record.len.eq(end_len),
                record.hash.eq(end_flow),
                record.csum_ok.eq(csum_ok),
            ]
        with m.Elif(self.frame.ready):
            m.d.sync += pushing.eq(0)
        m.d.comb += [
            self.frame.valid.eq(pushing),
            self.frame.payload.eq(record),
        ]
        return m
