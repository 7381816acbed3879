"""VirtioBlkPci: the reference virtio-blk-pci function, assembled.

Everything the outside world does to the function arrives through four calls:
``config_read/config_write`` (PCI configuration space) and
``mmio_read/mmio_write`` (memory cycles, decoded against the BARs as they are
programmed).  Queue notifications are served synchronously: when
``mmio_write`` returns, every available buffer has been completed and every
interrupt raised.  No Python exception ever leaves these four calls; a driver
error puts the device into DEVICE_NEEDS_RESET instead (2.1.2).
"""

from __future__ import annotations

import dataclasses
import struct
import traceback
from pathlib import Path

from conformance import spec

from . import layout as L
from . import packed_ring, split_ring
from .blk import BackingFile, BlkEngine
from .config import DeviceConfig
from .memory import GuestMemory
from .msix import Msix
from .pci import BarSpec, PciConfigSpace, PciIds, install_caps, msix_cap, virtio_cap
from .transport import Transport
from .virtqueue import Virtqueue

NO_VECTOR = spec.VIRTIO_MSI_NO_VECTOR


def _offered(cfg: DeviceConfig) -> int:
    """The features the function offers: the configuration's, bent by offer defects."""
    offered = cfg.offered_features()
    if cfg.has_defect("config-wce-without-flush"):
        offered &= ~(1 << spec.VIRTIO_BLK_F_FLUSH)
    if cfg.has_defect("offers-reserved-bit"):
        offered |= 1 << 41  # 2.2: reserved for future extensions
    if cfg.has_defect("offers-sr-iov"):
        offered |= 1 << spec.VIRTIO_F_SR_IOV
    return offered


class VirtioBlkPci:
    """One virtio-blk-pci function (non-transitional, device ID 0x1042)."""

    def __init__(self, cfg: DeviceConfig, memory: GuestMemory):
        self.cfg = cfg
        self.mem = memory
        self.offered = _offered(cfg)
        self.read_only = bool(self.offered >> spec.VIRTIO_BLK_F_RO & 1)
        self.backing = BackingFile(cfg, self.read_only)
        try:
            self._build(cfg, memory)
        except BaseException:
            self.backing.close()  # do not leave a temporary disk behind
            raise

    def _build(self, cfg: DeviceConfig, memory: GuestMemory) -> None:
        self.engine = BlkEngine(cfg, self.backing)
        self.capacity = cfg.capacity_sectors
        self.writeback = cfg.writeback
        self.needs_reset_reasons: list[str] = []
        self.internal_errors: list[str] = []  # bugs in this model; tests expect none
        self._closed = False

        nvec = 1 if cfg.has_defect("msix-single-vector") else cfg.msix_table_size
        # 4.1.4.4.1: notify_off_multiplier is 0 or a power of 2
        self._mult = 3 if cfg.has_defect("notify-multiplier-odd") else cfg.notify_off_multiplier
        # 4.1.4.3.1: without RING_PACKED a queue's size is a power of 2
        qmax = cfg.queue_size_max
        if cfg.has_defect("queue-size-not-power-of-2"):
            qmax = max(qmax * 3 // 4, 1)
        bars = [BarSpec(L.VIRTIO_BAR, L.VIRTIO_BAR_SIZE, is64=True, prefetch=True)]
        if nvec:
            bars.insert(0, BarSpec(L.MSIX_BAR, L.MSIX_BAR_SIZE))
        self.pci = PciConfigSpace(_pci_ids(cfg), bars)
        self._install_caps(nvec)
        self.msix = Msix(nvec, memory, self._bus_master) if nvec else None
        self.t = Transport(cfg.num_queues, qmax, self.offered, nvec, self._mult, self,
                           accept_unoffered=cfg.has_defect("accept-unoffered-features"),
                           has_defect=cfg.has_defect)
        self._stuck_intx = False  # the isr-read-keeps-intx defect's latched line
        self._last_notify: dict[int, int] = {}  # queue -> value of its last notification
        self._event_idx = False
        self._indirect = False
        self._no_wrap_defect = cfg.has_defect("used-idx-no-wrap")
        self.blkcfg = bytearray(spec.BLK_CFG_SIZE)
        self._fill_blkcfg()
        self._cfg_read_since_change = True  # see _config_changed
        if cfg.has_defect("status-nonzero-at-power-on"):
            self.t.status = spec.STATUS_ACKNOWLEDGE  # the defect: a stale status

    # ================================================================ public API
    def config_read(self, off: int, size: int) -> int:
        """Read ``size`` (1, 2 or 4) bytes of PCI configuration space."""
        try:
            if self._in_cfg_window(off, size):
                self._pci_cfg_window_read()
            return self.pci.read(off, size)
        except Exception:  # never let a bug escape into the caller
            self._internal_error("config_read")
            return 0

    def config_write(self, off: int, size: int, value: int) -> None:
        """Write ``size`` (1, 2 or 4) bytes of PCI configuration space."""
        try:
            old_cmd = self.pci.command
            self.pci.write(off, size, value)
            if self._overlaps(off, size, spec.PCI_COMMAND, 2):
                self._command_changed(old_cmd)
            if self.msix is not None and self._overlaps(off, size, L.CAP_MSIX + spec.MSIX_CTRL,
                                                        2):
                ctrl = self.pci.read(L.CAP_MSIX + spec.MSIX_CTRL, 2)
                self.msix.set_control(bool(ctrl & spec.MSIX_CTRL_ENABLE),
                                      bool(ctrl & spec.MSIX_CTRL_FUNCTION_MASK))
                self._update_intx()
            if self._in_cfg_window(off, size):
                self._pci_cfg_window_write()
        except Exception:
            self._internal_error("config_write")

    def mmio_read(self, addr: int, size: int) -> int | None:
        """A memory read cycle; None if no BAR claims ``addr``."""
        hit = self.pci.decode(addr)
        if hit is None:
            return None
        try:
            return self.bar_read(*hit, size)
        except Exception:
            self._internal_error("mmio_read")
            return 0

    def mmio_write(self, addr: int, size: int, value: int) -> bool:
        """A memory write cycle; False if no BAR claims ``addr``."""
        hit = self.pci.decode(addr)
        if hit is None:
            return False
        try:
            self.bar_write(hit[0], hit[1], size, value)
        except Exception:
            self._internal_error("mmio_write")
        return True

    @property
    def intx_level(self) -> bool:
        """INTx line: asserted while ISR status is non-zero, MSI-X is off and INTx enabled."""
        pending = self._intx_pending() or self._stuck_intx
        if self.cfg.has_defect("intx-ignores-disable"):
            return pending
        return pending and not self.pci.command & spec.PCI_COMMAND_INTX_DISABLE

    def resize(self, capacity_sectors: int) -> None:
        """Control plane: change the capacity; config generation and notification follow."""
        if isinstance(capacity_sectors, bool) or not isinstance(capacity_sectors, int) \
                or capacity_sectors < 0:
            raise ValueError(f"capacity must be a non-negative number of sectors, "
                             f"got {capacity_sectors!r}")
        self.capacity = capacity_sectors
        self.engine.capacity = capacity_sectors
        self.backing.grow_to(capacity_sectors * spec.SECTOR_SIZE)
        self._fill_blkcfg()
        self._config_changed()
        if not self.cfg.has_defect("resize-not-notified"):
            self._config_interrupt()

    @property
    def backing_path(self) -> Path:
        return self.backing.path

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.backing.close()

    def __enter__(self) -> VirtioBlkPci:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------- observation helpers
    def last_notification(self, queue: int) -> int | None:
        """The value of the last available buffer notification for ``queue`` (2.9)."""
        return self.t.queues[queue].last_notification

    def queue(self, index: int) -> Virtqueue:
        return self.t.queues[index]

    @property
    def status(self) -> int:
        return self.t.status

    @property
    def negotiated_features(self) -> int:
        return self.t.negotiated

    def bar_address(self, bar: int) -> int | None:
        """Where BAR ``bar`` is programmed (None while unassigned)."""
        return self.pci.bar_address(bar)

    def bar_read(self, bar: int, off: int, size: int) -> int:
        """A read at offset ``off`` of BAR ``bar``, whatever its address (no decoding)."""
        if bar == L.VIRTIO_BAR:
            region, roff = divmod(off, L.REGION_SIZE)
            if region == 0:
                if self.cfg.has_defect("serve-before-driver-ok"):
                    for q in self.t.queues:  # the defect: a polling backend, live at enable
                        self._serve(q)
                return self.t.common_read(roff, size)
            if region == 1:
                if roff != 0:
                    return 0
                if self.cfg.has_defect("isr-read-not-clearing"):
                    return self.t.isr
                value = self.t.isr_read()
                if value and self.cfg.has_defect("isr-read-keeps-intx"):
                    self._stuck_intx = not self._msix_on()
                self._update_intx()
                return value
            if region == 2:
                return self._blkcfg_read(roff, size)
            return 0  # notify region and beyond: reads as 0
        if bar == L.MSIX_BAR and self.msix is not None:
            return self.msix.read(off, size)
        return 0

    def bar_write(self, bar: int, off: int, size: int, value: int) -> None:
        """A write at offset ``off`` of BAR ``bar``, whatever its address (no decoding)."""
        if bar == L.VIRTIO_BAR:
            if off >= L.NOTIFY_OFFSET:
                if size != 2 and self.cfg.has_defect("notify-data-16bit-only"):
                    return
                index = self.t.notify_queue(off - self._notify_base, size, value)
                if index is not None:
                    self._notified(self.t.queues[index], value)
                return
            region, roff = divmod(off, L.REGION_SIZE)
            if region == 0:
                self.t.common_write(roff, size, value)
            elif region == 2:
                self._blkcfg_write(roff, size, value)
            return  # ISR is read-only
        if bar == L.MSIX_BAR and self.msix is not None:
            self.msix.write(off, size, value)

    def describe(self) -> dict[str, object]:
        return {
            "device": "reference virtio-blk-pci",
            "features_offered": spec.features_str(self.offered),
            "num_queues": self.cfg.num_queues,
            "queue_size_max": self.cfg.queue_size_max,
            "capacity_sectors": self.capacity,
            "msix_vectors": self.cfg.msix_table_size,
            "defects": list(self.cfg.defects),
            "backing_file": str(self.backing.path),
        }

    # ========================================================== transport hooks
    def on_reset(self) -> None:
        """Device reset (2.4): block state back to defaults; no more interrupts."""
        self.writeback = self.cfg.writeback
        self.engine.set_negotiated(0, self.writeback)
        self._event_idx = False
        self._indirect = False
        self.needs_reset_reasons.clear()
        self._stuck_intx = False
        self._last_notify.clear()
        if self.msix is not None:
            self.msix.clear_pending()
        self._fill_blkcfg()
        self._update_intx()

    def on_features_ok(self, features: int) -> None:
        self._event_idx = bool(features >> spec.VIRTIO_F_EVENT_IDX & 1)
        self._indirect = bool(features >> spec.VIRTIO_F_INDIRECT_DESC & 1)
        wce = features >> spec.VIRTIO_BLK_F_CONFIG_WCE & 1
        if wce and not features >> spec.VIRTIO_BLK_F_FLUSH & 1 and \
                not self.cfg.has_defect("writeback-kept-without-flush"):
            self.writeback = 0  # 5.2.5.2: CONFIG_WCE without FLUSH starts in writethrough
        self.engine.set_negotiated(features, self.writeback)
        self._fill_blkcfg()

    # ================================================================ internals
    def _install_caps(self, nvec: int) -> None:
        cfg = self.cfg
        mult = self._mult
        notify_len = max(cfg.num_queues * mult, 4)
        if cfg.has_defect("notify-length-short"):
            notify_len = max((cfg.num_queues - 1) * mult, 4)  # forgets the last queue's write
        self._notify_base = L.NOTIFY_OFFSET + (2 if cfg.has_defect("notify-cap-misaligned")
                                               else 0)
        notify = virtio_cap(spec.VIRTIO_PCI_CAP_NOTIFY_CFG, L.VIRTIO_BAR, self._notify_base,
                            notify_len, struct.pack("<I", mult))
        if cfg.has_defect("notify-cap-len-16"):
            notify[spec.CAP_LEN] = spec.VIRTIO_PCI_CAP_SIZE  # the multiplier lies outside it
        device_len = 0x3000 if cfg.has_defect("device-cfg-past-bar") else L.REGION_SIZE
        isr_len = 0 if cfg.has_defect("isr-cap-empty") else L.REGION_SIZE
        pba = 0x1000 if cfg.has_defect("msix-pba-outside-bar") else L.MSIX_PBA_OFFSET
        table_size = nvec + 1 if cfg.has_defect("msix-table-size-off-by-one") else nvec
        caps = []
        if nvec:
            caps.append((L.CAP_MSIX, msix_cap(table_size, L.MSIX_BAR, L.MSIX_TABLE_OFFSET, pba)))
        caps += [
            (L.CAP_PCI_CFG, virtio_cap(spec.VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0, bytes(4))),
            (L.CAP_NOTIFY, notify),
            (L.CAP_DEVICE, virtio_cap(spec.VIRTIO_PCI_CAP_DEVICE_CFG, L.VIRTIO_BAR,
                                      L.DEVICE_OFFSET, device_len)),
            (L.CAP_ISR, virtio_cap(spec.VIRTIO_PCI_CAP_ISR_CFG, L.VIRTIO_BAR,
                                   L.ISR_OFFSET, isr_len)),
            (L.CAP_COMMON, virtio_cap(spec.VIRTIO_PCI_CAP_COMMON_CFG, L.VIRTIO_BAR,
                                      L.COMMON_OFFSET, L.REGION_SIZE)),
        ]
        caps = [(off, body) for off, body in caps
                if not (off in _MISSING_CAP_DEFECTS and cfg.has_defect(_MISSING_CAP_DEFECTS[off]))]
        caps += _extra_caps(cfg)
        install_caps(self.pci, caps)
        w = self.pci.wmask
        self._cfgcap_data: int | None = None
        if any(off == L.CAP_PCI_CFG for off, _ in caps):
            # 4.1.4.9: cap.bar, cap.offset, cap.length and pci_cfg_data are read-write
            w[L.CAP_PCI_CFG + spec.CAP_BAR] = 0xFF
            for i in range(4):
                w[L.CAP_PCI_CFG + spec.CAP_OFFSET + i] = 0xFF
                w[L.CAP_PCI_CFG + spec.CAP_LENGTH + i] = 0xFF
                w[L.CAP_PCI_CFG + spec.CAP_PCI_CFG_DATA + i] = 0xFF
            self._cfgcap_data = L.CAP_PCI_CFG + spec.CAP_PCI_CFG_DATA
        if nvec:  # MSI-X Enable and Function Mask (bits 15, 14 of Message Control)
            w[L.CAP_MSIX + spec.MSIX_CTRL + 1] = (spec.MSIX_CTRL_ENABLE
                                                  | spec.MSIX_CTRL_FUNCTION_MASK) >> 8

    def _in_cfg_window(self, off: int, size: int) -> bool:
        """Does a config access touch pci_cfg_data (4.1.4.9)?"""
        return self._cfgcap_data is not None and self._overlaps(off, size, self._cfgcap_data, 4)

    @staticmethod
    def _overlaps(off: int, size: int, start: int, length: int) -> bool:
        return off < start + length and start < off + size

    def _bus_master(self) -> bool:
        return bool(self.pci.command & spec.PCI_COMMAND_MASTER)

    def _command_changed(self, old: int) -> None:
        new = self.pci.command
        if new & spec.PCI_COMMAND_MASTER and not old & spec.PCI_COMMAND_MASTER \
                and self.msix is not None:
            self.msix.bus_master_enabled()
        self._update_intx()

    # --- 4.1.4.9 PCI configuration access capability
    def _pci_cfg_window(self) -> tuple[int, int, int]:
        base = L.CAP_PCI_CFG
        bar = self.pci.data[base + spec.CAP_BAR]
        off, length = struct.unpack_from("<II", self.pci.data, base + spec.CAP_OFFSET)
        return bar, off, length

    def _pci_cfg_window_read(self) -> None:
        if self.cfg.has_defect("pci-cfg-read-stale"):
            return
        bar, off, length = self._pci_cfg_window()
        if length not in (1, 2, 4):
            return
        value = self.bar_read(bar, off, length)
        d = self.pci.data
        d[self._cfgcap_data:self._cfgcap_data + length] = value.to_bytes(length, "little")

    def _pci_cfg_window_write(self) -> None:
        if self.cfg.has_defect("pci-cfg-write-ignored"):
            return
        bar, off, length = self._pci_cfg_window()
        if length not in (1, 2, 4):
            return
        data = self.pci.data[self._cfgcap_data:self._cfgcap_data + length]
        self.bar_write(bar, off, length, int.from_bytes(data, "little"))

    # --- 5.2.4 device configuration layout
    def _fill_blkcfg(self) -> None:
        c = self.cfg
        b = self.blkcfg
        b[:] = bytes(len(b))  # unused0 / unused1 stay 0 (5.2.5.2)
        capacity = self.capacity
        if c.has_defect("capacity-in-blk-size-units"):
            capacity = capacity * spec.SECTOR_SIZE // c.blk_size  # the defect: logical blocks
        struct.pack_into("<QII", b, spec.BLK_CFG_CAPACITY, capacity, c.size_max,
                         c.seg_max)
        struct.pack_into("<HBBI", b, spec.BLK_CFG_GEOMETRY_CYLINDERS, c.cylinders, c.heads,
                         c.sectors, c.blk_size)
        min_io = c.min_io_size
        if c.has_defect("min-io-size-in-bytes"):
            min_io = min_io * c.blk_size & 0xFFFF
        struct.pack_into("<BBHI", b, spec.BLK_CFG_PHYSICAL_BLOCK_EXP, c.physical_block_exp,
                         c.alignment_offset, min_io, c.opt_io_size)
        b[spec.BLK_CFG_WRITEBACK] = self.writeback
        struct.pack_into("<H", b, spec.BLK_CFG_NUM_QUEUES,
                         c.num_queues + c.has_defect("num-queues-overstated"))
        struct.pack_into("<IIIII", b, spec.BLK_CFG_MAX_DISCARD_SECTORS, c.max_discard_sectors,
                         c.max_discard_seg, c.discard_sector_alignment,
                         c.max_write_zeroes_sectors, c.max_write_zeroes_seg)
        b[spec.BLK_CFG_WRITE_ZEROES_MAY_UNMAP] = int(c.write_zeroes_may_unmap)
        struct.pack_into("<III", b, spec.BLK_CFG_MAX_SECURE_ERASE_SECTORS,
                         c.max_secure_erase_sectors, c.max_secure_erase_seg,
                         c.secure_erase_sector_alignment)
        if c.has_defect("config-padding-nonzero"):
            b[spec.BLK_CFG_UNUSED0] = 0xFF  # the defect: padding left uninitialized
            b[spec.BLK_CFG_UNUSED1:spec.BLK_CFG_UNUSED1 + 3] = b"\xff\xff\xff"

    def _blkcfg_read(self, off: int, size: int) -> int:
        """A driver read of the device configuration (5.2.4)."""
        self._cfg_read_since_change = True
        if off >= spec.BLK_CFG_SIZE_MAX and not self.t.status & spec.STATUS_FEATURES_OK and \
                self.cfg.has_defect("config-zero-before-features-ok"):
            return 0  # the defect: only capacity is filled in before negotiation
        return int.from_bytes(self.blkcfg[off:off + size].ljust(size, b"\0"), "little")

    def _config_changed(self) -> None:
        """4.1.4.3.1: a value the driver reads after a change comes with a new generation.

        The generation moves on the first change after a driver read of the device
        configuration only, so any number of changes between two reads (256 of them
        included) cannot bring it back to the value the driver saw.
        """
        if self.cfg.has_defect("config-generation-static"):
            return
        if self._cfg_read_since_change or self.cfg.has_defect("config-generation-wraps"):
            self.t.config_generation = (self.t.config_generation + 1) & 0xFF
            self._cfg_read_since_change = False

    def _blkcfg_write(self, off: int, size: int, value: int) -> None:
        # Only writeback is writable, and only once CONFIG_WCE was negotiated (5.2.5).
        if off == spec.BLK_CFG_WRITEBACK and size == 1 and \
                self.t.has(spec.VIRTIO_BLK_F_CONFIG_WCE) and \
                not self.cfg.has_defect("writeback-read-only"):
            self.writeback = 1 if value else 0
            self.blkcfg[spec.BLK_CFG_WRITEBACK] = self.writeback
            self.engine.set_negotiated(self.t.negotiated, self.writeback)

    # --- queues
    def _serve(self, q: Virtqueue) -> None:
        """Process queue ``q`` after an available buffer notification."""
        # 2.1.2: nothing is consumed before DRIVER_OK; without bus mastering the
        # function cannot reach memory, so the work waits for the next notification.
        # 4.1.4.3: queue_enable 0 keeps the device from executing the queue's requests
        enabled = q.enabled or self.cfg.has_defect("serves-disabled-queue")
        if not q.enabled and q.index in self.t.ghosts:
            q, enabled = self.t.ghosts[q.index], True  # (queue-reset-backend-keeps-ring)
        if not enabled or q.broken or not self._live(q) \
                or not self.pci.command & spec.PCI_COMMAND_MASTER:
            return
        try:
            if q.packed:
                notify, error = packed_ring.process(
                    q, self.mem, self.engine.execute, event_idx=self._event_idx,
                    indirect_ok=self._indirect, defects=self.cfg.defects)
            else:
                notify, error = split_ring.process(
                    q, self.mem, self.engine.execute, event_idx=self._event_idx,
                    indirect_ok=self._indirect, no_wrap_defect=self._no_wrap_defect,
                    defects=self.cfg.defects)
        except Exception:
            self._internal_error(f"serving queue {q.index}")
            notify, error = False, None
            self._needs_reset(q, "internal error in the reference device")
        if notify:
            self._queue_interrupt(q)
        if error is not None:
            self._needs_reset(q, str(error))

    def _notified(self, q: Virtqueue, value: int) -> None:
        """An available buffer notification for ``q`` arrived with ``value`` (2.9)."""
        if self.cfg.has_defect("repeated-notification-wedges") and \
                self.t.has(spec.VIRTIO_F_NOTIFICATION_DATA):
            # 2.9 allows a notification with nothing new (same next_off/next_wrap)
            if self._last_notify.get(q.index) == value:
                self._needs_reset(q, "notification repeats the previous next_off/next_wrap")
                return
            self._last_notify[q.index] = value
        self._serve(q)

    def _live(self, q: Virtqueue) -> bool:
        """2.1.2 / 3.1: queues are served once DRIVER_OK is set, every enabled one."""
        if q.index > 0 and self.cfg.has_defect("only-queue-0-served"):
            return False
        if self.cfg.has_defect("mq-off-no-queues") and not self.t.has(spec.VIRTIO_BLK_F_MQ):
            return False  # the defect: request queues are wired up on the MQ path only
        if self.cfg.has_defect("serve-before-driver-ok") or \
                self.cfg.has_defect("reset-leaves-queues-running"):
            return True  # the defects: whatever is enabled is served, whatever the status
        return bool(self.t.status & spec.STATUS_DRIVER_OK)

    def _needs_reset(self, q: Virtqueue, reason: str) -> None:
        """2.1.2: enter DEVICE_NEEDS_RESET and tell a live driver about it."""
        q.broken = reason
        self.needs_reset_reasons.append(f"queue {q.index}: {reason}")
        if self.t.status & spec.STATUS_DEVICE_NEEDS_RESET or \
                self.cfg.has_defect("needs-reset-not-set"):
            return  # (the defect: the queue just stops, nobody is told)
        self.t.status |= spec.STATUS_DEVICE_NEEDS_RESET
        if not self.cfg.has_defect("needs-reset-no-config-notify"):
            self._config_interrupt()

    # --- interrupts (4.1.5.3 / 4.1.5.4)
    def _msix_on(self) -> bool:
        return self.msix is not None and self.msix.enabled

    def _msix_send(self, vector: int) -> None:
        """4.1.5.3 / 4.1.5.4: the message of ``vector``, unless it is NO_VECTOR."""
        if vector == NO_VECTOR or self.msix is None:
            return
        if self.cfg.has_defect("masked-message-dropped") and self.msix.masked(vector):
            return  # PCI 3.0 6.8.2: should have set the pending bit
        self.msix.notify(vector)

    def _queue_interrupt(self, q: Virtqueue) -> None:
        if self._msix_on():
            vector = q.msix_vector
            if self.cfg.has_defect("queues-share-first-vector"):
                vector = self.t.queues[0].msix_vector
            self._msix_send(vector)
            return
        if not self.cfg.has_defect("isr-queue-bit-missing"):
            self.t.isr |= spec.ISR_QUEUE
        self._update_intx()

    def _config_interrupt(self) -> None:
        if not self.t.status & spec.STATUS_DRIVER_OK:
            return  # no notifications to a driver that is not (yet) live
        msix = self._msix_on()
        if self.cfg.has_defect("config-isr-bit-swapped"):
            self.t.isr |= spec.ISR_QUEUE
        elif not (msix and self.cfg.has_defect("config-isr-bit-msix-off")):
            self.t.isr |= spec.ISR_CONFIG  # 4.1.4.5.1: set before notifying
        if msix and not self.cfg.has_defect("config-change-no-msix"):
            self._msix_send(self.t.config_msix_vector)
        self._update_intx()

    def _intx_pending(self) -> bool:
        return bool(self.t.isr) and not self._msix_on()

    def _update_intx(self) -> None:
        # 4.1.4.5.1: with MSI-X off, PCI Status bit 3 mirrors "ISR status != 0"
        pending = self._intx_pending() and not self.cfg.has_defect("pci-status-int-bit-missing")
        self.pci.set_status_bits(spec.PCI_STATUS_INTERRUPT, pending)

    def _internal_error(self, where: str) -> None:
        self.internal_errors.append(f"{where}: {traceback.format_exc()}")


_IDS = PciIds(
    vendor=spec.PCI_VENDOR_ID_REDHAT_QUMRANET,
    device=spec.PCI_DEVICE_ID_VIRTIO_BLK_MODERN,
    revision=spec.VIRTIO_PCI_MODERN_MIN_REVISION,
    class_code=spec.PCI_CLASS_STORAGE_OTHER << 8,
    subsystem_vendor=spec.PCI_VENDOR_ID_REDHAT_QUMRANET,
    subsystem=L.SUBSYSTEM_ID,
)

# ID defects: field -> value, applied over _IDS (4.1.2 PCI Device Discovery)
_ID_DEFECTS: dict[str, dict[str, int]] = {
    "wrong-vendor-id": {"vendor": 0x1B36},
    "device-id-without-type": {"device": spec.PCI_DEVICE_ID_MODERN_BASE},
    "revision-0": {"revision": 0},
    "subsystem-id-legacy": {"subsystem": spec.VIRTIO_ID_BLOCK},
    "transitional-id-modern-header": {"device": spec.PCI_DEVICE_ID_VIRTIO_BLK_TRANSITIONAL},
}

# capability offset -> the defect that leaves it out
_MISSING_CAP_DEFECTS = {
    L.CAP_COMMON: "missing-common-cap",
    L.CAP_NOTIFY: "missing-notify-cap",
    L.CAP_ISR: "missing-isr-cap",
    L.CAP_DEVICE: "missing-device-cap",
    L.CAP_PCI_CFG: "missing-pci-cfg-cap",
}


def _pci_ids(cfg: DeviceConfig) -> PciIds:
    ids = _IDS
    for name, fields in _ID_DEFECTS.items():
        if cfg.has_defect(name):
            ids = dataclasses.replace(ids, **fields)
    return ids


def _extra_caps(cfg: DeviceConfig) -> list[tuple[int, bytearray]]:
    """Optional capabilities only some defects add (4.1.4.7 shared memory, 4.1.4.8 vendor data)."""
    caps = []
    if cfg.has_defect("vendor-data-virtio-vendor-id"):
        # struct virtio_pci_vndr_data: vndr, next, len, cfg_type, le16 vendor_id, 2 data bytes
        body = bytearray(8)
        body[spec.CAP_VNDR] = spec.PCI_CAP_ID_VNDR
        body[spec.CAP_LEN] = len(body)
        body[spec.CAP_CFG_TYPE] = spec.VIRTIO_PCI_CAP_VENDOR_CFG
        struct.pack_into("<H", body, 4, spec.PCI_VENDOR_ID_REDHAT_QUMRANET)
        caps.append((L.CAP_EXTRA, body))
    if cfg.has_defect("shm-cap-past-bar"):
        # struct virtio_pci_cap64: the region [0x3000, +0x2000) ends past the 16 KiB BAR
        body = virtio_cap(spec.VIRTIO_PCI_CAP_SHARED_MEMORY_CFG, L.VIRTIO_BAR, 0x3000, 0x2000,
                          bytes(8))
        caps.append((L.CAP_EXTRA + 8, body))
    return caps
