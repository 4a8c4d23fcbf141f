# SPDX-License-Identifier: BSD-2-Clause
"""A vfio-user server: a PCI device in this process, driven by QEMU's ``vfio-user-pci``.

The protocol is QEMU's ``docs/interop/vfio-user.rst`` (version 0.1): 16-byte headers on a unix
stream socket, file descriptors as ``SCM_RIGHTS``. The client (QEMU) connects, negotiates the
version, maps guest memory (``DMA_MAP`` with a memfd that this process ``mmap``\\ s), asks about
the device (``DEVICE_GET_INFO``, ``DEVICE_GET_REGION_INFO``, ``DEVICE_GET_IRQ_INFO``), hands over
eventfds for the interrupts (``DEVICE_SET_IRQS``) and forwards the guest's configuration-space
and BAR accesses (``REGION_READ`` / ``REGION_WRITE``).

The server is single-threaded and never blocks unless asked to: :meth:`VfioUserServer.poll`
waits for messages at most as long as it is told, so a simulation can call it between clock
cycles; :meth:`VfioUserServer.handle` is a coroutine, so a device may await simulated events
(a completion TLP) before answering. Devices whose methods answer at once can be served with
:meth:`VfioUserServer.serve` and need no event loop.

A device is a :class:`VfioUserDevice` subclass. It describes its regions and interrupts and
implements region access and reset; the server does everything else: argument checking (each
bad request gets an error reply whose errno and log line say what was wrong, and the connection
goes on), the guest-memory table (:class:`DmaSpace`) and the interrupt table (:class:`IrqTable`),
which the device uses to reach guest memory and to signal interrupts. Guest memory must be
shared with file descriptors (QEMU: ``memory-backend-memfd,share=on``); message-based
``DMA_READ``/``DMA_WRITE`` are not implemented, so an access to memory mapped without a file
descriptor raises :class:`DmaError` saying so.

When the client disconnects, guest memory is unmapped and every eventfd closed, as the protocol
requires; the device keeps its state and :meth:`VfioUserServer.accept` can take a new client.
"""

import enum
import errno
import inspect
import json
import logging
import mmap
import os
import select
import socket
import struct
from bisect import bisect_right
from dataclasses import dataclass, field

__all__ = [
    "Command", "HeaderFlags", "DeviceFlags", "RegionFlags", "IrqInfoFlags", "IrqSetFlags",
    "DmaMapFlags", "DmaUnmapFlags", "PciRegion", "PciIrq", "HEADER",
    "VfioUserError", "ProtocolError", "ClientDisconnected", "DmaError",
    "Message", "Region", "IrqType", "DmaSpace", "IrqTable", "VfioUserDevice", "VfioUserServer",
    "PROTOCOL_VERSION",
]

log = logging.getLogger("cocotb.vfio_user")

#: (major, minor) this server speaks.
PROTOCOL_VERSION = (0, 1)

#: id, command, message size (including this header), flags, error.
HEADER = struct.Struct("<HHIII")


class Command(enum.IntEnum):
    VERSION                 = 1
    DMA_MAP                 = 2
    DMA_UNMAP               = 3
    DEVICE_GET_INFO         = 4
    DEVICE_GET_REGION_INFO  = 5
    DEVICE_GET_REGION_IO_FDS = 6
    DEVICE_GET_IRQ_INFO     = 7
    DEVICE_SET_IRQS         = 8
    REGION_READ             = 9
    REGION_WRITE            = 10
    DMA_READ                = 11
    DMA_WRITE               = 12
    DEVICE_RESET            = 13
    REGION_WRITE_MULTI      = 15
    DEVICE_FEATURE          = 16
    MIG_DATA_READ           = 17
    MIG_DATA_WRITE          = 18


class HeaderFlags(enum.IntFlag):
    REPLY     = 0x1      # type field (bits 0-3): 0 command, 1 reply
    NO_REPLY  = 0x10
    ERROR     = 0x20


TYPE_MASK = 0xF


class DeviceFlags(enum.IntFlag):
    RESET = 1 << 0
    PCI   = 1 << 1


class RegionFlags(enum.IntFlag):
    READ  = 1 << 0
    WRITE = 1 << 1
    MMAP  = 1 << 2
    CAPS  = 1 << 3


class IrqInfoFlags(enum.IntFlag):
    EVENTFD    = 1 << 0
    MASKABLE   = 1 << 1
    AUTOMASKED = 1 << 2
    NORESIZE   = 1 << 3


class IrqSetFlags(enum.IntFlag):
    DATA_NONE      = 1 << 0
    DATA_BOOL      = 1 << 1
    DATA_EVENTFD   = 1 << 2
    ACTION_MASK    = 1 << 3
    ACTION_UNMASK  = 1 << 4
    ACTION_TRIGGER = 1 << 5


IRQ_DATA = IrqSetFlags.DATA_NONE | IrqSetFlags.DATA_BOOL | IrqSetFlags.DATA_EVENTFD
IRQ_ACTION = IrqSetFlags.ACTION_MASK | IrqSetFlags.ACTION_UNMASK | IrqSetFlags.ACTION_TRIGGER


class DmaMapFlags(enum.IntFlag):
    READ  = 1 << 0
    WRITE = 1 << 1


class DmaUnmapFlags(enum.IntFlag):
    ALL = 1 << 1        # VFIO_DMA_UNMAP_FLAG_ALL: unmap everything (iova and size 0)


class PciRegion(enum.IntEnum):
    """Region indices of a PCI device (``VFIO_PCI_*_REGION_INDEX``)."""
    BAR0 = 0
    BAR1 = 1
    BAR2 = 2
    BAR3 = 3
    BAR4 = 4
    BAR5 = 5
    ROM = 6
    CONFIG = 7
    VGA = 8


NUM_PCI_REGIONS = 9


class PciIrq(enum.IntEnum):
    """Interrupt indices of a PCI device (``VFIO_PCI_*_IRQ_INDEX``)."""
    INTX = 0
    MSI = 1
    MSIX = 2
    ERR = 3
    REQ = 4


NUM_PCI_IRQS = 5

# Payload layouts (all little-endian, host order on x86).
_ARGSZ_FLAGS = struct.Struct("<II")
_VERSION = struct.Struct("<HH")
_DMA_MAP = struct.Struct("<IIQQQ")          # argsz, flags, offset, address, size
_DMA_UNMAP = struct.Struct("<IIQQ")         # argsz, flags, address, size
_DEVICE_INFO = struct.Struct("<IIII")       # argsz, flags, num_regions, num_irqs
_REGION_INFO = struct.Struct("<IIIIQQ")     # argsz, flags, index, cap_offset, size, offset
_IRQ_INFO = struct.Struct("<IIII")          # argsz, flags, index, count
_IRQ_SET = struct.Struct("<IIIII")          # argsz, flags, index, start, count
_REGION_ACCESS = struct.Struct("<QII")      # offset, region, count
_WRITE_MULTI_COUNT = struct.Struct("<Q")
_WRITE_MULTI_ENTRY = struct.Struct("<QII8s")
_EVENTFD_VALUE = struct.Struct("<Q")


class VfioUserError(Exception):
    """A request the server refuses: answered with an error reply carrying ``errno``."""

    def __init__(self, err, message):
        self.errno = err
        super().__init__(message)


class ProtocolError(Exception):
    """The byte stream cannot be trusted any more (bad header, truncated message): the server
    closes the connection."""


class ClientDisconnected(Exception):
    """The client closed the socket."""


class DmaError(Exception):
    """A device access to guest memory that cannot be done (unmapped, read-only, fd-less)."""


@dataclass
class Message:
    """A message received from the client."""
    id: int
    command: int
    flags: int
    payload: bytes
    fds: list = field(default_factory=list)

    @property
    def no_reply(self):
        return bool(self.flags & HeaderFlags.NO_REPLY)

    @property
    def name(self):
        try:
            return Command(self.command).name
        except ValueError:
            return f"command {self.command}"


@dataclass
class Region:
    """A device region: ``size`` bytes with ``flags`` (:class:`RegionFlags`)."""
    size: int = 0
    flags: int = 0

    def __post_init__(self):
        if self.size < 0:
            raise ValueError(f"region size must not be negative, not {self.size}")


@dataclass
class IrqType:
    """An interrupt index: ``count`` interrupts with ``flags`` (:class:`IrqInfoFlags`)."""
    count: int = 0
    flags: int = 0


# -- guest memory ----------------------------------------------------------------------------

class _Mapping:
    __slots__ = ("iova", "size", "flags", "mem", "base")

    def __init__(self, iova, size, flags, mem, base):
        self.iova, self.size, self.flags, self.mem, self.base = iova, size, flags, mem, base

    @property
    def end(self):
        return self.iova + self.size


class DmaSpace:
    """The client's memory as ``DMA_MAP`` describes it: address ranges, most backed by ``mmap``.

    :meth:`read` and :meth:`write` take guest (IOVA) addresses and may cross from one mapping
    into the next adjacent one; anything else raises :class:`DmaError` naming the address.
    """

    def __init__(self, max_maps=65535):
        self.max_maps = max_maps
        self._maps = []          # sorted by iova
        self._starts = []

    def __len__(self):
        return len(self._maps)

    def __iter__(self):
        return iter([(m.iova, m.size, m.flags, m.mem is not None) for m in self._maps])

    def map(self, iova, size, flags, fd=None, offset=0):
        """Add a mapping; ``fd`` (taken over and closed here) backs it, or None for fd-less."""
        try:
            if size <= 0:
                raise VfioUserError(errno.EINVAL, f"DMA_MAP of size {size}")
            if iova + size > 1 << 64:
                raise VfioUserError(errno.EINVAL, f"DMA_MAP 0x{iova:x}+0x{size:x} wraps around "
                                                  f"the 64-bit address space")
            if flags & ~int(DmaMapFlags.READ | DmaMapFlags.WRITE):
                raise VfioUserError(errno.EINVAL, f"DMA_MAP with unknown flags 0x{flags:x}")
            if not flags & DmaMapFlags.READ:
                raise VfioUserError(errno.EINVAL, f"DMA_MAP 0x{iova:x}+0x{size:x} is not "
                                                  f"readable")
            i = bisect_right(self._starts, iova)
            for m in self._maps[max(0, i - 1):i + 1]:
                if iova < m.end and m.iova < iova + size:
                    raise VfioUserError(errno.EEXIST,
                                        f"DMA_MAP 0x{iova:x}+0x{size:x} overlaps the mapping "
                                        f"0x{m.iova:x}+0x{m.size:x}")
            if len(self._maps) >= self.max_maps:
                raise VfioUserError(errno.ENOSPC, f"more than {self.max_maps} DMA mappings")
            mem, base = None, 0
            if fd is not None:
                page = mmap.ALLOCATIONGRANULARITY
                aligned = offset - offset % page
                base = offset - aligned
                prot = mmap.PROT_READ | (mmap.PROT_WRITE if flags & DmaMapFlags.WRITE else 0)
                try:
                    mem = mmap.mmap(fd, size + base, flags=mmap.MAP_SHARED, prot=prot,
                                    offset=aligned)
                except (OSError, ValueError) as e:
                    err = getattr(e, "errno", None) or errno.EINVAL
                    raise VfioUserError(err, f"cannot mmap DMA_MAP 0x{iova:x}+0x{size:x} at "
                                             f"file offset 0x{offset:x}: {e}") from None
        finally:
            if fd is not None:
                os.close(fd)
        self._maps.insert(i, _Mapping(iova, size, flags, mem, base))
        self._starts.insert(i, iova)

    def unmap(self, iova, size):
        """Remove the mapping that is exactly ``iova``/``size``."""
        i = bisect_right(self._starts, iova) - 1
        if i < 0 or self._maps[i].iova != iova or self._maps[i].size != size:
            raise VfioUserError(errno.ENOENT, f"DMA_UNMAP 0x{iova:x}+0x{size:x} matches no "
                                              f"mapping")
        m = self._maps.pop(i)
        self._starts.pop(i)
        if m.mem is not None:
            m.mem.close()

    def unmap_all(self):
        for m in self._maps:
            if m.mem is not None:
                m.mem.close()
        self._maps.clear()
        self._starts.clear()

    def _pieces(self, addr, length, write):
        """(mapping, offset in it, bytes) covering ``addr``..``addr+length``."""
        pieces = []
        pos, end = addr, addr + length
        what = "write" if write else "read"
        while pos < end:
            i = bisect_right(self._starts, pos) - 1
            m = self._maps[i] if i >= 0 else None
            if m is None or pos >= m.end:
                raise DmaError(f"DMA {what} of {length} bytes at 0x{addr:x}: 0x{pos:x} is not "
                               f"in guest memory (no DMA_MAP covers it)")
            if m.mem is None:
                raise DmaError(f"DMA {what} of {length} bytes at 0x{addr:x}: the mapping "
                               f"0x{m.iova:x}+0x{m.size:x} came without a file descriptor and "
                               f"message-based DMA is not supported (give QEMU "
                               f"memory-backend-memfd,share=on)")
            if write and not m.flags & DmaMapFlags.WRITE:
                raise DmaError(f"DMA write of {length} bytes at 0x{addr:x}: the mapping "
                               f"0x{m.iova:x}+0x{m.size:x} is read-only")
            n = min(end, m.end) - pos
            pieces.append((m, pos - m.iova + m.base, n))
            pos += n
        return pieces

    def read(self, addr, length):
        return b"".join(bytes(m.mem[o:o + n]) for m, o, n in self._pieces(addr, length, False))

    def write(self, addr, data):
        data = bytes(data)
        pos = 0
        for m, o, n in self._pieces(addr, len(data), True):
            m.mem[o:o + n] = data[pos:pos + n]
            pos += n

    def contains(self, addr, length=1):
        try:
            self._pieces(addr, length, False)
        except DmaError:
            return False
        return True


# -- interrupts ------------------------------------------------------------------------------

class IrqTable:
    """Eventfds and mask state per interrupt index, as ``DEVICE_SET_IRQS`` configures them.

    The device calls :meth:`trigger`. For an index with ``AUTOMASKED`` (INTx), a trigger masks
    the interrupt until the client unmasks it (the guest's EOI), and an interrupt that is still
    pending then is delivered again, as for a level-triggered line (vfio-pci's INTx emulation).
    """

    def __init__(self, irq_types):
        self.types = dict(irq_types)
        self.fds = {index: [None] * t.count for index, t in self.types.items()}
        self.masked = {index: [False] * t.count for index, t in self.types.items()}
        self.pending = {index: [False] * t.count for index, t in self.types.items()}
        self.signals = {index: [0] * t.count for index, t in self.types.items()}
        #: Whether the client enabled the index: ``SET_IRQS`` with DATA_EVENTFD and a count
        #: (even with no descriptors: QEMU enables MSI-X that way before any vector is used)
        #: until ``SET_IRQS`` DATA_NONE|TRIGGER with count 0 disables it.
        self.active = {index: False for index in self.types}

    def enabled(self, index):
        """Sub-indexes with an eventfd."""
        return [i for i, fd in enumerate(self.fds.get(index, [])) if fd is not None]

    def set_fd(self, index, sub, fd):
        old = self.fds[index][sub]
        if old is not None:
            os.close(old)
        self.fds[index][sub] = fd
        if fd is None:
            self.masked[index][sub] = False
            self.pending[index][sub] = False

    def close_all(self):
        for index, fds in self.fds.items():
            for sub in range(len(fds)):
                self.set_fd(index, sub, None)
            self.active[index] = False

    def _signal(self, index, sub):
        fd = self.fds[index][sub]
        if fd is None:
            return False
        os.write(fd, _EVENTFD_VALUE.pack(1))
        self.signals[index][sub] += 1
        return True

    def trigger(self, index, sub=0):
        """Signal interrupt ``sub`` of ``index``; False if it has no eventfd or is masked (it is
        then remembered as pending)."""
        if sub >= len(self.fds.get(index, [])):
            raise IndexError(f"interrupt {sub} of index {index} does not exist")
        if self.masked[index][sub]:
            self.pending[index][sub] = True
            return False
        if not self._signal(index, sub):
            return False
        if self.types[index].flags & IrqInfoFlags.AUTOMASKED:
            self.masked[index][sub] = True
        return True

    def mask(self, index, sub):
        self.masked[index][sub] = True

    def unmask(self, index, sub, still_pending=False):
        """Unmask; with ``still_pending`` (a level interrupt still asserted) signal again."""
        self.masked[index][sub] = False
        if still_pending or self.pending[index][sub]:
            self.pending[index][sub] = False
            self.trigger(index, sub)

    def clear_pending(self, index, sub):
        self.pending[index][sub] = False


# -- the device ------------------------------------------------------------------------------

class VfioUserDevice:
    """Base class of devices served by :class:`VfioUserServer`.

    Subclasses set :attr:`regions` ({index: :class:`Region`}) and :attr:`irq_types`
    ({index: :class:`IrqType`}) before the server is created and implement the access methods.
    Each access method may return its result directly or return an awaitable (a coroutine);
    the server awaits it before replying. Offsets and sizes have been checked against the region
    when they are called.

    After the server is made, :attr:`dma` (:class:`DmaSpace`) and :attr:`irqs`
    (:class:`IrqTable`) are the device's way to guest memory and interrupts.
    """

    regions = {}
    irq_types = {}
    device_flags = DeviceFlags.PCI | DeviceFlags.RESET

    dma = None
    irqs = None

    def region_read(self, index, offset, count):
        raise VfioUserError(errno.EINVAL, f"region {index} cannot be read")

    def region_write(self, index, offset, data):
        raise VfioUserError(errno.EINVAL, f"region {index} cannot be written")

    def reset(self):
        """``DEVICE_RESET``."""

    def irqs_changed(self, index):
        """Called after ``DEVICE_SET_IRQS`` changed the eventfds of ``index`` (e.g. to enable
        MSI-X in the device when the client gave it vectors)."""

    def irq_unmasked(self, index, sub):
        """Called after the client unmasked interrupt ``sub`` of ``index`` (for INTx: the
        guest's end of interrupt). Return True if the interrupt is still asserted (it is then
        signalled again)."""
        return False

    def client_connected(self):
        """Called once a client has negotiated the protocol version."""

    def client_disconnected(self):
        """Called after a client went away (memory is unmapped, eventfds are closed)."""


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


def _run_sync(coroutine):
    """Run a coroutine that must not suspend (a device whose methods answer at once)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the device awaited something: drive VfioUserServer.handle() from the "
                       "event loop the device runs in")


# -- the server ------------------------------------------------------------------------------

class VfioUserServer:
    """Listens on a unix socket and serves one client at a time.

    Parameters
    ----------
    path : socket path (an existing socket file there is replaced).
    device : the :class:`VfioUserDevice` to serve.
    max_data_xfer_size : the largest region access accepted, in bytes.
    max_msg_fds : the most file descriptors accepted in one message.
    max_dma_maps : the most DMA mappings at once.
    """

    def __init__(self, path, device, *, max_data_xfer_size=1 << 20, max_msg_fds=16,
                 max_dma_maps=65535, logger=None):
        self.path = os.fspath(path)
        self.device = device
        self.max_data_xfer_size = max_data_xfer_size
        self.max_msg_fds = max_msg_fds
        self.log = logger or log
        self.regions = {i: device.regions.get(i, Region()) for i in range(NUM_PCI_REGIONS)}
        self.regions.update(device.regions)
        self.irq_types = {i: device.irq_types.get(i, IrqType()) for i in range(NUM_PCI_IRQS)}
        self.irq_types.update(device.irq_types)
        self.dma = DmaSpace(max_dma_maps)
        self.irqs = IrqTable(self.irq_types)
        device.dma = self.dma
        device.irqs = self.irqs
        self.client_caps = {}
        self.negotiated = False
        self.stats = {c.name: 0 for c in Command}
        self.stats["errors"] = 0
        if len(self.path.encode()) >= 108:
            raise ValueError(f"socket path {self.path!r} is longer than a unix socket path may "
                             f"be (107 bytes)")
        if os.path.lexists(self.path):
            os.unlink(self.path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.conn = None

    # -- connection --------------------------------------------------------------------------
    @property
    def connected(self):
        return self.conn is not None

    def accept(self, timeout=None):
        """Wait up to ``timeout`` seconds (None: forever) for a client; True if one came."""
        if self.conn is not None:
            raise RuntimeError("a client is already connected")
        ready, _, _ = select.select([self.listener], [], [], timeout)
        if not ready:
            return False
        self.conn, _ = self.listener.accept()
        self.negotiated = False
        self.log.info("vfio-user client connected on %s", self.path)
        return True

    def disconnect(self):
        """Drop the client: unmap its memory, close its eventfds (the device keeps its state)."""
        if self.conn is None:
            return
        with _suppress_os_error():
            self.conn.close()
        self.conn = None
        self.negotiated = False
        self.dma.unmap_all()
        self.irqs.close_all()
        self.device.client_disconnected()
        self.log.info("vfio-user client disconnected")

    def close(self):
        """Disconnect and stop listening; removes the socket file."""
        self.disconnect()
        with _suppress_os_error():
            self.listener.close()
        with _suppress_os_error():
            os.unlink(self.path)

    def fileno(self):
        return self.conn.fileno() if self.conn is not None else self.listener.fileno()

    # -- receiving -------------------------------------------------------------------------
    def poll(self, timeout=0.0):
        """The next message if one arrives within ``timeout`` seconds, else None.

        Raises :class:`ClientDisconnected` when the client has gone (the server has already
        cleaned up after it) and :class:`ProtocolError` for a stream it cannot read on (the
        connection is then closed).
        """
        if self.conn is None:
            raise ClientDisconnected("no client is connected")
        ready, _, _ = select.select([self.conn], [], [], timeout)
        if not ready:
            return None
        try:
            return self._receive()
        except ClientDisconnected:
            self.disconnect()
            raise
        except ProtocolError as e:
            self.log.error("vfio-user: %s; closing the connection", e)
            self.disconnect()
            raise

    def _recv_exact(self, n, fds):
        chunks, got = [], 0
        while got < n:
            try:
                data, new_fds, _, _ = socket.recv_fds(self.conn, n - got, self.max_msg_fds)
            except (ConnectionResetError, BrokenPipeError):
                data, new_fds = b"", []
            except TimeoutError:
                raise ProtocolError(f"message truncated: {got} of {n} bytes arrived") from None
            fds.extend(new_fds)
            if not data:
                if got == 0 and not chunks and n == HEADER.size:
                    raise ClientDisconnected("the client closed the connection")
                raise ProtocolError(f"connection closed in the middle of a message ({got} of "
                                    f"{n} bytes)")
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def _receive(self):
        fds = []
        # The rest of a message follows its first bytes at once: read it with a deadline.
        self.conn.settimeout(10.0)
        try:
            header = self._recv_exact(HEADER.size, fds)
            msg_id, command, size, flags, _ = HEADER.unpack(header)
            if size < HEADER.size:
                raise ProtocolError(f"message {msg_id} says it is {size} bytes, shorter than "
                                    f"its header")
            limit = HEADER.size + 64 + self.max_data_xfer_size
            if size > limit:
                raise ProtocolError(f"message {msg_id} ({command}) of {size} bytes is larger "
                                    f"than the {limit} this server accepts")
            payload = self._recv_exact(size - HEADER.size, fds) if size > HEADER.size else b""
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        finally:
            if self.conn is not None:
                self.conn.settimeout(None)
        if flags & TYPE_MASK != 0:
            for fd in fds:
                os.close(fd)
            raise ProtocolError(f"message {msg_id} is not a command (flags 0x{flags:x}); this "
                                f"server sends no commands, so it expects no replies")
        return Message(msg_id, command, flags, payload, fds)

    # -- replying --------------------------------------------------------------------------
    def _send(self, message, payload=b"", err=0, fds=()):
        if message.no_reply or self.conn is None:
            return
        flags = HeaderFlags.REPLY | (HeaderFlags.ERROR if err else 0)
        data = HEADER.pack(message.id, message.command, HEADER.size + len(payload), flags,
                           err) + payload
        try:
            if fds:
                socket.send_fds(self.conn, [data], list(fds))
            else:
                self.conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            self.disconnect()

    # -- dispatch --------------------------------------------------------------------------
    async def handle(self, message):
        """Carry out one command and send its reply (an error reply if it is refused)."""
        handler = self._HANDLERS.get(message.command)
        try:
            if handler is None:
                raise VfioUserError(errno.ENOSYS, f"unknown command {message.command}")
            if message.command != Command.VERSION and not self.negotiated:
                raise VfioUserError(errno.EINVAL, f"{message.name} before VERSION")
            if message.command not in (Command.DMA_MAP, Command.DEVICE_SET_IRQS) and message.fds:
                raise VfioUserError(errno.EINVAL, f"{message.name} carries {len(message.fds)} "
                                                  f"descriptors; it takes none")
            self.stats[Command(message.command).name] += 1
            reply = await handler(self, message)
            self._send(message, reply or b"")
        except VfioUserError as e:
            self.stats["errors"] += 1
            self.log.error("vfio-user %s refused: %s (%s)", message.name, e,
                           errno.errorcode.get(e.errno, e.errno))
            self._send(message, err=e.errno)
        finally:
            # Descriptors a handler did not take over (handlers remove those they keep).
            for fd in message.fds:
                with _suppress_os_error():
                    os.close(fd)
            message.fds = []

    def serve(self, timeout=None):
        """Serve a device that answers at once until the client leaves (or ``timeout`` seconds
        pass with no message). Returns False on timeout, True when the client left."""
        while True:
            try:
                message = self.poll(timeout)
            except ClientDisconnected:
                return True
            if message is None:
                return False
            _run_sync(self.handle(message))

    # -- commands --------------------------------------------------------------------------
    @staticmethod
    def _unpack(message, layout, what=None):
        if len(message.payload) < layout.size:
            raise VfioUserError(errno.EINVAL, f"{what or message.name} payload of "
                                              f"{len(message.payload)} bytes is shorter than "
                                              f"{layout.size}")
        return layout.unpack_from(message.payload)

    async def _version(self, message):
        if self.negotiated:
            raise VfioUserError(errno.EINVAL, "VERSION sent twice")
        major, minor = self._unpack(message, _VERSION)
        if major != PROTOCOL_VERSION[0]:
            raise VfioUserError(errno.ENOTSUP, f"protocol major version {major}; this server "
                                               f"speaks {PROTOCOL_VERSION[0]}")
        text = message.payload[_VERSION.size:].split(b"\0", 1)[0]
        caps = {}
        if text:
            try:
                caps = json.loads(text.decode()).get("capabilities", {})
            except (ValueError, UnicodeDecodeError, AttributeError) as e:
                raise VfioUserError(errno.EINVAL, f"VERSION capabilities are not JSON: "
                                                  f"{e}") from None
            if not isinstance(caps, dict):
                raise VfioUserError(errno.EINVAL, "VERSION capabilities are not an object")
        self.client_caps = caps
        pgsizes = caps.get("pgsizes", 4096)
        if not isinstance(pgsizes, int) or not pgsizes & mmap.PAGESIZE:
            raise VfioUserError(errno.EINVAL, f"client page sizes 0x{pgsizes:x} exclude this "
                                              f"host's 0x{mmap.PAGESIZE:x}")
        ours = {"max_msg_fds": self.max_msg_fds, "max_data_xfer_size": self.max_data_xfer_size,
                "max_dma_maps": self.dma.max_maps, "pgsizes": mmap.PAGESIZE}
        # Answer only with capabilities the client proposed (the reply must be a subset).
        reply = {k: v for k, v in ours.items() if k in caps}
        if caps.get("write_multiple"):
            reply["write_multiple"] = True
        self.negotiated = True
        self.log.info("vfio-user: client version %d.%d, capabilities %s", major, minor, caps)
        self.device.client_connected()
        text = json.dumps({"capabilities": reply}).encode() + b"\0"
        return _VERSION.pack(major, min(minor, PROTOCOL_VERSION[1])) + text

    async def _dma_map(self, message):
        argsz, flags, offset, iova, size = self._unpack(message, _DMA_MAP)
        if len(message.fds) > 1:
            raise VfioUserError(errno.EINVAL, f"DMA_MAP carries {len(message.fds)} file "
                                              f"descriptors; it takes at most one")
        fd = message.fds.pop() if message.fds else None
        self.dma.map(iova, size, flags, fd, offset)
        return b""

    async def _dma_unmap(self, message):
        argsz, flags, iova, size = self._unpack(message, _DMA_UNMAP)
        if flags & ~int(DmaUnmapFlags.ALL):
            raise VfioUserError(errno.EINVAL, f"DMA_UNMAP with unknown flags 0x{flags:x}")
        if flags & DmaUnmapFlags.ALL:
            if iova or size:
                raise VfioUserError(errno.EINVAL, "DMA_UNMAP of everything with an address or "
                                                  "size")
            self.dma.unmap_all()
        else:
            self.dma.unmap(iova, size)
        return message.payload[:_DMA_UNMAP.size]

    async def _device_get_info(self, message):
        argsz, _ = self._unpack(message, _ARGSZ_FLAGS)
        if argsz < _DEVICE_INFO.size:
            raise VfioUserError(errno.EINVAL, f"DEVICE_GET_INFO argsz {argsz} < "
                                              f"{_DEVICE_INFO.size}")
        return _DEVICE_INFO.pack(_DEVICE_INFO.size, int(self.device.device_flags),
                                 len(self.regions), len(self.irq_types))

    def _region(self, index, what):
        region = self.regions.get(index)
        if region is None:
            raise VfioUserError(errno.EINVAL, f"{what}: region {index} does not exist (the "
                                              f"device has {len(self.regions)})")
        return region

    async def _device_get_region_info(self, message):
        argsz, _, index, _, _, _ = self._unpack(message, _REGION_INFO)
        if argsz < _REGION_INFO.size:
            raise VfioUserError(errno.EINVAL, f"DEVICE_GET_REGION_INFO argsz {argsz} < "
                                              f"{_REGION_INFO.size}")
        region = self._region(index, "DEVICE_GET_REGION_INFO")
        return _REGION_INFO.pack(_REGION_INFO.size, int(region.flags), index, 0, region.size, 0)

    async def _device_get_region_io_fds(self, message):
        raise VfioUserError(errno.ENOTSUP, "no region has I/O file descriptors")

    async def _device_get_irq_info(self, message):
        argsz, _, index, _ = self._unpack(message, _IRQ_INFO)
        if argsz < _IRQ_INFO.size:
            raise VfioUserError(errno.EINVAL, f"DEVICE_GET_IRQ_INFO argsz {argsz} < "
                                              f"{_IRQ_INFO.size}")
        irq = self.irq_types.get(index)
        if irq is None:
            raise VfioUserError(errno.EINVAL, f"DEVICE_GET_IRQ_INFO: interrupt index {index} "
                                              f"does not exist")
        return _IRQ_INFO.pack(_IRQ_INFO.size, int(irq.flags), index, irq.count)

    async def _device_set_irqs(self, message):
        argsz, flags, index, start, count = self._unpack(message, _IRQ_SET)
        data_flag, action = flags & IRQ_DATA, flags & IRQ_ACTION
        if flags & ~int(IRQ_DATA | IRQ_ACTION):
            raise VfioUserError(errno.EINVAL, f"SET_IRQS with unknown flags 0x{flags:x}")
        if bin(data_flag).count("1") != 1 or bin(action).count("1") != 1:
            raise VfioUserError(errno.EINVAL, f"SET_IRQS flags 0x{flags:x} must have exactly one "
                                              f"DATA and one ACTION flag")
        irq = self.irq_types.get(index)
        if irq is None:
            raise VfioUserError(errno.EINVAL, f"SET_IRQS: interrupt index {index} does not "
                                              f"exist")
        fds = message.fds
        if fds and data_flag != IrqSetFlags.DATA_EVENTFD:
            raise VfioUserError(errno.EINVAL, "SET_IRQS carries file descriptors without "
                                              "DATA_EVENTFD")
        # count 0 with DATA_NONE and TRIGGER: disable every interrupt of the index.
        if count == 0:
            if data_flag == IrqSetFlags.DATA_NONE and action == IrqSetFlags.ACTION_TRIGGER:
                if start:
                    raise VfioUserError(errno.EINVAL, "SET_IRQS disable-all with start "
                                                      f"{start}")
                for sub in range(irq.count):
                    self.irqs.set_fd(index, sub, None)
                self.irqs.active[index] = False
                await _maybe_await(self.device.irqs_changed(index))
                return b""
            raise VfioUserError(errno.EINVAL, "SET_IRQS with count 0 (only DATA_NONE|TRIGGER "
                                              "may have it)")
        if start + count > irq.count:
            raise VfioUserError(errno.EINVAL, f"SET_IRQS {start}..{start + count - 1} of "
                                              f"index {index}, which has {irq.count}")
        subs = range(start, start + count)
        if data_flag == IrqSetFlags.DATA_BOOL:
            data = message.payload[_IRQ_SET.size:_IRQ_SET.size + count]
            if len(data) != count:
                raise VfioUserError(errno.EINVAL, f"SET_IRQS DATA_BOOL has {len(data)} of "
                                                  f"{count} booleans")
            subs = [sub for sub, b in zip(subs, data, strict=True) if b]
        if data_flag == IrqSetFlags.DATA_EVENTFD:
            if action != IrqSetFlags.ACTION_TRIGGER:
                raise VfioUserError(errno.ENOTSUP, "SET_IRQS: mask and unmask eventfds are not "
                                                   "supported")
            if fds and len(fds) != count:
                raise VfioUserError(errno.EINVAL, f"SET_IRQS DATA_EVENTFD: {len(fds)} file "
                                                  f"descriptors for {count} interrupts")
            if not irq.flags & IrqInfoFlags.EVENTFD:
                raise VfioUserError(errno.EINVAL, f"interrupt index {index} takes no eventfds")
            message.fds = []               # the interrupt table owns them from here
            for i, sub in enumerate(subs):
                # No descriptors: de-assign these interrupts.
                self.irqs.set_fd(index, sub, fds[i] if fds else None)
            self.irqs.active[index] = True
            await _maybe_await(self.device.irqs_changed(index))
            return b""
        if action in (IrqSetFlags.ACTION_MASK, IrqSetFlags.ACTION_UNMASK):
            if not irq.flags & IrqInfoFlags.MASKABLE:
                raise VfioUserError(errno.EINVAL, f"interrupt index {index} is not maskable")
            for sub in subs:
                if action == IrqSetFlags.ACTION_MASK:
                    self.irqs.mask(index, sub)
                else:
                    still = await _maybe_await(self.device.irq_unmasked(index, sub))
                    self.irqs.unmask(index, sub, still_pending=bool(still))
            return b""
        for sub in subs:                       # TRIGGER from the client: signal it
            self.irqs.trigger(index, sub)
        return b""

    def _check_access(self, what, offset, index, count, writing):
        region = self._region(index, what)
        need = RegionFlags.WRITE if writing else RegionFlags.READ
        if not region.flags & need:
            raise VfioUserError(errno.EINVAL, f"{what}: region {index} is not "
                                              f"{'writ' if writing else 'read'}able")
        if count == 0 or count > self.max_data_xfer_size:
            raise VfioUserError(errno.EINVAL, f"{what}: count {count} (1 to "
                                              f"{self.max_data_xfer_size} allowed)")
        if offset + count > region.size:
            raise VfioUserError(errno.EINVAL, f"{what}: 0x{offset:x}+{count} is beyond the end "
                                              f"of region {index} (0x{region.size:x} bytes)")

    async def _region_read(self, message):
        offset, index, count = self._unpack(message, _REGION_ACCESS)
        self._check_access("REGION_READ", offset, index, count, False)
        data = bytes(await _maybe_await(self.device.region_read(index, offset, count)))
        if len(data) != count:
            raise VfioUserError(errno.EIO, f"REGION_READ: the device returned {len(data)} of "
                                           f"{count} bytes")
        return _REGION_ACCESS.pack(offset, index, count) + data

    async def _region_write(self, message):
        offset, index, count = self._unpack(message, _REGION_ACCESS)
        data = message.payload[_REGION_ACCESS.size:]
        if len(data) != count:
            raise VfioUserError(errno.EINVAL, f"REGION_WRITE says {count} bytes but carries "
                                              f"{len(data)}")
        self._check_access("REGION_WRITE", offset, index, count, True)
        await _maybe_await(self.device.region_write(index, offset, data))
        return _REGION_ACCESS.pack(offset, index, count)

    async def _region_write_multi(self, message):
        n, = self._unpack(message, _WRITE_MULTI_COUNT)
        body = message.payload[_WRITE_MULTI_COUNT.size:]
        if len(body) != n * _WRITE_MULTI_ENTRY.size:
            raise VfioUserError(errno.EINVAL, f"REGION_WRITE_MULTI says {n} writes but carries "
                                              f"{len(body)} bytes")
        writes = [_WRITE_MULTI_ENTRY.unpack_from(body, i * _WRITE_MULTI_ENTRY.size)
                  for i in range(n)]
        for offset, index, count, _data in writes:
            if count > 8:
                raise VfioUserError(errno.EINVAL, f"REGION_WRITE_MULTI entry of {count} bytes "
                                                  f"(at most 8)")
            self._check_access("REGION_WRITE_MULTI", offset, index, count, True)
        for offset, index, count, data in writes:
            await _maybe_await(self.device.region_write(index, offset, data[:count]))
        return _WRITE_MULTI_COUNT.pack(n)

    async def _device_reset(self, message):
        if message.payload:
            raise VfioUserError(errno.EINVAL, "DEVICE_RESET carries a payload")
        await _maybe_await(self.device.reset())
        return b""

    async def _server_to_client(self, message):
        raise VfioUserError(errno.EINVAL, f"{message.name} goes from server to client")

    async def _unsupported(self, message):
        raise VfioUserError(errno.ENOTSUP, f"{message.name} is not supported (no migration)")

    _HANDLERS = {
        Command.VERSION: _version,
        Command.DMA_MAP: _dma_map,
        Command.DMA_UNMAP: _dma_unmap,
        Command.DEVICE_GET_INFO: _device_get_info,
        Command.DEVICE_GET_REGION_INFO: _device_get_region_info,
        Command.DEVICE_GET_REGION_IO_FDS: _device_get_region_io_fds,
        Command.DEVICE_GET_IRQ_INFO: _device_get_irq_info,
        Command.DEVICE_SET_IRQS: _device_set_irqs,
        Command.REGION_READ: _region_read,
        Command.REGION_WRITE: _region_write,
        Command.DMA_READ: _server_to_client,
        Command.DMA_WRITE: _server_to_client,
        Command.DEVICE_RESET: _device_reset,
        Command.REGION_WRITE_MULTI: _region_write_multi,
        Command.DEVICE_FEATURE: _unsupported,
        Command.MIG_DATA_READ: _unsupported,
        Command.MIG_DATA_WRITE: _unsupported,
    }


class _suppress_os_error:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, OSError)
