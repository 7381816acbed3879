"""Side-by-side comparison of two or more runs (results files).

Rows are cases grouped by area, columns are runs, a cell is the case's device
outcome in that run (before any baseline: the comparison is about what the
devices do, not about what a baseline excuses).  A row *differs* when its
cells are not all the same outcome; a case missing from a run counts as a
difference ("not run").

:func:`build` makes the matrix; :func:`to_markdown` renders it for a pull
request comment; conformance.report_html renders the same matrix as one
self-contained HTML page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from conformance.outcomes import DEVICE_OUTCOMES
from conformance.results import CaseResult, RunResults

NOT_RUN = "not run"
#: Column order for per-area counts.
COUNT_ORDER: tuple[str, ...] = DEVICE_OUTCOMES + (NOT_RUN,)


@dataclass(frozen=True)
class Cell:
    outcome: str  # a device outcome, or NOT_RUN
    message: str = ""
    details: str = ""
    skip_reason: str = ""
    clauses: tuple[str, ...] = ()  # "id (LEVEL, section)"
    features: str = ""  # negotiated feature names

    @property
    def note(self) -> str:
        """What a reader wants next to the outcome: the failure or the skip reason."""
        return self.message or self.skip_reason


@dataclass(frozen=True)
class Row:
    case: str
    area: str
    clauses: tuple[str, ...]  # clause IDs (from the first run that has the case)
    cells: tuple[Cell, ...]

    @property
    def differs(self) -> bool:
        return len({c.outcome for c in self.cells}) > 1

    @property
    def name(self) -> str:
        """The case without its module: ``test_get_id`` (the area heads the group)."""
        return self.case.split("::", 1)[-1]


@dataclass(frozen=True)
class RunInfo:
    label: str
    name: str
    kind: str
    qemu_version: str
    device: str
    started: str
    source: str  # the results file
    target: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Matrix:
    runs: tuple[RunInfo, ...]
    rows: tuple[Row, ...]  # by area, then differing rows first, then case ID

    @property
    def areas(self) -> list[str]:
        return list(dict.fromkeys(r.area for r in self.rows))

    @property
    def differing(self) -> list[Row]:
        return [r for r in self.rows if r.differs]

    def area_rows(self, area: str) -> list[Row]:
        return [r for r in self.rows if r.area == area]

    def counts(self, area: str | None = None) -> list[Counter]:
        """Per run, how many cases of ``area`` (or of all areas) had each outcome."""
        rows = self.rows if area is None else self.area_rows(area)
        return [Counter(r.cells[i].outcome for r in rows) for i in range(len(self.runs))]

    def area_differences(self, area: str) -> int:
        return sum(1 for r in self.area_rows(area) if r.differs)


def _cell(case: CaseResult | None) -> Cell:
    if case is None:
        return Cell(NOT_RUN)
    features = ", ".join((case.features or {}).get("negotiated_names") or [])
    return Cell(case.outcome, case.message, case.details, case.skip_reason,
                tuple(f"{c.id} ({c.level}, {c.section})" for c in case.clauses), features)


def run_labels(results: Sequence[RunResults], labels: Sequence[str] | None = None) -> list[str]:
    """Column labels: given ones, else target name (+ QEMU version); duplicates numbered."""
    out = list(labels or []) + [r.label for r in results[len(labels or []):]]
    seen: Counter = Counter(out)
    used: Counter = Counter()
    for i, label in enumerate(out):
        if seen[label] > 1:
            used[label] += 1
            out[i] = f"{label} #{used[label]}"
    return out


def build(results: Sequence[RunResults], sources: Sequence[str] | None = None,
          labels: Sequence[str] | None = None) -> Matrix:
    """The comparison matrix of ``results`` (two or more runs, in column order)."""
    sources = list(sources or [""] * len(results))
    names = run_labels(results, labels)
    runs = tuple(
        RunInfo(label=names[i], name=r.name, kind=str(r.target.get("kind") or ""),
                qemu_version=str(r.target.get("qemu_version") or ""),
                device=str(r.target.get("device") or "") if isinstance(
                    r.target.get("device"), str) else "",
                started=str(r.run.get("started") or ""), source=sources[i], target=r.target)
        for i, r in enumerate(results))
    order: dict[str, CaseResult] = {}
    for r in results:
        for case in r.cases:
            order.setdefault(case.id, case)
    by_run = [{c.id: c for c in r.cases} for r in results]
    rows = [Row(case=cid, area=first.area, clauses=tuple(c.id for c in first.clauses),
                cells=tuple(_cell(m.get(cid)) for m in by_run))
            for cid, first in order.items()]
    area_order = {a: i for i, a in enumerate(sorted({r.area for r in rows}))}
    case_order = {cid: i for i, cid in enumerate(order)}
    rows.sort(key=lambda r: (area_order[r.area], not r.differs, case_order[r.case]))
    return Matrix(runs=runs, rows=tuple(rows))


# --- Markdown -------------------------------------------------------------------------


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
            .replace("<", "&lt;").replace(">", "&gt;").replace("`", "'"))


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def format_counts(counter: Counter) -> str:
    parts = [f"{counter[o]} {o}" for o in COUNT_ORDER if counter[o]]
    return ", ".join(parts) or "none"


def cell_word(cell: Cell) -> str:
    return {"passed": "pass", "failed": "**FAIL**", "error": "**ERROR**",
            "wedged": "**WEDGED**", "deviation": "*deviation*", "skipped": "skip",
            "reject": "reject", NOT_RUN: "—"}.get(cell.outcome, cell.outcome)


def to_markdown(matrix: Matrix, title: str = "Conformance comparison",
                all_cases: bool = True) -> str:
    runs = matrix.runs
    head = "| " + " | ".join(_md(r.label) for r in runs) + " |"
    sep = "|" + "---|" * len(runs)
    out = [f"# {title}", ""]
    out += ["## Runs", "", "| run | target | QEMU | device | started | results file |",
            "|---|---|---|---|---|---|"]
    for r in runs:
        out.append(f"| {_md(r.label)} | {_md(r.name)} ({_md(r.kind)}) | "
                   f"{_md(r.qemu_version) or '—'} | {_md(r.device) or '—'} | "
                   f"{_md(r.started)} | {_md(r.source)} |")
    diffs = matrix.differing
    out += ["", "## Per area", "", "| area | differ " + head, "|---|---:" + sep]
    for area in matrix.areas:
        counts = matrix.counts(area)
        out.append(f"| {_md(area)} | {matrix.area_differences(area)} | "
                   + " | ".join(format_counts(c) for c in counts) + " |")
    out.append(f"| **all** | **{len(diffs)}** | "
               + " | ".join(format_counts(c) for c in matrix.counts()) + " |")
    out += ["", f"## Differences ({len(diffs)} of {len(matrix.rows)} cases)", ""]
    if diffs:
        out += _table(diffs, runs, head, sep, with_area=True)
        out += ["", "### What the differing cells say", ""]
        for row in diffs:
            notes = [(runs[i].label, c) for i, c in enumerate(row.cells) if c.note]
            if notes:
                out.append(f"- `{row.case}`")
                for label, c in notes:
                    out.append(f"  - {_md(label)}: {c.outcome}: {_md(_short(c.note, 300))}")
    else:
        out.append("Every case has the same outcome in every run.")
    if all_cases:
        out += ["", "## All cases", ""]
        for area in matrix.areas:
            rows = matrix.area_rows(area)
            out += [f"### {area} ({len(rows)} cases, {matrix.area_differences(area)} differ)", ""]
            out += _table(rows, runs, head, sep, with_area=False)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _table(rows: Sequence[Row], runs: Sequence[RunInfo], head: str, sep: str,
           with_area: bool) -> list[str]:
    first = "| area | case | clauses " if with_area else "| case | clauses "
    lines = [first + head, ("|---|---|---" if with_area else "|---|---") + sep]
    for row in rows:
        lead = f"| {_md(row.area)} | " if with_area else "| "
        lines.append(lead + f"`{_md(row.name)}` | {_md(', '.join(row.clauses))} | "
                     + " | ".join(cell_word(c) for c in row.cells) + " |")
    return lines
