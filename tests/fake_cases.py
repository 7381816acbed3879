"""Run made-up conformance cases through the real plugin, in this process.

The outcome, baseline and results machinery only looks at cases under
``conformance/cases/``.  These helpers write a case module into
``TMP/conformance/cases/`` and run pytest there with ``--rootdir TMP``, so the
node IDs look exactly like the packaged ones and the plugin treats the module
as a case module.  Every case decides its own fate, which the real cases on a
real device cannot be made to do on demand.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

import conformance.plugin
import conformance.recorder

PREFIX = "conformance/cases/test_fake.py::"

# One case per outcome; clause levels come from the packaged registry:
# pci.revision-id is a SHOULD, pci.vendor-id a MUST.
CASES = '''
import pytest

@pytest.fixture
def broken_fixture():
    raise RuntimeError("setup trouble")

@pytest.mark.clause("pci.vendor-id")
def test_pass():
    pass

@pytest.mark.clause("pci.vendor-id")
def test_must_fails():
    assert False, "vendor ID 0x1234, expected 0x1af4"

@pytest.mark.clause("pci.revision-id")
def test_should_fails():
    assert False, "non-transitional device with revision ID 0"

@pytest.mark.clause("pci.revision-id")
def test_should_times_out():
    raise TimeoutError("no used buffer within 2s")

@pytest.mark.clause("pci.revision-id", "pci.vendor-id")
def test_mixed_levels_fails():
    assert False, "mixed"

@pytest.mark.clause("pci.vendor-id")
def test_skipped():
    pytest.skip("device does not offer VIRTIO_BLK_F_RO")

@pytest.mark.clause("pci.vendor-id")
def test_setup_error(broken_fixture):
    pass

@pytest.mark.clause("blk.unsupp-type")
def test_reject(case_outcome):
    case_outcome.reject("status UNSUPP, device healthy")

@pytest.mark.clause("blk.unsupp-type")
def test_wedged(case_outcome):
    case_outcome.wedged("no completion for the health-check read")
'''


def write_cases(root: Path, source: str = CASES) -> Path:
    cases = root / "conformance" / "cases"
    cases.mkdir(parents=True, exist_ok=True)
    path = cases / "test_fake.py"
    path.write_text(textwrap.dedent(source))
    return path


def run_fake(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str,
             source: str = CASES) -> tuple[int, dict]:
    """Run the made-up cases with ``args``; (exit status, results file as JSON)."""
    path = write_cases(root, source)
    cases_dir = path.parent.resolve()

    def is_case(p) -> bool:
        return Path(p).resolve().is_relative_to(cases_dir)

    monkeypatch.setattr(conformance.plugin, "is_case_path", is_case)
    monkeypatch.setattr(conformance.recorder, "is_case_path", is_case)
    monkeypatch.setattr(conformance.recorder, "CASES_DIR", cases_dir)
    results = root / "results.json"
    # No __init__.py: pytest imports the file as the top-level module "test_fake" (never
    # as part of the real conformance package); forget it so the next run imports its own.
    try:
        code = pytest.main([str(path), "--rootdir", str(root), "-p", "no:cacheprovider",
                            "-q", "--results", str(results), *args])
    finally:
        sys.modules.pop("test_fake", None)
    data = json.loads(results.read_text()) if results.exists() else {}
    return int(code), data


def by_case(data: dict) -> dict[str, dict]:
    return {c["id"].removeprefix(PREFIX): c for c in data["cases"]}
