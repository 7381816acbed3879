"""Run the cases in this process and return each case's outcome.

Used by the self-validation tests (a defect in the reference device must make
the cases for its clause fail) and by the mutant run.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from conformance.runargs import case_run_args
from conformance.summary import case_outcomes


class _Recorder:
    def __init__(self) -> None:
        self.reports: list = []

    def pytest_runtest_logreport(self, report) -> None:
        self.reports.append(report)


def run_outcomes(target_file: str | Path, args: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
    """nodeid -> (outcome, detail) for the packaged cases on the given target file."""
    recorder = _Recorder()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = pytest.main([*case_run_args(), "-q", "--target-config", str(target_file), *args],
                           plugins=[recorder])
    if code not in (0, 1):
        raise RuntimeError(f"the case run did not complete (pytest exit status {code}):\n"
                           + out.getvalue()[-2000:])
    return case_outcomes(recorder.reports)
