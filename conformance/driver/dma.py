"""A driver-side allocator over one region of the Platform's DMA memory.

Platforms only hand out memory (``dma_alloc`` never frees); the driver takes
one large region per device and recycles buffers inside it.
"""

from __future__ import annotations

import bisect


class DmaExhausted(Exception):
    pass


class DmaPool:
    """First-fit allocator with coalescing free list; addresses are bus addresses."""

    def __init__(self, base: int, size: int):
        self.base = base
        self.size = size
        self._free: list[tuple[int, int]] = [(base, size)]  # sorted (addr, length)
        self._used: dict[int, tuple[int, int]] = {}  # addr -> (block start, block length)

    def alloc(self, n: int, align: int = 16) -> int:
        n = max(n, 1)
        for i, (start, length) in enumerate(self._free):
            addr = (start + align - 1) & ~(align - 1)
            end = addr + n
            if end <= start + length:
                del self._free[i]
                if end < start + length:
                    self._free.insert(i, (end, start + length - end))
                self._used[addr] = (start, end - start)
                return addr
        raise DmaExhausted(f"DMA pool of {self.size} bytes cannot fit {n} bytes")

    def free(self, addr: int) -> None:
        start, length = self._used.pop(addr)
        i = bisect.bisect(self._free, (start, 0))
        self._free.insert(i, (start, length))
        # coalesce with the neighbours
        if i + 1 < len(self._free) and start + length == self._free[i + 1][0]:
            self._free[i] = (start, length + self._free[i + 1][1])
            del self._free[i + 1]
        if i > 0 and self._free[i - 1][0] + self._free[i - 1][1] == self._free[i][0]:
            self._free[i - 1] = (self._free[i - 1][0], self._free[i - 1][1] + self._free[i][1])
            del self._free[i]

    def free_bytes(self) -> int:
        return sum(length for _, length in self._free)
