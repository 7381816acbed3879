"""Packed virtqueues end to end (2.8): used descriptors, wrap counters, event suppression."""

from __future__ import annotations

import struct

from refdev_harness import AVAIL, DATA, DESC, MSI_ADDR, USED

from conformance import spec

NEXT, WRITE, INDIRECT = spec.VIRTQ_DESC_F_NEXT, spec.VIRTQ_DESC_F_WRITE, spec.VIRTQ_DESC_F_INDIRECT
AVAIL_F, USED_F = spec.VIRTQ_DESC_F_AVAIL, spec.VIRTQ_DESC_F_USED
DRV_EVENT, DEV_EVENT = AVAIL, USED  # driver / device event suppression areas


class Ring:
    """The driver side of a packed ring, just big enough for these tests."""

    def __init__(self, h, size):
        self.h, self.size = h, size
        self.slot, self.wrap = 0, 1

    def put(self, elems, buf_id):
        """Make a list of (addr, len, flags) available; first descriptor's flags last."""
        first, first_flags = self.slot, None
        for k, (addr, length, flags) in enumerate(elems):
            f = flags | (AVAIL_F if self.wrap else USED_F)
            if k + 1 < len(elems):
                f |= NEXT
            self.h.mem.write(DESC + 16 * self.slot,
                             struct.pack("<QIHH", addr, length, buf_id, 0 if k == 0 else f))
            if k == 0:
                first_flags = f
            self.slot += 1
            if self.slot == self.size:
                self.slot, self.wrap = 0, self.wrap ^ 1
        self.h.mem.write_u16(DESC + 16 * first + 14, first_flags)
        return first

    def used(self, slot):
        _addr, length, buf_id, flags = struct.unpack("<QIHH", self.h.mem.read(DESC + 16 * slot,
                                                                               16))
        return buf_id, length, flags


def ready(make_harness, size=4, drop=(), msix=True):
    h = make_harness()
    h.negotiate(drop=drop)
    assert h.dev.negotiated_features >> spec.VIRTIO_F_RING_PACKED & 1
    if msix:
        h.msix_entry(0, MSI_ADDR, 0xA5A5)
        h.msix_enable()
    h.setup_queue(0, size=size, desc=DESC, driver=DRV_EVENT, device=DEV_EVENT,
                  vector=0 if msix else None)
    h.driver_ok()
    return h, Ring(h, size)


def get_id(ring, base, buf_id):
    h = ring.h
    h.mem.write(base, struct.pack("<IIQ", spec.VIRTIO_BLK_T_GET_ID, 0, 0))
    h.mem.write(base + 0x40, b"\xee")
    return ring.put([(base, 16, 0), (base + 0x20, 20, WRITE), (base + 0x40, 1, WRITE)], buf_id)


def flush(ring, base, buf_id):
    h = ring.h
    h.mem.write(base, struct.pack("<IIQ", spec.VIRTIO_BLK_T_FLUSH, 0, 0))
    h.mem.write(base + 0x20, b"\xee")
    return ring.put([(base, 16, 0), (base + 0x20, 1, WRITE)], buf_id)


def test_single_list_gives_one_used_descriptor(make_harness):
    h, ring = ready(make_harness, size=8)
    get_id(ring, DATA, buf_id=0x1234)
    h.notify(0)
    assert ring.used(0) == (0x1234, 21, AVAIL_F | USED_F | WRITE)
    assert h.mem.read(DATA + 0x20, 20) == b"REFDEV0001" + bytes(10)
    assert h.mem.read(DATA + 0x40, 1) == b"\0"
    assert h.mem.read_u32(MSI_ADDR) == 0xA5A5
    q = h.dev.queue(0)
    assert (q.avail_slot, q.avail_wrap, q.used_slot, q.used_wrap) == (3, 1, 3, 1)
    # the skipped slots of the list keep the driver's flags (2.8.6)
    assert ring.used(1)[2] == WRITE | NEXT | AVAIL_F


def test_wrap_counter_flips_after_the_last_slot(make_harness):
    h, ring = ready(make_harness, size=4)
    flush(ring, DATA, 1)  # slots 0, 1
    flush(ring, DATA + 0x100, 2)  # slots 2, 3
    h.notify(0)
    assert [ring.used(s) for s in (0, 2)] == [(1, 1, AVAIL_F | USED_F | WRITE),
                                              (2, 1, AVAIL_F | USED_F | WRITE)]
    flush(ring, DATA + 0x200, 3)  # slots 0, 1 with driver wrap counter 0
    h.notify(0)
    assert ring.used(0) == (3, 1, WRITE)  # used under device wrap counter 0: AVAIL=USED=0
    q = h.dev.queue(0)
    assert (q.used_slot, q.used_wrap) == (2, 0)


def test_list_crossing_the_ring_end(make_harness):
    h, ring = ready(make_harness, size=4)
    flush(ring, DATA, 1)
    h.notify(0)
    get_id(ring, DATA + 0x100, 9)  # slots 2, 3, 0
    h.notify(0)
    assert ring.used(2) == (9, 21, AVAIL_F | USED_F | WRITE)
    q = h.dev.queue(0)
    assert (q.avail_slot, q.avail_wrap, q.used_slot, q.used_wrap) == (1, 0, 1, 0)


def test_indirect_list(make_harness):
    h, ring = ready(make_harness, size=4)
    table = DATA + 0x800
    h.mem.write(DATA, struct.pack("<IIQ", spec.VIRTIO_BLK_T_GET_ID, 0, 0))
    h.mem.write(table, struct.pack("<QIHH", DATA, 16, 0, 0)
                + struct.pack("<QIHH", DATA + 0x20, 20, 0, WRITE)
                + struct.pack("<QIHH", DATA + 0x40, 1, 0, WRITE))
    ring.put([(table, 48, INDIRECT)], 77)
    h.notify(0)
    assert ring.used(0) == (77, 21, AVAIL_F | USED_F | WRITE)
    assert h.dev.queue(0).avail_slot == 1


def test_driver_event_suppression_disable(make_harness):
    h, ring = ready(make_harness, size=4)
    h.mem.write(DRV_EVENT, struct.pack("<HH", 0, spec.RING_EVENT_FLAGS_DISABLE))
    flush(ring, DATA, 1)
    h.notify(0)
    assert ring.used(0)[0] == 1
    assert h.mem.read_u32(MSI_ADDR) == 0


def test_driver_event_suppression_desc(make_harness):
    h, ring = ready(make_harness, size=8)
    # notify only when the slot 4 (wrap 1) is used
    h.mem.write(DRV_EVENT, struct.pack("<HH", 4 | 1 << 15, spec.RING_EVENT_FLAGS_DESC))
    flush(ring, DATA, 1)  # slots 0-1
    h.notify(0)
    assert h.mem.read_u32(MSI_ADDR) == 0
    flush(ring, DATA + 0x100, 2)  # slots 2-3
    h.notify(0)
    assert h.mem.read_u32(MSI_ADDR) == 0
    flush(ring, DATA + 0x200, 3)  # slots 4-5
    h.notify(0)
    assert h.mem.read_u32(MSI_ADDR) == 0xA5A5


def test_desc_mode_without_event_idx_notifies(make_harness):
    h, ring = ready(make_harness, size=8, drop=(spec.VIRTIO_F_EVENT_IDX,))
    h.mem.write(DRV_EVENT, struct.pack("<HH", 6 | 1 << 15, spec.RING_EVENT_FLAGS_DESC))
    flush(ring, DATA, 1)
    h.notify(0)
    assert h.mem.read_u32(MSI_ADDR) == 0xA5A5


def test_unavailable_continuation_needs_reset(make_harness):
    h, ring = ready(make_harness, size=4)
    h.mem.write(DESC, struct.pack("<QIHH", DATA, 16, 0, NEXT | AVAIL_F))  # slot 1 left empty
    h.notify(0)
    assert h.status() & spec.STATUS_DEVICE_NEEDS_RESET
    assert "2.8.6" in h.dev.queue(0).broken


def test_many_requests_wrap_many_times(make_harness):
    h, ring = ready(make_harness, size=3)  # packed queues need not be a power of 2
    for n in range(50):
        first = flush(ring, DATA + 0x100 * (n % 4), n)
        h.notify(0)
        assert ring.used(first)[0] == n
    q = h.dev.queue(0)
    assert q.completed == 50
    assert (q.avail_slot, q.avail_wrap) == (ring.slot, ring.wrap)
