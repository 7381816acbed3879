"""The comparison matrix: grouping, differences first, per-area counts, Markdown, CLI."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from conformance.compare import NOT_RUN, build, run_labels, to_markdown
from conformance.results import CaseResult, ClauseRef, RunResults, write_results

P = "conformance/cases/"


def case(cid: str, outcome: str, message: str = "", clause: str = "blk.get-id") -> CaseResult:
    area = cid.split("::")[0].removeprefix("test_").removesuffix(".py")
    return CaseResult(P + cid, area, outcome, outcome, outcome == "failed",
                      [ClauseRef(clause, "MUST", "5.2.6", "Device Operation")], 0.01,
                      message=message, skip_reason="no MQ" if outcome == "skipped" else "")


def run(name: str, version: str, *cases: CaseResult) -> RunResults:
    return RunResults({}, {"started": "2025-01-01T00:00:00+00:00"},
                      {"kind": "qtest", "name": name, "qemu_version": version,
                       "device": "virtio-blk-pci,packed=on"}, [], list(cases))


A = run("qemu", "7.2.22",
        case("test_requests.py::test_get_id", "failed", "GET_ID returned junk"),
        case("test_requests.py::test_flush", "passed"),
        case("test_requests.py::test_unknown[2]", "failed", "IOERR, expected UNSUPP"),
        case("test_pci.py::test_vendor_id", "passed", clause="pci.vendor-id"),
        case("test_pci.py::test_revision_id", "deviation", "revision 0", "pci.revision-id"),
        case("test_features.py::test_mq", "skipped"))
B = run("qemu", "10.0.2",
        case("test_requests.py::test_get_id", "passed"),
        case("test_requests.py::test_flush", "passed"),
        case("test_requests.py::test_unknown[2]", "failed", "IOERR, expected UNSUPP"),
        case("test_pci.py::test_vendor_id", "passed", clause="pci.vendor-id"),
        case("test_pci.py::test_revision_id", "deviation", "revision 0", "pci.revision-id"),
        case("test_split_ring.py::test_new", "passed"))


def test_rows_grouped_by_area_with_differences_first():
    m = build([A, B], ["a.json", "b.json"])
    assert [r.label for r in m.runs] == ["qemu (QEMU 7.2.22)", "qemu (QEMU 10.0.2)"]
    assert m.areas == ["features", "pci", "requests", "split_ring"]
    assert [(r.area, r.name, r.differs) for r in m.rows] == [
        ("features", "test_mq", True),  # not run in B
        ("pci", "test_vendor_id", False),
        ("pci", "test_revision_id", False),
        ("requests", "test_get_id", True),
        ("requests", "test_flush", False),
        ("requests", "test_unknown[2]", False),
        ("split_ring", "test_new", True),  # not run in A
    ]
    assert [r.case for r in m.differing] == [P + "test_features.py::test_mq",
                                              P + "test_requests.py::test_get_id",
                                              P + "test_split_ring.py::test_new"]
    row = m.rows[0]
    assert [c.outcome for c in row.cells] == ["skipped", NOT_RUN]
    assert row.cells[0].note == "no MQ"
    assert m.rows[3].cells[0].note == "GET_ID returned junk"
    assert m.rows[3].cells[0].clauses == ("blk.get-id (MUST, 5.2.6)",)


def test_counts_per_area_and_total():
    m = build([A, B])
    assert m.counts("requests") == [Counter(failed=2, passed=1), Counter(failed=1, passed=2)]
    assert m.counts("pci") == [Counter(passed=1, deviation=1)] * 2
    assert m.counts() == [Counter(passed=2, failed=2, deviation=1, skipped=1, **{NOT_RUN: 1}),
                          Counter(passed=4, failed=1, deviation=1, **{NOT_RUN: 1})]
    assert [m.area_differences(a) for a in m.areas] == [1, 0, 1, 1]
    assert sum(sum(c.values()) for c in m.counts()) == 2 * len(m.rows)


def test_labels():
    assert run_labels([A, A]) == ["qemu (QEMU 7.2.22) #1", "qemu (QEMU 7.2.22) #2"]
    assert run_labels([A, B], ["old"]) == ["old", "qemu (QEMU 10.0.2)"]


def test_markdown():
    md = to_markdown(build([A, B], ["a.json", "b.json"]), "QEMU 7.2 vs 10.0")
    assert md.startswith("# QEMU 7.2 vs 10.0\n\n## Runs\n")
    assert ("| qemu (QEMU 7.2.22) | qemu (qtest) | 7.2.22 | virtio-blk-pci,packed=on | "
            "2025-01-01T00:00:00+00:00 | a.json |") in md
    assert ("| area | differ | qemu (QEMU 7.2.22) | qemu (QEMU 10.0.2) |\n"
            "|---|---:|---|---|\n"
            "| features | 1 | 1 skipped | 1 not run |\n") in md
    assert "| requests | 1 | 1 passed, 2 failed | 2 passed, 1 failed |\n" in md
    assert "| **all** | **3** | 2 passed, 2 failed, 1 deviation, 1 skipped, 1 not run | " \
           "4 passed, 1 failed, 1 deviation, 1 not run |" in md
    assert "## Differences (3 of 7 cases)" in md
    assert "| requests | `test_get_id` | blk.get-id | **FAIL** | pass |" in md
    assert ("- `conformance/cases/test_requests.py::test_get_id`\n"
            "  - qemu (QEMU 7.2.22): failed: GET_ID returned junk\n") in md
    assert "### pci (2 cases, 0 differ)" in md
    assert "| `test_revision_id` | pci.revision-id | *deviation* | *deviation* |" in md
    # Every table row has as many cells as its header.
    for block in md.split("\n\n"):
        rows = [ln for ln in block.splitlines() if ln.startswith("|")]
        if rows:
            widths = {ln.replace("\\|", "").count("|") for ln in rows}
            assert len(widths) == 1, block


def test_markdown_escapes_cell_text():
    bad = run("x|y", "1.0.0", case("test_a.py::test_b", "failed", "a | b <script>\nline 2"))
    md = to_markdown(build([bad, A]))
    assert "x\\|y" in md and "a \\| b &lt;script&gt; line 2" in md
    assert "<script>" not in md


def test_no_difference():
    md = to_markdown(build([A, A]))
    assert "## Differences (0 of 6 cases)\n\nEvery case has the same outcome in every run." in md


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_compare_writes_markdown_and_html(tmp_path):
    a, b = write_results(tmp_path / "a.json", A), write_results(tmp_path / "b.json", B)
    r = run_cli("compare", str(a), str(b), "--markdown", str(tmp_path / "c.md"),
                "--html", str(tmp_path / "c.html"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (f"7 cases, 3 differ; wrote {tmp_path / 'c.md'}; "
                                f"wrote {tmp_path / 'c.html'}")
    assert (tmp_path / "c.md").read_text().startswith(
        "# Conformance comparison: qemu (QEMU 7.2.22) vs qemu (QEMU 10.0.2)\n")
    assert (tmp_path / "c.html").read_text().startswith("<!DOCTYPE html>")
    stdout = run_cli("compare", str(a), str(b))
    assert stdout.stdout.startswith("# Conformance comparison") and stdout.returncode == 0
    gate = run_cli("compare", str(a), str(b), "--fail-on-difference", "--markdown", "-")
    assert gate.returncode == 1
    same = run_cli("compare", str(a), str(a), "--fail-on-difference", "--markdown", "-")
    assert same.returncode == 0


@pytest.mark.parametrize("args,message", [
    (["ONE"], "compare: give two or more results files"),
    (["ONE", "MISSING"], "MISSING: cannot read the results file: No such file or directory"),
    (["ONE", "ONE", "--label", "a", "--label", "b", "--label", "c"],
     "--label: 3 labels for 2 runs"),
    (["ONE", "NOTJSON"], "NOTJSON: not JSON: Expecting value at line 1, column 1"),
])
def test_cli_compare_bad_input_is_one_line(tmp_path, args, message):
    one = write_results(tmp_path / "one.json", A)
    (tmp_path / "bad.json").write_text("nope")
    subst = {"ONE": str(one), "MISSING": str(tmp_path / "missing.json"),
             "NOTJSON": str(tmp_path / "bad.json")}
    r = run_cli("compare", *[subst.get(a, a) for a in args])
    assert r.returncode == 4
    expected = message
    for k, v in subst.items():
        expected = expected.replace(k, v)
    assert r.stderr.strip().splitlines() == [f"vblk-conformance: error: {expected}"]


def test_run_options_are_not_abbreviated():
    """pytest's ``--co`` must reach pytest, not match ``--compare-html``/``--compare-markdown``."""
    from conformance.cli import build_parser

    args, extra = build_parser().parse_known_args(["run", "--co", "-q", "--results", "r.json"])
    assert extra == ["--co", "-q"] and args.results == "r.json"
