"""Serving a packed virtqueue (2.8 Packed Virtqueues).

The device looks at one slot at a time (2.8.2): when its flags say available
under the Driver Ring Wrap Counter the device expects, it reads the whole list,
executes it and writes one used descriptor for the list in the next used slot,
then skips the rest of the list (2.8.6).  Used buffer notifications follow the
Driver Event Suppression structure in the Driver Area (2.8.10, 2.8.14).
"""

from __future__ import annotations

import struct

from conformance import spec

from .chain import ChainError, packed_desc_is_avail, walk_packed
from .memory import GuestMemory
from .split_ring import Execute, scribble_header
from .virtqueue import Virtqueue

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_LEN_ID = struct.Struct("<IH")  # len at +8, id at +12
_EVENT = struct.Struct("<HH")  # off_wrap, flags
_AVAIL = spec.VIRTQ_DESC_F_AVAIL
_USED = spec.VIRTQ_DESC_F_USED
_WRITE = spec.VIRTQ_DESC_F_WRITE


def ring_position(slot: int, wrap: int, size: int) -> int:
    """A slot and wrap counter as one number counting mod 2 * size.

    The wrap counter starts at 1 and flips each time the ring is passed, so the
    pair (slot, wrap) runs through 2 * size distinct states in order.
    """
    return slot if wrap else slot + size


def event_due(off_wrap: int, old: tuple[int, int], new: tuple[int, int], size: int) -> bool:
    """RING_EVENT_FLAGS_DESC: did the device pass the slot in ``off_wrap`` going old -> new?

    ``old`` and ``new`` are (used slot, used wrap counter) before and after a batch;
    the event descriptor counts as used if it is among the slots the batch covered.
    """
    ev_slot = off_wrap & spec.PACKED_EVENT_OFF_MASK
    ev_wrap = off_wrap >> spec.PACKED_EVENT_WRAP_SHIFT & 1
    period = 2 * size
    start = ring_position(*old, size)
    ev = (ring_position(ev_slot, ev_wrap, size) - start) % period
    return ev < (ring_position(*new, size) - start) % period


def process(q: Virtqueue, mem: GuestMemory, execute: Execute, *, event_idx: bool,
            indirect_ok: bool, defects: tuple[str, ...] = ()) -> tuple[bool, ChainError | None]:
    """Serve queue ``q``; return (send a used buffer notification?, error or None).

    ``defects`` are the injectable defect names in force (reference_device.defects).
    """
    buf = mem.buf
    size = q.size
    ring = q.desc - mem.base
    if ring < 0 or ring + spec.PACKED_DESC_SIZE * size > mem.size:
        return False, ChainError(f"descriptor ring at {q.desc:#x} is outside guest memory",
                                 "2.8.10.1 Structure Size and Alignment")
    u16_from = _U16.unpack_from
    u16_into = _U16.pack_into
    len_id_into = _LEN_ID.pack_into
    desc = q.desc
    slot, wrap = q.avail_slot, q.avail_wrap
    uslot, uwrap = q.used_slot, q.used_wrap
    old = (uslot, uwrap)
    done = 0
    error: ChainError | None = None
    is_avail = _availability_check(defects)
    try:
        while True:
            flags = u16_from(buf, ring + 16 * slot + spec.PACKED_DESC_FLAGS)[0]
            if not is_avail(flags, wrap):
                if done or "packed-scan-ahead" not in defects:
                    break
                found = _scan_ahead(buf, ring, size, slot, wrap)
                if found is None:
                    break
                slot, wrap = found  # the defect: a later list is taken out of ring order
            segs, nread, ndesc, buf_id = walk_packed(mem, desc, size, slot, wrap, indirect_ok,
                                                     defects)
            length = execute(mem, segs, nread)
            d = ring + 16 * uslot
            if defects:
                _used_desc_defects(buf, q, segs, nread, d, length, defects)
            if "packed-len-not-written" in defects:
                u16_into(buf, d + spec.PACKED_DESC_ID, buf_id)
            else:
                len_id_into(buf, d + spec.PACKED_DESC_LEN, length, buf_id)
            # 2.8.1: a used descriptor has AVAIL and USED both equal to the device's
            # wrap counter; 2.8.3: WRITE says whether anything was written.
            used_flags = (_AVAIL | _USED) if uwrap else 0
            if length > (1 if "packed-write-flag-only-with-data" in defects else 0) and \
                    "packed-write-flag-never" not in defects:
                used_flags |= _WRITE
            u16_into(buf, d + spec.PACKED_DESC_FLAGS, used_flags)
            done += 1
            slot += ndesc
            if slot >= size:
                slot -= size
                wrap ^= 1
            uslot += 1 if "packed-no-skip" in defects else ndesc
            if uslot >= size:
                uslot -= size
                if "packed-wrap-counter-stuck" not in defects:
                    uwrap ^= 1
            q.avail_slot, q.avail_wrap = slot, wrap
            q.used_slot, q.used_wrap = uslot, uwrap
    except ChainError as e:
        error = e
    q.completed += done
    if not done:
        return False, error
    drv = q.driver - mem.base
    if drv < 0 or drv + spec.PACKED_EVENT_SIZE > mem.size:
        return True, error or ChainError(
            f"driver event suppression area at {q.driver:#x} is outside guest memory",
            "2.8.10.1 Structure Size and Alignment")
    off_wrap, eflags = _EVENT.unpack_from(buf, drv)
    mode = eflags & spec.RING_EVENT_FLAGS_MASK
    if "packed-event-flags-swapped" in defects and mode < 2:
        mode ^= 1  # the defect: ENABLE (0) and DISABLE (1) mixed up
    if mode == spec.RING_EVENT_FLAGS_DISABLE:
        return False, error
    if mode == spec.RING_EVENT_FLAGS_DESC and event_idx:
        if "packed-event-desc-off-by-one" in defects:  # the defect: one slot early
            pos = ring_position(off_wrap & spec.PACKED_EVENT_OFF_MASK,
                                off_wrap >> spec.PACKED_EVENT_WRAP_SHIFT & 1, size)
            pos = (pos - 1) % (2 * size)
            off_wrap = pos % size | int(pos < size) << spec.PACKED_EVENT_WRAP_SHIFT
        return event_due(off_wrap, old, (uslot, uwrap), size), error
    # ENABLE; DESC without VIRTIO_F_EVENT_IDX and the reserved value 3 are not valid
    # requests to be quiet, so the device errs on the side of notifying.
    return True, error


def _availability_check(defects: tuple[str, ...]):
    """2.8.1 availability, or the flag-half of it a defect looks at."""
    if "packed-avail-bit-only" in defects:
        return lambda flags, wrap: bool(flags & _AVAIL) == bool(wrap)
    if "packed-used-bit-only" in defects:
        return lambda flags, wrap: bool(flags & _USED) != bool(wrap)
    return packed_desc_is_avail


def _scan_ahead(buf: bytearray, ring: int, size: int, slot: int, wrap: int
                ) -> tuple[int, int] | None:
    """The packed-scan-ahead defect: the next available slot after ``slot``, if any."""
    for k in range(1, size):
        s, w = slot + k, wrap
        if s >= size:
            s, w = s - size, w ^ 1
        if packed_desc_is_avail(_U16.unpack_from(buf, ring + 16 * s + 14)[0], w):
            return s, w
    return None


def _used_desc_defects(buf: bytearray, q: Virtqueue, segs, nread: int, d: int, length: int,
                       defects: tuple[str, ...]) -> None:
    """Defects around writing a used descriptor at ring offset ``d``."""
    if "readable-header-scribbled" in defects:
        scribble_header(buf, segs, nread)
    if "packed-rewrite-previous-used" in defects:
        if q.last_used_desc is not None:  # the defect: the previous one gets this length too
            _U32.pack_into(buf, q.last_used_desc + spec.PACKED_DESC_LEN, length)
        q.last_used_desc = d
