"""The backing file the qtest target creates, and its deterministic content.

Each 512-byte sector (VIRTIO 1.2, 5.2.6: sectors are always 512 bytes) holds
64 little-endian 64-bit words ``lba << 8 | word_index``, so a read of the
wrong sector, or of the right one shifted by a multiple of 8 bytes, shows up
as a mismatch that names where the data came from.  ``sector_pattern`` will
move to a module shared with the other targets later; it is defined the same
way as the suite's shared pattern so that move changes no data.
"""

from __future__ import annotations

import struct

SECTOR = 512
_WORDS = SECTOR // 8
_PACK = struct.Struct(f"<{_WORDS}Q")


def sector_pattern(lba: int) -> bytes:
    """The 512 bytes initially stored in sector ``lba``."""
    if lba < 0:
        raise ValueError(f"negative LBA {lba}")
    base = lba << 8
    return _PACK.pack(*range(base, base + _WORDS))


def pattern_bytes(offset: int, n: int) -> bytes:
    """The initial content of bytes ``[offset, offset + n)`` of the disk."""
    first = offset // SECTOR
    last = (offset + n + SECTOR - 1) // SECTOR
    data = b"".join(sector_pattern(lba) for lba in range(first, last))
    start = offset - first * SECTOR
    return data[start:start + n]


def create_pattern_file(path: str, size: int, *, truncate: bool = True) -> None:
    """Write a raw image of ``size`` bytes filled with :func:`sector_pattern`.

    With ``truncate=False`` an existing file is overwritten in place (same
    inode), as needed while QEMU has it open.
    """
    if size <= 0 or size % SECTOR:
        raise ValueError(f"disk size {size} is not a positive multiple of {SECTOR}")
    chunk_sectors = 2048  # 1 MiB per write keeps memory flat for big disks
    sectors = size // SECTOR
    with open(path, "wb" if truncate else "r+b") as f:
        for first in range(0, sectors, chunk_sectors):
            last = min(first + chunk_sectors, sectors)
            f.write(b"".join(sector_pattern(lba) for lba in range(first, last)))
