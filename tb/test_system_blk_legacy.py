# SPDX-License-Identifier: BSD-2-Clause
"""virtio-blk end to end on a transitional device: the legacy (virtio 0.9.5) interface as
Linux's ``virtio_pci_legacy`` drives it, and the modern one on the same function.

::

    VirtioBlkDriver ─► RootComplex ── bridge ══ VirtioPcieDevice(blk, transitional) ══ AxiRam
    (force_legacy:                               I/O BAR0: legacy header, QUEUE_PFN rings,
     I/O BAR, 32 feature bits,                   byte-wide config after the MSI-X vectors;
     no FEATURES_OK)                             memory BAR: the modern structures

The design is :data:`~system_blk_env.TRANSITIONAL` (128-bit, two request queues, 32 MiB).
Every interrupt set-up of Linux's ladder, as Linux 6.12 and 7 drive it, moves a random mix of
every request type, verified byte for byte against a shadow disk.
"""

import random

import cocotb
import pytest

from system_blk_env import (BRIDGES, IRQ_SETUPS, SEED, TRANSITIONAL, bind, check_interrupts,
                            irq_setup, run_mix)
from virtio_pcie.spec.virtio import (VIRTIO_PCI_TRANSITIONAL_DEVICE_ID, VirtioDeviceId,
                                     VirtioF)
from virtio_pcie_tb.system import SystemTB, build_system


@cocotb.test()
@cocotb.parametrize(setup=IRQ_SETUPS)
async def run_legacy_mix(dut, setup):
    """The legacy interface in each interrupt set-up: probe, then a verified random mix."""
    profile, mode = irq_setup(setup)
    index = IRQ_SETUPS.index(setup)
    rng = random.Random(SEED * 2000 + index)
    tb = SystemTB(dut, bridge_options=BRIDGES[(index + 1) % len(BRIDGES)], seed=index)
    await tb.reset()
    blk, vdev = await bind(tb, profile=profile, irq_mode=mode, force_legacy=True)
    assert vdev.transport.is_legacy
    assert not vdev.features >> 32, "a legacy driver sees 32 feature bits"
    assert vdev.pdev.device == VIRTIO_PCI_TRANSITIONAL_DEVICE_ID[VirtioDeviceId.BLOCK]
    qd = rng.choice([4, 16, 32])
    work = await run_mix(tb, blk, seed=rng.getrandbits(32), requests=50, qd=qd)
    assert len(work.stats.by_queue) == len(blk.queues), work.stats.by_queue
    check_interrupts(vdev, blk)


@cocotb.test()
@cocotb.parametrize(profile=["linux-6.12", "linux-7"])
async def run_modern_on_transitional(dut, profile):
    """A modern driver on the transitional function uses the modern interface (Linux tries it
    first), sees ANY_LAYOUT offered and moves data."""
    tb = SystemTB(dut, bridge_options=BRIDGES[1])
    await tb.reset()
    blk, vdev = await bind(tb, profile=profile)
    assert not vdev.transport.is_legacy
    assert vdev.device_features >> VirtioF.ANY_LAYOUT & 1, \
        "a transitional device must offer ANY_LAYOUT (virtio 1.2 §6.3)"
    await run_mix(tb, blk, seed=SEED + 3, requests=40, qd=16)
    check_interrupts(vdev, blk)


# -- pytest launchers --------------------------------------------------------------------------

@pytest.mark.system
def test_blk_legacy(simulate):
    simulate(build_system(TRANSITIONAL), "test_system_blk_legacy")
