# SPDX-License-Identifier: BSD-2-Clause
"""The whole device behind the Xilinx 7-series adapter, driven by the host model through a model
of the ``pcie_7x`` hard IP: what a board build contains, simulated.

::

    host model ─► RootComplex ── Xilinx7PcieModel ═══ pcie_7x ═══ Xilinx7VirtioDevice (RTL)
    (Linux probe,                (Python: header, BARs,  user-side   Xilinx7PcieAdapter
     virtio_blk /                 PM @0x40, PCIe @0x60,  ports         │ TLP streams, cfg
     virtio_net)                  MSI-X @0x9C → 0xA8;                VirtioPcieDevice ("ext":
                                  config ≥ 0xA8 and BAR              virtio caps 0xA8..0xFF)
                                  hits go to the DUT)                  │ medium ── DiskImage
                                                                       │ mac_tx/mac_rx, loopback

The blk design (the project's main blk build, behind the adapter) runs ``tb/test_system_blk.py``'s
cocotb tests unchanged (:data:`BLK_SYSTEM_TESTS`), and the net design the one-pair subset of
``tb/test_system_net.py`` (:data:`NET_SYSTEM_TESTS`): ``SystemTB`` puts the
hard-IP model in front of a design built with ``build_system(..., interface="xilinx7")``, so the
adapter passes the same host-model system tests as the full function. This module adds what is
particular to a hard IP: the capability walk from the core's own capabilities into the forwarded
virtio capabilities, which configuration accesses reach the RTL and which do not, BAR access
through the forwarded PCI_CFG capability; and, for net, frames through the loopback and through
the MAC side. The default launchers build blk at 128 bits (the boards' interface) and net at 64
bits (about 45 and 40 seconds with their builds cached); the ``slow`` one the other two.
"""

import logging
import random

import cocotb
import pytest
from cocotb.triggers import ClockCycles, with_timeout

from virtio_pcie.adapters.xilinx7_core import HARD_IP_CAPABILITIES
from virtio_pcie.spec.pcie import CAP_POINTER_MIN, PciType0Header, byte_offset
from virtio_pcie.spec.virtio import (VIRTIO_PCI_VENDOR_ID, VirtioPciCap, VirtioPciCapType,
                                     VirtioPciCfgCap, VirtioPciCommonCfg)
from virtio_pcie_tb import harness
from virtio_pcie_tb.host import VirtioBlkDriver, VirtioNetDriver
from virtio_pcie_tb.system import MAIN_DESIGNS, SystemTB, build_system, design_params
from system_blk_env import IRQ_SETUPS

NET = harness.dut_params().get("device") == "net"
logging.getLogger("cocotb.pcie").setLevel(logging.WARNING)


def _walk(raw_read):
    """The capability chain as Linux walks it (``pci_find_capability``): [(id, offset)]."""

    async def walk():
        chain = []
        pos = await raw_read(byte_offset(PciType0Header, "capabilities_pointer"), 1)
        while pos >= CAP_POINTER_MIN and len(chain) < 48:
            pos &= ~3
            header = await raw_read(pos, 2)
            chain.append((header & 0xFF, pos))
            pos = header >> 8
        return chain
    return walk()


@cocotb.test()
async def run_capability_chain(dut):
    """The chain runs from the hard IP's PM, PCI Express and MSI-X capabilities into the virtio
    capabilities the RTL serves from 0xA8; each says what the layout placed; configuration
    accesses below 0xA8 never reach the RTL, those above do (writes too, with byte enables:
    the PCI_CFG window reads a BAR register through configuration space); then Linux binds."""
    tb = SystemTB(dut)
    model = tb.bridge
    await tb.reset()
    pci = await with_timeout(tb.enumerate(), 2, "ms")
    assert pci.vendor == VIRTIO_PCI_VENDOR_ID
    caps = harness.dut_description()["capabilities"]

    chain = await _walk(pci.config_read)
    hard = [(c.cap_id, c.offset) for c in HARD_IP_CAPABILITIES if c.name != "msi"]
    virtio = [(c["cap_id"], c["offset"]) for c in caps]
    assert chain == hard + virtio, chain
    assert virtio[0][1] == model.function.ext_cfg_cap_ptr * 4

    # What each forwarded capability says, read field by field through the hard IP.
    windows = {w["cfg_type"]: w for w in harness.dut_description()["windows"] if w["cfg_type"]}
    for cap in caps:
        fields = {name: cap["offset"] + byte_offset(VirtioPciCap, name)
                  for name in ("cfg_type", "bar", "offset", "length")}
        assert await pci.config_read8(fields["cfg_type"]) == cap["cfg_type"]
        if cap["cfg_type"] == VirtioPciCapType.PCI_CFG.value:
            continue
        w = windows[cap["cfg_type"]]
        assert await pci.config_read8(fields["bar"]) == w["bar"], cap
        assert await pci.config_read32(fields["offset"]) == w["offset"], cap
        assert await pci.config_read32(fields["length"]) == w["length"], cap

    # Which accesses reach the RTL.
    before = model.forwarded_config
    await pci.config_read32(0x00)
    await pci.config_read16(hard[-1][1])
    assert model.forwarded_config == before, "the hard IP's own registers reached the RTL"
    await pci.config_read32(virtio[0][1])
    assert model.forwarded_config == before + 1

    # BAR access through the PCI_CFG capability (virtio 1.2 §4.1.4.9): configuration writes
    # (with byte enables) set up the window, a configuration read of pci_cfg_data reads
    # num_queues of the common structure.
    await pci.dev.enable_device()
    cfg = [c for c in caps if c["cfg_type"] == VirtioPciCapType.PCI_CFG.value][0]["offset"]
    common = windows[VirtioPciCapType.COMMON_CFG.value]
    await pci.config_write8(cfg + byte_offset(VirtioPciCap, "bar"), common["bar"])
    await pci.config_write32(cfg + byte_offset(VirtioPciCap, "offset"),
                             common["offset"] + byte_offset(VirtioPciCommonCfg, "num_queues"))
    await pci.config_write32(cfg + byte_offset(VirtioPciCap, "length"), 2)
    num_queues = await pci.config_read16(cfg + byte_offset(VirtioPciCfgCap, "pci_cfg_data"))
    queues = tb.params["queues"]
    assert num_queues == (2 * queues + 1 if NET else queues), num_queues

    # Linux's probe finds the capabilities and binds.
    driver = VirtioNetDriver() if NET else VirtioBlkDriver()
    vdev = await with_timeout(tb.bind(driver), 2, "ms")
    assert vdev.status_trace[-1] == 0x0F, vdev.status_trace
    assert not model.all_errors, model.all_errors


@cocotb.test(skip=NET)
async def run_host_read_throttle(dut):
    """The hard-IP model's host takes the DUT's reads only while the bytes in flight stay
    within ``max_read_bytes_in_flight`` (as the bridge's host does): long writes (the device
    reads their data) keep within it, and their data arrives whole."""
    limit = 1024
    tb = SystemTB(dut, bridge_options={"latency_ns": 1000, "max_read_bytes_in_flight": limit})
    await tb.reset()
    blk = VirtioBlkDriver()
    await with_timeout(tb.bind(blk), 4, "ms")
    rng = random.Random(9)
    data = rng.randbytes(128 * 512)
    await with_timeout(blk.write(64, data), 2, "ms")
    assert await with_timeout(blk.read(64, 128), 2, "ms") == data
    seen = tb.bridge.max_seen["read_bytes"]
    assert limit // 2 < seen <= limit, seen
    tb.check_bridge()


def _frame(rng, dst, size):
    return dst + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + rng.randbytes(size - 14)


async def _open_net(tb, **driver_args):
    net = VirtioNetDriver(**driver_args)
    await with_timeout(tb.bind(net), 2, "ms")
    await with_timeout(net.wait_link(True), 100, "us")
    await net.open()
    return net


@cocotb.test(skip=not NET)
async def run_net_loopback(dut):
    """Frames the host transmits come back to it through the device's loopback (as on the
    boards, which have no Ethernet), with host latency, reordered and RCB-split completions."""
    tb = SystemTB(dut, bridge_options={"latency_ns": 400, "reorder": True, "rcb": 64})
    await tb.reset()
    await tb.mac.set_loopback(True)
    net = await _open_net(tb)
    rng = random.Random(3)
    for size in (60, 61, 64, 127, 128, 255, 600, 1000, 1514, 1514, 60, 777):
        frame = _frame(rng, net.mac, size)
        await with_timeout(net.send(frame), 1, "ms")
        pkt = await net.recv(0, timeout_ns=500_000)
        assert pkt.frame == frame, (size, len(pkt.frame))
    assert net.rx[0].stats["drops"] == 0
    tb.check_bridge()


@cocotb.test(skip=not NET)
async def run_net_mac(dut):
    """Frames both ways through the MAC side: what the host sends leaves on ``mac_tx`` byte for
    byte; what arrives on ``mac_rx`` for the device's MAC reaches the host, a burst of them
    back to back."""
    tb = SystemTB(dut)
    await tb.reset()
    net = await _open_net(tb)
    rng = random.Random(4)
    sent = [_frame(rng, b"\x02\x00\x00\x00\x00\x01", size) for size in (60, 333, 1514, 64)]
    for frame in sent:
        await with_timeout(net.send(frame), 1, "ms")
    for frame in sent:
        assert await tb.mac.recv() == frame
    incoming = [_frame(rng, net.mac, size) for size in (60, 1514, 200, 61, 1000, 64, 64, 64)]
    for frame in incoming:
        await tb.mac.send(frame)
    for frame in incoming:
        pkt = await net.recv(0, timeout_ns=500_000)
        assert pkt.frame == frame, len(pkt.frame)
    await ClockCycles(dut.clk, 100)
    tb.check_bridge()


# -- pytest launchers --------------------------------------------------------------------------

def xilinx7_design(device, width):
    """blk: the project's main blk build (four queues, capacity input, 48-bit medium address),
    as the full-function system tests use it; net: one queue pair. Only the top level's ports
    are touched (by the hard-IP model, the medium and the MAC): Verilator may optimise the
    inside, which builds and runs several times faster."""
    params = (dict(MAIN_DESIGNS["blk"], data_width=width) if device == "blk"
              else design_params(device, width))
    return build_system(params, interface="xilinx7", ports_only=True)


#: The full-function net system tests that also run behind the hard IP (one pair: the rest need
#: two, or the transitional jumbo build): probe, data both ways at every size class, echo through
#: a peer, and the three interrupt policies (INTx through ``cfg_interrupt``).
NET_SYSTEM_TESTS = ["run_probe", "run_tx_sizes", "run_rx_sizes", "run_echo",
                    "run_interrupt_modes"]


def run_modules(request, sim_dir, design, modules):
    """Run each cocotb module (name, or (name, [tests])) against ``design``."""
    for module in modules:
        module, tests = module if isinstance(module, tuple) else (module, None)
        harness.run(design, module, test_dir=sim_dir / module, testcase=tests,
                    waves=request.config.getoption("--waves"))


#: The full-function blk system tests that run behind the hard IP: those of the default
#: launchers of ``tb/test_system_blk.py``, with ``run_random_mix`` in its INTx setups (Linux 6.12
#: with a throttled host, ``max_read_bytes_in_flight``; Linux 7) by default and in all of them
#: in the ``slow`` launcher. ``run_intx_once_per_interrupt`` checks that Deassert_INTA, which
#: the core sends after the ``cfg_interrupt`` handshake, reaches the host before the completion
#: of the ISR read that caused it (the adapter holds completions meanwhile).
BLK_SYSTEM_TESTS = ["run_probe_and_io", "run_request_types", "run_longest_request",
                    "run_queue_depths", "run_intx_once_per_interrupt", "run_capacity_change",
                    "run_config_generation"]
#: ``run_random_mix``'s INTx setups, by cocotb's names for the parametrizations.
BLK_RANDOM_MIX_INTX = [f"run_random_mix/setup={i}" for i, setup in enumerate(IRQ_SETUPS)
                       if setup.endswith("/intx")]


def modules_for(device, *, slow=False):
    if device == "blk":
        mixes = ["run_random_mix"] if slow else BLK_RANDOM_MIX_INTX
        full = [("test_system_blk", BLK_SYSTEM_TESTS + mixes)]
    else:
        full = [("test_system_net", NET_SYSTEM_TESTS)]
    return full + ["test_xilinx7_system"]


@pytest.mark.system
def test_xilinx7_blk_128(request, sim_dir):
    """blk at 128 bits (the boards' interface): the full-function system tests, then the
    hard-IP specific ones."""
    run_modules(request, sim_dir, xilinx7_design("blk", 128), modules_for("blk"))


@pytest.mark.system
def test_xilinx7_net_64(request, sim_dir):
    """net at 64 bits: the full-function net system tests above, then the hard-IP ones."""
    run_modules(request, sim_dir, xilinx7_design("net", 64), modules_for("net"))


@pytest.mark.system
@pytest.mark.slow
@pytest.mark.parametrize("device,width", [("blk", 64), ("net", 128)])
def test_xilinx7_other_widths(request, sim_dir, device, width):
    run_modules(request, sim_dir, xilinx7_design(device, width),
                modules_for(device, slow=True))
