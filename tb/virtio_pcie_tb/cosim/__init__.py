# SPDX-License-Identifier: BSD-2-Clause
"""Co-simulation: real Linux in QEMU drives the simulated RTL through vfio-user.

* :mod:`.vfio_user` — a vfio-user server (the protocol of QEMU's ``vfio-user-pci``).
* :mod:`.rtl_device` — the device it serves: the RTL, reached through
  :mod:`virtio_pcie_tb.models.cosim_bridge` (configuration and memory TLPs).
* :mod:`.simulation` — the cocotb module that hosts both inside the simulator process.
* :mod:`.guest` and :mod:`.initramfs` — QEMU, Debian kernels and the guest's initramfs.
* :mod:`.launcher` — the ``virtio-pcie cosim`` command: builds, starts and stops everything.
* :mod:`.net_peer` — the network peer that answers the guest on the MAC side.

See ``docs/linux.md``.
"""
