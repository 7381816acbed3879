"""The PCI transport: 4.1.2 PCI Device Discovery, 4.1.4 Virtio Structure PCI Capabilities."""

from __future__ import annotations

import pytest

from conformance import spec


@pytest.mark.clause("pci.vendor-id")
def test_vendor_id(platform):
    vendor = platform.config_read(spec.PCI_VENDOR_ID, 2)
    assert vendor == spec.PCI_VENDOR_ID_REDHAT_QUMRANET, f"vendor ID {vendor:#06x}, not 0x1af4"


@pytest.mark.clause("pci.device-id")
def test_device_id(platform):
    device_id = platform.config_read(spec.PCI_DEVICE_ID, 2)
    subsystem = platform.config_read(spec.PCI_SUBSYSTEM_ID, 2)
    if device_id == spec.PCI_DEVICE_ID_VIRTIO_BLK_TRANSITIONAL:
        # 4.1.2.3: a transitional device names its type in the subsystem device ID.
        assert subsystem == spec.VIRTIO_ID_BLOCK, (
            f"transitional device ID 0x1001 with subsystem device ID {subsystem:#x}, not 2")
    else:
        assert device_id == spec.PCI_DEVICE_ID_VIRTIO_BLK_MODERN, (
            f"device ID {device_id:#06x}: neither 0x1042 (0x1040 + block device ID 2) nor "
            f"the transitional 0x1001")


@pytest.mark.clause("pci.revision-id")
def test_revision_id(platform):
    device_id = platform.config_read(spec.PCI_DEVICE_ID, 2)
    if device_id == spec.PCI_DEVICE_ID_VIRTIO_BLK_TRANSITIONAL:
        pytest.skip("transitional device: the revision rule is for non-transitional devices")
    revision = platform.config_read(spec.PCI_REVISION_ID, 1)
    assert revision >= 1, f"non-transitional device with revision ID {revision}"


REQUIRED_CAPS = [
    ("pci.common-cap-present", spec.VIRTIO_PCI_CAP_COMMON_CFG),
    ("pci.notify-cap-present", spec.VIRTIO_PCI_CAP_NOTIFY_CFG),
    ("pci.isr-cap-present", spec.VIRTIO_PCI_CAP_ISR_CFG),
    ("pci.device-cap-present", spec.VIRTIO_PCI_CAP_DEVICE_CFG),
    ("pci.pci-cfg-cap-present", spec.VIRTIO_PCI_CAP_PCI_CFG),
]


@pytest.mark.parametrize(
    "cfg_type",
    [pytest.param(t, marks=pytest.mark.clause(cid), id=spec.VIRTIO_PCI_CAP_NAMES[t])
     for cid, t in REQUIRED_CAPS])
def test_required_capability_present(device, cfg_type):
    types = [c.cfg_type for c in device.virtio.virtio_caps.all]
    name = spec.VIRTIO_PCI_CAP_NAMES[cfg_type]
    assert cfg_type in types, (
        f"no {name} capability (cfg_type {cfg_type}); vendor capabilities found: "
        f"{[spec.VIRTIO_PCI_CAP_NAMES.get(t, t) for t in types]}")


def notify_width(device) -> int:
    """Bytes of one driver notification: 4 with VIRTIO_F_NOTIFICATION_DATA offered (4.1.4.4.1)."""
    return 4 if device.offers(spec.VIRTIO_F_NOTIFICATION_DATA) else 2


@pytest.mark.clause("pci.cap-offset-alignment", "pci.notify-offset-alignment",
                    "pci.notify-data-offset-alignment", "pci.device-cfg-offset-alignment")
def test_capability_offsets_aligned(device):
    # 4.1.4.3.1, 4.1.4.4.1, 4.1.4.6.1: alignment of each structure inside its BAR
    alignment = {
        spec.VIRTIO_PCI_CAP_COMMON_CFG: 4,
        spec.VIRTIO_PCI_CAP_NOTIFY_CFG: notify_width(device),
        spec.VIRTIO_PCI_CAP_DEVICE_CFG: 4,
    }
    wrong = [f"{c.name} cap at {c.cap_offset:#x}: offset {c.offset:#x} not "
             f"{alignment[c.cfg_type]}-byte aligned"
             for c in device.virtio.virtio_caps.all
             if c.cfg_type in alignment and c.offset % alignment[c.cfg_type]]
    wrong += [f"capability at {c.offset:#x} not 4-byte aligned in config space"
              for c in device.virtio.capabilities if c.offset % 4]
    assert not wrong, "; ".join(wrong)


@pytest.mark.clause("pci.cap-bar-bounds")
def test_structures_inside_their_bar(device):
    bars = device.virtio.bars
    wrong = []
    for c in device.virtio.virtio_caps.all:
        if c.cfg_type == spec.VIRTIO_PCI_CAP_PCI_CFG:
            continue
        if c.bar not in bars:
            wrong.append(f"{c.name} cap names BAR{c.bar}, which is not implemented")
        elif c.offset + c.length > bars[c.bar].size:
            wrong.append(f"{c.name} structure [{c.offset:#x}, +{c.length:#x}) runs past "
                         f"BAR{c.bar} of {bars[c.bar].size:#x} bytes")
    assert not wrong, "; ".join(wrong)


@pytest.mark.clause("pci.notify-multiplier", "pci.notify-length-covers-queues",
                    "pci.notify-data-length-covers-queues")
def test_notify_off_multiplier_and_length(device):
    t = device.transport
    mult = t.notify.notify_off_multiplier
    assert mult is not None, "notify capability shorter than 20 bytes: no notify_off_multiplier"
    assert mult == 0 or (mult & (mult - 1) == 0 and mult % 2 == 0), (
        f"notify_off_multiplier {mult} is neither 0 nor an even power of 2")
    # every queue's notify address must fall inside the notify structure
    width = notify_width(device)
    for q in range(t.num_queues):
        off = t.queue_read(q, spec.COMMON_Q_NOFF, 2)
        assert off * mult + width <= t.notify.length, (
            f"queue {q}: queue_notify_off {off} * {mult} + {width} exceeds notify length "
            f"{t.notify.length}")
