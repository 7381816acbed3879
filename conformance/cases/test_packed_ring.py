"""Packed virtqueues: 2.8 Packed Virtqueues (VIRTIO_F_RING_PACKED)."""

from __future__ import annotations

import struct

import pytest

from conformance import spec
from conformance.checks import (
    QUIET_S,
    expect_data,
    expect_no_interrupt,
    expect_ok,
    expect_unchanged,
)
from conformance.driver.blk import (
    BlkRequest,
    get_id_request,
    pack_header,
    read_request,
    write_request,
)
from conformance.driver.packed import PackedQueue
from conformance.driver.platform import MemRead, MemWrite, Unsupported
from conformance.driver.split import UsedRingError
from conformance.driver.virtqueue import Buffer, stage

S = spec.SECTOR_SIZE
POISON = 0xA5
AVAIL = spec.VIRTQ_DESC_F_AVAIL
USED = spec.VIRTQ_DESC_F_USED
WRITE = spec.VIRTQ_DESC_F_WRITE
_DESC = struct.Struct("<QIHH")  # addr, len, id, flags (2.8.13)


def open_packed(device, queue_size: int | None = None):
    """The device with a packed queue of ``queue_size`` (any size: 2.8 needs no power of 2)."""
    blk = device.init(packed=True, queue_size=queue_size)
    if queue_size is not None:
        got = blk.transport.queue_read(0, spec.COMMON_Q_SIZE, 2)
        if got != queue_size:
            pytest.skip(f"device did not accept packed queue_size {queue_size} (reads {got})")
    return blk


def pattern(seed: int, n: int) -> bytes:
    return bytes((seed * 41 + i * 5 + (i >> 7)) & 0xFF for i in range(n))


def disk_content(blk, platform, sector: int, nbytes: int) -> bytes:
    try:
        return platform.backing_read(sector * S, nbytes)
    except Unsupported:
        return blk.read(sector, nbytes)


def ring_slot(platform, q: PackedQueue, slot: int) -> tuple[int, int, int, int]:
    return _DESC.unpack(platform.mem_read(q.desc_addr(slot), 16))


def vector_of(blk, queue: int = 0) -> int:
    return blk.virtio.queue_info[queue].msix_vector


def listen_quiet(blk, platform, q: PackedQueue, what: str, slot: int = 0) -> None:
    """Nothing happens for a short while: no MSI-X message for the queue, or (without MSI-X)
    no change to the flags of ring slot ``slot``."""
    msix = blk.virtio.msix
    if msix is not None:
        expect_no_interrupt(msix, vector_of(blk), what)
        return
    addr = q.desc_addr(slot) + spec.PACKED_DESC_FLAGS
    flags = int.from_bytes(platform.mem_read(addr, 2), "little")
    expect_unchanged(platform, addr, 2, flags, f"{what}: slot {slot} flags changed", QUIET_S)


def stage_in(blk, platform, sector: int, nbytes: int, split: list[int] | None = None
             ) -> list[Buffer]:
    """Header, data pieces (``split`` lengths, default one) and status of an IN, staged."""
    parts: list[bytes | int] = [pack_header(spec.VIRTIO_BLK_T_IN, sector)]
    parts += list(split or [nbytes]) + [1]
    bufs, ops = stage(blk.virtio.pool, parts, fill=POISON)
    platform.execute(ops)
    return bufs


# --- 2.8.1 wrap counters, 2.8.2 / 2.8.3 / 2.8.4 used descriptors ---------------------------


@pytest.mark.clause("packed.wrap-counter", "packed.used-flags")
@pytest.mark.parametrize("queue_size", [5, 8])
def test_wrap_counter_many_laps(device, platform, queue_size):
    """2.8.1: the device's wrap counter starts at 1 and flips at every pass of the ring;
    lists of 2..4 descriptors straddle the ring end in ever other places, lap after lap."""
    blk = open_packed(device, queue_size)
    q = blk.queues[0]
    laps = 24
    reqs, starts, slots, i = [], [], 0, 0
    while slots < laps * queue_size:
        n = 2 + i % min(3, queue_size - 1)  # descriptors of this list
        sector = 2000 + (i % 64)
        reqs.append(read_request(sector, S, writable_split=[S + 1]) if n == 2 else
                    read_request(sector, (n - 2) * S, writable_split=[S] * (n - 2) + [1]))
        starts.append(slots)
        slots += n
        i += 1
    expected = {s: disk_content(blk, platform, s, 3 * S) for s in {r.sector for r in reqs}}
    done = blk.submit(reqs)  # the driver checks AVAIL == USED == its used wrap counter
    for k, c in enumerate(done):
        expect_ok(c, reqs[k].read_len)
        expect_data(c.data, expected[reqs[k].sector][:reqs[k].read_len],
                    f"request #{k} (lap {starts[k] // queue_size + 1})", reqs[k].sector * S)
    # 2.8.1: after an even number of passes the device's counter is back at 1
    assert (q.next_used, q.used_wrap) == (slots % queue_size, (slots // queue_size) % 2 == 0)


@pytest.mark.clause("packed.used-flags")
def test_used_descriptor_flags(device, platform):
    """2.8.1: a used descriptor has AVAIL and USED both equal to the device's wrap counter;
    read raw from the ring for every list, through three laps of a 4-slot ring."""
    blk = open_packed(device, 4)
    q = blk.queues[0]
    wrap = 1
    pos = 0
    for k in range(6):  # 2-descriptor lists: 2 per lap
        bufs = stage_in(blk, platform, 2100 + k, S, split=[S])
        bufs = [bufs[0], Buffer(bufs[1].addr, S + 1, True)]  # data and status in one
        platform.execute(q.add(bufs, k) + q.kick())
        (used,) = q.wait(1, blk.timeout)
        _, length, id_, flags = ring_slot(platform, q, pos)
        want = (AVAIL | USED) if wrap else 0
        assert flags & (AVAIL | USED) == want, (
            f"list #{k} (lap {k // 2}, device wrap counter {wrap}): used descriptor at slot "
            f"{pos} has flags {flags:#06x}: AVAIL and USED must both be {wrap}")
        pos += 2
        if pos == 4:
            pos, wrap = 0, 1 - wrap


@pytest.mark.clause("packed.used-id")
def test_used_id_from_last_descriptor(device, platform):
    """2.8.6: the buffer ID is in the last descriptor of a list; the used descriptor names
    that ID.  The other descriptors of the list carry a different (free) ID here."""
    blk = open_packed(device, 16)
    q = blk.queues[0]
    results = []
    for k, pieces in enumerate([[S], [256, 256], [128, 128, 128, 128]]):
        bufs = stage_in(blk, platform, 2200 + k, S, split=pieces)
        id_ = q.take_id()
        decoy = q.free_ids[0]  # free, so a device that takes it names no list in flight
        entries = [(b.addr, b.length, WRITE if b.writable else 0,
                    id_ if i == len(bufs) - 1 else decoy) for i, b in enumerate(bufs)]
        platform.execute(q.add_descs(entries, k) + q.kick())
        try:
            used = q.wait(1, blk.timeout)[0]
        except UsedRingError as exc:
            raise AssertionError(
                f"list of {len(bufs)} descriptors with buffer ID {id_} in its last descriptor "
                f"and {decoy} in the others: {exc}") from None
        assert used.id == id_, (
            f"list of {len(bufs)} descriptors: used descriptor names buffer ID {used.id}, "
            f"expected {id_} (the ID in the list's last descriptor; the others carry {decoy})")
        results.append((used, bufs, 2200 + k))
    for _used, bufs, sector in results:
        data = b"".join(platform.execute([MemRead(b.addr, b.length) for b in bufs[1:-1]]))
        status = platform.mem_read(bufs[-1].addr, 1)[0]
        assert status == spec.VIRTIO_BLK_S_OK, f"sector {sector}: status {status:#x}"
        expect_data(data, disk_content(blk, platform, sector, S), f"IN at sector {sector}",
                    sector * S)


WRITE_FLAG_REQUESTS = {
    "in": lambda: read_request(2300, S),
    "out": lambda: write_request(2310, pattern(1, S)),
    "get-id": lambda: get_id_request(),
}


@pytest.mark.clause("packed.used-write-flag")
@pytest.mark.parametrize("kind", list(WRITE_FLAG_REQUESTS))
def test_used_write_flag(device, platform, kind):
    """2.8.3: WRITE in a used descriptor says the device wrote into the buffer; every block
    request gets at least its status byte written, so WRITE is set for each of them."""
    blk = open_packed(device, 8)
    req = WRITE_FLAG_REQUESTS[kind]()
    if req.type == spec.VIRTIO_BLK_T_OUT and blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")
    q = blk.queues[0]
    c = blk.submit_one(req)
    expect_ok(c, req.read_len)
    _, length, id_, flags = ring_slot(platform, q, 0)
    assert flags & WRITE, (
        f"{kind}: used descriptor flags {flags:#06x} without VIRTQ_DESC_F_WRITE although the "
        f"device wrote {req.read_len + 1} byte(s) (status included)")


USED_LEN_REQUESTS = {
    "in-1-sector": lambda: read_request(2400, S),
    "in-32k-split": lambda: read_request(2410, 64 * S, writable_split=[16 * S] * 4 + [1]),
    "out": lambda: write_request(2500, pattern(2, 4 * S)),
    "get-id": lambda: get_id_request(),
}


@pytest.mark.clause("packed.used-len")
@pytest.mark.parametrize("kind", list(USED_LEN_REQUESTS))
def test_used_len_is_bytes_written(device, kind):
    """2.8.4: with WRITE set, the used descriptor's length is the number of bytes written."""
    blk = open_packed(device)
    req = USED_LEN_REQUESTS[kind]()
    if req.type == spec.VIRTIO_BLK_T_OUT and blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")
    expect_ok(blk.submit_one(req), req.read_len)


# --- 2.8.6 one used descriptor per list ---------------------------------------------------


@pytest.mark.clause("packed.chain-single-used")
def test_one_used_descriptor_per_list(device, platform):
    """2.8.6: the device writes one used descriptor for a whole list, then skips ahead by
    the list's length: used descriptors sit at the running sum of the lengths of the
    lists used before (in the order the device used them, which may differ from the
    order they were made available), and every other slot keeps what the driver wrote."""
    blk = open_packed(device, 32)
    q = blk.queues[0]
    layouts = [[S], [S, S], [256, 256, 512], [128] * 4]  # data pieces: lists of 3..6
    lengths = {}
    ops = []
    for k, pieces in enumerate(layouts):
        bufs = stage_in(blk, platform, 2600 + 4 * k, sum(pieces), split=pieces)
        ops += q.add(bufs, (k, bufs))
        lengths[k] = len(bufs)
    driver_wrote = {}  # slot -> the 16 bytes the driver put there
    for op in ops:
        if isinstance(op, MemWrite) and q.layout.desc <= op.addr < q.layout.desc + 16 * q.size:
            driver_wrote[(op.addr - q.layout.desc) // 16] = op.data
    platform.execute(ops + q.kick())
    used = q.wait(len(layouts), blk.timeout)
    ring = platform.mem_read(q.layout.desc, q.size * 16)
    pos, used_slots = 0, set()
    for u in used:  # in the order the device wrote them
        used_slots.add(pos)
        _a, _ln, id_, flags = _DESC.unpack_from(ring, 16 * pos)
        assert flags & (AVAIL | USED) == AVAIL | USED, (
            f"slot {pos}: flags {flags:#06x}, expected a used descriptor there")
        pos += lengths[u.token[0]]
    for slot, data in sorted(driver_wrote.items()):
        if slot in used_slots:
            continue
        now = ring[16 * slot:16 * slot + 16]
        assert now == data, (
            f"slot {slot} (skipped: no used descriptor belongs there) changed from "
            f"{data.hex()} to {now.hex()} (addr, len, id, flags)")
    for u in used:
        bufs = u.token[1]
        status = platform.mem_read(bufs[-1].addr, 1)[0]
        assert status == spec.VIRTIO_BLK_S_OK, f"list #{u.token[0]}: status {status:#x}"


# --- 2.8.15 / 2.8.12: what the device may use ----------------------------------------------


@pytest.mark.clause("packed.avail-flag-required")
@pytest.mark.parametrize("case", ["both-flags-set", "stale-used-next-lap"])
def test_unavailable_descriptor_not_used(device, platform, case):
    """2.8.15: the device uses no descriptor it has not seen made available.

    both-flags-set: a complete list whose head has AVAIL and USED both 1 in the first lap
    (that is a used descriptor, not an available one).  stale-used-next-lap: after a
    full lap, the ring still holds the first lap's used descriptors; in the second lap
    (wrap counter 0) they are not available either.  A notification is sent both times.
    """
    blk = open_packed(device, 4)
    q = blk.queues[0]
    vec = vector_of(blk)
    msix = blk.virtio.msix
    if case == "stale-used-next-lap":
        for k in range(2):
            expect_ok(blk.submit_one(read_request(2700 + k, S, writable_split=[S + 1])), S)
        assert (q.next_avail, q.avail_wrap) == (0, False)
        slot0 = platform.mem_read(q.desc_addr(0), 16)
        bufs = None
    else:
        bufs = stage_in(blk, platform, 2710, S, split=[S])
        # every descriptor of the list looks used (AVAIL == USED == 1), none is available
        both = AVAIL | USED
        platform.execute([q.desc_op(0, bufs[0].addr, 16, 0, both | spec.VIRTQ_DESC_F_NEXT),
                          q.desc_op(1, bufs[1].addr, S, 0, both | WRITE | spec.VIRTQ_DESC_F_NEXT),
                          q.desc_op(2, bufs[2].addr, 1, 0, both | WRITE)])
        slot0 = platform.mem_read(q.desc_addr(0), 16)
    if msix is not None:
        msix.clear(vec)
    platform.execute(q.kick())
    listen_quiet(blk, platform, q, f"{case}: notification with no available descriptor")
    now = platform.mem_read(q.desc_addr(0), 16)
    assert now == slot0, (f"{case}: slot 0 changed from {slot0.hex()} to {now.hex()}: the "
                          f"device used a descriptor that was not available")
    if bufs is not None:
        status = platform.mem_read(bufs[2].addr, 1)[0]
        assert status == POISON, f"{case}: the device wrote status {status:#x} of a list " \
                                 f"that was not available"
    status = blk.transport.device_status
    assert not status & spec.STATUS_DEVICE_NEEDS_RESET, f"{case}: device set DEVICE_NEEDS_RESET"
    # Made available properly, the same slot is used.
    expect_ok(blk.submit_one(read_request(2720, S, writable_split=[S + 1])), S)


@pytest.mark.clause("packed.process-in-ring-order")
def test_later_list_waits_for_earlier_slot(device, platform):
    """2.8.12: the device processes available descriptors in ring order: a list made
    available in slots 2..3 while slots 0..1 are not yet available is left alone until
    slot 0 is; then both are used."""
    blk = open_packed(device, 8)
    q = blk.queues[0]
    a = stage_in(blk, platform, 2800, S, split=[S])
    b = stage_in(blk, platform, 2810, S, split=[S])
    ops_a = q.add([a[0], Buffer(a[1].addr, S + 1, True)], "a")
    ops_b = q.add([b[0], Buffer(b[1].addr, S + 1, True)], "b")
    head_b = ops_b[-1].data  # the head's descriptor, written last (2.8.21.1)
    platform.execute(ops_b + q.kick())
    listen_quiet(blk, platform, q, "list in slots 2..3 with slot 0 unavailable", slot=2)
    assert platform.mem_read(q.desc_addr(2), 16) == head_b, (
        "slot 2 changed before slot 0 was made available")
    assert platform.mem_read(b[1].addr + S, 1)[0] == POISON, (
        "the device executed the list in slots 2..3 before slot 0 was made available")
    assert ring_slot(platform, q, 2)[3] & USED == 0, (
        "slot 2 shows USED before slot 0 was made available")
    platform.execute(ops_a + q.kick())
    used = q.wait(2, blk.timeout)
    assert sorted(u.token for u in used) == ["a", "b"]
    for bufs, sector in ((a, 2800), (b, 2810)):
        data = platform.mem_read(bufs[1].addr, S + 1)
        assert data[S] == spec.VIRTIO_BLK_S_OK, f"sector {sector}: status {data[S]:#x}"
        expect_data(data[:S], disk_content(blk, platform, sector, S), f"IN at sector {sector}",
                    sector * S)


@pytest.mark.clause("packed.no-change-after-used")
def test_used_descriptor_left_alone(device, platform):
    """2.8.15: once a descriptor is used the device does not change it again, however many
    lists it uses after it."""
    blk = open_packed(device, 32)
    q = blk.queues[0]
    expect_ok(blk.submit_one(read_request(2900, S)), S)
    first = platform.mem_read(q.desc_addr(0), 16)
    for k in range(3):
        done = blk.submit([read_request(2910 + k, S), get_id_request()])
        for c in done:
            expect_ok(c, c.request.read_len)
        now = platform.mem_read(q.desc_addr(0), 16)
        assert now == first, (
            f"used descriptor in slot 0 changed after {2 * (k + 1)} more lists: "
            f"{first.hex()} -> {now.hex()} (addr, len, id, flags)")


@pytest.mark.clause("packed.chain-order")
def test_list_used_in_order(device, platform):
    """2.8.18: the descriptors of a list are used in the order they are chained: OUT data
    in four pieces lands in that order, IN data fills four pieces in that order."""
    blk = open_packed(device, 16)
    sector = 3000
    if not blk.has(spec.VIRTIO_BLK_F_RO):
        data = pattern(7, 2 * S)
        c = blk.submit_one(write_request(sector, data, readable_split=[16, 100, 412, 300, 212]))
        expect_ok(c, 0)
        expect_data(disk_content(blk, platform, sector, 2 * S), data,
                    "disk after an OUT whose data was in four descriptors", sector * S)
    expected = disk_content(blk, platform, sector + 8, 2 * S)
    c = blk.submit_one(BlkRequest(spec.VIRTIO_BLK_T_IN, sector + 8, read_len=2 * S,
                                  writable_split=[300, 212, 100, 412, 1]))
    expect_ok(c, 2 * S)
    expect_data(c.data, expected, "IN into four data descriptors", (sector + 8) * S)


@pytest.mark.clause("packed.no-write-readable")
def test_readable_buffers_untouched(device, platform):
    """2.8.15: the device never writes a device-readable buffer."""
    blk = open_packed(device, 16)
    reqs = [read_request(3100, 2 * S), read_request(3101, S, readable_split=[4, 12])]
    if not blk.has(spec.VIRTIO_BLK_F_RO):
        reqs += [write_request(3110, pattern(9, 3 * S)),
                 write_request(3120, pattern(8, S), readable_split=[16 + 200, S - 200])]
    posted = blk.post(reqs)
    for c in blk.reap(posted):
        expect_ok(c, c.request.read_len)
    readable = platform.execute([MemRead(p.readable_addr, len(p.request.readable))
                                 for p in posted])
    for i, (p, now) in enumerate(zip(posted, readable)):
        expect_data(now, p.request.readable,
                    f"device-readable part of request #{i} (header + OUT data) after completion")
