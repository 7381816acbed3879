"""VIRTIO_BLK_F_LIFETIME and VIRTIO_BLK_T_GET_LIFETIME: 5.2.6 Device Operation.

Whether LIFETIME may be offered depends on the storage behind the disk (5.2.6.2:
a plain file has no lifetime metrics, eMMC or UFS storage has).  The driver
cannot see that; a target that knows says so in ``describe()`` as
``backing_lifetime_metrics`` (true / false), and those two cases skip elsewhere.
"""

from __future__ import annotations

import struct

import pytest

from conformance import spec
from conformance.checks import expect_ok
from conformance.driver.blk import BlkRequest

PRE_EOL_MAX = spec.VIRTIO_BLK_PRE_EOL_INFO_URGENT  # 3; above is reserved
EST_MAX = spec.VIRTIO_BLK_LIFETIME_EST_MAX  # 11; above is reserved


def get_lifetime(device) -> tuple[int, int, int]:
    blk = device.init(require=[spec.VIRTIO_BLK_F_LIFETIME])
    c = blk.submit_one(BlkRequest(spec.VIRTIO_BLK_T_GET_LIFETIME,
                                  read_len=spec.BLK_LIFETIME_SIZE))
    expect_ok(c, spec.BLK_LIFETIME_SIZE)
    return struct.unpack("<HHH", c.data)


def reserved_fields(values: tuple[int, int, int]) -> list[str]:
    pre_eol, typ_a, typ_b = values
    bad = []
    if pre_eol > PRE_EOL_MAX:
        bad.append(f"pre_eol_info={pre_eol:#x} (defined: 0..{PRE_EOL_MAX})")
    for name, v in (("device_lifetime_est_typ_a", typ_a), ("device_lifetime_est_typ_b", typ_b)):
        if v > EST_MAX:
            bad.append(f"{name}={v:#x} (defined: 0..{EST_MAX})")
    return bad


def lifetime_metrics(platform) -> bool:
    known = platform.describe().get("backing_lifetime_metrics")
    if known is None:
        pytest.skip("the target does not say whether its storage has lifetime metrics")
    return bool(known)


@pytest.mark.clause("blk.lifetime-command", "blk.lifetime-data")
def test_get_lifetime(device):
    """Three le16 fields, 6 bytes and the status: a field that decodes to a value the
    spec does not define means the layout or byte order is wrong."""
    values = get_lifetime(device)
    bad = reserved_fields(values)
    assert not bad, (f"GET_LIFETIME data {values} does not decode as struct virtio_blk_lifetime "
                     f"(three le16): {'; '.join(bad)}")


@pytest.mark.clause("blk.lifetime-no-reserved")
def test_lifetime_no_reserved_values(device):
    bad = reserved_fields(get_lifetime(device))
    assert not bad, f"GET_LIFETIME reports reserved values (5.2.6.2): {'; '.join(bad)}"


@pytest.mark.clause("blk.lifetime-not-offered")
def test_lifetime_not_offered_without_metrics(device, platform):
    if lifetime_metrics(platform):
        pytest.skip("the target's storage has lifetime metrics")
    assert not device.offers(spec.VIRTIO_BLK_F_LIFETIME), (
        "VIRTIO_BLK_F_LIFETIME is offered but the storage behind the disk has no lifetime "
        "metrics (the target says so); 5.2.6.2 forbids offering it then")


@pytest.mark.clause("blk.lifetime-offered")
def test_lifetime_offered_with_metrics(device, platform):
    if not lifetime_metrics(platform):
        pytest.skip("the target's storage has no lifetime metrics")
    assert device.offers(spec.VIRTIO_BLK_F_LIFETIME), (
        "the storage behind the disk has lifetime metrics (the target says so) but "
        "VIRTIO_BLK_F_LIFETIME is not offered (5.2.6.2)")
