# SPDX-License-Identifier: BSD-2-Clause
"""Internal interfaces of the virtio-blk back-end: how its request slots talk to its engines.

::

    segments ─► BlkIntake ──start──► BlkSlot × slots ──(round robin)──► BlkDecoder
                  │ seg RAMs            │ jobs                          SgDmaReader ─► DMA rd_req
                  ▼                     │                               SgDmaWriter ─► DMA wr_req
               (readable / writable     │                               MediumReader ─► AXI AR/R
                segment lists, per slot)│                               MediumWriter ─► AXI AW/W/B
                                        └─ used ─► completions

A *slot* holds one request from its chain's first segment to its used entry. Each slot owns a
region of ``slot_bytes`` in the read buffer (host → medium data) and in the write buffer
(medium → host data), cut into ``slot_bytes // chunk_bytes`` *chunk buffers*; a request's data
moves one chunk at a time through them, so a chunk can be on the medium while the next one is
still on the link (and a large request never needs a large buffer).

Every job carries the slot it belongs to; the engines send their answers back tagged with it.
"""

from amaranth.lib import data, enum

from ..spec.virtio import VirtioBlkStatus
from ..virtio.interface import EPOCH_BITS, queue_index_width

__all__ = ["BlkOp", "SegEntry", "SlotStart", "DecodeRequest", "DecodeResult", "DmaReadJob",
           "DmaWriteJob", "MediumJob", "ReadIssued", "ReadDone", "WriteDone", "MediumDone",
           "ReadTag", "WriteTag",
           "SUM_WIDTH", "JOB_LEN_WIDTH", "slot_index_width", "region_index_width"]

#: Bits of a chain's readable or writable byte total (a chain is at most 2**32 bytes, virtio 1.2
#: §2.7.13.1; a larger sum saturates and makes the request malformed).
SUM_WIDTH = 34
#: Bits of a job length in bytes (a chunk is at most 32 KiB).
JOB_LEN_WIDTH = 16


def slot_index_width(slots):
    return max(1, (slots - 1).bit_length())


def region_index_width(regions):
    return max(1, (regions - 1).bit_length())


class BlkOp(enum.Enum, shape=3):
    """What a decoded request moves."""
    NONE  = 0   # nothing (FLUSH, or a request refused with IOERR / UNSUPP)
    READ  = 1   # medium → host (VIRTIO_BLK_T_IN)
    WRITE = 2   # host → medium (VIRTIO_BLK_T_OUT)
    ZERO  = 3   # zeros → medium (WRITE_ZEROES; DISCARD on a device that zeroes)
    ID    = 4   # device serial → host (GET_ID)


#: One buffer of a chain as the segment RAMs hold it.
SegEntry = data.StructLayout({
    "addr": 64,
    "len":  32,
})


def SlotStart(queue_count, slots):
    """A chain fully received (intake → slot): who it is and how many bytes each way."""
    return data.StructLayout({
        "slot":     slot_index_width(slots),
        "queue":    queue_index_width(queue_count),
        "head":     16,
        "epoch":    EPOCH_BITS,  # the chain's queue epoch (returned in its used entry)
        "readable": SUM_WIDTH,   # bytes in the device-readable buffers
        "writable": SUM_WIDTH,   # bytes in the device-writable buffers
        "bad":      1,           # malformed chain: readable after writable, too many segments
    })


def DecodeRequest(slots):
    """A slot asks for its header to be decoded (slot → decoder)."""
    return data.StructLayout({
        "slot":     slot_index_width(slots),
        "readable": SUM_WIDTH,
        "writable": SUM_WIDTH,
    })


def DecodeResult(slots, medium_addr_width):
    """The decoder's verdict on a request header (decoder → slot)."""
    return data.StructLayout({
        "slot":   slot_index_width(slots),
        "status": VirtioBlkStatus,
        "op":     BlkOp,
        "length": 32,                  # bytes to move (0 for NONE)
        "addr":   medium_addr_width,   # medium byte address of the first byte
    })


def DmaReadJob(slots, regions):
    """Read the next ``len`` bytes of the slot's readable buffers into the read buffer."""
    return data.StructLayout({
        "slot":     slot_index_width(slots),
        "ram_addr": 16,                          # byte address in the read buffer
        "len":      JOB_LEN_WIDTH,
        "first":    1,                           # start again at the first readable byte
        "region":   region_index_width(regions),   # chunk buffer (for the DMA tag)
    })


def DmaWriteJob(slots):
    """Write the next ``len`` bytes of the slot's writable buffers from the write buffer, or
    (``status``) the status byte into the last byte of the last writable buffer."""
    return data.StructLayout({
        "slot":        slot_index_width(slots),
        "ram_addr":    16,
        "len":         JOB_LEN_WIDTH,
        "first":       1,
        "status":      1,
        "status_byte": 8,
    })


def MediumJob(slots, medium_addr_width, ram_beat_width):
    """Move ``len`` bytes between the medium at ``addr`` and a chunk buffer at beat ``ram``."""
    return data.StructLayout({
        "slot": slot_index_width(slots),
        "addr": medium_addr_width,
        "len":  JOB_LEN_WIDTH,
        "ram":  ram_beat_width,
        "zero": 1,                     # writes only: write zeros, do not read the buffer
    })


def ReadIssued(slots, regions):
    """A DMA read request of a slot's job went out (``last``: the job's final one)."""
    return data.StructLayout({
        "slot":   slot_index_width(slots),
        "region": region_index_width(regions),
        "last":   1,
    })


def ReadDone(slots, regions):
    """A DMA read request finished (all its bytes landed, or it failed)."""
    return data.StructLayout({
        "slot":   slot_index_width(slots),
        "region": region_index_width(regions),
        "error":  1,
    })


def WriteDone(slots):
    """A DMA write request finished; ``last`` marks the final request of a job; ``dropped``
    (with ``error``): it was not sent because Bus Master Enable was clear."""
    return data.StructLayout({
        "slot":    slot_index_width(slots),
        "last":    1,
        "error":   1,
        "dropped": 1,
    })


def MediumDone(slots):
    """A medium job finished (``error``: the medium answered SLVERR or DECERR)."""
    return data.StructLayout({
        "slot":  slot_index_width(slots),
        "error": 1,
    })


def ReadTag(slots, regions):
    """The ``tag`` of the back-end's DMA read requests: whose, which buffer, last of its job."""
    return data.StructLayout({
        "slot":   slot_index_width(slots),
        "region": region_index_width(regions),
        "last":   1,
    })


def WriteTag(slots):
    """The ``tag`` of the back-end's DMA write requests: whose, and last of its job."""
    return data.StructLayout({
        "slot": slot_index_width(slots),
        "last": 1,
    })
