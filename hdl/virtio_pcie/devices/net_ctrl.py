# SPDX-License-Identifier: BSD-2-Clause
"""Control queue: the driver's commands to the device (virtio 1.2 §5.1.6.5).

A command is one chain: device-readable ``u8 class; u8 command; data[]``, then one
device-writable ``u8 ack`` (VIRTIO_NET_OK or VIRTIO_NET_ERR). The readable part is read by DMA
into a small buffer, parsed, applied, and the ack written (an immediate one-byte DMA write) before
the chain is completed with used length 1 (a chain without a writable byte is malformed: it is
not executed and is completed with length 0). Implemented:

============================== ==================================== =========================
class / command                data                                 needs (negotiated)
============================== ==================================== =========================
RX / PROMISC, ALLMULTI         ``u8 on``                            VIRTIO_NET_F_CTRL_RX
MAC / TABLE_SET                ``le32 n; u8 mac[n][6]`` unicast,    VIRTIO_NET_F_CTRL_RX
                               then the same for multicast
MAC / ADDR_SET                 ``u8 mac[6]``                        VIRTIO_NET_F_CTRL_MAC_ADDR
MQ / VQ_PAIRS_SET              ``le16 virtqueue_pairs``             VIRTIO_NET_F_MQ
============================== ==================================== =========================

Anything else, a feature not negotiated, a length that does not match the command, a pair count
outside 1..max_virtqueue_pairs, or a DMA error answers VIRTIO_NET_ERR and changes nothing.
The state is changed before the chain is completed (virtio 1.2 §5.1.6.5.2: the filter is
updated before the command is consumed). Linux busy-polls this queue without interrupts, so a
command is answered in a few hundred cycles (plus the DMA round trips) and is never queued
behind frames: the control queue has its own request port and this block its own DMA requests.

After a device reset: promiscuous on (as QEMU: a driver without VIRTIO_NET_F_CTRL_RX must get its
traffic), all-multicast off, the MAC table empty (virtio 1.2 §5.1.6.5.2), the configured MAC
address, one queue pair (§5.1.6.5.5).

**Without VIRTIO_NET_F_MQ** but with more than one pair offered, the control queue is queue 2
(virtio 1.2 §5.1.2), which the integration routes as a pulled receive queue. Then this block
polls it: it asks for a chain of that queue every ``poll_cycles`` cycles on ``poll_fetch`` and
takes the answers from ``poll_segment``.
"""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..dma.interface import (
    DMA_LEN_WIDTH, DmaError, DmaRamWriteSignature, DmaReadRequest, DmaStatus, DmaWriteRequest,
)
from ..spec.ethernet import ETH_ALEN
from ..spec.virtio import (
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN, VirtioNetCtrlAck, VirtioNetCtrlClass, VirtioNetCtrlHdr,
    VirtioNetCtrlMac, VirtioNetCtrlMq, VirtioNetCtrlRx, byte_size,
)
from ..virtio.interface import VirtqSegment, VirtqUsed, queue_index_width
from .net_interface import DMA_TAG_CTRL, MAC_BITS, NetFilterState

__all__ = ["NetControl"]

_HDR = byte_size(VirtioNetCtrlHdr)          # class, command
_COUNT = 4                                  # le32 entries of a MAC table
_PAIRS = 2                                  # le16 virtqueue_pairs
_ONOFF = 1


class NetControl(wiring.Component):
    """Executes control-queue commands and holds the state they set.

    Parameters
    ----------
    data_width : int
    queue_count : int
    queue_pairs : int
        ``max_virtqueue_pairs``.
    mac_address : int
        The MAC address after reset (48-bit, first byte in bits 47..40).
    table_entries : int
        MAC filter table entries (unicast and multicast together).
    buffer_bytes : int
        Command buffer; longer commands answer VIRTIO_NET_ERR unless the part that matters fits
        (a MAC table whose entries do not fit turns on the overflow mode instead).
    poll_queue : int
        The control queue's index when VIRTIO_NET_F_MQ is not negotiated (2).
    poll_cycles : int
        Polling period in that case.

    Members
    -------
    segment : In(stream.Signature(VirtqSegment(queue_count)))
        Chains of the control queue (pushed by the engine).
    poll_fetch : Out(stream.Signature(queue_index_width(queue_count)))
    poll_segment : In(stream.Signature(VirtqSegment(queue_count)))
        Polling of ``poll_queue`` (see above).
    rd_req, rd_status, rd_ram
        The read half of the receive DMA client: commands land in this block's buffer.
    wr_req, wr_status
        Its share of the receive DMA client's writes: the acks (tag bit 7 set).
    used : Out(stream.Signature(VirtqUsed(queue_count)))
    filter : Out(NetFilterState(table_entries))
    curr_pairs : Out(range(queue_pairs + 1))
    mac_changed : Out(1)
        Strobe: ADDR_SET changed the address (a configuration change).
    ctrl_rx, ctrl_mac_addr, mq : In(1)
        Negotiated features.
    poll_enable : In(1)
        Poll ``poll_queue`` (control queue negotiated, MQ not, DRIVER_OK).
    reset : In(1)
    ok, err : Out(1)
        Strobes: a command was answered.
    idle : Out(1)
        No command in progress and no DMA in flight.
    """

    def __init__(self, *, data_width, queue_count, queue_pairs, mac_address, table_entries=16,
                 buffer_bytes=256, poll_queue=2, poll_cycles=256):
        beat_bytes = data_width // 8
        if (not isinstance(buffer_bytes, int) or buffer_bytes & (buffer_bytes - 1)
                or buffer_bytes < max(2 * beat_bytes, _HDR + 2 * _COUNT + 6 * table_entries)):
            raise ValueError(f"ctrl_buffer_bytes must be a power of two holding a full MAC "
                             f"table, not {buffer_bytes!r}")
        if not isinstance(poll_cycles, int) or poll_cycles < 1:
            raise ValueError(f"poll_cycles must be a positive integer, not {poll_cycles!r}")
        self._dw = data_width
        self._queue_count = queue_count
        self._pairs = queue_pairs
        self._mac = mac_address
        self._entries = table_entries
        self._buffer = buffer_bytes
        self._poll_queue = poll_queue
        self._poll_cycles = poll_cycles
        qw = queue_index_width(queue_count)
        super().__init__({
            "segment":       In(stream.Signature(VirtqSegment(queue_count))),
            "poll_fetch":    Out(stream.Signature(qw)),
            "poll_segment":  In(stream.Signature(VirtqSegment(queue_count))),
            "rd_req":        Out(stream.Signature(DmaReadRequest)),
            "rd_status":     In(stream.Signature(DmaStatus, always_ready=True)),
            "rd_ram":        In(DmaRamWriteSignature(data_width)),
            "wr_req":        Out(stream.Signature(DmaWriteRequest)),
            "wr_status":     In(stream.Signature(DmaStatus, always_ready=True)),
            "used":          Out(stream.Signature(VirtqUsed(queue_count))),
            "filter":        Out(NetFilterState(table_entries),
                                 init={"mac": mac_address, "promisc": 1}),
            "curr_pairs":    Out(range(queue_pairs + 1), init=1),
            "mac_changed":   Out(1),
            "ctrl_rx":       In(1),
            "ctrl_mac_addr": In(1),
            "mq":            In(1),
            "poll_enable":   In(1),
            "reset":         In(1),
            "ok":            Out(1),
            "err":           Out(1),
            "idle":          Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        N = self._entries
        beat_bytes = self._dw // 8
        beat_shift = beat_bytes.bit_length() - 1
        buf = self._buffer
        buf_bits = buf.bit_length() - 1
        flt = self.filter

        # Command buffer: the DMA engine writes it, the parser reads it a byte at a time --------
        m.submodules.buffer = mem = Memory(shape=self._dw, depth=buf // beat_bytes, init=[])
        w = mem.write_port(granularity=8)
        r = mem.read_port()
        m.d.comb += [
            w.addr.eq(self.rd_ram.addr),
            w.data.eq(self.rd_ram.data),
            w.en.eq(Mux(self.rd_ram.en, self.rd_ram.be, 0)),
        ]

        # DMA accounting ---------------------------------------------------------------------------
        reads = Signal(8)
        writes = Signal(2)
        read_failed = Signal()
        m.d.sync += [
            reads.eq(reads + (self.rd_req.valid & self.rd_req.ready) - self.rd_status.valid),
            writes.eq(writes + (self.wr_req.valid & self.wr_req.ready) - self.wr_status.valid),
        ]
        with m.If(self.rd_status.valid & (self.rd_status.payload.error != DmaError.OK)):
            m.d.sync += read_failed.eq(1)

        # The command ------------------------------------------------------------------------------
        from_poll = Signal()
        beat = Signal(VirtqSegment(self._queue_count))
        m.d.comb += beat.eq(Mux(from_poll, self.poll_segment.payload, self.segment.payload))
        beat_valid = Mux(from_poll, self.poll_segment.valid, self.segment.valid)
        beat_ready = Signal()
        m.d.comb += [
            self.poll_segment.ready.eq(Mux(from_poll, beat_ready, 0)),
            self.segment.ready.eq(Mux(from_poll, 0, beat_ready)),
        ]
        queue = Signal.like(beat.queue)
        head = Signal(16)
        epoch = Signal.like(beat.epoch)
        stored = Signal(range(buf + 1))         # bytes in the buffer
        total = Signal(DMA_LEN_WIDTH + 1)       # readable bytes, saturating
        ack_addr = Signal(64)
        has_ack = Signal()
        ack = Signal(8)
        used_len = Signal(32)

        # Byte reader: `count` bytes from `pos`, little- and big-endian at once.
        pos = Signal(40)
        count = Signal(3)
        le = Signal(32)
        be = Signal(MAC_BITS)
        nth = Signal(3)
        beyond = Signal()                       # a byte past what the buffer holds
        m.d.comb += r.addr.eq(pos[beat_shift:buf_bits])
        lane = Signal(beat_shift)
        m.d.sync += lane.eq(pos[:beat_shift])
        byte = r.data.word_select(lane, 8)

        step = Signal(range(16))
        cls = Signal(8)
        cmd = Signal(8)
        uc_n = Signal(32)
        mc_n = Signal(32)
        mc_off = Signal(40)
        uc_take = Signal(range(N + 1))
        mc_take = Signal(range(N + 1))
        index = Signal(range(N + 1))
        left = Signal(range(N + 1))
        timer = Signal(range(self._poll_cycles + 1))

        STEP_HEADER, STEP_ONOFF, STEP_ADDR, STEP_UC_N, STEP_MC_N, STEP_UC, STEP_MC, STEP_PAIRS = \
            range(8)

        def read(m, at, n, then):
            m.d.sync += [pos.eq(at), count.eq(n), nth.eq(0), le.eq(0), be.eq(0), step.eq(then),
                         beyond.eq(0)]
            m.next = "READ"

        def answer(m, value):
            m.d.sync += ack.eq(value)
            m.next = "ACK"

        table = Array(flt.table[i] for i in range(N))

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.sync += [stored.eq(0), total.eq(0), has_ack.eq(0), read_failed.eq(0)]
                m.d.comb += [
                    self.segment.ready.eq(self.reset),
                    self.poll_segment.ready.eq(self.reset),
                ]
                with m.If(self.reset):
                    pass
                with m.Elif(self.poll_segment.valid):
                    m.d.sync += from_poll.eq(1)
                    m.next = "POLL_ANSWER"
                with m.Elif(self.segment.valid):
                    m.d.sync += from_poll.eq(0)
                    m.next = "COLLECT"
                with m.Elif(self.poll_enable & (timer == 0)):
                    m.next = "POLL"
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)

            with m.State("POLL"):
                m.d.comb += [
                    self.poll_fetch.valid.eq(~self.reset),
                    self.poll_fetch.payload.eq(self._poll_queue),
                ]
                with m.If(self.reset):
                    m.next = "IDLE"
                with m.Elif(self.poll_fetch.ready):
                    m.d.sync += timer.eq(self._poll_cycles)
                    m.next = "POLL_WAIT"

            with m.State("POLL_WAIT"):
                m.d.comb += self.poll_segment.ready.eq(self.reset)
                with m.If(self.reset):
                    m.next = "IDLE"
                with m.Elif(self.poll_segment.valid):
                    m.d.sync += from_poll.eq(1)
                    m.next = "POLL_ANSWER"

            with m.State("POLL_ANSWER"):
                with m.If(self.poll_segment.payload.empty):
                    m.d.comb += self.poll_segment.ready.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "COLLECT"

            # Read every readable buffer into the command buffer, note the first writable one.
            with m.State("COLLECT"):
                room = buf - stored
                n = Mux(beat.len < room, beat.len, room)[:DMA_LEN_WIDTH]
                reading = ~beat.write & (n != 0)
                m.d.comb += [
                    self.rd_req.valid.eq(beat_valid & reading & ~self.reset),
                    self.rd_req.payload.host_addr.eq(beat.addr),
                    self.rd_req.payload.ram_addr.eq(stored),
                    self.rd_req.payload.len.eq(n),
                    self.rd_req.payload.tag.eq(DMA_TAG_CTRL),
                    beat_ready.eq(self.reset | ~reading | self.rd_req.ready),
                ]
                with m.If(self.reset):
                    m.next = "ABORT"
                with m.Elif(beat_valid & beat_ready):
                    with m.If(beat.first):
                        m.d.sync += [queue.eq(beat.queue), head.eq(beat.head),
                                     epoch.eq(beat.epoch)]
                    with m.If(~beat.write):
                        sum_ = total + beat.len
                        m.d.sync += [
                            stored.eq(stored + n),
                            total.eq(Mux(sum_ >> (DMA_LEN_WIDTH + 1) != 0,
                                         (1 << (DMA_LEN_WIDTH + 1)) - 1, sum_)),
                        ]
                    with m.Elif(~has_ack):
                        m.d.sync += [ack_addr.eq(beat.addr), has_ack.eq(1)]
                    with m.If(beat.last):
                        m.next = "LANDING"

            with m.State("LANDING"):
                with m.If(self.reset):
                    m.next = "ABORT"
                with m.Elif(reads == 0):
                    # No ack byte: malformed (and nothing to answer with); not executed.
                    with m.If(read_failed | (total < _HDR) | ~has_ack):
                        answer(m, VirtioNetCtrlAck.ERR)
                    with m.Else():
                        read(m, 0, _HDR, STEP_HEADER)

            # --- byte reader: one byte every two cycles ------------------------------------------
            with m.State("READ"):
                m.d.sync += beyond.eq(beyond | (pos >= stored))
                m.next = "READ_BYTE"

            with m.State("READ_BYTE"):
                m.d.sync += [
                    le.eq(le | (byte << (nth << 3))),
                    be.eq(Cat(byte, be[:-8])),
                    nth.eq(nth + 1),
                    pos.eq(pos + 1),
                ]
                with m.If(nth == count - 1):
                    m.next = "PARSE"
                with m.Else():
                    m.next = "READ"

            # --- what the bytes just read mean --------------------------------------------------
            with m.State("PARSE"):
                with m.If(self.reset):
                    m.next = "ABORT"
                with m.Elif(beyond):
                    answer(m, VirtioNetCtrlAck.ERR)
                with m.Elif(step == STEP_HEADER):
                    c, k = le[:8], le[8:16]
                    m.d.sync += [cls.eq(c), cmd.eq(k)]
                    rx = c == VirtioNetCtrlClass.RX
                    mac = c == VirtioNetCtrlClass.MAC
                    mq = c == VirtioNetCtrlClass.MQ
                    with m.If(rx & self.ctrl_rx & (total == _HDR + _ONOFF)
                              & ((k == VirtioNetCtrlRx.PROMISC) | (k == VirtioNetCtrlRx.ALLMULTI))):
                        read(m, _HDR, _ONOFF, STEP_ONOFF)
                    with m.Elif(mac & self.ctrl_mac_addr & (k == VirtioNetCtrlMac.ADDR_SET)
                                & (total == _HDR + ETH_ALEN)):
                        read(m, _HDR, ETH_ALEN, STEP_ADDR)
                    with m.Elif(mac & self.ctrl_rx & (k == VirtioNetCtrlMac.TABLE_SET)
                                & (total >= _HDR + 2 * _COUNT)):
                        read(m, _HDR, _COUNT, STEP_UC_N)
                    with m.Elif(mq & self.mq & (k == VirtioNetCtrlMq.VQ_PAIRS_SET)
                                & (total == _HDR + _PAIRS)):
                        read(m, _HDR, _PAIRS, STEP_PAIRS)
                    with m.Else():
                        answer(m, VirtioNetCtrlAck.ERR)

                with m.Elif(step == STEP_ONOFF):
                    on = le[:8] != 0
                    with m.If(cmd == VirtioNetCtrlRx.PROMISC):
                        m.d.sync += flt.promisc.eq(on)
                    with m.Else():
                        m.d.sync += flt.allmulti.eq(on)
                    answer(m, VirtioNetCtrlAck.OK)

                with m.Elif(step == STEP_ADDR):
                    m.d.sync += flt.mac.eq(be)
                    m.d.comb += self.mac_changed.eq(be != flt.mac)
                    answer(m, VirtioNetCtrlAck.OK)

                with m.Elif(step == STEP_PAIRS):
                    pairs = le[:16]
                    with m.If((pairs >= VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN)
                              & (pairs <= self._pairs)):
                        m.d.sync += self.curr_pairs.eq(pairs)
                        answer(m, VirtioNetCtrlAck.OK)
                    with m.Else():
                        answer(m, VirtioNetCtrlAck.ERR)

                with m.Elif(step == STEP_UC_N):
                    offset = _HDR + _COUNT + ETH_ALEN * le
                    m.d.sync += [uc_n.eq(le), mc_off.eq(offset)]
                    with m.If(offset + _COUNT > total):
                        answer(m, VirtioNetCtrlAck.ERR)
                    with m.Else():
                        read(m, offset, _COUNT, STEP_MC_N)

                with m.Elif(step == STEP_MC_N):
                    end = mc_off + _COUNT + ETH_ALEN * le
                    uni_over = uc_n > N
                    uc_keep = Mux(uni_over, 0, uc_n)
                    multi_over = (uc_keep + le) > N
                    mc_keep = Mux(multi_over, 0, le)
                    # The entries kept must be in the buffer; decide before changing anything.
                    last_needed = Mux(mc_keep != 0, end,
                                      Mux(uc_keep != 0, _HDR + _COUNT + ETH_ALEN * uc_n, 0))
                    m.d.sync += [mc_n.eq(le), uc_take.eq(uc_keep), mc_take.eq(mc_keep)]
                    with m.If((end != total) | (last_needed > stored)):
                        answer(m, VirtioNetCtrlAck.ERR)
                    with m.Else():
                        m.d.sync += [
                            flt.table_valid.eq(0),
                            flt.uni_overflow.eq(uni_over),
                            flt.multi_overflow.eq(multi_over),
                            index.eq(0),
                            left.eq(uc_keep),
                        ]
                        m.next = "TABLE_UC"

                with m.Elif(step == STEP_UC):
                    m.d.sync += [
                        table[index].eq(be),
                        flt.table_valid.bit_select(index, 1).eq(1),
                        index.eq(index + 1),
                        left.eq(left - 1),
                    ]
                    m.next = "TABLE_UC"

                with m.Elif(step == STEP_MC):
                    m.d.sync += [
                        table[index].eq(be),
                        flt.table_valid.bit_select(index, 1).eq(1),
                        index.eq(index + 1),
                        left.eq(left - 1),
                    ]
                    m.next = "TABLE_MC"

                with m.Else():
                    answer(m, VirtioNetCtrlAck.ERR)

            # MAC table entries, unicast then multicast, one at a time.
            with m.State("TABLE_UC"):
                with m.If(left != 0):
                    read(m, _HDR + _COUNT + ETH_ALEN * index, ETH_ALEN, STEP_UC)
                with m.Else():
                    m.d.sync += left.eq(mc_take)
                    m.next = "TABLE_MC"

            with m.State("TABLE_MC"):
                with m.If(left != 0):
                    read(m, mc_off + _COUNT + ETH_ALEN * (index - uc_take), ETH_ALEN, STEP_MC)
                with m.Else():
                    answer(m, VirtioNetCtrlAck.OK)

            # The ack byte, then the completion.
            # (A reset here lets the one-byte write go: it is already offered to the DMA
            # engine, and the completion is not sent.)
            with m.State("ACK"):
                m.d.sync += used_len.eq(0)
                with m.If(has_ack):
                    m.d.comb += [
                        self.wr_req.valid.eq(1),
                        self.wr_req.payload.host_addr.eq(ack_addr),
                        self.wr_req.payload.len.eq(1),
                        self.wr_req.payload.tag.eq(DMA_TAG_CTRL),
                        self.wr_req.payload.imm_en.eq(1),
                        self.wr_req.payload.imm_data.eq(ack),
                    ]
                    with m.If(self.wr_req.ready):
                        m.next = "ACK_WAIT"
                with m.Else():
                    m.next = "COMPLETE"

            with m.State("ACK_WAIT"):
                with m.If(self.wr_status.valid & ~self.reset &
                          (self.wr_status.payload.error == DmaError.BUS_MASTER_DISABLED)):
                    # Not sent (Bus Master Enable clear): written again once bus mastering is
                    # back, before the completion. A driver reads the ack whatever the used
                    # length says (Linux does), and the command has taken effect.
                    m.next = "ACK"
                with m.Elif(self.wr_status.valid):
                    m.d.sync += used_len.eq(self.wr_status.payload.error == DmaError.OK)
                    m.next = "COMPLETE"

            with m.State("COMPLETE"):
                m.d.comb += [
                    self.used.valid.eq(~self.reset),
                    self.used.payload.queue.eq(queue),
                    self.used.payload.head.eq(head),
                    self.used.payload.epoch.eq(epoch),
                    self.used.payload.len.eq(used_len),
                    self.used.payload.batch_end.eq(1),
                ]
                with m.If(self.reset | self.used.ready):
                    m.d.comb += [
                        self.ok.eq(~self.reset & (ack == VirtioNetCtrlAck.OK)),
                        self.err.eq(~self.reset & (ack != VirtioNetCtrlAck.OK)),
                    ]
                    m.next = "IDLE"

            # Device reset mid-command: no answer; wait for the DMA in flight.
            with m.State("ABORT"):
                with m.If((reads == 0) & (writes == 0)):
                    m.next = "IDLE"

        with m.If(self.reset):
            m.d.sync += [
                flt.mac.eq(self._mac),
                flt.promisc.eq(1),
                flt.allmulti.eq(0),
                flt.uni_overflow.eq(0),
                flt.multi_overflow.eq(0),
                flt.table_valid.eq(0),
                self.curr_pairs.eq(1),
            ]

        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & (reads == 0) & (writes == 0))
        return m
