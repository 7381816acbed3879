"""A PCI type-0 configuration space: header, BARs and the capability list.

Generic PCI only (PCI Local Bus 3.0, 6.1-6.2, 6.7-6.8); what the capabilities
contain is decided by the device (``device.py``).  Virtio-specific structures
are built with the helpers at the bottom (4.1.4 Virtio Structure PCI
Capabilities).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from conformance import spec


@dataclass(frozen=True, slots=True)
class BarSpec:
    """A memory BAR: ``size`` a power of two; a 64-bit BAR also takes ``index + 1``."""

    index: int
    size: int
    is64: bool = False
    prefetch: bool = False

    @property
    def flag_bits(self) -> int:
        bits = spec.PCI_BASE_ADDRESS_MEM_TYPE_64 if self.is64 else 0
        if self.prefetch:
            bits |= spec.PCI_BASE_ADDRESS_MEM_PREFETCH
        return bits


@dataclass(frozen=True, slots=True)
class PciIds:
    vendor: int
    device: int
    revision: int
    class_code: int  # 24 bits: base class, subclass, programming interface
    subsystem_vendor: int
    subsystem: int
    interrupt_pin: int = spec.PCI_INTERRUPT_PIN_INTA


# Command bits a driver can change; I/O space stays 0 (there is no I/O BAR).
COMMAND_WRITABLE = (spec.PCI_COMMAND_MEMORY | spec.PCI_COMMAND_MASTER
                    | spec.PCI_COMMAND_PARITY | spec.PCI_COMMAND_SERR
                    | spec.PCI_COMMAND_INTX_DISABLE)


class PciConfigSpace:
    """256 bytes of configuration space plus the programmed BAR addresses."""

    def __init__(self, ids: PciIds, bars: list[BarSpec]):
        self.data = bytearray(spec.PCI_CONFIG_SPACE_SIZE)
        self.wmask = bytearray(spec.PCI_CONFIG_SPACE_SIZE)  # plain read-write bits
        d = self.data
        struct.pack_into("<HH", d, spec.PCI_VENDOR_ID, ids.vendor, ids.device)
        struct.pack_into("<I", d, spec.PCI_REVISION_ID,
                         (ids.class_code << 8) | ids.revision)
        d[spec.PCI_HEADER_TYPE] = spec.PCI_HEADER_TYPE_NORMAL
        struct.pack_into("<HH", d, spec.PCI_SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor,
                         ids.subsystem)
        d[spec.PCI_INTERRUPT_PIN] = ids.interrupt_pin
        struct.pack_into("<H", self.wmask, spec.PCI_COMMAND, COMMAND_WRITABLE)
        self.wmask[spec.PCI_CACHE_LINE_SIZE] = 0xFF
        self.wmask[spec.PCI_LATENCY_TIMER] = 0xFF
        self.wmask[spec.PCI_INTERRUPT_LINE] = 0xFF
        self.bars: dict[int, BarSpec] = {b.index: b for b in bars}
        self.bar_addr: dict[int, int] = {b.index: 0 for b in bars}
        # which dword belongs to which BAR: reg index -> (bar spec, is the high half)
        self._bar_regs: dict[int, tuple[BarSpec, bool]] = {}
        for b in bars:
            self._bar_regs[b.index] = (b, False)
            if b.is64:
                self._bar_regs[b.index + 1] = (b, True)
        self._windows: list[tuple[int, int, int]] = []  # (start, end, bar) when decoding

    # --------------------------------------------------------------- header
    @property
    def command(self) -> int:
        return self.data[spec.PCI_COMMAND] | self.data[spec.PCI_COMMAND + 1] << 8

    def set_status_bits(self, bits: int, on: bool) -> None:
        """Device-owned status bits (e.g. Interrupt Status, 0x08)."""
        v = self.data[spec.PCI_STATUS]
        self.data[spec.PCI_STATUS] = (v | bits) if on else (v & ~bits)

    # ----------------------------------------------------------- raw access
    def read(self, off: int, size: int) -> int:
        value = 0
        for i in range(size):
            value |= self._read_byte(off + i) << (8 * i)
        return value

    def _read_byte(self, off: int) -> int:
        if not 0 <= off < spec.PCI_CONFIG_SPACE_SIZE:
            return 0xFF  # outside the function's space: nothing answers
        reg = (off - spec.PCI_BASE_ADDRESS_0) >> 2
        if spec.PCI_BASE_ADDRESS_0 <= off < spec.PCI_BASE_ADDRESS_0 + 24:
            return self._bar_dword(reg) >> (8 * (off & 3)) & 0xFF
        return self.data[off]

    def write(self, off: int, size: int, value: int) -> None:
        """Write through the writable-bit mask; BAR registers are handled specially."""
        for i in range(size):
            o = off + i
            b = value >> (8 * i) & 0xFF
            if not 0 <= o < spec.PCI_CONFIG_SPACE_SIZE:
                continue
            if spec.PCI_BASE_ADDRESS_0 <= o < spec.PCI_BASE_ADDRESS_0 + 24:
                reg = (o - spec.PCI_BASE_ADDRESS_0) >> 2
                shift = 8 * (o & 3)
                cur = self._bar_dword(reg)
                self._write_bar_dword(reg, (cur & ~(0xFF << shift)) | (b << shift))
                continue
            m = self.wmask[o]
            self.data[o] = (self.data[o] & ~m) | (b & m)
        self._recompute_windows()

    # ----------------------------------------------------------------- BARs
    def _bar_dword(self, reg: int) -> int:
        entry = self._bar_regs.get(reg)
        if entry is None:
            return 0  # unimplemented BAR: reads 0, ignores writes
        bar, high = entry
        addr = self.bar_addr[bar.index]
        if high:
            return addr >> 32 & 0xFFFFFFFF
        return (addr & 0xFFFFFFFF & spec.PCI_BASE_ADDRESS_MEM_MASK) | bar.flag_bits

    def _write_bar_dword(self, reg: int, value: int) -> None:
        entry = self._bar_regs.get(reg)
        if entry is None:
            return
        bar, high = entry
        addr = self.bar_addr[bar.index]
        if high:
            addr = (addr & 0xFFFFFFFF) | (value & 0xFFFFFFFF) << 32
        else:
            # the low bits below the BAR size are hard-wired to zero: that is how
            # software sizes a BAR (write all-ones, read back the mask)
            low = value & spec.PCI_BASE_ADDRESS_MEM_MASK & ~(bar.size - 1) & 0xFFFFFFFF
            addr = (addr & ~0xFFFFFFFF) | low
        self.bar_addr[bar.index] = addr

    def bar_address(self, index: int) -> int | None:
        """Programmed base of BAR ``index`` (None if not implemented or still 0)."""
        addr = self.bar_addr.get(index)
        return addr or None

    def _recompute_windows(self) -> None:
        if not self.command & spec.PCI_COMMAND_MEMORY:
            self._windows = []
            return
        self._windows = [(a, a + self.bars[i].size, i)
                         for i, a in self.bar_addr.items() if a]

    def decode(self, addr: int) -> tuple[int, int] | None:
        """``(bar, offset)`` of a memory address, or None if no BAR claims it."""
        for start, end, index in self._windows:
            if start <= addr < end:
                return index, addr - start
        return None


# ----------------------------------------------------------- capability bytes
def virtio_cap(cfg_type: int, bar: int, offset: int, length: int,
               extra: bytes = b"") -> bytearray:
    """struct virtio_pci_cap (4.1.4) followed by ``extra``; cap_next is filled later."""
    cap = bytearray(spec.VIRTIO_PCI_CAP_SIZE) + bytearray(extra)
    cap[spec.CAP_VNDR] = spec.PCI_CAP_ID_VNDR
    cap[spec.CAP_LEN] = len(cap)
    cap[spec.CAP_CFG_TYPE] = cfg_type
    cap[spec.CAP_BAR] = bar
    struct.pack_into("<II", cap, spec.CAP_OFFSET, offset, length)
    return cap


def msix_cap(table_size: int, bir: int, table_off: int, pba_off: int) -> bytearray:
    """The MSI-X capability (PCI Local Bus 3.0, 6.8.2); Table Size is N - 1."""
    cap = bytearray(spec.MSIX_CAP_SIZE)
    cap[0] = spec.PCI_CAP_ID_MSIX
    struct.pack_into("<HII", cap, spec.MSIX_CTRL, (table_size - 1) & 0x7FF,
                     table_off | bir, pba_off | bir)
    return cap


def install_caps(space: PciConfigSpace, caps: list[tuple[int, bytearray]]) -> None:
    """Place capabilities at their offsets and chain them in list order from 0x34."""
    d = space.data
    for off, body in caps:
        if off % 4 or off < spec.PCI_CAP_LIST_START or off + len(body) > len(d):
            raise ValueError(f"capability at {off:#x} (+{len(body)}) does not fit")
        d[off:off + len(body)] = body
    for i, (off, _body) in enumerate(caps):
        d[off + spec.CAP_NEXT] = caps[i + 1][0] if i + 1 < len(caps) else 0
    d[spec.PCI_CAPABILITY_LIST] = caps[0][0] if caps else 0
    space.set_status_bits(spec.PCI_STATUS_CAP_LIST, bool(caps))
