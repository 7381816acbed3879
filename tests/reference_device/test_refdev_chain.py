"""The chain walkers on hand-built descriptor tables (pure functions)."""

from __future__ import annotations

import struct

import pytest

from conformance import spec
from reference_device import ChainError, GuestMemory
from reference_device.chain import packed_desc_is_avail, walk_packed, walk_split
from reference_device.packed_ring import event_due
from reference_device.split_ring import event_crossed

NEXT = spec.VIRTQ_DESC_F_NEXT
WRITE = spec.VIRTQ_DESC_F_WRITE
INDIRECT = spec.VIRTQ_DESC_F_INDIRECT
AVAIL = spec.VIRTQ_DESC_F_AVAIL
USED = spec.VIRTQ_DESC_F_USED
TABLE = 0x1000
ITABLE = 0x2000


@pytest.fixture
def mem():
    return GuestMemory(size=0x10000)


def sdesc(mem, i, addr, length, flags=0, nxt=0, table=TABLE):
    mem.write(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))


def test_split_simple_chain(mem):
    sdesc(mem, 3, 0x4000, 16, NEXT, 5)
    sdesc(mem, 5, 0x5000, 512, NEXT | WRITE, 0)
    sdesc(mem, 0, 0x6000, 1, WRITE)
    assert walk_split(mem, TABLE, 8, 3, False) == ([(0x4000, 16), (0x5000, 512), (0x6000, 1)], 1)


def test_split_offsets_are_relative_to_memory_base():
    mem = GuestMemory(size=0x10000, base=0x100000)
    sdesc(mem, 0, 0x104000, 16, 0, table=0x101000)
    assert walk_split(mem, 0x101000, 4, 0, False) == ([(0x4000, 16)], 1)


def test_split_indirect(mem):
    sdesc(mem, 0, 0x4000, 16, NEXT, 1, table=ITABLE)
    sdesc(mem, 1, 0x5000, 1, WRITE, 0, table=ITABLE)
    sdesc(mem, 2, ITABLE, 32, INDIRECT | WRITE)  # WRITE on the indirect descriptor is ignored
    assert walk_split(mem, TABLE, 4, 2, True) == ([(0x4000, 16), (0x5000, 1)], 1)


def test_split_direct_then_indirect(mem):
    sdesc(mem, 0, 0x4000, 16, NEXT, 1)
    sdesc(mem, 1, ITABLE, 16, INDIRECT)
    sdesc(mem, 0, 0x5000, 1, WRITE, table=ITABLE)
    assert walk_split(mem, TABLE, 4, 0, True) == ([(0x4000, 16), (0x5000, 1)], 1)


@pytest.mark.parametrize("build, head, indirect_ok, section", [
    # a loop: 0 -> 1 -> 0
    (lambda m: (sdesc(m, 0, 0x4000, 1, NEXT, 1), sdesc(m, 1, 0x4000, 1, NEXT, 0)), 0, False,
     "2.7.5.2"),
    (lambda m: sdesc(m, 0, 0x4000, 1, NEXT, 4), 0, False, "2.7.5 "),  # next out of range
    (lambda m: None, 4, False, "2.7.6"),  # head out of range
    (lambda m: (sdesc(m, 0, 0x4000, 1, NEXT | WRITE, 1), sdesc(m, 1, 0x4000, 1)), 0, False,
     "2.7.4.2"),
    (lambda m: sdesc(m, 0, ITABLE, 16, INDIRECT | NEXT, 1), 0, True, "2.7.5.3.1"),
    (lambda m: sdesc(m, 0, ITABLE, 16, INDIRECT), 0, False, "2.7.5.3.1"),
    (lambda m: sdesc(m, 0, ITABLE, 24, INDIRECT), 0, True, "2.7.5.3 "),
    (lambda m: sdesc(m, 0, ITABLE, 0, INDIRECT), 0, True, "2.7.5.3 "),
    (lambda m: (sdesc(m, 0, ITABLE, 16, INDIRECT),
                sdesc(m, 0, ITABLE, 16, INDIRECT, table=ITABLE)), 0, True, "2.7.5.3.1"),
    (lambda m: (sdesc(m, 0, ITABLE, 32, INDIRECT),  # loop inside the indirect table
                sdesc(m, 0, 0x4000, 1, NEXT, 1, table=ITABLE),
                sdesc(m, 1, 0x4000, 1, NEXT, 0, table=ITABLE)), 0, True, "2.7.5.2"),
    (lambda m: sdesc(m, 0, 0xFFF0, 0x20), 0, False, "outside guest memory"),
    (lambda m: sdesc(m, 0, ITABLE + 0xF000, 16, INDIRECT), 0, True, "outside guest memory"),
])
def test_split_errors(mem, build, head, indirect_ok, section):
    build(mem)
    with pytest.raises(ChainError) as info:
        walk_split(mem, TABLE, 4, head, indirect_ok)
    assert section in str(info.value)


def test_split_table_outside_memory(mem):
    with pytest.raises(ChainError, match="descriptor table"):
        walk_split(mem, 0xFFC0, 8, 0, False)


def pdesc(mem, slot, addr, length, buf_id, flags, ring=TABLE):
    mem.write(ring + 16 * slot, struct.pack("<QIHH", addr, length, buf_id, flags))


def avail_flags(wrap):
    return AVAIL if wrap else USED


def test_packed_avail_test():
    assert packed_desc_is_avail(AVAIL, 1)
    assert not packed_desc_is_avail(AVAIL | USED, 1)
    assert packed_desc_is_avail(USED, 0)
    assert not packed_desc_is_avail(0, 0)
    assert not packed_desc_is_avail(0, 1)


def test_packed_chain_across_the_ring_end(mem):
    # size 4, list starts at slot 2 with wrap 1 and continues into slot 0 (wrap 0)
    pdesc(mem, 2, 0x4000, 16, 0, NEXT | avail_flags(1))
    pdesc(mem, 3, 0x5000, 512, 0, NEXT | WRITE | avail_flags(1))
    pdesc(mem, 0, 0x6000, 1, 7, WRITE | avail_flags(0))
    segs, nread, ndesc, buf_id = walk_packed(mem, TABLE, 4, 2, 1, False)
    assert segs == [(0x4000, 16), (0x5000, 512), (0x6000, 1)]
    assert (nread, ndesc, buf_id) == (1, 3, 7)


def test_packed_indirect(mem):
    pdesc(mem, 0, 0x4000, 16, 99, NEXT | INDIRECT, ring=ITABLE)  # flags but WRITE ignored
    pdesc(mem, 1, 0x5000, 1, 98, WRITE, ring=ITABLE)
    pdesc(mem, 0, ITABLE, 32, 5, INDIRECT | avail_flags(1))
    assert walk_packed(mem, TABLE, 4, 0, 1, True) == ([(0x4000, 16), (0x5000, 1)], 1, 1, 5)


@pytest.mark.parametrize("build, indirect_ok, needle", [
    (lambda m: (pdesc(m, 0, 0x4000, 16, 0, NEXT | avail_flags(1)),
                pdesc(m, 1, 0x5000, 1, 0, WRITE)), False, "not available"),
    (lambda m: (pdesc(m, 0, 0x4000, 16, 0, NEXT | avail_flags(1)),
                pdesc(m, 1, ITABLE, 16, 0, INDIRECT | avail_flags(1))), True, "2.8.19"),
    (lambda m: pdesc(m, 0, ITABLE, 16, 0, INDIRECT | NEXT | avail_flags(1)), True, "2.8.19"),
    (lambda m: pdesc(m, 0, ITABLE, 16, 0, INDIRECT | avail_flags(1)), False, "2.8.19"),
    (lambda m: pdesc(m, 0, ITABLE, 20, 0, INDIRECT | avail_flags(1)), True, "2.8.7"),
    (lambda m: [pdesc(m, i, 0x4000, 1, 0, NEXT | avail_flags(1)) for i in range(4)], False,
     "longer than the queue size"),
    (lambda m: (pdesc(m, 0, 0x5000, 1, 0, WRITE | NEXT | avail_flags(1)),
                pdesc(m, 1, 0x4000, 16, 0, avail_flags(1))), False, "2.8.17"),
    (lambda m: pdesc(m, 0, 0xFFFF, 2, 0, avail_flags(1)), False, "outside guest memory"),
])
def test_packed_errors(mem, build, indirect_ok, needle):
    build(mem)
    with pytest.raises(ChainError) as info:
        walk_packed(mem, TABLE, 4, 0, 1, indirect_ok)
    assert needle in str(info.value)


@pytest.mark.parametrize("event, old, new, expect", [
    (0, 0, 1, True), (1, 0, 1, False), (5, 3, 6, True), (6, 3, 6, False), (2, 3, 6, False),
    (0xFFFF, 0xFFFE, 1, True), (0, 0xFFFE, 1, True), (1, 0xFFFE, 1, False), (7, 7, 7, False),
])
def test_split_event_idx_formula(event, old, new, expect):
    assert event_crossed(event, old, new) is expect


W = 1 << 15


@pytest.mark.parametrize("off_wrap, old, new, expect", [
    (0 | W, (0, 1), (1, 1), True),
    (1 | W, (0, 1), (1, 1), False),
    (1 | W, (0, 1), (3, 1), True),  # a skipped slot inside a list counts
    (3 | W, (2, 1), (1, 0), True),  # crossing the end of a 4-slot ring
    (0, (2, 1), (1, 0), True),  # slot 0 after the wrap has wrap counter 0
    (1, (2, 1), (1, 0), False),
    (0 | W, (2, 1), (1, 0), False),  # slot 0 of the previous lap
])
def test_packed_event_descriptor(off_wrap, old, new, expect):
    assert event_due(off_wrap, old, new, 4) is expect
