# SPDX-License-Identifier: BSD-2-Clause
"""The device back ends of the virtio co-simulations: what sits on the device side of the RTL
while Linux drives its PCIe side.

::

    VirtioPcieDevice(device="blk") medium (AXI4) ──► AxiRam ──► DiskImage (the run's image file)
    VirtioPcieDevice(device="net") mac_tx ──► MacPort ──► NetPeer (ARP, ICMP and UDP echo)
                                   mac_rx ◄──────┘

:func:`attach_blk` and :func:`attach_net` are the ``testbench`` hooks of the registered designs
(``virtio_pcie_tb/cosim/designs.py``): the co-simulation calls them as ``attach(dut, config)``
before the RTL leaves reset. ``config`` is the run's settings (``config["image"]`` is the disk
image's path; ``config["peer"]`` the peer's addresses).

DUT signals are touched only through the drivers of :mod:`.disk_image` (the AXI RAM) and
:mod:`.mac_port`.
"""

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
    """Connects a :class:`~virtio_pcie_tb.cosim.net_peer.NetPeer` to the DUT's MAC streams
    through a :class:`~.mac_port.MacPort` (``link_up`` held at 1, ``loopback`` at 0).

    Every frame the device sends on ``mac_tx`` goes to the peer (one the device marks bad with
    ``tuser`` is counted and dropped); the peer's answers go back on ``mac_rx``.
    """

    def __init__(self, dut, peer):
        from .mac_port import MacPort
        self.peer = peer
        self.port = MacPort(dut, dut.clk, dut.rst)
        self.port.responder = self._respond

    def _respond(self, frame):
        if self.port.bad_tx and self.port.bad_tx[-1] is frame:
            return ()
        return self.peer.handle_frame(frame)

    @property
    def busy(self):
        """Frames still queued towards the device."""
        source = self.port.source
        return not source.empty() or source.active

    def reset(self):
        self.port.source.clear()

    def stats(self):
        return {"frames_from_device": self.port.transmitted,
                "frames_to_device": self.port.received, "bad_from_device": len(self.port.bad_tx),
                "peer": dict(self.peer.stats), "peer_dropped": dict(self.peer.dropped)}


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
    return MacPeer(dut, peer)
