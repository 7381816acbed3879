"""Per-virtqueue state: what the driver configured and where the device is.

The configuration half mirrors the queue fields of the common configuration
structure (4.1.4.3); the runtime half is the device's position in the rings
(split: 2.7.6 / 2.7.8 indexes; packed: 2.8.1 slots and wrap counters).
"""

from __future__ import annotations

from conformance import spec


class Virtqueue:
    __slots__ = (
        "index", "size_max", "size", "msix_vector", "enabled", "desc", "driver", "device",
        "packed", "last_avail", "used_idx", "avail_slot", "avail_wrap", "used_slot",
        "used_wrap", "broken", "last_notification", "notifications", "completed",
        "last_used_desc",
    )

    def __init__(self, index: int, size_max: int):
        self.index = index
        self.size_max = size_max
        self.reset()

    def reset(self) -> None:
        """Back to the state after device reset (4.1.4.3.1) or queue reset (2.6.1)."""
        self.size = self.size_max
        self.msix_vector = spec.VIRTIO_MSI_NO_VECTOR
        self.enabled = False
        self.desc = 0
        self.driver = 0
        self.device = 0
        self.packed = False
        self.last_notification: int | None = None
        self.notifications = 0
        self.completed = 0
        self.clear_runtime()

    def clear_runtime(self) -> None:
        """Forget the ring positions (2.6.1.1: available and used state back to default)."""
        self.last_avail = 0  # split: next avail ring index to read (mod 2^16)
        self.used_idx = 0  # split: next used ring index to write (mod 2^16)
        self.avail_slot = 0  # packed: next descriptor slot to look at
        self.avail_wrap = 1  # packed: Driver Ring Wrap Counter the device expects
        self.used_slot = 0  # packed: next slot for a used descriptor
        self.used_wrap = 1  # packed: Device Ring Wrap Counter
        self.last_used_desc: int | None = None  # packed-rewrite-previous-used defect
        self.broken: str | None = None  # why the device stopped serving this queue

    def describe(self) -> str:
        """One line of queue state for error messages."""
        if self.packed:
            pos = (f"avail slot {self.avail_slot} wrap {self.avail_wrap}, "
                   f"used slot {self.used_slot} wrap {self.used_wrap}")
        else:
            pos = f"last_avail {self.last_avail}, used idx {self.used_idx}"
        return (f"queue {self.index}: size {self.size}, enabled {int(self.enabled)}, "
                f"{'packed' if self.packed else 'split'}, {pos}, desc {self.desc:#x}, "
                f"driver {self.driver:#x}, device {self.device:#x}"
                + (f", broken: {self.broken}" if self.broken else ""))
