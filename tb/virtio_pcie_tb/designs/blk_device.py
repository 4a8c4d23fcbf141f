# SPDX-License-Identifier: BSD-2-Clause
"""Simulation tops for the virtio-blk back-end alone (the device-level tests).

* :func:`blk_device`: :class:`~virtio_pcie.devices.blk.VirtioBlkDevice` with its ports as they
  are (the testbench serves the medium port with a RAM model).
* :func:`blk_device_on_chip_ram`: the device with an on-chip :class:`~virtio_pcie.devices.
  axi_ram.AxiRam` as its medium, the configuration a small board would build.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import connect

from virtio_pcie.devices.axi_ram import AxiRam
from virtio_pcie.devices.blk import VirtioBlkDevice

from .sim_top import SimTop

__all__ = ["blk_device", "blk_device_on_chip_ram", "BlkOnChipRam"]


def blk_device(**params):
    return SimTop(VirtioBlkDevice(**params))


class BlkOnChipRam(wiring.Component):
    """A RAM disk: the device and an on-chip RAM of ``capacity`` sectors, connected."""

    def __init__(self, **params):
        self.device = VirtioBlkDevice(**params)
        self.ram = AxiRam(size=params["capacity"] * 512, data_width=params["data_width"],
                          addr_width=self.device.medium.signature.addr_width)
        members = dict(self.device.signature.members)
        del members["medium"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.device = self.device
        m.submodules.ram = self.ram
        connect(m, self.device.medium, self.ram.bus)
        for name in self.signature.members:
            connect(m, wiring.flipped(getattr(self, name)), getattr(self.device, name))
        return m


def blk_device_on_chip_ram(**params):
    return SimTop(BlkOnChipRam(**params))
