"""Driver side of a packed virtqueue (2.8 Packed Virtqueues)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from conformance import spec
from conformance.driver.platform import MemRead, MemWrite, Op, Poll
from conformance.driver.split import UsedRingError
from conformance.driver.virtqueue import Buffer, QueueLayout, UsedElem, Virtqueue

_DESC = struct.Struct("<QIHH")  # addr, len, id, flags (2.8.13)
_AVAIL_USED = spec.VIRTQ_DESC_F_AVAIL | spec.VIRTQ_DESC_F_USED


def pack_desc(addr: int, length: int, id_: int, flags: int) -> bytes:
    return _DESC.pack(addr, length, id_, flags)


def avail_flags(wrap: bool) -> int:
    """2.8.1: available means AVAIL == wrap counter and USED != wrap counter."""
    return spec.VIRTQ_DESC_F_AVAIL if wrap else spec.VIRTQ_DESC_F_USED


class PackedQueue(Virtqueue):
    kind = "packed"

    def allocate(self) -> QueueLayout:
        n = self.size
        desc = self.pool.alloc(n * spec.VIRTQ_DESC_SIZE, spec.PACKED_DESC_ALIGN * 4)
        driver = self.pool.alloc(spec.PACKED_EVENT_SIZE, spec.PACKED_EVENT_ALIGN)
        device = self.pool.alloc(spec.PACKED_EVENT_SIZE, spec.PACKED_EVENT_ALIGN)
        self.platform.execute([
            MemWrite(desc, bytes(n * spec.VIRTQ_DESC_SIZE)),
            MemWrite(driver, bytes(4)),
            MemWrite(device, bytes(4)),
        ])
        self.next_avail = 0
        self.avail_wrap = True  # 2.8.1: both wrap counters start at 1
        self.next_used = 0
        self.used_wrap = True
        self.free_ids: list[int] = list(range(n - 1, -1, -1))
        self.slots_free = n
        self.chains: dict[int, tuple[int, int | None, Any]] = {}  # id -> (ring slots, table, token)
        return QueueLayout(desc, driver, device)

    def desc_addr(self, i: int) -> int:
        return self.layout.desc + spec.VIRTQ_DESC_SIZE * i

    # --- raw ops ------------------------------------------------------------------
    def desc_op(self, i: int, addr: int, length: int, id_: int, flags: int) -> Op:
        return MemWrite(self.desc_addr(i), pack_desc(addr, length, id_, flags))

    def driver_event_op(self, flags: int, off_wrap: int = 0) -> Op:
        """The driver event suppression structure (2.8.10): le16 off_wrap, le16 flags."""
        return MemWrite(self.layout.driver, struct.pack("<HH", off_wrap, flags))

    # --- making buffers available ------------------------------------------------
    def num_free(self) -> int:
        return min(self.slots_free, len(self.free_ids))

    def add(self, buffers: Sequence[Buffer], token: Any, indirect: bool = False) -> list[Op]:
        if not buffers:
            raise ValueError("a chain needs at least one buffer")
        ops: list[Op] = []
        table = None
        id_ = self.free_ids.pop()
        if indirect:
            # 2.8.13 Indirect Flag: a table of packed descriptors; only WRITE is meaningful.
            table = self.pool.alloc(spec.VIRTQ_DESC_SIZE * len(buffers), 16)
            ops.append(MemWrite(table, b"".join(
                pack_desc(b.addr, b.length, 0, spec.VIRTQ_DESC_F_WRITE if b.writable else 0)
                for b in buffers)))
            ring = [(table, spec.VIRTQ_DESC_SIZE * len(buffers), spec.VIRTQ_DESC_F_INDIRECT)]
        else:
            ring = [(b.addr, b.length, spec.VIRTQ_DESC_F_WRITE if b.writable else 0)
                    for b in buffers]
        if len(ring) > self.slots_free:
            self.free_ids.append(id_)
            raise ValueError(f"chain of {len(ring)} does not fit {self.slots_free} free slots")
        head_op = None
        for i, (addr, length, flags) in enumerate(ring):
            if i + 1 < len(ring):
                flags |= spec.VIRTQ_DESC_F_NEXT
            flags |= avail_flags(self.avail_wrap)
            op = self.desc_op(self.next_avail, addr, length, id_, flags)
            if i == 0:
                head_op = op  # 2.8.21.1: the head's flags are written last
            else:
                ops.append(op)
            self.next_avail += 1
            if self.next_avail == self.size:
                self.next_avail = 0
                self.avail_wrap = not self.avail_wrap
        assert head_op is not None
        ops.append(head_op)
        self.slots_free -= len(ring)
        self.chains[id_] = (len(ring), table, token)
        return ops

    # --- hand-built lists (cases that need a layout add() does not make) ---------------
    def take_id(self) -> int:
        """A free buffer ID for :meth:`add_descs`."""
        return self.free_ids.pop()

    def add_descs(self, entries: Sequence[tuple[int, int, int, int]], token: Any,
                  table: int | None = None) -> list[Op]:
        """Ops that place raw ``(addr, len, flags, id)`` descriptors as one list.

        AVAIL/USED (for the current wrap counter) and NEXT are added; the other
        flags and every ID are the caller's.  The list is tracked under the ID of
        its last descriptor (2.8.6), which must come from :meth:`take_id`;
        ``table`` is a pool block released when the list is used.  The head's
        flags are written last (2.8.21.1).
        """
        id_ = entries[-1][3]
        if id_ in self.free_ids or id_ in self.chains:
            raise ValueError(f"buffer id {id_} was not taken with take_id()")
        if len(entries) > self.slots_free:
            raise ValueError(f"list of {len(entries)} does not fit {self.slots_free} free slots")
        ops: list[Op] = []
        head_op = None
        for i, (addr, length, flags, desc_id) in enumerate(entries):
            if i + 1 < len(entries):
                flags |= spec.VIRTQ_DESC_F_NEXT
            op = self.desc_op(self.next_avail, addr, length, desc_id,
                              flags | avail_flags(self.avail_wrap))
            if i == 0:
                head_op = op
            else:
                ops.append(op)
            self.next_avail += 1
            if self.next_avail == self.size:
                self.next_avail = 0
                self.avail_wrap = not self.avail_wrap
        assert head_op is not None
        ops.append(head_op)
        self.slots_free -= len(entries)
        self.chains[id_] = (len(entries), table, token)
        return ops

    def kick_value(self) -> int:
        vqn = self.index if self.notify_config_data is None else self.notify_config_data
        if self.notification_data:
            # 2.9: vqn, next_off (15 bits), next_wrap (1 bit)
            return vqn | (self.next_avail & 0x7FFF) << 16 | int(self.avail_wrap) << 31
        return vqn

    # --- consuming used buffers -------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self.chains)

    def _position_after(self, slots: int) -> tuple[int, bool]:
        pos, wrap = self.next_used + slots, self.used_wrap
        while pos >= self.size:
            pos -= self.size
            wrap = not wrap
        return pos, wrap

    def wait_ops(self, count: int, timeout: float) -> list[Op]:
        lengths = {n for n, _, _ in self.chains.values()}
        if len(lengths) == 1 and count <= self.in_flight:
            # Every chain has the same length, so the k-th used descriptor is at
            # next_used + k * length whatever order the device picks (2.8.7).
            pos, wrap = self._position_after((count - 1) * lengths.pop())
        else:
            pos, wrap = self.next_used, self.used_wrap
        want = _AVAIL_USED if wrap else 0
        poll = Poll(self.desc_addr(pos) + 14, 2, _AVAIL_USED, want, True, timeout)
        return [poll, MemRead(self.layout.desc, self.size * spec.VIRTQ_DESC_SIZE)]

    def waits_for_all(self, count: int) -> bool:
        lengths = {n for n, _, _ in self.chains.values()}
        return count == self.in_flight and len(lengths) == 1

    def collect(self, ring: bytes) -> list[UsedElem]:
        out = []
        while self.chains:
            _, length, id_, flags = _DESC.unpack_from(ring, self.next_used * spec.VIRTQ_DESC_SIZE)
            want = _AVAIL_USED if self.used_wrap else 0
            if flags & _AVAIL_USED != want:
                break
            chain = self.chains.pop(id_, None)
            if chain is None:
                raise UsedRingError(f"queue {self.index}: used descriptor at {self.next_used} "
                                    f"names buffer id {id_}, which is not in flight (2.8.7)")
            slots, table, token = chain
            self.free_ids.append(id_)
            self.slots_free += slots
            if table is not None:
                self.pool.free(table)
            out.append(UsedElem(id_, length, token))
            self.next_used, self.used_wrap = self._position_after(slots)
        return out

    def describe(self) -> str:
        r = self.platform.execute([
            MemRead(self.layout.driver, 4), MemRead(self.layout.device, 4),
            MemRead(self.layout.desc, self.size * spec.VIRTQ_DESC_SIZE),
        ])
        drv_off, drv_flags = struct.unpack("<HH", r[0])
        dev_off, dev_flags = struct.unpack("<HH", r[1])
        lines = [
            f"packed queue {self.index} size {self.size}: driver event off_wrap={drv_off:#x} "
            f"flags={drv_flags}; device event off_wrap={dev_off:#x} flags={dev_flags}",
            f"driver: next avail {self.next_avail} wrap {int(self.avail_wrap)}, next used "
            f"{self.next_used} wrap {int(self.used_wrap)}, {self.in_flight} chain(s) in flight",
        ]
        ring: bytes = r[2]  # type: ignore[assignment]
        for k in range(min(self.size, 6)):
            i = (self.next_used + k) % self.size
            addr, length, id_, flags = _DESC.unpack_from(ring, i * spec.VIRTQ_DESC_SIZE)
            lines.append(f"  desc[{i}] addr={addr:#x} len={length} id={id_} flags={flags:#06x}")
        return "\n".join(lines)
