# SPDX-License-Identifier: BSD-2-Clause
"""DMA engine throughput, in bytes per clock cycle of the simulated 250 MHz core clock.

For each data width, transfer size, direction and host completion latency, the benchmark
submits a run of equal transfers from one client, all at once (the engine takes them as fast as
it can), and measures the **sustained rate**: the bytes of all transfers but the first,
divided by the cycles from the first transfer's status to the last one's. The latency of the
first transfer is thereby left out, as it would be in a long stream of requests; what remains
is what tags, completion buffer space, request slots and the datapath allow.

The host is cocotbext-pcie's root complex behind the project's bridge, whose host model delays
every completion by ``latency_ns`` after its request left the device (memory latency as an
endpoint sees it); its link is otherwise unlimited, so the engine's datapath
(``data_width / 8`` bytes per cycle) is the limit and ``efficiency`` is the fraction of it
reached. The device is set up as Linux leaves a typical one: Max_Payload_Size 256 bytes,
Max_Read_Request_Size 512 bytes, extended tags on, RCB 64 bytes; the root complex returns
completions of up to 256 bytes (its Max_Payload_Size). Host and buffer addresses are aligned.

:func:`run_dma` is what ``virtio-pcie bench dma`` calls; :func:`run_dma_bench` is the cocotb
test it runs in the simulator, once per data width.
"""

import json
import os
from pathlib import Path

import cocotb

__all__ = ["run_dma", "DEFAULT_SIZES", "DEFAULT_LATENCIES_NS", "CLOCK_MHZ"]

CLOCK_MHZ = 250
#: 64 B to 32 KiB in powers of two, then the largest request (lengths are 16 bits: 64 KiB - 1).
DEFAULT_SIZES = [64 << k for k in range(10)] + [65535]
DEFAULT_LATENCIES_NS = [500, 1000]
DIRECTIONS = ("read", "write")
#: Bytes moved per measurement point (at least 16 transfers, at most 256).
POINT_BYTES = 256 * 1024


def transfer_count(size):
    return max(16, min(256, POINT_BYTES // size))


def _points(sizes, latencies, dirs, offsets=((0, 0),)):
    return [{"latency_ns": lat, "dir": d, "size": s, "host_offset": ho, "ram_offset": ro}
            for lat in latencies for d in dirs for ho, ro in offsets for s in sizes]


def run_dma(*, widths=(64, 128, 256), latencies_ns=DEFAULT_LATENCIES_NS, sizes=DEFAULT_SIZES,
            dirs=DIRECTIONS, offsets=((0, 0),), clock_mhz=CLOCK_MHZ, link=None, progress=None,
            workers=2, **_ignored):
    """Measure every point; yields one result dict per point as each width finishes.

    ``offsets`` lists (host address offset, buffer address offset) pairs to measure
    (misalignment, in bytes); ``clock_mhz`` the core clock the host latency is measured
    against; ``link`` (e.g. ``"gen3x4"``) adds the bridge's link model; ``progress(message)``
    (default: print to stderr) reports builds and runs; ``workers`` widths run at once.
    """
    from virtio_pcie_tb import harness
    from virtio_pcie_tb.designs.dma_testbench import build_dma_testbench

    from .common import build_design, cpu_note, default_progress, parallel, sim_scale, sim_slot
    progress = progress or default_progress
    points = [dict(p, sim_latency_ns=p["latency_ns"] * sim_scale(clock_mhz), link=link)
              for p in _points(list(sizes), list(latencies_ns), list(dirs), list(offsets))]

    def job(width):
        def run():
            progress(f"dma: {width}-bit design (Verilator build, cached after the first run)")
            design = build_design(build_dma_testbench, width)
            progress(f"dma: {width} bits, {len(points)} points")
            test_dir = harness.SIM_BUILD / "bench" / "dma" / str(width)
            out = test_dir / "results.json"
            out.unlink(missing_ok=True)
            with sim_slot():
                harness.run(design, "virtio_pcie_tb.bench.dma", test_dir=test_dir,
                            testcase=["run_dma_bench"], quiet=True,
                            env={"BENCH_POINTS": json.dumps(points), "BENCH_OUT": str(out),
                                 "COCOTB_LOG_LEVEL": "WARNING"})
            result = json.loads(out.read_text())
            progress(f"dma: {width} bits: {len(result['rows'])} points done{cpu_note(result)}")
            return width, result["rows"]
        return run

    for width, results in parallel([job(w) for w in widths], workers):
        for r in results:
            row = {"bench": "dma", "width": width, "latency_ns": r["latency_ns"],
                   "clock_mhz": clock_mhz, "dir": r["dir"], "size": r["size"],
                   "bytes_per_cycle": r["bytes_per_cycle"],
                   "efficiency": r["bytes_per_cycle"] / (width // 8),
                   "gbit_per_s": r["bytes_per_cycle"] * 8 * clock_mhz / 1000,
                   "host_offset": r["host_offset"], "ram_offset": r["ram_offset"],
                   "transfers": r["transfers"], "cycles": r["cycles"]}
            if link:
                row["link"] = link
            yield row


def format_table(rows):
    """A Markdown table per data width and latency: size down, read and write across."""
    lines = []
    keys = sorted({(r["width"], r["latency_ns"], r.get("host_offset", 0),
                    r.get("ram_offset", 0)) for r in rows})
    for width, lat, ho, ro in keys:
        sel = [r for r in rows if (r["width"], r["latency_ns"], r.get("host_offset", 0),
                                   r.get("ram_offset", 0)) == (width, lat, ho, ro)]
        sizes = sorted({r["size"] for r in sel})
        by = {(r["dir"], r["size"]): r for r in sel}
        where = f", host offset {ho}, buffer offset {ro}" if ho or ro else ""
        lines.append(f"**{width}-bit datapath ({width // 8} B/cycle, "
                     f"{width * CLOCK_MHZ / 1000:.0f} Gbit/s), completion latency {lat} ns"
                     f"{where}**")
        lines.append("")
        lines.append("| size | read B/cycle | read | write B/cycle | write |")
        lines.append("|---:|---:|---:|---:|---:|")
        for s in sizes:
            cells = []
            for d in DIRECTIONS:
                r = by.get((d, s))
                cells += (["-", "-"] if r is None else
                          [f"{r['bytes_per_cycle']:.2f}", f"{100 * r['efficiency']:.1f} %"])
            label = (f"{s} B" if s < 1024 or s % 1024 else f"{s // 1024} KiB")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# -- the cocotb side ------------------------------------------------------------------------------

@cocotb.test()
async def run_dma_bench(dut):
    from cocotb.triggers import Combine, with_timeout

    from virtio_pcie.dma.interface import DmaError
    from virtio_pcie_tb.dma_env import CLOCK_NS, DmaEnv

    points = json.loads(os.environ["BENCH_POINTS"])
    link = points[0].get("link") if points else None
    from .common import HOST_BRIDGE
    env = DmaEnv(dut, rc_max_payload_size=1, host_bytes=1 << 17, **HOST_BRIDGE,
                 **({"link": link} if link else {}))
    env.set_cfg(mps=1, mrrs=2, extended_tag=True, rcb_128=False)
    await env.reset()
    client = env.clients[0]
    base = env.host_base
    results = []
    for p in points:
        env.dev.latency_ns = p.get("sim_latency_ns", p["latency_ns"])
        size, n = p["size"], transfer_count(p["size"])
        submit = client.submit_read if p["dir"] == "read" else client.submit_write
        host, ram = base + p.get("host_offset", 0), p.get("ram_offset", 0)
        transfers = [await submit(host, ram, size) for _ in range(n)]
        await with_timeout(Combine(*(t.done.wait() for t in transfers)), 50, "ms")
        bad = [t for t in transfers if t.status != DmaError.OK]
        assert not bad, f"benchmark transfers failed: {bad[:3]}"
        ends = sorted(t.t_done for t in transfers)
        cycles = (ends[-1] - ends[0]) / CLOCK_NS
        results.append({**p, "transfers": n, "cycles": cycles,
                        "bytes_per_cycle": (n - 1) * size / cycles})
        await env.wait_idle()
    assert not env.dev.all_errors, env.dev.all_errors
    from .common import sim_cost
    Path(os.environ["BENCH_OUT"]).write_text(json.dumps({"rows": results, **sim_cost()}))
