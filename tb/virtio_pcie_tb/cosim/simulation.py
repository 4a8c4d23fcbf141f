# SPDX-License-Identifier: BSD-2-Clause
"""The co-simulation's cocotb module: the RTL, the host bridge and the vfio-user server, in the
simulator process.

:func:`cosim` resets the RTL, enumerates it (:class:`~.rtl_device.RtlFunction`), starts listening
on the vfio-user socket, writes a *ready file* (the launcher starts QEMU only then), and serves
QEMU until it disconnects. The settings come as JSON in the file named by ``COSIM_CONFIG``.

Serving and simulating share one thread. :class:`ServeLoop` alternates: handle every message
that is waiting (a region read awaits its completion in simulated time), then advance the
simulation a little. While the RTL is busy (TLPs moved recently or requests are outstanding) it
only peeks at the socket between ``poll_ns`` steps; once the RTL has been quiet for a while it
waits on the socket in wall time too, up to ``idle_wait_s``, so an idle co-simulation does not
spin a core that QEMU needs. Simulated time only moves when the loop advances it, so a waiting
simulation costs QEMU nothing, and QEMU never waits for more than one message's worth of
simulation (far below its ``x-msg-timeout``).

At the end it writes a report (JSON): what the bridge counted, every protocol error it saw (each
one is also logged), the server's counts, simulated and wall time.
"""

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer
from cocotb.utils import get_sim_time

from ..harness import dut_params
from ..models.cosim_bridge import CosimHostBridge
from .designs import load_factory
from .rtl_device import RtlFunction
from .vfio_user import ClientDisconnected, ProtocolError, VfioUserServer

CLOCK_NS = 4


class ServeLoop:
    """Serves vfio-user messages between simulation steps (see the module docstring)."""

    def __init__(self, server, bridge, *, poll_ns=256, idle_after_polls=64, idle_wait_s=0.02,
                 idle_step_ns=1000, deadline=None, stop_file=None, log=None, backend=None):
        self.server = server
        self.bridge = bridge
        # The device's back end (a network peer with frames queued towards the RTL) keeps the
        # loop out of its idle waits too.
        self.backend_busy = (lambda: bool(getattr(backend, "busy", False)))
        self.poll_ns = poll_ns
        self.idle_after_polls = idle_after_polls
        self.idle_wait_s = idle_wait_s
        self.idle_step_ns = idle_step_ns
        self.deadline = deadline
        self.stop_file = Path(stop_file) if stop_file else None
        self.log = log or cocotb.log
        self.messages = 0
        self.end_reason = None

    def _should_stop(self):
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.end_reason = "wall-clock limit"
            return True
        if self.stop_file is not None and self.stop_file.exists():
            self.end_reason = "stop file"
            return True
        return False

    async def wait_for_client(self, timeout_s):
        end = time.monotonic() + timeout_s
        while not self.server.connected:
            if self._should_stop():
                return False
            if time.monotonic() > end:
                self.end_reason = f"no client connected within {timeout_s:.0f} s"
                return False
            if not self.server.accept(timeout=self.idle_wait_s):
                await Timer(self.idle_step_ns, "ns")
        return True

    async def run(self):
        quiet_polls = 0
        last_activity = self.bridge.activity
        while True:
            if self._should_stop():
                return
            busy = (self.bridge.busy or self.bridge.activity != last_activity
                    or self.backend_busy())
            last_activity = self.bridge.activity
            quiet_polls = 0 if busy else quiet_polls + 1
            idle = quiet_polls >= self.idle_after_polls
            try:
                message = self.server.poll(self.idle_wait_s if idle else 0.0)
            except ClientDisconnected:
                self.end_reason = "client disconnected"
                return
            except ProtocolError as e:
                self.end_reason = f"protocol error: {e}"
                return
            if message is not None:
                self.messages += 1
                await self.server.handle(message)
                quiet_polls = 0
                continue
            await Timer(self.idle_step_ns if idle else self.poll_ns, "ns")


@cocotb.test()
async def cosim(dut):
    config = json.loads(Path(os.environ["COSIM_CONFIG"]).read_text())
    started = time.monotonic()
    params = dut_params()
    Clock(dut.clk, CLOCK_NS, unit="ns").start()

    testbench = None
    hook = config["design"].get("testbench")
    if hook:
        testbench = load_factory(hook)(dut, config)

    async def reset_rtl():
        dut.rst.value = 1
        await ClockCycles(dut.clk, 8)
        if hasattr(testbench, "reset"):
            testbench.reset()
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)

    bridge = CosimHostBridge(dut, dut.clk, dut.rst, data_width=params["data_width"],
                             rcb=config.get("rcb", 64),
                             completion_timeout_ns=config.get("completion_timeout_ns", 100_000))
    function = RtlFunction(bridge, reset=reset_rtl)
    report = {"ready": False}
    report_path = Path(config["report"])
    server = None
    loop = None
    try:
        await reset_rtl()
        summary = await function.enumerate()
        report["function"] = summary
        report["description"] = function.describe()
        server = VfioUserServer(config["socket"], function)
        bridge.memory = server.dma
        Path(config["ready"]).write_text(json.dumps({"function": summary,
                                                     "description": function.describe()}))
        report["ready"] = True
        deadline = started + config["wall_limit_s"] if config.get("wall_limit_s") else None
        loop = ServeLoop(server, bridge, poll_ns=config.get("poll_ns", 256),
                         idle_wait_s=config.get("idle_wait_s", 0.02), deadline=deadline,
                         stop_file=config.get("stop_file"), log=dut._log, backend=testbench)
        if await loop.wait_for_client(config.get("connect_timeout_s", 120)):
            dut._log.info("QEMU connected")
            await loop.run()
        dut._log.info("serving ended: %s", loop.end_reason)
    finally:
        report.update({
            "end": loop.end_reason if loop else "setup failed",
            "messages": loop.messages if loop else 0,
            "bridge": bridge.stats, "errors": bridge.errors + bridge.tx_cpl.errors +
            bridge.tx_req.errors, "warnings": function.warnings,
            "server": {k: v for k, v in server.stats.items() if v} if server else {},
            "irq_signals": {str(k): v for k, v in server.irqs.signals.items()} if server else {},
            "sim_time_ns": get_sim_time("ns"), "wall_s": time.monotonic() - started,
        })
        if hasattr(testbench, "stats"):
            report["backend"] = testbench.stats()
        report_path.write_text(json.dumps(report, indent=2))
        if server is not None:
            server.close()
