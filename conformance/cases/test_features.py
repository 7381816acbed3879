"""Feature negotiation: 2.2 Feature Bits, 6 Reserved Feature Bits."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_ok
from conformance.driver.blk import DRIVER_BLK_FEATURES, DRIVER_FEATURES, read_request
from conformance.driver.device import FeatureNotOffered
from conformance.driver.platform import PollTimeout
from conformance.driver.virtqueue import QueueTimeout

# Block features the driver implements (legacy BARRIER/SCSI and ZONED are left out).
BLK_BITS = [b for b in range(24) if DRIVER_BLK_FEATURES >> b & 1]
PCI_CAP_ID_EXP = 0x10  # PCI Express capability (PCI Express Base, 7.5.3)


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


# 6.2: a device MAY stop working when these are offered but not accepted, so leaving
# one of them out is not a subset the device has to accept.
MAY_REFUSE_WITHOUT = {spec.VIRTIO_F_VERSION_1, spec.VIRTIO_F_ACCESS_PLATFORM,
                      spec.VIRTIO_F_ORDER_PLATFORM}


@pytest.mark.clause("feat.subset-accepted", "feat.version-1-refusal-may",
                    "feat.access-platform-refusal-may", "feat.order-platform-refusal-may")
def test_leave_one_out_subsets_accepted(device):
    """Every offered feature the driver knows, minus one: each such subset negotiates and works.

    2.2.2: the device SHOULD accept any valid subset; no feature a block device can
    offer depends on another except CONFIG_WCE on FLUSH (5.2.5.2), and leaving out
    FLUSH alone keeps CONFIG_WCE, which the spec allows (writeback then starts at 0).
    """
    full = device.transport.device_features() & DRIVER_FEATURES & ~(1 << spec.VIRTIO_F_RING_PACKED)
    refused, broken = [], []
    for bit in (b for b in range(64) if full >> b & 1 and b not in MAY_REFUSE_WITHOUT):
        wanted = full & ~(1 << bit)
        if not device.virtio.negotiate(wanted, check=False):
            refused.append(spec.feature_name(bit))
            continue
        device.init(features=wanted)
        c = device.submit_one(read_request(0, 512))
        if c.status != spec.VIRTIO_BLK_S_OK or c.used_len != 513 or not c.guards_intact:
            broken.append(f"{spec.feature_name(bit)}: IN answered {c.status_name}, used length "
                          f"{c.used_len}")
    assert not refused, (f"FEATURES_OK refused for the offered features minus one of: "
                         f"{', '.join(refused)}")
    assert not broken, "after negotiating all but one feature: " + "; ".join(broken)


@pytest.mark.clause("pci.device-feature-window")
def test_device_feature_window(device):
    """4.1.4.3.1: device_feature shows bits select*32.. for any select, so 0 past bit 63."""
    t = device.transport
    selects = (0, 1, 2, 3, 4, 5, 0x80, 0xFFFFFFFF)
    words = {sel: t.device_feature_word(sel) for sel in selects}
    # No feature of VIRTIO 1.2 (block device or transport) lies above bit 63.
    beyond = [f"select {sel:#x}: {w:#010x}" for sel, w in words.items() if sel > 1 and w]
    assert not beyond, ("device_feature is not 0 past bit 63: " + ", ".join(beyond))
    again = (t.device_feature_word(0), t.device_feature_word(1))
    assert again == (words[0], words[1]), (
        f"device_feature for select 0/1 reads {again[0]:#010x}/{again[1]:#010x} after other "
        f"selects, {words[0]:#010x}/{words[1]:#010x} before")


@pytest.mark.clause("feat.reserved-bits-not-offered")
def test_reserved_bits_not_offered(device):
    """2.2: bits 41 to 49 and 128 and above are reserved for future extensions."""
    t = device.transport
    offered = t.device_features()
    reserved = [b for b in range(41, 50) if offered >> b & 1]
    assert not reserved, f"reserved feature bit(s) offered: {reserved}"
    high = {sel: t.device_feature_word(sel) for sel in (4, 5, 6, 7)}
    assert not any(high.values()), (
        "feature bits at 128 and above offered: "
        + ", ".join(f"select {s}: {w:#010x}" for s, w in high.items() if w))


@pytest.mark.clause("pci.driver-feature-readback")
def test_driver_feature_readback(device):
    """4.1.4.3.1: driver_feature presents the valid bits the driver wrote, for each select."""
    v, t = device.virtio, device.transport
    v.reset()
    v.add_status(spec.STATUS_ACKNOWLEDGE)
    v.add_status(spec.STATUS_DRIVER)
    wanted = t.device_features() & DRIVER_FEATURES & ~(1 << spec.VIRTIO_F_RING_PACKED)
    words = [(wanted >> (32 * sel)) & 0xFFFFFFFF for sel in range(4)]
    for sel in (3, 2, 1, 0):  # high words first: a device must not keep only the last one
        t.common_write(spec.COMMON_GFSELECT, 4, sel)
        t.common_write(spec.COMMON_GF, 4, words[sel])
    for when in ("before FEATURES_OK", "after FEATURES_OK"):
        if when.startswith("after"):
            v.add_status(spec.STATUS_FEATURES_OK)
        back = []
        for sel in range(4):
            t.common_write(spec.COMMON_GFSELECT, 4, sel)
            back.append(t.common_read(spec.COMMON_GF, 4))
        wrong = [f"select {s}: {b:#010x}, wrote {w:#010x}"
                 for s, (b, w) in enumerate(zip(back, words)) if b != w]
        assert not wrong, f"driver_feature read back {when}: " + "; ".join(wrong)


@pytest.mark.clause("feat.fixed-until-reset")
def test_features_fixed_after_features_ok(device):
    """A feature the driver adds after FEATURES_OK is not negotiated (2.2: only reset renegotiates).

    EVENT_IDX is left out at FEATURES_OK and written afterwards.  Without it the device
    must notify for a used buffer while the avail flags are 0 (2.7.7.2); with it,
    used_event far ahead would suppress the notification.  A device may also treat
    the late write as a driver error and set DEVICE_NEEDS_RESET (2.1.2).
    """
    if not device.offers(spec.VIRTIO_F_EVENT_IDX):
        raise FeatureNotOffered(spec.VIRTIO_F_EVENT_IDX)
    device.init(exclude=[spec.VIRTIO_F_EVENT_IDX], driver_ok=False)
    t = device.transport
    t.write_driver_features(device.virtio.features | 1 << spec.VIRTIO_F_EVENT_IDX)
    device.virtio.driver_ok()
    q = device.queues[0]
    vector = device.virtio.queue_info[0].msix_vector
    msix = device.virtio.msix
    assert msix is not None and vector != spec.VIRTIO_MSI_NO_VECTOR, "queue 0 has no MSI-X vector"
    device.platform.execute([q.used_event_op(0x7FFF), msix.clear_op(vector)])
    posted = device.post([read_request(0, 512)])
    try:
        (c,) = device.reap(posted)
    except QueueTimeout:
        if t.device_status & spec.STATUS_DEVICE_NEEDS_RESET:
            return  # the late write was taken as a driver error: allowed
        raise
    expect_ok(c, 512)
    try:
        msix.wait(vector, timeout=device.timeout)
    except PollTimeout:
        raise AssertionError(
            "no used buffer notification although EVENT_IDX was not negotiated (it was only "
            "written after FEATURES_OK) and the avail flags are 0: the device applied a "
            "feature written after FEATURES_OK") from None


@pytest.mark.clause("feat.renegotiate-same-set")
def test_same_features_renegotiated_after_reset(device):
    """2.2.2: a feature set accepted once is accepted again after a device reset."""
    device.init()
    accepted = device.virtio.features
    expect_ok(device.submit_one(read_request(0, 512)), 512)
    for attempt in (2, 3):
        ok = device.virtio.negotiate(accepted, check=False)
        assert ok, (f"FEATURES_OK refused on negotiation #{attempt} of a set accepted before: "
                    f"{spec.features_str(accepted)}")
    device.init(features=accepted)
    expect_ok(device.submit_one(read_request(0, 512)), 512)


# Dependencies between features a virtio-blk-pci device can offer (VIRTIO 1.2): only
# 5.2.5.2 states one; the transport feature bits of 6 have none.
DEPENDENCIES = {spec.VIRTIO_BLK_F_CONFIG_WCE: (spec.VIRTIO_BLK_F_FLUSH,)}


@pytest.mark.clause("feat.dependencies-offered", "blk.flush-with-config-wce")
def test_feature_dependencies_offered(device):
    offered = device.transport.device_features()
    missing = [f"{spec.feature_name(bit)} without {spec.feature_name(need)}"
               for bit, needs in DEPENDENCIES.items() if offered >> bit & 1
               for need in needs if not offered >> need & 1]
    assert not missing, "offered a feature without the one it requires: " + ", ".join(missing)


@pytest.mark.clause("blk.flush-offered")
def test_flush_offered(device):
    """5.2.5.2: devices SHOULD always offer VIRTIO_BLK_F_FLUSH."""
    offered = device.transport.device_features()
    assert offered >> spec.VIRTIO_BLK_F_FLUSH & 1, (
        f"VIRTIO_BLK_F_FLUSH is not offered; offered: {spec.features_str(offered)}")


@pytest.mark.clause("feat.sr-iov-not-offered")
def test_sr_iov_only_with_capability(device):
    """6.2: VIRTIO_F_SR_IOV only on a function with a PCI SR-IOV capability.

    An SR-IOV capability is a PCI Express extended capability: a function without a
    PCI Express capability (conventional PCI) has none.
    """
    pcie = [c for c in device.virtio.capabilities if c.cap_id == PCI_CAP_ID_EXP]
    if device.offers(spec.VIRTIO_F_SR_IOV) and pcie:
        pytest.skip("VIRTIO_F_SR_IOV offered by a PCI Express function: the SR-IOV capability "
                    "would be in extended configuration space, which the Platform does not reach")
    assert not device.offers(spec.VIRTIO_F_SR_IOV), (
        "VIRTIO_F_SR_IOV offered by a conventional PCI function, which cannot have an SR-IOV "
        "capability")
