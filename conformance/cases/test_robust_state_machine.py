"""Robustness: the device status state machine and its registers (3.1 Device Initialization,
2.4 Device Reset, 2.6.1 Virtqueue Reset, 4.1.4.3 / 4.1.5.1.2 the PCI common configuration).

The driver skips FEATURES_OK, changes features after it, uses a device that
refused its features, clears status bits, notifies before DRIVER_OK, resets
the device or one queue with requests in flight, maps MSI-X vectors that do
not exist, writes read-only registers, and selects queues that do not exist.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from conformance import spec
from conformance.driver.blk import DRIVER_FEATURES
from conformance.driver.platform import MemRead
from conformance.fuzz.chain import blk_chain
from conformance.fuzz.rawring import RawQueue
from conformance.robustness import OK, allowed, data_is

pytestmark = pytest.mark.robustness

S = spec.SECTOR_SIZE
IN = spec.VIRTIO_BLK_T_IN
NO_VECTOR = spec.VIRTIO_MSI_NO_VECTOR


def read_chain(sector: int = 1):
    return blk_chain(IN, sector, read_len=S, writable_split=(S, 1))


def features(blk) -> int:
    return blk.offered & DRIVER_FEATURES & ~(1 << spec.VIRTIO_F_RING_PACKED)


def bring_up(blk, wanted: int, *, features_ok: bool = True, driver_ok: bool = True) -> None:
    """Reset, ACKNOWLEDGE, DRIVER, features, [FEATURES_OK], queue 0 with MSI-X, [DRIVER_OK],
    each step done whether or not the device accepted the one before."""
    v = blk.virtio
    v.reset()
    v.add_status(spec.STATUS_ACKNOWLEDGE)
    v.add_status(spec.STATUS_DRIVER)
    blk.transport.write_driver_features(wanted)
    if features_ok:
        v.add_status(spec.STATUS_FEATURES_OK)
    v.features = wanted
    if v.msix is not None:
        v.msix.enable()
        blk.transport.common_write(spec.COMMON_MSIX, 2, 0)
    v.setup_queue(0, size=16, vector=1 % v.msix.cap.table_size if v.msix else None)
    if driver_ok:
        v.driver_ok()


def any_outcome(robust, sector: int = 1):
    """Refusing to work, NEEDS_RESET, or the exact data: all a device may do here."""
    return (allowed(OK, needs_reset=True, unused=True, ok_len=S + 1),
            data_is(robust.known(sector), f"IN of sector {sector}"))


# --- initialization out of order ------------------------------------------------------------


@pytest.mark.clause("driver.init-sequence", "status.needs-reset-set", "blk.in-data",
                    "split.used-len")
def test_driver_ok_without_features_ok(robust):
    """3.1.1: FEATURES_OK comes before DRIVER_OK.  Without it the device may refuse to
    work; if it works, the data is exact; it never shows FEATURES_OK on its own."""
    blk = robust.init()
    robust.guarded(lambda: bring_up(blk, features(blk), features_ok=False))
    status = blk.transport.device_status
    extra = [f"device_status {spec.status_str(status)} shows FEATURES_OK, which the driver "
             f"never set"] if status & spec.STATUS_FEATURES_OK else []
    allow, check = any_outcome(robust)
    obs = robust.send(read_chain())
    robust.verdict(obs, allow, read_chain(), check=check, extra=extra)


@pytest.mark.clause("driver.features-offered-only", "feat.features-ok-refusal",
                    "status.needs-reset-set", "blk.in-data", "split.used-len")
def test_driver_ok_after_features_refused(robust):
    """The device refused the features (FEATURES_OK did not stick: an unoffered bit was
    accepted); the driver goes on to DRIVER_OK and sends a request anyway."""
    blk = robust.init()
    unoffered = next((b for b in range(64) if not blk.offered >> b & 1), None)
    if unoffered is None:
        pytest.skip("the device offers every one of the first 64 feature bits")
    robust.guarded(lambda: bring_up(blk, features(blk) | 1 << unoffered))
    status = blk.transport.device_status
    extra = [] if not status & spec.STATUS_FEATURES_OK else [
        f"FEATURES_OK stuck although feature bit {unoffered} was never offered (2.2.2)"]
    allow, check = any_outcome(robust)
    obs = robust.send(read_chain())
    robust.verdict(obs, allow, read_chain(), check=check, extra=extra)


@pytest.mark.clause("driver.no-new-features-after-features-ok", "init.features-ok-readback",
                    "blk.in-data", "split.used-len")
@pytest.mark.parametrize("change", ["clear-all", "clear-version-1", "add-unoffered"])
def test_features_changed_after_features_ok(robust, change):
    """3.1.1: no new features after FEATURES_OK.  The device keeps what it accepted:
    FEATURES_OK stays set, and requests work (or it refuses with NEEDS_RESET)."""
    blk = robust.init()
    wanted = features(blk)
    robust.guarded(lambda: bring_up(blk, wanted, driver_ok=False))
    if change == "clear-all":
        later = 0
    elif change == "clear-version-1":
        later = wanted & ~(1 << spec.VIRTIO_F_VERSION_1)
    else:
        later = wanted | next((1 << b for b in range(64) if not blk.offered >> b & 1), 0)
    blk.transport.write_driver_features(later)
    blk.virtio.driver_ok()
    status = blk.transport.device_status
    extra = [] if status & (spec.STATUS_FEATURES_OK | spec.STATUS_DEVICE_NEEDS_RESET) else [
        f"FEATURES_OK was cleared by a feature write after it (device_status "
        f"{spec.status_str(status)})"]
    obs = robust.send(read_chain())
    robust.verdict(obs, allowed(OK, needs_reset=True, ok_len=S + 1), read_chain(),
                   check=data_is(robust.known(1), "IN of sector 1"), extra=extra)


@pytest.mark.clause("driver.no-notify-before-driver-ok", "status.no-use-before-driver-ok",
                    "blk.in-data", "split.used-len")
def test_notify_before_driver_ok(robust):
    """3.1.1: no notification before DRIVER_OK, and the device uses no buffer before it
    (2.1.2).  After DRIVER_OK and a new notification the request completes."""
    blk = robust.init()
    robust.guarded(lambda: bring_up(blk, features(blk), driver_ok=False))
    raw = RawQueue(blk, 0, robust.quiet)
    robust.raw = raw
    chain = read_chain()
    early = robust.send(chain)
    problems = robust.judge(early, allowed(unused=True), chain)
    blk.virtio.driver_ok()
    robust.guarded(lambda: blk.platform.execute([raw.kick_op()]))
    robust.guarded(lambda: raw.settle(1, quiet=max(robust.quiet, 1.0)))
    arena_obs = robust.guarded(lambda: raw.observe(chain, _last_arena(raw, chain)))
    robust.verdict(arena_obs, allowed(OK, ok_len=S + 1), chain, extra=problems,
                   check=data_is(robust.known(1), "IN after DRIVER_OK"))


def _last_arena(raw: RawQueue, chain):
    from conformance.fuzz.rawring import build_arena

    return build_arena(chain, raw.arenas[-1], raw.packed, raw.bars)


@pytest.mark.clause("driver.status-no-clear", "status.needs-reset-set", "blk.in-data",
                    "split.used-len", "reset.status-write-resets")
@pytest.mark.parametrize("write", ["clear-driver-ok", "clear-all-but-acknowledge",
                                   "set-failed"])
def test_status_bits_cleared_or_failed(robust, write):
    """2.1.1: the driver never clears a status bit (only a reset does) and resets after
    FAILED before using the device again.  The device may stop working; if it serves
    the request, the data is exact."""
    blk = robust.init()
    t = blk.transport
    value = {"clear-driver-ok": t.device_status & ~spec.STATUS_DRIVER_OK,
             "clear-all-but-acknowledge": spec.STATUS_ACKNOWLEDGE,
             "set-failed": t.device_status | spec.STATUS_FAILED}[write]
    robust.guarded(lambda: setattr(t, "device_status", value))
    allow, check = any_outcome(robust)
    robust.run(read_chain(), allow, check=check)


# --- reset with requests in flight ------------------------------------------------------------


@pytest.mark.clause("reset.no-queue-access", "reset.status-write-resets", "blk.in-data",
                    "split.used-len")
def test_reset_with_requests_in_flight(robust):
    """Eight reads made available and notified, then at once a device reset.  Once
    device_status reads 0 the device no longer touches the old rings or buffers (2.4.1);
    afterwards it works again."""
    blk = robust.init()
    raw = robust.raw_queue()
    chain = replace(read_chain(), heads=(0,) * 8)
    arena, ops = raw.place(chain)
    ops.append(raw.kick_op())
    robust.guarded(lambda: blk.platform.execute(ops))
    robust.guarded(lambda: blk.transport.reset())
    q = blk.queues[0]
    snap = [MemRead(q.layout.device, spec.split_used_size(raw.size)),
            MemRead(arena.base, arena.size)]
    before = robust.guarded(lambda: blk.platform.execute(snap))
    time.sleep(0.1)
    after = robust.guarded(lambda: blk.platform.execute(snap))
    extra = [] if before == after else [
        "the device wrote the old used ring or buffers after the reset had completed"]
    robust.health_only(extra=extra, legal=True)


@pytest.mark.clause("vq.reset-no-execute", "vq.reenable-new-config", "pci.queue-reset-done",
                    "blk.in-data", "split.used-len")
def test_queue_reset_with_requests_in_flight(robust):
    """With VIRTIO_F_RING_RESET: reads in flight, then queue_reset.  Once queue_reset
    reads 0 the old ring stays untouched (2.6.1.1.1); re-enabled with new rings the
    queue serves a read with the exact data (2.6.1.2.1)."""
    blk = robust.init(require=[spec.VIRTIO_F_RING_RESET])
    raw = robust.raw_queue()
    chain = replace(read_chain(), heads=(0,) * 8)
    arena, ops = raw.place(chain)
    ops.append(raw.kick_op())
    t = blk.transport
    robust.guarded(lambda: blk.platform.execute(ops))
    t.queue_write(0, spec.COMMON_Q_RESET, 2, 1)
    deadline = time.monotonic() + blk.timeout
    while t.queue_read(0, spec.COMMON_Q_RESET, 2):
        if time.monotonic() > deadline:
            robust.health_only(extra=[f"queue_reset still reads 1 after {blk.timeout:g}s"])
            return
        time.sleep(0.001)
    extra = []
    if t.queue_read(0, spec.COMMON_Q_ENABLE, 2):
        extra.append("queue_enable still reads 1 after the queue reset completed")
    q = blk.queues[0]
    snap = [MemRead(q.layout.device, spec.split_used_size(raw.size)),
            MemRead(arena.base, arena.size)]
    before = robust.guarded(lambda: blk.platform.execute(snap))
    time.sleep(0.1)
    after = robust.guarded(lambda: blk.platform.execute(snap))
    if before != after:
        extra.append("the device wrote the old ring or buffers after the queue reset")
    msix = blk.virtio.msix
    robust.guarded(lambda: blk.virtio.setup_queue(
        0, size=16, vector=1 % msix.cap.table_size if msix else None))
    robust.raw = RawQueue(blk, 0, robust.quiet)
    obs = robust.send(read_chain())
    robust.verdict(obs, allowed(OK, ok_len=S + 1), read_chain(), extra=extra, legal=True,
                   check=data_is(robust.known(1), "IN after re-enabling the queue"))


# --- registers --------------------------------------------------------------------------------


@pytest.mark.clause("driver.msix-vector-in-table", "msix.map-failure-no-vector", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("which", ["queue", "config"])
@pytest.mark.parametrize("beyond", [0, 1, 0x7FF, 0xFFFE], ids=["table-size", "table-size+1",
                                                                "0x7ff", "0xfffe"])
def test_msix_vector_out_of_range(robust, which, beyond):
    """4.1.5.1.2.2: no event is mapped to a vector outside the MSI-X table.  The device
    refuses the mapping: the register reads NO_VECTOR (4.1.5.1.2.1); requests work."""
    blk = robust.init()
    if blk.virtio.msix is None:
        pytest.skip("the device has no MSI-X capability")
    size = blk.virtio.msix.cap.table_size
    vector = min(size + beyond, 0xFFFE) if beyond < 0x7FF else beyond
    t = blk.transport
    off = spec.COMMON_Q_MSIX if which == "queue" else spec.COMMON_MSIX
    if which == "queue":
        t.queue_write(0, off, 2, vector)
        back = t.queue_read(0, off, 2)
    else:
        t.common_write(off, 2, vector)
        back = t.common_read(off, 2)
    extra = [] if back == NO_VECTOR else [
        f"{which} vector reads {back:#x} after mapping vector {vector:#x} of a {size}-entry "
        f"table; expected NO_VECTOR"]
    robust.raw = RawQueue(blk, 0, robust.quiet)  # waits without the lost vector
    obs = robust.send(read_chain())
    robust.verdict(obs, allowed(OK, ok_len=S + 1), read_chain(), extra=extra,
                   check=data_is(robust.known(1), "IN of sector 1"))


READ_ONLY = {
    # name: (where, offset, size)
    "device_feature": ("common", spec.COMMON_DF, 4),
    "num_queues": ("common", spec.COMMON_NUMQ, 2),
    "config_generation": ("common", spec.COMMON_CFGGENERATION, 1),
    "queue_notify_off": ("common", spec.COMMON_Q_NOFF, 2),
    "capacity": ("device", spec.BLK_CFG_CAPACITY, 4),
    "num_queues_blk": ("device", spec.BLK_CFG_NUM_QUEUES, 2),
    "isr": ("isr", 0, 1),
}


@pytest.mark.clause("driver.common-ro-fields", "blk.capacity", "isr.read-clears",
                    "blk.in-data", "split.used-len")
@pytest.mark.parametrize("field", list(READ_ONLY))
def test_write_to_read_only_field(robust, field):
    """4.1.4.3.2: the driver does not write device_feature, num_queues,
    config_generation or queue_notify_off; the block config is read-only but for
    writeback; ISR is only read.  A write changes nothing, and requests work."""
    blk = robust.init()
    where, off, size = READ_ONLY[field]
    t = blk.transport
    if where == "common":
        t.select_queue(0)
        read = lambda: t.common_read(off, size)  # noqa: E731
        write = lambda v: t.common_write(off, size, v)  # noqa: E731
    elif where == "device":
        read = lambda: t.config_read(off, size)  # noqa: E731
        write = lambda v: t.config_write(off, size, v)  # noqa: E731
    else:
        read = lambda: blk.platform.bar_read(t.isr.bar, t.isr.offset, 1)  # noqa: E731
        write = lambda v: blk.platform.bar_write(t.isr.bar, t.isr.offset, 1, v)  # noqa: E731
    before = read()
    garbage = (~before) & ((1 << (8 * size)) - 1) or 1
    robust.guarded(lambda: write(garbage))
    after = read()
    extra = [] if after == before or (field == "isr" and after == 0) else [
        f"{field} reads {after:#x} after the driver wrote {garbage:#x} (it read {before:#x})"]
    allow, check = allowed(OK, ok_len=S + 1), data_is(robust.known(1), "IN of sector 1")
    robust.run(read_chain(), allow, check=check) if not extra else robust.verdict(
        robust.send(read_chain()), allow, read_chain(), check=check, extra=extra)


@pytest.mark.clause("pci.queue-size-unavailable-zero", "driver.queue-configure-before-enable",
                    "blk.in-data", "split.used-len")
@pytest.mark.parametrize("select", ["num_queues", "0xffff"])
def test_configure_a_queue_that_does_not_exist(robust, select):
    """queue_select names a queue the device does not have: queue_size reads 0 and the
    driver's writes to its fields (size, addresses, enable) reach no real queue.

    A device may decline to store the selection (no requirement makes it keep every
    value); it then reads back another queue, and a driver that looks stops there.
    """
    blk = robust.init()
    t = blk.transport
    index = t.num_queues if select == "num_queues" else 0xFFFF
    t.select_queue(index)
    selected = t.common_read(spec.COMMON_Q_SELECT, 2)
    if selected != index:
        pytest.skip(f"the device did not store queue_select {index:#x} (reads back "
                    f"{selected:#x}): that queue cannot be selected to configure it")
    size = t.common_read(spec.COMMON_Q_SIZE, 2)
    extra = [] if size == 0 else [f"queue_size reads {size} for queue {index}, which the "
                                  f"device does not have (4.1.4.3.1 wants 0)"]
    for off, value in ((spec.COMMON_Q_SIZE, 4), (spec.COMMON_Q_DESCLO, 0x1000),
                       (spec.COMMON_Q_AVAILLO, 0x2000), (spec.COMMON_Q_USEDLO, 0x3000),
                       (spec.COMMON_Q_ENABLE, 1)):
        t.common_write(off, 4 if off in (spec.COMMON_Q_DESCLO, spec.COMMON_Q_AVAILLO,
                                         spec.COMMON_Q_USEDLO) else 2, value)
    robust.raw = RawQueue(blk, 0, robust.quiet)
    obs = robust.send(read_chain())
    robust.verdict(obs, allowed(OK, ok_len=S + 1), read_chain(), extra=extra,
                   check=data_is(robust.known(1), "IN on queue 0"))


@pytest.mark.clause("driver.queue-enable-no-zero", "pci.queue-enable-gate",
                    "status.needs-reset-set", "blk.in-data", "split.used-len")
def test_queue_enable_written_zero(robust):
    """4.1.4.3.2: the driver never writes 0 to queue_enable.  The device ignores it,
    disables the queue, or refuses with NEEDS_RESET; if it serves, the data is exact."""
    blk = robust.init()
    blk.transport.queue_write(0, spec.COMMON_Q_ENABLE, 2, 0)
    allow, check = any_outcome(robust)
    robust.run(read_chain(), allow, check=check)


@pytest.mark.clause("driver.queue-configure-before-enable", "status.needs-reset-set",
                    "blk.in-data", "split.used-len")
def test_queue_address_changed_while_enabled(robust):
    """The driver moves the descriptor table of an enabled, live queue (to zeroed memory)
    and keeps using the old one.  The device uses the old table, ignores the new one
    (nothing available there) or refuses."""
    blk = robust.init()
    fresh = blk.virtio.pool.alloc(16 * 16, 16)
    robust.guarded(lambda: blk.platform.mem_write(fresh, bytes(16 * 16)))
    t = blk.transport
    t.queue_write(0, spec.COMMON_Q_DESCLO, 4, fresh & 0xFFFFFFFF)
    t.queue_write(0, spec.COMMON_Q_DESCHI, 4, fresh >> 32)
    allow, check = any_outcome(robust)
    robust.run(read_chain(), allow, check=check)


@pytest.mark.clause("driver.access-width", "config.generation-change", "blk.in-data",
                    "split.used-len")
@pytest.mark.parametrize("access", ["status-as-16-bits", "generation-as-32-bits",
                                    "queue-select-as-8-bits"])
def test_access_with_the_wrong_width(robust, access):
    """4.1.3.1: each field is accessed with its own width.  A write of the wrong width
    that reaches config_generation must not change it (it is read-only), and the
    device keeps serving requests (or refuses with NEEDS_RESET)."""
    blk = robust.init()
    t = blk.transport
    gen = t.config_generation
    status = t.device_status
    if access == "status-as-16-bits":
        t.common_write(spec.COMMON_STATUS, 2, status | (gen ^ 0xFF) << 8)
    elif access == "generation-as-32-bits":
        t.common_write(spec.COMMON_STATUS, 4, status | (gen ^ 0xFF) << 8)
    else:
        t.common_write(spec.COMMON_Q_SELECT, 1, 0)
    after = t.config_generation
    extra = [] if after == gen else [
        f"config_generation went from {gen} to {after} after a {access} write"]
    obs = robust.send(read_chain())
    robust.verdict(obs, allowed(OK, needs_reset=True, ok_len=S + 1), read_chain(), extra=extra,
                   check=data_is(robust.known(1), "IN of sector 1"))
