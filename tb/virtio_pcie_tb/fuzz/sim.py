# SPDX-License-Identifier: BSD-2-Clause
"""The fuzzer's cocotb module: runs ``FUZZ_RUNS`` seeded runs in one simulator process.

Environment: ``FUZZ_SEED`` (campaign seed), ``FUZZ_FIRST`` (index of the first run),
``FUZZ_RUNS``, ``FUZZ_RESULTS`` (a file that receives one JSON line per run). The cocotb test
itself fails only if the fuzzer could not run; judging the runs is the caller's business
(:func:`virtio_pcie_tb.fuzz.campaign.run_campaign`).
"""

import json
import os

import cocotb

from .run import FuzzContext, run_seed


def _workload(ctx):
    if ctx.device == "blk":
        from .blk import BlkWorkload
        return BlkWorkload(ctx)
    from .net import NetWorkload
    return NetWorkload(ctx)


@cocotb.test()
async def fuzz_runs(dut):
    seed = int(os.environ.get("FUZZ_SEED", "1"))
    first = int(os.environ.get("FUZZ_FIRST", "0"))
    runs = int(os.environ.get("FUZZ_RUNS", "1"))
    path = os.environ.get("FUZZ_RESULTS", "fuzz_results.jsonl")
    ctx = FuzzContext(dut, _workload)
    await ctx.start()
    with open(path, "a") as out:
        for index in range(first, first + runs):
            result = await ctx.run_one(index, run_seed(seed, index))
            out.write(json.dumps(result.as_dict()) + "\n")
            out.flush()
