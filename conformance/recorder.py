"""The run recorder: outcomes, baseline verdicts, progress, the results file, allure.

A plugin object the conformance plugin registers in ``pytest_configure``.  The
conformance plugin's ``pytest_runtest_makereport`` calls :meth:`Recorder.classify`
for every report, which

1. decides the case's device outcome for that phase (conformance.outcomes),
2. applies the baseline (conformance.baseline.judge),
3. rewrites the pytest report so pytest's own machinery (exit status, JUnit,
   allure, the terminal) sees the verdict:

   ========== ================================================================
   deviation  ``skipped`` + ``wasxfail`` (does not gate); stays ``failed`` with
              ``--strict-should``
   xfailed    ``skipped`` + ``wasxfail`` = the baseline's explanation
   xpassed    ``failed`` with "baseline is stale" as the failure text
   wedged     ``failed`` with the case's own detail
   reject     ``passed``
   ========== ================================================================

   and tags it with ``vblk_outcome`` / ``vblk_verdict`` attributes, which the
   terminal status (:meth:`pytest_report_teststatus`) and the summary read.

At the end it writes the results file (conformance.results) and, with
``--alluredir``, the allure environment.
"""

from __future__ import annotations

import datetime
import getpass
import json
import platform as host_platform
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

import conformance
from conformance import allure as allure_labels
from conformance import outcomes as oc
from conformance.baseline import Baseline, judge, unknown_cases
from conformance.clauses import Clause
from conformance.results import (
    CaseResult,
    ClauseRef,
    RunResults,
    enrich_target,
    features_record,
    jsonable,
    write_results,
)
from conformance.summary import (
    CASES_DIR,
    area_of_nodeid,
    failure_message,
    is_case_path,
    skip_reason,
)


@dataclass
class _CaseState:
    clauses: list[Clause]
    outcomes: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    duration: float = 0.0
    message: str = ""
    details: str = ""
    skip_reason: str = ""
    features: dict[str, Any] | None = None
    platform: int | None = None
    baseline: dict[str, str] | None = None


def _longrepr_text(report: Any) -> str:
    text = getattr(report, "longreprtext", "") or ""
    return text if isinstance(text, str) else str(text)


class Recorder:
    def __init__(self, config: pytest.Config, *, baseline: Baseline | None = None,
                 results_path: str | None = None, strict_should: bool = False,
                 alluredir: str | None = None, spec_url: str = allure_labels.SPEC_URL_TEMPLATE,
                 registry: dict[str, Clause] | None = None, target: Any = None):
        self.config = config
        self.target_object = target  # the Target, for describe() when no case captured it
        self.baseline = baseline
        self.results_path = results_path
        self.strict_should = strict_should
        self.alluredir = alluredir
        self.spec_url = spec_url
        self._registry = registry
        self.started = datetime.datetime.now(datetime.UTC)
        self.states: dict[str, _CaseState] = {}
        self.cases: list[CaseResult] = []
        self.platforms: list[dict[str, Any]] = []
        self._platform_keys: dict[str, int] = {}
        self.target: dict[str, Any] = {}
        self.written: str | None = None
        # progress
        self._area_total: Counter = Counter()
        self._area: str | None = None
        self._started_cases = 0
        self._total_cases = 0

    @property
    def registry(self) -> dict[str, Clause]:
        if self._registry is None:
            from conformance.clauses import load_registry
            self._registry = load_registry()
        return self._registry

    # --- collection ---------------------------------------------------------------

    def _clauses(self, item: pytest.Item) -> list[Clause]:
        ids = [cid for m in item.iter_markers("clause") for cid in m.args]
        return [self.registry[cid] for cid in dict.fromkeys(ids) if cid in self.registry]

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # tryfirst: before -k / --clause deselect anything, so the baseline is checked
        # against every case the suite has.
        cases = [item for item in items if is_case_path(item.path)]
        if self.baseline is not None:
            problems = unknown_cases(self.baseline, [i.nodeid for i in cases], CASES_DIR)
            if problems:
                raise pytest.UsageError(problems[0] + (f" (and {len(problems) - 1} more)"
                                                       if len(problems) > 1 else ""))
        for item in cases:
            clauses = self._clauses(item)
            self.states[item.nodeid] = _CaseState(clauses)
            if self.alluredir:
                allure_labels.mark_item(item, clauses, self.spec_url)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._area_total = Counter(area_of_nodeid(i.nodeid) for i in session.items
                                   if i.nodeid in self.states)
        self._total_cases = sum(self._area_total.values())

    # --- progress -----------------------------------------------------------------

    def pytest_runtest_logstart(self, nodeid: str, location: tuple) -> None:
        """With -q, start each area on its own line: ``requests (13)  ..F..``.

        pytest's quiet mode runs every dot into one line; a line per area shows
        where a long run is.  pytest appends its ``[done/total]`` count when a
        line is full and at the end; this writes it when an area ends.
        """
        if nodeid not in self.states:
            return
        area = area_of_nodeid(nodeid)
        done = self._started_cases
        self._started_cases += 1
        if area == self._area or self.config.get_verbosity() >= 0:
            self._area = area
            return
        self._area = area
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        tw = tr._tw
        width = max(len(a) for a in self._area_total) + len(str(max(self._area_total.values())))
        if tw.width_of_current_line:
            count = f"[{done}/{self._total_cases}]"
            tw.write(count.rjust(max(1, tw.fullwidth - tw.width_of_current_line - 1)) + "\n")
        tw.write(f"{area} ({self._area_total[area]})".ljust(width + 4), bold=True)

    # --- reports --------------------------------------------------------------------

    def classify(self, item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport,
                 mark: oc.OutcomeMark | None = None) -> pytest.TestReport:
        state = self.states.get(item.nodeid)
        if state is None:
            return report  # not a conformance case (a plugin self-test, say)
        state.duration += report.duration
        if report.when == "call":
            self._capture(item, state)
        outcome = self._phase_outcome(report, call, state, mark)
        if outcome is not None:
            entry = self.baseline.get(item.nodeid) if self.baseline is not None else None
            verdict, note = judge(entry, outcome)
            if entry is not None:
                state.baseline = {"outcome": entry.outcome, "explanation": entry.explanation,
                                  "note": note}
            self._rewrite(item, report, outcome, verdict, note, state)
            state.outcomes.append(outcome)
            state.verdicts.append(verdict)
            report.vblk_outcome = outcome  # type: ignore[attr-defined]
            report.vblk_verdict = verdict  # type: ignore[attr-defined]
        if report.when == "teardown":
            case = self._finish(item.nodeid, state)
            # pytest's JUnit XML writes the teardown report's properties per test case.
            report.user_properties += [
                ("clauses", " ".join(c.id for c in case.clauses)),
                ("levels", " ".join(sorted({c.level for c in case.clauses}))),
                ("outcome", case.outcome), ("verdict", case.verdict)]
            if case.message:
                report.user_properties.append(("message", case.message))
        return report

    def _phase_outcome(self, report: pytest.TestReport, call: pytest.CallInfo,
                       state: _CaseState, mark: oc.OutcomeMark | None) -> str | None:
        if report.skipped:
            state.skip_reason = skip_reason(report)
            return oc.SKIPPED
        if report.failed:
            state.message = state.message or failure_message(report)
            state.details = state.details or _longrepr_text(report)
            if report.when != "call":
                return oc.ERROR
            assertion = call.excinfo is not None and call.excinfo.errisinstance(AssertionError)
            # driver.* clauses say which rule a robustness case broke on purpose, not
            # what the device must do: they do not make a SHOULD-only case a failure.
            outcome = oc.failure_outcome(
                (c.level for c in state.clauses if c.area != "driver"), assertion)
            return oc.apply_mark(outcome, mark)
        if report.when == "call":
            outcome = oc.apply_mark(oc.PASSED, mark)
            if outcome == oc.WEDGED and mark is not None:
                state.message = mark.detail
            return outcome
        return None  # a passing setup or teardown says nothing about the device

    def _rewrite(self, item: pytest.Item, report: pytest.TestReport, outcome: str,
                 verdict: str, note: str, state: _CaseState) -> None:
        levels = sorted({c.level for c in state.clauses})
        if verdict == oc.XFAILED:
            report.outcome = "skipped"
            report.wasxfail = note  # type: ignore[attr-defined]
        elif verdict == oc.XPASSED:
            report.outcome = "failed"
            report.longrepr = note
            state.message, state.details = note, note
        elif verdict == oc.DEVIATION and not self.strict_should:
            report.outcome = "skipped"
            report.wasxfail = (f"deviation ({', '.join(levels)} only: "  # type: ignore[attr-defined]
                               f"{', '.join(c.id for c in state.clauses)}): {state.message}")
        elif verdict == oc.WEDGED and report.passed:
            report.outcome = "failed"
            report.longrepr = f"device wedged: {state.message}"
        elif verdict == oc.REJECT:
            report.outcome = "passed"
        if note and verdict not in (oc.XFAILED, oc.XPASSED):
            report.sections.append(("baseline", note))
        if self.alluredir and verdict != oc.PASSED:
            allure_labels.tag_item(item, verdict)

    def _capture(self, item: pytest.Item, state: _CaseState) -> None:
        """What the case saw: negotiated features, the platform, the target (no device I/O)."""
        dev = item.funcargs.get("blk") or item.funcargs.get("device")  # type: ignore[attr-defined]
        virtio = getattr(dev, "virtio", None)
        if virtio is not None:
            offered, negotiated = getattr(virtio, "offered", 0), getattr(virtio, "features", 0)
            state.features = features_record(offered or None, negotiated or None)
        plat = item.funcargs.get("platform")  # type: ignore[attr-defined]
        if plat is not None:
            try:
                description = jsonable(plat.describe())
            except Exception as exc:  # a dead platform must not hide the case's own result
                description = {"describe_error": f"{type(exc).__name__}: {exc}"}
            key = json.dumps(description, sort_keys=True)
            if key not in self._platform_keys:
                self._platform_keys[key] = len(self.platforms)
                self.platforms.append(description)
            state.platform = self._platform_keys[key]
        tgt = item.funcargs.get("target")  # type: ignore[attr-defined]
        if tgt is not None:
            try:
                self.target = jsonable(tgt.describe())
            except Exception as exc:
                self.target.setdefault("describe_error", f"{type(exc).__name__}: {exc}")

    def _finish(self, nodeid: str, state: _CaseState) -> CaseResult:
        outcome = oc.worst(state.outcomes) if state.outcomes else oc.PASSED
        verdict = oc.worst(state.verdicts) if state.verdicts else oc.PASSED
        case = CaseResult(
            id=nodeid, area=area_of_nodeid(nodeid), outcome=outcome, verdict=verdict,
            gating=oc.gates(verdict, self.strict_should),
            clauses=[ClauseRef(c.id, c.level, c.section, c.title) for c in state.clauses],
            duration=round(state.duration, 6),
            message=state.message if verdict not in (oc.PASSED, oc.SKIPPED) else "",
            details=state.details if verdict not in (oc.PASSED, oc.SKIPPED) else "",
            skip_reason=state.skip_reason if outcome == oc.SKIPPED else "",
            features=state.features, platform=state.platform, baseline=state.baseline)
        self.cases.append(case)
        return case

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config):
        verdict = getattr(report, "vblk_verdict", None)
        if verdict is None or verdict == oc.PASSED or verdict == oc.SKIPPED:
            return None  # pytest's own words
        colour = {oc.DEVIATION: "yellow", oc.XFAILED: "yellow", oc.REJECT: "green"}
        return verdict, oc.LETTERS[verdict], (oc.WORDS[verdict],
                                              {colour.get(verdict, "red"): True})

    # --- the end ------------------------------------------------------------------------

    def results(self, exitstatus: int) -> RunResults:
        description = self.target
        if not description and self.target_object is not None:
            try:
                description = jsonable(self.target_object.describe())
            except Exception as exc:  # describing must not lose the results
                description = {"describe_error": f"{type(exc).__name__}: {exc}"}
        target = enrich_target(description or {})
        if self.target_object is not None:
            target.setdefault("kind", self.target_object.kind)
            target.setdefault("name", self.target_object.name)
        finished = datetime.datetime.now(datetime.UTC)
        run = {
            "started": self.started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"),
            "duration": round((finished - self.started).total_seconds(), 3),
            "host": socket.gethostname(),
            "user": _user(),
            "python": host_platform.python_version(),
            "pytest": pytest.__version__,
            "command_line": list(sys.argv),
            "pytest_args": [str(a) for a in self.config.invocation_params.args],
            "exit_status": int(exitstatus),
            "strict_should": self.strict_should,
            "baseline": None if self.baseline is None else {
                "path": self.baseline.path, "target": self.baseline.target,
                "entries": len(self.baseline.entries)},
        }
        suite = {"name": "virtio-blk-conformance", "version": conformance.__version__,
                 "spec": "VIRTIO 1.2"}
        return RunResults(suite=suite, run=run, target=target, platforms=self.platforms,
                          cases=list(self.cases))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.cases:
            return
        data = self.results(int(exitstatus))
        if self.results_path:
            try:
                self.written = str(write_results(self.results_path, data))
            except OSError as exc:
                sys.stderr.write(f"vblk-conformance: cannot write the results file "
                                 f"{self.results_path}: {exc.strerror or exc}\n")
        if self.alluredir:
            env = {k: v for k, v in data.target.items() if k != "command_line"}
            env["suite.version"] = data.suite["version"]
            env["host"] = data.run["host"]
            allure_labels.write_environment(self.alluredir, env)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.results_path and self.cases:
            terminalreporter.write_line(f"results file: {self.results_path}")
        if self.baseline is not None:
            if self.baseline.todo:
                terminalreporter.write_line(
                    f"baseline {self.baseline.path}: {len(self.baseline.todo)} entries still "
                    f"say 'explanation: TODO'")
            name = str(self.target.get("name") or "")
            if name and name != self.baseline.target:
                terminalreporter.write_line(
                    f"note: baseline {self.baseline.path} is for target "
                    f"{self.baseline.target!r}, this run's target is {name!r}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
