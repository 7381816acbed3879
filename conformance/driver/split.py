"""Driver side of a split virtqueue (2.7 Split Virtqueues)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conformance import spec
from conformance.driver.platform import MemRead, MemWrite, Op, Poll
from conformance.driver.virtqueue import Buffer, QueueLayout, UsedElem, Virtqueue

_DESC = struct.Struct("<QIHH")  # addr, len, flags, next (2.7.5)
_USED_ELEM = struct.Struct("<II")  # id, len (2.7.8)
_F_NEXT = spec.VIRTQ_DESC_F_NEXT
_F_WRITE = spec.VIRTQ_DESC_F_WRITE


def pack_desc(addr: int, length: int, flags: int, next_: int) -> bytes:
    return _DESC.pack(addr, length, flags, next_)


class SplitQueue(Virtqueue):
    kind = "split"

    def allocate(self) -> QueueLayout:
        n = self.size
        desc = self.pool.alloc(n * spec.VIRTQ_DESC_SIZE, spec.SPLIT_DESC_ALIGN * 4)
        avail = self.pool.alloc(spec.split_avail_size(n), 64)
        used = self.pool.alloc(spec.split_used_size(n), 64)
        self.platform.execute([
            MemWrite(desc, bytes(n * spec.VIRTQ_DESC_SIZE)),
            MemWrite(avail, bytes(spec.split_avail_size(n))),
            MemWrite(used, bytes(spec.split_used_size(n))),
        ])
        self.free: list[int] = list(range(n - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        self.avail_idx = 0  # free-running; the ring holds it mod 2^16
        self.last_used = 0
        # head -> (descriptors, indirect table, token)
        self.chains: dict[int, tuple[list[int], int | None, Any]] = {}
        return QueueLayout(desc, avail, used)

    # --- addresses ------------------------------------------------------------------
    def desc_addr(self, i: int) -> int:
        return self.layout.desc + spec.VIRTQ_DESC_SIZE * i

    @property
    def avail_idx_addr(self) -> int:
        return self.layout.driver + 2

    @property
    def used_event_addr(self) -> int:
        return self.layout.driver + 4 + 2 * self.size

    @property
    def used_idx_addr(self) -> int:
        return self.layout.device + 2

    @property
    def avail_event_addr(self) -> int:
        return self.layout.device + 4 + 8 * self.size

    # --- raw ops (also for cases that build malformed rings) -----------------------
    def desc_op(self, i: int, addr: int, length: int, flags: int, next_: int = 0) -> Op:
        return MemWrite(self.desc_addr(i), pack_desc(addr, length, flags, next_))

    def avail_entry_op(self, slot: int, head: int) -> Op:
        return MemWrite(self.layout.driver + 4 + 2 * (slot % self.size), struct.pack("<H", head))

    def avail_idx_op(self, idx: int) -> Op:
        return MemWrite(self.avail_idx_addr, struct.pack("<H", idx & 0xFFFF))

    def avail_flags_op(self, flags: int) -> Op:
        return MemWrite(self.layout.driver, struct.pack("<H", flags))

    def used_event_op(self, value: int) -> Op:
        return MemWrite(self.used_event_addr, struct.pack("<H", value & 0xFFFF))

    # --- making buffers available ----------------------------------------------
    def num_free(self) -> int:
        return len(self.free)

    def add(self, buffers: Sequence[Buffer], token: Any, indirect: bool = False) -> list[Op]:
        if not buffers:
            raise ValueError("a chain needs at least one buffer")
        ops: list[Op] = []
        table = None
        if indirect:
            # 2.7.5.3: one descriptor pointing at a table of descriptors.
            table = self.pool.alloc(spec.VIRTQ_DESC_SIZE * len(buffers), 16)
            ops.append(MemWrite(table, b"".join(
                pack_desc(b.addr, b.length,
                          (spec.VIRTQ_DESC_F_WRITE if b.writable else 0)
                          | (spec.VIRTQ_DESC_F_NEXT if i + 1 < len(buffers) else 0),
                          i + 1 if i + 1 < len(buffers) else 0)
                for i, b in enumerate(buffers))))
            head = self.free.pop()
            ops.append(self.desc_op(head, table, spec.VIRTQ_DESC_SIZE * len(buffers),
                                    spec.VIRTQ_DESC_F_INDIRECT))
            descs = [head]
        else:
            if len(buffers) > len(self.free):
                raise ValueError(f"chain of {len(buffers)} does not fit {len(self.free)} free "
                                 "descriptors")
            free = self.free
            n = len(buffers)
            descs = free[:-n - 1:-1]  # what n pop()s would hand out, in that order
            del free[-n:]
            head = descs[0]
            pack = _DESC.pack
            packed = []
            for i in range(n - 1):
                b = buffers[i]
                packed.append(pack(b.addr, b.length, _F_WRITE | _F_NEXT if b.writable else _F_NEXT,
                                   descs[i + 1]))
            b = buffers[-1]
            packed.append(pack(b.addr, b.length, _F_WRITE if b.writable else 0, 0))
            table_base = self.layout.desc
            if descs[-1] - head == n - 1 and descs == list(range(head, head + n)):
                # consecutive descriptors (the usual case): one write for the chain
                ops.append(MemWrite(table_base + spec.VIRTQ_DESC_SIZE * head, b"".join(packed)))
            else:
                ops += [MemWrite(table_base + spec.VIRTQ_DESC_SIZE * d, raw)
                        for d, raw in zip(descs, packed)]
        self.chains[head] = (descs, table, token)
        ops.append(self.avail_entry_op(self.avail_idx, head))
        self.avail_idx += 1
        return ops

    # --- hand-built chains (cases that need a layout add() does not make) --------------
    def set_free_order(self, order: Sequence[int]) -> None:
        """Hand out the free descriptors in ``order`` next (heads out of sequence, 2.7.8)."""
        if sorted(order) != sorted(self.free):
            raise ValueError(f"{list(order)} is not a permutation of the free descriptors")
        self.free = list(reversed(order))

    def add_descs(self, entries: Sequence[tuple[int, int, int]], token: Any,
                  table: int | None = None) -> list[Op]:
        """Ops that place one chain of raw ``(addr, len, flags)`` descriptors.

        NEXT and ``next`` are filled in; every other flag (WRITE, INDIRECT) is the
        caller's, so a case can end a direct chain in an indirect descriptor
        (2.7.5.3.2) or set WRITE on one.  ``table`` is a pool block (an indirect
        table) released when the chain is used.
        """
        if not entries or len(entries) > len(self.free):
            raise ValueError(f"chain of {len(entries)} does not fit {len(self.free)} free "
                             "descriptors")
        descs = [self.free.pop() for _ in entries]
        ops: list[Op] = []
        for i, (d, (addr, length, flags)) in enumerate(zip(descs, entries)):
            last = i + 1 == len(entries)
            link = 0 if last else spec.VIRTQ_DESC_F_NEXT
            ops.append(self.desc_op(d, addr, length, flags | link, 0 if last else descs[i + 1]))
        self.chains[descs[0]] = (descs, table, token)
        ops.append(self.avail_entry_op(self.avail_idx, descs[0]))
        self.avail_idx += 1
        return ops

    def adopt(self, idx: int) -> None:
        """The ring was driven by hand up to avail idx == used idx == ``idx``, nothing in flight."""
        if self.chains:
            raise ValueError(f"queue {self.index}: {len(self.chains)} chain(s) still in flight")
        self.avail_idx = self.last_used = idx

    def publish(self) -> list[Op]:
        # 2.7.13.3: the index is written after the ring entries it covers.
        return [self.avail_idx_op(self.avail_idx)]

    def kick_value(self) -> int:
        if self.notification_data:
            # 2.9: vqn in bits 0..15, next available index in bits 16..31 (split ring)
            vqn = self.index if self.notify_config_data is None else self.notify_config_data
            return vqn | (self.avail_idx & 0xFFFF) << 16
        return self.index if self.notify_config_data is None else self.notify_config_data

    # --- consuming used buffers -----------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self.chains)

    def wait_ops(self, count: int, timeout: float) -> list[Op]:
        if count >= self.in_flight:
            poll = Poll(self.used_idx_addr, 2, 0xFFFF, (self.last_used + self.in_flight) & 0xFFFF,
                        True, timeout)
        else:
            poll = Poll(self.used_idx_addr, 2, 0xFFFF, self.last_used & 0xFFFF, False, timeout)
        return [poll, MemRead(self.layout.device, spec.split_used_size(self.size))]

    def collect(self, ring: bytes) -> list[UsedElem]:
        used_idx = int.from_bytes(ring[2:4], "little")
        out = []
        while self.last_used & 0xFFFF != used_idx:
            slot = self.last_used % self.size
            id_, length = _USED_ELEM.unpack_from(ring, 4 + 8 * slot)
            chain = self.chains.pop(id_, None)
            if chain is None:
                raise UsedRingError(f"queue {self.index}: used ring entry {self.last_used} names "
                                    f"descriptor {id_}, which is not the head of an available "
                                    f"chain (2.7.8)")
            descs, table, token = chain
            self.free.extend(reversed(descs))
            if table is not None:
                self.pool.free(table)
            out.append(UsedElem(id_, length, token))
            self.last_used += 1
        return out

    # --- several bursts in one round trip ---------------------------------------------
    def defer_used(self) -> DeferredUse:
        """Go on as if every chain in flight had been used; check the used ring later.

        For a batch that polls until used.idx covers all chains in flight
        before its next burst: once that poll holds, the driver state is known
        without the ring's contents (every descriptor free again, last seen used
        index advanced), so the next burst can be built before the batch runs.
        :meth:`collect_deferred` reads the entries afterwards.
        """
        d = DeferredUse(self.last_used, self.chains, list(self.free), self.avail_idx)
        freed = {desc for descs, _, _ in self.chains.values() for desc in descs}
        # A fixed order (pop() hands out the lowest first): the order in which
        # the device returns chains must not change the next burst's layout.
        self.free = sorted(set(self.free) | freed, reverse=True)
        self.last_used += len(self.chains)
        self.chains = {}
        return d

    def collect_deferred(self, d: DeferredUse, ring: bytes) -> list[UsedElem]:
        """The used entries of the chains ``d`` deferred, from the ring read after its poll."""
        used_idx = int.from_bytes(ring[2:4], "little")
        end = d.last_used + len(d.chains)
        if used_idx != end & 0xFFFF:
            raise UsedRingError(f"queue {self.index}: used.idx is {used_idx} where the poll "
                                f"waited for {end & 0xFFFF} (2.7.8)")
        chains = dict(d.chains)
        out = []
        for pos in range(d.last_used, end):
            id_, length = _USED_ELEM.unpack_from(ring, 4 + 8 * (pos % self.size))
            chain = chains.pop(id_, None)
            if chain is None:
                raise UsedRingError(f"queue {self.index}: used ring entry {pos} names "
                                    f"descriptor {id_}, which is not the head of an available "
                                    f"chain (2.7.8)")
            _, table, token = chain
            if table is not None:
                self.pool.free(table)
            out.append(UsedElem(id_, length, token))
        return out

    def undefer(self, d: DeferredUse, later: Sequence[DeferredUse] = ()) -> None:
        """Back to the state ``d`` was taken in (its poll timed out); drop ``later`` bursts."""
        for e in later:
            for _, table, _ in e.chains.values():
                if table is not None:
                    self.pool.free(table)
        self.last_used, self.chains, self.free, self.avail_idx = (
            d.last_used, d.chains, d.free, d.avail_idx)

    def describe(self) -> str:
        r = self.platform.execute([
            MemRead(self.layout.driver, 4), MemRead(self.layout.device, 4),
            MemRead(self.used_event_addr, 2), MemRead(self.avail_event_addr, 2),
        ])
        avail_flags, avail_idx = struct.unpack("<HH", r[0])
        used_flags, used_idx = struct.unpack("<HH", r[1])
        lines = [
            f"split queue {self.index} size {self.size}: avail.flags={avail_flags:#x} "
            f"avail.idx={avail_idx} used.flags={used_flags:#x} used.idx={used_idx} "
            f"used_event={int.from_bytes(r[2], 'little')} "
            f"avail_event={int.from_bytes(r[3], 'little')}",
            f"driver: next avail idx {self.avail_idx & 0xFFFF}, last seen used idx "
            f"{self.last_used & 0xFFFF}, {self.in_flight} chain(s) in flight, "
            f"{len(self.free)} free descriptor(s)",
        ]
        for head in list(self.chains)[-4:]:
            descs = self.chains[head][0]
            raw = self.platform.execute([MemRead(self.desc_addr(d), 16) for d in descs[:8]])
            parts = []
            for d, b in zip(descs, raw):
                addr, length, flags, nxt = _DESC.unpack(b)  # type: ignore[arg-type]
                parts.append(f"[{d}] addr={addr:#x} len={length} flags={flags:#x} next={nxt}")
            lines.append(f"  chain head {head}: " + "; ".join(parts))
        return "\n".join(lines)


def pack_table(buffers: Sequence[Buffer]) -> bytes:
    """An indirect descriptor table for ``buffers``, chained in order (2.7.5.3)."""
    return b"".join(
        pack_desc(b.addr, b.length,
                  (spec.VIRTQ_DESC_F_WRITE if b.writable else 0)
                  | (spec.VIRTQ_DESC_F_NEXT if i + 1 < len(buffers) else 0),
                  i + 1 if i + 1 < len(buffers) else 0)
        for i, b in enumerate(buffers))


def parse_used(ring: bytes, size: int) -> tuple[int, int, list[tuple[int, int]]]:
    """A used ring as read from memory: (flags, idx, [(id, len)] for every slot)."""
    flags, idx = struct.unpack_from("<HH", ring)
    return flags, idx, [_USED_ELEM.unpack_from(ring, 4 + 8 * k) for k in range(size)]


class UsedRingError(Exception):
    """The device wrote a used entry the driver cannot match to an available chain."""


@dataclass
class DeferredUse:
    """Driver state of a burst whose used entries are read after the batch ran."""

    last_used: int
    chains: dict[int, tuple[list[int], int | None, Any]]
    free: list[int]
    avail_idx: int
