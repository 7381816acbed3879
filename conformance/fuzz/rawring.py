"""Put a :class:`ChainSpec` into a live queue and observe exactly what the device did.

:class:`RawQueue` takes over one queue of an initialized :class:`BlkDevice`
(split or packed) and writes descriptors, indirect tables and ring entries as
the chain says, however malformed.  Every buffer of the chain lives in one
*arena*: a block of DMA memory filled with a known pattern, with guard gaps
between the buffers and a guard zone that addresses beyond guest memory alias
(zone + 2**k).  After the request the arena is read back in one go, so any
byte the device wrote outside the device-writable buffers shows up, as does a
write into a device-readable buffer, an indirect table or the descriptor
table (2.7.5.1 / 2.8.15: the device never writes those).

Waiting: with MSI-X, the driver points the configuration vector and the
queue's vector at adjacent 4-byte slots (``conformance.driver.msix``), so
one Poll of 8 bytes ends when either a used buffer notification or the
configuration change notification that must follow DEVICE_NEEDS_RESET
(2.1.2) arrives.  When nothing arrives within ``quiet`` seconds, the device
is taken to have left the request alone.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from conformance import spec
from conformance.driver.blk import POISON, BlkDevice
from conformance.driver.platform import BarRead, MemRead, MemWrite, Op, Poll, PollTimeout
from conformance.fuzz.chain import NEXT, WRITE, ChainSpec, DescSpec

GAP = 64  # guard bytes between any two parts of the arena
ALIAS_ZONE = 4096  # where addresses beyond guest memory alias to when truncated
_SPLIT_DESC = struct.Struct("<QIHH")  # addr, len, flags, next
_PACKED_DESC = struct.Struct("<QIHH")  # addr, len, id, flags
_AVAIL_USED = spec.VIRTQ_DESC_F_AVAIL | spec.VIRTQ_DESC_F_USED
_MASK64 = (1 << 64) - 1


def guard_byte(offset: int) -> int:
    """The arena's fill pattern: varies with the offset, so a misplaced copy shows."""
    return (offset * 7 + 0x5D) & 0xFF


_GUARD_CACHE = bytearray()


def guard_fill(start: int, n: int) -> bytes:
    """Bytes ``[start, start + n)`` of the fill pattern (cached: the fuzzer needs it often)."""
    end = start + n
    if end > len(_GUARD_CACHE):
        _GUARD_CACHE.extend(guard_byte(o) for o in range(len(_GUARD_CACHE), max(end, 1 << 16)))
    return bytes(_GUARD_CACHE[start:end])


# --- the arena ------------------------------------------------------------------------


@dataclass
class Arena:
    """Where each part of a chain lives, and the bytes written there first."""

    base: int
    size: int
    buffers: list[tuple[int, int]]  # buffer i -> (arena offset, length)
    tables: list[tuple[int, int]]  # indirect table t -> (arena offset, length in bytes)
    zone: int  # arena offset of the alias guard zone
    image: bytearray
    bars: dict[int, int] = field(default_factory=dict)  # BAR index -> bus address

    def addr(self, off: int) -> int:
        return self.base + off

    def desc_addr(self, d: DescSpec) -> int:
        if d.buffer is not None:
            if 0 <= d.buffer < len(self.buffers):
                return self.base + self.buffers[d.buffer][0] + d.offset
            return d.addr
        if d.table is not None:
            if 0 <= d.table < len(self.tables):
                return self.base + self.tables[d.table][0] + d.offset
            return d.addr
        if d.alias is not None:
            return (self.base + self.zone + (1 << (d.alias & 63))) & _MASK64
        if d.bar is not None and d.bar in self.bars:
            return (self.bars[d.bar] + d.offset) & _MASK64
        return d.addr & _MASK64


def layout_arena(chain: ChainSpec, packed: bool) -> tuple[int, list, list, int]:
    """Offsets of every part (before the arena has an address)."""
    off = GAP
    buffers = []
    for b in chain.buffers:
        buffers.append((off, b.length))
        off += (b.length + 15) // 16 * 16 + GAP
    tables = []
    for t in chain.tables:
        n = 16 * len(t)
        tables.append((off, n))
        off += n + GAP
    zone = off
    off += ALIAS_ZONE + GAP
    return off, buffers, tables, zone


def pack_desc(arena: Arena, d: DescSpec, packed: bool, flags: int | None = None) -> bytes:
    addr = arena.desc_addr(d)
    length = d.length & 0xFFFFFFFF
    f = (d.flags if flags is None else flags) & 0xFFFF
    if packed:
        return _PACKED_DESC.pack(addr, length, d.id & 0xFFFF, f)
    return _SPLIT_DESC.pack(addr, length, f, d.next & 0xFFFF)


def build_arena(chain: ChainSpec, base: int, packed: bool,
                bars: dict[int, int] | None = None) -> Arena:
    size, buffers, tables, zone = layout_arena(chain, packed)
    image = bytearray(guard_fill(0, size))
    arena = Arena(base, size, buffers, tables, zone, image, dict(bars or {}))
    for (off, n), b in zip(buffers, chain.buffers):
        if b.writable and not b.content:
            image[off:off + n] = bytes([POISON]) * n
        else:
            image[off:off + n] = b.content[:n].ljust(n, b"\0")
    for (off, n), t in zip(tables, chain.tables):
        # Indirect tables: packed format in a packed ring (2.8.7), only WRITE counts.
        image[off:off + n] = b"".join(pack_desc(arena, d, packed) for d in t)
    return arena


# --- what happened -----------------------------------------------------------------------


@dataclass
class Observation:
    """The raw facts after one chain: nothing here is a verdict yet."""

    used: list[tuple[int, int]] = field(default_factory=list)  # (id, len) per used entry
    status: int | None = None  # the byte at the expected status location
    device_status: int = 0
    memory: list[str] = field(default_factory=list)  # bytes written where they must not be
    ring: list[str] = field(default_factory=list)  # used entries that cannot be right
    writable: dict[int, bytes] = field(default_factory=dict)  # writable buffers afterwards
    readable_written: bool = False
    elapsed: float = 0.0

    @property
    def needs_reset(self) -> bool:
        return bool(self.device_status & spec.STATUS_DEVICE_NEEDS_RESET)

    @property
    def completed(self) -> bool:
        return bool(self.used)

    def status_name(self) -> str:
        if self.status is None:
            return "no status location"
        if self.status == POISON:
            return "status byte not written"
        return spec.BLK_STATUS_NAMES.get(self.status, f"status {self.status:#x}")

    def summary(self) -> str:
        parts = []
        if self.used:
            parts.append("used " + ", ".join(f"id {i} len {n}" for i, n in self.used)
                         + f" ({self.status_name()})")
        else:
            parts.append("not used")
        if self.needs_reset:
            parts.append("DEVICE_NEEDS_RESET set")
        parts += self.ring + self.memory
        return "; ".join(parts)


def compare_arena(chain: ChainSpec, arena: Arena, after: bytes) -> tuple[list[str], bool]:
    """Problems in the arena read back after the request, and whether a
    device-readable buffer was written."""
    problems: list[str] = []
    before = arena.image
    if len(after) != len(before):
        return [f"arena read back {len(after)} bytes instead of {len(before)}"], False
    # Fast path: with the device-writable ranges taken as they are now, nothing else moved.
    ranges = writable_ranges(chain, arena)
    expected = bytearray(before)
    for off, end in ranges:
        expected[off:end] = after[off:end]
    if expected == after:
        return problems, False
    allowed = [False] * len(before)
    for off, end in ranges:
        allowed[off:end] = [True] * (end - off)
    readable_written = False
    runs: list[tuple[int, int]] = []
    start = None
    for k in range(len(before)):
        bad = after[k] != before[k] and not allowed[k]
        if bad and start is None:
            start = k
        elif not bad and start is not None:
            runs.append((start, k))
            start = None
    if start is not None:
        runs.append((start, len(before)))
    for s, e in runs[:4]:
        what = _where(chain, arena, s)
        if what.startswith("buffer"):
            readable_written = True
        problems.append(f"device wrote {e - s} byte(s) into {what} "
                        f"(bus address {arena.base + s:#x})")
    if len(runs) > 4:
        problems.append(f"... and {len(runs) - 4} more written range(s)")
    return problems, readable_written


def writable_ranges(chain: ChainSpec, arena: Arena) -> list[tuple[int, int]]:
    """Arena ranges the driver gave the device to write: every descriptor with
    VIRTQ_DESC_F_WRITE (except one that points at an indirect table, whose WRITE
    flag the device ignores, 2.7.5.3.2), clipped to the arena."""
    out = []
    nested = [d for t in chain.tables for d in t]
    for d in list(chain.descs) + nested:
        # An INDIRECT flag inside a table is forbidden (2.7.5.3.1); a device may well
        # take that descriptor for a plain buffer, so its WRITE flag still counts.
        if not d.flags & WRITE or (d.flags & spec.VIRTQ_DESC_F_INDIRECT and d not in nested):
            continue
        start = arena.desc_addr(d) - arena.base
        end = start + (d.length & 0xFFFFFFFF)
        start, end = max(start, 0), min(end, arena.size)
        if start < end:
            out.append((start, end))
    return out


def _covering(chain: ChainSpec, arena: Arena, k: int) -> str:
    """Which descriptor's range covers arena byte ``k`` without making it writable."""
    for where, descs in (("descriptor", chain.descs),
                         *((f"table {t} entry", table) for t, table in enumerate(chain.tables))):
        for i, d in enumerate(descs):
            start = arena.desc_addr(d) - arena.base
            if start <= k < start + (d.length & 0xFFFFFFFF):
                if d.flags & spec.VIRTQ_DESC_F_INDIRECT:
                    return (f", inside what {where} {i} (flags {d.flags:#x}) names as an "
                            f"indirect table, which the device only reads (2.7.5.3.2)")
                return f", inside {where} {i} (flags {d.flags:#x}), which is device-readable"
    return ""


def _where(chain: ChainSpec, arena: Arena, k: int) -> str:
    return _place(chain, arena, k) + _covering(chain, arena, k)


def _place(chain: ChainSpec, arena: Arena, k: int) -> str:
    for i, (off, n) in enumerate(arena.buffers):
        if off <= k < off + n:
            return (f"buffer {i} at offset {k - off}, which no device-writable descriptor "
                    f"covers (2.7.5.1: the device never writes a device-readable buffer)")
    for t, (off, n) in enumerate(arena.tables):
        if off <= k < off + n:
            return f"indirect table {t} at byte {k - off} (the device never writes it)"
    if arena.zone <= k < arena.zone + ALIAS_ZONE:
        return (f"the guard zone at +{k - arena.zone} (where a truncated address beyond guest "
                f"memory lands)")
    return "guard bytes outside every buffer of the request"


# --- the queue --------------------------------------------------------------------------


class RawQueue:
    """Driver side of one queue, written by hand (no validation at all)."""

    def __init__(self, blk: BlkDevice, queue: int = 0, quiet: float = 0.2):
        self.blk = blk
        self.platform = blk.platform
        self.pool = blk.virtio.pool
        self.index = queue
        self.q = blk.queues[queue]
        self.packed = self.q.kind == "packed"
        self.size = self.q.size
        self.quiet = quiet
        q = self.q
        if self.packed:
            self.avail_slot, self.avail_wrap = q.next_avail, q.avail_wrap  # type: ignore[attr-defined]
            self.used_slot, self.used_wrap = q.next_used, q.used_wrap  # type: ignore[attr-defined]
            self.written: dict[int, bytes] = {}  # slot -> descriptor the driver wrote there
        else:
            self.avail_idx = q.avail_idx & 0xFFFF  # type: ignore[attr-defined]
            self.used_idx = q.last_used & 0xFFFF  # type: ignore[attr-defined]
            self.shadow = [0] * self.size  # what the driver last wrote in each avail slot
            self.offered: tuple[set[int], int] = (set(), 0)
        t = blk.transport
        self._status_op = BarRead(t.common.bar, t.common.offset + spec.COMMON_STATUS, 1)
        self.doorbell = self._doorbell()
        self.arenas: list[int] = []
        self.bars = {i: b.address for i, b in blk.virtio.bars.items()}
        self.event_idx = blk.has(spec.VIRTIO_F_EVENT_IDX)
        self.notification_data = blk.has(spec.VIRTIO_F_NOTIFICATION_DATA)

    def _doorbell(self) -> tuple[int, int] | None:
        """(address, size) of the MSI-X slots that a completion or NEEDS_RESET writes."""
        msix = self.blk.virtio.msix
        info = self.blk.virtio.queue_info[self.index]
        if msix is None or info is None:
            return None
        qv = self.blk.transport.queue_read(self.index, spec.COMMON_Q_MSIX, 2)
        cv = self.blk.transport.common_read(spec.COMMON_MSIX, 2)
        vectors = sorted(v for v in (qv, cv) if v != spec.VIRTIO_MSI_NO_VECTOR)
        if not vectors:
            return None
        lo, hi = vectors[0], vectors[-1]
        if hi - lo > 1:
            return msix.slot(qv), 4
        return msix.slot(lo), 4 * (hi - lo + 1)

    # --- addresses -------------------------------------------------------------------
    def desc_addr(self, i: int) -> int:
        return self.q.layout.desc + 16 * (i % self.size)

    def used_idx_addr(self) -> int:
        return self.q.layout.device + 2

    # --- sending ---------------------------------------------------------------------
    def place(self, chain: ChainSpec) -> tuple[Arena, list[Op]]:
        """Allocate the arena and return the ops that write chain and ring entries."""
        size = layout_arena(chain, self.packed)[0]
        base = self.pool.alloc(size, 64)
        self.arenas.append(base)
        arena = build_arena(chain, base, self.packed, self.bars)
        ops: list[Op] = [MemWrite(base, bytes(arena.image))]
        ops += self.ring_ops(chain, arena)
        return arena, ops

    def ring_ops(self, chain: ChainSpec, arena: Arena) -> list[Op]:
        if self.packed:
            return self._packed_ops(chain, arena)
        if len(chain.descs) > self.size:
            raise ValueError(f"chain has {len(chain.descs)} descriptors, the table only "
                             f"{self.size}")
        # The whole table and the whole ring are written every time: entries left from
        # an earlier chain would point at memory that belongs to something else now.
        table = b"".join(pack_desc(arena, d, False) for d in chain.descs)
        ops: list[Op] = [MemWrite(self.q.layout.desc, table.ljust(16 * self.size, b"\0"))]
        avail = self.q.layout.driver
        self.shadow = [0] * self.size
        for k, head in enumerate(chain.heads):
            self.shadow[(self.avail_idx + k) % self.size] = head & 0xFFFF
        ops.append(MemWrite(avail + 4, struct.pack(f"<{self.size}H", *self.shadow)))
        advance = chain.advance & 0xFFFF
        # The heads the device may legitimately return: whatever the ring slots it was
        # told about hold (an idx moved past the new entries exposes older ones).
        self.offered = ({self.shadow[(self.avail_idx + k) % self.size]
                         for k in range(min(advance, self.size))}, advance)
        if chain.used_event is not None:
            want = (self.used_idx + chain.used_event) & 0xFFFF
            ops.append(MemWrite(avail + 4 + 2 * self.size, struct.pack("<H", want)))
        elif self.event_idx:
            # 2.7.7.2: ask for a notification at the last entry this chain should produce.
            want = (self.used_idx + max(chain.expected_used, 1) - 1) & 0xFFFF
            ops.append(MemWrite(avail + 4 + 2 * self.size, struct.pack("<H", want)))
        ops.append(MemWrite(avail, struct.pack("<H", chain.avail_flags & 0xFFFF)))
        self.avail_idx = (self.avail_idx + chain.advance) & 0xFFFF
        ops.append(MemWrite(avail + 2, struct.pack("<H", self.avail_idx)))
        return ops

    def _packed_ops(self, chain: ChainSpec, arena: Arena) -> list[Op]:
        if len(chain.descs) > self.size:
            raise ValueError(f"chain has {len(chain.descs)} descriptors, the ring only "
                             f"{self.size}")
        ops: list[Op] = []
        head: Op | None = None
        slot, wrap = self.avail_slot, self.avail_wrap
        self.written = {}
        for i, d in enumerate(chain.descs):
            flags = d.flags
            if not d.raw_flags:
                flags = (flags & ~_AVAIL_USED) | (spec.VIRTQ_DESC_F_AVAIL if wrap
                                                  else spec.VIRTQ_DESC_F_USED)
            raw = pack_desc(arena, d, True, flags)
            self.written[slot] = raw
            op = MemWrite(self.desc_addr(slot), raw)
            if i == 0:
                head = op  # 2.8.21.1: the first descriptor's flags go last
            else:
                ops.append(op)
            slot += 1
            if slot == self.size:
                slot, wrap = 0, not wrap
        if head is not None:
            ops.append(head)
        # Driver event suppression: notifications enabled (2.8.10).
        ops.append(MemWrite(self.q.layout.driver, struct.pack("<HH", 0, 0)))
        self.avail_slot, self.avail_wrap = slot, wrap
        return ops

    def expected(self, chain: ChainSpec) -> int:
        """How many used entries a device that accepts everything writes: one per
        packed list, or one per available entry the idx exposes (older entries
        included when it moves further than the new heads)."""
        if self.packed:
            return len(packed_lists(chain.descs))
        advance = chain.advance & 0xFFFF
        return advance if advance <= self.size else chain.expected_used

    def kick_op(self) -> Op:
        op = self.q.notify
        vqn = self.index if self.q.notify_config_data is None else self.q.notify_config_data
        if not self.notification_data:
            return type(op)(op.bar, op.off, 2, vqn)  # type: ignore[union-attr]
        if self.packed:
            value = vqn | (self.avail_slot & 0x7FFF) << 16 | int(self.avail_wrap) << 31
        else:
            value = vqn | self.avail_idx << 16
        return type(op)(op.bar, op.off, 4, value)  # type: ignore[union-attr]

    # --- observing ---------------------------------------------------------------------
    def _state_ops(self) -> list[Op]:
        if self.packed:
            return [MemRead(self.q.layout.desc, 16 * self.size), self._status_op]
        return [MemRead(self.q.layout.device, spec.split_used_size(self.size)), self._status_op]

    def _done(self, ring: bytes, want: int) -> int:
        """How many used entries are visible beyond the driver's position."""
        if self.packed:
            n, slot, wrap = 0, self.used_slot, self.used_wrap
            while n < self.size:
                flags = struct.unpack_from("<H", ring, 16 * slot + 14)[0]
                if flags & _AVAIL_USED != (_AVAIL_USED if wrap else 0):
                    break
                if self.written.get(slot) == ring[16 * slot:16 * slot + 16]:
                    break
                n += 1
                slot += 1
                if slot == self.size:
                    slot, wrap = 0, not wrap
            return n
        return (struct.unpack_from("<H", ring, 2)[0] - self.used_idx) & 0xFFFF

    def settle(self, want: int, quiet: float | None = None) -> None:
        """Wait until ``want`` entries are used, DEVICE_NEEDS_RESET is set, or nothing
        happens for ``quiet`` seconds."""
        quiet = self.quiet if quiet is None else quiet
        deadline = time.monotonic() + quiet
        clear = [MemWrite(self.doorbell[0], bytes(self.doorbell[1]))] if self.doorbell else []
        while True:
            res = self.platform.execute(clear + self._state_ops())
            ring, status = res[-2], res[-1]
            if status & spec.STATUS_DEVICE_NEEDS_RESET or self._done(ring, want) >= want:  # type: ignore[arg-type,operator]
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.doorbell:
                addr, size = self.doorbell
                poll = Poll(addr, size, (1 << (8 * size)) - 1, 0, False, remaining)
            elif self.packed:
                poll = Poll(self.desc_addr(self.used_slot) + 14, 2, _AVAIL_USED,
                            _AVAIL_USED if self.used_wrap else 0, True, remaining)
            else:
                poll = Poll(self.used_idx_addr(), 2, 0xFFFF, self.used_idx, False, remaining)
            try:
                self.platform.execute([poll])
            except PollTimeout:
                return

    def run(self, chain: ChainSpec, quiet: float | None = None) -> Observation:
        """Send ``chain``, wait for the device, read back everything it could touch."""
        start = time.monotonic()
        arena, ops = self.place(chain)
        self.last_arena = arena
        if self.doorbell:
            ops.append(MemWrite(self.doorbell[0], bytes(self.doorbell[1])))
        ops.append(self.kick_op())
        self.platform.execute(ops)
        self.settle(max(self.expected(chain), 1), quiet)
        obs = self.observe(chain, arena)
        obs.elapsed = time.monotonic() - start
        return obs

    def observe(self, chain: ChainSpec, arena: Arena) -> Observation:
        ops: list[Op] = [MemRead(arena.base, arena.size)]
        if not self.packed and chain.descs:
            ops.append(MemRead(self.q.layout.desc, 16 * len(chain.descs)))
        ops += self._state_ops()
        res = self.platform.execute(ops)
        after: bytes = res[0]  # type: ignore[assignment]
        obs = Observation(device_status=res[-1])  # type: ignore[arg-type]
        obs.memory, obs.readable_written = compare_arena(chain, arena, after)
        if not self.packed and chain.descs:
            want = b"".join(pack_desc(arena, d, False) for d in chain.descs)
            if res[1] != want:
                first = next(i for i in range(len(want)) if res[1][i] != want[i])  # type: ignore[index]
                obs.memory.append(f"device wrote into descriptor table entry {first // 16} "
                                  f"(2.7.5.1: the device never writes the descriptor table)")
        for i, ((off, n), b) in enumerate(zip(arena.buffers, chain.buffers)):
            if b.writable:
                obs.writable[i] = bytes(after[off:off + n])
        if chain.status is not None:
            bi, bo = chain.status
            off, n = arena.buffers[bi]
            obs.status = after[off + bo] if 0 <= bo < n else None
        ring: bytes = res[-2]  # type: ignore[assignment]
        self._collect(chain, ring, obs)
        return obs

    def _collect(self, chain: ChainSpec, ring: bytes, obs: Observation) -> None:
        bound = max(chain.writable_total(), write_desc_bytes(chain))
        if self.packed:
            self._collect_packed(chain, ring, obs, bound)
            return
        new_idx = struct.unpack_from("<H", ring, 2)[0]
        count = (new_idx - self.used_idx) & 0xFFFF
        heads, expected = self.offered
        if count > expected:
            obs.ring.append(f"used idx moved by {count}, but the available idx only by "
                            f"{expected} (2.7.8)")
        for k in range(min(count, self.size)):
            slot = (self.used_idx + k) % self.size
            id_, length = struct.unpack_from("<II", ring, 4 + 8 * slot)
            obs.used.append((id_, length))
            if id_ not in heads:
                obs.ring.append(f"used entry names descriptor {id_}, which is not the head "
                                f"of an available chain (2.7.8)")
            if length > bound:
                obs.ring.append(f"used len {length} exceeds the {bound} device-writable "
                                f"bytes of the chain (2.7.8.2)")
        self.used_idx = new_idx

    def _collect_packed(self, chain: ChainSpec, ring: bytes, obs: Observation,
                        bound: int) -> None:
        lists = packed_lists(chain.descs)
        for _ in range(self.size):
            raw = ring[16 * self.used_slot:16 * self.used_slot + 16]
            addr, length, id_, flags = _PACKED_DESC.unpack_from(raw)
            if flags & _AVAIL_USED != (_AVAIL_USED if self.used_wrap else 0):
                break
            if self.written.get(self.used_slot) == raw:
                break  # the driver's own descriptor, marked the way a used one is

            obs.used.append((id_, length))
            match = next((k for k, (i, _n) in enumerate(lists) if i == id_), None)
            if match is None:
                obs.ring.append(f"used descriptor names buffer id {id_}, which is not in "
                                f"flight (2.8.7)")
                break
            if length > bound:
                obs.ring.append(f"used len {length} exceeds the {bound} device-writable "
                                f"bytes of the chain (2.8.4)")
            step = lists.pop(match)[1]
            self.used_slot += step
            while self.used_slot >= self.size:
                self.used_slot -= self.size
                self.used_wrap = not self.used_wrap

    # --- after the request ---------------------------------------------------------------
    def release(self) -> None:
        """Give the arenas back (only once the device can no longer touch them)."""
        for base in self.arenas:
            self.pool.free(base)
        self.arenas.clear()


def write_desc_bytes(chain: ChainSpec) -> int:
    total = 0
    for d in list(chain.descs) + [d for t in chain.tables for d in t]:
        if d.flags & WRITE:
            total += d.length & 0xFFFFFFFF
    return total


def packed_lists(descs: Sequence[DescSpec]) -> list[tuple[int, int]]:
    """(buffer id, ring slots) of each list in ``descs`` (2.8.6: the id is the last one's)."""
    out: list[tuple[int, int]] = []
    n = 0
    for d in descs:
        n += 1
        if not d.flags & NEXT:
            out.append((d.id & 0xFFFF, n))
            n = 0
    if n:
        out.append((descs[-1].id & 0xFFFF, n))
    return out


def parsed_disk_writes(chain: ChainSpec, arena: Arena, packed: bool
                       ) -> tuple[tuple[int, int], ...] | None:
    """The sector ranges a device may write, from the header and segments it reads.

    Follows each chain the way a device would (``next`` or ring order, one indirect
    table) and reads its device-readable bytes from what the driver put in the
    arena.  ``None`` when a readable byte lies outside the arena (the device's own
    registers, beyond memory): the request the device saw is then unknown.
    """
    starts = [0] if packed else list(chain.heads)
    writes: list[tuple[int, int]] = []
    for head in starts:
        data = _readable_bytes(chain, arena, packed, head)
        if data is None:
            return None
        writes += _writes_of(data)
    return tuple(writes)


def _readable_bytes(chain: ChainSpec, arena: Arena, packed: bool, head: int) -> bytes | None:
    table: Sequence[DescSpec] = chain.descs
    out = bytearray()
    i, seen, indirect = head, 0, False
    while 0 <= i < len(table) and seen < 4 * 1024:
        d = table[i]
        seen += 1
        if d.flags & spec.VIRTQ_DESC_F_INDIRECT and not indirect:
            if d.table is None or d.table >= len(chain.tables):
                return None
            table, i, indirect = chain.tables[d.table], 0, True
            continue
        if not d.flags & WRITE:
            start = arena.desc_addr(d) - arena.base
            n = d.length & 0xFFFFFFFF
            if start < 0 or start + n > arena.size:
                return None
            out += arena.image[start:start + n]
        if not d.flags & NEXT:
            break
        i = i + 1 if packed else d.next
    return bytes(out)


def _writes_of(data: bytes) -> list[tuple[int, int]]:
    if len(data) < 16:
        return []
    type_, _reserved, sector = struct.unpack_from("<IIQ", data)
    body = data[16:]
    if type_ == spec.VIRTIO_BLK_T_OUT:
        return [(sector, len(body) // spec.SECTOR_SIZE + 2)]
    if type_ in (spec.VIRTIO_BLK_T_DISCARD, spec.VIRTIO_BLK_T_WRITE_ZEROES,
                 spec.VIRTIO_BLK_T_SECURE_ERASE):
        return [struct.unpack_from("<QI", body, o)
                for o in range(0, len(body) - len(body) % 16, 16)]
    return []
