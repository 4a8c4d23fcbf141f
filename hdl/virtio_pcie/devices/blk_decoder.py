# SPDX-License-Identifier: BSD-2-Clause
"""Judges virtio-blk request headers: what to move, where, or which status to give instead."""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec.virtio import (VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_SECTOR_SIZE,
                           VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, VirtioBlkDiscardWriteZeroes,
                           VirtioBlkF, VirtioBlkOutHdr, VirtioBlkReqType, VirtioBlkStatus,
                           byte_size)
from ..virtio.interface import FEATURE_BITS
from .blk_interface import SUM_WIDTH, BlkOp, DecodeRequest, DecodeResult, slot_index_width

__all__ = ["BlkDecoder", "HEADER_ENTRY_BITS"]

_HDR_BYTES = byte_size(VirtioBlkOutHdr)                 # 16
_DWZ_BYTES = byte_size(VirtioBlkDiscardWriteZeroes)     # 16
_SECTOR_SHIFT = VIRTIO_BLK_SECTOR_SIZE.bit_length() - 1

#: A header RAM entry: the request header, then the first bytes of the request's data (the
#: single discard / write-zeroes segment).
HEADER_ENTRY_BITS = 8 * (_HDR_BYTES + _DWZ_BYTES)


class BlkDecoder(wiring.Component):
    """Decodes one request at a time from its header (virtio 1.2 §5.2.6).

    For a request that is well formed and inside the disk the answer is the operation, the
    medium byte address and the byte count, with status OK; otherwise the operation is NONE and
    the status says why (virtio 1.2 §5.2.6.1, and QEMU's checks where the specification leaves
    the device free):

    ==============  ==========================================================================
    type            checks (first failing one wins)
    ==============  ==========================================================================
    IN              data (writable bytes before the status byte) a multiple of 512 and below
                    4 GiB, else IOERR; sectors inside ``capacity``, else IOERR.
    OUT             read-only device: IOERR; data (readable bytes after the header) a multiple
                    of 512 and below 4 GiB, else IOERR; inside ``capacity``, else IOERR.
    FLUSH           OK (writes are on the medium before they complete, so nothing to do).
    GET_ID          OK; the serial is cut to the writable bytes before the status byte.
    DISCARD,        not negotiated: UNSUPP; not exactly one 16-byte segment: IOERR; flags other
    WRITE_ZEROES    than UNMAP, or UNMAP on a DISCARD: UNSUPP (§5.2.6.2); read-only: IOERR;
                    more sectors than the configured maximum: IOERR; outside ``capacity``:
                    IOERR. ``reserved`` and the header ``sector`` are ignored.
    anything else   UNSUPP (GET_LIFETIME, SECURE_ERASE, zoned and legacy SCSI types, unknown).
    ==============  ==========================================================================

    Requests whose chain is malformed (no header, no status byte) never reach the decoder.
    An answer takes four cycles.

    Parameters
    ----------
    slots : int
    medium_addr_width : int
    read_only : bool
    discard_zeroes : bool
        A DISCARD zeroes its sectors (op ZERO) instead of leaving them as they were (NONE).
    max_discard_sectors, max_write_zeroes_sectors : int

    Members
    -------
    req : In(stream.Signature(DecodeRequest(slots)))
    hdr_addr, hdr_en : Out
        Read port of the header RAM (one entry per slot, :data:`HEADER_ENTRY_BITS` wide).
    hdr_data : In(HEADER_ENTRY_BITS)
    capacity : In(64)
        Disk size in 512-byte sectors.
    features : In(FEATURE_BITS)
        Negotiated features.
    rsp : Out(stream.Signature(DecodeResult(slots, medium_addr_width), always_ready=True))
    """

    def __init__(self, *, slots, medium_addr_width, read_only, discard_zeroes,
                 max_discard_sectors, max_write_zeroes_sectors):
        for name, value in (("max_discard_sectors", max_discard_sectors),
                            ("max_write_zeroes_sectors", max_write_zeroes_sectors)):
            if not isinstance(value, int) or not 1 <= value < (1 << (32 - _SECTOR_SHIFT)):
                raise ValueError(f"{name} must be an integer from 1 to "
                                 f"{(1 << (32 - _SECTOR_SHIFT)) - 1}, not {value!r}")
        self._slots = slots
        self._maw   = medium_addr_width
        self._read_only      = bool(read_only)
        self._discard_zeroes = bool(discard_zeroes)
        self._max_discard    = max_discard_sectors
        self._max_wz         = max_write_zeroes_sectors
        super().__init__({
            "req":      In(stream.Signature(DecodeRequest(slots))),
            "hdr_addr": Out(slot_index_width(slots)),
            "hdr_en":   Out(1),
            "hdr_data": In(HEADER_ENTRY_BITS),
            "capacity": In(64),
            "features": In(FEATURE_BITS),
            "rsp":      Out(stream.Signature(DecodeResult(slots, medium_addr_width),
                                             always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        IOERR, UNSUPP, OK = VirtioBlkStatus.IOERR, VirtioBlkStatus.UNSUPP, VirtioBlkStatus.OK

        slot     = Signal(slot_index_width(self._slots))
        readable = Signal(SUM_WIDTH)
        writable = Signal(SUM_WIDTH)
        hdr = data.View(VirtioBlkOutHdr, self.hdr_data[:8 * _HDR_BYTES])
        dwz = data.View(VirtioBlkDiscardWriteZeroes, self.hdr_data[8 * _HDR_BYTES:])

        # Stage 1 results.
        status = Signal(VirtioBlkStatus)
        op     = Signal(BlkOp)
        sector = Signal(64)
        count  = Signal(32)        # sectors the request touches
        ranged = Signal()          # the request addresses sectors: check them against capacity
        length = Signal(32)

        # Stage 2 results.
        inside = Signal()

        m.d.comb += [
            self.hdr_addr.eq(self.req.payload.slot),
            self.rsp.payload.slot.eq(slot),
        ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [
                    self.req.ready.eq(1),
                    self.hdr_en.eq(self.req.valid),
                ]
                with m.If(self.req.valid):
                    m.d.sync += [
                        slot.eq(self.req.payload.slot),
                        readable.eq(self.req.payload.readable),
                        writable.eq(self.req.payload.writable),
                    ]
                    m.next = "CLASSIFY"

            with m.State("CLASSIFY"):
                data_in  = Signal(SUM_WIDTH)    # bytes before the status byte
                data_out = Signal(SUM_WIDTH)    # bytes after the header
                m.d.comb += [
                    data_in.eq(writable - 1),
                    data_out.eq(readable - _HDR_BYTES),
                ]
                whole_in  = (data_in[:_SECTOR_SHIFT] == 0) & (data_in[32:] == 0)
                whole_out = (data_out[:_SECTOR_SHIFT] == 0) & (data_out[32:] == 0)
                flags = dwz.flags
                unmap = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
                m.d.sync += [
                    status.eq(OK), op.eq(BlkOp.NONE), count.eq(0), length.eq(0), ranged.eq(0),
                    sector.eq(hdr.sector),
                ]
                with m.Switch(hdr.type):
                    with m.Case(VirtioBlkReqType.IN):
                        m.d.sync += [
                            op.eq(BlkOp.READ), length.eq(data_in), ranged.eq(1),
                            count.eq(data_in[_SECTOR_SHIFT:]),
                        ]
                        with m.If(~whole_in):
                            m.d.sync += status.eq(IOERR)
                    with m.Case(VirtioBlkReqType.OUT):
                        m.d.sync += [
                            op.eq(BlkOp.WRITE), length.eq(data_out), ranged.eq(1),
                            count.eq(data_out[_SECTOR_SHIFT:]),
                        ]
                        with m.If(~whole_out | self._read_only):
                            m.d.sync += status.eq(IOERR)
                    with m.Case(VirtioBlkReqType.FLUSH):
                        pass
                    with m.Case(VirtioBlkReqType.GET_ID):
                        m.d.sync += [
                            op.eq(BlkOp.ID),
                            length.eq(Mux(data_in < VIRTIO_BLK_ID_BYTES, data_in,
                                          VIRTIO_BLK_ID_BYTES)),
                        ]
                    for kind, feature, limit, zeroes, unmap_ok in (
                            (VirtioBlkReqType.DISCARD, VirtioBlkF.DISCARD, self._max_discard,
                             self._discard_zeroes, False),
                            (VirtioBlkReqType.WRITE_ZEROES, VirtioBlkF.WRITE_ZEROES,
                             self._max_wz, True, True)):
                        with m.Case(kind):
                            m.d.sync += [
                                op.eq(BlkOp.ZERO if zeroes else BlkOp.NONE),
                                sector.eq(dwz.sector),
                                count.eq(dwz.num_sectors),
                                length.eq(dwz.num_sectors << _SECTOR_SHIFT if zeroes else 0),
                                ranged.eq(1),
                            ]
                            allowed = unmap if unmap_ok else 0
                            with m.If(~self.features[feature]):
                                m.d.sync += status.eq(UNSUPP)
                            with m.Elif(data_out != _DWZ_BYTES):
                                m.d.sync += status.eq(IOERR)
                            with m.Elif((flags & ~allowed) != 0):
                                m.d.sync += status.eq(UNSUPP)
                            with m.Elif(self._read_only or (dwz.num_sectors > limit)):
                                m.d.sync += status.eq(IOERR)
                    with m.Default():
                        m.d.sync += status.eq(UNSUPP)
                m.next = "RANGE"

            with m.State("RANGE"):
                # virtio 1.2 §5.2.6.1: nothing beyond capacity (sector + count may pass 2**64).
                end = Signal(65)
                m.d.comb += end.eq(sector + count)
                m.d.sync += inside.eq(~ranged | (end <= self.capacity))
                m.next = "ANSWER"

            with m.State("ANSWER"):
                refused = Signal()
                m.d.comb += [
                    refused.eq((status != OK) | ~inside),
                    self.rsp.valid.eq(1),
                    self.rsp.payload.status.eq(Mux(refused & (status == OK), IOERR, status)),
                    self.rsp.payload.op.eq(Mux(refused, BlkOp.NONE, op)),
                    self.rsp.payload.length.eq(Mux(refused, 0, length)),
                    self.rsp.payload.addr.eq((sector << _SECTOR_SHIFT)[:self._maw]),
                ]
                m.next = "IDLE"
        return m
