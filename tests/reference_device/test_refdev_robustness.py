"""Whatever a driver does, the device answers without raising (random, seeded)."""

from __future__ import annotations

import random
import struct

import pytest
from refdev_harness import AVAIL, BAR1_ADDR, BAR4_ADDR, DESC, MEM_SIZE, NOTIFY, USED

from conformance import spec
from reference_device import layout as L


@pytest.mark.parametrize("seed", range(6))
def test_random_rings_never_raise(make_harness, seed):
    rnd = random.Random(seed)
    packed = seed % 2 == 1
    h = make_harness()
    h.negotiate(drop=() if packed else (spec.VIRTIO_F_RING_PACKED,))
    h.setup_queue(0, size=8)
    h.driver_ok()
    broken = 0
    for _round in range(200):
        # scribble plausible-looking descriptors, avail entries and indexes
        for i in range(8):
            addr = rnd.choice([0x100000 + 0x1000 * i, rnd.randrange(1 << 64),
                               MEM_SIZE - rnd.randrange(1, 64), DESC])
            length = rnd.choice([0, 1, 16, 17, 512, 4096, 0xFFFFFFFF, rnd.randrange(1 << 32)])
            flags = rnd.randrange(1 << 16) if rnd.random() < 0.2 else rnd.randrange(8)
            if packed and rnd.random() < 0.7:
                flags |= spec.VIRTQ_DESC_F_AVAIL
            last = rnd.randrange(1 << 16)
            h.mem.write(DESC + 16 * i, struct.pack("<QIHH", addr, length, last if packed
                                                   else flags, flags if packed else last % 10))
        for k in range(8):
            h.mem.write_u16(AVAIL + 4 + 2 * k, rnd.randrange(10))
        h.mem.write_u16(AVAIL + 2, rnd.randrange(1 << 16) if rnd.random() < 0.1
                        else h.dev.queue(0).last_avail + rnd.randrange(4))
        h.mem.write(0x100000, struct.pack("<IIQ", rnd.choice([0, 1, 4, 8, 10, 11, 13, 14, 99]),
                                          0, rnd.randrange(40000)))
        assert h.dev.mmio_write(NOTIFY, 2, 0) is True
        if h.status() & spec.STATUS_DEVICE_NEEDS_RESET:
            broken += 1
            h.negotiate(drop=() if packed else (spec.VIRTIO_F_RING_PACKED,))
            h.mem.write(AVAIL, bytes(0x100))
            h.mem.write(USED, bytes(0x100))
            h.setup_queue(0, size=8)
            h.driver_ok()
    assert broken > 0  # the random rings did hit the error paths
    assert h.dev.internal_errors == []


def test_random_register_traffic_never_raises(make_harness):
    rnd = random.Random(1234)
    h = make_harness()
    dev = h.dev
    targets = [BAR4_ADDR + rnd.randrange(L.VIRTIO_BAR_SIZE) for _ in range(50)]
    targets += [BAR4_ADDR + off for off in range(0, spec.COMMON_CFG_SIZE, 2)]
    targets += [BAR1_ADDR + rnd.randrange(L.MSIX_BAR_SIZE) for _ in range(20)]
    for _ in range(5000):
        size = rnd.choice([1, 2, 4, 8])
        value = rnd.randrange(1 << (8 * size))
        op = rnd.random()
        if op < 0.45:
            dev.mmio_write(rnd.choice(targets), size, value)
        elif op < 0.8:
            dev.mmio_read(rnd.choice(targets), size)
        elif op < 0.9:
            off = rnd.randrange(0x40, 0x100)
            if off not in range(spec.PCI_BASE_ADDRESS_0, spec.PCI_BASE_ADDRESS_0 + 24):
                dev.config_write(off, rnd.choice([1, 2, 4]), value & 0xFFFFFFFF)
        else:
            dev.config_read(rnd.randrange(0x100), rnd.choice([1, 2, 4]))
        if rnd.random() < 0.01:
            dev.resize(rnd.randrange(1, 1 << 20))
    assert dev.internal_errors == []
