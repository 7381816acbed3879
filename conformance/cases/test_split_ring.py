"""Split virtqueues: 2.7."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_data
from conformance.driver.blk import read_request
from conformance.driver.platform import MemRead

S = spec.SECTOR_SIZE
WRAP = 1 << 16


@pytest.mark.clause("split.used-idx-wrap", "split.used-len")
@pytest.mark.parametrize("queue_size", [8])
def test_index_wraparound(device, platform, queue_size):
    """More than 65,536 requests through a small queue: avail and used idx wrap (2.7.6, 2.7.8)."""
    blk = device.init(queue_size=queue_size)
    q = blk.queues[0]
    total = WRAP + 3 * queue_size + 3  # past the wrap, ending at an odd ring position
    sectors = 64
    expected = blk.read(0, sectors * S)  # reference content, read once
    q_before = q.avail_idx
    done = blk.submit([read_request(i % sectors, S) for i in range(total)])
    bad = [(i, c) for i, c in enumerate(done)
           if c.status != spec.VIRTIO_BLK_S_OK or c.used_len != S + 1 or not c.guards_intact]
    assert not bad, (f"{len(bad)} of {total} requests wrong; first #{bad[0][0]}: status "
                     f"{bad[0][1].status_name}, used length {bad[0][1].used_len}")
    for i in (0, WRAP - 1, WRAP, total - 1):
        sector = i % sectors
        expect_data(done[i].data, expected[sector * S:(sector + 1) * S],
                    f"request #{i} (IN sector {sector})", sector * S)
    used_idx = int.from_bytes(platform.execute([MemRead(q.used_idx_addr, 2)])[0], "little")
    want = (q_before + total) & 0xFFFF
    assert used_idx == want, f"used.idx is {used_idx} after {total} requests, expected {want}"
