"""The end-of-run summary: outcomes per spec area, skip reasons spelled out.

Plain functions over pytest reports so the CLI, the plugin and the tests share
them.  A case's area is its module: ``conformance/cases/test_<area>.py``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

OUTCOMES = ("passed", "failed", "error", "skipped")
# Shown only when some case has them (conformance.outcomes: deviations, negative
# cases, and the verdicts a baseline adds).
EXTRA_OUTCOMES = ("deviation", "reject", "wedged", "xfailed", "xpassed")
CASES_DIR = Path(__file__).resolve().parent / "cases"


def is_case_path(path: str | Path) -> bool:
    """True for a file of the packaged cases (node IDs depend on rootdir; paths do not)."""
    return Path(path).resolve().is_relative_to(CASES_DIR)


def area_of_nodeid(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0].replace("\\", "/").rsplit("/", 1)[-1]
    return module.removesuffix(".py").removeprefix("test_")


def skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def failure_message(report: Any) -> str:
    """The first line of what went wrong (the assertion message, not a traceback)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0].removeprefix("AssertionError: ") if lines else ""


def case_outcomes(reports: Iterable[Any]) -> dict[str, tuple[str, str]]:
    """One (outcome, detail) per case from its setup/call/teardown reports."""
    result: dict[str, tuple[str, str]] = {}
    rank = {"passed": 0, "reject": 0, "skipped": 1, "deviation": 2, "xfailed": 2,
            "failed": 3, "wedged": 3, "xpassed": 3, "error": 4}
    for r in reports:
        verdict = getattr(r, "vblk_verdict", None)  # set by conformance.recorder
        if verdict is not None:
            outcome = verdict
            detail = skip_reason(r) if verdict == "skipped" else failure_message(r)
        elif r.skipped:
            outcome, detail = "skipped", skip_reason(r)
        elif r.failed:
            outcome = "failed" if r.when == "call" else "error"
            detail = failure_message(r)
        elif r.when == "call":
            outcome, detail = "passed", ""
        else:
            continue
        old = result.get(r.nodeid)
        if old is None or rank[outcome] > rank[old[0]]:
            result[r.nodeid] = (outcome, detail)
    return result


def format_area_summary(reports: Iterable[Any]) -> str:
    outcomes = case_outcomes(reports)
    per_area: dict[str, Counter] = defaultdict(Counter)
    skips: dict[str, Counter] = defaultdict(Counter)
    for nodeid, (outcome, detail) in outcomes.items():
        area = area_of_nodeid(nodeid)
        per_area[area][outcome] += 1
        if outcome == "skipped":
            skips[area][detail] += 1
    width = max([len(a) for a in per_area] + [4])
    seen = {o for c in per_area.values() for o in c}
    columns = OUTCOMES + tuple(o for o in EXTRA_OUTCOMES if o in seen)
    widths = {o: max(7, len(o)) for o in columns}
    lines = [f"{'area':<{width}}  " + "  ".join(f"{o:>{widths[o]}}" for o in columns)]
    total: Counter = Counter()
    for area in sorted(per_area):
        c = per_area[area]
        total.update(c)
        lines.append(f"{area:<{width}}  " + "  ".join(f"{c[o]:>{widths[o]}}" for o in columns))
    lines.append(f"{'all':<{width}}  " + "  ".join(f"{total[o]:>{widths[o]}}" for o in columns))
    for area in sorted(skips):
        for reason, n in skips[area].most_common():
            lines.append(f"skipped in {area}: {n} x {reason}")
    shown = {"failed": "FAILED", "error": "ERROR", "wedged": "WEDGED", "xpassed": "XPASS",
             "deviation": "DEVIATION"}
    for nodeid, (outcome, detail) in sorted(outcomes.items()):
        if outcome in shown:
            lines.append(f"{shown[outcome]} {nodeid}: {detail}"[:240])
    return "\n".join(lines)
