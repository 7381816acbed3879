"""Indirect descriptors: 2.7.5.3 (split) and 2.8.7 (packed), VIRTIO_F_INDIRECT_DESC."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_ok
from conformance.driver.blk import BlkRequest, pack_header, read_request, write_request
from conformance.driver.device import FeatureNotOffered
from conformance.driver.packed import pack_desc as pack_packed_desc
from conformance.driver.platform import MemRead, MemWrite, Unsupported
from conformance.driver.split import pack_table
from conformance.driver.virtqueue import Buffer, stage

S = spec.SECTOR_SIZE
POISON = 0xA5
RINGS = ["split", "packed"]


def open_blk(device, ring: str):
    return device.init(require=[spec.VIRTIO_F_INDIRECT_DESC], packed=ring == "packed")


def ring_param(clauses: dict[str, str]) -> list:
    return [pytest.param(r, marks=pytest.mark.clause(clauses[r]), id=r) for r in RINGS]


def pattern(seed: int, n: int) -> bytes:
    return bytes((seed * 29 + i * 7 + (i >> 9)) & 0xFF for i in range(n))


def disk_content(blk, platform, sector: int, nbytes: int) -> bytes:
    try:
        return platform.backing_read(sector * S, nbytes)
    except Unsupported:
        return blk.read(sector, nbytes)


def table_entries(blk, wanted: int) -> int:
    """Data descriptors for a "many entries" table: ``wanted``, within seg_max (5.2.6.1 asks
    the driver to stay at or below it) less the header and status descriptors."""
    if blk.has(spec.VIRTIO_BLK_F_SEG_MAX):
        wanted = min(wanted, blk.config.u32(spec.BLK_CFG_SEG_MAX) - 2)
    return max(wanted, 1)


@pytest.mark.parametrize("ring", ring_param({"split": "split.indirect-table",
                                             "packed": "packed.indirect-table"}))
def test_indirect_table_many_entries(device, platform, ring):
    """An indirect table of many entries is followed entry by entry (2.7.5.3, 2.8.7):
    an IN and an OUT whose data is spread over up to 120 table entries."""
    blk = open_blk(device, ring)
    n = table_entries(blk, 120)
    sector = 900 if ring == "split" else 1100
    expected = disk_content(blk, platform, sector, n * S)
    c = blk.submit_one(read_request(sector, n * S, indirect=True, writable_split=[S] * n + [1]))
    expect_ok(c, n * S)
    expect_data(c.data, expected, f"IN through a {n + 2}-entry indirect table", sector * S)
    if blk.has(spec.VIRTIO_BLK_F_RO):
        return
    # OUT: the header split over two entries, then 256-byte data pieces
    pieces = max(2, min(n - 1, 64) // 2 * 2)
    data = pattern(sector, pieces * 256)
    split = [8, 8] + [256] * pieces
    c = blk.submit_one(write_request(sector + 200, data, indirect=True, readable_split=split))
    expect_ok(c, 0)
    back = disk_content(blk, platform, sector + 200, len(data))
    expect_data(back, data, f"disk after OUT through a {len(split) + 1}-entry indirect table",
                (sector + 200) * S)


def submit_raw(blk, platform, q, entries, token, table_block):
    """Place one hand-built chain or list, notify, wait, return the used element."""
    ops = q.add_descs(entries, token, table=table_block)
    platform.execute(ops + q.publish() + q.kick())
    (used,) = q.wait(1, blk.timeout)
    return used


def in_request_buffers(blk, platform, sector: int, nbytes: int):
    """Staged header (readable) and data + status (writable) buffers for an IN."""
    bufs, ops = stage(blk.virtio.pool, [pack_header(spec.VIRTIO_BLK_T_IN, sector), nbytes, 1],
                      fill=POISON)
    platform.execute(ops)
    return bufs


def read_back(platform, bufs: list[Buffer]) -> tuple[bytes, int]:
    data, status = platform.execute([MemRead(bufs[1].addr, bufs[1].length),
                                     MemRead(bufs[2].addr, 1)])
    return data, status[0]


def expect_in_done(blk, platform, used, bufs, sector, nbytes, what) -> None:
    data, status = read_back(platform, bufs)
    assert status == spec.VIRTIO_BLK_S_OK, f"{what}: status {status:#x}, expected OK (0)"
    assert used.length == nbytes + 1, (
        f"{what}: used length {used.length}, expected {nbytes + 1} (data and status)")
    expect_data(data, disk_content(blk, platform, sector, nbytes), what, sector * S)


@pytest.mark.parametrize("ring", ring_param({"split": "split.indirect-ignore-write-flag",
                                             "packed": "packed.indirect-ignore-write-flag"}))
def test_write_flag_on_indirect_descriptor_ignored(device, platform, ring):
    """The WRITE flag on the descriptor that points to an indirect table means nothing
    (2.7.5.3.2; 2.8.7 calls it reserved and ignored): the table's own flags decide."""
    blk = open_blk(device, ring)
    q = blk.queues[0]
    sector = 1300 if ring == "split" else 1310
    bufs = in_request_buffers(blk, platform, sector, 2 * S)
    pool = blk.virtio.pool
    table = pool.alloc(3 * spec.VIRTQ_DESC_SIZE, 16)
    if ring == "split":
        platform.execute([MemWrite(table, pack_table(bufs))])
        entries = [(table, 3 * 16, spec.VIRTQ_DESC_F_INDIRECT | spec.VIRTQ_DESC_F_WRITE)]
    else:
        platform.execute([MemWrite(table, b"".join(
            pack_packed_desc(b.addr, b.length, 0, spec.VIRTQ_DESC_F_WRITE if b.writable else 0)
            for b in bufs))])
        id_ = q.take_id()
        entries = [(table, 3 * 16, spec.VIRTQ_DESC_F_INDIRECT | spec.VIRTQ_DESC_F_WRITE, id_)]
    used = submit_raw(blk, platform, q, entries, "indirect+write", table)
    expect_in_done(blk, platform, used, bufs, sector, 2 * S,
                   f"IN through an indirect descriptor with WRITE set ({ring})")


@pytest.mark.parametrize("direct", [
    # no direct descriptor at all: a plain indirect chain, "zero or more" included
    pytest.param(0, marks=pytest.mark.clause("split.indirect-after-chain",
                                             "split.indirect-table")),
    pytest.param(1, marks=pytest.mark.clause("split.indirect-after-chain")),
    pytest.param(2, marks=pytest.mark.clause("split.indirect-after-chain")),
])
def test_direct_chain_ending_in_indirect(device, platform, direct):
    """2.7.5.3.2: zero or more direct descriptors, then one INDIRECT descriptor ending the
    chain; the request continues in the table (here: the header in ``direct``
    descriptors, data and status in the table)."""
    blk = open_blk(device, "split")
    q = blk.queues[0]
    sector = 1400 + 10 * direct
    bufs = in_request_buffers(blk, platform, sector, 4 * S)
    header = bufs[0]
    if direct == 2:  # the header itself split over the two direct descriptors
        head = [(header.addr, 10, 0), (header.addr + 10, 6, 0)]
        table_bufs = bufs[1:]
    elif direct == 1:
        head = [(header.addr, 16, 0)]
        table_bufs = bufs[1:]
    else:
        head = []
        table_bufs = bufs
    pool = blk.virtio.pool
    table = pool.alloc(len(table_bufs) * 16, 16)
    platform.execute([MemWrite(table, pack_table(table_bufs))])
    entries = head + [(table, len(table_bufs) * 16, spec.VIRTQ_DESC_F_INDIRECT)]
    used = submit_raw(blk, platform, q, entries, "direct+indirect", table)
    expect_in_done(blk, platform, used, bufs, sector, 4 * S,
                   f"IN as {direct} direct descriptor(s) ending in an indirect one")


@pytest.mark.clause("packed.indirect-ignore-flags")
def test_packed_indirect_table_ids_ignored(device, platform):
    """2.8.7: inside an indirect table only WRITE counts; each entry's buffer ID is reserved
    and ignored (here: a different junk ID in every entry, NEXT never set, as 2.8.19
    asks), and the used descriptor names the ID of the descriptor in the ring."""
    blk = open_blk(device, "packed")
    q = blk.queues[0]
    sector = 1500
    bufs, ops = stage(blk.virtio.pool,
                      [pack_header(spec.VIRTIO_BLK_T_IN, sector)[:7],
                       pack_header(spec.VIRTIO_BLK_T_IN, sector)[7:], S, S, 1], fill=POISON)
    table = blk.virtio.pool.alloc(len(bufs) * 16, 16)
    junk = [0x7FFF, 0x1234, q.size + 3, 0xFFFF, 1]
    ops.append(MemWrite(table, b"".join(
        pack_packed_desc(b.addr, b.length, j, spec.VIRTQ_DESC_F_WRITE if b.writable else 0)
        for b, j in zip(bufs, junk))))
    platform.execute(ops)
    id_ = q.take_id()
    used = submit_raw(blk, platform, q, [(table, len(bufs) * 16, spec.VIRTQ_DESC_F_INDIRECT, id_)],
                      "junk ids", table)
    assert used.id == id_, f"used descriptor names buffer ID {used.id}, expected {id_}"
    data, status = platform.execute([MemRead(bufs[2].addr, 2 * S), MemRead(bufs[4].addr, 1)])
    assert status[0] == spec.VIRTIO_BLK_S_OK, f"status {status[0]:#x}, expected OK (0)"
    assert used.length == 2 * S + 1, f"used length {used.length}, expected {2 * S + 1}"
    expect_data(data, disk_content(blk, platform, sector, 2 * S),
                "IN through an indirect table with junk buffer IDs", sector * S)


@pytest.mark.clause("split.indirect-table")
def test_indirect_and_direct_chains_mixed(blk, platform):
    """2.7.5.3: indirect and direct chains side by side in one burst, each its own request."""
    if not blk.has(spec.VIRTIO_F_INDIRECT_DESC):
        raise FeatureNotOffered(spec.VIRTIO_F_INDIRECT_DESC)
    reqs = [BlkRequest(spec.VIRTIO_BLK_T_IN, 1600 + 8 * i, read_len=(i + 1) * S,
                       indirect=i % 2 == 0) for i in range(6)]
    expected = [disk_content(blk, platform, r.sector, r.read_len) for r in reqs]
    for i, c in enumerate(blk.submit(reqs)):
        kind = "indirect" if reqs[i].indirect else "direct"
        expect_ok(c, reqs[i].read_len)
        expect_data(c.data, expected[i], f"request #{i} ({kind})", reqs[i].sector * S)
