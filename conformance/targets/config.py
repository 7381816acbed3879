"""Target files: YAML documents that say which device to test and how to reach it.

Common keys (every kind)::

    kind: reference        # reference | qtest (ssh and qemu-vm: later)
    name: my-device        # shown in reports; default: the file's stem
    timeout: 10            # seconds a single wait may take

Every other key belongs to the kind and is checked by it.  Errors are one
line: ``FILE: KEY: what is wrong``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.targets.base import TargetConfigError

COMMON_KEYS = ("kind", "name", "timeout")


@dataclass
class TargetSpec:
    kind: str
    name: str
    timeout: float
    options: dict[str, Any] = field(default_factory=dict)
    where: str = "<command line>"


def spec_from_mapping(data: Any, where: str, default_name: str) -> TargetSpec:
    from conformance.targets import KINDS

    if not isinstance(data, dict):
        raise TargetConfigError(f"{where}: expected a mapping of keys at the top level, "
                                f"got {type(data).__name__}")
    kind = data.get("kind")
    if kind is None:
        raise TargetConfigError(f"{where}: kind: missing (one of {', '.join(KINDS)})")
    if kind not in KINDS:
        raise TargetConfigError(f"{where}: kind: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise TargetConfigError(f"{where}: name: expected a non-empty string, got {name!r}")
    timeout = data.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise TargetConfigError(f"{where}: timeout: expected a positive number of seconds, "
                                f"got {timeout!r}")
    options = {k: v for k, v in data.items() if k not in COMMON_KEYS}
    return TargetSpec(kind, name, float(timeout), options, where)


def load_target_file(path: str | Path) -> TargetSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TargetConfigError(f"{path}: cannot read the target file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TargetConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    return spec_from_mapping(data, str(path), path.stem)
