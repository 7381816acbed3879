"""Several ring bursts per Platform.execute (BlkDevice.submit), on the reference device.

Over SSH a round trip costs milliseconds, so the number of ``execute`` calls
per request is the figure that matters; these tests count them through a
wrapper Platform, and check that a poll timing out in the middle of a batch
leaves the queue exactly as if the batch had stopped at that burst.
"""

from __future__ import annotations

import pytest

from conformance.driver.blk import BlkDevice, read_request
from conformance.driver.platform import Platform, Poll, PollTimeout
from conformance.driver.virtqueue import QueueTimeout
from conformance.pattern import sector_pattern
from conformance.targets import open_target, spec_from_mapping


class Counting(Platform):
    """Passes everything to ``inner``; counts batches; can stall at the n-th poll."""

    def __init__(self, inner: Platform):
        self.inner = inner
        self.mmio_window = inner.mmio_window
        self.batches = 0
        self.stall_at_poll: int | None = None
        self.polls = 0

    def execute(self, ops):
        self.batches += 1
        if self.stall_at_poll is not None:
            for i, op in enumerate(ops):
                if isinstance(op, Poll):
                    self.polls += 1
                    if self.polls == self.stall_at_poll:
                        results = self.inner.execute(list(ops[:i])) if i else []
                        raise PollTimeout(op, 0, i, results)
        return self.inner.execute(ops)

    def dma_alloc(self, size, align=4096):
        return self.inner.dma_alloc(size, align)

    def backing_read(self, offset, n):
        return self.inner.backing_read(offset, n)


@pytest.fixture
def platform():
    target = open_target(spec_from_mapping({"kind": "reference"}, "test", "test"))
    inner = target.platform()
    yield Counting(inner)
    target.release(inner, broken=False)
    target.close()


def test_round_trips_per_thousand_requests(platform):
    blk = BlkDevice(platform).init(queue_size=8)  # 2 requests of 3 descriptors per burst
    before = platform.batches
    done = blk.submit([read_request(i % 64, 512) for i in range(3000)])
    assert [c.status for c in done] == [0] * 3000
    assert all(c.used_len == 513 and c.guards_intact for c in done)
    assert done[2999].data == sector_pattern(2999 % 64)
    # 1,500 bursts, 512 requests per batch: 6 round trips, 2 per 1,000 requests.
    assert platform.batches - before == 6
    q = blk.queues[0]
    assert (q.in_flight, q.avail_idx, q.last_used, q.num_free()) == (0, 3000, 3000, 8)


def test_poll_timeout_in_the_middle_of_a_batch(platform):
    blk = BlkDevice(platform).init(queue_size=8)
    q = blk.queues[0]
    pool_free = blk.virtio.pool.free_bytes()
    platform.stall_at_poll = platform.polls + 4  # bursts 1-3 complete, burst 4 stalls
    with pytest.raises(QueueTimeout) as info:
        blk.submit([read_request(i, 512) for i in range(40)])
    assert str(info.value).startswith("queue 0 (split): 2 buffer(s) not used within")
    # The queue is where the batch stopped: 3 bursts used, the 4th in flight, nothing later.
    assert (q.last_used, q.avail_idx, q.in_flight, q.num_free()) == (6, 8, 2, 2)
    # Buffers of the bursts after the stalled one went back to the pool; the
    # stalled burst's two requests still hold theirs (the device may write them).
    held = pool_free - blk.virtio.pool.free_bytes()
    assert 0 < held <= 2 * (16 + 513 + 32 + 2 * 16)
