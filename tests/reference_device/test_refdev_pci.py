"""PCI configuration space: IDs, BAR sizing and decoding, capabilities, command bits."""

from __future__ import annotations

import struct

from refdev_harness import BAR1_ADDR, BAR4_ADDR, COMMON

from conformance import spec
from reference_device import layout as L


def cfg_bytes(dev, off, n):
    return bytes(dev.config_read(off + i, 1) for i in range(n))


def test_identity(make_harness):
    dev = make_harness(mapped=False).dev
    assert dev.config_read(spec.PCI_VENDOR_ID, 2) == 0x1AF4
    assert dev.config_read(spec.PCI_DEVICE_ID, 2) == 0x1042
    assert dev.config_read(spec.PCI_REVISION_ID, 1) == 1
    assert dev.config_read(spec.PCI_REVISION_ID, 4) == 0x01800001  # class 01/80/00, rev 1
    assert dev.config_read(spec.PCI_HEADER_TYPE, 1) == 0
    assert dev.config_read(spec.PCI_SUBSYSTEM_VENDOR_ID, 2) == 0x1AF4
    assert dev.config_read(spec.PCI_SUBSYSTEM_ID, 2) == 0x1100
    assert dev.config_read(spec.PCI_INTERRUPT_PIN, 1) == 1
    assert dev.config_read(spec.PCI_STATUS, 2) == spec.PCI_STATUS_CAP_LIST
    assert dev.config_read(spec.PCI_COMMAND, 2) == 0
    assert dev.config_read(spec.PCI_CAPABILITY_LIST, 1) == L.CAP_MSIX


def test_bar_sizing(make_harness):
    dev = make_harness(mapped=False).dev
    for i in range(6):
        dev.config_write(spec.PCI_BASE_ADDRESS_0 + 4 * i, 4, 0xFFFFFFFF)
    got = [dev.config_read(spec.PCI_BASE_ADDRESS_0 + 4 * i, 4) for i in range(6)]
    # BAR 1: 32-bit memory, 4 KiB; BAR 4/5: 64-bit prefetchable memory, 16 KiB
    assert got == [0, 0xFFFFF000, 0, 0, 0xFFFFC00C, 0xFFFFFFFF]


def test_bar_low_bits_are_read_only_and_partial_writes_merge(make_harness):
    dev = make_harness(mapped=False).dev
    bar4 = spec.PCI_BASE_ADDRESS_0 + 16
    dev.config_write(bar4, 4, 0x12345FFF)
    assert dev.config_read(bar4, 4) == 0x1234400C
    dev.config_write(bar4 + 3, 1, 0xAB)
    assert dev.config_read(bar4, 4) == 0xAB34400C


def test_decoding_needs_a_programmed_bar_and_memory_enable(make_harness):
    h = make_harness(mapped=False)
    dev = h.dev
    assert dev.mmio_read(COMMON, 4) is None  # nothing programmed
    h.map_bars(command=0)
    assert dev.mmio_read(COMMON, 4) is None  # memory space disabled
    assert dev.mmio_write(COMMON, 4, 0) is False
    dev.config_write(spec.PCI_COMMAND, 2, spec.PCI_COMMAND_MEMORY)
    assert dev.mmio_read(COMMON + spec.COMMON_NUMQ, 2) == 4
    assert dev.mmio_read(BAR4_ADDR + L.VIRTIO_BAR_SIZE, 4) is None  # just past the BAR
    assert dev.mmio_read(BAR1_ADDR + 12, 4) == 1  # MSI-X entry 0: masked at reset
    assert dev.bar_address(4) == BAR4_ADDR
    assert dev.bar_address(0) is None


def test_command_register_writable_bits(make_harness):
    dev = make_harness(mapped=False).dev
    dev.config_write(spec.PCI_COMMAND, 2, 0xFFFF)
    assert dev.config_read(spec.PCI_COMMAND, 2) == 0x0546  # no I/O space, no BAR for it


def walk_caps(dev):
    caps = []
    p = dev.config_read(spec.PCI_CAPABILITY_LIST, 1)
    while p:
        assert p % 4 == 0
        caps.append(p)
        p = dev.config_read(p + 1, 1)
    return caps


def test_capability_list_bytes(make_harness):
    dev = make_harness(mapped=False).dev
    assert walk_caps(dev) == [0x98, 0x84, 0x70, 0x60, 0x50, 0x40]

    def vcap(off):
        return struct.unpack("<BBBBBBxxII", cfg_bytes(dev, off, 16))

    assert vcap(0x40) == (9, 0, 16, 1, 4, 0, 0x0000, 0x1000)  # common
    assert vcap(0x50) == (9, 0x40, 16, 3, 4, 0, 0x1000, 0x1000)  # ISR
    assert vcap(0x60) == (9, 0x50, 16, 4, 4, 0, 0x2000, 0x1000)  # device cfg
    assert vcap(0x70) == (9, 0x60, 20, 2, 4, 0, 0x3000, 16)  # notify: 4 queues * 4
    assert dev.config_read(0x70 + spec.CAP_NOTIFY_OFF_MULTIPLIER, 4) == 4
    assert vcap(0x84) == (9, 0x70, 20, 5, 0, 0, 0, 0)  # pci cfg access
    assert cfg_bytes(dev, 0x98, 12) == bytes([0x11, 0x84]) + struct.pack("<HII", 4, 1, 0x801)


def test_missing_isr_cap_defect(make_harness):
    dev = make_harness({"defects": ["missing-isr-cap"]}, mapped=False).dev
    caps = walk_caps(dev)
    assert caps == [0x98, 0x84, 0x70, 0x60, 0x40]
    assert [dev.config_read(c + 3, 1) for c in caps[1:]] == [5, 2, 4, 1]


def test_no_msix(make_harness):
    dev = make_harness({"msix_vectors": 0}, mapped=False).dev
    assert walk_caps(dev) == [0x84, 0x70, 0x60, 0x50, 0x40]
    dev.config_write(spec.PCI_BASE_ADDRESS_0 + 4, 4, 0xFFFFFFFF)
    assert dev.config_read(spec.PCI_BASE_ADDRESS_0 + 4, 4) == 0


def test_notify_length_with_multiplier_zero(make_harness):
    dev = make_harness({"notify_off_multiplier": 0}, mapped=False).dev
    assert dev.config_read(0x70 + spec.CAP_LENGTH, 4) == 4
    assert dev.config_read(0x70 + spec.CAP_NOTIFY_OFF_MULTIPLIER, 4) == 0


def cfg_window(dev, bar, off, length):
    base = L.CAP_PCI_CFG
    dev.config_write(base + spec.CAP_BAR, 1, bar)
    dev.config_write(base + spec.CAP_OFFSET, 4, off)
    dev.config_write(base + spec.CAP_LENGTH, 4, length)


def test_pci_cfg_access_reads_without_any_bar_mapped(make_harness):
    dev = make_harness(mapped=False).dev
    data = L.CAP_PCI_CFG + spec.CAP_PCI_CFG_DATA
    cfg_window(dev, 4, spec.COMMON_NUMQ, 2)
    assert dev.config_read(data, 2) == 4
    cfg_window(dev, 4, spec.COMMON_DF, 4)
    assert dev.config_read(data, 4) == dev.cfg.offered_features() & 0xFFFFFFFF
    cfg_window(dev, 4, L.DEVICE_OFFSET + spec.BLK_CFG_CAPACITY, 4)
    assert dev.config_read(data, 4) == 32768
    cfg_window(dev, 4, L.DEVICE_OFFSET + spec.BLK_CFG_GEOMETRY_HEADS, 1)
    assert dev.config_read(data, 1) == 16


def test_pci_cfg_access_writes(make_harness):
    h = make_harness()
    dev = h.dev
    data = L.CAP_PCI_CFG + spec.CAP_PCI_CFG_DATA
    cfg_window(dev, 4, spec.COMMON_STATUS, 1)
    dev.config_write(data, 1, spec.STATUS_ACKNOWLEDGE)
    assert h.status() == spec.STATUS_ACKNOWLEDGE
    cfg_window(dev, 4, spec.COMMON_Q_SELECT, 2)
    dev.config_write(data, 2, 3)
    assert h.cr(spec.COMMON_Q_SELECT, 2) == 3
    cfg_window(dev, 4, spec.COMMON_GFSELECT, 4)
    dev.config_write(data, 4, 1)
    assert h.cr(spec.COMMON_GFSELECT, 4) == 1
    assert dev.config_read(data, 4) == 1


def test_pci_cfg_access_to_isr_clears_it(make_harness):
    h = make_harness()
    dev = h.dev
    dev.t.isr = spec.ISR_CONFIG
    cfg_window(dev, 4, L.ISR_OFFSET, 1)
    assert dev.config_read(L.CAP_PCI_CFG + spec.CAP_PCI_CFG_DATA, 1) == spec.ISR_CONFIG
    assert dev.t.isr == 0


def test_pci_cfg_access_ignores_bad_length(make_harness):
    dev = make_harness(mapped=False).dev
    cfg_window(dev, 4, spec.COMMON_NUMQ, 3)
    assert dev.config_read(L.CAP_PCI_CFG + spec.CAP_PCI_CFG_DATA, 4) == 0


def test_capability_bytes_are_read_only(make_harness):
    dev = make_harness(mapped=False).dev
    before = cfg_bytes(dev, 0x40, 0x64)
    for off in range(0x40, 0x84):
        dev.config_write(off, 1, 0x5A)
    assert cfg_bytes(dev, 0x40, 0x44) == before[:0x44]
