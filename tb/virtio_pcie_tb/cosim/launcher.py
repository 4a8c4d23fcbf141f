# SPDX-License-Identifier: BSD-2-Clause
"""``virtio-pcie cosim``: builds everything, runs the simulation and QEMU, returns the guest's
verdict.

Steps, each announced on standard error::

    [1/4] guest environment   QEMU, kernel and initramfs (cached; see guest.py)
    [2/4] gateware            the design, elaborated and compiled by the harness (cached)
    [3/4] simulation          a child process: cocotb + Verilator hosting the vfio-user server;
                              QEMU starts once it has enumerated the RTL and listens
    [4/4] guest               QEMU (TCG, q35, -smp 1, memfd guest RAM, the device behind a PCIe
                              root port); the console is streamed to standard output

The guest's /init prints ``COSIM-EXIT-STATUS=<n>`` after the guest script; that is the exit
status. Otherwise: 124 the timeout expired (the console's last lines are printed), 125 the guest
stopped without reporting a status, 126 the simulation failed or died (QEMU is stopped; a dead
simulation also closes the socket, which ends QEMU's device), 2 a set-up step failed (the
message names it), 1 the guest passed but the bridge recorded protocol errors, 130 Ctrl-C.
Every process started is stopped on the way out, whatever happens.

``--qemu-device`` runs the same guest with QEMU's own virtio device instead of the RTL: it checks
the guest environment, the guest scripts and the network peer against a reference device.
"""

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .designs import DesignError, build_design, resolve
from .guest import GuestEnvironment, SetupError, guest_file

__all__ = ["run_cosim", "add_arguments", "GUEST_IP", "PEER_IP", "PEER_MAC", "GUEST_MAC"]

#: The guest's and the peer's addresses on the simulated link (IPv4 link-local, RFC 3927: the
#: link is a private wire between the guest and the testbench and reaches no network).
GUEST_IP = "169.254.77.2"
PEER_IP = "169.254.77.1"
PEER_MAC = "02:00:00:77:00:01"
GUEST_MAC = "52:54:00:77:00:02"

EXIT_TIMEOUT = 124
EXIT_NO_STATUS = 125
EXIT_SIMULATION = 126
EXIT_SETUP = 2
EXIT_PROTOCOL = 1

_STATUS = re.compile(r"COSIM-EXIT-STATUS=(\d+)")
_MARK = re.compile(r"COSIM-MARK (\w+) uptime=([\d.]+)")
CONSOLE_LOG_LIMIT = 32 << 20
SECTOR = 512
#: Size of the fresh disk image when the design does not fix one (32 MiB).
DEFAULT_IMAGE_SECTORS = 65536


def add_arguments(p):
    p.add_argument("--device", choices=["blk", "net"], default="blk",
                   help="the virtio device to co-simulate (default blk)")
    p.add_argument("--transitional", action="store_true",
                   help="the legacy-capable (transitional) variant of the device")
    p.add_argument("--image", metavar="FILE",
                   help="raw disk image for blk, used in place (default: a fresh image of the "
                        "design's capacity, 32 MiB, per run)")
    p.add_argument("--kernel", default="6.12", metavar="6.12|7|PATH",
                   help="guest kernel: Debian trixie 6.12, trixie-backports 7.x, or a path to "
                        "a kernel image or an unpacked kernel package (default 6.12)")
    p.add_argument("--append", default="", metavar="ARGS",
                   help="extra kernel command line (e.g. 'pci=nomsi' or "
                        "'virtio_pci.force_legacy=1')")
    p.add_argument("--guest-script", metavar="FILE",
                   help="busy-box sh script to run in the guest (default: the device's check)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable in the guest script's environment (repeatable), e.g. "
                        "the default scripts' tunables PATTERN_KB=256, FS_TYPES=ext2, "
                        "UDP_BYTES=262144")
    p.add_argument("--timeout", type=float, default=1200, metavar="SECONDS",
                   help="stop the guest after this many seconds (default 1200; the full blk "
                        "check takes 3 to 7 minutes on a 2-core machine)")
    p.add_argument("--design", metavar="NAME|module:callable",
                   help="RTL top to simulate instead of the one registered for --device "
                        "('minimal' proves the path with the minimal endpoint)")
    p.add_argument("--width", type=int, choices=[64, 128, 256],
                   help="TLP data path width (default: the design's)")
    p.add_argument("--qemu-device", action="store_true",
                   help="use QEMU's own virtio device instead of the RTL (checks the guest "
                        "side against a reference)")
    p.add_argument("--memory", type=int, default=512, metavar="MIB", help="guest RAM (512)")
    p.add_argument("--icount", metavar="SHIFT",
                   help="pass '-icount shift=SHIFT,sleep=on' to QEMU (guest time from "
                        "instructions, see docs/linux.md)")
    p.add_argument("--keep", action="store_true", help="keep the run directory")
    p.add_argument("-q", "--quiet", action="store_true", help="do not stream the console")


def _progress(text):
    print(f"cosim: {text}", file=sys.stderr, flush=True)


def _terminate(proc, grace=5.0):
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)


class Console(threading.Thread):
    """Reads QEMU's serial console: echoes it, logs it (capped), finds the markers."""

    def __init__(self, stream, log_path, echo=True):
        super().__init__(daemon=True)
        self.stream = stream
        self.log_path = log_path
        self.echo = echo
        self.tail = collections.deque(maxlen=40)
        self.status = None
        self.marks = {}
        self.started = time.monotonic()
        self.logged = 0

    def run(self):
        with open(self.log_path, "wb") as log:
            for raw in iter(self.stream.readline, b""):
                if self.logged < CONSOLE_LOG_LIMIT:
                    log.write(raw)
                    self.logged += len(raw)
                    if self.logged >= CONSOLE_LOG_LIMIT:
                        log.write(b"\n[console log truncated]\n")
                line = raw.decode(errors="replace").rstrip("\r\n")
                self.tail.append(line)
                if self.echo:
                    print(line, flush=True)
                m = _STATUS.search(line)
                if m:
                    self.status = int(m.group(1))
                m = _MARK.search(line)
                if m:
                    self.marks[m.group(1)] = (time.monotonic() - self.started, float(m.group(2)))


class NetPeerLink(threading.Thread):
    """Connects :class:`~.net_peer.NetPeer` to QEMU's ``-netdev dgram`` (unix datagrams, one
    Ethernet frame each); used with ``--qemu-device``."""

    def __init__(self, peer, own_path, qemu_path):
        super().__init__(daemon=True)
        self.peer = peer
        self.qemu_path = str(qemu_path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(own_path))
        self.sock.settimeout(0.2)
        self.stopping = False
        self.errors = []

    def run(self):
        while not self.stopping:
            try:
                frame = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for reply in self.peer.handle_frame(frame):
                try:
                    self.sock.sendto(reply, self.qemu_path)
                except OSError as e:
                    self.errors.append(str(e))

    def stop(self):
        self.stopping = True
        self.join(2)
        self.sock.close()


class Run:
    """One co-simulation run; :meth:`main` returns the exit status."""

    def __init__(self, args):
        self.args = args
        self.failed = False
        self.design = None
        self.sim = None
        self.qemu = None
        self.net = None
        self.env = GuestEnvironment(progress=_progress)
        self.rundir = None
        self.timings = {}

    # -- set-up ----------------------------------------------------------------------------
    def _guest_environment(self):
        started = time.monotonic()
        _progress("[1/4] guest environment")
        self.kernel = self.env.kernel(self.args.kernel)
        self.base_initrd = self.env.initramfs(self.kernel)
        self.timings["guest_environment_s"] = time.monotonic() - started
        _progress(f"      kernel {self.kernel.release}; "
                  f"ready in {self.timings['guest_environment_s']:.1f} s")

    def _gateware(self):
        started = time.monotonic()
        d = self.design
        _progress(f"[2/4] gateware: {d.name} ({d.description or d.factory}), "
                  f"{d.params['data_width']}-bit TLP path")
        build = build_design(d)
        self.build = build
        self.timings["gateware_s"] = time.monotonic() - started
        _progress(f"      built in {self.timings['gateware_s']:.1f} s ({build.directory})")

    def _start_simulation(self):
        started = time.monotonic()
        _progress("[3/4] simulation: starting the RTL and the vfio-user server")
        sim_dir = self.rundir / "sim"
        sim_dir.mkdir()
        self.sim_config = {
            "socket": str(self.rundir / "vfu.sock"),
            "ready": str(self.rundir / "sim.ready"),
            "report": str(self.rundir / "sim-report.json"),
            "stop_file": str(self.rundir / "sim.stop"),
            "wall_limit_s": self.args.timeout + 300,
            "connect_timeout_s": 300,
            "image": str(self.image) if self.image else None,
            "device": self.args.device,
            "peer": {"mac": PEER_MAC, "ip": PEER_IP},
            "design": {"name": self.design.name, "factory": self.design.factory,
                       "params": self.design.params, "build_name": self.design.build_name,
                       "testbench": self.design.testbench, "builder": self.design.builder,
                       "build_options": self.design.build_options},
            "sim_dir": str(sim_dir),
        }
        config_path = self.rundir / "sim-config.json"
        config_path.write_text(json.dumps(self.sim_config, indent=2))
        self.sim_log = self.rundir / "simulation.log"
        with open(self.sim_log, "wb") as log:
            self.sim = subprocess.Popen(
                [sys.executable, "-m", "virtio_pcie_tb.cosim.launcher", "--simulate",
                 str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        ready = Path(self.sim_config["ready"])
        deadline = time.monotonic() + 300
        while not ready.exists():
            if self.sim.poll() is not None:
                raise SimulationError(f"the simulation exited (status {self.sim.returncode}) "
                                      f"before it was ready")
            if time.monotonic() > deadline:
                raise SimulationError("the simulation was not ready within 300 s")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.function = info["function"]
        self.timings["simulation_start_s"] = time.monotonic() - started
        _progress(f"      RTL enumerated over TLPs: {info['description']} "
                  f"({self.timings['simulation_start_s']:.1f} s)")

    def _guest_files(self):
        script_path = self.args.guest_script
        if script_path:
            script = Path(script_path).read_text()
        else:
            name = self.design.guest_script if self.design else f"{self.args.device}.sh"
            script = guest_file(name)
        env = {"VIRTIO_DEVICE": self.args.device, "GUEST_IP": GUEST_IP, "PEER_IP": PEER_IP,
               "PEER_MAC": PEER_MAC}
        if self.design is not None and self.design.device is None:
            env["VIRTIO_DEVICE"] = "none"
        if getattr(self, "function", None):
            ids = self.function["ids"]
            env["EXPECT_PCI_ID"] = f"{ids['vendor']:04x}:{ids['device']:04x}"
        env.update(_guest_env(self.args.env))
        text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
        return {"cosim/guest.sh": script, "cosim/env": text}

    def _qemu_argv(self, initrd):
        a = self.args
        in_root = self.env.in_root
        design_append = self.design.append if self.design is not None else ""
        append = " ".join(["console=ttyS0", "rdinit=/init", "panic=-1", "loglevel=4",
                           "nowatchdog", "rcupdate.rcu_cpu_stall_suppress=1", design_append,
                           a.append]).split()
        append = " ".join(append)
        argv = ["chroot", str(self.env.root), "qemu-system-x86_64",
                "-machine", "q35,accel=tcg,memory-backend=mem0", "-cpu", "max", "-smp", "1",
                "-m", f"{a.memory}M",
                "-object", f"memory-backend-memfd,id=mem0,size={a.memory}M,share=on",
                "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
                "-serial", "stdio", "-monitor", "none",
                "-kernel", in_root(self.kernel.image), "-initrd", in_root(initrd),
                "-append", append,
                "-device", "pcie-root-port,id=rp1,chassis=1,slot=1"]
        if a.icount:
            argv += ["-icount", f"shift={a.icount},sleep=on"]
        legacy = "off" if a.transitional else "on"
        if a.qemu_device:
            if a.device == "blk":
                argv += ["-drive", f"file={in_root(self.image)},format=raw,if=none,id=d0",
                         "-device", f"virtio-blk-pci,drive=d0,bus=rp1,disable-legacy={legacy}"]
            else:
                argv += ["-netdev", f"dgram,id=n0,local.type=unix,"
                                    f"local.path={in_root(self.rundir / 'qemu-net.sock')},"
                                    f"remote.type=unix,"
                                    f"remote.path={in_root(self.rundir / 'peer-net.sock')}",
                         "-device", f"virtio-net-pci,netdev=n0,bus=rp1,mac={GUEST_MAC},"
                                    f"disable-legacy={legacy}"]
        else:
            timeout_ms = int(max(60, a.timeout) * 1000)
            device = {"driver": "vfio-user-pci", "bus": "rp1", "x-msg-timeout": timeout_ms,
                      "socket": {"type": "unix",
                                 "path": in_root(Path(self.sim_config["socket"]))}}
            argv += ["-device", json.dumps(device)]
        return argv

    def _disk_image(self):
        if self.args.image:
            path = Path(self.args.image).resolve()
            size = _check_image(path)
            if not self.args.qemu_device:
                self._fit_design_to(size // SECTOR)
                return path
            # QEMU runs in the root: give it the image through a hard link or a copy.
            inside = self.rundir / "disk.img"
            try:
                os.link(path, inside)
            except OSError:
                raise SetupError("image", f"{path} must be on the same file system as "
                                          f"{self.rundir} to be used with --qemu-device") \
                    from None
            return inside
        path = self.rundir / "disk.img"
        capacity = self.design.params.get("capacity") if self.design is not None else None
        with open(path, "wb") as f:
            f.truncate((capacity or DEFAULT_IMAGE_SECTORS) * SECTOR)
        return path

    def _fit_design_to(self, sectors):
        """A blk design built for a fixed capacity takes only images of that size; any other
        image is served by the same design built with ``capacity`` as an input (one more
        build, shared by every image size)."""
        d = self.design
        if d is None or d.params.get("capacity") in (None, sectors):
            return
        if "capacity" in d.params:
            _progress(f"      the image has {sectors} sectors, not the {d.params['capacity']} "
                      f"the design is built for: using its variable-capacity build")
            self.design = dataclasses.replace(d, params={**d.params, "capacity": None})

    # -- running ---------------------------------------------------------------------------
    def main(self):
        a = self.args
        try:
            if a.timeout <= 0:
                raise SetupError("arguments", f"--timeout must be positive, not {a.timeout}")
            if a.guest_script and not Path(a.guest_script).is_file():
                raise SetupError("arguments", f"--guest-script {a.guest_script}: no such file")
            if a.image:
                _check_image(Path(a.image).resolve())
            _guest_env(a.env)
            self.design = None
            if not a.qemu_device:
                try:
                    self.design = resolve(device=a.device, transitional=a.transitional,
                                          design=a.design, data_width=a.width)
                except DesignError as e:
                    raise SetupError("design", str(e)) from None
            if os.geteuid() != 0:
                raise SetupError("host-tools", "QEMU runs in a Debian trixie root with chroot, "
                                               "which needs root")
            self._guest_environment()
            self.rundir = self.env.run_dir()
            self.image = self._disk_image() if a.device == "blk" else None
            if self.design is not None:
                self._gateware()
                self._start_simulation()
            else:
                _progress(f"[2/4] gateware: none (--qemu-device: QEMU's virtio-{a.device})")
                _progress("[3/4] simulation: none")
            return self._run_guest()
        except SetupError as e:
            self.failed = True
            _progress(str(e))
            return EXIT_SETUP
        except SimulationError as e:
            self.failed = True
            _progress(f"simulation failed: {e}")
            self._print_sim_log_tail()
            return EXIT_SIMULATION
        except KeyboardInterrupt:
            self.failed = True
            _progress("interrupted; stopping everything")
            return 130
        finally:
            self._stop_all()
            if self.rundir is not None and not a.keep and not self.failed:
                shutil.rmtree(self.rundir, ignore_errors=True)
            elif self.rundir is not None:
                _progress(f"run directory kept: {self.rundir}")

    def _run_guest(self):
        a = self.args
        initrd = self.env.run_initrd(self.base_initrd, self.rundir / "initrd.gz",
                                     self._guest_files())
        if a.qemu_device and a.device == "net":
            from .net_peer import NetPeer
            self.net = NetPeerLink(NetPeer(mac=PEER_MAC, ip=PEER_IP),
                                   self.rundir / "peer-net.sock", self.rundir / "qemu-net.sock")
            self.net.start()
        argv = self._qemu_argv(initrd)
        _progress(f"[4/4] guest: Linux {self.kernel.release} in QEMU (TCG), timeout "
                  f"{a.timeout:.0f} s")
        (self.rundir / "qemu-command").write_text(shlex.join(argv) + "\n")
        qemu_log = open(self.rundir / "qemu.log", "wb")
        started = time.monotonic()
        self.qemu = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=qemu_log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        console = Console(self.qemu.stdout, self.rundir / "console.log", echo=not a.quiet)
        console.start()
        deadline = started + a.timeout
        outcome = None
        while self.qemu.poll() is None:
            if time.monotonic() > deadline:
                outcome = "timeout"
                break
            if self.sim is not None and self.sim.poll() is not None:
                # After the guest reported, QEMU may close the socket (ending the simulation)
                # a moment before its own process exits: that is not a death.
                if console.status is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.qemu.wait(10)
                    if self.qemu.poll() is not None:
                        break
                outcome = "simulation died"
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        if outcome is not None:
            _terminate(self.qemu)
        console.join(5)
        qemu_log.close()
        self.timings["guest_s"] = elapsed
        for name, (wall, uptime) in console.marks.items():
            self.timings[f"mark_{name}_wall_s"] = round(wall, 2)
            self.timings[f"mark_{name}_uptime_s"] = uptime
        report = self._simulation_report()
        self._summary(console, report)
        if outcome == "timeout":
            self.failed = True
            _progress(f"TIMEOUT: the guest did not finish within {a.timeout:.0f} s; the last "
                      f"console lines were:")
            for line in console.tail:
                print(f"  | {line}", file=sys.stderr)
            return EXIT_TIMEOUT
        if outcome == "simulation died":
            self.failed = True
            _progress(f"the simulation died (status {self.sim.returncode}); QEMU was stopped")
            self._print_sim_log_tail()
            return EXIT_SIMULATION
        if console.status is None:
            self.failed = True
            _progress(f"the guest stopped (QEMU status {self.qemu.returncode}) without "
                      f"reporting the guest script's status")
            self._print_qemu_log_tail()
            return EXIT_NO_STATUS
        if console.status != 0:
            self.failed = True
            _progress(f"the guest script FAILED with status {console.status}")
            return console.status
        if report and report.get("errors"):
            self.failed = True
            _progress(f"the guest script passed, but the bridge recorded "
                      f"{len(report['errors'])} protocol errors:")
            for error in report["errors"][:20]:
                print(f"  ! {error}", file=sys.stderr)
            return EXIT_PROTOCOL
        _progress("PASS: the guest script succeeded")
        return 0

    def _simulation_report(self):
        if self.sim is None:
            return None
        # QEMU has gone: the server sees the socket close and the simulation ends by itself;
        # the stop file also ends one that QEMU never connected to.
        with contextlib.suppress(OSError):
            Path(self.sim_config["stop_file"]).touch()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.sim.wait(60)
        path = Path(self.sim_config["report"])
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def _summary(self, console, report):
        lines = []
        t = self.timings
        parts = [f"{k[:-2].replace('_', ' ')} {v:.1f} s" for k, v in t.items()
                 if k.endswith("_s") and not k.startswith("mark_")]
        lines.append("timings: " + ", ".join(parts))
        marks = [f"{name} at {wall:.1f} s (guest uptime {up:.1f} s)"
                 for name, (wall, up) in console.marks.items()]
        if marks:
            lines.append("guest: " + "; ".join(marks))
        if report:
            b = report.get("bridge", {})
            lines.append(f"simulation: {report.get('sim_time_ns', 0) / 1e6:.3f} ms simulated in "
                         f"{report.get('wall_s', 0):.1f} s, {report.get('messages', 0)} vfio-user "
                         f"messages, TLPs: {b.get('cfg', 0)} config, {b.get('host_mrd', 0)} "
                         f"MRd/{b.get('host_mwr', 0)} MWr to the RTL, {b.get('dma_mrd', 0)} "
                         f"MRd/{b.get('dma_mwr', 0)} MWr from it, {b.get('msi', 0)} MSI-X, "
                         f"{b.get('intx', 0)} INTx; ended: {report.get('end')}")
            for warning in report.get("warnings", []):
                lines.append(f"warning: {warning}")
        for line in lines:
            _progress(line)
        if self.rundir is not None:
            (self.rundir / "timings.json").write_text(json.dumps(
                {"timings": self.timings, "report": report}, indent=2))

    def _print_sim_log_tail(self):
        if self.sim is None:
            return
        logs = [self.sim_log] + sorted((self.rundir / "sim").glob("*.log"))
        for log in logs:
            with contextlib.suppress(OSError):
                tail = log.read_text(errors="replace").splitlines()[-30:]
                _progress(f"last lines of {log}:")
                for line in tail:
                    print(f"  | {line}", file=sys.stderr)
        self.failed = True

    def _print_qemu_log_tail(self):
        with contextlib.suppress(OSError):
            tail = (self.rundir / "qemu.log").read_text(errors="replace").splitlines()[-20:]
            if tail:
                _progress("QEMU said:")
                for line in tail:
                    print(f"  | {line}", file=sys.stderr)

    def _stop_all(self):
        _terminate(self.qemu)
        if self.sim is not None and self.sim.poll() is None:
            with contextlib.suppress(OSError):
                Path(self.sim_config["stop_file"]).touch()
            try:
                self.sim.wait(10)
            except subprocess.TimeoutExpired:
                _terminate(self.sim)
        if self.net is not None:
            self.net.stop()


class SimulationError(RuntimeError):
    pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_cosim(args):
    """Run one co-simulation for parsed ``args`` (see :func:`add_arguments`); exit status."""
    run = Run(args)
    # SIGTERM (e.g. from a CI runner) stops everything as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run.main()
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the simulation process ------------------------------------------------------------------

def _guest_env(assignments):
    """``--env NAME=VALUE`` arguments as a dict (a SetupError names a malformed one)."""
    env = {}
    for item in assignments:
        name, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SetupError("arguments", f"--env {item!r}: expected NAME=VALUE")
        env[name] = value
    return env


def _check_image(path):
    """The size of the raw disk image ``path``, or a SetupError saying what is wrong."""
    if not path.is_file():
        raise SetupError("image", f"--image {path} does not exist or is not a file")
    size = path.stat().st_size
    if size == 0 or size % SECTOR:
        raise SetupError("image", f"--image {path} is {size} bytes, not a positive "
                                  f"multiple of {SECTOR} (a raw disk image)")
    return size


def _simulate(config_path):
    """Entry of the child process: build (cached) and run the cosim cocotb module."""
    from .. import harness
    from .designs import CosimDesign
    config = json.loads(Path(config_path).read_text())
    d = config["design"]
    built = build_design(CosimDesign(d["name"], d["factory"], d["params"],
                                     testbench=d.get("testbench"), builder=d.get("builder"),
                                     build_options=d.get("build_options") or {}))
    # No factory: a failed co-simulation must not be re-run for a waveform (it would wait for
    # QEMU again).
    design = harness.Build(built.name, built.directory, built.params, built.toplevel)
    try:
        harness.run(design, "virtio_pcie_tb.cosim.simulation", test_dir=config["sim_dir"],
                    env={"COSIM_CONFIG": str(config_path)}, timeout_s=config["wall_limit_s"] + 60,
                    quiet=True)
    except harness.SimulationFailed as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m virtio_pcie_tb.cosim.launcher")
    parser.add_argument("--simulate", metavar="CONFIG", required=True)
    sys.exit(_simulate(parser.parse_args().simulate))

