"""Feature negotiation: 2.2 Feature Bits, 6 Reserved Feature Bits."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_ok
from conformance.driver.blk import DRIVER_BLK_FEATURES, DRIVER_FEATURES, read_request
from conformance.driver.device import FeatureNotOffered

# Block features the driver implements (legacy BARRIER/SCSI and ZONED are left out).
BLK_BITS = [b for b in range(24) if DRIVER_BLK_FEATURES >> b & 1]


@pytest.mark.clause("feat.version-1-offered")
def test_version_1_offered(device):
    offered = device.transport.device_features()
    assert offered >> spec.VIRTIO_F_VERSION_1 & 1, (
        f"VIRTIO_F_VERSION_1 is not offered; offered: {spec.features_str(offered)}")


def _unoffered(offered: int, candidates) -> int:
    for bit in candidates:
        if not offered >> bit & 1:
            return bit
    pytest.skip("the device offers every candidate bit; no unoffered feature to try")


@pytest.mark.clause("feat.features-ok-refusal")
@pytest.mark.parametrize("which", ["blk-feature", "reserved-bit"])
def test_features_ok_refused_for_unoffered_feature(device, which):
    offered = device.transport.device_features()
    if which == "blk-feature":
        extra = _unoffered(offered, BLK_BITS)
    else:
        extra = _unoffered(offered, range(41, 64))  # 6: bits 41..49 reserved for future use
    wanted = (offered & DRIVER_FEATURES) | 1 << extra
    accepted = device.virtio.negotiate(wanted, check=False)
    status = device.transport.device_status
    assert not accepted, (
        f"FEATURES_OK stuck (device_status {spec.status_str(status)}) although the driver "
        f"accepted {spec.feature_name(extra)}, which the device did not offer")


@pytest.mark.clause("feat.subset-accepted")
@pytest.mark.parametrize("bit", BLK_BITS, ids=[spec.feature_name(b) for b in BLK_BITS])
def test_single_feature_subset_accepted(device, bit):
    """VERSION_1 plus one offered block feature is a valid subset: it negotiates and works."""
    offered = device.transport.device_features()
    if not offered >> bit & 1:
        raise FeatureNotOffered(bit)
    wanted = 1 << spec.VIRTIO_F_VERSION_1 | 1 << bit
    device.init(features=wanted)
    expect_ok(device.submit_one(read_request(0, 512)), 512)
