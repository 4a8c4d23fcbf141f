# SPDX-License-Identifier: BSD-2-Clause
"""Where a blk request's time goes: the slots' states, cycle by cycle, during a bench point.

``python -m virtio_pcie_tb.bench.blk_profile --width 256 --op randwrite --qd 32 --latency-ns 1000``
runs one point of :mod:`.blk` (the same host, workload and figures) on a build of the device
with its internal signals visible (a separate Verilator build, ``profile_blk_<width>``) and
samples, every cycle:

* each :class:`~virtio_pcie.devices.blk_slot.BlkSlot`'s sequencer state, so that every request
  (a slot's stay from leaving FREE to coming back to it) is split into its states;
* how many slots are busy;
* the inbound completion stream (``rx_cpl``: busy cycles), the medium's W channel (beats) and
  the blk client's outstanding DMA read bytes (the read budget's count);
* the blk DMA read request stream: cycles it waited (valid, not ready: the read budget).

It prints the point's figures and the profile over the bench's steady window. For profiling
only: not part of the default tests.
"""

import argparse
import collections
import json
import os
import sys

import cocotb

__all__ = ["profile_design", "run_profile", "format_profile"]


def _slot_states(width):
    """The encoding of BlkSlot's sequencer state (Amaranth numbers states as they appear)."""
    from virtio_pcie.devices.blk_slot import BlkSlot
    slot = BlkSlot(index=0, slots=2, queue_count=1, regions=4, chunk_bytes=1024,
                   medium_addr_width=32, bytes_per_beat=width // 8, ram_beat_width=10,
                   header_addr=0, serial_addr=0, max_pieces=4)
    module = slot.elaborate(None)
    slot._MustUse__silence = module._MustUse__silence = True     # only looked at
    fsm = module._generated["fsm"]
    return {v: k for k, v in fsm.encoding.items()}


def profile_design(width, **extra):
    """The bench's blk build with every internal signal public (a separate build)."""
    from virtio_pcie_tb.system import build_system, design_params
    params = design_params("blk", width, **extra)
    return build_system(params, name=f"profile_blk_{width}", ports_only=False)


def run_profile(*, width, op, qd, latency_ns, requests=None, extra=None):
    from virtio_pcie_tb import harness

    from .blk import BS, HostCosts, _requests
    from .common import CLOCK_MHZ, run_points
    import dataclasses
    design = profile_design(width, **(extra or {}))
    point = {"op": op, "qd": qd, "latency_ns": latency_ns, "bs": BS, "clock_mhz": CLOCK_MHZ,
             "link": None, "requests": requests or _requests(qd),
             "host": dataclasses.asdict(HostCosts()), "width": width,
             "states": _slot_states(width)}
    rows = run_points(design, "virtio_pcie_tb.bench.blk_profile", "run_blk_profile", [point],
                      test_dir=harness.SIM_BUILD / "bench" / "profile" / str(width))
    return rows[0]


def format_profile(row):
    width = row["width"]
    ideal = row["bs"] / (width // 8)
    lines = [f"{width} bits, {row['op']}, QD {row['qd']}, L = {row['latency_ns']} ns: "
             f"{row['cycles_per_req']:.1f} cycles/request "
             f"({100 * ideal / row['cycles_per_req']:.1f} % of the data path)",
             f"window: {row['window_cycles']} cycles, {row['window_requests']} requests "
             f"finished in it",
             f"busy slots (mean): {row['busy_slots_mean']:.2f} of {row['slots']}; "
             f"cycles with all slots busy: {100 * row['all_busy']:.1f} % "
             f"(a chain waiting meanwhile: {100 * row['all_busy_offered']:.1f} %); "
             f"a slot free, no chain offered: {100 * row['free_starved']:.1f} %",
             f"rx_cpl busy: {100 * row['rx_cpl_busy']:.1f} % of cycles; "
             f"medium W beats: {100 * row['w_beats']:.1f} %; "
             f"blk read request waiting (budget): {100 * row['rd_req_wait']:.1f} %",
             f"blk reads outstanding (mean): {row['rd_used_mean']:.0f} bytes; "
             f"histogram (KiB: % of cycles): "
             + ", ".join(f"{k}: {100 * v:.1f}" for k, v in row["rd_used_hist"].items()),
             "", "mean cycles per request in each slot state (requests of the window):"]
    total = sum(row["state_cycles"].values())
    for state, cycles in row["state_cycles"].items():
        lines.append(f"  {state:<12} {cycles:8.1f}  ({100 * cycles / total:4.1f} %)")
    lines.append(f"  {'total':<12} {total:8.1f}")
    lines.append(f"  slot turn (FREE to FREE, mean): {row['occupancy']:.1f}; slots x ideal "
                 f"cycles per request: {row['slots'] * ideal:.0f}")
    return "\n".join(lines)


# -- the cocotb side ------------------------------------------------------------------------------

class _Sampler:
    """Samples the slots and the data path every cycle; :meth:`result` sums a window."""

    def __init__(self, dut, states):
        self.dut = dut
        dev = dut.device
        self.slots = []
        while hasattr(dev, f"slot{len(self.slots)}"):
            self.slots.append(getattr(dev, f"slot{len(self.slots)}").fsm_state)
        self.states = {int(k): v for k, v in states.items()}
        self.rx_valid, self.rx_ready = dut.rx_cpl__valid, dut.rx_cpl__ready
        self.w_valid, self.w_ready = dut.medium__wvalid, dut.medium__wready
        self.rd_used = dut.dma.read.client_used__1
        self.rq_valid, self.rq_ready = dev.sg_reader.req__valid, dev.sg_reader.req__ready
        self.seg_valid = dev.intake.segment__valid
        # per cycle: (busy slots, rx beat, w beat, rd wait, rd used, chain offered)
        self.samples = []
        self.turns = []            # (cycle left FREE, cycle back in FREE, {state: cycles})

    async def run(self):
        from cocotb.triggers import ReadOnly, RisingEdge
        from cocotb.utils import get_sim_time
        clk = self.dut.clk
        n = len(self.slots)
        cur, since, start = [None] * n, [0] * n, [0] * n
        req = [collections.Counter() for _ in range(n)]
        await RisingEdge(clk)
        self.t0 = get_sim_time("ns")
        t = 0
        while True:
            await ReadOnly()
            busy = 0
            for i, sig in enumerate(self.slots):
                state = self.states[int(sig.value)]
                busy += state != "FREE"
                if state != cur[i]:
                    if cur[i] is not None and cur[i] != "FREE":
                        req[i][cur[i]] += t - since[i]
                    if state == "FREE" and cur[i] is not None:
                        self.turns.append((start[i], t, req[i]))
                        req[i] = collections.Counter()
                    if cur[i] == "FREE":
                        start[i] = t
                    cur[i] = state
                    since[i] = t
            self.samples.append((busy,
                                 int(self.rx_valid.value) & int(self.rx_ready.value),
                                 int(self.w_valid.value) & int(self.w_ready.value),
                                 int(self.rq_valid.value) & (1 - int(self.rq_ready.value)),
                                 int(self.rd_used.value), int(self.seg_valid.value)))
            await RisingEdge(clk)
            t += 1

    def cycle(self, ns):
        from .common import CLOCK_NS
        return int((ns - self.t0) // CLOCK_NS)

    def result(self, c0, c1):
        window = self.samples[c0:c1]
        n = max(1, len(window))
        order = [s for s in self.states.values() if s != "FREE"]
        turns = [r for s, e, r in self.turns if c0 <= s and e <= c1]
        reqs = turns or [collections.Counter()]
        state_cycles = {s: sum(r[s] for r in reqs) / len(reqs) for s in order}
        hist = collections.Counter(w[4] // 1024 for w in window)
        return {"slots": len(self.slots), "window_cycles": len(window),
                "window_requests": len(turns),
                "busy_slots_mean": sum(w[0] for w in window) / n,
                "all_busy": sum(w[0] == len(self.slots) for w in window) / n,
                "all_busy_offered": sum(w[0] == len(self.slots) and w[5] for w in window) / n,
                "free_starved": sum(w[0] < len(self.slots) and not w[5] for w in window) / n,
                "rx_cpl_busy": sum(w[1] for w in window) / n,
                "w_beats": sum(w[2] for w in window) / n,
                "rd_req_wait": sum(w[3] for w in window) / n,
                "rd_used_mean": sum(w[4] for w in window) / n,
                "rd_used_hist": {k: hist[k] / n for k in sorted(hist)},
                "state_cycles": {s: c for s, c in state_cycles.items() if c},
                "occupancy": sum(e - s for s, e, _ in self.turns if c0 <= s and e <= c1) /
                max(1, len(turns))}


@cocotb.test()
async def run_blk_profile(dut):
    import random

    from virtio_pcie_tb.host import VirtioBlkDriver

    from . import blk as bench
    from .common import bench_test, setup_host

    async def measure(points):
        p = points[0]
        drv = VirtioBlkDriver(num_cpus=1, scan=False)
        tb = await setup_host(dut, driver=drv, profile=bench._profile(True), link=None)
        rng = random.Random(int(os.environ.get("BENCH_SEED", "1")))
        sampler = _Sampler(dut, p["states"])
        cocotb.start_soon(sampler.run())
        original = bench.UsedIndexProbe
        probes = []

        class Probe(original):
            def __init__(self, bridge, vq):
                super().__init__(bridge, vq)
                probes.append(self)

        bench.UsedIndexProbe = Probe
        try:
            row = await bench._measure(tb, drv, p, rng)
        finally:
            bench.UsedIndexProbe = original
        tb.check_bridge()
        # The bench's steady window: from the used->idx write that published completion qd to
        # the one that published completion requests + qd - 1 (as UsedIndexProbe.rate).
        writes = probes[0].writes
        base = writes[0][1] - 1
        warm, last = p["qd"], p["requests"] + p["qd"] - 1
        t0 = next(t for t, v in writes if v - base >= warm)
        t1 = next(t for t, v in writes if v - base >= last)
        row.update(sampler.result(sampler.cycle(t0), sampler.cycle(t1)))
        return [row]

    await bench_test(measure)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, choices=(64, 128, 256), default=256)
    ap.add_argument("--op", choices=("randread", "randwrite"), default="randwrite")
    ap.add_argument("--qd", type=int, default=32)
    ap.add_argument("--latency-ns", type=int, default=1000)
    ap.add_argument("--requests", type=int)
    ap.add_argument("--blk-options", type=json.loads, default=None,
                    help="JSON: extra VirtioBlkDevice parameters (e.g. '{\"slots\": 16}')")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    extra = {"blk_options": args.blk_options} if args.blk_options else None
    row = run_profile(width=args.width, op=args.op, qd=args.qd, latency_ns=args.latency_ns,
                      requests=args.requests, extra=extra)
    print(json.dumps(row) if args.json else format_profile(row))


if __name__ == "__main__":
    sys.exit(main())
