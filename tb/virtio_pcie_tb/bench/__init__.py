# SPDX-License-Identifier: BSD-2-Clause
"""Benchmarks: figures measured in clock cycles of cycle-accurate simulation.

Each benchmark is a module with a ``run_<name>(**options)`` generator of result dicts (one per
measured point, with at least ``bench``, ``width``, ``latency_ns``, ``clock_mhz`` and
``efficiency``) and a ``format_table(rows)`` for people. :data:`BENCHES` lists them for the
``virtio-pcie bench`` command.
"""

__all__ = ["BENCHES"]


def _dma():
    from . import dma
    return dma.run_dma, dma.format_table


#: name -> function returning (runner, table formatter); imported lazily (cocotb is heavy).
BENCHES = {
    "dma": _dma,
}
