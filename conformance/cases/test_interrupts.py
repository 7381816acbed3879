"""Interrupts over PCI: MSI-X vectors (4.1.5.1.2 MSI-X Vector Configuration, 4.1.5.3 Used
Buffer Notifications, 4.1.5.4 Notification of Device Configuration Changes) and ISR status
with INTx (4.1.4.5 ISR status capability).

MSI-X messages are observed as memory writes into slots the driver owns (one per vector);
INTx through the ISR status byte, the PCI Status register and, where the target can see
it, the line itself.
"""

from __future__ import annotations

import time

import pytest

from conformance import spec
from conformance.checks import QUIET_S, expect_interrupt, expect_no_interrupt, expect_ok
from conformance.driver.blk import read_request
from conformance.driver.platform import BarRead, BarWrite, Unsupported

S = spec.SECTOR_SIZE
NO_VECTOR = spec.VIRTIO_MSI_NO_VECTOR
MAX_EVENTS = 8  # config + queues whose mapping is tried against every vector
MAX_VECTORS = 64  # above this, a spread of vectors is tried instead of all
# Without EVENT_IDX and with avail flags 0 every used buffer calls for a notification
# (2.7.7.2), so each request of a case is owed its interrupt.
PLAIN = [spec.VIRTIO_F_EVENT_IDX]


def msix_of(device):
    msix = device.virtio.msix
    if msix is None:
        pytest.skip("the function has no MSI-X capability")
    return msix


def queues_to_use(device, limit: int) -> int:
    if not device.offers(spec.VIRTIO_BLK_F_MQ):
        return 1
    return max(1, min(device.transport.num_queues, limit))


def vectors_to_try(n: int) -> list[int]:
    if n <= MAX_VECTORS:
        return list(range(n))
    return sorted({0, 1, 2, n // 4, n // 2, 3 * n // 4, n - 2, n - 1})


def event_vector_ops(t, queue: int | None, value: int) -> list:
    """Write ``value`` to config_msix_vector (queue None) or to a queue's vector, read it back."""
    c = t.common
    ops = []
    if queue is None:
        off = spec.COMMON_MSIX
    else:
        off = spec.COMMON_Q_MSIX
        ops.append(BarWrite(c.bar, c.offset + spec.COMMON_Q_SELECT, 2, queue))
    ops += [BarWrite(c.bar, c.offset + off, 2, value), BarRead(c.bar, c.offset + off, 2)]
    return ops


def event_name(queue: int | None) -> str:
    return "config_msix_vector" if queue is None else f"queue {queue}'s queue_msix_vector"


def map_event(blk, queue: int | None, vector: int) -> int:
    """Map one event and return what the vector field reads back."""
    return blk.platform.execute(event_vector_ops(blk.transport, queue, vector))[-1]


def all_slots(msix) -> dict[int, int]:
    """Vector -> message data found in its slot, for every slot that was written."""
    raw = msix.platform.mem_read(msix.slots, 4 * msix.cap.table_size)
    words = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
    return {v: w for v, w in enumerate(words) if w}


def clear_slots(msix) -> None:
    msix.platform.mem_write(msix.slots, bytes(4 * msix.cap.table_size))


def resize_or_skip(blk, platform) -> int:
    """Grow the disk by 1 MiB from outside (a configuration change); the new capacity."""
    new = blk.config.capacity + 2048
    try:
        platform.resize(new * S)
    except Unsupported as exc:
        pytest.skip(str(exc))
    return new


def wait_capacity(blk, capacity: int) -> None:
    """Until the device configuration shows the new capacity (the device saw the change)."""
    deadline = time.monotonic() + blk.timeout
    while (got := blk.read_config().capacity) != capacity:
        assert time.monotonic() < deadline, (
            f"capacity still {got} sectors {blk.timeout:g}s after the disk grew to {capacity}")
        time.sleep(0.005)


# --- 4.1.5.1.2 MSI-X Vector Configuration ------------------------------------------


@pytest.mark.clause("msix.table-size-reported")
def test_msix_table_size_is_the_vector_count(device):
    """Table Size (N - 1 encoded) names exactly the vectors that can be mapped: every vector
    below N maps, and the table fits its BAR."""
    msix = msix_of(device)
    n = msix.cap.table_size
    bar = device.virtio.bars[msix.cap.table_bar]
    assert msix.cap.table_offset + 16 * n <= bar.size, (
        f"a table of {n} entries at {msix.cap.table_offset:#x} does not fit BAR{bar.index}")
    blk = device.init(exclude=PLAIN, driver_ok=False)
    refused = [v for v in vectors_to_try(n) if map_event(blk, None, v) != v]
    assert not refused, (f"Table Size says {n} vectors, but config_msix_vector refuses "
                         f"vector(s) {refused}")


@pytest.mark.clause("msix.vector-count")
def test_msix_vector_count(device):
    n = msix_of(device).cap.table_size
    assert 2 <= n <= spec.MSIX_MAX_VECTORS, f"MSI-X table of {n} vector(s), not 2..2048"


@pytest.mark.clause("msix.map-any", "msix.vector-readback", "msix.unmap-any",
                    "msix.no-needless-map-failure")
def test_any_event_maps_to_any_vector(device):
    """Config and every queue event map to every vector in the table (read back as written)
    and unmap with NO_VECTOR (read back NO_VECTOR)."""
    msix = msix_of(device)
    n = msix.cap.table_size
    blk = device.init(exclude=PLAIN, driver_ok=False)
    t = blk.transport
    events = [None] + list(range(min(t.num_queues, MAX_EVENTS - 1)))
    ops, expect = [], []
    for queue in events:
        for v in vectors_to_try(n) + [NO_VECTOR]:
            ops += event_vector_ops(t, queue, v)
            expect.append((queue, v, len(ops) - 1))
    results = blk.platform.execute(ops)
    wrong = [f"{event_name(q)} reads {results[i]:#x} after {v:#x} was written"
             for q, v, i in expect if results[i] != v]
    assert not wrong, f"{len(wrong)} mapping(s) not read back: " + "; ".join(wrong[:6])


@pytest.mark.clause("msix.map-failure-no-vector")
def test_mapping_outside_table_reads_no_vector(device):
    """A vector past the table cannot be mapped, so the field reads NO_VECTOR (the device's
    only way to report a failed mapping), also when it held a valid vector before."""
    msix = msix_of(device)
    n = msix.cap.table_size
    blk = device.init(exclude=PLAIN, driver_ok=False)
    wrong = []
    for queue in (None, 0):
        for bad in sorted({n, spec.VIRTIO_MSI_MAX_VECTOR} - set(range(n))):
            map_event(blk, queue, 0)
            got = map_event(blk, queue, bad)
            if got != NO_VECTOR:
                wrong.append(f"{event_name(queue)} reads {got:#x} after {bad:#x} was written")
    assert not wrong, f"MSI-X table has {n} vectors; " + "; ".join(wrong)


# --- 4.1.5.3 / 4.1.5.4 delivery -----------------------------------------------------------


@pytest.mark.clause("msix.queue-vector-delivery")
def test_each_queue_interrupts_on_its_vector(device):
    """Queue q mapped to vector N-1-q, config unmapped: a used buffer on queue q sends the
    message of its vector and of no other."""
    msix = msix_of(device)
    n = msix.cap.table_size
    nq = queues_to_use(device, n)
    blk = device.init(exclude=PLAIN, num_queues=nq, driver_ok=False)
    vector_of = {q: n - 1 - q for q in range(nq)}
    map_event(blk, None, NO_VECTOR)
    for q, v in vector_of.items():
        got = map_event(blk, q, v)
        assert got == v, f"{event_name(q)} reads {got:#x} after {v} was written"
    blk.virtio.driver_ok()
    for q, v in vector_of.items():
        clear_slots(msix)
        expect_ok(blk.submit_one(read_request(q, S), queue=q), S)
        expect_interrupt(msix, v, f"used buffer on queue {q}", blk.timeout)
        others = {w: d for w, d in all_slots(msix).items() if w != v}
        assert not others, (f"a used buffer on queue {q} (vector {v}) also sent the message "
                            f"of vector(s) {sorted(others)}")


@pytest.mark.clause("pci.pci-spec-compliance", "msix.queue-vector-delivery")
def test_masked_vector_pends_until_unmasked(device, platform):
    """PCI Local Bus 3.0, 6.8.2: a message for a masked vector sets its pending bit and is
    sent when the vector is unmasked, which clears the bit."""
    msix = msix_of(device)
    blk = device.init(exclude=PLAIN)
    v = blk.virtio.queue_info[0].msix_vector
    assert v != NO_VECTOR, "queue 0 has no vector after set-up"
    msix.set_masked(v, True)
    msix.clear(v)
    expect_ok(blk.submit_one(read_request(0, S)), S)
    expect_no_interrupt(msix, v, "a used buffer while the vector was masked")
    assert msix.pending(v), f"vector {v} masked during a used buffer notification: pending bit 0"
    msix.set_masked(v, False)
    expect_interrupt(msix, v, "unmasking a vector with its pending bit set", blk.timeout)
    assert not msix.pending(v), f"vector {v}'s pending bit still set after its message went out"


@pytest.mark.clause("msix.queue-no-vector-silent")
def test_queue_without_vector_is_silent(device):
    msix = msix_of(device)
    blk = device.init(exclude=PLAIN, driver_ok=False)
    v = blk.virtio.queue_info[0].msix_vector
    got = map_event(blk, 0, NO_VECTOR)
    assert got == NO_VECTOR, f"queue 0's queue_msix_vector reads {got:#x} after NO_VECTOR"
    blk.virtio.driver_ok()
    clear_slots(msix)
    expect_ok(blk.submit_one(read_request(0, S)), S)
    if v != NO_VECTOR:
        expect_no_interrupt(msix, v, "a used buffer on a queue unmapped from its vector")
    else:
        time.sleep(QUIET_S)
    fired = all_slots(msix)
    assert not fired, f"a used buffer on a queue with NO_VECTOR sent vector(s) {sorted(fired)}"


@pytest.mark.clause("msix.config-vector-delivery", "isr.config-bit")
def test_config_change_interrupts_on_config_vector(device, platform):
    """A configuration change (the disk grows) sends config_msix_vector's message, and ISR
    status has its configuration bit set (4.1.4.5.1: before the notification)."""
    msix = msix_of(device)
    blk = device.init(exclude=PLAIN)
    c = msix.cap.table_size - 1
    got = map_event(blk, None, c)
    assert got == c, f"config_msix_vector reads {got:#x} after {c} was written"
    clear_slots(msix)
    new = resize_or_skip(blk, platform)
    expect_interrupt(msix, c, "configuration change (capacity grew)", blk.timeout)
    isr = blk.transport.read_isr()
    assert isr & spec.ISR_CONFIG, (
        f"ISR status {isr:#x} after a configuration change notification: bit 1 clear")
    wait_capacity(blk, new)


@pytest.mark.clause("msix.config-no-vector-silent")
def test_config_change_without_vector_is_silent(device, platform):
    msix = msix_of(device)
    blk = device.init(exclude=PLAIN)
    got = map_event(blk, None, NO_VECTOR)
    assert got == NO_VECTOR, f"config_msix_vector reads {got:#x} after NO_VECTOR"
    clear_slots(msix)
    new = resize_or_skip(blk, platform)
    wait_capacity(blk, new)
    expect_no_interrupt(msix, 0, "a configuration change with config_msix_vector NO_VECTOR "
                                 "(vector 0 was its vector before)")
    fired = all_slots(msix)
    assert not fired, (f"a configuration change with config_msix_vector NO_VECTOR sent "
                       f"vector(s) {sorted(fired)}")


# --- 4.1.4.5 ISR status and INTx (MSI-X disabled) -------------------------------------------


def pci_status_int(platform) -> bool:
    return bool(platform.config_read(spec.PCI_STATUS, 2) & spec.PCI_STATUS_INTERRUPT)


def wait_pci_status_int(blk, what: str) -> None:
    """Until the PCI Status Interrupt bit is set (the device raised INTx)."""
    deadline = time.monotonic() + blk.timeout
    while not pci_status_int(blk.platform):
        assert time.monotonic() < deadline, (
            f"{what}: the Interrupt Status bit of the PCI Status register stayed 0 for "
            f"{blk.timeout:g}s (ISR status reads {blk.transport.read_isr():#x})")
        time.sleep(0.001)


def intx_level_or_skip(platform) -> bool:
    try:
        return platform.intx_level()
    except Unsupported as exc:
        pytest.skip(str(exc))


@pytest.mark.clause("isr.queue-bit", "isr.read-clears", "isr.pci-status-bit")
def test_isr_queue_bit_read_clears(device, platform):
    """MSI-X off: a used buffer sets ISR bit 0 and the PCI Status Interrupt bit; reading ISR
    returns exactly the queue bit and clears it, and the Status bit with it."""
    blk = device.init(exclude=PLAIN, msix=False)
    t = blk.transport
    first = t.read_isr()
    assert first == 0, f"ISR status {first:#x} before any event"
    assert not pci_status_int(platform), "PCI Status Interrupt bit set before any event"
    expect_ok(blk.submit_one(read_request(0, S)), S)
    wait_pci_status_int(blk, "used buffer with MSI-X off")
    isr = t.read_isr()
    assert isr == spec.ISR_QUEUE, f"ISR status {isr:#x} after a used buffer, expected 0x1"
    assert not pci_status_int(platform), (
        "PCI Status Interrupt bit still set after ISR status was read (it follows ISR != 0)")
    again = t.read_isr()
    assert again == 0, f"ISR status reads {again:#x} right after a read, expected 0"


@pytest.mark.clause("isr.intx-masking", "isr.read-deasserts")
def test_intx_follows_isr_and_interrupt_disable(device, platform):
    """MSI-X off: INTx is asserted while ISR status is non-zero and drops when ISR is read;
    the Command register's Interrupt Disable bit keeps the line low meanwhile."""
    blk = device.init(exclude=PLAIN, msix=False)
    t = blk.transport
    t.read_isr()
    assert not intx_level_or_skip(platform), "INTx asserted before any event"
    expect_ok(blk.submit_one(read_request(0, S)), S)
    wait_pci_status_int(blk, "used buffer with MSI-X off")
    assert platform.intx_level(), "ISR status is set but INTx is not asserted"
    t.read_isr()
    assert not platform.intx_level(), "INTx still asserted after ISR status was read"
    command = platform.config_read(spec.PCI_COMMAND, 2)
    platform.config_write(spec.PCI_COMMAND, 2, command | spec.PCI_COMMAND_INTX_DISABLE)
    expect_ok(blk.submit_one(read_request(1, S)), S)
    wait_pci_status_int(blk, "used buffer with Interrupt Disable set")
    assert not platform.intx_level(), "INTx asserted although Interrupt Disable is set"
    platform.config_write(spec.PCI_COMMAND, 2, command & ~spec.PCI_COMMAND_INTX_DISABLE)
    assert platform.intx_level(), (
        "ISR status still set, Interrupt Disable cleared, but INTx is not asserted")
    t.read_isr()
    assert not platform.intx_level(), "INTx still asserted after ISR status was read"


@pytest.mark.clause("isr.config-bit")
def test_isr_config_bit_with_intx(device, platform):
    """MSI-X off: a configuration change sets ISR bit 1 and raises INTx."""
    blk = device.init(exclude=PLAIN, msix=False)
    t = blk.transport
    t.read_isr()
    new = resize_or_skip(blk, platform)
    wait_pci_status_int(blk, "configuration change with MSI-X off")
    isr = t.read_isr()
    # Bit 1 must be set.  Bit 0 may come along: one interrupt may signal used buffers and a
    # configuration change together (4.1.5.4), and nothing forbids a spurious queue bit.
    assert isr in (spec.ISR_CONFIG, spec.ISR_CONFIG | spec.ISR_QUEUE), (
        f"ISR status {isr:#x} after a configuration change, expected bit 1 (0x2 or 0x3)")
    wait_capacity(blk, new)
