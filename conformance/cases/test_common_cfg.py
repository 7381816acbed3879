"""The common configuration structure's per-queue registers (4.1.4.3 Common configuration
structure layout, 4.1.3 PCI Device Layout)."""

from __future__ import annotations

import time

import pytest

from conformance import spec
from conformance.checks import expect_data, expect_ok, expect_unchanged
from conformance.driver.blk import POISON, read_request
from conformance.driver.platform import Unsupported

S = spec.SECTOR_SIZE


def known_sectors(blk, platform, count: int) -> bytes:
    """Content of sectors 0..count-1: from the backing store, or written first."""
    try:
        return platform.backing_read(0, count * S)
    except Unsupported:
        data = bytes((i * 29 + 3) & 0xFF for i in range(count * S))
        blk.write(0, data)
        return data


# queue_desc, queue_driver, queue_device: (low dword offset, high dword offset)
ADDRESS_FIELDS = {
    "queue_desc": (spec.COMMON_Q_DESCLO, spec.COMMON_Q_DESCHI),
    "queue_driver": (spec.COMMON_Q_AVAILLO, spec.COMMON_Q_AVAILHI),
    "queue_device": (spec.COMMON_Q_USEDLO, spec.COMMON_Q_USEDHI),
}


@pytest.mark.clause("pci.split-64bit-access", "pci.fields-little-endian")
def test_64bit_fields_halves_independent(device):
    """4.1.3.2: each 32-bit half of a 64-bit field can be written and read on its own; the
    low dword comes first in the layout (4.1.3).  Done on a configured queue that is never
    enabled, so the values are only stored."""
    blk = device.init(driver_ok=False, enable_queues=False)
    t = blk.transport
    t.select_queue(0)
    wrong = []
    for k, (name, (lo, hi)) in enumerate(ADDRESS_FIELDS.items()):
        a, b, c, d = (0x12345000 + k * 0x100, 0x00000001 + k, 0x00000A00 + k, 0x76543000 + k)
        t.common_write(lo, 4, a)
        t.common_write(hi, 4, b)
        for what, off, value, (want_lo, want_hi) in (
                ("low, then high", None, None, (a, b)),
                ("the high half alone", hi, c, (a, c)),
                ("the low half alone", lo, d, (d, c))):
            if off is not None:
                t.common_write(off, 4, value)
            got_lo, got_hi = t.common_read(lo, 4), t.common_read(hi, 4)
            if (got_lo, got_hi) != (want_lo, want_hi):
                wrong.append(f"{name} reads {got_hi:#010x}:{got_lo:#010x} after writing "
                             f"{what}, expected {want_hi:#010x}:{want_lo:#010x}")
    assert not wrong, "; ".join(wrong)


@pytest.mark.clause("pci.queue-size-power-of-2")
def test_queue_size_default_is_power_of_2(device):
    """4.1.4.3.1: without RING_PACKED (nothing is negotiated yet) queue_size is 0 or 2^n."""
    t = device.transport
    wrong = []
    for q in range(t.num_queues):
        size = t.queue_read(q, spec.COMMON_Q_SIZE, 2)
        if size & (size - 1) or size > spec.MAX_QUEUE_SIZE:
            wrong.append(f"queue {q}: {size}")
    assert not wrong, ("queue_size neither 0 nor a power of 2 up to 32768: " + ", ".join(wrong))


@pytest.mark.clause("pci.queue-size-writable")
@pytest.mark.parametrize("which", ["2", "half"])
def test_smaller_queue_size_works(device, platform, which):
    """A queue_size the driver chose below the maximum reads back and the ring works at that
    size, wrapping it twice (4.1.4.3 queue_size, 4.1.5.1.3 Virtqueue Configuration)."""
    t = device.transport
    max_size = t.queue_read(0, spec.COMMON_Q_SIZE, 2)
    size = 2 if which == "2" else max_size // 2
    if not 2 <= size < max_size:
        pytest.skip(f"queue 0's maximum size {max_size} leaves no smaller size {which}")
    blk = device.init(queue_size=size)
    got = t.queue_read(0, spec.COMMON_Q_SIZE, 2)
    assert got == size, f"queue_size reads {got} after the driver wrote {size} and enabled it"
    expected = known_sectors(blk, platform, 8)
    # Header in one descriptor, data and status in another: two descriptors per request.
    reqs = [read_request(i % 8, S, writable_split=[S + 1]) for i in range(2 * size + 1)]
    for i, c in enumerate(blk.submit(reqs)):
        expect_ok(c, S)
        sector = i % 8
        expect_data(c.data, expected[sector * S:(sector + 1) * S],
                    f"request #{i} on a queue of size {size}", sector * S)


MISSING = {"num_queues": lambda n: n, "num_queues+1": lambda n: n + 1, "0xffff": lambda n: 0xFFFF}


@pytest.mark.clause("pci.queue-size-unavailable-zero")
@pytest.mark.parametrize("which", list(MISSING))
def test_queue_size_zero_for_missing_queue(device, which):
    """4.1.4.3.1: queue_size reads 0 while queue_select names a queue the device lacks.

    The requirement is about the current queue_select.  The spec does not make a
    device store any value written there, so a device that keeps another selection
    (it reads back something else) is held to that selection instead: queue_size
    must then be the size of the queue it reads back.
    """
    t = device.transport
    index = MISSING[which](t.num_queues)
    t.select_queue(index)
    selected = t.common_read(spec.COMMON_Q_SELECT, 2)
    size = t.common_read(spec.COMMON_Q_SIZE, 2)
    if selected == index or selected >= t.num_queues:
        assert size == 0, (f"queue_select {index:#x} (reads back {selected:#x}) names no queue "
                           f"of the {t.num_queues}, yet queue_size reads {size}")
        return
    t.select_queue(selected)
    own = t.common_read(spec.COMMON_Q_SIZE, 2)
    assert size == own, (
        f"queue_select {index:#x} was not stored (reads back {selected:#x}); queue_size then "
        f"reads {size}, but queue {selected}'s own queue_size is {own}")


@pytest.mark.clause("pci.queue-enable-gate")
def test_queue_not_enabled_is_not_served(device, platform):
    """4.1.4.3 queue_enable: while it is 0 the device executes no request of the queue, even
    after DRIVER_OK and a notification; once enabled, the same request is served."""
    blk = device.init(enable_queues=False)
    t = blk.transport
    enable = t.queue_read(0, spec.COMMON_Q_ENABLE, 2)
    assert enable == 0, f"queue_enable reads {enable} before the driver enabled queue 0"
    q = blk.queues[0]
    posted = blk.post([read_request(0, S)])
    expect_unchanged(platform, q.used_idx_addr, 2, 0,
                     "the device used a buffer of queue 0 while queue_enable was 0")
    untouched = bytes([POISON]) * posted[0].request.writable_len
    assert blk.writable_bytes(posted[0]) == untouched, (
        "the device wrote into a request's buffers on a queue whose queue_enable is 0")
    blk.virtio.enable_queue(0)
    blk.kick(0)
    expect_ok(blk.reap(posted)[0], S)


@pytest.mark.clause("pci.queue-reset-zero-on-reset", "pci.queue-reset-zero-when-enabled",
                    "pci.queue-reset-write", "pci.queue-reset-in-progress",
                    "pci.queue-reset-done")
def test_queue_reset_register(device, platform):
    """4.1.4.3.1 queue_reset: 0 once the queue is enabled; writing 1 resets the queue and
    reads 1 until done, then queue_reset and queue_enable read 0; the queue then works
    again from new rings; after a device reset queue_reset reads 0."""
    blk = device.init(require=[spec.VIRTIO_F_RING_RESET])
    t = blk.transport
    value = t.queue_read(0, spec.COMMON_Q_RESET, 2)
    assert value == 0, f"queue_reset reads {value} on an enabled queue"
    expect_ok(blk.submit_one(read_request(0, S)), S)
    old = blk.queues[0]
    # One buffer left on the old ring without a notification.  The device may use it
    # before the reset (2.7.13.3), but not once queue_reset has read 0: the reset is done.
    blk.post([read_request(1, S)], kick=False)
    t.queue_write(0, spec.COMMON_Q_RESET, 2, 1)
    deadline = time.monotonic() + blk.timeout
    while (value := t.common_read(spec.COMMON_Q_RESET, 2)) != 0:
        assert value == 1, f"queue_reset reads {value:#x} during a queue reset, expected 1 or 0"
        assert time.monotonic() < deadline, (
            f"queue_reset still reads 1 {blk.timeout:g}s after 1 was written")
        time.sleep(0.001)
    enable = t.common_read(spec.COMMON_Q_ENABLE, 2)
    assert enable == 0, f"queue reset done (queue_reset 0) but queue_enable reads {enable}"
    used_now = int.from_bytes(platform.mem_read(old.used_idx_addr, 2), "little")
    expect_unchanged(platform, old.used_idx_addr, 2, used_now,
                     "the device used a buffer of the old ring after the queue reset completed")
    msix = blk.virtio.msix
    vector = 1 % msix.cap.table_size if msix is not None else None
    blk.virtio.setup_queue(0, vector=vector)  # new rings; the device starts them from 0
    expected = known_sectors(blk, platform, 4)
    for i, c in enumerate(blk.submit([read_request(i, S) for i in range(4)])):
        expect_ok(c, S)
        expect_data(c.data, expected[i * S:(i + 1) * S], f"read #{i} after the queue reset", i * S)
    blk.virtio.negotiate(blk.virtio.features)  # device reset, then the same features again
    wrong = [q for q in range(t.num_queues) if t.queue_read(q, spec.COMMON_Q_RESET, 2) != 0]
    assert not wrong, f"queue_reset is not 0 after a device reset for queue(s) {wrong}"
