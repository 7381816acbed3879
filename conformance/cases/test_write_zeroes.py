"""VIRTIO_BLK_T_WRITE_ZEROES: 5.2.3 Feature bits, 5.2.6 Device Operation.

After a completed write zeroes request its ranges read back as zeroes, with or
without the unmap flag (5.2.6.2); the sectors around each range keep their data.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_error, expect_ok
from conformance.driver.blk import read_request, segments_request, write_request

S = spec.SECTOR_SIZE
WRITE_ZEROES = spec.VIRTIO_BLK_T_WRITE_ZEROES
UNMAP = spec.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
MAX_SEGMENTS_TRIED = 16  # above this many segments the case stays below the limit
MAX_SECTORS_TRIED = 2048  # 1 MiB: above this the case stays below the limit


def write_zeroes_device(device):
    blk = device.init(require=[spec.VIRTIO_BLK_F_WRITE_ZEROES])
    if blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")
    return blk


def limits(blk) -> tuple[int, int]:
    """(max_write_zeroes_sectors, max_write_zeroes_seg) from 5.2.4."""
    max_sectors = blk.config.u32(spec.BLK_CFG_MAX_WRITE_ZEROES_SECTORS)
    max_seg = blk.config.u32(spec.BLK_CFG_MAX_WRITE_ZEROES_SEG)
    assert max_sectors >= 1 and max_seg >= 1, (
        f"VIRTIO_BLK_F_WRITE_ZEROES is negotiated but max_write_zeroes_sectors={max_sectors} "
        f"and max_write_zeroes_seg={max_seg}: no request fits (5.2.3)")
    return max_sectors, max_seg


def logical_block(blk) -> int:
    if blk.has(spec.VIRTIO_BLK_F_BLK_SIZE):
        return max(blk.config.u32(spec.BLK_CFG_BLK_SIZE) // S, 1)
    return 1


def sized(blk, nbytes: int) -> list[int]:
    """Data descriptor lengths for ``nbytes`` that keep to size_max (5.2.3) if negotiated."""
    if not blk.has(spec.VIRTIO_BLK_F_SIZE_MAX):
        return [nbytes]
    size_max = blk.config.u32(spec.BLK_CFG_SIZE_MAX)
    chunk = size_max // S * S or size_max or nbytes  # size_max 0 sets no usable limit
    return [min(chunk, nbytes - off) for off in range(0, nbytes, chunk)]


def nonzero(sector: int, nbytes: int) -> bytes:
    """Data with no zero byte, so a zeroed sector cannot pass for it."""
    return bytes(((sector * 11 + i * 7) & 0xFF) | 0x80 for i in range(nbytes))


def zero_and_check(blk, segs: list[tuple[int, int, int]], margin: int) -> None:
    """Fill each range and ``margin`` sectors either side, write zeroes, read back."""
    windows = [(s - margin, n + 2 * margin) for s, n, _ in segs]
    before = [nonzero(s, n * S) for s, n in windows]
    for (s, _), data in zip(windows, before):
        split = [16] + sized(blk, len(data))
        expect_ok(blk.submit_one(write_request(s, data, readable_split=split)), 0)
    c = blk.submit_one(segments_request(WRITE_ZEROES, segs))
    expect_ok(c, 0)
    done = blk.submit([read_request(s, n * S, writable_split=sized(blk, n * S) + [1])
                       for s, n in windows])
    for (s, n), seg, old, back in zip(windows, segs, before, done):
        expect_ok(back, n * S)
        m = margin * S
        expect = old[:m] + bytes(seg[1] * S) + old[len(old) - m:]
        expect_data(back.data, expect,
                    f"sectors {s}..{s + n - 1} after write zeroes of {seg[1]} sector(s) at "
                    f"{seg[0]} (flags {seg[2]:#x})", s * S)


@pytest.mark.clause("blk.write-zeroes-reads-zero", "blk.write-zeroes-command")
@pytest.mark.parametrize("flags", [0, UNMAP], ids=["keep", "unmap"])
def test_write_zeroes_reads_zero(device, flags):
    """Two ranges (one if max_write_zeroes_seg is 1); unmap may deallocate but reads are 0."""
    blk = write_zeroes_device(device)
    max_sectors, max_seg = limits(blk)
    lb = logical_block(blk)
    num = min(3 * lb, max_sectors // lb * lb) or lb
    segs = [(2000 * lb + 64 * lb * i, num, flags) for i in range(min(2, max_seg))]
    zero_and_check(blk, segs, lb)


@pytest.mark.clause("blk.write-zeroes-command", "blk.write-zeroes-reads-zero")
def test_write_zeroes_max_segments(device):
    blk = write_zeroes_device(device)
    _, max_seg = limits(blk)
    lb = logical_block(blk)
    n = min(max_seg, MAX_SEGMENTS_TRIED)
    segs = [(2400 * lb + 4 * lb * i, lb, 0) for i in range(n)]
    zero_and_check(blk, segs, lb)


@pytest.mark.clause("blk.write-zeroes-command", "blk.write-zeroes-reads-zero")
def test_write_zeroes_max_sectors(device):
    """One segment of max_write_zeroes_sectors (or 1 MiB when the limit is larger)."""
    blk = write_zeroes_device(device)
    max_sectors, _ = limits(blk)
    lb = logical_block(blk)
    num = min(max_sectors, MAX_SECTORS_TRIED) // lb * lb
    zero_and_check(blk, [(12288 * lb, num, 0)], lb)


@pytest.mark.clause("blk.write-zeroes-unknown-flags")
@pytest.mark.parametrize("flags", [0x2, 0x80000000, UNMAP | 0x4])
def test_write_zeroes_unknown_flags(device, flags):
    blk = write_zeroes_device(device)
    limits(blk)
    lb = logical_block(blk)
    sector = 2600 * lb
    before = nonzero(sector, lb * S)
    expect_ok(blk.submit_one(write_request(sector, before)), 0)
    c = blk.submit_one(segments_request(WRITE_ZEROES, [(sector, lb, flags)]))
    expect_error(c, spec.VIRTIO_BLK_S_UNSUPP, f"flags {flags:#x} has unknown bits (5.2.6.2)")
    expect_data(blk.read(sector, lb * S), before, "sectors of a refused write zeroes",
                sector * S)
