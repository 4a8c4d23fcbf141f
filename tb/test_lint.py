# SPDX-License-Identifier: BSD-2-Clause
"""House rules that a reviewer would otherwise check by hand: the code passes ruff, and the
gateware package never depends on the testbench (nothing in ``hdl/`` imports cocotb or the
verification IP), so ``pip install virtio-pcie`` on a build machine needs no simulator."""

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_passes():
    ruff = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent))
    assert ruff, "ruff is not installed in the project's venv (it is pinned in the [test] extra)"
    result = subprocess.run([ruff, "check", "--no-cache", "hdl", "tb"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


FORBIDDEN = ("cocotb", "cocotb_tools", "cocotbext", "virtio_pcie_tb", "pytest")


# The CLI is the one exception: its simulation subcommands import the verification IP lazily.
GATEWARE = sorted(p for p in (ROOT / "hdl" / "virtio_pcie").rglob("*.py")
                  if p != ROOT / "hdl" / "virtio_pcie" / "cli.py")


@pytest.mark.parametrize("path", GATEWARE, ids=lambda p: str(p.relative_to(ROOT / "hdl")))
def test_gateware_does_not_import_testbench(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, \
                f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
