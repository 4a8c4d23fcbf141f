# SPDX-License-Identifier: BSD-2-Clause
"""A cocotb model of the Xilinx 7-series PCI Express hard IP (``pcie_7x``) user interface.

It stands where the real core stands: on one side a cocotbext-pcie
:class:`~cocotbext.pcie.core.RootComplex` port, on the other the DUT's ports named as the core's
(``m_axis_rx_*``, ``s_axis_tx_*``, ``cfg_*``, ...; see
:func:`virtio_pcie.adapters.xilinx7_core.core_ports`)::

    RootComplex ──link──► Xilinx7PcieModel (a cocotbext Device)
                            └ Xilinx7PcieFunction (Python): type-0 header, BARs,
                              PM @0x40, PCI Express @0x60, MSI-X @0x9C (next → 0xA8)
                 config requests at and above EXT_CFG_CAP_PTR ──┐
                 memory/I/O requests hitting a BAR (bar hit bits) ├──► m_axis_rx ──► DUT
                 completions for the DUT's requests ─────────────┘
                 ◄── s_axis_tx ◄── DUT (completions, requests, MSI-X writes)
                 cfg_* outputs ◄── the modelled configuration space
                 cfg_interrupt handshake ──► INTx state (intx_asserted, PCI Status bit 3)

What is modelled as PG054 describes it: dword order and the core's byte order (header dwords as
values, payload dwords with the lowest-address byte in bits [31:24]); at 64 bits, ``tkeep``
0x0F/0xFF and ``tlast``; at 128 bits, ``is_sof``/``is_eof`` in ``tuser`` with TLPs straddling a
beat (a TLP may start in dword 2 of the beat that ends the previous one) when ``straddle`` is on;
``rx_bar_hit`` (both bits of a 64-bit BAR pair); ``rx_ecrc_err`` on request; ``tx_buf_av``; the
discontinue bit ``src_dsc``; the legacy interrupt handshake and where its message goes (below).
The core's own answers to
configuration requests below the forwarded window, and its UR for requests that hit no BAR, are
cocotbext-pcie's. Not modelled: flow-control credit outputs (``fc_*``), ``rx_np_ok`` throttling,
the configuration management port, power management messages, error reporting inputs.

Completions for the DUT's reads pass through the same host behaviour as the TLP-stream bridge's
(:mod:`.pcie_bridge`): ``latency_ns`` after the request left the DUT, ``reorder`` (a seeded jitter
across tags; one tag's completions stay in order), ``rcb`` (split at every 64- or 128-byte
boundary) and ``completion_hook`` (tests inject errors), and ``max_read_bytes_in_flight`` (the
host takes a read only while the bytes of the reads it works on stay within it; a read holds its
bytes from the moment the host takes it until its last completion is handed to the core's receive
side; a waiting read holds up neither posted requests, nor messages, nor completions behind it,
which pass it, as the bridge has it). That is what a host does upstream of the core; the core
itself passes completions on in the order they arrive.

Legacy interrupts (PG054, "Legacy Interrupt Mode"): ``cfg_interrupt_rdy`` comes ``rdy_delay``
cycles after ``cfg_interrupt``; the core then makes the Assert_INTA/Deassert_INTA message itself
(none while Interrupt Disable is set, or when the level does not change), ``msg_delay`` cycles
later. Like the core's other TLPs it is announced on ``tx_cfg_req`` and, while ``tx_cfg_gnt`` is
high (the adapter ties it high: the core's TLPs first), sent at the next TLP boundary of
``s_axis_tx``, ``tready`` held low meanwhile: a TLP the user finishes before that goes to the link
before the message, one it finishes after goes after it. The host sees the message in that order
among the TLPs (:attr:`Xilinx7PcieModel.intx_asserted`, :attr:`Xilinx7PcieModel.intx_messages`).

Errors of the DUT's side of the interface (a TLP that is not whole dwords, ``tvalid`` dropped in a
TLP, a completion with the wrong completer ID, ``cfg_interrupt`` released before ``rdy``) are
logged and counted in :attr:`Xilinx7PcieModel.errors`; they never hang the model.
"""

import collections
import heapq
import logging
import random
import struct

import cocotb
from cocotb.triggers import Event, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from cocotbext.pcie.core import Device, Endpoint
from cocotbext.pcie.core.caps import MsixCapability
from cocotbext.pcie.core.tlp import Tlp, TlpType

from virtio_pcie.adapters.xilinx7_core import (EXT_CFG_CAP_PTR_MIN, HARD_IP_CAPABILITIES,
                                               RxTuser, TxTuser)
from virtio_pcie.spec.pcie import (CONFIG_SPACE_SIZE, LEGACY_CONFIG_SPACE_SIZE, CplStatus,
                                   FmtType, InterruptPin, PciCommand, PcieDeviceControl,
                                   PcieLinkControl)

from .pcie_bridge import split_completion
from .tlp import MalformedTlp, RawTlp

__all__ = ["Xilinx7PcieFunction", "Xilinx7PcieModel"]

_CAP_AT = {c.name: c.offset for c in HARD_IP_CAPABILITIES}
_FORWARD_END = LEGACY_CONFIG_SPACE_SIZE // 4       # legacy forwarding ends at dword 0x40


_DSC_BIT = TxTuser["src_dsc"].offset
_MRD = (FmtType.MRD32.value, FmtType.MRD64.value)


def _swap(dw):
    return int.from_bytes(dw.to_bytes(4, "little"), "big")


class Xilinx7PcieFunction(Endpoint):
    """The configuration space the 7-series core implements, and the forwarding decisions.

    Parameters
    ----------
    model : Xilinx7PcieModel
        Where forwarded requests go.
    vendor_id, device_id, revision_id, class_code, subsystem_vendor_id, subsystem_id : int
    interrupt_pin : int
        1 (INTA) or 0 (no legacy interrupt).
    bars : list of dict
        ``{"index", "kind" ("memory"/"io"), "64bit", "prefetchable", "size"}``.
    msix : dict or None
        ``{"table_size", "table_bir", "table_offset", "pba_bir", "pba_offset"}``: the core's
        MSI-X capability (its table and PBA are the DUT's).
    ext_cfg_cap_ptr : int or None
        Forward configuration requests at and above this dword (``CONFIG.PCI_CFG_Space_Addr``).
    last_cap_next : int or None
        The byte the last capability of the core points at (the patched ``*_CAP_NEXTPTR``);
        ``None`` for 0 (the unpatched core: forwarded capabilities exist but cannot be found).
    max_payload_size : int
        Max_Payload_Size Supported, in bytes.
    """

    def __init__(self, model, *, vendor_id, device_id, revision_id=0, class_code=0,
                 subsystem_vendor_id=0, subsystem_id=0, interrupt_pin=1, bars=(), msix=None,
                 ext_cfg_cap_ptr=None, last_cap_next=None, max_payload_size=256,
                 extended_tag=True, **kwargs):
        super().__init__(**kwargs)
        if ext_cfg_cap_ptr is not None and not EXT_CFG_CAP_PTR_MIN <= ext_cfg_cap_ptr < 0x40:
            raise ValueError(f"ext_cfg_cap_ptr must be a dword from {EXT_CFG_CAP_PTR_MIN:#x} to "
                             f"0x3f, not {ext_cfg_cap_ptr!r}")
        self.model = model
        self.vendor_id = vendor_id
        self.device_id = device_id
        self.revision_id = revision_id
        self.class_code = class_code
        self.subsystem_vendor_id = subsystem_vendor_id
        self.subsystem_id = subsystem_id
        self.interrupt_pin = interrupt_pin
        self.ext_cfg_cap_ptr = ext_cfg_cap_ptr
        self.last_cap_next = last_cap_next or 0
        for bar in bars:
            self.configure_bar(bar["index"], bar["size"], ext=bar["64bit"],
                               prefetch=bar["prefetchable"], io=bar["kind"] == "io")
        # The core's capabilities at its fixed places (MSI is left out: disabled).
        self.register_capability(self.pm_cap, offset=_CAP_AT["pm"] // 4)
        self.register_capability(self.pcie_cap, offset=_CAP_AT["pcie"] // 4)
        mps = max(0, (max_payload_size // 128).bit_length() - 1)
        self.pcie_cap.max_payload_size_supported = mps
        self.pcie_cap.extended_tag_supported = extended_tag
        self.msix_cap = None
        if msix is not None:
            self.msix_cap = MsixCapability()
            self.msix_cap.msix_table_size = msix["table_size"] - 1
            self.msix_cap.msix_table_bar_indicator_register = msix["table_bir"]
            self.msix_cap.msix_table_offset = msix["table_offset"]
            self.msix_cap.msix_pba_bar_indicator_register = msix["pba_bir"]
            self.msix_cap.msix_pba_offset = msix["pba_offset"]
            self.register_capability(self.msix_cap, offset=_CAP_AT["msix"] // 4)
        self._last_cap_reg = (self.capabilities.list[-1].offset if self.capabilities.list
                              else None)
        for t in (TlpType.MEM_READ, TlpType.MEM_READ_64, TlpType.MEM_WRITE,
                  TlpType.MEM_WRITE_64, TlpType.IO_READ, TlpType.IO_WRITE):
            self.register_rx_tlp_handler(t, self._forward_bar_request)

    # -- configuration space ------------------------------------------------------------------
    def forwarded(self, reg):
        return self.ext_cfg_cap_ptr is not None and self.ext_cfg_cap_ptr <= reg < _FORWARD_END

    async def read_config_register(self, reg):
        value = await super().read_config_register(reg)
        if reg == self._last_cap_reg:
            # The last capability of the core points at the forwarded window (the build plan
            # patches MSIX_CAP_NEXTPTR; unpatched, it reads 0 and the chain ends here).
            value = (value & ~0xFF00) | ((self.last_cap_next & 0xFF) << 8)
        return value

    async def write_config_register(self, reg, data, mask):
        await super().write_config_register(reg, data, mask)
        self.model.update_cfg_outputs()

    async def handle_config_0_read_tlp(self, tlp):
        await self._config(tlp, super().handle_config_0_read_tlp)

    async def handle_config_0_write_tlp(self, tlp):
        await self._config(tlp, super().handle_config_0_write_tlp)

    async def _config(self, tlp, own):
        reg = tlp.address >> 2
        if self.forwarded(reg) and tlp.completer_id.device == self.device_num and \
                tlp.completer_id.function == self.function_num:
            if self.bus_num != tlp.completer_id.bus:
                self.pcie_id = self.pcie_id._replace(bus=tlp.completer_id.bus)
                self.model.update_cfg_outputs()
            self.model.forwarded_config += 1
            await self.model.to_dut(tlp, bar_hit=0)
            return
        await own(tlp)
        self.model.update_cfg_outputs()

    # -- requests for the DUT -----------------------------------------------------------------
    async def _forward_bar_request(self, tlp):
        io = tlp.fmt_type in (TlpType.IO_READ, TlpType.IO_WRITE)
        bar = self.match_bar(tlp.address, io=io)
        enabled = self.io_space_enable if io else self.memory_space_enable
        if bar is None or not enabled:
            if tlp.fmt_type not in (TlpType.MEM_WRITE, TlpType.MEM_WRITE_64):
                await self.send(Tlp.create_ur_completion_for_tlp(tlp, self.pcie_id))
            return
        index = bar[0]
        hit = 1 << index
        if self.bar[index] & 4:        # a 64-bit pair: both bits (PG054)
            hit |= 1 << (index + 1)
        await self.model.to_dut(tlp, bar_hit=hit)

    async def handle_tlp(self, tlp):
        if tlp.is_completion():
            self.model.completion_from_host(tlp)
            return
        await super().handle_tlp(tlp)


class Xilinx7PcieModel(Device):
    """The 7-series core: a cocotbext-pcie Device with one :class:`Xilinx7PcieFunction`, bound
    to the DUT's core-side ports.

    Parameters
    ----------
    dut, clock, reset
        The DUT, its user clock (the core's ``user_clk_out``) and active-high reset.
    data_width : int
        64 or 128.
    straddle : bool
        At 128 bits, start a TLP in dword 2 of a beat when the previous one ended in dword 0 or
        1, as the core does.
    tx_buf_av : int
        Value of ``tx_buf_av`` (free transmit buffers).
    rdy_delay : int
        Cycles from ``cfg_interrupt`` to ``cfg_interrupt_rdy``.
    msg_delay : int
        Cycles from ``cfg_interrupt_rdy`` to the INTx message waiting for ``s_axis_tx`` (PG054:
        the core sends it after the handshake).
    ecrc_error_hook : callable(Tlp) -> bool, optional
        Flag ``rx_ecrc_err`` on the TLPs it returns True for.
    latency_ns, reorder, reorder_window_ns, rcb, completion_hook, max_read_bytes_in_flight, seed
        The host's handling of the DUT's reads, as :class:`~.pcie_bridge.DutPcieDevice` has
        them (``completion_hook(request, completion)`` gets and returns :class:`~.tlp.RawTlp`).
    **function_kwargs
        :class:`Xilinx7PcieFunction` parameters.
    """

    def __init__(self, dut, clock, reset=None, *, data_width, straddle=True, tx_buf_av=32,
                 rdy_delay=3, msg_delay=1, ecrc_error_hook=None, latency_ns=0, reorder=False,
                 reorder_window_ns=200, rcb=None, completion_hook=None,
                 max_read_bytes_in_flight=None, seed=0, **function_kwargs):
        super().__init__()
        if data_width not in (64, 128):
            raise ValueError(f"data_width must be 64 or 128, not {data_width!r}")
        self.log = logging.getLogger("cocotb.pcie.xilinx7")
        self.dut = dut
        self.clock = clock
        self.reset = reset
        self.data_width = data_width
        self.dwords = data_width // 32
        self.straddle = straddle and data_width == 128
        self.rdy_delay = rdy_delay
        self.msg_delay = msg_delay
        self.ecrc_error_hook = ecrc_error_hook
        self.function = Xilinx7PcieFunction(self, **function_kwargs)
        self.append_function(self.function)

        self.latency_ns = latency_ns
        self.reorder = reorder
        self.reorder_window_ns = reorder_window_ns
        self.rcb = rcb
        self.completion_hook = completion_hook
        self.max_read_bytes_in_flight = max_read_bytes_in_flight
        self.rng = random.Random(seed)

        self.errors = []
        self.forwarded_config = 0
        self.rx_tlps = 0
        self.tx_tlps = 0
        self.intx_asserted = [False] * 4  # per pin, as the bridge has it; the core has INTA only
        self.intx_event = Event()
        self.intx_messages = []           # (time_ns, "assert"/"deassert", pin), as the bridge
        self.max_seen = {"read_bytes": 0}
        self.rx_idle = None               # generator: truthy = leave tvalid low this cycle
        self.tx_backpressure = None       # generator: truthy = tready low this cycle
        self.tx_monitors = []             # callables(RawTlp) for every TLP the DUT sends

        self._rx_queue = collections.deque()
        self._rx_wake = Event()
        self._pending_reads = {}          # tag -> [request RawTlp, time the host took it, ns]
        self._up_queue = []               # RawTlp, or ("intx", level): in s_axis_tx order
        self._up_event = Event()
        self._read_bytes_in_flight = 0
        self._read_bytes = {}             # tag -> bytes held by a read the host took
        self._core_intx = False           # the level of the core's last INTx message
        self._intx_due = collections.deque()  # messages waiting for s_axis_tx: their levels
        self._cpl_heap = []
        self._cpl_seq = 0
        self._cpl_event = Event()
        self._tag_last_release = {}
        self._sig("m_axis_rx_tvalid").value = 0
        self._sig("s_axis_tx_tready").value = 0
        self._sig("tx_buf_av").value = tx_buf_av
        self._sig("tx_cfg_req").value = 0
        self._sig("tx_err_drop").value = 0
        self._sig("cfg_interrupt_rdy").value = 0
        self._sig("user_lnk_up").value = 1
        self.update_cfg_outputs()
        cocotb.start_soon(self._run_rx())
        cocotb.start_soon(self._run_tx())
        cocotb.start_soon(self._run_interrupt())
        cocotb.start_soon(self._run_completions())
        cocotb.start_soon(self._run_upstream())

    @classmethod
    def from_plan(cls, dut, clock, reset=None, *, data_width, plan, **kwargs):
        """The core as the build plan configures it: ``plan`` is a function's
        ``FunctionLayout.hard_ip_plan()`` (IDs, BARs, MSI-X, forwarding pointer and the patched
        next pointer of the core's last capability)."""
        forwarding = plan["config_forwarding"]
        pin = plan["interrupt_pin"]
        return cls(dut, clock, reset, data_width=data_width,
                   vendor_id=plan["vendor_id"], device_id=plan["device_id"],
                   revision_id=plan["revision_id"], class_code=plan["class_code"],
                   subsystem_vendor_id=plan["subsystem_vendor_id"],
                   subsystem_id=plan["subsystem_id"],
                   interrupt_pin=InterruptPin[pin].value if pin else 0,
                   bars=plan["bars"], msix=plan.get("msix"),
                   ext_cfg_cap_ptr=forwarding["ext_cfg_cap_ptr_dword"],
                   last_cap_next=forwarding["last_hard_ip_capability_next"],
                   max_payload_size=plan["pcie"]["max_payload_size_supported"],
                   extended_tag=plan["pcie"]["extended_tag"], **kwargs)

    def _sig(self, name):
        return getattr(self.dut, name)

    # -- configuration status outputs ------------------------------------------------------------
    def update_cfg_outputs(self):
        fn = self.function
        command = 0
        for flag, on in ((PciCommand.IO_SPACE, fn.io_space_enable),
                         (PciCommand.MEMORY_SPACE, fn.memory_space_enable),
                         (PciCommand.BUS_MASTER, fn.bus_master_enable),
                         (PciCommand.SERR_ENABLE, fn.serr_enable),
                         (PciCommand.INTX_DISABLE, fn.interrupt_disable)):
            if on:
                command |= flag.value
        cap = fn.pcie_cap
        dcommand = PcieDeviceControl.const({
            "max_payload_size": cap.max_payload_size,
            "max_read_request_size": cap.max_read_request_size,
            "extended_tag": cap.extended_tag_field_enable,
        }).as_value().value
        lcommand = PcieLinkControl.const({"rcb": cap.read_completion_boundary}).as_value().value
        msix = fn.msix_cap
        values = {
            "cfg_bus_number": fn.bus_num, "cfg_device_number": fn.device_num,
            "cfg_function_number": fn.function_num, "cfg_command": command,
            "cfg_dcommand": dcommand, "cfg_lcommand": lcommand,
            "cfg_pmcsr_powerstate": fn.pm_cap.power_state,
            "cfg_interrupt_msixenable": int(bool(msix and msix.msix_enable)),
            "cfg_interrupt_msixfm": int(bool(msix and msix.msix_function_mask)),
        }
        for name, value in values.items():
            self._sig(name).value = value

    # -- fabric → DUT ------------------------------------------------------------------------------
    async def to_dut(self, tlp, bar_hit):
        """Queue a cocotbext TLP for ``m_axis_rx`` (its flow-control credits go back to the link
        when the DUT takes its first beat)."""
        ecrc = bool(self.ecrc_error_hook and self.ecrc_error_hook(tlp))
        self._enqueue(RawTlp.from_cocotbext(tlp), bar_hit, ecrc, tlp)

    def _enqueue(self, raw, bar_hit, ecrc, tlp=None):
        words = [(raw.hdr >> (32 * i)) & 0xFFFFFFFF for i in range(raw.header_dwords)]
        words += [_swap(w) for w in struct.unpack(f"<{len(raw.payload) // 4}L", raw.payload)]
        self._rx_queue.append([words, bar_hit, ecrc, tlp, 0])
        self._rx_wake.set()

    # -- the host's completions for the DUT's reads ------------------------------------------------
    def completion_from_host(self, tlp):
        tlp.release_fc()
        ecrc = bool(self.ecrc_error_hook and self.ecrc_error_hook(tlp))
        cpl = RawTlp.from_cocotbext(tlp)
        now = get_sim_time("ns")
        pending = self._pending_reads.get(cpl.tag)
        if pending is None:
            self._schedule(cpl, now, ecrc)          # not for a read we saw: deliver as it is
            return
        request, issued = pending
        final = self._is_final(cpl)
        cpls = [cpl]
        if self.completion_hook is not None:
            cpls = self.completion_hook(request, cpl)
            cpls = [] if cpls is None else [cpls] if isinstance(cpls, RawTlp) else cpls
        if self.rcb:
            cpls = [piece for c in cpls for piece in split_completion(c, self.rcb)]
        for i, c in enumerate(cpls):
            last = final and i == len(cpls) - 1
            self._schedule(c, issued + self.latency_ns, ecrc, retire=cpl.tag if last else None)
        if final:
            del self._pending_reads[cpl.tag]
            if not cpls:                        # a hook dropped them all: the read is over
                self._retire(cpl.tag)

    @staticmethod
    def _is_final(cpl):
        if cpl["cpl.status"] != CplStatus.SC.value or not cpl.payload:
            return True
        remaining = cpl["cpl.byte_count"] or 4096
        return remaining <= len(cpl.payload) - (cpl["cpl.lower_address"] & 3)

    def _retire(self, tag):
        """The last completion of read ``tag`` reached the core: the host frees its bytes."""
        self._read_bytes_in_flight -= self._read_bytes.pop(tag, 0)
        self._up_event.set()

    def _deliver(self, cpl, ecrc, retire):
        self._enqueue(cpl, 0, ecrc)
        if retire is not None:
            self._retire(retire)

    def _schedule(self, cpl, release_ns, ecrc, retire=None):
        now = get_sim_time("ns")
        release = max(release_ns, now)
        if self.reorder:
            release += self.rng.uniform(0, self.reorder_window_ns)
        # the completions of one request never pass one another (PCIe Base 4.0 §2.4.1)
        release = max(release, self._tag_last_release.get(cpl.tag, 0))
        self._tag_last_release[cpl.tag] = release
        if release <= now and not self._cpl_heap:
            self._deliver(cpl, ecrc, retire)
            return
        heapq.heappush(self._cpl_heap, (release, self._cpl_seq, cpl, ecrc, retire))
        self._cpl_seq += 1
        self._cpl_event.set()

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
                await First(Timer(release - now, "ns", round_mode="ceil"),
                            self._cpl_event.wait())
                continue
            _, _, cpl, ecrc, retire = heapq.heappop(self._cpl_heap)
            self._deliver(cpl, ecrc, retire)

    def _paused(self, gen_name):
        gen = getattr(self, gen_name)
        if gen is None:
            return False
        try:
            return bool(next(gen))
        except StopIteration:
            setattr(self, gen_name, None)
            return False

    def _rx_beats(self):
        """The next beat from the queue: (tdata, tkeep, tlast, tuser, [TLPs started in it])."""
        n = self.dwords
        lanes = [None] * n
        sof = eof = None
        bar_hit, ecrc = 0, False
        started = []
        pos = 0
        while pos < n and self._rx_queue:
            entry = self._rx_queue[0]
            words, hit, err, tlp, cursor = entry
            if cursor == 0:                      # a TLP starts
                if sof is not None:
                    break                        # one start per beat
                if pos:
                    if not self.straddle or pos > 2:
                        break
                    pos = 2                      # straddled: it starts in dword 2
                sof, bar_hit = pos, hit
                started.append(tlp)
            take = min(n - pos, len(words) - cursor)
            lanes[pos:pos + take] = words[cursor:cursor + take]
            cursor += take
            pos += take
            if cursor == len(words):
                self._rx_queue.popleft()
                eof, ecrc = pos - 1, err
                if not self.straddle:
                    break
            else:
                entry[4] = cursor
        tdata = sum((w or 0) << (32 * i) for i, w in enumerate(lanes))
        fields = {"bar_hit": bar_hit, "ecrc_err": int(ecrc)}
        if n == 4:
            # tkeep and tlast are not used at 128 bits; is_sof/is_eof hold byte offsets.
            fields["is_sof"] = {"present": sof is not None, "offset": 4 * (sof or 0)}
            fields["is_eof"] = {"present": eof is not None, "offset": 4 * (eof or 0) + 3}
            tkeep, tlast = 0, 0
        else:
            used = sum(1 for w in lanes if w is not None)
            tkeep, tlast = (1 << (4 * used)) - 1, int(eof is not None)
        tuser = RxTuser.const(fields).as_value().value
        return tdata, tkeep, tlast, tuser, started

    async def _run_rx(self):
        clk = self.clock
        valid = self._sig("m_axis_rx_tvalid")
        ready = self._sig("m_axis_rx_tready")
        while True:
            if not self._rx_queue:
                valid.value = 0
                self._rx_wake.clear()
                await self._rx_wake.wait()
                await RisingEdge(clk)
                continue
            if self._paused("rx_idle"):
                valid.value = 0
                await RisingEdge(clk)
                continue
            tdata, tkeep, tlast, tuser, started = self._rx_beats()
            self._sig("m_axis_rx_tdata").value = tdata
            self._sig("m_axis_rx_tkeep").value = tkeep
            self._sig("m_axis_rx_tlast").value = tlast
            self._sig("m_axis_rx_tuser").value = tuser
            valid.value = 1
            while True:
                await RisingEdge(clk)
                if self.reset is not None and self.reset.value:
                    continue
                if ready.value:
                    break
            for tlp in started:
                self.rx_tlps += 1
                if tlp is not None:
                    tlp.release_fc()
            valid.value = 0

    # -- DUT → fabric ------------------------------------------------------------------------------
    async def _run_tx(self):
        clk = self.clock
        valid = self._sig("s_axis_tx_tvalid")
        ready = self._sig("s_axis_tx_tready")
        gnt = self._sig("tx_cfg_gnt")
        cfg_req = self._sig("tx_cfg_req")
        words = []
        while True:
            pause = self._paused("tx_backpressure")
            # The core's own TLP (an INTx message) goes first at a TLP boundary while the user
            # grants it (PG054, tx_cfg_req / tx_cfg_gnt): the user's next TLP waits.
            own = bool(self._intx_due) and not words and bool(gnt.value)
            ready.value = 0 if pause or own else 1
            await RisingEdge(clk)
            if self.reset is not None and self.reset.value:
                words = []
                continue
            if own:
                self._up_queue.append(("intx", self._intx_due.popleft()))
                self._up_event.set()
                cfg_req.value = int(bool(self._intx_due))
                continue
            if not valid.value:
                continue          # PG054 allows source throttling inside a TLP
            if pause:
                continue
            data = int(self._sig("s_axis_tx_tdata").value)
            keep = int(self._sig("s_axis_tx_tkeep").value)
            last = int(self._sig("s_axis_tx_tlast").value)
            user = int(self._sig("s_axis_tx_tuser").value)
            lanes = [(data >> (32 * i)) & 0xFFFFFFFF for i in range(self.dwords)]
            n = 0
            while n < self.dwords and (keep >> (4 * n)) & 0xF == 0xF:
                n += 1
            if keep != (1 << (4 * n)) - 1 or n == 0:
                self._error(f"s_axis_tx_tkeep 0x{keep:x} is not whole dwords from lane 0")
            if n < self.dwords and not last:
                self._error(f"s_axis_tx_tkeep 0x{keep:x} short on a beat without tlast")
            words += lanes[:n]
            if last:
                tlp_words, words = words, []
                if (user >> _DSC_BIT) & 1:
                    self.log.info("DUT discontinued a TLP (src_dsc); dropped")
                    continue
                self._from_dut(tlp_words)

    def _from_dut(self, words):
        if len(words) < 3:
            self._error(f"DUT sent a {len(words)}-dword TLP")
            return
        dw0 = words[0]
        hlen = 4 if (dw0 >> 29) & 1 else 3
        hdr = 0
        for i, w in enumerate(words[:hlen]):
            hdr |= w << (32 * i)
        payload = b"".join(struct.pack("<L", _swap(w)) for w in words[hlen:])
        raw = RawTlp(hdr, payload)
        try:
            raw.check()
        except MalformedTlp as e:
            self._error(f"DUT sent a malformed TLP: {e}")
            return
        for monitor in self.tx_monitors:
            monitor(raw)
        if raw.is_message:
            self._error(f"DUT sent a message TLP on s_axis_tx (the core sends INTx itself): "
                        f"{raw!r}")
            return
        if raw.is_completion and raw["cpl.completer_id"] != int(self.function.pcie_id):
            self._error(f"completion with completer ID 0x{raw['cpl.completer_id']:04x}, the "
                        f"core is {self.function.pcie_id}: {raw!r}")
        if raw.fmt_type in _MRD:
            self._pending_reads[raw.tag] = [raw, get_sim_time("ns")]
        self.tx_tlps += 1
        self._up_queue.append(raw)
        self._up_event.set()

    def _read_admissible(self, raw):
        nbytes = 4 * raw.length_dw
        return not (self.max_read_bytes_in_flight and self._read_bytes_in_flight and
                    self._read_bytes_in_flight + nbytes > self.max_read_bytes_in_flight)

    def _next_upstream(self):
        """The oldest item, unless it is a read the host cannot take yet: then the oldest item
        that is not a read passes it (reads keep their order)."""
        for i, item in enumerate(self._up_queue):
            is_read = isinstance(item, RawTlp) and item.fmt_type in _MRD
            if not is_read:
                return self._up_queue.pop(i)
            if i == 0 and self._read_admissible(item):
                return self._up_queue.pop(0)
        return None

    async def _run_upstream(self):
        """The link towards the host: TLPs and the core's INTx messages in s_axis_tx order."""
        while True:
            item = self._next_upstream() if self._up_queue else None
            if item is None:
                self._up_event.clear()
                await self._up_event.wait()
                continue
            if not isinstance(item, RawTlp):
                self._intx_reaches_host(item[1])
                continue
            if item.fmt_type in _MRD and item.tag in self._pending_reads:
                # the host takes the read: the latency clock starts, its bytes are held
                self._pending_reads[item.tag][1] = get_sim_time("ns")
                nbytes = 4 * item.length_dw
                self._read_bytes[item.tag] = nbytes
                self._read_bytes_in_flight += nbytes
                self.max_seen["read_bytes"] = max(self.max_seen["read_bytes"],
                                                  self._read_bytes_in_flight)
            await self.upstream_send(item.to_cocotbext())

    def _intx_reaches_host(self, level):
        self.intx_asserted[0] = level
        self.intx_messages.append((get_sim_time("ns"), "assert" if level else "deassert", 0))
        self.intx_event.set()

    # -- legacy interrupt handshake ----------------------------------------------------------------
    async def _run_interrupt(self):
        clk = self.clock
        req = self._sig("cfg_interrupt")
        rdy = self._sig("cfg_interrupt_rdy")
        asserting = self._sig("cfg_interrupt_assert")
        while True:
            await RisingEdge(clk)
            if not req.value:
                continue
            level = bool(asserting.value)
            for _ in range(self.rdy_delay):
                await RisingEdge(clk)
                if not req.value:
                    # A reset (user_reset_out) ends the handshake in the core as well: only a
                    # release outside reset breaks the protocol.
                    if self.reset is None or not self.reset.value:
                        self._error("cfg_interrupt released before cfg_interrupt_rdy")
                    break
            else:
                rdy.value = 1
                await RisingEdge(clk)
                rdy.value = 0
                fn = self.function
                fn.interrupt_status = level
                if not fn.interrupt_disable and level != self._core_intx:
                    self._core_intx = level
                    for _ in range(self.msg_delay):
                        await RisingEdge(clk)
                    self._intx_due.append(level)
                    self._sig("tx_cfg_req").value = 1
                else:
                    await RisingEdge(clk)

    async def wait_intx(self, pin=0, asserted=True):
        while self.intx_asserted[pin] != asserted:
            self.intx_event.clear()
            await self.intx_event.wait()

    def _error(self, message):
        self.log.error("%s", message)
        self.errors.append(message)

    @property
    def all_errors(self):
        """Everything wrong the model saw on the DUT's side (as the bridge's ``all_errors``)."""
        return list(self.errors)

    @staticmethod
    def config_space_size():
        return CONFIG_SPACE_SIZE
