# SPDX-License-Identifier: BSD-2-Clause
"""Testbench assembly for the virtqueue engine: clock, models, and helpers shared by the tests
and the notification benchmark.

::

    VirtqTransport ══ control, restore ══╗        ╔══ request[p], completion ══ VirtqDevicePorts
                                  ┌──────╨────────╨──┐
                                  │ VirtqueueEngine  │
                                  └────────╥─────────┘
                                           ║ dma
                                   DmaClientModel ── DmaMemory ── SplitRing(s)
"""

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from .harness import dut_params
from .models.dma_client_model import DmaClientModel
from .models.dma_memory import DmaMemory
from .models.virtq_ports import VirtqDevicePorts, VirtqTransport
from .models.virtq_ring import SplitRing
from .models.virtqueue_model import VirtqueueModel

__all__ = ["EngineTB", "CLOCK_NS", "engine_ports"]

CLOCK_NS = 4


def engine_ports(params):
    """(number of request ports, pulled ports) of an engine's parameters."""
    qc = params["queue_count"]
    port_of_queue = params.get("port_of_queue") or [0] * qc
    return max(port_of_queue) + 1, tuple(params.get("pulled_ports", ()))


class EngineTB:
    """The engine with its DMA engine, host memory, transport and device models."""

    def __init__(self, dut, *, seed=0, **dma_args):
        self.dut = dut
        self.params = dut_params()
        self.queue_count = self.params["queue_count"]
        self.data_width = self.params["data_width"]
        self.max_chain = self.params.get("max_chain", 64)
        self.max_indirect = self.params.get("max_indirect") or self.max_chain
        self.port_of_queue = self.params.get("port_of_queue") or [0] * self.queue_count
        self.ports, self.pulled = engine_ports(self.params)
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.memory = DmaMemory()
        self.dma = DmaClientModel(dut, "dma", dut.clk, data_width=self.data_width,
                                  memory=self.memory, seed=seed, clock_period_ns=CLOCK_NS,
                                  **dma_args)
        self.transport = VirtqTransport(dut, dut.clk, queue_count=self.queue_count)
        self.device = VirtqDevicePorts(dut, dut.clk, queue_count=self.queue_count,
                                       ports=self.ports, pulled_ports=self.pulled)
        self.model = VirtqueueModel(max_chain=self.max_chain, max_indirect=self.max_indirect)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def pushed_queues(self):
        return [q for q in range(self.queue_count) if self.port_of_queue[q] not in self.pulled]

    def pulled_queues(self):
        return [q for q in range(self.queue_count) if self.port_of_queue[q] in self.pulled]

    def new_ring(self, size, start=0):
        return SplitRing(self.memory, size, start=start)

    async def enable(self, queue, ring, *, restore=True):
        """Configure ``queue`` on ``ring`` (and set its indices to the ring's start)."""
        self.transport.enable_queue(queue, size=ring.size, desc=ring.desc, driver=ring.avail,
                                    device=ring.used)
        if restore and ring.start:
            self.transport.restore(queue, avail_idx=ring.start, used_idx=ring.start)
        await self.transport.settle()

    async def wait_quiet(self, *, cycles=200, timeout_us=2000, until=None):
        """Wait until ``until()`` (if given) holds and the engine, its DMA and the device's
        completion stream have been quiet for ``cycles`` cycles."""
        quiet = 0
        last = None
        waited = 0
        step = 10
        while True:
            await ClockCycles(self.dut.clk, step)
            waited += step * CLOCK_NS
            state = (tuple(self.transport.counters().values()), len(self.dma.log),
                     self.transport.idle, self.dma.idle, self.device.completion.empty())
            busy = not (self.transport.idle and self.dma.idle and
                        self.device.completion.empty())
            if state == last and not busy and (until is None or until()):
                quiet += step
                if quiet >= cycles:
                    return
            else:
                quiet = 0
            last = state
            if waited > timeout_us * 1000:
                raise TimeoutError(f"engine not quiet after {timeout_us} us "
                                   f"(counters {self.transport.counters()})")

