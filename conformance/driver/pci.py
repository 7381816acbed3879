"""PCI function access: BAR sizing and assignment, capability walk.

Only what a virtio driver needs from PCI: the type-0 header, BARs, and the
capability list (PCI Local Bus 3.0, 6.1 and 6.7).  Where a target's firmware
or kernel already assigned the BARs (a guest), they are reused as they are;
where nothing assigned them (qtest, the reference device), this module sizes
them and places them inside the Platform's ``mmio_window``.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance import spec
from conformance.driver.platform import Platform


class PciError(Exception):
    """The function's configuration space is not what a PCI function must offer."""


@dataclass(frozen=True)
class Bar:
    index: int
    address: int
    size: int
    is_io: bool
    is_64bit: bool
    prefetchable: bool


@dataclass(frozen=True)
class Capability:
    """One entry of the capability list: its offset and raw bytes."""

    offset: int
    cap_id: int
    raw: bytes

    def u8(self, off: int) -> int:
        return self.raw[off]

    def u32(self, off: int) -> int:
        return int.from_bytes(self.raw[off:off + 4], "little")


def read_capabilities(platform: Platform, max_caps: int = 48) -> list[Capability]:
    """Walk the capability list from the Capabilities Pointer (PCI 3.0, 6.7).

    Stops at a zero next pointer; raises :class:`PciError` on a loop or a pointer
    into the standard header, so a broken device cannot hang the walk.
    """
    status = platform.config_read(spec.PCI_STATUS, 2)
    if not status & spec.PCI_STATUS_CAP_LIST:
        return []
    caps: list[Capability] = []
    seen: set[int] = set()
    ptr = platform.config_read(spec.PCI_CAPABILITY_LIST, 1) & 0xFC
    while ptr:
        if ptr < 0x40 or ptr in seen or len(caps) >= max_caps:
            raise PciError(f"capability list is broken at offset {ptr:#x} (loop or bad pointer)")
        seen.add(ptr)
        head = platform.config_read(ptr, 4)
        cap_id = head & 0xFF
        nxt = (head >> 8) & 0xFC
        # Vendor capabilities carry their own length in byte 2 (4.1.4);
        # others are read for 16 bytes which covers MSI-X (12 bytes).
        length = (head >> 16) & 0xFF if cap_id == spec.PCI_CAP_ID_VNDR else 16
        length = max(4, min(length, spec.PCI_CONFIG_SPACE_SIZE - ptr))
        raw = b"".join(
            platform.config_read(ptr + i, 4).to_bytes(4, "little") for i in range(0, length, 4)
        )[:length]
        caps.append(Capability(ptr, cap_id, raw))
        ptr = nxt
    return caps


def _bar_probe(platform: Platform, index: int) -> tuple[int, int, bool, bool, bool]:
    """Size one BAR the standard way; return (address, size, io, 64bit, prefetch).

    Restores the original value(s).  Memory decoding must be off while the BAR
    holds all-ones, which the caller guarantees.
    """
    off = spec.PCI_BASE_ADDRESS_0 + 4 * index
    orig = platform.config_read(off, 4)
    platform.config_write(off, 4, 0xFFFFFFFF)
    mask = platform.config_read(off, 4)
    platform.config_write(off, 4, orig)
    if orig & spec.PCI_BASE_ADDRESS_SPACE_IO:
        size_mask = mask & 0xFFFFFFFC
        size = (~size_mask & 0xFFFF) + 1 if size_mask else 0
        return orig & 0xFFFFFFFC, size, True, False, False
    is_64 = (orig & 0x6) == spec.PCI_BASE_ADDRESS_MEM_TYPE_64
    prefetch = bool(orig & spec.PCI_BASE_ADDRESS_MEM_PREFETCH)
    address = orig & 0xFFFFFFF0
    size_mask = mask & 0xFFFFFFF0
    if is_64:
        orig_hi = platform.config_read(off + 4, 4)
        platform.config_write(off + 4, 4, 0xFFFFFFFF)
        mask_hi = platform.config_read(off + 4, 4)
        platform.config_write(off + 4, 4, orig_hi)
        address |= orig_hi << 32
        full = (mask_hi << 32) | size_mask
        size = ((~full) & 0xFFFFFFFFFFFFFFFF) + 1 if full else 0
    else:
        size = ((~size_mask) & 0xFFFFFFFF) + 1 if size_mask else 0
    return address, size, False, is_64, prefetch


def setup_bars(platform: Platform) -> dict[int, Bar]:
    """Size every BAR, assign unassigned memory BARs, enable decoding and bus mastering.

    Returns the implemented BARs by index.  BARs that already hold an address
    are kept (a guest kernel placed them).
    """
    command = platform.config_read(spec.PCI_COMMAND, 2)
    platform.config_write(
        spec.PCI_COMMAND, 2, command & ~(spec.PCI_COMMAND_MEMORY | spec.PCI_COMMAND_IO)
    )
    bars: dict[int, Bar] = {}
    index = 0
    while index < 6:
        address, size, io, is_64, prefetch = _bar_probe(platform, index)
        if size:
            bars[index] = Bar(index, address, size, io, is_64, prefetch)
        index += 2 if is_64 else 1

    window = platform.mmio_window
    if window is not None:
        cursor = window[0]
        # Largest first keeps natural alignment without holes piling up.
        for bar in sorted(bars.values(), key=lambda b: -b.size):
            if bar.is_io or bar.address:
                continue
            base = (cursor + bar.size - 1) & ~(bar.size - 1)
            if base + bar.size > window[1]:
                raise PciError(f"BAR{bar.index} ({bar.size:#x} bytes) does not fit the MMIO window")
            off = spec.PCI_BASE_ADDRESS_0 + 4 * bar.index
            platform.config_write(off, 4, base & 0xFFFFFFFF)
            if bar.is_64bit:
                platform.config_write(off + 4, 4, base >> 32)
            bars[bar.index] = Bar(bar.index, base, bar.size, False, bar.is_64bit, bar.prefetchable)
            cursor = base + bar.size
    platform.config_write(
        spec.PCI_COMMAND, 2,
        (command | spec.PCI_COMMAND_MEMORY | spec.PCI_COMMAND_MASTER) & ~spec.PCI_COMMAND_IO,
    )
    return bars
