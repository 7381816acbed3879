"""VIRTIO_BLK_F_RO: 5.2.6.2 Device Requirements: Device Operation.

A read-only device answers a write with VIRTIO_BLK_S_IOERR and writes no data.
The cases run only on a device that offers VIRTIO_BLK_F_RO (the reference
device with ``read_only: true``, examples/reference-ro.yaml).
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_error, expect_guards, expect_status_in
from conformance.driver.blk import segments_request, write_request
from conformance.driver.platform import Unsupported

S = spec.SECTOR_SIZE


def disk_view(blk, platform, sector: int, nbytes: int) -> list[tuple[str, bytes]]:
    """What the disk holds, through IN and (where the target can) the backing store."""
    views = [("IN", blk.read(sector, nbytes))]
    try:
        views.append(("backing store", platform.backing_read(sector * S, nbytes)))
    except Unsupported:
        pass
    return views


def expect_unchanged(blk, platform, sector: int, before: list[tuple[str, bytes]],
                     what: str) -> None:
    nbytes = len(before[0][1])
    for (how, old), (_, new) in zip(before, disk_view(blk, platform, sector, nbytes)):
        expect_data(new, old, f"{how} of sector {sector} after {what}", sector * S)


@pytest.mark.clause("blk.ro-ioerr", "blk.ro-no-write")
@pytest.mark.parametrize("where,count", [("first", 1), ("middle", 8), ("last", 1)])
def test_ro_out_fails(device, platform, where, count):
    blk = device.init(require=[spec.VIRTIO_BLK_F_RO])
    sector = {"first": 0, "middle": 100, "last": blk.config.capacity - count}[where]
    before = disk_view(blk, platform, sector, count * S)
    data = bytes(b ^ 0xFF for b in before[0][1])  # differs from the disk in every byte
    c = blk.submit_one(write_request(sector, data))
    expect_error(c, spec.VIRTIO_BLK_S_IOERR, "write to a VIRTIO_BLK_F_RO device (5.2.6.2)")
    expect_unchanged(blk, platform, sector, before, "an OUT to a read-only device")


@pytest.mark.clause("blk.ro-no-write")
def test_ro_write_zeroes_changes_nothing(device, platform):
    """Write zeroes is a write: the read-only device refuses it and keeps its data.

    Whether it says IOERR (a write to a read-only device, 5.2.6.2) or UNSUPP (a
    request it does not support) is left open; changing the data is not.
    """
    blk = device.init(require=[spec.VIRTIO_BLK_F_RO, spec.VIRTIO_BLK_F_WRITE_ZEROES])
    sector, count = 200, 4
    before = disk_view(blk, platform, sector, count * S)
    if not any(before[0][1]):
        pytest.skip(f"sectors {sector}..{sector + count - 1} already read as zeroes")
    c = blk.submit_one(segments_request(spec.VIRTIO_BLK_T_WRITE_ZEROES, [(sector, count, 0)]))
    expect_status_in(c, (spec.VIRTIO_BLK_S_IOERR, spec.VIRTIO_BLK_S_UNSUPP),
                     "write zeroes on a read-only device")
    expect_guards(c)
    expect_unchanged(blk, platform, sector, before, "write zeroes on a read-only device")
