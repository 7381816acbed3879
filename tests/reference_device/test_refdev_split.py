"""Split virtqueues end to end (2.7): ordering, wrap, suppression, errors, notifications."""

from __future__ import annotations

import struct

from refdev_harness import AVAIL, BAR1_ADDR, DATA, DESC, MSI_ADDR, NOTIFY, USED

from conformance import spec

NEXT, WRITE = spec.VIRTQ_DESC_F_NEXT, spec.VIRTQ_DESC_F_WRITE
GET_ID = spec.VIRTIO_BLK_T_GET_ID


def ready(make_harness, mapping=None, drop=(), vector=None, msix=False, size=8):
    h = make_harness(mapping)
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED, *drop))
    if msix:
        h.msix_entry(0, MSI_ADDR, 0xC0FFEE)
        h.msix_entry(1, MSI_ADDR + 4, 0xBEEF)
        h.cw(spec.COMMON_MSIX, 2, 1)
        h.msix_enable()
    h.setup_queue(0, size=size, vector=vector)
    h.driver_ok()
    return h


def flush_chain(h, first, status_addr):
    """A two-descriptor FLUSH (header, status) at descriptors first, first + 1."""
    hdr = status_addr - 0x20
    h.mem.write(hdr, struct.pack("<IIQ", spec.VIRTIO_BLK_T_FLUSH, 0, 0))
    h.desc(first, hdr, 16, NEXT, first + 1)
    h.desc(first + 1, status_addr, 1, WRITE)
    h.mem.write(status_addr, b"\xee")


def test_batch_of_requests_used_in_order(make_harness):
    h = ready(make_harness)
    for k in range(4):
        flush_chain(h, 2 * k, DATA + 0x40 * (k + 1))
    h.publish(0, 2, 4, 6)
    h.notify(0)
    assert h.used_idx() == 4
    assert [h.used_elem(i) for i in range(4)] == [(0, 1), (2, 1), (4, 1), (6, 1)]
    assert [h.mem.read(DATA + 0x40 * (k + 1), 1) for k in range(4)] == [b"\0"] * 4
    assert h.dev.queue(0).completed == 4


def test_used_idx_wraps_mod_2_16(make_harness):
    h = ready(make_harness)
    q = h.dev.queue(0)
    q.last_avail = q.used_idx = 0xFFFE  # as if 65534 requests had been served
    h.mem.write_u16(AVAIL + 2, 0xFFFE)
    h.mem.write_u16(USED + 2, 0xFFFE)
    for k in range(4):
        flush_chain(h, 2 * k, DATA + 0x40 * (k + 1))
    h.publish(0, 2, 4, 6)
    h.notify(0)
    assert h.used_idx() == 2
    assert [h.used_elem(i) for i in (6, 7, 0, 1)] == [(0, 1), (2, 1), (4, 1), (6, 1)]


def test_used_idx_no_wrap_defect_stalls_at_the_wrap(make_harness):
    h = ready(make_harness, {"defects": ["used-idx-no-wrap"]})
    q = h.dev.queue(0)
    q.last_avail = q.used_idx = 0xFFFE
    h.mem.write_u16(AVAIL + 2, 0xFFFE)
    h.mem.write_u16(USED + 2, 0xFFFE)
    for k in range(4):
        flush_chain(h, 2 * k, DATA + 0x40 * (k + 1))
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 0xFFFF  # before the wrap all is well
    h.publish(2, 4, 6)
    h.notify(0)
    assert h.used_idx() == 0xFFFF  # stalled: avail idx 2 - last 0xFFFF is negative
    assert not h.status() & spec.STATUS_DEVICE_NEEDS_RESET


def test_no_interrupt_flag_without_event_idx(make_harness):
    h = ready(make_harness, drop=(spec.VIRTIO_F_EVENT_IDX,))
    h.mem.write_u16(AVAIL, spec.VIRTQ_AVAIL_F_NO_INTERRUPT)
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 1
    assert h.dev.t.isr == 0 and not h.dev.intx_level
    h.mem.write_u16(AVAIL, 0)
    h.publish(0)
    h.notify(0)
    assert h.dev.t.isr == spec.ISR_QUEUE and h.dev.intx_level


def test_event_idx(make_harness):
    h = ready(make_harness, msix=True, vector=0)
    assert h.dev.negotiated_features >> spec.VIRTIO_F_EVENT_IDX & 1
    h.mem.write_u16(AVAIL + 4 + 2 * 8, 1)  # used_event = 1: interrupt once entry 1 is used
    h.mem.write_u16(AVAIL, spec.VIRTQ_AVAIL_F_NO_INTERRUPT)  # must be ignored with EVENT_IDX
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 1
    assert h.mem.read_u32(MSI_ADDR) == 0
    assert h.mem.read_u16(USED + 4 + 8 * 8) == 1  # avail_event: next avail index
    h.publish(0)
    h.notify(0)
    assert h.mem.read_u32(MSI_ADDR) == 0xC0FFEE
    h.mem.write_u32(MSI_ADDR, 0)
    h.publish(0)
    h.notify(0)  # used_event still 1: already passed, no new interrupt
    assert h.mem.read_u32(MSI_ADDR) == 0
    assert h.mem.read_u16(USED + 4 + 8 * 8) == 3


def test_msix_no_vector_means_no_interrupt(make_harness):
    h = ready(make_harness, msix=True)  # queue vector stays NO_VECTOR
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 1
    assert h.mem.read_u32(MSI_ADDR) == 0 and h.dev.t.isr == 0 and not h.dev.intx_level


def test_bad_chain_sets_needs_reset_and_notifies_config(make_harness):
    h = ready(make_harness, msix=True, vector=0)
    h.desc(0, DATA, 16, NEXT, 0)  # a loop onto itself
    h.publish(0)
    assert h.dev.mmio_write(NOTIFY, 2, 0) is True
    assert h.used_idx() == 0
    assert h.status() & spec.STATUS_DEVICE_NEEDS_RESET
    assert h.mem.read_u32(MSI_ADDR + 4) == 0xBEEF  # config vector 1
    assert h.dev.t.isr == spec.ISR_CONFIG
    assert "2.7.5.2" in h.dev.queue(0).broken
    # the broken queue is not served any more; another queue still is
    flush_chain(h, 0, DATA + 0x40)
    h.notify(0)
    assert h.used_idx() == 0
    h.setup_queue(1, size=8, desc=0x40000, driver=0x41000, device=0x42000)
    hdr = DATA + 0x200
    h.mem.write(hdr, struct.pack("<IIQ", spec.VIRTIO_BLK_T_FLUSH, 0, 0))
    h.desc(0, hdr, 16, NEXT, 1, table=0x40000)
    h.desc(1, hdr + 0x20, 1, WRITE, table=0x40000)
    h.mem.write_u16(0x41000 + 4, 0)
    h.mem.write_u16(0x41000 + 2, 1)
    h.notify(1)
    assert h.mem.read_u16(0x42000 + 2) == 1


def test_avail_idx_jump_beyond_queue_size_needs_reset(make_harness):
    h = ready(make_harness)
    h.mem.write_u16(AVAIL + 2, 9)
    h.notify(0)
    assert h.used_idx() == 0
    assert h.status() & spec.STATUS_DEVICE_NEEDS_RESET
    assert h.dev.intx_level  # config change interrupt through INTx


def test_rings_outside_memory_need_reset(make_harness):
    h = make_harness()
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED,))
    h.setup_queue(0, driver=h.mem.size - 4)
    h.driver_ok()
    h.notify(0)
    assert h.status() & spec.STATUS_DEVICE_NEEDS_RESET


def test_nothing_is_consumed_before_driver_ok(make_harness):
    h = make_harness()
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED,))
    h.setup_queue(0)
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 0 and h.dev.last_notification(0) == 0
    h.driver_ok()
    h.notify(0)
    assert h.used_idx() == 1


def test_bus_master_gates_processing(make_harness):
    h = ready(make_harness)
    h.dev.config_write(spec.PCI_COMMAND, 2, spec.PCI_COMMAND_MEMORY)
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 0
    h.dev.config_write(spec.PCI_COMMAND, 2, spec.PCI_COMMAND_MEMORY | spec.PCI_COMMAND_MASTER)
    assert h.used_idx() == 0  # work waits for the next notification
    h.notify(0)
    assert h.used_idx() == 1


def test_notification_data_is_recorded(make_harness):
    h = ready(make_harness)
    assert h.dev.negotiated_features >> spec.VIRTIO_F_NOTIFICATION_DATA & 1
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.notify(0, value=0x0001_0000, size=4)  # vqn 0, next_off 1
    assert h.dev.last_notification(0) == 0x0001_0000
    assert h.used_idx() == 1
    assert h.dev.last_notification(1) is None


def test_multiplier_zero_uses_the_value_to_pick_the_queue(make_harness):
    h = make_harness({"notify_off_multiplier": 0})
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED,))
    h.setup_queue(2)
    h.driver_ok()
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.dev.mmio_write(NOTIFY, 2, 2)
    assert h.dev.last_notification(2) == 2
    assert h.used_idx() == 1


def test_notify_to_missing_queue_is_ignored(make_harness):
    h = ready(make_harness)
    assert h.dev.mmio_write(NOTIFY + 4 * 9, 2, 9) is True
    assert h.dev.mmio_write(NOTIFY + 2, 2, 0) is True  # between two queues' addresses
    assert h.dev.last_notification(0) is None
    assert not h.status() & spec.STATUS_DEVICE_NEEDS_RESET


def test_queue_reset_starts_indexes_from_zero(make_harness):
    h = ready(make_harness)
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 1
    h.cw(spec.COMMON_Q_RESET, 2, 1)
    h.notify(0)  # disabled now: nothing happens
    h.mem.write(AVAIL, bytes(0x100))
    h.mem.write(USED, bytes(0x100))
    h.setup_queue(0)
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 1 and h.used_elem(0) == (0, 1)


def test_device_reset_then_reinitialise(make_harness):
    h = ready(make_harness)
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    h.notify(0)
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED,))
    h.mem.write(AVAIL, bytes(0x100))
    h.mem.write(USED, bytes(0x100))
    h.setup_queue(0)
    h.driver_ok()
    h.publish(0)
    h.notify(0)
    assert h.used_idx() == 1


def test_notify_through_pci_cfg_window(make_harness):
    from reference_device import layout as L
    h = ready(make_harness)
    flush_chain(h, 0, DATA + 0x40)
    h.publish(0)
    dev = h.dev
    dev.config_write(L.CAP_PCI_CFG + spec.CAP_BAR, 1, 4)
    dev.config_write(L.CAP_PCI_CFG + spec.CAP_OFFSET, 4, L.NOTIFY_OFFSET)
    dev.config_write(L.CAP_PCI_CFG + spec.CAP_LENGTH, 4, 2)
    dev.config_write(L.CAP_PCI_CFG + spec.CAP_PCI_CFG_DATA, 2, 0)
    assert h.used_idx() == 1


def test_indirect_request(make_harness):
    h = ready(make_harness)
    table = DATA + 0x1000
    h.mem.write(DATA, struct.pack("<IIQ", GET_ID, 0, 0))
    h.desc(0, DATA, 16, NEXT, 1, table=table)
    h.desc(1, DATA + 0x100, 20, NEXT | WRITE, 2, table=table)
    h.desc(2, DATA + 0x200, 1, WRITE, table=table)
    h.desc(5, table, 48, spec.VIRTQ_DESC_F_INDIRECT, table=DESC)
    h.publish(5)
    h.notify(0)
    assert h.used_elem(0) == (5, 21)
    assert h.mem.read(DATA + 0x100, 20) == b"REFDEV0001" + bytes(10)


def test_msix_table_is_in_bar1(make_harness):
    h = ready(make_harness, msix=True)
    assert h.dev.mmio_read(BAR1_ADDR + 8, 4) == 0xC0FFEE
