"""Sizes written the way QEMU users write them: 512, 16M, 1G."""

from __future__ import annotations

from conformance.targets.base import TargetConfigError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: object, where: str) -> int:
    """Bytes from an int or a string like ``16M``; one-line error naming ``where``."""
    if isinstance(value, bool):
        raise TargetConfigError(f"{where}: expected a size like 16M, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise TargetConfigError(f"{where}: expected a positive size, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1:] if text[-1:] in _UNITS and text[-1:] else ""
        number = text[:-1] if unit else text
        if number.isdigit() and int(number) > 0:
            return int(number) * _UNITS[unit]
    raise TargetConfigError(f"{where}: expected a size like 16M, got {value!r}")
