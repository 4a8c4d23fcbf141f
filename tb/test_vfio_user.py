# SPDX-License-Identifier: BSD-2-Clause
"""The vfio-user server against a fake client: every command, every refusal.

Client and server run in the same thread: the client sends, the server handles one message,
the client reads the reply. Guest memory is a memfd, as QEMU's ``memory-backend-memfd`` gives it;
interrupts are eventfds, read back to see what the device signalled.
"""

import errno
import json
import mmap
import os
import struct

import pytest

from virtio_pcie_tb.cosim.vfio_user import (
    ClientDisconnected, Command, DeviceFlags, DmaError, DmaMapFlags, DmaSpace, DmaUnmapFlags,
    HeaderFlags, IrqInfoFlags, IrqSetFlags, IrqType, PciIrq, PciRegion, ProtocolError, Region,
    RegionFlags, VfioUserDevice, VfioUserServer, _run_sync)
from virtio_pcie_tb.cosim.vfio_user_client import VfioUserClient

pytestmark = pytest.mark.unit

RW = RegionFlags.READ | RegionFlags.WRITE
EVENTFD_TRIGGER = IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER


class ScratchDevice(VfioUserDevice):
    """4 KiB of config space, an 8 KiB BAR0 of memory, 4 MSI-X vectors and INTx."""

    regions = {PciRegion.BAR0: Region(8192, RW), PciRegion.CONFIG: Region(4096, RW),
               PciRegion.BAR2: Region(4096, RegionFlags.READ)}
    irq_types = {PciIrq.INTX: IrqType(1, IrqInfoFlags.EVENTFD | IrqInfoFlags.MASKABLE |
                                      IrqInfoFlags.AUTOMASKED),
                 PciIrq.MSIX: IrqType(4, IrqInfoFlags.EVENTFD | IrqInfoFlags.NORESIZE)}

    def __init__(self):
        self.mem = {PciRegion.BAR0: bytearray(8192), PciRegion.CONFIG: bytearray(4096),
                    PciRegion.BAR2: bytearray(range(256)) * 16}
        self.resets = 0
        self.irq_changes = []
        self.intx_level = False
        self.events = []

    def region_read(self, index, offset, count):
        return self.mem[index][offset:offset + count]

    def region_write(self, index, offset, data):
        self.mem[index][offset:offset + len(data)] = data

    def reset(self):
        self.resets += 1
        self.mem[PciRegion.BAR0][:] = bytes(8192)

    def irqs_changed(self, index):
        self.irq_changes.append((index, self.irqs.enabled(index)))

    def irq_unmasked(self, index, sub):
        return self.intx_level

    def client_connected(self):
        self.events.append("connected")

    def client_disconnected(self):
        self.events.append("disconnected")


class AsyncDevice(ScratchDevice):
    """Answers reads through a coroutine, as the RTL bridge does."""

    async def _later(self, value):
        return value

    def region_read(self, index, offset, count):
        return self._later(super().region_read(index, offset, count))


@pytest.fixture
def pair(tmp_path):
    device = ScratchDevice()
    server = VfioUserServer(tmp_path / "vfu.sock", device, max_data_xfer_size=65536)
    client = VfioUserClient(tmp_path / "vfu.sock")
    assert server.accept(timeout=2)
    yield server, client, device
    client.close()
    server.close()


def step(server, client):
    """Let the server handle one message, then read the client's reply."""
    message = server.poll(timeout=2)
    assert message is not None, "the server received nothing"
    _run_sync(server.handle(message))
    return client.recv()


def call(server, client, send, *args, **kwargs):
    send(*args, **kwargs)
    return step(server, client)


def negotiate(server, client, caps=None):
    reply = call(server, client, client.version, caps)
    assert reply.ok, reply
    return reply


def refused(reply, err):
    assert reply.flags & HeaderFlags.ERROR, f"expected an error reply, got {reply}"
    assert reply.flags & HeaderFlags.REPLY
    assert reply.error == err, f"errno {errno.errorcode.get(reply.error)} instead of " \
                               f"{errno.errorcode[err]}"
    assert reply.payload == b"", "an error reply carries only the header"


def memfd(size, fill=b""):
    fd = os.memfd_create("guest-ram")
    os.ftruncate(fd, size)
    if fill:
        os.pwrite(fd, fill, 0)
    return fd


def eventfd_count(fd):
    try:
        return struct.unpack("<Q", os.read(fd, 8))[0]
    except BlockingIOError:
        return 0


def new_eventfd():
    return os.eventfd(0, os.EFD_NONBLOCK)


# -- version -----------------------------------------------------------------------------------

def test_version_negotiation(pair):
    server, client, device = pair
    caps = {"max_msg_fds": 8, "max_data_xfer_size": 4096, "pgsizes": 4096, "max_dma_maps": 10,
            "migration": {"pgsize": 4096}, "write_multiple": True}
    reply = negotiate(server, client, caps)
    major, minor = struct.unpack_from("<HH", reply.payload)
    assert (major, minor) == (0, 1)
    assert reply.payload.endswith(b"\0")
    answer = json.loads(reply.payload[4:-1])["capabilities"]
    # A subset of what the client proposed, with the server's own limits.
    assert set(answer) <= set(caps)
    assert answer["max_data_xfer_size"] == 65536 and answer["max_msg_fds"] == 16
    assert answer["pgsizes"] == mmap.PAGESIZE and answer["write_multiple"] is True
    assert "migration" not in answer
    assert device.events == ["connected"]


def test_version_minor_is_capped(pair):
    server, client, _ = pair
    reply = call(server, client, client.version, {}, 0, 7)
    assert struct.unpack_from("<HH", reply.payload) == (0, 1)


def test_version_without_capabilities(pair):
    server, client, _ = pair
    reply = call(server, client, client.send, Command.VERSION, struct.pack("<HH", 0, 0))
    assert reply.ok and json.loads(reply.payload[4:-1]) == {"capabilities": {}}


@pytest.mark.parametrize("payload, err", [
    (struct.pack("<HH", 1, 0), errno.ENOTSUP),                 # another major version
    (struct.pack("<H", 0), errno.EINVAL),                      # truncated
    (struct.pack("<HH", 0, 0) + b"{not json\0", errno.EINVAL),
    (struct.pack("<HH", 0, 0) + b'{"capabilities": [1]}\0', errno.EINVAL),
    (struct.pack("<HH", 0, 0) + b'{"capabilities": {"pgsizes": 65536}}\0', errno.EINVAL),
])
def test_version_refused(pair, payload, err):
    server, client, _ = pair
    refused(call(server, client, client.send, Command.VERSION, payload), err)
    # Nothing else works until a version is agreed on; then everything does.
    refused(call(server, client, client.device_info), errno.EINVAL)
    negotiate(server, client)
    assert call(server, client, client.device_info).ok


def test_version_twice(pair):
    server, client, _ = pair
    negotiate(server, client)
    refused(call(server, client, client.version), errno.EINVAL)


# -- device, regions, interrupts ---------------------------------------------------------------

def test_device_info(pair):
    server, client, _ = pair
    negotiate(server, client)
    reply = call(server, client, client.device_info)
    argsz, flags, regions, irqs = struct.unpack("<IIII", reply.payload)
    assert argsz == 16 and flags == DeviceFlags.PCI | DeviceFlags.RESET
    assert regions == 9 and irqs == 5
    refused(call(server, client, client.device_info, 8), errno.EINVAL)


def test_region_info(pair):
    server, client, _ = pair
    negotiate(server, client)
    for index, size, flags in [(0, 8192, RW), (1, 0, 0), (2, 4096, RegionFlags.READ),
                               (7, 4096, RW), (8, 0, 0)]:
        reply = call(server, client, client.region_info, index)
        assert struct.unpack("<IIIIQQ", reply.payload) == (32, flags, index, 0, size, 0)
    refused(call(server, client, client.region_info, 9), errno.EINVAL)
    refused(call(server, client, client.region_info, 0, 16), errno.EINVAL)
    refused(call(server, client, client.send, Command.DEVICE_GET_REGION_IO_FDS,
                 struct.pack("<IIII", 16, 0, 0, 0)), errno.ENOTSUP)


def test_irq_info(pair):
    server, client, _ = pair
    negotiate(server, client)
    expect = {0: (IrqInfoFlags.EVENTFD | IrqInfoFlags.MASKABLE | IrqInfoFlags.AUTOMASKED, 1),
              1: (0, 0), 2: (IrqInfoFlags.EVENTFD | IrqInfoFlags.NORESIZE, 4), 3: (0, 0),
              4: (0, 0)}
    for index, (flags, count) in expect.items():
        reply = call(server, client, client.irq_info, index)
        assert struct.unpack("<IIII", reply.payload) == (16, flags, index, count)
    refused(call(server, client, client.irq_info, 5), errno.EINVAL)
    refused(call(server, client, client.irq_info, 0, 4), errno.EINVAL)


# -- region access -----------------------------------------------------------------------------

def test_region_read_write(pair):
    server, client, device = pair
    negotiate(server, client)
    reply = call(server, client, client.region_write, 0, 0x100, b"\x11\x22\x33\x44")
    assert reply.ok and struct.unpack("<QII", reply.payload) == (0x100, 0, 4)
    assert device.mem[0][0x100:0x104] == b"\x11\x22\x33\x44"
    reply = call(server, client, client.region_read, 0, 0xFE, 8)
    assert struct.unpack_from("<QII", reply.payload) == (0xFE, 0, 8)
    assert reply.payload[16:] == b"\0\0\x11\x22\x33\x44\0\0"
    # Config space is a region like the others.
    call(server, client, client.region_write, 7, 0x3C, b"\x0b")
    assert call(server, client, client.region_read, 7, 0x3C, 1).payload[16:] == b"\x0b"
    # A posted write (no reply wanted) is carried out and not answered.
    client.region_write(0, 0x200, b"\xAA" * 4, no_reply=True)
    _run_sync(server.handle(server.poll(timeout=2)))
    assert device.mem[0][0x200:0x204] == b"\xAA" * 4
    assert call(server, client, client.region_read, 0, 0x200, 4).payload[16:] == b"\xAA" * 4


def test_region_access_through_a_coroutine(tmp_path):
    device = AsyncDevice()
    server = VfioUserServer(tmp_path / "s", device)
    client = VfioUserClient(tmp_path / "s")
    server.accept(2)
    negotiate(server, client)
    device.mem[0][0:4] = b"ABCD"
    assert call(server, client, client.region_read, 0, 0, 4).payload[16:] == b"ABCD"
    server.close()


@pytest.mark.parametrize("args, err", [
    ((0, 8190, 4), errno.EINVAL),       # beyond the end
    ((1, 0, 4), errno.EINVAL),          # empty region
    ((9, 0, 4), errno.EINVAL),          # no such region
    ((0, 0, 0), errno.EINVAL),          # nothing
    ((0, 0, 65537), errno.EINVAL),      # above max_data_xfer_size
])
def test_region_read_refused(pair, args, err):
    server, client, _ = pair
    negotiate(server, client)
    refused(call(server, client, client.region_read, *args), err)


def test_region_write_refused(pair):
    server, client, device = pair
    negotiate(server, client)
    refused(call(server, client, client.region_write, 2, 0, b"x"), errno.EINVAL)  # read-only
    refused(call(server, client, client.region_write, 0, 8191, b"xy"), errno.EINVAL)
    # count and data disagree
    refused(call(server, client, client.send, Command.REGION_WRITE,
                 struct.pack("<QII", 0, 0, 8) + b"1234"), errno.EINVAL)
    refused(call(server, client, client.send, Command.REGION_READ, b"\0" * 8), errno.EINVAL)
    assert device.mem[2][0:1] == b"\0"


def test_region_write_multi(pair):
    server, client, device = pair
    negotiate(server, client, {"write_multiple": True})
    writes = [(0x10, 0, 4, b"wxyz"), (0x20, 0, 2, b"ab"), (0x3C, 7, 1, b"\x05")]
    body = struct.pack("<Q", len(writes)) + b"".join(
        struct.pack("<QII8s", off, reg, n, data) for off, reg, n, data in writes)
    reply = call(server, client, client.send, Command.REGION_WRITE_MULTI, body)
    assert reply.ok and struct.unpack("<Q", reply.payload) == (3,)
    assert device.mem[0][0x10:0x14] == b"wxyz" and device.mem[0][0x20:0x22] == b"ab"
    assert device.mem[7][0x3C] == 5
    bad = struct.pack("<Q", 1) + struct.pack("<QII8s", 0, 0, 9, b"")
    refused(call(server, client, client.send, Command.REGION_WRITE_MULTI, bad), errno.EINVAL)
    short = struct.pack("<Q", 2) + struct.pack("<QII8s", 0, 0, 4, b"")
    refused(call(server, client, client.send, Command.REGION_WRITE_MULTI, short), errno.EINVAL)
    # an entry that fails the checks writes nothing, not even the good entries before it
    mixed = struct.pack("<Q", 2) + struct.pack("<QII8s", 0x40, 0, 4, b"good") + \
        struct.pack("<QII8s", 8190, 0, 4, b"bad!")
    refused(call(server, client, client.send, Command.REGION_WRITE_MULTI, mixed), errno.EINVAL)
    assert device.mem[0][0x40:0x44] == bytes(4)


# -- guest memory ------------------------------------------------------------------------------

def test_dma_map_read_write(pair):
    server, client, device = pair
    negotiate(server, client)
    ram = memfd(0x20000, b"guest says hello")
    # Two adjacent mappings of one memfd, the second at a file offset (as QEMU maps RAM
    # around the PCI hole).
    assert call(server, client, client.dma_map, 0x0, 0x10000, os.dup(ram), 0).ok
    assert call(server, client, client.dma_map, 0x10000, 0x10000, os.dup(ram), 0x10000).ok
    assert device.dma.read(0, 16) == b"guest says hello"
    device.dma.write(0xFFFC, b"ACROSS!!")                       # crosses into the 2nd mapping
    assert os.pread(ram, 8, 0xFFFC) == b"ACROSS!!"
    assert device.dma.read(0xFFFC, 8) == b"ACROSS!!"
    assert len(device.dma) == 2
    os.close(ram)


def test_dma_unmapped_and_read_only_accesses_fail_clearly(pair):
    server, client, device = pair
    negotiate(server, client)
    ram = memfd(0x2000)
    assert call(server, client, client.dma_map, 0x100000, 0x1000, os.dup(ram), 0,
                DmaMapFlags.READ).ok
    assert call(server, client, client.dma_map, 0x200000, 0x1000).ok       # no fd (e.g. ROM)
    with pytest.raises(DmaError, match="0x300000 is not in guest memory"):
        device.dma.read(0x300000, 4)
    with pytest.raises(DmaError, match="read-only"):
        device.dma.write(0x100000, b"x")
    with pytest.raises(DmaError, match="without a file descriptor.*memfd"):
        device.dma.read(0x200000, 4)
    with pytest.raises(DmaError, match="0x101000 is not in guest memory"):
        device.dma.read(0x100FFC, 8)                             # runs off the end
    assert device.dma.read(0x100000, 4) == bytes(4)
    os.close(ram)


@pytest.mark.parametrize("iova, size, flags, err", [
    (0x1000, 0, 3, errno.EINVAL),                   # empty
    (0xFFFF_FFFF_FFFF_F000, 0x2000, 3, errno.EINVAL),  # wraps
    (0x1000, 0x1000, 0x4, errno.EINVAL),            # unknown flag
    (0x1000, 0x1000, DmaMapFlags.WRITE, errno.EINVAL),   # not readable
    (0x1800, 0x1000, 3, errno.EEXIST),              # overlaps the existing one
])
def test_dma_map_refused(pair, iova, size, flags, err):
    server, client, device = pair
    negotiate(server, client)
    ram = memfd(0x4000)
    assert call(server, client, client.dma_map, 0x2000, 0x1000, os.dup(ram), 0).ok
    fd = os.dup(ram)
    refused(call(server, client, client.dma_map, iova, size, fd, 0, flags), err)
    # The refused descriptor was closed by the server (no leak): our dup is ours alone.
    assert len(device.dma) == 1
    os.close(ram)


def test_dma_map_bad_fd_offset(pair):
    server, client, device = pair
    negotiate(server, client)
    # A descriptor that cannot be mapped at all (a pipe) is refused with mmap's errno.
    r, w = os.pipe()
    reply = call(server, client, client.dma_map, 0, 0x1000, r, 0)
    assert not reply.ok and reply.error in (errno.ENODEV, errno.EACCES, errno.EINVAL)
    os.close(w)
    refused(call(server, client, client.send, Command.DMA_MAP,
                 struct.pack("<IIQQQ", 32, 3, 0, 0, 0x1000), fds=[new_eventfd(), new_eventfd()]),
            errno.EINVAL)
    assert len(device.dma) == 0


def test_dma_unmap(pair):
    server, client, device = pair
    negotiate(server, client)
    ram = memfd(0x3000)
    for i in range(3):
        assert call(server, client, client.dma_map, 0x1000 * i, 0x1000, os.dup(ram),
                    0x1000 * i).ok
    refused(call(server, client, client.dma_unmap, 0x1000, 0x800), errno.ENOENT)  # not exact
    refused(call(server, client, client.dma_unmap, 0x1800, 0x1000), errno.ENOENT)
    reply = call(server, client, client.dma_unmap, 0x1000, 0x1000)
    assert reply.ok
    assert struct.unpack("<IIQQ", reply.payload) == (24, 0, 0x1000, 0x1000)   # echoed entry
    assert [m[0] for m in device.dma] == [0, 0x2000]
    with pytest.raises(DmaError):
        device.dma.read(0x1000, 1)
    refused(call(server, client, client.dma_unmap, 0, 0, 0x1), errno.EINVAL)   # unknown flag
    refused(call(server, client, client.dma_unmap, 0, 0x1000, DmaUnmapFlags.ALL), errno.EINVAL)
    assert call(server, client, client.dma_unmap, 0, 0, DmaUnmapFlags.ALL).ok
    assert len(device.dma) == 0
    os.close(ram)


def test_dma_space_limits():
    space = DmaSpace(max_maps=2)
    ram = memfd(0x2000)
    space.map(0, 0x1000, 3, os.dup(ram), 0)
    space.map(0x1000, 0x1000, 3)
    with pytest.raises(Exception, match="more than 2"):
        space.map(0x2000, 0x1000, 3)
    assert space.contains(0xFFC, 4) and not space.contains(0xFFC, 8)   # fd-less after 0x1000
    assert not space.contains(0x2000)
    space.unmap_all()
    os.close(ram)


# -- interrupts --------------------------------------------------------------------------------

def test_msix_eventfds(pair):
    server, client, device = pair
    negotiate(server, client)
    fds = [new_eventfd() for _ in range(4)]
    # QEMU enables vectors step by step, each step with a fresh set of descriptors.
    assert call(server, client, client.set_irq_eventfds, PciIrq.MSIX, 0, [fds[0]]).ok
    assert call(server, client, client.set_irq_eventfds, PciIrq.MSIX, 0, fds[:2]).ok
    assert device.irq_changes[-1] == (PciIrq.MSIX, [0, 1])
    assert device.irqs.trigger(PciIrq.MSIX, 1)
    assert device.irqs.trigger(PciIrq.MSIX, 1)
    assert eventfd_count(fds[1]) == 2 and eventfd_count(fds[0]) == 0
    assert not device.irqs.trigger(PciIrq.MSIX, 3)          # no eventfd: not delivered
    # No descriptors with DATA_EVENTFD: de-assign (QEMU sends unused vectors this way).
    assert call(server, client, client.set_irqs, PciIrq.MSIX, 1, 1, EVENTFD_TRIGGER).ok
    assert device.irqs.enabled(PciIrq.MSIX) == [0]
    assert device.irqs.active[PciIrq.MSIX], "MSI-X stays enabled"
    # DATA_NONE|TRIGGER count 0: disable all.
    assert call(server, client, client.set_irqs, PciIrq.MSIX, 0, 0,
                IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER).ok
    assert device.irqs.enabled(PciIrq.MSIX) == [] and not device.irqs.active[PciIrq.MSIX]
    assert device.irq_changes[-1] == (PciIrq.MSIX, [])
    # Enabling with no vector yet (QEMU's "MSI-X without vectors"): active, no eventfd.
    assert call(server, client, client.set_irqs, PciIrq.MSIX, 0, 1, EVENTFD_TRIGGER).ok
    assert device.irqs.active[PciIrq.MSIX] and device.irqs.enabled(PciIrq.MSIX) == []
    for fd in fds:
        os.close(fd)


def test_client_triggers_interrupts(pair):
    server, client, device = pair
    negotiate(server, client)
    fds = [new_eventfd() for _ in range(3)]
    call(server, client, client.set_irq_eventfds, PciIrq.MSIX, 0, fds)
    assert call(server, client, client.set_irqs, PciIrq.MSIX, 0, 3,
                IrqSetFlags.DATA_BOOL | IrqSetFlags.ACTION_TRIGGER, data=b"\1\0\1").ok
    assert [eventfd_count(fd) for fd in fds] == [1, 0, 1]
    assert call(server, client, client.set_irqs, PciIrq.MSIX, 1, 1,
                IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER).ok
    assert [eventfd_count(fd) for fd in fds] == [0, 1, 0]
    for fd in fds:
        os.close(fd)


def test_intx_automask_and_unmask(pair):
    server, client, device = pair
    negotiate(server, client)
    fd = new_eventfd()
    assert call(server, client, client.set_irq_eventfds, PciIrq.INTX, 0, [fd]).ok
    assert device.irqs.trigger(PciIrq.INTX)
    assert eventfd_count(fd) == 1
    # Automasked: a second assertion waits for the guest's EOI (UNMASK).
    assert not device.irqs.trigger(PciIrq.INTX)
    assert eventfd_count(fd) == 0
    unmask = IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_UNMASK
    assert call(server, client, client.set_irqs, PciIrq.INTX, 0, 1, unmask).ok
    assert eventfd_count(fd) == 1, "the pending interrupt is delivered at unmask"
    # The line is still asserted at the next EOI: the device says so and it fires again.
    device.intx_level = True
    device.irqs.clear_pending(PciIrq.INTX, 0)
    assert call(server, client, client.set_irqs, PciIrq.INTX, 0, 1, unmask).ok
    assert eventfd_count(fd) == 1
    device.intx_level = False
    assert call(server, client, client.set_irqs, PciIrq.INTX, 0, 1, unmask).ok
    assert eventfd_count(fd) == 0
    # An explicit MASK holds interrupts back until UNMASK.
    assert call(server, client, client.set_irqs, PciIrq.INTX, 0, 1,
                IrqSetFlags.DATA_BOOL | IrqSetFlags.ACTION_MASK, data=b"\1").ok
    assert not device.irqs.trigger(PciIrq.INTX)
    assert call(server, client, client.set_irqs, PciIrq.INTX, 0, 1, unmask).ok
    assert eventfd_count(fd) == 1
    os.close(fd)


@pytest.mark.parametrize("index, start, count, flags, nfds, data, err", [
    (2, 0, 1, IrqSetFlags.DATA_EVENTFD, 1, b"", errno.EINVAL),            # no action
    (2, 0, 1, EVENTFD_TRIGGER | IrqSetFlags.DATA_NONE, 1, b"", errno.EINVAL),   # two data
    (2, 0, 1, EVENTFD_TRIGGER | IrqSetFlags.ACTION_MASK, 1, b"", errno.EINVAL),  # two actions
    (2, 0, 1, 0x40 | IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER, 0, b"",
     errno.EINVAL),                                                          # unknown flag
    (2, 3, 2, EVENTFD_TRIGGER, 2, b"", errno.EINVAL),                      # beyond count
    (5, 0, 1, EVENTFD_TRIGGER, 1, b"", errno.EINVAL),                      # no such index
    (1, 0, 1, EVENTFD_TRIGGER, 1, b"", errno.EINVAL),                      # MSI: none
    (2, 0, 2, EVENTFD_TRIGGER, 1, b"", errno.EINVAL),                      # fds != count
    (2, 0, 1, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER, 1, b"", errno.EINVAL),
    (2, 0, 1, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_MASK, 0, b"", errno.EINVAL),
    (0, 0, 1, IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_UNMASK, 1, b"", errno.ENOTSUP),
    (2, 0, 2, IrqSetFlags.DATA_BOOL | IrqSetFlags.ACTION_TRIGGER, 0, b"\1", errno.EINVAL),
    (2, 0, 0, EVENTFD_TRIGGER, 0, b"", errno.EINVAL),                      # count 0
    (2, 1, 0, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_TRIGGER, 0, b"", errno.EINVAL),
])
def test_set_irqs_refused(pair, index, start, count, flags, nfds, data, err):
    server, client, device = pair
    negotiate(server, client)
    keep = [new_eventfd()]
    call(server, client, client.set_irq_eventfds, PciIrq.MSIX, 0, keep)
    fds = [new_eventfd() for _ in range(nfds)]
    refused(call(server, client, client.set_irqs, index, start, count, flags, fds, data), err)
    assert device.irqs.enabled(PciIrq.MSIX) == [0], "a refused request changes nothing"
    for fd in fds + keep:
        os.close(fd)


# -- reset, unknown commands, broken streams, disconnection -----------------------------------

def test_reset(pair):
    server, client, device = pair
    negotiate(server, client)
    device.mem[0][0] = 1
    assert call(server, client, client.reset).ok
    assert device.resets == 1 and device.mem[0][0] == 0
    refused(call(server, client, client.send, Command.DEVICE_RESET, b"x"), errno.EINVAL)


@pytest.mark.parametrize("command, err", [
    (99, errno.ENOSYS), (Command.DMA_READ, errno.EINVAL), (Command.DMA_WRITE, errno.EINVAL),
    (Command.DEVICE_FEATURE, errno.ENOTSUP), (Command.MIG_DATA_READ, errno.ENOTSUP),
])
def test_unknown_and_unsupported_commands(pair, command, err):
    server, client, _ = pair
    negotiate(server, client)
    refused(call(server, client, client.send, command, b"\0" * 16), err)
    assert call(server, client, client.device_info).ok      # the connection goes on


def test_descriptors_on_commands_that_take_none_are_refused(pair):
    server, client, _ = pair
    negotiate(server, client)
    fd = new_eventfd()
    refused(call(server, client, client.send, Command.DEVICE_GET_INFO,
                 struct.pack("<IIII", 16, 0, 0, 0), fds=[fd]), errno.EINVAL)
    os.close(fd)


def test_bad_header_closes_the_connection(pair):
    server, client, device = pair
    negotiate(server, client)
    ram = memfd(0x1000)
    call(server, client, client.dma_map, 0, 0x1000, os.dup(ram), 0)
    client.send(Command.DEVICE_GET_INFO, size=8)                 # shorter than a header
    with pytest.raises(ProtocolError, match="shorter than its header"):
        server.poll(timeout=2)
    assert not server.connected and len(device.dma) == 0
    assert device.events[-1] == "disconnected"
    os.close(ram)


def test_replies_from_the_client_are_a_protocol_error(pair):
    server, client, _ = pair
    client.send(Command.VERSION, struct.pack("<HH", 0, 0), flags=HeaderFlags.REPLY)
    with pytest.raises(ProtocolError, match="not a command"):
        server.poll(timeout=2)


def test_oversized_message_is_a_protocol_error(pair):
    server, client, _ = pair
    negotiate(server, client)
    client.send(Command.REGION_WRITE, size=1 << 30)
    with pytest.raises(ProtocolError, match="larger than"):
        server.poll(timeout=2)


def test_truncated_message_is_a_protocol_error(pair):
    server, client, _ = pair
    negotiate(server, client)
    client.send(Command.REGION_WRITE, b"\0" * 8, size=64)
    client.sock.shutdown(2)
    with pytest.raises(ProtocolError, match="closed in the middle"):
        server.poll(timeout=2)


def test_disconnect_cleans_up_and_a_new_client_can_connect(tmp_path):
    device = ScratchDevice()
    server = VfioUserServer(tmp_path / "s", device)
    client = VfioUserClient(tmp_path / "s")
    assert server.accept(2)
    negotiate(server, client)
    ram = memfd(0x1000)
    call(server, client, client.dma_map, 0, 0x1000, os.dup(ram), 0)
    efd = new_eventfd()
    call(server, client, client.set_irq_eventfds, PciIrq.MSIX, 0, [efd])
    device.mem[0][0:4] = b"kept"
    client.close()
    with pytest.raises(ClientDisconnected):
        server.poll(timeout=2)
    assert len(device.dma) == 0 and device.irqs.enabled(PciIrq.MSIX) == []
    assert device.events == ["connected", "disconnected"]
    # The device state survives; a new client negotiates again.
    client = VfioUserClient(tmp_path / "s")
    assert server.accept(2)
    negotiate(server, client)
    assert call(server, client, client.region_read, 0, 0, 4).payload[16:] == b"kept"
    # serve() returns True when the client leaves.
    client.close()
    assert server.serve(timeout=2) is True
    server.close()
    assert not os.path.exists(tmp_path / "s")
    os.close(ram)
    os.close(efd)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_refused_requests_leak_no_descriptors(pair):
    server, client, device = pair
    negotiate(server, client)
    before = open_fds()
    for _ in range(5):
        fds = [new_eventfd(), new_eventfd()]
        refused(call(server, client, client.set_irqs, PciIrq.MSIX, 3, 2, EVENTFD_TRIGGER, fds),
                errno.EINVAL)
        ram = memfd(0x1000)
        refused(call(server, client, client.dma_map, 0, 0, ram, 0), errno.EINVAL)
        refused(call(server, client, client.send, Command.DEVICE_RESET, fds=[fds[0]]),
                errno.EINVAL)
        for fd in fds + [ram]:
            os.close(fd)
    assert open_fds() == before
    # Accepted descriptors are kept until replaced or the client leaves.
    fds = [new_eventfd() for _ in range(4)]
    call(server, client, client.set_irq_eventfds, PciIrq.MSIX, 0, fds)
    assert open_fds() == before + 8                     # ours and the server's copies
    call(server, client, client.set_irq_eventfds, PciIrq.MSIX, 0, fds[:2])
    assert open_fds() == before + 8                     # two replaced, none leaked
    call(server, client, client.set_irqs, PciIrq.MSIX, 2, 2, EVENTFD_TRIGGER)
    assert open_fds() == before + 6                     # two de-assigned and closed
    for fd in fds:
        os.close(fd)
    server.disconnect()                                 # closes the connection and the rest
    assert open_fds() == before - 1


def test_serve_times_out(pair):
    server, _, _ = pair
    assert server.serve(timeout=0.05) is False


def test_socket_path_too_long(tmp_path):
    with pytest.raises(ValueError, match="longer than a unix socket path"):
        VfioUserServer(tmp_path / ("x" * 120), ScratchDevice())


def test_device_that_awaits_cannot_be_served_synchronously(tmp_path):
    import asyncio

    class Slow(ScratchDevice):
        async def _slow(self):
            await asyncio.sleep(0)
            return b"\0" * 4

        def region_read(self, index, offset, count):
            return self._slow()

    server = VfioUserServer(tmp_path / "s", Slow())
    client = VfioUserClient(tmp_path / "s")
    server.accept(2)
    negotiate(server, client)
    client.region_read(0, 0, 4)
    with pytest.raises(RuntimeError, match="event loop"):
        _run_sync(server.handle(server.poll(2)))
    server.close()
