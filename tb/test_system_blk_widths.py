# SPDX-License-Identifier: BSD-2-Clause
"""virtio-blk end to end at the other data path widths: one smoke run each.

The 128-bit build is the main one (``test_system_blk.py``); here the 64-bit
(:data:`~system_blk_env.NARROW`, one queue) and 256-bit (:data:`~system_blk_env.WIDE`, two
queues) builds bind under the host model and move a random mix of every request type with
host latency, reordered and RCB-split completions, verified byte for byte against a shadow disk.
"""

import cocotb
import pytest

from system_blk_env import BRIDGES, NARROW, SEED, WIDE, bind, check_interrupts, run_mix
from virtio_pcie_tb.system import SystemTB, build_system


@cocotb.test()
async def run_smoke(dut):
    tb = SystemTB(dut, bridge_options=BRIDGES[1])
    await tb.reset()
    blk, vdev = await bind(tb, profile="linux-7")
    await run_mix(tb, blk, seed=SEED + tb.data_width, requests=60, qd=16)
    check_interrupts(vdev, blk)


# -- pytest launchers --------------------------------------------------------------------------

@pytest.mark.system
@pytest.mark.parametrize("params", [NARROW, WIDE], ids=["64", "256"])
def test_blk_width(simulate, params):
    simulate(build_system(params), "test_system_blk_widths")
