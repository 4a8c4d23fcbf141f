# SPDX-License-Identifier: BSD-2-Clause
"""A Linux-faithful virtio-pci host driver model, layered as Linux is.

::

    VirtioBlkDriver / VirtioNetDriver     blk.py, net.py     drivers/block/virtio_blk.c, ...
      └ VirtioDevice (status, features)   core.py            drivers/virtio/virtio.c
          └ Virtqueue (split rings)       virtqueue.py       drivers/virtio/virtio_ring.c
          └ VirtioPciModern / Legacy      transport.py,      drivers/virtio/virtio_pci_*.c
                                          legacy.py
              └ PciFunction (BARs, MSI-X, pci.py             drivers/pci/ (pci_enable_device,
                 INTx) + HostMemory       memory.py          pci_alloc_irq_vectors, DMA API)
                  └ cocotbext-pcie RootComplex (TLPs to whatever device is attached)

Profiles (:mod:`.profiles`) select the register traffic of a Linux version. See
``docs/host-model.md``.
"""

from .blk import BlkRequest, VirtioBlkDriver
from .core import VirtioDevice, VirtioDriver, bind_driver
from .errors import LinuxBug, LinuxError, ProbeError, VirtqueueBroken
from .legacy import VirtioPciLegacy
from .memory import DmaBuffer, HostMemory
from .net import RxPacket, VirtioNetDriver
from .pci import (BridgeIntxLine, IntxLine, Irq, MmioWindow, PciFunction, SoftIntxLine,
                  find_pci_functions)
from .profiles import PROFILES, IrqMode, Profile, VectorPolicy, get_profile
from .transport import RegisterWindow, VirtioPciDevice, VirtioPciModern, VqInfo, virtio_pci_probe
from .virtqueue import Sg, Virtqueue, vring_size

__all__ = [
    "BlkRequest", "VirtioBlkDriver", "VirtioDevice", "VirtioDriver", "bind_driver",
    "LinuxBug", "LinuxError", "ProbeError", "VirtqueueBroken", "VirtioPciLegacy", "DmaBuffer",
    "HostMemory", "RxPacket", "VirtioNetDriver", "BridgeIntxLine", "IntxLine", "Irq",
    "MmioWindow", "PciFunction", "SoftIntxLine", "find_pci_functions", "PROFILES", "IrqMode",
    "Profile", "VectorPolicy", "get_profile", "RegisterWindow", "VirtioPciDevice",
    "VirtioPciModern", "VqInfo", "virtio_pci_probe", "Sg", "Virtqueue", "vring_size",
]
