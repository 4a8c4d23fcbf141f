# SPDX-License-Identifier: BSD-2-Clause
"""Board tops and Vivado build plans for boards with a Xilinx 7-series PCI Express hard IP.

* :mod:`.platforms`: the amaranth-boards platforms, with the corrections PCIe needs.
* :mod:`.top`: the board top (reference clock buffer, the ``pcie_7x`` core as a black box, the
  adapter, the core of the device, LEDs).
* :mod:`.vivado`: the TCL that creates and configures the ``pcie_7x`` IP, and the constraints.
* :mod:`.build`: ``virtio-pcie build`` (a complete plan written to a directory; Vivado not run).
* :mod:`.core`: which core goes in: the one line to change when ``virtio_pcie.top`` lands.
"""
