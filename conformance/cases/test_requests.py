"""Block requests: 5.2.6 Device Operation."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_guards, expect_ok, expect_status
from conformance.driver.blk import (
    BlkRequest,
    flush_request,
    get_id_request,
    read_request,
    write_request,
)
from conformance.driver.device import FeatureNotOffered
from conformance.driver.platform import Unsupported

S = spec.SECTOR_SIZE


def known_content(blk, platform, sector: int, nbytes: int) -> bytes:
    """What the disk holds at ``sector``: the backing store if the target can read it,
    else data this case writes first (then the IN check is only as strong as OUT)."""
    try:
        return platform.backing_read(sector * S, nbytes)
    except Unsupported:
        data = bytes((sector * 7 + i * 13) & 0xFF for i in range(nbytes))
        blk.write(sector, data)
        return data


@pytest.mark.clause("blk.in-data", "blk.status-ok", "split.used-len")
@pytest.mark.parametrize("sector,nbytes", [(0, S), (3, 8 * S), (1000, 64 * 1024)])
def test_in_returns_backing_data(blk, platform, sector, nbytes):
    expected = known_content(blk, platform, sector, nbytes)
    c = blk.submit_one(read_request(sector, nbytes))
    expect_ok(c, nbytes)
    expect_data(c.data, expected, f"IN of {nbytes} bytes at sector {sector}", sector * S)


@pytest.mark.clause("blk.in-data", "split.used-len")
def test_in_last_sector(blk, platform):
    last = blk.config.capacity - 1
    expected = known_content(blk, platform, last, S)
    c = blk.submit_one(read_request(last, S))
    expect_ok(c, S)
    expect_data(c.data, expected, f"IN of the last sector ({last})", last * S)


@pytest.mark.clause("blk.out-data", "blk.status-ok", "split.used-len")
@pytest.mark.parametrize("sector,nbytes", [(5, S), (17, 4096), (2048, 128 * 1024)])
def test_out_lands_on_disk(blk, platform, sector, nbytes):
    if blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")
    data = bytes((i * 31 + sector) & 0xFF for i in range(nbytes))
    c = blk.submit_one(write_request(sector, data))
    expect_ok(c, 0)
    back = blk.submit_one(read_request(sector, nbytes))
    expect_ok(back, nbytes)
    expect_data(back.data, data, f"IN after OUT of {nbytes} bytes at sector {sector}", sector * S)
    try:
        on_disk = platform.backing_read(sector * S, nbytes)
    except Unsupported:
        return
    expect_data(on_disk, data, f"backing store after OUT at sector {sector}", sector * S)


@pytest.mark.clause("blk.flush", "blk.status-ok")
def test_flush(blk, platform):
    if not blk.has(spec.VIRTIO_BLK_F_FLUSH):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_FLUSH)
    if not blk.has(spec.VIRTIO_BLK_F_RO):
        expect_ok(blk.submit_one(write_request(40, b"\x5c" * S)), 0)
    c = blk.submit_one(flush_request())
    expect_ok(c, 0)


@pytest.mark.clause("blk.get-id", "blk.status-ok")
def test_get_id(blk, platform):
    c = blk.submit_one(get_id_request())
    expect_status(c, spec.VIRTIO_BLK_S_OK)
    expect_guards(c)
    ident = c.data
    assert c.used_len in (spec.VIRTIO_BLK_ID_BYTES + 1,), (
        f"GET_ID: used length {c.used_len}, expected 21 (20 ID bytes and the status)")
    serial = platform.describe().get("serial")
    if serial is not None:
        raw = serial.encode()[:spec.VIRTIO_BLK_ID_BYTES]
        expected = raw + bytes(spec.VIRTIO_BLK_ID_BYTES - len(raw))
        assert ident == expected, f"GET_ID returned {ident!r}, expected {expected!r}"
    else:
        end = ident.find(b"\0")
        assert end < 0 or ident[end:] == bytes(len(ident) - end), (
            f"GET_ID: bytes after the NUL terminator are not NUL: {ident!r}")


@pytest.mark.clause("blk.unsupp-type")
@pytest.mark.parametrize("req_type", [2, 3, 0x7F, 0xFFFFFFFF])
def test_unknown_type_unsupported(blk, req_type):
    c = blk.submit_one(BlkRequest(req_type, read_len=0))
    expect_status(c, spec.VIRTIO_BLK_S_UNSUPP)
    expect_guards(c)
