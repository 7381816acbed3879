"""MSI-X masking and pending bits, INTx and ISR status, configuration change interrupts."""

from __future__ import annotations

import struct

from refdev_harness import BAR1_ADDR, DATA, ISR, MSI_ADDR

from conformance import spec
from reference_device import layout as L

NEXT, WRITE = spec.VIRTQ_DESC_F_NEXT, spec.VIRTQ_DESC_F_WRITE
PBA = BAR1_ADDR + L.MSIX_PBA_OFFSET


def ready(make_harness, mapping=None, msix=True, fmask=False, masked=False):
    h = make_harness(mapping)
    h.negotiate(drop=(spec.VIRTIO_F_RING_PACKED, spec.VIRTIO_F_EVENT_IDX))
    if msix:
        h.msix_entry(0, MSI_ADDR, 0x1111, masked=masked)
        h.msix_entry(1, MSI_ADDR + 4, 0x2222)
        h.msix_enable(function_mask=fmask)
        h.cw(spec.COMMON_MSIX, 2, 1)
    h.setup_queue(0, vector=0 if msix else None)
    h.driver_ok()
    return h


def one_flush(h):
    h.mem.write(DATA, struct.pack("<IIQ", spec.VIRTIO_BLK_T_FLUSH, 0, 0))
    h.desc(0, DATA, 16, NEXT, 1)
    h.desc(1, DATA + 0x20, 1, WRITE)
    h.publish(0)
    h.notify(0)


def test_msix_message_is_a_memory_write(make_harness):
    h = ready(make_harness)
    one_flush(h)
    assert h.mem.read_u32(MSI_ADDR) == 0x1111
    assert h.dev.msix.sent[0] == 1
    assert h.dev.t.isr == 0 and not h.dev.intx_level


def test_masked_vector_sets_pending_and_fires_on_unmask(make_harness):
    h = ready(make_harness, masked=True)
    one_flush(h)
    assert h.mem.read_u32(MSI_ADDR) == 0
    assert h.dev.mmio_read(PBA, 8) == 0b1
    h.dev.mmio_write(BAR1_ADDR + 12, 4, 0)  # unmask vector 0
    assert h.mem.read_u32(MSI_ADDR) == 0x1111
    assert h.dev.mmio_read(PBA, 8) == 0


def test_function_mask(make_harness):
    h = ready(make_harness, fmask=True)
    one_flush(h)
    assert h.mem.read_u32(MSI_ADDR) == 0
    assert h.dev.mmio_read(PBA, 4) == 0b1
    h.msix_enable(function_mask=False)
    assert h.mem.read_u32(MSI_ADDR) == 0x1111
    assert h.dev.mmio_read(PBA, 4) == 0


def test_pba_is_read_only_and_reserved_control_bits_read_zero(make_harness):
    h = ready(make_harness, masked=True)
    one_flush(h)
    h.dev.mmio_write(PBA, 4, 0)
    assert h.dev.mmio_read(PBA, 4) == 1
    h.dev.mmio_write(BAR1_ADDR + 16 + 12, 4, 0xFFFFFFFF)
    assert h.dev.mmio_read(BAR1_ADDR + 16 + 12, 4) == 1


def test_msix_without_bus_master_is_dropped(make_harness):
    h = ready(make_harness)
    h.dev.config_write(spec.PCI_COMMAND, 2, spec.PCI_COMMAND_MEMORY)
    h.dev.resize(100)
    assert h.mem.read_u32(MSI_ADDR + 4) == 0
    assert h.dev.msix.dropped == 1


def test_msix_to_address_outside_memory_is_dropped(make_harness):
    h = ready(make_harness)
    h.msix_entry(0, 0xFEE0_0000, 0x1111)
    one_flush(h)
    assert h.dev.msix.dropped == 1 and h.dev.msix.sent[0] == 0


def test_intx_and_isr(make_harness):
    h = ready(make_harness, msix=False)
    one_flush(h)
    assert h.dev.intx_level
    assert h.dev.config_read(spec.PCI_STATUS, 2) & spec.PCI_STATUS_INTERRUPT
    assert h.dev.mmio_read(ISR, 1) == spec.ISR_QUEUE
    assert not h.dev.intx_level
    assert not h.dev.config_read(spec.PCI_STATUS, 2) & spec.PCI_STATUS_INTERRUPT
    assert h.dev.mmio_read(ISR, 1) == 0


def test_intx_disable_masks_the_line_not_the_status(make_harness):
    h = ready(make_harness, msix=False)
    h.dev.config_write(spec.PCI_COMMAND, 2, spec.PCI_COMMAND_MEMORY | spec.PCI_COMMAND_MASTER
                       | spec.PCI_COMMAND_INTX_DISABLE)
    one_flush(h)
    assert not h.dev.intx_level
    assert h.dev.config_read(spec.PCI_STATUS, 2) & spec.PCI_STATUS_INTERRUPT
    h.dev.config_write(spec.PCI_COMMAND, 2, spec.PCI_COMMAND_MEMORY | spec.PCI_COMMAND_MASTER)
    assert h.dev.intx_level


def test_config_change_interrupt_intx(make_harness):
    h = ready(make_harness, msix=False)
    h.dev.resize(1234)
    assert h.dev.intx_level
    assert h.dev.mmio_read(ISR, 1) == spec.ISR_CONFIG


def test_config_change_interrupt_msix(make_harness):
    h = ready(make_harness)
    h.dev.resize(1234)
    assert h.mem.read_u32(MSI_ADDR + 4) == 0x2222
    assert h.mem.read_u32(MSI_ADDR) == 0
    assert not h.dev.intx_level
    assert h.dev.mmio_read(ISR, 1) == spec.ISR_CONFIG  # 4.1.4.5.1: set in any case


def test_no_config_interrupt_before_driver_ok(make_harness):
    h = make_harness()
    gen = h.cr(spec.COMMON_CFGGENERATION, 1)
    h.dev.resize(64)
    assert h.cr(spec.COMMON_CFGGENERATION, 1) == gen + 1
    assert h.dev.t.isr == 0 and not h.dev.intx_level


def test_resize_grows_the_disk(make_harness):
    h = ready(make_harness)
    h.dev.resize(65536)
    assert h.dev.backing_path.stat().st_size == 65536 * 512
    assert h.dev.engine.capacity == 65536


def test_reset_lowers_intx(make_harness):
    h = ready(make_harness, msix=False)
    one_flush(h)
    assert h.dev.intx_level
    h.set_status(0)
    assert not h.dev.intx_level and h.dev.t.isr == 0


def test_device_reset_drops_pending_messages(make_harness):
    h = ready(make_harness, masked=True)
    one_flush(h)
    assert h.dev.mmio_read(PBA, 4) == 1
    h.set_status(0)
    assert h.dev.mmio_read(PBA, 4) == 0
    h.dev.mmio_write(BAR1_ADDR + 12, 4, 0)
    assert h.mem.read_u32(MSI_ADDR) == 0
