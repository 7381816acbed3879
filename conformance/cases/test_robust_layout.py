"""Robustness: how a request is laid out in descriptors (2.7.4 Message Framing, 5.2.6).

A hostile driver cuts the header short, splits it, hands the device a header
or data in the wrong direction, leaves out the status byte or makes it longer,
inserts zero-length descriptors, or sends data that is not a whole number of
sectors.  Each case names the driver rule it breaks and the outcomes the
device may choose; the health check after it decides between reject and wedged.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.fuzz.chain import (
    NEXT,
    WRITE,
    BufferSpec,
    ChainSpec,
    DescSpec,
    blk_chain,
    header,
    request_chain,
)
from conformance.robustness import (
    IOERR,
    OK,
    REFUSE,
    UNANSWERABLE,
    UNSUPP,
    allowed,
    data_is,
)

pytestmark = pytest.mark.robustness

S = spec.SECTOR_SIZE
IN = spec.VIRTIO_BLK_T_IN
OUT = spec.VIRTIO_BLK_T_OUT
FLUSH = spec.VIRTIO_BLK_T_FLUSH
GET_ID = spec.VIRTIO_BLK_T_GET_ID


def chain_of(*parts: tuple[bytes | int, bool]) -> ChainSpec:
    """A chain with one descriptor per part, in order, flags exactly as given:
    ``(content, writable)`` or ``(length, writable)`` (a writable part gets poison)."""
    buffers = []
    for part, writable in parts:
        if isinstance(part, int):
            buffers.append(BufferSpec(part, writable))
        else:
            buffers.append(BufferSpec(len(part), writable, part))
    descs = tuple(
        DescSpec(b.length, (WRITE if b.writable else 0) | (NEXT if i + 1 < len(buffers) else 0),
                 buffer=i, next=i + 1 if i + 1 < len(buffers) else 0)
        for i, b in enumerate(buffers))
    return ChainSpec(tuple(buffers), descs, status=(len(buffers) - 1, buffers[-1].length - 1)
                     if buffers and buffers[-1].writable and buffers[-1].length else None)


# --- the header ----------------------------------------------------------------------


@pytest.mark.clause("driver.blk-request-layout", "status.needs-reset-set",
                    "blk.status-ioerr", "reset.status-write-resets")
@pytest.mark.parametrize("length", [0, 1, 8, 15])
def test_header_shorter_than_16_bytes(robust, length):
    """5.2.6: the header is 16 device-readable bytes; here only ``length`` of them."""
    robust.init()
    hdr = header(IN, 1)[:length]
    chain = chain_of((hdr, False), (S + 1, True)) if length else chain_of((S + 1, True))
    robust.run(chain, REFUSE)


@pytest.mark.clause("split.framing-independent", "blk.in-data", "split.used-len")
@pytest.mark.parametrize("split", [(1, 15), (8, 8), (4, 4, 4, 4), (15, 1), (2,) * 8],
                         ids=lambda s: "+".join(map(str, s)))
def test_header_split_over_descriptors(robust, split):
    """2.7.4.1: the device makes no assumption about how the header is split."""
    robust.init(queue_size=32)
    chain = request_chain(header(IN, 1), S + 1, readable_split=split)
    robust.run(chain, allowed(OK, ok_len=S + 1), legal=True,
               check=data_is(robust.known(1), "IN of sector 1"))


@pytest.mark.clause("split.framing-independent", "blk.in-data", "split.used-len")
@pytest.mark.parametrize("split", [(1, 2 * S - 1, 1), (S, S - 1, 2), (2 * S + 1,)],
                         ids=["1+1023+1", "512+511+2", "1025"])
def test_data_and_status_split_over_descriptors(robust, split):
    """2.7.4.1: data and the status byte may share or straddle descriptors."""
    robust.init()
    chain = request_chain(header(IN, 0), 2 * S + 1, writable_split=split)
    robust.run(chain, allowed(OK, ok_len=2 * S + 1), legal=True,
               check=data_is(robust.known(0) + robust.known(1), "IN of sectors 0-1"))


@pytest.mark.clause("driver.blk-request-layout", "split.no-read-writable",
                    "status.needs-reset-set", "blk.status-ioerr", "reset.status-write-resets")
def test_header_in_device_writable_descriptor(robust):
    """The header sits in a device-writable descriptor: there is no readable header."""
    robust.init()
    chain = chain_of((header(IN, 1), True), (S, True), (1, True))
    robust.run(chain, REFUSE)


@pytest.mark.clause("driver.blk-request-layout", "split.no-read-writable", "blk.out-data",
                    "split.used-len")
def test_out_data_in_device_writable_descriptor(robust):
    """OUT whose data is device-writable: the device may only see an OUT of no data;
    the sector must keep its content (a device never takes data from a writable buffer)."""
    robust.init()
    chain = chain_of((header(OUT, 5), False), (b"\x3c" * S, True), (1, True))
    robust.run(chain, allowed(OK, IOERR, UNSUPP, needs_reset=True, ok_len=1))


@pytest.mark.clause("driver.blk-request-layout", "split.no-write-readable", "blk.in-data",
                    "split.used-len")
def test_in_data_in_device_readable_descriptor(robust):
    """IN whose data buffer is device-readable: the device must not write into it."""
    robust.init()
    chain = chain_of((header(IN, 1), False), (b"\x77" * S, False), (1, True))
    robust.run(chain, allowed(OK, IOERR, UNSUPP, needs_reset=True, ok_len=1))


@pytest.mark.clause("driver.framing-readable-first", "status.needs-reset-set",
                    "split.no-write-readable", "reset.status-write-resets")
@pytest.mark.parametrize("type_", [OUT, IN], ids=["out", "in"])
def test_readable_after_writable(robust, type_):
    """2.7.4.2: a device-readable descriptor follows a device-writable one."""
    robust.init()
    if type_ == OUT:
        chain = chain_of((header(OUT, 5), False), (1, True), (b"\x11" * S, False))
    else:
        chain = chain_of((S, True), (header(IN, 1), False), (1, True))
    robust.run(chain, UNANSWERABLE)


# --- the status byte --------------------------------------------------------------------


@pytest.mark.clause("driver.blk-request-layout", "status.needs-reset-set",
                    "split.no-write-readable", "reset.status-write-resets")
@pytest.mark.parametrize("type_", [OUT, FLUSH], ids=["out", "flush"])
def test_status_byte_missing(robust, type_):
    """No device-writable byte at all: nowhere to put the status."""
    robust.init()
    if type_ == OUT:
        chain = chain_of((header(OUT, 5), False), (b"\x22" * S, False))
    else:
        chain = chain_of((header(FLUSH, 0), False))
    robust.run(chain, UNANSWERABLE)


@pytest.mark.clause("driver.blk-request-layout", "status.needs-reset-set",
                    "split.no-write-readable", "reset.status-write-resets")
@pytest.mark.parametrize("type_", [IN, FLUSH, GET_ID], ids=["in", "flush", "get-id"])
def test_status_byte_in_read_only_descriptor(robust, type_):
    """The status byte's descriptor lacks VIRTQ_DESC_F_WRITE: the device must not write it."""
    robust.init()
    chain = chain_of((header(type_, 0), False), (b"\xee", False))
    robust.run(chain, UNANSWERABLE)


@pytest.mark.clause("driver.blk-request-layout", "blk.flush", "split.used-len")
@pytest.mark.parametrize("status_len", [2, 4, 16])
def test_flush_status_longer_than_one_byte(robust, status_len):
    """The status is the last device-writable byte; a longer status buffer moves it there."""
    robust.init(require=[spec.VIRTIO_BLK_F_FLUSH])
    chain = blk_chain(FLUSH, status_len=status_len)
    robust.run(chain, allowed(OK, IOERR, needs_reset=True))


@pytest.mark.clause("driver.blk-request-layout", "driver.blk-data-sector-multiple",
                    "blk.status-ioerr", "split.used-len")
def test_in_status_longer_than_one_byte(robust):
    """IN with a 4-byte status buffer: the data then is 515 bytes, not whole sectors."""
    robust.init()
    chain = request_chain(header(IN, 1), S + 4, writable_split=(S, 4))
    robust.run(chain, allowed(IOERR, needs_reset=True))


# --- zero-length descriptors ----------------------------------------------------------------


@pytest.mark.clause("split.framing-independent", "blk.in-data", "split.used-len")
@pytest.mark.parametrize("where", ["readable", "data", "before-status", "after-status"])
def test_zero_length_descriptor(robust, where):
    """A descriptor of length 0 inside the chain.  The spec neither allows nor forbids it
    (2.7.5); QEMU refuses it (virtqueue_map_desc), so NEEDS_RESET is accepted too.
    Completing it must give the exact data, with the status in the last non-empty byte."""
    robust.init()
    hdr = (header(IN, 1), False)
    parts = {
        "readable": [hdr, (0, False), (S, True), (1, True)],
        "data": [hdr, (0, True), (S, True), (1, True)],
        "before-status": [hdr, (S, True), (0, True), (1, True)],
        "after-status": [hdr, (S, True), (1, True), (0, True)],
    }[where]
    chain = chain_of(*parts)
    if where == "after-status":
        chain = ChainSpec(chain.buffers, chain.descs, status=(2, 0))
    robust.run(chain, allowed(OK, needs_reset=True, ok_len=S + 1),
               check=data_is(robust.known(1), "IN of sector 1"))


# --- data that is not whole sectors -------------------------------------------------------


@pytest.mark.clause("driver.blk-data-sector-multiple", "blk.status-ioerr", "split.used-len")
@pytest.mark.parametrize("nbytes", [1, S - 1, S + 1, 3 * S + 256])
def test_in_not_multiple_of_512(robust, nbytes):
    """5.2.6.1: IN data must be whole sectors; the device answers IOERR (5.2.6)."""
    robust.init()
    robust.run(blk_chain(IN, 1, read_len=nbytes), allowed(IOERR))


@pytest.mark.clause("driver.blk-data-sector-multiple", "blk.status-ioerr", "split.used-len")
@pytest.mark.parametrize("nbytes", [1, 100, S + 1, 2 * S - 1])
def test_out_not_multiple_of_512(robust, nbytes):
    """5.2.6.1: OUT data must be whole sectors; IOERR, and no sector may change."""
    robust.init()
    chain = blk_chain(OUT, 5, data=b"\x5a" * nbytes, disk_writes=())
    robust.run(chain, allowed(IOERR))


# --- other request types -------------------------------------------------------------------


@pytest.mark.clause("driver.blk-flush-sector-zero", "blk.flush", "split.used-len")
@pytest.mark.parametrize("sector", [1, 0xFFFFFFFFFFFFFFFF])
def test_flush_with_nonzero_sector(robust, sector):
    """5.2.6.1: sector is 0 in a FLUSH.  The device flushes (the sector means nothing to
    it) or answers IOERR; FLUSH is negotiated, so it is not UNSUPP."""
    robust.init(require=[spec.VIRTIO_BLK_F_FLUSH])
    robust.run(blk_chain(FLUSH, sector), allowed(OK, IOERR, ok_len=1))


@pytest.mark.clause("driver.blk-get-id-length", "blk.get-id", "split.used-len")
@pytest.mark.parametrize("length", [1, 8, 19, 21, 64])
def test_get_id_length_not_20(robust, platform, length):
    """5.2.6.1: GET_ID data is 20 bytes.  With another length the device answers
    IOERR/UNSUPP, or writes the ID's first bytes (NUL padded, 5.2.6) and no more than
    the buffer holds."""
    robust.init()
    chain = blk_chain(GET_ID, read_len=length)
    serial = platform.describe().get("serial")

    def check(obs):
        if obs.status != OK or serial is None:
            return []
        # The ID and its NUL terminator; how far the NUL padding goes is the GET_ID
        # case's business (test_requests), not this one's.
        ident = serial.encode()[:spec.VIRTIO_BLK_ID_BYTES] + b"\0"
        n = min(length, len(ident), spec.VIRTIO_BLK_ID_BYTES)
        got = obs.writable[1][:n]
        return [] if got == ident[:n] else [f"GET_ID wrote {got!r}, expected {ident[:n]!r}"]

    robust.run(chain, allowed(OK, IOERR, UNSUPP, needs_reset=True), check=check)
