# SPDX-License-Identifier: BSD-2-Clause
"""The device core that board builds and the generator put behind a hard IP.

It is :class:`~virtio_pcie.top.VirtioPcieDevice` in ``"ext"`` configuration mode: the hard IP
owns the header, the BARs and its own capabilities, and forwards configuration requests from
``ext_cap_pointer`` up, where the function places the virtio capabilities. The pointer is the
lowest a 7-series core forwards from (``EXT_CFG_CAP_PTR`` = 0x2A, byte 0xA8), which leaves the
88 bytes the five virtio capabilities need (see ``docs/boards.md``).

The hard-IP plan (IDs, BARs, MSI-X table and PBA, forwarding pointer) is always read from the
layout of the core that is actually built (``VirtioPcieDevice.layout.hard_ip_plan()``), never
from a second copy.
"""

from ..adapters.xilinx7_core import EXT_CFG_CAP_PTR_MIN
from ..top import DEVICES, VirtioPcieDevice

__all__ = ["DEVICES", "EXT_CAP_POINTER", "core_params", "make_core"]

#: First configuration byte the hard IP forwards to the function (7-series: the lowest legal
#: ``EXT_CFG_CAP_PTR``, right after its MSI-X capability).
EXT_CAP_POINTER = EXT_CFG_CAP_PTR_MIN * 4


def core_params(*, device, data_width, legacy=False, onchip_sectors=None, **extra):
    """Keyword arguments of the :class:`~virtio_pcie.top.VirtioPcieDevice` behind a hard IP.

    Parameters
    ----------
    device : "blk" or "net"
    data_width : int
        TLP data path width, in bits (the hard IP's interface width).
    legacy : bool
        A transitional device (legacy I/O BAR 0 as well as the modern interface).
    onchip_sectors : int or None
        blk only: keep the disk in on-chip RAM of this many 512-byte sectors (no ``medium``
        port); ``None`` gives the ``medium`` AXI4 master and a ``capacity`` input.
    **extra
        Further :class:`~virtio_pcie.top.VirtioPcieDevice` parameters (``queues``, ...).
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if not isinstance(legacy, bool):
        raise ValueError(f"legacy must be True or False, not {legacy!r}")
    for fixed in ("config_mode", "ext_cap_pointer"):
        if fixed in extra:
            raise ValueError(f"{fixed} is fixed by the hard IP; do not pass {fixed}="
                             f"{extra[fixed]!r}")
    params = {"device": device, "data_width": data_width, "transitional": legacy,
              "config_mode": "ext", "ext_cap_pointer": EXT_CAP_POINTER}
    if onchip_sectors is not None:
        if device != "blk":
            raise ValueError(f"onchip_sectors is for the blk device, not {device!r}")
        if not isinstance(onchip_sectors, int) or onchip_sectors < 1:
            raise ValueError(f"onchip_sectors must be a positive number of sectors, not "
                             f"{onchip_sectors!r}")
        params.update(capacity=onchip_sectors, onchip_medium=True)
    params.update(extra)
    return params


def make_core(**kwargs):
    """The :class:`~virtio_pcie.top.VirtioPcieDevice` of :func:`core_params`."""
    return VirtioPcieDevice(**core_params(**kwargs))
