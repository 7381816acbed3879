"""Bring-up of a virtio-pci function: probe, negotiate, set up queues (3.1 Device Initialization).

:class:`VirtioPciDevice` is device-type agnostic; ``conformance.driver.blk``
adds the block device on top.  Each step is a separate method so a case can
stop half way (e.g. negotiate features and check FEATURES_OK without ever
setting DRIVER_OK).
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance import spec
from conformance.driver.dma import DmaPool
from conformance.driver.msix import Msix, parse_msix_cap
from conformance.driver.packed import PackedQueue
from conformance.driver.pci import Bar, Capability, read_capabilities, setup_bars
from conformance.driver.platform import Platform
from conformance.driver.split import SplitQueue
from conformance.driver.transport import ModernTransport, VirtioCaps, find_virtio_caps
from conformance.driver.virtqueue import Virtqueue

#: Generic features this driver implements and therefore may accept (6 Reserved Feature Bits).
DRIVER_TRANSPORT_FEATURES = (
    1 << spec.VIRTIO_F_VERSION_1
    | 1 << spec.VIRTIO_F_INDIRECT_DESC
    | 1 << spec.VIRTIO_F_EVENT_IDX
    | 1 << spec.VIRTIO_F_RING_PACKED
    | 1 << spec.VIRTIO_F_RING_RESET
    | 1 << spec.VIRTIO_F_NOTIFICATION_DATA
    | 1 << spec.VIRTIO_F_ACCESS_PLATFORM  # no IOMMU on any target: bus address == physical
    | 1 << spec.VIRTIO_F_ORDER_PLATFORM
)


class DeviceInitError(Exception):
    """The device refused a step of initialization (e.g. FEATURES_OK did not stick)."""


class FeatureNotOffered(Exception):
    """A case asked for a feature the device does not offer; cases turn this into a skip."""

    def __init__(self, bit: int):
        self.bit = bit
        super().__init__(f"device does not offer {spec.feature_name(bit)}")


@dataclass
class QueueInfo:
    """What the common configuration said about one queue at set-up."""

    max_size: int
    notify_off: int
    msix_vector: int


class VirtioPciDevice:
    """One virtio-pci function, probed through the Platform."""

    def __init__(self, platform: Platform, dma_size: int = 8 << 20):
        self.platform = platform
        self.bars: dict[int, Bar] = setup_bars(platform)
        self.capabilities: list[Capability] = read_capabilities(platform)
        self.virtio_caps: VirtioCaps = find_virtio_caps(self.capabilities, self.bars)
        self.transport = ModernTransport(platform, self.virtio_caps)
        msix_caps = [c for c in self.capabilities if c.cap_id == spec.PCI_CAP_ID_MSIX]
        self.msix: Msix | None = (
            Msix(platform, parse_msix_cap(msix_caps[0]), self.bars) if msix_caps else None
        )
        self.pool = DmaPool(platform.dma_alloc(dma_size, 4096), dma_size)
        self.offered = 0
        self.features = 0
        self.queues: list[Virtqueue] = []
        self.queue_info: list[QueueInfo] = []

    # --- 3.1.1 Driver Requirements: Device Initialization -----------------------------
    def reset(self) -> None:
        self.transport.reset()
        self.queues = []
        self.queue_info = []

    def add_status(self, bits: int) -> None:
        t = self.transport
        t.device_status = t.device_status | bits

    def negotiate(self, wanted: int, *, check: bool = True) -> bool:
        """Reset, ACKNOWLEDGE, DRIVER, write ``wanted`` features, set FEATURES_OK.

        Returns whether FEATURES_OK stuck.  With ``check`` a refusal raises
        :class:`DeviceInitError`.
        """
        self.reset()
        self.add_status(spec.STATUS_ACKNOWLEDGE)
        self.add_status(spec.STATUS_DRIVER)
        self.offered = self.transport.device_features()
        self.transport.write_driver_features(wanted, words=max(2, (wanted.bit_length() + 31) // 32))
        self.add_status(spec.STATUS_FEATURES_OK)
        accepted = bool(self.transport.device_status & spec.STATUS_FEATURES_OK)
        if accepted:
            self.features = wanted
        if check and not accepted:
            raise DeviceInitError(
                f"device did not keep FEATURES_OK for features {spec.features_str(wanted)}")
        return accepted

    def has(self, bit: int) -> bool:
        return bool(self.features >> bit & 1)

    def setup_queue(self, index: int, *, size: int | None = None, packed: bool = False,
                    vector: int | None = None, enable: bool = True) -> Virtqueue:
        """4.1.5.1.3 Virtqueue Configuration, for queue ``index``; returns the queue driver.

        With ``enable`` False the queue is configured but queue_enable stays 0
        (:meth:`enable_queue` sets it later).
        """
        t = self.transport
        t.select_queue(index)
        max_size = t.common_read(spec.COMMON_Q_SIZE, 2)
        if max_size == 0:
            raise DeviceInitError(f"queue {index} is not available (queue_size reads 0)")
        size = min(max_size, 256) if size is None else size
        if size != max_size:
            t.common_write(spec.COMMON_Q_SIZE, 2, size)
        cls = PackedQueue if packed else SplitQueue
        q = cls(self.platform, self.pool, index, size)
        for off, addr in ((spec.COMMON_Q_DESCLO, q.layout.desc),
                          (spec.COMMON_Q_AVAILLO, q.layout.driver),
                          (spec.COMMON_Q_USEDLO, q.layout.device)):
            t.common_write(off, 4, addr & 0xFFFFFFFF)
            t.common_write(off + 4, 4, addr >> 32)
        if vector is not None:
            t.common_write(spec.COMMON_Q_MSIX, 2, vector)
        read_vector = t.common_read(spec.COMMON_Q_MSIX, 2)
        notify_off = t.common_read(spec.COMMON_Q_NOFF, 2)
        q.notify = t.notify_op(notify_off, index)
        q.notification_data = self.has(spec.VIRTIO_F_NOTIFICATION_DATA)
        if self.has(spec.VIRTIO_F_NOTIF_CONFIG_DATA):
            q.notify_config_data = t.common_read(spec.COMMON_Q_NDATA, 2)
        if enable:
            t.common_write(spec.COMMON_Q_ENABLE, 2, 1)
        while len(self.queues) <= index:
            self.queues.append(None)  # type: ignore[arg-type]
            self.queue_info.append(None)  # type: ignore[arg-type]
        self.queues[index] = q
        self.queue_info[index] = QueueInfo(max_size, notify_off, read_vector)
        return q

    def enable_queue(self, index: int) -> None:
        self.transport.queue_write(index, spec.COMMON_Q_ENABLE, 2, 1)

    def driver_ok(self) -> None:
        self.add_status(spec.STATUS_DRIVER_OK)

    def needs_reset(self) -> bool:
        return bool(self.transport.device_status & spec.STATUS_DEVICE_NEEDS_RESET)
