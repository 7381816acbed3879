"""Small helpers for driving the reference device by hand in unit tests.

Deliberately minimal: a proper driver lives in conformance/driver/.  These
helpers program BARs, negotiate features and place hand-built rings in memory.
"""

from __future__ import annotations

import struct

from conformance import spec
from reference_device import DeviceConfig, GuestMemory, VirtioBlkPci
from reference_device import layout as L

MEM_SIZE = 4 << 20
BAR1_ADDR = 0xE000_0000
BAR4_ADDR = 0x8_0000_0000  # above 4 GiB: exercises the high half of the 64-bit BAR
COMMON = BAR4_ADDR + L.COMMON_OFFSET
ISR = BAR4_ADDR + L.ISR_OFFSET
DEVCFG = BAR4_ADDR + L.DEVICE_OFFSET
NOTIFY = BAR4_ADDR + L.NOTIFY_OFFSET

# fixed places in guest memory used by the ring helpers
DESC = 0x10000
AVAIL = 0x20000
USED = 0x30000
DATA = 0x100000
MSI_ADDR = 0x3F0000


class Harness:
    """A device plus just enough driver-side plumbing to poke it."""

    def __init__(self, dev: VirtioBlkPci, mem: GuestMemory):
        self.dev = dev
        self.mem = mem

    # --- PCI
    def map_bars(self, command: int = spec.PCI_COMMAND_MEMORY | spec.PCI_COMMAND_MASTER
                 ) -> None:
        d = self.dev
        d.config_write(spec.PCI_BASE_ADDRESS_0 + 4 * L.MSIX_BAR, 4, BAR1_ADDR)
        d.config_write(spec.PCI_BASE_ADDRESS_0 + 4 * L.VIRTIO_BAR, 4, BAR4_ADDR & 0xFFFFFFFF)
        d.config_write(spec.PCI_BASE_ADDRESS_0 + 4 * L.VIRTIO_BAR + 4, 4, BAR4_ADDR >> 32)
        d.config_write(spec.PCI_COMMAND, 2, command)

    # --- common cfg
    def cw(self, off: int, size: int, value: int) -> None:
        assert self.dev.mmio_write(COMMON + off, size, value)

    def cr(self, off: int, size: int) -> int:
        v = self.dev.mmio_read(COMMON + off, size)
        assert v is not None
        return v

    def status(self) -> int:
        return self.cr(spec.COMMON_STATUS, 1)

    def set_status(self, value: int) -> None:
        self.cw(spec.COMMON_STATUS, 1, value)

    def write_features(self, features: int) -> None:
        for sel in range(2):
            self.cw(spec.COMMON_GFSELECT, 4, sel)
            self.cw(spec.COMMON_GF, 4, features >> (32 * sel) & 0xFFFFFFFF)

    def device_features(self) -> int:
        value = 0
        for sel in range(2):
            self.cw(spec.COMMON_DFSELECT, 4, sel)
            value |= self.cr(spec.COMMON_DF, 4) << (32 * sel)
        return value

    def negotiate(self, features: int | None = None, *, drop: tuple[int, ...] = ()) -> int:
        """Reset, ACK, DRIVER, features (default: all offered minus ``drop``), FEATURES_OK."""
        self.set_status(0)
        self.set_status(spec.STATUS_ACKNOWLEDGE)
        self.set_status(spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER)
        if features is None:
            features = self.device_features()
            for bit in drop:
                features &= ~(1 << bit)
        self.write_features(features)
        self.set_status(spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER | spec.STATUS_FEATURES_OK)
        assert self.status() & spec.STATUS_FEATURES_OK
        return features

    def setup_queue(self, index: int = 0, size: int = 8, desc: int = DESC, driver: int = AVAIL,
                    device: int = USED, vector: int | None = None) -> None:
        self.cw(spec.COMMON_Q_SELECT, 2, index)
        self.cw(spec.COMMON_Q_SIZE, 2, size)
        for off, addr in ((spec.COMMON_Q_DESCLO, desc), (spec.COMMON_Q_AVAILLO, driver),
                          (spec.COMMON_Q_USEDLO, device)):
            self.cw(off, 4, addr & 0xFFFFFFFF)
            self.cw(off + 4, 4, addr >> 32)
        if vector is not None:
            self.cw(spec.COMMON_Q_MSIX, 2, vector)
        self.cw(spec.COMMON_Q_ENABLE, 2, 1)

    def driver_ok(self) -> None:
        self.set_status(self.status() | spec.STATUS_DRIVER_OK)

    def notify(self, queue: int = 0, value: int | None = None, size: int = 2) -> None:
        mult = self.dev.cfg.notify_off_multiplier
        assert self.dev.mmio_write(NOTIFY + queue * mult, size,
                                   queue if value is None else value)

    # --- MSI-X
    def msix_entry(self, vector: int, addr: int, data: int, masked: bool = False) -> None:
        base = BAR1_ADDR + 16 * vector
        self.dev.mmio_write(base, 4, addr & 0xFFFFFFFF)
        self.dev.mmio_write(base + 4, 4, addr >> 32)
        self.dev.mmio_write(base + 8, 4, data)
        self.dev.mmio_write(base + 12, 4, int(masked))

    def msix_enable(self, function_mask: bool = False) -> None:
        ctrl = spec.MSIX_CTRL_ENABLE | (spec.MSIX_CTRL_FUNCTION_MASK if function_mask else 0)
        self.dev.config_write(L.CAP_MSIX + spec.MSIX_CTRL, 2, ctrl)

    # --- split ring, by hand
    def desc(self, i: int, addr: int, length: int, flags: int = 0, nxt: int = 0,
             table: int = DESC) -> None:
        self.mem.write(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def publish(self, *heads: int, size: int = 8) -> None:
        """Append heads to the split avail ring and bump its idx."""
        idx = self.mem.read_u16(AVAIL + 2)
        for h in heads:
            self.mem.write_u16(AVAIL + 4 + 2 * (idx % size), h)
            idx = (idx + 1) & 0xFFFF
        self.mem.write_u16(AVAIL + 2, idx)

    def used_elem(self, n: int, size: int = 8) -> tuple[int, int]:
        return struct.unpack("<II", self.mem.read(USED + 4 + 8 * (n % size), 8))

    def used_idx(self) -> int:
        return self.mem.read_u16(USED + 2)

    def request(self, rtype: int, sector: int, data: bytes = b"", data_in: int = 0,
                base: int = DATA) -> int:
        """Three-descriptor request (header / data / status) at descriptor 0; returns
        the guest address of the status byte.  ``data`` goes out, ``data_in`` comes in."""
        hdr, buf, st = base, base + 0x100, base + 0x100 + max(len(data), data_in) + 0x10
        self.mem.write(hdr, struct.pack("<IIQ", rtype, 0, sector))
        self.mem.write(st, b"\xee")
        n = 0
        if data or data_in:
            self.mem.write(buf, data if data else b"\xcc" * data_in)
            flags = spec.VIRTQ_DESC_F_NEXT | (spec.VIRTQ_DESC_F_WRITE if data_in else 0)
            self.desc(0, hdr, 16, spec.VIRTQ_DESC_F_NEXT, 1)
            self.desc(1, buf, len(data) or data_in, flags, 2)
            n = 2
        else:
            self.desc(0, hdr, 16, spec.VIRTQ_DESC_F_NEXT, 1)
            n = 1
        self.desc(n, st, 1, spec.VIRTQ_DESC_F_WRITE)
        return st


def make_device(mapping: dict | None = None, mem_size: int = MEM_SIZE
                ) -> tuple[VirtioBlkPci, GuestMemory]:
    mem = GuestMemory(size=mem_size)
    cfg = DeviceConfig.from_mapping(mapping or {}, where="test")
    return VirtioBlkPci(cfg, memory=mem), mem
