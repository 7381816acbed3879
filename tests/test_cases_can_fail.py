"""Every conformance case must be able to fail, and every defect must be caught.

For each injectable defect of the reference device, the cases that cite the
clauses the defect violates run against a device with that defect; at least
one must fail.  Across all defects, every case of the catalogue must fail at
least once: a case that passes whatever is broken checks nothing.  The
defect-free device passing every case is the CI step that runs
``vblk-conformance run`` on the reference target.
"""

from __future__ import annotations

import pytest

from conformance.clauses import load_registry
from conformance.collect import collect_case_clauses
from conformance.mutants import format_kill_table, kill_table
from reference_device.defects import DEFECTS


def test_defects_name_known_clauses():
    registry = load_registry()
    unknown = {d.name: [c for c in d.clauses if c not in registry]
               for d in DEFECTS.values()}
    assert not {k: v for k, v in unknown.items() if v}
    assert all(d.clauses for d in DEFECTS.values())


@pytest.fixture(scope="module")
def table():
    return kill_table(sorted(DEFECTS))


def test_every_defect_is_caught(table):
    survivors = [r for r in table if not r.killed]
    assert not survivors, "\n" + format_kill_table(table)


def test_every_case_fails_under_some_defect(table):
    cases = {n for ids in collect_case_clauses().values() for n in ids}
    killed = {n for r in table for n in r.killed_by}
    never = sorted(cases - killed)
    assert not never, f"{len(never)} case(s) pass whatever defect is injected: {never[:20]}"
