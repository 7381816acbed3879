"""VIRTIO_BLK_T_SECURE_ERASE: 5.2.3 Feature bits, 5.2.6 Device Operation.

The spec does not say what an erased range reads back as, so the cases check
the status within the advertised limits, the refusal of unknown flags, and that
sectors outside the ranges keep their data.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_error, expect_ok
from conformance.driver.blk import segments_request, write_request

S = spec.SECTOR_SIZE
SECURE_ERASE = spec.VIRTIO_BLK_T_SECURE_ERASE
MAX_SEGMENTS_TRIED = 16  # above this many segments the case stays below the limit
MAX_SECTORS_TRIED = 2048  # 1 MiB: above this the case stays below the limit


def secure_erase_device(device):
    blk = device.init(require=[spec.VIRTIO_BLK_F_SECURE_ERASE])
    if blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")
    return blk


def limits(blk) -> tuple[int, int, int]:
    """(max_secure_erase_sectors, max_secure_erase_seg, secure_erase_sector_alignment)."""
    max_sectors = blk.config.u32(spec.BLK_CFG_MAX_SECURE_ERASE_SECTORS)
    max_seg = blk.config.u32(spec.BLK_CFG_MAX_SECURE_ERASE_SEG)
    align = blk.config.u32(spec.BLK_CFG_SECURE_ERASE_SECTOR_ALIGNMENT)
    assert max_sectors >= 1 and max_seg >= 1, (
        f"VIRTIO_BLK_F_SECURE_ERASE is negotiated but max_secure_erase_sectors={max_sectors} "
        f"and max_secure_erase_seg={max_seg}: no request fits (5.2.3)")
    return max_sectors, max_seg, max(align, 1)


def step(blk, align: int) -> int:
    """Range granularity: the erase alignment, at least one logical block."""
    lb = 1
    if blk.has(spec.VIRTIO_BLK_F_BLK_SIZE):
        lb = max(blk.config.u32(spec.BLK_CFG_BLK_SIZE) // S, 1)
    return max(align, lb)


def fill(blk, sector: int, count: int, seed: int) -> bytes:
    data = bytes(((seed + i * 17) & 0xFF) | 0x40 for i in range(count * S))
    expect_ok(blk.submit_one(write_request(sector, data)), 0)
    return data


@pytest.mark.clause("blk.secure-erase-command", "blk.status-ok")
def test_secure_erase_max_segments(device):
    """max_secure_erase_seg segments (up to 16); the sectors between them keep their data."""
    blk = secure_erase_device(device)
    max_sectors, max_seg, align = limits(blk)
    k = step(blk, align)
    n = min(max_seg, MAX_SEGMENTS_TRIED)
    base = -(-3000 // k) * k
    before = fill(blk, base, 2 * k * n, 0x23)
    segs = [(base + 2 * k * i, min(k, max_sectors), 0) for i in range(n)]
    expect_ok(blk.submit_one(segments_request(SECURE_ERASE, segs)), 0)
    for i in range(n):
        gap = base + 2 * k * i + k
        off = (gap - base) * S
        expect_data(blk.read(gap, k * S), before[off:off + k * S],
                    f"sector {gap} between securely erased ranges", gap * S)


@pytest.mark.clause("blk.secure-erase-command", "blk.status-ok")
def test_secure_erase_max_sectors(device):
    """One segment of max_secure_erase_sectors (or 1 MiB when the limit is larger)."""
    blk = secure_erase_device(device)
    max_sectors, _, align = limits(blk)
    k = step(blk, align)
    start = -(-16384 // k) * k
    num = min(max_sectors, MAX_SECTORS_TRIED, blk.config.capacity - start)
    expect_ok(blk.submit_one(segments_request(SECURE_ERASE, [(start, num, 0)])), 0)


@pytest.mark.clause("blk.secure-erase-unknown-flags")
@pytest.mark.parametrize("flags", [0x2, 0x80000000])
def test_secure_erase_unknown_flags(device, flags):
    blk = secure_erase_device(device)
    _, _, align = limits(blk)
    k = step(blk, align)
    sector = -(-3400 // k) * k
    before = fill(blk, sector, k, flags & 0xFF)
    c = blk.submit_one(segments_request(SECURE_ERASE, [(sector, k, flags)]))
    expect_error(c, spec.VIRTIO_BLK_S_UNSUPP, f"flags {flags:#x} has unknown bits (5.2.6.2)")
    expect_data(blk.read(sector, k * S), before, "sectors of a refused secure erase", sector * S)
