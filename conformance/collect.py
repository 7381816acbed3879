"""Which clauses the packaged cases check, found by collecting them (without running)."""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict

import pytest

from conformance.runargs import case_run_args


class _ClauseCollector:
    def __init__(self) -> None:
        self.covered: dict[str, list[str]] = defaultdict(list)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            for marker in item.iter_markers("clause"):
                for cid in marker.args:
                    self.covered[cid].append(item.nodeid)


def collect_case_clauses() -> dict[str, list[str]]:
    """Map clause ID -> case node IDs, from a pytest ``--collect-only`` pass."""
    collector = _ClauseCollector()
    with contextlib.redirect_stdout(io.StringIO()):
        code = pytest.main([*case_run_args(), "--collect-only", "-q"], plugins=[collector])
    if code not in (0, 5):
        raise RuntimeError(f"collecting the cases failed (pytest exit status {code})")
    return dict(collector.covered)
