"""One real virtio-blk request through QtestPlatform, set up by hand (VIRTIO 1.2, 3.1, 2.7)."""

from __future__ import annotations

import struct
import time

import pytest
from qtest_helpers import bring_up_bar, needs_qemu, virtio_caps

from conformance import spec as s
from conformance.driver.platform import BarWrite, MemRead, MemWrite, Poll
from conformance.targets.qtest.backing import sector_pattern

pytestmark = [needs_qemu, pytest.mark.qemu]
QSIZE = 16


class HandDriver:
    """The minimum of 3.1.1 driver initialization and a split queue 0."""

    def __init__(self, p):
        self.p = p
        caps = virtio_caps(p)
        _, self.bar, self.common = caps[s.VIRTIO_PCI_CAP_COMMON_CFG]
        ncap, _, self.notify = caps[s.VIRTIO_PCI_CAP_NOTIFY_CFG]
        self.mult = p.config_read(ncap + s.CAP_NOTIFY_OFF_MULTIPLIER, 4)
        _, _, self.isr = caps[s.VIRTIO_PCI_CAP_ISR_CFG]
        bring_up_bar(p, self.bar)
        c = self.common
        st = 0
        self.w(c + s.COMMON_STATUS, 1, 0)
        for bit in (s.STATUS_ACKNOWLEDGE, s.STATUS_DRIVER):
            st |= bit
            self.w(c + s.COMMON_STATUS, 1, st)
        self.w(c + s.COMMON_GFSELECT, 4, 1)
        self.w(c + s.COMMON_GF, 4, 1 << (s.VIRTIO_F_VERSION_1 - 32))
        self.w(c + s.COMMON_GFSELECT, 4, 0)
        self.w(c + s.COMMON_GF, 4, 0)
        st |= s.STATUS_FEATURES_OK
        self.w(c + s.COMMON_STATUS, 1, st)
        assert p.bar_read(self.bar, c + s.COMMON_STATUS, 1) & s.STATUS_FEATURES_OK
        self.w(c + s.COMMON_Q_SELECT, 2, 0)
        self.w(c + s.COMMON_Q_SIZE, 2, QSIZE)
        self.desc = p.dma_alloc(16 * QSIZE, 4096)
        self.avail = p.dma_alloc(s.split_avail_size(QSIZE), 4096)
        self.used = p.dma_alloc(s.split_used_size(QSIZE), 4096)
        p.mem_write(self.avail, bytes(s.split_avail_size(QSIZE)))
        p.mem_write(self.used, bytes(s.split_used_size(QSIZE)))
        for off, addr in ((s.COMMON_Q_DESCLO, self.desc), (s.COMMON_Q_AVAILLO, self.avail),
                          (s.COMMON_Q_USEDLO, self.used)):
            self.w(c + off, 4, addr & 0xFFFFFFFF)
            self.w(c + off + 4, 4, addr >> 32)
        noff = p.bar_read(self.bar, c + s.COMMON_Q_NOFF, 2)
        self.doorbell = self.notify + noff * self.mult
        self.w(c + s.COMMON_Q_ENABLE, 2, 1)
        self.w(c + s.COMMON_STATUS, 1, st | s.STATUS_DRIVER_OK)
        self.avail_idx = 0
        self.bufs = p.dma_alloc(4096 * 4)

    def w(self, off, size, value):
        self.p.bar_write(self.bar, off, size, value)

    def request(self, rtype, sector, data=b"", read_len=0):
        """One request as one Platform batch: descriptors, avail, notify, poll, read back."""
        hdr, dat, sts = self.bufs, self.bufs + 4096, self.bufs + 3 * 4096
        n = len(data) or read_len
        descs = struct.pack("<QIHH", hdr, 16, s.VIRTQ_DESC_F_NEXT, 1)
        descs += struct.pack("<QIHH", dat, n, s.VIRTQ_DESC_F_NEXT |
                             (s.VIRTQ_DESC_F_WRITE if read_len else 0), 2)
        descs += struct.pack("<QIHH", sts, 1, s.VIRTQ_DESC_F_WRITE, 0)
        slot = self.avail_idx % QSIZE
        self.avail_idx += 1
        ops = [
            MemWrite(hdr, struct.pack("<IIQ", rtype, 0, sector)),
            MemWrite(sts, b"\xee"),
            MemWrite(self.desc, descs),
            MemWrite(self.avail + 4 + 2 * slot, b"\x00\x00"),
            MemWrite(self.avail + 2, struct.pack("<H", self.avail_idx)),
            BarWrite(self.bar, self.doorbell, 2, 0),
            Poll(self.used + 2, 2, 0xFFFF, self.avail_idx, timeout=5.0),
            MemRead(sts, 1),
            MemRead(dat, n),
        ]
        if data:
            ops.insert(0, MemWrite(dat, data))
        res = self.p.execute(ops)
        return res[-2][0], res[-1]


def test_read_and_write_a_sector(platform):
    p = platform
    d = HandDriver(p)
    status, data = d.request(s.VIRTIO_BLK_T_IN, 5, read_len=512)
    assert status == s.VIRTIO_BLK_S_OK
    assert data == sector_pattern(5)
    assert p.intx_level()  # used buffer notification over INTx (MSI-X is not enabled)
    assert p.bar_read(d.bar, d.isr, 1) & s.ISR_QUEUE
    assert not p.intx_level()
    new = bytes(range(256)) * 2
    status, _ = d.request(s.VIRTIO_BLK_T_OUT, 9, data=new)
    assert status == s.VIRTIO_BLK_S_OK
    assert p.backing_read(9 * 512, 512) == new
    status, data = d.request(s.VIRTIO_BLK_T_IN, 9, read_len=512)
    assert data == new


def test_reset_gives_a_power_on_device(platform):
    p = platform
    d = HandDriver(p)
    d.request(s.VIRTIO_BLK_T_OUT, 3, data=b"\xab" * 512)
    p.resize(8 << 20)
    t0 = time.monotonic()
    p.reset()
    took = time.monotonic() - t0
    assert took < 1.0
    assert p.config_read(s.PCI_BASE_ADDRESS_0 + 16, 4) & ~0xF == 0  # BAR unassigned again
    assert p.config_read(s.PCI_COMMAND, 2) & s.PCI_COMMAND_MEMORY == 0
    assert not p.intx_level()
    p.restore_disk()
    assert p.backing_read(3 * 512, 512) == sector_pattern(3)
    d = HandDriver(p)  # the whole bring-up works again from scratch
    assert p.bar_read(d.bar, d.common + s.COMMON_STATUS, 1) & s.STATUS_DRIVER_OK
    _, _, devcfg = virtio_caps(p)[s.VIRTIO_PCI_CAP_DEVICE_CFG]
    assert p.bar_read(d.bar, devcfg, 8) == (16 << 20) // 512
    status, data = d.request(s.VIRTIO_BLK_T_IN, 3, read_len=512)
    assert status == 0 and data == sector_pattern(3)


@pytest.mark.parametrize("machine", ["pc"])
def test_reset_keeps_intx_on_pc(make_platform, machine):
    p = make_platform(machine=machine)
    p.reset()
    d = HandDriver(p)
    d.request(s.VIRTIO_BLK_T_IN, 0, read_len=512)
    assert p.intx_level()
