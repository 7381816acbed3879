"""Available buffer notifications over PCI: 4.1.5.2 Available Buffer Notifications, 4.1.4.4
Notification structure layout, 2.9 Driver Notifications."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_ok
from conformance.driver.blk import POISON, read_request
from conformance.driver.device import FeatureNotOffered
from conformance.driver.platform import Unsupported

S = spec.SECTOR_SIZE
MAX_QUEUES = 4  # enough to see the address arithmetic work; keeps the case short


def queues_to_use(device) -> int:
    if not device.offers(spec.VIRTIO_BLK_F_MQ):
        return 1
    return max(1, min(device.transport.num_queues, MAX_QUEUES))


def sector_content(blk, platform, sector: int) -> bytes:
    try:
        return platform.backing_read(sector * S, S)
    except Unsupported:
        data = bytes((sector * 11 + i * 7) & 0xFF for i in range(S))
        blk.write(sector, data)
        return data


def notify_address(blk, queue: int) -> int:
    """cap.offset + queue_notify_off * notify_off_multiplier (4.1.4.4), in the notify BAR."""
    t = blk.transport
    noff = t.queue_read(queue, spec.COMMON_Q_NOFF, 2)
    return t.notify.offset + noff * (t.notify.notify_off_multiplier or 0)


MODES = {
    # mode -> (clause, features the mode needs, features it must not negotiate)
    "queue-index": ("notify.pci-queue-index", [],
                    [spec.VIRTIO_F_NOTIFICATION_DATA, spec.VIRTIO_F_NOTIF_CONFIG_DATA]),
    "notification-data": ("notify.pci-notification-data", [spec.VIRTIO_F_NOTIFICATION_DATA],
                          [spec.VIRTIO_F_NOTIF_CONFIG_DATA]),
}


@pytest.mark.parametrize("mode", [pytest.param(m, marks=pytest.mark.clause(c))
                                  for m, (c, _, _) in MODES.items()])
def test_each_queue_notified_at_its_address(device, platform, mode):
    """Buffers on one queue at a time, a notification at that queue's computed address: the
    queue is served.  Without NOTIFICATION_DATA the write is the 16-bit queue index; with it,
    32 bits of vqn, next_off and next_wrap (4.1.5.2)."""
    _, require, exclude = MODES[mode]
    n = queues_to_use(device)
    blk = device.init(require=require, exclude=exclude, num_queues=n)
    width = 4 if mode == "notification-data" else 2
    for q in range(n):
        addr = notify_address(blk, q)
        kick = blk.queues[q].kick()[0]
        # The driver's notification is exactly the write 4.1.5.2 describes for this mode.
        assert (kick.off, kick.size) == (addr, width), (
            f"driver bug: queue {q} notification at {kick.off:#x}/{kick.size}, "
            f"expected {addr:#x}/{width}")
        expected = sector_content(blk, platform, q)
        c = blk.submit_one(read_request(q, S), queue=q)
        expect_ok(c, S)
        expect_data(c.data, expected, f"IN on queue {q}", q * S)


@pytest.mark.clause("notify.pci-queue-index")
def test_notifying_one_queue_leaves_another_to_its_own(device, platform):
    """A request waits on queue 1 while only queue 0 is notified.  The device may look at
    queue 1 anyway (a device may process available buffers without a notification, 2.7.13.3
    / 2.9), so queue 1's request is either untouched or completed correctly; after queue 1's
    own notification it is complete."""
    if not device.offers(spec.VIRTIO_BLK_F_MQ):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_MQ)
    if queues_to_use(device) < 2:
        pytest.skip("the device has a single queue")
    blk = device.init(num_queues=2)
    expected = {s: sector_content(blk, platform, s) for s in (10, 11)}
    waiting = blk.post([read_request(11, S)], queue=1, kick=False)
    expect_ok(c0 := blk.submit_one(read_request(10, S), queue=0), S)
    expect_data(c0.data, expected[10], "IN on queue 0", 10 * S)
    seen = blk.writable_bytes(waiting[0])
    untouched = bytes([POISON]) * waiting[0].request.writable_len
    done = expected[11] + bytes([spec.VIRTIO_BLK_S_OK])
    assert seen in (untouched, done), (
        "queue 1's request holds neither its untouched buffer nor the completed read after "
        "only queue 0 was notified")
    blk.kick(1)
    c1 = blk.reap(waiting, queue=1)[0]
    expect_ok(c1, S)
    expect_data(c1.data, expected[11], "IN on queue 1", 11 * S)


@pytest.mark.clause("notify.repeated-data")
@pytest.mark.parametrize("ring", ["split", "packed"])
def test_repeated_notification_data(device, platform, ring):
    """2.9: a driver may notify again with nothing new, so with the same next_off/next_wrap;
    the device serves each buffer once and stays healthy."""
    blk = device.init(require=[spec.VIRTIO_F_NOTIFICATION_DATA], packed=ring == "packed")
    expected = sector_content(blk, platform, 20)
    posted = blk.post([read_request(20, S)], kick=False)
    blk.kick(0)
    blk.kick(0)  # identical value: the same next_off and next_wrap
    c = blk.reap(posted)[0]
    expect_ok(c, S)
    expect_data(c.data, expected, "IN notified twice", 20 * S)
    blk.kick(0)  # again, with nothing new at all
    status = blk.transport.device_status
    assert not status & spec.STATUS_DEVICE_NEEDS_RESET, (
        f"device_status {spec.status_str(status)} after repeated identical notifications")
    again = blk.submit([read_request(21, S), read_request(22, S)])
    for c in again:
        expect_ok(c, S)


@pytest.mark.clause("notify.notif-config-data")
@pytest.mark.parametrize("data", ["16-bit", "notification-data"])
def test_notif_config_data_names_the_queue(device, platform, data):
    """With VIRTIO_F_NOTIF_CONFIG_DATA the driver notifies with queue_notify_data in place of
    the queue index (4.1.5.2); the device serves the queue it named."""
    require = [spec.VIRTIO_F_NOTIF_CONFIG_DATA]
    if data == "notification-data":
        require.append(spec.VIRTIO_F_NOTIFICATION_DATA)
        exclude = []
    else:
        exclude = [spec.VIRTIO_F_NOTIFICATION_DATA]
    n = queues_to_use(device)
    blk = device.init(require=require, exclude=exclude, num_queues=n)
    for q in range(n):
        ndata = blk.transport.queue_read(q, spec.COMMON_Q_NDATA, 2)
        assert blk.queues[q].notify_config_data == ndata, "driver did not take queue_notify_data"
        expected = sector_content(blk, platform, 30 + q)
        c = blk.submit_one(read_request(30 + q, S), queue=q)
        expect_ok(c, S)
        expect_data(c.data, expected, f"IN on queue {q} (queue_notify_data {ndata:#x})",
                    (30 + q) * S)
