# SPDX-License-Identifier: BSD-2-Clause
"""The virtio transport as a simulation top level (see :mod:`.simulation_top`)."""

from virtio_pcie.virtio.transport import VirtioTransport

from .simulation_top import SimulationTop

__all__ = ["TransportTop"]


def TransportTop(**params):
    """:class:`~virtio_pcie.virtio.transport.VirtioTransport` with ``params``, wrapped so that
    its always-ready streams (``queues.notify``, ``queues.queue_reset_done``) are plain ports."""
    return SimulationTop(VirtioTransport(**params))
