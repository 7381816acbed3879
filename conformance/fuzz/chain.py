"""A request as a driver lays it out in descriptors, written down as plain data.

The robustness tier and the fuzzer both send requests a well-behaved driver
never would: a header cut short, a status byte in a device-readable
descriptor, a ``next`` that loops, an indirect table inside an indirect table,
a buffer beyond guest memory.  :class:`ChainSpec` describes such a request
without touching a device: the buffers (device-readable ones with their
content, device-writable ones that the executor fills with poison), the
descriptors exactly as they are written into the ring (any flags, any
``next``, any address), indirect tables, and what goes into the available ring.
``conformance.fuzz.rawring`` puts it into a live queue and observes what the
device did.

Everything is JSON-serializable (:func:`chain_to_json` / :func:`chain_from_json`)
so a reproducer file can carry the exact chain that made a device misbehave.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from conformance import spec

NEXT = spec.VIRTQ_DESC_F_NEXT
WRITE = spec.VIRTQ_DESC_F_WRITE
INDIRECT = spec.VIRTQ_DESC_F_INDIRECT


@dataclass(frozen=True)
class BufferSpec:
    """One buffer in guest memory, holding ``content`` zero padded to ``length``.

    A device-writable buffer without content is filled with poison before the
    request; with content it holds that (a case that puts a header where the
    device must not read it).
    """

    length: int
    writable: bool
    content: bytes = b""


@dataclass(frozen=True)
class DescSpec:
    """One descriptor as written into a descriptor table or the packed ring.

    Where it points: ``buffer`` (+ ``offset``) names a :class:`BufferSpec`;
    ``table`` names an indirect table of the chain; ``alias`` is bit k of an
    address that aliases a guard zone (guard zone + 2**k, beyond guest memory:
    a device that truncates addresses writes into the zone); ``bar`` points
    ``offset`` bytes into one of the device's own BARs (DMA at its own
    registers); otherwise ``addr`` is taken as an absolute bus address.
    ``flags`` are written as given, except that in a packed ring AVAIL/USED
    come from the driver's wrap counter unless ``raw_flags`` is set.
    """

    length: int
    flags: int = 0
    buffer: int | None = None
    offset: int = 0
    table: int | None = None
    alias: int | None = None
    bar: int | None = None
    addr: int = 0
    next: int = 0  # split: index of the next descriptor in the same table
    id: int = 0  # packed: buffer id
    raw_flags: bool = False


@dataclass(frozen=True)
class ChainSpec:
    """A request (or several chains sharing descriptors) as the driver writes it.

    ``descs`` are split descriptor table entries 0..n-1, or packed ring slots
    starting at the driver's next available slot.  ``heads`` go into the split
    available ring, and the available index then moves by ``avail_advance``
    (default: one per head).  In a packed ring ``chains`` says how many
    buffers the device should find (default 1).  ``status`` is where the driver
    expects the status byte ((buffer, offset)); ``None`` when the layout has
    no place for one.  ``disk_writes`` are the sector ranges the request may
    change on disk; any other sector that changes is corruption.
    """

    buffers: tuple[BufferSpec, ...]
    descs: tuple[DescSpec, ...]
    tables: tuple[tuple[DescSpec, ...], ...] = ()
    heads: tuple[int, ...] = (0,)
    avail_advance: int | None = None
    chains: int = 1
    status: tuple[int, int] | None = None
    disk_writes: tuple[tuple[int, int], ...] = ()
    note: str = ""
    avail_flags: int = 0  # split: the available ring's flags
    used_event: int | None = None  # split: used_event, counted from the driver's used idx

    @property
    def advance(self) -> int:
        return len(self.heads) if self.avail_advance is None else self.avail_advance

    @property
    def expected_used(self) -> int:
        """How many used entries a device that accepts everything would write."""
        return self.chains if not self.heads else len(self.heads)

    def writable_total(self) -> int:
        return sum(b.length for b in self.buffers if b.writable)

    def with_desc(self, index: int, **changes: Any) -> ChainSpec:
        descs = list(self.descs)
        descs[index] = replace(descs[index], **changes)
        return replace(self, descs=tuple(descs))

    def with_table_desc(self, which: int, index: int, **changes: Any) -> ChainSpec:
        tables = [list(t) for t in self.tables]
        tables[which][index] = replace(tables[which][index], **changes)
        return replace(self, tables=tuple(tuple(t) for t in tables))


# --- well-formed requests -------------------------------------------------------------


def header(type_: int, sector: int = 0, reserved: int = 0) -> bytes:
    """struct virtio_blk_req's 16-byte device-readable header (5.2.6)."""
    return struct.pack("<IIQ", type_ & 0xFFFFFFFF, reserved & 0xFFFFFFFF,
                       sector & 0xFFFFFFFFFFFFFFFF)


def segment(sector: int, num_sectors: int, flags: int = 0) -> bytes:
    """struct virtio_blk_discard_write_zeroes (5.2.6)."""
    return struct.pack("<QII", sector & 0xFFFFFFFFFFFFFFFF, num_sectors & 0xFFFFFFFF,
                       flags & 0xFFFFFFFF)


def _split(total: int, parts: Sequence[int] | None) -> list[int]:
    if parts is None:
        return [total] if total else []
    if sum(parts) != total:
        raise ValueError(f"descriptor lengths {list(parts)} do not add up to {total}")
    return list(parts)


def request_chain(readable: bytes, writable_len: int, *,
                  readable_split: Sequence[int] | None = None,
                  writable_split: Sequence[int] | None = None,
                  indirect: bool = False,
                  disk_writes: Sequence[tuple[int, int]] = ()) -> ChainSpec:
    """A well-formed chain: ``readable`` (header + data) then ``writable_len``
    device-writable bytes whose last one is the status byte (2.7.4 Message Framing).

    Each descriptor gets a buffer of its own, so guard bytes sit between any
    two of them.  By default the readable part is one descriptor and so is the
    writable part; ``*_split`` give explicit descriptor lengths.  ``indirect``
    puts the descriptors in one indirect table behind a single descriptor.
    """
    r = _split(len(readable), readable_split)
    w = _split(writable_len, writable_split)
    buffers: list[BufferSpec] = []
    pos = 0
    for n in r:
        buffers.append(BufferSpec(n, False, readable[pos:pos + n]))
        pos += n
    for n in w:
        buffers.append(BufferSpec(n, True))
    descs = []
    for i, b in enumerate(buffers):
        last = i + 1 == len(buffers)
        flags = (WRITE if b.writable else 0) | (0 if last else NEXT)
        descs.append(DescSpec(b.length, flags, buffer=i, next=0 if last else i + 1))
    status = _last_writable(buffers)
    if indirect:
        head = DescSpec(16 * len(descs), INDIRECT, table=0)
        return ChainSpec(tuple(buffers), (head,), (tuple(descs),), status=status,
                         disk_writes=tuple(disk_writes))
    return ChainSpec(tuple(buffers), tuple(descs), status=status, disk_writes=tuple(disk_writes))


def _last_writable(buffers: Sequence[BufferSpec]) -> tuple[int, int] | None:
    for i in range(len(buffers) - 1, -1, -1):
        b = buffers[i]
        if b.writable and b.length:
            return (i, b.length - 1)
    return None


def blk_chain(type_: int, sector: int = 0, data: bytes = b"", read_len: int = 0, *,
              reserved: int = 0, status_len: int = 1, **kw: Any) -> ChainSpec:
    """A block request: header, ``data`` (device-readable), ``read_len`` bytes to
    fill and a status of ``status_len`` bytes (1 for a well-formed request)."""
    writes: list[tuple[int, int]] = []
    if type_ == spec.VIRTIO_BLK_T_OUT and data:
        writes.append((sector, -(-len(data) // spec.SECTOR_SIZE)))
    elif type_ in (spec.VIRTIO_BLK_T_DISCARD, spec.VIRTIO_BLK_T_WRITE_ZEROES,
                   spec.VIRTIO_BLK_T_SECURE_ERASE):
        for off in range(0, len(data) - len(data) % 16, 16):
            s, n, _f = struct.unpack_from("<QII", data, off)
            writes.append((s, n))
    kw.setdefault("disk_writes", tuple(writes))
    return request_chain(header(type_, sector, reserved) + data, read_len + status_len, **kw)


# --- JSON -------------------------------------------------------------------------------


def _desc_to_json(d: DescSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"length": d.length, "flags": d.flags}
    defaults = DescSpec(0)
    for name in ("buffer", "offset", "table", "alias", "bar", "addr", "next", "id",
                 "raw_flags"):
        value = getattr(d, name)
        if value != getattr(defaults, name):
            out[name] = value
    return out


def chain_to_json(c: ChainSpec) -> dict[str, Any]:
    return {
        "buffers": [{"length": b.length, "writable": b.writable, "content": b.content.hex()}
                    for b in c.buffers],
        "descs": [_desc_to_json(d) for d in c.descs],
        "tables": [[_desc_to_json(d) for d in t] for t in c.tables],
        "heads": list(c.heads),
        "avail_advance": c.avail_advance,
        "chains": c.chains,
        "status": list(c.status) if c.status is not None else None,
        "disk_writes": [list(w) for w in c.disk_writes],
        "note": c.note,
        "avail_flags": c.avail_flags,
        "used_event": c.used_event,
    }


class ChainFormatError(ValueError):
    """A chain description in a file is malformed; the message names the field."""


def _desc_from_json(d: Any, where: str) -> DescSpec:
    if not isinstance(d, dict) or "length" not in d:
        raise ChainFormatError(f"{where}: expected an object with at least 'length'")
    known = set(DescSpec.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ChainFormatError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return DescSpec(**d)


def chain_from_json(data: Any, where: str = "chain") -> ChainSpec:
    if not isinstance(data, dict):
        raise ChainFormatError(f"{where}: expected an object")
    try:
        buffers = tuple(BufferSpec(int(b["length"]), bool(b["writable"]),
                                   bytes.fromhex(b.get("content", "")))
                        for b in data["buffers"])
        descs = tuple(_desc_from_json(d, f"{where}.descs[{i}]")
                      for i, d in enumerate(data["descs"]))
        tables = tuple(tuple(_desc_from_json(d, f"{where}.tables[{t}][{i}]")
                             for i, d in enumerate(table))
                       for t, table in enumerate(data.get("tables", [])))
        status = data.get("status")
        return ChainSpec(
            buffers=buffers, descs=descs, tables=tables,
            heads=tuple(int(h) for h in data.get("heads", [0])),
            avail_advance=data.get("avail_advance"),
            chains=int(data.get("chains", 1)),
            status=(int(status[0]), int(status[1])) if status is not None else None,
            disk_writes=tuple((int(a), int(b)) for a, b in data.get("disk_writes", [])),
            note=str(data.get("note", "")),
            avail_flags=int(data.get("avail_flags", 0)),
            used_event=data.get("used_event"),
        )
    except ChainFormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainFormatError(f"{where}: malformed chain description ({exc})") from None


@dataclass(frozen=True)
class QueueSetup:
    """How the queue the chain goes into is set up (part of a reproducer)."""

    packed: bool = False
    queue_size: int = 16
    indirect: bool = True  # negotiate VIRTIO_F_INDIRECT_DESC when offered
    event_idx: bool = True  # negotiate VIRTIO_F_EVENT_IDX when offered
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"packed": self.packed, "queue_size": self.queue_size,
                "indirect": self.indirect, "event_idx": self.event_idx}

    @classmethod
    def from_json(cls, data: Any) -> QueueSetup:
        if not isinstance(data, dict):
            raise ChainFormatError("setup: expected an object")
        try:
            return cls(packed=bool(data.get("packed", False)),
                       queue_size=int(data.get("queue_size", 16)),
                       indirect=bool(data.get("indirect", True)),
                       event_idx=bool(data.get("event_idx", True)))
        except (TypeError, ValueError) as exc:
            raise ChainFormatError(f"setup: {exc}") from None


def for_packed(chain: ChainSpec) -> ChainSpec:
    """The same request for a packed ring: indirect table entries carry no flag but
    WRITE (2.8.19); the ring descriptors' NEXT flags already say where lists end."""
    tables = tuple(tuple(replace(d, flags=d.flags & WRITE, next=0) for d in t)
                   for t in chain.tables)
    return replace(chain, tables=tables, heads=())
