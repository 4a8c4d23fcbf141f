# SPDX-License-Identifier: BSD-2-Clause
"""virtio-pcie verification IP: the simulation harness, the bridge between cocotbext-pcie and the
RTL, and the Linux-faithful host driver model.

Importable from a user's own cocotb testbench after ``pip install`` of the project; see
``docs/host-model.md``.
"""
