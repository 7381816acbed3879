"""Write stability without FLUSH: 5.2.6.2 Device Requirements: Device Operation.

A completed write must already be on the backing storage when (1) FLUSH was
offered but neither FLUSH nor CONFIG_WCE negotiated, or (2) CONFIG_WCE was
negotiated and ``writeback`` stayed 0 for the write's whole life.  The cases
read the backing store behind the device, so they skip on targets that cannot.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_ok
from conformance.driver.blk import write_request
from conformance.driver.device import FeatureNotOffered
from conformance.driver.platform import Unsupported

S = spec.SECTOR_SIZE


def need_backing_store(platform) -> None:
    try:
        platform.backing_read(0, S)
    except Unsupported as exc:
        pytest.skip(str(exc))


def writable(blk):
    if blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")
    return blk


def payload(seed: int, nbytes: int) -> bytes:
    return bytes(((seed * 5 + i * 29) & 0xFF) ^ 0x5A for i in range(nbytes))


def write_and_check_stable(blk, platform, sector: int, nbytes: int, why: str) -> None:
    data = payload(sector, nbytes)
    expect_ok(blk.submit_one(write_request(sector, data)), 0)
    expect_data(platform.backing_read(sector * S, nbytes), data,
                f"backing store right after OUT at sector {sector} completed ({why})",
                sector * S)


def set_writeback(blk, value: int) -> None:
    blk.transport.config_write(spec.BLK_CFG_WRITEBACK, 1, value)
    mode = blk.transport.config_read(spec.BLK_CFG_WRITEBACK, 1)
    assert mode == value, (
        f"writeback reads {mode} after the driver wrote {value} (5.2.5: with "
        f"VIRTIO_BLK_F_CONFIG_WCE the driver switches the cache mode through it)")


@pytest.mark.clause("blk.writethrough-stable")
def test_writethrough_write_is_stable(device, platform):
    """Writeback first (a write may stay volatile), then writethrough: from then on
    every completed write is on the backing store without a flush."""
    need_backing_store(platform)
    blk = writable(device.init(require=[spec.VIRTIO_BLK_F_CONFIG_WCE]))
    set_writeback(blk, 1)
    expect_ok(blk.submit_one(write_request(900, payload(1, S))), 0)
    set_writeback(blk, 0)
    write_and_check_stable(blk, platform, 910, S, "writeback 0")
    write_and_check_stable(blk, platform, 920, 16 * S, "writeback 0")


@pytest.mark.clause("blk.flush-not-negotiated-stable")
def test_write_stable_without_flush_negotiated(device, platform):
    need_backing_store(platform)
    if not device.offers(spec.VIRTIO_BLK_F_FLUSH):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_FLUSH)
    blk = writable(device.init(exclude=[spec.VIRTIO_BLK_F_FLUSH,
                                        spec.VIRTIO_BLK_F_CONFIG_WCE]))
    write_and_check_stable(blk, platform, 940, S, "FLUSH offered, not negotiated")
    write_and_check_stable(blk, platform, 950, 16 * S, "FLUSH offered, not negotiated")
