"""VIRTIO_BLK_T_DISCARD: 5.2.3 Feature bits, 5.2.6 Device Operation.

What a discarded range reads back as is undefined (5.2.6.1: the driver must not
assume anything), so the cases check the status, the limits the device
advertises, and that sectors outside the range keep their data.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_error, expect_ok
from conformance.driver.blk import segments_request, write_request

S = spec.SECTOR_SIZE
DISCARD = spec.VIRTIO_BLK_T_DISCARD
UNMAP = spec.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
MAX_SEGMENTS_TRIED = 16  # above this many segments the case stays below the limit
MAX_SECTORS_TRIED = 2048  # 1 MiB: above this the case stays below the limit


def discard_device(device):
    blk = device.init(require=[spec.VIRTIO_BLK_F_DISCARD])
    if blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")
    return blk


def limits(blk) -> tuple[int, int, int]:
    """(max_discard_sectors, max_discard_seg, discard_sector_alignment) from 5.2.4."""
    max_sectors = blk.config.u32(spec.BLK_CFG_MAX_DISCARD_SECTORS)
    max_seg = blk.config.u32(spec.BLK_CFG_MAX_DISCARD_SEG)
    align = blk.config.u32(spec.BLK_CFG_DISCARD_SECTOR_ALIGNMENT)
    assert max_sectors >= 1 and max_seg >= 1, (
        f"VIRTIO_BLK_F_DISCARD is negotiated but max_discard_sectors={max_sectors} and "
        f"max_discard_seg={max_seg}: no discard fits (5.2.3)")
    return max_sectors, max_seg, max(align, 1)


def logical_block(blk) -> int:
    """Sectors per logical block: requests stay aligned to it."""
    if blk.has(spec.VIRTIO_BLK_F_BLK_SIZE):
        return max(blk.config.u32(spec.BLK_CFG_BLK_SIZE) // S, 1)
    return 1


def fill(blk, sector: int, count: int, seed: int) -> bytes:
    data = bytes((seed + i * 13 + (i >> 9) * 5) & 0xFF | 1 for i in range(count * S))
    expect_ok(blk.submit_one(write_request(sector, data)), 0)
    return data


@pytest.mark.clause("blk.discard-command", "blk.status-ok")
def test_discard_max_segments(device):
    """As many segments as max_discard_seg allows (up to 16), each one aligned block."""
    blk = discard_device(device)
    max_sectors, max_seg, align = limits(blk)
    step = max(align, logical_block(blk))
    n = min(max_seg, MAX_SEGMENTS_TRIED)
    num = min(step, max_sectors)
    segs = [(4096 + 2 * step * i, num, 0) for i in range(n)]
    c = blk.submit_one(segments_request(DISCARD, segs))
    expect_ok(c, 0)


@pytest.mark.clause("blk.discard-command", "blk.status-ok")
def test_discard_max_sectors(device):
    """One segment of max_discard_sectors (or 1 MiB when the limit is larger)."""
    blk = discard_device(device)
    max_sectors, _, align = limits(blk)
    step = max(align, logical_block(blk))
    start = -(-8192 // step) * step
    num = min(max_sectors, MAX_SECTORS_TRIED, blk.config.capacity - start)
    c = blk.submit_one(segments_request(DISCARD, [(start, num, 0)]))
    expect_ok(c, 0)


@pytest.mark.clause("blk.discard-command", "blk.in-data")
def test_discard_leaves_neighbours(device):
    """A discard off the discard_sector_alignment grid touches no sector outside it.

    discard_sector_alignment only helps the driver split requests (5.2.5); a device
    that widens the range to its own blocks would destroy the neighbours' data.
    """
    blk = discard_device(device)
    limits(blk)
    lb = logical_block(blk)
    first = 1000 * lb + lb  # one logical block past an aligned boundary
    before = fill(blk, first - lb, 4 * lb, 0x31)
    c = blk.submit_one(segments_request(DISCARD, [(first, 2 * lb, 0)]))
    expect_ok(c, 0)
    for sector in (first - lb, first + 2 * lb):
        off = (sector - (first - lb)) * S
        expect_data(blk.read(sector, lb * S), before[off:off + lb * S],
                    f"sector {sector} next to a discarded range", sector * S)


@pytest.mark.clause("blk.discard-unmap-unsupp")
def test_discard_unmap_unsupported(device):
    blk = discard_device(device)
    limits(blk)
    lb = logical_block(blk)
    sector = 1200 * lb
    before = fill(blk, sector, lb, 0x52)
    c = blk.submit_one(segments_request(DISCARD, [(sector, lb, UNMAP)]))
    expect_error(c, spec.VIRTIO_BLK_S_UNSUPP, "unmap is only for write zeroes (5.2.6.2)")
    expect_data(blk.read(sector, lb * S), before, "sectors of a refused discard", sector * S)


@pytest.mark.clause("blk.discard-unknown-flags")
@pytest.mark.parametrize("flags", [0x2, 0x80000000])
def test_discard_unknown_flags(device, flags):
    blk = discard_device(device)
    limits(blk)
    lb = logical_block(blk)
    sector = 1300 * lb
    before = fill(blk, sector, lb, flags & 0xFF)
    c = blk.submit_one(segments_request(DISCARD, [(sector, lb, flags)]))
    expect_error(c, spec.VIRTIO_BLK_S_UNSUPP, f"flags {flags:#x} has unknown bits (5.2.6.2)")
    expect_data(blk.read(sector, lb * S), before, "sectors of a refused discard", sector * S)
