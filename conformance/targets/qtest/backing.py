"""The backing file the qtest target creates, and its deterministic content.

Each 512-byte sector (VIRTIO 1.2, 5.2.6: sectors are always 512 bytes) holds
64 little-endian 64-bit words ``lba << 8 | word_index``, so a read of the
wrong sector, or of the right one shifted by a multiple of 8 bytes, shows up
as a mismatch that names where the data came from.  ``sector_pattern`` will
move to a module shared with the other targets later; it is defined the same
way as the suite's shared pattern so that move changes no data.
"""

from __future__ import annotations

import array
import functools
import os
import struct
import sys

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


@functools.lru_cache(maxsize=2)
def pattern_image(size: int) -> bytes:
    """The whole initial disk of ``size`` bytes, built once per size.

    Restoring the disk between cases rewrites it; building 16 MiB of pattern
    sector by sector took longer than resetting QEMU.
    """
    if size <= 0 or size % SECTOR:
        raise ValueError(f"disk size {size} is not a positive multiple of {SECTOR}")
    words = array.array("Q")
    for lba in range(size // SECTOR):
        base = lba << 8
        words.extend(range(base, base + _WORDS))
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()


def create_pattern_file(path: str, size: int, *, truncate: bool = True) -> None:
    """Write a raw image of ``size`` bytes filled with :func:`sector_pattern`.

    With ``truncate=False`` an existing file is overwritten in place (same
    inode), as needed while QEMU has it open.
    """
    image = pattern_image(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0), 0o644)
    try:
        done = 0
        while done < size:
            done += os.pwrite(fd, memoryview(image)[done:], done)
    finally:
        os.close(fd)
