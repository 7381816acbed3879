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


def scribble_header(buf: bytearray, segs: Segments, nread: int) -> None:
    """The readable-header-scribbled defect: the sector field of a request header that has
    a descriptor of its own is zeroed in guest memory after use (a normalised header
    written back in place)."""
    if nread and segs[0][1] >= 16:
        off = segs[0][0]
        buf[off + 8:off + 16] = bytes(8)


def process(q: Virtqueue, mem: GuestMemory, execute: Execute, *, event_idx: bool,
            indirect_ok: bool, no_wrap_defect: bool = False, defects: tuple[str, ...] = ()
            ) -> tuple[bool, ChainError | None]:
    """Serve queue ``q``; return (send a used buffer notification?, error or None).

    ``defects`` are the injectable defect names in force (reference_device.defects).
    """
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
    d_slot_id = "used-id-is-ring-slot" in defects
    d_desc_len = "desc-len-overwritten" in defects
    d_reversed = "in-order-reversed" in defects
    d_scribble = "readable-header-scribbled" in defects
    try:
        first = True
        while True:
            avail_idx = u16_from(buf, avail + spec.SPLIT_AVAIL_IDX)[0]
            if no_wrap_defect:
                pending = avail_idx - last  # the defect: no mod 2^16, stalls at the wrap
            else:
                pending = (avail_idx - last) & 0xFFFF
            if pending <= 0:
                if first and "spurious-notify-needs-reset" in defects:
                    raise ChainError("notification with no new buffer (the defect)",
                                     "2.7.10 Available Buffer Notification Suppression")
                break
            first = False
            if pending > size:
                raise ChainError(f"avail idx {avail_idx} is {pending} ahead of the device's "
                                 f"{last}, more than the queue size {size}",
                                 "2.7.6 The Virtqueue Available Ring")
            # (the in-order-reversed defect uses each notification's buffers last first)
            order = range(pending - 1, -1, -1) if d_reversed else range(pending)
            for k in order:
                slot = (last + k) % size
                head = u16_from(buf, ring + 2 * slot)[0]
                segs, nread = walk_split(mem, desc, size, head, indirect_ok, defects)
                length = execute(mem, segs, nread)
                if d_scribble:
                    scribble_header(buf, segs, nread)
                if d_desc_len:  # the defect: the used length lands in the head descriptor
                    struct.pack_into("<I", buf, desc - mem.base + 16 * head + 8, length)
                # 2.7.8.2: set len before publishing the entry through idx
                elem_into(buf, used_ring + 8 * (used_idx % size),
                          slot if d_slot_id else head, length)
                used_idx = (used_idx + 1) & 0xFFFF
                u16_into(buf, used_idx_off, used_idx)
                q.used_idx = used_idx
                if not d_reversed:
                    q.last_avail = (last + k + 1) & 0xFFFF
            last = (last + pending) & 0xFFFF
            q.last_avail = last
    except ChainError as e:
        error = e
    last = q.last_avail
    if event_idx:
        # 2.7.10: avail_event tells the driver which avail index to notify us about:
        # the next one we have not seen yet.
        ahead = 1 if "avail-event-off-by-one" in defects else 0
        u16_into(buf, used_ring + 8 * size, (last + ahead) & 0xFFFF)
    if "used-flags-no-notify-with-event-idx" in defects and event_idx:
        u16_into(buf, used + spec.SPLIT_USED_FLAGS, spec.VIRTQ_USED_F_NO_NOTIFY)
    if "used-flags-busy-bit" in defects and not event_idx:
        u16_into(buf, used + spec.SPLIT_USED_FLAGS, 0x8000)
    done = (used_idx - old_used) & 0xFFFF
    q.completed += done
    if not done:
        return False, error
    return should_notify(buf, avail, ring + 2 * size, size, old_used, used_idx, event_idx,
                         defects), error


def should_notify(buf: bytearray, avail: int, used_event_off: int, size: int, old: int,
                  new: int, event_idx: bool, defects: tuple[str, ...]) -> bool:
    """2.7.7.2: after used entries old..new-1, does the driver want a notification?"""
    flags = _U16.unpack_from(buf, avail + spec.SPLIT_AVAIL_FLAGS)[0]
    used_event = _U16.unpack_from(buf, used_event_off)[0]
    if event_idx:
        if "event-idx-always-notify" in defects:
            return True
        if "event-idx-honours-no-interrupt" in defects and flags & spec.VIRTQ_AVAIL_F_NO_INTERRUPT:
            return False
        if "used-event-off-by-one" in defects:
            used_event = (used_event - 1) & 0xFFFF  # notifies when idx reaches used_event
        if "used-event-last-entry-only" in defects:
            return (new - 1) & 0xFFFF == used_event
        return event_crossed(used_event, old, new)
    if "used-event-without-event-idx" in defects and not event_crossed(used_event, old, new):
        return False
    if "notify-every-other-batch" in defects and new % 2:
        return False  # interrupt moderation: only every second used index
    if "no-interrupt-flag-ignored" in defects:
        return True
    return not flags & spec.VIRTQ_AVAIL_F_NO_INTERRUPT
