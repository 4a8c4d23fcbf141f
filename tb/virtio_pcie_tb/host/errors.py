# SPDX-License-Identifier: BSD-2-Clause
"""Failures of the host model, shaped like the Linux outcomes they stand for.

Linux reports a failed probe with a negative errno and a ``dev_err``/``dev_info`` line; the model
raises :class:`LinuxError` carrying the same errno name and the same message text, so a test can
assert ``excinfo.value.errno == "EINVAL"`` and ``"not aligned" in str(excinfo.value)`` exactly as
one would grep a kernel log. :class:`LinuxBug` stands for a ``BUG_ON``/``BUG()`` (the kernel would
oops): the driver did something the device made impossible, e.g. a config read past the
device-config window.
"""

__all__ = ["ERRNO", "LinuxError", "ProbeError", "LinuxBug", "VirtqueueBroken"]

#: The errno values the model uses (asm-generic/errno-base.h, errno.h).
ERRNO = {
    "EPERM": 1, "ENOENT": 2, "EIO": 5, "E2BIG": 7, "ENOMEM": 12, "EBUSY": 16, "ENODEV": 19,
    "EINVAL": 22, "ENOSPC": 28, "EPROTO": 71, "EOPNOTSUPP": 95,
}


class LinuxError(Exception):
    """A Linux function returned ``-errno``; ``str()`` is the kernel log line it printed."""

    def __init__(self, errno, message):
        if errno not in ERRNO:
            raise ValueError(f"unknown errno name {errno!r}")
        self.errno = errno
        self.message = message
        super().__init__(f"-{errno}: {message}")

    @property
    def code(self):
        """The negative errno number, as the kernel returns it."""
        return -ERRNO[self.errno]


class ProbeError(LinuxError):
    """``virtio_pci_probe()`` (or a virtio driver's probe) failed: Linux does not bind."""


class LinuxBug(AssertionError):
    """A ``BUG_ON()`` in the kernel: the model stops instead of oopsing."""


class VirtqueueBroken(LinuxError):
    """An operation on a virtqueue that ``BAD_RING()`` marked broken (``vq->broken``)."""

    def __init__(self, message):
        super().__init__("EIO", message)
