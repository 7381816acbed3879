"""Device status: 2.1 Device Status Field, 3.1 Device Initialization."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_ok, expect_reset, expect_unchanged
from conformance.driver.blk import POISON, pack_header, read_request
from conformance.driver.platform import MemWrite, PollTimeout
from conformance.driver.split import UsedRingError
from conformance.driver.virtqueue import QueueTimeout

S = spec.SECTOR_SIZE
ACK, DRIVER = spec.STATUS_ACKNOWLEDGE, spec.STATUS_DRIVER
FEATURES_OK, DRIVER_OK = spec.STATUS_FEATURES_OK, spec.STATUS_DRIVER_OK
NEEDS_RESET, FAILED = spec.STATUS_DEVICE_NEEDS_RESET, spec.STATUS_FAILED
QUIET = 0.2  # seconds to watch for something the device must not do


def used_idx(blk, queue: int = 0) -> int:
    q = blk.queues[queue]
    return int.from_bytes(blk.platform.mem_read(q.used_idx_addr, 2), "little")


@pytest.mark.clause("status.starts-zero")
def test_status_zero_before_driver_writes(device):
    """2.1: device_status starts out as 0 (the fixture only probed PCI, never wrote it)."""
    status = device.transport.device_status
    assert status == 0, f"device_status reads {spec.status_str(status)} before any driver write"


@pytest.mark.clause("init.status-bits-retained")
def test_init_status_bits_retained(device):
    """3.1: each step's bit stays set while the driver adds the next ones and uses the device."""
    v, t = device.virtio, device.transport
    v.reset()
    expected = 0
    for bit in (ACK, DRIVER):
        v.add_status(bit)
        expected |= bit
        status = t.device_status
        assert status == expected, (
            f"after setting {spec.STATUS_NAMES[bit]}: device_status {spec.status_str(status)}, "
            f"expected {spec.status_str(expected)}")
    device.init()
    expect_ok(device.submit_one(read_request(0, S)), S)
    status = t.device_status
    want = ACK | DRIVER | FEATURES_OK | DRIVER_OK
    assert status == want, (
        f"after initialization and a request: device_status {spec.status_str(status)}, expected "
        f"{spec.status_str(want)}")


@pytest.mark.clause("init.features-ok-readback")
def test_features_ok_stays_set(device):
    """3.1 step 6: an accepted FEATURES_OK reads back set, then and after every later step."""
    t = device.transport
    device.init(driver_ok=False)
    readings = [("right after FEATURES_OK and queue set-up", t.device_status)]
    device.virtio.driver_ok()
    readings.append(("after DRIVER_OK", t.device_status))
    expect_ok(device.submit_one(read_request(0, S)), S)
    readings.append(("after a request", t.device_status))
    lost = [f"{when}: {spec.status_str(s)}" for when, s in readings if not s & FEATURES_OK]
    assert not lost, "FEATURES_OK no longer reads as set " + "; ".join(lost)


@pytest.mark.clause("init.status-bits-retained", "reset.status-write-resets",
                    "reset.status-reads-zero")
def test_driver_ok_before_features_ok(device):
    """DRIVER_OK without FEATURES_OK (a driver error, 3.1.1), then recovery by reset.

    The spec leaves the device's reaction open: it may keep DRIVER_OK or not and may
    set DEVICE_NEEDS_RESET.  ACKNOWLEDGE and DRIVER were set correctly and stay set;
    a reset must then bring the device back to 0 and a normal initialization works.
    """
    v, t = device.virtio, device.transport
    v.reset()
    v.add_status(ACK)
    v.add_status(DRIVER)
    v.add_status(DRIVER_OK)
    status = t.device_status
    assert status & (ACK | DRIVER) == ACK | DRIVER, (
        f"DRIVER_OK written without FEATURES_OK: device_status {spec.status_str(status)} lost "
        f"ACKNOWLEDGE or DRIVER")
    expect_reset(device, "DRIVER_OK was set without FEATURES_OK")
    device.init()
    expect_ok(device.submit_one(read_request(0, S)), S)


@pytest.mark.clause("init.status-bits-retained", "status.no-use-before-driver-ok",
                    "reset.status-write-resets")
def test_failed_then_reset(device):
    """The driver gives up (FAILED, 2.1): nothing is served without DRIVER_OK; a reset recovers."""
    t = device.transport
    device.init(driver_ok=False)
    device.virtio.add_status(FAILED)
    status = t.device_status
    want = ACK | DRIVER | FEATURES_OK
    assert status & want == want and not status & DRIVER_OK, (
        f"after FAILED: device_status {spec.status_str(status)}, expected "
        f"{spec.status_str(want)} kept and no DRIVER_OK")
    # 3.1.1 forbids notifying before DRIVER_OK; the buffer is only made available.
    posted = device.post([read_request(0, S)], kick=False)
    expect_unchanged(device.platform, device.queues[0].used_idx_addr, 2, 0,
                     "the device used a buffer although the driver set FAILED, never DRIVER_OK")
    assert set(device.writable_bytes(posted[0])) == {POISON}, (
        "the device wrote into a request's buffers without DRIVER_OK")
    expect_reset(device, "the driver had set FAILED")
    device.init()
    expect_ok(device.submit_one(read_request(0, S)), S)


@pytest.mark.clause("status.no-use-before-driver-ok", "status.no-notify-before-driver-ok")
@pytest.mark.parametrize("early_kick", [False, True], ids=["populated", "notified-early"])
def test_no_use_before_driver_ok(device, early_kick):
    """2.1.2: no buffer is consumed and no used buffer notification sent before DRIVER_OK.

    ``populated``: the driver fills the queue before DRIVER_OK as 3.1.1 step 7 allows.
    ``notified-early``: it also notifies, which 3.1.1 forbids the driver; the device
    requirement has no exception for that, so the buffer must still wait for DRIVER_OK.
    """
    device.init(driver_ok=False)
    msix = device.virtio.msix
    vector = device.virtio.queue_info[0].msix_vector
    if msix is not None and vector != spec.VIRTIO_MSI_NO_VECTOR:
        msix.clear(vector)
    posted = device.post([read_request(0, S)], kick=early_kick)
    status = device.transport.device_status
    assert not status & DRIVER_OK, f"device_status {spec.status_str(status)}: DRIVER_OK unasked"
    expect_unchanged(device.platform, device.queues[0].used_idx_addr, 2, 0,
                     "the device used a buffer before DRIVER_OK")
    assert set(device.writable_bytes(posted[0])) == {POISON}, (
        "the device wrote into a request's buffers before DRIVER_OK")
    if msix is not None and vector != spec.VIRTIO_MSI_NO_VECTOR:
        assert not msix.fired(vector), "used buffer notification before DRIVER_OK"
    device.virtio.driver_ok()
    device.kick()
    (c,) = device.reap(posted)
    expect_ok(c, S)


# --- DEVICE_NEEDS_RESET -------------------------------------------------------------


def post_descriptor_loop(blk) -> None:
    """Make available on queue 0 a chain whose second descriptor leads back to the first.

    2.7.5.1 forbids the driver such a loop; the device cannot finish walking it.
    """
    q = blk.queues[0]
    pool = blk.virtio.pool
    header = pool.alloc(32, 16)
    first, second = q.free.pop(), q.free.pop()
    nxt = spec.VIRTQ_DESC_F_NEXT
    # Both device-readable, so the loop is the chain's only fault.
    ops = [MemWrite(header, pack_header(spec.VIRTIO_BLK_T_IN, 0) + bytes(16)),
           q.desc_op(first, header, 16, nxt, second),
           q.desc_op(second, header + 16, 16, nxt, first),
           q.avail_entry_op(q.avail_idx, first)]
    q.avail_idx += 1
    blk.platform.execute(ops + q.publish() + q.kick())


def provoke_needs_reset(blk) -> tuple[bool | None, int]:
    """Send the loop; return (config change notification seen, device_status after it).

    The notification is watched on config_msix_vector (init() maps it to vector 0);
    without MSI-X it cannot be told apart and the first value is None.
    """
    msix = blk.virtio.msix
    if msix is None:
        post_descriptor_loop(blk)
        return None, blk.transport.device_status
    msix.clear(0)
    post_descriptor_loop(blk)
    try:
        msix.wait(0, timeout=blk.timeout)
        notified = True
    except PollTimeout:
        notified = False
    return notified, blk.transport.device_status


@pytest.mark.clause("status.needs-reset-set")
def test_needs_reset_after_descriptor_loop(blk):
    """2.1.2: a device that cannot go on after a driver error SHOULD set DEVICE_NEEDS_RESET.

    A device may instead cope with the loop and stay healthy: then the next
    well-formed request must still complete.
    """
    _, status = provoke_needs_reset(blk)
    if status & NEEDS_RESET:
        return
    q = blk.queues[0]
    q.chains.clear()  # forget the loop: a healthy device may have used it or not
    q.last_used = used_idx(blk)
    try:
        c = blk.submit_one(read_request(0, S))
    except (QueueTimeout, UsedRingError) as exc:
        raise AssertionError(
            f"after a descriptor loop the device stopped serving queue 0 without setting "
            f"DEVICE_NEEDS_RESET (device_status {spec.status_str(status)}): {exc}") from None
    expect_ok(c, S)


@pytest.mark.clause("status.needs-reset-config-notify")
def test_needs_reset_sends_config_notification(blk):
    """2.1.2: with DRIVER_OK set, setting DEVICE_NEEDS_RESET is followed by a config change
    notification (here: the MSI-X message of config_msix_vector)."""
    notified, status = provoke_needs_reset(blk)
    if not status & NEEDS_RESET:
        pytest.skip("the device did not set DEVICE_NEEDS_RESET after a descriptor loop")
    if notified is None:
        pytest.skip("no MSI-X capability: the configuration change notification cannot be seen")
    assert notified, (f"device_status {spec.status_str(status)}: DEVICE_NEEDS_RESET set while "
                      f"DRIVER_OK, but no configuration change notification within "
                      f"{blk.timeout:g}s")


@pytest.mark.clause("reset.status-write-resets", "reset.status-reads-zero")
def test_reset_recovers_from_needs_reset(blk):
    """A reset clears DEVICE_NEEDS_RESET (device_status reads exactly 0) and the device works."""
    provoke_needs_reset(blk)
    expect_reset(blk, "after a descriptor loop")
    blk.init()
    expect_ok(blk.submit_one(read_request(0, S)), S)


@pytest.mark.clause("init.live-after-driver-ok")
def test_every_enabled_queue_served(device):
    """3.1 step 8: after DRIVER_OK the device serves every queue the driver set up."""
    n = 1
    if device.offers(spec.VIRTIO_BLK_F_MQ):
        device.init(driver_ok=False)
        n = min(device.read_config().num_queues, 4)
    device.init(num_queues=n)
    for queue in range(n):
        expect_ok(device.submit_one(read_request(queue, S), queue=queue), S)
