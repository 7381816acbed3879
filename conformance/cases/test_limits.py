"""size_max, seg_max and topology: 5.2.3 Feature bits, 5.2.4 Device configuration layout.

size_max and seg_max bind the driver; a request that keeps to them exactly (seg_max
data descriptors, descriptors of size_max bytes) is one the device must serve.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_ok
from conformance.driver.blk import read_request, write_request
from conformance.driver.device import FeatureNotOffered

S = spec.SECTOR_SIZE
MAX_SEG_TRIED = 1024  # more data descriptors than this are not tried
MAX_BYTES_TRIED = 1 << 20  # nor a request of more data than this


def payload(seed: int, nbytes: int) -> bytes:
    return bytes(((seed + i * 3 + (i >> 8)) & 0xFF) ^ 0xC3 for i in range(nbytes))


def fits(blk, descriptors: int) -> bool:
    """Whether a chain of ``descriptors`` can be sent: directly, or through one indirect."""
    return descriptors <= blk.queues[0].size or blk.has(spec.VIRTIO_F_INDIRECT_DESC)


def round_trip(blk, sector: int, direction: str, data_split: list[int]) -> None:
    """IN or OUT laid out as ``data_split`` data descriptors; check status and data."""
    nbytes = sum(data_split)
    indirect = len(data_split) + 2 > blk.queues[0].size
    if direction == "out":
        data = payload(sector, nbytes)
        c = blk.submit_one(write_request(sector, data, readable_split=[16] + data_split,
                                         indirect=indirect))
        expect_ok(c, 0)
        back = blk.submit_one(read_request(sector, nbytes))
        expect_ok(back, nbytes)
        expect_data(back.data, data, f"IN after OUT in {len(data_split)} data descriptors",
                    sector * S)
    else:
        # The reference read keeps to size_max too: one sector per descriptor.
        ref = blk.submit_one(read_request(sector, nbytes, writable_split=[S] * (nbytes // S)
                                          + [1], indirect=nbytes // S + 2 > blk.queues[0].size))
        expect_ok(ref, nbytes)
        expected = ref.data
        c = blk.submit_one(read_request(sector, nbytes, writable_split=data_split + [1],
                                        indirect=indirect))
        expect_ok(c, nbytes)
        expect_data(c.data, expected, f"IN in {len(data_split)} data descriptors", sector * S)


def direction_allowed(blk, direction: str) -> None:
    if direction == "out" and blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")


@pytest.mark.clause("blk.size-seg-max", "blk.in-data", "blk.out-data")
@pytest.mark.parametrize("direction", ["in", "out"])
def test_seg_max_data_descriptors(blk, direction):
    """Exactly seg_max data descriptors of 512 bytes, plus header and status."""
    if not blk.has(spec.VIRTIO_BLK_F_SEG_MAX):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_SEG_MAX)
    direction_allowed(blk, direction)
    seg_max = blk.config.u32(spec.BLK_CFG_SEG_MAX)
    assert seg_max >= 1, "VIRTIO_BLK_F_SEG_MAX is negotiated but seg_max is 0 (5.2.3)"
    if seg_max > MAX_SEG_TRIED or seg_max * S > MAX_BYTES_TRIED:
        pytest.skip(f"seg_max is {seg_max}: more than the {MAX_SEG_TRIED} descriptors tried")
    if blk.has(spec.VIRTIO_BLK_F_SIZE_MAX) and blk.config.u32(spec.BLK_CFG_SIZE_MAX) < S:
        pytest.skip("size_max is below 512: sector-sized descriptors would break it")
    if not fits(blk, seg_max + 2):
        pytest.skip(f"seg_max + 2 = {seg_max + 2} descriptors exceed the queue size "
                    f"{blk.queues[0].size} and indirect descriptors are not negotiated")
    round_trip(blk, 4000, direction, [S] * seg_max)


@pytest.mark.clause("blk.size-seg-max", "blk.in-data", "blk.out-data")
@pytest.mark.parametrize("direction", ["in", "out"])
def test_size_max_data_descriptors(blk, direction):
    """Data descriptors of exactly size_max bytes (two, or one when that is 1 MiB or more),
    and a short one to end on a sector boundary."""
    if not blk.has(spec.VIRTIO_BLK_F_SIZE_MAX):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_SIZE_MAX)
    direction_allowed(blk, direction)
    size_max = blk.config.u32(spec.BLK_CFG_SIZE_MAX)
    assert size_max >= 1, "VIRTIO_BLK_F_SIZE_MAX is negotiated but size_max is 0 (5.2.3)"
    if size_max > MAX_BYTES_TRIED:
        pytest.skip(f"size_max is {size_max}: more than the {MAX_BYTES_TRIED} bytes tried")
    count = 2 if 2 * size_max <= MAX_BYTES_TRIED else 1
    split = [size_max] * count
    tail = -sum(split) % S
    if tail:
        split.append(tail)
    if blk.has(spec.VIRTIO_BLK_F_SEG_MAX) and len(split) > blk.config.u32(spec.BLK_CFG_SEG_MAX):
        pytest.skip(f"seg_max allows fewer than the {len(split)} data descriptors needed")
    round_trip(blk, 6000, direction, split)


@pytest.mark.clause("blk.topology-consistent")
def test_topology_consistent(blk):
    """5.2.4: topology is counted in logical blocks (blk_size); alignment_offset is the
    first aligned logical block, so it lies inside one physical block, and the
    suggested minimum I/O size does not exceed the optimal (suggested maximum) one."""
    if not blk.has(spec.VIRTIO_BLK_F_TOPOLOGY):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_TOPOLOGY)
    cfg = blk.config
    exp = cfg.u8(spec.BLK_CFG_PHYSICAL_BLOCK_EXP)
    offset = cfg.u8(spec.BLK_CFG_ALIGNMENT_OFFSET)
    min_io = cfg.u16(spec.BLK_CFG_MIN_IO_SIZE)
    opt_io = cfg.u32(spec.BLK_CFG_OPT_IO_SIZE)
    per_physical = 1 << min(exp, 63)
    assert offset < per_physical, (
        f"alignment_offset {offset} is not below the {per_physical} logical block(s) per "
        f"physical block (physical_block_exp {exp})")
    assert not (min_io and opt_io and min_io > opt_io), (
        f"min_io_size {min_io} exceeds opt_io_size {opt_io} (both in logical blocks)")
