# SPDX-License-Identifier: BSD-2-Clause
"""The robustness fuzzer: a hostile driver and faulty host memory against the whole device.

``virtio-pcie fuzz`` (see :mod:`.campaign` and ``docs/robustness.md``) runs seeded runs in which
a driver misbehaves in every way of issue 12 while monitors on the TLP streams and the memory
model check the device's invariants: writes only where the driver allowed them, no DMA without
bus mastering, every request answered, resets that complete, data that is right.

Modules: :mod:`.campaign` (builds, batches, summary), :mod:`.sim` (the cocotb module),
:mod:`.run` (one process: context and the run sequence), :mod:`.driver` (the hostile driver),
:mod:`.rings` (its virtqueues), :mod:`.blk` / :mod:`.net` (workloads and their checks),
:mod:`.monitors` (link invariants), :mod:`.faults` (completion faults), :mod:`.memory` (host
memory).
"""

from .campaign import (COMPLETION_TIMEOUT_CYCLES, Summary, build_fuzz_design, fuzz_params,
                       replay_command, run_campaign)

__all__ = ["COMPLETION_TIMEOUT_CYCLES", "Summary", "build_fuzz_design", "fuzz_params",
           "replay_command", "run_campaign"]
