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
FIELDS = {"dma": COMMON | {"dir", "size", "bytes_per_cycle"}}


def bench(*args):
    result = subprocess.run([sys.executable, "-m", "virtio_pcie.cli", "bench", *args, "--json"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


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


@pytest.mark.unit
def test_bench_rejects_bad_size():
    result = subprocess.run([sys.executable, "-m", "virtio_pcie.cli", "bench", "dma", "--size",
                             "65536"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--size" in result.stderr
