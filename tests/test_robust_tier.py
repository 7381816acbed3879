"""The robustness tier: its shape, its verdict model, and the reference device surviving it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conformance import spec
from conformance.clauses import load_registry
from conformance.fuzz.rawring import Observation
from conformance.robustness import (
    FAILED,
    IOERR,
    OK,
    PASSED,
    REJECT,
    UNANSWERABLE,
    UNSUPP,
    WEDGED,
    Health,
    allowed,
    decide,
    judge,
    probe_sectors,
)
from conformance.runargs import case_run_args

CASES = Path(__file__).resolve().parents[1] / "conformance" / "cases"
MODULES = sorted(CASES.glob("test_robust_*.py"))
THEMES = {"layout", "sectors", "chains", "ring_state", "state_machine"}


def _case_functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def test_every_theme_has_its_module():
    assert {p.stem.removeprefix("test_robust_") for p in MODULES} == THEMES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_module_marks_every_case_robustness(path):
    text = path.read_text()
    assert "pytestmark = pytest.mark.robustness" in text


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_every_case_reaches_a_verdict(path):
    """Each case uses the harness and ends in robust.run / verdict / health_only."""
    for fn in _case_functions(path):
        args = [a.arg for a in fn.args.args]
        assert "robust" in args, f"{path.stem}::{fn.name} does not take the robust fixture"
        src = ast.get_source_segment(path.read_text(), fn) or ""
        assert any(call in src for call in ("robust.run(", "robust.verdict(",
                                            "robust.health_only(")), (
            f"{path.stem}::{fn.name} never asks for a verdict")


def test_driver_clauses_are_cited_only_by_the_tier():
    from conformance.collect import collect_case_clauses

    cited = collect_case_clauses()
    registry = load_registry()
    driver = {cid for cid, c in registry.items() if c.area == "driver"}
    outside = {cid: [n for n in nodes if "test_robust_" not in n]
               for cid, nodes in cited.items() if cid in driver}
    assert {cid: n for cid, n in outside.items() if n} == {}
    assert driver - set(cited) == set(), "driver clauses no robustness case cites"


def test_the_tier_has_at_least_80_cases():
    from conformance.collect import collect_case_clauses

    nodes = {n for ns in collect_case_clauses().values() for n in ns if "test_robust_" in n}
    assert len(nodes) >= 80


# --- the verdict model --------------------------------------------------------------------


def obs(used=(), status=None, status_byte=None, needs_reset=False, memory=()):
    o = Observation(used=list(used), status=status_byte if status_byte is not None else status,
                    device_status=spec.STATUS_DEVICE_NEEDS_RESET if needs_reset else 0)
    o.memory = list(memory)
    return o


HEALTHY = Health(True)


def test_error_status_in_the_allowed_set_is_a_reject():
    v = decide(obs([(0, 1)], IOERR), allowed(IOERR, UNSUPP), HEALTHY, writable_len=513)
    assert (v.outcome, v.severity) == (REJECT, "none")


def test_ok_completion_is_a_pass():
    v = decide(obs([(0, 513)], OK), allowed(OK, ok_len=513), HEALTHY, writable_len=513)
    assert v.outcome == PASSED


def test_status_outside_the_set_fails_naming_both():
    v = decide(obs([(0, 1)], OK), allowed(IOERR), HEALTHY, writable_len=513)
    assert v.outcome == FAILED
    assert "completed with OK; allowed: complete with IOERR" in v.problems[0]


def test_needs_reset_where_only_a_status_is_allowed_fails():
    problems = judge(obs(needs_reset=True), allowed(IOERR), 513)
    assert problems == ["the device set DEVICE_NEEDS_RESET; allowed: complete with IOERR"]


def test_unused_without_needs_reset_cites_2_1_2():
    problems = judge(obs(), UNANSWERABLE, 17)
    assert problems == ["the device left the request unused and did not set "
                        "DEVICE_NEEDS_RESET (2.1.2); allowed: set DEVICE_NEEDS_RESET"]


def test_error_used_len_must_be_status_or_whole_buffer():
    assert judge(obs([(0, 1)], IOERR), allowed(IOERR), 513) == []
    assert judge(obs([(0, 513)], IOERR), allowed(IOERR), 513) == []
    assert judge(obs([(0, 17)], IOERR), allowed(IOERR), 513) == [
        "IOERR with used len 17: expected 1 (the status byte) or 513 (2.7.8.2)"]


def test_ok_used_len_is_exact():
    assert judge(obs([(0, 512)], OK), allowed(OK, ok_len=513), 513) == [
        "status OK with used len 512, expected 513 (bytes written + status, 2.7.8.2)"]


def test_memory_corruption_fails_even_with_an_allowed_status():
    v = decide(obs([(0, 1)], IOERR, memory=["device wrote 1 byte(s) into guard bytes"]),
               allowed(IOERR), HEALTHY, writable_len=513)
    assert (v.outcome, v.severity) == (FAILED, "corruption")


def test_unhealthy_device_is_wedged_and_keeps_the_worse_severity():
    sick = Health(False, "a well-formed request after reset did not complete", "wedged")
    v = decide(obs([(0, 1)], IOERR, memory=["device wrote into guard bytes"]),
               allowed(IOERR), sick, writable_len=513)
    assert (v.outcome, v.severity) == (WEDGED, "corruption")
    assert v.problems[0] == "a well-formed request after reset did not complete"


def test_crash_is_wedged_crash_or_hang():
    v = decide(None, None, HEALTHY, crash="QEMU was killed by SIGSEGV")
    assert (v.outcome, v.severity, v.problems) == (WEDGED, "crash-or-hang",
                                                   ["QEMU was killed by SIGSEGV"])


def test_disk_change_outside_the_request_is_corruption():
    v = decide(obs([(0, 1)], IOERR), allowed(IOERR),
               Health(True, disk=["disk sector 5 changed, outside the request's range"],
                      severity="corruption"), writable_len=513)
    assert (v.outcome, v.severity) == (FAILED, "corruption")


def test_probe_sectors_cover_both_ends_and_suspects():
    assert probe_sectors(1000, [999, 5000, 7]) == [0, 1, 5, 7, 500, 998, 999]


# --- the reference device survives the whole tier ---------------------------------------------


class _InternalErrors:
    """Collects exceptions the reference device swallowed while a case ran."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item):
        plat = getattr(item, "funcargs", {}).get("platform")
        device = getattr(plat, "device", None)
        if device is not None and device.internal_errors:
            self.errors[item.nodeid] = list(device.internal_errors)
        return (yield)


def test_reference_device_survives_the_whole_tier(tmp_path):
    from conformance.selfcheck import run_outcomes

    target = tmp_path / "reference.yaml"
    target.write_text("kind: reference\nname: reference\n")
    watcher = _InternalErrors()
    outcomes = _run_with(run_outcomes, target, watcher)
    tier = {n: o for n, o in outcomes.items() if "test_robust_" in n}
    assert len(tier) >= 80
    bad = {n: o for n, o in tier.items() if o[0] not in ("passed", "reject", "skipped")}
    assert bad == {}
    assert watcher.errors == {}


def _run_with(run_outcomes, target, plugin):
    import contextlib
    import io

    from conformance.summary import case_outcomes

    class _Recorder:
        def __init__(self):
            self.reports = []

        def pytest_runtest_logreport(self, report):
            self.reports.append(report)

    rec = _Recorder()
    with contextlib.redirect_stdout(io.StringIO()):
        code = pytest.main([*case_run_args(), "-q", "-m", "robustness", "--target-config",
                            str(target), "-p", "no:randomly"], plugins=[rec, plugin])
    assert code in (0, 1), f"the tier run did not complete (exit {code})"
    return case_outcomes(rec.reports)
