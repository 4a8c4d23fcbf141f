# SPDX-License-Identifier: BSD-2-Clause
"""The core that board builds and the generator put behind the hard IP.

Until ``virtio_pcie.top.VirtioPcieDevice`` exists this is the bring-up
:class:`~.standin.CoreStandIn` (virtio capabilities, no queues) with its plan; when it lands,
:func:`make_core` returns it instead (see the marked line) and :func:`hard_ip_plan` comes from its
``FunctionLayout``.
"""

from .standin import CoreStandIn, standin_plan

__all__ = ["DEVICES", "make_core", "hard_ip_plan", "core_is_stand_in"]

DEVICES = ("blk", "net")


def _top():
    try:
        from ..top import VirtioPcieDevice      # lands with the lead's integration
    except ImportError:
        return None
    return VirtioPcieDevice


def core_is_stand_in():
    return _top() is None


def make_core(*, device, data_width, config_mode="ext", legacy=False):
    """The device core with TLP streams of ``data_width`` bits."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    top = _top()
    if top is not None:
        # The one line to adjust to the top's final parameters:
        return top(device=device, data_width=data_width, config_mode=config_mode,
                   transitional=legacy)
    if legacy:
        raise ValueError("the bring-up stand-in has no legacy interface; --legacy needs "
                         "virtio_pcie.top.VirtioPcieDevice")
    return CoreStandIn(data_width=data_width)


def hard_ip_plan(*, device, legacy=False):
    """What the hard IP must be configured with (``FunctionLayout.hard_ip_plan()``)."""
    if core_is_stand_in():
        return standin_plan(device)
    core = make_core(device=device, data_width=64, legacy=legacy)
    layout = getattr(core, "layout", None)
    if layout is not None and hasattr(layout, "hard_ip_plan"):
        return layout.hard_ip_plan()
    return standin_plan(device)
