"""The outcome model: pure rules, and what the plugin makes of real pytest reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from fake_cases import by_case, run_fake

from conformance import outcomes as oc

# --- the rules ----------------------------------------------------------------------


@pytest.mark.parametrize("levels,assertion,expected", [
    (["SHOULD"], True, "deviation"),
    (["SHOULD NOT", "MAY"], True, "deviation"),
    (["SHOULD", "MUST"], True, "failed"),
    (["MUST NOT"], True, "failed"),
    (["SHOULD"], False, "failed"),  # a timeout is not excused by a SHOULD
    ([], True, "failed"),  # no clause: never a deviation
])
def test_failure_outcome(levels, assertion, expected):
    assert oc.failure_outcome(levels, assertion) == expected


def test_gating():
    gating = {v for v in oc.VERDICTS if oc.gates(v)}
    assert gating == {"failed", "wedged", "error", "xpassed"}
    assert {v for v in oc.VERDICTS if oc.gates(v, strict_should=True)} == gating | {"deviation"}


def test_worst_phase_decides():
    assert oc.worst(["passed", "error"]) == "error"
    assert oc.worst(["skipped"]) == "skipped"
    assert oc.worst(["deviation", "failed"]) == "failed"
    assert oc.worst([]) == "passed"


def test_severity_from_strictest_level():
    assert oc.severity(["MAY", "MUST NOT"]) == "critical"
    assert oc.severity(["SHOULD NOT", "MAY"]) == "normal"
    assert oc.severity(["MAY"]) == "minor"


def test_declared_outcomes():
    reject, wedged = oc.OutcomeMark("reject", "x"), oc.OutcomeMark("wedged", "y")
    assert oc.apply_mark("passed", reject) == "reject"
    assert oc.apply_mark("failed", reject) == "failed"  # a failed check saw no clean refusal
    assert oc.apply_mark("passed", wedged) == "wedged"
    assert oc.apply_mark("failed", wedged) == "wedged"
    assert oc.apply_mark("error", wedged) == "error"
    assert oc.apply_mark("passed", None) == "passed"
    with pytest.raises(ValueError, match="unknown declared outcome 'odd'"):
        oc.apply_mark("passed", oc.OutcomeMark("odd", ""))


# --- through the plugin -------------------------------------------------------------

EXPECTED = {
    # case: (outcome, verdict, gating)
    "test_pass": ("passed", "passed", False),
    "test_must_fails": ("failed", "failed", True),
    "test_should_fails": ("deviation", "deviation", False),
    "test_should_times_out": ("failed", "failed", True),
    "test_mixed_levels_fails": ("failed", "failed", True),
    "test_skipped": ("skipped", "skipped", False),
    "test_setup_error": ("error", "error", True),
    "test_reject": ("reject", "reject", False),
    "test_wedged": ("wedged", "wedged", True),
}


def test_every_outcome_recorded(tmp_path, monkeypatch):
    code, data = run_fake(tmp_path, monkeypatch)
    got = {k: (c["outcome"], c["verdict"], c["gating"]) for k, c in by_case(data).items()}
    assert got == EXPECTED
    assert code == 1
    cases = by_case(data)
    assert cases["test_should_fails"]["message"] == "non-transitional device with revision ID 0"
    assert cases["test_skipped"]["skip_reason"] == "device does not offer VIRTIO_BLK_F_RO"
    assert cases["test_setup_error"]["message"] == "RuntimeError: setup trouble"
    assert cases["test_wedged"]["message"] == "no completion for the health-check read"
    assert "AssertionError" in cases["test_must_fails"]["details"]
    assert data["counts"] == {"deviation": 1, "error": 1, "failed": 3, "passed": 1,
                              "reject": 1, "skipped": 1, "wedged": 1}


def test_deviation_does_not_gate(tmp_path, monkeypatch, capsys):
    code, data = run_fake(tmp_path, monkeypatch, "-k", "test_pass or test_should_fails "
                          "or test_skipped or test_reject")
    out = capsys.readouterr().out
    assert code == 0
    assert data["run"]["exit_status"] == 0
    assert by_case(data)["test_should_fails"]["verdict"] == "deviation"
    assert "1 passed, 1 skipped, 5 deselected, 1 deviation, 1 reject in" in out
    assert "DEVIATION conformance/cases/test_fake.py::test_should_fails: non-transitional" in out
    assert out.startswith("fake (4) .Dsr ")  # the -q progress line of the area


def test_strict_should_makes_deviation_gate(tmp_path, monkeypatch):
    code, data = run_fake(tmp_path, monkeypatch, "-k", "test_pass or test_should_fails",
                          "--strict-should")
    assert code == 1
    case = by_case(data)["test_should_fails"]
    assert (case["outcome"], case["verdict"], case["gating"]) == ("deviation", "deviation", True)
    assert data["run"]["strict_should"] is True


def test_junit_carries_clauses_and_outcomes(tmp_path, monkeypatch):
    xml = tmp_path / "junit.xml"
    run_fake(tmp_path, monkeypatch, f"--junitxml={xml}")
    cases = {tc.get("name"): tc for tc in ET.parse(xml).getroot().iter("testcase")}
    props = {name: {p.get("name"): p.get("value") for p in tc.iter("property")}
             for name, tc in cases.items()}
    assert props["test_should_fails"] == {
        "clauses": "pci.revision-id", "levels": "SHOULD", "outcome": "deviation",
        "verdict": "deviation", "message": "non-transitional device with revision ID 0"}
    assert props["test_mixed_levels_fails"]["levels"] == "MUST SHOULD"
    assert props["test_pass"] == {"clauses": "pci.vendor-id", "levels": "MUST",
                                  "outcome": "passed", "verdict": "passed"}
    # A deviation is an expected failure to JUnit readers; a MUST failure is a failure.
    skipped = cases["test_should_fails"].find("skipped")
    assert skipped is not None and skipped.get("type") == "pytest.xfail"
    assert skipped.get("message").startswith("deviation (SHOULD only: pci.revision-id): ")
    assert cases["test_must_fails"].find("failure") is not None
    assert cases["test_wedged"].find("failure") is not None
    assert cases["test_reject"].find("failure") is None
