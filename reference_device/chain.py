"""Walking descriptor chains: split (2.7.5) and packed (2.8.5-2.8.7) formats.

Both walkers are pure functions over guest memory.  They return the buffer as
a list of ``(offset, length)`` pairs (offsets into ``mem.buf``, already range
checked) with the device-readable elements first, and how many of them are
readable.  A malformed chain raises :class:`ChainError`; the caller turns that
into DEVICE_NEEDS_RESET (2.1.2).
"""

from __future__ import annotations

import struct

from conformance import spec

from .memory import GuestMemory

_DESC = struct.Struct("<QIHH")  # split: addr, len, flags, next; packed: addr, len, id, flags
_NEXT = spec.VIRTQ_DESC_F_NEXT
_WRITE = spec.VIRTQ_DESC_F_WRITE
_INDIRECT = spec.VIRTQ_DESC_F_INDIRECT
_AVAIL = spec.VIRTQ_DESC_F_AVAIL
_USED = spec.VIRTQ_DESC_F_USED

Segments = list[tuple[int, int]]


class ChainError(Exception):
    """The driver made a malformed buffer available; ``section`` names the rule."""

    def __init__(self, message: str, section: str):
        super().__init__(f"{message} ({section})")
        self.section = section


def _dma(mem: GuestMemory, addr: int, length: int, what: str) -> int:
    off = addr - mem.base
    if off < 0 or off + length > mem.size:
        raise ChainError(f"{what} [{addr:#x}, +{length:#x}) is outside guest memory",
                         "2.7.5 The Virtqueue Descriptor Table")
    return off


def walk_split(mem: GuestMemory, desc_addr: int, queue_size: int, head: int,
               indirect_ok: bool, defects: tuple[str, ...] = ()) -> tuple[Segments, int]:
    """Collect the chain starting at descriptor ``head`` of a split queue.

    Rules enforced: indices inside the table; no more descriptors than the table
    holds (a longer walk means a loop, 2.7.5.2); readable before writable (2.7.4.2);
    an indirect descriptor only when negotiated, never together with NEXT, never
    inside an indirect table, with a length that is a non-zero multiple of 16
    (2.7.5.3.1); every buffer inside guest memory.  ``defects``: the injectable defects
    in force that live here (reference_device.defects).
    """
    if defects:
        return _walk_split_defective(mem, desc_addr, queue_size, head, indirect_ok, defects)
    buf = mem.buf
    base = mem.base
    msize = mem.size
    unpack = _DESC.unpack_from
    if head >= queue_size:
        raise ChainError(f"head index {head} >= queue size {queue_size}",
                         "2.7.6 The Virtqueue Available Ring")
    table = desc_addr - base
    if table < 0 or table + 16 * queue_size > msize:
        _dma(mem, desc_addr, queue_size * 16, "descriptor table")  # raises
    limit = queue_size
    segs: Segments = []
    nread = 0
    writing = False
    indirect = False
    count = 0
    i = head
    while True:
        count += 1
        if count > limit:
            raise ChainError(f"chain longer than its {limit}-entry table (a loop?)",
                             "2.7.5.2 Driver Requirements: The Virtqueue Descriptor Table")
        addr, length, flags, nxt = unpack(buf, table + 16 * i)
        if flags & _INDIRECT:
            if not indirect_ok:
                raise ChainError("VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC",
                                 "2.7.5.3.1 Driver Requirements: Indirect Descriptors")
            if indirect:
                raise ChainError("VIRTQ_DESC_F_INDIRECT inside an indirect table",
                                 "2.7.5.3.1 Driver Requirements: Indirect Descriptors")
            if flags & _NEXT:
                raise ChainError("VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT",
                                 "2.7.5.3.1 Driver Requirements: Indirect Descriptors")
            if length == 0 or length % 16:
                raise ChainError(f"indirect table length {length} is not a non-zero "
                                 f"multiple of 16", "2.7.5.3 Indirect Descriptors")
            table = _dma(mem, addr, length, "indirect table")
            limit = length // 16
            indirect = True
            count = 0
            i = 0
            continue
        off = addr - base
        if off < 0 or off + length > msize:
            raise ChainError(f"buffer [{addr:#x}, +{length:#x}) is outside guest memory",
                             "2.7.5 The Virtqueue Descriptor Table")
        if flags & _WRITE:
            writing = True
        elif writing:
            raise ChainError("device-readable descriptor after a device-writable one",
                             "2.7.4.2 Driver Requirements: Message Framing")
        else:
            nread += 1
        segs.append((off, length))
        if not flags & _NEXT:
            return segs, nread
        i = nxt
        if i >= limit:
            raise ChainError(f"next index {i} outside the {limit}-entry table",
                             "2.7.5 The Virtqueue Descriptor Table")


def _walk_split_defective(mem: GuestMemory, desc_addr: int, queue_size: int, head: int,
                          indirect_ok: bool, defects: tuple[str, ...]) -> tuple[Segments, int]:
    """:func:`walk_split` with the chain-walking defects (kept apart from the fast path)."""
    buf = mem.buf
    unpack = _DESC.unpack_from
    if head >= queue_size:
        raise ChainError(f"head index {head} >= queue size {queue_size}",
                         "2.7.6 The Virtqueue Available Ring")
    table = _dma(mem, desc_addr, queue_size * 16, "descriptor table")
    limit = queue_size
    segs: Segments = []
    nread = 0
    writing = indirect = False
    count = 0
    i = head
    while True:
        count += 1
        if count > limit:
            raise ChainError(f"chain longer than its {limit}-entry table (a loop?)",
                             "2.7.5.2 Driver Requirements: The Virtqueue Descriptor Table")
        addr, length, flags, nxt = unpack(buf, table + 16 * i)
        tail = bool(segs) and "indirect-chain-tail-rejected" in defects
        if flags & _INDIRECT and not tail:  # (the defect: only a head may be INDIRECT)
            if not indirect_ok or indirect or flags & _NEXT or length == 0 or length % 16:
                raise ChainError("bad indirect descriptor", "2.7.5.3.1 Indirect Descriptors")
            if flags & _WRITE and "indirect-write-flag-honoured" in defects:
                raise ChainError("indirect descriptor with VIRTQ_DESC_F_WRITE (the defect)",
                                 "2.7.5.3.2 Device Requirements: Indirect Descriptors")
            table = _dma(mem, addr, length, "indirect table")
            limit = length // 16
            indirect = True
            count = 0
            i = 1 if "indirect-entry-0-skipped" in defects else 0
            continue
        off = _dma(mem, addr, length, "buffer")
        if flags & _WRITE:
            writing = True
        elif writing:
            raise ChainError("device-readable descriptor after a device-writable one",
                             "2.7.4.2 Driver Requirements: Message Framing")
        else:
            if not segs and length < 16 and "header-needs-own-descriptor" in defects:
                raise ChainError(f"first descriptor of {length} bytes cannot hold the header "
                                 f"(the defect)", "2.6.4 Message Framing")
            nread += 1
        segs.append((off, length))
        if not flags & _NEXT:
            return segs, nread
        if len(segs) == 16 and "chain-truncated-at-16" in defects:
            return segs, nread  # a fixed 16-element array, the rest silently dropped
        if indirect and count == 32 and "indirect-table-truncated" in defects:
            return segs, nread
        i = nxt
        if i >= limit:
            raise ChainError(f"next index {i} outside the {limit}-entry table",
                             "2.7.5 The Virtqueue Descriptor Table")


def packed_desc_is_avail(flags: int, wrap: int) -> bool:
    """2.8.1: available means AVAIL matches the wrap counter and USED does not."""
    return bool(flags & _AVAIL) == bool(wrap) and bool(flags & _USED) != bool(wrap)


def walk_packed(mem: GuestMemory, ring_addr: int, queue_size: int, start: int, wrap: int,
                indirect_ok: bool, defects: tuple[str, ...] = ()
                ) -> tuple[Segments, int, int, int]:
    """Collect the descriptor list that begins at ring slot ``start``.

    The caller has checked that slot ``start`` is available under ``wrap``.  Returns
    ``(segments, readable_count, ring_slots_used, buffer_id)``; the buffer id is
    the one in the last descriptor of the list (2.8.6).  Rules enforced: every
    descriptor of a list available (2.8.6), a list no longer than the queue
    (2.8.17), readable before writable, an indirect descriptor only when negotiated,
    alone (2.8.19) and with a length that is a non-zero multiple of 16.
    """
    buf = mem.buf
    base = mem.base
    msize = mem.size
    unpack = _DESC.unpack_from
    ring = _dma(mem, ring_addr, queue_size * 16, "descriptor ring")
    segs: Segments = []
    nread = 0
    writing = False
    slot = start
    count = 0
    while True:
        addr, length, buf_id, flags = unpack(buf, ring + 16 * slot)
        if count and not packed_desc_is_avail(flags, wrap):
            raise ChainError(f"descriptor list continues into slot {slot}, which is not "
                             f"available", "2.8.6 Next Flag: Descriptor Chaining")
        count += 1
        if flags & _INDIRECT:
            if not indirect_ok:
                raise ChainError("VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC",
                                 "2.8.19 Driver Requirements: Indirect Descriptors")
            if count > 1 or flags & _NEXT:
                raise ChainError("indirect descriptor inside a VIRTQ_DESC_F_NEXT list",
                                 "2.8.19 Driver Requirements: Indirect Descriptors")
            if length == 0 or length % 16:
                raise ChainError(f"indirect table length {length} is not a non-zero "
                                 f"multiple of 16", "2.8.7 Indirect Flag: Scatter-Gather Support")
            if flags & _WRITE and "indirect-write-flag-honoured" in defects:
                raise ChainError("indirect descriptor with VIRTQ_DESC_F_WRITE (the defect)",
                                 "2.8.7 Indirect Flag: Scatter-Gather Support")
            table = _dma(mem, addr, length, "indirect table")
            entries = range(length // 16)
            if "indirect-table-truncated" in defects:
                entries = range(min(length // 16, 32))
            if "indirect-entry-0-skipped" in defects:
                entries = entries[1:]
            # 2.8.7: the entries follow one another; only VIRTQ_DESC_F_WRITE counts,
            # the other flags and the buffer id are reserved and ignored.
            for k in entries:
                e_addr, e_len, e_id, e_flags = unpack(buf, table + 16 * k)
                if "packed-indirect-id-from-table" in defects:
                    buf_id = e_id
                off = e_addr - base
                if off < 0 or off + e_len > msize:
                    raise ChainError(f"buffer [{e_addr:#x}, +{e_len:#x}) is outside guest "
                                     f"memory", "2.8.4 Element Address and Length")
                if e_flags & _WRITE:
                    writing = True
                elif writing:
                    raise ChainError("device-readable element after a device-writable one",
                                     "2.8.17 Driver Requirements: Scatter-Gather Support")
                else:
                    nread += 1
                segs.append((off, e_len))
            return segs, nread, 1, buf_id
        off = addr - base
        if off < 0 or off + length > msize:
            raise ChainError(f"buffer [{addr:#x}, +{length:#x}) is outside guest memory",
                             "2.8.4 Element Address and Length")
        if flags & _WRITE:
            writing = True
        elif writing:
            raise ChainError("device-readable element after a device-writable one",
                             "2.8.17 Driver Requirements: Scatter-Gather Support")
        else:
            nread += 1
        segs.append((off, length))
        if count == 1:
            first_id = buf_id
        if not flags & _NEXT:
            if defects:
                if "packed-id-from-first-descriptor" in defects:
                    buf_id = first_id
                if "packed-chain-reversed" in defects and 0 < nread < len(segs):
                    # the defect: the data elements between header and status come reversed
                    segs = [segs[0]] + segs[1:nread][::-1] + segs[nread:-1][::-1] + [segs[-1]]
            return segs, nread, count, buf_id
        if count >= queue_size:
            raise ChainError(f"descriptor list longer than the queue size {queue_size}",
                             "2.8.17 Driver Requirements: Scatter-Gather Support")
        slot += 1
        if slot == queue_size:
            slot = 0
            wrap ^= 1
