"""Typed reads of a target file's keys, each failure one line naming file and key.

The ssh and qemu-vm kinds read their mappings through this; every message has
the shape ``<file>: <target>: <key>: <problem>`` and, where it helps, says what
the key is for (from the kind's table of known keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.targets.base import TargetConfigError


@dataclass(frozen=True)
class Keys:
    mapping: Mapping[str, Any]
    where: str  # "file: target", the front of every message
    known: Mapping[str, str]  # key -> what it is for

    def fail(self, key: str, problem: str) -> TargetConfigError:
        return TargetConfigError(f"{self.where}: {key}: {problem}")

    def check_known(self, extra: tuple[str, ...] = ()) -> None:
        for key in self.mapping:
            if key not in self.known and key not in extra:
                raise self.fail(str(key), f"unknown key (known keys: "
                                          f"{', '.join(sorted(self.known))})")

    def string(self, key: str, default: str | None) -> str | None:
        """A non-empty string, stripped; ``default`` when the key is absent."""
        v = self.mapping.get(key, default)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, f"expected a non-empty string ({self.known[key]}), got {v!r}")
        return v.strip()

    def number(self, key: str, default: float, lo: float, integer: bool = False) -> float:
        """A number (an integer if ``integer``) of at least ``lo``."""
        v = self.mapping.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or v < lo or (
                integer and v != int(v)):
            kind = "an integer" if integer else "a number"
            raise self.fail(key, f"expected {kind} >= {lo:g} ({self.known[key]}), got {v!r}")
        return v

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.mapping.get(key, default)
        if not isinstance(v, bool):
            raise self.fail(key, f"expected true or false, got {v!r}")
        return v
