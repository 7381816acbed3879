"""The results file: one JSON document per run (schema in docs/results-schema.md).

It is what the comparison report and ``baseline update`` read, and what a CI
system archives.  The dataclasses below are the schema; :func:`to_json` and
:func:`from_json` are exact inverses, and :func:`from_json` validates a file
written by another version of the suite with one-line errors.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.outcomes import DEVICE_OUTCOMES, VERDICTS

SCHEMA = "vblk-conformance-results"
SCHEMA_VERSION = 1


class ResultsError(ValueError):
    """A results file that cannot be read; the message is one line."""


@dataclass(frozen=True)
class ClauseRef:
    id: str
    level: str
    section: str
    title: str


@dataclass
class CaseResult:
    id: str  # the pytest node ID, stable across machines (the CLI pins --rootdir)
    area: str  # the case module: conformance/cases/test_<area>.py
    outcome: str  # device outcome (conformance.outcomes.DEVICE_OUTCOMES)
    verdict: str  # after the baseline (adds xfailed / xpassed); == outcome without one
    gating: bool  # this case made the run fail
    clauses: list[ClauseRef]
    duration: float  # seconds, setup + call + teardown
    message: str = ""  # first line of what went wrong
    details: str = ""  # the full failure text (traceback, assertion)
    skip_reason: str = ""
    features: dict[str, Any] | None = None  # offered / negotiated feature bits
    platform: int | None = None  # index into RunResults.platforms
    baseline: dict[str, str] | None = None  # listed outcome, explanation, note

    @property
    def levels(self) -> list[str]:
        return [c.level for c in self.clauses]


@dataclass
class RunResults:
    suite: dict[str, Any]  # name, version, spec
    run: dict[str, Any]  # started, finished, host, command line, exit status, baseline
    target: dict[str, Any]  # Target.describe() plus binary checksum
    platforms: list[dict[str, Any]] = field(default_factory=list)  # Platform.describe()s
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.target.get("name") or "unnamed")

    @property
    def label(self) -> str:
        """How reports name the run: the target's name and, for QEMU, its version."""
        version = self.target.get("qemu_version")
        if version and str(version) not in self.name:
            return f"{self.name} (QEMU {version})"
        return self.name

    def counts(self, key: str = "verdict") -> Counter:
        return Counter(getattr(case, key) for case in self.cases)

    def case(self, case_id: str) -> CaseResult | None:
        for case in self.cases:
            if case.id == case_id:
                return case
        return None


# --- JSON ---------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Target and platform descriptions as plain JSON values (tuples, enums, paths)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def to_json(results: RunResults) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "suite": jsonable(results.suite),
        "run": jsonable(results.run),
        "target": jsonable(results.target),
        "platforms": jsonable(results.platforms),
        "counts": dict(sorted(results.counts().items())),
        "cases": [jsonable(dataclasses.asdict(c)) for c in results.cases],
    }


def write_results(path: str | Path, results: RunResults) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(to_json(results), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a file
    return path


def load_results(path: str | Path) -> RunResults:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read the results file: "
                           f"{exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON: {exc.msg} at line {exc.lineno}, "
                           f"column {exc.colno}") from None
    return from_json(data, str(path))


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ResultsError(f"{where}: {key}: missing")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        name = "/".join(k.__name__ for k in kinds)
        raise ResultsError(f"{where}: {key}: expected {name}, got {type(value).__name__}")
    return value


def from_json(data: Any, where: str = "<results>") -> RunResults:
    if not isinstance(data, dict):
        raise ResultsError(f"{where}: expected a JSON object at the top level")
    if data.get("schema") != SCHEMA:
        raise ResultsError(f"{where}: schema: expected {SCHEMA!r}, got {data.get('schema')!r} "
                           f"(not a vblk-conformance results file?)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise ResultsError(f"{where}: schema_version: this suite reads version {SCHEMA_VERSION}, "
                           f"got {version!r}" + (" (written by a newer suite)" if newer else ""))
    suite = _need(data, "suite", dict, where)
    run = _need(data, "run", dict, where)
    target = _need(data, "target", dict, where)
    platforms = _need(data, "platforms", list, where)
    raw_cases = _need(data, "cases", list, where)
    cases = [_case_from_json(c, f"{where}: cases[{i}]") for i, c in enumerate(raw_cases)]
    for case in cases:
        if case.platform is not None and not 0 <= case.platform < len(platforms):
            raise ResultsError(f"{where}: case {case.id}: platform: index {case.platform} "
                               f"out of range ({len(platforms)} platforms)")
    return RunResults(suite=suite, run=run, target=target, platforms=platforms, cases=cases)


def _case_from_json(data: Any, where: str) -> CaseResult:
    if not isinstance(data, dict):
        raise ResultsError(f"{where}: expected an object")
    case_id = _need(data, "id", str, where)
    where = f"{where} ({case_id})"
    outcome = _need(data, "outcome", str, where)
    if outcome not in DEVICE_OUTCOMES:
        raise ResultsError(f"{where}: outcome: unknown outcome {outcome!r}")
    verdict = _need(data, "verdict", str, where)
    if verdict not in VERDICTS:
        raise ResultsError(f"{where}: verdict: unknown verdict {verdict!r}")
    clauses = []
    for n, c in enumerate(_need(data, "clauses", list, where)):
        if not isinstance(c, dict):
            raise ResultsError(f"{where}: clauses[{n}]: expected an object")
        clauses.append(ClauseRef(**{k: str(_need(c, k, str, f"{where}: clauses[{n}]"))
                                    for k in ("id", "level", "section", "title")}))
    features = data.get("features")
    if features is not None and not isinstance(features, dict):
        raise ResultsError(f"{where}: features: expected an object or null")
    platform = data.get("platform")
    if platform is not None and (not isinstance(platform, int) or isinstance(platform, bool)):
        raise ResultsError(f"{where}: platform: expected an index or null")
    baseline = data.get("baseline")
    if baseline is not None and not isinstance(baseline, dict):
        raise ResultsError(f"{where}: baseline: expected an object or null")
    return CaseResult(
        id=case_id,
        area=_need(data, "area", str, where),
        outcome=outcome,
        verdict=verdict,
        gating=_need(data, "gating", bool, where),
        clauses=clauses,
        duration=float(_need(data, "duration", (int, float), where)),
        message=str(data.get("message") or ""),
        details=str(data.get("details") or ""),
        skip_reason=str(data.get("skip_reason") or ""),
        features=features,
        platform=platform,
        baseline=baseline,
    )


# --- target metadata ----------------------------------------------------------------


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a file (cached by path, size and mtime), None when it cannot be read."""
    try:
        st = Path(path).stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _SHA256_CACHE:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _SHA256_CACHE[key] = h.hexdigest()
        return _SHA256_CACHE[key]
    except OSError:
        return None


def enrich_target(description: Mapping[str, Any]) -> dict[str, Any]:
    """A target's describe() plus what identifies its binary: resolved path and checksum."""
    out = dict(description)
    binary = out.get("qemu_binary")
    if isinstance(binary, str) and binary:
        resolved = shutil.which(binary) or binary
        real = Path(resolved).resolve()
        out["qemu_binary_path"] = str(real)
        out["qemu_binary_sha256"] = file_sha256(real)
    return out


def features_record(offered: int | None, negotiated: int | None) -> dict[str, Any]:
    """The feature bits a case saw, as hex and as names (2.2 Feature Bits)."""
    from conformance.spec import feature_name

    def names(bits: int | None) -> list[str]:
        return [feature_name(b) for b in range(128) if bits and bits >> b & 1]

    return {
        "offered": None if offered is None else hex(offered),
        "negotiated": None if negotiated is None else hex(negotiated),
        "negotiated_names": names(negotiated),
    }
