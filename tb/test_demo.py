# SPDX-License-Identifier: BSD-2-Clause
"""``virtio-pcie demo`` (the README's ``make demo``) runs, shows what it promises and fails when
the data is wrong.

The runs here are short (``--mib``); they share the main blk build with the system tests.
"""

import pytest

from virtio_pcie.cli import main
from virtio_pcie_tb.demos import run_demo


@pytest.mark.system
def test_demo_blk(capsys, sim_dir):
    status = run_demo(device="blk", mib=0.5, qd=8, req_kib=32, out=sim_dir)
    out = capsys.readouterr().out
    assert status == 0, out
    for text in (
            # enumeration: lspci-like listing
            "SCSI storage controller [0100]: Red Hat, Inc. Virtio 1.0 block device [1af4:1042]",
            "Region 4: Memory at", "[size=16K]", "Express (v2) Endpoint",
            "Power Management version 3", "MSI-X: Enable+ Count=5 Masked-",
            "VirtIO: CommonCfg", "VirtIO: Notify", "VirtIO: ISR", "VirtIO: DeviceCfg",
            "Kernel driver in use: virtio-pci",
            # the structures behind the capabilities
            "num_queues = 4", "queue 3: size 256, enabled", "seg_max=126", "num_queues=4",
            "MSI-X table at BAR1",
            # negotiation
            "BLK_F_MQ", "F_VERSION_1", "F_EVENT_IDX", "not accepted: none",
            "write 0x0b ACKNOWLEDGE|DRIVER|FEATURES_OK -> read back 0x0b",
            "interrupts: msix-each (5 MSI-X vectors)",
            # I/O and its verification
            "write  16 requests, 0.5 MiB", "read   16 requests, 0.5 MiB",
            "matches the shadow disk byte for byte", "GET_ID       -> 'virtio-pcie-blk'",
            "-> IOERR", "PASS:"):
        assert text in out, f"{text!r} not in the demo's report:\n{out}"
    assert "FAIL" not in out


@pytest.mark.system
def test_demo_catches_corruption(capsys, sim_dir):
    """A byte changed on the medium behind the device's back makes the demo fail (exit 1)."""
    status = run_demo(device="blk", mib=0.25, qd=4, req_kib=32, out=sim_dir,
                      extra_env={"DEMO_CORRUPT": "1"})
    captured = capsys.readouterr()
    assert status == 1
    assert "data differs from the shadow disk" in captured.out
    assert "the medium differs from the shadow disk" in captured.out
    assert "FAIL:" in captured.out


@pytest.mark.unit
@pytest.mark.parametrize("args", [["--qd", "0"], ["--mib", "0"], ["--req-kib", "3"],
                                  ["--image", "/nonexistent/disk.img"],
                                  ["--device", "net", "--mib", "1"]])
def test_demo_bad_options(capsys, args):
    """Bad options are refused with a message naming them, before anything is built."""
    assert main(["demo", *args]) == 2
    assert "virtio-pcie demo:" in capsys.readouterr().err
