"""Device reset: 2.4 Device Reset, 4.1.4.3.1 (reset through device_status)."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_ok, expect_reset, expect_unchanged
from conformance.driver.blk import POISON, read_request
from conformance.driver.platform import PollTimeout, Unsupported

S = spec.SECTOR_SIZE
NO_VECTOR = spec.VIRTIO_MSI_NO_VECTOR
QUIET = 0.2  # seconds to watch for something the device must not do


@pytest.mark.clause("reset.status-zero", "reset.status-write-resets", "reset.status-reads-zero")
def test_reset_reads_zero(blk):
    """A live device (DRIVER_OK, a request done) resets to device_status 0 when 0 is written."""
    expect_ok(blk.submit_one(read_request(0, S)), S)
    expect_reset(blk, "a live device")


@pytest.mark.clause("pci.queue-enable-zero-on-reset", "pci.queue-size-writable",
                    "pci.queue-reset-zero-on-reset", "msix.unmapped-on-reset",
                    "reset.status-write-resets")
def test_reset_clears_queue_state(device):
    """After reset every queue reads as before initialization (4.1.4.3, 4.1.5.1.2.1).

    queue_enable 0, queue_size back to the maximum, every vector NO_VECTOR, and with
    RING_RESET queue_reset 0.  The spec gives queue_desc/driver/device no reset
    value, so they are not checked.
    """
    t = device.transport
    nq = t.num_queues
    max_sizes = [t.queue_read(q, spec.COMMON_Q_SIZE, 2) for q in range(nq)]
    used = min(nq, 4) if device.offers(spec.VIRTIO_BLK_F_MQ) else 1
    smaller = max(max_sizes[0] // 2, 1)
    device.init(num_queues=used, queue_size=smaller)
    expect_ok(device.submit_one(read_request(0, S)), S)
    ring_reset = device.has(spec.VIRTIO_F_RING_RESET)
    expect_reset(device)
    wrong = []
    vector = t.common_read(spec.COMMON_MSIX, 2)
    if vector != NO_VECTOR:
        wrong.append(f"config_msix_vector {vector:#x}")
    for q in range(nq):
        t.select_queue(q)
        fields = {"queue_enable": (t.common_read(spec.COMMON_Q_ENABLE, 2), 0),
                  "queue_size": (t.common_read(spec.COMMON_Q_SIZE, 2), max_sizes[q]),
                  "queue_msix_vector": (t.common_read(spec.COMMON_Q_MSIX, 2), NO_VECTOR)}
        if ring_reset:
            fields["queue_reset"] = (t.common_read(spec.COMMON_Q_RESET, 2), 0)
        wrong += [f"queue {q} {name} {got:#x} (expected {want:#x})"
                  for name, (got, want) in fields.items() if got != want]
    assert not wrong, "after reset: " + ", ".join(wrong)


@pytest.mark.clause("reset.status-write-resets")
def test_reset_forgets_negotiated_features(device):
    """Features accepted before a reset are gone after it (2.2: reset renegotiates).

    EVENT_IDX is negotiated, then left out after the reset.  Without it the device
    must ignore used_event and notify for a used buffer (2.7.7.2), so a far-away
    used_event must not suppress the notification.
    """
    device.init(require=[spec.VIRTIO_F_EVENT_IDX])
    expect_ok(device.submit_one(read_request(0, S)), S)
    device.init(exclude=[spec.VIRTIO_F_EVENT_IDX])  # resets, then negotiates without it
    msix = device.virtio.msix
    vector = device.virtio.queue_info[0].msix_vector
    if msix is None or vector == NO_VECTOR:
        pytest.skip("no MSI-X vector for queue 0: the notification cannot be observed")
    q = device.queues[0]
    device.platform.execute([q.used_event_op(0x7FFF), msix.clear_op(vector)])
    expect_ok(device.submit_one(read_request(0, S)), S)
    try:
        msix.wait(vector, timeout=device.timeout)
    except PollTimeout:
        raise AssertionError(
            "no used buffer notification: used_event still suppressed it although EVENT_IDX "
            "was negotiated only before the reset") from None


@pytest.mark.clause("reset.no-queue-access", "reset.no-notifications")
def test_no_queue_access_after_reset(blk, platform):
    """2.4.1: once device_status reads 0, no queue access and no notification until re-init.

    The old rings stay in memory; the driver makes a request available in them and
    notifies the old address.  A configuration change (resize, where the target can)
    must not be notified either.
    """
    expect_ok(blk.submit_one(read_request(0, S)), S)
    q = blk.queues[0]
    used_before = int.from_bytes(platform.mem_read(q.used_idx_addr, 2), "little")
    msix = blk.virtio.msix
    vectors = [0, blk.virtio.queue_info[0].msix_vector] if msix is not None else []
    vectors = [v for v in vectors if v != NO_VECTOR]
    expect_reset(blk)
    for v in vectors:
        msix.clear(v)  # type: ignore[union-attr]
    try:
        platform.resize((blk.config.capacity + 8) * S)
    except Unsupported:
        pass
    posted = blk.post([read_request(0, S)])
    expect_unchanged(platform, q.used_idx_addr, 2, used_before,
                     "the device used a buffer after reset, before re-initialization")
    assert set(blk.writable_bytes(posted[0])) == {POISON}, (
        "the device wrote into a request's buffers after reset")
    fired = [v for v in vectors if msix.fired(v)]  # type: ignore[union-attr]
    assert not fired, f"MSI-X message(s) for vector(s) {fired} after reset"
