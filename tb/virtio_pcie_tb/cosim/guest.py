# SPDX-License-Identifier: BSD-2-Clause
"""The guest environment: QEMU with ``vfio-user-pci``, Debian kernels and an initramfs.

Everything comes from Debian's packages through the mirror that this machine's own apt is
configured with (:func:`debian_mirror`), and is cached under ``.cache/cosim/`` in the repository
(``VIRTIO_PCIE_COSIM_CACHE`` overrides it), so that only the first run downloads anything::

    .cache/cosim/
      trixie/                  Debian 13 root made by debootstrap; QEMU runs in it (chroot)
        cosim/kernels/<name>/  unpacked kernel packages (vmlinuz + modules), never installed
        cosim/initramfs/       base initramfs images, one per kernel and /init version
        cosim/runs/<id>/       per-run files: vfio-user socket, initrd, disk image
      stamps/                  one JSON file per finished step
      logs/                    the output of every command a step ran

QEMU 11.1 (the first Debian QEMU whose client has ``vfio-user-pci``) is in trixie-backports and
needs trixie's C library, so on Debian 12 it cannot run on the host; it runs in a debootstrap
root instead. Debian 13 hosts use the same root, which keeps one code path and leaves the host's
own apt configuration untouched. QEMU is started with ``chroot``; nothing is mounted: the files
QEMU needs (kernel, initrd, the vfio-user socket) live inside the root, under ``/cosim``.

Steps (each says its name in progress messages and in :class:`SetupError`):

``mirror``      read the Debian mirror from /etc/apt/sources.list(.d)
``host-tools``  install debootstrap on the host with apt-get if it is missing
``debootstrap`` a minimal trixie root
``packages``    QEMU (trixie-backports), busybox-static, pciutils and pci.ids inside the root
``kernel-<n>``  ``linux-image-amd64`` of trixie (``6.12``) or trixie-backports (``7``),
                downloaded and unpacked with ``dpkg-deb -x``
``initramfs``   busybox, lspci, the modules the guest needs and ``/init``
"""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .initramfs import CpioWriter, ModuleError, ModuleIndex, decompress_module, gzip_bytes

__all__ = ["SetupError", "GuestEnvironment", "Kernel", "debian_mirror", "default_cache_dir",
           "KERNELS", "GUEST_MODULES", "guest_file"]

SUITE = "trixie"
BACKPORTS = "trixie-backports"
#: ``--kernel`` names: the suite whose ``linux-image-amd64`` is used.
KERNELS = {"6.12": SUITE, "7": BACKPORTS}
#: The first QEMU with the vfio-user client (QEMU 10.1) that Debian ships with it is 11.1.
QEMU_MIN_VERSION = (11, 1)
QEMU_PACKAGES = ["qemu-system-x86"]
TOOL_PACKAGES = ["busybox-static", "pciutils", "pci.ids", "kmod"]

#: Modules the guest loads (with their dependencies): the virtio drivers (virtio_pci is built
#: into Debian's kernels), ext2/ext4 and vfat with the code pages their defaults use.
GUEST_MODULES = ["virtio_blk", "virtio_net", "ext4", "vfat", "nls_cp437", "nls_ascii", "nls_utf8"]
#: Loaded if the kernel has them as modules: a separate ext2 driver (Debian serves ext2 with
#: ext4), crc32c (ext4 and jbd2 ask the crypto API for it, which busybox cannot autoload
#: reliably) and ISO 8859-1.
OPTIONAL_MODULES = ["ext2", "crc32c", "nls_iso8859_1"]

#: Bumped when the layout of the base initramfs changes, so cached images are rebuilt.
INITRAMFS_FORMAT = 1

DEBIAN_SUITES = {"stretch", "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                 "oldoldstable", "oldstable", "stable", "testing", "unstable"}


class SetupError(RuntimeError):
    """A step of the guest environment failed; the message says which step and why."""

    def __init__(self, step, reason):
        self.step = step
        self.reason = reason
        super().__init__(f"guest environment, step '{step}' failed: {reason}")


def default_cache_dir():
    env = os.environ.get("VIRTIO_PCIE_COSIM_CACHE")
    if env:
        return Path(env)
    from .. import harness
    base = harness.REPO if harness.REPO is not None else Path.home()
    return base / ".cache" / "cosim"


def guest_file(name):
    """Text of a file shipped in ``virtio_pcie_tb/cosim/guest/`` (``init``, ``blk.sh``...)."""
    return resources.files(__package__).joinpath("guest", name).read_text()


# -- the Debian mirror -----------------------------------------------------------------------

def _deb822_stanzas(text):
    stanza, key = {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t" and key:
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()


def _one_line_entries(text):
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        words = line.split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 3:
            yield words[0], [words[1]], words[2:]


def _is_debian_archive(uri, suites, components):
    if not re.match(r"https?://", uri) or "security" in uri:
        return False
    if "main" not in components:
        return False
    for suite in suites:
        base = suite.split("-", 1)[0]
        if base in DEBIAN_SUITES and not suite.endswith("-security"):
            return True
    return False


def debian_mirror(etc_apt="/etc/apt"):
    """The Debian archive URI this machine's apt uses (``VIRTIO_PCIE_DEBIAN_MIRROR`` overrides).

    Reads deb822 ``*.sources`` files and one-line ``sources.list`` / ``*.list`` files and returns
    the first enabled ``deb`` entry that serves a Debian suite's ``main`` component and is not a
    security archive. Raises :class:`SetupError` (step ``mirror``) if there is none.
    """
    env = os.environ.get("VIRTIO_PCIE_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    etc_apt = Path(etc_apt)
    entries = []
    for path in sorted(glob.glob(str(etc_apt / "sources.list.d" / "*.sources"))):
        with contextlib.suppress(OSError):
            for stanza in _deb822_stanzas(Path(path).read_text()):
                if stanza.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in stanza.get("types", "").split():
                    continue
                for uri in stanza.get("uris", "").split():
                    entries.append((uri, stanza.get("suites", "").split(),
                                    stanza.get("components", "").split()))
    for path in [etc_apt / "sources.list"] + sorted(
            Path(p) for p in glob.glob(str(etc_apt / "sources.list.d" / "*.list"))):
        with contextlib.suppress(OSError):
            entries.extend(_one_line_entries(Path(path).read_text()))
    for uri, suites, components in entries:
        if _is_debian_archive(uri, suites, components):
            return uri.rstrip("/")
    raise SetupError("mirror", f"no Debian archive (a 'deb' entry for a Debian suite with 'main',"
                               f" not security) found in {etc_apt}/sources.list or "
                               f"{etc_apt}/sources.list.d/; set VIRTIO_PCIE_DEBIAN_MIRROR")


# -- kernels -----------------------------------------------------------------------------------

@dataclass
class Kernel:
    """An unpacked kernel: its image, its module tree (may be None) and its release string."""
    name: str
    image: Path
    modules_dir: Path | None
    release: str

    def to_json(self):
        return {"name": self.name, "image": str(self.image), "release": self.release,
                "modules_dir": str(self.modules_dir) if self.modules_dir else None}

    @classmethod
    def from_json(cls, d):
        return cls(d["name"], Path(d["image"]),
                   Path(d["modules_dir"]) if d["modules_dir"] else None, d["release"])


def find_kernel_in_tree(tree, name):
    """The kernel image and module tree in an unpacked ``linux-image-*`` package (or several).

    Debian's 6.12 packages put the image in ``boot/vmlinuz-<release>``; from 7.x it is
    ``usr/lib/modules/<release>/vmlinuz``.
    """
    tree = Path(tree)
    module_roots = [p for base in ("usr/lib/modules", "lib/modules")
                    for p in sorted((tree / base).glob("*")) if (p / "modules.dep").exists()]
    images = sorted(tree.glob("boot/vmlinuz-*")) + [p / "vmlinuz" for p in module_roots
                                                    if (p / "vmlinuz").exists()]
    if not images:
        raise FileNotFoundError(f"no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in {tree}")
    image = images[0]
    release = image.name[len("vmlinuz-"):] if image.name.startswith("vmlinuz-") \
        else image.parent.name
    modules = next((p for p in module_roots if p.name == release), None)
    if modules is None and module_roots:
        modules = module_roots[0]
        release = modules.name
    return Kernel(name, image, modules, release)


def _version_key(version):
    """Sort key for Debian versions good enough for picking the newest of one package."""
    parts = re.split(r"(\d+)", version.replace("~", "\x00"))
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]


# -- the environment ---------------------------------------------------------------------------

class GuestEnvironment:
    """Builds (once) and hands out the pieces of the guest environment.

    Parameters
    ----------
    cache : directory of the cache (default :func:`default_cache_dir`).
    progress : callable taking one line of progress text (default: print to standard error).
    """

    def __init__(self, cache=None, *, progress=None):
        self.cache = Path(cache) if cache is not None else default_cache_dir()
        self.root = self.cache / SUITE
        self.files = self.root / "cosim"
        self.stamps = self.cache / "stamps"
        self.logs = self.cache / "logs"
        self._progress = progress or (lambda line: print(f"cosim: {line}", file=sys.stderr,
                                                          flush=True))
        self._mirror = None
        self.timings = {}

    # -- helpers ---------------------------------------------------------------------------
    def progress(self, line):
        self._progress(line)

    def in_root(self, host_path):
        """The path that a host path inside the root has for programs running in the root."""
        return "/" + str(Path(host_path).resolve().relative_to(self.root.resolve()))

    @contextlib.contextmanager
    def _locked(self):
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / "setup.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _stamp(self, name):
        path = self.stamps / f"{name}.json"
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
        return None

    def _write_stamp(self, name, value):
        self.stamps.mkdir(parents=True, exist_ok=True)
        tmp = self.stamps / f".{name}.json.tmp"
        tmp.write_text(json.dumps(value, indent=2))
        tmp.replace(self.stamps / f"{name}.json")

    @contextlib.contextmanager
    def _step(self, name, what):
        self.progress(f"[{name}] {what}...")
        started = time.monotonic()
        try:
            yield
        except SetupError:
            raise
        except subprocess.CalledProcessError as e:
            raise SetupError(name, f"{' '.join(map(str, e.cmd))} exited with status "
                                   f"{e.returncode}{self._tail(e)}") from None
        except (OSError, ValueError, ModuleError, subprocess.TimeoutExpired) as e:
            raise SetupError(name, str(e)) from None
        elapsed = time.monotonic() - started
        self.timings[name] = elapsed
        self.progress(f"[{name}] done in {elapsed:.1f} s")

    @staticmethod
    def _tail(e):
        out = getattr(e, "log_tail", "")
        return f"; last output:\n{out}" if out else ""

    def _run(self, step, argv, *, timeout=1800, env=None, check=True):
        """Run a command, its output appended to ``logs/<step>.log``; returns its stdout."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{step}.log"
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
                    "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
        full_env.update(env or {})
        with open(log, "a") as f:
            f.write(f"$ {' '.join(map(str, argv))}\n")
            f.flush()
            proc = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                  env=full_env, stdin=subprocess.DEVNULL)
            f.write(proc.stdout)
        if check and proc.returncode:
            err = subprocess.CalledProcessError(proc.returncode, argv, proc.stdout)
            err.log_tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise err
        return proc.stdout

    def _chroot(self, step, argv, **kwargs):
        return self._run(step, ["chroot", self.root] + list(argv), **kwargs)

    @property
    def mirror(self):
        if self._mirror is None:
            self._mirror = debian_mirror()
        return self._mirror

    # -- base: root, QEMU and tools ---------------------------------------------------------
    def prepare(self):
        """Make sure the root with QEMU, busybox and lspci exists (fast when it does)."""
        if self._base_ready():
            return self._stamp("packages")
        with self._locked():
            if self._base_ready():
                return self._stamp("packages")
            if os.geteuid() != 0:
                raise SetupError("host-tools", "building the guest root (debootstrap, chroot) "
                                               "needs root")
            with self._step("mirror", "reading the Debian mirror from the apt configuration"):
                self.progress(f"[mirror] {self.mirror}")
            self._debootstrap()
            return self._packages()

    def _base_ready(self):
        stamp = self._stamp("packages")
        return bool(stamp and stamp.get("packages") == QEMU_PACKAGES + TOOL_PACKAGES
                    and (self.root / "usr/bin/qemu-system-x86_64").exists())

    def _debootstrap(self):
        if self._stamp("debootstrap") and (self.root / "usr/bin/apt-get").exists():
            return
        with self._step("host-tools", "checking debootstrap on the host"):
            if shutil.which("debootstrap", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
                if shutil.which("apt-get") is None:
                    raise SetupError("host-tools", "debootstrap is missing and there is no "
                                                   "apt-get to install it with")
                self.progress("[host-tools] installing debootstrap with apt-get")
                try:
                    self._run("host-tools", ["apt-get", "install", "-y",
                                             "--no-install-recommends", "debootstrap"])
                except subprocess.CalledProcessError:
                    self._run("host-tools", ["apt-get", "update"])
                    self._run("host-tools", ["apt-get", "install", "-y",
                                             "--no-install-recommends", "debootstrap"])
        with self._step("debootstrap", f"making a minimal Debian {SUITE} root in {self.root}"):
            partial = self.cache / f"{SUITE}.partial"
            for stale in (partial, self.root):
                if stale.exists():
                    self._remove_tree(stale)
            self._run("debootstrap", ["debootstrap", "--variant=minbase", SUITE, partial,
                                      self.mirror], timeout=1800)
            partial.rename(self.root)
            self._write_stamp("debootstrap", {"suite": SUITE, "mirror": self.mirror})

    def _remove_tree(self, path):
        """Remove a root that a failed run left behind, refusing if anything is mounted in it."""
        real = str(Path(path).resolve())
        with open("/proc/self/mounts") as f:
            mounted = [line.split()[1] for line in f]
        busy = [m for m in mounted if m == real or m.startswith(real + "/")]
        if busy:
            raise SetupError("debootstrap", f"{path} has file systems mounted in it "
                                            f"({', '.join(busy)}); unmount them first")
        shutil.rmtree(path)

    def _packages(self):
        with self._step("packages", f"installing QEMU from {BACKPORTS}, busybox and lspci "
                                    f"in the root"):
            (self.root / "etc/apt/sources.list").write_text(
                f"deb {self.mirror} {SUITE} main\ndeb {self.mirror} {BACKPORTS} main\n")
            with contextlib.suppress(OSError):
                shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf")
            self._chroot("packages", ["apt-get", "update"])
            self._chroot("packages", ["apt-get", "install", "-y", "--no-install-recommends",
                                      "-t", BACKPORTS] + QEMU_PACKAGES)
            self._chroot("packages", ["apt-get", "install", "-y", "--no-install-recommends"]
                         + TOOL_PACKAGES)
            self._chroot("packages", ["apt-get", "clean"])
            version = self.qemu_version()
            if version < QEMU_MIN_VERSION:
                raise SetupError("packages", f"QEMU {'.'.join(map(str, version))} from "
                                             f"{BACKPORTS} is older than "
                                             f"{'.'.join(map(str, QEMU_MIN_VERSION))}")
            devices = self._chroot("packages", ["qemu-system-x86_64", "-device", "help"])
            if '"vfio-user-pci"' not in devices:
                raise SetupError("packages", "this QEMU has no vfio-user-pci device")
            stamp = {"qemu": ".".join(map(str, version)), "mirror": self.mirror,
                     "packages": QEMU_PACKAGES + TOOL_PACKAGES}
            self._write_stamp("packages", stamp)
            self.progress(f"[packages] QEMU {stamp['qemu']} with vfio-user-pci")
            return stamp

    def qemu_version(self):
        out = self._chroot("packages", ["qemu-system-x86_64", "--version"])
        m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
        if not m:
            raise SetupError("packages", f"cannot read QEMU's version from {out!r}")
        return tuple(int(x or 0) for x in m.groups())

    # -- kernels ---------------------------------------------------------------------------
    def kernel(self, spec="6.12"):
        """The kernel for ``--kernel``: ``6.12``, ``7`` or a path.

        A path is either a kernel image (its drivers must be built in: no modules are loaded)
        or a directory holding an unpacked kernel package (``dpkg -x``).
        """
        spec = str(spec)
        if spec not in KERNELS:
            path = Path(spec).expanduser()
            if not path.exists():
                raise SetupError("kernel", f"--kernel {spec!r} is neither one of "
                                           f"{', '.join(KERNELS)} nor an existing path")
            return self._custom_kernel(path.resolve())
        name = f"kernel-{spec}"
        stamp = self._stamp(name)
        if stamp and Path(stamp["image"]).exists():
            return Kernel.from_json(stamp)
        self.prepare()
        with self._locked():
            stamp = self._stamp(name)
            if stamp and Path(stamp["image"]).exists():
                return Kernel.from_json(stamp)
            with self._step(name, f"downloading linux-image-amd64 from {KERNELS[spec]}"):
                kernel = self._download_kernel(spec, name)
                self._write_stamp(name, kernel.to_json())
                self.progress(f"[{name}] {kernel.release}")
            return kernel

    def _custom_kernel(self, path):
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        name = f"custom-{digest}"
        dest = self.files / "kernels" / name
        if path.is_dir():
            kernel = find_kernel_in_tree(path, name)
            image = kernel.image
        else:
            kernel = Kernel(name, path, None, "custom")
            image = path
        # QEMU runs in the root: give it a copy of the image there.
        self.prepare()
        dest.mkdir(parents=True, exist_ok=True)
        copy = dest / "vmlinuz"
        if not copy.exists() or copy.stat().st_mtime < image.stat().st_mtime:
            shutil.copyfile(image, copy)
        kernel.image = copy
        return kernel

    def _download_kernel(self, spec, step):
        suite = KERNELS[spec]
        madison = self._chroot(step, ["apt-cache", "madison", "linux-image-amd64"])
        versions = []
        for line in madison.splitlines():
            cols = [c.strip() for c in line.split("|")]
            if len(cols) >= 3 and cols[2].split()[1].split("/")[0] == suite:
                versions.append(cols[1])
        if not versions:
            raise SetupError(step, f"the mirror has no linux-image-amd64 in {suite}")
        version = max(versions, key=_version_key)
        packages = self._kernel_packages("linux-image-amd64", version, step)
        debs = self.files / "debs"
        if debs.exists():
            shutil.rmtree(debs)
        debs.mkdir(parents=True)
        self._run(step, ["chroot", self.root, "sh", "-c",
                         f"cd {self.in_root(debs)} && apt-get download "
                         + " ".join(f"'{p}={v}'" for p, v in packages)], timeout=1800)
        tree = self.files / "kernels" / f"{spec}-{version}"
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        for deb in sorted(debs.glob("*.deb")):
            self._chroot(step, ["dpkg-deb", "-x", self.in_root(deb), self.in_root(tree)])
        shutil.rmtree(debs)
        self._depmod(tree, step)
        return find_kernel_in_tree(tree, spec)

    def _depmod(self, tree, step):
        """Write modules.dep and friends (Debian's packages leave that to depmod at install)."""
        releases = [p.name for base in ("usr/lib/modules", "lib/modules")
                    for p in (tree / base).glob("*") if (p / "kernel").is_dir()]
        if not releases:
            raise SetupError(step, f"no lib/modules/<release>/kernel/ in {tree}")
        if (tree / "usr/lib/modules").is_dir() and not (tree / "lib").exists():
            (tree / "lib").symlink_to("usr/lib")     # depmod -b looks in <base>/lib/modules
        for release in releases:
            self._chroot(step, ["depmod", "-b", self.in_root(tree), release])

    def _kernel_packages(self, name, version, step):
        """The package and the ``linux-*`` packages it depends on, with their versions."""
        found, todo = {}, [(name, version)]
        while todo:
            pkg, ver = todo.pop()
            if pkg in found:
                continue
            found[pkg] = ver
            info = self._chroot(step, ["apt-cache", "show", f"{pkg}={ver}"])
            depends = ""
            for line in info.splitlines():
                if line.startswith(("Depends:", "Pre-Depends:")):
                    depends += "," + line.split(":", 1)[1]
                if not line.strip() and depends:
                    break
            for alternative in depends.split(","):
                first = alternative.split("|")[0].strip()
                m = re.match(r"(linux-(?:image|binary|modules)-[\w.+-]+)\s*(?:\(\s*=\s*([^)]+)\))?",
                             first)
                if m and not m.group(1).startswith("linux-image-amd64"):
                    dep_ver = m.group(2)
                    if dep_ver is None:
                        policy = self._chroot(step, ["apt-cache", "policy", m.group(1)])
                        cand = re.search(r"Candidate:\s*(\S+)", policy)
                        if not cand or cand.group(1) == "(none)":
                            raise SetupError(step, f"{pkg} needs {m.group(1)}, which the mirror "
                                                   f"does not have")
                        dep_ver = cand.group(1)
                    todo.append((m.group(1), dep_ver.strip()))
        if len(found) < 2:
            raise SetupError(step, f"{name} {version} depends on no linux-image package")
        return sorted(found.items())

    # -- initramfs -------------------------------------------------------------------------
    def initramfs(self, kernel):
        """The cached base initramfs (gzip-compressed cpio) for ``kernel``."""
        self.prepare()
        init = guest_file("init")
        key = json.dumps({"format": INITRAMFS_FORMAT, "init": init, "kernel": kernel.to_json(),
                          "echo_check": guest_file("echo_check.c"),
                          "modules": GUEST_MODULES, "optional": OPTIONAL_MODULES},
                         sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        out = self.files / "initramfs" / f"{kernel.name}-{digest}.cpio.gz"
        if out.exists():
            return out
        with self._locked():
            if out.exists():
                return out
            with self._step("initramfs", f"building the initramfs for {kernel.release}"):
                data = self._build_initramfs(kernel, init)
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.replace(out)
                self.progress(f"[initramfs] {out.name}: {len(data) / 1e6:.1f} MB")
        return out

    def _build_initramfs(self, kernel, init):
        cpio = CpioWriter()
        for d in ("bin", "dev", "proc", "sys", "tmp", "mnt", "root", "etc", "cosim", "run",
                  "usr/bin", "usr/share/misc", "lib/modules"):
            cpio.add_dir(d)
        cpio.add_symlink("sbin", "bin")
        cpio.add_symlink("usr/sbin", "../bin")
        # The kernel opens /dev/console for /init before devtmpfs is mounted.
        cpio.add_char_device("dev/console", 5, 1)
        cpio.add_file("init", init.encode(), mode=0o755)
        cpio.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        cpio.add_file("etc/group", b"root:x:0:\n")
        cpio.add_file("etc/hosts", b"127.0.0.1 localhost\n")

        # busybox: every applet as a symlink, except the tools we ship ourselves. Skip the
        # "busybox" entry: it would replace the binary with a symlink to itself (the kernel then
        # fails with "Failed to execute /init (error -40)", ELOOP).
        busybox = self.root / "usr/bin/busybox"
        cpio.add_file("bin/busybox", busybox.read_bytes(), mode=0o755)
        applets = self._chroot("initramfs", ["/usr/bin/busybox", "--list"]).split()
        own = {"lspci"}
        for applet in applets:
            if applet != "busybox" and applet not in own:
                cpio.add_symlink(f"bin/{applet}", "busybox")

        # lspci (pciutils; busybox's lspci has no -k) with its libraries and pci.ids.
        cpio.add_file("usr/bin/lspci", (self.root / "usr/bin/lspci").read_bytes(), mode=0o755)
        for lib in self._shared_libraries("/usr/bin/lspci"):
            if lib.strip("/") not in cpio:
                cpio.add_file(lib, self._root_file(lib).read_bytes(), mode=0o755)
        ids = self.root / "usr/share/misc/pci.ids"
        if not ids.exists():
            raise SetupError("initramfs", f"{ids} is missing (package pci.ids)")
        cpio.add_file("usr/share/misc/pci.ids", ids.read_bytes())
        # The network check's traffic generator (busybox has no UDP client, and its ping
        # does not compare the echoed payload).
        cpio.add_file("usr/bin/echo_check", self._echo_check(), mode=0o755)

        # Kernel modules, decompressed, and the order to load them in.
        order = []
        if kernel.modules_dir is not None:
            index = ModuleIndex(kernel.modules_dir)
            order = index.load_order(GUEST_MODULES, OPTIONAL_MODULES)
            base = f"lib/modules/{kernel.release}"
            cpio.add_dir(base)
            dep_lines = []
            for name in order:
                cpio.add_file(f"{base}/{name}.ko", decompress_module(index.module_file(name)))
                deps = " ".join(f"{d}.ko" for d in index.deps.get(name, []))
                dep_lines.append(f"{name}.ko: {deps}".rstrip())
            # For busybox modprobe, should the kernel ask for a module at run time.
            cpio.add_file(f"{base}/modules.dep", ("\n".join(dep_lines) + "\n").encode())
        cpio.add_file("lib/modules/load-order", ("\n".join(order) + "\n").encode())
        return gzip_bytes(cpio.finish())

    def _echo_check(self):
        """guest/echo_check.c, compiled static with the host's gcc (cached by source hash)."""
        source = guest_file("echo_check.c")
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        out = self.cache / "build" / f"echo_check-{digest}"
        if out.exists():
            return out.read_bytes()
        gcc = shutil.which("gcc")
        if gcc is None:
            raise SetupError("initramfs", "gcc is needed to build the guest's echo_check "
                                          "(apt-get install gcc libc6-dev)")
        out.parent.mkdir(parents=True, exist_ok=True)
        src = out.with_suffix(".c")
        src.write_text(source)
        proc = subprocess.run([gcc, "-static", "-Os", "-s", "-Wall", "-o", str(out) + ".tmp",
                               str(src)], capture_output=True, text=True)
        if proc.returncode:
            raise SetupError("initramfs", f"compiling echo_check.c failed (a static C library is "
                                          f"needed: apt-get install libc6-dev):\n"
                                          f"{proc.stderr[-2000:]}")
        os.replace(str(out) + ".tmp", out)
        return out.read_bytes()

    def _root_file(self, path):
        """A file of the root, following symlinks inside the root (not the host's)."""
        current = self.root
        parts = [p for p in Path(path).parts if p != "/"]
        depth = 0
        while parts:
            part = parts.pop(0)
            candidate = current / part
            if candidate.is_symlink():
                depth += 1
                if depth > 40:
                    raise SetupError("initramfs", f"symlink loop resolving {path} in the root")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    current = self.root
                parts = [p for p in Path(target).parts if p != "/"] + parts
            elif part == "..":
                current = current.parent if current != self.root else current
            else:
                current = candidate
        return current

    def _shared_libraries(self, program):
        out = self._chroot("initramfs", ["ldd", program])
        libs = []
        for line in out.splitlines():
            line = line.strip()
            m = re.match(r"\S+\s+=>\s+(/\S+)", line) or re.match(r"(/\S+)\s+\(", line)
            if m:
                libs.append(m.group(1))
        if not libs:
            raise SetupError("initramfs", f"ldd found no libraries for {program}: {out!r}")
        return libs

    def run_initrd(self, base, out, files):
        """Write ``out``: ``base`` followed by a small archive of ``files`` ({path: bytes}).

        The kernel unpacks archives that follow one another into the same root file system.
        """
        cpio = CpioWriter()
        for path, data in sorted(files.items()):
            mode = 0o755 if path.endswith(".sh") else 0o644
            cpio.add_file(path, data if isinstance(data, bytes) else data.encode(), mode=mode)
        with open(out, "wb") as f:
            f.write(Path(base).read_bytes())
            f.write(gzip_bytes(cpio.finish()))
        return Path(out)

    # -- runs ------------------------------------------------------------------------------
    def run_dir(self):
        """A fresh directory inside the root for one run's socket, initrd and images."""
        runs = self.files / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        # Runs that were kept (failures, --keep) are removed after a day; concurrent runs
        # (pytest -n) never touch each other's directories.
        for old in runs.iterdir():
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > 86400:
                    shutil.rmtree(old, ignore_errors=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = runs / f"{stamp}-{os.getpid()}"
        path.mkdir()
        return path
