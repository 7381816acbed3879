"""The qtest target: a real QEMU virtio-blk-pci driven over QEMU's qtest protocol."""

from .backing import sector_pattern
from .config import QtestSpec, qtest_spec_from_mapping
from .errors import TargetConfigError, TargetStartError
from .platform import QtestPlatform

__all__ = [
    "QtestPlatform",
    "QtestSpec",
    "TargetConfigError",
    "TargetStartError",
    "qtest_spec_from_mapping",
    "sector_pattern",
]
