# SPDX-License-Identifier: BSD-2-Clause
"""Board tops and Vivado build plans for boards with a Xilinx 7-series PCI Express hard IP.

* :mod:`.platforms`: the amaranth-boards platforms, with the corrections PCIe needs.
* :mod:`.core`: the device core for a hard IP (``VirtioPcieDevice`` in "ext" mode).
* :mod:`.xilinx7_device`: that core behind the 7-series adapter, with the ``pcie_7x`` user-side
  ports (used by the board tops, the generator and the hard-IP system tests).
* :mod:`.top`: the board top (reference clock buffer, the ``pcie_7x`` core as a black box, the
  adapter and the device, LEDs).
* :mod:`.vivado`: the TCL that creates and configures the ``pcie_7x`` IP, and the constraints.
* :mod:`.build`: ``virtio-pcie build`` (a complete plan written to a directory; Vivado not run).
* :mod:`.generate`: ``virtio-pcie generate`` (the core as one Verilog file, JSON and README).
"""
