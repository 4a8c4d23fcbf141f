# SPDX-License-Identifier: BSD-2-Clause
"""Where a net benchmark point's host round trips go: a TLP trace, classified.

Record a trace with ``NET_BENCH_TRACE=<dir> virtio-pcie bench net ...`` (one file per point, see
:class:`virtio_pcie_tb.bench.net._Trace`), then::

    python -m virtio_pcie_tb.bench.net_profile <dir>/tx-64-500.jsonl [--timeline N]

Every request the device sends is classified by its address against the first queue pair's
rings (``avail_idx``: ``avail->flags/idx``; ``avail_ring``; ``desc``; ``used_event``; writes:
``used_elem``, ``used_idx``, ``avail_event``; ``data`` for frame buffers, ``msi`` for the rest)
and counted per frame of the steady part; each read's round trip (request to its last completion)
is averaged, and the *engine-busy* figure says how much of the time at least one ring or
descriptor read was outstanding (reads of the virtqueue engine are issued one after the other,
so that time is what they cost the frame rate).
"""

import argparse
import json
from collections import Counter, defaultdict

from virtio_pcie.spec.virtio import (VIRTQ_IDX_BYTES, virtq_avail_event_offset,
                                     virtq_avail_ring_offset, virtq_desc_size,
                                     virtq_used_event_offset, virtq_used_ring_offset)

__all__ = ["load", "classify", "profile"]


def load(path):
    with open(path) as f:
        head = json.loads(f.readline())
        events = [json.loads(line) for line in f]
    return head, events


def _ring_areas(r):
    """Byte ranges of one queue's ring structures, from the split-ring layout in spec/."""
    num, avail, used = r["num"], r["avail"], r["used"]
    # Requests are dword aligned: the le16 event fields are reached from the dword they sit in.
    return {
        "avail_idx":   (avail, avail + virtq_avail_ring_offset(0)),
        "avail_ring":  (avail + virtq_avail_ring_offset(0), avail + virtq_avail_ring_offset(num)),
        "used_event":  (avail + virtq_used_event_offset(num) & ~3,
                        avail + virtq_used_event_offset(num) + VIRTQ_IDX_BYTES),
        "desc":        (r["desc"], r["desc"] + virtq_desc_size(num)),
        "used_idx":    (used, used + virtq_used_ring_offset(0)),
        "used_elem":   (used + virtq_used_ring_offset(0), used + virtq_used_ring_offset(num)),
        "avail_event": (used + virtq_avail_event_offset(num) & ~3,
                        used + virtq_avail_event_offset(num) + VIRTQ_IDX_BYTES),
    }


_READ_AREAS = ("avail_idx", "avail_ring", "used_event", "desc")
_WRITE_AREAS = ("used_idx", "used_elem", "avail_event")


def classify(rings, ev, msi=()):
    """The kind of one request ``ev`` (see the module docstring); ``msi``: the MSI-X message
    addresses of the trace."""
    a, k = ev["a"], ev["k"]
    for name, r in rings.items():
        areas = _ring_areas(r)
        for area in _READ_AREAS if k == "rd" else _WRITE_AREAS:
            lo, hi = areas[area]
            if lo <= a < hi:
                return f"{name}.{area}"
    if k == "wr" and a in msi:
        return "msi"
    return f"data.{k}"


def profile(path, timeline=0):
    head, events = load(path)
    rings, point = head["rings"], head["point"]
    reqs = [e for e in events if e["k"] != "cpl"]
    for e in reqs:
        e["kind"] = classify(rings, e, head.get("msi", ()))
    # Round trips: a read's tag is reused only after its last completion.
    open_reads, rtts = {}, defaultdict(list)
    spans = []                    # (start, end, kind) of every read
    for e in events:
        if e["k"] == "rd":
            open_reads[e["tag"]] = [e, e["n"]]
        elif e["k"] == "cpl" and e["tag"] in open_reads:
            entry = open_reads[e["tag"]]
            entry[1] -= e["n"]
            if entry[1] <= 0:
                r = open_reads.pop(e["tag"])[0]
                rtts[r["kind"]].append(e["t"] - r["t"])
                spans.append((r["t"], e["t"], r["kind"]))
    # The steady part: the middle 80 % of the payload transfers.
    data = [e for e in reqs if e["kind"].startswith("data")]
    if not data:
        raise SystemExit("no frame data in the trace")
    t0 = data[len(data) // 10]["t"]
    t1 = data[len(data) * 9 // 10]["t"]
    used_idx = [e for e in reqs if e["kind"].endswith(".used_idx")]
    counts = Counter(e["kind"] for e in reqs if t0 <= e["t"] < t1)
    nbytes = Counter()
    for e in reqs:
        if t0 <= e["t"] < t1:
            nbytes[e["kind"]] += e["n"]
    frames = _frames(reqs, t0, t1, point)
    cycles = (t1 - t0) / 4
    print(f"{path}: {point['dir']} {point['frame']} B, L = {point['latency_ns']} ns; "
          f"steady window {t0}-{t1} ns, {frames} frames, "
          f"{cycles / max(1, frames):.1f} cycles/frame")
    print(f"{'kind':<16} {'per frame':>9} {'bytes/req':>9} {'rtt ns':>7}")
    for kind, n in sorted(counts.items()):
        rt = rtts.get(kind)
        print(f"{kind:<16} {n / max(1, frames):9.3f} {nbytes[kind] / n:9.1f} "
              f"{(sum(rt) / len(rt)) if rt else float('nan'):7.0f}")
    # Time with at least one engine (ring/descriptor) read outstanding, and a data read.
    def outstanding(engine):
        return 100 * _union([(max(s, t0), min(e, t1)) for s, e, k in spans
                             if k.startswith("data") != engine and e > t0 and s < t1]) / (t1 - t0)
    print(f"engine reads outstanding {outstanding(True):.1f} % of the time; "
          f"data reads outstanding {outstanding(False):.1f} %")
    print(f"used->idx writes: {sum(1 for e in used_idx if t0 <= e['t'] < t1) / max(1, frames):.3f}"
          " per frame")
    if timeline:
        mid = (t0 + t1) // 2
        print(f"timeline from {mid} ns:")
        shown = 0
        for e in events:
            if e["t"] < mid:
                continue
            if e["k"] == "cpl":
                print(f"  {e['t']:>9} cpl tag {e['tag']} {e['n']} B")
            else:
                print(f"  {e['t']:>9} {e['kind']:<16} {e['k']} {e['n']:>4} B tag {e['tag']}"
                      f" @{e['a']:#x}")
            shown += 1
            if shown >= timeline:
                break


def _frames(reqs, t0, t1, point):
    # TX: one data read per frame (a pushed header makes one buffer); RX: count used elements
    # written (8 bytes each).
    if point["dir"] == "tx":
        return sum(1 for e in reqs if t0 <= e["t"] < t1 and e["kind"] == "data.rd")
    return sum(e["n"] // 8 for e in reqs if t0 <= e["t"] < t1 and e["kind"] == "rx.used_elem")


def _union(intervals):
    total, end = 0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="+")
    ap.add_argument("--timeline", type=int, default=0, help="print N events from mid-run")
    args = ap.parse_args(argv)
    for path in args.trace:
        profile(path, args.timeline)
        print()


if __name__ == "__main__":
    main()
