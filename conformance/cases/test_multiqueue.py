"""Request queues: 5.2.2 Virtqueues (VIRTIO_BLK_F_MQ, num_queues)."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_ok
from conformance.driver.blk import read_request, write_request
from conformance.driver.platform import Unsupported

S = spec.SECTOR_SIZE
MAX_QUEUES = 16  # enough to show "every queue"; keeps DMA and MSI-X needs small


def disk_content(blk, platform, sector: int, nbytes: int) -> bytes:
    try:
        return platform.backing_read(sector * S, nbytes)
    except Unsupported:
        return blk.read(sector, nbytes)


@pytest.mark.clause("blk.mq-queues")
def test_request_queue_0_exists(device):
    """5.2.2: a block device always has request queue 0 (queue_size not 0)."""
    size = device.transport.queue_read(0, spec.COMMON_Q_SIZE, 2)
    assert size != 0, "queue 0 reads queue_size 0: the device has no request queue"
    blk = device.init(exclude=[spec.VIRTIO_BLK_F_MQ])
    expect_ok(blk.submit_one(read_request(0, S)), S)


@pytest.mark.clause("blk.mq-queues")
def test_num_queues_all_exist(device):
    """5.2.2: with VIRTIO_BLK_F_MQ, queues 0 .. num_queues - 1 all exist: each has a
    non-zero queue_size and can be enabled."""
    blk = device.init(require=[spec.VIRTIO_BLK_F_MQ])
    n = blk.config.num_queues
    assert n >= 1, f"num_queues is {n} with VIRTIO_BLK_F_MQ: at least queue 0 exists"
    sizes = {i: blk.transport.queue_read(i, spec.COMMON_Q_SIZE, 2) for i in range(n)}
    missing = [i for i, size in sizes.items() if size == 0]
    assert not missing, (f"num_queues is {n} but queue_size reads 0 for queue(s) {missing}")


def queue_requests(i: int, read_only: bool) -> list:
    """Two INs and an OUT (another IN on a read-only device) for queue ``i``'s own sectors."""
    base = 4000 + 16 * i
    last = read_request(base + 4, S) if read_only else write_request(base + 8, bytes([i + 1]) * S)
    return [read_request(base, S), read_request(base + 1, 2 * S), last]


@pytest.mark.clause("blk.mq-queues")
def test_requests_on_every_queue_concurrently(device, platform):
    """5.2.2: every request queue serves requests, all at the same time: three requests
    made available on each queue before any queue is notified, then all notified in
    one go; each completes on its own queue with its own data, and each queue's MSI-X
    vector fires."""
    offered = device.init(require=[spec.VIRTIO_BLK_F_MQ]).config.num_queues
    n = min(offered, MAX_QUEUES)
    if n < 2:
        pytest.skip(f"num_queues is {offered}: one request queue only")
    blk = device.init(num_queues=n, queue_size=16)
    ro = blk.has(spec.VIRTIO_BLK_F_RO)
    requests = {i: queue_requests(i, ro) for i in range(n)}
    expected = {i: [disk_content(blk, platform, r.sector, r.read_len) for r in reqs]
                for i, reqs in requests.items()}
    msix = blk.virtio.msix
    vectors = [blk.virtio.queue_info[i].msix_vector for i in range(n)]
    if msix is not None:
        for v in set(vectors) - {spec.VIRTIO_MSI_NO_VECTOR}:
            msix.clear(v)
    posted = {i: blk.post(requests[i], queue=i, kick=False) for i in range(n)}
    platform.execute([op for i in range(n) for op in blk.queues[i].kick()])
    for i in range(n):
        for k, c in enumerate(blk.reap(posted[i], queue=i)):
            expect_ok(c, c.request.read_len)
            if c.request.read_len:
                expect_data(c.data, expected[i][k], f"queue {i}, request #{k}",
                            c.request.sector * S)
    if not ro:
        for i in range(n):
            sector = 4000 + 16 * i + 8
            expect_data(disk_content(blk, platform, sector, S), bytes([i + 1]) * S,
                        f"disk after OUT on queue {i}", sector * S)
    if msix is not None:
        silent = [(i, v) for i, v in enumerate(vectors)
                  if v != spec.VIRTIO_MSI_NO_VECTOR and not msix.fired(v)]
        assert not silent, f"no MSI-X message for queue(s)/vector(s) {silent}"
