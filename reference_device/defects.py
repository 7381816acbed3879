"""Injectable defects: named, documented deviations from VIRTIO 1.2.

A target file turns a defect on with ``defects: [name, ...]``; the device then
checks ``cfg.has_defect(name)`` at the one place the deviation lives.  The
suite's self-validation runs every case against each defect and expects at
least one case to notice.

Adding a defect is three lines: one ``_defect(...)`` call below and one
``if cfg.has_defect("...")`` where the device misbehaves (plus a test).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Defect:
    name: str
    description: str
    sections: tuple[str, ...]  # the spec sections the deviation violates


DEFECTS: dict[str, Defect] = {}


def _defect(name: str, description: str, *sections: str) -> None:
    DEFECTS[name] = Defect(name, description, sections)


_defect(
    "no-version-1",
    "VIRTIO_F_VERSION_1 is not offered",
    "6.2 Device Requirements: Reserved Feature Bits",
)
_defect(
    "accept-unoffered-features",
    "FEATURES_OK sticks even when the driver accepted features that were not offered",
    "2.2.2 Device Requirements: Feature Bits",
)
_defect(
    "missing-isr-cap",
    "the ISR status capability is left out of the capability list",
    "4.1.4.5.1 Device Requirements: ISR status capability",
)
_defect(
    "used-len-includes-header",
    "the used length also counts the 16-byte request header",
    "2.7.8.2 Device Requirements: The Virtqueue Used Ring",
)
_defect(
    "in-reads-wrong-sector",
    "VIRTIO_BLK_T_IN reads from sector + 1",
    "5.2.6 Device Operation",
)
_defect(
    "get-id-not-nul-padded",
    "VIRTIO_BLK_T_GET_ID pads a short serial with spaces instead of NULs",
    "5.2.6 Device Operation",
)
_defect(
    "flush-unsupported",
    "VIRTIO_BLK_T_FLUSH is answered with VIRTIO_BLK_S_UNSUPP even when negotiated",
    "5.2.6.2 Device Requirements: Device Operation",
)
_defect(
    "used-idx-no-wrap",
    "pending work is avail idx - last seen idx without mod 2^16: the queue stalls at the wrap",
    "2.7.6 The Virtqueue Available Ring",
)
_defect(
    "status-not-written",
    "the status byte of a VIRTIO_BLK_T_OUT request is left untouched",
    "5.2.6 Device Operation",
)


def defect_names() -> list[str]:
    return sorted(DEFECTS)
