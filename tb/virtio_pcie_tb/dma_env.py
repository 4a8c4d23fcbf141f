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

__all__ = ["DmaEnv", "TlpRules", "CLOCK_NS", "REQUESTER_ID", "HIGH_BASE"]

CLOCK_NS = 4
#: The DUT's bus/device/function (bus 1, as behind the first root port).
REQUESTER_ID = {"bus": 1, "device": 0, "function": 0}
#: Host memory from 4 GiB up, to exercise 4-DW (64-bit) requests.
HIGH_BASE = 1 << 32


class DmaEnv:
    """Everything around a ``DmaTestbench`` DUT; ``bridge_args`` go to :class:`DutPcieDevice`."""

    def __init__(self, dut, *, host_bytes=1 << 20, high_bytes=1 << 17, **bridge_args):
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
        engine = params.get("engine", {})
        self.rules = TlpRules(self, engine.get("cpl_buffer_bytes", 16384),
                              engine.get("completion_timeout_cycles", 12_500_000))

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
        from cocotb.utils import get_sim_time
        self.rules.bme_cleared_at = None if enabled else get_sim_time("ns")
        c = dict(self.cfg)
        bm = PciCommand.BUS_MASTER.value
        c["command"] = (c["command"] | bm) if enabled else (c["command"] & ~bm)
        self.cfg = c
        self.sideband.set_cfg(c)

    async def reset(self):
        """Reset the DUT; the statistics counters restart, and so does the bookkeeping."""
        self.rules.outstanding.clear()
        self.rules.mrd.clear()
        self.rules.mwr.clear()
        self.rules.completions = 0
        for c in self.clients:
            c.submitted = {"rd": 0, "wr": 0}
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        # (The engine takes requests once it has filled its tag pool, one tag per cycle.)

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

    def inject_completion(self, cpl):
        """Send a completion to the DUT now, past the host model (a stray or late one)."""
        for monitor in self.dev.rx_monitors:
            monitor(cpl)
        self.dev.rx_cpl.send_nowait(cpl)

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


class TlpRules:
    """Checks every TLP the DUT sends against the PCIe rules for MRd / MWr requests.

    Max_Read_Request_Size / Max_Payload_Size, no 4 KiB crossing (PCIe Base 4.0 §2.2.7), 3-DW
    headers below 4 GiB (§2.2.4.1), byte-enable rules (§2.2.5), requester ID, 5-bit tags unless
    extended tags are on, nothing sent while Bus Master Enable is clear. It also follows the
    completion data outstanding (as the bridge sees it) to check the engine's completion
    buffer limit. Violations are collected in :attr:`errors`.
    """

    def __init__(self, env, cpl_buffer_bytes=16384, timeout_cycles=12_500_000):
        self.env = env
        # A read older than this has been timed out by the engine: its space is free again.
        self.timeout_ns = (timeout_cycles - 8) * CLOCK_NS
        self.errors = []
        self.mrd = []               # (time ns, tag, addr, bytes)
        self.mwr = []               # (time ns, addr, bytes)
        self.cpl_buffer_bytes = cpl_buffer_bytes
        self.outstanding = {}       # tag -> (dword-rounded bytes, time issued)
        self.max_outstanding = 0
        self.bme_cleared_at = None  # sim time (ns) Bus Master Enable was last cleared
        self.completions = 0        # completion TLPs delivered to the DUT
        env.dev.tx_monitors.append(self._tx)
        env.dev.rx_monitors.append(self._rx)

    def _error(self, message, tlp):
        self.errors.append(f"{message}: {tlp!r}")

    def _tx(self, tlp):
        from cocotb.utils import get_sim_time

        from virtio_pcie.spec.pcie import FmtType, payload_size_bytes
        cfg = self.env.cfg
        ft = tlp.fmt_type
        is_rd = ft in (FmtType.MRD32.value, FmtType.MRD64.value)
        is_wr = ft in (FmtType.MWR32.value, FmtType.MWR64.value)
        if not (is_rd or is_wr):
            self._error("unexpected TLP type", tlp)
            return
        now = get_sim_time("ns")
        # A TLP already started when Bus Master Enable was cleared may finish: allow the
        # longest TLP's beats and a few cycles of pipeline.
        grace = CLOCK_NS * (4096 // (self.env.data_width // 8) + 8)
        if self.bme_cleared_at is not None and now - self.bme_cleared_at > grace:
            self._error(f"request sent {now - self.bme_cleared_at} ns after Bus Master Enable "
                        f"was cleared", tlp)
        n_dw = tlp.length_dw
        fbe, lbe = tlp["req.first_be"], tlp["req.last_be"]
        addr = tlp.address
        if n_dw == 1:
            if lbe != 0 or fbe == 0:
                self._error("bad byte enables for a 1-DW request", tlp)
            first = (fbe & -fbe).bit_length() - 1
            nbytes = fbe.bit_length() - first
            if fbe != ((1 << nbytes) - 1) << first:
                self._error("non-contiguous byte enables", tlp)
        else:
            first = (fbe & -fbe).bit_length() - 1
            if fbe == 0 or lbe == 0 or fbe >> first != (0xF >> first) or \
                    lbe & (lbe + 1):
                self._error("bad byte enables for a multi-DW request", tlp)
            nbytes = 4 * n_dw - first - (4 - lbe.bit_length())
        start = addr + first
        if tlp["req.requester_id"] != self.env.cfg["pcie_id"]:
            self._error("wrong requester ID", tlp)
        if (start < 1 << 32) != (not tlp.is_4dw):
            self._error("4-DW header iff the address is 4 GiB or more", tlp)
        if (addr & 0xFFF) + 4 * n_dw > 4096:
            self._error("crosses a 4 KiB boundary", tlp)
        if is_rd:
            if nbytes > payload_size_bytes(min(cfg["max_read_request_size"], 5)):
                self._error("longer than Max_Read_Request_Size", tlp)
            if not cfg["extended_tag"] and tlp.tag >= 32:
                self._error("8-bit tag without extended tags", tlp)
            self.mrd.append((now, tlp.tag, start, nbytes))
            live = {tag: (n, t) for tag, (n, t) in self.outstanding.items()
                    if now - t < self.timeout_ns}
            if tlp.tag in live:
                self._error("tag reused while a read with it is outstanding", tlp)
            self.outstanding[tlp.tag] = (4 * n_dw, now)
            live[tlp.tag] = (4 * n_dw, now)
            total = sum(n for n, _t in live.values())
            self.max_outstanding = max(self.max_outstanding, total)
            if total > self.cpl_buffer_bytes:
                self._error(f"{total} bytes of completions outstanding", tlp)
        else:
            if nbytes > payload_size_bytes(min(cfg["max_payload_size"], 5)):
                self._error("longer than Max_Payload_Size", tlp)
            if len(tlp.payload) != 4 * n_dw:
                self._error("payload does not match Length", tlp)
            self.mwr.append((now, start, nbytes))

    def _rx(self, tlp):
        if not tlp.is_completion:
            return
        self.completions += 1
        from virtio_pcie.spec.pcie import CplStatus
        done = (tlp["cpl.status"] != CplStatus.SC.value or not tlp.payload or
                (tlp["cpl.byte_count"] or 4096) <= len(tlp.payload) -
                (tlp["cpl.lower_address"] & 3))
        if done:
            self.outstanding.pop(tlp.tag, None)
