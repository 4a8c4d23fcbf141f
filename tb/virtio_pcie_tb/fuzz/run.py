# SPDX-License-Identifier: BSD-2-Clause
"""One fuzz process: many seeded runs against one simulated device.

::

    FuzzContext ── SystemTB (clock, RootComplex, bridge, disk image / loopback MAC)
       │  monitor: LinkMonitor on the bridge's TLP hooks (write legality, bus mastering, MSI-X,
       │           completions)          faults: FaultInjector (the bridge's completion_hook)
       │  memory: FuzzMemory (host memory below and above 4 GiB)
       │  modern / legacy: the host model's transports, probed once
       └─ run_one(seed):  power-on reset + configuration restore
                           → HostileDriver: bring-up, random actions, tidy   (workload checks)
                           → recovery: device reset, a clean Linux-faithful driver binds and does
                             verified I/O, removes itself
                           → RunResult (hangs, DMA violations, corruptions, errors reported, ...)

Every run starts from a power-on reset of the device (the root complex's enumeration is replayed
as the configuration writes it made), so a run depends on its seed alone and can be replayed by
itself (``virtio-pcie fuzz --first K --runs 1 --seed S --waves``).
"""

import dataclasses
import logging
import os
import random
import time
import traceback

import cocotb
from cocotb.triggers import ClockCycles, SimTimeoutError, Timer, with_timeout
from cocotb.utils import get_sim_time

from virtio_pcie.spec.pcie import (CAP_POINTER_MIN, CONFIG_SPACE_SIZE, LEGACY_CONFIG_SPACE_SIZE,
                                   CapId, MsixCap, MsixMessageControl, MsixTableEntry,
                                   MsixVectorControl, PciCommand, PciType0Header, PmCap,
                                   byte_offset, byte_size)
from virtio_pcie.spec.virtio import (VirtioNotificationData, VirtioPciCap, VirtioPciCapType,
                                     VirtioPciCfgCap, notification_bytes)

from ..host import PciFunction, VirtioDevice
from ..host.pci import Resource
from ..host.profiles import get_profile
from ..host.legacy import VirtioPciLegacy
from ..host.transport import VirtioPciModern
from ..system import SystemTB
from .driver import ACTIONS, HostileDriver, RESET_BOUND_NS, RunFailure
from .faults import FaultInjector
from .memory import FuzzMemory
from .monitors import LinkMonitor

__all__ = ["FuzzContext", "RunResult", "run_seed", "RUN_BOUND_NS"]

#: A run (hostile part and recovery) must finish within this much simulated time.
RUN_BOUND_NS = 2_000_000

_CMD = byte_offset(PciType0Header, "command")
_MSIX_CTRL = byte_offset(MsixCap, "message_control")
_ENTRY = byte_size(MsixTableEntry)
_ENTRY_ADDR = byte_offset(MsixTableEntry, "msg_addr")
_ENTRY_UPPER = byte_offset(MsixTableEntry, "msg_upper_addr")
_ENTRY_DATA = byte_offset(MsixTableEntry, "msg_data")
_ENTRY_CONTROL = byte_offset(MsixTableEntry, "vector_control")
_VECTOR_MASK = 1 << MsixVectorControl["mask"].offset
_MSIX_ENABLE_BIT = MsixMessageControl["enable"].offset
_MSIX_MASKALL_BIT = MsixMessageControl["function_mask"].offset
_MSIX_CTRL_BITS = (1 << _MSIX_MASKALL_BIT) | (1 << _MSIX_ENABLE_BIT)
_PM_CTRL = byte_offset(PmCap, "pmcsr")
#: Header registers a random configuration write leaves alone (the BARs and the expansion ROM:
#: moving them would only lose the device, not test it).
_BARS = range(byte_offset(PciType0Header, "bar"), byte_offset(PciType0Header, "cardbus_cis"))
_ROM = byte_offset(PciType0Header, "expansion_rom")

#: Configuration dwords the root complex's enumeration leaves set up, restored after each
#: power-on reset: the BARs, then the command register.
_HEADER_RESTORE = [byte_offset(PciType0Header, "bar") + 4 * i for i in range(6)] + \
    [byte_offset(PciType0Header, "cache_line_size"), byte_offset(PciType0Header, "interrupt_line")]


def run_seed(seed, index):
    """The seed of run ``index`` of a campaign with seed ``seed`` (independent of other runs)."""
    return (seed * 1_000_003 + index * 7919 + 12345) & 0xFFFF_FFFF_FFFF


class RunResult:
    def __init__(self, index, seed):
        self.index = index
        self.seed = seed
        self.hangs = []
        self.dma_violations = []
        self.corruptions = []
        self.protocol = []
        self.fuzzer_errors = []
        self.errors_reported = 0
        self.recovered = False
        self.stats = {}
        self.sim_ns = 0

    @property
    def failed(self):
        return bool(self.hangs or self.dma_violations or self.corruptions or self.protocol or
                    self.fuzzer_errors or not self.recovered)

    def as_dict(self):
        return {"run": self.index, "seed": self.seed, "failed": self.failed,
                "hangs": self.hangs, "dma_violations": self.dma_violations,
                "corruptions": self.corruptions, "protocol": self.protocol,
                "fuzzer_errors": self.fuzzer_errors, "errors_reported": self.errors_reported,
                "recovered": self.recovered, "sim_ns": self.sim_ns, "stats": self.stats}


class _VqObserver:
    """Tells the monitor what the clean (host model) driver lets the device write."""

    def __init__(self, monitor):
        self.monitor = monitor

    def ring_added(self, vq):
        from virtio_pcie.spec.virtio import virtq_used_size
        self.monitor.grant(("clean-used", id(vq)), vq.used_addr, virtq_used_size(vq.num))

    def ring_freed(self, vq):
        self.monitor.revoke(("clean-used", id(vq)))

    def buffers_added(self, vq, head, regions):
        for addr, length in regions:
            self.monitor.grant(("clean-buf", id(vq), head), addr, length)

    def buffers_used(self, vq, head):
        self.monitor.revoke(("clean-buf", id(vq), head))


def chain_limits(params):
    """The virtqueue engine's ``max_chain`` / ``max_indirect`` of the design ``params`` build
    (constructed, not elaborated: a fraction of a second)."""
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    from virtio_pcie.top import VirtioPcieDevice
    with warnings.catch_warnings():
        # the design (and its blocks) is looked at, never elaborated: no warning for that
        warnings.simplefilter("ignore", UnusedElaboratable)
        design = VirtioPcieDevice(**params)
        limits = design.chain_limits
        del design
        gc.collect()
    return limits


class FuzzContext:
    """Everything one simulator process shares between runs.

    Parameters
    ----------
    dut : cocotb handle
    workload_factory : callable(ctx) -> workload
    """

    def __init__(self, dut, workload_factory):
        self.dut = dut
        self.log = logging.getLogger("cocotb.fuzz")
        self.tb = SystemTB(dut)
        self.bridge = self.tb.bridge
        self.rc = self.tb.rc
        self.params = self.tb.params
        self.device = self.tb.device
        self.transitional = bool(self.params.get("transitional"))
        self.faults = FaultInjector(self.bridge)
        self.workload = workload_factory(self)
        self.msi_hits = 0

    # -- once per process ---------------------------------------------------------------------
    async def start(self):
        for name in ("cocotb.pcie", "cocotb.virtio", "cocotb.system"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.log.setLevel(logging.INFO if os.environ.get("FUZZ_VERBOSE") else logging.WARNING)
        self.rc.log.setLevel(logging.WARNING)
        await self.tb.reset()
        if self.device == "net":
            self.dut.loopback.value = 1
        pdev = self.pdev = await self.tb.enumerate()
        self.dev = pdev.dev
        self.restore = []
        for addr in _HEADER_RESTORE:
            self.restore.append((addr, await pdev.config_read32(addr)))
        self.pcie_pos = await pdev.find_capability(CapId.PCIE)
        for off in (8, 0x10):          # Device Control, Link Control (PCIe Base 4.0 §7.5.3)
            self.restore.append((self.pcie_pos + off, await pdev.config_read32(self.pcie_pos +
                                                                               off)))
        self.pm_pos = await pdev.find_capability(CapId.PM)
        pos = self.msix_pos = await pdev.find_capability(CapId.MSIX)
        ctrl = await pdev.config_read16(pos + _MSIX_CTRL)
        self.msix_vectors = (ctrl & 0x7FF) + 1
        table = await pdev.config_read32(pos + byte_offset(MsixCap, "table"))
        self.msix_bir, self.msix_table = table & 7, table & ~7
        self.pci_cfg_pos = None
        vpos = await pdev.find_capability(CapId.VNDR)
        while vpos:
            typ = await pdev.config_read8(vpos + byte_offset(VirtioPciCap, "cfg_type"))
            if typ == VirtioPciCapType.PCI_CFG.value:
                self.pci_cfg_pos = vpos
            vpos = await pdev.find_next_capability(vpos, CapId.VNDR)
        bars = {i: (pdev.resource_start(i), pdev.resource_len(i))
                for i in range(6) if pdev.resource_len(i)}
        self.bars = bars
        self.monitor = LinkMonitor(self.bridge, bars=bars, pci_cfg_pos=self.pci_cfg_pos,
                                   msix={"pos": pos, "bir": self.msix_bir,
                                         "table": self.msix_table,
                                         "vectors": self.msix_vectors})
        self.memory = FuzzMemory(self.rc)
        self.msi = self.rc.msi_alloc_vectors(self.msix_vectors)
        for vec in self.msi:
            vec.cb.append(self._msi_hit)
        # The host model's transports, probed once (their BAR mappings stay valid).
        await pdev.enable_device()
        # Linux 6.12's register traffic; its reset poll (msleep(1)) shortened to 200 ns so a
        # device reset costs simulated time in proportion to how long the device takes.
        profile = dataclasses.replace(get_profile("linux-6.12"), reset_poll_ns=200)
        self.modern = VirtioPciModern(pdev, memory=self.memory, profile=profile)
        await self.modern.probe()
        self.modern.reset_timeout_ns = RESET_BOUND_NS
        self.modern.vq_observer = _VqObserver(self.monitor)
        self.legacy = None
        if self.transitional:
            self.legacy = VirtioPciLegacy(pdev, memory=self.memory, profile=profile)
            await self.legacy.probe()
            io_bar = next(i for i in bars if pdev.resource_flags(i) & Resource.IO)
            self.monitor.watch_legacy(bar=io_bar,
                                      max_queue_size=self.params.get("max_queue_size", 256))
        await pdev.set_master()
        self.command = await pdev.config_read16(_CMD)
        self.queue_count = await self.modern.common.read("num_queues")
        self.device_type = self.modern.device_id
        self.notify_mult = self.modern.notify_offset_multiplier
        # The engine's limits as the design has them (blk raises them above the engine's
        # defaults to cover seg_max): a "too long" chain or an "oversized" indirect table is
        # malformed only beyond these (blk seed 600 runs 5 and 287: a 65-entry table, legal
        # to the blk engine's 128, was published as malformed).
        limits = chain_limits(self.params)
        self.max_chain = limits["max_chain"]
        self.max_indirect = limits["max_indirect"]
        # The MSI-X table's reset state (PCIe Base 4.0 §7.7.2: every vector masked).
        self.table_reset = bytearray(_ENTRY * self.msix_vectors)
        for i in range(self.msix_vectors):
            self.table_reset[i * _ENTRY + _ENTRY_CONTROL] = _VECTOR_MASK
        await self.workload.start()

    async def _msi_hit(self):
        self.msi_hits += 1

    # -- once per run ---------------------------------------------------------------------------
    async def hw_reset(self, rng):
        """Power-on reset of the device, then the configuration the enumeration left."""
        self.faults.stop()
        bridge = self.bridge
        for _ in range(200):
            if not bridge._cpl_heap and bridge.rx_cpl.empty() and bridge.rx_req.empty():
                break
            await Timer(100, "ns")
        self.monitor.enabled = False
        await self.tb.reset()
        bridge._cpl_heap.clear()
        bridge._pending_reads.clear()
        bridge._tag_last_release.clear()
        bridge._read_bytes_in_flight = 0
        bridge.intx_asserted = [False] * 4
        self.rc.tag_active = [False] * len(self.rc.tag_active)
        self.monitor.reset_run()
        self.monitor.initialise(bytes(64), bytes(self.table_reset))
        self.monitor.enabled = True
        for addr, value in self.restore:
            await self.pdev.config_write32(addr, value)
        await self.pdev.config_write16(_CMD, self.command)
        # The MSI-X table's Message Address and Data have no reset value (PCIe Base 4.0
        # §7.7.2: only the Mask bits reset, to 1); the device keeps them in RAM across the
        # power-on reset. Zero them, as the monitor's shadow assumes, so that an entry the
        # hostile driver unmasks without programming sends nothing left by an earlier run.
        window = self.dev.bar_window[self.msix_bir]
        for i in range(self.msix_vectors):
            for off in (_ENTRY_ADDR, _ENTRY_UPPER, _ENTRY_DATA):
                await window.write_dword(self.msix_table + i * _ENTRY + off, 0)
        # The host model's view of the function and the transport: as freshly probed.
        pdev = self.pdev
        pdev.msix_enabled = False
        pdev.msix_vectors = []
        pdev._msix_table = None
        if pdev.irq is not None:
            pdev.irq.handlers = []
            pdev.irq.stop()
        for t in (self.modern, self.legacy):
            if t is None:
                continue
            t.vqs, t.virtqueues, t.slow_virtqueues = {}, [], []
            t.msix_enabled, t.msix_vectors, t.msix_used_vectors = False, 0, 0
            t.per_vq_vectors = t.intx_enabled = False
            t.irq_mode, t.find_vqs_attempts, t.features = None, [], 0
        # The host's completion behaviour for this run.
        bridge.latency_ns = rng.choice([0, 0, 100, 400, 1000])
        bridge.reorder = rng.random() < 0.4
        bridge.rcb = rng.choice([None, 64, 128])
        bridge.rng = random.Random(rng.getrandbits(32))
        self.faults.reset_counts()
        self.msi_hits = 0
        self._counters0 = self.tb.counters()

    async def run_one(self, index, seed):
        rng = random.Random(seed)
        result = RunResult(index, seed)
        started = get_sim_time("ns")
        wall = [time.perf_counter()]
        cpu = time.process_time()
        await self.hw_reset(rng)
        wall.append(time.perf_counter())
        self.memory.reset(rng, high_share=rng.choice([0.0, 0.5, 1.0]))
        self.workload.begin_run(rng, result)
        legacy = self.transitional and rng.random() < 0.15
        driver = HostileDriver(self, rng, self.workload, legacy=legacy)
        deadline = RUN_BOUND_NS
        try:
            await with_timeout(self._hostile(driver, rng), deadline, "ns")
        except SimTimeoutError:
            result.hangs.append(f"the hostile part did not finish in {deadline} ns "
                                f"(pending: {self._pending_summary()})")
        except RunFailure as f:
            (result.hangs if f.kind in ("reset", "hang") else result.protocol).append(f.message)
        except Exception:     # noqa: BLE001 - a bug of the fuzzer or a crash of a model
            result.fuzzer_errors.append(traceback.format_exc(limit=8))
        wall.append(time.perf_counter())
        hostile_ns = get_sim_time("ns") - started
        # Recovery: whatever happened, the device must come back for a clean driver.
        try:
            await with_timeout(self._recover(rng, result, driver), RUN_BOUND_NS, "ns")
        except SimTimeoutError:
            result.hangs.append(f"recovery did not finish in {RUN_BOUND_NS} ns")
        except RunFailure as f:
            (result.hangs if f.kind in ("reset", "hang") else result.protocol).append(
                f"recovery: {f.message}")
        except Exception:     # noqa: BLE001
            result.fuzzer_errors.append("recovery: " + traceback.format_exc(limit=8))
        wall.append(time.perf_counter())
        mon = self.monitor
        for kind, message in mon.violations:
            result.dma_violations.append(f"{kind}: {message}")
        for t, tlp in mon.overdue():
            result.hangs.append(f"no completion for {tlp!r} (delivered at {t:.0f} ns)")
        mon.forget_pending()
        for err in self.bridge.all_errors:
            result.protocol.append(f"link: {err}")
        self.bridge.errors.clear()
        self.bridge.tx_cpl.errors.clear()
        self.bridge.tx_req.errors.clear()
        result.protocol.extend(m for _, m in driver.problems)
        self.workload.end_run(result)
        result.stats.update(driver.stats)
        c, c0 = self.tb.counters(), self._counters0
        delta = {k: (c[k] - c0[k]) & 0xFFFFFFFF for k in c}
        result.stats["engine"] = {k: delta[f"virtq.{k}"]
                                  for k in ("chains", "completed", "dropped", "errors")}
        result.stats["dma_errors"] = {k[4:]: v for k, v in delta.items()
                                      if k.startswith("dma.") and v and
                                      ("err" in k or "timeout" in k or "malformed" in k or
                                       "unexpected" in k)}
        result.stats.update({"faults": self.faults.injected, "msi": self.msi_hits,
                             "mwr": mon.counts["mwr"], "mrd": mon.counts["mrd"],
                             "legacy": legacy})
        result.sim_ns = get_sim_time("ns") - started
        # Where the run's wall time went (seconds): power-on reset and restore, the hostile
        # part, the recovery; and the simulated time of the hostile part (the rest is recovery).
        result.stats["wall"] = {k: round(b - a, 3) for k, a, b in
                                zip(("reset", "hostile", "recovery"), wall[:-1], wall[1:],
                                    strict=True)}
        result.stats["hostile_ns"] = hostile_ns
        # The simulator process's CPU time for the run (Python and Verilator): unlike the wall
        # time, it hardly depends on what else the machine is doing.
        result.stats["cpu_s"] = round(time.process_time() - cpu, 3)
        for key in ("bound_s", "io_done_s"):
            if key in result.stats:
                result.stats[key] = round(result.stats[key] - wall[2], 3)
        return result

    def _pending_summary(self):
        return ", ".join(repr(tlp) for _, tlp in list(self.monitor.pending.values())[:3])

    async def _hostile(self, driver, rng):
        await driver.bring_up()
        if rng.random() < 0.4:
            # A busy driver with occasional mischief: most runs should move real data.
            mood = {name: weight * (1 if name in ("io", "reap", "wait") else 0.15)
                    for name, weight in ACTIONS.items()}
        else:
            mood = {name: weight * rng.choice([0, 0.5, 1, 1, 2, 4]) for name, weight in
                    ACTIONS.items()}
        mood["io"] = max(mood["io"], 10)
        mood["reap"] = max(mood["reap"], 8)
        mood["wait"] = max(mood["wait"], 3)
        names = list(mood)
        weights = [mood[n] for n in names]
        for _ in range(rng.randint(8, 40)):
            name = rng.choices(names, weights)[0]
            driver.stats["actions"] += 1
            self.log.info("%.0f ns: %s", get_sim_time("ns"), name)
            try:
                await getattr(driver, f"act_{name}")()
            except Exception as e:     # noqa: BLE001
                if str(e) in ("Timeout", "Unsuccessful completion", "Bus mastering not enabled"):
                    # The device refused an access (UR in D3hot, a decode it does not claim):
                    # allowed; a missing answer is caught by the completion monitor.
                    driver.stats["access_errors"] += 1
                    continue
                raise
        self.log.info("%.0f ns: tidy", get_sim_time("ns"))
        await driver.tidy()

    # -- recovery ---------------------------------------------------------------------------------
    async def healthy_host(self):
        """Undo what the hostile driver did to the function's configuration."""
        self.faults.stop()
        pdev = self.pdev
        if self.pm_pos:
            await pdev.config_write16(self.pm_pos + _PM_CTRL, 0)         # D0
        for addr, value in self.restore[-2:]:
            await pdev.config_write32(addr, value)
        ctrl = await pdev.config_read16(self.msix_pos + _MSIX_CTRL)
        await pdev.config_write16(self.msix_pos + _MSIX_CTRL, ctrl & ~_MSIX_CTRL_BITS)
        await pdev.config_write16(_CMD, self.command)

    async def _recover(self, rng, result, driver):
        self.log.info("%.0f ns: recovery", get_sim_time("ns"))
        await self.healthy_host()
        # The hostile driver's requests still outstanding end with this reset: a write among
        # them may or may not have reached the medium (the device owes nothing for them).
        await self.reset_modern()
        driver.after_reset()
        await self.workload.recover(rng, result)
        self.log.info("%.0f ns: recovered", get_sim_time("ns"))
        result.recovered = True

    async def reset_modern(self):
        """Write 0 and poll ``device_status`` until 0, within :data:`RESET_BOUND_NS`."""
        c = self.modern.common
        await c.write("device_status", 0)
        started = get_sim_time("ns")
        while (value := await c.read("device_status")) != 0:
            if get_sim_time("ns") - started > RESET_BOUND_NS:
                raise RunFailure("reset", f"device_status still {value:#x} after "
                                          f"{RESET_BOUND_NS} ns")
            await Timer(200, "ns")
        self.monitor.revoke_all(grace=False)

    def new_vdev(self):
        return VirtioDevice(self.modern)

    # -- services for the hostile driver ---------------------------------------------------------
    async def notify(self, index, *, raw=False, idx=None):
        """A doorbell write for queue ``index`` (``raw``: any value, size and place in the
        notification region; ``idx``: a 32-bit write carrying that avail index, as with
        VIRTIO_F_NOTIFICATION_DATA)."""
        window = self.modern.notify_base
        if window is None:
            return
        if raw:
            import random as _r
            rng = _r.Random(index)
            size = rng.choice([s for s in (1, 2, 4) if s <= window.length])
            offset = rng.randrange(0, window.length - size + 1) // size * size
            await window.write(offset, size, rng.getrandbits(8 * size))
            return
        offset = (index * self.notify_mult) if self.notify_mult else 0
        width = notification_bytes(idx is not None)
        if offset + width > window.length:
            offset = 0
        value = VirtioNotificationData.const({"vqn": index & 0xFFFF, "next_idx": idx or 0})
        await window.write(offset, width, value.as_value().value)

    async def random_mmio(self, rng):
        """One read or write of 0 to 8 (sometimes 16 or 64) bytes anywhere in a BAR, biased
        towards the register windows."""
        bar = rng.choice(list(self.bars))
        base, size = self.bars[bar]
        window = self.dev.bar_window[bar]
        nbytes = rng.choice([0, 1, 1, 2, 2, 3, 4, 4, 4, 5, 6, 7, 8, 8, 16, 64])
        if rng.random() < 0.7:
            page = rng.randrange(0, max(1, size // 4096)) * 4096
            offset = page + rng.randrange(0, min(size, 0x80))
        else:
            offset = rng.randrange(0, size)
        if rng.random() < 0.6 and nbytes in (2, 4, 8):
            offset -= offset % nbytes
        offset = max(0, min(offset, size - max(nbytes, 1)))
        if rng.random() < 0.5:
            await window.read(offset, nbytes, timeout=COMPLETION_TIMEOUT_NS)
            return False
        await window.write(offset, rng.randbytes(nbytes))
        return bool(self.pdev.resource_flags(bar) & Resource.IO)

    async def random_config(self, rng):
        """A configuration read or write of 1 to 4 bytes (BARs and expansion ROM left alone;
        the Command register keeps its decode bits). Returns True for a write that may have
        reached the legacy I/O interface: one into the PCI_CFG window's data on a transitional
        device, whose window may point at the I/O BAR (it puts the device in legacy mode, where
        DEVICE_NEEDS_RESET is not shown)."""
        caps_end = LEGACY_CONFIG_SPACE_SIZE
        addr = rng.choice([rng.randrange(0, caps_end), rng.randrange(0, caps_end),
                           rng.randrange(CAP_POINTER_MIN, caps_end),
                           (self.pci_cfg_pos or CAP_POINTER_MIN)
                           + rng.randrange(0, byte_size(VirtioPciCfgCap)),
                           rng.randrange(caps_end, CONFIG_SPACE_SIZE)])
        size = rng.choice([1, 2, 4])
        addr = min(addr, CONFIG_SPACE_SIZE - size)
        if rng.random() < 0.4:
            await self.rc.config_read(self.dev.pcie_id, addr, size,
                                      timeout=COMPLETION_TIMEOUT_NS, timeout_unit="ns")
            return
        if addr < CAP_POINTER_MIN:
            lo = addr & ~3
            if lo in _BARS or lo == _ROM:
                return
            if lo == _CMD:
                value = rng.getrandbits(8 * size)
                raw = bytearray(value.to_bytes(size, "little"))
                if addr == _CMD:
                    raw[0] |= (PciCommand.MEMORY_SPACE | PciCommand.IO_SPACE).value & 0xFF
                await self.rc.config_write(self.dev.pcie_id, addr, bytes(raw),
                                           timeout=COMPLETION_TIMEOUT_NS, timeout_unit="ns")
                return
        if self.pci_cfg_pos is not None and rng.random() < 0.5:
            # Aim the PCI_CFG window at a real structure now and then.
            await self._aim_pci_cfg(rng)
        data = rng.randbytes(size)
        self.log.info("  configuration write %s at %#x", data.hex(), addr)
        await self.rc.config_write(self.dev.pcie_id, addr, data,
                                   timeout=COMPLETION_TIMEOUT_NS, timeout_unit="ns")
        if self.pci_cfg_pos is None or self.legacy is None:
            return False
        window = self.pci_cfg_pos + byte_offset(VirtioPciCfgCap, "pci_cfg_data")
        return addr < window + 4 and window < addr + size

    async def _aim_pci_cfg(self, rng):
        pos = self.pci_cfg_pos
        bar = rng.choice(list(self.bars) + [rng.randrange(8)])
        await self.pdev.config_write8(pos + byte_offset(VirtioPciCap, "bar"), bar)
        offset = rng.choice([0, 0x14, 0x1000, 0x2000, 0x3000, rng.randrange(0x4000)])
        await self.pdev.config_write32(pos + byte_offset(VirtioPciCap, "offset"), offset)
        length = rng.choice([1, 2, 4, 4, 3, 8, 0])
        await self.pdev.config_write32(pos + byte_offset(VirtioPciCap, "length"), length)
        self.log.info("  PCI_CFG window: bar %d offset %#x length %d", bar, offset, length)

    async def random_device_config(self, rng):
        window = self.modern.device
        if window is None:
            return
        size = rng.choice([1, 2, 4])
        offset = rng.randrange(0, window.length) // size * size
        offset = min(offset, window.length - size)
        if rng.random() < 0.5:
            await window.read(offset, size)
        else:
            await window.write(offset, size, rng.getrandbits(8 * size))

    async def random_msix(self, rng, driver):
        """Program, mask and unmask MSI-X vectors; toggle the function mask and the enable."""
        pdev = self.pdev
        choice = rng.random()
        ctrl_addr = self.msix_pos + _MSIX_CTRL
        window = self.dev.bar_window[self.msix_bir]
        if choice < 0.25:
            ctrl = await pdev.config_read16(ctrl_addr)
            enable = rng.random() < 0.7
            mask = rng.random() < 0.3
            ctrl = ((ctrl & ~_MSIX_CTRL_BITS) | (enable << _MSIX_ENABLE_BIT) |
                    (mask << _MSIX_MASKALL_BIT))
            await pdev.config_write16(ctrl_addr, ctrl)
            driver.msix_enabled = enable
            return
        i = rng.randrange(self.msix_vectors)
        entry = self.msix_table + i * _ENTRY
        if choice < 0.6:
            vec = self.msi[rng.randrange(len(self.msi))]
            await window.write_dword(entry + _ENTRY_ADDR, vec.addr & 0xFFFFFFFF)
            await window.write_dword(entry + _ENTRY_UPPER, vec.addr >> 32)
            await window.write_dword(entry + _ENTRY_DATA, vec.data)
        await window.write_dword(entry + _ENTRY_CONTROL, _VECTOR_MASK if rng.random() < 0.4 else 0)
        # Linux flushes table writes with a read (__pci_write_msi_msg).
        await window.read_dword(entry + _ENTRY_DATA)

    async def set_bus_master(self, on):
        cmd = await self.pdev.config_read16(_CMD)
        bit = PciCommand.BUS_MASTER.value
        await self.pdev.config_write16(_CMD, (cmd | bit) if on else (cmd & ~bit))


#: Accesses the fuzzer makes with an explicit timeout wait this long for the answer.
COMPLETION_TIMEOUT_NS = 100_000

_ = (cocotb, ClockCycles, PciFunction)
