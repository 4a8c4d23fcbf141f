# SPDX-License-Identifier: BSD-2-Clause
"""The virtio-net workload of the fuzzer: frames through the device's loopback, checked.

The device runs with ``loopback`` set: every frame it transmits comes back on its receive path.
The hostile driver posts receive buffers (mergeable or whole-frame chains, sometimes with a
device-readable buffer, too small, or cut in many pieces), transmits frames in any chain layout
(header and frame shared or split, indirect or not) and some that must not be sent (a writable
buffer, a GSO request, shorter than a header, longer than the largest frame), and sends control
commands, valid and malformed. Each used entry is judged:

* a received frame must be, byte for byte, one the driver transmitted and that has not yet been
  received as often as it was sent (zero-padded to 60 bytes, as the device pads runts);
* a transmit chain is used with length 0, a control command's ack is OK or ERR.

The device's receive buffers are held until frames come, so only transmit and control chains
are owed a completion when the run tidies up.
"""

import collections
import dataclasses
import time

from cocotb.triggers import Timer
from cocotb.utils import get_sim_time

from virtio_pcie.spec.virtio import (VirtioF, VirtioNetCtrlAck, VirtioNetCtrlClass,
                                     VirtioNetCtrlHdr, VirtioNetCtrlMac, VirtioNetCtrlMq,
                                     VirtioNetCtrlRx, VirtioNetF, VirtioNetHdr)

from ..codec import codec
from ..host import VirtioNetDriver
from ..host.errors import LinuxBug, LinuxError
from .driver import RunFailure
from .rings import Segment
from .workload import Workload

__all__ = ["NetWorkload"]

_HDR = codec(VirtioNetHdr)
_CTRL = codec(VirtioNetCtrlHdr)
ETH_ZLEN = 60
MAX_FRAME = 1518
BROADCAST = b"\xff" * 6


@dataclasses.dataclass
class _Tx:
    frame: bytes
    sent: bool          # the device must transmit it (it may still be lost on receive)
    kind: str
    owed: bool = True   # the device must complete the chain


@dataclasses.dataclass
class _Ctrl:
    status_addr: int
    kind: str
    owed: bool = True


@dataclasses.dataclass
class _Rx:
    segs: list
    kind: str
    owed: bool = False  # receive buffers are held until frames come


class NetWorkload(Workload):
    def __init__(self, ctx):
        self.ctx = ctx
        self.errors_reported = 0

    async def start(self):
        self.mac = bytes([await self.ctx.modern.device.read8(i) for i in range(6)])
        self.queue_pairs = max(1, (self.ctx.queue_count - 1) // 2)

    # -- per run --------------------------------------------------------------------------------
    def begin_run(self, rng, result):
        self.rng = rng
        self.result = result
        self.sent = collections.Counter()        # frames (padded) transmitted, not yet seen
        self.errors_reported = 0
        self.pending_rx = {}                     # queue -> [(chain, len)] of a mergeable frame
        self.rx_unframed = set()                 # queues whose receive framing is lost
        self.unserved = False                    # see live()
        self.stats = {"requests": 0, "tx": 0, "rx_frames": 0, "rx_returned": 0, "ctrl_ok": 0,
                      "ctrl_err": 0}

    def end_run(self, result):
        result.errors_reported += self.errors_reported
        result.stats.update(self.stats)

    def usable_features(self, offered):
        return offered

    def required_features(self, offered):
        return 0

    def queues_wanted(self, driver):
        wanted = [0, 1]
        if driver.has(VirtioNetF.CTRL_VQ):
            wanted.append(2 * self.queue_pairs if driver.has(VirtioNetF.MQ) else 2)
        if self.rng.random() < 0.1:
            extra = self.rng.randrange(self.ctx.queue_count + 2)
            if extra not in wanted:     # (set up twice, the second setup meets a live queue)
                wanted.append(extra)
        return wanted

    def live(self, driver):
        self.driver = driver
        # A legacy driver without MRG_RXBUF uses the 10-byte header, which the device does not
        # serve (docs/net.md: no Linux does this when MRG_RXBUF is offered): its queues may
        # stall and its frames are not judged; the device must still recover after a reset.
        self.unserved = driver.legacy and not driver.has(VirtioNetF.MRG_RXBUF)
        if self.unserved:
            driver.opaque = True
            self.stats["unserved"] = self.stats.get("unserved", 0) + 1

    def _hdr_len(self):
        return _HDR.size

    def _role(self, q):
        if q.index == self._ctrl_index():
            return "ctrl"
        pairs = self.queue_pairs if self.driver.has(VirtioNetF.MQ) else 1
        if q.index >= 2 * pairs:
            # A queue set up beyond the active pairs (the device's control queue without
            # CTRL_VQ, say): the device gives it its own role; the workload leaves it alone.
            return "none"
        return "rx" if q.index % 2 == 0 else "tx"

    def _ctrl_index(self):
        d = self.driver
        if not d.has(VirtioNetF.CTRL_VQ):
            return None
        return 2 * self.queue_pairs if d.has(VirtioNetF.MQ) else 2

    # -- building chains ------------------------------------------------------------------------
    def _cut(self, data, writable):
        rng, mem = self.rng, self.ctx.memory
        total = len(data) if not writable else data
        if total == 0:
            return []
        n = min(total, rng.choice([1, 1, 1, 2, 3, 5]))
        cuts = sorted(rng.sample(range(1, total), n - 1)) if n > 1 else []
        bounds = [0] + cuts + [total]
        segs = []
        for a, b in zip(bounds, bounds[1:], strict=False):
            if rng.random() < 0.05:
                segs.append(Segment(mem.alloc_addr(1, 8), 0, writable))
            addr = mem.alloc_addr(b - a, rng.choice([1, 2, 8, 64]))
            if not writable:
                mem.write(addr, data[a:b])
            segs.append(Segment(addr, b - a, writable))
        return segs

    def _frame(self):
        rng = self.rng
        dst = rng.choice([self.mac, BROADCAST, BROADCAST, bytes([0x02]) + rng.randbytes(5),
                          bytes([0x01, 0x00, 0x5E]) + rng.randbytes(3)])
        length = rng.choice([14, 42, 60, 64, 128, 500, 1000, 1514, 1518, rng.randint(14, 1518)])
        body = rng.randbytes(length - 14)
        return dst + rng.randbytes(6) + bytes([rng.randrange(256), rng.randrange(256)]) + body

    def _tx_chain(self):
        rng = self.rng
        kind = rng.choices(["ok", "writable", "gso", "short", "long"], [85, 4, 4, 4, 3])[0]
        frame = self._frame()
        hdr = _HDR.pack(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0,
                        csum_offset=0, num_buffers=0)
        sent = True
        if kind == "gso":
            hdr = _HDR.pack(flags=0, gso_type=rng.choice([1, 3, 4, 5]), hdr_len=54,
                            gso_size=1448, csum_start=0, csum_offset=0, num_buffers=0)
            sent = False
        elif kind == "short":
            frame = frame[:rng.randrange(0, 14)]
            sent = False
        elif kind == "long":
            # Longer than any frame the device sends (a few bytes over could be a VLAN tag).
            frame = frame + rng.randbytes(MAX_FRAME - len(frame) + rng.randint(64, 3000))
            sent = False
        data = hdr + frame
        if rng.random() < 0.7:
            segs = self._cut(data, False)
        else:
            segs = self._cut(hdr, False) + self._cut(frame, False)
        if kind == "writable":
            segs.append(Segment(self.ctx.memory.alloc_addr(64, 8), 64, True))
            sent = False
        return segs, _Tx(frame.ljust(ETH_ZLEN, b"\0") if sent else frame, sent, kind)

    def _rx_chain(self):
        rng = self.rng
        mergeable = self.driver.has(VirtioNetF.MRG_RXBUF)
        kind = rng.choices(["ok", "readable", "small"], [90, 4, 6])[0]
        if mergeable:
            size = rng.choice([self._hdr_len() + 1, 64, 256, 1526, 1536, 2048,
                               rng.randint(13, 4096)])
        else:
            size = self._hdr_len() + MAX_FRAME + rng.choice([0, 0, 8, 100, 3000])
        if kind == "small":
            size = rng.randint(1, 40)
        segs = self._cut(size, True)
        if kind == "readable":
            segs.insert(0, Segment(self.ctx.memory.alloc_addr(16, 8), 16, False))
        return segs, _Rx([s for s in segs if s.write], kind)

    def _ctrl_chain(self):
        rng = self.rng
        kind = rng.choices(["promisc", "allmulti", "mac_set", "table", "mq", "garbage"],
                           [3, 2, 2, 2, 2, 3])[0]
        on = rng.random() < 0.7
        if kind == "promisc":
            cls, cmd, out = VirtioNetCtrlClass.RX, VirtioNetCtrlRx.PROMISC, [bytes([on])]
        elif kind == "allmulti":
            cls, cmd, out = VirtioNetCtrlClass.RX, VirtioNetCtrlRx.ALLMULTI, [bytes([on])]
        elif kind == "mac_set":
            # Keep the device's own address: frames sent to it must keep coming back.
            cls, cmd, out = VirtioNetCtrlClass.MAC, VirtioNetCtrlMac.ADDR_SET, [self.mac]
        elif kind == "table":
            n = rng.randint(0, 3)
            uc = n.to_bytes(4, "little") + b"".join(rng.randbytes(6) for _ in range(n))
            mc = (1).to_bytes(4, "little") + bytes([1, 0, 0x5E, 0, 0, 1])
            cls, cmd, out = VirtioNetCtrlClass.MAC, VirtioNetCtrlMac.TABLE_SET, [uc, mc]
        elif kind == "mq":
            cls, cmd = VirtioNetCtrlClass.MQ, VirtioNetCtrlMq.VQ_PAIRS_SET
            out = [rng.choice([1, 0, 2, 0x8001]).to_bytes(2, "little")]
        else:
            cls, cmd = rng.randrange(256), rng.randrange(256)
            out = [rng.randbytes(rng.randint(0, 40))]
        readable = _CTRL.pack(**{"class": int(cls), "command": int(cmd)}) + b"".join(out)
        segs = self._cut(readable, False)
        status = self.ctx.memory.alloc_addr(1, 1)
        self.ctx.memory.write(status, b"\xEE")
        segs.append(Segment(status, 1, True))
        if rng.random() < 0.1:
            segs.append(Segment(self.ctx.memory.alloc_addr(8, 8), 8, True))
        return segs, _Ctrl(status, kind)

    async def submit(self, driver, n):
        self.driver = driver
        live = {self._role(q): q for q in driver.queues.values() if not q.broken}
        indirect_ok = driver.has(VirtioF.INDIRECT_DESC)
        touched = {}                # queues in first-use order (a set would follow id())
        for _ in range(n):
            role = self.rng.choices(["tx", "rx", "ctrl"], [50, 35, 15])[0]
            q = live.get(role)
            if q is None:
                continue
            segs, token = {"tx": self._tx_chain, "rx": self._rx_chain,
                           "ctrl": self._ctrl_chain}[role]()
            if not segs or (len(segs) > q.size and not indirect_ok):
                continue
            chain = q.add(segs, token, indirect_ok=indirect_ok,
                          shape="indirect" if len(segs) > q.size else None)
            if chain is None:
                continue
            if role == "tx" and token.sent:
                self.sent[token.frame] += 1
            self.stats["requests"] += 1
            touched[q.index] = q
            self.ctx.log.info("  q%d head %d: %s %s, %d descs", q.index, chain.head, role,
                              token.kind, len(chain.descs))
        for q in touched.values():
            q.publish()
            if self.rng.random() < 0.9:
                await driver.kick(q)

    async def reap(self, driver):
        self.driver = driver
        for q in list(driver.queues.values()):
            entries = q.reap()
            role = self._role(q)
            for chain, length, problem in entries:
                if problem:
                    self.result.corruptions.append(problem)
                    continue
                if chain is None:           # a raw head's chain: nothing to check
                    continue
                token = chain.token
                if role == "tx" or isinstance(token, _Tx):
                    self.stats["tx"] += 1
                    if length:
                        self.result.corruptions.append(f"transmit chain used with length "
                                                       f"{length}")
                elif isinstance(token, _Ctrl):
                    self._ctrl_done(token)
                elif isinstance(token, _Rx):
                    self._rx_entry(q, chain, length)

    def _ctrl_done(self, token):
        ack = self.ctx.memory.read(token.status_addr, 1)[0]
        if ack == VirtioNetCtrlAck.OK.value:
            self.stats["ctrl_ok"] += 1
        elif ack == VirtioNetCtrlAck.ERR.value:
            self.stats["ctrl_err"] += 1
            self.errors_reported += 1
        else:
            self.result.corruptions.append(f"control command {token.kind}: ack {ack:#x}")

    def _read_rx(self, token, length):
        mem = self.ctx.memory
        out, left = [], length
        for s in token.segs:
            take = min(s.len, left)
            if take:
                out.append(mem.read(s.addr, take))
            left -= take
        return b"".join(out)

    def _rx_entry(self, q, chain, length):
        if length == 0:
            self.stats["rx_returned"] += 1
            return
        if chain.token.kind == "small" or q.index in self.rx_unframed or self.unserved:
            # A buffer of 1 to 40 bytes breaks the driver's side of the contract (room for the
            # header, and for a whole frame without MRG_RXBUF): what lands in it, and where
            # the next frame starts on this queue, is not judged (where the device writes
            # still is, by the link monitor).
            self.rx_unframed.add(q.index)
            self.pending_rx.pop(q.index, None)
            self.stats["rx_unchecked"] = self.stats.get("rx_unchecked", 0) + 1
            return
        pending = self.pending_rx.get(q.index)
        data = self._read_rx(chain.token, length)
        if pending is None:
            if len(data) < self._hdr_len():
                self.result.corruptions.append(f"receive entry of {length} bytes, shorter "
                                               f"than the header")
                return
            hdr = _HDR.unpack(data[:self._hdr_len()])
            need = hdr["num_buffers"] if self.driver.has(VirtioNetF.MRG_RXBUF) else 1
            if need < 1:
                self.result.corruptions.append(f"receive header with num_buffers {need}")
                return
            pending = self.pending_rx[q.index] = [need, data[self._hdr_len():]]
        else:
            pending[1] += data
        pending[0] -= 1
        if pending[0] == 0:
            del self.pending_rx[q.index]
            self._frame_received(pending[1])

    def _frame_received(self, frame):
        self.stats["rx_frames"] += 1
        if self.sent[frame] > 0:
            self.sent[frame] -= 1
            return
        self.result.corruptions.append(f"received a frame of {len(frame)} bytes that was "
                                       f"never transmitted (dst {frame[:6].hex()})")

    def abandoned(self, q, chains):
        self.pending_rx.pop(q.index, None)
        self.rx_unframed.discard(q.index)

    def disabled(self, q):
        for chain in q.outstanding.values():
            chain.token.owed = False
        self.pending_rx.pop(q.index, None)

    owed_name = "transmit/control chains"

    def owed(self, driver):
        return [c for q in driver.queues.values() if not q.broken
                and self._role(q) in ("tx", "ctrl") for c in q.outstanding.values()
                if c.token.owed]

    async def drain(self, driver):
        await super().drain(driver)
        # Frames already sent may still be on their way back.
        await Timer(2000, "ns")
        await self.reap(driver)

    # -- recovery ---------------------------------------------------------------------------------
    async def recover(self, rng, result):
        ctx = self.ctx
        try:
            # (the device was reset just before, by FuzzContext._recover: no second reset)
            drv = VirtioNetDriver(seed=rng.getrandbits(32))
            vdev = ctx.new_vdev()
            await vdev.register()
            await vdev.probe_driver(drv)
            result.stats["bound_s"] = time.perf_counter()
            ctx.log.info("%.0f ns: bound", get_sim_time("ns"))
            await drv.open()
            ctx.log.info("%.0f ns: open", get_sim_time("ns"))
            frames = [BROADCAST + rng.randbytes(6) + b"\x88\xb5" + rng.randbytes(
                rng.choice([46, 100, 1000])) for _ in range(2)]
            for f in frames:
                await drv.send(f)
            want = list(frames)
            started = get_sim_time("ns")
            while want:
                if get_sim_time("ns") - started > 100_000:
                    raise RunFailure("recovery", f"clean driver: {len(want)} looped-back "
                                                 f"frames not received")
                try:
                    pkt = await drv.recv(timeout_ns=2000)
                except TimeoutError:
                    continue
                if pkt.frame in want:
                    want.remove(pkt.frame)
                elif self.sent[pkt.frame] > 0:
                    self.sent[pkt.frame] -= 1        # a frame of the hostile part, late
                else:
                    result.corruptions.append(f"recovery: received a frame of "
                                              f"{len(pkt.frame)} bytes never sent")
            result.stats["io_done_s"] = time.perf_counter()
            await drv.remove(vdev)
        except (LinuxBug, LinuxError) as e:
            raise RunFailure("reset" if "device_status" in str(e) else "recovery",
                             f"clean driver: {e}") from None
