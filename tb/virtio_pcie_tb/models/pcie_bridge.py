# SPDX-License-Identifier: BSD-2-Clause
"""The testbench bridge: cocotbext-pcie's simulated PCIe fabric ↔ the DUT's TLP streams.

``DutPcieDevice`` is a cocotbext-pcie :class:`~cocotbext.pcie.core.device.Device` plugged into a
:class:`~cocotbext.pcie.core.rc.RootComplex` port. Unlike cocotbext's own functions it answers
nothing itself: every TLP the fabric sends down, configuration requests included, goes to the RTL,
which owns its configuration space, and every TLP the RTL sends goes up into the fabric::

      RootComplex ──link──► DutPcieDevice.upstream_recv ─┬─ requests ───► rx_req ──► DUT
                                                         └─ completions ► (host model) ► rx_cpl
      RootComplex ◄──link── upstream_send ◄── tx_cpl, tx_req (Assert/Deassert_INTx kept here)

The traffic between the DUT and the host passes through a *host model* that behaves like a
real root complex and link rather than cocotbext-pcie's idealised ones (which answer a read in
zero time, at any rate):

* ``latency_ns``: each completion is delivered no earlier than this long after its read request
  reached the host (memory latency as an endpoint sees it, the round trip *L*).
* ``max_reads_in_flight`` / ``max_read_bytes_in_flight``: the host works on at most this many
  reads / bytes of reads at once; a read stays in its resources from the moment it is accepted
  until its last completion has been delivered to the DUT. Further reads wait in the link, as
  a root complex with finite read tracking and completion buffers (and the Non-Posted credits
  it advertises) makes them. A read waiting there does not hold up posted writes, messages or
  completions behind it: they pass it, as PCIe's ordering rules allow them to and as the
  separate flow-control classes make them (PCIe Base 4.0 §2.4.1, Table 2-40); reads stay in
  order among themselves and behind earlier writes.
* ``link``: a :class:`PcieLink` (e.g. ``PcieLink.parse("gen3x4")``) limits each direction to
  the link's byte rate, each TLP costing its header, payload and 8 bytes of framing, sequence
  number and LCRC. The DUT's transmit side is held back (``ready`` low) once more than
  ``tx_buffer_bytes`` wait for the link, as a hard IP's transmit buffer does; completions to
  the DUT leave the link one after another. Without a link the DUT's data path is the only
  limit. DLLPs (ACKs, flow-control updates) and SKP ordered sets are not modelled; they cost a
  real link a few percent more.
* ``reorder``: completions for different tags are delivered in random order (a seeded jitter
  of up to ``reorder_window_ns``); completions of one tag always stay in order, as PCIe requires.
* ``rcb``: completions are split at every 64- or 128-byte read completion boundary, as root
  complexes that return cache lines do.
* ``completion_hook(request, completions) -> completions``: tests inject errors by returning
  modified completions (UR/CA/poisoned) or none at all (a completion timeout).

Not modelled: the host's posted-write latency (writes, MSI-X messages included, are visible to
the host when they have crossed the link), the latency of the host's own requests to the DUT
(MMIO), and memory bandwidth or cache effects on the host side.

The link to the root port: cocotbext-pcie's :class:`~cocotbext.pcie.core.port.SimPort` pair models
the data link layer (sequence numbers, an ACK DLLP per TLP, flow-control DLLPs, tasks per TLP
and per timer), all in zero simulated time when no link speed is set, as here: in a fuzz run it
cost more Python than the root complex itself. Once connected to a root port, the bridge
therefore carries TLPs *directly* between itself and the root port's routing, in both
directions. They keep their order and arrive :data:`LINK_STEPS` simulator steps (picoseconds)
after they were sent, strictly between two clock edges, as through the SimPorts (which spaced
TLPs and DLLPs 1 ps apart: 2 ps for a lone TLP). The benchmarks' cycle counts are the same
either way; in a long fuzz run a host-model action now and then meets the next clock edge
instead of this one (docs/robustness.md, "What a run costs").

Flow control stays as it was: requests from the host (configuration, MMIO) consume the receive
credits the device port advertises, and they come back only when the RTL takes a request, so a
device that stops taking requests still holds the host back; completions to the device
(infinite credits) and TLPs to the root complex (which takes them at once) never wait for
credits. The SimPorts stay connected, idle.

INTx messages (which cocotbext-pcie's TLP class cannot represent) are consumed here and shown as
:attr:`intx_asserted` and :attr:`intx_event`. TLPs that break the stream or header rules are
logged as errors and counted in :attr:`errors`; they never hang the bridge.
"""

import collections
import heapq
import logging
import random
import re
from dataclasses import dataclass

import cocotb
from cocotb.triggers import Event, First, Timer
from cocotb.utils import get_sim_time

from cocotbext.pcie.core import Device
from cocotbext.pcie.core.bridge import SwitchDownstreamPort
from cocotbext.pcie.core.dllp import FcType
from cocotbext.pcie.core.port import SimPort
from cocotbext.pcie.core.tlp import TlpType

from virtio_pcie.spec.pcie import FmtType, MsgCode, CplStatus

from .tlp import RawTlp, MalformedTlp
from .tlp_stream import TlpSink, TlpSource

__all__ = ["DutPcieDevice", "PcieLink", "LINK_STEPS"]

#: Simulator steps (ps) a TLP takes on the direct link to the root port (see the module's
#: docstring): more than zero, so that a TLP sent at a clock edge arrives after it, and far
#: below a clock period.
LINK_STEPS = 2

_MRD = (FmtType.MRD32.value, FmtType.MRD64.value)
_CPL = (FmtType.CPL.value, FmtType.CPLD.value, FmtType.CPLLK.value, FmtType.CPLDLK.value)
_INTX_ASSERT = {MsgCode.ASSERT_INTA.value + i: i for i in range(4)}
_INTX_DEASSERT = {MsgCode.DEASSERT_INTA.value + i: i for i in range(4)}

#: Data rate per lane after line coding, in Gbit/s: 8b/10b for Gen1/2, 128b/130b from Gen3
#: (PCIe Base 4.0 §4.2; Gen5 from PCIe Base 5.0).
LANE_GBPS = {1: 2.0, 2: 4.0, 3: 8.0 * 128 / 130, 4: 16.0 * 128 / 130, 5: 32.0 * 128 / 130}
#: Bytes a TLP costs on a link besides its header and payload: Gen1/2 STP (1), sequence number
#: (2), LCRC (4), END (1); Gen3+ STP token with the sequence number (4) and LCRC (4).
TLP_FRAMING_BYTES = 8


@dataclass(frozen=True)
class PcieLink:
    """A PCIe link of ``lanes`` lanes at generation ``gen``, as the host model sees it."""
    gen:   int
    lanes: int

    def __post_init__(self):
        if self.gen not in LANE_GBPS:
            raise ValueError(f"PCIe generation must be one of {sorted(LANE_GBPS)}, not "
                             f"{self.gen!r}")
        if self.lanes not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"lanes must be 1, 2, 4, 8, 16 or 32, not {self.lanes!r}")

    @classmethod
    def parse(cls, text):
        """``"gen3x4"`` -> PcieLink(3, 4)."""
        m = re.fullmatch(r"gen(\d)x(\d+)", str(text).strip().lower())
        if not m:
            raise ValueError(f"a link is written like gen3x4, not {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def name(self):
        return f"gen{self.gen}x{self.lanes}"

    @property
    def bytes_per_ns(self):
        """Raw bytes per ns in each direction, after line coding."""
        return LANE_GBPS[self.gen] * self.lanes / 8

    @staticmethod
    def wire_bytes(raw):
        """Bytes one TLP occupies on the link."""
        return 4 * raw.header_dwords + len(raw.payload) + TLP_FRAMING_BYTES

    def wire_ns(self, raw):
        return self.wire_bytes(raw) / self.bytes_per_ns

    def payload_efficiency(self, payload_bytes, header_bytes=12):
        """Fraction of the link's bytes that are payload for TLPs of ``payload_bytes``."""
        return payload_bytes / (payload_bytes + header_bytes + TLP_FRAMING_BYTES)


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


_COCOTBEXT_CPL = frozenset({TlpType.CPL, TlpType.CPL_DATA, TlpType.CPL_LOCKED,
                            TlpType.CPL_LOCKED_DATA})


class _DirectLink:
    """One direction of the direct link: TLPs reach ``handler`` in order, :data:`LINK_STEPS`
    after they were sent (all those sent in the meantime together)."""

    def __init__(self, handler):
        self.handler = handler
        self.queue = collections.deque()
        self.event = Event()
        self.task = None

    def send(self, tlp):
        self.queue.append(tlp)
        if self.task is None:
            self.task = cocotb.start_soon(self._run())
        self.event.set()

    async def _run(self):
        queue = self.queue
        while True:
            if not queue:
                self.event.clear()
                await self.event.wait()
            await Timer(LINK_STEPS, "step")
            while queue:
                await self.handler(queue.popleft())


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
                 max_read_bytes_in_flight=None, max_reads_in_flight=None, link=None,
                 tx_buffer_bytes=4096, completion_hook=None, **kwargs):
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
        self.max_reads_in_flight = max_reads_in_flight
        self.link = PcieLink.parse(link) if isinstance(link, str) else link
        self.tx_buffer_bytes = tx_buffer_bytes
        self.completion_hook = completion_hook
        self.rng = random.Random(seed)

        self.errors = []
        self.intx_asserted = [False] * 4
        self.intx_event = Event()
        self.intx_messages = []            # (time_ns, "assert"/"deassert", pin)
        self.tx_monitors = []              # callables(tlp) for every TLP the DUT sends
        self.rx_monitors = []              # callables(tlp) for every TLP delivered to the DUT

        self._up_queue = []
        # _run_upstream's wake-up: a TLP from the DUT, or a read leaving the host's resources
        # (one event: cocotb's First() costs two tasks and a cancellation per wait)
        self._up_event = Event()
        self._pending_reads = {}           # tag -> [request, time accepted (ns), bytes, accepted]
        self._read_bytes_in_flight = 0
        self._reads_in_flight = 0
        self._up_bytes_waiting = 0         # bytes from the DUT not yet across the link
        self._down_free_ns = 0             # when the link towards the DUT is next free
        self.max_seen = {"reads": 0, "read_bytes": 0}
        self._cpl_heap = []
        self._cpl_seq = 0
        self._cpl_event = Event()
        self._tag_last_release = {}
        self._root_port = None             # the root port of the direct link, once connected
        self._link_up = _DirectLink(self._link_deliver_up)
        self._link_down = _DirectLink(self.upstream_recv)
        self._request_credits = {}
        self._credit_event = Event()
        self.stats = {"mrd": 0, "mwr": 0, "cpl_in": 0, "msg": 0, "cpl_out": 0, "req_in": 0}
        cocotb.start_soon(self._run_upstream())
        cocotb.start_soon(self._run_completions())
        if self.link is not None:
            # The transmit buffer of a hard IP: hold the DUT back while it is full.
            pause = self._tx_buffer_full()
            self.tx_req.set_backpressure_generator(pause)
            self.tx_cpl.set_backpressure_generator(self._tx_buffer_full())

    def _tx_buffer_full(self):
        while True:
            yield self._up_bytes_waiting > self.tx_buffer_bytes

    # -- the link to the root port ------------------------------------------------------------
    def connect(self, port):
        super().connect(port)
        peer = self.upstream_port.other
        if isinstance(peer, SimPort) and isinstance(peer.parent, SwitchDownstreamPort):
            # A root (or switch downstream) port: what it sends down comes the direct way.
            self._root_port = root = peer.parent
            root.downstream_tx_handler = self._link_send_down
            fc = self.upstream_port.fc_state[0]
            # FcType -> (header credits, data credits (0: infinite), [headers, data in use])
            self._request_credits = {
                FcType.P: (fc.ph.rx_initial_allocation, fc.pd.rx_initial_allocation, [0, 0]),
                FcType.NP: (fc.nph.rx_initial_allocation, fc.npd.rx_initial_allocation, [0, 0])}

    async def _link_send_down(self, tlp):
        """The root port sends ``tlp`` to the DUT (its ``downstream_tx_handler``)."""
        # Flow control as the SimPorts had it: the credits of the hop before are released (as
        # SimPort.send does); a request waits for the receive credits the device port
        # advertises (its initial allocation; 0 is infinite, as for completions) and gives them
        # back when the bridge releases it, i.e. when the RTL takes it.
        tlp.release_fc()
        limits = self._request_credits.get(tlp.get_fc_type())
        if limits is not None:
            need = (1, tlp.get_data_credits())
            used = limits[2]
            while ((limits[0] and used[0] + 1 > limits[0]) or
                   (limits[1] and used[1] + need[1] > limits[1])):
                self._credit_event.clear()
                await self._credit_event.wait()
            used[0] += 1
            used[1] += need[1]

            def release(tlp=tlp, used=used, need=need):
                tlp.release_fc_cb = None
                used[0] -= need[0]
                used[1] -= need[1]
                self._credit_event.set()
            tlp.release_fc_cb = release
        self._link_down.send(tlp)

    async def _link_deliver_up(self, tlp):
        await self._root_port.downstream_recv(tlp)

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
            if raw.tag in self._pending_reads:
                # The DUT reused a tag whose read never ended (its completions were dropped
                # by a hook): that read is over.
                self._retire_read(raw.tag)
            self._pending_reads[raw.tag] = [raw, get_sim_time("ns"), nbytes, False]
        elif fmt_type in (FmtType.MWR32.value, FmtType.MWR64.value):
            self.stats["mwr"] += 1
        elif fmt_type in _CPL:
            self.stats["cpl_out"] += 1
        if self.link is not None:
            self._up_bytes_waiting += self.link.wire_bytes(raw)
        self._up_queue.append(raw)
        self._up_event.set()

    def _read_admissible(self, raw):
        """Can the host take this read now (its read tracking and completion space)?"""
        nbytes = 4 * raw.length_dw
        if self.max_reads_in_flight and self._reads_in_flight >= self.max_reads_in_flight:
            return False
        if (self.max_read_bytes_in_flight and self._read_bytes_in_flight
                and self._read_bytes_in_flight + nbytes > self.max_read_bytes_in_flight):
            return False
        return True

    def _next_upstream(self):
        """The TLP to send next: the oldest one, unless it is a read the host cannot take yet;
        then the oldest TLP that is not a read may pass it (reads keep their order)."""
        head = self._up_queue[0]
        if head.fmt_type not in _MRD or self._read_admissible(head):
            return self._up_queue.pop(0)
        for i, raw in enumerate(self._up_queue):
            if raw.fmt_type not in _MRD:
                return self._up_queue.pop(i)
        return None

    async def _run_upstream(self):
        while True:
            raw = self._next_upstream() if self._up_queue else None
            if raw is None:
                # nothing to send, or only reads the host cannot take: wait for either to change
                self._up_event.clear()
                await self._up_event.wait()
                continue
            if self.link is not None:
                # The link carries one TLP after another at its rate.
                await Timer(self.link.wire_ns(raw), "ns", round_mode="ceil")
                self._up_bytes_waiting -= self.link.wire_bytes(raw)
            if raw.fmt_type in _MRD:
                pending = self._pending_reads.get(raw.tag)
                if pending is not None:
                    # the host takes the read: the latency clock starts, resources are held
                    pending[1] = get_sim_time("ns")
                    pending[3] = True
                    self._reads_in_flight += 1
                    self._read_bytes_in_flight += pending[2]
                    self.max_seen["reads"] = max(self.max_seen["reads"], self._reads_in_flight)
                    self.max_seen["read_bytes"] = max(self.max_seen["read_bytes"],
                                                      self._read_bytes_in_flight)
            try:
                tlp = raw.to_cocotbext()
            except Exception as e:    # noqa: BLE001
                self._error(f"DUT sent a TLP cocotbext-pcie cannot decode: {e}: {raw!r}")
                continue
            if not tlp.check():
                self._error(f"DUT sent a TLP that fails cocotbext-pcie's checks: {raw!r}")
                continue
            if self._root_port is not None:
                self._link_up.send(tlp)
            else:
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
        request, issued = pending[0], pending[1]
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
        final = self._is_final(cpl)
        if final and not cpls:
            self._retire_read(tag)          # nothing will be delivered (a completion timeout)
        for i, c in enumerate(cpls):
            # the read leaves the host's resources when its last completion reaches the DUT
            self._schedule(c, release, tag, retire=final and i == len(cpls) - 1)

    @staticmethod
    def _is_final(cpl):
        if cpl["cpl.status"] != CplStatus.SC.value or not cpl.payload:
            return True
        remaining = cpl["cpl.byte_count"] or 4096
        return remaining <= len(cpl.payload) - (cpl["cpl.lower_address"] & 3)

    def _retire_read(self, tag):
        pending = self._pending_reads.pop(tag, None)
        if pending is not None and pending[3]:
            self._reads_in_flight -= 1
            self._read_bytes_in_flight -= pending[2]
            self._up_event.set()

    def _schedule(self, cpl, release_ns, tag, retire=False):
        now = get_sim_time("ns")
        release = max(release_ns, now)
        if self.reorder:
            release += self.rng.uniform(0, self.reorder_window_ns)
        # completions of one tag never pass one another
        release = max(release, self._tag_last_release.get(tag, 0))
        self._tag_last_release[tag] = release
        retire_tag = tag if retire else None
        if release <= now and not self._cpl_heap and self._down_free_ns <= now:
            self._deliver(cpl, retire_tag)
            return
        heapq.heappush(self._cpl_heap, (release, self._cpl_seq, cpl, retire_tag))
        self._cpl_seq += 1
        self._cpl_event.set()

    def _deliver(self, cpl, retire_tag=None):
        for monitor in self.rx_monitors:
            monitor(cpl)
        if self.link is not None:
            self._down_free_ns = get_sim_time("ns") + self.link.wire_ns(cpl)
        on_sent = None
        if retire_tag is not None:
            on_sent = lambda _tlp, tag=retire_tag: self._retire_read(tag)   # noqa: E731
        self.rx_cpl.send_nowait(cpl, on_sent=on_sent)

    async def _run_completions(self):
        while True:
            if not self._cpl_heap:
                self._cpl_event.clear()
                await self._cpl_event.wait()
                continue
            release = max(self._cpl_heap[0][0], self._down_free_ns)
            now = get_sim_time("ns")
            if release > now:
                self._cpl_event.clear()
                # wake early if something due sooner is scheduled. (A fresh Timer each time: a
                # completion released at a clock edge meets that edge or the next one depending
                # on whether its Timer was registered before the clock's toggle, so even when
                # the Timer is registered is part of the cycle-level behaviour.)
                timer = Timer(release - now, "ns", round_mode="ceil")
                await First(timer, self._cpl_event.wait())
                continue
            _, _, cpl, retire_tag = heapq.heappop(self._cpl_heap)
            self._deliver(cpl, retire_tag)

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

