# SPDX-License-Identifier: BSD-2-Clause
"""Benchmarks: figures measured in clock cycles of cycle-accurate simulation.

Each benchmark is a module with a ``run_<name>(**options)`` generator of result dicts (one per
measured point, with at least ``bench``, ``width``, ``latency_ns``, ``clock_mhz`` and
``efficiency``, or for ``notify`` the notification counts) and a ``format_table(rows)`` for
people. :data:`BENCHES` lists them for the ``virtio-pcie bench`` command; :mod:`.report` turns
the rows into docs/performance.md and its plots.

* ``dma`` (:mod:`.dma`): the DMA engine alone, bytes per cycle per transfer size.
* ``blk`` (:mod:`.blk`): the whole device as virtio-blk, 4 KiB IOPS and latency at QD 1/8/32.
* ``net`` (:mod:`.net`): the whole device as virtio-net, frames per second each way.
* ``notify`` (:mod:`.blk`): doorbells and interrupts per request at QD 32, EVENT_IDX on/off.
"""

__all__ = ["BENCHES"]


def _dma():
    from . import dma
    return dma.run_dma, dma.format_table


def _blk():
    from . import blk
    return blk.run_blk, blk.format_table


def _net():
    from . import net
    return net.run_net, net.format_table


def _notify():
    from . import blk
    return blk.run_notify, blk.format_notify_table


#: name -> function returning (runner, table formatter); imported lazily (cocotb is heavy).
BENCHES = {
    "dma":    _dma,
    "blk":    _blk,
    "net":    _net,
    "notify": _notify,
}
