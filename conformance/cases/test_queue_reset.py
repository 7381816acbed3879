"""Resetting one virtqueue: 2.6.1 Virtqueue Reset, 4.1.4.3 queue_reset (VIRTIO_F_RING_RESET)."""

from __future__ import annotations

import time

import pytest

from conformance import spec
from conformance.checks import QUIET_S, expect_data, expect_no_interrupt, expect_ok
from conformance.driver.blk import read_request, write_request
from conformance.driver.packed import avail_flags
from conformance.driver.platform import Unsupported

S = spec.SECTOR_SIZE
RINGS = ["split", "packed"]
AVAIL = spec.VIRTQ_DESC_F_AVAIL
USED = spec.VIRTQ_DESC_F_USED


def disk_content(blk, platform, sector: int, nbytes: int) -> bytes:
    try:
        return platform.backing_read(sector * S, nbytes)
    except Unsupported:
        return blk.read(sector, nbytes)


def open_blk(device, *, packed: bool = False, num_queues: int = 1, queue_size: int = 64):
    return device.init(require=[spec.VIRTIO_F_RING_RESET], packed=packed,
                       num_queues=num_queues, queue_size=queue_size)


def reset_queue(blk, index: int, timeout: float = 2.0) -> None:
    """2.6.1.1.2 / 4.1.4.3.2: write 1 to queue_reset, then see the reset through: queue_reset
    and queue_enable both read 0 once the device is done (4.1.4.3.1)."""
    t = blk.transport
    t.queue_write(index, spec.COMMON_Q_RESET, 2, 1)
    deadline = time.monotonic() + timeout
    while (busy := t.common_read(spec.COMMON_Q_RESET, 2)) != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"queue {index}: queue_reset still reads {busy} {timeout:g}s "
                                 f"after the driver wrote 1: the reset never completes")
        time.sleep(0.001)
    enable = t.common_read(spec.COMMON_Q_ENABLE, 2)
    assert enable == 0, f"queue {index}: queue_enable reads {enable} after the queue reset"


def reenable(blk, index: int, *, size: int, packed: bool = False, vector: int | None = None):
    """Set the queue up again as at initialization (2.6.1.2.2), with new rings."""
    if vector is None:
        vector = blk.virtio.queue_info[index].msix_vector if blk.virtio.msix else None
    return blk.virtio.setup_queue(index, size=size, packed=packed, vector=vector)


@pytest.mark.clause("vq.reset-no-execute", "vq.reset-no-notify")
@pytest.mark.parametrize("ring", RINGS)
def test_reset_queue_ignores_old_ring(device, platform, ring):
    """2.6.1.1.1: after a queue reset the device executes nothing from that queue and sends
    no notification for it: a request written into the old ring and notified stays
    untouched (status byte, data buffer, used index / used flags, no MSI-X message)."""
    packed = ring == "packed"
    blk = open_blk(device, packed=packed)
    q = blk.queues[0]
    vec = blk.virtio.queue_info[0].msix_vector
    expect_ok(blk.submit_one(read_request(4500, S)), S)
    ro = blk.has(spec.VIRTIO_BLK_F_RO)
    req = read_request(4510, S) if ro else write_request(4510, b"\x77" * S)
    try:
        before = platform.backing_read(4510 * S, S)
    except Unsupported:
        before = None
    reset_queue(blk, 0)
    msix = blk.virtio.msix
    watch = msix is not None and vec != spec.VIRTIO_MSI_NO_VECTOR
    if watch:
        msix.clear(vec)
    slot, wrap = (q.next_avail, q.avail_wrap) if packed else (None, None)
    posted = blk.post([req])  # into the old rings, with a notification
    if watch:
        expect_no_interrupt(msix, vec, "notification of a reset queue")
    else:
        time.sleep(QUIET_S)
    region = blk.writable_bytes(posted[0])
    assert region == bytes([0xA5]) * len(region), (
        f"the device wrote {region[-8:].hex()} (status last) for a request on a reset queue")
    if packed:
        flags = int.from_bytes(platform.mem_read(q.desc_addr(slot) + 14, 2), "little")
        assert flags & (AVAIL | USED) == avail_flags(wrap), (
            f"slot {slot} of the reset queue's old ring changed to flags {flags:#06x}: the "
            f"device used it")
    else:
        used_idx = int.from_bytes(platform.mem_read(q.used_idx_addr, 2), "little")
        assert used_idx == q.last_used & 0xFFFF, (
            f"used idx of the reset queue moved from {q.last_used & 0xFFFF} to {used_idx}")
    if before is not None and not ro:
        expect_data(platform.backing_read(4510 * S, S), before,
                    "disk after an OUT on a reset queue", 4510 * S)


@pytest.mark.clause("vq.reset-state")
@pytest.mark.parametrize("ring", RINGS)
def test_reset_queue_starts_over(device, platform, ring):
    """2.6.1.1.1: a queue reset returns the available and used state to the defaults: after
    re-enabling with fresh rings, the device starts at the ring's beginning again
    (split: avail and used idx 0; packed: slot 0, wrap counters 1)."""
    packed = ring == "packed"
    blk = open_blk(device, packed=packed, queue_size=8)
    for c in blk.submit([read_request(4600 + k, S) for k in range(5)]):
        expect_ok(c, S)
    reset_queue(blk, 0)
    q = reenable(blk, 0, size=8, packed=packed)
    reqs = [read_request(4610 + k, S, writable_split=[S + 1]) for k in range(3)]
    expected = [disk_content(blk, platform, r.sector, S) for r in reqs]
    done = blk.submit(reqs)
    for k, c in enumerate(done):
        expect_ok(c, S)
        expect_data(c.data, expected[k], f"request #{k} after the queue reset", reqs[k].sector * S)
    if packed:
        ring_bytes = platform.mem_read(q.layout.desc, 16 * q.size)
        flags = [int.from_bytes(ring_bytes[16 * s + 14:16 * s + 16], "little") for s in (0, 2, 4)]
        assert all(f & 0x8080 == 0x8080 for f in flags), (
            f"after the reset the used descriptors are not at slots 0, 2, 4 with wrap counter 1 "
            f"(flags {[hex(f) for f in flags]})")
    else:
        used_idx = int.from_bytes(platform.mem_read(q.used_idx_addr, 2), "little")
        assert used_idx == 3, (
            f"used idx {used_idx} after 3 requests on the reset queue: it must start at 0 again")


@pytest.mark.clause("vq.reenable-new-config")
@pytest.mark.parametrize("ring", RINGS)
def test_reenable_with_new_size_and_rings(device, platform, ring):
    """2.6.1.2.1: re-enabled after a reset, the queue runs with the configuration the
    driver wrote since: a smaller size and new ring addresses.  Enough requests to
    pass the new ring's end twice show which size the device uses."""
    packed = ring == "packed"
    blk = open_blk(device, packed=packed, queue_size=64)
    expect_ok(blk.submit_one(read_request(4700, S)), S)
    reset_queue(blk, 0)
    new_size = 4 if packed else 8
    reenable(blk, 0, size=new_size, packed=packed)
    got = blk.transport.queue_read(0, spec.COMMON_Q_SIZE, 2)
    assert got == new_size, f"queue_size reads {got} after re-enabling with {new_size}"
    reqs = [read_request(4710 + k, S, writable_split=[S + 1]) for k in range(2 * new_size + 3)]
    expected = [disk_content(blk, platform, r.sector, S) for r in reqs]
    for k, c in enumerate(blk.submit(reqs)):
        expect_ok(c, S)
        expect_data(c.data, expected[k], f"request #{k} on the re-enabled queue of size "
                    f"{new_size}", reqs[k].sector * S)


@pytest.mark.clause("pci.queue-reset-write", "pci.queue-reset-done")
def test_reset_one_queue_others_keep_running(device, platform):
    """4.1.4.3.1: queue_reset resets the selected queue only: with requests in flight on
    queue 0, queue 1 is reset (queue_reset and queue_enable then read 0 for it, not for
    queue 0) and queue 0 keeps serving; queue 1 works again once re-enabled."""
    probe = device.init(require=[spec.VIRTIO_F_RING_RESET, spec.VIRTIO_BLK_F_MQ])
    if probe.config.num_queues < 2:
        pytest.skip(f"num_queues is {probe.config.num_queues}: no second queue to reset")
    blk = open_blk(device, num_queues=2, queue_size=16)
    posted = blk.post([read_request(4800 + k, S) for k in range(4)], queue=0, kick=False)
    expect_ok(blk.submit_one(read_request(4810, S), queue=1), S)
    reset_queue(blk, 1)
    t = blk.transport
    assert t.queue_read(0, spec.COMMON_Q_ENABLE, 2) == 1, (
        "queue_enable of queue 0 reads 0 after resetting queue 1")
    blk.kick(0)
    for c in blk.reap(posted, queue=0):
        expect_ok(c, S)
    for c in blk.submit([read_request(4820 + k, 2 * S) for k in range(3)], queue=0):
        expect_ok(c, 2 * S)
    reenable(blk, 1, size=16)
    expect_ok(blk.submit_one(read_request(4830, S), queue=1), S)
    expect_ok(blk.submit_one(read_request(4831, S), queue=0), S)
