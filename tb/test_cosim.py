# SPDX-License-Identifier: BSD-2-Clause
"""Co-simulation: the pieces of the guest environment, then real Linux end to end.

Unit tests (no QEMU): the Debian mirror read from apt configurations, the cpio writer, the
kernel-module resolution, the kernel-package layouts, the design registry.

``cosim`` tests run ``virtio-pcie cosim`` as a user would (the first one builds the guest
environment under ``.cache/cosim``; they need root for debootstrap and chroot)::

    QEMU (Linux 6.12) ── vfio-user ── simulation: server → CosimHostBridge ══ TLPs ══ RTL

* the minimal endpoint: the guest's ``lspci -nn`` shows the 1af4:10ff that the RTL's
  configuration space holds, read over CfgRd0 TLPs;
* the ``model`` design (a Python endpoint behind RTL FIFOs): Linux sizes and places its 32-bit,
  64-bit and I/O BARs, the guest reaches them (devmem, /dev/port), and the device's DMA copies
  guest memory;
* the blk and net guest checks against QEMU's own virtio devices (``--qemu-device``; net with
  the testbench's network peer), and a failing guest script's status coming back as the
  command's exit status;
* (slow) a hanging guest stopped at the timeout with its console tail; the checks on the 7.x
  kernel with the legacy interface and with INTx.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from virtio_pcie.spec.virtio import VirtioF
from virtio_pcie_tb.cosim import designs
from virtio_pcie_tb.cosim.guest import SetupError, debian_mirror, find_kernel_in_tree
from virtio_pcie_tb.cosim.initramfs import (CpioWriter, ModuleError, ModuleIndex, gzip_bytes,
                                            read_cpio)

# -- the Debian mirror -------------------------------------------------------------------------


def write_apt(tmp_path, sources=None, one_line=None, extra=None):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    if sources is not None:
        (etc / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line is not None:
        (etc / "sources.list").write_text(one_line)
    for name, text in (extra or {}).items():
        (etc / "sources.list.d" / name).write_text(text)
    return etc


@pytest.fixture(autouse=False)
def no_mirror_override(monkeypatch):
    monkeypatch.delenv("VIRTIO_PCIE_DEBIAN_MIRROR", raising=False)


@pytest.mark.unit
def test_mirror_from_deb822(tmp_path, no_mirror_override):
    etc = write_apt(tmp_path, sources="""\
Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main contrib
""", extra={"nodesource.sources": "Types: deb\nURIs: https://node.example/node_20.x\n"
                                   "Suites: nodistro\nComponents: main\n"})
    assert debian_mirror(etc) == "http://mirror.example/debian"


@pytest.mark.unit
def test_mirror_from_one_line_format(tmp_path, no_mirror_override):
    etc = write_apt(tmp_path, one_line="""\
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://cloud.example/apt cloud-sdk main
deb http://security.example/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian.gpg] http://one.example/debian bookworm main
""")
    assert debian_mirror(etc) == "http://one.example/debian"


@pytest.mark.unit
def test_mirror_disabled_and_missing(tmp_path, no_mirror_override, monkeypatch):
    etc = write_apt(tmp_path, sources="Enabled: no\nTypes: deb\nURIs: http://off.example/debian\n"
                                      "Suites: trixie\nComponents: main\n")
    with pytest.raises(SetupError, match="step 'mirror'.*no Debian archive"):
        debian_mirror(etc)
    monkeypatch.setenv("VIRTIO_PCIE_DEBIAN_MIRROR", "http://override.example/debian/")
    assert debian_mirror(etc) == "http://override.example/debian"


@pytest.mark.unit
def test_mirror_of_this_machine_names_no_fixed_host():
    if not Path("/etc/apt").exists():
        pytest.skip("no apt configuration on this machine")
    assert debian_mirror().startswith(("http://", "https://"))


# -- cpio --------------------------------------------------------------------------------------

@pytest.mark.unit
def test_cpio_round_trip_and_concatenation():
    base = CpioWriter()
    base.add_file("bin/busybox", b"\x7fELF...", mode=0o755)
    base.add_symlink("bin/sh", "busybox")
    base.add_char_device("dev/console", 5, 1)
    base.add_file("cosim/guest.sh", b"echo base\n")
    overlay = CpioWriter()
    overlay.add_file("cosim/guest.sh", b"echo run\n")
    data = gzip_bytes(base.finish()) + gzip_bytes(overlay.finish())
    entries = read_cpio(data)
    assert entries["bin/busybox"].data == b"\x7fELF..." and entries["bin/busybox"].mode == 0o100755
    assert entries["bin/sh"].data == b"busybox" and entries["bin/sh"].mode & 0o170000 == 0o120000
    assert entries["dev/console"].rdev == (5, 1)
    assert entries["bin"].mode & 0o170000 == 0o040000        # parents made automatically
    # The later archive replaces the file, as the kernel's unpacking does.
    assert entries["cosim/guest.sh"].data == b"echo run\n"
    # Equal inputs give equal bytes (fixed times and owners).
    again = CpioWriter()
    again.add_file("bin/busybox", b"\x7fELF...", mode=0o755)
    first = CpioWriter()
    first.add_file("bin/busybox", b"\x7fELF...", mode=0o755)
    assert again.finish() == first.finish()


@pytest.mark.unit
def test_cpio_rejects_duplicates_and_bad_paths():
    cpio = CpioWriter()
    cpio.add_file("init", b"")
    with pytest.raises(ValueError, match="already in the archive"):
        cpio.add_file("init", b"")
    for bad in ("", "a/../b", "/", "a//b"):
        with pytest.raises(ValueError, match="bad archive path"):
            cpio.add_file(bad, b"")


# -- kernel modules ----------------------------------------------------------------------------

def fake_modules(tmp_path):
    root = tmp_path / "usr/lib/modules/6.99.0-test"
    for path in ("kernel/fs/ext4/ext4.ko.xz", "kernel/fs/jbd2/jbd2.ko.xz",
                 "kernel/fs/mbcache.ko.xz", "kernel/lib/crc16.ko.xz",
                 "kernel/crypto/crc32c_generic.ko.xz", "kernel/drivers/block/virtio_blk.ko.xz",
                 "kernel/fs/nls/nls_iso8859-1.ko.xz", "kernel/lib/loopy_a.ko.xz",
                 "kernel/lib/loopy_b.ko.xz"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")
    (root / "modules.dep").write_text("""\
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/fs/nls/nls_iso8859-1.ko.xz:
kernel/lib/loopy_a.ko.xz: kernel/lib/loopy_b.ko.xz
kernel/lib/loopy_b.ko.xz: kernel/lib/loopy_a.ko.xz
""")
    (root / "modules.softdep").write_text("# comment\nsoftdep ext4 pre: crc32c post: nothing\n")
    (root / "modules.alias").write_text("alias crypto-crc32c crc32c_generic\n"
                                        "alias crc32c crc32c_generic\n")
    (root / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/vmlinuz-6.99.0-test").write_bytes(b"kernel")
    return root


@pytest.mark.unit
def test_module_load_order(tmp_path):
    index = ModuleIndex(fake_modules(tmp_path))
    order = index.load_order(["virtio_blk", "ext4", "virtio_pci"], optional=["nls_iso8859_1",
                                                                              "ext2"])
    # Soft and hard dependencies first; built-in modules and absent optional ones skipped;
    # '-' and '_' in names are the same.
    assert order == ["virtio_blk", "crc32c_generic", "jbd2", "mbcache", "crc16", "ext4",
                     "nls_iso8859_1"]
    assert index.module_file("nls_iso8859_1").name == "nls_iso8859-1.ko.xz"
    with pytest.raises(ModuleError, match="'btrfs' is neither built into"):
        index.load_order(["btrfs"])
    with pytest.raises(ModuleError, match="dependency loop"):
        index.load_order(["loopy_a"])


@pytest.mark.unit
def test_module_index_needs_depmod_output(tmp_path):
    with pytest.raises(ModuleError, match="modules.dep is missing"):
        ModuleIndex(tmp_path)


@pytest.mark.unit
def test_kernel_package_layouts(tmp_path):
    fake_modules(tmp_path)
    kernel = find_kernel_in_tree(tmp_path, "test")                # 6.12: boot/vmlinuz-*
    assert kernel.release == "6.99.0-test" and kernel.image.name == "vmlinuz-6.99.0-test"
    assert kernel.modules_dir.name == "6.99.0-test"
    (tmp_path / "boot/vmlinuz-6.99.0-test").unlink()
    (kernel.modules_dir / "vmlinuz").write_bytes(b"kernel")      # 7.x: next to the modules
    kernel = find_kernel_in_tree(tmp_path, "test")
    assert kernel.image == kernel.modules_dir / "vmlinuz" and kernel.release == "6.99.0-test"
    with pytest.raises(FileNotFoundError, match="no boot/vmlinuz"):
        find_kernel_in_tree(tmp_path / "usr/lib", "none")


# -- designs -----------------------------------------------------------------------------------

@pytest.mark.unit
def test_design_registry():
    minimal = designs.resolve(design="minimal")
    assert minimal.factory.endswith(":MinimalEndpoint") and minimal.params["data_width"] == 128
    assert designs.resolve(design="minimal", data_width=64).params["data_width"] == 64
    for device in ("blk", "net"):
        modern = designs.resolve(device=device)
        assert modern.factory == "virtio_pcie.top:VirtioPcieDevice"
        assert modern.params["device"] == device and not modern.params["transitional"]
        assert modern.guest_script == f"{device}.sh" and modern.testbench.endswith(device)
        legacy = designs.resolve(device=device, transitional=True)
        assert legacy.params["device"] == device and legacy.params["transitional"]
    # the designs are the system tests' builds, so a test run compiles each once
    from virtio_pcie_tb.system import MAIN_DESIGNS, design_params
    assert designs.resolve(device="blk").params == MAIN_DESIGNS["blk"]
    assert designs.resolve(device="blk", transitional=True).params == \
        design_params("blk", 128, transitional=True, queues=2)
    assert designs.resolve(device="net").params == design_params("net", 128, queues=2)
    with pytest.raises(designs.DesignError, match="no virtio-scsi RTL top is registered.*"
                                                  "--design minimal"):
        designs.resolve(device="scsi", transitional=False)
    with pytest.raises(designs.DesignError, match="no design named 'nope'"):
        designs.resolve(design="nope")
    with pytest.raises(designs.DesignError, match="cannot load design factory"):
        designs.resolve(design="virtio_pcie_tb.designs.minimal_endpoint:Nope")
    custom = designs.resolve(design="virtio_pcie_tb.designs.minimal_endpoint:MinimalEndpoint",
                             device="blk", data_width=256)
    assert custom.params == {"data_width": 256} and custom.guest_script == "blk.sh"
    with pytest.raises(ValueError, match="data_width"):
        designs.CosimDesign("x", "a:b", {})


# -- real Linux --------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the guest environment needs root (debootstrap, chroot)")


def cosim(*args, timeout=900, quiet=True):
    """Run ``virtio-pcie cosim`` as a user would; (exit status, output; with the guest's
    console unless ``quiet``)."""
    proc = subprocess.run([sys.executable, "-m", "virtio_pcie.cli", "cosim"] +
                          (["--quiet"] if quiet else []) + list(args),
                          capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    print(output)
    return proc.returncode, output


# The default run boots Linux twice on the RTL: blk and net, modern, MSI-X, kernel 6.12; every
# other combination is slow (docs/linux.md, "Tests"). The default guest scripts are the checks.

@pytest.mark.cosim
@needs_root
def test_linux_drives_the_blk_rtl():
    # blk.sh: bound to virtio-pci; dd pattern written and read back; ext2 and vfat made,
    # filled, remounted and verified (a fresh 32 MiB image on the device's medium). Modest
    # sizes keep CI short: a 256 KiB pattern and ext2 only (vfat and 1 MiB: the slow runs).
    status, output = cosim("--device", "blk", "--env", "PATTERN_KB=256", "--env", "FS_TYPES=ext2",
                           "--timeout", "1200", timeout=1800, quiet=False)
    assert status == 0, output
    assert "RTL enumerated over TLPs: 1af4:1042" in output
    assert "PASS: the guest script succeeded" in output    # exit 0: no protocol errors either
    # Linux 6.12 took VIRTIO_F_NOTIFICATION_DATA: its doorbells carried the avail index.
    bits = re.search(r"negotiated features: ([01]+)", output)
    assert bits and bits.group(1)[VirtioF.NOTIFICATION_DATA] == "1", output[-2000:]


@pytest.mark.cosim
@needs_root
def test_linux_drives_the_net_rtl():
    # net.sh: bound to virtio-pci; ARP and ICMP echo of every size up to the MTU and a UDP echo
    # transfer with the testbench's peer on the device's MAC streams, payloads compared (256 KiB
    # of UDP in CI; the default 1 MiB in the slow runs).
    status, output = cosim("--device", "net", "--env", "UDP_BYTES=262144",
                           "--timeout", "1200", timeout=1800)
    assert status == 0, output
    assert "RTL enumerated over TLPs: 1af4:1041" in output
    assert "PASS: the guest script succeeded" in output


@pytest.mark.cosim
@needs_root
def test_the_guest_script_status_is_the_exit_status(tmp_path):
    script = tmp_path / "exit3.sh"
    script.write_text("lspci -nn | grep -q '\\[1af4:10ff\\]' || exit 9\necho failing on "
                      "purpose\nexit 3\n")
    status, output = cosim("--design", "minimal", "--guest-script", str(script),
                           "--timeout", "300")
    assert status == 3, output
    assert "the guest script FAILED with status 3" in output
    assert "RTL enumerated over TLPs: 1af4:10ff" in output


@pytest.mark.cosim
@pytest.mark.slow
@needs_root
@pytest.mark.parametrize("device", ["blk", "net"])
@pytest.mark.parametrize("variant", [
    pytest.param(["--transitional", "--append", "virtio_pci.force_legacy=1"], id="legacy"),
    pytest.param(["--append", "pci=nomsi"], id="intx"),
    pytest.param(["--kernel", "7"], id="kernel7"),
])
def test_linux_drives_the_rtl_in_every_mode(device, variant):
    status, output = cosim("--device", device, "--timeout", "2400", *variant, timeout=3000)
    assert status == 0, output
    assert "PASS: the guest script succeeded" in output


# The paths below are covered by the RTL runs above; they stay as slow checks of the pieces
# (the bridge with a bare endpoint and a Python model; the guest scripts against QEMU's own
# devices, which tells a guest-side fault from an RTL one).

@pytest.mark.cosim
@pytest.mark.slow
@needs_root
def test_linux_sees_the_minimal_endpoint_over_tlps():
    # The minimal design's default guest script (identify.sh) checks lspci -nn for the IDs the
    # simulation read from the RTL's configuration space.
    status, output = cosim("--design", "minimal", "--timeout", "300")
    assert status == 0, output
    assert "RTL enumerated over TLPs: 1af4:10ff" in output
    assert "PASS: the guest sees [1af4:10ff]" not in output    # --quiet: no console echo
    assert "PASS: the guest script succeeded" in output
    assert "ended: client disconnected" in output


@pytest.mark.cosim
@pytest.mark.slow
@needs_root
def test_linux_uses_the_bars_and_dma_of_the_model_endpoint():
    # model.sh: lspci -vv shows the 32-bit, 64-bit and I/O BARs and the MSI-X and PCIe
    # capabilities; devmem and /dev/port reach the BARs; the device's DMA copies guest memory.
    status, output = cosim("--design", "model", "--timeout", "300")
    assert status == 0, output
    assert "RTL enumerated over TLPs: 1af4:10f0" in output
    assert "1 MRd/2 MWr from it" in output         # the DMA: one read, two 128-byte writes


@pytest.mark.cosim
@pytest.mark.slow
@needs_root
@pytest.mark.parametrize("kernel", ["6.12", "7"])
@pytest.mark.parametrize("device, extra", [
    ("blk", []),
    ("net", []),
    ("blk", ["--transitional", "--append", "virtio_pci.force_legacy=1"]),
    ("blk", ["--append", "pci=nomsi"]),
    ("net", ["--transitional", "--append", "virtio_pci.force_legacy=1"]),
])
def test_guest_checks_pass_on_qemu_devices(device, extra, kernel):
    status, output = cosim("--qemu-device", "--device", device, "--kernel", kernel,
                           "--timeout", "600", *extra)
    assert status == 0, output


@pytest.mark.cosim
@pytest.mark.slow
@needs_root
def test_a_hanging_guest_is_stopped_at_the_timeout(tmp_path):
    script = tmp_path / "hang.sh"
    script.write_text("echo about to hang\nwhile true; do sleep 1; done\n")
    status, output = cosim("--design", "minimal", "--guest-script", str(script),
                           "--timeout", "40")
    assert status == 124, output
    assert "TIMEOUT" in output and "about to hang" in output


@pytest.mark.unit
def test_bad_arguments_fail_with_the_step_named(tmp_path):
    status, output = cosim("--design", "minimal", "--guest-script", str(tmp_path / "missing"))
    assert status == 2 and "step 'arguments'" in output and "no such file" in output
    status, output = cosim("--device", "blk", "--image", str(tmp_path / "missing.img"))
    assert status == 2 and "step 'image'" in output and "does not exist" in output
    (tmp_path / "odd.img").write_bytes(bytes(1000))
    status, output = cosim("--device", "blk", "--image", str(tmp_path / "odd.img"))
    assert status == 2 and "step 'image'" in output and "not a positive multiple of 512" in output
    status, output = cosim("--design", "minimal", "--kernel", str(tmp_path / "nokernel"))
    step = "kernel" if os.geteuid() == 0 else "host-tools"     # without root it stops earlier
    assert status == 2 and f"step '{step}'" in output
