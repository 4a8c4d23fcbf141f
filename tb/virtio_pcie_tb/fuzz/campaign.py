# SPDX-License-Identifier: BSD-2-Clause
"""A fuzz campaign: build the device once, run the seeded runs in batches, sum up.

:func:`fuzz_params` is the design every campaign of a device uses (one build per device: a
transitional device, so the legacy interface is attacked too, with a completion timeout short
enough for simulation); :func:`run_campaign` runs ``runs`` runs starting at run ``first`` in
simulator processes of ``batch`` runs each and returns the summary (:class:`Summary`).
"""

import json
import os
import sys
import time
from pathlib import Path

from .. import harness
from ..system import build_system, design_params

__all__ = ["fuzz_params", "build_fuzz_design", "run_campaign", "Summary", "replay_command",
           "COMPLETION_TIMEOUT_CYCLES"]

#: The fuzz designs' DMA completion timeout: 2 500 cycles (10 us at 250 MHz). PCIe allows 50 us
#: to 50 ms; shorter keeps runs with unanswered reads cheap to simulate, and the behaviour after
#: a timeout is the same.
COMPLETION_TIMEOUT_CYCLES = 2500

#: Blk fuzz disk: 1 MiB, so the whole medium is compared with the shadow after every run.
FUZZ_SECTORS = 2048


def fuzz_params(device):
    if device not in ("blk", "net"):
        raise ValueError(f"device must be 'blk' or 'net', not {device!r}")
    extra = {"transitional": True,
             "dma_options": {"completion_timeout_cycles": COMPLETION_TIMEOUT_CYCLES}}
    if device == "blk":
        extra["capacity"] = FUZZ_SECTORS
    return design_params(device, 128, **extra)


def build_fuzz_design(device, *, verbose=False):
    return build_system(fuzz_params(device), name=f"fuzz_{device}_128", verbose=verbose)


def replay_command(device, seed, index, *, batch_first=None):
    """The command that replays run ``index`` with a waveform; with ``batch_first``, the one
    that replays the runs of its simulator process up to it (for a failure that depends on
    what the device went through before: state a reset leaves, such as RAM contents)."""
    first = index if batch_first is None else batch_first
    return (f"virtio-pcie fuzz --device {device} --seed {seed} --first {first} "
            f"--runs {index - first + 1} --batch {index - first + 1} --waves")


class Summary:
    """What a campaign found; :meth:`as_dict` is the ``--json`` object."""

    def __init__(self, device, seed, first, batch=1):
        self.device = device
        self.seed = seed
        self.first = first
        self.batch = batch
        self.results = []
        self.wall_s = 0.0

    def add(self, result):
        self.results.append(result)

    def _count(self, key):
        return sum(len(r[key]) for r in self.results)

    @property
    def failed(self):
        return [r for r in self.results if r["failed"]]

    def as_dict(self):
        rs = self.results
        return {
            "device": self.device, "seed": self.seed, "first": self.first,
            "runs": len(rs),
            "hangs": self._count("hangs"),
            "dma_violations": self._count("dma_violations"),
            "corruptions": self._count("corruptions"),
            "protocol_errors": self._count("protocol"),
            "fuzzer_errors": self._count("fuzzer_errors"),
            "errors_reported": sum(r["errors_reported"] for r in rs),
            "recovered": sum(1 for r in rs if r["recovered"]),
            "failed_runs": [r["run"] for r in self.failed],
            "faults_injected": sum(r["stats"].get("faults", 0) for r in rs),
            "device_resets": sum(r["stats"].get("resets", 0) for r in rs),
            "needs_reset": sum(r["stats"].get("needs_reset", 0) for r in rs),
            "malformed_chains": sum(r["stats"].get("malformed", 0) for r in rs),
            "requests": sum(r["stats"].get("requests", 0) for r in rs),
            "legacy_runs": sum(1 for r in rs if r["stats"].get("legacy")),
            "sim_us": round(sum(r["sim_ns"] for r in rs) / 1000, 1),
            "wall_s": round(self.wall_s, 1),
            "run_cpu_s": round(sum(r["stats"].get("cpu_s", 0) for r in rs), 2),
        }

    def report(self, limit=5):
        """Human-readable lines about the failed runs (seed and replay command first)."""
        lines = []
        for r in self.failed[:limit]:
            lines.append(f"run {r['run']} (run seed {r['seed']}) FAILED; replay with a waveform:"
                         f"\n    {replay_command(self.device, self.seed, r['run'])}")
            start = self.first + (r["run"] - self.first) // self.batch * self.batch
            if start != r["run"]:
                again = replay_command(self.device, self.seed, r["run"], batch_first=start)
                lines.append(f"  or, if it passes alone, with the runs before it in its "
                             f"process:\n    {again}")
            for key in ("hangs", "dma_violations", "corruptions", "protocol", "fuzzer_errors"):
                for item in r[key][:4]:
                    lines.append(f"    {key}: {item}")
            if not r["recovered"]:
                lines.append("    the device did not recover")
        return lines


def run_campaign(device, *, runs, seed=1, first=0, batch=200, waves=False, out_dir=None,
                 progress=None, timeout_s=None):
    """Build (once) and run ``runs`` fuzz runs of ``device``; returns a :class:`Summary`."""
    design = build_fuzz_design(device, verbose=progress is not None)
    out_dir = Path(out_dir or harness.SIM_BUILD / "fuzz" / f"{device}-seed{seed}")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(device, seed, first, batch)
    started = time.monotonic()
    done = 0
    while done < runs:
        n = min(batch, runs - done)
        start = first + done
        results = out_dir / f"runs-{start}-{start + n - 1}.jsonl"
        if results.exists():
            results.unlink()
        test_dir = out_dir / (f"run-{start}" if waves else f"sim-{start}")
        env = {"FUZZ_SEED": str(seed), "FUZZ_FIRST": str(start), "FUZZ_RUNS": str(n),
               "FUZZ_RESULTS": str(results),
               "COCOTB_LOG_LEVEL": "INFO" if os.environ.get("FUZZ_VERBOSE") else "WARNING"}
        if not waves:
            # A crashed fuzz process is reported below; no automatic waveform re-run.
            design = harness.Build(design.name, design.directory, design.params,
                                   design.toplevel, factory=None,
                                   debug_aliases=design.debug_aliases)
        try:
            harness.run(design, "virtio_pcie_tb.fuzz.sim", test_dir=test_dir, env=env,
                        waves=waves, quiet=True, timeout_s=timeout_s or max(1800, 30 * n))
        except harness.SimulationFailed as e:
            # The fuzzer itself died: the runs written so far count; the rest are lost.
            print(f"fuzz: simulator process failed: {e}", file=sys.stderr)
        lines = results.read_text().splitlines() if results.exists() else []
        for line in lines:
            summary.add(json.loads(line))
        if len(lines) < n:
            missing = [start + i for i in range(len(lines), n)]
            for index in missing:
                summary.add({"run": index, "seed": None, "failed": True, "hangs": [],
                    "dma_violations": [], "corruptions": [], "protocol": [],
                    "fuzzer_errors": ["the simulator process ended before this run finished"],
                    "errors_reported": 0, "recovered": False,
                    "sim_ns": 0, "stats": {}})
        done += n
        summary.wall_s = time.monotonic() - started
        if progress is not None:
            d = summary.as_dict()
            progress(f"fuzz {device}: {d['runs']}/{runs} runs, {len(d['failed_runs'])} failed, "
                     f"{d['wall_s']:.0f} s")
        if waves:
            print(f"waveform: {test_dir / 'dump.fst'}", file=sys.stderr)
    return summary
