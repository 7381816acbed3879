"""The modern virtio-over-PCI transport (4.1.4 Virtio Structure PCI Capabilities).

:func:`find_virtio_caps` turns the capability list into the locations of the
common, notify, ISR and device configuration structures;
:class:`ModernTransport` reads and writes them through the Platform.  Register
names follow struct virtio_pci_common_cfg (4.1.4.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conformance import spec
from conformance.driver.pci import Bar, Capability
from conformance.driver.platform import BarWrite, Op, Platform


class TransportError(Exception):
    """The device does not offer what the modern PCI transport requires."""


@dataclass(frozen=True)
class VirtioCap:
    """A virtio structure capability (struct virtio_pci_cap, 4.1.4)."""

    cap_offset: int
    cfg_type: int
    bar: int
    id: int
    offset: int
    length: int
    cap_len: int
    notify_off_multiplier: int | None = None

    @property
    def name(self) -> str:
        return spec.VIRTIO_PCI_CAP_NAMES.get(self.cfg_type, f"type {self.cfg_type}")


def parse_virtio_cap(cap: Capability) -> VirtioCap | None:
    if cap.cap_id != spec.PCI_CAP_ID_VNDR or len(cap.raw) < spec.VIRTIO_PCI_CAP_SIZE:
        return None
    cfg_type = cap.u8(spec.CAP_CFG_TYPE)
    multiplier = None
    notify = cfg_type == spec.VIRTIO_PCI_CAP_NOTIFY_CFG
    if notify and len(cap.raw) >= spec.VIRTIO_PCI_NOTIFY_CAP_SIZE:
        multiplier = cap.u32(spec.CAP_NOTIFY_OFF_MULTIPLIER)
    return VirtioCap(
        cap_offset=cap.offset,
        cfg_type=cfg_type,
        bar=cap.u8(spec.CAP_BAR),
        id=cap.u8(spec.CAP_ID),
        offset=cap.u32(spec.CAP_OFFSET),
        length=cap.u32(spec.CAP_LENGTH),
        cap_len=cap.u8(spec.CAP_LEN),
        notify_off_multiplier=multiplier,
    )


@dataclass
class VirtioCaps:
    """All virtio capabilities in list order, and the one the driver uses per type.

    4.1.4.1: the device may offer several of one type; the driver uses the
    first one whose BAR it can use, which is what ``chosen`` holds.
    """

    all: list[VirtioCap] = field(default_factory=list)
    chosen: dict[int, VirtioCap] = field(default_factory=dict)

    def get(self, cfg_type: int) -> VirtioCap:
        try:
            return self.chosen[cfg_type]
        except KeyError:
            name = spec.VIRTIO_PCI_CAP_NAMES.get(cfg_type, str(cfg_type))
            raise TransportError(f"the device has no usable {name} capability (4.1.4)") from None


def find_virtio_caps(caps: list[Capability], bars: dict[int, Bar]) -> VirtioCaps:
    found = VirtioCaps()
    for cap in caps:
        vcap = parse_virtio_cap(cap)
        if vcap is None:
            continue
        found.all.append(vcap)
        usable = vcap.cfg_type == spec.VIRTIO_PCI_CAP_PCI_CFG or (
            vcap.bar in bars and not bars[vcap.bar].is_io
        )
        if usable and vcap.cfg_type not in found.chosen:
            found.chosen[vcap.cfg_type] = vcap
    return found


class ModernTransport:
    """Register access to one virtio-pci function's virtio structures."""

    def __init__(self, platform: Platform, caps: VirtioCaps):
        self.platform = platform
        self.caps = caps
        self.device_cfg = caps.chosen.get(spec.VIRTIO_PCI_CAP_DEVICE_CFG)

    # A missing structure is an error only when it is used, so that a case about
    # the capability list can report it instead of failing at probe time.
    @property
    def common(self) -> VirtioCap:
        return self.caps.get(spec.VIRTIO_PCI_CAP_COMMON_CFG)

    @property
    def notify(self) -> VirtioCap:
        return self.caps.get(spec.VIRTIO_PCI_CAP_NOTIFY_CFG)

    @property
    def isr(self) -> VirtioCap:
        return self.caps.get(spec.VIRTIO_PCI_CAP_ISR_CFG)

    # --- common configuration (4.1.4.3) -------------------------------------
    def common_read(self, off: int, size: int) -> int:
        return self.platform.bar_read(self.common.bar, self.common.offset + off, size)

    def common_write(self, off: int, size: int, value: int) -> None:
        self.platform.bar_write(self.common.bar, self.common.offset + off, size, value)

    def common_write_op(self, off: int, size: int, value: int) -> Op:
        return BarWrite(self.common.bar, self.common.offset + off, size, value)

    @property
    def device_status(self) -> int:
        return self.common_read(spec.COMMON_STATUS, 1)

    @device_status.setter
    def device_status(self, value: int) -> None:
        self.common_write(spec.COMMON_STATUS, 1, value)

    @property
    def num_queues(self) -> int:
        return self.common_read(spec.COMMON_NUMQ, 2)

    @property
    def config_generation(self) -> int:
        return self.common_read(spec.COMMON_CFGGENERATION, 1)

    def device_features(self) -> int:
        """All 128 offered feature bits, one 32-bit window at a time."""
        features = 0
        for select in range(4):
            self.common_write(spec.COMMON_DFSELECT, 4, select)
            features |= self.common_read(spec.COMMON_DF, 4) << (32 * select)
        return features

    def device_feature_word(self, select: int) -> int:
        self.common_write(spec.COMMON_DFSELECT, 4, select)
        return self.common_read(spec.COMMON_DF, 4)

    def write_driver_features(self, features: int, words: int = 2) -> None:
        for select in range(words):
            self.common_write(spec.COMMON_GFSELECT, 4, select)
            self.common_write(spec.COMMON_GF, 4, (features >> (32 * select)) & 0xFFFFFFFF)

    def driver_features(self, words: int = 2) -> int:
        features = 0
        for select in range(words):
            self.common_write(spec.COMMON_GFSELECT, 4, select)
            features |= self.common_read(spec.COMMON_GF, 4) << (32 * select)
        return features

    def select_queue(self, index: int) -> None:
        self.common_write(spec.COMMON_Q_SELECT, 2, index)

    def queue_read(self, index: int, off: int, size: int) -> int:
        self.select_queue(index)
        return self.common_read(off, size)

    def queue_write(self, index: int, off: int, size: int, value: int) -> None:
        self.select_queue(index)
        self.common_write(off, size, value)

    def reset(self, timeout: float = 5.0) -> None:
        """Write 0 to device_status and wait until it reads back 0 (4.1.4.3.2)."""
        import time

        self.device_status = 0
        deadline = time.monotonic() + timeout
        while (status := self.device_status) != 0:
            if time.monotonic() > deadline:
                raise TransportError(
                    f"device_status still {spec.status_str(status)} {timeout:g}s after reset"
                )
            time.sleep(0.001)

    # --- notifications (4.1.4.4) ----------------------------------------------
    def notify_offset(self, queue_notify_off: int) -> int:
        """Offset inside the notify BAR: cap.offset + queue_notify_off * multiplier."""
        return self.notify.offset + queue_notify_off * (self.notify.notify_off_multiplier or 0)

    def notify_op(self, queue_notify_off: int, value: int, size: int = 2) -> Op:
        return BarWrite(self.notify.bar, self.notify_offset(queue_notify_off), size, value)

    # --- ISR (4.1.4.5) and device configuration (4.1.4.6) ------------------------
    def read_isr(self) -> int:
        return self.platform.bar_read(self.isr.bar, self.isr.offset, 1)

    def config_read(self, off: int, size: int) -> int:
        if self.device_cfg is None:
            raise TransportError("the device has no device configuration capability (4.1.4.6)")
        return self.platform.bar_read(self.device_cfg.bar, self.device_cfg.offset + off, size)

    def config_write(self, off: int, size: int, value: int) -> None:
        if self.device_cfg is None:
            raise TransportError("the device has no device configuration capability (4.1.4.6)")
        self.platform.bar_write(self.device_cfg.bar, self.device_cfg.offset + off, size, value)
