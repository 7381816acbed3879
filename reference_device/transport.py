"""Virtio over PCI, modern interface: the common configuration structure,
ISR status and notification decoding (4.1.4.3 - 4.1.4.5, 4.1.5).

``Transport`` owns the device-independent virtio state (status, features,
MSI-X vector mapping, queues, ISR, config generation).  Side effects that reach
beyond it (device reset of the block part, feature-dependent behaviour) go to
the ``hooks`` object (the device).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Protocol

from conformance import spec

from .virtqueue import Virtqueue

NO_VECTOR = spec.VIRTIO_MSI_NO_VECTOR


class TransportHooks(Protocol):
    def on_reset(self) -> None: ...
    def on_features_ok(self, features: int) -> None: ...


class Transport:
    def __init__(self, num_queues: int, queue_size_max: int, offered: int, msix_vectors: int,
                 notify_off_multiplier: int, hooks: TransportHooks, *,
                 accept_unoffered: bool = False,
                 has_defect: Callable[[str], bool] | None = None):
        self.offered = offered
        # DeviceConfig.has_defect: injectable deviations that live in the transport
        self.has_defect = has_defect or (lambda name: False)
        self.msix_vectors = msix_vectors
        self.notify_off_multiplier = notify_off_multiplier
        self.hooks = hooks
        self.accept_unoffered = accept_unoffered
        self.queues = [Virtqueue(i, queue_size_max) for i in range(num_queues)]
        self.config_generation = 0
        self.bad_accesses = 0  # common cfg accesses with a width the layout does not allow
        self.accepted_once = False  # FEATURES_OK has stuck at least once since power-on
        self.wedged = False  # set by the failed-wedges-device defect; survives reset
        self.reset()

    def reset(self) -> None:
        """4.1.4.3.1: the state after 0 was written to device_status."""
        # what the queue reset defects keep across a queue reset (see _queue_reset)
        self.ghosts: dict[int, Virtqueue] = {}
        self.stale_positions: set[int] = set()
        self.sticky_sizes: dict[int, int] = {}
        self.status = 0
        self.dfselect = 0
        self.gfselect = 0
        self.driver_words: dict[int, int] = {}
        self.features_locked = False
        self.negotiated = 0
        kept = [(q.enabled, q.msix_vector) for q in self.queues]
        kept_config = getattr(self, "config_msix_vector", NO_VECTOR)
        self.config_msix_vector = NO_VECTOR
        self.queue_select = 0
        self.isr = 0
        for q in self.queues:
            if not self.has_defect("reset-leaves-queues-running"):
                q.reset()
        if self.has_defect("vectors-survive-reset"):
            self.config_msix_vector = kept_config
            for q, (_, vector) in zip(self.queues, kept):
                q.msix_vector = vector
        if self.has_defect("queue-enable-survives-reset"):
            for q, (enabled, _) in zip(self.queues, kept):
                q.enabled = enabled

    # ---------------------------------------------------------------- features
    def driver_features(self) -> int:
        """The driver's feature words 0..3 as one number (bits above 127 ignored)."""
        value = 0
        for sel, word in self.driver_words.items():
            if sel < 4:
                value |= word << (32 * sel)
        return value

    def features_acceptable(self) -> bool:
        """Can FEATURES_OK stick?  (2.2.2 Device Requirements: Feature Bits)"""
        wanted = self.driver_features()
        stray = any(word for sel, word in self.driver_words.items() if sel >= 4)
        if (stray or wanted & ~self.offered) and not self.accept_unoffered:
            return False
        # 6.2: a device MAY fail to operate if VIRTIO_F_VERSION_1 is not accepted;
        # this one is non-transitional and has no legacy mode to fall back to.
        version_1 = 1 << spec.VIRTIO_F_VERSION_1
        if self.offered & version_1 and not wanted & version_1:
            return False
        if self.has_defect("features-ok-needs-indirect") and \
                not wanted >> spec.VIRTIO_F_INDIRECT_DESC & 1:
            return False  # the defect: valid subsets without INDIRECT_DESC are refused
        if self.has_defect("features-ok-only-once") and self.accepted_once:
            return False  # the defect: a second negotiation after reset is refused
        return not self.wedged

    def has(self, bit: int) -> bool:
        return bool(self.negotiated >> bit & 1)

    # ------------------------------------------------------------- common cfg
    def selected(self) -> Virtqueue | None:
        sel = self.queue_select
        return self.queues[sel] if sel < len(self.queues) else None

    def _field_values(self) -> dict[int, tuple[int, int]]:
        """Offset -> (width, value) of every field as the driver would read it now."""
        q = self.selected()
        dsel = self.dfselect
        if self.has_defect("feature-window-ignores-high-select"):
            dsel &= 1  # the defect: only the lowest bit of device_feature_select decodes
        gsel = 0 if self.has_defect("driver-feature-reads-word-0") else self.gfselect
        device_feature = self.offered >> (32 * dsel) & 0xFFFFFFFF if dsel < 4 else 0
        values = {
            spec.COMMON_DFSELECT: (4, self.dfselect),
            spec.COMMON_DF: (4, device_feature),
            spec.COMMON_GFSELECT: (4, self.gfselect),
            spec.COMMON_GF: (4, self.driver_words.get(gsel, 0)),
            spec.COMMON_MSIX: (2, self.config_msix_vector),
            spec.COMMON_NUMQ: (2, len(self.queues)),
            spec.COMMON_STATUS: (1, self.status),
            spec.COMMON_CFGGENERATION: (1, self.config_generation),
            spec.COMMON_Q_SELECT: (2, self.queue_select),
        }
        if q is None:  # 4.1.4.3.1: an unavailable queue presents queue_size 0
            size = self.queues[0].size_max if self.has_defect("missing-queue-has-size") else 0
            q_fields = (size, NO_VECTOR, 0, 0, 0, 0, 0, 0, 0)
        else:
            # queue_notify_data: the value notifications name the queue by (4.1.5.2)
            ndata = q.index + (0x100 if self.has_defect("notif-config-data-unknown") else 0)
            q_fields = (q.size, q.msix_vector, int(q.enabled), q.index, q.desc, q.driver,
                        q.device, ndata, 0)
        size, vec, enable, noff, desc, drv, dev, ndata, qreset = q_fields
        values.update({
            spec.COMMON_Q_SIZE: (2, size),
            spec.COMMON_Q_MSIX: (2, vec),
            spec.COMMON_Q_ENABLE: (2, enable),
            spec.COMMON_Q_NOFF: (2, noff),
            spec.COMMON_Q_DESCLO: (8, desc),
            spec.COMMON_Q_AVAILLO: (8, drv),
            spec.COMMON_Q_USEDLO: (8, dev),
            spec.COMMON_Q_NDATA: (2, ndata),
            # queue reset completes inside the write, so it always reads back 0
            spec.COMMON_Q_RESET: (2, qreset),
        })
        return values

    def common_read(self, off: int, size: int) -> int:
        """A read of the common configuration structure; no side effects."""
        raw = bytearray(spec.COMMON_CFG_SIZE)
        for foff, (width, value) in self._field_values().items():
            raw[foff:foff + width] = value.to_bytes(width, "little")
        if off < 0 or off + size > len(raw):
            return 0
        return int.from_bytes(raw[off:off + size], "little")

    def common_write(self, off: int, size: int, value: int) -> None:
        """A write of the common configuration structure (4.1.4.3)."""
        if size == 8 and off in (spec.COMMON_Q_DESCLO, spec.COMMON_Q_AVAILLO,
                                 spec.COMMON_Q_USEDLO):
            self.common_write(off, 4, value & 0xFFFFFFFF)
            self.common_write(off + 4, 4, value >> 32)
            return
        width = _WIDTHS.get(off)
        if width != size:
            self.bad_accesses += 1  # 4.1.3.1: the driver uses each field's own width
            return
        if off == spec.COMMON_DFSELECT:
            self.dfselect = value
        elif off == spec.COMMON_GFSELECT:
            self.gfselect = value
        elif off == spec.COMMON_GF:
            if not self.features_locked:  # no new features after FEATURES_OK
                self.driver_words[self.gfselect] = value
            elif self.has_defect("features-not-fixed"):
                # the defect: a write after FEATURES_OK renegotiates behind the driver's back
                self.driver_words[self.gfselect] = value
                self.negotiated = self.driver_features() & self.offered
                self.hooks.on_features_ok(self.negotiated)
        elif off == spec.COMMON_MSIX:
            self.config_msix_vector = self._vector(value, self.config_msix_vector)
        elif off == spec.COMMON_STATUS:
            self._write_status(value)
        elif off == spec.COMMON_Q_SELECT:
            self.queue_select = value
        else:
            q = self.selected()
            if q is not None:
                self._queue_write(q, off, value)

    def _vector(self, value: int, current: int) -> int:
        """The vector an event is mapped to after the driver wrote ``value`` (4.1.5.1.2.1)."""
        if value == NO_VECTOR and self.has_defect("no-vector-write-ignored"):
            return current
        if self.has_defect("vector-out-of-range-kept"):
            return value
        # a vector outside the table cannot be mapped: read back NO_VECTOR
        return value if value < self.msix_vectors else NO_VECTOR

    def _write_status(self, value: int) -> None:
        if self.has_defect("status-write-ors"):
            value |= self.status  # the defect: bits only ever get set; 0 resets nothing
        if value == 0:
            needs_reset = self.status & spec.STATUS_DEVICE_NEEDS_RESET
            kept = self.negotiated
            self.reset()
            if self.has_defect("reset-keeps-needs-reset"):
                self.status = needs_reset
            if self.has_defect("reset-keeps-features"):
                self.negotiated = kept  # merged into the next negotiation
            self.hooks.on_reset()
            return
        # DEVICE_NEEDS_RESET belongs to the device; the driver cannot set or clear it
        value = (value & ~spec.STATUS_DEVICE_NEEDS_RESET) | (
            self.status & spec.STATUS_DEVICE_NEEDS_RESET)
        if value & spec.STATUS_FEATURES_OK and not self.status & spec.STATUS_FEATURES_OK:
            if not self.features_acceptable():
                value &= ~spec.STATUS_FEATURES_OK  # 2.2.2: refuse by not setting the bit
            else:
                self.features_locked = True
                self.accepted_once = True
                fresh = self.driver_features() & self.offered
                if self.has_defect("reset-keeps-features"):
                    fresh |= self.negotiated
                self.negotiated = fresh
                self.hooks.on_features_ok(self.negotiated)
        if value & spec.STATUS_FAILED and self.has_defect("failed-wedges-device"):
            self.wedged = True  # the defect: the backend gives up for good
        if self.status & ~value & _DRIVER_BITS and self.has_defect("cleared-status-wedges"):
            self.wedged = True  # the defect: a cleared status bit stops the backend for good
        if value & spec.STATUS_DRIVER_OK:
            if self.has_defect("driver-ok-drops-acknowledge"):
                value &= ~spec.STATUS_ACKNOWLEDGE
            if self.has_defect("driver-ok-drops-features-ok"):
                value &= ~spec.STATUS_FEATURES_OK
        self.status = value

    def _queue_write(self, q: Virtqueue, off: int, value: int) -> None:
        if off == spec.COMMON_Q_MSIX:
            if value == 0 and self.has_defect("queue-vector-0-refused"):
                value = NO_VECTOR
            q.msix_vector = self._vector(value, q.msix_vector)
        elif off == spec.COMMON_Q_ENABLE:
            if value == 1 and not q.enabled:
                self._enable(q)
        elif off == spec.COMMON_Q_RESET:
            if value == 1 and self.has(spec.VIRTIO_F_RING_RESET) and \
                    not self.has_defect("queue-reset-ignored"):
                self._queue_reset(q)
        elif q.enabled:
            pass  # the rest is configuration, fixed while the queue is enabled
        elif off == spec.COMMON_Q_SIZE:
            if self._size_ok(value):
                q.size = value
        elif off in _ADDR_HALVES:
            name, high = _ADDR_HALVES[off]
            cur = getattr(q, name)
            if high:
                if self.has_defect("queue-addr-high-write-clears-low"):
                    cur = 0  # as if the high half started a new 64-bit value
                cur = (cur & 0xFFFFFFFF) | value << 32
            else:
                cur = (cur & ~0xFFFFFFFF) | value
            setattr(q, name, cur)

    def _size_ok(self, value: int) -> bool:
        """A queue_size the device will present (anything else is ignored)."""
        if not 1 <= value <= self.queues[0].size_max:
            return False
        packed = self.driver_features() >> spec.VIRTIO_F_RING_PACKED & 1
        # 4.1.4.3.1: without RING_PACKED the device presents 0 or a power of 2
        return bool(packed) or value & (value - 1) == 0

    def _queue_reset(self, q: Virtqueue) -> None:
        """2.6.1.1: done at once; queue_reset and queue_enable read 0 right after."""
        if self.has_defect("queue-reset-backend-keeps-ring"):
            self.ghosts[q.index] = copy.copy(q)  # the defect: the backend never heard of it
        kept = (q.size, q.last_avail, q.used_idx, q.avail_slot, q.avail_wrap, q.used_slot,
                q.used_wrap)
        for other in self.queues if self.has_defect("queue-reset-resets-all") else [q]:
            other.reset()
        if self.has_defect("queue-reset-keeps-position"):
            (_, q.last_avail, q.used_idx, q.avail_slot, q.avail_wrap, q.used_slot,
             q.used_wrap) = kept
            self.stale_positions.add(q.index)
        if self.has_defect("queue-reset-keeps-size"):
            self.sticky_sizes[q.index] = kept[0]

    def _enable(self, q: Virtqueue) -> None:
        q.packed = self.has(spec.VIRTIO_F_RING_PACKED)
        if q.index in self.stale_positions:
            self.stale_positions.discard(q.index)  # (the queue-reset-keeps-position defect)
        else:
            q.clear_runtime()
        q.size = self.sticky_sizes.pop(q.index, q.size)  # (the queue-reset-keeps-size defect)
        self.ghosts.pop(q.index, None)
        q.enabled = True
        if self.has_defect("queue-size-reverts-on-enable"):
            q.size = q.size_max

    # -------------------------------------------------------------- ISR, notify
    def isr_read(self) -> int:
        """4.1.4.5: reading ISR status returns it and resets it to 0."""
        value = self.isr
        self.isr = 0
        return value

    def notify_queue(self, off: int, size: int, value: int) -> int | None:
        """Which queue a write at ``off`` into the notify region addresses (4.1.4.4).

        The address selects the queue (queue_notify_off * notify_off_multiplier);
        with a multiplier of 0 all queues share one address and the value's vqn
        field tells them apart (2.9).  The value is recorded per queue.
        """
        mult = self.notify_off_multiplier
        if mult:
            if off % mult:
                return None
            index = off // (2 if self.has_defect("notify-decode-halved") else mult)
        else:
            index = value & spec.NOTIFY_DATA_VQN_MASK
        if index >= len(self.queues):
            return None
        q = self.queues[index]
        q.last_notification = value
        q.notifications += 1
        return index


_DRIVER_BITS = (spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER | spec.STATUS_FEATURES_OK
                | spec.STATUS_DRIVER_OK)
_WIDTHS = {
    spec.COMMON_DFSELECT: 4, spec.COMMON_DF: 4, spec.COMMON_GFSELECT: 4, spec.COMMON_GF: 4,
    spec.COMMON_MSIX: 2, spec.COMMON_NUMQ: 2, spec.COMMON_STATUS: 1,
    spec.COMMON_CFGGENERATION: 1, spec.COMMON_Q_SELECT: 2, spec.COMMON_Q_SIZE: 2,
    spec.COMMON_Q_MSIX: 2, spec.COMMON_Q_ENABLE: 2, spec.COMMON_Q_NOFF: 2,
    spec.COMMON_Q_DESCLO: 4, spec.COMMON_Q_DESCHI: 4, spec.COMMON_Q_AVAILLO: 4,
    spec.COMMON_Q_AVAILHI: 4, spec.COMMON_Q_USEDLO: 4, spec.COMMON_Q_USEDHI: 4,
    spec.COMMON_Q_NDATA: 2, spec.COMMON_Q_RESET: 2,
}
_ADDR_HALVES = {
    spec.COMMON_Q_DESCLO: ("desc", False), spec.COMMON_Q_DESCHI: ("desc", True),
    spec.COMMON_Q_AVAILLO: ("driver", False), spec.COMMON_Q_AVAILHI: ("driver", True),
    spec.COMMON_Q_USEDLO: ("device", False), spec.COMMON_Q_USEDHI: ("device", True),
}
