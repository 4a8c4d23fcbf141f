# SPDX-License-Identifier: BSD-2-Clause
"""The pieces of the guest's initramfs, in plain Python (no cpio, no depmod, no root needed).

* :class:`CpioWriter` writes a ``newc`` cpio archive (the format the kernel unpacks into its
  rootfs, Documentation/driver-api/early-userspace/buffer-format.rst): directories, files,
  symlinks and device nodes, with fixed owners and times so that equal inputs give equal bytes.
  The kernel accepts several archives back to back, each compressed on its own; the co-simulation
  uses that to append a small per-run archive (the guest script and its environment) to a cached
  base image without rebuilding it.
* :class:`ModuleIndex` reads a kernel's ``modules.dep``, ``modules.softdep``, ``modules.alias``
  and ``modules.builtin`` and gives the load order of the modules a guest needs, dependencies
  first; busybox ``insmod`` knows nothing of dependencies and cannot read compressed modules, so
  :func:`decompress_module` unpacks ``.ko.xz`` / ``.ko.zst`` / ``.ko.gz``.
"""

import gzip
import lzma
import os
import shutil
import stat
import subprocess
import zlib
from pathlib import Path

__all__ = ["CpioWriter", "CpioEntry", "read_cpio", "ModuleIndex", "ModuleError",
           "decompress_module", "gzip_bytes"]


class CpioWriter:
    """Builds a ``newc`` cpio archive in memory.

    Paths are archive paths without the leading ``/``; parent directories must be added before
    their contents (:meth:`add_dir` with ``parents=True`` does it). Adding the same path twice is
    an error, so an archive never silently shadows one of its own files.
    """

    MAGIC = b"070701"

    def __init__(self):
        self._chunks = []
        self._names = set()
        self._ino = 1000
        self._closed = False

    def __contains__(self, path):
        return self._norm(path) in self._names

    @staticmethod
    def _norm(path):
        path = str(path).strip("/")
        if not path or any(part in ("", ".", "..") for part in path.split("/")):
            raise ValueError(f"bad archive path {path!r}")
        return path

    def _entry(self, path, mode, data=b"", rdev=(0, 0)):
        if self._closed:
            raise ValueError("archive already finished")
        name = self._norm(path) if path != "TRAILER!!!" else path
        if name in self._names:
            raise ValueError(f"{name!r} is already in the archive")
        self._names.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(encoded), 0]
        header = self.MAGIC + b"".join(b"%08X" % f for f in fields)
        self._chunks.append(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        self._chunks.append(data + b"\0" * (-len(data) % 4))

    def add_dir(self, path, mode=0o755, parents=True):
        path = self._norm(path)
        if parents:
            parts = path.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in self._names:
                    self._entry(parent, stat.S_IFDIR | 0o755)
        if path not in self._names:
            self._entry(path, stat.S_IFDIR | mode)

    def add_file(self, path, data, mode=0o644):
        self._parents(path)
        self._entry(path, stat.S_IFREG | mode, bytes(data))

    def add_symlink(self, path, target):
        self._parents(path)
        self._entry(path, stat.S_IFLNK | 0o777, str(target).encode())

    def add_char_device(self, path, major, minor, mode=0o600):
        self._parents(path)
        self._entry(path, stat.S_IFCHR | mode, rdev=(major, minor))

    def _parents(self, path):
        parent = self._norm(path).rpartition("/")[0]
        if parent:
            self.add_dir(parent)

    def finish(self):
        """The archive's bytes (the trailer is added once)."""
        if not self._closed:
            self._entry("TRAILER!!!", 0)
            self._closed = True
        return b"".join(self._chunks)


class CpioEntry:
    """One member of an archive read by :func:`read_cpio`."""

    __slots__ = ("name", "mode", "data", "rdev")

    def __init__(self, name, mode, data, rdev):
        self.name, self.mode, self.data, self.rdev = name, mode, data, rdev

    def __repr__(self):
        return f"CpioEntry({self.name!r}, mode=0o{self.mode:o}, {len(self.data)} bytes)"


def read_cpio(data):
    """Members of one or more ``newc`` archives (each optionally gzip-compressed), in order.

    Later members with the same name replace earlier ones, as when the kernel unpacks them.
    """
    entries = {}
    data = bytes(data)
    while data:
        if data[:2] == b"\x1f\x8b":
            # A gzip member followed by whatever comes next (possibly another archive).
            d = zlib.decompressobj(wbits=31)
            archive = d.decompress(data)
            data = d.unused_data
        elif not data.strip(b"\0"):
            break
        else:
            archive, data = data, b""
        pos = 0
        while pos < len(archive):
            if archive[pos:pos + 6] != CpioWriter.MAGIC:
                if not archive[pos:].strip(b"\0"):
                    break
                raise ValueError(f"bad cpio magic at offset {pos}")
            fields = [int(archive[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
            mode, filesize, namesize = fields[1], fields[6], fields[11]
            name_start = pos + 110
            name = archive[name_start:name_start + namesize - 1].decode()
            data_start = name_start + namesize
            data_start += -data_start % 4
            body = archive[data_start:data_start + filesize]
            pos = data_start + filesize
            pos += -pos % 4
            if name == "TRAILER!!!":
                break
            entries[name] = CpioEntry(name, mode, body, (fields[9], fields[10]))
    return entries


def gzip_bytes(data, level=6):
    # mtime=0: the same archive always compresses to the same bytes.
    return gzip.compress(data, compresslevel=level, mtime=0)


class ModuleError(RuntimeError):
    """A module the guest needs is not in the kernel, or the kernel's module index is broken."""


def _module_name(path):
    """``kernel/fs/ext4/ext4.ko.xz`` → ``ext4``; names compare with ``-`` and ``_`` equal."""
    base = Path(path).name
    base = base.split(".ko", 1)[0]
    return base.replace("-", "_")


class ModuleIndex:
    """The module index of one kernel (``lib/modules/<version>/``).

    Parameters
    ----------
    modules_dir : path of ``lib/modules/<version>`` in an unpacked kernel package.
    """

    def __init__(self, modules_dir):
        self.dir = Path(modules_dir)
        dep_file = self.dir / "modules.dep"
        if not dep_file.exists():
            raise ModuleError(f"{dep_file} is missing: not an unpacked kernel module tree")
        self.paths = {}       # name -> relative path of the .ko(.xz)
        self.deps = {}        # name -> [names]
        for line in dep_file.read_text().splitlines():
            if ":" not in line:
                continue
            target, _, deps = line.partition(":")
            name = _module_name(target)
            self.paths[name] = target.strip()
            self.deps[name] = [_module_name(d) for d in deps.split()]
        self.softdeps = {}    # name -> [names] loaded before it
        softdep = self.dir / "modules.softdep"
        if softdep.exists():
            for line in softdep.read_text().splitlines():
                words = line.split()
                if len(words) < 3 or words[0] != "softdep":
                    continue
                pre, mode = [], None
                for word in words[2:]:
                    if word in ("pre:", "post:"):
                        mode = word
                    elif mode == "pre:":
                        pre.append(_module_name(word))
                self.softdeps[_module_name(words[1])] = pre
        self.aliases = {}     # alias -> [names]
        alias_file = self.dir / "modules.alias"
        if alias_file.exists():
            for line in alias_file.read_text().splitlines():
                words = line.split()
                if len(words) == 3 and words[0] == "alias":
                    self.aliases.setdefault(words[1], []).append(_module_name(words[2]))
        self.builtin = set()
        builtin = self.dir / "modules.builtin"
        if builtin.exists():
            self.builtin = {_module_name(p) for p in builtin.read_text().split()}

    def resolve(self, name):
        """Module names providing ``name`` (itself, or what an alias such as ``crc32c`` names);
        an empty list if it is built into the kernel."""
        key = _module_name(name)
        if key in self.builtin:
            return []
        if key in self.paths:
            return [key]
        for alias in (name, f"crypto-{name}"):
            found = [m for m in self.aliases.get(alias, []) if m in self.paths]
            if found:
                return sorted(set(found))
            if any(m in self.builtin for m in self.aliases.get(alias, [])):
                return []
        raise ModuleError(f"module {name!r} is neither built into kernel {self.dir.name} "
                          f"nor one of its modules")

    def load_order(self, wanted, optional=()):
        """Names to insmod, dependencies (hard and ``pre:`` soft) before the modules needing them.

        ``wanted`` must all exist (or be built in); ``optional`` ones are skipped if absent.
        """
        order, seen = [], set()

        def visit(name, trail):
            if name in seen:
                return
            if name in trail:
                raise ModuleError(f"module dependency loop: {' -> '.join(trail + [name])}")
            for dep in self.softdeps.get(name, []):
                try:
                    providers = self.resolve(dep)
                except ModuleError:
                    continue        # a soft dependency may be absent
                for provider in providers:
                    visit(provider, trail + [name])
            for dep in self.deps.get(name, []):
                if dep not in self.paths:
                    raise ModuleError(f"{name} depends on {dep}, which modules.dep does not list")
                visit(dep, trail + [name])
            seen.add(name)
            order.append(name)

        for name in wanted:
            for provider in self.resolve(name):
                visit(provider, [])
        for name in optional:
            try:
                providers = self.resolve(name)
            except ModuleError:
                continue
            for provider in providers:
                visit(provider, [])
        return order

    def module_file(self, name):
        return self.dir / self.paths[name]


def decompress_module(path):
    """Bytes of a kernel module, uncompressed (busybox ``insmod`` loads only plain ``.ko``)."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        zstd = shutil.which("zstd")
        if zstd is None:
            raise ModuleError(f"{path} is zstd-compressed and no zstd program is installed "
                              f"(apt-get install zstd)")
        return subprocess.run([zstd, "-qdc", os.fspath(path)], check=True,
                              capture_output=True).stdout
    return data
