"""Baselines: strict parsing with one-line errors, verdicts, update, and CI gating."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from fake_cases import PREFIX, by_case, run_fake

from conformance.baseline import (
    Baseline,
    BaselineError,
    Entry,
    dump_baseline,
    judge,
    load_baseline,
    parse_baseline,
    update,
)
from conformance.clauses import load_registry

GOOD = """\
# Known deviations of QEMU 7.2
version: 1
target: qemu-7.2
deviations:
  - case: conformance/cases/test_requests.py::test_get_id
    outcome: failed          # failed | deviation | error
    clauses: [blk.get-id]
    explanation: >-
      QEMU copies the serial with strlen, not into all 20 bytes
      (hw/block/virtio-blk.c).
  - case: conformance/cases/test_pci.py::test_revision_id
    outcome: deviation
    clauses: [pci.revision-id]
    explanation: TODO
"""


def write(tmp_path, text, name="b.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_parses(tmp_path):
    b = load_baseline(write(tmp_path, GOOD), load_registry())
    assert b.target == "qemu-7.2"
    assert list(b.entries) == ["conformance/cases/test_requests.py::test_get_id",
                               "conformance/cases/test_pci.py::test_revision_id"]
    e = b.get("conformance/cases/test_requests.py::test_get_id")
    assert e == Entry("conformance/cases/test_requests.py::test_get_id", "failed",
                      ("blk.get-id",), "QEMU copies the serial with strlen, not into all 20 "
                                       "bytes (hw/block/virtio-blk.c).")
    assert [t.case for t in b.todo] == ["conformance/cases/test_pci.py::test_revision_id"]
    assert b.header == "# Known deviations of QEMU 7.2"


ENTRY = ("  - case: conformance/cases/test_pci.py::test_vendor_id\n"
         "    outcome: failed\n    clauses: [pci.vendor-id]\n    explanation: why\n")
HEAD = "version: 1\ntarget: t\ndeviations:\n"
WHERE = "entry 1 (conformance/cases/test_pci.py::test_vendor_id)"


@pytest.mark.parametrize("text,message", [
    ("- 1\n", "expected a mapping with keys version, target, deviations, got list"),
    (HEAD + ENTRY + "extra: 1\n", "extra: unknown key (known: version, target, deviations)"),
    ("version: 1\ndeviations: []\n", "target: missing"),
    ("version: 2\ntarget: t\ndeviations: []\n",
     "version: this suite reads baseline version 1, got 2"),
    ("version: 1\ntarget: ''\ndeviations: []\n", "target: expected the target's name, got ''"),
    ("version: 1\ntarget: t\ndeviations: {a: 1}\n",
     "deviations: expected a list of entries, got dict"),
    (HEAD + "  - just a string\n", "entry 1: expected a mapping with keys case, outcome, "
                                   "clauses, explanation, got str"),
    (HEAD + ENTRY + "    why: x\n",
     WHERE + ": why: unknown key (known: case, outcome, clauses, explanation)"),
    (HEAD + ENTRY.replace("    explanation: why\n", ""), WHERE + ": explanation: missing"),
    (HEAD + ENTRY.replace("outcome: failed", "outcome: broken"),
     WHERE + ": outcome: expected one of failed, deviation, error, wedged, got 'broken'"),
    (HEAD + ENTRY.replace("[pci.vendor-id]", "[]"),
     WHERE + ": clauses: expected a non-empty list of clause IDs, got []"),
    (HEAD + ENTRY.replace("[pci.vendor-id]", "[pci.no-such-clause]"),
     WHERE + ": clauses: 'pci.no-such-clause' is not in the clause registry"),
    (HEAD + ENTRY.replace("[pci.vendor-id]", "[Vendor ID]"),
     WHERE + ": clauses: 'Vendor ID' is not a clause ID (area.name)"),
    (HEAD + ENTRY.replace("explanation: why", "explanation: ''"),
     WHERE + ": explanation: expected text saying why (or TODO while nobody has looked), "
             "got ''"),
    (HEAD + ENTRY.replace("conformance/cases/test_pci.py::test_vendor_id", "test_vendor_id"),
     "entry 1 (test_vendor_id): case: expected a case ID like "
     "'conformance/cases/test_x.py::test_y', got 'test_vendor_id'"),
    (HEAD + ENTRY + ENTRY, "entry 2 (conformance/cases/test_pci.py::test_vendor_id): case: "
                           "listed twice (first in entry 1)"),
    (HEAD + ENTRY + "    outcome: error\n",
     "not valid YAML at line 8, column 5: key 'outcome' appears twice (first on line 5)"),
    ("version: 1\ntarget: [unclosed\n", "not valid YAML at line 3, column 1: "),
])
def test_malformed_baseline_is_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(BaselineError) as exc:
        load_baseline(path, load_registry())
    line = str(exc.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    assert message in line


def test_unreadable_baseline(tmp_path):
    with pytest.raises(BaselineError, match=r"missing.yaml: cannot read the baseline: "
                                            r"No such file or directory$"):
        load_baseline(tmp_path / "missing.yaml")


E = Entry("conformance/cases/test_a.py::test_b", "failed", ("blk.get-id",), "QEMU does X\nmore")


@pytest.mark.parametrize("entry,outcome,verdict,note", [
    (None, "failed", "failed", ""),
    (None, "passed", "passed", ""),
    (E, "failed", "xfailed", "known failed (baseline): QEMU does X"),
    (E, "passed", "xpassed", "baseline is stale: it lists this case as failed, but it passed; "
                             "update it (vblk-conformance baseline update)"),
    (E, "reject", "xpassed", "baseline is stale: it lists this case as failed, but it reject; "
                             "update it (vblk-conformance baseline update)"),
    (E, "skipped", "skipped", "baseline entry not exercised (the case was skipped)"),
    (E, "error", "error", "baseline lists failed, got error"),
    (E, "deviation", "deviation", "baseline lists failed, got deviation"),
])
def test_judge(entry, outcome, verdict, note):
    assert judge(entry, outcome) == (verdict, note)


def _case(cid, outcome, clauses=("blk.get-id",)):
    return {"id": f"conformance/cases/test_a.py::{cid}", "outcome": outcome,
            "clauses": [{"id": c, "level": "MUST", "section": "5", "title": "t"} for c in clauses]}


def test_update_keeps_explanations_and_marks_new_ones_todo():
    p = "conformance/cases/test_a.py::"
    old = Baseline("qemu-7.2", {
        p + "still": Entry(p + "still", "failed", ("blk.get-id",), "known since 7.2"),
        p + "fixed": Entry(p + "fixed", "failed", ("blk.get-id",), "was broken"),
        p + "skipped": Entry(p + "skipped", "error", ("blk.get-id",), "needs MQ"),
        p + "notrun": Entry(p + "notrun", "failed", ("blk.get-id",), "not in this run"),
        p + "gone": Entry(p + "gone", "failed", ("blk.get-id",), "case removed"),
        p + "changed": Entry(p + "changed", "failed", ("blk.get-id",), "now a SHOULD"),
    }, header="# head")
    cases = [_case("still", "failed"), _case("fixed", "passed"), _case("skipped", "skipped"),
             _case("changed", "deviation", ("pci.revision-id",)), _case("new", "error"),
             _case("fine", "passed")]
    new, report = update(old, "ignored", cases, suite_cases={p + n for n in (
        "still", "fixed", "skipped", "notrun", "changed", "new", "fine")})
    assert new.target == "qemu-7.2" and new.header == "# head"
    assert {k.removeprefix(p): (e.outcome, e.clauses, e.explanation)
            for k, e in new.entries.items()} == {
        "still": ("failed", ("blk.get-id",), "known since 7.2"),
        "skipped": ("error", ("blk.get-id",), "needs MQ"),
        "notrun": ("failed", ("blk.get-id",), "not in this run"),
        "changed": ("deviation", ("pci.revision-id",), "now a SHOULD"),
        "new": ("error", ("blk.get-id",), "TODO"),
    }
    assert report.added == [p + "new"]
    assert report.removed == [p + "fixed"]
    assert report.changed == [p + "changed"]
    assert report.dropped == [p + "gone"]
    assert sorted(report.kept) == [p + "notrun", p + "skipped"]
    assert [e.case for e in new.todo] == [p + "new"]


def test_dump_reads_back_and_keeps_the_layout(tmp_path):
    p = "conformance/cases/test_a.py::"
    tricky = [
        "one line",
        ("a long explanation " * 12).strip(),
        "first paragraph\nsecond: with a colon # and a hash",
        "an indented\n   second line",  # folding cannot carry it: written quoted
        "\"quotes\" and 'apostrophes' and unicode: é",
    ]
    entries = {p + f"t[{i}]": Entry(p + f"t[{i}]", "failed", ("blk.get-id", "blk.status-ok"), t)
               for i, t in enumerate(tricky)}
    b = Baseline("qemu 10.0: packed", entries, header="# header line")
    text = dump_baseline(b)
    path = write(tmp_path, text)
    again = load_baseline(path, load_registry())
    assert again.entries == entries and again.target == b.target
    assert text.startswith("# header line\nversion: 1\ntarget: 'qemu 10.0: packed'\n") or \
        text.startswith('# header line\nversion: 1\ntarget: "qemu 10.0: packed"\n')
    assert "  - case: conformance/cases/test_a.py::t[0]\n    outcome: failed\n" \
           "    clauses: [blk.get-id, blk.status-ok]\n    explanation: >-\n      one line\n" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert dump_baseline(Baseline("t", {})) == "version: 1\ntarget: t\ndeviations: []\n"


def test_parse_accepts_empty_deviations():
    assert parse_baseline({"version": 1, "target": "t", "deviations": None}).entries == {}


# --- gating (made-up cases through the real plugin) ------------------------------------


def baseline_for(tmp_path, *entries: tuple[str, str, str]) -> str:
    """A baseline file listing (case, outcome, clause) of the fake cases."""
    data = {"version": 1, "target": "reference", "deviations": [
        {"case": PREFIX + case, "outcome": outcome, "clauses": [clause],
         "explanation": f"known: {case}"} for case, outcome, clause in entries]}
    path = tmp_path / "baseline.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_listed_failure_unchanged_passes(tmp_path, monkeypatch):
    b = baseline_for(tmp_path, ("test_must_fails", "failed", "pci.vendor-id"),
                     ("test_setup_error", "error", "pci.vendor-id"))
    code, data = run_fake(tmp_path, monkeypatch, "--baseline", b, "-k",
                          "test_pass or test_must_fails or test_setup_error")
    assert code == 0
    cases = by_case(data)
    assert (cases["test_must_fails"]["outcome"], cases["test_must_fails"]["verdict"]) == \
        ("failed", "xfailed")
    assert cases["test_setup_error"]["verdict"] == "xfailed"
    assert cases["test_must_fails"]["baseline"] == {
        "outcome": "failed", "explanation": "known: test_must_fails",
        "note": "known failed (baseline): known: test_must_fails"}
    assert data["run"]["baseline"] == {"path": b, "target": "reference", "entries": 2}


def test_new_failure_fails(tmp_path, monkeypatch):
    b = baseline_for(tmp_path, ("test_must_fails", "failed", "pci.vendor-id"))
    code, data = run_fake(tmp_path, monkeypatch, "--baseline", b, "-k",
                          "test_must_fails or test_mixed_levels_fails")
    assert code == 1
    cases = by_case(data)
    assert cases["test_must_fails"]["verdict"] == "xfailed"
    assert (cases["test_mixed_levels_fails"]["verdict"],
            cases["test_mixed_levels_fails"]["gating"]) == ("failed", True)


def test_listed_outcome_changed_still_gates(tmp_path, monkeypatch):
    b = baseline_for(tmp_path, ("test_must_fails", "error", "pci.vendor-id"))
    code, data = run_fake(tmp_path, monkeypatch, "--baseline", b, "-k", "test_must_fails")
    assert code == 1
    assert by_case(data)["test_must_fails"]["baseline"]["note"] == \
        "baseline lists error, got failed"


def test_fixed_deviation_fails_until_the_baseline_is_updated(tmp_path, monkeypatch, capsys):
    from conformance.cli import main

    b = baseline_for(tmp_path, ("test_pass", "failed", "pci.vendor-id"),
                     ("test_must_fails", "failed", "pci.vendor-id"))
    code, data = run_fake(tmp_path, monkeypatch, "--baseline", b, "-k",
                          "test_pass or test_must_fails")
    assert code == 1
    case = by_case(data)["test_pass"]
    assert (case["outcome"], case["verdict"], case["gating"]) == ("passed", "xpassed", True)
    assert case["message"].startswith("baseline is stale: it lists this case as failed")
    assert "XPASS conformance/cases/test_fake.py::test_pass: baseline is stale" in \
        capsys.readouterr().out

    (tmp_path / "run1.json").write_text(json.dumps(data))
    assert main(["baseline", "update", "--results", str(tmp_path / "run1.json"),
                 "--baseline", b]) == 0
    out = capsys.readouterr().out
    assert "1 entries: 0 added, 0 changed, 1 removed (now pass)" in out
    assert f"removed {PREFIX}test_pass" in out
    updated = load_baseline(b)
    assert list(updated.entries) == [PREFIX + "test_must_fails"]
    assert updated.get(PREFIX + "test_must_fails").explanation == "known: test_must_fails"

    code, data = run_fake(tmp_path, monkeypatch, "--baseline", b, "-k",
                          "test_pass or test_must_fails")
    assert code == 0
    assert by_case(data)["test_pass"]["verdict"] == "passed"


def test_update_with_new_deviation_exits_1_until_explained(tmp_path, monkeypatch, capsys):
    from conformance.cli import main

    code, data = run_fake(tmp_path, monkeypatch, "-k", "test_pass or test_must_fails")
    assert code == 1
    results = tmp_path / "run.json"
    results.write_text(json.dumps(data))
    target = tmp_path / "new" / "baseline.yaml"
    assert main(["baseline", "update", "--results", str(results), "--baseline",
                 str(target)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (f"{target}: 1 entries say 'explanation: TODO'; write why the device "
                           f"does this, then commit the baseline")
    b = load_baseline(target)
    assert b.target == "reference"
    assert [(e.case, e.outcome, e.clauses, e.explanation) for e in b.entries.values()] == [
        (PREFIX + "test_must_fails", "failed", ("pci.vendor-id",), "TODO")]
    # The TODO baseline still gates correctly: the listed failure is an xfail.
    code, _ = run_fake(tmp_path, monkeypatch, "--baseline", str(target), "-k",
                       "test_pass or test_must_fails")
    assert code == 0


def test_unknown_case_in_baseline_is_one_line(tmp_path, monkeypatch, capsys):
    b = baseline_for(tmp_path, ("test_renamed", "failed", "pci.vendor-id"))
    code, data = run_fake(tmp_path, monkeypatch, "--baseline", b)
    assert code == 4
    assert data == {}  # nothing ran
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [f"ERROR: {b}: entry 1 ({PREFIX}test_renamed): case: no such case in the "
                     f"suite (renamed or removed? update the baseline)"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_malformed_baseline_is_one_line(tmp_path):
    bad = write(tmp_path, HEAD + ENTRY.replace("outcome: failed", "outcome: flaky"))
    r = run_cli("run", "--no-results", "--baseline", str(bad))
    assert r.returncode == 4
    assert r.stderr.strip().splitlines() == [
        f"vblk-conformance: error: {bad}: {WHERE}: outcome: expected one of failed, deviation, "
        f"error, wedged, got 'flaky'"]


def test_cli_baseline_check(tmp_path):
    good = write(tmp_path, GOOD, "good.yaml")
    r = run_cli("baseline", "check", str(good))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{good}: target qemu-7.2: 2 entries, 1 without an explanation"
    unknown = write(tmp_path, GOOD.replace("test_get_id", "test_get_serial"), "unknown.yaml")
    r = run_cli("baseline", "check", str(unknown))
    assert r.returncode == 4
    # the last line: under pytest-xdist, a third-party plugin may warn before it
    assert r.stderr.strip().splitlines()[-1] == (
        f"{unknown}: entry 1 (conformance/cases/test_requests.py::test_get_serial): case: no "
        f"such case in the suite (renamed or removed? update the baseline)")


# --- gating on the real cases and the reference device ---------------------------------


CASE = "conformance/cases/test_features.py::test_version_1_offered"


def test_gating_on_the_reference_device(tmp_path):
    """The three CI stories end to end: new failure, unchanged deviation, fixed deviation."""
    broken = write(tmp_path, "kind: reference\nname: ref\ndevice: {defects: [no-version-1]}\n",
                   "broken.yaml")
    healthy = write(tmp_path, "kind: reference\nname: ref\n", "healthy.yaml")
    empty = write(tmp_path, "version: 1\ntarget: ref\ndeviations: []\n", "empty.yaml")
    listed = write(tmp_path, f"""\
        version: 1
        target: ref
        deviations:
          - case: {CASE}
            outcome: failed
            clauses: [feat.version-1-offered]
            explanation: the device under test is built without VERSION_1
        """, "listed.yaml")
    sel = ["-q", "--clause", "feat.version-1-offered"]
    results = tmp_path / "r.json"

    new_failure = run_cli("run", "--target-config", str(broken), "--baseline", str(empty),
                          "--results", str(results), *sel)
    assert new_failure.returncode == 1, new_failure.stdout[-2000:]

    unchanged = run_cli("run", "--target-config", str(broken), "--baseline", str(listed),
                        "--results", str(results), *sel)
    assert unchanged.returncode == 0, unchanged.stdout[-2000:]
    assert "1 xfailed" in unchanged.stdout
    assert json.loads(results.read_text())["cases"][0]["verdict"] == "xfailed"

    fixed = run_cli("run", "--target-config", str(healthy), "--baseline", str(listed),
                    "--results", str(results), *sel)
    assert fixed.returncode == 1
    assert f"XPASS {CASE}: baseline is stale" in fixed.stdout

    upd = run_cli("baseline", "update", "--results", str(results), "--baseline", str(listed))
    assert upd.returncode == 0, upd.stderr
    assert load_baseline(listed).entries == {}
    again = run_cli("run", "--target-config", str(healthy), "--baseline", str(listed),
                    "--results", str(results), *sel)
    assert again.returncode == 0, again.stdout[-2000:]
