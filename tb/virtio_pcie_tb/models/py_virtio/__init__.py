# SPDX-License-Identifier: BSD-2-Clause
"""A small virtio-pci device in pure Python, for testing the host model (and for comparison with
the RTL): :class:`PyVirtioFunction` with a :class:`RamDisk` or :class:`NetBackend`.

Typical use, next to (or instead of) the RTL on the same root complex::

    fn = py_virtio_function(RamDisk(sectors=4096), interface="modern")
    rc.make_port().connect(Device(fn))
    await rc.enumerate()
"""

from .blk import RamDisk
from .function import PyVirtioFunction
from .layout import (BarSpec, CapSpec, DeviceLayout, Region, legacy_layout, modern_layout,
                     transitional_layout)
from .net import NetBackend
from .queue import Chain, DeviceQueue

__all__ = ["RamDisk", "NetBackend", "PyVirtioFunction", "py_virtio_function", "BarSpec",
           "CapSpec", "DeviceLayout", "Region", "modern_layout", "legacy_layout",
           "transitional_layout", "Chain", "DeviceQueue"]


def py_virtio_function(backend, *, interface="modern", msix_vectors=None, layout=None,
                       multiplier=4, **kwargs):
    """A :class:`PyVirtioFunction` for ``backend`` with a standard layout.

    ``interface`` is "modern" (IDs 0x1040+type), "transitional" (IDs 0x1000+, both interfaces)
    or "legacy" (transitional IDs, legacy I/O BAR only). ``msix_vectors`` defaults to one per
    queue plus one for configuration changes; 0 removes MSI-X.
    """
    nq = len(backend.queue_sizes)
    vectors = nq + 1 if msix_vectors is None else msix_vectors
    cfg_len = len(backend.config_bytes())
    if layout is None:
        if interface == "modern":
            layout = modern_layout(num_queues=nq, msix_vectors=vectors,
                                   device_config_len=cfg_len, multiplier=multiplier)
        elif interface == "transitional":
            layout = transitional_layout(num_queues=nq, msix_vectors=vectors,
                                         device_config_len=cfg_len, multiplier=multiplier)
        elif interface == "legacy":
            layout = legacy_layout(msix_vectors=vectors, device_config_len=cfg_len)
        else:
            raise ValueError(f"interface must be modern, transitional or legacy, "
                             f"not {interface!r}")
    transitional = interface in ("transitional", "legacy")
    return PyVirtioFunction(backend, layout, transitional=transitional, **kwargs)
