"""DMA memory for the device: hugetlb pages whose physical addresses the agent knows.

The guest has no IOMMU in front of the device, so a bus address is a guest
physical address.  A 2 MiB hugetlb page is physically contiguous and stays
where it is (hugetlb pages are never swapped), and ``/proc/self/pagemap``
tells its page frame number (to root only: others read zeros).  The kernel
hands out boot-time hugepages in no particular physical order (descending on
Debian's 6.1 kernel), so every page is mapped on its own and the pages are
sorted by physical address; an allocation must fit in a run of physically
consecutive pages.

:class:`PlainMemory` is ordinary anonymous memory with made-up bus addresses,
for tests of the protocol where no device does DMA.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from .devices import AgentError

HUGE_PAGE = 2 << 20
SMALL_PAGE = 4096
MAP_HUGETLB = getattr(mmap, "MAP_HUGETLB", 0x40000)
PFN_MASK = (1 << 55) - 1
PAGE_PRESENT = 1 << 63


def hugepages_free(proc: str = "/proc") -> int:
    try:
        with open(os.path.join(proc, "meminfo")) as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class DmaMemory:
    """Pages by physical page number, and a bump allocator over contiguous runs."""

    page_size = HUGE_PAGE

    def __init__(self) -> None:
        self.pages: dict[int, memoryview] = {}  # physical page number -> page
        self.runs: list[tuple[int, int]] = []  # (start, end) bus addresses, sorted
        self._cursor: list[int] = []  # next free address in each run

    def _set_pages(self, pages: dict[int, memoryview]) -> None:
        self.pages = pages
        runs: list[list[int]] = []
        for pfn in sorted(pages):
            if runs and runs[-1][1] == pfn * self.page_size:
                runs[-1][1] += self.page_size
            else:
                runs.append([pfn * self.page_size, (pfn + 1) * self.page_size])
        self.runs = [(a, b) for a, b in runs]
        self.rewind()

    def rewind(self) -> None:
        """Forget every allocation (between cases: the device was reset first)."""
        self._cursor = [a for a, _ in self.runs]

    def alloc(self, size: int, align: int) -> int:
        if size <= 0 or align <= 0 or align & (align - 1):
            raise AgentError("bad-request", f"dma_alloc({size}, {align}): size must be positive "
                                            "and align a power of two")
        for i, (_, end) in enumerate(self.runs):
            addr = (self._cursor[i] + align - 1) & ~(align - 1)
            if addr + size <= end:
                self._cursor[i] = addr + size
                return addr
        largest = max((b - a for a, b in self.runs), default=0)
        raise AgentError("dma", f"cannot fit {size} bytes of DMA memory: {len(self.pages)} "
                                f"page(s) of {self.page_size >> 10} KiB, largest physically "
                                f"contiguous run {largest >> 20} MiB (more hugepages help)")

    def _page(self, addr: int) -> tuple[memoryview, int]:
        page = self.pages.get(addr // self.page_size)
        if page is None:
            raise AgentError("bad-op", f"address {addr:#x} is not DMA memory this agent owns")
        return page, addr % self.page_size

    def read(self, addr: int, n: int) -> bytes:
        page, off = self._page(addr)
        if off + n <= self.page_size:
            return page[off:off + n].tobytes()
        out = bytearray()
        while n:
            page, off = self._page(addr)
            k = min(n, self.page_size - off)
            out += page[off:off + k]
            addr += k
            n -= k
        return bytes(out)

    def write(self, addr: int, data) -> None:
        n = len(data)
        page, off = self._page(addr)
        if off + n <= self.page_size:
            page[off:off + n] = data
            return
        pos = 0
        while pos < n:
            page, off = self._page(addr + pos)
            k = min(n - pos, self.page_size - off)
            page[off:off + k] = data[pos:pos + k]
            pos += k

    def value(self, addr: int, size: int) -> int:
        """A little-endian field of ``size`` bytes (a poll re-reads it each time)."""
        page, off = self._page(addr)
        if off + size <= self.page_size:
            return int.from_bytes(page[off:off + size], "little")
        return int.from_bytes(self.read(addr, size), "little")

    def describe(self) -> dict:
        return {"pages": len(self.pages), "page_kib": self.page_size >> 10,
                "runs": [[hex(a), (b - a) >> 20] for a, b in self.runs]}


class HugeMemory(DmaMemory):
    """``count`` hugetlb pages, mapped one by one, physical addresses from pagemap."""

    def __init__(self, count: int, proc: str = "/proc"):
        super().__init__()
        free = hugepages_free(proc)
        if free <= 0:
            raise AgentError("no-hugepages", "no free 2 MiB hugepages (HugePages_Free is 0 in "
                                             f"{proc}/meminfo): boot the guest with hugepages=16 "
                                             "or write 16 to /proc/sys/vm/nr_hugepages")
        count = min(count, free)
        self._maps: list[mmap.mmap] = []
        pages: dict[int, memoryview] = {}
        try:
            pagemap = os.open(os.path.join(proc, "self", "pagemap"), os.O_RDONLY)
        except OSError as exc:
            raise AgentError("sysfs", f"cannot open {proc}/self/pagemap: {exc.strerror}") from None
        try:
            for _ in range(count):
                try:
                    m = mmap.mmap(-1, HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                  | MAP_HUGETLB, prot=mmap.PROT_READ | mmap.PROT_WRITE)
                except OSError as exc:
                    if not self._maps:
                        raise AgentError("no-hugepages", f"cannot map a hugetlb page: "
                                                         f"{exc.strerror}") from None
                    break
                m[0] = 0  # fault the page in so pagemap knows it
                virt = ctypes.addressof(ctypes.c_char.from_buffer(m))
                entry = struct.unpack("<Q", os.pread(pagemap, 8, (virt // SMALL_PAGE) * 8))[0]
                pfn = entry & PFN_MASK
                if not entry & PAGE_PRESENT or pfn == 0:
                    raise AgentError("not-root", "/proc/self/pagemap shows no physical address "
                                                 "(it needs root / CAP_SYS_ADMIN)")
                self._maps.append(m)
                pages[pfn * SMALL_PAGE // HUGE_PAGE] = memoryview(m)
        finally:
            os.close(pagemap)
        self._set_pages(pages)


class PlainMemory(DmaMemory):
    """Anonymous memory at a made-up bus address: protocol tests without a device."""

    page_size = HUGE_PAGE

    def __init__(self, count: int = 4, base: int = 0x4000_0000):
        super().__init__()
        self._map = mmap.mmap(-1, count * HUGE_PAGE)
        view = memoryview(self._map)
        first = base // HUGE_PAGE
        self._set_pages({first + i: view[i * HUGE_PAGE:(i + 1) * HUGE_PAGE] for i in range(count)})
