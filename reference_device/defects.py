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


def defect_names() -> list[str]:
    return sorted(DEFECTS)
