# SPDX-License-Identifier: BSD-2-Clause
"""The split virtqueue engine against its reference model.

::

    VirtqTransport ══ control, restore ══╗        ╔══ request[p], completion ══ VirtqDevicePorts
                                  ┌──────╨────────╨──┐                        (device model:
                                  │ VirtqueueEngine  │                         completes in and
                                  └────────╥─────────┘                         out of order)
                                           ║ dma
                                   DmaClientModel ── DmaMemory ── SplitRing (ring builder)
                                                                      │
                                               VirtqueueModel ◄───────┘ (expected chains,
                                                                          errors, used ring,
                                                                          interrupts, DMA audit)
"""

import collections
import os
import random

import cocotb
import pytest
from cocotb.triggers import ClockCycles

from virtio_pcie.dma.interface import DmaError
from virtio_pcie.spec.virtio import (VirtqDescFlags, virtq_desc_size,
                                     virtq_used_event_offset, vring_need_event)
from virtio_pcie.virtio.engine_signatures import VirtqErrorCode
from virtio_pcie.virtio.virtqueue import VirtqueueEngine
from virtio_pcie_tb import harness
from virtio_pcie_tb.bench.notify import BENCH_PARAMS, notify_bench
from virtio_pcie_tb.models.virtq_ring import (MALFORMATIONS, DescAllocator, pack_desc,
                                               random_chain)
from virtio_pcie_tb.virtq_scenario import QueuePlan, Scenario, random_pauses, random_scenario
from virtio_pcie_tb.virtq_tb import CLOCK_NS, EngineTB


def chain_keys(chains):
    return [c.key() for c in chains]


def expected_key(queue, head, segs):
    return (queue, head, tuple((b.addr, b.len, b.write) for b in segs))


@cocotb.test()
async def run_basic(dut):
    """A few chains of every kind on one queue, completed in order."""
    rng = random.Random(1)
    tb = EngineTB(dut, seed=1)
    await tb.reset()
    tb.transport.set_features(event_idx=False, indirect_desc=True)
    q = tb.pushed_queues()[0]
    ring = tb.new_ring(16)
    alloc = DescAllocator(16, rng, shuffle=False)
    expected = []
    for kind in ("direct", "indirect", "mixed", "direct", "indirect"):
        head, segs = random_chain(ring, rng, alloc, indirect_ok=True, max_descs=8, kind=kind)
        ring.add(head)
        expected.append(expected_key(q, head, segs))
    await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    port = tb.port_of_queue[q]
    await tb.wait_quiet(until=lambda: len(tb.device.chains[port]) >= len(expected))
    got = chain_keys(tb.device.chains[port])
    assert got == expected, f"\n{got}\n!=\n{expected}"
    assert not tb.device.errors, tb.device.errors
    for i, c in enumerate(tb.device.chains[port]):
        tb.device.complete(q, c.head, 10 * i)
    await tb.wait_quiet()
    assert ring.read_used_idx() == len(expected)
    for i, c in enumerate(tb.device.chains[port]):
        assert ring.read_used_elem(i) == (c.head, 10 * i)
    assert tb.transport.irqs, "no interrupt"
    counters = tb.transport.counters()
    assert counters["completed"] == len(expected)
    assert counters["errors"] == 0
    assert tb.transport.last_error()[0] == VirtqErrorCode.NONE


@cocotb.test()
async def run_random(dut):
    """Randomized equivalence with the reference model over many ring states."""
    count = int(os.environ.get("VQ_SCENARIOS", "150"))
    seed = int(os.environ.get("VQ_SEED", "1"))
    tb = EngineTB(dut, seed=seed)
    await tb.reset()
    stats = collections.Counter()
    first = int(os.environ.get("VQ_FIRST", "0"))
    for i in range(first, count):
        rng = random.Random(seed * 100003 + i)
        tb.dma.rng = random.Random(rng.random())       # each scenario reproducible alone
        tb.dma.read_latency = rng.choice([(4, 10), (20, 60), (60, 200)])
        tb.dma.reorder = rng.random() < 0.7
        tb.dma.status_with_last_beat = rng.choice([0, 0.5, 1])
        tb.dma.set_backpressure(rd=random_pauses(rng.random(), 0.3) if rng.random() < 0.3
                                else None,
                                wr=random_pauses(rng.random(), 0.3) if rng.random() < 0.3
                                else None)
        scenario = random_scenario(tb, rng)
        try:
            await scenario.run()
        except Exception as e:
            raise AssertionError(f"scenario {i} (seed {seed}): {e}\n{describe(scenario)}") \
                from e
        stats["scenarios"] += 1
        stats["event_idx"] += scenario.event_idx
        for p in scenario.plans:
            stats["queues"] += 1
            stats["chains"] += len(p.expected)
            stats["segments"] += sum(len(k[2]) for k in p.expected)
            stats["completions"] += len(p.completions)
            stats["pulled queues"] += p.pulled
            stats["wrapped"] += (p.start + p.published) > 0xFFFF
            if p.error:
                stats[f"error {p.error}"] += 1
    stats["interrupts"] = tb.transport.counters()["interrupts"]
    dut._log.info("random scenarios: %s", dict(sorted(stats.items())))


FAULTS = list(MALFORMATIONS) + ["avail_idx", "dma_table", "indirect_feature"]


@cocotb.test()
async def run_malformed(dut):
    """Every malformation of checklist §1.N: the valid chains before it are presented, the bad
    one and everything after are not, the queue stops (a later doorbell does nothing), the
    error is reported with its code and needs_reset is raised."""
    tb = EngineTB(dut, seed=2)
    await tb.reset()
    q = tb.pushed_queues()[-1]
    for n, fault in enumerate(FAULTS):
        rng = random.Random(1000 + n)
        plan = QueuePlan(q, 16, start=rng.choice([0, 0xFFFE]), chains=[3, 2], fault=fault,
                         fault_phase=0, fault_at=2)
        scenario = Scenario(tb, rng, [plan], event_idx=rng.random() < 0.5,
                            indirect_desc=fault != "indirect_feature", phases=2)
        await scenario.run()
        want = "DMA" if fault == "dma_table" else ("AVAIL_IDX" if fault == "avail_idx" else
                                                    "INDIRECT_FEATURE" if fault ==
                                                    "indirect_feature" else MALFORMATIONS[fault])
        assert plan.error == want, (fault, plan.error)
        assert len(plan.received) == (0 if fault == "avail_idx" else 2), fault
        assert tb.transport.last_error() == (VirtqErrorCode[want], q)
        # Stopped: new valid work and a doorbell cause no DMA at all.
        reads = len(tb.dma.log)
        head, _ = random_chain(plan.ring, rng, DescAllocator(16, rng), indirect_ok=False,
                               max_descs=4)
        plan.ring.add(head)
        tb.transport.notify(q)
        await ClockCycles(dut.clk, 300)
        assert len(tb.dma.log) == reads, f"{fault}: DMA after the queue stopped"
        assert len(plan.received) == (0 if fault == "avail_idx" else 2)


def dma_fault(case, ring):
    """A predicate (kind, request) -> bool selecting the DMA request of ``ring`` to fail."""
    if case == "avail_idx":
        return lambda k, r: k == "rd" and r["host_addr"] == ring.avail_flags_addr
    if case == "desc":
        return lambda k, r: k == "rd" and ring.desc <= r["host_addr"] < ring.desc_region[1]
    if case == "used_idx":
        return lambda k, r: k == "wr" and r["host_addr"] == ring.used_idx_addr
    return lambda k, r: k == "rd" and r["host_addr"] == ring.used_event_addr


@cocotb.test()
async def run_dma_errors(dut):
    """DMA errors on avail->idx, the descriptor table, used->idx and used_event: the queue stops
    with a DMA error and needs_reset, nothing hangs; a failed used_event read still notifies."""
    tb = EngineTB(dut, seed=3)
    await tb.reset()
    q = tb.pushed_queues()[0]
    cases = ["avail_idx", "desc", "used_idx", "used_event"]
    for case in cases:
        rng = random.Random(case)
        await tb.transport.device_reset()
        tb.transport.set_features(event_idx=True, indirect_desc=True)
        ring = tb.new_ring(8)
        alloc = DescAllocator(8, rng)
        heads = []
        for _ in range(3):
            head, _ = random_chain(ring, rng, alloc, indirect_ok=False, max_descs=3)
            ring.add(head)
            heads.append(head)
        ring.write_used_event(0)
        target = dma_fault(case, ring)
        tb.dma.error_hook = lambda k, r, t=target: DmaError.UNSUPPORTED_REQUEST if t(k, r) \
            else None
        errors = tb.transport.counters()["errors"]
        needs = tb.transport.needs_reset_events
        irqs = len(tb.transport.irqs)
        chains = []
        tb.device.on_chain = chains.append
        await tb.enable(q, ring)
        tb.transport.set_driver_ok()
        await tb.wait_quiet()
        for c in chains:
            tb.device.complete(q, c.head, 0)
        await tb.wait_quiet()
        tb.device.on_chain = None
        tb.dma.error_hook = None
        assert tb.transport.counters()["errors"] == errors + 1, case
        assert tb.transport.needs_reset_events > needs, case
        assert tb.transport.last_error() == (VirtqErrorCode.DMA, q), case
        if case in ("avail_idx", "desc"):
            assert not chains, case
        else:
            assert len(chains) == 3, case
        if case == "used_event":
            assert len(tb.transport.irqs) > irqs, "no interrupt after a failed used_event read"


@cocotb.test()
async def run_used_elem_dropped(dut):
    """Issue 12, net seed 501 run 132: used elements whose writes the DMA engine dropped (Bus
    Master Enable cleared while they were on their way, set again before the index write) are
    never published: ``used->idx`` is written only once the elements' write statuses are back
    without error. A batch of four wrapping past the ring's end (two element writes) with its
    first part, its second part or both dropped: no index write at all, the queue stops with
    a DMA error and needs_reset; after a device reset the same batch with nothing dropped is
    published whole."""
    tb = EngineTB(dut, seed=13)
    await tb.reset()
    q = tb.pushed_queues()[3]
    for case in ("second", "first", "both", "none"):
        rng = random.Random(case)
        await tb.transport.device_reset()
        tb.transport.set_features(event_idx=False, indirect_desc=True)
        ring = tb.new_ring(8, start=6)          # slots 6, 7 | 0, 1: two element writes
        alloc = DescAllocator(8, rng)
        for _ in range(5):
            ring.add(random_chain(ring, rng, alloc, indirect_ok=False, max_descs=2)[0])
        dropped_at = {"second": [ring.used_elem_addr(0)], "first": [ring.used_elem_addr(6)],
                      "both": [ring.used_elem_addr(0), ring.used_elem_addr(6)],
                      "none": []}[case]
        # The DMA engine's answer to a write it did not send because Bus Master Enable was
        # clear; every other write (the index write too) goes out as if BME were set again.
        tb.dma.error_hook = lambda k, r, at=dropped_at: (
            DmaError.BUS_MASTER_DISABLED if k == "wr" and r["host_addr"] in at else None)
        chains = []
        tb.device.on_chain = chains.append
        await tb.enable(q, ring)
        tb.transport.set_driver_ok()
        await tb.wait_quiet(until=lambda c=chains: len(c) == 5)
        late = chains.pop()
        errors = tb.transport.counters()["errors"]
        needs = tb.transport.needs_reset_events
        irqs = len(tb.transport.irqs)
        log_from = len(tb.dma.log)
        for i, c in enumerate(chains):            # one batch, whatever the timing
            tb.device.complete(q, c.head, 10 + i, batch_end=i == 3)
        await tb.wait_quiet()
        tb.dma.error_hook = None
        tb.device.on_chain = None
        writes = [a for a in tb.dma.log[log_from:] if a.kind == "wr"]
        elem_writes = [a.host_addr for a in writes if a.host_addr != ring.used_idx_addr]
        assert sorted(elem_writes) == [ring.used_elem_addr(0), ring.used_elem_addr(6)], \
            (case, elem_writes)
        idx_writes = [a for a in writes if a.host_addr == ring.used_idx_addr]
        if case == "none":
            assert [int.from_bytes(a.data, "little") for a in idx_writes] == [10], idx_writes
            assert ring.read_used_idx() == 10
            for i, c in enumerate(chains):
                assert ring.read_used_elem(6 + i) == (c.head, 10 + i)
            assert tb.transport.counters()["errors"] == errors
            assert len(tb.transport.irqs) > irqs, "no interrupt"
            continue
        assert not idx_writes, f"{case}: used->idx written over dropped elements"
        assert ring.read_used_idx() == 6, case
        assert tb.transport.counters()["errors"] == errors + 1, case
        assert tb.transport.needs_reset_events > needs, case
        assert tb.transport.last_error() == (VirtqErrorCode.DMA, q), case
        assert len(tb.transport.irqs) == irqs, f"{case}: interrupt for an unpublished batch"
        # A chain completed after the error is published in the first unpublished slot, not
        # behind the lost elements (fuzz blk seed 600 run 108).
        tb.device.complete(q, late.head, 99)
        await tb.wait_quiet()
        assert ring.read_used_idx() in (6, 7), (case, ring.read_used_idx())
        if ring.read_used_idx() == 7:
            assert ring.read_used_elem(6) == (late.head, 99), case


@cocotb.test()
async def run_event_idx_race(dut):
    """VIRTIO_F_EVENT_IDX re-check (checklist rule 95): a chain published without a kick while
    the engine is writing avail_event (the driver saw the old avail_event) is still taken,
    because avail->idx is read again after the write; and the driver is told to kick at the
    right index."""
    tb = EngineTB(dut, seed=4)
    await tb.reset()
    rng = random.Random(4)
    q = tb.pushed_queues()[1]
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    ring = tb.new_ring(32, start=0xFFFD)
    alloc = DescAllocator(32, rng)
    for _ in range(2):
        ring.add(random_chain(ring, rng, alloc, indirect_ok=True, max_descs=4)[0])
    late = []

    def hook(kind, req):
        if kind == "wr" and req["host_addr"] == ring.avail_event_addr and not late:
            # The driver publishes now and, reading the old avail_event, does not kick.
            head = random_chain(ring, rng, alloc, indirect_ok=True, max_descs=4)[0]
            ring.add(head)
            late.append(head)
        return None
    tb.dma.error_hook = hook
    await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    port = tb.port_of_queue[q]
    await tb.wait_quiet(until=lambda: len(tb.device.chains[port]) >= 3)
    assert late, "the engine never wrote avail_event"
    assert [c.head for c in tb.device.chains[port]][-1] == late[0]
    assert tb.transport.counters()["doorbells"] == 0
    assert ring.read_avail_event() == (0xFFFD + 3) & 0xFFFF
    # A kick decision by the driver now says "kick" for the next buffer.
    assert vring_need_event(ring.read_avail_event(), (ring.avail_idx + 1) & 0xFFFF,
                            ring.avail_idx)


@cocotb.test()
async def run_batching(dut):
    """Used ring batching: entries with batch_end clear are published together with the next
    one that has it; completions arriving back to back share one element write and one index
    update; a batch that wraps past the ring's end is written in two parts."""
    tb = EngineTB(dut, seed=5)
    await tb.reset()
    rng = random.Random(5)
    q = tb.pushed_queues()[2]
    tb.transport.set_features(event_idx=False, indirect_desc=True)
    ring = tb.new_ring(8, start=0x1234 + 5)     # slot 5 of 8: a batch of 6 wraps
    alloc = DescAllocator(8, rng)
    for _ in range(8):
        ring.add(random_chain(ring, rng, alloc, indirect_ok=True, max_descs=1,
                              kind="direct")[0])
    chains = []
    tb.device.on_chain = chains.append
    await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    await tb.wait_quiet(until=lambda: len(chains) == 8)
    idx_writes = lambda: [int.from_bytes(a.data, "little") for a in tb.dma.log
                          if a.kind == "wr" and a.host_addr == ring.used_idx_addr]
    # 1. a batch of three, spread out in time: one used->idx update at its end
    for i, c in enumerate(chains[:2]):
        tb.device.complete(q, c.head, i, batch_end=False)
        await ClockCycles(dut.clk, 100)
    assert idx_writes() == [], "used->idx written inside a batch"
    tb.device.complete(q, chains[2].head, 2, batch_end=True)
    await tb.wait_quiet()
    assert idx_writes() == [(ring.start + 3) & 0xFFFF]
    # 2. five completions back to back, wrapping (slots 0-4 after 3 used from slot 5)
    before = tb.transport.counters()
    for i, c in enumerate(chains[3:]):
        tb.device.complete(q, c.head, 100 + i)
    await tb.wait_quiet()
    after = tb.transport.counters()
    assert after["idx_writes"] - before["idx_writes"] < 5
    assert after["used_writes"] - before["used_writes"] < 5
    assert ring.read_used_idx() == (ring.start + 8) & 0xFFFF
    for i, c in enumerate(chains):
        assert ring.read_used_elem(ring.start + i) == (c.head, i if i < 3 else 97 + i)
    tb.device.on_chain = None


class _HeldIrqs:
    """The set-up of the interrupt moderation tests: pushed queues (``queues``, a slice of
    :meth:`EngineTB.pushed_queues`) with 64-entry rings, interrupt moderation (``holdoff``
    cycles, ``low_water`` chains), EVENT_IDX as ``event_idx`` (with it, each ring's
    ``used_event`` is 0 from the start), the driver OK; :meth:`add` posts chains and waits for
    the device to have them, :meth:`complete` completes the oldest ones, :meth:`irqs` lists a
    queue's interrupts."""

    @classmethod
    async def start(cls, dut, *, seed, queues, holdoff, low_water, event_idx):
        self = cls()
        self.dut = dut
        self.event_idx = event_idx
        self.tb = tb = EngineTB(dut, seed=seed, read_latency=(20, 30))
        await tb.reset()
        self.rng = random.Random(seed)
        tr = tb.transport
        tr.set_irq_holdoff(holdoff, low_water=low_water)
        tr.set_features(event_idx=event_idx, indirect_desc=True)
        self.rings = {q: tb.new_ring(64) for q in tb.pushed_queues()[queues]}
        self.allocs = {q: DescAllocator(64, self.rng) for q in self.rings}
        self.chains = {q: [] for q in self.rings}
        self.done = {q: 0 for q in self.rings}
        tb.device.on_chain = lambda c: self.chains[c.queue].append(c)
        for q, ring in self.rings.items():
            if event_idx:
                ring.write_used_event(0)
            await tb.enable(q, ring)
        tr.set_driver_ok()
        return self

    async def add(self, q, n):
        ring, chains = self.rings[q], self.chains[q]
        for _ in range(n):
            ring.add(random_chain(ring, self.rng, self.allocs[q], indirect_ok=True,
                                  max_descs=3)[0])
        want = len(chains) + n
        self.tb.transport.notify(q)
        await self.tb.wait_quiet(until=lambda: len(chains) == want)

    async def complete(self, q, n, settle=300):
        done = self.done[q]
        for c in self.chains[q][done:done + n]:
            self.tb.device.complete(q, c.head, 0)
        self.done[q] += n
        await ClockCycles(self.dut.clk, settle)

    def irqs(self, q):
        return [t for t, iq in self.tb.transport.irqs if iq == q]


@cocotb.test()
async def run_irq_moderation(dut):
    """Adaptive interrupt moderation, per queue: a notification due while the device has more
    than irq_low_water chains of the queue in hand is held (entries are published at once) and
    merges with later ones; it goes out as soon as the queue runs dry (at the low-water mark),
    or after irq_holdoff cycles; a queue with little in hand is not held, unless the refill
    its last interrupt asked for is still to come; a held notification gives its place to
    another queue's (it goes out then) and never delays another queue's unheld one; a queue
    reset or a device reset drops it."""
    H, LW = 4000, 2
    # without EVENT_IDX and with NO_INTERRUPT clear, every publication is due
    held = await _HeldIrqs.start(dut, seed=11, queues=slice(9, 12), holdoff=H, low_water=LW,
                                 event_idx=False)
    tb, tr, rings = held.tb, held.tb.transport, held.rings
    add, complete, irqs = held.add, held.complete, held.irqs
    qa, qb, qc = rings
    from cocotb.utils import get_sim_time

    def idx_time(q, value):
        return next(a.done_ns for a in tb.dma.log if a.kind == "wr" and
                    a.host_addr == rings[q].used_idx_addr and
                    int.from_bytes(a.data, "little") == value)
    prompt = 200 * CLOCK_NS
    # (a) nothing else in hand: not held
    await add(qa, 1)
    await complete(qa, 1)
    assert len(irqs(qa)) == 1 and irqs(qa)[0] - idx_time(qa, 1) < prompt
    # (b) six in hand: held while more than two remain, merged, released at the low water
    await add(qa, 6)
    await complete(qa, 1)                      # 5 in hand
    assert len(irqs(qa)) == 1, "notification not held with 5 chains in hand"
    assert rings[qa].read_used_idx() == 2, "entries not published while held"
    await complete(qa, 2)                      # 3 in hand
    assert len(irqs(qa)) == 1
    await complete(qa, 1)                      # 2 in hand: running dry
    assert len(irqs(qa)) == 2, "held notification not released at the low-water mark"
    assert irqs(qa)[1] - idx_time(qa, 5) < prompt
    # (b2) that interrupt covered four entries: their refill is expected, so the next
    # notification waits for it although only one chain is in hand; with the refill in hand it
    # waits for the low-water mark again
    await complete(qa, 1)                      # 1 in hand, 4 chains expected
    assert len(irqs(qa)) == 2, "notification not held while the refill was expected"
    await add(qa, 4)                           # 5 in hand
    assert len(irqs(qa)) == 2
    await complete(qa, 3)                      # 2 in hand, nothing expected: running dry
    assert len(irqs(qa)) == 3 and irqs(qa)[2] - idx_time(qa, 9) < prompt
    # (c) the cap; another queue with nothing in hand is notified at once meanwhile
    await add(qa, 4)                           # 6 in hand
    await complete(qa, 1)                      # 5: held
    t_held = idx_time(qa, 10)
    await add(qb, 1)
    await complete(qb, 1)
    assert len(irqs(qb)) == 1 and irqs(qb)[0] - idx_time(qb, 1) < prompt
    assert len(irqs(qa)) == 3, "held notification released by another queue's"
    await ClockCycles(dut.clk, H)
    assert len(irqs(qa)) == 4, "held notification not released at irq_holdoff"
    assert H * CLOCK_NS <= irqs(qa)[3] - t_held <= (H + 100) * CLOCK_NS
    # (d) another queue's held notification takes the place: the held one goes now
    await complete(qa, 1)                      # 4 in hand: held
    assert len(irqs(qa)) == 4
    await add(qc, 5)
    await complete(qc, 1)                      # qc: 4 in hand, needs the place
    assert len(irqs(qa)) == 5 and irqs(qa)[4] - idx_time(qc, 1) < prompt
    assert not irqs(qc)
    # ... and a queue reset drops qc's hold
    await tr.queue_reset(qc)
    await ClockCycles(dut.clk, H + 200)
    assert not irqs(qc), "a reset queue's held notification was sent"
    # (e) a device reset drops a hold
    await complete(qa, 1)                      # 3 in hand: held
    assert len(irqs(qa)) == 5
    n = len(tr.irqs)
    await tr.device_reset()
    await ClockCycles(dut.clk, H + 200)
    assert len(tr.irqs) == n, "a held notification was sent after a device reset"
    assert get_sim_time("ns") > 0
    tb.device.on_chain = None


@cocotb.test()
async def run_irq_refill_early_commits(dut):
    """A refill the driver has already resubmitted, and the engine committed, is not expected
    again: the driver re-arms and resubmits after each interrupt, the engine commits the refill
    at once but sees the re-arm only at its next used_event read, and the notification that
    read releases is not held for those chains. (A refill balance that, at each interrupt,
    dropped the chains committed before their reaping was seen but kept counting the reaping
    expected a little more at every interrupt, and held notifications until the queue ran dry:
    4 KiB QD 8 at 64 bits, L = 1 us, 71.7 % of the data path, 0.25 interrupts per request.)"""
    H, LW = 20000, 4
    held = await _HeldIrqs.start(dut, seed=23, queues=slice(18, 19), holdoff=H, low_water=LW,
                                 event_idx=True)
    add, complete, irqs = held.add, held.complete, held.irqs
    (q,) = held.rings
    ring = held.rings[q]
    await add(q, 5)
    await complete(q, 1)                       # 4 in hand: not above the mark, sent
    assert len(irqs(q)) == 1
    # the handler takes entry 0 and re-arms after it, then the driver resubmits it
    ring.write_used_event(1)
    await add(q, 1)                            # committed before the reaping is counted
    await complete(q, 1)                       # 4 in hand, nothing still to come: sent
    assert len(irqs(q)) == 2
    # the handler takes entry 1 and re-arms; its resubmission is still to come: with 4 in
    # hand and 1 covered at that interrupt (above the mark), the next notification waits for
    # it (run_irq_refill_gate), then goes with nothing more expected
    ring.write_used_event(2)
    await complete(q, 1)                       # 3 in hand + 1 expected
    assert len(irqs(q)) == 2
    await add(q, 1)                            # 4 in hand, nothing still to come: sent
    assert len(irqs(q)) == 3, "held for a refill the driver had already committed"
    assert ring.read_used_idx() == 3
    held.tb.device.on_chain = None


async def _refill_short_of_mark(held, q):
    """Low-water mark 2: an interrupt covering 4 with 2 in hand, then (the driver re-arming
    after it, with EVENT_IDX) 3 of its 4 refilled chains and completions down to 1 in hand + 1
    expected, at the mark. Checks the one interrupt before the last step; the caller checks
    what that step did."""
    add, complete, irqs = held.add, held.complete, held.irqs
    ring = held.rings[q]
    await add(q, 6)
    await complete(q, 1)                       # 5 in hand: held
    await complete(q, 3)                       # 2 in hand: released, covering 4
    assert len(irqs(q)) == 1
    if held.event_idx:
        ring.write_used_event(ring.read_used_idx())
    await complete(q, 1)                       # 1 in hand + 4 expected: held
    await add(q, 3)                            # 4 in hand + 1 expected
    await complete(q, 2)                       # 2 + 1: held
    assert len(irqs(q)) == 1
    await complete(q, 1)                       # 1 + 1: at the mark


@cocotb.test()
async def run_irq_refill_gate(dut):
    """With EVENT_IDX, after an interrupt that covered n entries while the queue had more than
    irq_low_water chains in hand counting them (the mark would have held it), the next
    notification waits for the whole refill of n chains, even when the chains in hand and the
    refill still expected fall to the mark: the driver's handler reaps more than the interrupt
    covered, so its refill comes late and large, and a notification released on the mark before
    it came would cover only the completions since the last one (at the 256-bit data path the
    batches stayed at half the size the mark allows: 0.096 interrupts per request at mark 18).
    A queue kept shallower is not held for its refill. The driver re-arms after each interrupt
    (used_event = its last used index, as virtqueue_enable_cb writes it)."""
    H, LW = 20000, 2
    held = await _HeldIrqs.start(dut, seed=31, queues=slice(20, 22), holdoff=H, low_water=LW,
                                 event_idx=True)
    add, complete, irqs = held.add, held.complete, held.irqs
    q, q2 = held.rings
    ring, ring2 = held.rings[q], held.rings[q2]
    await _refill_short_of_mark(held, q)
    assert len(irqs(q)) == 1, "released on the mark before the refill had arrived"
    await add(q, 1)                            # 2 in hand, the refill complete: released
    assert len(irqs(q)) == 2, "not released when the refill arrived"
    assert ring.read_used_idx() == 8
    # shallow (mark 3, another queue): an interrupt covering 1 with 2 in hand, not above the
    # mark, sets no such wait: the next notification goes at once with 1 in hand + 1 expected
    held.tb.transport.set_irq_holdoff(H, low_water=3)
    await add(q2, 3)
    await complete(q2, 1)                      # 2 in hand: sent
    assert len(irqs(q2)) == 1
    ring2.write_used_event(ring2.read_used_idx())
    await complete(q2, 1)                      # 1 in hand + 1 expected: sent
    assert len(irqs(q2)) == 2, "a shallow queue held for its refill"
    held.tb.device.on_chain = None


@cocotb.test()
async def run_irq_refill_gate_flags(dut):
    """Without EVENT_IDX the refill gate is off: the covered entries there include those the
    driver's handler took while it polled with NO_INTERRUPT set, whose refill has already come,
    and waiting for them too ran the queue dry (notify bench, flags only, 128 bits: 98.1 ->
    90.6 % of the data path). The sequence of run_irq_refill_gate: at the mark with part of the
    refill still to come, the notification goes."""
    held = await _HeldIrqs.start(dut, seed=32, queues=slice(22, 23), holdoff=20000,
                                 low_water=2, event_idx=False)
    (q,) = held.rings
    await _refill_short_of_mark(held, q)
    assert len(held.irqs(q)) == 2, "held for the refill without EVENT_IDX"
    held.tb.device.on_chain = None


@cocotb.test()
async def run_irq_shadowed(dut):
    """A held notification after which a message went out for another queue (with a vector
    shared by both, or INTx, the driver's handler then took the held entries too) is decided
    again before it goes: used_event is read once more and, if the driver has moved it past
    every entry the hold covers, nothing is sent (that message would find no work: Linux
    counts it as unhandled). If the driver has not taken them, it is sent."""
    H, LW = 3000, 2
    held = await _HeldIrqs.start(dut, seed=17, queues=slice(14, 16), holdoff=H, low_water=LW,
                                 event_idx=True)
    tb, rings = held.tb, held.rings
    add, complete, irqs = held.add, held.complete, held.irqs
    qa, qb = rings

    def event_reads(q):
        return [a for a in tb.dma.log if a.kind == "rd" and
                a.host_addr == rings[q].used_event_addr]
    await add(qa, 6)
    await add(qb, 2)
    # (a) qa's notification is held; qb's goes out; the driver's handler (shared vector)
    # takes qa's entry and re-arms after it: the held one is dropped after a second look
    await complete(qa, 1)                      # 5 in hand: held
    assert not irqs(qa)
    await complete(qb, 1)
    assert len(irqs(qb)) == 1
    rings[qa].write_used_event(rings[qa].read_used_idx())
    reads = len(event_reads(qa))
    await ClockCycles(dut.clk, H + 200)
    assert len(event_reads(qa)) > reads, "used_event not read again before the release"
    assert not irqs(qa), "held notification sent although the driver had taken its entries"
    # (b) the same, but the driver has not taken the new entry: it is sent
    await complete(qa, 1)                      # 4 in hand: held
    assert not irqs(qa)
    rings[qb].write_used_event(rings[qb].read_used_idx())
    await complete(qb, 1)
    assert len(irqs(qb)) == 2
    await ClockCycles(dut.clk, H + 200)
    assert len(irqs(qa)) == 1, "held notification of entries not taken was dropped"
    tb.device.on_chain = None


@cocotb.test()
async def run_early_used_event(dut):
    """used_event is read as soon as a chain is committed, while the device works on it: when
    the value already says "notify" the interrupt follows the used->idx write without a second
    read (a host round trip less on the latency path); when it says "no" it is read again
    after the index write, so a driver that re-armed in between (the re-check race, virtio 1.2
    §2.7.10) is notified; when both say "no", nothing is sent. The same with avail->flags
    without EVENT_IDX."""
    lat = 150
    tb = EngineTB(dut, seed=13, read_latency=(lat, lat + 4), reorder=False)
    await tb.reset()
    rng = random.Random(13)
    tr = tb.transport
    q = tb.pushed_queues()[13]
    chains = []
    tb.device.on_chain = chains.append

    async def one(ring, alloc):
        ring.add(random_chain(ring, rng, alloc, indirect_ok=True, max_descs=3)[0])
        n = len(chains) + 1
        tr.notify(q)
        await tb.wait_quiet(until=lambda: len(chains) == n)
        await ClockCycles(dut.clk, 3 * lat)    # the early read is back

    async def case(event_idx):
        await tr.device_reset()
        chains.clear()
        tr.irqs.clear()
        tr.set_features(event_idx=event_idx, indirect_desc=True)
        ring = tb.new_ring(16)
        alloc = DescAllocator(16, rng)
        addr = ring.used_event_addr if event_idx else ring.avail_flags_addr

        def arm(on):
            if event_idx:
                ring.write_used_event(ring.read_used_idx() if on else
                                      (ring.read_used_idx() - 1) & 0xFFFF)
            else:
                ring.write_avail_flags(0 if on else 1)

        def event_reads():
            return [a for a in tb.dma.log if a.kind == "rd" and a.host_addr == addr and
                    a.length == 2]

        def idx_write(value):
            return next(a for a in tb.dma.log if a.kind == "wr" and
                        a.host_addr == ring.used_idx_addr and
                        int.from_bytes(a.data, "little") == value)
        await tb.enable(q, ring)
        tr.set_driver_ok()
        # (a) armed before the request: no read after the index write
        arm(True)
        await one(ring, alloc)
        reads = len(event_reads())
        assert reads >= 1, "used_event not read while the device worked"
        tb.device.complete(q, chains[-1].head, 0)
        await tb.wait_quiet()
        assert len(tr.irqs) == 1
        assert len(event_reads()) == reads, "used_event read again although it said notify"
        assert tr.irqs[0][0] - idx_write(1).done_ns < lat * CLOCK_NS
        # (b) the race: not armed when read early, armed before the index write
        arm(False)
        await one(ring, alloc)
        reads = len(event_reads())
        arm(True)
        tb.device.complete(q, chains[-1].head, 0)
        await tb.wait_quiet()
        assert len(tr.irqs) == 2, "driver re-armed after the early read was not notified"
        again = event_reads()[reads:]
        assert again and again[0].time_ns >= idx_write(2).done_ns, \
            "used_event not read again after the index write"
        # (c) not armed throughout: no interrupt
        arm(False)
        await one(ring, alloc)
        tb.device.complete(q, chains[-1].head, 0)
        await tb.wait_quiet()
        assert len(tr.irqs) == 2, "interrupt although the driver never armed"

    for event_idx in (True, False):
        await case(event_idx)
    tb.device.on_chain = None


@cocotb.test()
async def run_queue_reset(dut):
    """Queue reset (VIRTIO_F_RING_RESET) while chains wait at the port and completions are
    outstanding: the queue's chains are dropped at the port, its late completions are not
    written, another queue on the same port is not disturbed, and the queue works again once
    re-enabled."""
    tb = EngineTB(dut, seed=6)
    await tb.reset()
    rng = random.Random(6)
    qa, qb = tb.pushed_queues()[3:5]
    port = tb.port_of_queue[qa]
    assert tb.port_of_queue[qb] == port
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    rings = {qa: tb.new_ring(16), qb: tb.new_ring(16)}
    for ring in rings.values():
        alloc = DescAllocator(16, rng)
        for _ in range(4):
            ring.add(random_chain(ring, rng, alloc, indirect_ok=True, max_descs=4)[0])
    chains = []
    tb.device.on_chain = chains.append
    tb.device.sinks[port].pause()
    for q, ring in rings.items():
        await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    await tb.wait_quiet()                  # everything walked, waiting in the chain FIFO
    assert tb.transport.counters()["chains"] == 8
    dropped = tb.transport.counters()["dropped"]
    await tb.transport.queue_reset(qa)
    tb.device.sinks[port].pause(False)
    await tb.wait_quiet()
    assert [c.queue for c in chains] == [qb] * 4, [c.queue for c in chains]
    assert tb.transport.counters()["dropped"] == dropped + 4
    # a completion for the reset queue is dropped, not written
    writes = len([a for a in tb.dma.log if a.kind == "wr"])
    tb.device.complete(qa, 0, 0)
    await tb.wait_quiet()
    assert len([a for a in tb.dma.log if a.kind == "wr"]) == writes
    # re-enabled with a new ring: works from index 0
    ring = tb.new_ring(4)
    alloc = DescAllocator(4, rng)
    head, segs = random_chain(ring, rng, alloc, indirect_ok=True, max_descs=4)
    ring.add(head)
    await tb.enable(qa, ring)
    await tb.wait_quiet(until=lambda: len(chains) == 5)
    assert chains[-1].key() == expected_key(qa, head, segs)
    tb.device.complete(qa, head, 7)
    await tb.wait_quiet()
    assert ring.read_used_idx() == 1 and ring.read_used_elem(0) == (head, 7)
    tb.device.on_chain = None


@cocotb.test()
async def run_stale_completion(dut):
    """A chain the device still holds when its queue is reset and re-enabled on a new ring
    (with a chain of the same head there): its late completion carries the old epoch and is
    dropped, not written into the new ring; the new chain's completion is published normally.
    Also across two reset cycles (the epoch keeps advancing)."""
    tb = EngineTB(dut, seed=12)
    await tb.reset()
    rng = random.Random(12)
    q = tb.pushed_queues()[2]
    tb.transport.set_features(event_idx=False, indirect_desc=True)
    chains = []
    tb.device.on_chain = chains.append

    def one_chain_ring():
        ring = tb.new_ring(4)
        head, segs = random_chain(ring, rng, DescAllocator(4, rng), indirect_ok=True,
                                  max_descs=3)
        ring.add(head)
        return ring, head, segs

    ring, head, segs = one_chain_ring()
    await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    tb.transport.notify(q)
    await tb.wait_quiet(until=lambda: len(chains) == 1)
    held = [chains[-1]]
    for _ in range(2):
        await tb.transport.queue_reset(q)
        ring, head, segs = one_chain_ring()
        await tb.enable(q, ring)
        tb.transport.notify(q)
        await tb.wait_quiet(until=lambda n=len(chains): len(chains) == n + 1)
        new = chains[-1]
        assert new.key() == expected_key(q, head, segs)
        assert all(new.epoch != old.epoch for old in held), (new, held)
        # the chains of the earlier incarnations come back late, one with the new chain's head
        writes = len([a for a in tb.dma.log if a.kind == "wr"])
        dropped = tb.transport.counters()["dropped"]
        for old in held:
            tb.device.complete(q, new.head, 99, epoch=old.epoch)
        await tb.wait_quiet()
        assert len([a for a in tb.dma.log if a.kind == "wr"]) == writes
        assert tb.transport.counters()["dropped"] == dropped + len(held)
        assert ring.read_used_idx() == 0
        held.append(new)
    tb.device.complete(q, new.head, 7, epoch=new.epoch)
    await tb.wait_quiet()
    assert ring.read_used_idx() == 1 and ring.read_used_elem(0) == (new.head, 7)
    tb.device.on_chain = None


@cocotb.test()
async def run_device_reset(dut):
    """Device reset with reads in flight and chains waiting: the engine becomes idle only after
    its DMA statuses came back, drops everything, and issues no DMA until a queue is enabled
    again; afterwards it works normally. Nothing is processed before DRIVER_OK."""
    tb = EngineTB(dut, seed=7, read_latency=(200, 400))
    await tb.reset()
    rng = random.Random(7)
    q = tb.pushed_queues()[5]
    tb.transport.set_features(event_idx=False, indirect_desc=True)
    ring = tb.new_ring(64)
    alloc = DescAllocator(64, rng)
    for _ in range(20):
        ring.add(random_chain(ring, rng, alloc, indirect_ok=True, max_descs=6)[0])
    await tb.enable(q, ring)
    tb.transport.notify(q)
    await ClockCycles(dut.clk, 500)
    assert not tb.dma.log, "DMA before DRIVER_OK"
    tb.transport.set_driver_ok()
    await ClockCycles(dut.clk, 700)        # mid-walk
    assert tb.dma.reads_in_flight or tb.dma.log
    await tb.transport.device_reset()
    assert tb.dma.idle, "idle reported with DMA in flight"
    n = len(tb.dma.log)
    tb.transport.set_driver_ok()
    tb.transport.notify(q)
    await ClockCycles(dut.clk, 500)
    assert len(tb.dma.log) == n, "DMA for a queue cleared by reset"
    # enabled again: starts from scratch at index 0
    tb.device.chains[tb.port_of_queue[q]].clear()
    ring2 = tb.new_ring(8)
    alloc = DescAllocator(8, rng)
    head, segs = random_chain(ring2, rng, alloc, indirect_ok=True, max_descs=6)
    ring2.add(head)
    await tb.enable(q, ring2)
    port = tb.port_of_queue[q]
    await tb.wait_quiet(until=lambda: tb.device.chains[port])
    assert chain_keys(tb.device.chains[port]) == [expected_key(q, head, segs)]


@cocotb.test()
async def run_config_errors(dut):
    """A queue enabled with a size that is not a power of two, too large or zero, or with a
    misaligned ring, is refused: CONFIG error, needs_reset, and the queue stays off."""
    tb = EngineTB(dut, seed=8)
    await tb.reset()
    await tb.transport.device_reset()
    tb.transport.set_driver_ok()
    q = tb.pushed_queues()[6]
    max_size = tb.params.get("max_queue_size", 256)
    good = tb.new_ring(8)
    cases = [dict(size=3), dict(size=0), dict(size=2 * max_size), dict(desc=good.desc + 8),
             dict(driver=good.avail + 1), dict(device=good.used + 2)]
    for case in cases:
        cfg = dict(size=8, desc=good.desc, driver=good.avail, device=good.used)
        cfg.update(case)
        errors = tb.transport.counters()["errors"]
        needs = tb.transport.needs_reset_events
        tb.transport.enable_queue(q, **cfg)
        await tb.transport.settle()
        await ClockCycles(dut.clk, 20)
        assert tb.transport.counters()["errors"] == errors + 1, case
        assert tb.transport.needs_reset_events > needs, case
        assert tb.transport.last_error() == (VirtqErrorCode.CONFIG, q), case
        tb.transport.notify(q)
        await ClockCycles(dut.clk, 100)
        assert not tb.dma.log, f"DMA for a refused queue ({case})"


@cocotb.test()
async def run_doorbells(dut):
    """Doorbells are merged, never lost: a burst of 200 kicks on two queues costs a few reads of
    avail->idx, and a kick arriving while the ring is being read is not lost."""
    tb = EngineTB(dut, seed=9)
    await tb.reset()
    rng = random.Random(9)
    await tb.transport.device_reset()
    tb.transport.set_features(event_idx=False, indirect_desc=True)
    qs = tb.pushed_queues()[7:9]
    rings = {q: tb.new_ring(64) for q in qs}
    allocs = {q: DescAllocator(64, rng) for q in qs}
    for q in qs:
        await tb.enable(q, rings[q])
    tb.transport.set_driver_ok()
    await tb.wait_quiet()
    base = tb.transport.counters()
    chains = []
    tb.device.on_chain = chains.append
    total = 0
    for i in range(200):
        q = qs[i % 2]
        if i % 10 == 0:
            rings[q].add(random_chain(rings[q], rng, allocs[q], indirect_ok=True,
                                      max_descs=3)[0])
            total += 1
        tb.transport.notify(q)
        if i % 37 == 0:
            await ClockCycles(dut.clk, rng.randint(1, 60))
    await tb.wait_quiet(until=lambda: len(chains) == total)
    c = tb.transport.counters()
    assert c["doorbells"] - base["doorbells"] == 200
    assert c["avail_reads"] - base["avail_reads"] < 100
    assert len(chains) == total
    tb.device.on_chain = None


@cocotb.test()
async def run_pulled(dut):
    """Pulled queues (network receive): a fetch gets one chain or ``empty``; no avail_event is
    written for them; a fetch for a queue of another port or a disabled queue gets ``empty``;
    a device that leaves the other port's chains untaken still gets its fetches answered (the
    walker never waits on one port's consumer); a malformed chain answers ``empty`` and stops
    the queue."""
    tb = EngineTB(dut, seed=10)
    await tb.reset()
    rng = random.Random(10)
    rx, tx = tb.pulled_queues()[0], tb.pushed_queues()[0]
    rx_port, tx_port = tb.port_of_queue[rx], tb.port_of_queue[tx]
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    rx_ring, tx_ring = tb.new_ring(32, start=0xFFF0), tb.new_ring(32)
    await tb.enable(rx, rx_ring)
    await tb.enable(tx, tx_ring)
    tb.transport.set_driver_ok()
    assert (await tb.device.fetch(rx_port, rx)).empty
    assert rx_ring.read_avail_event() == 0, "avail_event written for a pulled queue"
    # receive buffers arrive
    alloc = DescAllocator(32, rng)
    want = []
    for _ in range(3):
        head, segs = random_chain(rx_ring, rng, alloc, indirect_ok=True, max_descs=4)
        rx_ring.add(head)
        want.append(expected_key(rx, head, segs))
    got = [await tb.device.fetch(rx_port, rx) for _ in range(4)]
    assert [c.key() for c in got[:3]] == want and got[3].empty
    # transmit chains the device does not take; receive fetches are still answered
    tb.device.sinks[tx_port].pause()
    tx_alloc = DescAllocator(32, rng)
    for _ in range(tb.max_chain and 8):
        tx_ring.add(random_chain(tx_ring, rng, tx_alloc, indirect_ok=True, max_descs=4)[0])
    tb.transport.notify(tx)
    await ClockCycles(dut.clk, 2000)
    for _ in range(4):
        head, segs = random_chain(rx_ring, rng, alloc, indirect_ok=True, max_descs=4)
        rx_ring.add(head)
        chain = await tb.device.fetch(rx_port, rx)
        assert chain.key() == expected_key(rx, head, segs)
    # wrong port, disabled queue
    assert (await tb.device.fetch(rx_port, tx)).empty
    assert (await tb.device.fetch(rx_port, tb.pulled_queues()[1])).empty
    tb.device.sinks[tx_port].pause(False)
    await tb.wait_quiet(until=lambda: len(tb.device.chains[tx_port]) == 8)
    # a malformed receive chain: empty, error, and the queue stays stopped
    errors = tb.transport.counters()["errors"]
    from virtio_pcie_tb.models.virtq_ring import malformed_chain
    rx_ring.add(malformed_chain(rx_ring, rng, alloc, "order", max_chain=tb.max_chain,
                                max_indirect=tb.max_indirect))
    assert (await tb.device.fetch(rx_port, rx)).empty
    assert tb.transport.counters()["errors"] == errors + 1
    assert tb.transport.last_error() == (VirtqErrorCode.ORDER, rx)
    head, _ = random_chain(rx_ring, rng, alloc, indirect_ok=True, max_descs=4)
    rx_ring.add(head)
    assert (await tb.device.fetch(rx_port, rx)).empty
    # a fetched chain waiting at the port when its queue is reset: the answer becomes empty
    rx2 = tb.pulled_queues()[2]
    ring = tb.new_ring(8)
    alloc = DescAllocator(8, rng)
    ring.add(random_chain(ring, rng, alloc, indirect_ok=True, max_descs=4)[0])
    await tb.enable(rx2, ring)
    tb.device.sinks[rx_port].pause()
    answer = cocotb.start_soon(tb.device.fetch(rx_port, rx2))
    await tb.wait_quiet()
    dropped = tb.transport.counters()["dropped"]
    await tb.transport.queue_reset(rx2)
    tb.device.sinks[rx_port].pause(False)
    assert (await answer).empty
    assert tb.transport.counters()["dropped"] == dropped + 1
    assert not tb.device.errors, tb.device.errors


async def _fast_refill_tb(dut, *, seed):
    """The BLK engine (built with ``fast_refill``) after reset, INDIRECT_DESC without
    EVENT_IDX; returns it with its first pushed queue and that queue's port."""
    tb = EngineTB(dut, seed=seed)
    await tb.reset()
    assert tb.params.get("fast_refill"), "the BLK design is built with fast_refill"
    q = tb.pushed_queues()[0]
    port = tb.port_of_queue[q]
    tb.transport.set_features(event_idx=False, indirect_desc=True)
    return tb, q, port


@cocotb.test()
async def run_fast_refill(dut):
    """``fast_refill`` (the blk device's engine): block requests as Linux submits them (a head
    descriptor pointing to a 3-entry indirect table; a refill reuses the heads freed last) have
    their heads taken from the early window read with the ring entries: one descriptor table
    read per batch, no head window read per chain, then one table read each; a batch across
    the ring's end is read in two ring reads after one avail->idx read."""
    tb, q, port = await _fast_refill_tb(dut, seed=31)
    ring = tb.new_ring(64, start=60)            # slot 60 of 64: a batch of 8 wraps
    n = 8
    tables = {}
    for h in range(n):
        table = tb.memory.alloc_addr(virtq_desc_size(3))
        tables[h] = table
        data = 0x300000 + 0x1000 * h
        nxt, wr = VirtqDescFlags.NEXT.value, VirtqDescFlags.WRITE.value
        tb.memory.write(table, pack_desc(data, 16, nxt, 1) +
                        pack_desc(data + 0x100, 512, nxt | wr, 2) +
                        pack_desc(data + 0x800, 1, wr))
        ring.write_desc(h, table, virtq_desc_size(3), VirtqDescFlags.INDIRECT.value)
    await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    window = virtq_desc_size(min(tb.params["walk_window"], ring.size))

    async def refill(heads):
        before = len(tb.dma.log)
        done = len(tb.device.chains[port])
        for h in heads:
            ring.add(h, publish=False)
        ring.publish()
        tb.transport.notify(q)
        await tb.wait_quiet(until=lambda: len(tb.device.chains[port]) == done + len(heads))
        got = tb.device.chains[port][done:]
        assert [c.head for c in got] == list(heads)
        for c in got:
            data = 0x300000 + 0x1000 * c.head
            assert [(s.addr, s.len, s.write) for s in c.segments] == \
                [(data, 16, False), (data + 0x100, 512, True), (data + 0x800, 1, True)], c
        reads = [a for a in tb.dma.log[before:] if a.kind == "rd"]
        desc = [a for a in reads
                if ring.desc <= a.host_addr < ring.desc + virtq_desc_size(ring.size)]
        assert [a.length for a in desc] == [window], \
            f"descriptor table reads {[(hex(a.host_addr), a.length) for a in desc]}"
        assert sorted(a.host_addr for a in reads if a.host_addr in tables.values()) == \
            sorted(tables[h] for h in heads), "one table read per chain"
        ring_reads = [i for i, a in enumerate(reads)
                      if ring.avail_ring_addr(0) <= a.host_addr < ring.avail_ring_addr(ring.size)]
        idx_reads = [i for i, a in enumerate(reads) if a.host_addr == ring.avail_flags_addr]
        return ring_reads, idx_reads, got

    # 1. wrapping the ring's end: entries 60-63 and 0-3 in two reads after one avail->idx read
    ring_reads, idx_reads, got = await refill(range(n))
    assert len(ring_reads) == 2, ring_reads
    assert len([i for i in idx_reads if i < ring_reads[-1]]) == 1, (idx_reads, ring_reads)
    # 2. Linux's refill: the heads completed last come back first
    for i, c in enumerate(got):
        tb.device.complete(q, c.head, 10 + i)
    await tb.wait_quiet()
    ring_reads, idx_reads, _ = await refill(range(n - 1, -1, -1))
    assert len(ring_reads) == 1, ring_reads
    assert not tb.device.errors, tb.device.errors
    assert tb.transport.counters()["errors"] == 0


@cocotb.test()
async def run_notification_data(dut):
    """VIRTIO_F_NOTIFICATION_DATA with ``fast_refill``: a doorbell carrying the driver's avail
    index sends the refresh's ring read (and the early window) right behind its avail->idx
    read, before that read has come back; entries published after the doorbell are read as
    soon as avail->idx shows them, without another index read. A doorbell whose index the
    driver never published (a broken driver) is not trusted: only the published chains come
    out, their entries read again after the index read; stale and absurd indices are
    ignored; nothing of it is an error."""
    tb, q, port = await _fast_refill_tb(dut, seed=37)
    # avail index 65534, slot 62 of 64: the first batch wraps the ring and the 16-bit index
    ring = tb.new_ring(64, start=65534)
    for h in range(ring.size):
        ring.write_desc(h, 0x300000 + 0x1000 * h, 64 + h, 0)
    await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    taken = 0
    entry = ring.avail_ring_addr(1) - ring.avail_ring_addr(0)

    def ring_reads(log):
        return [a for a in log if a.kind == "rd" and
                ring.avail_ring_addr(0) <= a.host_addr < ring.avail_ring_addr(ring.size)]

    async def kick(heads, idx, *, more=()):
        """Publish ``heads``, ring with ``idx``, publish ``more`` (no doorbell): every chain
        comes out, in order. Returns the refresh's reads (from the doorbell on)."""
        nonlocal taken
        before = len(tb.dma.log)
        for h in heads:
            ring.add(h, publish=False)
        ring.publish()
        tb.transport.notify(q, idx=idx)
        for h in more:
            ring.add(h)
        want = list(heads) + list(more)
        await tb.wait_quiet(until=lambda: len(tb.device.chains[port]) == taken + len(want))
        got = tb.device.chains[port][taken:]
        assert [c.head for c in got] == want
        for c in got:
            assert [(s.addr, s.len, s.write) for s in c.segments] == \
                [(0x300000 + 0x1000 * c.head, 64 + c.head, False)], c
        for c in got:
            tb.device.complete(q, c.head, 0)
        taken += len(want)
        await tb.wait_quiet()
        return [a for a in tb.dma.log[before:] if a.kind == "rd"]

    def idx_reads(reads):
        return [a for a in reads if a.host_addr == ring.avail_flags_addr]

    # 1. the doorbell's index: the ring (in two reads: it wraps) goes out before the avail->idx
    #    read has come back
    reads = await kick(range(4), (ring.avail_idx + 4) & 0xFFFF)
    first_idx = idx_reads(reads)[0]
    early = [a for a in ring_reads(reads) if a.time_ns < first_idx.done_ns]
    assert len(early) == 2, [(hex(a.host_addr), a.time_ns, first_idx.done_ns) for a in reads]
    assert len(ring_reads(reads)) == 2
    # 2. entries published after the doorbell (Linux rings at its first request and goes on
    #    adding): the doorbell's entries early, the rest as soon as avail->idx shows them,
    #    without another avail->idx read
    reads = await kick(range(4, 7), (ring.avail_idx + 3) & 0xFFFF, more=range(7, 9))
    first_idx = idx_reads(reads)[0]
    rr = ring_reads(reads)
    assert [a.length for a in rr] == [3 * entry, 2 * entry], [(a.length, a.time_ns) for a in rr]
    assert rr[0].time_ns < first_idx.done_ns <= rr[1].time_ns
    assert [a for a in idx_reads(reads) if a.time_ns < rr[1].time_ns] == [first_idx]
    # 3. a broken driver: the doorbell's index is 5 ahead of what it published. Only the two
    #    published chains come out; the ring is read again once avail->idx is back.
    for slot in range(ring.avail_idx, ring.avail_idx + 8):
        ring.write_avail_entry(slot, 40 + slot % 8)       # stale entries, walkable heads
    reads = await kick(range(10, 12), (ring.avail_idx + 7) & 0xFFFF)
    rr = ring_reads(reads)
    first_idx = idx_reads(reads)[0]
    assert [a.time_ns < first_idx.done_ns for a in rr] == [True, False], \
        [(hex(a.host_addr), a.length, a.time_ns) for a in rr]
    assert rr[1].length == 2 * entry
    # 4. an index the device has already passed, and one a whole ring away: not used
    for idx in (ring.avail_idx, (ring.avail_idx - 3) & 0xFFFF, (ring.avail_idx + 200) & 0xFFFF):
        reads = await kick([20, 21], idx)
        first_idx = idx_reads(reads)[0]
        assert not [a for a in ring_reads(reads) if a.time_ns < first_idx.done_ns], idx
    # 5. a doorbell's entries up to the ring's end and more published after it: the rest is read
    #    from the ring's start (and nothing is counted as read that was not)
    while ring.avail_idx % ring.size != ring.size - 2:
        n = min(8, (ring.size - 2 - ring.avail_idx) % ring.size)
        await kick(range(30, 30 + n), (ring.avail_idx + n) & 0xFFFF)
    reads = await kick([40, 41], (ring.avail_idx + 2) & 0xFFFF, more=[42, 43, 44])
    rr = ring_reads(reads)
    assert [(a.host_addr, a.length) for a in rr] == \
        [(ring.avail_ring_addr(ring.size - 2), 2 * entry), (ring.avail_ring_addr(0), 3 * entry)], rr
    assert not tb.device.errors, tb.device.errors
    assert tb.transport.counters()["errors"] == 0


def _walk_window_reads(tb, ring, since=0):
    """The walker's own descriptor window reads of ``ring`` in the DMA log from entry
    ``since`` (the NET design's walk window is larger than the prefetcher's head window, so
    the two are told apart by length)."""
    window = tb.params["walk_window"]
    return [a for a in tb.dma.log[since:] if a.kind == "rd" and
            ring.desc <= a.host_addr < ring.desc + virtq_desc_size(ring.size) and
            a.length == virtq_desc_size(min(window, ring.size))]


async def _hold_prefetcher(tb):
    """Give a pushed queue chains that its device does not take: its batch keeps the
    descriptor prefetcher, so that pulled queues' walks read their own windows. Returns a
    coroutine function that lets the chains go."""
    tx = tb.pushed_queues()[0]
    port = tb.port_of_queue[tx]
    n = 96          # more than the port's chain FIFO holds
    ring = tb.new_ring(128)
    for h in range(n):
        ring.write_desc(h, 0x200000 + 0x800 * h, 64, 0)
        ring.add(h)
    tb.device.sinks[port].pause()
    await tb.enable(tx, ring)
    tb.transport.notify(tx)
    await ClockCycles(tb.dut.clk, 1000)

    async def release():
        tb.device.sinks[port].pause(False)
        await tb.wait_quiet(until=lambda: len(tb.device.chains[port]) == n)
    return release


@cocotb.test()
async def run_walk_window(dut):
    """A pulled queue's receive buffers with heads running down (Linux refills with the
    descriptors it freed last first), then up: the walk's aligned window serves each run with
    one descriptor read per window, where a window starting at the head would miss on every
    descending head. (A transmit batch holds the descriptor prefetcher meanwhile.)"""
    tb = EngineTB(dut, seed=12)
    await tb.reset()
    rx = tb.pulled_queues()[0]
    rx_port = tb.port_of_queue[rx]
    window = tb.params.get("walk_window") or tb.params["desc_window"]
    batch = tb.params["avail_batch"]
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    ring = tb.new_ring(4 * window)
    await tb.enable(rx, ring)
    tb.transport.set_driver_ok()
    release = await _hold_prefetcher(tb)
    n = min(batch, 2 * window)
    heads = list(range(n - 1, -1, -1)) + list(range(2 * window, 2 * window + n))[:batch]
    for h in heads:
        ring.write_desc(h, 0x80000 + 0x800 * h, 1536, VirtqDescFlags.WRITE.value)
    got = []
    for part in (heads[:n], heads[n:]):
        for h in part:
            ring.add(h)
        before = len(tb.dma.log)
        for _ in part:
            got.append(await tb.device.fetch(rx_port, rx))
        reads = len(_walk_window_reads(tb, ring, before))
        assert reads <= -(-len(part) // window), (part, reads)
    assert [c.head for c in got] == heads
    assert all(c.segments[0].addr == 0x80000 + 0x800 * c.head and c.segments[0].write
               for c in got)
    await release()


@cocotb.test()
async def run_pulled_sessions(dut):
    """Two pulled queues of one port fetched in turn (a multiqueue NIC's receive queues
    sharing the receive port): each keeps its own cached avail entries and descriptor window,
    so alternating costs no avail ring or descriptor re-reads (one avail->idx and one ring read
    per queue, one descriptor read per window; a transmit batch holds the descriptor
    prefetcher meanwhile)."""
    tb = EngineTB(dut, seed=13)
    await tb.reset()
    qa, qb = tb.pulled_queues()[:2]
    port = tb.port_of_queue[qa]
    assert tb.port_of_queue[qb] == port
    window = tb.params.get("walk_window") or tb.params["desc_window"]
    n = min(tb.params["avail_batch"], 2 * window)
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    rings = {qa: tb.new_ring(4 * window), qb: tb.new_ring(4 * window)}
    for i, (q, ring) in enumerate(rings.items()):
        await tb.enable(q, ring)
        for h in range(n):
            ring.write_desc(h, 0x100000 * (i + 1) + 0x800 * h, 1536, VirtqDescFlags.WRITE.value)
            ring.add(h)
    tb.transport.set_driver_ok()
    release = await _hold_prefetcher(tb)
    before = tb.transport.counters()
    log_at = len(tb.dma.log)
    got = {qa: [], qb: []}
    for _ in range(n):
        for q in (qa, qb):
            got[q].append(await tb.device.fetch(port, q))
    after = tb.transport.counters()
    for i, q in enumerate((qa, qb)):
        assert [c.head for c in got[q]] == list(range(n)), (q, [c.head for c in got[q]])
        assert all(c.segments[0].addr == 0x100000 * (i + 1) + 0x800 * c.head
                   for c in got[q]), q
    avail_reads = after["avail_reads"] - before["avail_reads"]
    desc_reads = sum(len(_walk_window_reads(tb, r, log_at)) for r in rings.values())
    assert avail_reads <= 4, f"{avail_reads} avail reads for {2 * n} alternating fetches"
    assert desc_reads <= 2 * -(-n // window), f"{desc_reads} descriptor window reads"
    await release()


async def _stream_one_queue(tb, n, *, heads=None, ring_size=None):
    """Publish ``n`` one-descriptor chains (64 bytes each; heads ``heads``, default 0 to n - 1)
    on the first pushed queue at once, in a ring of ``ring_size`` entries (default 2n), and
    wait until the device has them; returns the ring and the chains, checked in order."""
    heads = list(range(n)) if heads is None else heads
    await tb.reset()
    tx = tb.pushed_queues()[0]
    port = tb.port_of_queue[tx]
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    ring = tb.new_ring(ring_size or 2 * n)
    for h in heads:
        ring.write_desc(h, 0x80000 + 0x800 * h, 64, 0)
        ring.add(h)
    await tb.enable(tx, ring)
    tb.transport.set_driver_ok()
    await tb.wait_quiet(until=lambda: len(tb.device.chains[port]) == n)
    got = tb.device.chains[port]
    assert [c.head for c in got] == heads
    return ring, got


@cocotb.test()
async def run_walk_rate(dut):
    """Back-to-back walks of one pushed queue, their descriptors prefetched and the DMA
    answering at once: one chain every 9 cycles, the walk's own states only. Consecutive walks
    of the loaded queue do not reload its configuration and ``last_avail_idx`` (2 cycles), and
    a port with work does not wait for the round robin to pass idle ports (1 cycle here)."""
    tb = EngineTB(dut, seed=14, read_latency=1, write_latency=1, reorder=False)
    n = tb.params["avail_batch"]
    _, got = await _stream_one_queue(tb, n)
    # from the fourth chain on (the prefetcher is ahead by then)
    cycles = (got[-1].time_ns - got[3].time_ns) / CLOCK_NS / (n - 4)
    dut._log.info(f"{cycles:.2f} cycles per chain")
    assert cycles <= 9.0, f"{cycles:.2f} cycles per chain"


@cocotb.test()
async def run_walk_stream(dut):
    """A streaming pushed queue at 1 us host latency: while the walker walks a cached batch, the
    look-ahead refresh reads the next batch's ring entries (the index seen already covers them,
    so no avail->idx read) into the session's other cache, and the walks go on without the two
    round trips of a refresh between batches: no gap between consecutive chains reaches two
    round trips (without the look-ahead every batch boundary had one of 2 round trips and
    more). What remains is the 4 prefetch slots of this design (a round trip per 4 chains).
    Also: ring entries are read once, a batch per read."""
    lat = 250
    tb = EngineTB(dut, seed=15, read_latency=lat, write_latency=4, reorder=False)
    batch = tb.params["avail_batch"]
    n = 8 * batch
    ring, got = await _stream_one_queue(tb, n)
    # from the second batch on
    times = [c.time_ns / CLOCK_NS for c in got[batch - 1:]]
    gaps = [times[i + 1] - times[i] for i in range(len(times) - 1)]
    cycles = (times[-1] - times[0]) / (len(times) - 1)
    avail = [a for a in tb.dma.log if a.kind == "rd" and ring.avail <= a.host_addr <
             ring.avail + virtq_used_event_offset(ring.size)]
    ring_reads = [a for a in avail if a.host_addr != ring.avail]
    dut._log.info(f"{cycles:.2f} cycles per chain, longest gap {max(gaps):.0f} cycles, "
                  f"{len(avail) - len(ring_reads)} avail->idx reads, {len(ring_reads)} ring "
                  f"reads")
    assert len(ring_reads) == n // batch, ring_reads
    assert max(gaps) < 1.5 * lat, f"a gap of {max(gaps):.0f} cycles between two chains"
    assert cycles <= 75.0, f"{cycles:.2f} cycles per chain"


@cocotb.test()
async def run_walk_batch_gap(dut):
    """At a batch boundary of a streaming pushed queue (1 us host latency), the first chains
    of the look-ahead's batch do not wait for the prefetcher to start on it: the prefetcher
    runs on into that batch (its entries continue the current batch's avail indices) as soon
    as the look-ahead has read it, so the head window of the next batch's first chain is read
    before the walker has finished the current batch. Without it the prefetcher restarted at
    the swap, and every batch's first chain waited a whole round trip for its window after
    the last chain of the batch before. Heads are 16 descriptors apart (and out of order), so
    that every chain needs a window of its own."""
    lat = 250
    tb = EngineTB(dut, seed=16, read_latency=lat, write_latency=4, reorder=False)
    batch = tb.params["avail_batch"]
    n = 4 * batch
    heads = [16 * ((5 * i) % n) for i in range(n)]
    ring, got = await _stream_one_queue(tb, n, heads=heads, ring_size=16 * n)
    times = [c.time_ns / CLOCK_NS for c in got]

    def window_read(h):
        """When the first read of descriptor ``h`` went out, in cycles."""
        addr = ring.desc_addr(h)
        return min(a.time_ns for a in tb.dma.log
                   if a.kind == "rd" and a.host_addr <= addr < a.end) / CLOCK_NS
    # How long before the previous batch's last chain the first chain's window went out.
    early = [times[k * batch - 1] - window_read(heads[k * batch]) for k in range(1, n // batch)]
    boundary = [times[k * batch] - times[k * batch - 1] for k in range(1, n // batch)]
    rate = (times[-1] - times[batch]) / (n - batch - 1)
    dut._log.info(f"first window of each batch read {[round(e) for e in early]} cycles before "
                  f"the batch before ended; boundary gaps {[round(g) for g in boundary]}; "
                  f"{rate:.2f} cycles per chain")
    assert min(early) > 0, f"a batch's first window was read {-min(early):.0f} cycles after " \
        f"the batch before ended"
    assert max(boundary) < lat, f"a gap of {max(boundary):.0f} cycles at a batch boundary"


async def _complete_during_event_read(tb, q, ring, chains):
    """Complete ``chains[0]`` of queue ``q``, then, once the ``used_event`` read that follows
    its index write is out, complete the others while that read is in flight; check they were
    all taken before it came back. Returns the read and the queue's used->idx writes (value,
    time) once everything is quiet."""
    def event_reads():
        return [a for a in tb.dma.log if a.kind == "rd" and a.host_addr == ring.used_event_addr]
    before = len(event_reads())
    tb.device.complete(q, chains[0].head, 0)
    while len(event_reads()) == before:
        await ClockCycles(tb.dut.clk, 1)
    read = event_reads()[-1]
    taken = []
    for i, c in enumerate(chains[1:], 1):
        tb.device.complete(q, c.head, i, on_sent=lambda *_: taken.append(1))
    await ClockCycles(tb.dut.clk, 40)
    rest = len(chains) - 1
    assert read.done_ns is None, "the used_event read came back too early for this test"
    assert len(taken) == rest, \
        f"{len(taken)} of {rest} completions taken during the used_event read"
    await tb.wait_quiet()
    idx = [(int.from_bytes(a.data, "little"), a.time_ns) for a in tb.dma.log
           if a.kind == "wr" and a.host_addr == ring.used_idx_addr]
    return read, idx


@cocotb.test()
async def run_used_gather(dut):
    """The used side keeps taking a queue's completions while the ``used_event`` read after its
    last index update is in flight (a round trip), and publishes them together with the next
    update: a device completing one chain every few cycles is not held to a few completions
    per round trip. (``used_event`` is 5 from the start, so the early read says "no" for
    index 1 and the read after the index write is needed.)"""
    lat = 300
    tb = EngineTB(dut, seed=11, read_latency=(lat, lat + 4))
    await tb.reset()
    rng = random.Random(11)
    q = tb.pushed_queues()[0]
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    ring = tb.new_ring(32)
    ring.write_used_event(5)
    alloc = DescAllocator(32, rng)
    for _ in range(8):
        ring.add(random_chain(ring, rng, alloc, indirect_ok=True, max_descs=2)[0])
    chains = []
    tb.device.on_chain = chains.append
    await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    tb.transport.notify(q)
    await tb.wait_quiet(until=lambda: len(chains) == 8)
    await ClockCycles(dut.clk, 3 * lat)        # the early reads are back
    irqs = len(tb.transport.irqs)
    read, idx = await _complete_during_event_read(tb, q, ring, chains)
    assert [i for i, _ in idx][0] == 1 and idx[-1][0] == 8, idx
    # (the next updates do not wait for the read: all 8 are published before it is back)
    assert idx[-1][1] < read.done_ns, (idx, read.done_ns)
    for i, c in enumerate(chains):
        assert ring.read_used_elem(i) == (c.head, i)
    assert len(tb.transport.irqs) == irqs + 1, "used_event 5 passed once: one interrupt"
    tb.device.on_chain = None


@cocotb.test()
async def run_used_gather_pulled(dut):
    """A receive (pulled) queue's completions arriving while its ``used_event`` read is in
    flight wait for it and go out as one update (``gathered_queues``): the receive path's
    payload writes share the DMA write engine with the element and index writes. (Pushed
    queues publish them at once, ``run_used_gather``.)"""
    lat = 300
    tb = EngineTB(dut, seed=13, read_latency=(lat, lat + 4))
    await tb.reset()
    rx = tb.pulled_queues()[0]
    port = tb.port_of_queue[rx]
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    ring = tb.new_ring(32)
    ring.write_used_event(5)
    for h in range(8):
        ring.write_desc(h, 0x80000 + 0x800 * h, 1536, VirtqDescFlags.WRITE.value)
        ring.add(h)
    await tb.enable(rx, ring)
    tb.transport.set_driver_ok()
    chains = [await tb.device.fetch(port, rx) for _ in range(8)]
    await tb.wait_quiet()
    irqs = len(tb.transport.irqs)
    read, idx = await _complete_during_event_read(tb, rx, ring, chains)
    assert [i for i, _ in idx] == [1, 8], idx
    assert idx[1][1] > read.done_ns, (idx, read.done_ns)
    for i, c in enumerate(chains):
        assert ring.read_used_elem(i) == (c.head, i)
    assert len(tb.transport.irqs) == irqs + 1, "used_event 5 passed once: one interrupt"


@cocotb.test()
async def run_used_interleaved(dut):
    """Four queues' completions interleaved one by one (as two busy queue pairs complete
    them), at 500 ns host latency: a queue's ``used_event`` read in flight does not hold back
    the other queues' updates, nor its own next ones, so the entries are published at the
    rate of the writes, not one update per round trip (issue 9). Each queue's ``used_event``
    asks for its last entry: one interrupt per queue, after that entry's index write (a
    decision over several updates published meanwhile is still ``vring_need_event`` over
    them all)."""
    lat = 125                                   # cycles: 500 ns
    per_queue = 24
    tb = EngineTB(dut, seed=12, read_latency=(lat, lat + 4))
    await tb.reset()
    rng = random.Random(12)
    queues = tb.pushed_queues()[:4]
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    rings = {}
    chains = collections.defaultdict(list)
    tb.device.on_chain = lambda c: chains[c.queue].append(c)
    for q in queues:
        rings[q] = ring = tb.new_ring(64)
        ring.write_used_event(per_queue - 1)
        alloc = DescAllocator(64, rng)
        for _ in range(per_queue):
            ring.add(random_chain(ring, rng, alloc, indirect_ok=False, max_descs=1)[0])
        await tb.enable(q, ring)
    tb.transport.set_driver_ok()
    for q in queues:
        tb.transport.notify(q)
    await tb.wait_quiet(until=lambda: all(len(chains[q]) == per_queue for q in queues))
    await ClockCycles(dut.clk, 3 * lat)         # the early reads are back
    start = len(tb.dma.log)
    irqs = len(tb.transport.irqs)
    t0 = tb.dma.now_ns()
    for i in range(per_queue):
        for q in queues:
            tb.device.complete(q, chains[q][i].head, i)
    await tb.wait_quiet()
    log = tb.dma.log[start:]
    total = per_queue * len(queues)
    idx_writes = {q: [(int.from_bytes(a.data, "little"), a.time_ns) for a in log
                      if a.kind == "wr" and a.host_addr == rings[q].used_idx_addr]
                  for q in queues}
    for q in queues:
        assert idx_writes[q][-1][0] == per_queue, (q, idx_writes[q])
        for i, c in enumerate(chains[q]):
            assert rings[q].read_used_elem(i) == (c.head, i)
    end = max(w[-1][1] for w in idx_writes.values())
    cycles = (end - t0) / CLOCK_NS
    updates = sum(len(w) for w in idx_writes.values())
    reads = sum(1 for a in log if a.kind == "rd" and
                a.host_addr in {rings[q].used_event_addr for q in queues})
    dut._log.info(f"{total} entries of 4 interleaved queues published in {cycles:.0f} cycles "
                  f"({cycles / total:.1f} per entry), {updates} index writes, "
                  f"{reads} used_event reads")
    # One update per round trip (the used writer of wave 7) took 158 cycles per entry here.
    assert cycles / total <= 40, (cycles, total)
    got = collections.Counter(q for _, q in tb.transport.irqs[irqs:])
    assert got == {q: 1 for q in queues}, got
    for t, q in tb.transport.irqs[irqs:]:
        assert t > idx_writes[q][-1][1], (q, t, idx_writes[q])
    tb.device.on_chain = None


async def _pulled_burst(tb, heads, stride_bytes=0x800):
    """Post single-buffer receive chains at ``heads`` on the first pulled queue, ask for all of
    them at once, and return the chains with the cycles from the first fetch to the last
    answer."""
    rx = tb.pulled_queues()[0]
    port = tb.port_of_queue[rx]
    tb.transport.set_features(event_idx=True, indirect_desc=True)
    ring = tb.new_ring(256)
    for h in heads:
        ring.write_desc(h, 0x80000 + stride_bytes * h, 1536, VirtqDescFlags.WRITE.value)
        ring.add(h)
    await tb.enable(rx, ring)
    tb.transport.set_driver_ok()
    t0 = tb.dma.now_ns()
    for _ in heads:
        tb.device.fetch_src[port].send_nowait(rx)
    await tb.wait_quiet(until=lambda: len(tb.device.answers[port]) == len(heads))
    got = list(tb.device.answers[port])
    assert [c.head for c in got] == list(heads)
    assert all(c.segments[0].addr == 0x80000 + stride_bytes * c.head for c in got)
    return got, (got[-1].time_ns - t0) / CLOCK_NS


@cocotb.test()
async def run_pulled_rate(dut):
    """Fetches of a pulled queue back to back, the descriptors in one window and the DMA
    answering at once: one chain every 9 cycles (the next fetch is taken in the cycle the
    current one is answered)."""
    tb = EngineTB(dut, seed=15, read_latency=1, write_latency=1, reorder=False)
    await tb.reset()
    n = tb.params["avail_batch"]
    got, _ = await _pulled_burst(tb, list(range(n)))
    cycles = (got[-1].time_ns - got[3].time_ns) / CLOCK_NS / (n - 4)
    dut._log.info(f"{cycles:.2f} cycles per chain")
    assert cycles <= 9.0, f"{cycles:.2f} cycles per chain"


@cocotb.test()
async def run_pulled_prefetch(dut):
    """Receive chains whose heads are far apart (each in a window of its own), DMA round trip
    150 cycles: their descriptors are read ahead by the prefetcher, several at a time, instead
    of one window read (a round trip) per chain."""
    lat = 150
    tb = EngineTB(dut, seed=16, read_latency=lat, write_latency=1, reorder=False)
    await tb.reset()
    n = tb.params["avail_batch"]
    window = tb.params.get("walk_window") or tb.params["desc_window"]
    got, cycles = await _pulled_burst(tb, [(2 * window * i) % 256 for i in range(n)])
    dut._log.info(f"{n} chains in {cycles:.0f} cycles")
    # avail->idx, the ring, then n chains, prefetch_slots at a time (not one round trip each)
    slots = tb.params["prefetch_slots"]
    assert cycles < (2 + 1.5 * n / slots) * lat + 16 * n, f"{cycles:.0f} cycles"


def describe(scenario):
    lines = [f"event_idx={scenario.event_idx} indirect={scenario.indirect_desc} "
             f"ooo={scenario.out_of_order} batch_p={scenario.batch_p:.2f}"]
    for p in scenario.plans:
        lines.append(f"  q{p.queue} size {p.size} start {p.start:#x} pulled {p.pulled} "
                     f"chains {p.chains} fault {p.fault}@{p.fault_phase}/{p.fault_at} "
                     f"error {p.error} expected {len(p.expected)} got {len(p.received)}")
    return "\n".join(lines)


# -- pytest launchers ------------------------------------------------------------------------

#: virtio-blk shaped, every queue pushed on one port: the benchmark's engine (default
#: prefetching; tables over 16 entries are read by the walker itself).
BLK = dict(BENCH_PARAMS, data_width=64)


BLK_TESTS = ["run_basic", "run_malformed", "run_dma_errors", "run_used_elem_dropped",
             "run_event_idx_race",
             "run_batching", "run_irq_moderation", "run_irq_refill_early_commits",
             "run_irq_refill_gate", "run_irq_refill_gate_flags", "run_irq_shadowed",
             "run_early_used_event",
             "run_queue_reset",
             "run_stale_completion",
             "run_device_reset",
             "run_config_errors", "run_doorbells", "run_used_gather", "run_used_interleaved",
             "run_fast_refill", "run_notification_data", "run_random"]


#: virtio-net shaped: receive queues (even) pulled on port 0, transmit queues (odd) and the
#: control queue (the last) pushed on port 1.
#: Small prefetch slots so that slots are reused within a batch and larger tables are walked
#: without them.
NET = {"data_width": 256, "queue_count": 33, "max_queue_size": 1024, "max_chain": 24,
       "max_indirect": 20, "avail_batch": 16, "used_batch": 16, "desc_window": 8,
       "walk_window": 16, "prefetch_slots": 4, "prefetch_table": 8,
       "port_of_queue": [q % 2 if q < 32 else 1 for q in range(33)], "pulled_ports": [0]}

NET_TESTS = ["run_pulled", "run_basic", "run_used_gather", "run_used_gather_pulled",
             "run_random", "run_walk_window",
             "run_pulled_sessions", "run_walk_rate", "run_walk_stream", "run_walk_batch_gap",
             "run_pulled_rate", "run_pulled_prefetch"]


@pytest.mark.sim
def test_engine_blk(simulate):
    design = harness.build(VirtqueueEngine, BLK, name="virtqueue_blk", debug_aliases=False)
    simulate(design, "test_virtqueue", testcase=BLK_TESTS)


@pytest.mark.sim
def test_engine_net(simulate):
    design = harness.build(VirtqueueEngine, NET, name="virtqueue_net", debug_aliases=False)
    simulate(design, "test_virtqueue", testcase=NET_TESTS)


@pytest.mark.sim
def test_notify_figure():
    """QD 32 streaming with EVENT_IDX and a Linux-like driver: at most 0.05 doorbells and
    0.05 interrupts per request (issue 6), and EVENT_IDX does no worse than flags alone
    (moderation holds the interrupt either way, and a driver that reaps ~20 completions per
    interrupt resubmits them with one kick, so flags alone now reach the same figures).

    The device completes a request every 1.05 us (the whole 128-bit blk device's rate for
    4 KiB requests); the engine alone (no header read by a device, a DMA model instead of the
    PCIe link) refills faster than the whole device, so its low-water mark is 10 chains, not
    the default 14 the whole device needs (``virtio-pcie bench notify`` measures that one)."""
    rows = notify_bench(widths=(64,), qds=(32,), event_idx=(True, False), requests=400,
                        service_ns=1050, latency_ns=1000, irq_low_water=10)
    ev = next(r for r in rows if r["event_idx"])
    flags = next(r for r in rows if not r["event_idx"])
    assert ev["doorbells_per_req"] <= 0.05, rows
    assert ev["interrupts_per_req"] <= 0.05, rows
    assert flags["doorbells_per_req"] + flags["interrupts_per_req"] >= \
        ev["doorbells_per_req"] + ev["interrupts_per_req"], rows


#: Thousands of ring states (run before each merge; not in the default run).
FUZZ_SCENARIOS = 2000


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("design", ["BLK", "NET"])
def test_engine_fuzz(simulate, design):
    params = {"BLK": BLK, "NET": NET}[design]
    build = harness.build(VirtqueueEngine, params, name=f"virtqueue_{design.lower()}",
                          debug_aliases=False)
    simulate(build, "test_virtqueue", testcase=["run_random"],
             env={"VQ_SCENARIOS": str(FUZZ_SCENARIOS), "VQ_SEED": "20260"})

