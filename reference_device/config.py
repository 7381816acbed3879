"""DeviceConfig: what the reference device looks like, validated from YAML.

``DeviceConfig.from_mapping(mapping, where)`` checks every key and value and
raises :class:`ConfigError` with a one-line message naming ``where``, the key
and the problem, so a bad target file never ends in a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from conformance import spec

from .defects import DEFECTS


class ConfigError(ValueError):
    """A device configuration value is unknown, of the wrong type or out of range."""


# Features the model implements and offers by default (5.2.3 Feature bits, 6 Reserved
# Feature Bits).  VIRTIO_BLK_F_RO is offered only for ``read_only: true``.  The disk is a
# plain file, which has no lifetime metrics, so 5.2.6.2 forbids VIRTIO_BLK_F_LIFETIME by
# default; switching it on models storage that has them (pre_eol_info, lifetime_typ_*).
DEFAULT_FEATURES: tuple[int, ...] = (
    spec.VIRTIO_F_VERSION_1,
    spec.VIRTIO_F_INDIRECT_DESC,
    spec.VIRTIO_F_EVENT_IDX,
    spec.VIRTIO_F_RING_PACKED,
    spec.VIRTIO_F_RING_RESET,
    spec.VIRTIO_F_NOTIFICATION_DATA,
    spec.VIRTIO_BLK_F_SIZE_MAX,
    spec.VIRTIO_BLK_F_SEG_MAX,
    spec.VIRTIO_BLK_F_GEOMETRY,
    spec.VIRTIO_BLK_F_BLK_SIZE,
    spec.VIRTIO_BLK_F_FLUSH,
    spec.VIRTIO_BLK_F_TOPOLOGY,
    spec.VIRTIO_BLK_F_CONFIG_WCE,
    spec.VIRTIO_BLK_F_MQ,
    spec.VIRTIO_BLK_F_DISCARD,
    spec.VIRTIO_BLK_F_WRITE_ZEROES,
    spec.VIRTIO_BLK_F_SECURE_ERASE,
)

# Features that may be switched on although they are off by default.  IN_ORDER is
# honoured trivially (every buffer is used in the order it was made available);
# NOTIF_CONFIG_DATA only needs queue_notify_data, which always holds the queue index.
OPTIONAL_FEATURES: tuple[int, ...] = (
    spec.VIRTIO_BLK_F_RO,
    spec.VIRTIO_BLK_F_LIFETIME,
    spec.VIRTIO_F_IN_ORDER,
    spec.VIRTIO_F_NOTIF_CONFIG_DATA,
)
IMPLEMENTED_FEATURES = frozenset(DEFAULT_FEATURES + OPTIONAL_FEATURES)

MSIX_TABLE_MAX = 128  # the table must fit below the PBA at 0x800 in BAR 1
NOTIFY_REGION_SIZE = 0x1000  # BAR 4 0x3000..0x3FFF


@dataclass(frozen=True)
class DeviceConfig:
    """Shape and contents of one reference virtio-blk-pci function."""

    # canonical feature name -> offer it?  (left out of the hash: a dict is not hashable)
    features: Mapping[str, bool] = field(default_factory=dict, hash=False)
    read_only: bool = False
    num_queues: int = 4
    queue_size_max: int = 256
    capacity_sectors: int = 32768
    backing_file: str | None = None
    serial: str = "REFDEV0001"
    blk_size: int = 512
    size_max: int = 65536
    seg_max: int = 126
    cylinders: int = 32
    heads: int = 16
    sectors: int = 63
    physical_block_exp: int = 0
    alignment_offset: int = 0
    min_io_size: int = 1
    opt_io_size: int = 128
    writeback: int = 1
    max_discard_sectors: int = 65536
    max_discard_seg: int = 4
    discard_sector_alignment: int = 1
    max_write_zeroes_sectors: int = 65536
    max_write_zeroes_seg: int = 4
    write_zeroes_may_unmap: bool = True
    max_secure_erase_sectors: int = 65536
    max_secure_erase_seg: int = 4
    secure_erase_sector_alignment: int = 1
    pre_eol_info: int = spec.VIRTIO_BLK_PRE_EOL_INFO_NORMAL
    lifetime_typ_a: int = 3
    lifetime_typ_b: int = 5
    msix_vectors: int | None = None  # None: num_queues + 1 (capped at 128); 0: no MSI-X
    notify_off_multiplier: int = 4
    defects: tuple[str, ...] = ()
    where: str = field(default="device config", compare=False)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, where: str = "device config"
                     ) -> DeviceConfig:
        """Build and validate a config from a YAML-style mapping."""
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(mapping).__name__}")
        known = {f.name for f in fields(cls) if f.name != "where"}
        kwargs: dict[str, Any] = {}
        for key, value in mapping.items():
            if not isinstance(key, str) or key not in known:
                raise ConfigError(
                    f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
            kwargs[key] = value
        return cls(**kwargs, where=where)

    def __post_init__(self) -> None:
        # Normalise feature names and the defect list, then check everything, so a
        # directly constructed config is held to the same rules as one from YAML.
        object.__setattr__(self, "features", _parse_features(self.features, self.where))
        object.__setattr__(self, "defects", _parse_defects(self.defects, self.where))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        w = self.where
        for name, lo, hi in _INT_RANGES:
            _check_int(w, name, getattr(self, name), lo, hi)
        for name in ("read_only", "write_zeroes_may_unmap"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{w}: {name}: expected true or false, "
                                  f"got {getattr(self, name)!r}")
        if self.writeback not in (0, 1):
            raise ConfigError(f"{w}: writeback: must be 0 or 1, got {self.writeback!r}")
        if not _is_pow2(self.queue_size_max):
            raise ConfigError(f"{w}: queue_size_max: must be a power of 2 (4.1.4.3.1: a split "
                              f"queue size is 0 or a power of 2), got {self.queue_size_max}")
        if not _is_pow2(self.blk_size) or self.blk_size < spec.SECTOR_SIZE:
            raise ConfigError(f"{w}: blk_size: must be a power of 2 >= 512, got {self.blk_size}")
        if self.msix_vectors is not None:
            _check_int(w, "msix_vectors", self.msix_vectors, 0, MSIX_TABLE_MAX)
        mult = self.notify_off_multiplier
        _check_int(w, "notify_off_multiplier", mult, 0, NOTIFY_REGION_SIZE)
        offered = self.offered_features()
        min_mult = 4 if offered >> spec.VIRTIO_F_NOTIFICATION_DATA & 1 else 2
        if mult != 0 and (not _is_pow2(mult) or mult < min_mult):
            raise ConfigError(
                f"{w}: notify_off_multiplier: must be 0 or a power of 2 >= {min_mult} "
                f"(4.1.4.4.1), got {mult}")
        if self.num_queues * mult > NOTIFY_REGION_SIZE:
            raise ConfigError(f"{w}: num_queues * notify_off_multiplier must fit the "
                              f"{NOTIFY_REGION_SIZE:#x}-byte notify region, got "
                              f"{self.num_queues} * {mult}")
        if not isinstance(self.serial, str):
            raise ConfigError(f"{w}: serial: expected a string, got {self.serial!r}")
        try:
            raw = self.serial.encode("ascii")
        except UnicodeEncodeError:
            raise ConfigError(f"{w}: serial: must be ASCII, got {self.serial!r}") from None
        if len(raw) > spec.VIRTIO_BLK_ID_BYTES:
            raise ConfigError(f"{w}: serial: at most {spec.VIRTIO_BLK_ID_BYTES} bytes, "
                              f"got {len(raw)}")
        if self.backing_file is not None and not isinstance(self.backing_file, str):
            raise ConfigError(f"{w}: backing_file: expected a path string or null, "
                              f"got {self.backing_file!r}")
        if self.lifetime_typ_a > spec.VIRTIO_BLK_LIFETIME_EST_MAX or \
                self.lifetime_typ_b > spec.VIRTIO_BLK_LIFETIME_EST_MAX:
            raise ConfigError(f"{w}: lifetime_typ_a/lifetime_typ_b: at most "
                              f"{spec.VIRTIO_BLK_LIFETIME_EST_MAX} (5.2.6: larger values are "
                              f"reserved)")
        # 5.2.5.2: a device MUST offer FLUSH if it offers CONFIG_WCE.
        if offered >> spec.VIRTIO_BLK_F_CONFIG_WCE & 1 and \
                not offered >> spec.VIRTIO_BLK_F_FLUSH & 1:
            raise ConfigError(f"{w}: features: VIRTIO_BLK_F_CONFIG_WCE needs "
                              f"VIRTIO_BLK_F_FLUSH (5.2.5.2); turn both off")

    # ---------------------------------------------------------------- queries
    def offered_features(self) -> int:
        """The device_feature bitmask this configuration offers."""
        bits = set(DEFAULT_FEATURES)
        if self.read_only:
            bits.add(spec.VIRTIO_BLK_F_RO)
        for name, on in self.features.items():
            bit = spec.feature_bit(name)
            if on:
                bits.add(bit)
            else:
                bits.discard(bit)
        if self.has_defect("no-version-1"):
            bits.discard(spec.VIRTIO_F_VERSION_1)
        if self.has_defect("lifetime-on-plain-file"):
            bits.add(spec.VIRTIO_BLK_F_LIFETIME)
        if self.has_defect("lifetime-metrics-not-offered"):
            bits.discard(spec.VIRTIO_BLK_F_LIFETIME)
        mask = 0
        for bit in bits:
            mask |= 1 << bit
        return mask

    def has_defect(self, name: str) -> bool:
        if name not in DEFECTS:  # a typo in the device code must not pass silently
            raise KeyError(f"unknown defect {name!r}")
        return name in self.defects

    @property
    def lifetime_metrics(self) -> bool:
        """Whether the modelled storage has lifetime metrics (LIFETIME switched on)."""
        return bool(self.features.get(spec.feature_name(spec.VIRTIO_BLK_F_LIFETIME)))

    @property
    def msix_table_size(self) -> int:
        """Number of MSI-X vectors (0: the function has no MSI-X capability)."""
        if self.msix_vectors is None:
            return min(self.num_queues + 1, MSIX_TABLE_MAX)
        return self.msix_vectors

    @property
    def capacity_bytes(self) -> int:
        return self.capacity_sectors * spec.SECTOR_SIZE


# (field, min, max) for the plain integer fields
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_INT_RANGES: tuple[tuple[str, int, int], ...] = (
    ("num_queues", 1, 1024),
    ("queue_size_max", 1, spec.MAX_QUEUE_SIZE),
    ("capacity_sectors", 0, (1 << 63) // spec.SECTOR_SIZE),
    ("blk_size", 1, _U32),
    ("size_max", 1, _U32),
    ("seg_max", 1, _U32),
    ("cylinders", 0, _U16),
    ("heads", 0, 0xFF),
    ("sectors", 0, 0xFF),
    ("physical_block_exp", 0, 0xFF),
    ("alignment_offset", 0, 0xFF),
    ("min_io_size", 0, _U16),
    ("opt_io_size", 0, _U32),
    ("writeback", 0, 1),
    ("max_discard_sectors", 0, _U32),
    ("max_discard_seg", 0, _U32),
    ("discard_sector_alignment", 0, _U32),
    ("max_write_zeroes_sectors", 0, _U32),
    ("max_write_zeroes_seg", 0, _U32),
    ("max_secure_erase_sectors", 0, _U32),
    ("max_secure_erase_seg", 0, _U32),
    ("secure_erase_sector_alignment", 0, _U32),
    ("pre_eol_info", 0, spec.VIRTIO_BLK_PRE_EOL_INFO_URGENT),
    ("lifetime_typ_a", 0, _U16),
    ("lifetime_typ_b", 0, _U16),
)


def _check_int(where: str, name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {name}: expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {name}: must be in {lo}..{hi}, got {value}")


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _parse_features(value: Any, where: str) -> dict[str, bool]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: features: expected a mapping of feature name to "
                          f"true/false, got {value!r}")
    out: dict[str, bool] = {}
    for name, on in value.items():
        if not isinstance(name, str):
            raise ConfigError(f"{where}: features: feature names are strings, got {name!r}")
        try:
            bit = spec.feature_bit(name)
        except KeyError:
            raise ConfigError(f"{where}: features: unknown feature {name!r}") from None
        if not isinstance(on, bool):
            raise ConfigError(f"{where}: features: {name}: expected true or false, got {on!r}")
        if on and bit not in IMPLEMENTED_FEATURES:
            raise ConfigError(f"{where}: features: {spec.feature_name(bit)} is not implemented "
                              f"by the reference device and cannot be offered")
        out[spec.feature_name(bit)] = on
    return out


def _parse_defects(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: defects: expected a list of defect names, got {value!r}")
    for name in value:
        if not isinstance(name, str) or name not in DEFECTS:
            raise ConfigError(f"{where}: defects: unknown defect {name!r} "
                              f"(known: {', '.join(sorted(DEFECTS))})")
    return tuple(value)
