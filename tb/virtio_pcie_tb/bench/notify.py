# SPDX-License-Identifier: BSD-2-Clause
"""Doorbells and interrupts per request of the virtqueue engine under a streaming load.

::

    host.virtqueue.Virtqueue (virtio_ring.c: kick_prepare, get_buf, disable_cb/enable_cb)
        │ add, kick ───────────► control.notify ──┐
        │ ◄── irq (after irq_ns) ◄─ control.irq ◄─┤ VirtqueueEngine ◄══ dma ══ DmaClientModel
        │ resubmit (after submit_ns)              │                        (latency_ns reads)
    streaming device: takes each chain, finishes one every service_ns, completes it

A block-style host keeps ``qd`` requests in flight on one queue: each request is a 16-byte
header, a 4 KiB data buffer and a status byte (an indirect table with INDIRECT_DESC, as
Linux). The interrupt handler is virtio_blk's ``virtblk_done`` (disable_cb, get_buf until
empty, enable_cb, again if more arrived); completed requests are resubmitted as one batch and
kicked if ``kick_prepare`` says so. Counts are taken after a warm-up of ``qd`` requests.

:func:`notify_bench` builds the engine, runs this module's cocotb test and returns table rows.
"""

import json
import os
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, Event, Timer
from cocotb.utils import get_sim_time

from virtio_pcie.virtio.virtqueue import (DEFAULT_IRQ_HOLDOFF, DEFAULT_IRQ_LOW_WATER,
                                          VirtqueueEngine)

from .. import harness

__all__ = ["notify_bench", "BENCH_PARAMS"]

CLOCK_NS = 4

#: The engine measured: shaped as the blk device builds it (one port of pushed queues, no avail
#: look-ahead, the fast refill with a 64-descriptor early window, as at 128 and 256 bits).
BENCH_PARAMS = {"queue_count": 64, "max_queue_size": 256, "max_chain": 64,
                "avail_lookahead": False, "walk_window": 64, "fast_refill": True}


@cocotb.test()
async def run_notify(dut):
    from ..host.virtqueue import Sg, Virtqueue
    from ..virtq_tb import EngineTB

    cfg = json.loads(os.environ["NOTIFY_BENCH"])
    qd, event_idx = cfg["qd"], cfg["event_idx"]
    latency = max(1, round(cfg["latency_ns"] / CLOCK_NS))
    tb = EngineTB(dut, seed=cfg.get("seed", 1), read_latency=(latency, latency + 8),
                  write_latency=(4, 8), reorder=False, status_with_last_beat=0)
    await tb.reset()
    tr = tb.transport
    tr.set_features(event_idx=event_idx, indirect_desc=True)
    tr.set_irq_holdoff(cfg["irq_holdoff"], low_water=cfg["irq_low_water"])
    mem = tb.memory
    q = 0
    total = cfg["requests"]
    state = {"submitted": 0, "completed": 0}
    rounds = []
    marks = {}

    # --- the device: a serial server, one request every service_ns ---------------------------
    inbox = []
    arrived = Event()

    def on_chain(chain):
        inbox.append(chain)
        arrived.set()
    tb.device.on_chain = on_chain

    async def device():
        while True:
            while not inbox:
                arrived.clear()
                await arrived.wait()
            chain = inbox.pop(0)
            await Timer(cfg["service_ns"], "ns")
            tb.device.complete(q, chain.head, sum(s.len for s in chain.writable))
    cocotb.start_soon(device())

    # --- the host: Linux's virtio_ring and virtio_blk's completion handler -------------------
    async def notify(vq):
        tr.notify(vq.index)
        return True

    async def virtblk_done(vq):
        done = []
        while True:
            vq.disable_cb()
            while (got := vq.get_buf()) is not None:
                done.append(got[0])
            if vq.enable_cb():
                break
        before = state["completed"]
        state["completed"] += len(done)
        rounds.append(len(done))
        if before < qd <= state["completed"]:
            marks["start"] = (dict(tr.counters()), state["completed"], get_sim_time("ns"))
        if done:
            cocotb.start_soon(resubmit(done))

    vq = Virtqueue(index=q, num=cfg["queue_size"], memory=mem, vring_align=64,
                   event_idx=event_idx, indirect=True, notify=notify, callback=virtblk_done)
    tr.enable_queue(q, size=vq.num, desc=vq.desc_addr, driver=vq.avail_addr,
                    device=vq.used_addr)
    await tr.settle()
    tr.set_driver_ok()

    # One header, 4 KiB data buffer and status byte per request slot, reused.
    slots = [(mem.alloc(16), mem.alloc(4096, align=4096), mem.alloc(1, align=1))
             for _ in range(qd)]

    async def submit(tokens):
        for token in tokens:
            if state["submitted"] >= total:
                break
            hdr, data, status = slots[token]
            await vq.add_sgs([[Sg(hdr.addr, 16)], [Sg(data.addr, 4096)],
                              [Sg(status.addr, 1)]], 1, 2, token)
            state["submitted"] += 1
        await vq.kick()            # virtio_commit_rqs / bd->last: one kick decision per batch

    async def resubmit(tokens):
        await Timer(cfg["submit_ns"], "ns")
        await submit(tokens)

    irq = Event()
    tr.irq_callbacks.append(lambda queue: irq.set())
    await submit(range(qd))
    while state["completed"] < total:
        irq.clear()
        await irq.wait()
        await Timer(cfg["irq_ns"], "ns")
        await vq.vring_interrupt()
    await ClockCycles(dut.clk, 50)
    c0, n0, t0 = marks["start"]
    c1, n1, t1 = dict(tr.counters()), state["completed"], get_sim_time("ns")
    n = n1 - n0
    result = {
        "requests": n,
        "doorbells": c1["doorbells"] - c0["doorbells"],
        "interrupts": c1["interrupts"] - c0["interrupts"],
        "avail_reads": c1["avail_reads"] - c0["avail_reads"],
        "desc_reads": c1["desc_reads"] - c0["desc_reads"],
        "event_reads": c1["event_reads"] - c0["event_reads"],
        "idx_writes": c1["idx_writes"] - c0["idx_writes"],
        "time_ns": t1 - t0,
        "driver_kicks": vq.stats.kicks,
        "spurious": vq.stats.spurious,
        "reaped_per_interrupt": round(sum(rounds) / max(1, len(rounds)), 2),
        "rounds": rounds,
    }
    assert c1["errors"] == 0 and not tb.device.errors and not vq.broken, vq.broken_reason
    Path(os.getcwd(), "notify.json").write_text(json.dumps(result))


def notify_bench(*, widths=(64,), qds=(32,), event_idx=(True, False), latency_ns=800,
                 irq_ns=2000, submit_ns=1000, service_ns=100, requests=2000, queue_size=256,
                 irq_holdoff_ns=DEFAULT_IRQ_HOLDOFF * CLOCK_NS,
                 irq_low_water=DEFAULT_IRQ_LOW_WATER, engine=None, verbose=False):
    """Doorbells and interrupts per request, one row per (width, qd, event_idx).

    ``latency_ns``: host memory read round trip of the DMA model; ``irq_ns``: from the engine's
    interrupt request to the driver's handler; ``submit_ns``: from completion to resubmission;
    ``service_ns``: the device's time per request; ``irq_holdoff_ns``: the engine's interrupt
    moderation (its ``irq_holdoff`` input; 0 turns it off); ``irq_low_water``: its
    ``irq_low_water`` input. Rows: ``{bench, qd, event_idx,
    doorbells_per_req, interrupts_per_req, width, latency_ns, clock_mhz}`` plus the measured
    ``req_per_us``, ``service_ns``, ``irq_holdoff_ns`` and DMA ring reads per request.
    ``engine`` overrides engine parameters (e.g. ``{"prefetch_slots": 32}``).
    """
    rows = []
    for width in widths:
        params = dict(BENCH_PARAMS, data_width=width, **(engine or {}))
        design = harness.build(_engine(), params, name="virtqueue_blk", debug_aliases=False)
        for qd in qds:
            for ev in event_idx:
                cfg = {"qd": qd, "event_idx": bool(ev), "latency_ns": latency_ns,
                       "irq_ns": irq_ns, "submit_ns": submit_ns, "service_ns": service_ns,
                       "requests": requests + qd, "queue_size": queue_size,
                       "irq_holdoff": round(irq_holdoff_ns / CLOCK_NS),
                       "irq_low_water": irq_low_water}
                out = harness.SIM_BUILD / "bench" / \
                    f"notify-w{width}-qd{qd}-ev{int(ev)}-h{cfg['irq_holdoff']}-" \
                    f"lw{irq_low_water}"
                harness.run(design, "virtio_pcie_tb.bench.notify", test_dir=out,
                            env={"NOTIFY_BENCH": json.dumps(cfg)}, quiet=not verbose)
                r = json.loads((out / "notify.json").read_text())
                n = r["requests"]
                rows.append({
                    "bench": "notify", "qd": qd, "event_idx": bool(ev),
                    "doorbells_per_req": round(r["doorbells"] / n, 4),
                    "interrupts_per_req": round(r["interrupts"] / n, 4),
                    "width": width, "latency_ns": latency_ns, "clock_mhz": 1000 / CLOCK_NS,
                    "service_ns": service_ns, "irq_holdoff_ns": irq_holdoff_ns,
                    "irq_low_water": irq_low_water,
                    "req_per_us": round(n / (r["time_ns"] / 1000), 3),
                    "ring_reads_per_req": round((r["avail_reads"] + r["desc_reads"]) / n, 3),
                })
    return rows


def _engine():
    return VirtqueueEngine
