"""The PCI transport: 4.1.1-4.1.2 PCI IDs, 4.1.4 Virtio Structure PCI Capabilities.

Everything here is read from configuration space and the BARs before the
device is initialized, except the PCI configuration access capability
(4.1.4.9), which is exercised against the common configuration structure.
"""

from __future__ import annotations

import pytest

from conformance import spec
from conformance.driver.pci import PciError, read_capabilities

TRANSITIONAL_IDS = range(0x1000, 0x1040)  # 4.1.2: the transitional PCI device ID range


def is_transitional(platform) -> bool:
    """A function that names itself transitional: a transitional device ID, or the legacy
    interface in an I/O BAR0 (4.1.2.3, 4.1.4.11 Legacy Interfaces)."""
    if platform.config_read(spec.PCI_DEVICE_ID, 2) in TRANSITIONAL_IDS:
        return True
    return bool(platform.config_read(spec.PCI_BASE_ADDRESS_0, 4) & spec.PCI_BASE_ADDRESS_SPACE_IO)


@pytest.mark.clause("pci.vendor-id")
def test_vendor_id(platform):
    vendor = platform.config_read(spec.PCI_VENDOR_ID, 2)
    assert vendor == spec.PCI_VENDOR_ID_REDHAT_QUMRANET, f"vendor ID {vendor:#06x}, not 0x1af4"


@pytest.mark.clause("pci.device-id", "pci.modern-device-id-range")
def test_device_id(platform):
    # 4.1.2.1: 0x1040 + virtio device ID (2), or the block device's transitional ID.
    # A device ID that passes is also inside 0x1040..0x107f when it is not transitional.
    device_id = platform.config_read(spec.PCI_DEVICE_ID, 2)
    assert device_id in (spec.PCI_DEVICE_ID_VIRTIO_BLK_MODERN,
                         spec.PCI_DEVICE_ID_VIRTIO_BLK_TRANSITIONAL), (
        f"device ID {device_id:#06x}: neither 0x1042 (0x1040 + block device ID 2) nor the "
        f"transitional 0x1001")


@pytest.mark.clause("pci.transitional-revision-id", "pci.transitional-subsystem-id",
                    "pci.transitional-device-id-range")
def test_transitional_ids(platform):
    """4.1.2.3: a transitional device is what a legacy driver matches: ID 0x1000..0x103f,
    revision 0, subsystem device ID = virtio device ID."""
    if not is_transitional(platform):
        pytest.skip("non-transitional device (device ID outside 0x1000..0x103f, no I/O BAR0)")
    device_id = platform.config_read(spec.PCI_DEVICE_ID, 2)
    revision = platform.config_read(spec.PCI_REVISION_ID, 1)
    subsystem = platform.config_read(spec.PCI_SUBSYSTEM_ID, 2)
    wrong = []
    if device_id not in TRANSITIONAL_IDS:
        wrong.append(f"device ID {device_id:#06x} is outside 0x1000..0x103f although BAR0 is an "
                     f"I/O BAR (legacy interface)")
    if revision != 0:
        wrong.append(f"revision ID {revision}, not 0")
    if subsystem != spec.VIRTIO_ID_BLOCK:
        wrong.append(f"subsystem device ID {subsystem:#06x}, not {spec.VIRTIO_ID_BLOCK} "
                     f"(the block device ID)")
    assert not wrong, "transitional device: " + "; ".join(wrong)


@pytest.mark.clause("pci.revision-id")
def test_revision_id(platform):
    if is_transitional(platform):
        pytest.skip("transitional device: the revision rule is for non-transitional devices")
    revision = platform.config_read(spec.PCI_REVISION_ID, 1)
    assert revision >= 1, f"non-transitional device with revision ID {revision}"


@pytest.mark.clause("pci.subsystem-id")
def test_subsystem_id(platform):
    if is_transitional(platform):
        pytest.skip("transitional device: its subsystem device ID is the virtio device ID")
    subsystem = platform.config_read(spec.PCI_SUBSYSTEM_ID, 2)
    assert subsystem >= spec.VIRTIO_PCI_MODERN_MIN_SUBSYSTEM_ID, (
        f"non-transitional device with subsystem device ID {subsystem:#06x} (below 0x40, where "
        f"a legacy driver could take it for its own)")


@pytest.mark.clause("pci.pci-spec-compliance")
def test_header_and_capability_list(device, platform):
    """4.1.1: a well-formed type-0 function (PCI Local Bus 3.0, 6.1, 6.7, 6.8.2)."""
    wrong = []
    header = platform.config_read(spec.PCI_HEADER_TYPE, 1) & 0x7F
    if header != spec.PCI_HEADER_TYPE_NORMAL:
        wrong.append(f"header type {header:#x}, not 0 (endpoint)")
    if not platform.config_read(spec.PCI_STATUS, 2) & spec.PCI_STATUS_CAP_LIST:
        wrong.append("Status register without the Capabilities List bit")
    try:
        caps = read_capabilities(platform)
    except PciError as exc:
        caps = []
        wrong.append(str(exc))
    if not caps:
        wrong.append("empty capability list")
    msix = device.virtio.msix
    if msix is not None:
        cap, bars = msix.cap, device.virtio.bars
        n = cap.table_size
        pba_len = 8 * ((n + 63) // 64)  # one bit per vector, in whole qwords
        for what, bar, start, length in (("table", cap.table_bar, cap.table_offset, 16 * n),
                                         ("PBA", cap.pba_bar, cap.pba_offset, pba_len)):
            if bar not in bars or bars[bar].is_io:
                wrong.append(f"MSI-X {what} in BAR{bar}, which is no memory BAR")
            elif start + length > bars[bar].size:
                wrong.append(f"MSI-X {what} [{start:#x}, +{length:#x}) runs past BAR{bar} of "
                             f"{bars[bar].size:#x} bytes")
        if cap.table_bar == cap.pba_bar and cap.table_offset < cap.pba_offset + pba_len and \
                cap.pba_offset < cap.table_offset + 16 * n:
            wrong.append("MSI-X table and PBA overlap")
    assert not wrong, "; ".join(wrong)


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
    assert not wrong, "; ".join(wrong)


# The structures a BAR maps through a plain struct virtio_pci_cap (32-bit offset/length).
BAR_STRUCTURES = (spec.VIRTIO_PCI_CAP_COMMON_CFG, spec.VIRTIO_PCI_CAP_NOTIFY_CFG,
                  spec.VIRTIO_PCI_CAP_ISR_CFG, spec.VIRTIO_PCI_CAP_DEVICE_CFG)


@pytest.mark.clause("pci.cap-bar-bounds")
def test_structures_inside_their_bar(device):
    bars = device.virtio.bars
    wrong = []
    for c in device.virtio.virtio_caps.all:
        if c.cfg_type not in BAR_STRUCTURES:
            continue
        if c.bar not in bars:
            wrong.append(f"{c.name} cap names BAR{c.bar}, which is not implemented")
        elif c.offset + c.length > bars[c.bar].size:
            wrong.append(f"{c.name} structure [{c.offset:#x}, +{c.length:#x}) runs past "
                         f"BAR{c.bar} of {bars[c.bar].size:#x} bytes")
    assert not wrong, "; ".join(wrong)


# cap_len must cover struct virtio_pci_cap and the type's extra fields (4.1.4.2).
MIN_CAP_LEN = {
    spec.VIRTIO_PCI_CAP_NOTIFY_CFG: spec.VIRTIO_PCI_NOTIFY_CAP_SIZE,  # + notify_off_multiplier
    spec.VIRTIO_PCI_CAP_PCI_CFG: spec.VIRTIO_PCI_CFG_CAP_SIZE,  # + pci_cfg_data[4]
    spec.VIRTIO_PCI_CAP_SHARED_MEMORY_CFG: 24,  # struct virtio_pci_cap64
}
KNOWN_CAP_TYPES = (*BAR_STRUCTURES, spec.VIRTIO_PCI_CAP_PCI_CFG,
                   spec.VIRTIO_PCI_CAP_SHARED_MEMORY_CFG)


@pytest.mark.clause("pci.cap-len-covers-extra")
def test_cap_len_covers_extra_fields(device):
    wrong = []
    for c in device.virtio.capabilities:
        if c.cap_id != spec.PCI_CAP_ID_VNDR or len(c.raw) < 4:
            continue
        cfg_type, cap_len = c.u8(spec.CAP_CFG_TYPE), c.u8(spec.CAP_LEN)
        if cfg_type not in KNOWN_CAP_TYPES:
            continue  # vendor data and reserved types have their own layout
        need = MIN_CAP_LEN.get(cfg_type, spec.VIRTIO_PCI_CAP_SIZE)
        if cap_len < need:
            wrong.append(f"{spec.VIRTIO_PCI_CAP_NAMES[cfg_type]} cap at {c.offset:#x}: cap_len "
                         f"{cap_len}, its fields take {need} bytes")
        elif c.offset + cap_len > spec.PCI_CONFIG_SPACE_SIZE:
            wrong.append(f"cap at {c.offset:#x}: cap_len {cap_len} runs past config space")
    assert not wrong, "; ".join(wrong)


@pytest.mark.clause("pci.isr-length")
def test_isr_structure_length(device):
    # 4.1.4.5: the ISR capability refers to at least the one byte of ISR status
    isr = [c for c in device.virtio.virtio_caps.all if c.cfg_type == spec.VIRTIO_PCI_CAP_ISR_CFG]
    if not isr:
        pytest.fail("no ISR capability (see test_required_capability_present[isr])")
    short = [f"ISR cap at {c.cap_offset:#x} has length {c.length}" for c in isr if c.length < 1]
    assert not short, "; ".join(short)


@pytest.mark.clause("pci.notify-multiplier", "pci.notify-data-multiplier")
def test_notify_off_multiplier(device):
    mult = device.transport.notify.notify_off_multiplier
    assert mult is not None, "notify capability shorter than 20 bytes: no notify_off_multiplier"
    if device.offers(spec.VIRTIO_F_NOTIFICATION_DATA):
        ok, want = mult == 0 or (mult & (mult - 1) == 0 and mult % 4 == 0), \
            "0 or a power of 2 that is a multiple of 4 (VIRTIO_F_NOTIFICATION_DATA offered)"
    else:
        ok, want = mult == 0 or (mult & (mult - 1) == 0 and mult % 2 == 0), \
            "0 or an even power of 2"
    assert ok, f"notify_off_multiplier {mult}: not {want}"


@pytest.mark.clause("pci.notify-length-min", "pci.notify-data-length-min",
                    "pci.notify-length-covers-queues", "pci.notify-data-length-covers-queues")
def test_notify_length_covers_every_queue(device):
    t = device.transport
    mult = t.notify.notify_off_multiplier or 0
    width = notify_width(device)
    length = t.notify.length
    assert length >= width, f"notify capability length {length}, less than {width}"
    wrong = []
    for q in range(t.num_queues):
        off = t.queue_read(q, spec.COMMON_Q_NOFF, 2)
        if off * mult + width > length:
            wrong.append(f"queue {q}: queue_notify_off {off} * {mult} + {width} > {length}")
    assert not wrong, "notify capability length too short: " + "; ".join(wrong)


def _vendor_caps(device, cfg_type: int) -> list:
    return [c for c in device.virtio.capabilities
            if c.cap_id == spec.PCI_CAP_ID_VNDR and len(c.raw) > spec.CAP_CFG_TYPE
            and c.u8(spec.CAP_CFG_TYPE) == cfg_type]


@pytest.mark.clause("pci.vendor-data-vendor-id", "pci.vendor-data-size",
                    "pci.vendor-data-no-side-effects")
def test_vendor_data_capabilities(device, platform):
    caps = _vendor_caps(device, spec.VIRTIO_PCI_CAP_VENDOR_CFG)
    if not caps:
        pytest.skip("the device presents no vendor data capability (cfg_type 9)")
    header = [platform.config_read(off, 4) for off in range(0, 0x40, 4)]
    wrong = []
    for c in caps:
        vendor = int.from_bytes(c.raw[4:6], "little")
        if vendor == spec.PCI_VENDOR_ID_REDHAT_QUMRANET:
            wrong.append(f"vendor data cap at {c.offset:#x} has vendor_id 0x1af4")
        if c.u8(spec.CAP_LEN) % 4:
            wrong.append(f"vendor data cap at {c.offset:#x}: size {c.u8(spec.CAP_LEN)} is not "
                         f"a multiple of 4")
        again = [platform.config_read(c.offset + i, 4) for i in range(0, len(c.raw), 4)]
        again_raw = b"".join(v.to_bytes(4, "little") for v in again)[:len(c.raw)]
        if again_raw != c.raw:
            wrong.append(f"vendor data cap at {c.offset:#x} reads differently the second time")
    if [platform.config_read(off, 4) for off in range(0, 0x40, 4)] != header:
        wrong.append("reading vendor data changed the configuration header")
    assert not wrong, "; ".join(wrong)


@pytest.mark.clause("pci.shm-within-bar", "pci.shm-id-unique")
def test_shared_memory_capabilities(device):
    caps = _vendor_caps(device, spec.VIRTIO_PCI_CAP_SHARED_MEMORY_CFG)
    if not caps:
        pytest.skip("the device presents no shared memory capability (cfg_type 8)")
    bars = device.virtio.bars
    wrong = []
    ids: dict[int, int] = {}
    for c in caps:
        if len(c.raw) < 24:
            wrong.append(f"shared memory cap at {c.offset:#x} is shorter than virtio_pci_cap64")
            continue
        bar, cap_id = c.u8(spec.CAP_BAR), c.u8(spec.CAP_ID)
        offset = c.u32(spec.CAP_OFFSET) | c.u32(16) << 32
        length = c.u32(spec.CAP_LENGTH) | c.u32(20) << 32
        if bar not in bars:
            wrong.append(f"shared memory region {cap_id} names BAR{bar}, which is not implemented")
        elif offset + length > bars[bar].size:
            wrong.append(f"shared memory region {cap_id} [{offset:#x}, +{length:#x}) runs past "
                         f"BAR{bar} of {bars[bar].size:#x} bytes")
        if cap_id in ids:
            wrong.append(f"shared memory caps at {ids[cap_id]:#x} and {c.offset:#x} share id "
                         f"{cap_id}")
        ids[cap_id] = c.offset
    assert not wrong, "; ".join(wrong)


# --- 4.1.4.9 PCI configuration access capability ------------------------------------


class CfgWindow:
    """The driver's side of struct virtio_pci_cfg_cap: BAR accesses through config space."""

    def __init__(self, device):
        caps = [c for c in device.virtio.virtio_caps.all
                if c.cfg_type == spec.VIRTIO_PCI_CAP_PCI_CFG]
        if not caps:
            pytest.fail("no PCI configuration access capability "
                        "(see test_required_capability_present[pci_cfg])")
        self.platform = device.platform
        self.cap = caps[0].cap_offset

    def _aim(self, bar: int, off: int, size: int) -> None:
        p = self.platform
        p.config_write(self.cap + spec.CAP_BAR, 1, bar)
        p.config_write(self.cap + spec.CAP_LENGTH, 4, size)
        p.config_write(self.cap + spec.CAP_OFFSET, 4, off)

    def read(self, bar: int, off: int, size: int) -> int:
        self._aim(bar, off, size)
        return self.platform.config_read(self.cap + spec.CAP_PCI_CFG_DATA, size)

    def write(self, bar: int, off: int, size: int, value: int) -> None:
        self._aim(bar, off, size)
        self.platform.config_write(self.cap + spec.CAP_PCI_CFG_DATA, size, value)


@pytest.mark.clause("pci.pci-cfg-read")
def test_pci_cfg_window_reads_the_bar(device):
    """Reads through pci_cfg_data return what the same read of the BAR returns."""
    t, win = device.transport, CfgWindow(device)
    common, cfg = t.common, t.device_cfg
    t.device_status = spec.STATUS_ACKNOWLEDGE  # a non-zero byte to read back
    t.common_write(spec.COMMON_DFSELECT, 4, 1)  # device_feature shows bits 32..63
    checks = [("num_queues", common.bar, common.offset + spec.COMMON_NUMQ, 2),
              ("device_feature[1]", common.bar, common.offset + spec.COMMON_DF, 4),
              ("device_status", common.bar, common.offset + spec.COMMON_STATUS, 1),
              ("queue_size", common.bar, common.offset + spec.COMMON_Q_SIZE, 2)]
    if cfg is not None:
        checks.append(("capacity (low dword)", cfg.bar, cfg.offset + spec.BLK_CFG_CAPACITY, 4))
    wrong = []
    for name, bar, off, size in checks:
        direct = device.platform.bar_read(bar, off, size)
        windowed = win.read(bar, off, size)
        if windowed != direct:
            wrong.append(f"{name}: {windowed:#x} through pci_cfg_data, {direct:#x} in BAR{bar}")
    assert not wrong, "; ".join(wrong)


@pytest.mark.clause("pci.pci-cfg-write")
def test_pci_cfg_window_writes_the_bar(device):
    """Writes through pci_cfg_data land in the BAR: queue_select, device_feature_select and
    device_status, each read back directly."""
    t, win = device.transport, CfgWindow(device)
    common = t.common
    t.reset()  # every value written below differs from its reset value
    wrong = []
    for name, off, size, value in (
            ("queue_select", spec.COMMON_Q_SELECT, 2, 1),
            ("device_feature_select", spec.COMMON_DFSELECT, 4, 1),
            ("device_status", spec.COMMON_STATUS, 1, spec.STATUS_ACKNOWLEDGE)):
        win.write(common.bar, common.offset + off, size, value)
        got = t.common_read(off, size)
        if got != value:
            wrong.append(f"{name} reads {got:#x} after {value:#x} was written through "
                         f"pci_cfg_data")
    assert not wrong, "; ".join(wrong)
