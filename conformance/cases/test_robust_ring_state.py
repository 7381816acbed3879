"""Robustness: ring state (2.7.6 - 2.7.10 split, 2.8 packed, 4.1.4.3 queue configuration).

The driver moves the available index too far (or backwards), names heads the
table does not have, writes odd flags and event indexes, scribbles on the
device's used ring, confuses the packed ring's wrap counters, notifies queues
that are not enabled or do not exist, writes queue sizes the device cannot
have, and enables rings at address 0, overlapping or misaligned.
"""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from conformance import spec
from conformance.driver.platform import BarWrite, MemWrite
from conformance.fuzz.chain import WRITE, blk_chain, for_packed
from conformance.fuzz.rawring import RawQueue
from conformance.robustness import IOERR, OK, UNANSWERABLE, UNSUPP, allowed, data_is

pytestmark = pytest.mark.robustness

S = spec.SECTOR_SIZE
IN = spec.VIRTIO_BLK_T_IN
AVAIL = spec.VIRTQ_DESC_F_AVAIL
USED = spec.VIRTQ_DESC_F_USED


def read_chain(sector: int = 1):
    return blk_chain(IN, sector, read_len=S, writable_split=(S, 1))


def read_ok(robust, sector: int = 1):
    return allowed(OK, ok_len=S + 1), data_is(robust.known(sector), f"IN of sector {sector}")


def notify_with_data(robust, raw, chain, arena, ops: list, high: int):
    """Run ``ops`` (which place ``chain``), notify with notification data whose upper
    16 bits are ``high`` (4.1.5.2; the queue index stays in the lower 16), and return
    what the device did with the chain."""
    op = raw.kick_op()
    value = op.value & 0xFFFF | (high & 0xFFFF) << 16  # type: ignore[union-attr]
    ops.append(BarWrite(op.bar, op.off, 4, value))  # type: ignore[union-attr]
    robust.guarded(lambda: robust.platform.execute(ops))
    robust.guarded(lambda: raw.settle(1))
    return robust.guarded(lambda: raw.observe(chain, arena))


# --- the available ring ------------------------------------------------------------------


@pytest.mark.clause("driver.avail-idx-no-decrement", "split.avail-idx-wrap",
                    "status.needs-reset-set", "reset.status-write-resets")
@pytest.mark.parametrize("advance", [17, 0x8000, 0xFFFF], ids=["size+1", "half-wrap",
                                                                 "minus-one"])
def test_avail_idx_jumps_beyond_queue_size(robust, advance):
    """The available idx moves by more than the queue holds (0xFFFF: backwards by one).
    The ring cannot hold that many new entries: the device refuses."""
    robust.init(queue_size=16)
    robust.run(replace(read_chain(), avail_advance=advance), UNANSWERABLE)


@pytest.mark.clause("driver.chain-max-queue-size", "status.needs-reset-set",
                    "reset.status-write-resets")
@pytest.mark.parametrize("head", [16, 0xFFFF], ids=["queue-size", "0xffff"])
def test_available_head_out_of_range(robust, head):
    """An available ring entry names a descriptor the table does not have."""
    robust.init(queue_size=16)
    robust.run(replace(read_chain(), heads=(head,)), UNANSWERABLE)


@pytest.mark.clause("driver.avail-flags-values", "split.no-interrupt-flag", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("event_idx", [False, True], ids=["no-event-idx", "event-idx"])
def test_avail_flags_all_ones(robust, event_idx):
    """2.7.7.1: the available flags are 0 or 1.  With 0xFFFF the device may stay quiet,
    but the request still completes."""
    exclude = [] if event_idx else [spec.VIRTIO_F_EVENT_IDX]
    robust.init(exclude=exclude, require=[spec.VIRTIO_F_EVENT_IDX] if event_idx else [])
    allow, check = read_ok(robust)
    robust.run(replace(read_chain(), avail_flags=0xFFFF), allow, check=check)


@pytest.mark.clause("split.event-idx-suppress", "split.event-idx-notify", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("distance", [0x8000, 0xFFFF, 2], ids=["half-wrap", "just-passed",
                                                                 "two-ahead"])
def test_used_event_far_away(robust, distance):
    """used_event far from the used idx: no notification is due, and the request
    completes all the same (the device must not wait for the event to come near)."""
    robust.init(require=[spec.VIRTIO_F_EVENT_IDX])
    allow, check = read_ok(robust)
    robust.run(replace(read_chain(), used_event=distance), allow, check=check, legal=True)


@pytest.mark.clause("driver.used-ring-read-only", "split.used-idx-wrap", "blk.in-data",
                    "split.used-len")
def test_driver_scribbles_on_the_used_ring(robust):
    """The driver writes the device's used ring (flags, idx, elements, avail_event).
    The device keeps its own count: the next used entry goes where it belongs."""
    robust.init()
    raw = robust.raw_queue()
    used = raw.q.layout.device
    junk = struct.pack("<HH", 0xFFFF, (raw.used_idx + 0x1234) & 0xFFFF) + b"\xee" * (
        8 * raw.size) + b"\xdd\xdd"
    robust.guarded(lambda: robust.platform.execute([MemWrite(used, junk)]))
    # The device writes idx = its own count + 1; restore the driver's view of it.
    robust.guarded(lambda: robust.platform.execute(
        [MemWrite(used + 2, struct.pack("<H", raw.used_idx))]))
    allow, check = read_ok(robust)
    robust.run(read_chain(), allow, check=check)


# --- notifications -----------------------------------------------------------------------


@pytest.mark.clause("pci.queue-enable-gate", "driver.queue-configure-before-enable",
                    "blk.in-data", "split.used-len")
def test_notify_queue_that_is_not_enabled(robust):
    """Queue 1 is configured but not enabled: a notification for it must not make the
    device use its buffers (4.1.4.3)."""
    blk = robust.init(num_queues=2, require=[spec.VIRTIO_BLK_F_MQ])
    blk.init(num_queues=2, enable_queues=False, driver_ok=False)
    blk.virtio.enable_queue(0)
    blk.virtio.driver_ok()
    raw1 = RawQueue(blk, 1, robust.quiet)
    obs = robust.guarded(lambda: raw1.run(read_chain()))
    robust.raw = raw1
    robust.verdict(obs, allowed(unused=True), read_chain())


@pytest.mark.clause("notify.pci-queue-index", "split.spurious-notify", "blk.in-data",
                    "split.used-len")
def test_notify_queue_that_does_not_exist(robust):
    """A notification for a queue index past num_queues, then the real one: the bogus
    one does nothing harmful and the request completes."""
    blk = robust.init()
    t = blk.transport
    n = t.num_queues
    mult = t.notify.notify_off_multiplier or 0
    bar = blk.virtio.bars[t.notify.bar]
    off = t.notify_offset(n)
    bogus = [BarWrite(t.notify.bar, off, 2, n)] if mult == 0 or off + 2 <= bar.size else []
    bogus.append(BarWrite(t.notify.bar, t.notify.offset, 2, 0xFFFF if mult == 0 else 0))
    robust.guarded(lambda: robust.platform.execute(bogus))
    allow, check = read_ok(robust)
    robust.run(read_chain(), allow, check=check)


@pytest.mark.clause("notify.pci-notification-data", "split.spurious-notify", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("ahead", [100, 0x8000])
def test_notification_data_index_wrong(robust, ahead):
    """With VIRTIO_F_NOTIFICATION_DATA the notification names a next available index
    ``ahead`` past the real one.  The index in memory is what counts; the device may
    also refuse the inconsistent notification."""
    robust.init(require=[spec.VIRTIO_F_NOTIFICATION_DATA])
    raw = robust.raw_queue()
    chain = read_chain()
    arena, ops = raw.place(chain)
    obs = notify_with_data(robust, raw, chain, arena, ops, raw.avail_idx + ahead)
    # served exactly, or refused with NEEDS_RESET
    allow, check = read_ok(robust)
    robust.verdict(obs, replace(allow, needs_reset=True), chain, check=check)


# --- queue configuration ---------------------------------------------------------------------


def configure(robust, size_value: int | None = None, keep_layout: bool = False,
              **addr) -> tuple[list[str], int]:
    """Bring queue 0 up by hand: write ``size_value`` to queue_size (if given), take what
    the device reads back, lay the rings out for that, enable, DRIVER_OK.  ``addr``
    overrides desc/driver/device addresses (``keep_layout``: only the device is told;
    the driver keeps writing its own copy).  Returns (problems, size used)."""
    blk = robust.device
    blk.init(enable_queues=False, driver_ok=False)
    t = blk.transport
    max_size = blk.virtio.queue_info[0].max_size
    problems: list[str] = []
    size = blk.queues[0].size
    if size_value is not None:
        t.queue_write(0, spec.COMMON_Q_SIZE, 2, size_value)
        back = t.queue_read(0, spec.COMMON_Q_SIZE, 2)
        ok = back in (max_size, size, size_value) and (back == 0 or back & (back - 1) == 0)
        if not ok:
            problems.append(f"queue_size reads {back} after the driver wrote {size_value} "
                            f"(maximum {max_size}): 4.1.4.3.1 wants 0 or a power of 2")
        if back == 0 or not ok:
            return problems, 0
        size = back
        blk.virtio.setup_queue(0, size=size, enable=False,
                               vector=1 % blk.virtio.msix.cap.table_size
                               if blk.virtio.msix else None)
    q = blk.queues[0]
    for name, (lo, hi) in (("desc", (spec.COMMON_Q_DESCLO, spec.COMMON_Q_DESCHI)),
                           ("driver", (spec.COMMON_Q_AVAILLO, spec.COMMON_Q_AVAILHI)),
                           ("device", (spec.COMMON_Q_USEDLO, spec.COMMON_Q_USEDHI))):
        if name in addr:
            if not keep_layout:
                setattr(q.layout, name, addr[name])
            t.queue_write(0, lo, 4, addr[name] & 0xFFFFFFFF)
            t.queue_write(0, hi, 4, addr[name] >> 32)
    blk.virtio.enable_queue(0)
    blk.virtio.driver_ok()
    return problems, size


@pytest.mark.clause("driver.queue-size-power-of-2", "driver.queue-size-max",
                    "pci.queue-size-power-of-2", "pci.queue-size-writable", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("value", ["twice-the-maximum", "not-a-power-of-2", "zero", "0xffff"])
def test_queue_size_the_device_cannot_have(robust, value):
    """The driver writes a queue_size above the maximum, not a power of 2 (split), 0 or
    0xFFFF.  The device keeps a size it can present (4.1.4.3.1: 0 or a power of 2) and
    serves a ring laid out for that size."""
    blk = robust.init()
    max_size = blk.virtio.queue_info[0].max_size
    wanted = {"twice-the-maximum": 2 * max_size, "not-a-power-of-2": max_size - 1 or 3,
              "zero": 0, "0xffff": 0xFFFF}[value]
    problems, size = robust.guarded(lambda: configure(robust, wanted))
    if not size:
        robust.health_only(extra=problems)
        return
    robust.raw = None
    allow, check = read_ok(robust)
    obs = robust.send(read_chain())
    robust.verdict(obs, replace(allow, needs_reset=True), read_chain(), extra=problems,
                   check=check)


@pytest.mark.clause("driver.queue-configure-before-enable", "status.needs-reset-set",
                    "reset.status-write-resets", "pci.queue-enable-zero-on-reset")
def test_queue_enabled_at_address_zero(robust):
    """queue_enable written while the ring addresses still hold their reset value 0
    (no notification follows: memory at 0 is not the driver's).  The device must come
    back after a reset, its queue disabled again (4.1.4.3.1) so new addresses take."""
    blk = robust.init()
    blk.init(enable_queues=False, driver_ok=False)
    t = blk.transport
    for off in (spec.COMMON_Q_DESCLO, spec.COMMON_Q_DESCHI, spec.COMMON_Q_AVAILLO,
                spec.COMMON_Q_AVAILHI, spec.COMMON_Q_USEDLO, spec.COMMON_Q_USEDHI):
        t.queue_write(0, off, 4, 0)
    blk.virtio.enable_queue(0)
    robust.guarded(lambda: blk.virtio.driver_ok())
    robust.health_only()


@pytest.mark.clause("driver.ring-parts-separate", "status.needs-reset-set", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("overlap", ["used-on-avail", "used-on-desc"])
def test_overlapping_rings(robust, overlap):
    """The used ring lies on top of the available ring or the descriptor table.  The
    device then overwrites what it reads; it may complete the request or refuse, and
    must survive."""
    blk = robust.init()
    q = blk.queues[0]
    where = q.layout.driver if overlap == "used-on-avail" else q.layout.desc + 16 * 8
    robust.guarded(lambda: configure(robust, None, device=where))
    robust.raw = None
    obs = robust.send(read_chain())
    # Writing its own ring parts the driver also wrote the device's used ring, so the
    # used entries say nothing; what counts is memory outside the rings and recovery.
    obs.ring = []
    robust.verdict(obs, allowed(OK, IOERR, UNSUPP, needs_reset=True, unused=True,
                                lost_status=True), read_chain())


@pytest.mark.clause("driver.split-ring-alignment", "status.needs-reset-set", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("part", ["desc-plus-8", "used-plus-2"])
def test_misaligned_ring(robust, part):
    """2.7.1: 16-byte aligned descriptor table, 4-byte aligned used ring.  Misaligned,
    the device may refuse, or serve the ring where it is."""
    blk = robust.init()
    pool = blk.virtio.pool
    size = blk.queues[0].size
    if part == "desc-plus-8":
        base = pool.alloc(16 * size + 16, 16)
        addr = {"desc": base + 8}
    else:
        base = pool.alloc(spec.split_used_size(size) + 8, 8)
        addr = {"device": base + 2}
    robust.guarded(lambda: robust.platform.execute(
        [MemWrite(base, bytes(16 * size + 16 if part == "desc-plus-8"
                              else spec.split_used_size(size) + 8))]))
    robust.guarded(lambda: configure(robust, None, **addr))
    robust.raw = None
    allow, check = read_ok(robust)
    obs = robust.send(read_chain())
    robust.verdict(obs, replace(allow, needs_reset=True), read_chain(), check=check)


@pytest.mark.clause("driver.queue-configure-before-enable", "status.needs-reset-set",
                    "reset.status-write-resets", "pci.queue-enable-zero-on-reset")
@pytest.mark.parametrize("part", ["desc", "driver", "device"])
def test_ring_beyond_guest_memory(robust, part):
    """A ring part at 2**40, beyond guest memory: the device cannot use the queue and
    refuses (NEEDS_RESET), or leaves the request alone."""
    robust.init()
    robust.guarded(lambda: configure(robust, None, keep_layout=True, **{part: 1 << 40}))
    robust.raw = None
    chain = read_chain()
    # The driver's own copy of the rings stays where it was allocated; the device
    # was told 2**40.
    obs = robust.send(chain)
    robust.verdict(obs, allowed(needs_reset=True, unused=True), chain)


# --- packed rings ---------------------------------------------------------------------------


def packed_read():
    return for_packed(read_chain())


@pytest.mark.clause("packed.avail-flag-required", "packed.wrap-counter", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("bits", ["avail-and-used", "neither", "next-lap"],
                         ids=["avail-and-used", "neither", "next-lap"])
def test_packed_descriptor_not_available(robust, bits):
    """2.8.1: a descriptor is available when AVAIL equals the driver's wrap counter (1)
    and USED does not.  Flags that say otherwise (AVAIL=USED=1 looks used; neither
    set; AVAIL=0/USED=1 is the next lap's marking) must not be used.  Written right
    afterwards, the same descriptor completes."""
    robust.init(packed=True)
    flags = {"avail-and-used": AVAIL | USED, "neither": 0, "next-lap": USED}[bits]
    chain = packed_read()
    hostile = chain.with_desc(0, raw_flags=True, flags=(chain.descs[0].flags & 0x7F) | flags)
    raw = robust.raw_queue()
    slot, wrap = raw.avail_slot, raw.avail_wrap
    desc = raw.desc_addr(slot)
    # By hand: AVAIL=USED=1 is also what a used descriptor looks like to the driver, so
    # "untouched" means the slot still holds exactly what the driver wrote.
    _arena, ops = raw.place(hostile)
    written = ops[-2].data  # type: ignore[union-attr]  (the head, written last, then event)
    ops += [raw.kick_op()]
    robust.guarded(lambda: robust.platform.execute(ops))
    robust.guarded(lambda: raw.settle(1))
    after = robust.guarded(lambda: robust.platform.mem_read(desc, 16))
    status = robust.guarded(lambda: robust.device.transport.device_status)
    problems = []
    if after != written:
        problems.append(f"the device wrote slot {slot}, which was not available (2.8.1)")
    if status & spec.STATUS_DEVICE_NEEDS_RESET:
        problems.append("the device set DEVICE_NEEDS_RESET for a descriptor it had to ignore")
    # Now make the same list available properly.
    raw.avail_slot, raw.avail_wrap = slot, wrap
    allow, check = read_ok(robust)
    obs = robust.send(chain)
    robust.verdict(obs, allow, chain, check=check, extra=problems)


@pytest.mark.clause("driver.packed-list-avail-together", "status.needs-reset-set",
                    "blk.in-data", "split.used-len")
def test_packed_list_continues_into_unavailable_slot(robust):
    """2.8.17: every descriptor of a list is made available; here the second one carries
    the wrong wrap marking.  The device refuses, or (reading the list as written) completes
    it with the exact data."""
    robust.init(packed=True)
    chain = packed_read()
    chain = chain.with_desc(1, raw_flags=True, flags=(chain.descs[1].flags & 0x7F) | USED)
    allow, check = read_ok(robust)
    robust.run(chain, replace(allow, needs_reset=True), check=check)


@pytest.mark.clause("driver.packed-list-max-queue-size", "status.needs-reset-set",
                    "reset.status-write-resets")
def test_packed_list_longer_than_the_ring(robust):
    """2.8.17: a list never exceeds the queue size; here every slot of an 8-entry ring
    is part of one list whose last descriptor still has NEXT set."""
    robust.init(packed=True, queue_size=8)
    base = packed_read()
    descs = list(base.descs[:2]) + [replace(base.descs[2], length=1, flags=WRITE | 1)] * 6
    chain = replace(base, descs=tuple(descs))
    robust.run(chain, UNANSWERABLE)


@pytest.mark.clause("driver.packed-framing-readable-first", "status.needs-reset-set",
                    "reset.status-write-resets")
def test_packed_readable_after_writable(robust):
    """2.8.17: in a packed list the device-writable elements come last; here the header
    follows the data buffer."""
    robust.init(packed=True)
    chain = packed_read()
    hdr, data, status = chain.descs
    chain = replace(chain, descs=(replace(data, flags=WRITE | 1), replace(hdr, flags=1),
                                  status))
    robust.run(chain, UNANSWERABLE)


@pytest.mark.clause("driver.packed-indirect-rules", "packed.indirect-ignore-flags",
                    "blk.in-data", "split.used-len")
def test_packed_indirect_table_with_next_flags(robust):
    """2.8.19: inside a packed indirect table the driver sets no flag but WRITE; the
    device ignores every other flag (2.8.7), so NEXT bits there change nothing."""
    robust.init(packed=True, require=[spec.VIRTIO_F_INDIRECT_DESC])
    chain = for_packed(blk_chain(IN, 1, read_len=S, writable_split=(S, 1), indirect=True))
    table = tuple(replace(d, flags=d.flags | 1, next=0) for d in chain.tables[0])
    chain = replace(chain, tables=(table,))
    allow, check = read_ok(robust)
    robust.run(chain, allow, check=check, legal=True)


@pytest.mark.clause("driver.packed-indirect-rules", "status.needs-reset-set",
                    "reset.status-write-resets")
def test_packed_indirect_inside_a_list(robust):
    """2.8.19: a direct descriptor flagged INDIRECT never sits in a NEXT-linked list."""
    robust.init(packed=True, require=[spec.VIRTIO_F_INDIRECT_DESC])
    chain = for_packed(blk_chain(IN, 1, read_len=S, writable_split=(S, 1), indirect=True))
    hdr_table = chain.descs[0]
    lead = replace(chain.tables[0][0], flags=1)  # the header as a direct descriptor, NEXT
    chain = replace(chain, descs=(lead, replace(hdr_table, flags=hdr_table.flags)))
    robust.run(chain, allowed(OK, needs_reset=True, ok_len=S + 1))


@pytest.mark.clause("driver.packed-notify-position", "notify.pci-notification-data",
                    "blk.in-data", "split.used-len")
@pytest.mark.parametrize("wrong", ["offset-ahead", "wrap-flipped"])
def test_packed_notification_data_wrong(robust, wrong):
    """2.8.16: a packed notification names the next descriptor not yet available; this
    one names another (or the other lap).  The ring itself is what counts; the device
    may also refuse."""
    robust.init(packed=True, require=[spec.VIRTIO_F_NOTIFICATION_DATA])
    raw = robust.raw_queue()
    chain = packed_read()
    arena, ops = raw.place(chain)
    off, wrap = raw.avail_slot, int(raw.avail_wrap)
    if wrong == "offset-ahead":
        off = (off + 5) % raw.size
    else:
        wrap ^= 1
    obs = notify_with_data(robust, raw, chain, arena, ops, (off & 0x7FFF) | wrap << 15)
    # served exactly, or refused with NEEDS_RESET
    allow, check = read_ok(robust)
    robust.verdict(obs, replace(allow, needs_reset=True), chain, check=check)
