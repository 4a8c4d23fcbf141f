# SPDX-License-Identifier: BSD-2-Clause
"""virtio-net end to end: the Linux-faithful host model drives the whole RTL device.

::

    VirtioNetDriver ─► RootComplex ── bridge ══ VirtioPcieDevice(device="net") ══ MacPort
    (host model)                                 function · transport · DMA ·      (mac_tx sink,
                                                 virtqueue engine · net back-end    mac_rx source,
                                                                                     link_up)
"""

import cocotb
import pytest
from cocotb.triggers import with_timeout

from virtio_pcie_tb.system import SystemTB, build_system, design_params

DEVICE_MAC = bytes.fromhex("525400123456")
PEER_MAC = bytes.fromhex("020000000001")


def raw_frame(size, dst=DEVICE_MAC, src=PEER_MAC, seed=0):
    body = bytes((i * 13 + size + seed) & 0xFF for i in range(size - 14))
    return dst + src + (0x88B5).to_bytes(2, "big") + body


@cocotb.test()
async def run_smoke(dut):
    from virtio_pcie_tb.host import VirtioNetDriver
    tb = SystemTB(dut)
    await tb.reset()
    net = VirtioNetDriver()
    vdev = await with_timeout(tb.bind(net), 2, "ms")
    assert vdev.status_trace[-1] == 0x0F, vdev.status_trace
    await with_timeout(net.open(), 1, "ms")
    frame = raw_frame(100, dst=PEER_MAC, src=DEVICE_MAC)
    await with_timeout(net.send(frame), 1, "ms")
    got = await tb.mac.recv()
    assert got == frame, (got.hex(), frame.hex())
    frame = raw_frame(200)
    await tb.mac.send(frame)
    pkt = await net.recv(timeout_ns=200_000)
    assert pkt.frame == frame
    tb.log.info("stats %s", tb.net_stats())
    tb.check_bridge()


# -- pytest launchers --------------------------------------------------------------------------

MODERN = design_params("net", 128, queues=2)


@pytest.mark.system
def test_net_modern(simulate):
    simulate(build_system(MODERN), "test_system_net")
