# SPDX-License-Identifier: BSD-2-Clause
"""The beat-parallel checksum pieces of the network device (devices/net_checksum.py), against
plain Python, in Amaranth's own simulator: the ones' complement fold of sums of any width, the
lane masks of byte ranges, and the masked word sum of a beat."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from virtio_pcie.devices.net_checksum import (
    fold_ones_complement, lane_range, masked_word_sum, masked_word_xor,
)
from virtio_pcie.devices.net_interface import rx_steer

pytestmark = pytest.mark.unit


def simulate(m, body):
    sim = Simulator(m)
    sim.add_testbench(body)
    sim.run()


def fold(x):
    while x > 0xFFFF:
        x = (x & 0xFFFF) + (x >> 16)
    return x


@pytest.mark.parametrize("width", [8, 16, 17, 24, 32, 33, 40])
def test_fold(width):
    a, o = Signal(width), Signal(16)
    m = Module()
    m.d.comb += o.eq(fold_ones_complement(a))
    rng = random.Random(width)
    values = [0, 1, 0xFFFF, (1 << width) - 1] + [rng.getrandbits(width) for _ in range(200)]

    async def body(ctx):
        for v in values:
            v &= (1 << width) - 1
            ctx.set(a, v)
            assert ctx.get(o) == fold(v), hex(v)
    simulate(m, body)


@pytest.mark.parametrize("lanes", [8, 16, 32])
def test_lane_range_and_sums(lanes):
    offset, lo, hi = Signal(16), Signal(16), Signal(16)
    data = Signal(8 * lanes)
    m = Module()
    mask = lane_range(m, offset, lo, hi, lanes)
    total = Signal(32)
    xor = Signal(16)
    m.d.comb += [total.eq(masked_word_sum(data, mask, lanes)),
                 xor.eq(masked_word_xor(data, mask, lanes))]
    rng = random.Random(lanes)

    async def body(ctx):
        for _ in range(300):
            beat = rng.randrange(0, 100) * lanes
            a = rng.randrange(0, beat + 2 * lanes)
            b = rng.randrange(0, beat + 2 * lanes)
            raw = rng.randbytes(lanes)
            ctx.set(offset, beat)
            ctx.set(lo, a)
            ctx.set(hi, b)
            ctx.set(data, int.from_bytes(raw, "little"))
            want = [a <= beat + j < b for j in range(lanes)]
            got = ctx.get(mask)
            assert [bool(got >> j & 1) for j in range(lanes)] == want
            s = sum((raw[j] << 8 if j % 2 == 0 else raw[j]) for j in range(lanes) if want[j])
            assert ctx.get(total) == s
            x = 0
            for j in range(0, lanes, 2):
                if want[j]:
                    x ^= raw[j] << 8 | raw[j + 1]
            assert ctx.get(xor) == x
    simulate(m, body)


def test_rx_steer_spreads_flows():
    # Sequential ports (the common case of many connections) spread over every pair.
    for pairs in (2, 3, 4, 8):
        counts = [0] * pairs
        for port in range(1000, 1400):
            counts[rx_steer(port ^ 0x0A01, pairs)] += 1
        assert min(counts) > 400 / pairs / 2, counts
    assert all(rx_steer(h, 1) == 0 for h in range(0, 65536, 97))
