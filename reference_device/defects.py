"""Injectable defects: named, documented deviations from VIRTIO 1.2.

A target file turns a defect on with ``defects: [name, ...]``; the device then
checks ``cfg.has_defect(name)`` at the one place the deviation lives.  The
suite's self-validation runs every case against each defect and expects at
least one case to notice.

Adding a defect is three lines: one ``_defect(name, description, *clause_ids)``
call below (the clause IDs come from conformance/clauses.yaml) and one
``if cfg.has_defect("...")`` where the device misbehaves.  The self-validation
(tests/test_cases_can_fail.py) then runs the cases that cite those clauses
against the defective device and requires at least one to fail.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Defect:
    name: str
    description: str
    clauses: tuple[str, ...]  # IDs in conformance/clauses.yaml that the deviation violates
    # DeviceConfig fields the defect needs to show, e.g. (("read_only", True),) for a
    # defect in read-only handling; applied on top of the defaults.
    options: tuple[tuple[str, object], ...] = ()


DEFECTS: dict[str, Defect] = {}


def _defect(name: str, description: str, *clauses: str,
            options: dict[str, object] | None = None) -> None:
    DEFECTS[name] = Defect(name, description, clauses, tuple((options or {}).items()))


_defect(
    "no-version-1",
    "VIRTIO_F_VERSION_1 is not offered",
    "feat.version-1-offered",
)
_defect(
    "accept-unoffered-features",
    "FEATURES_OK sticks even when the driver accepted features that were not offered",
    "feat.features-ok-refusal",
)
_defect(
    "missing-isr-cap",
    "the ISR status capability is left out of the capability list",
    "pci.isr-cap-present",
)
_defect(
    "used-len-includes-header",
    "the used length also counts the 16-byte request header",
    "split.used-len",
)
_defect(
    "in-reads-wrong-sector",
    "VIRTIO_BLK_T_IN reads from sector + 1",
    "blk.in-data",
)
_defect(
    "get-id-not-nul-padded",
    "VIRTIO_BLK_T_GET_ID pads a short serial with spaces instead of NULs",
    "blk.get-id",
)
_defect(
    "flush-unsupported",
    "VIRTIO_BLK_T_FLUSH is answered with VIRTIO_BLK_S_UNSUPP even when negotiated",
    "blk.flush",
)
_defect(
    "used-idx-no-wrap",
    "pending work is avail idx - last seen idx without mod 2^16: the queue stalls at the wrap",
    "split.used-idx-wrap",
)
_defect(
    "status-not-written",
    "the status byte of a VIRTIO_BLK_T_OUT request is left untouched",
    "blk.status-ok",
)

# --- 4.1 Virtio Over PCI Bus: IDs, capabilities, common configuration ---------------
_defect("wrong-vendor-id", "the function presents vendor ID 0x1B36 instead of 0x1AF4",
        "pci.vendor-id")
_defect("device-id-without-type", "the device ID is 0x1040: the virtio device ID (2) was "
        "never added", "pci.device-id")
_defect("revision-0", "a non-transitional function presents revision ID 0", "pci.revision-id")
_defect("subsystem-id-legacy", "a non-transitional function presents subsystem device ID 2, "
        "as a transitional one would", "pci.subsystem-id")
_defect("transitional-id-modern-header", "the function presents the transitional device ID "
        "0x1001 but keeps revision 1 and subsystem device ID 0x1100",
        "pci.transitional-revision-id", "pci.transitional-subsystem-id")
_defect("missing-common-cap", "the common configuration capability is left out",
        "pci.common-cap-present")
_defect("missing-notify-cap", "the notification capability is left out", "pci.notify-cap-present")
_defect("missing-device-cap", "the device configuration capability is left out",
        "pci.device-cap-present")
_defect("missing-pci-cfg-cap", "the PCI configuration access capability is left out",
        "pci.pci-cfg-cap-present")
_defect("notify-cap-misaligned", "the notification structure starts at BAR offset 0x3002 "
        "although VIRTIO_F_NOTIFICATION_DATA is offered", "pci.notify-data-offset-alignment")
_defect("notify-multiplier-odd", "notify_off_multiplier is 3",
        "pci.notify-multiplier", "pci.notify-data-multiplier")
_defect("notify-length-short", "the notification capability's length stops at the last "
        "queue's notify address instead of covering the write there",
        "pci.notify-length-covers-queues", "pci.notify-data-length-covers-queues")
_defect("device-cfg-past-bar", "the device configuration capability's length (0x3000) runs "
        "past the end of its 16 KiB BAR", "pci.cap-bar-bounds")
_defect("notify-cap-len-16", "the notification capability's cap_len is 16: "
        "notify_off_multiplier lies outside it", "pci.cap-len-covers-extra")
_defect("isr-cap-empty", "the ISR capability's length is 0", "pci.isr-length")
_defect("msix-pba-outside-bar", "the MSI-X capability places the PBA at offset 0x1000 of "
        "its 4 KiB BAR", "pci.pci-spec-compliance")
_defect("pci-cfg-read-stale", "a read of pci_cfg_data does not read the BAR: it returns what "
        "the window held before", "pci.pci-cfg-read")
_defect("pci-cfg-write-ignored", "a write of pci_cfg_data is not carried out on the BAR",
        "pci.pci-cfg-write")
_defect("vendor-data-virtio-vendor-id", "an extra vendor data capability carries vendor_id "
        "0x1AF4", "pci.vendor-data-vendor-id")
_defect("shm-cap-past-bar", "an extra shared memory capability describes a region running "
        "past the end of its BAR", "pci.shm-within-bar")
_defect("queue-addr-high-write-clears-low", "writing the high half of queue_desc, "
        "queue_driver or queue_device zeroes the low half", "pci.split-64bit-access")
_defect("queue-size-not-power-of-2", "split queues offer 3/4 of queue_size_max (192 by "
        "default), which is not a power of 2", "pci.queue-size-power-of-2")
_defect("queue-size-reverts-on-enable", "enabling a queue sets its size back to the maximum, "
        "whatever the driver wrote to queue_size", "pci.queue-size-writable")
_defect("missing-queue-has-size", "queue_size shows the maximum size even when queue_select "
        "names a queue the device does not have", "pci.queue-size-unavailable-zero")
_defect("queue-enable-survives-reset", "a device reset leaves queue_enable at 1",
        "pci.queue-enable-zero-on-reset")
_defect("serves-disabled-queue", "a notification is served even for a queue whose queue_enable "
        "is 0", "pci.queue-enable-gate")
_defect("queue-reset-ignored", "writing 1 to queue_reset does nothing: the queue stays "
        "enabled with its old rings", "pci.queue-reset-write", "pci.queue-reset-done")

# --- 4.1.5 notifications, ISR status and MSI-X ------------------------------------
_defect("notify-decode-halved", "the device finds the queue of a notification at offset / 2 "
        "although it presents notify_off_multiplier 4", "notify.pci-queue-index")
_defect("notify-data-16bit-only", "32-bit writes to the notify address are ignored, so "
        "notifications with VIRTIO_F_NOTIFICATION_DATA never arrive",
        "notify.pci-notification-data")
_defect("repeated-notification-wedges", "with VIRTIO_F_NOTIFICATION_DATA, a notification "
        "identical to the previous one is taken for a driver error (DEVICE_NEEDS_RESET)",
        "notify.repeated-data")
_defect("notif-config-data-unknown", "queue_notify_data presents 0x100 + queue index, but "
        "notifications are decoded as plain queue indexes", "notify.notif-config-data",
        options={"notify_off_multiplier": 0,
                 "features": {"VIRTIO_F_NOTIF_CONFIG_DATA": True}})
_defect("msix-table-size-off-by-one", "the MSI-X Table Size field holds N instead of N - 1",
        "msix.table-size-reported")
_defect("msix-single-vector", "the function has a single MSI-X vector", "msix.vector-count")
_defect("queue-vector-0-refused", "queue_msix_vector refuses vector 0 (kept for configuration "
        "changes) and reads NO_VECTOR", "msix.map-any", "msix.no-needless-map-failure")
_defect("no-vector-write-ignored", "writing NO_VECTOR to config_msix_vector or "
        "queue_msix_vector keeps the previous vector", "msix.unmap-any",
        "msix.queue-no-vector-silent", "msix.config-no-vector-silent")
_defect("vector-out-of-range-kept", "a vector beyond the MSI-X table is kept and read back "
        "instead of NO_VECTOR", "msix.map-failure-no-vector")
_defect("vectors-survive-reset", "a device reset leaves config and queue vectors mapped",
        "msix.unmapped-on-reset")
_defect("queues-share-first-vector", "every queue's used buffer notification goes to queue "
        "0's vector", "msix.queue-vector-delivery")
_defect("masked-message-dropped", "a message for a masked MSI-X vector is dropped instead of "
        "setting its pending bit", "pci.pci-spec-compliance")
_defect("config-change-no-msix", "configuration changes set ISR status but send no MSI-X "
        "message", "msix.config-vector-delivery")
_defect("config-isr-bit-msix-off", "with MSI-X enabled, a configuration change leaves the ISR "
        "configuration bit clear", "isr.config-bit")
_defect("config-isr-bit-swapped", "a configuration change sets ISR bit 0 (queue interrupt) "
        "instead of bit 1", "isr.config-bit")
_defect("isr-queue-bit-missing", "with MSI-X disabled, a used buffer notification leaves ISR "
        "status 0 (and so raises no INTx)", "isr.queue-bit")
_defect("isr-read-not-clearing", "reading ISR status leaves it set", "isr.read-clears")
_defect("pci-status-int-bit-missing", "the Interrupt Status bit of the PCI Status register is "
        "never set", "isr.pci-status-bit")
_defect("intx-ignores-disable", "INTx is asserted even with Interrupt Disable set in the PCI "
        "Command register", "isr.intx-masking")
_defect("isr-read-keeps-intx", "reading ISR status clears it but leaves INTx asserted",
        "isr.read-deasserts")


# --- 5.2.6 Device Operation: block requests ----------------------------------------------
_LIFETIME_ON = {"features": {"VIRTIO_BLK_F_LIFETIME": True}}
_defect(
    "out-data-after-first-descriptor",
    "VIRTIO_BLK_T_OUT takes its data from the readable descriptors after the first, as if "
    "the header always had a descriptor of its own",
    "split.framing-independent", "blk.out-data",
)
_defect(
    "out-first-data-descriptor-only",
    "VIRTIO_BLK_T_OUT writes only the first data descriptor and answers OK, as if the data "
    "always came in one descriptor",
    "split.framing-independent", "blk.out-data",
)
_defect(
    "status-at-descriptor-start",
    "the status byte goes to the first byte of the last device-writable descriptor, as if "
    "the status always had a descriptor of its own",
    "blk.status-ok", "split.framing-independent",
)
_defect(
    "capacity-check-start-only",
    "IN/OUT range check looks only at the start sector and uses > for >=: a request that "
    "starts at capacity or runs past it is carried out",
    "blk.out-of-range-ioerr",
)
_defect(
    "byte-offset-wraps",
    "the sector is turned into a 64-bit byte offset before the capacity check, so sectors "
    "from 2^55 on wrap around to the start of the disk",
    "blk.out-of-range-ioerr",
)
_defect(
    "partial-sector-io-accepted",
    "IN and OUT requests whose data is not a multiple of 512 bytes are carried out and "
    "answered VIRTIO_BLK_S_OK",
    "blk.status-ioerr",
)
_defect(
    "unknown-type-ioerr",
    "requests of an unknown type are answered VIRTIO_BLK_S_IOERR instead of "
    "VIRTIO_BLK_S_UNSUPP",
    "blk.unsupp-type", "blk.zone-types-unsupp",
)
_defect(
    "type-low-bit-as-direction",
    "the low bit of an unknown request type is taken as a direction flag and dropped, so "
    "type 9 runs as GET_ID and type 15 as SECURE_ERASE",
    "blk.unsupp-type", "blk.zone-types-unsupp",
)
_defect(
    "get-id-truncates-full-serial",
    "a 20-byte serial loses its last character to a NUL terminator",
    "blk.get-id",
    options={"serial": "REFDEV-SERIAL-20CHAR"},
)
_defect(
    "status-into-readable-tail",
    "a request without any device-writable byte gets its status written into the last "
    "byte of its device-readable part",
    "split.no-write-readable",
)
_defect(
    "header-from-writable",
    "descriptor direction is ignored when a request has no readable part: its writable "
    "descriptors are parsed as header, data and status and the request is carried out",
    "split.no-read-writable",
)
_defect(
    "flush-leaves-cache",
    "writes in writeback mode wait in a volatile cache that VIRTIO_BLK_T_FLUSH does not "
    "write back (the flush still answers OK)",
    "blk.flush",
)
_defect(
    "write-cache-ignores-mode",
    "completed writes wait in a volatile cache until a flush also in writethrough mode and "
    "when FLUSH was offered but not negotiated",
    "blk.writethrough-stable", "blk.flush-not-negotiated-stable",
)
_defect(
    "ro-out-unsupp",
    "a write to a read-only device is answered VIRTIO_BLK_S_UNSUPP instead of "
    "VIRTIO_BLK_S_IOERR",
    "blk.ro-ioerr",
    options={"read_only": True},
)
_defect(
    "ro-check-out-only",
    "a read-only device opens its image read-write and refuses only VIRTIO_BLK_T_OUT: "
    "write zeroes, discard and secure erase still change the disk",
    "blk.ro-no-write",
    options={"read_only": True},
)
_defect(
    "discard-unmap-accepted",
    "a discard segment with the unmap flag set is carried out and answered OK",
    "blk.discard-unmap-unsupp",
)
_defect(
    "segment-reserved-flags-ignored",
    "reserved flag bits of discard, write zeroes and secure erase segments are ignored",
    "blk.discard-unknown-flags", "blk.write-zeroes-unknown-flags",
    "blk.secure-erase-unknown-flags",
)
_defect(
    "segment-limits-exclusive",
    "max_*_seg and max_*_sectors are treated as exclusive limits: a request with exactly "
    "that many segments, or a segment of exactly that many sectors, is refused",
    "blk.discard-command", "blk.write-zeroes-command", "blk.secure-erase-command",
    options={"max_discard_sectors": 64, "max_write_zeroes_sectors": 64,
             "max_secure_erase_sectors": 64},
)
_defect(
    "discard-rounds-to-alignment",
    "a discard is widened to whole discard_sector_alignment blocks, zeroing sectors next to "
    "the range",
    "blk.discard-command",
    options={"discard_sector_alignment": 8},
)
_defect(
    "write-zeroes-unmap-noop",
    "a write zeroes segment with unmap set is treated as a hint to do nothing: the old data "
    "stays readable",
    "blk.write-zeroes-reads-zero",
)
_defect(
    "write-zeroes-first-segment-only",
    "only the first segment of a multi-segment write zeroes request is zeroed",
    "blk.write-zeroes-reads-zero",
)
_defect(
    "lifetime-big-endian",
    "GET_LIFETIME writes its three 16-bit fields big-endian",
    "blk.lifetime-data",
    options=_LIFETIME_ON,
)
_defect(
    "lifetime-estimate-unclamped",
    "wear estimates are derived without a cap: an exceeded lifetime reads 12 (reserved) "
    "instead of 11",
    "blk.lifetime-no-reserved",
    options={**_LIFETIME_ON, "lifetime_typ_b": 11},
)
_defect(
    "lifetime-on-plain-file",
    "VIRTIO_BLK_F_LIFETIME is offered although the disk is a plain file without lifetime "
    "metrics",
    "blk.lifetime-not-offered",
)
_defect(
    "lifetime-metrics-not-offered",
    "VIRTIO_BLK_F_LIFETIME is not offered although the device models storage with lifetime "
    "metrics",
    "blk.lifetime-offered",
    options=_LIFETIME_ON,
)
_defect(
    "seg-max-counts-header-status",
    "seg_max is checked against every descriptor of a request, header and status included, "
    "so a request with seg_max data segments is refused",
    "blk.size-seg-max",
)
_defect(
    "size-max-exclusive",
    "a data segment of exactly size_max bytes is refused",
    "blk.size-seg-max",
)
_defect(
    "min-io-size-in-bytes",
    "topology min_io_size is reported in bytes instead of logical blocks",
    "blk.topology-consistent",
)


# --- 2.1 / 3.1 device status, 2.2 / 6 feature bits, 2.4 reset, 2.5 configuration -----
_defect("status-nonzero-at-power-on", "device_status reads ACKNOWLEDGE before the driver wrote "
        "it (state left over from before power-on)", "status.starts-zero")
_defect("driver-ok-drops-acknowledge", "writing DRIVER_OK clears ACKNOWLEDGE in device_status",
        "init.status-bits-retained")
_defect("driver-ok-drops-features-ok", "writing DRIVER_OK clears FEATURES_OK in device_status",
        "init.features-ok-readback")
_defect("serve-before-driver-ok", "a polling backend: every enabled queue is served on each "
        "notification and common configuration read, DRIVER_OK or not",
        "status.no-use-before-driver-ok", "status.no-notify-before-driver-ok")
_defect("needs-reset-not-set", "after a driver error the queue silently stops; "
        "DEVICE_NEEDS_RESET is never set", "status.needs-reset-set")
_defect("needs-reset-no-config-notify", "DEVICE_NEEDS_RESET is set without a configuration "
        "change notification", "status.needs-reset-config-notify")
_defect("only-queue-0-served", "notifications for queues other than 0 are ignored",
        "init.live-after-driver-ok", "blk.mq-queues")
_defect("features-ok-needs-indirect", "FEATURES_OK is refused for any subset without "
        "VIRTIO_F_INDIRECT_DESC", "feat.subset-accepted",
        options={"read_only": True, "features": {"VIRTIO_BLK_F_LIFETIME": True}})
_defect("features-ok-only-once", "FEATURES_OK is refused after a reset once a feature set was "
        "accepted", "feat.renegotiate-same-set")
_defect("features-not-fixed", "driver_feature writes after FEATURES_OK renegotiate",
        "feat.fixed-until-reset")
_defect("feature-window-ignores-high-select", "device_feature decodes only the lowest bit of "
        "device_feature_select (select 2 shows bits 0..31 again)", "pci.device-feature-window")
_defect("driver-feature-reads-word-0", "driver_feature reads back word 0 whatever "
        "driver_feature_select holds", "pci.driver-feature-readback")
_defect("offers-reserved-bit", "feature bit 41, reserved for future extensions, is offered",
        "feat.reserved-bits-not-offered")
_defect("offers-sr-iov", "VIRTIO_F_SR_IOV is offered by a function without an SR-IOV "
        "capability", "feat.sr-iov-not-offered")
_defect("config-wce-without-flush", "VIRTIO_BLK_F_CONFIG_WCE is offered without "
        "VIRTIO_BLK_F_FLUSH", "feat.dependencies-offered", "blk.flush-with-config-wce",
        "blk.flush-offered")
_defect("failed-wedges-device", "once the driver sets FAILED, FEATURES_OK is refused for good, "
        "resets included", "reset.status-write-resets")
_defect("reset-keeps-features", "features negotiated before a reset stay in force after it "
        "(merged into the next negotiation)", "reset.status-write-resets")
_defect("status-write-ors", "device_status keeps every bit ever written: writing 0 neither "
        "resets the device nor clears the register", "reset.status-zero")
_defect("reset-keeps-needs-reset", "a reset leaves DEVICE_NEEDS_RESET set in device_status",
        "reset.status-reads-zero")
_defect("reset-leaves-queues-running", "a reset clears device_status but leaves the queues "
        "configured and served", "reset.no-queue-access", "reset.no-notifications")
_defect("config-zero-before-features-ok", "the device configuration reads 0 beyond capacity "
        "until FEATURES_OK", "config.read-before-features-ok")
_defect("config-generation-static", "config_generation never changes",
        "config.generation-change")
_defect("config-generation-wraps", "config_generation is an 8-bit counter bumped on every "
        "change, so 256 changes between two reads bring it back", "config.generation-change")
_defect("resize-not-notified", "a capacity change sends no configuration change notification",
        "config.change-notification")
_defect("capacity-in-blk-size-units", "capacity counts blk_size blocks instead of 512-byte "
        "sectors", "blk.capacity", options={"blk_size": 4096})
_defect("config-padding-nonzero", "unused0 and unused1 of the block configuration read 0xff",
        "blk.config-padding-zero")
_defect("writeback-read-only", "driver writes to writeback are ignored",
        "blk.writeback-toggle")
_defect("writeback-kept-without-flush", "with CONFIG_WCE negotiated without FLUSH, writeback "
        "keeps its configured value (1)", "blk.writeback-zero-without-flush")

# --- 2.6 - 2.8 virtqueues: split and packed rings, indirect tables, event suppression ---
_IN_ORDER_ON = {"features": {"VIRTIO_F_IN_ORDER": True}}
_defect("header-needs-own-descriptor", "a first readable descriptor shorter than the 16-byte "
        "request header is taken for a driver error", "split.framing-independent")
_defect("chain-truncated-at-16", "the split chain walker keeps at most 16 descriptors and "
        "silently drops the rest of a longer chain", "split.framing-independent")
_defect("used-id-is-ring-slot", "the used element names the available ring slot instead of "
        "the head index stored there", "split.used-id")
_defect("readable-header-scribbled", "after a request the device writes its header back with "
        "the sector field zeroed", "split.no-write-readable", "packed.no-write-readable")
_defect("desc-len-overwritten", "the used length is also written into the len field of the "
        "chain's head descriptor", "split.no-write-desc-table")
_defect("in-order-reversed", "the buffers of each notification are used last first, even "
        "with VIRTIO_F_IN_ORDER negotiated", "feat.in-order-use", options=_IN_ORDER_ON)
_defect("indirect-table-truncated", "at most 32 entries of an indirect table are followed",
        "split.indirect-table", "packed.indirect-table")
_defect("indirect-entry-0-skipped", "an indirect table is walked from its second entry",
        "split.indirect-table", "packed.indirect-table")
_defect("indirect-write-flag-honoured", "an INDIRECT descriptor with VIRTQ_DESC_F_WRITE set is "
        "taken for a driver error", "split.indirect-ignore-write-flag",
        "packed.indirect-ignore-write-flag")
_defect("indirect-chain-tail-rejected", "only a chain's head may be INDIRECT: an indirect "
        "descriptor after direct ones is taken for a plain readable buffer",
        "split.indirect-after-chain")
_defect("packed-indirect-id-from-table", "a packed indirect list reports the buffer ID of the "
        "table's last entry instead of the ring descriptor's", "packed.indirect-ignore-flags")
_defect("used-event-without-event-idx", "used_event holds notifications back even without "
        "VIRTIO_F_EVENT_IDX", "split.used-event-ignored")
_defect("notify-every-other-batch", "without VIRTIO_F_EVENT_IDX the device notifies only when "
        "used idx is even (interrupt moderation)", "split.flags-zero-notify")
_defect("no-interrupt-flag-ignored", "VIRTQ_AVAIL_F_NO_INTERRUPT is ignored",
        "split.no-interrupt-flag")
_defect("event-idx-honours-no-interrupt", "with VIRTIO_F_EVENT_IDX, VIRTQ_AVAIL_F_NO_INTERRUPT "
        "still suppresses notifications", "split.event-idx-ignore-flags")
_defect("used-event-off-by-one", "with VIRTIO_F_EVENT_IDX the device notifies when used idx "
        "reaches used_event, one entry early", "split.event-idx-notify")
_defect("used-event-last-entry-only", "with VIRTIO_F_EVENT_IDX only the last used entry of a "
        "batch is compared with used_event", "split.event-idx-notify")
_defect("event-idx-always-notify", "with VIRTIO_F_EVENT_IDX the device notifies after every "
        "batch, whatever used_event says", "split.event-idx-suppress")
_defect("used-flags-no-notify-with-event-idx", "with VIRTIO_F_EVENT_IDX the device still sets "
        "VIRTQ_USED_F_NO_NOTIFY in the used ring flags", "split.event-idx-used-flags-zero")
_defect("used-flags-busy-bit", "without VIRTIO_F_EVENT_IDX the device leaves bit 15 of the "
        "used ring flags set", "split.used-flags-values")
_defect("avail-event-off-by-one", "avail_event names the avail index one past the next one "
        "the device wants to hear about", "split.avail-event-may")
_defect("spurious-notify-needs-reset", "a notification that finds no new buffer is taken for a "
        "driver error (DEVICE_NEEDS_RESET)", "split.spurious-notify")
_defect("packed-wrap-counter-stuck", "the device's used wrap counter never flips",
        "packed.wrap-counter", "packed.used-flags")
_defect("packed-id-from-first-descriptor", "a packed list reports the buffer ID of its first "
        "descriptor, not its last", "packed.used-id")
_defect("packed-write-flag-only-with-data", "VIRTQ_DESC_F_WRITE is set in a used descriptor "
        "only when more than the status byte was written", "packed.used-write-flag")
_defect("packed-write-flag-never", "used descriptors never carry VIRTQ_DESC_F_WRITE, whatever "
        "was written (QEMU 7.2's virtqueue_packed_fill_desc)", "packed.used-write-flag")
_defect("packed-len-not-written", "a used descriptor keeps the length the driver wrote in the "
        "list's first descriptor", "packed.used-len")
_defect("packed-no-skip", "after a list of n descriptors the next used descriptor goes to the "
        "next slot instead of n slots on", "packed.chain-single-used")
_defect("packed-avail-bit-only", "a packed descriptor counts as available when its AVAIL flag "
        "matches the wrap counter, whatever USED says", "packed.avail-flag-required")
_defect("packed-used-bit-only", "a packed descriptor counts as available when its USED flag "
        "differs from the wrap counter, whatever AVAIL says", "packed.avail-flag-required")
_defect("packed-scan-ahead", "when the next slot is not available the device looks further on "
        "and takes the first available list it finds", "packed.process-in-ring-order")
_defect("packed-rewrite-previous-used", "writing a used descriptor also rewrites the length of "
        "the previous one", "packed.no-change-after-used")
_defect("packed-chain-reversed", "the data descriptors between a list's header and status are "
        "used in reverse order", "packed.chain-order")
_defect("packed-event-flags-swapped", "RING_EVENT_FLAGS_ENABLE and RING_EVENT_FLAGS_DISABLE are "
        "mixed up", "packed.event-enable-notify", "packed.event-disable")
_defect("packed-event-desc-off-by-one", "RING_EVENT_FLAGS_DESC fires for the slot before the "
        "one off_wrap names", "packed.event-desc-notify")

# --- 2.6.1 virtqueue reset, 5.2.2 request queues --------------------------------------
_defect("queue-reset-backend-keeps-ring", "a queue reset clears the registers but the backend "
        "keeps serving the old rings (and notifying on the old vector)", "vq.reset-no-execute",
        "vq.reset-no-notify")
_defect("queue-reset-keeps-position", "a queue reset leaves the ring positions (last avail, "
        "used idx, wrap counters) where they were", "vq.reset-state")
_defect("queue-reset-keeps-size", "after a queue reset the device re-enables the queue with "
        "the size it had before", "vq.reenable-new-config")
_defect("queue-reset-resets-all", "writing queue_reset resets every queue, not the selected "
        "one", "pci.queue-reset-write")
_defect("num-queues-overstated", "num_queues is one more than the request queues the device "
        "has", "blk.mq-queues")
_defect("mq-off-no-queues", "without VIRTIO_BLK_F_MQ negotiated no request queue is served",
        "blk.mq-queues")

_defect("segment-sector-limit-ignored", "max_*_sectors is advertised but not enforced: a "
        "segment of any length inside the disk is carried out",
        "blk.discard-command", "blk.write-zeroes-command", "blk.secure-erase-command",
        options={"max_discard_sectors": 64, "max_write_zeroes_sectors": 64,
                 "max_secure_erase_sectors": 64})
_defect("cleared-status-wedges", "a driver that clears a status bit without a reset stops "
        "the backend for good: FEATURES_OK is refused from then on, resets included",
        "reset.status-write-resets")


def defect_names() -> list[str]:
    return sorted(DEFECTS)
