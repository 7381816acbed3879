"""A QEMU that crashes, hangs or is interrupted in the middle of a run.

Each test runs ``vblk-conformance run`` in a child process with
``vbc_fault_plugin`` loaded, which hurts QEMU while a request of one chosen
case is in flight.  The run must fail exactly that case, with QEMU's exit
signal (or state) and its last stderr lines in the report, give the next case a
fresh QEMU, keep every result already obtained, and leave no QEMU behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
from qtest_helpers import QEMU, needs_qemu

pytestmark = [needs_qemu, pytest.mark.qemu]
HERE = os.path.dirname(os.path.abspath(__file__))
# Plain reads pass on every QEMU version this suite baselines.
SELECTION = "test_in_returns_backing_data or test_in_last_sector"
# QEMU warns about this CPU flag under TCG at start: a known last stderr line.
STDERR_LINE = "TCG doesn't support requested feature"


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def target_file(tmp_path, timeout: float = 5) -> str:
    path = tmp_path / "faulty.yaml"
    path.write_text(f"kind: qtest\nname: faulty\nqemu: {QEMU}\ntimeout: {timeout}\n"
                    "extra_args: [-cpu, 'qemu64,+vmx']\n")
    return str(path)


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "conformance.cli", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def collect(target: str) -> list[str]:
    proc = cli("run", "--target-config", target, "--no-results", "--collect-only", "-q",
               "-k", SELECTION)
    out, _ = proc.communicate(timeout=120)
    ids = [ln for ln in out.splitlines() if ln.startswith("conformance/cases/")]
    assert len(ids) >= 3, out
    return ids


def pids_by_case(path) -> list[tuple[str, int]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(case, int(pid)) for case, pid in (ln.rsplit(" ", 1) for ln in f if ln.strip())]


def junit_results(path) -> dict[str, tuple[str, str]]:
    """nodeid -> (passed|failed|error|skipped, message + text) from a JUnit XML file."""
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name")
        module = case.get("classname").replace(".", "/") + ".py"
        outcome, text = "passed", ""
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                text = (el.get("message") or "") + "\n" + (el.text or "")
                break
        results[f"{module}::{name}"] = (outcome, text)
    return results


def run_with_fault(tmp_path, action: str, timeout: float) -> tuple[list[str], dict, list, str]:
    target = target_file(tmp_path, timeout)
    ids = collect(target)
    victim = ids[1]
    pids = tmp_path / "pids"
    junit = tmp_path / "junit.xml"
    proc = cli("run", "--target-config", target, "--no-results", "-p", "vbc_fault_plugin",
               "-k", SELECTION, f"--junitxml={junit}",
               env={"VBC_FAULT": f"{action}:{victim}", "VBC_FAULT_PIDS": str(pids)})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    return ids, junit_results(junit), pids_by_case(pids), out


def check_run(ids, results, pids, out, words: str) -> None:
    victim = ids[1]
    assert set(results) == set(ids)
    # Results obtained before and after the victim are all there.
    assert {i: results[i][0] for i in ids} == {i: "failed" if i == victim else "passed"
                                               for i in ids}, out[-3000:]
    text = results[victim][1]
    assert words in text
    assert "last QEMU stderr lines:" in text and STDERR_LINE in text
    # The summary quotes the reason on the victim's line.
    line = next(ln for ln in out.splitlines() if ln.startswith(f"FAILED {victim}: "))
    assert words in line
    # Same QEMU up to the victim, a fresh one after it, none left at the end.
    pid_of = dict(pids)
    assert pid_of[ids[0]] == pid_of[victim]
    assert pid_of[ids[2]] != pid_of[victim]
    assert len({pid for i, pid in pids if i not in (ids[0], victim)}) == 1
    assert not [pid for _, pid in pids if running(pid)]


def test_qemu_killed_mid_case(tmp_path):
    ids, results, pids, out = run_with_fault(tmp_path, "SIGKILL", timeout=5)
    check_run(ids, results, pids, out, "QEMU was killed by SIGKILL")


def test_qemu_hung_mid_case(tmp_path):
    t0 = time.monotonic()
    ids, results, pids, out = run_with_fault(tmp_path, "SIGSTOP", timeout=2)
    check_run(ids, results, pids, out, "QEMU is stopped (SIGSTOP or a debugger)")
    assert "no answer to " in results[ids[1]][1] and " within 2s" in results[ids[1]][1]
    assert time.monotonic() - t0 < 120  # the hang cost one timeout, not one per case


def test_ctrl_c_mid_case_leaves_no_qemu(tmp_path):
    target = target_file(tmp_path)
    ids = collect(target)
    pids = tmp_path / "pids"
    proc = cli("run", "--target-config", target, "--no-results", "-p", "vbc_fault_plugin",
               "-k", SELECTION, env={"VBC_FAULT": f"pause:{ids[1]}", "VBC_FAULT_PIDS": str(pids)})
    try:
        deadline = time.monotonic() + 120
        while not any(case == "paused" for case, _ in pids_by_case(pids)):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the paused case"
            time.sleep(0.05)
        seen = [pid for _, pid in pids_by_case(pids)]
        assert all(running(pid) for pid in seen)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out[-3000:]  # pytest: interrupted
    assert "KeyboardInterrupt" in out
    assert "1 passed" in out  # the case before the interrupted one kept its result
    deadline = time.monotonic() + 5
    while any(running(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in seen if running(pid)], "a QEMU outlived the interrupted run"
