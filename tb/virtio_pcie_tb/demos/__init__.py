# SPDX-License-Identifier: BSD-2-Clause
"""The ``virtio-pcie demo`` command: build the device, run the demo simulation, print its report.

Each device has a demo: a cocotb module in this package that writes a human-readable report to
``report.txt`` in its output directory, section by section. :func:`run_demo` builds the design
(the project's main build of that device, :data:`~virtio_pcie_tb.system.MAIN_DESIGNS`, so the
system tests and the demo share one Verilator build), runs the simulation, prints the report
and returns 0 if everything was verified, 1 otherwise.

===========  ==============================  =======================================================
device       module                          what it shows
===========  ==============================  =======================================================
``blk``      :mod:`.blk`                     enumeration (lspci), virtio structures, feature
                                             negotiation, verified I/O with its figures
``net``      :mod:`.net`                     ARP, ping and UDP echo with a peer on the MAC side,
                                             frame rates (its own runner, ``run_net_demo``)
===========  ==============================  =======================================================
"""

import os
import sys
import time

from .. import harness

__all__ = ["DEMOS", "run_demo"]

#: device -> cocotb module of its demo.
DEMOS = {"blk": "virtio_pcie_tb.demos.blk", "net": "virtio_pcie_tb.demos.net"}


def run_demo(*, device="blk", data_width=128, verbose=False, mib=4, qd=16, req_kib=64, seed=1,
             latency_ns=500, profile="linux-6.12", image=None, out=None, extra_env=None):
    """Build and run the demo of ``device``; print its report. Returns the exit status."""
    from ..system import MAIN_DESIGNS, build_system
    if device not in DEMOS:
        raise ValueError(f"no demo for device {device!r}; there is one for {sorted(DEMOS)}")
    if device == "net":
        # The net demo (ping and UDP echo with a peer) has its own runner; the I/O options
        # below are blk's.
        from .net import run_net_demo
        return run_net_demo(data_width=data_width, verbose=verbose)
    if not 0 < mib <= 1024:
        raise ValueError(f"--mib must be more than 0 and at most 1024, not {mib!r}")
    if not 1 <= qd <= 256:
        raise ValueError(f"--qd must be from 1 to 256, not {qd!r}")
    if req_kib not in (4, 8, 16, 32, 64, 128, 256):
        raise ValueError(f"--req-kib must be 4, 8, 16, 32, 64, 128 or 256, not {req_kib!r}")
    if image is not None:
        image = os.path.abspath(image)
        if not os.path.isfile(image):
            raise ValueError(f"disk image {image} does not exist")
        size = os.path.getsize(image)
        if size == 0 or size % 512:
            raise ValueError(f"disk image {image} is {size} bytes, not a positive multiple of 512")
        if size < mib * (1 << 20) + (1 << 20):
            raise ValueError(f"disk image {image} ({size} bytes) is too small for {mib} MiB of "
                             f"I/O; use --mib")
    params = dict(MAIN_DESIGNS[device])
    params["data_width"] = data_width
    started = time.monotonic()
    print(f"virtio-pcie demo: building the {device} device ({data_width}-bit TLP data path; "
          f"the first build takes a minute or two)...", file=sys.stderr, flush=True)
    design = build_system(params, verbose=True)
    out = out or harness.SIM_BUILD / "demo" / f"{device}-{data_width}"
    print(f"virtio-pcie demo: simulating: root complex -> bridge -> RTL, Linux-like host "
          f"({profile})...", file=sys.stderr, flush=True)
    env = {"DEMO_MIB": str(mib), "DEMO_QD": str(qd), "DEMO_REQ_KIB": str(req_kib),
           "DEMO_SEED": str(seed), "DEMO_LATENCY_NS": str(latency_ns), "DEMO_PROFILE": profile,
           "DEMO_IMAGE": image or ""}
    env.update(extra_env or {})
    report = out / "report.txt"
    if report.exists():
        report.unlink()
    status = 0
    try:
        harness.run(design, DEMOS[device], test_dir=out, env=env, quiet=not verbose,
                    waves_on_failure=False)
    except harness.SimulationFailed as e:
        status = 1
        failure = str(e)
    if report.exists():
        print(report.read_text(), end="", flush=True)
    if status:
        print(f"virtio-pcie demo: FAILED: {failure}", file=sys.stderr)
    else:
        print(f"virtio-pcie demo: done in {time.monotonic() - started:.0f} s "
              f"(outputs in {out})", file=sys.stderr)
    return status
