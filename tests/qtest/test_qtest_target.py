"""QtestTarget: QEMU reuse across cases, fresh QEMU after trouble, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from qtest_helpers import QEMU, needs_qemu

from conformance.targets import TargetError, load_target_file, open_target

pytestmark = [needs_qemu, pytest.mark.qemu]


def make_target(tmp_path, body: str = ""):
    path = tmp_path / "t.yaml"
    path.write_text(f"kind: qtest\nname: t\nqemu: {QEMU}\n{body}")
    return open_target(load_target_file(path))


def test_reuse_then_fresh_qemu_after_a_broken_case(tmp_path):
    target = make_target(tmp_path)
    try:
        first = target.platform()
        pid = first.pid
        target.release(first, broken=False)
        again = target.platform()
        assert again is first and again.pid == pid  # reset, not restarted
        assert (target.starts, target.resets) == (1, 1)
        target.release(again, broken=True)
        assert _state(pid) == "gone"  # killed and reaped at once
        fresh = target.platform()
        assert fresh.pid != pid and target.starts == 2
        target.release(fresh, broken=False)
    finally:
        target.close()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_qemu_that_died_in_a_cases_setup_is_replaced(tmp_path, sig):
    # A case whose fixture set-up failed has no failed call report: release()
    # hears broken=False, and must notice the dead or stopped QEMU by itself.
    target = make_target(tmp_path, "timeout: 1\n")
    try:
        plat = target.platform()
        pid = plat.pid
        os.kill(pid, sig)
        with pytest.raises(Exception, match="QEMU"):
            plat.config_read(0, 4)
        target.release(plat, broken=False)
        assert _state(pid) == "gone"  # killed and reaped
        fresh = target.platform()
        assert fresh.pid != pid and fresh.config_read(0, 2) == 0x1AF4
    finally:
        target.close()


def test_describe_has_the_run_metadata(tmp_path):
    target = make_target(tmp_path, "machine: pc-q35-7.2\n")
    try:
        target.release(target.platform(), broken=False)
        meta = target.describe()
    finally:
        target.close()
    assert meta["kind"] == "qtest" and meta["name"] == "t"
    assert meta["machine"] == "pc-q35-7.2" and meta["machine_family"] == "q35"
    assert meta["qemu_version"].startswith(("7.", "8.", "9.", "10."))
    assert "00:04.0 1af4:1042 SCSI controller" in meta["pci_functions"]


def test_qemu_that_will_not_start_is_one_line_and_not_retried(tmp_path):
    target = make_target(tmp_path, "device: virtio-blk-pci,drive=dut,bogus-property=1\n")
    try:
        with pytest.raises(TargetError) as first:
            target.platform()
        msg = str(first.value)
        assert "\n" not in msg
        assert msg.startswith("t: QEMU exited with status 1 at start: ")
        assert "Property 'virtio-blk-pci.bogus-property' not found" in msg
        spent = target.start_seconds
        t0 = time.monotonic()
        with pytest.raises(TargetError) as again:
            target.platform()
        assert str(again.value) == msg
        assert target.starts == 0 and target.start_seconds == spent
        assert time.monotonic() - t0 < 0.1  # no second QEMU
    finally:
        target.close()


@pytest.mark.parametrize("body, words", [
    ("machine: virt\n", "machine: expected q35, pc, pc-q35-X.Y or pc-i440fx-X.Y, got 'virt'"),
    ("memory: lots\n", "memory: expected a size like 256M, got 'lots'"),
    ("qemu_binary: /usr/bin/qemu\n", "qemu_binary: unknown key"),
    ("device: [virtio-blk-pci]\n", "device: expected a non-empty string"),
])
def test_malformed_target_file_is_one_line(tmp_path, body, words):
    path = tmp_path / "bad.yaml"
    path.write_text(f"kind: qtest\n{body}")
    r = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--target-config",
                        str(path), "--no-results"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 4
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"vblk-conformance: error: {path}: ")
    assert words in lines[0]
