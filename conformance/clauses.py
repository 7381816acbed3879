"""The clause registry: every device-normative VIRTIO 1.2 requirement the suite can name.

Conformance cases cite requirements by a stable clause ID
(``@pytest.mark.clause("split.used-len")``).  The IDs, their spec sections and a
one-line paraphrase live in ``clauses.yaml`` next to this module; this module
loads and validates that file and turns "which cases cite which clause" into a
coverage listing.  Everything here is a pure function of its arguments (apart
from reading the YAML file), so the plugin, the CLI and the tests share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LEVELS: tuple[str, ...] = ("MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY")
# Only absolute requirements count toward the headline coverage number: a device
# can be conformant while ignoring a SHOULD, so a missing SHOULD test is less urgent.
MANDATORY_LEVELS = frozenset({"MUST", "MUST NOT"})

ID_RE = re.compile(r"^[a-z]+\.[a-z0-9-]+$")
SECTION_RE = re.compile(r"^\d+(\.\d+)*$")

COVERED = "covered"
UNCOVERED = "uncovered"
NOT_OBSERVABLE = "not observable"
STATUSES: tuple[str, ...] = (COVERED, UNCOVERED, NOT_OBSERVABLE)

_REQUIRED_KEYS = ("id", "section", "title", "level", "text")
_KNOWN_KEYS = frozenset(_REQUIRED_KEYS) | {"not_observable"}

DEFAULT_PATH = Path(__file__).with_name("clauses.yaml")


class RegistryError(ValueError):
    """A malformed registry file; the message is one line naming the entry and the problem."""


@dataclass(frozen=True)
class Clause:
    id: str
    section: str
    title: str
    level: str
    text: str
    not_observable: str | None = None

    @property
    def spec_ref(self) -> str:
        """How reports cite the requirement, e.g. ``4.1.2.1 Device Requirements: ...``."""
        return f"{self.section} {self.title}"

    @property
    def area(self) -> str:
        return area_of(self.id)

    @property
    def mandatory(self) -> bool:
        return self.level in MANDATORY_LEVELS


@dataclass(frozen=True)
class Row:
    """One clause in a coverage listing: its status and the cases that cite it."""

    clause: Clause
    status: str
    cases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Totals:
    covered: int
    uncovered: int
    not_observable: int
    must_covered: int  # MUST + MUST NOT clauses with at least one case
    must_observable: int  # MUST + MUST NOT clauses that are not marked not observable

    @property
    def must_percent(self) -> float | None:
        """Covered share of the observable mandatory clauses; None when there are none."""
        if not self.must_observable:
            return None
        return 100.0 * self.must_covered / self.must_observable


def area_of(clause_id: str) -> str:
    """The area prefix of a clause ID: ``area_of("pci.vendor-id") == "pci"``."""
    return clause_id.split(".", 1)[0]


def section_key(section: str) -> tuple[int, ...]:
    """Sort key for section numbers: numeric per component, so 2.10 sorts after 2.9."""
    return tuple(int(part) for part in section.split("."))


# --- loading ------------------------------------------------------------------------


def load_registry(path: str | Path | None = None) -> dict[str, Clause]:
    """Read and validate a registry file (default: the packaged ``clauses.yaml``).

    Returns the clauses keyed by ID, in file order.  Raises RegistryError on the
    first problem found.
    """
    source = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # PyYAML messages span several lines; keep the one-line contract.
        first = " ".join(str(exc).split())
        raise RegistryError(f"{source.name}: not valid YAML: {first}") from None
    return parse_registry(data, source.name)


def parse_registry(data: Any, source: str = "registry") -> dict[str, Clause]:
    """Validate already-parsed YAML data; split from load_registry so tests need no files."""
    if not isinstance(data, Mapping):
        raise RegistryError(f"{source}: top level must be a mapping with 'spec' and 'clauses'")
    entries = data.get("clauses")
    if not isinstance(entries, list):
        raise RegistryError(f"{source}: 'clauses' must be a list of entries")
    registry: dict[str, Clause] = {}
    first_seen: dict[str, int] = {}
    for index, entry in enumerate(entries, start=1):
        clause = _parse_entry(entry, index, source)
        if clause.id in registry:
            raise RegistryError(f"{source}: entry {index} ({clause.id}): duplicate id, "
                                f"first used by entry {first_seen[clause.id]}")
        registry[clause.id] = clause
        first_seen[clause.id] = index
    return registry


def _parse_entry(entry: Any, index: int, source: str) -> Clause:
    where = f"{source}: entry {index}"
    if not isinstance(entry, Mapping):
        raise RegistryError(f"{where}: must be a mapping, not {type(entry).__name__}")
    raw_id = entry.get("id")
    if isinstance(raw_id, str) and raw_id:
        where = f"{where} ({raw_id})"
    unknown = sorted(str(k) for k in entry if k not in _KNOWN_KEYS)
    if unknown:
        # A misspelt optional key (e.g. "not_observeable") would otherwise vanish silently.
        raise RegistryError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in _REQUIRED_KEYS:
        value = entry.get(key)
        if value is None:
            raise RegistryError(f"{where}: missing '{key}'")
        if not isinstance(value, str):
            hint = ""
            if key == "section":
                # Unquoted 2.10 is the float 2.1 to YAML: the number would silently change.
                hint = " (quote it: YAML reads 2.10 as the number 2.1)"
            raise RegistryError(f"{where}: '{key}' must be a string{hint}")
        if not value.strip():
            raise RegistryError(f"{where}: '{key}' is empty")
    clause_id, section, level = entry["id"], entry["section"], entry["level"]
    if not ID_RE.match(clause_id):
        raise RegistryError(f"{where}: bad id {clause_id!r} (want <area>.<kebab-slug>, "
                            f"lower case)")
    if not SECTION_RE.match(section):
        raise RegistryError(f"{where}: bad section {section!r} (want dotted numbers like 2.7.8)")
    if level not in LEVELS:
        raise RegistryError(f"{where}: bad level {level!r} (want one of {', '.join(LEVELS)})")
    not_observable = entry.get("not_observable")
    if not_observable is not None and (not isinstance(not_observable, str)
                                       or not not_observable.strip()):
        raise RegistryError(f"{where}: 'not_observable' must be a non-empty reason")
    return Clause(id=clause_id, section=section, title=entry["title"].strip(), level=level,
                  text=" ".join(entry["text"].split()),
                  not_observable=" ".join(not_observable.split()) if not_observable else None)


# --- coverage -----------------------------------------------------------------------


def coverage(registry: Mapping[str, Clause],
             covered: Mapping[str, Sequence[str]]) -> list[Row]:
    """One row per clause, in spec section order.

    ``covered`` maps clause ID -> node IDs of the cases citing it.  A clause with
    cases is "covered" even if marked not observable: the case exists and claims to
    check it, and hiding it would misstate what the suite does.  An ID that is not
    in the registry raises RegistryError, since a typo would otherwise read as
    missing coverage.
    """
    unknown = sorted(cid for cid in covered if cid not in registry)
    if unknown:
        cases = list(covered[unknown[0]])
        first = f" (cited by {cases[0]})" if cases else ""
        raise RegistryError(f"unknown clause id(s) {', '.join(unknown)}{first}")
    rows = []
    for clause in registry.values():
        cases = tuple(covered.get(clause.id, ()))
        if cases:
            status = COVERED
        elif clause.not_observable:
            status = NOT_OBSERVABLE
        else:
            status = UNCOVERED
        rows.append(Row(clause, status, cases))
    # sorted() is stable, so clauses within one section keep registry order.
    return sorted(rows, key=lambda row: section_key(row.clause.section))


def totals(rows: Iterable[Row]) -> Totals:
    counts = dict.fromkeys(STATUSES, 0)
    must_covered = must_observable = 0
    for row in rows:
        counts[row.status] += 1
        if row.clause.mandatory and row.status != NOT_OBSERVABLE:
            must_observable += 1
            if row.status == COVERED:
                must_covered += 1
    return Totals(covered=counts[COVERED], uncovered=counts[UNCOVERED],
                  not_observable=counts[NOT_OBSERVABLE], must_covered=must_covered,
                  must_observable=must_observable)


def format_totals(t: Totals) -> str:
    pct = "n/a" if t.must_percent is None else f"{t.must_percent:.1f}%"
    return (f"covered {t.covered} / uncovered {t.uncovered} / not observable "
            f"{t.not_observable}; MUST coverage {t.must_covered}/{t.must_observable} ({pct})")


def format_listing(rows: Sequence[Row], uncovered_only: bool = False) -> str:
    """A plain-text table grouped by spec section, ending with the totals line.

    With ``uncovered_only`` the table shows only uncovered clauses, but the totals
    still describe every row so the percentage means the same in both views.
    """
    shown = [r for r in rows if not uncovered_only or r.status == UNCOVERED]
    shown.sort(key=lambda r: section_key(r.clause.section))
    id_width = max((len(r.clause.id) for r in shown), default=0)
    lines: list[str] = []
    current: str | None = None
    for row in shown:
        clause = row.clause
        if clause.spec_ref != current:
            if lines:
                lines.append("")
            lines.append(clause.spec_ref)
            current = clause.spec_ref
        lines.append(f"  {row.status:<14}  {clause.level:<10}  {clause.id:<{id_width}}  "
                     f"{clause.text}")
        for case in row.cases:
            lines.append(f"  {'':<14}  {'':<10}  {'':<{id_width}}  <- {case}")
        if row.status == NOT_OBSERVABLE and clause.not_observable:
            lines.append(f"  {'':<14}  {'':<10}  {'':<{id_width}}  (why: "
                         f"{clause.not_observable})")
    if not shown:
        lines.append("no uncovered clauses" if uncovered_only else "no clauses")
    lines.append("")
    lines.append(format_totals(totals(rows)))
    return "\n".join(lines)
