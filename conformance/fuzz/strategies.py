"""Hostile requests from choice bytes: a well-formed request, then mutations.

Hypothesis supplies a byte string; :class:`Choices` reads it as a sequence of
decisions and :func:`decode_chain` turns those into a chain.  Generation
starts from a request a driver could send (a type, a sector near something
interesting, data, a descriptor layout, maybe an indirect table) and applies
up to a few mutations of the kind that found bugs in real devices: lengths of
0, 15, 16 +- 1, 2**32 - 1; flag bits flipped (NEXT, WRITE, INDIRECT);
``next`` pointing at itself, past the table or back; an address beyond guest
memory or inside the device's own BARs; a nested indirect table; a head
placed twice; the available index moved too far; in a packed ring, AVAIL/USED
bits against the wrap counter.  Sectors cluster where arithmetic breaks: the
last sector, capacity, 2**32, 2**55 (the byte offset overflows 64 bits),
2**63, 2**64 - 1.

Every decision's first option is the plain one, so bytes of zero decode to a
well-formed read: when Hypothesis shrinks a failing byte string towards
zeros, the chain shrinks towards the smallest hostile request that still
fails.  One example is a *sequence* of chains (:func:`choice_bytes`), which keeps
the per-example cost of Hypothesis small and lets a finding that needs
several requests in a row shrink to exactly those.

Why Hypothesis rather than a coverage-guided fuzzer such as atheris: the
devices that matter run out of process (QEMU), where the coverage of our
Python says nothing about theirs, while Hypothesis' shrinking turns a failing
sequence into a minimal reproducer, and it is already a dependency.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from hypothesis import strategies as st

from conformance import spec
from conformance.fuzz.chain import (
    INDIRECT,
    NEXT,
    WRITE,
    ChainSpec,
    DescSpec,
    blk_chain,
    for_packed,
    segment,
)

S = spec.SECTOR_SIZE
T = TypeVar("T")
CHUNK = 48  # choice bytes per chain
CHAINS_PER_EXAMPLE = 32

TYPES = [spec.VIRTIO_BLK_T_IN, spec.VIRTIO_BLK_T_OUT, spec.VIRTIO_BLK_T_FLUSH,
         spec.VIRTIO_BLK_T_GET_ID, spec.VIRTIO_BLK_T_GET_LIFETIME, spec.VIRTIO_BLK_T_DISCARD,
         spec.VIRTIO_BLK_T_WRITE_ZEROES, spec.VIRTIO_BLK_T_SECURE_ERASE]
SEGMENT_TYPES = (spec.VIRTIO_BLK_T_DISCARD, spec.VIRTIO_BLK_T_WRITE_ZEROES,
                 spec.VIRTIO_BLK_T_SECURE_ERASE)
LENGTHS = [0, 1, 15, 16, 17, 511, 512, 513, 4096, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
ADDRESSES = [0, 1 << 32, 1 << 40, 1 << 63, (1 << 64) - 16, (1 << 64) - 1, 0xFEE00000]
BAR_OFFSETS = [0, 0x14, 0x1000, 0x2000, 0x3000, 0x800, 0xFFC]
MAX_DATA = 4 * S


class Choices:
    """Reads decisions from bytes; past the end every decision is 0 (the plain one)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def below(self, n: int) -> int:
        """0 <= value < n (n up to 2**64)."""
        if n <= 1:
            return 0
        nbytes = (n.bit_length() + 7) // 8
        value = 0
        for _ in range(nbytes):
            value = value << 8 | self.byte()
        return value % n

    def pick(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def chance(self, one_in: int) -> bool:
        """True with probability 1/one_in; False for zero bytes."""
        return self.byte() % one_in == one_in - 1


@dataclass(frozen=True)
class Context:
    """What the decoder needs to know about the device."""

    capacity: int
    queue_size: int
    bars: tuple[int, ...] = ()
    packed: bool = False


def _sector(c: Choices, ctx: Context) -> int:
    cap = ctx.capacity
    edges = [cap - 1, 0, cap - 2, cap, cap + 1, 1 << 32, (1 << 32) - 1, (1 << 55) + 5,
             (1 << 55) - 1, 1 << 63, (1 << 64) - 1, (1 << 64) - 8, (1 << 64) // S]
    how = c.below(4)
    if how == 0:
        return c.below(min(cap, 64))  # near the start (the probe sectors live there)
    if how == 1:
        return c.pick(edges)
    if how == 2:
        return c.below(cap)
    return c.below(1 << 64)


def _cuts(c: Choices, total: int, max_parts: int) -> list[int] | None:
    if total <= 1 or max_parts <= 1 or not c.chance(3):
        return None
    parts = 2 + c.below(min(max_parts, total, 6) - 1)
    points = sorted({1 + c.below(total - 1) for _ in range(parts - 1)})
    edges = [0, *points, total]
    return [b - a for a, b in zip(edges, edges[1:])]


def base_request(c: Choices, ctx: Context) -> ChainSpec:
    """A request a driver could have sent (sometimes with an odd length)."""
    type_ = c.pick(TYPES) if not c.chance(8) else c.below(1 << 32)
    sector = _sector(c, ctx)
    data = b""
    read_len = 0
    if type_ == spec.VIRTIO_BLK_T_OUT:
        n = c.pick([S, 2 * S, 8, 511, 513, 0]) if not c.chance(4) else c.below(MAX_DATA + 1)
        data = bytes([c.byte() | 1]) * n
    elif type_ == spec.VIRTIO_BLK_T_IN:
        read_len = (c.pick([S, 2 * S, 1, 511, 513, 0]) if not c.chance(4)
                    else c.below(MAX_DATA + 1))
    elif type_ in (spec.VIRTIO_BLK_T_GET_ID, spec.VIRTIO_BLK_T_GET_LIFETIME):
        read_len = c.pick([20, 8, 0, 64, 1, 21])
    elif type_ in SEGMENT_TYPES:
        segs = [(_sector(c, ctx), c.pick([1, 8, 0, 0xFFFFFFFF, c.below(65)]),
                 c.pick([0, 1, 2, 0x80000000, 3]))
                for _ in range(1 + c.below(3))]
        data = b"".join(segment(*s_) for s_ in segs)
        if c.chance(6):
            data = data[:c.below(len(data) + 1)]  # a segment cut short
    status_len = c.pick([1, 1, 1, 2, 0, 4]) if c.chance(4) else 1
    r_split = _cuts(c, 16 + len(data), ctx.queue_size // 4)
    w_split = _cuts(c, read_len + status_len, ctx.queue_size // 4)
    indirect = c.chance(3)
    writes: tuple[tuple[int, int], ...] = ()
    if type_ == spec.VIRTIO_BLK_T_OUT:
        # Generous: whatever the device may make of the request after mutations.
        writes = ((sector, len(data) // S + 2),)
    elif type_ in SEGMENT_TYPES:
        writes = tuple((s_, n) for s_, n, _f in
                       (struct.unpack_from("<QII", data, o)
                        for o in range(0, len(data) - len(data) % 16, 16)))
    reserved = c.pick([0, 1, 0xFFFFFFFF]) if c.chance(8) else 0
    return blk_chain(type_, sector, data, read_len, status_len=status_len,
                     readable_split=r_split, writable_split=w_split, indirect=indirect,
                     reserved=reserved, disk_writes=writes)


# --- mutations --------------------------------------------------------------------------


def _mutate_desc(c: Choices, d: DescSpec, n: int, ctx: Context) -> DescSpec:
    what = c.below(6)
    if what == 0:
        return replace(d, length=c.pick(LENGTHS) if not c.chance(4) else c.below(1 << 32))
    if what == 1:
        return replace(d, flags=d.flags ^ c.pick([NEXT, WRITE, INDIRECT, 8, 0x80, 0x8000,
                                                  0xFFFF]))
    if what == 2:
        q = ctx.queue_size
        return replace(d, next=c.pick([0, n - 1, n, q - 1, q, 0xFFFF, c.below(1 << 16)]))
    if what == 3:
        where = c.below(3 if ctx.bars else 2)
        if where == 0:
            return replace(d, buffer=None, table=None, alias=c.pick([32, 36, 40, 48, 63]))
        if where == 1:
            return replace(d, buffer=None, table=None, alias=None, addr=c.pick(ADDRESSES))
        return replace(d, buffer=None, table=None, alias=None, bar=c.pick(ctx.bars),
                       offset=c.pick(BAR_OFFSETS))
    if what == 4:
        return replace(d, offset=d.offset + c.pick([-16, -1, 1, 8, 4096]))
    return replace(d, id=c.below(1 << 16), raw_flags=True,
                   flags=c.below(1 << 16) if c.chance(2) else d.flags)


def mutate(c: Choices, chain: ChainSpec, ctx: Context) -> ChainSpec:
    kinds = ["desc", "desc", "table", "nest", "drop-next"]
    kinds += ["wrap"] if ctx.packed else ["heads", "advance", "loop"]
    for _ in range(c.below(4)):
        kind = c.pick(kinds)
        n = len(chain.descs)
        if kind == "desc" and n:
            i = c.below(n)
            chain = _set_desc(chain, i, _mutate_desc(c, chain.descs[i], n, ctx))
        elif kind == "table" and chain.tables and chain.tables[0]:
            t = chain.tables[0]
            i = c.below(len(t))
            tables = (tuple(_mutate_desc(c, d, len(t), ctx) if k == i else d
                            for k, d in enumerate(t)),) + chain.tables[1:]
            chain = replace(chain, tables=tables)
        elif kind == "nest" and chain.tables and chain.tables[0]:
            # An indirect descriptor inside the indirect table (2.7.5.3.1 forbids it).
            t = chain.tables[0]
            i = c.below(len(t))
            chain = chain.with_table_desc(0, i, flags=t[i].flags | INDIRECT, table=0,
                                          buffer=None, length=16 * len(t))
        elif kind == "heads":
            extra = [c.pick([0, 1, n, ctx.queue_size, 0xFFFF]) for _ in range(1 + c.below(3))]
            chain = replace(chain, heads=(0, *extra))
        elif kind == "advance":
            q = ctx.queue_size
            chain = replace(chain, avail_advance=c.pick([0, 2, q, q + 1, 0x8000, 0xFFFF]))
        elif kind == "drop-next" and n:
            i = c.below(n)
            chain = chain.with_desc(i, flags=chain.descs[i].flags ^ NEXT)
        elif kind == "loop" and n:
            i = c.below(n)
            chain = chain.with_desc(i, flags=chain.descs[i].flags | NEXT, next=c.below(i + 1))
        elif kind == "wrap" and n:
            # Packed: AVAIL/USED written as given, against the driver's wrap counter.
            i = c.below(n)
            bits = c.pick([0, spec.VIRTQ_DESC_F_AVAIL, spec.VIRTQ_DESC_F_USED,
                           spec.VIRTQ_DESC_F_AVAIL | spec.VIRTQ_DESC_F_USED])
            chain = chain.with_desc(i, raw_flags=True,
                                    flags=(chain.descs[i].flags & 0x7F) | bits)
    return chain


def _set_desc(chain: ChainSpec, i: int, d: DescSpec) -> ChainSpec:
    descs = list(chain.descs)
    descs[i] = d
    return replace(chain, descs=tuple(descs))


def decode_chain(data: bytes, ctx: Context) -> ChainSpec:
    """One chain from its choice bytes (all zeros: a plain one-sector read)."""
    c = Choices(data)
    chain = base_request(c, ctx)
    if ctx.packed:
        chain = for_packed(chain)
    return mutate(c, chain, ctx)


def chunks(example: Sequence[bytes]) -> list[bytes]:
    """The choice bytes of each chain of an example; all-zero ones are skipped (the
    shrinker zeroes the chains a finding does not need)."""
    return [part for part in example if any(part)]


def choice_bytes(chains: int = CHAINS_PER_EXAMPLE) -> st.SearchStrategy[list[bytes]]:
    """What Hypothesis generates and shrinks: the choice bytes of ``chains`` chains."""
    return st.lists(st.binary(min_size=CHUNK, max_size=CHUNK), min_size=chains,
                    max_size=chains)
