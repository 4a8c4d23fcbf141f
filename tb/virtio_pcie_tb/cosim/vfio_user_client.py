# SPDX-License-Identifier: BSD-2-Clause
"""A small vfio-user client: what QEMU's ``vfio-user-pci`` sends, from Python.

It exists to test :mod:`.vfio_user` servers without QEMU (the unit tests drive every command
and every refusal through it) and to poke at a device by hand. Replies are returned as
:class:`Reply` objects; an error reply is not an exception, so tests can check its errno.
"""

import json
import socket
from dataclasses import dataclass

from .vfio_user import (HEADER, Command, HeaderFlags, IrqSetFlags, _DMA_MAP, _DMA_UNMAP,
                        _DEVICE_INFO, _IRQ_INFO, _IRQ_SET, _REGION_ACCESS, _REGION_INFO,
                        _VERSION, DmaMapFlags)

__all__ = ["VfioUserClient", "Reply"]


@dataclass
class Reply:
    id: int
    command: int
    flags: int
    error: int
    payload: bytes
    fds: list

    @property
    def ok(self):
        return not self.flags & HeaderFlags.ERROR


class VfioUserClient:
    """Connects to a server's socket. ``send`` and ``recv`` are separate so that a test can run
    the server's side in between in the same thread."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._next_id = 1

    def close(self):
        self.sock.close()

    def send(self, command, payload=b"", fds=(), no_reply=False, msg_id=None, size=None,
             flags=None):
        """Send a command; ``size`` and ``flags`` override the header (for malformed ones)."""
        if msg_id is None:
            msg_id = self._next_id
            self._next_id = (self._next_id + 1) & 0xFFFF
        if flags is None:
            flags = HeaderFlags.NO_REPLY if no_reply else 0
        header = HEADER.pack(msg_id, int(command), HEADER.size + len(payload)
                             if size is None else size, int(flags), 0)
        if fds:
            socket.send_fds(self.sock, [header + payload], list(fds))
        else:
            self.sock.sendall(header + payload)
        return msg_id

    def _exact(self, n):
        data = b""
        fds = []
        while len(data) < n:
            chunk, new_fds, _, _ = socket.recv_fds(self.sock, n - len(data), 16)
            fds += new_fds
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data, fds

    def recv(self):
        header, fds = self._exact(HEADER.size)
        msg_id, command, size, flags, error = HEADER.unpack(header)
        payload, more = self._exact(size - HEADER.size) if size > HEADER.size else (b"", [])
        return Reply(msg_id, command, flags, error, payload, fds + more)

    # -- one helper per command (each sends; use recv() for the reply) -----------------------
    def version(self, caps=None, major=0, minor=1):
        text = json.dumps({"capabilities": caps if caps is not None else {
            "max_msg_fds": 16, "max_data_xfer_size": 1 << 20, "pgsizes": 4096,
            "max_dma_maps": 65535}}).encode() + b"\0"
        return self.send(Command.VERSION, _VERSION.pack(major, minor) + text)

    def dma_map(self, iova, size, fd=None, offset=0,
                flags=DmaMapFlags.READ | DmaMapFlags.WRITE):
        return self.send(Command.DMA_MAP, _DMA_MAP.pack(_DMA_MAP.size, int(flags), offset, iova,
                                                        size), fds=[fd] if fd is not None else ())

    def dma_unmap(self, iova, size, flags=0):
        return self.send(Command.DMA_UNMAP, _DMA_UNMAP.pack(_DMA_UNMAP.size, flags, iova, size))

    def device_info(self, argsz=_DEVICE_INFO.size):
        return self.send(Command.DEVICE_GET_INFO, _DEVICE_INFO.pack(argsz, 0, 0, 0))

    def region_info(self, index, argsz=_REGION_INFO.size):
        return self.send(Command.DEVICE_GET_REGION_INFO,
                         _REGION_INFO.pack(argsz, 0, index, 0, 0, 0))

    def irq_info(self, index, argsz=_IRQ_INFO.size):
        return self.send(Command.DEVICE_GET_IRQ_INFO, _IRQ_INFO.pack(argsz, 0, index, 0))

    def set_irqs(self, index, start, count, flags, fds=(), data=b""):
        return self.send(Command.DEVICE_SET_IRQS,
                         _IRQ_SET.pack(_IRQ_SET.size + len(data), int(flags), index, start,
                                       count) + data, fds=fds)

    def set_irq_eventfds(self, index, start, fds):
        return self.set_irqs(index, start, len(fds),
                             IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER, fds=fds)

    def region_read(self, index, offset, count):
        return self.send(Command.REGION_READ, _REGION_ACCESS.pack(offset, index, count))

    def region_write(self, index, offset, data, no_reply=False):
        return self.send(Command.REGION_WRITE,
                         _REGION_ACCESS.pack(offset, index, len(data)) + bytes(data),
                         no_reply=no_reply)

    def reset(self):
        return self.send(Command.DEVICE_RESET)
