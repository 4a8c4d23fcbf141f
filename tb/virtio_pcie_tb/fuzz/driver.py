# SPDX-License-Identifier: BSD-2-Clause
"""The hostile driver: a virtio-pci driver that does what Linux would never do.

:class:`HostileDriver` talks to the device through the host model's transport objects (registers
by field name: :class:`~virtio_pcie_tb.host.transport.RegisterWindow` for the modern interface,
:class:`~virtio_pcie_tb.host.legacy.VirtioPciLegacy` for the legacy one) and through raw BAR and
configuration accesses, and keeps its queues as :class:`~.rings.RawQueue` objects. Each of its
``act_*`` methods is one misbehaviour from issue 12's list; the run picks them at random
(:data:`ACTIONS`), and the device-specific workload (:mod:`.blk`, :mod:`.net`) supplies the
requests and checks their results.

The driver keeps the link monitor's grants in step with what it allows the device: a queue's used
ring from the moment it is enabled, a valid chain's writable buffers while the chain is
outstanding; everything is withdrawn when a device reset completes.
"""

import logging

from cocotb.triggers import Timer
from cocotb.utils import get_sim_time

from virtio_pcie.spec.virtio import (DeviceStatus, VirtioF, feature_dependencies,
                                     VirtioPciLegacyHeader, VIRTIO_MSI_NO_VECTOR,
                                     VIRTQ_AVAIL_ALIGN, VIRTQ_DESC_ALIGN, VIRTQ_USED_ALIGN)

from ..codec import codec
from ..models.virtq_ring import MALFORMATIONS
from .rings import RawQueue

__all__ = ["HostileDriver", "RunFailure", "RESET_BOUND_NS", "ACTIONS"]

#: After device_status is written with 0 it must read 0 within this (the engine and the device
#: wait for their DMA, which a host that never answers holds for a completion timeout).
RESET_BOUND_NS = 60_000

_S = {s.name: s.value for s in DeviceStatus}
_LEGACY = codec(VirtioPciLegacyHeader)


class RunFailure(Exception):
    """An invariant broke in a way that ends the run (a hang: the device stopped answering)."""

    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class HostileDriver:
    """One run's misbehaving driver.

    Parameters
    ----------
    ctx : :class:`~.run.FuzzContext`
        The process-wide objects (root complex, function, monitor, memory, layout).
    rng : random.Random
    workload : :class:`~.blk.BlkWorkload` or :class:`~.net.NetWorkload`
    legacy : bool
        Use the legacy I/O interface (transitional builds) instead of the modern one.
    """

    def __init__(self, ctx, rng, workload, *, legacy=False):
        self.ctx = ctx
        self.rng = rng
        self.workload = workload
        self.legacy = legacy
        self.mon = ctx.monitor
        self.log = logging.getLogger("cocotb.fuzz.driver")
        self.queues = {}              # index -> RawQueue
        self.features = 0
        self.offered = 0
        self.status = 0               # last value written (or 0 after a reset)
        self.driver_ok = False        # the device is live (DRIVER_OK accepted, no NEEDS_RESET)
        self.needs_reset = False
        self.problems = []            # (kind, message): protocol problems seen
        self.stats = {"actions": 0, "resets": 0, "needs_reset": 0, "access_errors": 0,
                      "malformed": 0}
        self.msix_enabled = False
        # The device may have stopped a queue without this driver being able to see it: a
        # legacy driver never sees DEVICE_NEEDS_RESET, and a modern one stops seeing it once
        # it has written to the legacy interface. Cleared by a device reset.
        self.opaque = False

    # -- register access ----------------------------------------------------------------------
    @property
    def common(self):
        return self.ctx.modern.common

    async def _lr(self, name):
        return await self.ctx.legacy.io.read(_LEGACY.offset(name), _LEGACY.field_size(name))

    async def _lw(self, name, value):
        await self.ctx.legacy.io.write(_LEGACY.offset(name), _LEGACY.field_size(name), value)

    async def read_status(self):
        if self.legacy:
            return await self._lr("status")
        return await self.common.read("device_status")

    async def write_status(self, value):
        if value:
            self.status = value
        if self.legacy:
            await self._lw("status", value)
        else:
            await self.common.write("device_status", value)

    async def device_reset(self, *, reason="reset"):
        """Write 0 and poll until device_status reads 0 (the reset invariant); then nothing the
        driver granted is the device's any more."""
        started = get_sim_time("ns")
        if self.legacy:
            await self._lw("status", 0)
        else:
            await self.common.write("device_status", 0)
        while True:
            value = await self.read_status()
            if value == 0:
                break
            if get_sim_time("ns") - started > RESET_BOUND_NS:
                raise RunFailure("reset", f"device_status still {value:#x} {RESET_BOUND_NS} ns "
                                          f"after a reset ({reason})")
            await Timer(self.rng.choice([100, 400, 1000]), "ns")
        self.after_reset()
        self.stats["resets"] += 1
        return get_sim_time("ns") - started

    def after_reset(self):
        """The device reset completed: forget queues, grants and negotiation."""
        self.mon.revoke_all(grace=False)
        for q in self.queues.values():
            self.workload.abandoned(q, q.abandon())
        self.queues = {}
        self.status = 0
        self.features = 0
        self.driver_ok = False
        self.needs_reset = False
        # A fault period the reset did not end keeps a legacy driver blind to a queue the
        # device stops (it has no DEVICE_NEEDS_RESET).
        self.opaque = self.legacy and self.ctx.faults.active

    def disrupted(self, *, legacy_write=False):
        """An action that may stop a queue (a fault, bus mastering off, a random write)."""
        if self.legacy or (legacy_write and not self.legacy):
            self.opaque = True

    async def check_status(self):
        """Read device_status; notice DEVICE_NEEDS_RESET or a reset the fuzz itself caused."""
        value = await self.read_status()
        if value & _S["DEVICE_NEEDS_RESET"] and not self.needs_reset:
            self.needs_reset = True
            self.driver_ok = False
            self.stats["needs_reset"] += 1
            self.workload.errors_reported += 1
        return value

    # -- bring-up -------------------------------------------------------------------------------
    async def read_features(self):
        if self.legacy:
            return await self._lr("host_features")
        features = 0
        for sel in range(self.rng.choice([2, 2, 4])):
            await self.common.write("device_feature_select", sel)
            features |= await self.common.read("device_feature") << (32 * sel)
        return features

    async def write_features(self, features):
        if self.legacy:
            await self._lw("guest_features", features & 0xFFFFFFFF)
            return
        for sel in range(4 if features >> 64 or self.rng.random() < 0.3 else 2):
            await self.common.write("driver_feature_select", sel)
            await self.common.write("driver_feature", (features >> (32 * sel)) & 0xFFFFFFFF)

    def choose_features(self, offered):
        """A subset of the offer the workload can drive, VERSION_1 included (modern)."""
        usable = offered & self.workload.usable_features(offered)
        chosen = 0
        for bit in range(64):
            if usable >> bit & 1 and self.rng.random() < 0.7:
                chosen |= 1 << bit
        chosen |= usable & self.workload.required_features(offered)
        if not self.legacy:
            chosen |= 1 << VirtioF.VERSION_1
        # Drop what lacks a feature it depends on (virtio 1.2 §6 and the device sections),
        # until nothing changes.
        all_of, any_of = feature_dependencies(self.ctx.device_type)
        changed = True
        while changed:
            changed = False
            for bit in range(64):
                if not chosen >> bit & 1:
                    continue
                if (bit in all_of and not all(chosen >> n & 1 for n in all_of[bit])) or \
                        (bit in any_of and not any(chosen >> n & 1 for n in any_of[bit])):
                    chosen &= ~(1 << bit)
                    changed = True
        return chosen

    async def bring_up(self):
        """Reset, negotiate and set up the queues, with random misbehaviour on the way. Leaves
        the device live (``driver_ok``) unless the chosen misbehaviour forbids it."""
        rng = self.rng
        await self.device_reset(reason="bring-up")
        if rng.random() < 0.1:
            # Out of order: DRIVER_OK (and FEATURES_OK) before anything else.
            await self.write_status(rng.choice([_S["DRIVER_OK"], _S["FEATURES_OK"] |
                                                _S["DRIVER_OK"], 0x7F]))
            await self.check_status()
            await self.device_reset(reason="out-of-order status")
        await self.write_status(_S["ACKNOWLEDGE"])
        await self.write_status(_S["ACKNOWLEDGE"] | _S["DRIVER"])
        self.offered = await self.read_features()
        features = self.choose_features(self.offered)
        bad = rng.random() < 0.12 and not self.legacy
        if bad:
            wrong = rng.choice(["outside", "no_version", "high"])
            if wrong == "outside":
                outside = ~self.offered & ((1 << 64) - 1)
                bits = [b for b in range(64) if outside >> b & 1]
                features |= 1 << rng.choice(bits)
            elif wrong == "no_version":
                features &= ~(1 << VirtioF.VERSION_1)
            else:
                features |= 1 << rng.randrange(64, 128)
        await self.write_features(features)
        if not self.legacy:
            await self.write_status(_S["ACKNOWLEDGE"] | _S["DRIVER"] | _S["FEATURES_OK"])
            status = await self.read_status()
            accepted = bool(status & _S["FEATURES_OK"])
            if bad and accepted:
                self.problems.append(("protocol", f"FEATURES_OK accepted for features "
                                                  f"{features:#x} (offered {self.offered:#x})"))
            if not bad and not accepted:
                self.problems.append(("protocol", f"FEATURES_OK refused for valid features "
                                                  f"{features:#x} (offered {self.offered:#x})"))
            if not accepted:
                # Carry on regardless: DRIVER_OK must not make the device live.
                await self.write_status(status | _S["DRIVER_OK"])
                await self.check_status()
                await self.device_reset(reason="refused features")
                return await self.bring_up_clean()
        self.features = features & self.offered
        await self.setup_queues()
        await self.write_status(self.status | _S["DRIVER_OK"])
        self.driver_ok = True
        self.workload.live(self)

    async def bring_up_clean(self):
        """The same without misbehaviour (after a refused negotiation)."""
        await self.write_status(_S["ACKNOWLEDGE"])
        await self.write_status(_S["ACKNOWLEDGE"] | _S["DRIVER"])
        self.offered = await self.read_features()
        features = self.choose_features(self.offered)
        await self.write_features(features)
        if not self.legacy:
            await self.write_status(_S["ACKNOWLEDGE"] | _S["DRIVER"] | _S["FEATURES_OK"])
            if not await self.read_status() & _S["FEATURES_OK"]:
                self.problems.append(("protocol", f"FEATURES_OK refused for valid features "
                                                  f"{features:#x}"))
        self.features = features & self.offered
        await self.setup_queues()
        await self.write_status(self.status | _S["DRIVER_OK"])
        self.driver_ok = True
        self.workload.live(self)

    def has(self, bit):
        return bool(self.features >> int(bit) & 1)

    # -- queues -------------------------------------------------------------------------------
    async def num_queues(self):
        if self.legacy:
            return self.ctx.queue_count
        return await self.common.read("num_queues")

    async def setup_queues(self):
        for index in self.workload.queues_wanted(self):
            await self.setup_queue(index)

    async def setup_queue(self, index, *, hostile=True):
        rng = self.rng
        if self.legacy:
            await self._lw("queue_sel", index)
            size = await self._lr("queue_num")
            if not size:
                return None
            q = RawQueue(self.ctx.memory, index=index, size=size, rng=rng, monitor=self.mon,
                         legacy=True)
            q.grant_used()
            await self._lw("queue_pfn", q.pfn)
            self.queues[index] = q
            await self._set_vector(index)
            return q
        c = self.common
        await c.write("queue_select", index)
        size_max = await c.read("queue_size")
        if not size_max:
            return None
        size = size_max
        if rng.random() < 0.7:
            size = 1 << rng.randrange(0, size_max.bit_length())
        q = RawQueue(self.ctx.memory, index=index, size=size, rng=rng, monitor=self.mon)
        desc, avail, used = q.addresses
        if hostile and rng.random() < 0.08:
            # A size that is not a power of two, or a misaligned ring: the enable is refused.
            which = rng.choice(["size", "desc", "avail", "used"])
            bad = {"size": (rng.choice([3, 5, 6, 12, size_max * 2 & 0xFFFF]), desc, avail, used),
                   "desc": (size, desc + rng.randrange(1, VIRTQ_DESC_ALIGN), avail, used),
                   "avail": (size, desc, avail + VIRTQ_AVAIL_ALIGN // 2, used),
                   "used": (size, desc, avail, used + rng.randrange(1, VIRTQ_USED_ALIGN))}[which]
            await self._write_queue(*bad)
            await c.write("queue_enable", 1)
            if await c.read("queue_enable"):
                # An invalid size write is ignored (the queue keeps a valid size); a
                # misaligned ring must be refused (virtio 1.2 §2.7, rule 74).
                actual = await c.read("queue_size")
                if which != "size":
                    self.problems.append(("protocol", f"queue {index} enabled with a bad "
                                                      f"{which}: {bad}"))
                # Whatever the device uses now, the driver gave it; the queue is unusable.
                # An invalid size is ignored, so the device's used ring can be larger than
                # the one allocated: the driver keeps the rest of it free too, or the device's
                # legitimate writes there (`avail_event`, at its end) land in buffers allocated
                # later (net seed 2026 run 138: a transmit frame's bytes 922-923 zeroed).
                from virtio_pcie.spec.virtio import virtq_used_size
                self.ctx.memory.extend(used, virtq_used_size(size),
                                       bad[3] - used + virtq_used_size(actual))
                self.mon.grant(("used", index, "bad"), bad[3], virtq_used_size(actual))
                q.broken = True
                self.queues[index] = q
                return q
        await c.write("queue_select", index)
        await self._write_queue(size, desc, avail, used)
        await self._set_vector(index)
        q.grant_used()
        await c.write("queue_select", index)
        await c.write("queue_enable", 1)
        self.queues[index] = q
        return q

    async def _write_queue(self, size, desc, avail, used):
        c = self.common
        await c.write("queue_size", size)
        await c.write("queue_desc", desc)
        await c.write("queue_driver", avail)
        await c.write("queue_device", used)

    async def _set_vector(self, index):
        vectors = self.ctx.msix_vectors
        value = self.rng.choice([VIRTIO_MSI_NO_VECTOR, self.rng.randrange(vectors),
                                 self.rng.randrange(vectors), self.rng.randrange(0x10000)])
        if self.legacy:
            if self.msix_enabled:
                await self.ctx.legacy._wv("queue_vector", value)
            return
        await self.common.write("queue_msix_vector", value)

    async def describe_queues(self):
        """The device's and the driver's view of every queue (for failure reports)."""
        out = []
        for index, q in sorted(self.queues.items()):
            mine = (f"q{index} size {q.size} desc {q.ring.desc:#x} avail {q.ring.avail:#x} "
                    f"used {q.ring.used:#x} avail_idx {q.ring.read_avail_idx()} used_idx "
                    f"{q.ring.read_used_idx()} outstanding {len(q.outstanding)} "
                    f"broken {q.broken}")
            if not self.legacy:
                c = self.common
                await c.write("queue_select", index)
                dev = {f: await c.read(f) for f in ("queue_enable", "queue_size", "queue_desc",
                                                     "queue_driver", "queue_device")}
                mine += " device " + " ".join(f"{k[6:]}={v:#x}" for k, v in dev.items())
            out.append(mine)
        return "; ".join(out)

    async def kick(self, q):
        """A doorbell for queue ``q`` (the way the interface wants it)."""
        if self.legacy:
            await self._lw("queue_notify", q.index)
        elif self.has(VirtioF.NOTIFICATION_DATA):
            # Linux writes the index it published; a broken driver anything near it, or
            # anything at all (the device must take no entry the driver did not publish).
            idx, rng = q.ring.avail_idx, self.rng
            roll = rng.random()
            if roll < 0.05:
                idx = rng.randrange(0x10000)
            elif roll < 0.15:
                idx += rng.randint(-4, 4)
            await self.ctx.notify(q.index, idx=idx & 0xFFFF)
        else:
            await self.ctx.notify(q.index)

    # -- the actions ----------------------------------------------------------------------------
    async def act_io(self):
        """Valid requests on live queues (most of the time), a doorbell each."""
        await self.workload.submit(self, self.rng.randint(1, 6))

    async def act_reap(self):
        await self.workload.reap(self)

    async def act_malformed(self):
        """A chain broken in a way the engine must refuse (checklist §1.N)."""
        live = [q for q in self.queues.values() if not q.broken]
        if not live:
            return
        q = self.rng.choice(live)
        kind = self.rng.choice(list(MALFORMATIONS) + ["avail_jump", "huge_head", "free_head"])
        if kind == "avail_jump":
            q.bump_avail_idx(q.size + self.rng.randrange(1, 0x8000))
            q.broken = True
        elif kind == "huge_head":
            q.add_raw_head(self.rng.randrange(q.size, 0x10000))
            q.publish()
            q.broken = True
        elif kind == "free_head":
            # A head that is not the start of a published chain: its descriptor is whatever
            # the table holds (zeros, or a stale chain): valid or not, it must stay inside.
            free = list(q.alloc.free)
            if not free:
                return
            q.add_raw_head(self.rng.choice(free))
            q.publish()
            q.broken = True
        else:
            ok = q.add_malformed(kind, max_chain=self.ctx.max_chain,
                                 max_indirect=self.ctx.max_indirect)
            if not ok:
                return
            q.publish()
        self.stats["malformed"] += 1
        self.log.info("  q%d: malformed chain (%s, head %s)", q.index, kind,
                      getattr(q, "malformed_head", None))
        self.disrupted()
        await self.kick(q)

    async def act_doorbell(self):
        """Doorbells for disabled, non-existent or random queues, or garbage in the region."""
        rng = self.rng
        index = rng.choice([rng.randrange(0x10000), self.ctx.queue_count,
                            rng.randrange(self.ctx.queue_count + 4)])
        if self.legacy or rng.random() < 0.2:
            if self.ctx.legacy is not None:
                self.disrupted(legacy_write=True)
                await self._lw("queue_notify", index)
                return
        await self.ctx.notify(index, raw=rng.random() < 0.5)

    async def act_mmio(self):
        """A random read or write in a BAR: any size (0 to 8 bytes, sometimes 16), any offset."""
        legacy_write = await self.ctx.random_mmio(self.rng)
        self.disrupted(legacy_write=legacy_write)
        await self.resync()

    async def act_config(self):
        """A random configuration access (the virtio PCI_CFG window included)."""
        self.disrupted()
        if await self.ctx.random_config(self.rng):
            # Through the window into the legacy I/O BAR: from now on a queue the device stops
            # shows no DEVICE_NEEDS_RESET (net seed 801 run 6920).
            self.disrupted(legacy_write=True)
        await self.resync()

    async def act_device_config(self):
        await self.ctx.random_device_config(self.rng)

    async def act_reset(self):
        """Device reset in the middle of I/O, then set up again (most of the time)."""
        await self.device_reset(reason="mid-I/O")
        if self.rng.random() < 0.85:
            await self.bring_up()

    async def act_queue_disable(self):
        """Legacy interface: QUEUE_PFN = 0 under I/O, then (often) a new ring for the queue."""
        if not self.legacy or not self.queues:
            return
        q = self.rng.choice(list(self.queues.values()))
        await self._lw("queue_sel", q.index)
        await self._lw("queue_pfn", 0)
        # The old ring's used area is no longer the device's (after what is in flight).
        q.revoke_used()
        self.workload.disabled(q)
        if self.rng.random() < 0.7:
            await Timer(self.rng.choice([1, 50, 500, 3000]), "ns")
            new = RawQueue(self.ctx.memory, index=q.index, size=q.size, rng=self.rng,
                           monitor=self.mon, legacy=True)
            new.grant_used()
            await self._lw("queue_sel", q.index)
            await self._lw("queue_pfn", new.pfn)
            if await self._lr("queue_pfn") != new.pfn:
                # The device refused the new ring (it does once DRIVER_OK is set, as it
                # refuses queue_enable then): nothing on it is owed.
                new.broken = True
                self.stats["refused_rings"] = self.stats.get("refused_rings", 0) + 1
            # Chains of the old ring keep their buffers (the device may finish them) but can
            # never be completed into the new ring.
            self.workload.replaced(q, new)
            self.queues[q.index] = new
            self.log.info("  q%d: QUEUE_PFN 0, then a new ring (%s)", q.index,
                          "refused" if new.broken else "accepted")
        else:
            del self.queues[q.index]
            self.log.info("  q%d: QUEUE_PFN 0", q.index)

    async def act_msix(self):
        """MSI-X masked and unmasked at random: entries, the function mask, the enable bit."""
        await self.ctx.random_msix(self.rng, self)

    async def act_bus_master(self):
        """Bus mastering cleared in the middle of a transfer, set again later."""
        self.disrupted()
        await self.ctx.set_bus_master(False)
        await Timer(self.rng.choice([100, 1000, 4000]), "ns")
        await self.workload.poll_quiet(self)
        await self.ctx.set_bus_master(True)

    async def act_faults(self):
        """Host memory that answers UR, CA, poisoned, or not at all, for a while."""
        self.disrupted()
        self.ctx.faults.start(self.rng)

    async def act_wait(self):
        await Timer(self.rng.choice([50, 200, 1000, 3000]), "ns")

    async def act_status_poke(self):
        """Status written out of order on a live device (bits cleared, FAILED, NEEDS_RESET)."""
        value = self.rng.choice([_S["ACKNOWLEDGE"], _S["FAILED"] | self.status,
                                 _S["DEVICE_NEEDS_RESET"] | self.status, 0xFF, self.status & 3,
                                 _S["FEATURES_OK"] | self.status])
        self.disrupted()
        self.log.info("  device_status written %#x", value)
        await self.write_status(value)
        status = await self.check_status()
        if status & _S["FAILED"]:
            self.driver_ok = False
        if self.driver_ok and not status & _S["DRIVER_OK"]:
            self.problems.append(("protocol", f"device_status {status:#x} lost DRIVER_OK "
                                              f"after a write of {value:#x}"))

    async def resync(self):
        """After a random access: did it reset the device, or enable a queue?"""
        status = await self.check_status()
        if status == 0 and self.status:
            # A random write reset the device (it reads 0: the reset is complete).
            self.after_reset()
            self.stats["resets"] += 1
            return
        if self.legacy:
            return
        # Grant the used ring of any queue a random write may have enabled (whatever the
        # registers say: the driver wrote them).
        for index in range(self.ctx.queue_count):
            if index in self.queues:
                continue
            await self.common.write("queue_select", index)
            if await self.common.read("queue_enable"):
                used = await self.common.read("queue_device")
                size = await self.common.read("queue_size")
                from virtio_pcie.spec.virtio import virtq_used_size
                self.mon.grant(("used", index, "random"), used, virtq_used_size(max(size, 1)))

    async def tidy(self):
        """End of the hostile part: host memory healthy, bus mastering on, used rings read."""
        self.ctx.faults.stop()
        await self.ctx.set_bus_master(True)
        try:
            await self.workload.drain(self)
        except Exception as e:     # noqa: BLE001
            if str(e) not in ("Timeout", "Unsuccessful completion"):
                raise
            # The function refuses register accesses (a random configuration write put it
            # in D3hot, say): nothing can be drained; the recovery repairs the function.
            self.stats["access_errors"] += 1


#: Actions and their weights (a run scales them by its own mood).
ACTIONS = {
    "io":            30,
    "reap":          20,
    "malformed":     3,
    "doorbell":      4,
    "mmio":          6,
    "config":        4,
    "device_config": 2,
    "reset":         3,
    "queue_disable": 2,
    "msix":          4,
    "bus_master":    3,
    "faults":        4,
    "wait":          6,
    "status_poke":   1,
}
