"""QtestPlatform against a real QEMU: config space, BARs, memory, polls, INTx, resize."""

from __future__ import annotations

import os
import time

import pytest
from qtest_helpers import assign_bar, bring_up_bar, enable, needs_qemu, size_bar, virtio_caps

from conformance import spec as s
from conformance.driver.platform import (
    BarRead,
    ConfigRead,
    ConfigWrite,
    MemRead,
    MemWrite,
    PlatformError,
    Poll,
    PollTimeout,
    Unsupported,
)
from conformance.targets.qtest.backing import pattern_bytes

pytestmark = [needs_qemu, pytest.mark.qemu]


@pytest.mark.parametrize("machine", ["q35", "pc", "pc-q35-7.2", "pc-i440fx-7.2"])
def test_identity_in_config_space(make_platform, machine):
    p = make_platform(machine=machine)
    assert p.config_read(s.PCI_VENDOR_ID, 2) == s.PCI_VENDOR_ID_REDHAT_QUMRANET
    assert p.config_read(s.PCI_DEVICE_ID, 2) == s.PCI_DEVICE_ID_VIRTIO_BLK_MODERN
    assert p.config_read(0, 4) == 0x1042_1AF4
    assert p.config_read(s.PCI_STATUS, 2) & s.PCI_STATUS_CAP_LIST
    assert p.describe()["machine"] == machine


def test_transitional_device(make_platform):
    p = make_platform(device="virtio-blk-pci,drive=dut")
    assert p.config_read(s.PCI_DEVICE_ID, 2) == s.PCI_DEVICE_ID_VIRTIO_BLK_TRANSITIONAL


@pytest.mark.parametrize("machine", ["q35", "pc"])
def test_bar4_by_hand_and_num_queues(make_platform, machine):
    p = make_platform(machine=machine)
    caps = virtio_caps(p)
    _, bar, off = caps[s.VIRTIO_PCI_CAP_COMMON_CFG]
    assert bar == 4  # where QEMU puts the modern virtio structures
    size, is64 = size_bar(p, 4)
    assert is64 and size >= 0x4000 and size & (size - 1) == 0
    start, end = p.mmio_window
    addr = (start + 0x100000 + size - 1) & ~(size - 1)
    assign_bar(p, 4, addr, is64)
    enable(p)
    assert p.config_read(0x10 + 16, 4) & ~0xF == addr & 0xFFFFFFFF
    cmd = p.config_read(s.PCI_COMMAND, 2)
    assert cmd & (s.PCI_COMMAND_MEMORY | s.PCI_COMMAND_MASTER) == 6
    assert p.bar_read(4, off + s.COMMON_NUMQ, 2) == 1
    # the same register straight through qtest proves BarRead used the programmed base
    assert p.qtest.readw(addr + off + s.COMMON_NUMQ) == 1


def test_bar_cache_follows_reprogramming(platform):
    p = platform
    _, bar, off = virtio_caps(p)[s.VIRTIO_PCI_CAP_COMMON_CFG]
    first = bring_up_bar(p, bar)
    assert p.bar_read(bar, off + s.COMMON_NUMQ, 2) == 1
    moved = first + 0x100000
    # one batch: move the BAR, then read through it; the read must use the new base
    res = p.execute([
        ConfigWrite(0x10 + 4 * bar, 4, moved & 0xFFFFFFFF),
        BarRead(bar, off + s.COMMON_NUMQ, 2),
        ConfigRead(0x10 + 4 * bar, 4),
    ])
    assert res[1] == 1
    assert res[2] & ~0xF == moved
    assert p.qtest.readw(first + off + s.COMMON_NUMQ) != 1  # nothing decodes there now


def test_unassigned_bar_is_an_error(platform):
    with pytest.raises(PlatformError, match="BAR 4 is not assigned"):
        platform.bar_read(4, 0, 4)


def test_mem_round_trip_1mib(platform):
    p = platform
    addr = p.dma_alloc(1 << 20)
    data = os.urandom(1 << 20)
    p.mem_write(addr, data)
    assert p.mem_read(addr, 1 << 20) == data
    res = p.execute([MemWrite(addr + 5, b"\x01\x02\x03"), MemRead(addr, 10), MemRead(addr, 0)])
    assert res == [None, data[:5] + b"\x01\x02\x03" + data[8:10], b""]


def test_dma_alloc_aligns_and_stays_in_ram(platform):
    p = platform
    a = p.dma_alloc(10, 16)
    b = p.dma_alloc(4096)
    assert a >= 0x200000 and a % 16 == 0 and b % 4096 == 0 and b >= a + 10
    with pytest.raises(PlatformError, match="out of DMA memory"):
        p.dma_alloc(1 << 30)


def test_poll_succeeds(platform):
    p = platform
    addr = p.dma_alloc(8)
    p.mem_write(addr, (0x1234).to_bytes(2, "little"))
    res = p.execute([MemWrite(addr, b"\x34\x12"), Poll(addr, 2, 0xFFFF, 0x1234, timeout=1.0)])
    assert res == [None, 0x1234]
    assert p.poll(addr, 2, 0xFF00, 0x5600, equal=False, timeout=1.0) == 0x1234


def test_poll_times_out(platform):
    p = platform
    addr = p.dma_alloc(8)
    p.mem_write(addr, b"\x00" * 8)
    t0 = time.monotonic()
    with pytest.raises(PollTimeout) as info:
        p.execute([MemRead(addr, 2), Poll(addr, 4, 1, 1, timeout=0.3), MemWrite(addr, b"\xff")])
    took = time.monotonic() - t0
    assert 0.3 <= took < 2.0
    assert info.value.index == 1 and info.value.last_value == 0
    assert info.value.results == [b"\x00\x00"]
    assert p.mem_read(addr, 1) == b"\x00"  # nothing after the poll ran


def test_backing_file_has_the_pattern(platform):
    assert platform.backing_read(512 * 7 + 3, 600) == pattern_bytes(512 * 7 + 3, 600)


@pytest.mark.parametrize("machine, gsi", [("q35", 20), ("pc", 11), ("pc-q35-7.2", 20),
                                          ("pc-i440fx-7.2", 11)])
def test_intx_follows_config_interrupt(make_platform, machine, gsi):
    """block_resize -> configuration change interrupt (4.1.5.3) -> INTx up; ISR read -> down."""
    p = make_platform(machine=machine)
    assert p.intx_gsi == gsi
    caps = virtio_caps(p)
    _, bar, common = caps[s.VIRTIO_PCI_CAP_COMMON_CFG]
    _, _, isr = caps[s.VIRTIO_PCI_CAP_ISR_CFG]
    _, _, devcfg = caps[s.VIRTIO_PCI_CAP_DEVICE_CFG]
    bring_up_bar(p, bar)
    for status in (0, s.STATUS_ACKNOWLEDGE, s.STATUS_ACKNOWLEDGE | s.STATUS_DRIVER,
                   s.STATUS_ACKNOWLEDGE | s.STATUS_DRIVER | s.STATUS_DRIVER_OK):
        p.bar_write(bar, common + s.COMMON_STATUS, 1, status)
    assert p.intx_level() is False
    assert p.bar_read(bar, devcfg + s.BLK_CFG_CAPACITY, 8) == (16 << 20) // 512
    p.resize(32 << 20)
    deadline = time.monotonic() + 5
    while not p.intx_level():
        assert time.monotonic() < deadline, "INTx never rose after block_resize"
    assert p.config_read(s.PCI_STATUS, 2) & s.PCI_STATUS_INTERRUPT
    assert p.bar_read(bar, isr, 1) & s.ISR_CONFIG
    assert p.intx_level() is False  # reading the ISR de-asserts (4.1.4.5)
    assert p.bar_read(bar, devcfg + s.BLK_CFG_CAPACITY, 8) == (32 << 20) // 512


def test_intx_unsupported_without_pin(make_platform):
    p = make_platform()
    p._intx_gsi = None  # as when the IOAPIC cannot be intercepted
    p._intx_why = "test"
    with pytest.raises(Unsupported, match="INTx cannot be observed: test"):
        p.intx_level()


@pytest.mark.parametrize("kind", ["blockdev", "drive"])
def test_user_disk_resize_and_no_backing_read(make_platform, tmp_path, kind):
    img = tmp_path / "user.raw"
    img.write_bytes(b"\0" * (1 << 20))
    if kind == "blockdev":  # resized by node-name
        disk = {"blockdev": f"driver=raw,node-name=d1,file.driver=file,file.filename={img}"}
    else:  # resized by the drive's id (its BlockBackend name)
        disk = {"drive": f"file={img},format=raw,if=none,id=d1"}
    p = make_platform(device="virtio-blk-pci,drive=d1,disable-legacy=on", **disk)
    with pytest.raises(Unsupported):
        p.backing_read(0, 512)
    p.resize(2 << 20)
    _, bar, devcfg = virtio_caps(p)[s.VIRTIO_PCI_CAP_DEVICE_CFG]
    bring_up_bar(p, bar)
    assert p.bar_read(bar, devcfg, 8) == (2 << 20) // 512
    assert img.stat().st_size == 2 << 20


def test_bad_config_access(platform):
    with pytest.raises(PlatformError, match="crosses a dword"):
        platform.config_read(0x3, 2)
    with pytest.raises(PlatformError, match="outside"):
        platform.config_read(0x100, 4)


def test_describe(platform):
    d = platform.describe()
    assert d["target"] == "qtest"
    assert d["qemu_version"].count(".") == 2
    assert "-qtest unix:" in d["command_line"]
    assert d["device"].endswith("addr=04.0")
    assert d["machine_family"] == "q35" and d["shared_memory"] is False
    # From QMP query-pci: the DUT as QEMU itself lists it.
    assert "00:04.0 1af4:1042 SCSI controller" in d["pci_functions"]
    assert d["pci_functions"][0].startswith("00:00.0 8086:29c0 ")  # q35's host bridge
    dut = d["dut_pci"]
    assert (dut["vendor"], dut["device"], dut["subsystem"]) == ("0x1af4", "0x1042", "0x1100")
    assert dut["irq_pin"] == 1
    assert dut["bars"][4] == {"type": "memory", "size": 16384}


def test_disk_created_under_the_devices_drive_name(make_platform):
    p = make_platform(device="virtio-blk-pci,drive=mine,disable-legacy=on")
    assert p.backing_read(512, 8) == pattern_bytes(512, 8)
    p.resize(8 << 20)  # by the node name the device string gave
    _, bar, devcfg = virtio_caps(p)[s.VIRTIO_PCI_CAP_DEVICE_CFG]
    bring_up_bar(p, bar)
    assert p.bar_read(bar, devcfg, 8) == (8 << 20) // 512
    assert "node-name=mine," in p.describe()["command_line"]


def test_shared_memory_backend(make_platform):
    p = make_platform(shared_memory=True)
    line = p.describe()["command_line"]
    assert "-object memory-backend-memfd,id=vbc-ram,size=256M,share=on" in line
    assert "-machine q35,pit=off,memory-backend=vbc-ram" in line
    addr = p.dma_alloc(4096)
    p.mem_write(addr, b"shared")
    assert p.mem_read(addr, 6) == b"shared"
