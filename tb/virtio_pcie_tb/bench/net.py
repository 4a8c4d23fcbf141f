# SPDX-License-Identifier: BSD-2-Clause
"""virtio-net on the whole device: frames per second each way, MAC side at line rate.

::

    VirtioNetDriver ─► RootComplex ── bridge (host latency L) ══ VirtioPcieDevice(device="net")
    (host model: start_xmit,                                      │ mac_tx ──► AxisFrameSink
     NAPI receive and refill)                                     └ mac_rx ◄── AxisFrameSource

The Linux driver model (see :mod:`.common`) runs one queue pair with the features Linux takes
from the device (MRG_RXBUF, CSUM, GUEST_CSUM, EVENT_IDX, CTRL_VQ, ...). Frames are counted as
they are on the MAC stream: Ethernet header and payload, no preamble, no FCS (the MAC adds
them), ``frame`` bytes each (64, 512 and 1514 by default; 1514 is a full 1500-byte MTU frame).

* **TX**: a packet generator calls ``start_xmit`` as fast as the queue lets it (``xmit_more``
  for all but every 8th frame, as a bulk dequeue does; the queue stops when nearly full and is
  woken by the TX completions). The MAC takes every beat at once (``tready`` always high).
* **RX**: the MAC stream carries the frames back to back, one beat per cycle — the fastest any
  MAC on this data path can deliver, above the 10 GbE line rate at 128 bits and more — to the
  device's own address; the driver's NAPI poll takes them and refills the ring as Linux does.
  Frames the device cannot place are dropped by it (``drops``).

Figures, over the steady part (the first and last 10 % of the frames left out): ``mpps`` (TX:
frames leaving on ``mac_tx``, timed there; RX: frames published in the receive queue's used ring,
timed at the device's ``used->idx`` writes) and ``efficiency``, the frame bytes moved per cycle
over the data path's ``data_width / 8`` (the virtio-net header, descriptors and used entries
come on top, on the PCIe side). ``offered_mpps`` is the MAC's rate.
"""

import json
import os

import cocotb

from .common import (CLOCK_MHZ, CLOCK_NS, UsedIndexProbe, bench_test, default_progress,
                     parallel, run_points, setup_host, sim_scale)

__all__ = ["run_net", "format_table", "DEFAULT_FRAMES", "net_design", "LINE_RATES_GBPS",
           "line_rate_mpps"]

DEFAULT_FRAMES = (64, 512, 1514)
DEFAULT_LATENCY_NS = 1000
DIRECTIONS = ("tx", "rx")
#: Ethernet line rates the figures are compared with, in Gbit/s.
LINE_RATES_GBPS = (10, 25)
#: Bytes of a frame on the wire besides the MAC-stream bytes: FCS 4, preamble and SFD 8,
#: minimum inter-frame gap 12 (IEEE 802.3).
WIRE_OVERHEAD = 4 + 8 + 12
#: Frames per point (at least; more for small frames so that a point spans enough cycles).
FRAMES_PER_POINT = {64: 1500, 512: 600, 1514: 300}


def line_rate_mpps(gbps, frame):
    """Frames per µs of an Ethernet link of ``gbps`` for ``frame`` MAC-stream bytes (a frame is
    at least 60 bytes before the FCS)."""
    return gbps * 1e3 / (8 * (max(frame, 60) + WIRE_OVERHEAD))


def net_design(width):
    """The device measured: at 128 bits the system tests' modern net build (two queue pairs, of
    which the benchmark's one-CPU driver uses one), so that the build is shared."""
    from virtio_pcie_tb.system import build_system, design_params

    from .common import build_design
    return build_design(build_system, design_params("net", width, queues=2), ports_only=True)


def run_net(*, widths=(64, 128, 256), latencies_ns=(DEFAULT_LATENCY_NS,), frames=DEFAULT_FRAMES,
            dirs=DIRECTIONS, count=None, clock_mhz=CLOCK_MHZ, link=None, progress=None,
            workers=2, **_ignored):
    """Measure every point; yields one row per point (see the module docstring)."""
    progress = progress or default_progress
    points = [{"dir": d, "frame": f, "latency_ns": lat, "clock_mhz": clock_mhz, "link": link,
               "count": count or FRAMES_PER_POINT.get(f, 1000)}
              for lat in latencies_ns for d in dirs for f in frames]

    def job(width):
        def run():
            progress(f"net: {width}-bit device (Verilator build, cached after the first run)")
            design = net_design(width)
            progress(f"net: {width} bits, {len(points)} points")
            from virtio_pcie_tb import harness
            return [dict(r, width=width) for r in run_points(
                design, "virtio_pcie_tb.bench.net", "run_net_bench", points,
                test_dir=harness.SIM_BUILD / "bench" / "net" / str(width), progress=progress,
                label=f"net: {width} bits")]
        return run

    for rows in parallel([job(w) for w in widths], workers):
        for r in rows:
            bpc = r["width"] // 8
            f = r["clock_mhz"]
            frame_cycles = r["cycles_per_frame"]
            mpps = f / frame_cycles
            row = {"bench": "net", "width": r["width"], "latency_ns": r["latency_ns"],
                   "clock_mhz": f, "dir": r["dir"], "frame": r["frame"],
                   "mpps": round(mpps, 3), "efficiency": r["frame"] / bpc / frame_cycles,
                   "cycles_per_frame": round(frame_cycles, 2),
                   "gbit_per_s": round(mpps * r["frame"] * 8 / 1e3, 2),
                   "offered_mpps": (round(f / r["offered_cycles"], 3) if r["offered_cycles"]
                                    else None),
                   "drops": r["drops"], "frames": r["frames"],
                   "line_rate_10g_mpps": round(line_rate_mpps(10, r["frame"]), 3),
                   "interrupts_per_frame": r["interrupts_per_frame"],
                   "doorbells_per_frame": r["doorbells_per_frame"]}
            if r["link"]:
                row["link"] = r["link"]
            yield row


def format_table(rows):
    """Markdown: one table per width and host latency."""
    lines = []
    for width, lat in sorted({(r["width"], r["latency_ns"]) for r in rows}):
        sel = {(r["dir"], r["frame"]): r for r in rows
               if (r["width"], r["latency_ns"]) == (width, lat)}
        lines += [f"**{width}-bit datapath, host latency {lat} ns**", "",
                  "| frame | TX Mpps | TX Gbit/s | TX eff. | RX Mpps | RX Gbit/s | RX eff. "
                  "| RX drops | 10 GbE line rate | 25 GbE |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for frame in sorted({f for _, f in sel}):
            cells = []
            for d in DIRECTIONS:
                r = sel.get((d, frame))
                cells += (["-"] * 3 if r is None else
                          [f"{r['mpps']:.2f}", f"{r['gbit_per_s']:.1f}",
                           f"{100 * r['efficiency']:.1f} %"])
            rx = sel.get(("rx", frame))
            drops = f"{rx['drops']} / {rx['drops'] + rx['frames']}" if rx else "-"
            lines.append(f"| {frame} B | " + " | ".join(cells) + f" | {drops} | "
                         f"{line_rate_mpps(10, frame):.2f} Mpps | "
                         f"{line_rate_mpps(25, frame):.2f} Mpps |")
        lines.append("")
    return "\n".join(lines)


# -- the cocotb side ------------------------------------------------------------------------------

#: EtherType of the benchmark frames: IEEE 802 local experimental (no checksum offload applies).
_ETHERTYPE = 0x88B5
_SRC_MAC = bytes.fromhex("020000000001")


def _frame(dst, size, seq):
    header = dst + _SRC_MAC + _ETHERTYPE.to_bytes(2, "big")
    body = seq.to_bytes(4, "little") + bytes((seq + i) & 0xFF for i in range(size - 18))
    return header + body[:size - len(header)]


@cocotb.test()
async def run_net_bench(dut):
    from virtio_pcie_tb.host import VirtioNetDriver

    async def measure(points):
        net = VirtioNetDriver(num_cpus=1)
        tb = await setup_host(dut, driver=net, link=points[0]["link"], mac="lean")
        source, sink = tb.mac.source, tb.mac.sink
        await net.open()
        await net.wait_link(True)
        rows = []
        for p in points:
            tb.bridge.latency_ns = p["latency_ns"] * sim_scale(p["clock_mhz"])
            measure_dir = _measure_tx if p["dir"] == "tx" else _measure_rx
            trace = _Trace(tb, net, p) if os.environ.get("NET_BENCH_TRACE") else None
            rows.append(await measure_dir(tb, net, source, sink, p))
            if trace:
                trace.close()
        tb.check_bridge()
        return rows

    await bench_test(measure)


class _Trace:
    """``NET_BENCH_TRACE=dir``: every TLP of a point, one JSON object a line, in
    ``dir/<dir>-<frame>-<latency>.jsonl`` for :mod:`virtio_pcie_tb.bench.net_profile`: the
    device's requests (``rd``/``wr``, address, bytes, tag) and the completions it receives
    (``cpl``, tag, last), with the rings of the first queue pair first."""

    def __init__(self, tb, net, p):
        from pathlib import Path

        from cocotb.utils import get_sim_time
        path = Path(os.environ["NET_BENCH_TRACE"])
        path.mkdir(parents=True, exist_ok=True)
        self.file = open(path / f"{p['dir']}-{p['frame']}-{p['latency_ns']}.jsonl", "w")
        rings = {name: {"desc": q.vq.desc_addr, "avail": q.vq.avail_addr,
                        "used": q.vq.used_addr, "num": q.vq.num}
                 for name, q in (("rx", net.rx[0]), ("tx", net.tx[0]))}
        msi = net.vdev.transport.pdev.msix_message_addresses
        self.file.write(json.dumps({"rings": rings, "msi": msi, "point": p}) + "\n")

        def sent(raw):
            if raw.is_completion or raw.is_message:
                return
            self.file.write(json.dumps({"t": get_sim_time("ns"),
                                        "k": "wr" if raw.has_data else "rd",
                                        "a": raw.address, "n": raw.length_dw * 4,
                                        "tag": raw.tag}) + "\n")

        def received(raw):
            if raw.is_completion:
                self.file.write(json.dumps({"t": get_sim_time("ns"), "k": "cpl",
                                            "tag": raw.tag,
                                            "n": len(raw.payload)}) + "\n")
        self.hooks = (sent, received)
        tb.bridge.tx_monitors.append(sent)
        tb.bridge.rx_monitors.append(received)
        self.bridge = tb.bridge

    def close(self):
        self.bridge.tx_monitors.remove(self.hooks[0])
        self.bridge.rx_monitors.remove(self.hooks[1])
        self.file.close()


def _counters(tb):
    return {k.split(".", 1)[1]: v for k, v in tb.counters().items() if k.startswith("virtq.")}


def _window(n):
    skip = max(1, n // 10)
    return skip, n - 1 - skip


async def _measure_tx(tb, net, source, sink, p):
    from cocotb.triggers import Timer, with_timeout

    n, size = p["count"], p["frame"]
    frame = _frame(b"\xff" * 6, size, 0)
    start = len(sink.times)
    c0 = _counters(tb)

    async def generator():
        for i in range(n):
            await net.send(frame, more=(i % 8 != 7 and i != n - 1))

    await with_timeout(cocotb.start_soon(generator()), 200 + n * 2, "us")
    deadline = 0
    while len(sink.times) - start < n:
        await Timer(1, "us")
        deadline += 1
        if deadline > 1000:
            raise AssertionError(f"TX: {len(sink.times) - start} of {n} frames left the MAC")
    c1 = _counters(tb)
    times = sink.times[start:start + n]
    lo, hi = _window(n)
    rate = (hi - lo) / (times[hi] - times[lo])
    await Timer(5, "us")                  # let the TX completions come back
    return _result(p, rate, None, 0, n, c0, c1)


async def _measure_rx(tb, net, source, sink, p):
    from cocotb.triggers import Timer

    n, size = p["count"], p["frame"]
    q = net.rx[0]
    probe = UsedIndexProbe(tb.bridge, q.vq)
    before = q.stats["packets"]
    c0 = _counters(tb)
    for i in range(n):
        source.send_nowait(_frame(net.mac, size, i))
    await source.wait_idle()
    idle = 0
    last = q.stats["packets"]
    while idle < 20:                       # 20 µs without a new frame: the run is over
        await Timer(1, "us")
        now = q.stats["packets"]
        idle = idle + 1 if now == last else 0
        last = now
    probe.close()
    c1 = _counters(tb)
    received = q.stats["packets"] - before
    while not q.packets.empty():
        q.packets.get_nowait()
    if received < max(20, n // 20):
        # drops are part of the figure (the MAC offers more than the device can place), but
        # too few frames for a rate means the receive path is broken
        raise AssertionError(f"RX: only {received} of {n} frames arrived")
    lo, hi = _window(received)
    rate, _, _ = probe.rate(lo, hi)
    beats = -(-size // (tb.data_width // 8))
    return _result(p, rate, beats, n - received, received, c0, c1)


def _result(p, rate_per_ns, offered_cycles, drops, frames, c0, c1):
    per = max(1, frames)
    return {**p, "cycles_per_frame": 1 / rate_per_ns / CLOCK_NS, "offered_cycles": offered_cycles,
            "drops": drops, "frames": frames,
            "interrupts_per_frame": round((c1["interrupts"] - c0["interrupts"]) / per, 4),
            "doorbells_per_frame": round((c1["doorbells"] - c0["doorbells"]) / per, 4),
            "seed": int(os.environ.get("BENCH_SEED", "1"))}
