"""The pytest arguments every in-package run of the cases uses.

A fixed rootdir keeps node IDs (``conformance/cases/test_pci.py::...``) the same
wherever the command runs and whatever paths its options name; baselines,
results and the self-validation all key on them.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def case_run_args() -> list[str]:
    return ["--pyargs", "conformance.cases", "-p", "no:cacheprovider",
            "--rootdir", str(PACKAGE_ROOT)]
