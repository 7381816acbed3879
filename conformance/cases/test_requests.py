"""Block requests: 5.2.6 Device Operation.

IN/OUT data integrity over sector boundaries and descriptor layouts, the status
byte's position, requests the device must refuse (beyond capacity, partial
sectors, unknown types) and malformed chains.  Every case sets up the content
it checks against (or reads it from the backing store), so it holds on a disk
that earlier cases wrote to.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import (
    expect_data,
    expect_error,
    expect_guards,
    expect_ok,
    expect_status,
)
from conformance.driver.blk import (
    GUARD,
    POISON,
    BlkRequest,
    flush_request,
    get_id_request,
    pack_header,
    read_request,
    write_request,
)
from conformance.driver.device import FeatureNotOffered
from conformance.driver.platform import MemRead, MemWrite, Poll, PollTimeout, Unsupported
from conformance.driver.virtqueue import Buffer

S = spec.SECTOR_SIZE
IOERR = spec.VIRTIO_BLK_S_IOERR
UNSUPP = spec.VIRTIO_BLK_S_UNSUPP


def known_content(blk, platform, sector: int, nbytes: int) -> bytes:
    """What the disk holds at ``sector``: the backing store if the target can read it,
    else data this case writes first (then the IN check is only as strong as OUT)."""
    try:
        return platform.backing_read(sector * S, nbytes)
    except Unsupported:
        data = payload(sector, nbytes)
        blk.write(sector, data)
        return data


def payload(seed: int, nbytes: int) -> bytes:
    """Data no sector of the disk pattern holds, different for every seed."""
    return bytes((seed * 7 + i * 31 + (i >> 9)) & 0xFF for i in range(nbytes))


def skip_if_read_only(blk) -> None:
    if blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO)")


def make_stable(blk) -> bool:
    """Make completed writes stable (5.2.6.2) if the spec gives a way; False if not."""
    if blk.has(spec.VIRTIO_BLK_F_FLUSH):
        expect_ok(blk.submit_one(flush_request()), 0)
        return True
    # Case 1 of 5.2.6.2: FLUSH offered, neither FLUSH nor CONFIG_WCE negotiated.
    return blk.offers(spec.VIRTIO_BLK_F_FLUSH) and not blk.has(spec.VIRTIO_BLK_F_CONFIG_WCE)


def split_evenly(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def sized(blk, nbytes: int) -> list[int]:
    """Data descriptor lengths for ``nbytes`` that keep to size_max (5.2.3) if negotiated."""
    if not blk.has(spec.VIRTIO_BLK_F_SIZE_MAX):
        return [nbytes]
    size_max = blk.config.u32(spec.BLK_CFG_SIZE_MAX)
    chunk = size_max // S * S or size_max or nbytes  # size_max 0 sets no usable limit
    return [min(chunk, nbytes - off) for off in range(0, nbytes, chunk)]


def data_segments_cap(blk, wanted: int) -> int:
    """At most ``wanted`` data descriptors, and never more than seg_max (5.2.3)."""
    if blk.has(spec.VIRTIO_BLK_F_SEG_MAX):
        return max(1, min(wanted, blk.config.u32(spec.BLK_CFG_SEG_MAX)))
    return wanted


# --- IN / OUT integrity ---------------------------------------------------------------


@pytest.mark.clause("blk.in-data", "blk.status-ok", "split.used-len")
@pytest.mark.parametrize("sector,nbytes", [(0, S), (3, 8 * S), (1000, 64 * 1024)])
def test_in_returns_backing_data(blk, platform, sector, nbytes):
    expected = known_content(blk, platform, sector, nbytes)
    c = blk.submit_one(read_request(sector, nbytes, writable_split=sized(blk, nbytes) + [1]))
    expect_ok(c, nbytes)
    expect_data(c.data, expected, f"IN of {nbytes} bytes at sector {sector}", sector * S)


@pytest.mark.clause("blk.in-data", "split.used-len")
def test_in_last_sector(blk, platform):
    last = blk.config.capacity - 1
    expected = known_content(blk, platform, last, S)
    c = blk.submit_one(read_request(last, S))
    expect_ok(c, S)
    expect_data(c.data, expected, f"IN of the last sector ({last})", last * S)


@pytest.mark.clause("blk.out-data", "blk.status-ok", "split.used-len")
@pytest.mark.parametrize("sector,nbytes", [(5, S), (17, 4096), (2048, 128 * 1024)])
def test_out_lands_on_disk(blk, platform, sector, nbytes):
    skip_if_read_only(blk)
    data = payload(sector, nbytes)
    split = sized(blk, nbytes)
    c = blk.submit_one(write_request(sector, data, readable_split=[16] + split))
    expect_ok(c, 0)
    back = blk.submit_one(read_request(sector, nbytes, writable_split=split + [1]))
    expect_ok(back, nbytes)
    expect_data(back.data, data, f"IN after OUT of {nbytes} bytes at sector {sector}", sector * S)
    # The backing store only has to hold the data once the write is stable (5.2.6.2).
    if not make_stable(blk):
        return
    try:
        on_disk = platform.backing_read(sector * S, nbytes)
    except Unsupported:
        return
    expect_data(on_disk, data, f"backing store after OUT at sector {sector}", sector * S)


@pytest.mark.clause("blk.out-data", "blk.status-ok")
def test_out_last_sector(blk, platform):
    skip_if_read_only(blk)
    last = blk.config.capacity - 1
    data = payload(last, S)
    expect_ok(blk.submit_one(write_request(last, data)), 0)
    back = blk.submit_one(read_request(last, S))
    expect_ok(back, S)
    expect_data(back.data, data, f"IN after OUT of the last sector ({last})", last * S)


@pytest.mark.clause("blk.in-data", "blk.out-data")
def test_sector_boundaries(blk, platform):
    """Reads that start and end on other sector boundaries than the write see its bytes."""
    skip_if_read_only(blk)
    first, count = 64, 6
    before = known_content(blk, platform, first - 1, S)
    after = known_content(blk, platform, first + count, S)
    data = payload(first, count * S)
    expect_ok(blk.submit_one(write_request(first, data)), 0)
    windows = [(first + 1, 2), (first + count - 1, 1), (first - 1, count + 2)]
    done = blk.submit([read_request(s, n * S) for s, n in windows])
    whole = before + data + after
    for (s, n), c in zip(windows, done):
        expect_ok(c, n * S)
        off = (s - first + 1) * S
        expect_data(c.data, whole[off:off + n * S], f"IN of {n} sector(s) at {s}", s * S)


# Descriptor layouts for 4096 bytes of data (2.7.4 Message Framing: the device must not
# care how a request is split).  Readable: header and data; writable: data and status.
_N = 4096
_OUT_LAYOUTS = {
    "header-and-data-in-one": lambda k: [16 + _N],
    "header-split": lambda k: [7, 9, _N],
    "many-small": lambda k: [16] + split_evenly(_N, k),
    "odd-splits": lambda k: [16, 1, 511, 1000, 2584],
    "indirect-odd-splits": lambda k: [5, 11 + 1, 511, 1000, 2584],
}
_IN_LAYOUTS = {
    "data-and-status-in-one": lambda k: [_N + 1],
    "many-small": lambda k: split_evenly(_N, k) + [1],
    "odd-splits": lambda k: [1, 511, 1000, 2583, 2],
    "indirect-odd-splits": lambda k: [1, 511, 1000, 2584, 1],
}


@pytest.mark.clause("blk.out-data", "split.framing-independent")
@pytest.mark.parametrize("layout", sorted(_OUT_LAYOUTS))
def test_out_descriptor_layouts(blk, platform, layout):
    skip_if_read_only(blk)
    indirect = layout.startswith("indirect")
    if indirect and not blk.has(spec.VIRTIO_F_INDIRECT_DESC):
        raise FeatureNotOffered(spec.VIRTIO_F_INDIRECT_DESC)
    sector = 300 + 16 * sorted(_OUT_LAYOUTS).index(layout)
    data = payload(sector + 1, _N)
    split = _OUT_LAYOUTS[layout](data_segments_cap(blk, 32))
    c = blk.submit_one(write_request(sector, data, readable_split=split, indirect=indirect))
    expect_ok(c, 0)
    back = blk.submit_one(read_request(sector, _N))
    expect_ok(back, _N)
    expect_data(back.data, data, f"IN after OUT laid out as {split}", sector * S)


@pytest.mark.clause("blk.in-data", "split.framing-independent")
@pytest.mark.parametrize("layout", sorted(_IN_LAYOUTS))
def test_in_descriptor_layouts(blk, platform, layout):
    indirect = layout.startswith("indirect")
    if indirect and not blk.has(spec.VIRTIO_F_INDIRECT_DESC):
        raise FeatureNotOffered(spec.VIRTIO_F_INDIRECT_DESC)
    sector = 401
    expected = known_content(blk, platform, sector, _N)
    split = _IN_LAYOUTS[layout](data_segments_cap(blk, 32))
    c = blk.submit_one(read_request(sector, _N, writable_split=split, indirect=indirect))
    expect_ok(c, _N)
    expect_data(c.data, expected, f"IN laid out as {split}", sector * S)


# --- the status byte: the last byte of the last device-writable descriptor (5.2.6) ------

_STATUS_LAYOUTS = {
    # name: (read_len, writable_split)
    "data-and-status-in-one": (1024, [1025]),
    "status-after-three-writables": (1536, [512, 512, 512, 1]),
    "status-shares-last-descriptor": (1024, [1000, 25]),
    "status-only-after-odd-data": (1024, [3, 1021, 1]),
}


@pytest.mark.clause("blk.status-ok", "blk.in-data")
@pytest.mark.parametrize("layout", sorted(_STATUS_LAYOUTS))
def test_status_byte_position(blk, platform, layout):
    read_len, split = _STATUS_LAYOUTS[layout]
    sector = 520
    expected = known_content(blk, platform, sector, read_len)
    c = blk.submit_one(read_request(sector, read_len, writable_split=split))
    # BlkCompletion.status is the last writable byte; data is everything before it.
    expect_ok(c, read_len)
    expect_data(c.data, expected, f"IN with writable descriptors {split}", sector * S)


@pytest.mark.clause("blk.status-ok", "blk.get-id")
def test_get_id_and_status_in_one_descriptor(blk, platform):
    c = blk.submit_one(get_id_request(writable_split=[spec.VIRTIO_BLK_ID_BYTES + 1]))
    expect_status(c, spec.VIRTIO_BLK_S_OK)
    expect_guards(c)
    serial = platform.describe().get("serial")
    if serial is not None:
        raw = serial.encode()[:spec.VIRTIO_BLK_ID_BYTES]
        expected = raw + bytes(spec.VIRTIO_BLK_ID_BYTES - len(raw))
        assert c.data == expected, f"GET_ID returned {c.data!r}, expected {expected!r}"


# --- requests the device refuses ---------------------------------------------------------

_BEYOND = {
    # name: (IN or OUT, start sector (negative: from capacity), sectors)
    "in-at-capacity": (spec.VIRTIO_BLK_T_IN, 0, 1),
    "in-straddling-end": (spec.VIRTIO_BLK_T_IN, -1, 2),
    "in-wrapping-byte-offset": (spec.VIRTIO_BLK_T_IN, 1 << 55, 1),
    "out-at-capacity": (spec.VIRTIO_BLK_T_OUT, 0, 1),
    "out-straddling-end": (spec.VIRTIO_BLK_T_OUT, -1, 2),
    "out-wrapping-byte-offset": (spec.VIRTIO_BLK_T_OUT, 1 << 55, 1),
}


@pytest.mark.clause("blk.out-of-range-ioerr")
@pytest.mark.parametrize("case", sorted(_BEYOND))
def test_beyond_capacity_ioerr(blk, platform, case):
    """5.2.6.1 forbids such requests; IOERR is the status for a driver error (5.2.6).

    Sector 2^55 is byte offset 2^64: a device computing 64-bit byte offsets would
    wrap to sector 0, so sector 0 and the last sector must keep their data.
    """
    rtype, start, count = _BEYOND[case]
    capacity = blk.config.capacity
    sector = start if start > 0 else capacity + start
    watched = [0, capacity - 1]
    before = [blk.read(s, S) for s in watched]
    if rtype == spec.VIRTIO_BLK_T_IN:
        req = read_request(sector, count * S)
    else:
        req = write_request(sector, payload(sector & 0xFFFF, count * S))
    c = blk.submit_one(req)
    expect_error(c, IOERR, "a request past capacity is a driver error (5.2.6.1)")
    after = [blk.read(s, S) for s in watched]
    for s, old, new in zip(watched, before, after):
        expect_data(new, old, f"sector {s} after a refused request at sector {sector}", s * S)


@pytest.mark.clause("blk.status-ioerr")
@pytest.mark.parametrize("rtype", ["in", "out"])
def test_partial_sector_ioerr(blk, rtype):
    """5.2.6.1: IN/OUT data is a multiple of 512 bytes; anything else is a driver error."""
    if rtype == "in":
        req = read_request(16, 100)
    else:
        req = write_request(16, payload(16, 700))
    expect_error(blk.submit_one(req), IOERR, "data not a multiple of 512 bytes (5.2.6.1)")


@pytest.mark.clause("blk.flush-command", "blk.status-ok")
def test_flush(blk, platform):
    if not blk.has(spec.VIRTIO_BLK_F_FLUSH):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_FLUSH)
    if not blk.has(spec.VIRTIO_BLK_F_RO):
        expect_ok(blk.submit_one(write_request(40, b"\x5c" * S)), 0)
    c = blk.submit_one(flush_request())
    expect_ok(c, 0)


@pytest.mark.clause("blk.flush")
def test_flush_commits_completed_writes(blk, platform):
    if not blk.has(spec.VIRTIO_BLK_F_FLUSH):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_FLUSH)
    skip_if_read_only(blk)
    try:
        platform.backing_read(0, S)
    except Unsupported as exc:
        pytest.skip(str(exc))
    if blk.has(spec.VIRTIO_BLK_F_CONFIG_WCE):
        # Writeback mode, so that the writes may well be volatile until the flush.
        blk.transport.config_write(spec.BLK_CFG_WRITEBACK, 1, 1)
    writes = [(600 + 9 * i, payload(600 + i, (i + 1) * S)) for i in range(3)]
    for sector, data in writes:
        expect_ok(blk.submit_one(write_request(sector, data)), 0)
    expect_ok(blk.submit_one(flush_request()), 0)
    for sector, data in writes:
        expect_data(platform.backing_read(sector * S, len(data)), data,
                    f"backing store after OUT at sector {sector} and a completed FLUSH",
                    sector * S)


@pytest.mark.clause("blk.get-id", "blk.status-ok")
def test_get_id(blk, platform):
    c = blk.submit_one(get_id_request())
    expect_status(c, spec.VIRTIO_BLK_S_OK)
    expect_guards(c)
    ident = c.data
    assert c.used_len in (spec.VIRTIO_BLK_ID_BYTES + 1,), (
        f"GET_ID: used length {c.used_len}, expected 21 (20 ID bytes and the status)")
    serial = platform.describe().get("serial")
    if serial is not None:
        # 5.2.6: a NUL-padded string of up to 20 bytes, without terminator at 20.
        raw = serial.encode()[:spec.VIRTIO_BLK_ID_BYTES]
        expected = raw + bytes(spec.VIRTIO_BLK_ID_BYTES - len(raw))
        assert ident == expected, f"GET_ID returned {ident!r}, expected {expected!r}"
    else:
        end = ident.find(b"\0")
        assert end < 0 or ident[end:] == bytes(len(ident) - end), (
            f"GET_ID: bytes after the NUL terminator are not NUL: {ident!r}")


@pytest.mark.clause("blk.unsupp-type")
@pytest.mark.parametrize("req_type", [2, 3, 6, 9, 0x7F, 0xFFFFFFFF])
def test_unknown_type_unsupported(blk, req_type):
    # 9 is GET_ID with bit 0 set: a device that reads bit 0 as a direction flag
    # (as the legacy interface's VIRTIO_BLK_T_OUT did) runs it as GET_ID.
    c = blk.submit_one(BlkRequest(req_type, read_len=0))
    expect_status(c, UNSUPP)
    expect_guards(c)


@pytest.mark.clause("blk.zone-types-unsupp")
@pytest.mark.parametrize("req_type", [15, 16, 18, 20, 22, 24, 26])
def test_zone_types_unsupported(blk, req_type):
    """The driver never negotiates VIRTIO_BLK_F_ZONED, so every zone request is UNSUPP.

    Each request has the layout its type has on a zoned device (5.2.6): a report
    buffer for ZONE_REPORT (64-byte header, one 64-byte zone descriptor), data and
    the 8-byte append_sector for ZONE_APPEND, nothing for the zone operations.
    """
    if req_type == 16:
        req = BlkRequest(req_type, read_len=128)
    elif req_type == 15:
        req = BlkRequest(req_type, data=payload(15, S), read_len=8)
    else:
        req = BlkRequest(req_type, read_len=0)
    c = blk.submit_one(req)
    expect_status(c, UNSUPP)
    expect_guards(c)


# --- malformed chains -----------------------------------------------------------------------

_SETTLE = 0.3  # seconds to wait for a device that neither uses the buffer nor needs reset


def submit_raw(blk, platform, buffers: list[Buffer]) -> tuple[bool, bool]:
    """Make one hand-built chain available; return (used?, DEVICE_NEEDS_RESET set?).

    A device that gives up sets DEVICE_NEEDS_RESET and sends a configuration change
    notification (2.1.2), so the config vector is watched first; a device that
    answers the request uses the buffer instead.
    """
    q = blk.queues[0]
    msix = blk.virtio.msix
    ops = [msix.clear_op(0)] if msix is not None else []
    ops += q.add(buffers, "malformed") + q.publish() + q.kick()
    platform.execute(ops)
    notified = False
    if msix is not None:
        try:
            platform.execute([msix.wait_op(0, _SETTLE)])
            notified = True
        except PollTimeout:
            pass
    if notified and blk.virtio.needs_reset():
        used_idx = int.from_bytes(platform.mem_read(q.used_idx_addr, 2), "little")
        return used_idx != q.last_used & 0xFFFF, True
    used_poll = Poll(q.used_idx_addr, 2, 0xFFFF, q.last_used & 0xFFFF, False, _SETTLE)
    try:
        platform.execute([used_poll])
        used = True
    except PollTimeout:
        used = False
    return used, blk.virtio.needs_reset()


def recover(blk) -> None:
    """Reset and initialize again: 2.1.2 / 2.4, the way out of DEVICE_NEEDS_RESET."""
    blk.init()


@pytest.mark.clause("split.no-write-readable")
def test_request_without_status_byte(blk, platform):
    """A chain with no device-writable byte has no room for a status (5.2.6).

    The spec leaves the device two sane outcomes: DEVICE_NEEDS_RESET (2.1.2) or
    using the buffer with used length 0.  Neither may write into the readable
    header (2.7.5.1), and after a reset the device serves requests again.
    """
    sector = 0x42 << 56  # the header's last byte is 0x42, never a status value
    header = pack_header(spec.VIRTIO_BLK_T_IN, sector)
    addr = blk.virtio.pool.alloc(len(header) + 2 * len(GUARD), 16)
    image = GUARD + header + GUARD
    platform.execute([MemWrite(addr, image)])
    q = blk.queues[0]
    elem = q.layout.device + spec.SPLIT_USED_RING + 8 * (q.last_used % q.size)
    used, needs_reset = submit_raw(blk, platform, [Buffer(addr + len(GUARD), 16, False)])
    after, raw_elem = platform.execute([MemRead(addr, len(image)), MemRead(elem, 8)])
    expect_data(after, image, "the device-readable header of a request without status byte")
    if used and not needs_reset:
        length = int.from_bytes(raw_elem[4:], "little")
        assert length == 0, (
            f"a request without device-writable descriptors was used with length {length}")
    recover(blk)
    c = blk.submit_one(read_request(7, S))
    expect_ok(c, S)
    try:
        expect_data(c.data, platform.backing_read(7 * S, S),
                    "IN after the device recovered from a malformed request", 7 * S)
    except Unsupported:
        pass


@pytest.mark.clause("split.no-read-writable")
def test_header_in_writable_descriptor(blk, platform):
    """A request whose header sits in a device-writable descriptor is not a request.

    The three descriptors hold an OUT header, 512 bytes of data and a status slot,
    all marked device-writable.  The device must not act on what it finds in a
    writable buffer (2.7.5.1): allowed are DEVICE_NEEDS_RESET (2.1.2) or an error
    status in the last writable byte.  The disk keeps its data either way.
    """
    sector = 700
    before = blk.read(sector, S)
    data = bytes(b ^ 0xFF for b in before)
    body = pack_header(spec.VIRTIO_BLK_T_OUT, sector) + data + bytes([POISON])
    g = len(GUARD)
    addr = blk.virtio.pool.alloc(len(body) + 2 * g, 16)
    platform.execute([MemWrite(addr, GUARD + body + GUARD)])
    base = addr + g
    buffers = [Buffer(base, 16, True), Buffer(base + 16, S, True), Buffer(base + 16 + S, 1, True)]
    used, needs_reset = submit_raw(blk, platform, buffers)
    region = platform.execute([MemRead(addr, len(body) + 2 * g)])[0]
    assert region[:g] == GUARD and region[-g:] == GUARD, (
        "the device wrote outside the buffers of a malformed request")
    assert used or needs_reset, (
        f"a request with its header in a device-writable descriptor was neither used nor "
        f"answered with DEVICE_NEEDS_RESET within {_SETTLE:g}s (2.1.2)")
    if used and not needs_reset:
        status = region[g + len(body) - 1]
        assert status in (IOERR, UNSUPP), (
            f"a request with its header in a device-writable descriptor completed with "
            f"status {status:#x}; only IOERR or UNSUPP say it was refused")
    recover(blk)
    expect_data(blk.read(sector, S), before,
                f"sector {sector} after a malformed OUT whose header was device-writable",
                sector * S)
