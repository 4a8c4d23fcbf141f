# SPDX-License-Identifier: BSD-2-Clause
"""The ``virtio-pcie demo`` command: build the design, run the demo simulation, print its report.

The simulation (a cocotb module in this package) writes a human-readable report to
``report.txt`` in its output directory; this module prints it and exits with the simulation's
verdict.
"""

import sys
import time

from .. import harness

__all__ = ["run_demo"]


def run_demo(*, device="blk", data_width=128, verbose=False):
    if device == "net":
        from .net import run_net_demo
        return run_net_demo(data_width=data_width, verbose=verbose)
    from ..designs.minimal_endpoint import MinimalEndpoint
    started = time.monotonic()
    print(f"virtio-pcie demo: building the design ({data_width}-bit TLP path)...",
          file=sys.stderr)
    design = harness.build(MinimalEndpoint, {"data_width": data_width},
                           name="minimal_endpoint", verbose=True)
    out = harness.SIM_BUILD / "demo" / f"enumerate-{data_width}"
    print("virtio-pcie demo: simulating (root complex → bridge → RTL)...", file=sys.stderr)
    try:
        harness.run(design, "virtio_pcie_tb.demos.enumerate", test_dir=out, quiet=not verbose)
    except harness.SimulationFailed as e:
        print(f"demo FAILED: {e}", file=sys.stderr)
        return 1
    print((out / "report.txt").read_text())
    print(f"virtio-pcie demo: done in {time.monotonic() - started:.0f} s "
          f"(outputs in {out})", file=sys.stderr)
    return 0
