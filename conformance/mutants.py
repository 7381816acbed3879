"""The suite's power over the reference device's injectable defects.

For each defect, the cases that cite the clauses it violates run against a
reference device with that defect; a defect is *killed* when at least one of
them fails.  A case that no defect ever makes fail is a case that cannot fail.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class MutantResult:
    defect: str
    clauses: tuple[str, ...]
    killed_by: list[str] = field(default_factory=list)  # node IDs that failed
    ran: list[str] = field(default_factory=list)  # node IDs that ran (any outcome)
    error: str = ""

    @property
    def killed(self) -> bool:
        return bool(self.killed_by)


def target_mapping(defects: Iterable[str], options: dict | None = None) -> dict:
    device = dict(options or {})
    device["defects"] = list(defects)
    return {"kind": "reference", "name": "mutant", "timeout": 2, "device": device}


def run_mutant(name: str) -> MutantResult:
    """Run the cases of one defect's clauses against a device with that defect."""
    from conformance.selfcheck import run_outcomes
    from reference_device.defects import DEFECTS

    defect = DEFECTS[name]
    result = MutantResult(name, defect.clauses)
    with tempfile.TemporaryDirectory(prefix="vblk-mutant-") as tmp:
        path = Path(tmp) / "target.yaml"
        path.write_text(yaml.safe_dump(target_mapping([name], dict(defect.options))))
        args = [a for c in defect.clauses for a in ("--clause", c)]
        try:
            outcomes = run_outcomes(path, args)
        except RuntimeError as exc:
            result.error = str(exc).splitlines()[0]
            return result
    result.ran = sorted(outcomes)
    # A deviation is a SHOULD case noticing the defect: as much a kill as a failure.
    result.killed_by = sorted(n for n, (o, _) in outcomes.items()
                              if o in ("failed", "error", "deviation", "wedged"))
    return result


def false_alarms() -> list[tuple[str, str, str]]:
    """Cases that do not pass on the defect-free reference device: (node ID, outcome, detail).

    A skip (feature not offered) and a reject (a hostile request refused while the
    device stayed healthy) are fine; anything that reports a problem is a false alarm.
    """
    from conformance.selfcheck import run_outcomes

    with tempfile.TemporaryDirectory(prefix="vblk-mutant-") as tmp:
        path = Path(tmp) / "target.yaml"
        path.write_text(yaml.safe_dump(target_mapping([])))
        outcomes = run_outcomes(path)
    return sorted((n, o, d) for n, (o, d) in outcomes.items()
                  if o not in ("passed", "skipped", "reject"))


def kill_table(names: Iterable[str], jobs: int | None = None) -> list[MutantResult]:
    names = list(names)
    jobs = jobs or min(len(names), os.cpu_count() or 1) or 1
    if jobs <= 1:
        return [run_mutant(n) for n in names]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run_mutant, names))


def format_kill_table(results: list[MutantResult], markdown: bool = False) -> str:
    if markdown:
        rows = ["| defect | clauses | verdict | caught by |", "|---|---|---|---|"]
        for r in results:
            verdict = "ERROR" if r.error else "killed" if r.killed else "SURVIVED"
            caught = ", ".join(f"`{n.split('::', 1)[-1]}`" for n in r.killed_by[:3])
            if len(r.killed_by) > 3:
                caught += f" (+{len(r.killed_by) - 3})"
            rows.append(f"| `{r.defect}` | {', '.join(r.clauses)} | {verdict} | "
                        f"{caught or r.error} |")
        killed = sum(r.killed for r in results)
        rows.append(f"\n{killed}/{len(results)} defects killed")
        return "\n".join(rows)
    width = max([len(r.defect) for r in results] + [6])
    lines = [f"{'defect':<{width}}  verdict   caught by"]
    for r in results:
        if r.error:
            verdict, detail = "ERROR", r.error
        elif r.killed:
            verdict = "killed"
            detail = ", ".join(n.split("::", 1)[-1] for n in r.killed_by[:4])
            if len(r.killed_by) > 4:
                detail += f" (+{len(r.killed_by) - 4})"
        else:
            verdict, detail = "SURVIVED", f"{len(r.ran)} case(s) of {', '.join(r.clauses)} passed"
        lines.append(f"{r.defect:<{width}}  {verdict:<8}  {detail}")
    killed = sum(r.killed for r in results)
    lines.append(f"{killed}/{len(results)} defects killed")
    return "\n".join(lines)
