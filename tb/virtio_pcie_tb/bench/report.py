# SPDX-License-Identifier: BSD-2-Clause
"""docs/performance.md from benchmark rows: tables, PNG plots, the targets and the anchors.

``virtio-pcie bench ... --report docs/performance.md`` calls :func:`write_report` with the rows it
measured; ``--from-json rows.jsonl`` makes the report from rows of earlier ``--json`` runs
instead of measuring again. Plots need matplotlib (the ``bench`` optional dependencies); without
it the report has the tables only and says so.
"""

import datetime
import textwrap
from pathlib import Path

from virtio_pcie_tb.models.pcie_bridge import PcieLink

from .common import CLOCK_MHZ

__all__ = ["write_report", "targets", "LINKS"]

#: PCIe links the data paths are compared with.
LINKS = ("gen2x4", "gen3x4", "gen3x8", "gen3x16", "gen4x8")
#: Max_Payload_Size of the benchmark host, the payload of a full write or completion TLP.
TLP_PAYLOAD = 256


def _fmt_size(s):
    return f"{s} B" if s < 1024 or s % 1024 else f"{s // 1024} KiB"


# -- targets -----------------------------------------------------------------------------------

def targets(rows):
    """The targets of issue 11 against the rows: a list of dicts (target, where, measured, met);
    a target with no rows is left out."""
    out = []
    dma = [r for r in rows if r["bench"] == "dma" and r["latency_ns"] == 1000
           and r["size"] >= 512 and not r.get("host_offset") and not r.get("ram_offset")]
    for width in sorted({r["width"] for r in dma}):
        sel = [r for r in dma if r["width"] == width]
        worst = min(sel, key=lambda r: r["efficiency"])
        out.append({"target": "DMA ≥ 95 % of the data path, ≥ 512 B, L = 1 µs",
                    "where": f"{width} bits",
                    "measured": f"{100 * worst['efficiency']:.1f} % (worst: {worst['dir']} "
                                f"{_fmt_size(worst['size'])})",
                    "met": worst["efficiency"] >= 0.95})
    blk = [r for r in rows if r["bench"] == "blk"]
    for r in sorted((r for r in blk if r["qd"] == 32),
                    key=lambda r: (r["width"], r["latency_ns"], r["op"])):
        out.append({"target": "blk 4 KiB QD 32 ≥ 90 % of the data path",
                    "where": f"{r['width']} bits, L = {r['latency_ns']} ns, {r['op']}",
                    "measured": f"{100 * r['efficiency']:.1f} % ({r['iops']:,} IOPS)",
                    "met": r["efficiency"] >= 0.90})
    for r in sorted((r for r in blk if r["qd"] == 1),
                    key=lambda r: (r["width"], r["latency_ns"], r["op"])):
        limit = 4 * r["latency_ns"] + 300
        out.append({"target": "blk QD 1 latency ≤ 4 × L + 0.3 µs",
                    "where": f"{r['width']} bits, L = {r['latency_ns']} ns, {r['op']}",
                    "measured": f"{r['io_latency_ns'] / 1000:.2f} µs (limit "
                                f"{limit / 1000:.2f} µs)",
                    "met": r["io_latency_ns"] <= limit})
    for r in sorted((r for r in rows if r["bench"] == "net" and r["frame"] == 64
                     and r["width"] == 128), key=lambda r: (r["latency_ns"], r["dir"])):
        out.append({"target": "net 64 B ≥ 14.88 Mpps, 128 bits at 250 MHz",
                    "where": f"{r['dir']}, L = {r['latency_ns']} ns",
                    "measured": f"{r['mpps']:.2f} Mpps",
                    "met": r["mpps"] >= 14.88})
    for r in sorted((r for r in rows if r["bench"] == "notify" and r["event_idx"]
                     and r["qd"] == 32), key=lambda r: (r["width"], r["latency_ns"])):
        worst = max(r["doorbells_per_req"], r["interrupts_per_req"])
        out.append({"target": "≤ 0.05 doorbells and interrupts per request, QD 32, EVENT_IDX",
                    "where": f"{r['width']} bits, L = {r['latency_ns']} ns",
                    "measured": f"{r['doorbells_per_req']:.3f} doorbells, "
                                f"{r['interrupts_per_req']:.3f} interrupts",
                    "met": worst <= 0.05})
    return out


# -- plots -------------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plot_dma(plt, rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, d in zip(axes, ("read", "write"), strict=True):
        for width, lat in sorted({(r["width"], r["latency_ns"]) for r in rows}):
            sel = sorted((r for r in rows if (r["width"], r["latency_ns"], r["dir"]) ==
                          (width, lat, d) and not r.get("host_offset")
                          and not r.get("ram_offset")), key=lambda r: r["size"])
            if sel:
                ax.plot([r["size"] for r in sel], [100 * r["efficiency"] for r in sel],
                        marker="o", label=f"{width} bits, L = {lat} ns")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("transfer size (bytes)")
        ax.set_title(f"DMA {d}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("% of the data path")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_blk(plt, rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, op in zip(axes, ("randread", "randwrite"), strict=True):
        for width, lat in sorted({(r["width"], r["latency_ns"]) for r in rows}):
            sel = sorted((r for r in rows if (r["width"], r["latency_ns"], r["op"]) ==
                          (width, lat, op)), key=lambda r: r["qd"])
            if sel:
                ax.plot([r["qd"] for r in sel], [r["iops"] / 1000 for r in sel], marker="o",
                        label=f"{width} bits, L = {lat} ns")
        for width in sorted({r["width"] for r in rows}):
            ax.axhline(width // 8 * CLOCK_MHZ * 1e6 / 4096 / 1000, ls=":", lw=0.8, color="gray")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("queue depth")
        ax.set_title(f"4 KiB {op} (dotted: the data path's limit)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("kIOPS")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_net(plt, rows, path):
    from .net import line_rate_mpps
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    frames = sorted({r["frame"] for r in rows})
    for ax, d in zip(axes, ("tx", "rx"), strict=True):
        for width, lat in sorted({(r["width"], r["latency_ns"]) for r in rows}):
            sel = sorted((r for r in rows if (r["width"], r["latency_ns"], r["dir"]) ==
                          (width, lat, d)), key=lambda r: r["frame"])
            if sel:
                ax.plot([r["frame"] for r in sel], [r["mpps"] for r in sel], marker="o",
                        label=f"{width} bits, L = {lat} ns")
        for gbps, style in ((10, "--"), (25, ":")):
            ax.plot(frames, [line_rate_mpps(gbps, f) for f in frames], style, color="black",
                    lw=0.8, label=f"{gbps} GbE line rate")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("frame size (bytes)")
        ax.set_title(f"virtio-net {d.upper()}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("Mpps")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _scope(benches):
    """What the rows cover: the widths and host latencies of each bench."""
    parts = []
    for name, sel in benches.items():
        if sel:
            widths = "/".join(str(w) for w in sorted({r["width"] for r in sel}))
            lats = "/".join(f"{r / 1000:g}" for r in sorted({r["latency_ns"] for r in sel}))
            parts.append(f"{name} at {widths} bits, L = {lats} µs ({len(sel)} points)")
    return "This page holds " + "; ".join(parts) + "." if parts else ""


# -- the document ------------------------------------------------------------------------------

_INTRO = """\
# Performance

*Generated by `{command}` on {date}; do not edit by hand (change
`tb/virtio_pcie_tb/bench/report.py` and run the command again).*

Every figure here is measured in clock cycles of cycle-accurate simulation (Verilator) of a
{clock} MHz core clock, so machine load does not change it, and is stated as a fraction of the
physical limit: the TLP data path, `data_width / 8` bytes per cycle each way. Figures in µs,
IOPS and Mpps are the cycle counts at {clock} MHz.

Reproduce (each command prints the tables, or with `--json` one JSON object per point;
progress goes to standard error):

```sh
virtio-pcie bench dma        # the DMA engine alone, 64 B to 64 KiB, L = 0.5 and 1 µs
virtio-pcie bench blk        # whole device, virtio-blk, 4 KiB random read/write, QD 1/8/32
virtio-pcie bench net        # whole device, virtio-net, TX and RX of 64/512/1514 B frames
virtio-pcie bench notify     # doorbells and interrupts per request, EVENT_IDX on and off
virtio-pcie bench all --json > docs/performance.jsonl    # everything, every width
virtio-pcie bench all --from-json docs/performance.jsonl --report docs/performance.md
```

The last command makes this page and its plots from the rows in `docs/performance.jsonl`
(kept in the repository, one JSON object per measured point).

{runtime}

{scope}Options: `--width 64|128|256` (default all three), `--latency-ns N` (the host latency *L*),
`--clock-mhz F` (figures at another clock: host times keep their length in ns, so their length
in cycles scales), `--link gen3x4` (add the PCIe link model below), and per bench `--size`,
`--dir`, `--op`, `--qd`, `--frame`, `--event-idx`, `--requests` (run length). A one-point run of
each bench is in the default test suite (`tb/test_bench.py`).
"""

_HOST = """\
## The host

**blk, net, notify run on the whole device**: `VirtioPcieDevice` (PCIe function, virtio
transport, DMA engine, virtqueue engine and the blk or net back-end) exactly as the system
tests build it, behind cocotbext-pcie's root complex and the project's bridge
(`tb/virtio_pcie_tb/models/pcie_bridge.py`). The driver is the Linux-faithful host model
(`tb/virtio_pcie_tb/host`, see [host-model.md](host-model.md)), bound as Linux binds it
(profile `linux-6.12`): indirect descriptors, EVENT_IDX with `used_event`/`avail_event` written
as `virtio_ring.c` writes them, the kick decision of `virtqueue_kick_prepare`, `virtblk_done`'s
and NAPI's re-check loops, the receive refill. A leaner driver was not needed: the model's hot
path is a few hundred lines of Python per request, which costs less wall time than simulating
the cycles the request takes, and only the full model makes the notification counts Linux's.
The host's CPU costs no simulated time (an infinitely fast CPU; what is measured is the device),
except in the notify bench, whose host takes 2 µs from an MSI-X message to its handler and 1 µs
to resubmit a completed request, so that completions batch as they do on a real host.

blk requests are `fio`-like: `qd` jobs on one queue, each keeping one 4 KiB request (header,
one data buffer, status byte, in an indirect table) at a random 4 KiB-aligned place of the
32 MiB disk in flight, resubmitting as soon as it completes; every read is compared with the
disk image and every write's status checked. The disk is the device's AXI4 medium port with
cocotbext-axi's RAM model behind it (one beat per cycle each way, no latency). net frames are
counted on the MAC stream (header and payload, no preamble or FCS): TX frames leave on `mac_tx`,
which is always ready; RX frames are offered on `mac_rx` back to back, one beat per cycle (the
fastest any MAC on this data path can deliver), and the driver's NAPI poll takes them and
refills as Linux does.

Rates are taken over the steady part of each run, from the device's own `used->idx` writes
(blk, net RX) or the MAC stream (net TX), not from the host's view, which interrupts batch.

## The host latency model

The bridge stands between the root complex model (which answers a read in zero time, at any
rate) and the device, and behaves like a real root complex and link:

* **Latency *L*** (`--latency-ns`): every completion reaches the device no earlier than *L*
  after its read request reached the host: the memory read latency an endpoint sees, the whole
  round trip. Typical hosts: 0.5 to 1 µs (more behind a switch or with an IOMMU miss).
* **Outstanding reads**: the host works on at most {max_reads} reads at once (its read tracking
  and the Non-Posted credits it advertises); a read holds its place from the moment the host
  takes it until its last completion has reached the device, and further reads wait in the
  link. Posted writes, messages and completions are not held up behind a waiting read (separate
  flow-control classes, PCIe Base 4.0 §2.4.1); reads stay in order. With {max_reads} places the
  limit does not bind here: the device's DMA engine keeps at most 32 reads in progress, and the
  bandwidth-delay product at 1 µs is 4 KiB at 128 bits (8 KiB at 256 bits).
* **Completion size**: completions are cut at Max_Payload_Size 256 B, the device's reads at
  Max_Read_Request_Size 512 B, as Linux leaves a typical host; extended tags on.
* **Link** (`--link genGxN`, off by default): each direction carries one TLP after the other at
  the link's byte rate, each TLP costing its header, payload and 8 bytes of framing, sequence
  number and LCRC; the device's transmit side is held back once 4 KiB wait for the link, as a
  hard IP's transmit buffer does. Off, the device's data path is the only limit.
* Available for tests, not used by the benches: completion reordering across tags and
  completions split at the 64/128-byte RCB.

**Not modelled**: the latency of posted writes (a write, an MSI-X message included, is
visible to the host as soon as it leaves the device), the latency of the host's own MMIO
requests (a doorbell reaches the device at once), DLLPs (ACK/NAK, flow-control updates) and
SKP ordered sets (a few percent of a real link), host memory bandwidth and cache effects.

### The link behind the data path

A full TLP carries {payload} B of payload (Max_Payload_Size) in {wire} B on the link (12-byte
header of a 32-bit-address TLP, 8 bytes of framing, sequence number and LCRC): the link's
payload bandwidth is {eff:.1f} % of its raw rate, DLLPs not counted.

{links}
"""


def _link_table():
    lines = ["| link | raw Gbit/s each way | payload Gbit/s (256 B TLPs) | "
             "vs 64-bit data path | vs 128-bit | vs 256-bit |",
             "|---|---:|---:|---:|---:|---:|"]
    for name in LINKS:
        link = PcieLink.parse(name)
        raw = link.bytes_per_ns * 8
        payload = raw * link.payload_efficiency(TLP_PAYLOAD)
        cells = [f"{payload / (w * CLOCK_MHZ / 1000):.2f} ×" for w in (64, 128, 256)]
        lines.append(f"| {name} | {raw:.1f} | {payload:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "The data paths at 250 MHz: 64 bits 16 Gbit/s, 128 bits 32 Gbit/s, 256 bits "
              "64 Gbit/s each way. A ratio below 1 means the link, not the data path, is the "
              "limit: a 128-bit core on Gen3 x4 is link-bound at about 92 % of its data path, "
              "on Gen3 x8 it is the data path that limits."]
    return "\n".join(lines)


_ANCHORS = """\
## Compared with the anchors

* **DMA line rate, Corundum / verilog-pcie**: Corundum's DMA engine (built on verilog-pcie)
  sustains a 100 Gbit/s NIC on PCIe Gen3 x16 (FCCM 2020) — a 512-bit interface at 250 MHz,
  about 80 % of its 128 Gbit/s data path, bound by the link (Gen3 x16 carries about 116 Gbit/s
  of 256-byte-payload TLPs). Its DMA microbenchmark curves are not published; this project's
  engine moves {dma_best} of its data path for transfers of 512 B and more at 1 µs, so on any
  link narrower than its data path the link is the limit, as for Corundum.
* **Ethernet line rates**: 10 GbE carries 14.88 Mpps of minimum-size frames (60 bytes on the
  MAC stream, 84 on the wire with FCS, preamble and inter-frame gap). The net bench counts
  frame sizes as MAC-stream bytes (no FCS), so its 64 B frames are 88 bytes on the wire: 14.20
  Mpps at 10 GbE; 512 B: 2.33 Mpps; 1514 B (a full 1500-byte MTU frame): 0.81 Mpps; 25 GbE
  carries 2.5 times as many. The net tables give both line rates next to each figure.
* **Hardware virtio devices** (BU/Red Hat's XDMA prototype, RSPwFPGAs' virtio-fpga, e-trees'
  virtio-MMIO devices): none publishes performance figures, so there is no figure to compare
  with; these are the first published for an open virtio-PCIe core.
"""


def write_report(rows, path, *, command="virtio-pcie bench all --report docs/performance.md",
                 note=""):
    """Write the Markdown report of ``rows`` to ``path`` and its PNG plots next to it.
    ``note``: a paragraph on how the rows were measured (e.g. which widths), or empty."""
    from .common import HOST_BRIDGE
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    benches = {name: [r for r in rows if r.get("bench") == name]
               for name in ("dma", "blk", "net", "notify")}
    synth = [r for r in rows if "family" in r and "luts" in r]
    rows = [r for r in rows if r.get("bench")]
    plt = _pyplot()
    link = PcieLink(3, 4)
    scope = _scope(benches) + (f" {note.strip()}" if note.strip() else "") + "\n\n"
    parts = [_INTRO.format(command=command, clock=CLOCK_MHZ, scope=scope, runtime=_RUNTIME,
                           date=datetime.date.today().isoformat()),
             _HOST.format(max_reads=HOST_BRIDGE["max_reads_in_flight"], payload=TLP_PAYLOAD,
                          wire=TLP_PAYLOAD + 12 + 8,
                          eff=100 * link.payload_efficiency(TLP_PAYLOAD),
                          links=_link_table())]

    met = targets(rows)
    if met:
        parts.append("## Targets\n\n| target | where | measured | met |\n|---|---|---|---|\n" +
                     "\n".join(f"| {t['target']} | {t['where']} | {t['measured']} | "
                               f"{'yes' if t['met'] else '**no**'} |" for t in met) + "\n")
        missed = [t for t in met if not t["met"]]
        if missed:
            parts.append(_MISSED)

    def plot(name, maker, sel):
        if plt is None:
            return "*(plot not made: matplotlib is not installed; `pip install .[bench]`)*\n"
        png = path.parent / f"performance-{name}.png"
        maker(plt, sel, png)
        return f"![{name}]({png.name})\n"

    if benches["dma"]:
        from .dma import format_table
        parts.append(_DMA + "\n" + plot("dma", _plot_dma, benches["dma"]) + "\n" +
                     format_table(benches["dma"]))
    if benches["blk"]:
        from .blk import format_table
        parts.append(_BLK + "\n" + plot("blk", _plot_blk, benches["blk"]) + "\n" +
                     format_table(benches["blk"]))
        if any(r["qd"] == 1 and r["io_latency_ns"] > 4 * r["latency_ns"] + 300
               for r in benches["blk"]):
            parts.append(_QD1)
        if any(r["qd"] == 32 and r["efficiency"] < 0.90 for r in benches["blk"]):
            parts.append(_QD32)
    if benches["net"]:
        from .net import format_table
        parts.append(_NET + "\n" + plot("net", _plot_net, benches["net"]) + "\n" +
                     format_table(benches["net"]))
        parts.append(_net_why(benches["net"]))
    if benches["notify"]:
        from .blk import format_notify_table
        parts.append(_NOTIFY + "\n" + format_notify_table(benches["notify"]))
        parts.append(_NOTIFY_HOW)
        wide = _notify_wide(benches["notify"], benches["blk"])
        if wide:
            parts.append(wide)
    if synth:
        parts.append(_SYNTH + "\n" + _synth_table(synth))
        slow = [r for r in synth if r.get("fmax_mhz", 1e9) < r.get("target_mhz", 0)]
        if slow:
            parts.append(_fmax_why(slow))
    best = [t for t in met if t["target"].startswith("DMA")]
    parts.append(_ANCHORS.format(dma_best="≥ 95 %" if best and all(t["met"] for t in best)
                                 else "the fraction in the DMA tables"))
    path.write_text("\n".join(p.rstrip() + "\n" for p in parts))
    return path


#: How long ``bench all`` takes (measured by hand; see the text).
_RUNTIME = """\
**Run time.** `bench all` runs the four benchmarks side by side: their simulations share two
simulator processes taken in turn (`BENCH_WORKERS`, default 2, one per core), so both cores stay
busy until the last simulation ends instead of one idling while each benchmark's last width
finishes, and each distinct design is built once (nine Verilator builds: dma, blk and net at
three widths; notify runs on blk's). Each job's progress line (standard error) gives its
simulator's CPU time and the time it simulated. `bench net` and `bench notify` measure all three
widths by default, as `all` does.

How long `all` takes was timed in this round: 14 min 33 s of wall time (900 s of user CPU,
`/usr/bin/time`) for every point, nine Verilator builds included, on a 2-core machine that was
running a full `make test` at the same time, inside the 20-minute budget; an idle machine is
faster. (The blk and notify rows were measured again later, with the per-width interrupt
moderation of `VirtioPcieDevice`.) Simulator CPU per job, measured earlier: dma
76 s (64 bits), 59 s (128); blk 139 s (64), 106 s (128), 76 s (256); net 31 s (64), 25 s (128);
notify 18 s per EVENT_IDX setting at 64 bits.
"""


_SYNTH = """\
## Size and Fmax (out of context)

`virtio-pcie synth --family ecp5|xilinx7 --device blk|net --json` synthesises
`VirtioPcieDevice` on its own (its TLP streams, medium or MAC streams and counters as ports; the
PCIe hard IP or soft PCIe core is not in it) with Yosys from YoWASP; for ECP5, nextpnr-ecp5
places and routes it out of context on a LFE5UM5G-85F (speed 8) for Fmax of the 250 MHz clock.
7-series figures have no timing (there is no open 7-series place and route on PyPI). ECP5 LUTs
count a carry cell (CCU2C) as two LUT4s; ECP5 block RAMs are DP16KD (18 kbit), 7-series block
RAMs are counted in RAMB36 (36 kbit) units. The rows are kept in `docs/synth.jsonl`
(`virtio-pcie synth ... --json >> docs/synth.jsonl`) and given to the report command with a
second `--from-json`. The 7-series core has `config_mode="ext"` (the hard IP owns the
configuration header), the ECP5 core its own configuration space.
"""


def _synth_table(rows):
    lines = ["| core | family | LUTs | flip-flops | block RAMs | DSPs | Fmax |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["device"], r["width"], r["family"])):
        fmax = (f"{r['fmax_mhz']:.0f} MHz" if "fmax_mhz" in r else "-")
        lines.append(f"| {r['device']}, {r['width']} bits | {r['family']} | {r['luts']:,} | "
                     f"{r['ffs']:,} | {r['brams']:g} | {r.get('dsps', 0)} | {fmax} |")
    return "\n".join(lines) + "\n"


def _fmax_why(rows):
    """Why Fmax misses the target: each core's worst path, as nextpnr reported it."""
    lines = ["**Fmax below 250 MHz on ECP5.** The worst path nextpnr-ecp5 reports (the cell names",
             "carry the netlist's signal names; details in",
             "`sim_build/synth/ecp5-<device>-<width>/nextpnr.log`):", ""]
    for r in sorted(rows, key=lambda r: (r["device"], r["width"])):
        path = r.get("critical_path")
        if path is None:
            lines.append(f"* {r['device']}, {r['width']} bits: {r['fmax_mhz']:.1f} MHz (no path "
                         f"in the row)")
            continue
        lines.append(f"* {r['device']}, {r['width']} bits, {r['fmax_mhz']:.1f} MHz: from "
                     f"`{path['from']}` to `{path['to']}`, {path['nets']} nets, "
                     f"{path['logic_ns']:.1f} ns of logic and {path['routing_ns']:.1f} ns of "
                     f"routing.")
    lines += ["", _FMAX_HISTORY]
    return "\n".join(lines) + "\n"


_FMAX_HISTORY = """\
The worst path was the DMA read engine's MRd issue decision (43.7 MHz: 38 nets from the
configuration's Max_Read_Request_Size through the MRd's length, its completion space and
credit check, the request slot's ready and the request arbiter into the virtqueue engine); the
engine now precomputes those values into registers without changing what it does in any cycle
([dma.md](dma.md), "Timing"). The 7-series figures have no timing to compare (no open 7-series
place and route on PyPI)."""


_MISSED = """\
Where a target is missed, the section of the bench says why (which block stalls, in cycles).
"""

_QD32 = """\
### Where QD 32 writes fall short of 90 %

A write moves its 4 KiB from the host: the device's DMA reads (512-byte requests, 256-byte
completions) and the virtqueue engine's ring, descriptor and indirect-table reads and the blk
slot's request-header read all come back on the inbound data path (`rx_cpl`), in about the
order of the requests. A profile of 128-bit writes at QD 32, L = 1 µs, before the fix below
(`BENCH_TRACE=... virtio-pcie bench blk --width 128 --qd 32 --op randwrite --latency-ns 1000
--requests 96`, every TLP with its time) showed:

* the device kept about 16 KiB of reads outstanding (median 15.4 KiB): the DMA read engine's
  completion-buffer limit (`cpl_buffer_bytes`), four times the bandwidth-delay product at
  1 µs (4 KiB at 16 B per cycle);
* so completions queued in order behind about 12 KiB of earlier data, and a read's median
  round trip was 3.7 µs against L = 1 µs — the small control reads too (`avail->idx`,
  descriptors, request headers: median 3.6-3.8 µs);
* the chain walks and header reads, each waiting ≈ 3.7 µs behind the data, delayed the next
  requests' data reads, so the data stream had gaps: 87.4 % at 128 bits, L = 1 µs.

**The fix**: the DMA engine's per-client `read_budget` ([dma.md](dma.md)); `VirtioPcieDevice`
gives the blk device's reads 1.5 µs of data (384 cycles of the data path: 3, 6 and 12 KiB at
64, 128 and 256 bits), so its data stays near the bandwidth-delay product and the virtqueue
engine's reads wait for little data. Before → after (QD 32, 4 KiB):

| width | L | randwrite | randread |
|---|---:|---|---|
| 64 bits | 0.5 µs | 95.8 % → 96.7 % | 98.2 % → 97.9 % |
| 64 bits | 1 µs | 93.5 % → 92.0 % | 98.4 % → 98.3 % |
| 128 bits | 0.5 µs | 92.2 % → 96.6 % | 97.4 % → 97.4 % |
| 128 bits | 1 µs | 87.4 % → 96.6 % | 97.8 % → 97.5 % |
| 256 bits | 0.5 µs | 86.3 % → 90.8 % | 95.2 % → 95.1 % |
| 256 bits | 1 µs | 78.6 % → 85.9 % | 95.5 % → 94.6 % |

At 256 bits and L = 1 µs writes still missed 90 % with the budget (85.9 %). A profile of the
blk slots (`python -m virtio_pcie_tb.bench.blk_profile --width 256 --op randwrite --qd 32
--latency-ns 1000 --requests 128`: the bench's point on a build with internal signals visible,
each slot's state sampled every cycle, over the bench's steady window) showed where a
request's ≈ 1050 cycles in its slot went: 57 waiting for the scatter-gather reader (busy
with other slots' reads held by the budget), 455 until its header and first chunk had landed,
319 for the rest of its data and the medium writes, 10 for the status byte, and **202 waiting
for the virtqueue engine to take its used entry** (the engine takes entries only between
publishing a batch and reading `used_event`, a host round trip). The eight slots were all busy
71 % of the cycles.

**Fix**: the blk device queues used entries (`slots` deep) and frees the slot at once: a
request's turn drops to ≈ 1000 cycles and the point from 85.9 % to 88.5 % (90.6 % at
0.5 µs, unchanged; QD 8 writes at 128 bits gain 5-6 points). Still short of 90 %. Rows
measured with it: every 128-bit row and the 256-bit QD 32 rows; the 64-bit rows and the
256-bit QD 1 and 8 rows are from earlier builds (QD 1 and 8 from before the read budget).
What is left is outside the device: with the used queue the slots are all busy only 60 % of
the cycles, and 38 % of the cycles a slot is free while the engine offers no chain; the blk
reads wait for the budget 74 % of the cycles with about 10.5 KiB outstanding, and `rx_cpl`
is busy 91 % of the cycles. The workload is a closed loop of 32 requests: a request's
turn in the device, its used entry, the host's interrupt (≈ 7 completions per interrupt with
EVENT_IDX), the resubmission and the engine's walk of the next chain (`avail`, descriptor and
indirect-table reads, each L plus ≈ 120 cycles behind the completion data queued beyond the
bandwidth-delay product). Tried and not kept, measured the same way: 12 slots 82.7 %, 16 slots
of 2 KiB 78.9 % (a request's share of the budget shrinks, so each stays longer in the device
and the loop slows), slots served one after another by the read arbiter instead of round
robin 87.3 %.
"""


_QD1 = """\
### Why QD 1 latency misses 4 × L + 0.3 µs

A profile of one QD 1 read at L = 1 µs on the 128-bit device (every TLP with its time, from
`BENCH_TRACE=/tmp/trace virtio-pcie bench blk --width 128 --qd 1 --op randread --latency-ns
1000 --requests 8`), from the driver's submission (an instant host resubmits when it sees the
previous completion) to the driver seeing the completion:

| ns | step |
|---:|---|
| 0 | doorbell (the host's MMIO write reaches the device at once) |
| 52 → 1056 | read `avail->idx` (round trip 1) |
| 1088 → 2092 | read the avail ring entry (2) |
| 2132 → 3148 | read the head descriptor, 64-byte window (3) |
| 3192 → 4204 | read the indirect table, 48 bytes (4) |
| 4340 → 5344 | the blk slot reads the 16-byte request header (5), beside a poll of `avail->idx` |
| 5372 → 6392 | EVENT_IDX: `avail_event` written, `avail->idx` re-read (overlaps the medium) |
| ≈ 5744 | first data write: the first 1 KiB chunk through the medium (≈ 400 ns after the header) |
| 6748 | status byte written, after 4 KiB of data writes (1 µs at 128 bits) |
| 6800 | used element and `used->idx` written |
| 6820 → 7868 | EVENT_IDX: read `used_event` to decide on the interrupt (6), MSI-X message |

That profile predates the early `used_event` read: the virtqueue engine now reads `used_event`
when the chain is committed to the device, while the request is in progress, and when that value
already says "notify" (as it does at QD 1: Linux re-armed before submitting) the MSI-X message
follows the `used->idx` write at once; it reads again after the index write only when the early
value says "no" (the re-check race stays covered). That took step 6 off: 6.85 µs at L = 1 µs
(7.89 µs before), 4.33 µs at 500 ns (4.87 µs). The blk engine's fast refill (tenth round) then
took step 3 off: the head descriptor comes with the ring entry, in the early window (64
descriptors where the last heads were, read with the ring entries), so the indirect table is
read as soon as the entry lands: 6.11 µs at L = 1 µs, 4.09 µs at 500 ns. VIRTIO_F_NOTIFICATION_DATA
(eleventh round; Linux 6.4 and later write the avail index into the doorbell) then took step 1
off: the ring entry and the early window are read right behind `avail->idx`, not after it
(docs/virtqueue.md, "Notification data"): 5.07 µs at L = 1 µs, 3.56 µs at 500 ns (256 bits:
4.45 and 2.79 µs; 64 bits: 6.25 and 4.75 µs).

Three dependent host round trips (3 × L: ring entry with the window, indirect table, request
header), 1 µs of data on the 128-bit path, 0.4 µs through the medium before the first data
write and ≈ 0.7 µs of engine and device steps: 5.07 µs, against the target's 4 × L + 0.3 µs =
4.3 µs. The round trips are now within the target; the data time alone (1 µs at 128 bits,
0.5 µs at 256) exceeds its 0.3 µs. What would take more off, not done: a 512-byte first chunk
halves the medium's part (about 4.9 µs at 128 bits); at 256 bits and L = 1 µs the device is
0.15 µs over.
"""

_DMA = """\
## DMA engine

The DMA engine alone ([dma.md](dma.md)) behind the same bridge: one client submits a run of
equal transfers at once (16 to 256, at least 256 KiB in all); the figure is the sustained rate,
the bytes of all but the first transfer over the cycles from the first status to the last. A
transfer is at most 65535 bytes (the request's 16-bit length), so that is the last size.

Misaligned transfers (`virtio-pcie bench dma --host-offset 1 --buffer-offset 0`; tables appear
here when such rows are given) need more than `size / (data_width / 8)` cycles however they are
done: the payload starts at the dword holding the first byte and each TLP starts a new beat,
and the bytes span one more buffer row. The engine's bound is one extra beat per transfer, not
per TLP (e.g. 512 B from host offset 1 at 256 bits: 17 beats, 16/17 = 94.1 %).
"""

_BLK = """\
## virtio-blk: 4 KiB random I/O on the whole device

`efficiency` is the request's data on the data path (`4096 / (data_width / 8)` cycles) over
the cycles per request. The status bytes, used entries, MSI-X messages, descriptor and ring
reads share the same data path, so 100 % is out of reach by a few percent. Latency is the mean
from `virtio_queue_rq` to the completion reaching the driver.
"""

_NET = """\
## virtio-net: frames per second on the whole device

`efficiency` is frame bytes per cycle over the data path's bytes per cycle; the 12-byte
virtio-net header, descriptors and used entries come on top, on the PCIe side. RX drops are
frames the device dropped because the driver had no buffer ready (counted, never lost silently).
"""

_NOTIFY = """\
## Notifications: doorbells and interrupts per request

4 KiB random reads at QD 32 streaming on the whole blk device, L = 1 µs, with a host whose CPU
takes time (interrupt handler 2 µs after the message, resubmission 1 µs after the handler saw a
completion), with VIRTIO_F_EVENT_IDX negotiated and, for comparison, without (a host that does
not accept the feature). Doorbells and interrupts are the device's own counters.
"""


def _net_why(rows):
    """Why small frames are slow, with the figures at each host latency that was measured."""
    by = {(r["width"], r["dir"], r["frame"], r["latency_ns"]): r for r in rows}
    pairs = []
    for (width, d, frame, lat), r in sorted(by.items()):
        if frame == min(f for _, _, f, _ in by) and d == "tx":
            pairs.append(f"{r['cycles_per_frame']:.1f} cycles per frame at L = {lat} ns "
                         f"({width} bits)")
    seen = "; ".join(pairs)
    return f"""\
### Why small frames miss the line rate

A frame's cost in cycles grows with the host latency ({seen}): the device is bound by host
round trips per frame, not by its data path. The likely cause (not profiled frame by frame): the
virtqueue engine walks one descriptor chain at
a time ([virtqueue.md](virtqueue.md), limitations); a head descriptor that is not in the window
it already fetched costs a round trip. Linux's TX heads come back from the free list in
completion order, so they scatter over the table; RX buffers are single descriptors refilled in
order, but each batch of refills is read only after its `avail->idx` read. At 64 B the data
takes 4 cycles, so a round trip every few frames dominates. Large frames amortise it: TX of
512 B frames and more is above the 10 GbE line rate at 1 µs. RX drops count frames the MAC
offered while the ring had no posted buffer (the MAC offers frames back to back, above any
line rate). What would fix it, not done: several descriptor walks in flight in the virtqueue
engine (the fetch of chain *n + 1* while *n* is checked), and a larger descriptor window for
the scattered TX heads.
"""


_NOTIFY_HOW = """\
### How interrupts stay at or below 0.05 per request

With EVENT_IDX Linux's `virtblk_done` re-arms at every handler run (`virtqueue_enable_cb`), so
without moderation there is one interrupt per handler run: about 6 requests each at this rate.
The virtqueue engine's adaptive moderation ([virtqueue.md](virtqueue.md)) holds a due
notification while the device has more than `irq_low_water` chains of the queue in hand, for at
most `irq_holdoff` cycles, and lets it go as soon as the queue runs down to the low-water mark
(decided at every update of the held queue), so that the host refills while the device still
has work; after an interrupt, the chains of the refill it asked for count as in hand until they
arrive. Chains count as in hand from the engine's read of their ring entries (tenth round;
before, from their commit to the device, which made a queue whose refill was being walked look
dry). The whole device's values depend on the width: 64 bits 8 chains and 16384 cycles
(65.5 µs; a request takes ~2 µs there), 128 bits 13 chains and 8192 cycles, 256 bits 17 chains
and 16384 cycles (since the thirteenth round; off before). At QD 1 nothing is held. Doorbells
stay low because the engine keeps polling `avail->idx` while it has work, and without EVENT_IDX
a driver that reaps 20 completions per interrupt resubmits them with one kick.
"""

def _notify_wide(notify_rows, blk_rows):
    """What the 256-bit default moderation costs, with the measured figures of the notify row
    (EVENT_IDX, QD 32) and, where measured, the blk bench's 256-bit QD 32 reads at the same
    host latency; None without a 256-bit notify row."""
    row = next((r for r in notify_rows
                if r["width"] == 256 and r["event_idx"] and r["qd"] == 32), None)
    if row is None:
        return None
    read = next((r for r in blk_rows if (r["width"], r["op"], r["qd"], r["latency_ns"]) ==
                 (256, "randread", 32, row["latency_ns"])), None)
    default = (f"{row['interrupts_per_req']:.3f} interrupts per request at "
               f"{row['efficiency']:.1%} of the data path, {row['iops'] / 1e6:.2f} M IOPS"
               ).replace("%", " %")
    instant = ("" if read is None else "\n" + textwrap.fill(
        f"With the benchmark's host that reaps at once (the blk tables above) the mark costs "
        f"nothing: QD 32 reads at {read['efficiency']:.1%} with "
        f"{read['interrupts_per_req']:.3f} interrupts per request (0.388 with moderation off)."
        .replace("%", " %"), width=96) + "\n")
    return _NOTIFY_WIDE.format(default=default, instant=instant)


_NOTIFY_WIDE = """\
### What ≤ 0.05 costs at 256 bits

The refill time bounds what any release rule can reach. At the message the device must still
hold the refill time D of work, and the handler reaps 2 µs later, so a request time t allows at
most QD - (D - 2 µs) / t requests per interrupt without running dry. In a trace at 256 bits
(L = 1 µs, this host, mark 14) the message goes at 0, the refill is published at 3.0 µs, the
engine reads `avail->idx` at 3.05 µs, the ring entries with the early window at 4.1 µs, the
indirect tables from 5.3 µs, and the first refilled request header at 6.5 µs (before the fast
refill: tables from 6.2 µs, header 7.4 µs). With this host the bound leaves 256 bits almost
no room: the refilled data flows about 7.5 µs after the message, 15 requests' worth, so even a
perfect release reaps about 32 - 15 + 4 = 21 requests per interrupt (0.047) at the full data
path. Swept at 256 bits (512 requests, holdoff 16384; since the twelfth round, with
EVENT_IDX, a notification after an interrupt above the mark waits for the whole refill, which
removed a stable mode of half-size batches, see virtqueue.md): marks 15 and 16 give 0.045
interrupts per request at 83 % of the data path, 17 gives 0.047 at 85 %, 18 gives 0.053 at
88 %. The whole device takes mark 17 and 16384 cycles at 256 bits (thirteenth round; the table
above: {default}), where moderation
off (`VirtioPcieDevice(irq_holdoff=0)`, the 256-bit default until then) gives 0.160 at 96.1 %
(1.88 M IOPS): one interrupt per handler run, about 6 requests. Behind a Gen3 x8 link
(`--link gen3x8`, which caps the unmoderated device at 87.5 % with 0.131 interrupts per
request) marks 16 and 17 give 0.053 at 75.5 %, and no mark reaches 0.05 there. An application
that wants the last 11 points of the data path more than one interrupt per 21 requests builds
with `irq_holdoff=0`.
VIRTIO_F_NOTIFICATION_DATA (eleventh round) takes the `avail->idx` round trip off
a kicked refill's first entries only: a driver that rings at its first resubmitted request (the
benchmark's host, like fio with one I/O per submission) publishes the rest after the doorbell.
An `avail_event` placed ahead by the refill still expected, so that the doorbell comes with the
refill's bulk (tried in the twelfth round, not kept), sped the refill's reads up by 1.2 µs and
raised the data path at every mark, but left ≤ 0.05 at 85 %: the refill's chains still need two
dependent round trips (indirect table, request header) before their data.
{instant}"""
