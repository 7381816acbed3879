"""Serving a split virtqueue (2.7 Split Virtqueues).

``process`` consumes every buffer the driver has made available, completes it
and publishes it in the used ring, then decides whether the driver wants a used
buffer notification (2.7.7 Used Buffer Notification Suppression).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from conformance import spec

from .chain import ChainError, Segments, walk_split
from .memory import GuestMemory
from .virtqueue import Virtqueue

_U16 = struct.Struct("<H")
_ELEM = struct.Struct("<II")  # struct virtq_used_elem: le32 id, le32 len

Execute = Callable[[GuestMemory, Segments, int], int]


def event_crossed(event: int, old: int, new: int) -> bool:
    """True when the 16-bit index ``event`` lies in ``[old, new)``, counting mod 2^16.

    2.7.7.2: with VIRTIO_F_EVENT_IDX the device notifies when it wrote the used
    entry whose index equals used_event; having written entries old..new-1 in one
    go, that is the case when used_event is one of them.
    """
    return (event - old) & 0xFFFF < (new - old) & 0xFFFF


def process(q: Virtqueue, mem: GuestMemory, execute: Execute, *, event_idx: bool,
            indirect_ok: bool, no_wrap_defect: bool = False
            ) -> tuple[bool, ChainError | None]:
    """Serve queue ``q``; return (send a used buffer notification?, error or None)."""
    buf = mem.buf
    size = q.size
    avail = q.driver - mem.base
    used = q.device - mem.base
    if avail < 0 or avail + spec.split_avail_size(size) > mem.size:
        return False, ChainError(f"available ring at {q.driver:#x} is outside guest memory",
                                 "2.7.6 The Virtqueue Available Ring")
    if used < 0 or used + spec.split_used_size(size) > mem.size:
        return False, ChainError(f"used ring at {q.device:#x} is outside guest memory",
                                 "2.7.8 The Virtqueue Used Ring")
    u16_from = _U16.unpack_from
    elem_into = _ELEM.pack_into
    u16_into = _U16.pack_into
    ring = avail + spec.SPLIT_AVAIL_RING
    used_ring = used + spec.SPLIT_USED_RING
    used_idx_off = used + spec.SPLIT_USED_IDX
    desc = q.desc
    old_used = used_idx = q.used_idx
    last = q.last_avail
    error: ChainError | None = None
    try:
        while True:
            avail_idx = u16_from(buf, avail + spec.SPLIT_AVAIL_IDX)[0]
            if no_wrap_defect:
                pending = avail_idx - last  # the defect: no mod 2^16, stalls at the wrap
            else:
                pending = (avail_idx - last) & 0xFFFF
            if pending <= 0:
                break
            if pending > size:
                raise ChainError(f"avail idx {avail_idx} is {pending} ahead of the device's "
                                 f"{last}, more than the queue size {size}",
                                 "2.7.6 The Virtqueue Available Ring")
            for _ in range(pending):
                head = u16_from(buf, ring + 2 * (last % size))[0]
                segs, nread = walk_split(mem, desc, size, head, indirect_ok)
                length = execute(mem, segs, nread)
                # 2.7.8.2: set len before publishing the entry through idx
                elem_into(buf, used_ring + 8 * (used_idx % size), head, length)
                used_idx = (used_idx + 1) & 0xFFFF
                u16_into(buf, used_idx_off, used_idx)
                last = (last + 1) & 0xFFFF
                q.last_avail = last
                q.used_idx = used_idx
    except ChainError as e:
        error = e
    if event_idx:
        # 2.7.10: avail_event tells the driver which avail index to notify us about:
        # the next one we have not seen yet.
        u16_into(buf, used_ring + 8 * size, last)
    done = (used_idx - old_used) & 0xFFFF
    q.completed += done
    if not done:
        return False, error
    if event_idx:
        used_event = u16_from(buf, ring + 2 * size)[0]
        return event_crossed(used_event, old_used, used_idx), error
    flags = u16_from(buf, avail + spec.SPLIT_AVAIL_FLAGS)[0]
    return not flags & spec.VIRTQ_AVAIL_F_NO_INTERRUPT, error
