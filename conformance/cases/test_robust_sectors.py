"""Robustness: sector arithmetic (5.2.6 Device Operation, 5.2.6.1 Driver Requirements).

The driver names sectors the disk does not have: at or past capacity, the last
sector and one more, sector + length beyond 2**64, a sector whose byte offset
(sector * 512) overflows 64 bits, one that only fits in 32 bits after
truncation; discard / write-zeroes / secure-erase segments beyond capacity or
with more segments, sectors or flags than allowed.  The device answers IOERR
(or UNSUPP where 5.2.6.2 says so) and changes no sector outside the request's
range: the probe sectors (start, middle, end, and where a wrapped computation
would land) are read before and after.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.fuzz.chain import blk_chain, segment
from conformance.robustness import IOERR, OK, UNSUPP, allowed, data_is

pytestmark = pytest.mark.robustness

S = spec.SECTOR_SIZE
IN = spec.VIRTIO_BLK_T_IN
OUT = spec.VIRTIO_BLK_T_OUT
DISCARD = spec.VIRTIO_BLK_T_DISCARD
WRITE_ZEROES = spec.VIRTIO_BLK_T_WRITE_ZEROES
SECURE_ERASE = spec.VIRTIO_BLK_T_SECURE_ERASE
U64 = 1 << 64
UNMAP = 1  # bit 0 of a segment's flags (5.2.6)

RANGE_TYPES = {
    "discard": (DISCARD, spec.VIRTIO_BLK_F_DISCARD, spec.BLK_CFG_MAX_DISCARD_SEG,
                spec.BLK_CFG_MAX_DISCARD_SECTORS, "blk.discard-command"),
    "write-zeroes": (WRITE_ZEROES, spec.VIRTIO_BLK_F_WRITE_ZEROES,
                     spec.BLK_CFG_MAX_WRITE_ZEROES_SEG, spec.BLK_CFG_MAX_WRITE_ZEROES_SECTORS,
                     "blk.write-zeroes-command"),
    "secure-erase": (SECURE_ERASE, spec.VIRTIO_BLK_F_SECURE_ERASE,
                     spec.BLK_CFG_MAX_SECURE_ERASE_SEG, spec.BLK_CFG_MAX_SECURE_ERASE_SECTORS,
                     "blk.secure-erase-command"),
}
RANGE_IDS = list(RANGE_TYPES)

# Where a sector lands when the device's arithmetic wraps: a byte offset of
# (2**55 + 5) * 512 is 5 * 512 modulo 2**64; 2**32 + 5 truncated to 32 bits is 5.
WRAPPED = {"byte-offset-overflow": (1 << 55) + 5, "truncated-to-32-bits": (1 << 32) + 5,
           "sign-bit": (1 << 63) + 5}


def beyond(capacity: int, where: str) -> tuple[int, int]:
    """(sector, sectors) of an access that does not fit the disk."""
    return {
        "at-capacity": (capacity, 1),
        "straddling-the-end": (capacity - 1, 2),
        "far-beyond": (capacity + 4096, 1),
        "last-plus-u64-wrap": (U64 - 1, 2),
    }[where]


BEYOND = ["at-capacity", "straddling-the-end", "far-beyond", "last-plus-u64-wrap"]


def capacity_unchanged(robust, before: int) -> list[str]:
    now = robust.device.read_config().capacity
    return [] if now == before else [f"capacity changed from {before} to {now} sectors"]


# --- IN / OUT ------------------------------------------------------------------------


@pytest.mark.clause("driver.blk-within-capacity", "blk.out-of-range-ioerr", "blk.status-ioerr",
                    "split.used-len")
@pytest.mark.parametrize("where", BEYOND)
def test_in_beyond_capacity(robust, where):
    """5.2.6.1: no read beyond capacity; the device answers IOERR (5.2.6)."""
    robust.init()
    sector, n = beyond(robust.capacity, where)
    robust.run(blk_chain(IN, sector, read_len=n * S), allowed(IOERR))


@pytest.mark.clause("driver.blk-within-capacity", "blk.out-of-range-ioerr", "blk.status-ioerr",
                    "split.used-len")
@pytest.mark.parametrize("where", BEYOND)
def test_out_beyond_capacity(robust, where):
    """5.2.6.1: no write beyond capacity: IOERR, the disk keeps its size, and no sector
    outside the request changes (inside it, a failed write may have left anything)."""
    robust.init()
    cap = robust.capacity
    sector, n = beyond(cap, where)
    inside = ((sector, n),) if sector < cap else ()
    chain = blk_chain(OUT, sector, data=b"\xc3" * (n * S), disk_writes=inside)
    obs = robust.send(chain)
    robust.verdict(obs, allowed(IOERR), chain, extra=capacity_unchanged(robust, cap))


@pytest.mark.clause("blk.in-data", "blk.out-data", "blk.status-ok", "split.used-len")
def test_last_sector_out_then_in(robust):
    """The last sector is inside the disk: OUT then IN of it complete with the data."""
    blk = robust.init()
    if blk.has(spec.VIRTIO_BLK_F_RO):
        pytest.skip("device is read-only (VIRTIO_BLK_F_RO): an OUT must fail there")
    last = robust.capacity - 1
    data = bytes((i * 13 + 7) & 0xFF for i in range(S))
    write = blk_chain(OUT, last, data=data)
    problems = robust.judge(robust.send(write), allowed(OK, ok_len=1), write)
    chain = blk_chain(IN, last, read_len=S)
    obs = robust.send(chain)
    robust.verdict(obs, allowed(OK, ok_len=S + 1), chain, legal=True, extra=problems,
                   check=data_is(data, f"IN of the last sector ({last}) after OUT"),
                   writes=write.disk_writes)


@pytest.mark.clause("blk.in-data", "blk.status-ok", "split.used-len")
def test_last_two_sectors_in(robust):
    """IN of the last two sectors ends exactly at capacity: it completes."""
    robust.init()
    cap = robust.capacity
    chain = blk_chain(IN, cap - 2, read_len=2 * S)
    robust.run(chain, allowed(OK, ok_len=2 * S + 1), legal=True,
               check=data_is(robust.known(cap - 2) + robust.known(cap - 1),
                             f"IN of sectors {cap - 2}-{cap - 1}"))


@pytest.mark.clause("driver.blk-within-capacity", "blk.out-of-range-ioerr", "blk.status-ioerr",
                    "split.used-len")
@pytest.mark.parametrize("kind", list(WRAPPED))
@pytest.mark.parametrize("type_", [IN, OUT], ids=["in", "out"])
def test_sector_arithmetic_overflow(robust, kind, type_):
    """A sector far beyond capacity that a device computing in 64 (or 32) bits would
    wrap onto sector 5: IOERR, and sector 5 keeps its content."""
    robust.init()
    sector = WRAPPED[kind]
    if type_ == IN:
        chain = blk_chain(IN, sector, read_len=S)
    else:
        chain = blk_chain(OUT, sector, data=b"\x96" * S, disk_writes=())
    robust.run(chain, allowed(IOERR))


# --- DISCARD / WRITE_ZEROES / SECURE_ERASE ---------------------------------------------


def range_setup(robust, name: str) -> tuple[int, int, int, str]:
    """Initialize with the command's feature; (type, max segments, max sectors, clause)."""
    type_, bit, seg_off, sec_off, clause = RANGE_TYPES[name]
    robust.init(require=[bit])
    cfg = robust.device.read_config()
    return type_, cfg.u32(seg_off), cfg.u32(sec_off), clause


def segments_chain(type_: int, segs, **kw):
    return blk_chain(type_, data=b"".join(segment(*s) for s in segs), **kw)


@pytest.mark.clause("driver.blk-within-capacity", "blk.status-ioerr", "blk.discard-command",
                    "blk.write-zeroes-command", "blk.secure-erase-command", "split.used-len")
@pytest.mark.parametrize("where", ["at-capacity", "straddling-the-end", "u64-wrap",
                                   "byte-offset-overflow"])
@pytest.mark.parametrize("name", RANGE_IDS)
def test_segment_beyond_capacity(robust, name, where):
    """A segment that does not fit the disk: IOERR; sectors outside every segment keep
    their content (5.2.6.1: inside a failed segment, anything may have happened)."""
    type_, _segs, _secs, _clause = range_setup(robust, name)
    cap = robust.capacity
    seg = {"at-capacity": (cap, 1, 0), "straddling-the-end": (cap - 1, 2, 0),
           "u64-wrap": (U64 - 8, 16, 0), "byte-offset-overflow": ((1 << 55) + 5, 1, 0)}[where]
    robust.run(segments_chain(type_, [seg]), allowed(IOERR))


@pytest.mark.clause("blk.discard-command", "blk.write-zeroes-command",
                    "blk.secure-erase-command", "split.used-len")
@pytest.mark.parametrize("name", RANGE_IDS)
def test_segment_of_zero_sectors(robust, name):
    """num_sectors 0: nothing to do.  The device may complete it (OK) or refuse it; no
    sector changes either way."""
    type_, _segs, _secs, _clause = range_setup(robust, name)
    chain = segments_chain(type_, [(5, 0, 0)], disk_writes=())
    robust.run(chain, allowed(OK, IOERR, UNSUPP, ok_len=1))


@pytest.mark.clause("driver.blk-max-segments", "blk.discard-command", "blk.write-zeroes-command",
                    "blk.secure-erase-command", "split.used-len")
@pytest.mark.parametrize("name", RANGE_IDS)
def test_more_segments_than_allowed(robust, name):
    """5.2.6.1: no more than max_*_seg segments.  The spec leaves the status open: UNSUPP
    or IOERR (QEMU and the reference device answer UNSUPP); never OK."""
    type_, max_segs, _secs, _clause = range_setup(robust, name)
    if not 0 < max_segs <= 255:
        pytest.skip(f"max segments is {max_segs}: no request can exceed it here")
    segs = [(64 + 2 * k, 1, 0) for k in range(max_segs + 1)]
    robust.run(segments_chain(type_, segs), allowed(UNSUPP, IOERR))


@pytest.mark.clause("blk.discard-command", "blk.write-zeroes-command",
                    "blk.secure-erase-command", "blk.status-ioerr", "split.used-len")
@pytest.mark.parametrize("name", RANGE_IDS)
def test_more_sectors_than_allowed(robust, name):
    """A segment over max_*_sectors (5.2.4): the device does not support it (5.2.3):
    IOERR or UNSUPP, never OK."""
    type_, _segs, max_secs, _clause = range_setup(robust, name)
    if not 0 < max_secs < robust.capacity - 8:
        pytest.skip(f"max sectors ({max_secs}) is not below the capacity "
                    f"({robust.capacity}): a segment over it would also pass the end")
    robust.run(segments_chain(type_, [(8, max_secs + 1, 0)]), allowed(IOERR, UNSUPP))


@pytest.mark.clause("blk.discard-unknown-flags", "blk.write-zeroes-unknown-flags",
                    "blk.secure-erase-unknown-flags", "split.used-len")
@pytest.mark.parametrize("flags", [0x2, 0x80000000, 0xFFFFFFFE], ids=hex)
@pytest.mark.parametrize("name", RANGE_IDS)
def test_reserved_segment_flag_bits(robust, name, flags):
    """5.2.6.2: a segment flag the device does not know: UNSUPP."""
    type_, _segs, _secs, _clause = range_setup(robust, name)
    robust.run(segments_chain(type_, [(20, 1, flags)]), allowed(UNSUPP))


@pytest.mark.clause("driver.blk-discard-unmap-zero", "blk.discard-unmap-unsupp",
                    "blk.secure-erase-unknown-flags", "split.used-len")
@pytest.mark.parametrize("name", ["discard", "secure-erase"])
def test_unmap_flag_where_it_means_nothing(robust, name):
    """5.2.6.1/5.2.6.2: unmap is for write zeroes only; on a discard (or secure erase,
    where the bit is unknown) the device answers UNSUPP."""
    type_, _segs, _secs, _clause = range_setup(robust, name)
    robust.run(segments_chain(type_, [(20, 1, UNMAP)]),
               allowed(UNSUPP))


@pytest.mark.clause("driver.blk-data-segment-multiple", "blk.status-ioerr",
                    "blk.discard-command", "blk.write-zeroes-command",
                    "blk.secure-erase-command", "split.used-len")
@pytest.mark.parametrize("length", [8, 24, 31])
@pytest.mark.parametrize("name", RANGE_IDS)
def test_segment_data_not_multiple_of_16(robust, name, length):
    """5.2.6.1: segments are 16 bytes each; a cut one makes the request malformed:
    IOERR or UNSUPP, or NEEDS_RESET (QEMU cannot read a whole segment header and stops);
    never OK."""
    type_, _segs, _secs, _clause = range_setup(robust, name)
    data = (segment(30, 1) + segment(40, 1))[:length]
    chain = blk_chain(type_, data=data, disk_writes=((30, 1), (40, 1)))
    robust.run(chain, allowed(IOERR, UNSUPP, needs_reset=True))
