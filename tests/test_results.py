"""The results file: schema round trip, one-line load errors, what a real run records."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from conformance.results import (
    SCHEMA,
    SCHEMA_VERSION,
    CaseResult,
    ClauseRef,
    ResultsError,
    RunResults,
    enrich_target,
    features_record,
    from_json,
    load_results,
    to_json,
    write_results,
)


def sample() -> RunResults:
    return RunResults(
        suite={"name": "virtio-blk-conformance", "version": "0.1.0", "spec": "VIRTIO 1.2"},
        run={"started": "2025-01-02T03:04:05+00:00", "host": "h", "exit_status": 1,
             "command_line": ["vblk-conformance", "run"], "baseline": None},
        target={"kind": "qtest", "name": "qemu-7.2", "qemu_version": "7.2.22",
                "device": "virtio-blk-pci,drive=dut"},
        platforms=[{"target": "qtest", "serial": "QTEST0001"}],
        cases=[
            CaseResult("conformance/cases/test_requests.py::test_get_id", "requests", "failed",
                       "xfailed", False,
                       [ClauseRef("blk.get-id", "MUST", "5.2.6", "Device Operation")],
                       0.125, "GET_ID returned junk", "Traceback...\nAssertionError: junk",
                       features=features_record(0x1_0000_0046, 0x1_0000_0006), platform=0,
                       baseline={"outcome": "failed", "explanation": "x", "note": "known"}),
            CaseResult("conformance/cases/test_pci.py::test_vendor_id", "pci", "skipped",
                       "skipped", False, [], 0.0, skip_reason="no reason"),
        ])


def test_round_trip(tmp_path):
    path = write_results(tmp_path / "sub" / "r.json", sample())
    assert not list(tmp_path.glob("sub/*.part"))
    again = load_results(path)
    assert again == sample()
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION == 1
    assert data["counts"] == {"skipped": 1, "xfailed": 1}
    assert data["cases"][0]["features"] == {
        "offered": "0x100000046", "negotiated": "0x100000006",
        "negotiated_names": ["VIRTIO_BLK_F_SIZE_MAX", "VIRTIO_BLK_F_SEG_MAX",
                             "VIRTIO_F_VERSION_1"]}
    assert to_json(again) == data


def test_label():
    r = sample()
    assert r.label == "qemu-7.2 (QEMU 7.2.22)"
    r.target["name"] = "qemu-7.2.22"
    assert r.label == "qemu-7.2.22"  # the version is already in the name
    assert RunResults({}, {}, {"kind": "reference", "name": "reference"}).label == "reference"


def _broken(mutate) -> dict:
    data = to_json(sample())
    mutate(data)
    return data


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(schema="other"), "schema: expected 'vblk-conformance-results', got "
                                         "'other' (not a vblk-conformance results file?)"),
    (lambda d: d.update(schema_version=2), "schema_version: this suite reads version 1, got 2 "
                                           "(written by a newer suite)"),
    (lambda d: d.pop("target"), "target: missing"),
    (lambda d: d.update(cases={}), "cases: expected list, got dict"),
    (lambda d: d["cases"][0].update(outcome="odd"),
     "cases[0] (conformance/cases/test_requests.py::test_get_id): outcome: unknown outcome "
     "'odd'"),
    (lambda d: d["cases"][1].update(gating="no"),
     "cases[1] (conformance/cases/test_pci.py::test_vendor_id): gating: expected bool, got str"),
    (lambda d: d["cases"][1].update(duration=True),
     "cases[1] (conformance/cases/test_pci.py::test_vendor_id): duration: expected int/float, "
     "got bool"),
    (lambda d: d["cases"][0].update(platform=3),
     "case conformance/cases/test_requests.py::test_get_id: platform: index 3 out of range "
     "(1 platforms)"),
    (lambda d: d["cases"][0]["clauses"][0].pop("level"),
     "cases[0] (conformance/cases/test_requests.py::test_get_id): clauses[0]: level: missing"),
])
def test_malformed_results_one_line(mutate, message):
    with pytest.raises(ResultsError) as exc:
        from_json(_broken(mutate), "r.json")
    assert str(exc.value) == f"r.json: {message}"


def test_not_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"schema": ')
    with pytest.raises(ResultsError) as exc:
        load_results(path)
    assert str(exc.value) == f"{path}: not JSON: Expecting value at line 1, column 12"


def test_enrich_target_checksums_the_binary(tmp_path):
    binary = tmp_path / "qemu-system-x86_64"
    binary.write_bytes(b"\x7fELF pretend" * 1000)
    link = tmp_path / "qemu"
    link.symlink_to(binary)
    out = enrich_target({"kind": "qtest", "qemu_binary": str(link)})
    assert out["qemu_binary_path"] == str(binary)
    assert out["qemu_binary_sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    assert enrich_target({"kind": "reference"}) == {"kind": "reference"}
    missing = enrich_target({"qemu_binary": str(tmp_path / "none")})
    assert missing["qemu_binary_sha256"] is None


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conformance.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_reference_run_records_target_platform_and_features(tmp_path):
    path = tmp_path / "r.json"
    r = run_cli("run", "-q", "--clause", "blk.get-id", "--results", str(path))
    assert r.returncode == 0, r.stdout[-2000:]
    assert f"results file: {path}" in r.stdout
    data = load_results(path)
    assert data.run["exit_status"] == 0
    assert data.run["command_line"][1:] == ["run", "-q", "--clause", "blk.get-id", "--results",
                                            str(path)]
    assert data.target["kind"] == "reference" and data.target["name"] == "reference"
    assert data.target["device"]["serial"] == "REFDEV0001"  # the reference configuration
    case = data.case("conformance/cases/test_requests.py::test_get_id")
    assert (case.outcome, case.verdict, case.gating) == ("passed", "passed", False)
    assert [c.id for c in case.clauses] == ["blk.get-id", "blk.status-ok"]
    assert case.duration > 0
    assert "VIRTIO_F_VERSION_1" in case.features["negotiated_names"]
    assert data.platforms[case.platform]["serial"] == "REFDEV0001"


def test_default_results_path(tmp_path):
    r = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "-q", "--clause",
                        "pci.vendor-id"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:]
    files = list((tmp_path / "results").glob("reference-*.json"))
    assert len(files) == 1
    assert files[0].name.startswith("reference-20") and files[0].name.endswith("Z.json")
    assert load_results(files[0]).case("conformance/cases/test_pci.py::test_vendor_id")


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU")
def test_qtest_run_records_qemu_identity(tmp_path):
    path = tmp_path / "q.json"
    r = run_cli("run", "-q", "--target", "qtest", "--clause", "pci.vendor-id",
                "--results", str(path))
    assert r.returncode == 0, r.stdout[-2000:]
    t = load_results(path).target
    assert t["kind"] == "qtest" and t["machine"] == "q35"
    assert t["qemu_version"].count(".") == 2
    assert t["device"].startswith("virtio-blk-pci,drive=dut,")
    real = t["qemu_binary_path"]
    with open(real, "rb") as f:
        assert t["qemu_binary_sha256"] == hashlib.sha256(f.read()).hexdigest()
