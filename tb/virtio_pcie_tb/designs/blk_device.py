# SPDX-License-Identifier: BSD-2-Clause
"""Simulation tops for the virtio-blk back-end alone (the device-level tests).

:class:`~virtio_pcie.devices.blk.VirtioBlkDevice` is simulated as it is (the testbench serves
its medium port with a RAM model). :class:`BlkOnChipRam` is the device with an on-chip
:class:`~virtio_pcie.devices.axi_ram.AxiRam` as its medium: the RAM disk a small board builds.
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import connect, flipped

from virtio_pcie.devices.axi_ram import AxiRam
from virtio_pcie.devices.blk import VirtioBlkDevice

__all__ = ["BlkOnChipRam"]


class BlkOnChipRam(wiring.Component):
    """A RAM disk: :class:`VirtioBlkDevice` (``capacity`` sectors) on an on-chip RAM.

    Takes the device's parameters (``capacity`` must be given) and has the device's ports but
    ``medium``.
    """

    def __init__(self, **params):
        if not isinstance(params.get("capacity"), int):
            raise ValueError(f"an on-chip RAM disk needs a capacity in sectors, "
                             f"not {params.get('capacity')!r}")
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
            connect(m, flipped(getattr(self, name)), getattr(self.device, name))
        return m
