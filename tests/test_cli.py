"""The command line: exit statuses and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conformance.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_bad_target_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: reference\ndevice: {num_queues: four}\n")
    r = run_cli("run", "--target-config", str(bad))
    assert r.returncode == 4
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"vblk-conformance: error: {bad}: device: num_queues: "
                     "expected an integer, got 'four'"]


def test_no_case_selected_exits_5():
    r = run_cli("run", "-q", "-k", "no_such_case_anywhere")
    assert r.returncode == 5
    assert "no conformance case was collected" in r.stderr


def test_failing_case_exits_1(tmp_path):
    target = tmp_path / "broken.yaml"
    target.write_text("kind: reference\ndevice: {defects: [no-version-1]}\n")
    r = run_cli("run", "-q", "--target-config", str(target), "-k", "test_version_1_offered")
    assert r.returncode == 1
    assert "VIRTIO_F_VERSION_1 is not offered" in r.stdout
    assert "conformance summary: target broken (reference)" in r.stdout


def test_passing_selection_exits_0():
    r = run_cli("run", "-q", "--clause", "pci.vendor-id")
    assert r.returncode == 0, r.stdout[-2000:]
    assert "1 passed" in r.stdout


def test_unknown_subcommand_arguments_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["clauses", "--bogus"])
    assert exc.value.code == 2
