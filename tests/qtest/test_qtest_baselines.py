"""The QEMU baselines: strict files, one per example target, every entry explained.

Whether a QEMU still matches its baseline is checked by ci/test.sh, which runs
the catalogue with ``--baseline``; here only the files themselves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.baseline import load_baseline
from conformance.clauses import load_registry
from conformance.targets import load_target_file

ROOT = Path(__file__).resolve().parents[2]
BASELINES = sorted((ROOT / "baselines").glob("qemu-*.yaml"))
EXPECTED = {"qemu-7.2", "qemu-10.0", "qemu-7.2-packed", "qemu-10.0-packed",
            "qemu-10.0-pc-q35-7.2"}


def test_one_baseline_per_qemu_example():
    assert {p.stem for p in BASELINES} == EXPECTED
    examples = {p.stem for p in (ROOT / "examples").glob("*.yaml")
                if load_target_file(p).kind == "qtest"}
    assert examples == EXPECTED


@pytest.mark.parametrize("path", BASELINES, ids=[p.stem for p in BASELINES])
def test_baseline_is_strict_and_explained(path):
    baseline = load_baseline(path, load_registry())
    spec = load_target_file(ROOT / "examples" / path.name)
    assert baseline.target == spec.name == path.stem
    assert baseline.entries, "a QEMU baseline with no deviation at all is suspicious"
    for entry in baseline.entries.values():
        assert not entry.needs_explanation, f"{entry.case}: explanation still TODO"
        # Every explanation names the QEMU version and a source file it traced.
        assert "QEMU " in entry.explanation and "hw/" in entry.explanation, entry.case
        assert entry.case.startswith("conformance/cases/test_")
