"""PCI configuration access and BAR decoding over x86 port I/O.

Configuration mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2): write an address to
0xCF8, then access the data window 0xCFC..0xCFF.  It reaches the first 256
bytes of every function on both QEMU machines (i440fx ``pc`` and ``q35``)
without any firmware set-up, unlike q35's MMCONFIG, whose PCIEXBAR the
firmware would have to program first.
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIG_ADDRESS = 0xCF8
CONFIG_DATA = 0xCFC
CONFIG_ENABLE = 1 << 31

BAR_FIRST = 0x10
BAR_END = 0x28  # six dwords of BAR registers in a type-0 header
COMMAND_REG = (0x04, 0x06)


def config_address(bus: int, slot: int, fn: int, off: int) -> int:
    """The dword written to 0xCF8 to reach ``off`` of bus:slot.fn."""
    return CONFIG_ENABLE | bus << 16 | slot << 11 | fn << 8 | (off & 0xFC)


def check_config_access(off: int, size: int) -> None:
    if size not in (1, 2, 4):
        raise ValueError(f"config access of size {size} (must be 1, 2 or 4)")
    if off < 0 or off + size > 256:
        raise ValueError(f"config offset {off:#x} outside the 256-byte space CF8/CFC reaches")
    if (off & 3) + size > 4:
        raise ValueError(f"config access {off:#x}/{size} crosses a dword boundary")


def touches_bar_decoding(off: int, size: int) -> bool:
    """Whether a config write may change where (or whether) BARs decode."""
    end = off + size
    return (off < BAR_END and end > BAR_FIRST) or (off < COMMAND_REG[1] and end > COMMAND_REG[0])


@dataclass(frozen=True)
class BarInfo:
    base: int
    io: bool
    is64: bool


def decode_bar(lo: int, hi: int) -> BarInfo:
    """Decode a BAR register (and the next one, for 64-bit memory BARs)."""
    if lo & 1:  # I/O space BAR: bits 31..2 are the port address
        return BarInfo(lo & ~0x3 & 0xFFFFFFFF, True, False)
    is64 = (lo >> 1) & 3 == 2
    base = lo & ~0xF & 0xFFFFFFFF
    if is64:
        base |= hi << 32
    return BarInfo(base, False, is64)
