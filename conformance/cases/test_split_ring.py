"""Split virtqueues: 2.7 Split Virtqueues (framing, descriptor table, used ring, index wrap)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_ok
from conformance.driver.blk import (
    BlkRequest,
    get_id_request,
    pack_header,
    read_request,
    write_request,
)
from conformance.driver.device import FeatureNotOffered
from conformance.driver.platform import MemRead, MemWrite, Op, Poll, PollTimeout, Unsupported
from conformance.driver.split import SplitQueue, pack_desc, parse_used
from conformance.driver.virtqueue import QueueTimeout

S = spec.SECTOR_SIZE
WRAP = 1 << 16


def pattern(seed: int, n: int) -> bytes:
    return bytes((seed * 37 + i * 11 + (i >> 8)) & 0xFF for i in range(n))


def disk_content(blk, platform, sector: int, nbytes: int) -> bytes:
    """What the disk holds: the backing store where the target can read it, else what an
    IN in the common layout (header, data, status descriptors) returns."""
    try:
        return platform.backing_read(sector * S, nbytes)
    except Unsupported:
        return blk.read(sector, nbytes)


# --- 2.6.4 Message Framing ----------------------------------------------------------------

# The same requests in other descriptor layouts than the common one (2.6.4.1: the
# device makes no assumption about the arrangement).  Splits are descriptor lengths:
# readable = header (16) + OUT data, writable = IN data + status (1).
FRAMINGS = {
    # IN data and status in one writable descriptor
    "in-data-and-status-combined": dict(read_len=S, writable_split=[S + 1]),
    # the 16-byte header over two descriptors
    "in-header-split": dict(read_len=S, readable_split=[6, 10]),
    # every header byte alone, data over 8 descriptors, status alone
    "in-many-descriptors": dict(read_len=2 * S, readable_split=[1] * 16,
                                writable_split=[128] * 8 + [1]),
    # the status shares its descriptor with the end of the data
    "in-status-after-data-tail": dict(read_len=2 * S, writable_split=[700, 2 * S - 700 + 1]),
    # header and OUT data in a single readable descriptor
    "out-header-and-data-combined": dict(out_len=S, readable_split=[16 + S]),
    # a descriptor boundary inside the header, the next one inside the data
    "out-boundaries-inside-header-and-data": dict(out_len=2 * S,
                                                  readable_split=[8, 8 + 100, 2 * S - 100]),
    # OUT data in many small pieces
    "out-many-descriptors": dict(out_len=S, readable_split=[16] + [32] * 16),
}


@pytest.mark.clause("split.framing-independent")
@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_framing_independent(blk, platform, framing):
    """2.6.4.1: a request works whatever its descriptor layout (count and boundaries)."""
    layout = dict(FRAMINGS[framing])
    sector = 64 + 4 * list(FRAMINGS).index(framing)
    if "out_len" in layout:
        if blk.has(spec.VIRTIO_BLK_F_RO):
            pytest.skip("device is read-only (VIRTIO_BLK_F_RO): OUT layouts cannot be checked")
        data = pattern(sector, layout.pop("out_len"))
        c = blk.submit_one(write_request(sector, data, **layout))
        expect_ok(c, 0)
        back = disk_content(blk, platform, sector, len(data))
        expect_data(back, data, f"disk after OUT in layout {framing}", sector * S)
    else:
        nbytes = layout["read_len"]
        expected = disk_content(blk, platform, sector, nbytes)
        c = blk.submit_one(BlkRequest(spec.VIRTIO_BLK_T_IN, sector, **layout))
        expect_ok(c, nbytes)
        expect_data(c.data, expected, f"IN in layout {framing}", sector * S)


# --- 2.7.8 The Virtqueue Used Ring: id and len ----------------------------------------------


@pytest.mark.clause("split.used-id")
def test_used_id_is_chain_head(device, platform):
    """2.7.8: each used element names the head of its chain, in whatever order the device
    completes them (any order is allowed); heads are handed out out of sequence here."""
    blk = device.init(queue_size=32)
    q = blk.queues[0]
    order = [29, 3, 17, 8, 0, 31, 12, 22, 5, 26, 14, 1, 19, 9, 30, 6, 24, 2, 11, 27, 16]
    # A large IN among small ones gives a device that completes out of order the chance.
    requests = [read_request(200, 32 * S), read_request(300, S), read_request(301, 2 * S),
                read_request(310, S, writable_split=[S + 1]), read_request(320, 4 * S),
                read_request(330, S, readable_split=[8, 8]), read_request(340, S)]
    heads, pos = [], 0
    for r in requests:
        r_split, w_split = r.buffer_lengths()
        heads.append(order[pos])
        pos += len(r_split) + len(w_split)
    expected = [disk_content(blk, platform, r.sector, r.read_len) for r in requests]
    q.set_free_order(order + [d for d in range(32) if d not in order])
    done = blk.submit(requests)
    for i, (c, head) in enumerate(zip(done, heads)):
        assert c.id == head, (f"request #{i}: used element id {c.id}, expected its chain's head "
                              f"{head}")
        expect_ok(c, requests[i].read_len)
        expect_data(c.data, expected[i], f"request #{i} (head {head})", requests[i].sector * S)


USED_LEN_REQUESTS = {
    "in-1-sector": lambda: read_request(400, S),
    "in-64k": lambda: read_request(512, 128 * S),
    "in-split-writable": lambda: read_request(410, 4 * S, writable_split=[S, S, S, S, 1]),
    "out": lambda: write_request(420, pattern(3, 2 * S)),
    "get-id": lambda: get_id_request(),
    "get-id-combined": lambda: get_id_request(writable_split=[spec.VIRTIO_BLK_ID_BYTES + 1]),
}


@pytest.mark.clause("split.used-len")
@pytest.mark.parametrize("kind", list(USED_LEN_REQUESTS))
def test_used_len_is_bytes_written(blk, kind):
    """2.7.8.2: len is the number of bytes written into the writable part: data + status."""
    req = USED_LEN_REQUESTS[kind]()
    if req.type == spec.VIRTIO_BLK_T_OUT and blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")
    c = blk.submit_one(req)
    expect_ok(c, req.read_len)


# --- 2.7.5.1 Device Requirements: The Virtqueue Descriptor Table ---------------------------


@pytest.mark.clause("split.no-write-readable", "split.no-write-desc-table")
def test_readable_buffers_and_table_untouched(blk, platform):
    """2.7.5.1: the device writes neither device-readable buffers nor descriptor entries."""
    q = blk.queues[0]
    reqs = [read_request(500, 2 * S), read_request(501, S, readable_split=[4, 12])]
    if not blk.has(spec.VIRTIO_BLK_F_RO):
        reqs += [write_request(510, pattern(5, 3 * S)),
                 write_request(520, pattern(6, S), readable_split=[16 + 200, S - 200])]
    posted = blk.post(reqs, kick=False)
    # What the driver wrote, before the device was told about it.
    table = platform.mem_read(q.layout.desc, q.size * spec.VIRTQ_DESC_SIZE)
    blk.kick()
    done = blk.reap(posted)
    for c in done:
        expect_ok(c, c.request.read_len)
    readable = platform.execute([MemRead(p.readable_addr, len(p.request.readable))
                                 for p in posted])
    for i, (p, now) in enumerate(zip(posted, readable)):
        expect_data(now, p.request.readable, f"device-readable part of request #{i} "
                    f"(header + OUT data) after completion")
    after = platform.mem_read(q.layout.desc, q.size * spec.VIRTQ_DESC_SIZE)
    if after != table:
        bad = [i for i in range(q.size) if after[16 * i:16 * i + 16] != table[16 * i:16 * i + 16]]
        i = bad[0]
        raise AssertionError(
            f"descriptor table changed in {len(bad)} entr{'y' if len(bad) == 1 else 'ies'}; "
            f"entry {i} was {table[16 * i:16 * i + 16].hex()} and is now "
            f"{after[16 * i:16 * i + 16].hex()} (addr, len, flags, next)")


# --- 2.7.6 / 2.7.8 / 2.7.13.3: the 16-bit avail and used indexes wrap ----------------------


@dataclass
class WrapTemplate:
    """The one request every recycled chain carries, and what its completion looks like."""

    header: bytes
    writable_len: int
    completion: bytes  # the writable part after completion: data + status
    used_len: int


def wrap_template(blk, indirect: bool) -> WrapTemplate:
    """GET_ID (no disk I/O, 21 bytes written) if the device serves it, else a 1-sector IN;
    sent once through the normal path, its completion is what every recycled one must match."""
    n = spec.VIRTIO_BLK_ID_BYTES
    c = blk.submit_one(get_id_request(writable_split=[n + 1], indirect=indirect))
    if c.status != spec.VIRTIO_BLK_S_OK:
        c = blk.submit_one(read_request(0, S, writable_split=[S + 1], indirect=indirect))
        expect_ok(c, S)
    else:
        expect_ok(c, n)
    req = c.request
    return WrapTemplate(pack_header(req.type, req.sector), req.writable_len,
                        c.data + bytes([c.status]), c.used_len)


class RecycledChains:
    """``count`` fixed chains of the template request, made available again lap after lap.

    Chain k's writable part lives at ``wbase + k * w``; it is re-poisoned before every
    reuse so that each completion has to be written anew.  Heads: 2k (header
    descriptor -> writable descriptor) or k (one INDIRECT descriptor each).
    """

    def __init__(self, blk, q: SplitQueue, tmpl: WrapTemplate, indirect: bool):
        self.q, self.tmpl, self.indirect = q, tmpl, indirect
        pool = blk.virtio.pool
        self.count = q.size if indirect else q.size // 2
        self.w = tmpl.writable_len
        hdr = pool.alloc(16, 16)
        self.wbase = pool.alloc(self.count * self.w, 16)
        self.poison = bytes([0xA5]) * (self.count * self.w)
        ops: list[Op] = [MemWrite(hdr, tmpl.header), MemWrite(self.wbase, self.poison)]
        self.heads = []
        for k in range(self.count):
            waddr = self.wbase + k * self.w
            if indirect:
                table = pool.alloc(32, 16)
                ops.append(MemWrite(table, pack_desc(hdr, 16, spec.VIRTQ_DESC_F_NEXT, 1)
                                    + pack_desc(waddr, self.w, spec.VIRTQ_DESC_F_WRITE, 0)))
                ops.append(q.desc_op(k, table, 32, spec.VIRTQ_DESC_F_INDIRECT))
                self.heads.append(k)
            else:
                ops.append(q.desc_op(2 * k, hdr, 16, spec.VIRTQ_DESC_F_NEXT, 2 * k + 1))
                ops.append(q.desc_op(2 * k + 1, waddr, self.w, spec.VIRTQ_DESC_F_WRITE))
                self.heads.append(2 * k)
        # Burst b fills ring slots (start + b*count + j) % size with chain j.  count divides
        # the size, so each slot always holds the same head: write the ring once.
        self.start = q.avail_idx
        ring = [0] * q.size
        for j in range(q.size):
            ring[(self.start + j) % q.size] = self.heads[j % self.count]
        ops.append(MemWrite(q.layout.driver + 4, struct.pack(f"<{q.size}H", *ring)))
        blk.platform.execute(ops)
        self.kick = q.kick()[0]

    def burst_ops(self, b: int, timeout: float, verify: bool) -> list[Op]:
        """Publish burst ``b``, notify, wait for all of it (and read the results if ``verify``)."""
        q = self.q
        idx = self.start + (b + 1) * self.count
        ops: list[Op] = []
        if verify:
            ops.append(MemWrite(self.wbase, self.poison))
        ops += [q.avail_idx_op(idx), self.kick,
                Poll(q.used_idx_addr, 2, 0xFFFF, idx & 0xFFFF, True, timeout)]
        if verify:
            ops += [MemRead(q.layout.device, spec.split_used_size(q.size)),
                    MemRead(self.wbase, self.count * self.w)]
        return ops

    def check(self, b: int, used_ring: bytes, written: bytes) -> None:
        q, w = self.q, self.w
        first = self.start + b * self.count  # free-running index of the burst's first entry
        _flags, _idx, elems = parse_used(used_ring, q.size)
        got = [elems[(first + j) % q.size] for j in range(self.count)]
        ids = sorted(i for i, _ in got)
        # 2.7.8: one element per chain, naming its head, in any order.
        assert ids == sorted(self.heads), (
            f"used ring entries {first}..{first + self.count - 1} (mod 2^16: "
            f"{first & 0xFFFF}..{(first + self.count - 1) & 0xFFFF}) name heads "
            f"{[i for i, _ in got][:16]}, expected each of {self.heads[:16]} once")
        lens = {length for _, length in got}
        assert lens == {self.tmpl.used_len}, (
            f"used ring entries {first}..{first + self.count - 1}: used lengths {sorted(lens)}, "
            f"expected {self.tmpl.used_len}")
        for k in range(self.count):
            part = written[k * w:(k + 1) * w]
            if part != self.tmpl.completion:
                raise AssertionError(
                    f"request #{first + k - self.start} (avail index {(first + k) & 0xFFFF}): "
                    f"writable part {part.hex()} differs from the first completion "
                    f"{self.tmpl.completion.hex()}")


WRAP_SIZES = [1, 2, 8, "max"]


@pytest.mark.clause("split.used-idx-wrap", "split.avail-idx-wrap")
@pytest.mark.parametrize("queue_size", WRAP_SIZES)
def test_index_wraparound(device, platform, queue_size):
    """More than 65,536 requests: avail idx and used idx wrap from 65535 to 0 and ring
    slots stay idx mod queue size across the wrap (2.7.6, 2.7.8, 2.7.13.3).

    Chains are built once and made available again lap after lap, a whole ring's
    worth per notification, so the cost is requests / chains round trips.  Every
    completion near the start, across the wrap and at the end is checked in full
    (used ids, lengths, written bytes); in between, the exact used idx of every burst.
    """
    size = device.transport.queue_read(0, spec.COMMON_Q_SIZE, 2) if queue_size == "max" \
        else queue_size
    blk = device.init(queue_size=size)
    got = blk.transport.queue_read(0, spec.COMMON_Q_SIZE, 2)
    if got != size:
        pytest.skip(f"device did not accept queue_size {size} (reads back {got})")
    indirect = blk.has(spec.VIRTIO_F_INDIRECT_DESC)
    if size == 1 and not indirect:
        # one descriptor cannot carry a readable header and a writable status directly
        raise FeatureNotOffered(spec.VIRTIO_F_INDIRECT_DESC)
    q = blk.queues[0]
    tmpl = wrap_template(blk, indirect=size == 1)
    chains = RecycledChains(blk, q, tmpl, indirect)
    n = chains.count
    bursts = WRAP // n + 3
    wrap_burst = (WRAP - chains.start) // n  # the burst whose entries cross index 65535 -> 0
    full = set(range(2)) | set(range(wrap_burst - 2, wrap_burst + 3)) | {bursts - 1}
    per_call = max(1, 2048 // n)
    timeout = blk.timeout
    b = 0
    while b < bursts:
        batch = range(b, min(bursts, b + per_call))
        ops: list[Op] = []
        for k in batch:
            ops += chains.burst_ops(k, timeout, k in full)
        try:
            res = platform.execute(ops)
        except PollTimeout as exc:
            done = len([r for r in exc.results if isinstance(r, int)])
            raise QueueTimeout(
                f"index wrap, queue size {size}: burst {b + done} of {bursts} ({n} request(s) "
                f"from avail idx {(chains.start + (b + done) * n) & 0xFFFF}) not used within "
                f"{timeout:g}s (used idx read {exc.last_value})\n{q.describe()}") from None
        pos = 0
        for k in batch:
            pos += 4 if k in full else 3  # poison, idx, kick, poll / idx, kick, poll
            if k in full:
                chains.check(k, res[pos], res[pos + 1])
                pos += 2
        b = batch[-1] + 1
    end = chains.start + bursts * n
    assert end - chains.start > WRAP
    used_idx = int.from_bytes(platform.mem_read(q.used_idx_addr, 2), "little")
    assert used_idx == end & 0xFFFF, (
        f"used idx is {used_idx} after {end} buffers, expected {end & 0xFFFF}")
    # The driver's own path continues at the wrapped index.
    q.adopt(end)
    after = blk.submit([read_request(7, S, indirect=size == 1, writable_split=[S + 1])
                        if size <= 2 else read_request(7, S)])
    expect_ok(after[0], S)
    expect_data(after[0].data, disk_content(blk, platform, 7, S),
                f"IN after {end} requests (used idx {end & 0xFFFF})", 7 * S)


# --- 6.2 VIRTIO_F_IN_ORDER --------------------------------------------------------------

USED_POISON = b"\xff" * 8


def check_in_order(heads: list[int], elems: list[bytes], lens: dict[int, int]) -> None:
    """The used entries of one burst, in ring order, against in-order use (2.7.9, 6.2).

    In-order devices either write one element per buffer, in the order the buffers were
    made available, or one element per batch naming the batch's last buffer and skip
    the rest of the batch's slots (left as the driver poisoned them).
    """
    p = 0
    while p < len(heads):
        raw = elems[p]
        assert raw != USED_POISON, (
            f"used ring slot {p} of the burst was not written: an in-order device writes "
            f"the element of a batch at the batch's first slot")
        id_, length = struct.unpack("<II", raw)
        assert id_ in heads[p:], (
            f"used element at slot {p} names head {id_}; the buffers still outstanding in "
            f"the order they were made available are heads {heads[p:p + 8]}"
            + (" (it was used already)" if id_ in heads[:p] else ""))
        last = heads.index(id_, p)
        for s in range(p + 1, last + 1):
            # skipped slots: untouched, or the very element an unbatched device writes there
            assert elems[s] in (USED_POISON, struct.pack("<II", heads[s], lens[heads[s]])), (
                f"used element at slot {p} names head {id_} (buffers {p}..{last} as one "
                f"batch) but slot {s} holds {elems[s].hex()}: buffer {s} was used out of "
                f"order")
        assert length == lens[id_], (
            f"used element for head {id_}: len {length}, expected {lens[id_]}")
        p = last + 1


@pytest.mark.clause("feat.in-order-use", "split.in-order-batch")
def test_in_order_use(device, platform):
    """6.2: with VIRTIO_F_IN_ORDER the device uses buffers in the order they were made
    available; a large request first gives an out-of-order device the chance to differ."""
    if not device.offers(spec.VIRTIO_F_IN_ORDER):
        raise FeatureNotOffered(spec.VIRTIO_F_IN_ORDER)
    from conformance.driver.blk import DRIVER_FEATURES

    features = (device.offered & DRIVER_FEATURES & ~(1 << spec.VIRTIO_F_RING_PACKED)
                | 1 << spec.VIRTIO_F_IN_ORDER)
    blk = device.init(features=features, queue_size=32)
    q = blk.queues[0]
    reqs = [read_request(600, 64 * S), read_request(700, S), read_request(710, 2 * S),
            read_request(720, S), read_request(730, 8 * S), read_request(740, S)]
    platform.execute([MemWrite(q.layout.device + 4, USED_POISON * q.size)])
    posted = blk.post(reqs)
    heads = [3 * i for i in range(len(reqs))]  # 3 descriptors each, handed out in order
    lens = {h: r.read_len + 1 for h, r in zip(heads, reqs)}
    want = len(reqs)
    try:
        platform.execute([Poll(q.used_idx_addr, 2, 0xFFFF, want, True, blk.timeout)])
    except PollTimeout as exc:
        raise QueueTimeout(f"in-order burst of {want} not used: used idx {exc.last_value}\n"
                           + q.describe()) from None
    ring = platform.mem_read(q.layout.device + 4, 8 * want)
    check_in_order(heads, [ring[8 * k:8 * k + 8] for k in range(want)], lens)
    statuses = platform.execute([MemRead(p.writable_addr + p.request.read_len, 1)
                                 for p in posted])
    for i, st in enumerate(statuses):
        assert st == bytes([spec.VIRTIO_BLK_S_OK]), f"request #{i}: status {st.hex()}, not OK"
