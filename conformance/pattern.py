"""The known content of a backing file the suite creates.

Every 512-byte sector holds 64 little-endian 64-bit words ``lba << 8 | word``.
A read that returns the wrong sector, or the right sector shifted by any
multiple of 8 bytes, shows up as a mismatch that names where it came from.
"""

from __future__ import annotations

import struct

from conformance.spec import SECTOR_SIZE

_WORDS = SECTOR_SIZE // 8
_PACK = struct.Struct(f"<{_WORDS}Q")


def sector_pattern(lba: int) -> bytes:
    base = lba << 8
    return _PACK.pack(*range(base, base + _WORDS))


def pattern(first_lba: int, count: int) -> bytes:
    return b"".join(sector_pattern(lba) for lba in range(first_lba, first_lba + count))


def write_pattern_file(path, size: int, chunk_sectors: int = 2048) -> None:
    """Create ``path`` with ``size`` bytes (a multiple of 512) of the sector pattern."""
    if size % SECTOR_SIZE:
        raise ValueError(f"backing size {size} is not a multiple of {SECTOR_SIZE}")
    sectors = size // SECTOR_SIZE
    with open(path, "wb") as f:
        for first in range(0, sectors, chunk_sectors):
            f.write(pattern(first, min(chunk_sectors, sectors - first)))


def describe_mismatch(expected: bytes, actual: bytes, base_offset: int = 0) -> str:
    """One line saying where two buffers first differ and what was found there."""
    if len(expected) != len(actual):
        return f"length {len(actual)} instead of {len(expected)}"
    for i, (a, b) in enumerate(zip(expected, actual)):
        if a != b:
            off = base_offset + i
            word = actual[i - i % 8:i - i % 8 + 8]
            hint = ""
            if len(word) == 8:
                v = int.from_bytes(word, "little")
                hint = f" (found pattern word of LBA {v >> 8}, word {v & 0xFF})"
            return (f"first difference at byte {off} (sector {off // SECTOR_SIZE} + "
                    f"{off % SECTOR_SIZE}): expected {a:#04x}, got {b:#04x}{hint}")
    return "equal"
