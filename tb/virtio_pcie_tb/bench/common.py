# SPDX-License-Identifier: BSD-2-Clause
"""What the whole-device benchmarks share: the host they run against, and how they run.

**The host.** A benchmark binds the Linux-faithful driver model (:mod:`virtio_pcie_tb.host`) to
the simulated :class:`~virtio_pcie.top.VirtioPcieDevice` through the root complex and the bridge,
exactly as the system tests do, set up as Linux leaves a typical host: Max_Payload_Size 256 bytes
(the root complex's completions are cut at 256 bytes too), Max_Read_Request_Size 512 bytes,
extended tags on. The bridge's host model (:mod:`virtio_pcie_tb.models.pcie_bridge`) delays
every read completion by the host latency *L* and limits the reads the host keeps in progress.
The driver model itself costs no simulated time, except where a benchmark says so
(:class:`HostCosts`): what is measured is the device, not a guess of a CPU.

Why the full driver model and not a leaner one: its hot path (``add_sgs``, ``kick_prepare``,
``get_buf``, the interrupt handler) is a few hundred lines of Python per request, which costs
less wall time than the simulation of the cycles the request takes, and it is what makes the
figures Linux's: indirect descriptors, EVENT_IDX with ``used_event``/``avail_event`` as
``virtio_ring.c`` writes them, the kick decision, ``virtblk_done``/NAPI's re-check loops.

**The runs.** A benchmark module has a ``run_*`` function that builds the design (cached), runs
its own cocotb test in the simulator with the points as JSON, and yields one result row per
point. :func:`run_points` does that part; its cocotb side (:func:`bench_test`) writes the rows
(or the error) to a file, so a failed point never triggers the harness's waveform re-run.
"""

import json
import os
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLOCK_MHZ", "CLOCK_NS", "HOST_BRIDGE", "HostCosts", "default_progress", "run_points",
           "bench_test", "build_design", "BUILD_LOCK", "SIM_SLOTS", "sim_slot", "cpu_note",
           "setup_host", "delay_interrupts", "parallel", "sim_cost", "sim_scale",
           "UsedIndexProbe"]

CLOCK_MHZ = 250
CLOCK_NS = 1000 // CLOCK_MHZ

#: Max_Payload_Size 256 bytes (encoding 1); the device keeps its reset Max_Read_Request_Size,
#: 512 bytes, as Linux leaves it.
HOST_MPS = 1
#: The bridge's host model in every benchmark (see docs/performance.md): the host works on at
#: most 64 reads at once, more than the device's DMA engine keeps in progress (32).
#: ``BENCH_HOST_MAX_READS`` overrides it (0: no limit), to see whether the limit binds.
HOST_BRIDGE = {"max_reads_in_flight": int(os.environ.get("BENCH_HOST_MAX_READS", "64")) or None}


def default_progress(message):
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class HostCosts:
    """Simulated time the host's CPU takes (all 0: an infinitely fast host).

    irq_ns : from the MSI-X message reaching the host to the interrupt handler running.
    resubmit_ns : from a request's completion (in the handler) to its successor's submission.
    """
    irq_ns:      int = 0
    resubmit_ns: int = 0


#: Held while a design is built: the harness redirects ``sys.stdout`` during a Verilator build
#: (``contextlib.redirect_stdout``), which is not safe in two threads at once (one would restore
#: the other's closed log file as standard output). Simulations run in parallel; builds do not.
BUILD_LOCK = threading.Lock()


#: Simulator processes that run at once, whatever asks for them (``BENCH_WORKERS``, default 2:
#: the cores of the CI machine). ``virtio-pcie bench all`` runs its benchmarks side by side and
#: this keeps two simulations busy until the last one ends, instead of one core idling while
#: each benchmark's last width finishes.
SIM_SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get("BENCH_WORKERS", "2"))))


def sim_slot():
    """Context manager: hold one of :data:`SIM_SLOTS` while a simulator process runs."""
    return SIM_SLOTS


def cpu_note(result):
    """``", N s of CPU for M µs simulated"`` from a simulator's result file, for progress lines
    (the simulator process's own CPU time, which machine load does not change much)."""
    if "cpu_s" not in result:
        return ""
    return f", {result['cpu_s']:.0f} s of CPU for {result['sim_ns'] / 1000:,.0f} µs simulated"


def build_design(build, *args, **kwargs):
    """``build(*args, **kwargs)`` under :data:`BUILD_LOCK`."""
    with BUILD_LOCK:
        return build(*args, **kwargs)


def parallel(jobs, workers=2):
    """Run callables ``jobs`` on ``workers`` threads (each runs a simulator process); returns
    their results in order."""
    if workers <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: job(), jobs))


def run_points(design, module, test, points, *, test_dir, timeout_s=None, progress=None,
               label=None):
    """Run cocotb ``module.test`` against ``design`` with ``points`` (holding a
    :func:`sim_slot`); returns its result rows. ``progress(message)`` hears when it ends, with
    the simulator's CPU time, as ``label``."""
    from virtio_pcie_tb import harness
    test_dir = Path(test_dir)
    out = test_dir / "bench.json"
    test_dir.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with sim_slot():
        harness.run(design, module, test_dir=test_dir, testcase=[test], quiet=True,
                    timeout_s=timeout_s,
                    env={"BENCH_POINTS": json.dumps(points), "BENCH_OUT": str(out),
                         "COCOTB_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")})
    result = json.loads(out.read_text())
    if result.get("error"):
        raise RuntimeError(f"{module}: benchmark failed in the simulator (log "
                           f"{test_dir / 'sim.log'}):\n{result['error']}")
    if progress is not None:
        progress(f"{label or module}: {len(result['rows'])} points done{cpu_note(result)}")
    return result["rows"]


async def bench_test(measure):
    """The body of a benchmark's cocotb test: ``await measure(points)`` returns rows, which go
    to ``$BENCH_OUT``; an exception goes there too (the test itself passes)."""
    points = json.loads(os.environ["BENCH_POINTS"])
    out = Path(os.environ["BENCH_OUT"])
    try:
        rows = await measure(points)
        out.write_text(json.dumps({"rows": rows, **sim_cost()}))
    except Exception:                        # noqa: BLE001 - reported by run_points
        out.write_text(json.dumps({"error": traceback.format_exc()}))


def sim_cost():
    """In the simulator: ``{"cpu_s": ..., "sim_ns": ...}``, the CPU time of the simulator process
    (Verilator and the Python testbench run in it) and the simulated time so far."""
    import time

    from cocotb.utils import get_sim_time
    return {"cpu_s": round(time.process_time(), 1), "sim_ns": get_sim_time("ns")}


def sim_scale(clock_mhz):
    """Simulated ns per ns at ``clock_mhz``: the simulation's clock is always 250 MHz, so host
    times (latency, CPU costs) are scaled to keep their length in cycles at the clock asked for;
    figures in cycles are then converted back at that clock."""
    return clock_mhz / CLOCK_MHZ


async def setup_host(dut, *, bridge_options=None, driver=None, profile="linux-6.12", link=None,
                     **tb_options):
    """A :class:`~virtio_pcie_tb.system.SystemTB` with the benchmark host (see the module
    docstring), reset, with ``driver`` bound. ``link`` (e.g. ``"gen3x4"``) adds the bridge's
    link model. Returns the testbench."""
    from virtio_pcie_tb.system import SystemTB
    bridge_options = {**HOST_BRIDGE, **(bridge_options or {})}
    if link:
        bridge_options["link"] = link
    tb = SystemTB(dut, bridge_options=bridge_options, **tb_options)
    # Linux configures MPS from the smallest in the hierarchy and leaves MRRS at 512 bytes.
    tb.rc.max_payload_size = HOST_MPS
    await tb.reset()
    await tb.bind(driver, profile=profile)
    return tb


def delay_interrupts(pci, delay_ns):
    """Make every MSI-X handler of ``pci`` run ``delay_ns`` after its message arrived (the
    interrupt entry latency of a real CPU). Messages arriving meanwhile merge, as an edge
    interrupt pending while its handler is not yet running does."""
    if not delay_ns:
        return
    from cocotb.triggers import Timer

    def delayed(handler):
        async def run():
            await Timer(delay_ns, "ns")
            return await handler()
        return run

    for irq in pci.msix_vectors:
        irq.handlers = [(delayed(h), label) for h, label in irq.handlers]


class UsedIndexProbe:
    """Records every ``used->idx`` write of one virtqueue as the device sends it: the exact
    cycle its used entries became visible, unlike the host's view, which interrupts batch.

    ``vq``: the host model's :class:`~virtio_pcie_tb.host.virtqueue.Virtqueue`. :attr:`writes`
    holds ``(time_ns, used_idx)``, the index unwrapped past 16 bits.
    """

    def __init__(self, bridge, vq):
        from cocotb.utils import get_sim_time

        from virtio_pcie.spec.virtio import VirtqUsedHeader, byte_offset
        self.addr = vq.used_addr + byte_offset(VirtqUsedHeader, "idx")
        self.writes = []
        self._base = 0
        self._last = None

        def monitor(raw):
            if raw.has_data and not raw.is_completion and raw.address == self.addr & ~3:
                value = int.from_bytes(raw.payload[self.addr & 3:(self.addr & 3) + 2], "little")
                if self._last is not None and value < self._last:
                    self._base += 1 << 16
                self._last = value
                self.writes.append((get_sim_time("ns"), self._base + value))
        self.bridge = bridge
        self.monitor = monitor
        bridge.tx_monitors.append(monitor)

    def close(self):
        self.bridge.tx_monitors.remove(self.monitor)

    def rate(self, first, last):
        """Used entries per ns from the write that published entry ``first`` (counted from
        the probe's start) to the one that published entry ``last``; ``(rate, count, span)``."""
        if not self.writes:
            raise ValueError("no used->idx write seen")
        start = self.writes[0][1] - 1
        t0 = v0 = t1 = v1 = None
        for t, v in self.writes:
            n = v - start
            if t0 is None and n >= first:
                t0, v0 = t, v
            if n >= last:
                t1, v1 = t, v
                break
        if t0 is None or t1 is None or t1 <= t0:
            raise ValueError(f"used->idx writes do not cover entries {first} to {last}")
        return (v1 - v0) / (t1 - t0), v1 - v0, t1 - t0
