"""Guest memory: the bytes the device reaches by DMA.

One contiguous anonymous mapping at bus addresses ``[base, base + size)``.
An anonymous ``mmap`` rather than a ``bytearray``: the kernel hands out zeroed
pages only when they are first touched, so a fresh 64 MiB guest costs nothing
until DMA reaches it (a ``bytearray`` of that size is zero-filled up front,
about 30 ms for every case).

The device's hot path works on ``buf`` directly with ``struct.unpack_from`` /
``pack_into`` at ``addr - base`` after one range check; the methods here are
the convenient (and checked) way for everything else.
"""

from __future__ import annotations

import mmap
import struct

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class DmaError(Exception):
    """A DMA access fell (partly) outside guest memory."""


class GuestMemory:
    __slots__ = ("base", "size", "buf", "view")

    def __init__(self, size: int, base: int = 0):
        if size <= 0 or base < 0:
            raise ValueError(f"bad guest memory geometry: base={base:#x} size={size:#x}")
        self.base = base
        self.size = size
        self.buf = mmap.mmap(-1, size)
        self.view = memoryview(self.buf)

    # ---------------------------------------------------------------- checks
    def offset(self, addr: int, n: int) -> int:
        """Offset into ``buf`` of ``n`` bytes at bus address ``addr``; DmaError if outside."""
        off = addr - self.base
        if off < 0 or n < 0 or off + n > self.size:
            raise DmaError(f"DMA of {n} bytes at {addr:#x} is outside guest memory "
                           f"[{self.base:#x}, {self.base + self.size:#x})")
        return off

    def contains(self, addr: int, n: int) -> bool:
        off = addr - self.base
        return off >= 0 and n >= 0 and off + n <= self.size

    # ---------------------------------------------------------------- access
    def read(self, addr: int, n: int) -> bytes:
        off = addr - self.base  # the range check is inlined: this is on every hot path
        if off < 0 or n < 0 or off + n > self.size:
            self.offset(addr, n)  # raises DmaError with the message
        return self.view[off:off + n].tobytes()

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        off = addr - self.base
        if off < 0 or off + n > self.size:
            self.offset(addr, n)
        self.buf[off:off + n] = data

    def fill(self, addr: int, n: int, byte: int = 0) -> None:
        off = self.offset(addr, n)
        self.buf[off:off + n] = bytes([byte]) * n

    def slice(self, addr: int, n: int) -> memoryview:
        """A zero-copy window (for preadv/pwritev straight into guest memory)."""
        off = self.offset(addr, n)
        return self.view[off:off + n]

    def read_u16(self, addr: int) -> int:
        return _U16.unpack_from(self.buf, self.offset(addr, 2))[0]

    def read_u32(self, addr: int) -> int:
        return _U32.unpack_from(self.buf, self.offset(addr, 4))[0]

    def read_u64(self, addr: int) -> int:
        return _U64.unpack_from(self.buf, self.offset(addr, 8))[0]

    def write_u16(self, addr: int, value: int) -> None:
        _U16.pack_into(self.buf, self.offset(addr, 2), value & 0xFFFF)

    def write_u32(self, addr: int, value: int) -> None:
        _U32.pack_into(self.buf, self.offset(addr, 4), value & 0xFFFFFFFF)

    def write_u64(self, addr: int, value: int) -> None:
        _U64.pack_into(self.buf, self.offset(addr, 8), value & 0xFFFFFFFFFFFFFFFF)

    def read_int(self, addr: int, size: int) -> int:
        """Little-endian unsigned integer of ``size`` bytes (what a Poll reads)."""
        off = self.offset(addr, size)
        return int.from_bytes(self.buf[off:off + size], "little")

    def __repr__(self) -> str:
        return f"GuestMemory(base={self.base:#x}, size={self.size:#x})"
