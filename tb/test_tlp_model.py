# SPDX-License-Identifier: BSD-2-Clause
"""Unit tests of the testbench's TLP models: beat encoding, beat-rule checks, conversion to
cocotbext-pcie TLPs, and the bridge's read-completion-boundary splitting."""

import random

import pytest

from virtio_pcie.spec.pcie import CplStatus, FmtType
from virtio_pcie_tb.models.pcie_bridge import split_completion
from virtio_pcie_tb.models.tlp import BeatAssembler, BeatCodec, MalformedTlp, RawTlp

pytestmark = pytest.mark.unit


def mwr(addr, payload, tag=0):
    t = RawTlp(payload=payload)
    t["dw0.fmt_type"] = FmtType.MWR64.value
    t["dw0.length"] = len(payload) // 4
    t["req.first_be"] = 0xF
    t["req.last_be"] = 0xF if len(payload) > 4 else 0
    t["req.tag"] = tag
    t["req.dw2"] = addr >> 32
    t["req.dw3"] = addr & 0xFFFFFFFC
    return t


def cpld(tag, lower_address, byte_count, payload):
    t = RawTlp(payload=payload)
    t["dw0.fmt_type"] = FmtType.CPLD.value
    t["dw0.length"] = len(payload) // 4
    t["cpl.tag"] = tag
    t["cpl.lower_address"] = lower_address
    t["cpl.byte_count"] = byte_count
    return t


@pytest.mark.parametrize("data_width", [64, 128, 256])
def test_beat_round_trip(data_width):
    codec = BeatCodec(data_width)
    rng = random.Random(data_width)
    for n in list(range(0, 20)) + [127, 128, 129, 256]:
        payload = bytes(rng.randrange(256) for _ in range(4 * n))
        t = mwr(0x1_0000_0000 + 4 * n, payload) if n else RawTlp()
        if not n:
            t["dw0.fmt_type"] = FmtType.MRD32.value
            t["dw0.length"] = 5
            t["req.dw2"] = 0x1000
        beats = codec.encode(t)
        assert len(beats) == max(1, -(-4 * n // (data_width // 8)))
        asm = BeatAssembler(codec)
        out = [asm.push(b) for b in beats]
        assert out[:-1] == [None] * (len(beats) - 1)
        assert out[-1].hdr == t.hdr and out[-1].payload == t.payload


def test_cocotbext_round_trip():
    t = mwr(0x1234_5678_9ABC_DEF0, bytes(range(32)), tag=0x33)
    c = t.to_cocotbext()
    assert c.address == 0x1234_5678_9ABC_DEF0 and c.tag == 0x33 and c.length == 8
    assert bytes(c.get_data()) == bytes(range(32))
    back = RawTlp.from_cocotbext(c)
    assert back.hdr == t.hdr and back.payload == t.payload


def test_malformed_tlps_are_reported():
    t = mwr(0x1000, bytes(8))
    t["dw0.length"] = 4                 # says 4 dwords, carries 2
    with pytest.raises(MalformedTlp, match="says 4 dwords but carries 2"):
        t.check()
    u = RawTlp()
    u["dw0.fmt_type"] = 0x1F            # undefined Fmt/Type
    with pytest.raises(MalformedTlp, match="unknown Fmt/Type"):
        u.check()
    codec = BeatCodec(64)
    asm = BeatAssembler(codec, name="x")
    beats = codec.encode(mwr(0x1000, bytes(24)))
    with pytest.raises(MalformedTlp, match="beat without sop"):
        asm.push(beats[1])
    # a sop in the middle of a TLP
    asm = BeatAssembler(codec, name="x")
    asm.push(beats[0])
    with pytest.raises(MalformedTlp, match="sop in the middle"):
        asm.push(beats[0])
    # non-contiguous keep
    bad = beats[2] & ~(0b11 << codec.off["keep"]) | (0b10 << codec.off["keep"])
    asm = BeatAssembler(codec, name="x")
    asm.push(beats[0])
    asm.push(beats[1])
    with pytest.raises(MalformedTlp, match="not contiguous"):
        asm.push(bad)


@pytest.mark.parametrize("rcb", [64, 128])
@pytest.mark.parametrize("offset", [0, 1, 3, 60, 63, 124, 127])
def test_rcb_split(rcb, offset):
    length = 300
    data = bytes(range(256)) + bytes(range(64))
    # one completion carrying the whole read: dword-aligned data from addr & ~3
    first_pad = offset & 3
    ndw = (first_pad + length + 3) // 4
    payload = bytes(first_pad) + data[:length] + bytes(4 * ndw - first_pad - length)
    c = cpld(tag=5, lower_address=offset & 0x7F, byte_count=length, payload=payload)
    pieces = split_completion(c, rcb)
    got = b""
    remaining = length
    addr = offset
    for i, p in enumerate(pieces):
        p.check()
        assert p["cpl.byte_count"] == remaining
        assert p["cpl.lower_address"] == addr & 0x7F
        pad = p["cpl.lower_address"] & 3
        take = min(remaining, len(p.payload) - pad)
        got += p.payload[pad:pad + take]
        end = addr + take
        if i < len(pieces) - 1:
            assert end % rcb == 0, "a non-final piece must end on the boundary"
        remaining -= take
        addr = end
    assert got == data[:length] and remaining == 0
    # error completions are never split
    ur = RawTlp()
    ur["dw0.fmt_type"] = FmtType.CPL.value
    ur["cpl.status"] = CplStatus.UR.value
    assert split_completion(ur, rcb) == [ur]
