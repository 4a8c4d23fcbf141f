# SPDX-License-Identifier: BSD-2-Clause
"""What the fuzzer's device workloads (:mod:`.blk`, :mod:`.net`) share.

A workload submits requests through the hostile driver, checks what comes back, and at the end of
a run's hostile part *drains*: kicks every live queue and waits, bounded, for what the device
still owes. A device that owes completions and makes no progress for :data:`STALL_NS` is a hang,
unless it has stopped (DEVICE_NEEDS_RESET, or DRIVER_OK gone), in which case nothing is owed.
"""

from cocotb.triggers import Timer
from cocotb.utils import get_sim_time

from virtio_pcie.spec.virtio import DeviceStatus

from .driver import RunFailure

__all__ = ["Workload", "STALL_NS"]

#: The tidy-up waits for the device to complete what it owes while it makes progress: no
#: completion for this long (four DMA completion timeouts) is a hang.
STALL_NS = 40_000

_DRIVER_OK = DeviceStatus.DRIVER_OK.value
_NEEDS_RESET = DeviceStatus.DEVICE_NEEDS_RESET.value


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
                   not driver.opaque)
        for q in driver.queues.values():
            if not q.broken:
                await driver.kick(q)
        last = get_sim_time("ns")
        seen = None
        while True:
            await self.reap(driver)
            waiting = self.owed(driver)
            if not waiting or not healthy:
                break
            # Nothing is submitted while draining: any change of the outstanding count is
            # progress.
            count = sum(len(q.outstanding) for q in driver.queues.values())
            if count != seen:
                seen, last = count, get_sim_time("ns")
            if get_sim_time("ns") - last > STALL_NS:
                status = await driver.check_status()
                if status & _NEEDS_RESET or not status & _DRIVER_OK:
                    break      # the device stopped (a DMA error on a ring): nothing is owed
                raise RunFailure("hang", f"{len(waiting)} {self.owed_name} not completed, none "
                                         f"for {STALL_NS} ns (status {status:#x}; "
                                         f"{await self.hang_detail(driver, waiting)})")
            await Timer(500, "ns")
