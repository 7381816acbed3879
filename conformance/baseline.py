"""Baselines: the known deviations of one target, for gating CI on the suite.

A baseline is a strict YAML file::

    version: 1
    target: qemu-7.2
    deviations:
      - case: conformance/cases/test_requests.py::test_get_id
        outcome: failed          # failed | deviation | error | wedged
        clauses: [blk.get-id]
        explanation: >-
          why the device does this (source location, versions)

``vblk-conformance run --baseline FILE`` judges every case against it
(:func:`judge`): a listed case that still shows its listed outcome is
``xfailed`` and does not gate; a listed case that now passes is ``xpassed`` and
gates (the baseline is stale); an unlisted failure gates as usual.
``vblk-conformance baseline update`` rewrites a baseline from a results file
(:func:`update`) and keeps every explanation it already has.

Every problem in a file is one line: ``FILE: entry N (CASE): KEY: problem``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from conformance.clauses import ID_RE
from conformance.outcomes import (
    BASELINE_OUTCOMES,
    PASSED,
    REJECT,
    SKIPPED,
    XFAILED,
    XPASSED,
)

VERSION = 1
TODO = "TODO"
_TOP_KEYS = ("version", "target", "deviations")
_ENTRY_KEYS = ("case", "outcome", "clauses", "explanation")


class BaselineError(ValueError):
    """A malformed baseline; the message is one line naming file, entry, key and problem."""


@dataclass(frozen=True)
class Entry:
    case: str
    outcome: str
    clauses: tuple[str, ...]
    explanation: str

    @property
    def needs_explanation(self) -> bool:
        return self.explanation.strip() == TODO


@dataclass(frozen=True)
class Baseline:
    target: str
    entries: dict[str, Entry] = field(default_factory=dict)  # case ID -> entry, file order
    path: str = "<baseline>"
    header: str = ""  # the comment lines that open the file, kept by update()

    def get(self, case: str) -> Entry | None:
        return self.entries.get(case)

    @property
    def todo(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.needs_explanation]


# --- reading ------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last)."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def load_baseline(path: str | Path, registry: Mapping[str, Any] | None = None) -> Baseline:
    """Read and validate a baseline file; ``registry`` (clause ID -> Clause) checks clause IDs."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise BaselineError(f"{path}: not valid YAML{at}: {problem}") from None
    baseline = parse_baseline(data, str(path), registry)
    return replace(baseline, header=leading_comments(text))


def leading_comments(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def parse_baseline(data: Any, where: str = "<baseline>",
                   registry: Mapping[str, Any] | None = None) -> Baseline:
    """Validate already-parsed YAML (split from load_baseline so tests need no files)."""
    if not isinstance(data, dict):
        raise BaselineError(f"{where}: expected a mapping with keys {', '.join(_TOP_KEYS)}, "
                            f"got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            raise BaselineError(f"{where}: {key}: unknown key (known: {', '.join(_TOP_KEYS)})")
    for key in _TOP_KEYS:
        if key not in data:
            raise BaselineError(f"{where}: {key}: missing")
    version = data["version"]
    if version != VERSION or isinstance(version, bool):
        raise BaselineError(f"{where}: version: this suite reads baseline version {VERSION}, "
                            f"got {version!r}")
    target = data["target"]
    if not isinstance(target, str) or not target.strip():
        raise BaselineError(f"{where}: target: expected the target's name, got {target!r}")
    raw = data["deviations"]
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise BaselineError(f"{where}: deviations: expected a list of entries, "
                            f"got {type(raw).__name__}")
    entries: dict[str, Entry] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(raw, start=1):
        entry = _parse_entry(item, f"{where}: entry {index}", registry)
        if entry.case in entries:
            raise BaselineError(f"{where}: entry {index} ({entry.case}): case: listed twice "
                                f"(first in entry {first[entry.case]})")
        entries[entry.case] = entry
        first[entry.case] = index
    return Baseline(target=target, entries=entries, path=where)


def _parse_entry(item: Any, where: str, registry: Mapping[str, Any] | None) -> Entry:
    if not isinstance(item, dict):
        raise BaselineError(f"{where}: expected a mapping with keys {', '.join(_ENTRY_KEYS)}, "
                            f"got {type(item).__name__}")
    case = item.get("case")
    if isinstance(case, str) and case:
        where = f"{where} ({case})"
    for key in item:
        if key not in _ENTRY_KEYS:
            raise BaselineError(f"{where}: {key}: unknown key (known: {', '.join(_ENTRY_KEYS)})")
    for key in _ENTRY_KEYS:
        if key not in item:
            raise BaselineError(f"{where}: {key}: missing")
    if not isinstance(case, str) or "::" not in case or not case.startswith("conformance/cases/"):
        raise BaselineError(f"{where}: case: expected a case ID like "
                            f"'conformance/cases/test_x.py::test_y', got {case!r}")
    outcome = item["outcome"]
    if outcome not in BASELINE_OUTCOMES:
        raise BaselineError(f"{where}: outcome: expected one of {', '.join(BASELINE_OUTCOMES)}, "
                            f"got {outcome!r}")
    clauses = item["clauses"]
    if not isinstance(clauses, list) or not clauses:
        raise BaselineError(f"{where}: clauses: expected a non-empty list of clause IDs, "
                            f"got {clauses!r}")
    for cid in clauses:
        if not isinstance(cid, str) or not ID_RE.match(cid):
            raise BaselineError(f"{where}: clauses: {cid!r} is not a clause ID (area.name)")
        if registry is not None and cid not in registry:
            raise BaselineError(f"{where}: clauses: {cid!r} is not in the clause registry")
    explanation = item["explanation"]
    if not isinstance(explanation, str) or not explanation.strip():
        raise BaselineError(f"{where}: explanation: expected text saying why "
                            f"(or {TODO} while nobody has looked), got {explanation!r}")
    return Entry(case, outcome, tuple(clauses), explanation.strip())


def unknown_cases(baseline: Baseline, collected: Iterable[str], cases_dir: Path) -> list[str]:
    """One line per listed case the suite does not have.

    ``collected`` are the node IDs collected before any selection.  An entry
    whose module was not collected at all is left alone when the module exists
    (the user ran a subset of the files); otherwise the case is unknown.
    """
    collected = set(collected)
    modules = {nodeid.split("::", 1)[0] for nodeid in collected}
    problems = []
    for index, entry in enumerate(baseline.entries.values(), start=1):
        if entry.case in collected:
            continue
        module = entry.case.split("::", 1)[0]
        if module not in modules and (cases_dir / Path(module).name).is_file():
            continue
        problems.append(f"{baseline.path}: entry {index} ({entry.case}): case: no such case "
                        f"in the suite (renamed or removed? update the baseline)")
    return problems


# --- judging ------------------------------------------------------------------------


def judge(entry: Entry | None, outcome: str) -> tuple[str, str]:
    """(verdict, note) for a case's device outcome given its baseline entry (or None)."""
    if entry is None:
        return outcome, ""
    if outcome in (PASSED, REJECT):
        return XPASSED, (f"baseline is stale: it lists this case as {entry.outcome}, but it "
                         f"{outcome}; update it (vblk-conformance baseline update)")
    if outcome == entry.outcome:
        return XFAILED, f"known {entry.outcome} (baseline): {first_line(entry.explanation)}"
    if outcome == SKIPPED:
        return SKIPPED, "baseline entry not exercised (the case was skipped)"
    return outcome, f"baseline lists {entry.outcome}, got {outcome}"


def first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


# --- updating -----------------------------------------------------------------------


@dataclass
class UpdateReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # outcome or clauses changed
    removed: list[str] = field(default_factory=list)  # now passing
    dropped: list[str] = field(default_factory=list)  # no longer in the suite
    kept: list[str] = field(default_factory=list)  # not run / skipped: left as they were


def update(old: Baseline | None, target: str, cases: Iterable[Mapping[str, Any]],
           suite_cases: set[str] | None = None) -> tuple[Baseline, UpdateReport]:
    """A new baseline from a run's cases (results-file case records).

    ``cases`` are mappings with ``id``, ``outcome`` and ``clauses`` (a list of
    clause IDs or of mappings with an ``id``).  Existing explanations are kept;
    new deviations get ``explanation: TODO``.  Cases the run did not exercise
    keep their entries, unless ``suite_cases`` (every case ID of the suite)
    says they no longer exist.
    """
    report = UpdateReport()
    old_entries = dict(old.entries) if old is not None else {}
    seen: dict[str, Mapping[str, Any]] = {c["id"]: c for c in cases}
    entries: dict[str, Entry] = {}
    for case_id, entry in old_entries.items():
        case = seen.get(case_id)
        if case is None or case["outcome"] == SKIPPED:
            if suite_cases is not None and case is None and case_id not in suite_cases:
                report.dropped.append(case_id)
            else:
                entries[case_id] = entry
                report.kept.append(case_id)
            continue
        if case["outcome"] not in BASELINE_OUTCOMES:
            report.removed.append(case_id)
            continue
        new = replace(entry, outcome=case["outcome"], clauses=_clause_ids(case))
        if new != entry:
            report.changed.append(case_id)
        entries[case_id] = new
    for case_id, case in seen.items():
        if case_id in entries or case_id in old_entries:
            continue
        if case["outcome"] in BASELINE_OUTCOMES:
            entries[case_id] = Entry(case_id, case["outcome"], _clause_ids(case), TODO)
            report.added.append(case_id)
    name = old.target if old is not None else target
    header = old.header if old is not None else ""
    path = old.path if old is not None else "<baseline>"
    return Baseline(target=name, entries=entries, path=path, header=header), report


def _clause_ids(case: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(c["id"] if isinstance(c, Mapping) else str(c) for c in case["clauses"])


# --- writing ------------------------------------------------------------------------


def dump_baseline(baseline: Baseline, width: int = 88) -> str:
    """The baseline as YAML in the documented layout (explanations as folded blocks).

    Every value is checked to read back unchanged; a text the folded style
    cannot carry (leading spaces, trailing blanks) is written double-quoted.
    """
    out = [baseline.header] if baseline.header else []
    out.append(f"version: {VERSION}")
    out.append(f"target: {_scalar(baseline.target)}")
    if not baseline.entries:
        out.append("deviations: []")
    else:
        out.append("deviations:")
    for entry in baseline.entries.values():
        out.append(f"  - case: {_scalar(entry.case)}")
        out.append(f"    outcome: {entry.outcome}")
        out.append("    clauses: [" + ", ".join(_scalar(c) for c in entry.clauses) + "]")
        out.append("    explanation: " + _folded(entry.explanation, width, "      "))
    text = "\n".join(out) + "\n"
    check = parse_baseline(yaml.safe_load(text), baseline.path)
    if check.entries != baseline.entries or check.target != baseline.target:
        raise AssertionError("baseline writer produced YAML that does not read back")
    return text


def _scalar(value: str) -> str:
    """A plain YAML scalar when that reads back as the same string, else double-quoted."""
    try:
        if value and yaml.safe_load(value) == value and ": " not in value and "#" not in value:
            return value
    except yaml.YAMLError:
        pass
    return _quoted(value)


def _quoted(value: str) -> str:
    return yaml.safe_dump(value, default_style='"', width=1 << 30).strip().removesuffix("...")\
        .strip()


def _folded(text: str, width: int, indent: str) -> str:
    """``>-`` block whose paragraphs are the text's lines (folding joins wrapped lines)."""
    paragraphs = text.split("\n")
    if any(p != p.strip() or not p for p in paragraphs):
        return _quoted(text)
    lines: list[str] = []
    for n, para in enumerate(paragraphs):
        if n:
            lines.append("")  # a blank line folds back into one newline
        lines.extend(textwrap.wrap(para, width - len(indent), break_long_words=False,
                                   break_on_hyphens=False) or [""])
    block = ">-\n" + "\n".join(indent + ln if ln else "" for ln in lines)
    try:
        if yaml.safe_load("k: " + block) == {"k": text}:
            return block
    except yaml.YAMLError:
        pass
    return _quoted(text)


def write_baseline(path: str | Path, baseline: Baseline) -> None:
    Path(path).write_text(dump_baseline(baseline), encoding="utf-8")
