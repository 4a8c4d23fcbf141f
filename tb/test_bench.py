# SPDX-License-Identifier: BSD-2-Clause
"""Smoke tests of ``virtio-pcie bench``: one point of each benchmark, through the command itself,
so that the command and its JSON output cannot silently rot. The figures are not judged here
beyond sanity; docs/performance.md has the measured tables."""

import json
import subprocess
import sys

import pytest

#: Fields every JSON line has (issue 11), and those of each benchmark.
COMMON = {"bench", "width", "latency_ns", "clock_mhz", "efficiency"}
FIELDS = {"dma":    COMMON | {"dir", "size", "bytes_per_cycle"},
          "blk":    COMMON | {"op", "bs", "qd", "iops", "io_latency_ns"},
          "net":    COMMON | {"dir", "frame", "mpps"},
          "notify": COMMON | {"qd", "event_idx", "doorbells_per_req", "interrupts_per_req"}}


def command(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "virtio_pcie.cli", "bench", *args],
                          capture_output=True, text=True, timeout=timeout)


def bench(*args):
    result = command(*args, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def report(tmp_path, name, rows, heading):
    """The rows make a report (tables and a plot where there is one) through the command."""
    saved = tmp_path / "rows.jsonl"
    saved.write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = tmp_path / "performance.md"
    result = command(name, "--from-json", str(saved), "--report", str(doc), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    text = doc.read_text()
    assert heading in text and "## The host latency model" in text
    return text


@pytest.mark.sim
def test_bench_dma_point():
    rows = bench("dma", "--width", "64", "--latency-ns", "500", "--size", "2048", "--dir", "read")
    assert len(rows) == 1
    row = rows[0]
    assert FIELDS["dma"] <= set(row), row
    assert (row["bench"], row["width"], row["latency_ns"], row["clock_mhz"], row["dir"],
            row["size"]) == ("dma", 64, 500, 250, "read", 2048)
    assert 0 < row["bytes_per_cycle"] <= 8
    assert row["efficiency"] == pytest.approx(row["bytes_per_cycle"] / 8)
    assert row["efficiency"] > 0.9


@pytest.mark.system
def test_bench_blk_point(tmp_path):
    """One blk point on the whole 128-bit device (the system tests' build)."""
    rows = bench("blk", "--width", "128", "--latency-ns", "500", "--op", "randread", "--qd", "1",
                 "--requests", "8")
    assert len(rows) == 1
    row = rows[0]
    assert FIELDS["blk"] <= set(row), row
    assert (row["bench"], row["width"], row["latency_ns"], row["clock_mhz"], row["op"],
            row["bs"], row["qd"]) == ("blk", 128, 500, 250, "randread", 4096, 1)
    # a 4 KiB read cannot beat its own transfer nor the 2 round trips to fetch it
    assert 0 < row["efficiency"] < 1
    assert row["io_latency_ns"] > 2 * 500 + 4096 / 16 * 4
    assert row["iops"] == pytest.approx(1e9 / row["io_latency_ns"], rel=0.2)
    assert row["doorbells_per_req"] == 1 and row["interrupts_per_req"] == 1
    text = report(tmp_path, "blk", rows, "## virtio-blk")
    assert "blk QD 1 latency" in text


@pytest.mark.system
def test_bench_net_point(tmp_path):
    """One net point (TX of 512-byte frames) on the whole 128-bit device."""
    rows = bench("net", "--width", "128", "--latency-ns", "1000", "--dir", "tx", "--frame",
                 "512", "--requests", "200")
    assert len(rows) == 1
    row = rows[0]
    assert FIELDS["net"] <= set(row), row
    assert (row["bench"], row["width"], row["dir"], row["frame"]) == ("net", 128, "tx", 512)
    # 512 bytes are 32 beats: never more than 250 / 32 Mpps
    assert 0 < row["mpps"] <= 250 / 32 + 1e-6
    assert row["efficiency"] == pytest.approx(row["mpps"] * 512 / 16 / 250, rel=1e-3)
    report(tmp_path, "net", rows, "## virtio-net")


@pytest.mark.system
def test_bench_notify_point(tmp_path):
    """One notify point: EVENT_IDX at QD 8 suppresses most doorbells and interrupts."""
    rows = bench("notify", "--width", "128", "--qd", "8", "--event-idx", "on", "--requests", "48")
    assert len(rows) == 1
    row = rows[0]
    assert FIELDS["notify"] <= set(row), row
    assert (row["bench"], row["width"], row["qd"], row["event_idx"]) == ("notify", 128, 8, True)
    assert 0 <= row["doorbells_per_req"] < 1 and 0 < row["interrupts_per_req"] < 1
    report(tmp_path, "notify", rows, "## Notifications")


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.parametrize("width,min_efficiency", [(64, 0.95), (128, 0.95), (256, 0.83)])
def test_bench_notify_target(width, min_efficiency):
    """Issue 6's figure: QD 32 streaming with EVENT_IDX, the notify bench's host (1024-request
    window), at most 0.05 doorbells and 0.05 interrupts per request without the device running
    dry (at 64 bits the low-water mark of 10 gave 0.051 and 0.051; 6 ran the queue dry: 90 %).
    At 256 bits the default moderation trades data path for it (85.4 %, 96 % with moderation
    off; see docs/virtqueue.md, "Thirteenth round"); the floor catches a mark that runs dry."""
    rows = bench("notify", "--width", str(width), "--event-idx", "on")
    assert len(rows) == 1
    row = rows[0]
    assert (row["width"], row["qd"], row["event_idx"]) == (width, 32, True)
    assert row["doorbells_per_req"] <= 0.05 and row["interrupts_per_req"] <= 0.05, row
    assert row["efficiency"] >= min_efficiency, row


@pytest.mark.unit
def test_bench_rejects_bad_options():
    for args, option in ((["net", "--dir", "read"], "--dir"), (["blk", "--qd", "0"], "--qd"),
                         (["blk", "--link", "gen9x3"], "gen9x3"),
                         (["net", "--frame", "20"], "--frame")):
        result = command(*args, timeout=60)
        assert result.returncode == 2 and option in result.stderr, (args, result.stderr)


@pytest.mark.unit
def test_bench_rejects_bad_size():
    result = subprocess.run([sys.executable, "-m", "virtio_pcie.cli", "bench", "dma", "--size",
                             "65536"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--size" in result.stderr


@pytest.mark.unit
def test_link_model_rates():
    """The bridge's link model: lane rates after line coding, TLP framing, bad links."""
    from virtio_pcie_tb.models.pcie_bridge import PcieLink
    gen3x4 = PcieLink.parse("Gen3x4")
    assert (gen3x4.gen, gen3x4.lanes, gen3x4.name) == (3, 4, "gen3x4")
    assert gen3x4.bytes_per_ns == pytest.approx(8 * 128 / 130 * 4 / 8)       # 3.94 GB/s
    assert PcieLink.parse("gen2x8").bytes_per_ns == pytest.approx(4.0)       # 8b/10b
    # a 256-byte payload costs a 12-byte header and 8 bytes of framing, sequence and LCRC
    assert gen3x4.payload_efficiency(256) == pytest.approx(256 / 276)
    for bad in ("gen9x4", "gen3x3", "x4", ""):
        with pytest.raises(ValueError):
            PcieLink.parse(bad)


@pytest.mark.unit
def test_report_targets():
    """The report judges each target from the rows (and leaves out what was not measured)."""
    from virtio_pcie_tb.bench.report import targets
    rows = [{"bench": "blk", "width": 128, "latency_ns": 1000, "op": "randread", "qd": 32,
             "efficiency": 0.95, "iops": 900_000, "io_latency_ns": 30_000},
            {"bench": "blk", "width": 128, "latency_ns": 1000, "op": "randread", "qd": 1,
             "efficiency": 0.1, "iops": 200_000, "io_latency_ns": 4_200},
            {"bench": "net", "width": 128, "latency_ns": 1000, "dir": "tx", "frame": 64,
             "mpps": 10.0, "efficiency": 0.2},
            {"bench": "notify", "width": 128, "latency_ns": 1000, "qd": 32, "event_idx": True,
             "doorbells_per_req": 0.01, "interrupts_per_req": 0.06}]
    met = [(t["target"].split()[0], t["met"]) for t in targets(rows)]
    assert met == [("blk", True), ("blk", True), ("net", False), ("≤", False)], met


@pytest.mark.unit
def test_report_notify_wide_takes_rows():
    """The report's 256-bit moderation paragraph gives the measured figures of the rows, not
    figures typed into its text, and is left out without a 256-bit notify row."""
    from virtio_pcie_tb.bench.report import _notify_wide
    notify = [{"width": 256, "latency_ns": 1000, "qd": 32, "event_idx": True,
               "interrupts_per_req": 0.0421, "efficiency": 0.8123, "iops": 1_234_567}]
    blk = [{"width": 256, "latency_ns": 1000, "op": "randread", "qd": 32,
            "efficiency": 0.9345, "interrupts_per_req": 0.0555}]
    text = _notify_wide(notify, blk)
    assert "0.042 interrupts per request at 81.2 % of the data path, 1.23 M IOPS" in text
    assert "reads at 93.5 % with 0.056 interrupts" in " ".join(text.split())
    assert "reads at" not in _notify_wide(notify, [])
    assert _notify_wide([dict(notify[0], width=128)], blk) is None


@pytest.mark.unit
def test_net_profile_classifies_ring_accesses():
    """The trace classifier finds each split-ring structure of a queue where the virtio layout
    puts it (an odd queue size, so the le16 event fields share a dword with the last entry)."""
    from virtio_pcie.spec.virtio import (virtq_avail_event_offset, virtq_avail_ring_offset,
                                         virtq_desc_size, virtq_used_event_offset,
                                         virtq_used_ring_offset)
    from virtio_pcie_tb.bench.net_profile import classify
    num = 255
    desc, avail, used = 0x10000, 0x20000, 0x30000
    rings = {"tx": {"desc": desc, "avail": avail, "used": used, "num": num}}
    cases = [
        ("rd", avail, "tx.avail_idx"),
        ("rd", avail + virtq_avail_ring_offset(0), "tx.avail_ring"),
        # the dword read of the last entry, which holds used_event too
        ("rd", avail + virtq_avail_ring_offset(num - 1), "tx.avail_ring"),
        ("rd", desc + virtq_desc_size(num - 1), "tx.desc"),
        ("rd", desc + virtq_desc_size(num), "data.rd"),
        ("wr", used, "tx.used_idx"),
        ("wr", used + virtq_used_ring_offset(num - 1), "tx.used_elem"),
        ("wr", used + virtq_avail_event_offset(num), "tx.avail_event"),
        ("wr", 0xFEE0_0000, "msi"),
        ("wr", 0x40000, "data.wr"),
    ]
    for kind, addr, expect in cases:
        assert classify(rings, {"k": kind, "a": addr}, msi=[0xFEE0_0000]) == expect, hex(addr)
    num = rings["tx"]["num"] = 256    # even size: used_event has a dword of its own
    assert classify(rings, {"k": "rd", "a": avail + virtq_used_event_offset(num)}) == \
        "tx.used_event"
