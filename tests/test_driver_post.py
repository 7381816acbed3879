"""BlkDevice.post / kick / writable_bytes / reap against the reference target."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.driver.blk import POISON, BlkDevice, read_request
from conformance.driver.virtqueue import QueueTimeout
from conformance.targets import open_target, spec_from_mapping


@pytest.fixture
def dev():
    mapping = {"kind": "reference", "timeout": 1}
    target = open_target(spec_from_mapping(mapping, "test", "reference"))
    platform = target.platform()
    try:
        yield BlkDevice(platform, timeout=0.3)
    finally:
        target.release(platform, broken=False)
        target.close()


def test_posted_request_waits_for_driver_ok_then_completes(dev):
    dev.init(driver_ok=False)
    posted = dev.post([read_request(0, 512), read_request(1, 1024)], kick=False)
    assert all(set(dev.writable_bytes(p)) == {POISON} for p in posted)
    dev.virtio.driver_ok()
    dev.kick()
    done = dev.reap(posted)
    assert [(c.status, c.used_len) for c in done] == [(spec.VIRTIO_BLK_S_OK, 513),
                                                       (spec.VIRTIO_BLK_S_OK, 1025)]
    assert [c.request.sector for c in done] == [0, 1]
    assert dev.writable_bytes(posted[1])[-1] == spec.VIRTIO_BLK_S_OK


def test_reap_times_out_with_queue_state(dev):
    dev.init(driver_ok=False)
    posted = dev.post([read_request(0, 512)])  # not live: the device must leave it alone
    with pytest.raises(QueueTimeout, match=r"queue 0 \(split\): 1 buffer\(s\) not used"):
        dev.reap(posted, timeout=0.05)
