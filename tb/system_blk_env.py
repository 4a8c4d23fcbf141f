# SPDX-License-Identifier: BSD-2-Clause
"""Shared environment of tb/test_system_blk*.py: the designs, the interrupt set-ups, binding
the host model with the checks a clean probe must pass, and verified random workloads.

A probe error, a warning in the host model's kernel log, an unexpected status sequence or a
feature Linux would accept but did not, all fail :func:`bind`: on our device Linux must bind
without complaint.
"""

import os
import random

from cocotb.triggers import with_timeout

from virtio_pcie.spec.virtio import VirtioF
from virtio_pcie_tb.blk_workload import BlkWorkload
from virtio_pcie_tb.host import IrqMode, VirtioBlkDriver
from virtio_pcie_tb.models.disk_image import ShadowDisk
from virtio_pcie_tb.system import MAIN_DESIGNS, design_params

SECTOR = 512
SEED = int(os.environ.get("SYSBLK_SEED", "1"))

#: The main blk design, also the demo's (see :data:`~virtio_pcie_tb.system.MAIN_DESIGNS`).
MAIN = MAIN_DESIGNS["blk"]
#: Transitional (legacy I/O BAR as well), two request queues, a fixed 32 MiB.
TRANSITIONAL = design_params("blk", 128, transitional=True, queues=2)
#: Smoke builds of the other widths.
NARROW = design_params("blk", 64)
WIDE = design_params("blk", 256, queues=2)

#: Interrupt set-ups of Linux's vp_find_vqs ladder, with the profile that reaches them, as
#: "profile/mode" (:func:`irq_setup` splits them).
IRQ_SETUPS = [
    "linux-6.12/msix-each",
    "linux-7/msix-each",
    "linux-6.12/msix-shared",
    "linux-7/msix-shared-slow",
    "linux-7/msix-shared",
    "linux-6.12/intx",
    "linux-7/intx",
]


def irq_setup(setup):
    """``"linux-7/msix-shared"`` -> ``("linux-7", IrqMode.MSIX_SHARED)``."""
    profile, mode = setup.split("/")
    return profile, IrqMode(mode)


#: Host behaviours the bridge emulates, picked per test.
BRIDGES = [
    {},
    {"latency_ns": 500, "reorder": True, "rcb": 64},
    {"latency_ns": 1000, "rcb": 128, "max_read_bytes_in_flight": 4096},
]


def expected_status_trace(vdev):
    """0 (reset), ACKNOWLEDGE, DRIVER, FEATURES_OK (modern only), DRIVER_OK."""
    if vdev.transport.is_legacy:
        return [0, 0x1, 0x3, 0x7]
    return [0, 0x1, 0x3, 0xB, 0xF]


def check_probe(tb, vdev, blk):
    """What a clean probe looks like on our device: nothing logged above info, the status
    sequence, every offered feature accepted that Linux knows, the configuration as built."""
    pdev = vdev.pdev
    noisy = [(lvl, msg) for lvl, msg in pdev.dmesg if lvl not in ("info", "debug")]
    assert not noisy, f"the probe logged {noisy}"
    assert vdev.status_trace == expected_status_trace(vdev), vdev.status_trace
    offered = vdev.device_features
    if vdev.transport.is_legacy:
        # ANY_LAYOUT (27) is below VIRTIO_TRANSPORT_F_START and not in virtio_blk's table
        expect = offered & 0xFFFFFFFF & ~(1 << VirtioF.ANY_LAYOUT)
    else:
        expect = offered & ~(1 << VirtioF.ANY_LAYOUT)
    assert vdev.features == expect, \
        f"accepted {vdev.features:#x}, expected {expect:#x} of offered {offered:#x}"
    assert blk.capacity == tb.capacity
    assert blk.sg_elems == 126, blk.sg_elems
    assert blk.limits["logical_block_size"] == 512
    assert blk.limits["max_segment_size"] == 1 << 20
    want_queues = min(tb.params["queues"], blk.num_cpus)
    assert len(blk.queues) == want_queues, (len(blk.queues), want_queues)
    assert blk.serial == "virtio-pcie-blk"
    assert not blk.writeback, "the device is write-through: writeback must read 0"


async def bind(tb, *, profile="linux-6.12", irq_mode=None, force_legacy=False,
               transport_options=None, **driver_options):
    blk = VirtioBlkDriver(irq_mode=irq_mode, **driver_options)
    vdev = await with_timeout(tb.bind(blk, profile=profile, force_legacy=force_legacy,
                                      transport_options=transport_options), 4, "ms")
    if irq_mode is not None:
        assert vdev.transport.irq_mode == irq_mode, vdev.transport.irq_mode
    check_probe(tb, vdev, blk)
    return blk, vdev


def check_interrupts(vdev, blk):
    """Every queue that completed work was interrupted; no message for a vector that is not
    allocated; no line Linux would give up on.

    An interrupt that finds no work (``IRQ_NONE``) is normal now and then: with a vector shared
    by several queues, or when the handler already took the entries an interrupt still in
    flight announces. Linux only disables a line when nearly all its interrupts are unhandled
    ("nobody cared"); we require at most a quarter.
    """
    pdev = vdev.pdev
    assert pdev.stray_msix == 0
    for q in blk.queues:
        assert not q.vq.broken, q.vq.broken_reason
        if q.vq.stats.used:
            assert q.vq.stats.interrupts, f"{q.vq.name} completed work without an interrupt"
    irqs = [pdev.irq] if vdev.transport.irq_mode == IrqMode.INTX else pdev.msix_vectors
    assert any(irq.count for irq in irqs), "no interrupt at all"
    for irq in irqs:
        assert not irq.disabled and irq.unhandled * 4 <= irq.count, \
            f"{irq.name}: {irq.unhandled} of {irq.count} interrupts unhandled"


async def run_mix(tb, blk, *, seed, requests, qd, mix=None, timeout_ms=20):
    shadow = ShadowDisk(tb.image)
    work = BlkWorkload(blk, shadow, rng=random.Random(seed), mix=mix,
                       serial="virtio-pcie-blk")
    await with_timeout(work.run(requests, qd=qd), timeout_ms, "ms")
    work.check(tb.image.buffer)
    tb.check_bridge()
    return work
