# SPDX-License-Identifier: BSD-2-Clause
"""The DMA engine through cocotbext-pcie's root complex, at 64, 128 and 256 bits.

::

      host memory ◄── RootComplex ══ DutPcieDevice ══ tx_req / rx_cpl ══ DmaTestbench
                      (+ TlpRules)   (latency, reorder,                 ├ DmaEngine
                                      RCB split, hooks)                 ├ client 0: buffers
                                                                        └ client 1: buffers

Every transfer is checked byte for byte, together with the bytes around it (nothing else may
change), and every TLP the engine sends is checked against the PCIe request rules
(:class:`~virtio_pcie_tb.dma_env.TlpRules`). The sweeps follow verilog-pcie's DMA tests: host
offsets 0-3 and 4092-4095, lengths 1 to a few beats, 124-131, 1024, 4096 and multi-page, buffer
offsets within a row; plus random pauses and back-pressure on every stream, out-of-order and
RCB-split completions, every completion error, completion timeouts with late completions, Bus
Master Enable cleared in the middle of transfers, 64-bit addresses, immediate writes, write
status order and two clients at once.

The default run takes a representative subset at each width; the full cross products are the
``slow`` tests.
"""

import itertools
import random

import cocotb
import pytest
from cocotb.triggers import Combine, with_timeout

from virtio_pcie.dma.interface import DmaError
from virtio_pcie.spec.pcie import CplStatus, FmtType
from virtio_pcie_tb.designs.dma_testbench import TIMEOUT_CYCLES, build_dma_testbench
from virtio_pcie_tb.dma_env import DmaEnv
from virtio_pcie_tb.models.tlp import RawTlp, status_completion

GUARD = 64            # bytes checked on each side of a transfer
PAGE = 4096


def random_pause(seed, p=0.3):
    rng = random.Random(seed)
    while True:
        yield rng.random() < p


def cycle_pause():
    return itertools.cycle([1, 1, 1, 0])


class Checker:
    """Runs batches of transfers and checks them against host memory and a shadow of each
    client's read buffer. A batch places its transfers in separate host pages and separate
    buffer ranges (``GUARD`` bytes apart), submits them all at once and checks them all."""

    def __init__(self, env, seed=0):
        self.env = env
        self.rng = random.Random(seed)
        self.shadow = [bytearray(env.buffer_bytes) for _ in env.clients]
        self.host_pages = (len(env.host) // PAGE) - 2

    # -- planning ------------------------------------------------------------------------------
    def plan(self, cases, *, clients=(0,)):
        """Yield batches of (client, host_addr, ram_addr, length) for (host_off, ram_off, len)
        cases: host_off is the offset in a page (may reach into the next pages), ram_off the
        offset from a 64-byte boundary of the buffer."""
        size = self.env.buffer_bytes
        batch, page, ram = [], 1, {c: GUARD for c in clients}
        for i, (host_off, ram_off, length) in enumerate(cases):
            c = clients[i % len(clients)]
            pages = (host_off + length + GUARD) // PAGE + 2
            start = (ram[c] + 63) // 64 * 64 + ram_off
            if page + pages > self.host_pages or start + length + GUARD > size:
                if batch:
                    yield batch
                batch, page, ram = [], 1, {k: GUARD for k in clients}
                start = GUARD + ram_off
                if start + length + GUARD > size:
                    start = ram_off          # a transfer as large as the buffer: wraps
            host = self.env.host_base + page * PAGE + host_off
            batch.append((c, host, start % size, length))
            page += pages
            ram[c] = start + length + GUARD
        if batch:
            yield batch

    # -- reads ---------------------------------------------------------------------------------
    async def reads(self, batch, *, expect=DmaError.OK, timeout_us=4000):
        env = self.env
        datas = []
        for _c, host, _ram, length in batch:
            data = self.rng.randbytes(length)
            env.host_write(host, data)
            datas.append(data)
        transfers = [await env.clients[c].submit_read(host, ram, length)
                     for c, host, ram, length in batch]
        await with_timeout(Combine(*(t.done.wait() for t in transfers)), timeout_us, "us")
        for t in transfers:
            assert t.status == expect, f"{t}: expected {expect}"
        if expect != DmaError.OK:
            return transfers
        for (c, _host, ram, _length), data in zip(batch, datas, strict=True):
            shadow = self.shadow[c]
            for i, b in enumerate(data):
                shadow[(ram + i) % len(shadow)] = b
        for c, host, ram, length in batch:
            await self.check_buffer(c, ram - GUARD, length + 2 * GUARD,
                                    f"read {length} B host 0x{host:x} -> client {c} "
                                    f"buffer 0x{ram:x}")
        return transfers

    async def check_buffer(self, client, start, length, what):
        size = self.env.buffer_bytes
        length = min(length, size)
        start %= size
        got = await self.env.clients[client].read_buffer(start, length)
        shadow = self.shadow[client]
        want = bytes(shadow[(start + i) % size] for i in range(length))
        if got != want:
            bad = [i for i in range(length) if got[i] != want[i]]
            raise AssertionError(f"{what}: {len(bad)} bytes differ, first at buffer "
                                 f"0x{(start + bad[0]) % size:x} (got {got[bad[0]]:#04x}, "
                                 f"want {want[bad[0]]:#04x})")

    async def snapshot(self, client, start, length):
        return await self.env.clients[client].read_buffer(start % self.env.buffer_bytes, length)

    # -- writes --------------------------------------------------------------------------------
    async def writes(self, batch, *, imm=False, expect=DmaError.OK, timeout_us=4000):
        env = self.env
        datas, values = [], []
        for c, _host, ram, length in batch:
            data = self.rng.randbytes(length)
            if imm:
                values.append(int.from_bytes(data, "little"))
            else:
                await env.clients[c].write_buffer(ram, data)
                values.append(None)
            datas.append(data)
        before = [env.host_read(host - GUARD, length + 2 * GUARD)
                  for _c, host, _ram, length in batch]
        transfers = [await env.clients[c].submit_write(host, ram, length, imm=v)
                     for (c, host, ram, length), v in zip(batch, values, strict=True)]
        await with_timeout(Combine(*(t.done.wait() for t in transfers)), timeout_us, "us")
        for t in transfers:
            assert t.status == expect, f"{t}: expected {expect}"
        # A status comes when the last TLP left the engine; let the fabric land it.
        await env.cycles(30)
        for (_c, host, ram, length), data, old in zip(batch, datas, before, strict=True):
            after = env.host_read(host - GUARD, length + 2 * GUARD)
            want = old[:GUARD] + (data if expect == DmaError.OK else old[GUARD:-GUARD]) + \
                old[GUARD + length:]
            if after != want:
                bad = [i for i in range(len(want)) if after[i] != want[i]]
                raise AssertionError(f"write {length} B buffer 0x{ram:x} -> host 0x{host:x}: "
                                     f"{len(bad)} bytes differ, first at host "
                                     f"0x{host - GUARD + bad[0]:x}")
        return transfers


async def setup(dut, seed=0, **bridge_args):
    env = DmaEnv(dut, seed=seed, **bridge_args)
    await env.reset()
    chk = Checker(env, seed=seed)
    # The buffers keep what earlier tests in this simulation left in them.
    for k in range(len(env.clients)):
        chk.shadow[k][:] = await chk.snapshot(k, 0, env.buffer_bytes)
    return env, chk


def finish(env):
    """End-of-test checks: no rule broken, no stray status, and the statistics counters agree
    with what the host saw."""
    assert not env.rules.errors, env.rules.errors[:5]
    assert not env.dev.all_errors, env.dev.all_errors[:5]
    for c in env.clients:
        assert not c.unmatched, c.unmatched[:5]
    s = env.stats()
    rules = env.rules
    seen = {
        "rd_requests": sum(c.submitted["rd"] for c in env.clients),
        "wr_requests": sum(c.submitted["wr"] for c in env.clients),
        "rd_tlps": len(rules.mrd), "rd_bytes": sum(n for _t, _g, _a, n in rules.mrd),
        "wr_tlps": len(rules.mwr), "wr_bytes": sum(n for _t, _a, n in rules.mwr),
        "rd_completions": rules.completions,
    }
    assert {name: s[name] for name in seen} == seen, (s, seen)


def sweep_cases(data_width, full):
    """(host_off, ram_off, length) in the spirit of verilog-pcie's DMA sweeps."""
    B = data_width // 8
    host_offs = [0, 1, 2, 3, 4092, 4093, 4094, 4095]
    lengths = list(range(1, 2 * B + 3)) + list(range(124, 132)) + [1024, 4096, 8192 + 37]
    ram_offs = [0, 1, B - 1] if full else [0, 3]
    cases = []
    for host_off in host_offs:
        for ram_off in ram_offs:
            for length in lengths:
                cases.append((host_off, ram_off, length))
    if not full:
        rng = random.Random(data_width)
        # Every length and every host offset at least once, then a random sample.
        must = [(host_offs[i % 8], ram_offs[i % 2], n) for i, n in enumerate(lengths)]
        cases = must + rng.sample(cases, 40)
    return cases


# -- sweeps ---------------------------------------------------------------------------------------

async def read_sweep(dut, full):
    env, chk = await setup(dut)
    for batch in chk.plan(sweep_cases(env.data_width, full), clients=(0, 1)):
        await chk.reads(batch)
    finish(env)


async def write_sweep(dut, full):
    env, chk = await setup(dut)
    for batch in chk.plan(sweep_cases(env.data_width, full), clients=(0, 1)):
        await chk.writes(batch)
    finish(env)


@cocotb.test()
async def run_read_sweep(dut):
    await read_sweep(dut, full=False)


@cocotb.test()
async def run_write_sweep(dut):
    await write_sweep(dut, full=False)


@cocotb.test()
async def run_read_sweep_full(dut):
    await read_sweep(dut, full=True)


@cocotb.test()
async def run_write_sweep_full(dut):
    await write_sweep(dut, full=True)


@cocotb.test()
@cocotb.parametrize(mps=[0, 1, 5], mrrs=[0, 2, 5])
async def run_sizes(dut, mps, mrrs):
    """Every Max_Payload_Size / Max_Read_Request_Size: TLPs never exceed them (TlpRules)."""
    env, chk = await setup(dut, seed=mps * 8 + mrrs)
    env.set_cfg(mps=mps, mrrs=mrrs)
    cases = [(5, 7, 9000), (4000, 0, 300), (0, 0, 4096), (64, 1, 1000)]
    for batch in chk.plan(cases, clients=(0, 1)):
        await chk.reads(batch)
        await chk.writes(batch)
    finish(env)


# -- flow control and completion order ------------------------------------------------------------

@cocotb.test()
@cocotb.parametrize(pauses=["cycle", "random"])
async def run_pauses(dut, pauses):
    """Idle cycles on the request and completion streams, back-pressure on tx_req; reads and
    writes of both clients at once."""
    env, chk = await setup(dut, latency_ns=200)
    gens = itertools.count()

    def gen():
        return cycle_pause() if pauses == "cycle" else random_pause(next(gens))
    env.dev.rx_cpl.set_idle_generator(gen())
    env.dev.tx_req.set_backpressure_generator(gen())
    for c in env.clients:
        c.rd_req.set_idle_generator(gen())
        c.wr_req.set_idle_generator(gen())
    rng = random.Random(5)
    cases = [(rng.choice([0, 1, 3, 4093]), rng.randrange(64), rng.choice([1, 7, 64, 130, 900,
                                                                         2000, 5000]))
             for _ in range(24)]
    for batch in chk.plan(cases, clients=(0, 1)):
        reads = cocotb.start_soon(chk.reads(batch[::2]))
        await chk.writes(batch[1::2])
        await reads
    finish(env)


@cocotb.test()
@cocotb.parametrize(rcb=[64, 128])
async def run_reorder_rcb(dut, rcb):
    """Completions of different tags in random order, each split at every RCB boundary, with
    the largest read requests (many completions per tag)."""
    env, chk = await setup(dut, latency_ns=300, reorder=True, reorder_window_ns=800, rcb=rcb,
                           seed=rcb)
    env.set_cfg(mrrs=5, rcb_128=rcb == 128)
    rng = random.Random(rcb)
    cases = [(rng.randrange(4096), rng.randrange(64), rng.choice([3, 100, 700, 3000, 9000]))
             for _ in range(20)]
    for batch in chk.plan(cases, clients=(0, 1)):
        await chk.reads(batch)
    finish(env)


@cocotb.test()
async def run_completion_credits(dut):
    """With the largest reads and a slow host, completion data outstanding stays within the
    completion buffer (16 KiB), and without extended tags only tags 0-31 are used."""
    env, chk = await setup(dut, latency_ns=2000)
    env.set_cfg(mrrs=5, extended_tag=False)
    cases = [(0, 0, 12000), (100, 0, 12000), (7, 5, 3000)] * 2
    for batch in chk.plan(cases, clients=(0, 1)):
        await chk.reads(batch)
    assert env.rules.max_outstanding > 8192, "the test did not load the completion buffer"
    assert max(tag for _t, tag, _a, _n in env.rules.mrd) < 32
    s = env.stats()
    assert s["rd_credit_starved"] > 0 or s["rd_tag_starved"] > 0
    finish(env)


@cocotb.test()
async def run_two_clients(dut):
    """Both clients keep the engine busy at once: requests are served in turn and every status
    goes to the client that asked."""
    env, chk = await setup(dut, latency_ns=500)
    per_client = 40
    firsts = {}
    for c in env.clients:
        c.log.setLevel("WARNING")
    host = env.host_base + PAGE
    data = bytes(range(256)) * 16
    env.host_write(host, data)
    transfers = []
    for i in range(per_client):
        for k, c in enumerate(env.clients):
            transfers.append(await c.submit_read(host + 8 * i, 1024 * k + 8 * i, 8 + i))
    await with_timeout(Combine(*(t.done.wait() for t in transfers)), 2000, "us")
    for k in range(len(env.clients)):
        mine = [t for t in transfers[k::len(env.clients)]]
        assert all(t.status == DmaError.OK for t in mine)
        firsts[k] = sorted(t.t_accept for t in mine)
    # Round robin: neither client waits for the other's whole run.
    assert abs(firsts[0][per_client // 2] - firsts[1][per_client // 2]) < 40 * 4
    for k in range(len(env.clients)):
        for i in range(per_client):
            t = transfers[len(env.clients) * i + k]
            for j in range(t.length):
                chk.shadow[k][t.ram_addr + j] = data[8 * i + j]
        await chk.check_buffer(k, 0, 1024 * k + 8 * per_client + 64, f"client {k}")
    finish(env)


# -- special requests -----------------------------------------------------------------------------

@cocotb.test()
async def run_high_addresses(dut):
    """From 4 GiB up the engine uses 4-DW headers, below it 3-DW ones (checked by
    TlpRules)."""
    env, chk = await setup(dut)
    line = 1 << 32
    assert env.high_base == line
    for host, length in ((line + GUARD, 64), (line + 4093, 700), (line + 8192 + 1, 5000)):
        batch = [(0, host, 128, length)]
        await chk.reads(batch)
        await chk.writes(batch)
    assert any(start >= line for _t, _tag, start, _n in env.rules.mrd)
    assert any(start >= line for _t, start, _n in env.rules.mwr)
    finish(env)


@cocotb.test()
async def run_immediate_writes(dut):
    """Immediate data (1-8 bytes) at every offset, including across a 4 KiB boundary."""
    env, chk = await setup(dut)
    cases = [(off, 0, n) for n in range(1, 9) for off in (0, 1, 2, 3, 5, 4092, 4093, 4095)]
    for batch in chk.plan(cases, clients=(0, 1)):
        await chk.writes(batch, imm=True)
    finish(env)


@cocotb.test()
async def run_write_status_order(dut):
    """Write statuses come back in request order, errors included, whatever the sizes."""
    env, chk = await setup(dut)
    c = env.clients[0]
    rng = random.Random(3)
    transfers = []
    host = env.host_base + PAGE
    for i in range(30):
        length = rng.choice([0, 1, 8, 64, 300, 2000, 4096])
        imm = rng.getrandbits(64) if length and length <= 8 and rng.random() < 0.5 else None
        transfers.append(await c.submit_write(host + 5 * i, 64 * i, length, imm=imm))
    await with_timeout(Combine(*(t.done.wait() for t in transfers)), 2000, "us")
    assert c.wr_order == [t.tag for t in transfers]
    for t in transfers:
        assert t.status == (DmaError.BAD_REQUEST if t.length == 0 else DmaError.OK), t
    finish(env)


@cocotb.test()
async def run_bad_requests(dut):
    """Length 0, a range past 2**64, immediate data over 8 bytes: BAD_REQUEST, nothing sent."""
    env, chk = await setup(dut)
    c = env.clients[1]
    results = [
        await c.read(env.host_base, 0, 0),
        await c.read(2**64 - 16, 0, 17),
        await c.write(env.host_base, 0, 0),
        await c.write(2**64 - 4, 0, 5),
        await c.write(env.host_base, 0, 9, imm=1),
    ]
    assert results == [DmaError.BAD_REQUEST] * 5, results
    assert not env.rules.mrd and not env.rules.mwr
    # The last bytes of the address space are a valid request (nothing is there: the host
    # answers with an error completion).
    ok = await c.read(2**64 - 16, 0, 16)
    assert ok in (DmaError.UNSUPPORTED_REQUEST, DmaError.COMPLETER_ABORT), ok
    await chk.reads([(1, env.host_base + 64, 0, 64)])
    finish(env)


# -- errors ---------------------------------------------------------------------------------------

def _final(cpl):
    """Whether a completion is the last one of its request (PCIe Base 4.0 §2.3.1.1)."""
    if cpl["cpl.status"] != CplStatus.SC.value or not cpl.payload:
        return True
    return (cpl["cpl.byte_count"] or 4096) <= len(cpl.payload) - (cpl["cpl.lower_address"] & 3)


def _cpl_hook(env, predicate, action, *, every=False):
    """Install a completion hook: for the first MRd matching ``predicate(request)``, its first
    completion (or, with ``every``, all of them) becomes ``action(request, cpl)`` (a TLP, a list
    of TLPs, or an empty list to drop it)."""
    state = {"req": None, "done": False}

    def hook(request, cpl):
        if state["req"] is None and not state["done"] and predicate(request):
            state["req"] = request
        if request is not state["req"]:
            return cpl
        first = not state["done"]
        if _final(cpl):
            state["req"] = None
        state["done"] = True
        return action(request, cpl) if (first or every) else cpl
    env.dev.completion_hook = hook


async def expect_error(env, chk, action, error, *, length=3000, host_off=8, client=0,
                       mrrs=2):
    """A read whose first matching completion gets ``action`` ends with ``error``; then the
    engine still reads correctly."""
    env.set_cfg(mrrs=mrrs)
    host = env.host_base + 9 * PAGE + host_off
    _cpl_hook(env, lambda req: req.address <= host < req.address + 4 * req.length_dw, action)
    t = await env.clients[client].submit_read(host, 256, length)
    status = await with_timeout(t.wait(), 200, "us")
    assert status == error, f"expected {error}, got {status}"
    env.dev.completion_hook = None
    await chk.reads([(client, env.host_base + 3 * PAGE + 1, 4096 + 5, 2000)])


@cocotb.test()
async def run_completion_errors(dut):
    """UR, CA, poisoned and malformed completions end the request with the matching error and
    set the matching event; the engine keeps working."""
    env, chk = await setup(dut, latency_ns=100)

    await expect_error(env, chk, lambda r, c: status_completion(c, CplStatus.UR),
                       DmaError.UNSUPPORTED_REQUEST)
    await expect_error(env, chk, lambda r, c: status_completion(c, CplStatus.CA),
                       DmaError.COMPLETER_ABORT)
    await expect_error(env, chk, lambda r, c: status_completion(c, CplStatus.CRS),
                       DmaError.MALFORMED)

    def poison(r, c):
        c["dw0.ep"] = 1
        return c
    await expect_error(env, chk, poison, DmaError.POISONED)

    def bad_byte_count(r, c):
        c["cpl.byte_count"] = (c["cpl.byte_count"] + 4) & 0xFFF
        return c
    await expect_error(env, chk, bad_byte_count, DmaError.MALFORMED)

    def bad_lower_address(r, c):
        c["cpl.lower_address"] = (c["cpl.lower_address"] + 4) & 0x7F
        return c
    await expect_error(env, chk, bad_lower_address, DmaError.MALFORMED)

    def short_payload(r, c):       # Length and payload one dword short of the Byte Count
        short = RawTlp(c.hdr, c.payload[:-4])
        short["dw0.length"] = c["dw0.length"] - 1
        return short
    await expect_error(env, chk, short_payload, DmaError.MALFORMED)

    def not_on_rcb(r, c):          # a split that does not end on an RCB boundary
        first = RawTlp(c.hdr, c.payload[:12])
        first["dw0.length"] = 3
        rest = RawTlp(c.hdr, c.payload[12:])
        rest["dw0.length"] = c["dw0.length"] - 3
        rest["cpl.byte_count"] = c["cpl.byte_count"] - (12 - (c["cpl.lower_address"] & 3))
        rest["cpl.lower_address"] = (c["cpl.lower_address"] & ~3) + 12
        return [first, rest]
    await expect_error(env, chk, not_on_rcb, DmaError.MALFORMED)

    # A completion lost (the first of several): the next one does not fit.
    await expect_error(env, chk, lambda r, c: [], DmaError.MALFORMED)

    def link_error(r, c):          # the link layer flags the TLP bad (e.g. discontinued)
        c.error = 1
        return c
    await expect_error(env, chk, link_error, DmaError.MALFORMED)

    counts = env.event_counts
    assert counts.get("received_master_abort") == 1, counts
    assert counts.get("received_target_abort") == 1, counts
    assert counts.get("master_data_parity_error") == 1, counts
    s = env.stats()
    assert s["cpl_malformed"] >= 6, s
    await env.wait_idle()
    finish(env)


@cocotb.test()
async def run_unexpected_completions(dut):
    """Completions for no outstanding read (unknown tag, another requester, a retired tag)
    are dropped and counted; nothing is written."""
    env, chk = await setup(dut)
    await chk.reads([(0, env.host_base + PAGE, 512, 300)])
    before = await chk.snapshot(0, 0, env.buffer_bytes)
    stray = RawTlp(payload=bytes(range(64)))
    stray["dw0.fmt_type"] = FmtType.CPLD.value
    stray["dw0.length"] = 16
    stray["cpl.byte_count"] = 64
    stray["cpl.requester_id"] = env.cfg["pcie_id"]
    for tag in (0, 1, 77, 200):            # retired or never used
        t = RawTlp(stray.hdr, stray.payload)
        t["cpl.tag"] = tag
        env.inject_completion(t)
    other = RawTlp(stray.hdr, stray.payload)
    other["cpl.requester_id"] = env.cfg["pcie_id"] ^ 0x100
    env.inject_completion(other)
    await env.cycles(100)
    assert await chk.snapshot(0, 0, env.buffer_bytes) == before
    assert env.stats()["cpl_unexpected"] == 5
    await chk.reads([(1, env.host_base + 2 * PAGE + 3, 100, 1000)])
    finish(env)


@cocotb.test()
async def run_timeout(dut):
    """A read never answered ends with TIMEOUT; its tag is quarantined, so its late completion
    is dropped even after newer reads used the engine; the engine keeps working."""
    env, chk = await setup(dut)
    stash = []
    host = env.host_base + 5 * PAGE
    _cpl_hook(env, lambda req: req.address == host, lambda r, c: stash.append(c) or [],
              every=True)
    env.host_write(host, b"\xAA" * 256)
    t = await env.clients[0].submit_read(host, 1024, 256)
    for _ in range(4):      # other reads go on meanwhile
        await chk.reads([(1, env.host_base + PAGE, 2048, 500)])
    status = await with_timeout(t.wait(), 3 * TIMEOUT_CYCLES * 4, "ns")
    assert status == DmaError.TIMEOUT
    waited = (t.t_done - t.t_submit) / 4
    assert TIMEOUT_CYCLES <= waited < TIMEOUT_CYCLES + 600, waited
    assert stash, "the hook did not hold the completion back"
    env.dev.completion_hook = None
    before = await chk.snapshot(0, 0, env.buffer_bytes)
    # Newer reads, then the late completion: dropped, nothing changes in the buffer.
    await chk.reads([(0, env.host_base + 2 * PAGE, 3000, 256)])
    before = await chk.snapshot(0, 0, env.buffer_bytes)
    for cpl in stash:
        env.inject_completion(cpl)
    await env.cycles(50)
    assert await chk.snapshot(0, 0, env.buffer_bytes) == before
    s = env.stats()
    assert s["rd_timeouts"] == 1 and s["cpl_unexpected"] == len(stash), s
    await chk.reads([(0, env.host_base + 3 * PAGE, 3000, 256)])
    # After twice the timeout the quarantined tag is back in the pool.
    await env.cycles(2 * TIMEOUT_CYCLES + 300)
    quarantined = [tag for _t, tag, addr, _n in env.rules.mrd if addr == host]
    assert quarantined
    n = len(env.rules.mrd)
    for _ in range(300 // 16):
        await chk.reads([(k % 2, env.host_base + (8 + k) * PAGE, 64 * k, 32)
                         for k in range(16)])
    assert quarantined[0] in [tag for _t, tag, _a, _n in env.rules.mrd[n:]]
    finish(env)


@cocotb.test()
async def run_timeout_partial(dut):
    """A request split over many tags, one of them never answered: TIMEOUT once every other
    tag is back; no byte lands after the status."""
    env, chk = await setup(dut, latency_ns=200)
    host = env.host_base + 6 * PAGE
    _cpl_hook(env, lambda req: req.address == host + 1024, lambda r, c: [], every=True)
    t = await env.clients[0].submit_read(host, 0, 4000)
    assert await with_timeout(t.wait(), 3 * TIMEOUT_CYCLES * 4, "ns") == DmaError.TIMEOUT
    env.dev.completion_hook = None
    after = await chk.snapshot(0, 0, 4096)
    await env.cycles(500)
    assert await chk.snapshot(0, 0, 4096) == after
    await chk.reads([(0, env.host_base + PAGE, 8192, 4000)])
    finish(env)


# -- reset ----------------------------------------------------------------------------------------

@cocotb.test()
async def run_reset(dut):
    """A reset leaves no tag active or quarantined (a timed-out tag is one before it): every
    tag is in the pool once, so none is used twice at a time (TlpRules), and all work."""
    env, chk = await setup(dut)
    env.set_cfg(mrrs=0)
    # Tag 20 times out and is quarantined (the read's 21 MRds use tags 0 to 20).
    _cpl_hook(env, lambda req: req.tag == 20, lambda r, c: [], every=True)
    t = await env.clients[0].submit_read(env.host_base + 5 * PAGE, 0, 21 * 128)
    assert await with_timeout(t.wait(), 3 * TIMEOUT_CYCLES * 4, "ns") == DmaError.TIMEOUT
    assert [tag for _t, tag, _a, _n in env.rules.mrd] == list(range(21))
    env.dev.completion_hook = None
    await env.reset()
    # Start once the pool is full and the timeout scanner has just begun its first round after
    # reset: a quarantine that survived the reset would put tag 20 in the pool a second time.
    await env.cycles(256 + 12)
    # Keep every tag busy for a while (3 µs latency), twice over.
    env.dev.latency_ns = 3000
    cases = [(k % 4, 0, 128 * 40 + k) for k in range(12)]
    for batch in chk.plan(cases, clients=(0, 1)):
        await chk.reads(batch)
    assert len({tag for _t, tag, _a, _n in env.rules.mrd}) == 256
    finish(env)


# -- Bus Master Enable ----------------------------------------------------------------------------

@cocotb.test()
async def run_bus_master(dut):
    """With Bus Master Enable clear nothing is issued and requests end with
    BUS_MASTER_DISABLED; cleared in the middle of large transfers, reads and writes end cleanly
    (no hang, no request after, no buffer write after a status); set again, all works."""
    env, chk = await setup(dut, latency_ns=1000)
    c0, c1 = env.clients
    env.set_bus_master(False)
    assert await c0.read(env.host_base, 0, 100) == DmaError.BUS_MASTER_DISABLED
    assert await c0.write(env.host_base, 0, 100) == DmaError.BUS_MASTER_DISABLED
    assert await c1.write(env.host_base, 0, 4, imm=5) == DmaError.BUS_MASTER_DISABLED
    assert not env.rules.mrd and not env.rules.mwr
    env.set_bus_master(True)

    env.dev.latency_ns = 3000
    env.set_cfg(mrrs=0, mps=0, extended_tag=False)     # many small TLPs, few tags
    host = env.host_base + 16 * PAGE
    rd = await c0.submit_read(host, 0, 12000)
    wr = await c1.submit_write(host + 8 * PAGE, 0, 12000)
    rd2 = await c1.submit_read(host, 12288, 2000)
    await env.cycles(200)
    env.set_bus_master(False)
    results = {}

    async def watch(t):
        results[t.tag, t.kind] = await t.wait()
        # After the status, the request's buffer range never changes again.
        if t.kind == "rd":
            client = env.clients[0] if t is rd else env.clients[1]
            snap = await client.read_buffer(t.ram_addr, t.length)
            await env.cycles(2000)
            assert await client.read_buffer(t.ram_addr, t.length) == snap, \
                "the buffer changed after the status"
    await with_timeout(Combine(*(cocotb.start_soon(watch(t)) for t in (rd, wr, rd2))), 500, "us")
    assert rd.status == DmaError.BUS_MASTER_DISABLED
    assert wr.status == DmaError.BUS_MASTER_DISABLED
    assert rd2.status in (DmaError.BUS_MASTER_DISABLED, DmaError.OK)
    await env.wait_idle()
    env.set_bus_master(True)
    env.dev.latency_ns = 0
    env.set_cfg()
    batch = [(0, env.host_base + PAGE + 3, 100, 3000), (1, env.host_base + 4 * PAGE, 7, 700)]
    await chk.reads(batch)
    await chk.writes(batch)
    finish(env)


# -- a small configuration ------------------------------------------------------------------------

@cocotb.test()
async def run_small_config(dut):
    """One client, 32 tags, two request slots, a 4 KiB completion buffer, a 2 KiB read budget:
    everything still works, one largest read at a time, with reordered split completions and a
    timeout, and the read budget bounds the reads outstanding."""
    env, chk = await setup(dut, latency_ns=400, reorder=True, rcb=64)
    env.set_cfg(mrrs=5, mps=5, extended_tag=True)
    rng = random.Random(11)
    cases = [(rng.randrange(4096), rng.randrange(64), rng.choice([1, 9, 200, 1500, 3000]))
             for _ in range(16)]
    for batch in chk.plan(cases):
        await chk.reads(batch)
        await chk.writes(batch)
    assert env.rules.max_outstanding <= 4096
    assert max(tag for _t, tag, _a, _n in env.rules.mrd) < 32
    host = env.host_base + 7 * PAGE
    _cpl_hook(env, lambda req: req.address == host, lambda r, c: [], every=True)
    t = await env.clients[0].submit_read(host, 0, 64)
    assert await with_timeout(t.wait(), 3 * TIMEOUT_CYCLES * 4, "ns") == DmaError.TIMEOUT
    env.dev.completion_hook = None
    for batch in chk.plan(cases[:6]):
        await chk.reads(batch)
    # Two 1500-byte reads would both be in progress (3000 bytes outstanding, within the
    # completion buffer); the 2 KiB budget lets one at a time go.
    env.rules.max_outstanding = 0
    for batch in chk.plan([(0, 0, 1500)] * 4):
        await chk.reads(batch)
    assert 1500 <= env.rules.max_outstanding <= 2048
    finish(env)


def build_small_config():
    from virtio_pcie_tb import harness
    from virtio_pcie_tb.designs.dma_testbench import DmaTestbench
    return harness.build(DmaTestbench, {
        "data_width": 64, "clients": 1, "buffer_bytes": 4096,
        "engine": {"tag_count": 32, "read_ops": 2, "cpl_buffer_bytes": 4096,
                   "cpl_buffer_headers": 65, "completion_timeout_cycles": TIMEOUT_CYCLES,
                   "read_budget": [2048]},
    }, name="dma_small", ports_only=True)


# -- pytest launchers -----------------------------------------------------------------------------

WIDTHS = [64, 128, 256]
DEFAULT = ["run_read_sweep", "run_write_sweep", "run_sizes", "run_pauses", "run_reorder_rcb",
           "run_completion_credits", "run_two_clients", "run_high_addresses",
           "run_immediate_writes", "run_write_status_order", "run_bad_requests",
           "run_completion_errors", "run_unexpected_completions", "run_timeout",
           "run_timeout_partial", "run_reset", "run_bus_master"]
FULL = ["run_read_sweep_full", "run_write_sweep_full"]


@pytest.mark.sim
@pytest.mark.parametrize("data_width", WIDTHS)
def test_dma(simulate, data_width):
    simulate(build_dma_testbench(data_width), "test_dma", testcase=DEFAULT)


@pytest.mark.sim
def test_dma_small_config(simulate):
    simulate(build_small_config(), "test_dma", testcase=["run_small_config"])


@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("data_width", WIDTHS)
def test_dma_full_sweeps(simulate, data_width):
    simulate(build_dma_testbench(data_width), "test_dma", testcase=FULL)


@pytest.mark.unit
@pytest.mark.parametrize("kwargs, message", [
    ({"data_width": 48}, "data_width"),
    ({"data_width": 64, "clients": 0}, "clients"),
    ({"data_width": 64, "tag_count": 16}, "tag_count"),
    ({"data_width": 64, "tag_count": 512}, "tag_count"),
    ({"data_width": 64, "read_ops": 0}, "op_count"),
    ({"data_width": 64, "cpl_buffer_bytes": 2048}, "cpl_buffer_bytes"),
    ({"data_width": 64, "cpl_buffer_headers": 8}, "cpl_buffer_headers"),
    ({"data_width": 64, "completion_timeout_cycles": 0}, "completion_timeout_cycles"),
    ({"data_width": 64, "clients": 2, "read_budget": (4096,)}, "read_budget"),
    ({"data_width": 64, "read_budget": (0,)}, "read_budget"),
])
def test_dma_parameters(kwargs, message):
    import gc
    import warnings

    from virtio_pcie.dma.engine import DmaEngine
    with warnings.catch_warnings():
        # The half-built component is dropped unused, on purpose.
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=message):
            DmaEngine(**kwargs)
        gc.collect()
