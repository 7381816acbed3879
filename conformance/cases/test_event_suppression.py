"""Used buffer notification suppression: 2.7.7 / 2.7.10 (split) and 2.8.10 (packed).

Interrupts are observed as MSI-X messages landing in driver memory; queue i uses
vector 1 + i (BlkDevice.init).  "No interrupt" means none within QUIET_S after the
device has already published the used buffers (checks.expect_no_interrupt).
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_interrupt, expect_no_interrupt, expect_ok
from conformance.driver.blk import BlkRequest, pack_header, read_request
from conformance.driver.platform import MemRead, Poll, PollTimeout
from conformance.driver.virtqueue import QueueTimeout, stage

S = spec.SECTOR_SIZE
NO_INTERRUPT = spec.VIRTQ_AVAIL_F_NO_INTERRUPT


def queue_vector(blk, queue: int = 0) -> int:
    """The MSI-X vector of ``queue``; skip when the device has no MSI-X or would not map it."""
    if blk.virtio.msix is None:
        pytest.skip("the function has no MSI-X capability: interrupts are observed via MSI-X")
    vec = blk.virtio.queue_info[queue].msix_vector
    if vec == spec.VIRTIO_MSI_NO_VECTOR:
        pytest.skip(f"queue {queue}: the device did not map an MSI-X vector (reads NO_VECTOR)")
    return vec


def one(blk, k: int) -> BlkRequest:
    return read_request(3200 + k, S)


def step(blk, vec: int, k: int) -> None:
    """Clear the vector's slot, then one IN that must complete OK."""
    blk.virtio.msix.clear(vec)
    expect_ok(blk.submit_one(one(blk, k)), S)


def split_blk(device, event_idx: bool):
    if event_idx:
        return device.init(require=[spec.VIRTIO_F_EVENT_IDX])
    return device.init(exclude=[spec.VIRTIO_F_EVENT_IDX])


# --- 2.7.7.2 without VIRTIO_F_EVENT_IDX ----------------------------------------------------


@pytest.mark.clause("split.flags-zero-notify")
def test_flags_zero_notifies_every_used_buffer(device, platform):
    """Without EVENT_IDX and with avail flags 0, every used buffer is followed by a
    notification: three requests one after another, three MSI-X messages."""
    blk = split_blk(device, event_idx=False)
    vec = queue_vector(blk)
    for k in range(3):
        step(blk, vec, k)
        expect_interrupt(blk.virtio.msix, vec, f"request #{k} with avail flags 0")


@pytest.mark.clause("split.used-event-ignored")
def test_used_event_ignored_without_event_idx(device, platform):
    """Without EVENT_IDX, used_event means nothing: set far ahead, it does not hold back
    the notification that avail flags 0 call for."""
    blk = split_blk(device, event_idx=False)
    vec = queue_vector(blk)
    q = blk.queues[0]
    for k in range(3):
        platform.execute([q.used_event_op(q.last_used + 0x4000)])
        step(blk, vec, k)
        expect_interrupt(blk.virtio.msix, vec,
                         f"request #{k} with used_event {(q.last_used + 0x3FFF) & 0xFFFF} "
                         f"(not negotiated) and avail flags 0")


@pytest.mark.clause("split.no-interrupt-flag")
def test_no_interrupt_flag_honoured(device, platform):
    """Without EVENT_IDX, avail flags VIRTQ_AVAIL_F_NO_INTERRUPT ask for no notification
    (a SHOULD NOT: a violation is a deviation)."""
    blk = split_blk(device, event_idx=False)
    vec = queue_vector(blk)
    q = blk.queues[0]
    platform.execute([q.avail_flags_op(NO_INTERRUPT)])
    blk.virtio.msix.clear(vec)
    for k in range(3):
        expect_ok(blk.submit_one(one(blk, k)), S)
    expect_no_interrupt(blk.virtio.msix, vec, "3 requests with VIRTQ_AVAIL_F_NO_INTERRUPT set")


@pytest.mark.clause("split.used-flags-values")
def test_used_flags_zero_or_one(device, platform):
    """2.7.10.2: without EVENT_IDX the device keeps used flags at 0 or 1."""
    blk = split_blk(device, event_idx=False)
    q = blk.queues[0]
    seen = []
    for k in range(4):
        expect_ok(blk.submit_one(one(blk, k)), S)
        seen.append(int.from_bytes(platform.mem_read(q.layout.device, 2), "little"))
    bad = [f for f in seen if f not in (0, 1)]
    assert not bad, f"used ring flags read {[hex(f) for f in seen]}: only 0 or 1 are allowed"


# --- 2.7.7.2 / 2.7.10 with VIRTIO_F_EVENT_IDX ------------------------------------------------


@pytest.mark.clause("split.event-idx-ignore-flags")
def test_event_idx_ignores_no_interrupt_flag(device, platform):
    """With EVENT_IDX the device ignores the low bit of avail flags: used_event decides."""
    blk = split_blk(device, event_idx=True)
    vec = queue_vector(blk)
    q = blk.queues[0]
    platform.execute([q.avail_flags_op(NO_INTERRUPT)])
    for k in range(2):
        platform.execute([q.used_event_op(q.last_used)])  # the very next used entry
        step(blk, vec, k)
        expect_interrupt(blk.virtio.msix, vec,
                         f"request #{k}: used entry at used_event {(q.last_used - 1) & 0xFFFF} "
                         f"with VIRTQ_AVAIL_F_NO_INTERRUPT set (to be ignored)")


@pytest.mark.clause("split.event-idx-notify")
@pytest.mark.parametrize("how", ["one-by-one", "in-one-burst"])
def test_event_idx_notifies_at_used_event(device, platform, how):
    """With EVENT_IDX the device notifies once it writes the used entry whose index equals
    used_event: here the third of three (one by one), or the middle one of a burst of
    three used together."""
    blk = split_blk(device, event_idx=True)
    vec = queue_vector(blk)
    q = blk.queues[0]
    msix = blk.virtio.msix
    u0 = q.last_used
    if how == "one-by-one":
        platform.execute([q.used_event_op(u0 + 2)])
        for k in range(3):
            step(blk, vec, k)
        expect_interrupt(msix, vec, f"used entry {(u0 + 2) & 0xFFFF} written with used_event "
                                    f"{(u0 + 2) & 0xFFFF}")
    else:
        platform.execute([q.used_event_op(u0 + 1)])
        msix.clear(vec)
        for c in blk.submit([one(blk, k) for k in range(3)]):
            expect_ok(c, S)
        expect_interrupt(msix, vec, f"used entries {u0 & 0xFFFF}..{(u0 + 2) & 0xFFFF} written "
                                    f"with used_event {(u0 + 1) & 0xFFFF}")


@pytest.mark.clause("split.event-idx-suppress")
def test_event_idx_quiet_before_used_event(device, platform):
    """With EVENT_IDX the device does not notify for used entries other than the one at
    used_event (a SHOULD NOT): three requests while used_event lies further ahead."""
    blk = split_blk(device, event_idx=True)
    vec = queue_vector(blk)
    q = blk.queues[0]
    event = (q.last_used + 10) & 0xFFFF
    platform.execute([q.used_event_op(event)])
    for k in range(3):
        blk.virtio.msix.clear(vec)
        expect_ok(blk.submit_one(one(blk, k)), S)
        expect_no_interrupt(blk.virtio.msix, vec,
                            f"request #{k}: used entry {(q.last_used - 1) & 0xFFFF} written "
                            f"with used_event {event}")


@pytest.mark.clause("split.event-idx-used-flags-zero")
def test_event_idx_used_flags_zero(device, platform):
    """2.7.10.2: with EVENT_IDX the device keeps used flags at 0 (it has avail_event)."""
    blk = split_blk(device, event_idx=True)
    q = blk.queues[0]
    seen = []
    for k in range(3):
        for c in blk.submit([one(blk, k), one(blk, k + 3)]):
            expect_ok(c, S)
        seen.append(int.from_bytes(platform.mem_read(q.layout.device, 2), "little"))
    assert seen == [0] * len(seen), (
        f"used ring flags read {[hex(f) for f in seen]} with VIRTIO_F_EVENT_IDX: must be 0")


def need_event(event: int, new: int, old: int) -> bool:
    """2.7.10: notify when ``event`` lies in [old, new), counting mod 2^16."""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


@pytest.mark.clause("split.avail-event-may")
def test_driver_following_avail_event_is_served(device, platform):
    """2.7.10: with EVENT_IDX the driver notifies only when the avail idx it publishes
    passes avail_event.  A device that advertises avail_event this way must then serve
    what it asked not to be told about: six requests, each kicked only if avail_event
    says so, all complete."""
    blk = split_blk(device, event_idx=True)
    q = blk.queues[0]
    pool = blk.virtio.pool
    kicks = []
    for k in range(6):
        bufs, ops = stage(pool, [pack_header(spec.VIRTIO_BLK_T_IN, 3300 + k), S + 1])
        old = q.avail_idx
        ops += q.add(bufs, k) + q.publish()
        res = platform.execute(ops + [MemRead(q.avail_event_addr, 2)])
        avail_event = int.from_bytes(res[-1], "little")
        kick = need_event(avail_event, q.avail_idx, old)
        kicks.append((avail_event, kick))
        if kick:
            platform.execute(q.kick())
        want = q.last_used + 1
        try:
            platform.execute([Poll(q.used_idx_addr, 2, 0xFFFF, want & 0xFFFF, True,
                                   blk.timeout)])
        except PollTimeout:
            raise QueueTimeout(
                f"request #{k} not used: avail_event read {avail_event} when avail idx went "
                f"{old & 0xFFFF} -> {q.avail_idx & 0xFFFF}, so the driver "
                f"{'notified' if kick else 'did not notify (2.7.10)'}; history "
                f"(avail_event, notified): {kicks}\n{q.describe()}") from None
        (used,) = q.wait(1, blk.timeout)
        status = platform.mem_read(bufs[1].addr + S, 1)[0]
        assert status == spec.VIRTIO_BLK_S_OK and used.length == S + 1, (
            f"request #{k}: status {status:#x}, used length {used.length}")


@pytest.mark.clause("split.spurious-notify")
def test_spurious_notifications_tolerated(device, platform):
    """2.7.10.2: notifications with nothing new (before any buffer, after all were used,
    several in a row) change nothing: no used entry, no DEVICE_NEEDS_RESET, and the
    next real request is served."""
    blk = device.init()
    q = blk.queues[0]
    kick = q.kick()
    platform.execute(kick * 3)
    expect_ok(blk.submit_one(one(blk, 0)), S)
    platform.execute(kick * 5)
    expect_ok(blk.submit_one(one(blk, 1)), S)
    platform.execute(q.publish() + kick * 2)  # the same avail idx published again
    used_idx = int.from_bytes(platform.mem_read(q.used_idx_addr, 2), "little")
    status = blk.transport.device_status
    assert used_idx == q.last_used & 0xFFFF, (
        f"used idx {used_idx} after spurious notifications, expected {q.last_used & 0xFFFF}")
    assert not status & spec.STATUS_DEVICE_NEEDS_RESET, (
        f"device_status {spec.status_str(status)} after spurious notifications")
    expect_ok(blk.submit_one(one(blk, 2)), S)


# --- 2.8.10 packed: driver event suppression --------------------------------------------


def packed_blk(device, event_idx: bool = False):
    blk = device.init(packed=True, queue_size=8,
                      require=[spec.VIRTIO_F_EVENT_IDX] if event_idx else [])
    return blk


@pytest.mark.clause("packed.event-enable-notify")
def test_packed_enable_notifies(device, platform):
    """RING_EVENT_FLAGS_ENABLE: a notification after used descriptors are written."""
    blk = packed_blk(device)
    vec = queue_vector(blk)
    q = blk.queues[0]
    platform.execute([q.driver_event_op(spec.RING_EVENT_FLAGS_ENABLE)])
    for k in range(3):
        step(blk, vec, k)
        expect_interrupt(blk.virtio.msix, vec, f"request #{k} with RING_EVENT_FLAGS_ENABLE")


@pytest.mark.clause("packed.event-disable")
def test_packed_disable_no_interrupt(device, platform):
    """RING_EVENT_FLAGS_DISABLE: no used buffer notification (a SHOULD NOT)."""
    blk = packed_blk(device)
    vec = queue_vector(blk)
    q = blk.queues[0]
    platform.execute([q.driver_event_op(spec.RING_EVENT_FLAGS_DISABLE)])
    blk.virtio.msix.clear(vec)
    for k in range(3):
        expect_ok(blk.submit_one(one(blk, k)), S)
    expect_no_interrupt(blk.virtio.msix, vec, "3 requests with RING_EVENT_FLAGS_DISABLE")


@pytest.mark.clause("packed.event-desc-notify")
@pytest.mark.parametrize("lap", ["same-lap", "next-lap"])
def test_packed_desc_event(device, platform, lap):
    """RING_EVENT_FLAGS_DESC with EVENT_IDX: a notification when the device uses the
    descriptor at off_wrap's offset under off_wrap's wrap counter.  Lists of two
    descriptors in an 8-slot ring; the event names the third list's slot (4, wrap 1)
    or, one lap on, the first list's slot again (0, wrap 0)."""
    blk = packed_blk(device, event_idx=True)
    vec = queue_vector(blk)
    q = blk.queues[0]
    msix = blk.virtio.msix
    target, count = ((4, 1), 3) if lap == "same-lap" else ((0, 0), 5)
    off_wrap = target[0] | target[1] << spec.PACKED_EVENT_WRAP_SHIFT
    platform.execute([q.driver_event_op(spec.RING_EVENT_FLAGS_DESC, off_wrap)])
    for k in range(count):
        msix.clear(vec)
        expect_ok(blk.submit_one(read_request(3400 + k, S, writable_split=[S + 1])), S)
    expect_interrupt(msix, vec, f"list #{count - 1} used at slot {target[0]} with wrap counter "
                                f"{target[1]}, named by off_wrap {off_wrap:#06x}")
