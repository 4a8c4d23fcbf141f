# SPDX-License-Identifier: BSD-2-Clause
"""Ring-state scenarios for the virtqueue engine, checked against the reference model.

A :class:`Scenario` makes a ring state for a few queues with the ring builder (valid chains of
every kind, optionally one malformed chain, an avail index moved too far, an indirect table
whose read fails), lets the engine process it with a device that completes in and out of order
and in batches, and then compares everything observable with :mod:`.models.virtqueue_model`:
the chains each queue presented, the errors, the used ring, every used index update against the
batch rules, every interrupt decision, avail_event, and every DMA access (:func:`audit_dma`).
"""

import dataclasses
import random

import cocotb
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time

from virtio_pcie.dma.interface import DmaError
from virtio_pcie.spec.virtio import vring_need_event

from .models.virtq_ring import MALFORMATIONS, DescAllocator, malformed_chain, random_chain
from .models.virtqueue_model import QueueAudit, audit_dma, need_interrupt

__all__ = ["QueuePlan", "Scenario", "random_scenario"]

SIZES = [1, 2, 4, 8, 16, 32, 64, 256]


@dataclasses.dataclass
class QueuePlan:
    queue: int
    size: int
    start: int = 0
    pulled: bool = False
    chains: list = dataclasses.field(default_factory=list)   # per phase: chains to publish
    # what to break, once: a MALFORMATIONS key, "avail_idx", "indirect_feature", "dma_table"
    fault: str = None
    fault_phase: int = 0
    fault_at: int = 0              # position of the bad chain in its phase
    shuffle: bool = True           # random descriptor placement
    no_interrupt: bool = False     # avail->flags NO_INTERRUPT (without EVENT_IDX)
    used_event: int = None         # used_event offset from start (with EVENT_IDX)

    # filled in while running
    ring: object = None
    alloc: object = None
    expected: list = dataclasses.field(default_factory=list)
    error: str = None
    tables: list = dataclasses.field(default_factory=list)
    consumed: int = 0              # valid chains the engine takes
    published: int = 0
    received: list = dataclasses.field(default_factory=list)
    completions: list = dataclasses.field(default_factory=list)   # (head, len, batch_end)
    failing: set = dataclasses.field(default_factory=set)
    doorbells: list = dataclasses.field(default_factory=list)     # (ns, index) carried


def random_pauses(seed, probability):
    rng = random.Random(seed)
    while True:
        yield rng.random() < probability


class Scenario:
    """Run plans (one per queue) on an :class:`~.virtq_tb.EngineTB` and check the result."""

    def __init__(self, tb, rng, plans, *, event_idx, indirect_desc, phases=1,
                 out_of_order=True, batch_p=0.3, device_delay=(1, 40), port_pause=0.0,
                 completion_gaps=0.0):
        self.tb = tb
        self.rng = rng
        self.plans = plans
        self.event_idx = event_idx
        self.indirect_desc = indirect_desc
        self.phases = phases
        self.out_of_order = out_of_order
        self.batch_p = batch_p
        self.device_delay = device_delay
        self.port_pause = port_pause
        self.completion_gaps = completion_gaps
        self.by_queue = {p.queue: p for p in plans}
        self.pending = []
        self.failures = []

    # -- building ------------------------------------------------------------------------------
    def _phase(self, plan, phase):
        """Publish this phase's chains; returns True if anything was published."""
        tb, rng, ring = self.tb, self.rng, plan.ring
        if plan.error:
            return False
        n = plan.chains[phase] if phase < len(plan.chains) else 0
        last_avail = (plan.start + plan.consumed) & 0xFFFF
        fault_here = plan.fault is not None and plan.fault_phase == phase
        heads = []
        for i in range(n + (1 if fault_here and plan.fault not in ("avail_idx",) else 0)):
            if fault_here and i == plan.fault_at and plan.fault in MALFORMATIONS:
                try:
                    heads.append(malformed_chain(ring, rng, plan.alloc, plan.fault,
                                                 max_chain=tb.max_chain,
                                                 max_indirect=tb.max_indirect))
                except AssertionError:
                    plan.fault = None          # no room for it: this run stays valid
                continue
            if fault_here and i == plan.fault_at and plan.fault == "indirect_feature":
                made = random_chain(ring, rng, plan.alloc, indirect_ok=True,
                                    max_descs=tb.max_chain,
                                    max_table=tb.max_indirect, kind="indirect")
            elif fault_here and i == plan.fault_at and plan.fault == "dma_table":
                made = random_chain(ring, rng, plan.alloc, indirect_ok=True,
                                    max_descs=tb.max_chain,
                                    max_table=tb.max_indirect, kind="indirect")
                if made is not None:
                    table = ring.read_desc(made[0])[0]
                    plan.failing.add(table)
            else:
                made = random_chain(ring, rng, plan.alloc, indirect_ok=self.indirect_desc,
                                    max_descs=tb.max_chain,
                                    max_table=tb.max_indirect)
            if made is None:
                break
            heads.append(made[0])
        for h in heads:
            ring.add(h, publish=False)
        if fault_here and plan.fault == "avail_idx":
            ring.write_avail_idx((last_avail + plan.size + rng.randint(1, 200)) & 0xFFFF)
        else:
            ring.publish()
        plan.published += len(heads)
        result = tb.model.walk_queue(ring, last_avail=last_avail,
                                     indirect_desc=self.indirect_desc,
                                     failing_reads=plan.failing)
        plan.expected += [c.key(plan.queue) for c in result.chains]
        plan.tables += result.tables
        plan.consumed += len(result.chains)
        if result.error:
            plan.error = result.error
        return bool(heads) or plan.fault == "avail_idx" and fault_here

    # -- the device --------------------------------------------------------------------------------
    def _on_chain(self, chain):
        if chain.empty:
            return
        plan = self.by_queue.get(chain.queue)
        if plan is None:
            self.failures.append(f"chain from unexpected queue {chain.queue}")
            return
        plan.received.append(chain)
        self.pending.append(chain)

    async def _device(self):
        rng, dev = self.rng, self.tb.device
        while True:
            await ClockCycles(self.tb.dut.clk, rng.randint(*self.device_delay))
            if not self.pending:
                continue
            k = rng.randint(1, len(self.pending))
            if self.out_of_order:
                picked = rng.sample(self.pending, k)
            else:
                picked = self.pending[:k]
            for c in picked:
                self.pending.remove(c)
            # Group per queue; a group may form one batch (batch_end on its last entry only).
            groups = {}
            for c in picked:
                groups.setdefault(c.queue, []).append(c)
            for q, chains in groups.items():
                plan = self.by_queue[q]
                as_batch = rng.random() < self.batch_p
                for i, c in enumerate(chains):
                    writable = sum(s.len for s in c.writable)
                    length = rng.randint(0, writable) if writable else 0
                    end = (i == len(chains) - 1) or not as_batch
                    plan.completions.append((c.head, length, end))
                    dev.complete(q, c.head, length, end)
                    if rng.random() < self.completion_gaps:
                        # spread in time (a batch's entries too: publication must wait)
                        await ClockCycles(self.tb.dut.clk, rng.randint(1, 60))

    async def _fetch_all(self, plan):
        """Pull a pulled queue until it answers empty."""
        port = self.tb.port_of_queue[plan.queue]
        while True:
            chain = await self.tb.device.fetch(port, plan.queue)
            if chain.empty:
                return

    # -- running -------------------------------------------------------------------------------
    async def run(self):
        tb = self.tb
        tr = tb.transport
        await tr.device_reset()
        tb.dma.log.clear()
        tr.irqs.clear()
        tb.device.on_chain = self._on_chain
        for p in range(tb.ports):
            tb.device.set_backpressure(p, random_pauses(self.rng.random(), self.port_pause)
                                       if self.port_pause else None)
        fail_tables = set()
        tb.dma.error_hook = lambda kind, req: (DmaError.COMPLETER_ABORT if kind == "rd" and
                                               req["host_addr"] in fail_tables else None)
        tr.set_features(event_idx=self.event_idx, indirect_desc=self.indirect_desc)
        errors_before = tr.counters()["errors"]
        needs_before = tr.needs_reset_events
        for plan in self.plans:
            plan.ring = tb.new_ring(plan.size, plan.start)
            plan.alloc = DescAllocator(plan.size, self.rng, shuffle=plan.shuffle)
            if self.event_idx and plan.used_event is not None:
                plan.ring.write_used_event((plan.start + plan.used_event) & 0xFFFF)
            if plan.no_interrupt:
                plan.ring.write_avail_flags(1)
            self._phase(plan, 0)
            fail_tables |= plan.failing
            await tb.enable(plan.queue, plan.ring)
        tr.set_driver_ok()
        device = cocotb.start_soon(self._device())
        try:
            for phase in range(self.phases):
                if phase:
                    for plan in self.plans:
                        old = plan.ring.avail_idx
                        if self._phase(plan, phase) and not plan.pulled:
                            self._kick(plan, old)
                        fail_tables |= plan.failing
                for plan in self.plans:
                    if plan.pulled:
                        await self._fetch_all(plan)
                await tb.wait_quiet(until=self._all_done)
                self._check_avail_event(phase)
        finally:
            device.cancel()
            tb.device.on_chain = None
        self._check(errors_before, needs_before)
        if self.failures:
            raise AssertionError("\n".join(self.failures[:20]))

    def _kick(self, plan, old):
        """A Linux driver's kick decision (virtqueue_kick_prepare) after publishing from avail
        index ``old``: with EVENT_IDX only if vring_need_event(avail_event, new, old)."""
        ring = plan.ring
        new = ring.read_avail_idx()
        if self.event_idx and not vring_need_event(ring.read_avail_event(), new, old):
            return
        # The doorbell carries the index published (VIRTIO_F_NOTIFICATION_DATA; an engine
        # without fast_refill ignores it) most of the time; sometimes a wrong one, ahead of
        # what is published or behind it, which must change nothing.
        idx, roll = None, self.rng.random()
        if roll < 0.6:
            idx = new
            if roll < 0.06:
                idx = (new + self.rng.randint(1, 8)) & 0xFFFF
            elif roll < 0.12:
                idx = (new - self.rng.randint(1, 8)) & 0xFFFF
        if idx is not None:
            plan.doorbells.append((get_sim_time("ns"), idx))
        self.tb.transport.notify(plan.queue, idx=idx)

    def _all_done(self):
        for plan in self.plans:
            if len(plan.received) < len(plan.expected):
                return False
            if len(plan.completions) < len(plan.received):
                return False
        return not self.pending

    def _check_avail_event(self, phase):
        if not self.event_idx:
            return
        for plan in self.plans:
            if plan.pulled or plan.error:
                continue
            want = (plan.start + plan.consumed) & 0xFFFF
            got = plan.ring.read_avail_event()
            if got != want:
                self.failures.append(f"queue {plan.queue} phase {phase}: avail_event {got} "
                                     f"!= last_avail_idx {want}")

    def _check(self, errors_before, needs_before):
        tb, tr = self.tb, self.tb.transport
        f = self.failures
        if tb.device.errors:
            f += tb.device.errors
        audits = []
        n_errors = 0
        codes = set()
        for plan in self.plans:
            q, ring = plan.queue, plan.ring
            got = [c.key() for c in plan.received]
            if got != plan.expected:
                f.append(f"queue {q}: chains differ\n got {got}\nwant {plan.expected}")
            if plan.error:
                n_errors += 1
                codes.add(plan.error)
            # used ring: every completion, in order
            used = ring.read_used_idx()
            want_idx = (plan.start + len(plan.completions)) & 0xFFFF
            if used != want_idx:
                f.append(f"queue {q}: used->idx {used} != {want_idx}")
            n = len(plan.completions)
            for k in range(max(0, n - plan.size), n):
                head, length, _ = plan.completions[k]
                got_e = ring.read_used_elem(plan.start + k)
                if got_e != (head, length):
                    f.append(f"queue {q}: used[{plan.start + k}] {got_e} != {(head, length)}")
            if ring.read_used_flags() != 0:
                f.append(f"queue {q}: used->flags written")
            # used->idx updates: only at batch ends; interrupts as the model decides
            ends = set()
            for k, (_, _, end) in enumerate(plan.completions):
                if end:
                    ends.add((plan.start + k + 1) & 0xFFFF)
            old = plan.start
            want = []                   # statuses of the index writes that need an interrupt
            idx_writes = [a for a in tb.dma.log if a.kind == "wr" and
                          a.host_addr == ring.used_idx_addr]
            for a in idx_writes:
                new = int.from_bytes(a.data, "little")
                if new not in ends:
                    f.append(f"queue {q}: used->idx {new} published inside a batch")
                # used_event and avail->flags do not change during a scenario: the engine's
                # early read and its read after the index write see the same value.
                if need_interrupt(event_idx=self.event_idx, old=old, new=new,
                                  used_event=ring.read_used_event(),
                                  avail_flags=ring.read_avail_flags()):
                    want.append(a.done_ns)
                old = new
            # One decision may cover several index writes (the engine decides over all it
            # published since its last decision for the queue, and vring_need_event over them
            # all is the OR of theirs): no more interrupts than writes that need one, none
            # before the writes it answers, and one after the last such write.
            irq_times = sorted(t for t, iq in tr.irqs if iq == q)
            want_irqs = len(want)
            if (len(irq_times) > want_irqs or (want and not irq_times) or
                    any(t < want[k] for k, t in enumerate(irq_times)) or
                    (want and irq_times[-1] < want[-1])):
                f.append(f"queue {q}: {len(irq_times)} interrupts, model says {want_irqs} "
                         f"(event_idx {self.event_idx}, used_event {ring.read_used_event()}, "
                         f"flags {ring.read_avail_flags()}, idx writes "
                         f"{[int.from_bytes(a.data, 'little') for a in idx_writes]})")
            if irq_times and idx_writes and irq_times[0] < idx_writes[0].done_ns:
                f.append(f"queue {q}: interrupt before its used->idx write was sent")
            audits.append(QueueAudit(ring, plan.start, plan.published, plan.start,
                                     len(plan.completions), plan.tables, self.event_idx,
                                     plan.doorbells))
        f += audit_dma(tb.dma.log, audits)
        counters = tr.counters()
        if counters["errors"] - errors_before != n_errors:
            f.append(f"{counters['errors'] - errors_before} errors counted, model says "
                     f"{n_errors} ({codes})")
        if n_errors:
            code, _ = tr.last_error()
            if code.name not in codes:
                f.append(f"last error {code.name}, model says {codes}")
            if tr.needs_reset_events == needs_before:
                f.append("needs_reset never raised")
        elif tr.needs_reset_events != needs_before:
            f.append(f"needs_reset raised without an error ({tr.last_error()})")


def random_scenario(tb, rng, *, max_queues=3):
    """A random scenario for ``tb``'s engine."""
    event_idx = rng.random() < 0.6
    indirect_desc = rng.random() < 0.8
    pushed, pulled = tb.pushed_queues(), tb.pulled_queues()
    pool = pushed + pulled
    queues = rng.sample(pool, rng.randint(1, min(max_queues, len(pool))))
    plans = []
    for q in queues:
        size = rng.choice(SIZES)
        start = rng.choice([0, rng.randrange(0x10000), 0x10000 - rng.randint(1, 24)])
        phases = [rng.randint(0, min(size, 10)), rng.randint(0, min(size, 6))]
        plan = QueuePlan(q, size, start, pulled=q in pulled, chains=phases,
                         shuffle=rng.random() < 0.7, no_interrupt=rng.random() < 0.3,
                         used_event=rng.choice([None, 0, 1, 2, rng.randrange(0x10000),
                                                rng.randint(0, 12)]))
        r = rng.random()
        if r < 0.35:
            plan.fault = rng.choice(list(MALFORMATIONS))
        elif r < 0.40:
            plan.fault = "avail_idx"
        elif r < 0.45 and indirect_desc:
            plan.fault = "dma_table"
        elif r < 0.50 and not indirect_desc:
            plan.fault = "indirect_feature"
        if plan.fault:
            plan.fault_phase = rng.randint(0, 1)
            plan.fault_at = rng.randint(0, plan.chains[plan.fault_phase])
        plans.append(plan)
    return Scenario(tb, rng, plans, event_idx=event_idx, indirect_desc=indirect_desc,
                    phases=2, out_of_order=rng.random() < 0.7, batch_p=rng.random() * 0.5,
                    device_delay=rng.choice([(1, 5), (1, 40), (20, 200)]),
                    port_pause=rng.choice([0, 0, 0.3, 0.7]),
                    completion_gaps=rng.choice([0, 0, 0.2, 0.8]))

