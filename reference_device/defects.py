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
        "init.live-after-driver-ok")
_defect("features-ok-needs-indirect", "FEATURES_OK is refused for any subset without "
        "VIRTIO_F_INDIRECT_DESC", "feat.subset-accepted")
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


def defect_names() -> list[str]:
    return sorted(DEFECTS)
