"""Robustness: descriptor chains (2.7.5 The Virtqueue Descriptor Table, 2.7.5.3 Indirect
Descriptors).

Loops, ``next`` out of range, chains longer than the queue, an indirect table
inside an indirect table, indirect tables of odd length or flagged NEXT,
INDIRECT without the feature, buffers beyond guest memory or inside the
device's own registers, and one descriptor shared by two chains or two queues.
Where the device cannot make sense of the chain, DEVICE_NEEDS_RESET (2.1.2) is
the answer; where it can (an over-long indirect table, a shared buffer), it
may also complete the request, and then with the right data.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from conformance import spec
from conformance.fuzz.chain import (
    INDIRECT,
    NEXT,
    WRITE,
    BufferSpec,
    ChainSpec,
    DescSpec,
    blk_chain,
    header,
    request_chain,
)
from conformance.fuzz.rawring import RawQueue
from conformance.robustness import (
    IOERR,
    OK,
    UNANSWERABLE,
    UNSUPP,
    allowed,
    data_is,
)

pytestmark = pytest.mark.robustness

S = spec.SECTOR_SIZE
IN = spec.VIRTIO_BLK_T_IN
OUT = spec.VIRTIO_BLK_T_OUT
U64 = 1 << 64


def read_chain(sector: int = 1, **kw) -> ChainSpec:
    """A well-formed IN of one sector: header, data, status in three descriptors."""
    return blk_chain(IN, sector, read_len=S, writable_split=(S, 1), **kw)


# --- loops and next ---------------------------------------------------------------------


@pytest.mark.clause("driver.chain-no-loop", "status.needs-reset-set", "reset.status-write-resets")
@pytest.mark.parametrize("where", ["status-to-itself", "status-to-head", "data-to-header"])
def test_descriptor_loop(robust, where):
    """2.7.5.2: a chain never loops.  The device must not follow it forever."""
    robust.init()
    chain = read_chain()
    if where == "status-to-itself":
        chain = chain.with_desc(2, flags=WRITE | NEXT, next=2)
    elif where == "status-to-head":
        chain = chain.with_desc(2, flags=WRITE | NEXT, next=0)
    else:
        chain = chain.with_desc(1, next=0)
    robust.run(chain, UNANSWERABLE)


@pytest.mark.clause("driver.chain-no-loop", "status.needs-reset-set", "reset.status-write-resets")
def test_loop_inside_indirect_table(robust):
    """A loop inside an indirect table (its last entry points back to entry 0)."""
    robust.init(require=[spec.VIRTIO_F_INDIRECT_DESC])
    chain = read_chain(indirect=True)
    chain = chain.with_table_desc(0, 2, flags=WRITE | NEXT, next=0)
    robust.run(chain, UNANSWERABLE)


@pytest.mark.clause("driver.chain-max-queue-size", "status.needs-reset-set",
                    "reset.status-write-resets")
@pytest.mark.parametrize("where", ["queue-size", "0xffff", "indirect-table-end"])
def test_next_out_of_range(robust, where):
    """``next`` names a descriptor the table does not have."""
    if where == "indirect-table-end":
        robust.init(require=[spec.VIRTIO_F_INDIRECT_DESC])
        chain = read_chain(indirect=True).with_table_desc(0, 1, next=3)
    else:
        robust.init(queue_size=16)
        chain = read_chain().with_desc(1, next=16 if where == "queue-size" else 0xFFFF)
    robust.run(chain, UNANSWERABLE)


# --- long chains ------------------------------------------------------------------------


@pytest.mark.clause("split.framing-independent", "split.chain-limit-may", "blk.in-data",
                    "split.used-len")
def test_direct_chain_as_long_as_the_queue(robust):
    """A direct chain of exactly queue-size descriptors is legal: exact data."""
    robust.init(queue_size=8)
    # header + 6 data descriptors + status = 8 descriptors
    chain = request_chain(header(IN, 0), 2 * S + 1,
                          writable_split=(S, S // 2, S // 4, S // 8, S // 16, S // 16, 1))
    robust.run(chain, allowed(OK, ok_len=2 * S + 1), legal=True,
               check=data_is(robust.known(0) + robust.known(1), "IN of sectors 0-1"))


@pytest.mark.clause("driver.chain-max-queue-size", "split.chain-limit-may", "blk.in-data",
                    "split.used-len", "status.needs-reset-set")
@pytest.mark.parametrize("sectors", [1, 2, 4], ids=["34-entries", "66-entries", "130-entries"])
def test_indirect_chain_longer_than_the_queue(robust, sectors):
    """2.7.5.3.1: no chain longer than the queue size (8 here), yet an indirect table
    can hold more: header, the data in 16-byte pieces, status.  The device may refuse
    (2.7.4.1 lets it limit chains) or complete it with the exact data."""
    robust.init(queue_size=8, require=[spec.VIRTIO_F_INDIRECT_DESC], probe=[2, 3])
    data_len = sectors * S
    chain = request_chain(header(IN, 0), data_len + 1,
                          writable_split=[16] * (data_len // 16) + [1], indirect=True)
    want = b"".join(robust.known(s) for s in range(4))[:data_len]
    robust.run(chain, allowed(OK, IOERR, needs_reset=True, ok_len=data_len + 1),
               check=data_is(want, "IN through an over-long indirect table"))


# --- indirect tables ----------------------------------------------------------------------


@pytest.mark.clause("driver.indirect-not-nested", "status.needs-reset-set", "blk.in-data",
                    "reset.status-write-resets")
@pytest.mark.parametrize("nested", ["second-table", "itself"])
def test_indirect_table_inside_indirect_table(robust, nested):
    """2.7.5.3.1: no INDIRECT inside an indirect table.  Following a nested table to
    itself never ends; the device refuses.  A device that follows one nested level
    and completes the request must do so with the exact data."""
    robust.init(require=[spec.VIRTIO_F_INDIRECT_DESC])
    base = read_chain()
    hdr, data, status = base.descs
    if nested == "itself":
        inner = DescSpec(32, INDIRECT, table=0)
        chain = ChainSpec(base.buffers, (DescSpec(32, INDIRECT, table=0),),
                          ((replace(hdr, flags=NEXT, next=1), inner),), status=base.status)
        allow = UNANSWERABLE
    else:
        outer = (replace(hdr, flags=NEXT, next=1), DescSpec(32, INDIRECT, table=1))
        second = (replace(data, next=1), status)
        chain = ChainSpec(base.buffers, (DescSpec(32, INDIRECT, table=0),), (outer, second),
                          status=base.status)
        allow = allowed(OK, needs_reset=True, ok_len=S + 1)
    robust.run(chain, allow, check=data_is(robust.known(1), "IN through a nested table"))


@pytest.mark.clause("driver.indirect-needs-feature", "status.needs-reset-set",
                    "reset.status-write-resets")
@pytest.mark.parametrize("length", [0, 8, 24, 47])
def test_indirect_length_not_multiple_of_16(robust, length):
    """2.7.5.3: an indirect table is len / 16 descriptors; any other length is malformed."""
    robust.init(require=[spec.VIRTIO_F_INDIRECT_DESC])
    chain = read_chain(indirect=True).with_desc(0, length=length)
    robust.run(chain, UNANSWERABLE)


@pytest.mark.clause("driver.indirect-no-next", "status.needs-reset-set", "blk.in-data",
                    "split.used-len")
def test_indirect_with_next(robust):
    """2.7.5.3.1: INDIRECT and NEXT never together.  The device refuses, or uses the
    table alone: then the status goes into the table's last buffer, not into the
    descriptor NEXT points at."""
    robust.init(require=[spec.VIRTIO_F_INDIRECT_DESC])
    chain = read_chain(indirect=True)
    stray = BufferSpec(1, True)
    chain = replace(chain, buffers=chain.buffers + (stray,),
                    descs=(replace(chain.descs[0], flags=INDIRECT | NEXT, next=1),
                           DescSpec(1, WRITE, buffer=len(chain.buffers))))
    robust.run(chain, allowed(OK, needs_reset=True, ok_len=S + 1),
               check=data_is(robust.known(1), "IN through an indirect table flagged NEXT"))


@pytest.mark.clause("driver.indirect-needs-feature", "status.needs-reset-set", "blk.in-data",
                    "split.used-len")
def test_indirect_without_the_feature(robust):
    """2.7.5.3.1: INDIRECT only with VIRTIO_F_INDIRECT_DESC negotiated.  Refused, or
    (a device that reads tables anyway) completed with the exact data."""
    robust.init(exclude=[spec.VIRTIO_F_INDIRECT_DESC])
    robust.run(read_chain(indirect=True), allowed(OK, needs_reset=True, ok_len=S + 1),
               check=data_is(robust.known(1), "IN through an unnegotiated indirect table"))


@pytest.mark.clause("split.indirect-after-chain", "split.indirect-ignore-write-flag",
                    "split.no-write-desc-table", "blk.in-data", "split.used-len")
@pytest.mark.parametrize("flags", [INDIRECT, INDIRECT | WRITE], ids=["plain", "write-flag"])
def test_indirect_after_direct_descriptors(robust, flags):
    """2.7.5.3.2: the device handles direct descriptors followed by one INDIRECT
    descriptor (legal, if unusual), ignoring a WRITE flag on it: exact data, and the
    table stays untouched (docs/findings/qemu-indirect-descriptor-not-at-head.json:
    QEMU honours INDIRECT on the head only and writes into the table)."""
    robust.init(require=[spec.VIRTIO_F_INDIRECT_DESC])
    base = read_chain()
    hdr, data, status = base.descs
    chain = ChainSpec(base.buffers, (replace(hdr, flags=NEXT, next=1),
                                     DescSpec(32, flags, table=0)),
                      ((replace(data, next=1), status),), status=base.status)
    robust.run(chain, allowed(OK, ok_len=S + 1), legal=True,
               check=data_is(robust.known(1), "IN with its writable part in a table"))


@pytest.mark.clause("split.indirect-ignore-write-flag", "split.no-write-desc-table",
                    "blk.in-data", "split.used-len")
def test_indirect_descriptor_flagged_write(robust):
    """2.7.5.3.2: the device ignores WRITE on the descriptor that points at the table;
    the table is still only read."""
    robust.init(require=[spec.VIRTIO_F_INDIRECT_DESC])
    chain = read_chain(indirect=True).with_desc(0, flags=INDIRECT | WRITE)
    robust.run(chain, allowed(OK, ok_len=S + 1), legal=True,
               check=data_is(robust.known(1), "IN through a table flagged WRITE"))


# --- buffers the device cannot or must not reach ------------------------------------------


#: Buffers the platform cannot back: a device that checks addresses refuses
#: (NEEDS_RESET, or IOERR); one that leaves it to the bus (QEMU maps such addresses
#: through a bounce buffer: writes vanish, reads return what the bus returns) may
#: complete the request with any status, or with the status lost when it lies out
#: there.  What it must never do is write into guest memory the driver did not name.
UNREACHABLE = allowed(OK, IOERR, UNSUPP, needs_reset=True, lost_status=True)


@pytest.mark.clause("driver.blk-request-layout", "status.needs-reset-set", "blk.status-ioerr",
                    "split.no-write-readable", "reset.status-write-resets")
@pytest.mark.parametrize("alias", [32, 40, 63])
@pytest.mark.parametrize("part", ["header", "data", "status", "table"])
def test_buffer_beyond_guest_memory(robust, part, alias):
    """A descriptor points 2**alias bytes past a guard zone, beyond guest memory.  A
    device that truncates bus addresses writes into the zone (memory corruption); one
    that checks them refuses; one that leaves it to the bus completes (UNREACHABLE)."""
    if part == "table":
        robust.init(require=[spec.VIRTIO_F_INDIRECT_DESC])
        chain = read_chain(indirect=True).with_desc(0, table=None, alias=alias)
    else:
        robust.init()
        index = {"header": 0, "data": 1, "status": 2}[part]
        chain = read_chain().with_desc(index, buffer=None, alias=alias)
    robust.run(chain, UNREACHABLE)


@pytest.mark.clause("driver.blk-request-layout", "status.needs-reset-set", "blk.status-ioerr",
                    "reset.status-write-resets")
@pytest.mark.parametrize("addr,length", [(U64 - 256, 2 * S), (U64 - 1, 2), (1 << 63, S)],
                         ids=["wraps-2^64", "last-byte", "2^63"])
def test_data_address_overflow(robust, addr, length):
    """The data buffer's address + length passes 2**64 (or starts at 2**63)."""
    robust.init()
    chain = read_chain().with_desc(1, buffer=None, addr=addr, length=length)
    robust.run(chain, UNREACHABLE)


@pytest.mark.clause("driver.blk-request-layout", "status.needs-reset-set", "blk.status-ioerr",
                    "reset.status-write-resets")
def test_data_length_beyond_guest_memory(robust):
    """A data descriptor of 4 GiB - 1 that starts inside guest memory runs past its end."""
    robust.init()
    chain = read_chain().with_desc(1, length=0xFFFFFFFF)
    robust.run(chain, UNREACHABLE)


@pytest.mark.clause("driver.blk-request-layout", "status.needs-reset-set", "blk.status-ioerr",
                    "blk.status-ok", "split.used-len")
@pytest.mark.parametrize("region", ["notify", "common", "isr"])
def test_data_into_the_devices_own_registers(robust, region):
    """IN data aimed at the device's own BAR (DMA onto its registers, the shape of the
    re-entrancy bugs VMMs had): whatever the device does, it must survive it."""
    robust.init()
    t = robust.device.transport
    cap = {"notify": t.notify, "common": t.common, "isr": t.isr}[region]
    offset = cap.offset + (spec.COMMON_STATUS if region == "common" else 0)
    chain = read_chain().with_desc(1, buffer=None, bar=cap.bar, offset=offset)
    robust.run(chain, allowed(OK, IOERR, needs_reset=True, ok_len=S + 1))


@pytest.mark.clause("driver.blk-request-layout", "status.needs-reset-set", "blk.flush",
                    "reset.status-write-resets")
@pytest.mark.parametrize("type_", [spec.VIRTIO_BLK_T_FLUSH, IN], ids=["flush", "in"])
def test_status_byte_into_device_status(robust, type_):
    """The status byte's descriptor points at the device's own device_status register:
    completing the request writes 0 there, a device reset from inside the completion
    (docs/findings/qemu-status-dma-into-device-status.json: QEMU 7.2 and 10.0 hang).
    The device may refuse or complete; it must stay alive and come back after a reset."""
    if type_ == spec.VIRTIO_BLK_T_FLUSH:
        robust.init(require=[spec.VIRTIO_BLK_F_FLUSH])
        chain = blk_chain(type_, 0)
    else:
        robust.init()
        chain = read_chain()
    t = robust.device.transport
    chain = chain.with_desc(len(chain.descs) - 1, buffer=None, bar=t.common.bar,
                            offset=t.common.offset + spec.COMMON_STATUS)
    robust.run(chain, allowed(OK, IOERR, needs_reset=True, lost_status=True))


# --- one descriptor, two chains -------------------------------------------------------------


@pytest.mark.clause("driver.no-alter-exposed-buffers", "status.needs-reset-set", "blk.in-data",
                    "split.used-len")
def test_same_chain_made_available_twice(robust):
    """The same head twice in the available ring: refused, or used twice with the
    same data."""
    robust.init()
    chain = replace(read_chain(), heads=(0, 0))

    def check(obs):
        if obs.needs_reset or len(obs.used) == 2:
            return []
        return [f"{len(obs.used)} of the 2 available entries were used"]
    obs = robust.send(chain)
    robust.verdict(obs, allowed(OK, needs_reset=True, ok_len=S + 1), chain,
                   check=lambda o: check(o) + data_is(robust.known(1), "IN")(o))


@pytest.mark.clause("driver.no-alter-exposed-buffers", "status.needs-reset-set", "blk.in-data",
                    "split.used-len")
def test_two_chains_share_descriptors(robust):
    """Chains 0->1->2 and 3->1->2 share the data and status descriptors (IN of sectors 1
    and 5): refused, or both used, the data being one of the two sectors."""
    robust.init()
    base = read_chain(1)
    other = BufferSpec(16, False, header(IN, 5))
    buffers = base.buffers + (other,)
    descs = base.descs + (DescSpec(16, NEXT, buffer=3, next=1),)
    chain = ChainSpec(buffers, descs, heads=(0, 3), status=base.status)
    one, five = robust.known(1), robust.known(5)

    def check(obs):
        if obs.needs_reset:
            return []
        problems = [] if len(obs.used) == 2 else [f"{len(obs.used)} of 2 chains used"]
        if obs.status == OK and obs.writable[1] not in (one, five):
            problems.append("the shared data buffer holds neither sector 1 nor sector 5")
        return problems
    robust.run(chain, allowed(OK, needs_reset=True, ok_len=S + 1), check=check)


@pytest.mark.clause("driver.no-alter-exposed-buffers", "status.needs-reset-set", "blk.in-data",
                    "split.used-len", "blk.mq-queues")
def test_same_descriptor_table_in_two_queues(robust):
    """Queues 0 and 1 share one descriptor table and both make head 0 available: each
    queue completes the read (or the device refuses); the data is exact either way."""
    blk = robust.init(num_queues=2, require=[spec.VIRTIO_BLK_F_MQ])
    # Start over with queue 1 pointing at queue 0's table before either is enabled.
    blk.init(num_queues=2, driver_ok=False, enable_queues=False)
    q0, q1 = blk.queues[0], blk.queues[1]
    q1.layout.desc = q0.layout.desc
    t = blk.transport
    t.queue_write(1, spec.COMMON_Q_DESCLO, 4, q0.layout.desc & 0xFFFFFFFF)
    t.queue_write(1, spec.COMMON_Q_DESCHI, 4, q0.layout.desc >> 32)
    blk.virtio.enable_queue(0)
    blk.virtio.enable_queue(1)
    blk.virtio.driver_ok()
    raw0, raw1 = RawQueue(blk, 0, robust.quiet), RawQueue(blk, 1, robust.quiet)
    chain = read_chain()
    arena, ops = raw0.place(chain)
    ops += raw1.ring_ops(chain, arena)
    ops += [raw0.kick_op(), raw1.kick_op()]
    robust.guarded(lambda: blk.platform.execute(ops))
    robust.guarded(lambda: (raw0.settle(1), raw1.settle(1)))
    obs0 = robust.guarded(lambda: raw0.observe(chain, arena))
    obs1 = robust.guarded(lambda: raw1.observe(chain, arena))
    robust.raw = raw0
    extra = [] if obs0.needs_reset else robust.judge(obs1, allowed(OK, needs_reset=True,
                                                                   ok_len=S + 1), chain)
    robust.verdict(obs0, allowed(OK, needs_reset=True, ok_len=S + 1), chain, extra=extra,
                   check=data_is(robust.known(1), "IN through the shared table"))
