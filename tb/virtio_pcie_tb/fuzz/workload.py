# SPDX-License-Identifier: BSD-2-Clause
"""What the fuzzer's device workloads (:mod:`.blk`, :mod:`.net`) share.

A workload submits requests through the hostile driver, checks what comes back, and at the end of
a run's hostile part *drains*: kicks every live queue and waits, bounded, for what the device
still owes. A device that owes completions and makes no progress for :func:`stall_bound_ns` is a
hang, unless it has stopped (DEVICE_NEEDS_RESET, FAILED set, or DRIVER_OK gone), in which case
nothing is owed.
"""

from cocotb.triggers import Timer
from cocotb.utils import get_sim_time

from virtio_pcie.spec.virtio import DeviceStatus

from .driver import RunFailure

__all__ = ["Workload", "STALL_NS", "HOP_OVERHEAD_NS", "stall_bound_ns"]

#: The tidy-up waits for the device to complete what it owes while it makes progress: no
#: completion for this long (four DMA completion timeouts), beyond the time the device may
#: rightly spend walking malformed chains (:func:`stall_bound_ns`), is a hang.
STALL_NS = 40_000

#: What one descriptor read costs the ring walker beyond the host's completion latency: the
#: request's trip through the DMA engine and the bridge, and a window of 64 descriptors
#: (1 KiB) coming back, split at the read completion boundary. Measured: 0.27 us at 128 bits
#: (net seed 701 run 5784); the margin covers 64-bit beats and reordered completions.
HOP_OVERHEAD_NS = 1_000


def stall_bound_ns(*, queues, max_chain, latency_ns):
    """How long a device owing completions may go without completing any before it is a hang.

    The engine walks one chain at a time, one descriptor read after the other (each
    descriptor names the next). A hostile chain (a loop, or a chain longer than the engine
    takes) is walked until the engine's ``max_chain`` limit fails it; when its descriptors lie
    in different windows of the table, every step is a host round trip. Each of ``queues``
    queues can hold one such chain before its failure stops the queue, and the queue the
    tidy-up waits on can be behind all of them: net seed 701 run 5784's control-queue loop
    alternated between two windows, 64 steps of 1.27 us each at 1 us latency, while 28
    transmit chains waited behind it. That is bounded work, not a hang; the bound is that
    work plus :data:`STALL_NS`."""
    return STALL_NS + queues * max_chain * (latency_ns + HOP_OVERHEAD_NS)

_DRIVER_OK = DeviceStatus.DRIVER_OK.value
_NEEDS_RESET = DeviceStatus.DEVICE_NEEDS_RESET.value
_FAILED = DeviceStatus.FAILED.value


class Workload:
    """Base of the device workloads. A subclass provides ``reap(driver)`` (take the device's
    completions), :meth:`owed` and, optionally, :meth:`hang_detail`."""

    #: What :meth:`owed` returns, for the hang message.
    owed_name = "requests"

    def replaced(self, old, new):
        """The driver replaced queue ``old`` by ``new`` (nothing to carry over by default)."""

    async def poll_quiet(self, driver):
        await self.reap(driver)

    def owed(self, driver):
        """The chains the device must still complete."""
        raise NotImplementedError

    async def hang_detail(self, driver, waiting):
        """More words for a hang report."""
        return await driver.describe_queues()

    async def drain(self, driver):
        """Kick every live queue and wait (bounded) for what the device must complete."""
        status = await driver.check_status()
        healthy = (driver.driver_ok and not driver.needs_reset and status & _DRIVER_OK and
                   not status & _FAILED and not driver.opaque)
        for q in driver.queues.values():
            if not q.broken:
                await driver.kick(q)
        last = get_sim_time("ns")
        seen = None
        bound = stall_bound_ns(queues=len(driver.queues), max_chain=driver.ctx.max_chain,
                               latency_ns=driver.ctx.bridge.latency_ns)
        while True:
            await self.reap(driver)
            waiting = self.owed(driver)
            if not waiting or not healthy:
                break
            # Nothing is submitted while draining: any change of the outstanding count is
            # progress.
            count = sum(len(q.outstanding) for q in driver.queues.values())
            if count != seen:
                seen, last, checked = count, get_sim_time("ns"), False
            stalled = get_sim_time("ns") - last
            # A device that stopped is seen after STALL_NS, as it was before the walk allowance
            # existed (most stalls are that: it would cost every such run the whole bound); one
            # still running is waited for until the bound.
            if (stalled > STALL_NS and not checked) or stalled > bound:
                checked = True
                status = await driver.check_status()
                if status & (_NEEDS_RESET | _FAILED) or not status & _DRIVER_OK:
                    # The device stopped (a DMA error on a ring), or the driver gave up on it
                    # (FAILED, which a random write may have set: blk seed 802 run 8844):
                    # nothing is owed.
                    break
                if stalled > bound:
                    raise RunFailure("hang", f"{len(waiting)} {self.owed_name} not completed, "
                                             f"none for {bound} ns (status {status:#x}; "
                                             f"{await self.hang_detail(driver, waiting)})")
            await Timer(500, "ns")
