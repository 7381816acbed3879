"""Device configuration space: 2.5 Device Configuration Space, 4.1.4.3 config_generation,
3.2.1 configuration change notifications, 5.2.4 / 5.2.5 the block configuration layout."""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.checks import expect_ok
from conformance.driver.blk import read_request
from conformance.driver.device import FeatureNotOffered
from conformance.driver.platform import PollTimeout, Unsupported

S = spec.SECTOR_SIZE

# struct virtio_blk_config (5.2.4): (name, offset, width, feature that makes it exist).
# writeback is left out: the driver must not read it before FEATURES_OK (5.2.5.1).
FIELDS = [
    ("capacity", spec.BLK_CFG_CAPACITY, 8, None),
    ("size_max", spec.BLK_CFG_SIZE_MAX, 4, spec.VIRTIO_BLK_F_SIZE_MAX),
    ("seg_max", spec.BLK_CFG_SEG_MAX, 4, spec.VIRTIO_BLK_F_SEG_MAX),
    ("geometry.cylinders", spec.BLK_CFG_GEOMETRY_CYLINDERS, 2, spec.VIRTIO_BLK_F_GEOMETRY),
    ("geometry.heads", spec.BLK_CFG_GEOMETRY_HEADS, 1, spec.VIRTIO_BLK_F_GEOMETRY),
    ("geometry.sectors", spec.BLK_CFG_GEOMETRY_SECTORS, 1, spec.VIRTIO_BLK_F_GEOMETRY),
    ("blk_size", spec.BLK_CFG_BLK_SIZE, 4, spec.VIRTIO_BLK_F_BLK_SIZE),
    ("physical_block_exp", spec.BLK_CFG_PHYSICAL_BLOCK_EXP, 1, spec.VIRTIO_BLK_F_TOPOLOGY),
    ("alignment_offset", spec.BLK_CFG_ALIGNMENT_OFFSET, 1, spec.VIRTIO_BLK_F_TOPOLOGY),
    ("min_io_size", spec.BLK_CFG_MIN_IO_SIZE, 2, spec.VIRTIO_BLK_F_TOPOLOGY),
    ("opt_io_size", spec.BLK_CFG_OPT_IO_SIZE, 4, spec.VIRTIO_BLK_F_TOPOLOGY),
    ("num_queues", spec.BLK_CFG_NUM_QUEUES, 2, spec.VIRTIO_BLK_F_MQ),
    ("max_discard_sectors", spec.BLK_CFG_MAX_DISCARD_SECTORS, 4, spec.VIRTIO_BLK_F_DISCARD),
    ("max_discard_seg", spec.BLK_CFG_MAX_DISCARD_SEG, 4, spec.VIRTIO_BLK_F_DISCARD),
    ("discard_sector_alignment", spec.BLK_CFG_DISCARD_SECTOR_ALIGNMENT, 4,
     spec.VIRTIO_BLK_F_DISCARD),
    ("max_write_zeroes_sectors", spec.BLK_CFG_MAX_WRITE_ZEROES_SECTORS, 4,
     spec.VIRTIO_BLK_F_WRITE_ZEROES),
    ("max_write_zeroes_seg", spec.BLK_CFG_MAX_WRITE_ZEROES_SEG, 4,
     spec.VIRTIO_BLK_F_WRITE_ZEROES),
    ("write_zeroes_may_unmap", spec.BLK_CFG_WRITE_ZEROES_MAY_UNMAP, 1,
     spec.VIRTIO_BLK_F_WRITE_ZEROES),
    ("max_secure_erase_sectors", spec.BLK_CFG_MAX_SECURE_ERASE_SECTORS, 4,
     spec.VIRTIO_BLK_F_SECURE_ERASE),
    ("max_secure_erase_seg", spec.BLK_CFG_MAX_SECURE_ERASE_SEG, 4,
     spec.VIRTIO_BLK_F_SECURE_ERASE),
    ("secure_erase_sector_alignment", spec.BLK_CFG_SECURE_ERASE_SECTOR_ALIGNMENT, 4,
     spec.VIRTIO_BLK_F_SECURE_ERASE),
]


def read_field(device, off: int, width: int) -> int:
    """One field with the access width 4.1.3.1 prescribes (64-bit: two 32-bit halves)."""
    t = device.transport
    if width == 8:
        return t.config_read(off, 4) | t.config_read(off + 4, 4) << 32
    return t.config_read(off, width)


def read_capacity(device) -> int:
    return read_field(device, spec.BLK_CFG_CAPACITY, 8)


def existing_fields(device) -> dict[str, int]:
    """Every field the device's offered features make exist, read once, by name."""
    return {name: read_field(device, off, width) for name, off, width, bit in FIELDS
            if bit is None or device.offers(bit)}


def resize(platform, sectors: int) -> None:
    try:
        platform.resize(sectors * S)
    except Unsupported as exc:
        pytest.skip(str(exc))


@pytest.mark.clause("config.read-before-features-ok")
def test_config_readable_before_features_ok(device):
    """2.5.2: every field of an offered feature is readable before FEATURES_OK.

    Read between DRIVER and FEATURES_OK (3.1.1 step 4 allows it), each field must
    already hold what it holds once the device is initialized.
    """
    v = device.virtio
    v.reset()
    v.add_status(spec.STATUS_ACKNOWLEDGE)
    v.add_status(spec.STATUS_DRIVER)
    early = existing_fields(device)
    device.init()
    late = existing_fields(device)
    differ = [f"{name} {early[name]:#x} before, {late[name]:#x} after"
              for name in late if early[name] != late[name]]
    assert not differ, "before FEATURES_OK the configuration read differently: " + "; ".join(differ)


@pytest.mark.clause("blk.capacity")
def test_capacity_is_disk_size(device, platform):
    """5.2.4: capacity is the disk size in 512-byte sectors.

    Where the target can resize the disk, a new size must show up exactly in
    capacity; where it can read the backing store, the store must end at
    capacity * 512.
    """
    capacity = read_capacity(device)
    checked = False
    try:
        tail = platform.backing_read(capacity * S - 1, 2)
        assert len(tail) == 1, (
            f"capacity {capacity} sectors, but the backing store "
            f"{'goes on past' if len(tail) > 1 else 'ends before'} byte {capacity * S}")
        checked = True
    except Unsupported:
        pass
    try:
        platform.resize((capacity + 24) * S)
    except Unsupported as exc:
        if not checked:
            pytest.skip(str(exc))
        return
    grown = read_capacity(device)
    assert grown == capacity + 24, (
        f"after resizing the disk to {(capacity + 24) * S} bytes capacity reads {grown}, "
        f"expected {capacity + 24} sectors")


@pytest.mark.clause("blk.config-padding-zero")
def test_config_padding_zero(device):
    """5.2.5.2: unused0 and unused1 are 0, before negotiation and after initialization."""
    unused0 = [spec.BLK_CFG_UNUSED0]
    unused1 = [spec.BLK_CFG_UNUSED1 + i for i in range(3)]
    # A padding byte is part of the layout when a field behind it exists: the structure
    # may end right after the last field of the offered features (2.5, 5.2.4).
    offsets = []
    if any(device.offers(b) for b in (spec.VIRTIO_BLK_F_MQ, spec.VIRTIO_BLK_F_DISCARD,
                                      spec.VIRTIO_BLK_F_WRITE_ZEROES,
                                      spec.VIRTIO_BLK_F_SECURE_ERASE)):
        offsets += unused0
    if device.offers(spec.VIRTIO_BLK_F_SECURE_ERASE):
        offsets += unused1
    if not offsets:
        pytest.skip("no feature that places a field behind unused0 or unused1 is offered")
    for when in ("before initialization", "after initialization"):
        if when.startswith("after"):
            device.init()
        nonzero = {off: device.transport.config_read(off, 1) for off in offsets}
        nonzero = {off: val for off, val in nonzero.items() if val}
        assert not nonzero, (f"padding {when}: " + ", ".join(
            f"byte {off} ({'unused0' if off in unused0 else 'unused1'}) = {val:#04x}"
            for off, val in nonzero.items()))


# --- configuration changes ----------------------------------------------------------------


@pytest.mark.clause("config.generation-change")
def test_generation_changes_on_resize(blk, platform):
    """4.1.4.3.1: config_generation changes once the driver read a value that changed.

    The driver reads generation and capacity, the disk grows, the driver reads
    capacity again: generation now differs, and a consistent read (2.5.1) shows
    the new capacity.
    """
    t = blk.transport
    before = t.config_generation
    capacity = read_capacity(blk)
    resize(platform, capacity + 8)
    assert read_capacity(blk) == capacity + 8, "capacity did not follow the resize"
    after = t.config_generation
    assert after != before, (f"config_generation still {before} after capacity changed "
                             f"from {capacity} to {capacity + 8}")
    assert blk.read_config().capacity == capacity + 8


@pytest.mark.clause("config.generation-change")
def test_generation_changes_before_driver_ok(device, platform):
    """The config_generation rule holds in every device status, also before DRIVER_OK."""
    device.init(driver_ok=False)
    t = device.transport
    before = t.config_generation
    capacity = read_capacity(device)
    resize(platform, capacity + 8)
    assert read_capacity(device) == capacity + 8, "capacity did not follow the resize"
    after = t.config_generation
    assert after != before, (
        f"config_generation still {before} after capacity changed from {capacity} to "
        f"{capacity + 8} (FEATURES_OK set, DRIVER_OK not yet)")


@pytest.mark.clause("config.generation-change")
def test_generation_changes_after_256_changes(blk, platform):
    """256 changes between two driver reads must not bring config_generation back.

    An 8-bit counter bumped on every change would (the note in 4.1.4.3.1 says so).
    """
    t = blk.transport
    before = t.config_generation
    capacity = read_capacity(blk)
    for step in range(1, 257):
        resize(platform, capacity + step)
    assert read_capacity(blk) == capacity + 256, "capacity did not follow the resizes"
    after = t.config_generation
    assert after != before, (
        f"config_generation is {before} again after 256 capacity changes (from {capacity} "
        f"to {capacity + 256}): a driver cannot tell that the configuration changed")


@pytest.mark.clause("config.change-notification")
def test_resize_sends_config_notification(blk, platform):
    """3.2.1: a device-side configuration change is notified; the new value is then visible."""
    msix = blk.virtio.msix
    vector = blk.transport.common_read(spec.COMMON_MSIX, 2)
    if msix is None or vector == spec.VIRTIO_MSI_NO_VECTOR:
        pytest.skip("no MSI-X vector for configuration changes: the notification cannot be seen")
    capacity = read_capacity(blk)
    msix.clear(vector)
    resize(platform, capacity + 8)
    try:
        msix.wait(vector, timeout=blk.timeout)
    except PollTimeout:
        raise AssertionError(f"no configuration change notification (MSI-X vector {vector}) "
                             f"within {blk.timeout:g}s of the capacity change") from None
    assert read_capacity(blk) == capacity + 8, "capacity did not follow the resize"
    expect_ok(blk.submit_one(read_request(capacity + 7, S)), S)


# --- 5.2.5 writeback (VIRTIO_BLK_F_CONFIG_WCE) ------------------------------------------


@pytest.mark.clause("blk.writeback-toggle")
def test_writeback_toggle(device):
    """5.2.5: with CONFIG_WCE the driver switches the cache mode by writing writeback."""
    device.init(require=[spec.VIRTIO_BLK_F_CONFIG_WCE])
    t = device.transport
    first = t.config_read(spec.BLK_CFG_WRITEBACK, 1)
    assert first in (0, 1), f"writeback reads {first:#x}: neither 0 nor 1"
    seen = []
    for mode in (1 - first, first):
        t.config_write(spec.BLK_CFG_WRITEBACK, 1, mode)
        seen.append((mode, t.config_read(spec.BLK_CFG_WRITEBACK, 1)))
    wrong = [f"wrote {m}, reads {r}" for m, r in seen if m != r]
    assert not wrong, "writeback does not follow the driver: " + "; ".join(wrong)
    expect_ok(device.submit_one(read_request(0, S)), S)


@pytest.mark.clause("blk.writeback-zero-without-flush")
def test_writeback_zero_without_flush(device):
    """5.2.5.2: CONFIG_WCE negotiated without FLUSH: writeback starts at 0 (writethrough)."""
    if not device.offers(spec.VIRTIO_BLK_F_CONFIG_WCE):
        raise FeatureNotOffered(spec.VIRTIO_BLK_F_CONFIG_WCE)
    device.init(exclude=[spec.VIRTIO_BLK_F_FLUSH])
    writeback = device.transport.config_read(spec.BLK_CFG_WRITEBACK, 1)
    assert writeback == 0, (f"writeback reads {writeback} with CONFIG_WCE negotiated and FLUSH "
                            f"not: the driver cannot flush a writeback cache")
