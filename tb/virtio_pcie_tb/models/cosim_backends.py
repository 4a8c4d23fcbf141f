# SPDX-License-Identifier: BSD-2-Clause
"""The device back ends of the virtio co-simulations: what sits on the device side of the RTL
while Linux drives its PCIe side.

::

    VirtioPcieDevice(device="blk") medium (AXI4) ──► AxiRam ──► DiskImage (the run's image file)
    VirtioPcieDevice(device="net") mac_tx ──► MacPeer ──► NetPeer (ARP, ICMP and UDP echo)
                                   mac_rx ◄──────┘

:func:`attach_blk` and :func:`attach_net` are the ``testbench`` hooks of the registered designs
(``virtio_pcie_tb/cosim/designs.py``): the co-simulation calls them as ``attach(dut, config)``
before the RTL leaves reset. ``config`` is the run's settings (``config["image"]`` is the disk
image's path; ``config["peer"]`` the peer's addresses).

Like the other modules in ``models/``, this one touches DUT signals, through cocotbext-axi's
drivers only.
"""

import logging

import cocotb

from ..harness import dut_params
from .disk_image import SECTOR, DiskImage, attach_axi_ram

__all__ = ["BlkBackend", "MacPeer", "attach_blk", "attach_net"]

#: The peer's addresses when the run's settings do not give them (the launcher's defaults).
DEFAULT_PEER = {"mac": "02:00:00:77:00:01", "ip": "169.254.77.1"}


class BlkBackend:
    """The blk medium: ``image`` served on the DUT's ``medium`` AXI4 port.

    A design built with a fixed ``capacity`` needs an image of exactly that many sectors; one
    built without (``capacity`` an input port) is told the image's size.
    """

    def __init__(self, dut, image):
        self.image = image
        params = dut_params()
        capacity = params.get("capacity")
        if capacity is not None and capacity != image.sectors:
            raise ValueError(f"the design was built for {capacity} sectors, the image "
                             f"{image.path} has {image.sectors}")
        if capacity is None:
            dut.capacity.value = image.sectors
        self.ram = attach_axi_ram(dut, "medium", dut.clk, dut.rst, image)

    def reset(self):
        # The AXI RAM follows the DUT's reset itself; the image keeps what was written.
        self.image.flush()


class MacPeer:
    """Connects a :class:`~virtio_pcie_tb.cosim.net_peer.NetPeer` to the DUT's MAC streams.

    Every frame the device sends on ``mac_tx`` (``tuser`` marks one aborted: it is dropped and
    counted) goes to the peer; the peer's answers go back on ``mac_rx``. ``link_up`` is held at
    1 and ``loopback`` at 0.
    """

    def __init__(self, dut, peer, *, data_width):
        from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource
        self.dut = dut
        self.peer = peer
        self.log = logging.getLogger("cocotb.cosim.mac")
        self.tx = AxiStreamSink(AxiStreamBus.from_prefix(dut, "mac_tx", bus_separator="__"),
                                dut.clk, dut.rst)
        self.rx = AxiStreamSource(AxiStreamBus.from_prefix(dut, "mac_rx", bus_separator="__"),
                                  dut.clk, dut.rst)
        for part in (self.tx, self.rx):
            part.log.setLevel(logging.WARNING)
        self.data_width = data_width
        self.frames_out = 0
        self.frames_in = 0
        self.aborted = 0
        dut.link_up.value = 1
        dut.loopback.value = 0
        self._task = cocotb.start_soon(self._serve())

    async def _serve(self):
        while True:
            frame = await self.tx.recv()
            data = bytes(frame.tdata)
            tuser = frame.tuser if isinstance(frame.tuser, list) else [frame.tuser or 0]
            if any(tuser):
                self.aborted += 1
                self.log.warning("device aborted a %d-byte frame", len(data))
                continue
            self.frames_out += 1
            for reply in self.peer.handle_frame(data):
                self.frames_in += 1
                await self.rx.send(reply)

    @property
    def busy(self):
        """Frames still queued towards the device."""
        return not self.rx.empty() or self.rx.active

    def reset(self):
        self.rx.clear()

    def stats(self):
        return {"frames_from_device": self.frames_out, "frames_to_device": self.frames_in,
                "aborted": self.aborted, "peer": dict(self.peer.stats),
                "peer_dropped": dict(self.peer.dropped)}


def attach_blk(dut, config):
    """Testbench hook of the blk designs: the disk image ``config["image"]`` on ``medium``."""
    path = config.get("image")
    if not path:
        raise ValueError("the blk co-simulation needs a disk image (config['image'])")
    image = DiskImage(path)
    if image.size % SECTOR:
        raise ValueError(f"{path}: not a whole number of sectors")
    return BlkBackend(dut, image)


def attach_net(dut, config):
    """Testbench hook of the net designs: a :class:`NetPeer` on the MAC streams."""
    from ..cosim.net_peer import NetPeer
    peer_cfg = {**DEFAULT_PEER, **(config.get("peer") or {})}
    peer = NetPeer(mac=peer_cfg["mac"], ip=peer_cfg["ip"])
    return MacPeer(dut, peer, data_width=dut_params()["data_width"])
