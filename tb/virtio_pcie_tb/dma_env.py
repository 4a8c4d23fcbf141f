# SPDX-License-Identifier: BSD-2-Clause
"""The DMA engine's test environment, shared by the DMA tests and the DMA benchmark.

::

      host memory ◄── RootComplex ══ DutPcieDevice ══ tx_req / rx_cpl ══ DmaTestbench
      (regions)       (cocotbext-pcie)  (latency, reorder,                  │   ▲
                                         RCB split, hooks)        DmaClient ▼   │ cfg
                                                                (requests, buffers)

:class:`DmaEnv` builds it inside a cocotb test: the clock, the root complex with a root port
whose bus range holds the DUT's requester ID (nothing is enumerated: the test drives ``cfg``
itself, as the configuration space would after the host set it up), host memory below and
above 4 GiB, the bridge with its host model, and one :class:`DmaClient` per client port.
"""

import logging

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import MemoryRegion
from cocotbext.pcie.core import RootComplex

from virtio_pcie.spec.pcie import PciCommand

from . import harness
from .models.dma_client import DmaClient, DmaSideband
from .models.pcie_bridge import DutPcieDevice

__all__ = ["DmaEnv", "CLOCK_NS", "REQUESTER_ID", "HIGH_BASE"]

CLOCK_NS = 4
#: The DUT's bus/device/function (bus 1, as behind the first root port).
REQUESTER_ID = {"bus": 1, "device": 0, "function": 0}
#: Host memory above 4 GiB, to exercise 4-DW (64-bit) requests.
HIGH_BASE = 0x0000_0012_3450_0000


class DmaEnv:
    """Everything around a ``DmaTestbench`` DUT; ``bridge_args`` go to :class:`DutPcieDevice`."""

    def __init__(self, dut, *, host_bytes=1 << 20, high_bytes=1 << 16, **bridge_args):
        params = harness.dut_params()
        self.dut = dut
        self.data_width = params["data_width"]
        self.buffer_bytes = params["buffer_bytes"]
        self.client_count = params.get("clients", 2)
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        logging.getLogger("cocotb.pcie").setLevel(logging.WARNING)

        self.rc = RootComplex()
        self.rc.max_payload_size = bridge_args.pop("rc_max_payload_size", 0)
        self.dev = DutPcieDevice(dut, dut.clk, dut.rst, data_width=self.data_width,
                                 **bridge_args)
        port = self.rc.make_port()
        port.sec_bus_num = port.sub_bus_num = REQUESTER_ID["bus"]
        # No BAR windows behind the port: every memory request of the DUT goes to the host.
        port.mem_base, port.mem_limit = 0x10_0000, 0
        port.prefetchable_mem_base, port.prefetchable_mem_limit = 0x10_0000, 0
        port.connect(self.dev)

        self.host_base, self.host = self.rc.alloc_region(host_bytes)
        self.high = MemoryRegion(high_bytes)
        self.rc.mem_address_space.register_region(self.high, HIGH_BASE)
        self.high_base = HIGH_BASE

        self.clients = [DmaClient(dut, k, dut.clk, dut.rst, data_width=self.data_width,
                                  buffer_bytes=self.buffer_bytes)
                        for k in range(self.client_count)]
        self.sideband = DmaSideband(dut)
        self.event_counts = {}
        cocotb.start_soon(self.sideband.watch_events(dut.clk, self.event_counts))
        self.cfg = {}
        self.set_cfg()

    # -- configuration -----------------------------------------------------------------------
    def set_cfg(self, *, bus_master=True, mps=1, mrrs=2, extended_tag=True, rcb_128=False,
                parity_error_response=True):
        """Drive ``cfg`` as the host left Command and Device Control (MPS/MRRS encoded)."""
        command = PciCommand.MEMORY_SPACE.value
        if bus_master:
            command |= PciCommand.BUS_MASTER.value
        if parity_error_response:
            command |= PciCommand.PARITY_ERROR_RESP.value
        pcie_id = (REQUESTER_ID["bus"] << 8) | (REQUESTER_ID["device"] << 3) | \
            REQUESTER_ID["function"]
        self.cfg = dict(pcie_id=pcie_id, command=command, max_payload_size=mps,
                        max_read_request_size=mrrs, extended_tag=int(extended_tag),
                        rcb_128=int(rcb_128))
        self.sideband.set_cfg(self.cfg)

    def set_bus_master(self, enabled):
        c = dict(self.cfg)
        bm = PciCommand.BUS_MASTER.value
        c["command"] = (c["command"] | bm) if enabled else (c["command"] & ~bm)
        self.cfg = c
        self.sideband.set_cfg(c)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        # the engine fills its tag pool after reset (one tag per cycle)
        await ClockCycles(self.dut.clk, 260)

    # -- host memory ---------------------------------------------------------------------------
    def region(self, addr):
        """(memory, offset) for a host address in either region."""
        if self.high_base <= addr < self.high_base + len(self.high):
            return self.high, addr - self.high_base
        return self.host, addr - self.host_base

    def host_write(self, addr, data):
        mem, off = self.region(addr)
        mem[off:off + len(data)] = bytes(data)

    def host_read(self, addr, length):
        mem, off = self.region(addr)
        return bytes(mem[off:off + length])

    # -- status ----------------------------------------------------------------------------------
    @property
    def idle(self):
        return self.sideband.idle

    def stats(self):
        return self.sideband.stats()

    async def cycles(self, n):
        await ClockCycles(self.dut.clk, n)

    async def wait_idle(self, timeout_cycles=100_000):
        for _ in range(timeout_cycles):
            if self.idle and all(c.outstanding == 0 for c in self.clients):
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError("the DMA engine did not become idle")
