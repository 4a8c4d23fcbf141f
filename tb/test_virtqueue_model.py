# SPDX-License-Identifier: BSD-2-Clause
"""The virtqueue reference model and ring builder on their own (no simulator), and the engine's
parameter checks.

The ring builder knows what it meant to write; the model reads only memory. They must agree on
every valid chain, and the model must find every malformation with the code the builder meant.
"""

import random

import pytest

from virtio_pcie.spec.virtio import vring_need_event
from virtio_pcie.virtio.virtqueue import VirtqueueEngine
from virtio_pcie_tb.models.dma_memory import DmaMemory
from virtio_pcie_tb.models.virtq_ring import (INDIRECT, MALFORMATIONS, NEXT, WRITE,
                                              DescAllocator, SplitRing, malformed_chain,
                                              pack_desc, random_chain, unpack_desc)
from virtio_pcie_tb.models.virtqueue_model import (QueueAudit, VirtqueueModel, audit_dma,
                                                   need_interrupt)

pytestmark = pytest.mark.unit


def test_desc_packing_matches_c_struct():
    import struct
    raw = pack_desc(0x1122334455667788, 0x1000, NEXT | WRITE, 7)
    assert raw == struct.pack("<QIHH", 0x1122334455667788, 0x1000, 3, 7)
    assert unpack_desc(raw) == (0x1122334455667788, 0x1000, 3, 7)


@pytest.mark.parametrize("seed", range(40))
def test_model_agrees_with_builder(seed):
    rng = random.Random(seed)
    mem = DmaMemory()
    size = rng.choice([1, 2, 8, 64, 256])
    ring = SplitRing(mem, size, start=rng.choice([0, 0xFFFA]))
    alloc = DescAllocator(size, rng, shuffle=rng.random() < 0.5)
    model = VirtqueueModel(max_chain=32, max_indirect=32)
    want = []
    while True:
        made = random_chain(ring, rng, alloc, indirect_ok=True, max_descs=32)
        if made is None or len(want) == size:
            break
        ring.add(made[0])
        want.append(made)
    result = model.walk_queue(ring, last_avail=ring.start, indirect_desc=True)
    assert result.error is None
    assert [(c.head, c.segments) for c in result.chains] == want


@pytest.mark.parametrize("kind", sorted(MALFORMATIONS))
@pytest.mark.parametrize("seed", range(6))
def test_model_finds_malformations(kind, seed):
    rng = random.Random(seed)
    mem = DmaMemory()
    size = 16
    ring = SplitRing(mem, size)
    alloc = DescAllocator(size, rng)
    model = VirtqueueModel(max_chain=16, max_indirect=16)
    good = random_chain(ring, rng, alloc, indirect_ok=True, max_descs=4)
    ring.add(good[0])
    ring.add(malformed_chain(ring, rng, alloc, kind, max_chain=16, max_indirect=16))
    result = model.walk_queue(ring, last_avail=0, indirect_desc=True)
    assert result.error == MALFORMATIONS[kind]
    assert result.error_index == 1
    assert [c.head for c in result.chains] == [good[0]]


def test_model_error_cases():
    mem = DmaMemory()
    ring = SplitRing(mem, 4)
    model = VirtqueueModel(max_chain=8, max_indirect=8)
    buf = mem.alloc_addr(64)
    # indirect without the feature
    table = mem.alloc_addr(32, 16)
    mem.write(table, pack_desc(buf, 64, 0))
    ring.write_desc(0, table, 16, INDIRECT)
    r = model.walk_chain(mem, size=4, desc=ring.desc, head=0, indirect_desc=False)
    assert r.error == "INDIRECT_FEATURE"
    # zero-length descriptors are skipped; a chain of only those has no segments
    ring.write_desc(1, buf, 0, NEXT, 2)
    ring.write_desc(2, buf, 0, WRITE)
    r = model.walk_chain(mem, size=4, desc=ring.desc, head=1, indirect_desc=True)
    assert r.error is None and r.segments == []
    # the WRITE flag of an indirect descriptor is ignored
    ring.write_desc(3, table, 16, INDIRECT | WRITE)
    r = model.walk_chain(mem, size=4, desc=ring.desc, head=3, indirect_desc=True)
    assert r.error is None and [s.write for s in r.segments] == [False]
    # avail idx moved by more than the size
    ring.write_avail_idx(5)
    assert model.walk_queue(ring, last_avail=0, indirect_desc=True).error == "AVAIL_IDX"
    # exactly the size is fine
    for i in range(4):
        ring.write_avail_entry(i, 1)
    ring.write_avail_idx(4)
    assert model.walk_queue(ring, last_avail=0, indirect_desc=True).error is None


def test_need_interrupt():
    assert need_interrupt(event_idx=True, old=0, new=1, used_event=0)
    assert not need_interrupt(event_idx=True, old=1, new=2, used_event=0)
    assert need_interrupt(event_idx=True, old=0xFFFE, new=2, used_event=0xFFFF)  # across wrap
    assert need_interrupt(event_idx=False, old=0, new=1, avail_flags=0)
    assert not need_interrupt(event_idx=False, old=0, new=1, avail_flags=1)
    # the batch rule: one decision over the whole update
    assert need_interrupt(event_idx=True, old=10, new=20, used_event=15) == \
        vring_need_event(15, 20, 10)
    # the early read: "notify" from either value notifies (spurious at worst); the re-read
    # after the index write covers a driver that re-armed after the early read
    assert need_interrupt(event_idx=True, old=1, new=2, used_event=1, early=0)
    assert need_interrupt(event_idx=True, old=1, new=2, used_event=0, early=1)
    assert not need_interrupt(event_idx=True, old=1, new=2, used_event=0, early=0)
    assert need_interrupt(event_idx=False, old=0, new=1, avail_flags=0, early=1)
    assert need_interrupt(event_idx=False, old=0, new=1, avail_flags=1, early=0)
    assert not need_interrupt(event_idx=False, old=0, new=1, avail_flags=1, early=1)


def test_audit_catches_bad_accesses():
    from virtio_pcie_tb.models.dma_client_model import DmaAccess
    from virtio_pcie.dma.interface import DmaError
    mem = DmaMemory()
    ring = SplitRing(mem, 8)
    qa = QueueAudit(ring, 0, 2, 0, 1, [], True)
    ok = DmaError.OK
    idx = DmaAccess("rd", ring.avail_flags_addr, 4, 0, 0, b"", ok, 10, done_ns=20)
    entries = DmaAccess("rd", ring.avail_ring_addr(0), 4, 0, 0, b"", ok, 30)
    assert audit_dma([idx, entries], [qa]) == []
    early = DmaAccess("rd", ring.avail_ring_addr(0), 4, 0, 0, b"", ok, 15)
    assert audit_dma([idx, early], [qa])          # before the idx read completed
    beyond = DmaAccess("rd", ring.avail_ring_addr(0), 6, 0, 0, b"", ok, 30)
    assert audit_dma([idx, beyond], [qa])         # slot 2 not published
    used = DmaAccess("wr", ring.used_elem_addr(1), 8, 0, 0, b"", ok, 40)
    assert audit_dma([used], [qa])                # slot 1 not completed
    stray = DmaAccess("wr", ring.used_flags_addr, 2, 0, 0, b"", ok, 40)
    assert audit_dma([stray], [qa])


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("kwargs, match", [
    (dict(data_width=96, queue_count=4), "data_width"),
    (dict(data_width=64, queue_count=0), "queue_count"),
    (dict(data_width=64, queue_count=4, max_queue_size=100), "max_queue_size"),
    (dict(data_width=64, queue_count=4, max_queue_size=65536), "max_queue_size"),
    (dict(data_width=64, queue_count=4, port_of_queue=[0, 1]), "port_of_queue"),
    (dict(data_width=64, queue_count=4, port_of_queue=[0, 2, 0, 2]), "every port"),
    (dict(data_width=64, queue_count=4, pulled_ports=[1]), "pulled_ports"),
    (dict(data_width=64, queue_count=4, max_chain=0), "max_chain"),
    (dict(data_width=64, queue_count=4, max_chain=8, max_indirect=9), "max_indirect"),
    (dict(data_width=64, queue_count=4, avail_batch=0), "avail_batch"),
    (dict(data_width=64, queue_count=4, desc_window=0), "desc_window"),
    (dict(data_width=64, queue_count=4, walk_window=65), "walk_window"),
    (dict(data_width=64, queue_count=4, walk_window=0), "walk_window"),
    (dict(data_width=64, queue_count=4, used_batch=0), "used_batch"),
    (dict(data_width=64, queue_count=4, prefetch_slots=3), "prefetch_slots"),
    (dict(data_width=64, queue_count=4, prefetch_table=0), "prefetch_table"),
    (dict(data_width=64, queue_count=4, avail_lookahead=1), "avail_lookahead"),
])
def test_engine_parameters_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VirtqueueEngine(**kwargs)


def test_engine_many_queues_elaborates():
    """256 queues, three ports: per-queue state in memories, it builds."""
    from amaranth.back import rtlil

    from virtio_pcie_tb.harness import component_ports
    engine = VirtqueueEngine(data_width=128, queue_count=256, max_queue_size=32768,
                             port_of_queue=[q % 3 for q in range(256)], pulled_ports=[0])
    text = rtlil.convert(engine, ports=component_ports(engine))
    assert "cfg_mem" in text
