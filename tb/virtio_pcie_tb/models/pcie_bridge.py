# SPDX-License-Identifier: BSD-2-Clause
"""The testbench bridge: cocotbext-pcie's simulated PCIe fabric ↔ the DUT's TLP streams.

``DutPcieDevice`` is a cocotbext-pcie :class:`~cocotbext.pcie.core.device.Device` plugged into a
:class:`~cocotbext.pcie.core.rc.RootComplex` port. Unlike cocotbext's own functions it answers
nothing itself: every TLP the fabric sends down, configuration requests included, goes to the RTL,
which owns its configuration space, and every TLP the RTL sends goes up into the fabric::

      RootComplex ──link──► DutPcieDevice.upstream_recv ─┬─ requests ───► rx_req ──► DUT
                                                         └─ completions ► (host model) ► rx_cpl
      RootComplex ◄──link── upstream_send ◄── tx_cpl, tx_req (Assert/Deassert_INTx kept here)

Completions for the DUT's reads pass through a *host model* that behaves like a real root
complex rather than cocotbext-pcie's idealised one:

* ``latency_ns``: each completion is delivered no earlier than this long after its request
  left the DUT (memory latency as seen from an endpoint).
* ``reorder``: completions for different tags are delivered in random order (a seeded jitter
  of up to ``reorder_window_ns``); completions of one tag always stay in order, as PCIe requires.
* ``rcb``: completions are split at every 64- or 128-byte read completion boundary, as root
  complexes that return cache lines do.
* ``max_read_bytes_in_flight``: the host accepts at most this many bytes of outstanding read
  requests; further reads wait in the link, as a root complex with finite completion buffers
  makes them.
* ``completion_hook(request, completions) -> completions``: tests inject errors by returning
  modified completions (UR/CA/poisoned) or none at all (a completion timeout).

INTx messages (which cocotbext-pcie's TLP class cannot represent) are consumed here and shown as
:attr:`intx_asserted` and :attr:`intx_event`. TLPs that break the stream or header rules are
logged as errors and counted in :attr:`errors`; they never hang the bridge.
"""

import heapq
import logging
import random

import cocotb
from cocotb.triggers import Event, First, Timer
from cocotb.utils import get_sim_time

from cocotbext.pcie.core import Device

from virtio_pcie.spec.pcie import FmtType, MsgCode, CplStatus

from .tlp import RawTlp, MalformedTlp
from .tlp_stream import TlpSink, TlpSource

__all__ = ["DutPcieDevice"]

_MRD = (FmtType.MRD32.value, FmtType.MRD64.value)
_CPL = (FmtType.CPL.value, FmtType.CPLD.value, FmtType.CPLLK.value, FmtType.CPLDLK.value)
_INTX_ASSERT = {MsgCode.ASSERT_INTA.value + i: i for i in range(4)}
_INTX_DEASSERT = {MsgCode.DEASSERT_INTA.value + i: i for i in range(4)}


def split_completion(cpl, rcb):
    """Split a CplD at every ``rcb``-byte boundary (PCIe Base 4.0 §2.3.1.1)."""
    if cpl.fmt_type not in (FmtType.CPLD.value, FmtType.CPLDLK.value) or cpl["cpl.status"]:
        return [cpl]
    la = cpl["cpl.lower_address"]
    remaining = cpl["cpl.byte_count"] or 4096
    first_pad = la & 3
    carried = len(cpl.payload) - first_pad
    last = remaining <= carried
    nbytes = remaining if last else carried
    pieces = []
    addr = la      # only the low 7 bits matter for RCB arithmetic
    pos = 0        # byte position in this completion's useful bytes
    while pos < nbytes:
        take = min(rcb - (addr % rcb), nbytes - pos)
        start_dw = (first_pad + pos) // 4
        end_dw = (first_pad + pos + take + 3) // 4
        piece = RawTlp(cpl.hdr, cpl.payload[4 * start_dw:4 * end_dw])
        piece["dw0.length"] = (end_dw - start_dw) & 0x3FF
        piece["cpl.lower_address"] = addr & 0x7F
        piece["cpl.byte_count"] = (remaining - pos) & 0xFFF
        pieces.append(piece)
        pos += take
        addr += take
    return pieces


class DutPcieDevice(Device):
    """A PCIe device whose function is the RTL behind four TLP streams.

    Parameters
    ----------
    dut : cocotb handle of the top level.
    clock, reset : DUT clock and (active-high) reset signals.
    data_width : TLP data path width in bits.
    prefixes : names of the DUT's ``rx_req``, ``tx_cpl``, ``tx_req`` and ``rx_cpl`` streams.
    seed : seeds the reordering jitter.
    """

    def __init__(self, dut, clock, reset=None, *, data_width,
                 prefixes=("rx_req", "tx_cpl", "tx_req", "rx_cpl"), seed=0,
                 latency_ns=0, reorder=False, reorder_window_ns=200, rcb=None,
                 max_read_bytes_in_flight=None, completion_hook=None, **kwargs):
        super().__init__(**kwargs)
        self.log = logging.getLogger("cocotb.pcie.bridge")
        self.dut = dut
        self.clock = clock
        self.data_width = data_width
        rx_req, tx_cpl, tx_req, rx_cpl = prefixes
        self.rx_req = TlpSource(dut, rx_req, clock, reset, data_width=data_width)
        self.rx_cpl = TlpSource(dut, rx_cpl, clock, reset, data_width=data_width)
        self.tx_cpl = TlpSink(dut, tx_cpl, clock, reset, data_width=data_width,
                              callback=self._from_dut)
        self.tx_req = TlpSink(dut, tx_req, clock, reset, data_width=data_width,
                              callback=self._from_dut)

        self.latency_ns = latency_ns
        self.reorder = reorder
        self.reorder_window_ns = reorder_window_ns
        self.rcb = rcb
        self.max_read_bytes_in_flight = max_read_bytes_in_flight
        self.completion_hook = completion_hook
        self.rng = random.Random(seed)

        self.errors = []
        self.intx_asserted = [False] * 4
        self.intx_event = Event()
        self.intx_messages = []            # (time_ns, "assert"/"deassert", pin)
        self.tx_monitors = []              # callables(tlp) for every TLP the DUT sends
        self.rx_monitors = []              # callables(tlp) for every TLP delivered to the DUT

        self._up_queue = []
        self._up_event = Event()
        self._pending_reads = {}           # tag -> (request, issue time ns, bytes outstanding)
        self._read_bytes_in_flight = 0
        self._read_wait = Event()
        self._cpl_heap = []
        self._cpl_seq = 0
        self._cpl_event = Event()
        self._tag_last_release = {}
        self.stats = {"mrd": 0, "mwr": 0, "cpl_in": 0, "msg": 0, "cpl_out": 0, "req_in": 0}
        cocotb.start_soon(self._run_upstream())
        cocotb.start_soon(self._run_completions())

    # -- fabric → DUT ------------------------------------------------------------------------
    async def upstream_recv(self, tlp):
        try:
            raw = RawTlp.from_cocotbext(tlp)
            raw.check()
        except (MalformedTlp, Exception) as e:     # noqa: BLE001 - report, never hang
            tlp.release_fc()
            self._error(f"fabric sent a TLP the bridge cannot encode: {e}: {tlp!r}")
            return
        if raw.fmt_type in _CPL:
            tlp.release_fc()
            self.stats["cpl_in"] += 1
            self._completion_from_host(raw)
        else:
            self.stats["req_in"] += 1
            for monitor in self.rx_monitors:
                monitor(raw)
            # Flow-control credits go back to the link only when the RTL takes the TLP.
            self.rx_req.send_nowait(raw, on_sent=lambda _t, tlp=tlp: tlp.release_fc())

    def send_request(self, raw):
        """Inject a raw request into ``rx_req`` (for tests of malformed or unusual TLPs)."""
        self.rx_req.send_nowait(raw)

    # -- DUT → fabric ------------------------------------------------------------------------
    def _from_dut(self, raw):
        for monitor in self.tx_monitors:
            monitor(raw)
        fmt_type = raw.fmt_type
        if raw.is_message:
            self.stats["msg"] += 1
            self._message(raw)
            return
        if raw.error:
            self._error(f"DUT sent a TLP flagged with error 0x{raw.error:x}: {raw!r}")
            return
        if fmt_type in _MRD:
            self.stats["mrd"] += 1
            nbytes = 4 * raw.length_dw
            self._pending_reads[raw.tag] = [raw, get_sim_time("ns"), nbytes]
        elif fmt_type in (FmtType.MWR32.value, FmtType.MWR64.value):
            self.stats["mwr"] += 1
        elif fmt_type in _CPL:
            self.stats["cpl_out"] += 1
        self._up_queue.append(raw)
        self._up_event.set()

    async def _run_upstream(self):
        while True:
            while not self._up_queue:
                self._up_event.clear()
                await self._up_event.wait()
            raw = self._up_queue.pop(0)
            if raw.fmt_type in _MRD and self.max_read_bytes_in_flight:
                nbytes = 4 * raw.length_dw
                while (self._read_bytes_in_flight
                       and self._read_bytes_in_flight + nbytes > self.max_read_bytes_in_flight):
                    self._read_wait.clear()
                    await self._read_wait.wait()
                self._read_bytes_in_flight += nbytes
                # the latency clock starts when the host accepts the request
                if raw.tag in self._pending_reads:
                    self._pending_reads[raw.tag][1] = get_sim_time("ns")
            try:
                tlp = raw.to_cocotbext()
            except Exception as e:    # noqa: BLE001
                self._error(f"DUT sent a TLP cocotbext-pcie cannot decode: {e}: {raw!r}")
                continue
            if not tlp.check():
                self._error(f"DUT sent a TLP that fails cocotbext-pcie's checks: {raw!r}")
                continue
            await self.upstream_send(tlp)

    def _message(self, raw):
        code = raw["msg.message_code"]
        now = get_sim_time("ns")
        if code in _INTX_ASSERT:
            pin = _INTX_ASSERT[code]
            self.intx_asserted[pin] = True
            self.intx_messages.append((now, "assert", pin))
        elif code in _INTX_DEASSERT:
            pin = _INTX_DEASSERT[code]
            self.intx_asserted[pin] = False
            self.intx_messages.append((now, "deassert", pin))
        else:
            self._error(f"DUT sent an unexpected message: {raw!r}")
            return
        self.intx_event.set()

    # -- the host model for completions -----------------------------------------------------
    def _completion_from_host(self, cpl):
        tag = cpl.tag
        pending = self._pending_reads.get(tag)
        if pending is None:
            # Not for an outstanding read (e.g. a test injects it); deliver as it is.
            self._schedule(cpl, get_sim_time("ns"), tag)
            return
        request, issued, _ = pending
        cpls = [cpl]
        if self.completion_hook is not None:
            cpls = self.completion_hook(request, cpl)
            if cpls is None:
                cpls = []
            elif isinstance(cpls, RawTlp):
                cpls = [cpls]
        if self.rcb:
            cpls = [piece for c in cpls for piece in split_completion(c, self.rcb)]
        release = issued + self.latency_ns
        for c in cpls:
            self._schedule(c, release, tag)
        if self._is_final(cpl):
            self._retire_read(tag)

    @staticmethod
    def _is_final(cpl):
        if cpl["cpl.status"] != CplStatus.SC.value or not cpl.payload:
            return True
        remaining = cpl["cpl.byte_count"] or 4096
        return remaining <= len(cpl.payload) - (cpl["cpl.lower_address"] & 3)

    def _retire_read(self, tag):
        pending = self._pending_reads.pop(tag, None)
        if pending is not None and self.max_read_bytes_in_flight:
            self._read_bytes_in_flight -= pending[2]
            self._read_wait.set()

    def _schedule(self, cpl, release_ns, tag):
        now = get_sim_time("ns")
        release = max(release_ns, now)
        if self.reorder:
            release += self.rng.uniform(0, self.reorder_window_ns)
        # completions of one tag never pass one another
        release = max(release, self._tag_last_release.get(tag, 0))
        self._tag_last_release[tag] = release
        if release <= now and not self._cpl_heap:
            self._deliver(cpl)
            return
        heapq.heappush(self._cpl_heap, (release, self._cpl_seq, cpl))
        self._cpl_seq += 1
        self._cpl_event.set()

    def _deliver(self, cpl):
        for monitor in self.rx_monitors:
            monitor(cpl)
        self.rx_cpl.send_nowait(cpl)

    async def _run_completions(self):
        while True:
            if not self._cpl_heap:
                self._cpl_event.clear()
                await self._cpl_event.wait()
                continue
            release = self._cpl_heap[0][0]
            now = get_sim_time("ns")
            if release > now:
                self._cpl_event.clear()
                # wake early if something due sooner is scheduled
                timer = Timer(release - now, "ns", round_mode="ceil")
                await First(timer, self._cpl_event.wait())
                continue
            _, _, cpl = heapq.heappop(self._cpl_heap)
            self._deliver(cpl)

    # -- misc ----------------------------------------------------------------------------------
    def _error(self, message):
        self.log.error("%s", message)
        self.errors.append(message)

    @property
    def all_errors(self):
        return self.errors + self.tx_cpl.errors + self.tx_req.errors

    async def wait_intx(self, pin=0, asserted=True):
        while self.intx_asserted[pin] != asserted:
            self.intx_event.clear()
            await self.intx_event.wait()

