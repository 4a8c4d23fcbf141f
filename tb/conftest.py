# SPDX-License-Identifier: BSD-2-Clause
"""pytest configuration: markers live in pyproject.toml; this adds the simulation fixtures.

* ``--waves`` records an FST waveform for every simulation, not only failed ones.
* ``sim_dir`` is the test's own output directory,
  ``sim_build/<test file>.<test function>/<param id>/``.
* ``simulate(design, module, **kwargs)`` runs a cocotb module against a build from
  :func:`virtio_pcie_tb.harness.build` in that directory.
"""

import re
import sys
from pathlib import Path

import pytest

TB = Path(__file__).resolve().parent
if str(TB) not in sys.path:
    # cocotb imports the test modules by name in the simulator process, whose PYTHONPATH is
    # this process's sys.path.
    sys.path.append(str(TB))


def pytest_addoption(parser):
    parser.addoption("--waves", action="store_true",
                     help="record an FST waveform of every simulation")


@pytest.fixture
def sim_dir(request):
    from virtio_pcie_tb.harness import SIM_BUILD
    test = f"{Path(request.node.path).stem}.{request.node.originalname}"
    node = getattr(request.node, "callspec", None)
    param_id = node.id if node is not None else "default"
    param_id = re.sub(r"[^A-Za-z0-9_.=-]+", "_", param_id)
    path = SIM_BUILD / test / param_id
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def simulate(request, sim_dir):
    from virtio_pcie_tb import harness

    def run(design, test_module, **kwargs):
        kwargs.setdefault("waves", request.config.getoption("--waves"))
        return harness.run(design, test_module, test_dir=sim_dir, **kwargs)
    return run
