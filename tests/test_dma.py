"""The driver's DMA pool: alignment, reuse, coalescing, exhaustion."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.driver.dma import DmaExhausted, DmaPool


def test_alignment_and_reuse():
    pool = DmaPool(0x1000, 0x1000)
    a = pool.alloc(10, 16)
    b = pool.alloc(100, 256)
    assert a == 0x1000 and b == 0x1100
    pool.free(a)
    assert pool.alloc(8, 16) == 0x1000


def test_exhaustion_names_sizes():
    pool = DmaPool(0, 64)
    pool.alloc(64)
    with pytest.raises(DmaExhausted, match="64 bytes cannot fit 1 bytes"):
        pool.alloc(1)


@given(st.lists(st.tuples(st.integers(1, 300), st.sampled_from([1, 16, 64])), max_size=40))
def test_freeing_everything_restores_one_block(reqs):
    pool = DmaPool(0x10000, 1 << 16)
    addrs = []
    for n, align in reqs:
        addr = pool.alloc(n, align)
        assert addr % align == 0
        assert all(not (a <= addr < a + m or addr <= a < addr + n) for a, m in addrs)
        addrs.append((addr, n))
    for addr, _ in reversed(addrs[::2]):
        pool.free(addr)
    for addr, _ in addrs[1::2]:
        pool.free(addr)
    assert pool._free == [(0x10000, 1 << 16)]
